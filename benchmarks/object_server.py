"""A loopback S3 server for benchmarks: a local folder as one bucket, with latency and bandwidth.

    server = start("/tmp/stores", latency_s=0.03, link_bps=1e9, conn_bps=None)
    xr.open_zarr(server.url("aef.zarr"), storage_options=server.storage_options)
    server.counts()        # requests by operation and by key, bytes, connections, most in flight
    server.reset_counts(); server.configure(latency_s=0.08, link_bps=1e8); server.stop()

    python benchmarks/object_server.py FOLDER [--port 9000] [--bucket bench]
        [--latency-ms 30] [--link-mbps 1000] [--conn-mbps 250]

Path-style S3, enough for s3fs and zarr (benchmarks/s3_answers.py: GetObject with Range read
by a seek, so a ranged GET of a shard costs its bytes, not the object's, unlike moto;
HeadObject, ListObjectsV2, PutObject, DeleteObject(s), ...). Signatures are not checked.

The network it stands in for: each request waits latency_s before its answer (one round trip)
and a new connection waits one more (the TCP handshake); response bodies are paced by a token
bucket per connection (conn_bps) and one that all connections share (link_bps, the link).
One thread per connection, bodies sent with sendfile. start() runs the server in a child
process, so its Python does not compete for the benchmark's GIL; in_process=True keeps it in
this process. Control requests (/~counts, /~reset, /~configure) are neither delayed nor counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from http.server import ThreadingHTTPServer
from pathlib import Path

# Its sibling, also when this file is loaded by path rather than from benchmarks/ on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3_answers import TEMPORARY, Pacer, S3Handler  # noqa: E402,F401  (TEMPORARY: tests)

SETTINGS = ("latency_s", "link_bps", "conn_bps", "connect_latency_s")


class Tally:
    """What the server has answered since the last reset (thread-safe)."""

    def __init__(self):
        self.lock = threading.Condition()
        self.in_flight = 0
        self.reset()

    def reset(self):
        """Start counting afresh (requests being answered still end, and count, after it)."""
        with self.lock:
            self.operations = Counter()
            self.keys = defaultdict(Counter)
            self.statuses = Counter()
            self.bytes_sent = self.bytes_received = self.connections = 0
            self.max_in_flight = self.in_flight
            self.request_seconds, self.first_begin, self.last_end = 0.0, None, None
            self.cpu_at_reset = _cpu_seconds()
            self.timeline = []  # (began, ended, operation, key, bytes sent) per request

    def connected(self):
        with self.lock:
            self.connections += 1

    def begin(self) -> float:
        """Count a request in; returns its start time for end()."""
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            now = time.monotonic()
            self.first_begin = now if self.first_begin is None else self.first_begin
            return now

    def end(self, began, operation, key, status, sent, received):
        with self.lock:
            self.in_flight -= 1
            self.last_end = time.monotonic()
            self.request_seconds += self.last_end - began
            self.operations[operation] += 1
            self.keys[key][operation] += 1
            self.statuses[str(status)] += 1
            self.bytes_sent += sent
            self.bytes_received += received
            self.timeline.append((began, self.last_end, operation, key, sent))
            self.lock.notify_all()

    def as_dict(self, wait_s: float = 2.0) -> dict:
        """The counts, once the requests being answered are done (a client can have read the
        whole answer before its thread counts it), or after wait_s."""
        with self.lock:
            self.lock.wait_for(lambda: self.in_flight == 0, timeout=wait_s)
            return {
                "requests": sum(self.operations.values()),
                "operations": dict(self.operations),
                "keys": {key: dict(ops) for key, ops in self.keys.items()},
                "statuses": dict(self.statuses),
                "bytes_sent": self.bytes_sent,
                "bytes_received": self.bytes_received,
                "connections": self.connections,
                "max_in_flight": self.max_in_flight,
                # mean requests in flight = request_seconds / span_s
                "request_seconds": self.request_seconds,
                "span_s": (self.last_end or 0.0) - (self.first_begin or 0.0),
                # the serving process's CPU (with in_process=True: the whole process's)
                "cpu_seconds": _cpu_seconds() - self.cpu_at_reset,
                # every request: (began, ended, operation, key, bytes sent); time.monotonic()
                # seconds, the clock the client's processes share on one machine
                "timeline": list(self.timeline),
            }


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class BucketServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def __init__(self, folder, bucket, port=0, **settings):
        super().__init__(("127.0.0.1", port), S3Handler)
        self.root = Path(folder).absolute()
        self.bucket = bucket
        self.tally = Tally()
        self.latency_s = self.connect_latency_s = 0.0
        self.link = Pacer(None)
        self.conn_bps = None
        self.configure(**settings)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def configure(self, latency_s=None, link_bps=None, conn_bps=None, connect_latency_s=None):
        """Settings for requests from now on; connect_latency_s defaults to latency_s."""
        self.latency_s = float(latency_s or 0.0)
        self.connect_latency_s = self.latency_s if connect_latency_s is None else connect_latency_s
        self.link.bps = float(link_bps) if link_bps else None
        self.conn_bps = float(conn_bps) if conn_bps else None

    def control(self, name: str, query: dict) -> dict | None:
        """/~counts, /~reset, /~configure?SETTING=VALUE...: the answer, None for others."""
        if name == "counts":
            return self.tally.as_dict()
        if name == "reset":
            self.tally.reset()
            return {}
        if name == "configure":
            self.configure(**{k: None if v == "none" else float(v) for k, v in query.items()})
            settings = (self.latency_s, self.link.bps, self.conn_bps, self.connect_latency_s)
            return dict(zip(SETTINGS, settings, strict=True))
        return None


class ObjectServer:
    """A running server: endpoint_url, bucket, storage_options, url(key), counts(), stop()."""

    def __init__(self, endpoint_url: str, bucket: str, stop):
        self.endpoint_url = endpoint_url
        self.bucket = bucket
        self._stop = stop

    @property
    def storage_options(self) -> dict:
        """s3fs options for this server (dummy keys: signatures are not checked)."""
        return {"key": "bench", "secret": "bench", "endpoint_url": self.endpoint_url}

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}".rstrip("/")

    def counts(self) -> dict:
        """requests, operations {name: n}, keys {key: {operation: n}}, statuses, bytes_sent,
        bytes_received, connections (opened), max_in_flight (most requests answered at once),
        request_seconds (their durations added up), span_s (first request to last answer),
        cpu_seconds (the server process's; with in_process=True the whole process's)."""
        return self._control("counts")

    def reset_counts(self) -> None:
        self._control("reset")

    def configure(self, **settings) -> dict:
        """Change latency_s, link_bps, conn_bps, connect_latency_s for requests from now on
        (one not given goes back to its default: none)."""
        unknown = set(settings) - set(SETTINGS)
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}; known: {SETTINGS}")
        query = urllib.parse.urlencode({k: "none" if v is None else v for k, v in settings.items()})
        return self._control(f"configure?{query}")

    def stop(self) -> None:
        self._stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _control(self, what: str) -> dict:
        with urllib.request.urlopen(f"{self.endpoint_url}/~{what}", timeout=30) as answer:
            return json.loads(answer.read())


def start(
    folder,
    latency_s: float = 0.0,
    link_bps: float | None = None,
    conn_bps: float | None = None,
    *,
    bucket: str = "bench",
    connect_latency_s: float | None = None,
    in_process: bool = False,
    port: int = 0,
) -> ObjectServer:
    """Serve `folder` as s3://bucket/ on 127.0.0.1: each request waits latency_s, bodies share
    link_bps and each connection gets at most conn_bps (bits per second; None: no limit)."""
    settings = {
        "latency_s": latency_s,
        "link_bps": link_bps,
        "conn_bps": conn_bps,
        "connect_latency_s": connect_latency_s,
    }
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"{folder} is not a folder to serve")
    if in_process:
        server = BucketServer(folder, bucket, port, **settings)
        thread = threading.Thread(target=server.serve_forever, name="object-server", daemon=True)
        thread.start()

        def stop():
            server.shutdown()
            server.server_close()

        return ObjectServer(server.endpoint_url, bucket, stop)
    arguments = [sys.executable, __file__, str(folder), "--bucket", bucket, "--port", str(port)]
    arguments += ["--parent", str(os.getpid())]
    for name, value in settings.items():
        if value is not None:
            arguments += [f"--{name.replace('_', '-')}", repr(float(value))]
    child = subprocess.Popen(arguments, stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline().strip()
    if not line.startswith("http://"):
        child.kill()
        raise RuntimeError(f"the object server did not start (said {line!r})")

    def stop():
        if child.poll() is None:
            child.terminate()
            child.wait(10)
        child.stdout.close()

    return ObjectServer(line, bucket, stop)


def _watch_parent(pid: int):
    """End this process when the one that started it is gone (no server outlives a benchmark)."""
    while os.getppid() == pid:
        time.sleep(1)
    os._exit(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="folder served as the bucket")
    parser.add_argument("--bucket", default="bench")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="per request")
    parser.add_argument("--link-mbps", type=float, help="shared by all connections")
    parser.add_argument("--conn-mbps", type=float, help="for each connection")
    # start() passes its settings in SI units, and its pid so the server ends with it.
    for name in SETTINGS:
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--parent", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    def given(si, value, scale):
        return si if si is not None else (value * scale if value else None)

    server = BucketServer(
        args.folder,
        args.bucket,
        args.port,
        latency_s=given(args.latency_s, args.latency_ms, 1e-3),
        link_bps=given(args.link_bps, args.link_mbps, 1e6),
        conn_bps=given(args.conn_bps, args.conn_mbps, 1e6),
        connect_latency_s=args.connect_latency_s,
    )
    print(server.endpoint_url, flush=True)
    if args.parent:
        threading.Thread(target=_watch_parent, args=(args.parent,), daemon=True).start()
    else:
        print(f"serving {server.root} as s3://{args.bucket}/ (Ctrl-C stops)", file=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
