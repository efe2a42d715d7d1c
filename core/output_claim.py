"""Claiming an output for one run: `.<name>.claim` next to it, created exclusively.

A second run to the same output fails at once instead of doing all the work and failing at
the final rename (local) or writing over the first run's chunks (remote). A claim whose owner
is gone (a run killed with kill -9, a crash) is stale: the next run to that output takes it
over, removes what the dead run left (hidden `.<name>.partial-*` folders; a remote output's
unfinished prefix), and says so in its log.

Local claims are files created with O_EXCL; their owner is alive while its process is.
Remote claims (S3 and S3-compatible servers) are objects written with a conditional PUT
(If-None-Match: *, taken over with If-Match on the stale claim's ETag), then read back to
check the run id. A remote process cannot be checked, so a remote claim holds for a lease
(LEASE_SECONDS) that its run renews every quarter lease; one not renewed for a lease is stale
(on the same machine, its process is checked instead). What remains: a server that ignores
conditional headers lets two runs starting within the same second both write their claim,
and the read-back catches only the one that wrote first; a run whose renewals fail for a
whole lease (a long network cut) can be taken over while it still writes (it then fails at
its end: "another run took over this output").
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import OutputError
from .retry import DEFAULT_POLICY, RetryPolicy, exception_chain, transient_cause

LEASE_SECONDS = 600.0


@dataclass(frozen=True)
class OutputClaim:
    """This process's claim on `output`, whose run writes into `partial`."""

    path: Path
    output: Path

    @classmethod
    def take(cls, output: Path, partial: Path, log: Callable[[str], None]) -> OutputClaim:
        """Claim `output` or raise OutputError naming the run that holds it."""
        path = claim_path(output)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        owner["partial"] = partial.name
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_owner(path)
                if holder is None or _is_alive(holder):
                    raise OutputError(_busy_message(output, path, holder)) from None
                os.unlink(path)  # the owner is gone: the claim is stale
                log(
                    f"A run to {output} (process {holder.get('pid')}) was killed before it "
                    "finished; its claim was removed."
                )
                continue
            except OSError as exc:
                raise OutputError(
                    f"Cannot claim the output {output}: {exc.strerror or exc}. Choose a folder "
                    "you can write to."
                ) from exc
            with os.fdopen(fd, "w") as file:
                json.dump(owner, file)
            claim = cls(path, output)
            claim.sweep_leftovers(partial, log)
            return claim
        raise OutputError(_busy_message(output, path, _read_owner(path)))

    def sweep_leftovers(self, partial: Path, log: Callable[[str], None]) -> None:
        """Remove hidden partial folders of earlier runs: while we hold the claim, no live run
        can be writing one, so every one there is a killed run's leftover."""
        pattern = f".{self.output.name}.partial-*"
        for leftover in sorted(self.output.parent.glob(pattern)):
            if leftover.name == partial.name:
                continue
            shutil.rmtree(leftover, ignore_errors=True)
            log(f"Removed {leftover.name}, the unfinished output of a run that was killed.")

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def claim_path(output: Path) -> Path:
    return output.parent / f".{output.name}.claim"


