"""How the loopback object server answers S3 requests, and paces their bodies.

Path-style S3, enough for s3fs and zarr: GetObject with Range (a seek and a read of the range,
so a ranged GET of a shard costs its bytes, not the object's, unlike moto), HeadObject,
ListObjectsV2 and ListObjects (prefix, delimiter, pages), GetBucketLocation, HeadBucket,
ListBuckets, PutObject, DeleteObject(s). Signatures are not checked. The server (its folder,
bucket, settings and tally) is benchmarks/object_server.py.
"""

from __future__ import annotations

import email.utils
import json
import os
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from xml.sax.saxutils import escape

PIECE = 64 * 1024  # bytes paced at a time
SLACK_S = 0.002  # how far a pacer may catch up on time lost to oversleeping
TEMPORARY = ".~put-"  # PutObject writes here first; never listed
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


class S3Error(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


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
        began = server.tally.begin()
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
            server.tally.end(began, operation, key, status, sent, len(body))

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
            span = byte_range(self.headers.get("Range"), info.st_size)
            if span is None or info.st_size == 0:  # no usable range: the whole object
                (start, stop), status = (0, info.st_size), 200
            else:
                (start, stop), status = span, 206
                if start == stop:
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
        """Answer /~NAME with the server's control answer (JSON), outside the tally."""
        answer = self.server.control(name, query)
        if answer is None:
            self.send_error_xml(S3Error(404, "NoSuchControl", name), name, True)
            return
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, stop) of a `bytes=a-b`, `bytes=a-` or `bytes=-n` Range header (start == stop
    when nothing of it is in the object); None without one, or for one S3 ignores too."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None  # no range, or several (S3 answers those with the whole object)
    first, _, last = header[len("bytes=") :].strip().partition("-")
    try:
        if not first:
            return max(0, size - int(last)), size
        start = int(first)
        stop = min(size, int(last) + 1) if last else size
    except ValueError:
        return None
    if start >= size or stop <= start:
        return (size, size) if start >= size else None
    return start, stop


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
