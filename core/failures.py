"""What went wrong while reading or writing data, in the analyst's words, and where.

The pipeline's reads and writes fail in many library-specific ways (zstd errors, botocore's
exceptions, OSError numbers). These turn them into one line: the cause in plain words
("damaged chunk", "permission denied", "disk full", "the server stopped answering") and the
chunk key with its year, for the engine's StoreError and OutputError messages.
"""

from __future__ import annotations

import errno
import re

from .credentials import mask
from .retry import RequestFailedError, exception_chain, transient_cause

MIB = 2**20


def plain_cause(exc: BaseException) -> str:
    """The cause of a failed read or write in a few plain words, secrets masked."""
    return mask(_plain_cause(exc))


def _plain_cause(exc: BaseException) -> str:
    failed = _find(exc, RequestFailedError)
    if failed is not None:
        return failed.cause
    if _find(exc, PermissionError) is not None or _has_code(exc, ("AccessDenied", "Forbidden")):
        return "permission denied"
    if _errno(exc) == errno.ENOSPC:
        return "disk full"
    if _errno(exc) in (errno.ENOTEMPTY, errno.EEXIST):
        return "another run finished this output first"
    transient = transient_cause(exc)
    if transient is not None:
        return transient
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" if exc.strerror else f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def decode_cause(exc: BaseException) -> str:
    """Like plain_cause, but an error that is not about I/O means the bytes did not decode."""
    if isinstance(exc, OSError) or _find(exc, OSError) is not None:
        return plain_cause(exc)
    if transient_cause(exc) is not None or _has_code(exc, ("AccessDenied",)):
        return plain_cause(exc)
    return mask(f"damaged chunk (it does not decode: {type(exc).__name__}: {exc})")


def failed_key(exc: BaseException) -> str | None:
    """The store key named by the exception (a retried request or a file path), if any."""
    failed = _find(exc, RequestFailedError)
    if failed is not None:
        return failed.key
    for error in exception_chain(exc):
        name = getattr(error, "filename", None)
        if name:
            return str(name)
    return None


def chunk_of_key(key: str, ndim: int) -> tuple[int, ...] | None:
    """The chunk grid position a key or file path names: 'embeddings/c/3/0/1/2' -> (3, 0, 1, 2)."""
    numbers = re.findall(r"(?:^|[/.])(\d+)(?=$|[/.])", key.replace("\\", "/"))
    if len(numbers) < ndim:
        return None
    return tuple(int(n) for n in numbers[-ndim:])


def storage_chunks(array) -> tuple[int, ...]:
    """The shape of one stored object: the shard where the array is sharded."""
    shards = getattr(array, "shards", None)
    return tuple(shards or array.chunks)


def chunk_key(array, position: tuple[int, ...]) -> str:
    """The key of the stored object at a chunk grid position, with the array's path."""
    return f"{array.path}/{array.metadata.encode_chunk_key(position)}"


def disk_full_words(free_bytes: int, needed_bytes: int) -> str:
    return (
        f"disk full: {free_bytes / MIB:,.0f} MiB free, about {needed_bytes / MIB:,.0f} MiB needed"
    )


def _find(exc: BaseException, kind):
    return next((e for e in exception_chain(exc) if isinstance(e, kind)), None)


def _errno(exc: BaseException) -> int | None:
    return next((e.errno for e in exception_chain(exc) if isinstance(e, OSError) and e.errno), None)


def _has_code(exc: BaseException, codes) -> bool:
    for error in exception_chain(exc):
        response = getattr(error, "response", None)
        if isinstance(response, dict) and response.get("Error", {}).get("Code") in codes:
            return True
    return False


def one_line_message(exc: BaseException) -> str:
    """What a front end (QGIS) shows for any exception: the engine's own message as it is,
    anything else as one line with its kind, never a traceback."""
    from .errors import EmbeddingChangeError

    if isinstance(exc, EmbeddingChangeError):
        return mask(str(exc))
    text = mask(" ".join(str(exc).split())) or "no details"
    if len(text) > 300:
        text = text[:300] + "..."
    return (
        f"Unexpected error ({type(exc).__name__}): {text}. Nothing was written; please report "
        "this message with the log (its debug lines hold the details)."
    )
