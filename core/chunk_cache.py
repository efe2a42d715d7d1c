"""A folder of chunks fetched from remote stores, so a view run again (or panned) reads from disk.

Each entry is one file named by a hash (core.cached_store decides what goes into the name:
the store, its metadata, the chunk key and byte range). A file holds a small header (magic,
length and CRC32 of the bytes) and the bytes; one whose length or checksum does not match is
a damaged entry: it is removed and the caller fetches the chunk again. Files are written to a
temporary name and renamed, so threads and processes sharing the folder never see half an
entry. The folder is kept under its size limit by removing the least recently used entries
(a hit refreshes the file's modification time); several processes may do so at once. A process
cannot see what the others write between its scans of the folder, so it scans again (and evicts
down to 90 % of the limit) whenever it has written 2.5 % of the limit since its last scan: with
up to four processes filling one folder at once it stays within its limit, and once they stop it
is at most 90 % full plus what each wrote after its last scan.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import ParameterError

CACHE_DIR_VARIABLE = "EMBEDDING_CHANGE_CACHE_DIR"
DEFAULT_MAX_BYTES = 20 * 10**9
MAGIC = b"ECC1"
HEADER = struct.Struct("<4sIQ")  # magic, CRC32 of the bytes, their length
ENTRY_SUFFIX = ".chunk"
LOW_WATER = 0.9  # eviction removes entries until the folder is at 90 % of its limit
RESCAN = 0.025  # a process scans the folder again after writing this share of the limit
STALE_TEMPORARY = 3600  # seconds after which a temporary file is a killed writer's


def user_cache_folder() -> Path:
    """Where this user's caches go: %LOCALAPPDATA%, ~/Library/Caches or $XDG_CACHE_HOME."""
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "embedding_change"


def default_cache_folder() -> Path:
    """EMBEDDING_CHANGE_CACHE_DIR if set, else the user's cache folder's chunks/."""
    folder = os.environ.get(CACHE_DIR_VARIABLE, "").strip()
    return Path(folder).expanduser() if folder else user_cache_folder() / "chunks"


def run_cache(cache, remote: bool) -> ChunkCache | None:
    """The cache a run reads through: None for a local store or cache=False; the default
    folder for cache=None (or True); that folder for a path; a ChunkCache as it is."""
    if cache is False or not remote:
        return None
    if cache is None or cache is True:
        return ChunkCache(str(default_cache_folder()))
    if isinstance(cache, ChunkCache):
        return cache
    if isinstance(cache, str | os.PathLike) and str(cache).strip():
        return ChunkCache(os.fspath(cache))
    raise ParameterError(
        f"cache must be None (the default folder), a folder, a ChunkCache or False (off), "
        f"not {cache!r}."
    )


@dataclass(frozen=True)
class ChunkCache:
    """A cache folder and its size limit. Plain values, so it travels with block tasks; what a
    process knows about the folder (its size, the counts) is kept per folder in the process."""

    folder: str
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self):
        object.__setattr__(self, "folder", str(Path(self.folder).expanduser().absolute()))

    def read(self, name: str) -> bytes | None:
        """The entry's bytes, or None when it is absent or damaged (then it is removed)."""
        path = self._path(name)
        try:
            with open(path, "rb") as file:
                payload = _payload(file)
        except OSError:
            return None
        state = _state(self.folder)
        if payload is None:
            _remove(path)
            with state.lock:
                state.damaged += 1
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used
        with state.lock:
            state.hits += 1
            state.hit_bytes += len(payload)
        return payload

    def write(self, name: str, payload: bytes) -> None:
        """Keep `payload` under `name` (atomic); a cache that cannot be written is skipped."""
        state = _state(self.folder)
        size = HEADER.size + len(payload)
        with state.lock:
            state.fetched += 1
            state.fetched_bytes += len(payload)
        if size > self.max_bytes * LOW_WATER:
            return
        path = self._path(name)
        temporary = path.parent / f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
        header = HEADER.pack(MAGIC, zlib.crc32(payload), len(payload))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as file:
                file.write(header)
                file.write(payload)
            os.replace(temporary, path)
        except OSError as exc:
            _remove(temporary)
            if path.exists():  # another process wrote it meanwhile (Windows refuses the rename)
                return
            with state.lock:
                state.write_error = state.write_error or f"{exc.strerror or exc} ({self.folder})"
            return
        with state.lock:
            state.unscanned += size
            due = not state.scanned or state.unscanned > self.max_bytes * RESCAN
        if due:
            self.evict()

    def evict(self) -> None:
        """Scan the folder and, when it holds more than 90 % of its limit, remove the least
        recently used entries down to 90 %. Also removes temporary files left by killed writers."""
        state = _state(self.folder)
        with state.evicting:
            with state.lock:
                state.scanned = True
                state.unscanned = 0  # what this process writes from now on the scan may miss
            entries, total = [], 0
            now = time.time()
            for path, stat in _files(Path(self.folder)):
                if path.name.startswith(".tmp-"):
                    if now - stat.st_mtime > STALE_TEMPORARY:
                        _remove(path)
                    continue
                entries.append((stat.st_mtime_ns, stat.st_size, path))
                total += stat.st_size
            target = self.max_bytes * LOW_WATER
            if total > target:
                entries.sort()
                for _, size, path in entries:
                    if total <= target:
                        break
                    if _remove(path):
                        total -= size
                        with state.lock:
                            state.evicted += 1

    def size(self) -> int:
        """Bytes the folder's entries take now (a scan)."""
        return sum(stat.st_size for path, stat in _files(Path(self.folder)) if _is_entry(path))

    def counts(self) -> CacheCounts:
        """What this process has read from and fetched into the folder so far."""
        state = _state(self.folder)
        with state.lock:
            return CacheCounts(**{f.name: getattr(state, f.name) for f in fields(CacheCounts)})

    def _path(self, name: str) -> Path:
        return Path(self.folder) / name[:2] / f"{name}{ENTRY_SUFFIX}"


