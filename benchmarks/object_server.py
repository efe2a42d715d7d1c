"""A loopback S3 server for benchmarks: a local folder as one bucket, with latency and bandwidth.

    server = start("/tmp/stores", latency_s=0.03, link_bps=1e9, conn_bps=None)
    xr.open_zarr(server.url("aef.zarr"), storage_options=server.storage_options)
    server.counts()        # requests by operation and by key, bytes, connections, most in flight
    server.reset_counts(); server.configure(latency_s=0.08, link_bps=1e8); server.stop()

    python benchmarks/object_server.py FOLDER [--port 9000] [--bucket bench]
        [--latency-ms 30] [--link-mbps 1000] [--conn-mbps 250]

Path-style S3, enough for s3fs and zarr: GetObject with Range (a seek and a read of the range,
so a ranged GET of a shard costs its bytes, not the object's, unlike moto), HeadObject,
ListObjectsV2 and ListObjects (prefix, delimiter, pages), GetBucketLocation, HeadBucket,
ListBuckets, PutObject, DeleteObject(s). Signatures are not checked.

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
import email.utils
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

PIECE = 64 * 1024  # bytes paced at a time
SLACK_S = 0.002  # how far a pacer may catch up on time lost to oversleeping
TEMPORARY = ".~put-"  # PutObject writes here first; never listed
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
SETTINGS = ("latency_s", "link_bps", "conn_bps", "connect_latency_s")


class Pacer:
    """A token bucket as a schedule: bytes leave at bps / 8 bytes a second (None: no limit)."""

    def __init__(self, bps: float | None):
        self.bps = bps
        self.next_free = 0.0
        self.lock = threading.Lock()

    def reserve(self, n: int, earliest: float) -> tuple[float, float]:
        """(start, end) of n bytes sent no earlier than `earliest`; the link is theirs then."""
        if not self.bps:
            return earliest, earliest
        with self.lock:
            start = max(earliest - SLACK_S, self.next_free)
            self.next_free = start + n * 8 / self.bps
            return start, self.next_free


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

    def connected(self):
        with self.lock:
            self.connections += 1

    def begin(self):
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def end(self, operation, key, status, sent, received):
        with self.lock:
            self.in_flight -= 1
            self.operations[operation] += 1
            self.keys[key][operation] += 1
            self.statuses[str(status)] += 1
            self.bytes_sent += sent
            self.bytes_received += received
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
            }


class S3Error(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


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


class S3Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "object-server"

    def setup(self):
        super().setup()
        self.pacer = Pacer(None)
        self.connected = False

    def log_message(self, format, *args):  # quiet: the tally says what happened
        pass

    def do_GET(self):
        self.dispatch("GET")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method):
        server = self.server
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        query = {name: values[-1] for name, values in query.items()}
        path = urllib.parse.unquote(url.path)
        body = self.read_body() if method in ("PUT", "POST") else b""
        if path.startswith("/~"):
            return self.control(path[2:], query)
        if not self.connected:  # the handshake's round trip, paid by the first request
            self.connected = True
            server.tally.connected()
            time.sleep(server.connect_latency_s)
        self.pacer.bps = server.conn_bps
        bucket, _, key = path.lstrip("/").partition("/")
        operation, status, sent = "Unknown", 500, 0
        server.tally.begin()
        try:
            time.sleep(server.latency_s)
            operation = self.operation(method, bucket, key, query)
            status, sent = self.answer(operation, bucket, key, query, body)
        except S3Error as error:
            status = error.status
            self.send_error_xml(error, key or bucket, with_body=method != "HEAD")
        except (BrokenPipeError, ConnectionResetError):
            status = 499  # the client went away mid-answer
            self.close_connection = True
        except Exception as error:  # a bug here: say so to the client, keep serving
            status = 500
            self.send_error_xml(S3Error(500, "InternalError", repr(error)), key, True)
        finally:
            server.tally.end(operation, key, status, sent, len(body))

    @staticmethod
    def operation(method, bucket, key, query) -> str:
        if not bucket:
            return "ListBuckets"
        if key:
            names = {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject"}
            names["DELETE"] = "DeleteObject"
        elif "location" in query:
            return "GetBucketLocation"
        elif "delete" in query:
            return "DeleteObjects"
        else:
            list_op = "ListObjectsV2" if query.get("list-type") == "2" else "ListObjects"
            names = {"GET": list_op, "HEAD": "HeadBucket", "PUT": "CreateBucket"}
        if "uploads" in query or "uploadId" in query:
            return "MultipartUpload"
        return names.get(method, "Unsupported")

    def answer(self, operation, bucket, key, query, body) -> tuple[int, int]:
        """Send the answer to one request: (status, body bytes sent)."""
        if operation == "ListBuckets":
            names = f"<Bucket><Name>{escape(self.server.bucket)}</Name></Bucket>"
            return self.send_xml("ListAllMyBucketsResult", f"<Buckets>{names}</Buckets>")
        if bucket != self.server.bucket:
            raise S3Error(404, "NoSuchBucket", f"Only bucket {self.server.bucket!r} is served.")
        if operation == "GetObject":
            return self.get_object(key, head=False)
        if operation == "HeadObject":
            return self.get_object(key, head=True)
        if operation == "PutObject":
            return self.put_object(key, body)
        if operation == "DeleteObject":
            self.delete(key)
            return self.send_empty(204)
        if operation == "DeleteObjects":
            return self.delete_objects(body)
        if operation in ("ListObjectsV2", "ListObjects"):
            return self.list_objects(query, v2=operation == "ListObjectsV2")
        if operation == "GetBucketLocation":
            return self.send_xml("LocationConstraint", "")
        if operation in ("HeadBucket", "CreateBucket"):
            return self.send_empty(200)
        raise S3Error(501, "NotImplemented", f"{operation} is not served by this test server.")

    # --- objects -------------------------------------------------------------------------------

    def path_of(self, key: str) -> Path:
        parts = key.split("/")
        if ".." in parts or any(part.startswith(TEMPORARY) for part in parts):
            raise S3Error(400, "InvalidArgument", f"Key {key!r} is not served.")
        return self.server.root.joinpath(*parts)

    def get_object(self, key, head) -> tuple[int, int]:
        path = self.path_of(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise S3Error(404, "NoSuchKey", "The specified key does not exist.") from None
        try:
            info = os.fstat(fd)
            if not os.path.isfile(path):
                raise S3Error(404, "NoSuchKey", "The specified key does not exist.")
            start, stop = byte_range(self.headers.get("Range"), info.st_size)
            status = 206 if stop - start != info.st_size or self.headers.get("Range") else 200
            if start == stop and info.st_size and self.headers.get("Range"):
                raise S3Error(416, "InvalidRange", "The requested range is not satisfiable.")
            self.send_response(status)
            self.send_object_headers(info)
            self.send_header("Content-Length", str(stop - start))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{info.st_size}")
            self.end_headers()
            if head:
                return status, 0
            self.wfile.flush()
            return status, self.send_file(fd, start, stop)
        finally:
            os.close(fd)

    def send_file(self, fd, start, stop) -> int:
        """sendfile the range, paced by the connection's and the link's buckets."""
        link, sent, socket_fd = self.server.link, 0, self.connection.fileno()
        paced = bool(link.bps or self.pacer.bps)
        while start + sent < stop:
            n = min(stop - start - sent, PIECE if paced else 1 << 30)
            if paced:
                now = time.monotonic()
                own_start, own_end = self.pacer.reserve(n, now)
                link_start, link_end = link.reserve(n, own_start)
                if self.pacer.bps and link_start > own_start:
                    self.pacer.next_free = link_start + n * 8 / self.pacer.bps
                delay = max(own_end, link_end) - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            done = os.sendfile(socket_fd, fd, start + sent, n)
            if done == 0:
                raise BrokenPipeError("the client closed the connection")
            sent += done
        return sent

    def send_object_headers(self, info):
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag(info))
        self.send_header("Last-Modified", email.utils.formatdate(info.st_mtime, usegmt=True))
        self.send_header("x-amz-request-id", uuid.uuid4().hex[:16])

    def put_object(self, key, body) -> tuple[int, int]:
        path = self.path_of(key)
        if key.endswith("/"):  # a "folder marker": folders exist as their keys' parents
            return self.send_empty(200)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{TEMPORARY}{uuid.uuid4().hex}")
        temporary.write_bytes(body)
        os.replace(temporary, path)
        self.send_response(200)
        self.send_header("ETag", etag(path.stat()))
        self.send_header("Content-Length", "0")
        self.end_headers()
        return 200, 0

    def delete(self, key):
        """Remove the object, and the folders it leaves empty (S3 has no empty folders)."""
        path = self.path_of(key.rstrip("/"))
        if path.is_file():
            path.unlink()
        folder = path if path.is_dir() else path.parent
        while folder != self.server.root and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent

    def delete_objects(self, body) -> tuple[int, int]:
        import xml.etree.ElementTree as ET

        deleted = []
        for element in ET.fromstring(body).iter():
            if element.tag.rsplit("}", 1)[-1] == "Key":
                self.delete(element.text)
                deleted.append(f"<Deleted><Key>{escape(element.text)}</Key></Deleted>")
        return self.send_xml("DeleteResult", "".join(deleted))

    # --- listings ------------------------------------------------------------------------------

    def list_objects(self, query, v2) -> tuple[int, int]:
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        max_keys = int(query.get("max-keys", 1000))
        if v2:
            token = query.get("continuation-token")
            after = decode_token(token) if token else query.get("start-after", "")
        else:
            after = query.get("marker", "")
        entries = [e for e in self.entries(prefix, delimiter) if e[0] > after]
        page, truncated = entries[:max_keys], len(entries) > max_keys
        quote = (
            (lambda text: urllib.parse.quote(text, safe="/"))
            if query.get("encoding-type")
            else (lambda text: text)
        )
        parts = [f"<Name>{escape(self.server.bucket)}</Name>"]
        parts.append(f"<Prefix>{escape(quote(prefix))}</Prefix>")
        if delimiter:
            parts.append(f"<Delimiter>{escape(quote(delimiter))}</Delimiter>")
        if query.get("encoding-type"):
            parts.append("<EncodingType>url</EncodingType>")
        parts.append(f"<MaxKeys>{max_keys}</MaxKeys><IsTruncated>{str(truncated).lower()}")
        parts.append("</IsTruncated>")
        if v2:
            parts.append(f"<KeyCount>{len(page)}</KeyCount>")
            if token:
                parts.append(f"<ContinuationToken>{escape(token)}</ContinuationToken>")
            if truncated:
                next_token = encode_token(page[-1][0])
                parts.append(f"<NextContinuationToken>{next_token}</NextContinuationToken>")
        elif truncated:
            parts.append(f"<Marker>{escape(quote(after))}</Marker>")
            parts.append(f"<NextMarker>{escape(quote(page[-1][0]))}</NextMarker>")
        for key, info in page:
            if info is None:
                parts.append(
                    f"<CommonPrefixes><Prefix>{escape(quote(key))}</Prefix></CommonPrefixes>"
                )
            else:
                modified = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(info.st_mtime))
                parts.append(
                    f"<Contents><Key>{escape(quote(key))}</Key><LastModified>{modified}"
                    f"</LastModified><ETag>{escape(etag(info))}</ETag><Size>{info.st_size}"
                    "</Size><StorageClass>STANDARD</StorageClass></Contents>"
                )
        return self.send_xml("ListBucketResult", "".join(parts))

    def entries(self, prefix, delimiter) -> list[tuple[str, os.stat_result | None]]:
        """Sorted (key, stat) of the objects and (common prefix, None) of a listing."""
        folder_key, _, start = prefix.rpartition("/")
        folder_key = folder_key + "/" if folder_key else ""
        try:
            folder = self.path_of(folder_key.rstrip("/")) if folder_key else self.server.root
        except S3Error:
            return []
        if delimiter == "/":  # one folder: its files, and its sub-folders as common prefixes
            found = []
            try:
                scan = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                return []
            for entry in scan:
                if entry.name.startswith(TEMPORARY) or not entry.name.startswith(start):
                    continue
                if entry.is_dir():
                    found.append((folder_key + entry.name + "/", None))
                elif entry.is_file():
                    found.append((folder_key + entry.name, entry.stat()))
            return sorted(found, key=lambda e: e[0])
        found = {}
        for here, folders, files in os.walk(folder):
            folders[:] = [f for f in folders if not f.startswith(TEMPORARY)]
            relative = Path(here).relative_to(self.server.root).as_posix()
            base = "" if relative == "." else relative + "/"
            for name in files:
                key = base + name
                if name.startswith(TEMPORARY) or not key.startswith(prefix):
                    continue
                if delimiter and delimiter in key[len(prefix) :]:
                    cut = key.index(delimiter, len(prefix)) + len(delimiter)
                    found[key[:cut]] = None
                else:
                    found[key] = os.stat(os.path.join(here, name))
        return sorted(found.items(), key=lambda e: e[0])

    # --- plumbing ------------------------------------------------------------------------------

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            body = bytearray()
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "aws-chunked" in self.headers.get("Content-Encoding", ""):
            body = aws_chunked_payload(bytes(body))
        return bytes(body)

    def send_xml(self, root: str, content: str, status: int = 200) -> tuple[int, int]:
        element = f'<{root} xmlns="{S3_NS}">{content}</{root}>'
        data = f'<?xml version="1.0" encoding="UTF-8"?>\n{element}'.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return status, len(data)

    def send_empty(self, status) -> tuple[int, int]:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return status, 0

    def send_error_xml(self, error: S3Error, resource: str, with_body: bool):
        text = (
            f"<Error><Code>{error.code}</Code><Message>{escape(str(error))}</Message>"
            f"<Resource>{escape(resource)}</Resource><RequestId>0</RequestId></Error>"
        )
        data = f'<?xml version="1.0" encoding="UTF-8"?>\n{text}'.encode()
        self.send_response(error.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(data) if with_body else 0))
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def control(self, name, query):
        server = self.server
        if name == "counts":
            answer = server.tally.as_dict()
        elif name == "reset":
            server.tally.reset()
            answer = {}
        elif name == "configure":
            settings = {k: None if v == "none" else float(v) for k, v in query.items()}
            server.configure(**settings)
            answer = {k: getattr(server, k, None) for k in SETTINGS}
            answer["link_bps"], answer["conn_bps"] = server.link.bps, server.conn_bps
        else:
            self.send_error_xml(S3Error(404, "NoSuchControl", name), name, True)
            return
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def byte_range(header: str | None, size: int) -> tuple[int, int]:
    """[start, stop) of a `bytes=a-b`, `bytes=a-` or `bytes=-n` Range header; all without one."""
    if not header or not header.startswith("bytes=") or "," in header:
        return 0, size  # no range, or several (S3 answers those with the whole object too)
    first, _, last = header[len("bytes=") :].strip().partition("-")
    try:
        if not first:
            return max(0, size - int(last)), size
        start = int(first)
        stop = min(size, int(last) + 1) if last else size
    except ValueError:
        return 0, size
    if start >= size:
        return size, size
    return start, max(start, stop)


def aws_chunked_payload(raw: bytes) -> bytes:
    """The data of an aws-chunked body (`hex-size[;chunk-signature=...]\\r\\n data \\r\\n` ...)."""
    data, at = bytearray(), 0
    while True:
        end = raw.index(b"\r\n", at)
        size = int(raw[at:end].split(b";")[0], 16)
        if size == 0:
            return bytes(data)
        data += raw[end + 2 : end + 2 + size]
        at = end + 2 + size + 2


def etag(info: os.stat_result) -> str:
    return f'"{info.st_mtime_ns:x}-{info.st_size:x}"'


def encode_token(key: str) -> str:
    return key.encode().hex()


def decode_token(token: str) -> str:
    return bytes.fromhex(token).decode()


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
        bytes_received, connections (opened), max_in_flight (most requests answered at once)."""
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
