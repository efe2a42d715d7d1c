"""Claiming a local output path for one run: `.<name>.claim` next to it, created exclusively.

A second run to the same output fails at once instead of doing all the work and failing at
the final rename. A claim whose owner process is gone (a run killed with kill -9, a crash)
is stale: the next run to that output removes it and the hidden `.<name>.partial-*` folders
left with it, and says so in its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import OutputError


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


def _busy_message(output: Path, path: Path, owner: dict | None) -> str:
    who = ""
    if owner:
        since = time.strftime("%H:%M:%S", time.localtime(owner.get("started", 0)))
        who = f" (process {owner.get('pid')} on {owner.get('host')}, since {since})"
    return (
        f"Another run{who} is writing {output}; wait for it to finish or choose another "
        f"output name. If no run is going on, delete {path}."
    )
