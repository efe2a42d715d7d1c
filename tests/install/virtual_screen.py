"""A virtual screen (Xvfb) for the QGIS desktop tests, on a display no other X server holds.

Every X server of the machine, in every chroot or container that shares its network namespace,
holds an abstract socket ``@/tmp/.X11-unix/X<n>``; clients (libxcb) try that socket first and the
filesystem one second. A display number is taken only when neither socket nor a lock file of
this root names it, and the server is used only after a real X11 connection set-up on the
socket a client would take has been answered with success.
"""

from __future__ import annotations

import os
import random
import select
import socket
import struct
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path


def _taken_displays() -> set[int]:
    taken = set()
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        lines = []
    for line in lines:
        name = line.split()[-1] if len(line.split()) >= 8 else ""
        if "/.X11-unix/X" in name:
            tail = name.rsplit("X", 1)[1]
            if tail.isdigit():
                taken.add(int(tail))
    for lock in Path("/tmp").glob(".X*-lock"):
        number = lock.name[2:-5]
        if number.isdigit():
            taken.add(int(number))
    return taken


def _connect(number: int) -> socket.socket:
    """The socket libxcb would use for ``:number``: the abstract one, else the filesystem one."""
    for address in (f"\0/tmp/.X11-unix/X{number}", f"/tmp/.X11-unix/X{number}"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        try:
            sock.connect(address)
            return sock
        except OSError:
            sock.close()
    raise OSError(f"no X socket answers for display :{number}")


def answers(number: int) -> str:
    """'' when an X11 connection set-up on ``:number`` succeeds, else why it did not."""
    try:
        sock = _connect(number)
    except OSError as error:
        return str(error)
    with sock:
        # Little-endian set-up request, protocol 11.0, no authorisation.
        sock.sendall(struct.pack("<cxHHHHxx", b"l", 11, 0, 0, 0))
        try:
            reply = sock.recv(8)
        except OSError as error:
            return f"no set-up reply: {error}"
    if reply[:1] == b"\x01":
        return ""
    return f"the server refused the connection set-up (reply {reply!r})"


def _announcement(ready: int, seconds: float = 90) -> str:
    """The display number Xvfb writes to -displayfd, read up to its newline.

    Xvfb writes the number and the newline in two writes and dies ("Cannot write display
    number to fd") when the second finds the pipe closed: closing it after the first read
    killed the server just after it announced itself, and QGIS then could not connect.
    Its keymap compiler can take a while on a busy machine.
    """
    said = b""
    deadline = time.monotonic() + seconds
    while not said.endswith(b"\n"):
        readable, _, _ = select.select([ready], [], [], max(0.0, deadline - time.monotonic()))
        part = os.read(ready, 64) if readable else b""
        if not part:  # timed out, or the server exited
            break
        said += part
    return said.decode().strip()


@contextmanager
def virtual_screen(log: Path, tries: int = 4):
    """Yield the DISPLAY of a fresh Xvfb that answers; its output goes to ``log``."""
    refusals = []
    for _ in range(tries):
        taken = _taken_displays()
        number = random.choice([n for n in range(100, 1000) if n not in taken])
        ready, announce = os.pipe()
        with log.open("a") as out:
            server = subprocess.Popen(
                ["Xvfb", f":{number}", "-displayfd", str(announce),
                 "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                stdout=out, stderr=subprocess.STDOUT, pass_fds=(announce,),
            )  # fmt: skip
        os.close(announce)
        announced = _announcement(ready)
        os.close(ready)
        why = answers(number) if announced == str(number) else "it did not announce its display"
        if not why:
            try:
                yield f":{number}"
            finally:
                server.terminate()
                server.wait(timeout=10)
            return
        server.kill()
        server.wait(timeout=10)
        refusals.append(f":{number}: {why}")
    said = log.read_text()[-2000:]
    raise RuntimeError(f"Xvfb did not give a usable display: {'; '.join(refusals)}\n{said}")
