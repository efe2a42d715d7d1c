"""Remote stores that survive a flaky server: retries with backoff, and a deadline per request.

Every request to a remote store (reads and writes, metadata and chunks) goes through
`RetryingStore`: transient failures (HTTP 500/502/503/504, throttling, refused or reset
connections, timeouts, checksum or length mismatches) are tried again after an exponential
backoff with jitter; each try has a deadline and each request a total time budget. Once a
request has used its budget the store gives up for good, so a server that stopped answering
ends a run within one budget instead of one budget per pending request. A refused connection
before the store ever answered is not retried: a wrong endpoint fails the open at once.
"""

from __future__ import annotations

import asyncio
import errno
import random
import threading
from collections import Counter
from dataclasses import dataclass

from zarr.storage import WrapperStore

# Status codes and S3 error codes that say "try again", not "you asked for the wrong thing".
TRANSIENT_STATUS = (429, 500, 502, 503, 504)
TRANSIENT_CODES = (
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestLimitExceeded",
    "BadDigest",
    "IncompleteBody",
    "XAmzContentSHA256Mismatch",
)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a request tries: `attempts` tries, each under `request_timeout` seconds, all
    within `budget` seconds, waiting first_delay * 2^n (capped at max_delay, with jitter)."""

    attempts: int = 8
    first_delay: float = 0.2
    max_delay: float = 5.0
    request_timeout: float = 20.0
    budget: float = 60.0

    def delay(self, attempt: int) -> float:
        """Full jitter: a random wait up to the exponential cap, so workers do not retry in step."""
        return random.uniform(0.5, 1.0) * min(self.max_delay, self.first_delay * 2**attempt)


DEFAULT_POLICY = RetryPolicy()


class RequestFailedError(OSError):
    """A remote request that failed for good; `cause` says why in plain words, `key` for what."""

    def __init__(self, cause: str, key: str):
        super().__init__(errno.EIO, f"{cause} (reading or writing {key})")
        self.cause = cause
        self.key = key


_retries = Counter()
_retries_lock = threading.Lock()


def retry_count(url: str) -> int:
    """Retries this process has made so far for requests to the store at `url`."""
    with _retries_lock:
        return _retries[url]


_refused_urls: set[str] = set()


def refuse_writes(url: str) -> None:
    """From now on writes to the store at `url` fail: its run was discarded (cancel, error),
    and a task still running must not bring the removed output back."""
    with _retries_lock:
        _refused_urls.add(url)


def writes_refused(url: str) -> bool:
    with _retries_lock:
        return url in _refused_urls


def _count_retry(url: str) -> None:
    with _retries_lock:
        _retries[url] += 1


def transient_cause(exc: BaseException) -> str | None:
    """Plain words for a failure worth another try, None for one that would fail again."""
    chain = list(exception_chain(exc))
    if any(isinstance(error, RequestFailedError) for error in chain):
        return None
    if any(_refused_connection(error) for error in chain):
        return "the server refused the connection"
    for error in chain:
        if isinstance(error, asyncio.TimeoutError | TimeoutError):
            return "the server stopped answering"
        name = type(error).__name__
        if name in ("FlexibleChecksumError", "ChecksumError"):
            return "a checksum mismatch"
        if name in ("ClientPayloadError", "IncompleteReadError", "IncompleteRead"):
            return "a reply shorter than it said (length mismatch)"
        if name in ("ReadTimeoutError", "ConnectTimeoutError", "ServerTimeoutError"):
            return "the server stopped answering"
        if isinstance(error, ConnectionError) or name in (
            "ConnectionClosedError",
            "EndpointConnectionError",
            "ClientConnectorError",
            "ServerDisconnectedError",
            "ClientOSError",
            "ResponseStreamingError",
            "HTTPClientError",
        ):
            return "the connection was reset"
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = response.get("Error", {}).get("Code")
            if status in TRANSIENT_STATUS or code in TRANSIENT_CODES:
                return f"HTTP {status} {code or ''}".strip()
    return None


def exception_chain(exc: BaseException):
    """The exception, its causes and contexts, and the errors botocore and aiohttp wrap."""
    seen, pending = set(), [exc]
    while pending:
        error = pending.pop(0)
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        wrapped = getattr(error, "kwargs", None)
        wrapped = wrapped.get("error") if isinstance(wrapped, dict) else None
        os_error = getattr(error, "os_error", None)
        for inner in (error.__cause__, error.__context__, wrapped, os_error):
            if isinstance(inner, BaseException):
                pending.append(inner)


def _refused_connection(error: BaseException) -> bool:
    """A refused connection or an unknown host (wrapped by aiohttp and botocore)."""
    text = str(error).lower()
    if isinstance(error, ConnectionRefusedError) or "connect call failed" in text:
        return True
    return "name or service not known" in text or "dns" in type(error).__name__.lower()


def _refused(exc: BaseException) -> bool:
    return transient_cause(exc) == "the server refused the connection"


class RetryingStore(WrapperStore):
    """A remote zarr store whose requests retry transient failures under a deadline.

    Writes fail once the output side has refused them (refuse_writes): the run was discarded.
    """

    def __init__(self, store, url: str, policy: RetryPolicy = DEFAULT_POLICY):
        super().__init__(store)
        self.url = url
        self.policy = policy
        self._answered = False
        self._gave_up: RequestFailedError | None = None

    def __repr__(self) -> str:
        return f"RetryingStore({self.url!r})"

    async def _request(self, key: str, call):
        if self._gave_up is not None:
            raise RequestFailedError(self._gave_up.cause, key) from self._gave_up
        policy = self.policy
        loop = asyncio.get_running_loop()
        deadline = loop.time() + policy.budget
        attempt = 0
        while True:
            left = deadline - loop.time()
            try:
                result = await asyncio.wait_for(call(), timeout=min(policy.request_timeout, left))
            except Exception as exc:
                cause = transient_cause(exc)
                if cause is None or (_refused(exc) and not self._answered):
                    raise
                attempt += 1
                wait = policy.delay(attempt - 1)
                if attempt >= policy.attempts or loop.time() + wait >= deadline:
                    seconds = policy.budget if cause == "the server stopped answering" else None
                    within = f" within {seconds:.0f} s" if seconds else ""
                    failed = RequestFailedError(f"{cause} ({attempt} tries{within})", key)
                    if cause in (
                        "the server stopped answering",
                        "the server refused the connection",
                    ):
                        self._gave_up = failed
                    raise failed from exc
                _count_retry(self.url)
                await asyncio.sleep(wait)
            else:
                self._answered = True
                return result

    async def get(self, key, prototype, byte_range=None):
        return await self._request(key, lambda: self._store.get(key, prototype, byte_range))

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        key = key_ranges[0][0] if key_ranges else ""
        return await self._request(
            key, lambda: self._store.get_partial_values(prototype, key_ranges)
        )

    async def exists(self, key):
        return await self._request(key, lambda: self._store.exists(key))

    async def set(self, key, value):
        self._refuse_late_write(key)
        await self._request(key, lambda: self._store.set(key, value))

    async def set_if_not_exists(self, key, value):
        self._refuse_late_write(key)
        await self._request(key, lambda: self._store.set_if_not_exists(key, value))

    async def delete(self, key):
        await self._request(key, lambda: self._store.delete(key))

    async def delete_dir(self, prefix):
        await self._request(prefix, lambda: self._store.delete_dir(prefix))

    async def is_empty(self, prefix):
        return await self._request(prefix, lambda: self._store.is_empty(prefix))

    def list(self):
        return self._listed("", lambda: self._store.list())

    def list_prefix(self, prefix):
        return self._listed(prefix, lambda: self._store.list_prefix(prefix))

    def list_dir(self, prefix):
        return self._listed(prefix, lambda: self._store.list_dir(prefix))

    async def _listed(self, prefix, listing):
        async def collect():
            return [name async for name in listing()]

        for name in await self._request(prefix or "/", collect):
            yield name

    def _refuse_late_write(self, key: str) -> None:
        if writes_refused(self.url):
            raise RequestFailedError("the run was discarded; its late write is refused", key)

    def with_read_only(self, read_only: bool = False):
        return RetryingStore(self._store.with_read_only(read_only), self.url, self.policy)