@dataclass(frozen=True)
class CacheCounts:
    hits: int = 0
    hit_bytes: int = 0
    fetched: int = 0
    fetched_bytes: int = 0
    damaged: int = 0
    evicted: int = 0
    write_error: str | None = None

    def since(self, before: CacheCounts) -> CacheCounts:
        """The counts since `before`; the write error only if it is a new one."""
        numbers = {
            f.name: getattr(self, f.name) - getattr(before, f.name)
            for f in fields(self)
            if f.name != "write_error"
        }
        error = self.write_error if self.write_error != before.write_error else None
        return CacheCounts(**numbers, write_error=error)

    def describe(self, folder: str) -> str:
        """The log line: hits and bytes from the cache, fetched and kept, damaged, evicted."""
        reads = self.hits + self.fetched
        line = (
            f"Chunk cache {folder}: {self.hits} of {reads} chunk reads from the cache "
            f"({_megabytes(self.hit_bytes)}), {self.fetched} fetched "
            f"({_megabytes(self.fetched_bytes)})"
        )
        if self.damaged:
            line += f"; {self.damaged} damaged entries dropped and fetched again"
        if self.evicted:
            line += f"; {self.evicted} least recently used entries removed to stay in its limit"
        if self.write_error:
            line += f"; could not write to it: {self.write_error}"
        return line + "."


@dataclass
class _FolderState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    evicting: threading.Lock = field(default_factory=threading.Lock)
    scanned: bool = False  # this process has scanned the folder at least once
    unscanned: int = 0  # bytes this process wrote since its last scan began
    hits: int = 0
    hit_bytes: int = 0
    fetched: int = 0
    fetched_bytes: int = 0
    damaged: int = 0
    evicted: int = 0
    write_error: str | None = None


_states: dict[str, _FolderState] = {}
_states_lock = threading.Lock()


def _state(folder: str) -> _FolderState:
    with _states_lock:
        return _states.setdefault(folder, _FolderState())


def _payload(file) -> bytes | None:
    """The entry's bytes if its header, length and checksum agree (read once, no copies)."""
    header = file.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    magic, crc, length = HEADER.unpack(header)
    if magic != MAGIC:
        return None
    payload = file.read(length + 1)  # one more: a longer file is damaged too
    if len(payload) != length or zlib.crc32(payload) != crc:
        return None
    return payload


def _files(folder: Path):
    """(path, stat) of every file in the folder's two-character subfolders."""
    try:
        subfolders = list(os.scandir(folder))
    except OSError:
        return
    for sub in subfolders:
        if not sub.is_dir(follow_symlinks=False) or len(sub.name) != 2:
            continue
        try:
            children = list(os.scandir(sub.path))
        except OSError:
            continue
        for child in children:
            try:
                stat = child.stat(follow_symlinks=False)
            except OSError:
                continue  # removed by another process meanwhile
            yield Path(child.path), stat


def _is_entry(path: Path) -> bool:
    return path.name.endswith(ENTRY_SUFFIX)


def _remove(path: Path) -> bool:
    try:
        os.unlink(path)
        return True
    except OSError:
        return False


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"