def _read_owner(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # being written by its owner right now, or unreadable: treat as held


def _is_alive(owner: dict) -> bool:
    if owner.get("host") != socket.gethostname():
        return True  # another machine's run (a shared folder): we cannot tell, so it holds
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        return True
    return True


def _busy_message(output, path, owner: dict | None) -> str:
    who = ""
    if owner:
        since = time.strftime("%H:%M:%S", time.localtime(owner.get("started", 0)))
        who = f" (process {owner.get('pid')} on {owner.get('host')}, since {since})"
    return (
        f"Another run{who} is writing {output}; wait for it to finish or choose another "
        f"output name. If no run is going on, delete {path}."
    )


# --- remote outputs -----------------------------------------------------------------------


@dataclass
class RemoteClaim:
    """This run's claim object on the remote output `output`, renewed until released."""

    fs: object
    path: str  # bucket/key of the claim object
    output: str
    owner: dict
    etag: str | None
    retry: RetryPolicy = DEFAULT_POLICY
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def take(
        cls,
        output: str,
        storage_options: dict,
        log: Callable[[str], None],
        *,
        retry: RetryPolicy = DEFAULT_POLICY,
        lease: float = LEASE_SECONDS,
    ) -> RemoteClaim | None:
        """Claim the remote `output` or raise OutputError naming the run that holds it.

        None for an output that is a bucket itself (no folder to hold a claim beside it).
        """
        import fsspec

        fs, key = fsspec.core.url_to_fs(output, **storage_options)
        key = key.rstrip("/")
        if "/" not in key:
            return None
        parent, name = key.rsplit("/", 1)
        path = f"{parent}/.{name}.claim"
        now = time.time()
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": now}
        owner.update(run=uuid.uuid4().hex, lease=lease)
        claim = cls(fs, path, output, owner, None, retry)
        try:
            claim._acquire(key, log)
        except OutputError:
            raise
        except Exception as exc:
            from .failures import plain_cause

            raise OutputError(
                f"Cannot claim the output {output}: {plain_cause(exc)}. Check the bucket can "
                "be written to (endpoint, credentials), then run again."
            ) from exc
        threading.Thread(target=claim._renew, name="embedding-change-claim", daemon=True).start()
        return claim

    def _acquire(self, key: str, log) -> None:
        for _ in range(3):
            try:
                self.etag = self._put(if_none_match=True)
            except Exception as exc:
                if not _precondition_failed(exc):
                    raise
            else:
                if self._holds():
                    return
                raise OutputError(_busy_message(self.output, self.path, self._read()[0]))
            holder, etag, modified = self._read()
            if holder is not None and holder.get("run") == self.owner["run"]:
                self.etag = etag  # our own PUT went through, its reply was lost and retried
                return
            if holder is None or not _remote_stale(holder, modified):
                raise OutputError(_busy_message(self.output, self.path, holder))
            try:
                self.etag = self._put(if_match=etag)
            except Exception as exc:
                if _precondition_failed(exc):
                    continue  # another run took it over first: look again
                raise
            if not self._holds():
                continue
            log(
                f"A run to {self.output} (process {holder.get('pid')} on {holder.get('host')}) "
                "stopped without finishing; its claim was taken over."
            )
            self._sweep(key, log)
            return
        raise OutputError(_busy_message(self.output, self.path, self._read()[0]))

    def _sweep(self, key: str, log) -> None:
        """Remove the unfinished output the dead run left (a finished one stays: the caller
        refuses an existing output)."""
        if not self._call(self.fs.exists, key) or _looks_finished(self.fs, key, self._call):
            return
        self._call(self.fs.rm, key, recursive=True)
        self.fs.invalidate_cache()
        log(f"Removed the unfinished output {self.output} of a run that stopped.")

    def _put(self, *, if_none_match: bool = False, if_match: str | None = None) -> str | None:
        """PUT the owner, conditionally; its ETag. A server that refuses conditional headers
        (501) gets a plain PUT, and the read-back check stands alone."""
        from fsspec.asyn import sync

        bucket, key, _ = self.fs.split_path(self.path)
        self.owner["renewed"] = time.time()
        body = json.dumps(self.owner).encode()
        condition = {"IfNoneMatch": "*"} if if_none_match else {}
        if if_match:
            condition = {"IfMatch": if_match}

        def put(**extra):
            return sync(
                self.fs.loop, self.fs._call_s3, "put_object", Bucket=bucket, Key=key, Body=body,
                **extra,
            )  # fmt: skip

        try:
            reply = self._call(put, **condition)
        except Exception as exc:
            if not condition or not _not_implemented(exc):
                raise
            reply = self._call(put)
        self.fs.invalidate_cache(self.path)
        return reply.get("ETag")

    def _read(self) -> tuple[dict | None, str | None, float | None]:
        """The claim's owner, ETag and last-modified time (None, None, None if gone)."""
        self.fs.invalidate_cache(self.path)
        try:
            info = self._call(self.fs.info, self.path)
            data = self._call(self.fs.cat_file, self.path)
        except FileNotFoundError:
            return None, None, None
        modified = info.get("LastModified")
        modified = modified.timestamp() if hasattr(modified, "timestamp") else None
        try:
            return json.loads(data), info.get("ETag"), modified
        except ValueError:
            return None, info.get("ETag"), modified

    def _holds(self) -> bool:
        holder, etag, _ = self._read()
        held = holder is not None and holder.get("run") == self.owner["run"]
        if held:
            self.etag = etag
        return held

    def _renew(self) -> None:
        while not self._stop.wait(self.owner["lease"] / 4):
            try:
                self.etag = self._put(if_match=self.etag)
            except Exception as exc:
                if _precondition_failed(exc):
                    self.lost = True
                    return
                # a flaky server: try again next time; a lease is four renewals long

    def check_held(self) -> None:
        """Raise OutputError if another run took the output over (renewals failed too long)."""
        if self.lost:
            raise OutputError(
                f"Another run took over {self.output} while this one wrote it (this run could "
                "not renew its claim for a whole lease). Check that output, or run again."
            )

    def release(self) -> None:
        self._stop.set()
        if self.lost:
            return
        with contextlib.suppress(Exception):
            if self._holds():
                self._call(self.fs.rm_file, self.path)
                self.fs.invalidate_cache(self.path)

    def _call(self, function, *args, **kwargs):
        """function(*args) retried on transient failures under the run's policy."""
        policy = self.retry
        deadline = time.monotonic() + policy.budget
        for attempt in range(policy.attempts):
            try:
                return function(*args, **kwargs)
            except Exception as exc:
                wait = policy.delay(attempt)
                last = attempt + 1 >= policy.attempts or time.monotonic() + wait > deadline
                if transient_cause(exc) is None or last:
                    raise
                time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover


def _remote_stale(holder: dict, modified: float | None) -> bool:
    """A remote claim is stale once its owner is gone: its process where it ran on this
    machine, else when it was not renewed for its lease (server time of the last renewal)."""
    if holder.get("host") == socket.gethostname():
        return not _is_alive(holder)
    last = modified if modified is not None else holder.get("renewed", holder.get("started", 0))
    return time.time() - float(last) > float(holder.get("lease", LEASE_SECONDS))


def _looks_finished(fs, key: str, call) -> bool:
    """Whether the output at `key` was finished (its metadata consolidated, as the last step)."""
    try:
        if call(fs.exists, f"{key}/.zmetadata"):
            return True
        root = json.loads(call(fs.cat_file, f"{key}/zarr.json"))
    except (FileNotFoundError, ValueError):
        return False
    return root.get("consolidated_metadata") is not None


def _precondition_failed(exc: BaseException) -> bool:
    for error in exception_chain(exc):
        if isinstance(error, FileExistsError):
            return True
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = response.get("Error", {}).get("Code")
            if status == 412 or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return True
        if "pre-conditions you specified did not hold" in str(error):
            return True
    return False


def _not_implemented(exc: BaseException) -> bool:
    for error in exception_chain(exc):
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 501 or response.get("Error", {}).get("Code") == "NotImplemented":
                return True
    return False
