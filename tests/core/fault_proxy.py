"""A small fault-injecting HTTP proxy for tests: in front of the local S3 server (moto).

Requests pass through unchanged unless a rule matches (method, a regex on the path, which of
the matching requests): then the proxy answers an error status, resets the connection, sends
a body shorter than it says (with or without a checksum header for the whole body), stalls,
hangs until the test ends, or exits (stops listening, as a server process that died).
Rules pick requests by count, not at random, so every run of a test sees the same faults.
"""

from __future__ import annotations

import base64
import http.client
import re
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ERROR_CODES = {
    403: "AccessDenied",
    500: "InternalError",
    502: "BadGateway",
    503: "SlowDown",
    504: "GatewayTimeout",
}


class _Server(ThreadingHTTPServer):
    # The default listen backlog of 5 drops the SYNs of a run's 9-32 simultaneous connections;
    # the client sends them again after 1 s, 3 s: requests late by the proxy, not the engine.
    request_queue_size = 128


@dataclass
class Rule:
    """Hit matching requests with `action`: status, reset, short, short_checksum, stall, hang,
    exit. `every`: one in that many matching requests (from the first); `times`: at most that
    many hits (None: no limit)."""

    action: str
    method: str | None = None
    path: str = ""
    status: int = 500
    every: int = 1
    times: int | None = None
    seconds: float = 0.0
    matched: int = 0
    hits: int = 0

    def applies(self, method: str, path: str) -> bool:
        if self.method and method != self.method:
            return False
        if not re.search(self.path, path):
            return False
        self.matched += 1
        if (self.matched - 1) % self.every:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        self.hits += 1
        return True


@dataclass
class FaultProxy:
    """The proxy on a free loopback port; `url` is its endpoint for storage options."""

    upstream: str
    rules: list[Rule] = field(default_factory=list)
    requests: int = 0
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range
    in_flight: int = 0
    most_in_flight: int = 0  # the most requests forwarded at once

    def __post_init__(self):
        host, port = self.upstream.removeprefix("http://").split(":")
        self._upstream = (host, int(port))
        self._lock = threading.Lock()
        self._release = threading.Event()
        self.gone = False
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def add(self, *rules: Rule) -> FaultProxy:
        with self._lock:
            self.rules.extend(rules)
        return self

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def hits(self) -> int:
        with self._lock:
            return sum(rule.hits for rule in self.rules)

    def rule_for(self, method: str, path: str, byte_range: str | None = None) -> Rule | None:
        with self._lock:
            self.requests += 1
            self.seen.append((method, path, byte_range))
            return next((r for r in self.rules if r.applies(method, path)), None)

    def exit(self, back_after: float = 0.0) -> None:
        """Stop listening: new connections are refused, open ones closed at their next request.
        With `back_after` seconds, a new server takes the same port then (a restart)."""
        self.gone = True
        self._server.socket.close()
        if back_after:
            timer = threading.Timer(back_after, self._come_back)
            timer.daemon = True
            timer.start()

    def _come_back(self) -> None:
        with self._lock:
            for rule in self.rules:
                if rule.action == "exit":
                    rule.times = rule.hits  # the restarted server does not exit again
        old = self._server
        port = old.server_address[1]
        old.shutdown()
        self._server = _Server(("127.0.0.1", port), old.RequestHandlerClass)
        self._server.daemon_threads = True
        self.gone = False
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._release.set()
        self.gone = True
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultProxy

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self._proxy()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET  # noqa: N815 (http.server's names)

    def _proxy(self):
        proxy = self.owner
        body = self._request_body()
        if proxy.gone:
            return self._reset()
        rule = proxy.rule_for(self.command, self.path, self.headers.get("Range"))
        action = rule.action if rule else None
        if action == "exit":
            proxy.exit(back_after=rule.seconds)
            return self._reset()
        if action == "hang":
            proxy._release.wait()
            return self._reset()
        if action == "reset":
            return self._reset()
        if action == "status":
            return self._error(rule.status)
        with proxy._lock:
            proxy.in_flight += 1
            proxy.most_in_flight = max(proxy.most_in_flight, proxy.in_flight)
        try:
            if action == "stall":
                time.sleep(rule.seconds)
            status, headers, data = self._forward(body)
        finally:
            with proxy._lock:
                proxy.in_flight -= 1
        if action in ("short", "short_checksum") and len(data) > 1:
            return self._short(status, headers, data, checksum=action == "short_checksum")
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _request_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self, body: bytes):
        connection = http.client.HTTPConnection(*self.owner._upstream, timeout=30)
        try:
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in ("connection", "transfer-encoding", "content-length")
            }
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            dropped = ("connection", "transfer-encoding")
            if self.command != "HEAD":
                dropped += ("content-length",)
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in dropped]
            return response.status, kept, data
        finally:
            connection.close()

    def _error(self, status: int):
        code = ERROR_CODES.get(status, "InternalError")
        data = f"<Error><Code>{code}</Code><Message>injected fault</Message></Error>".encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _short(self, status, headers, data, *, checksum: bool):
        half = data[: len(data) // 2]
        self.send_response(status)
        for name, value in headers:
            if not name.lower().startswith("x-amz-checksum"):
                self.send_header(name, value)
        if checksum:
            crc = struct.pack(">I", zlib.crc32(data) & 0xFFFFFFFF)
            self.send_header("x-amz-checksum-crc32", base64.b64encode(crc).decode())
            self.send_header("Content-Length", str(len(half)))
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(half)
        self.wfile.flush()
        if checksum:
            return
        self._reset()

    def _reset(self):
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass


def through(proxy: FaultProxy, s3_storage_options: dict) -> dict:
    """The S3 server's storage options with requests going through the proxy."""
    return {**s3_storage_options, "endpoint_url": proxy.url}
