"""A small Alibaba Cloud OSS-protocol server for tests, on 127.0.0.1.

It verifies every request's signature with its own implementation of OSS
signature V1 (what oss2.Auth sends by default; this module does not use oss2's
signer):

    Authorization: OSS <AccessKeyId>:<Signature>
    Signature = base64(hmac-sha1(AccessKeySecret,
        VERB "\\n" Content-MD5 "\\n" Content-Type "\\n" Date "\\n"
        CanonicalizedOSSHeaders CanonicalizedResource))

CanonicalizedOSSHeaders: every ``x-oss-*`` header, name lower-cased, sorted,
``name:value\\n`` each. CanonicalizedResource: ``/<bucket>/<key>`` (the key
decoded) followed by the sub-resources of the query (uploads, uploadId,
partNumber, acl, ...) sorted, ``?k=v&k2`` (no ``=`` for an empty value).

Buckets are addressed path style (``http://127.0.0.1:PORT/<bucket>/<key>``),
which is what oss2 does for an IP endpoint. Implemented: PutObject, GetObject (also ranged),
HeadObject, DeleteObject, InitiateMultipartUpload, UploadPart,
CompleteMultipartUpload (part numbers ascending, ETags checked, parts but the
last >= 100 KiB), AbortMultipartUpload, ListMultipartUploads. Errors are OSS's
XML (``<Error><Code>..``); a HEAD error carries it base64 in ``x-oss-err`` as
OSS does. Responses carry ``x-oss-hash-crc64ecma`` so oss2 checks integrity.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import crcmod

_crc64 = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF)

SUBRESOURCES = frozenset({
    "acl", "uploads", "location", "cors", "logging", "website", "referer", "lifecycle", "delete", "append",
    "tagging", "objectMeta", "uploadId", "partNumber", "security-token", "position", "img", "style", "styleName",
    "replication", "replicationProgress", "replicationLocation", "cname", "bucketInfo", "comp", "qos", "live",
    "status", "vod", "startTime", "endTime", "symlink", "x-oss-process", "response-content-type",
    "response-content-language", "response-expires", "response-cache-control", "response-content-disposition",
    "response-content-encoding", "restore", "callback", "callback-var", "versions", "versioning", "versionId",
    "policy", "requestPayment", "encryption", "stat", "continuation-token",
})
MIN_PART = 100 * 1024
MAX_SKEW_S = 15 * 60


@dataclass
class StoredObject:
    data: bytes
    etag: str            # without quotes, upper-case hex (multipart: "<hex>-<n>")
    content_type: str
    crc64: int


@dataclass
class Upload:
    bucket: str
    key: str
    content_type: str
    initiated: float = field(default_factory=time.time)
    parts: dict[int, StoredObject] = field(default_factory=dict)


class OssError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: str):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def string_to_sign(method: str, headers: dict[str, str], bucket: str, key: str, query: list[tuple[str, str]]) -> str:
    """OSS V1 string to sign; `headers` with lower-case names."""
    oss_headers = sorted((name, value) for name, value in headers.items() if name.startswith("x-oss-"))
    canonical_headers = "".join(f"{name}:{value}\n" for name, value in oss_headers)
    resource = f"/{bucket}/{key}" if bucket else "/"
    sub = sorted((name, value) for name, value in query if name in SUBRESOURCES)
    if sub:
        resource += "?" + "&".join(f"{name}={value}" if value else name for name, value in sub)
    date = headers.get("x-oss-date") or headers.get("date", "")
    return "\n".join([method, headers.get("content-md5", ""), headers.get("content-type", ""), date,
                      canonical_headers + resource])


def sign(secret: str, text: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), text.encode("utf-8"), hashlib.sha1).digest()).decode()


class OssServer:
    """Start with `start()`; `endpoint` is ``http://127.0.0.1:<port>``."""

    def __init__(self, credentials: dict[str, str], buckets: tuple[str, ...] = ()):
        self.credentials = dict(credentials)
        self.buckets: dict[str, dict[str, StoredObject]] = {name: {} for name in buckets}
        self.uploads: dict[str, Upload] = {}
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, int]] = []   # (method, path?query, status)
        self.fail_with: tuple[int, str] | None = None    # answer every request with this error
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> OssServer:
        server = self

        class Handler(_Handler):
            oss = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="oss-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # for tests
    def create_bucket(self, name: str) -> None:
        with self.lock:
            self.buckets.setdefault(name, {})

    def object(self, bucket: str, key: str) -> bytes | None:
        stored = self.buckets.get(bucket, {}).get(key)
        return None if stored is None else stored.data

    def pending_uploads(self, bucket: str) -> list[str]:
        with self.lock:
            return [upload.key for upload in self.uploads.values() if upload.bucket == bucket]


def _etag(data: bytes) -> str:
    return hashlib.md5(data).hexdigest().upper()


class _Handler(BaseHTTPRequestHandler):
    oss: OssServer
    protocol_version = "HTTP/1.1"
    server_version = "AliyunOSS"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    # plumbing
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("x-oss-request-id", self._request_id)
        self.send_header("Date", email.utils.formatdate(usegmt=True))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self.oss.requests.append((self.command, self.path, status))

    def _send_error(self, error: OssError) -> None:
        extra = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in error.extra.items())
        xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
               f"<Code>{error.code}</Code><Message>{escape(error.message)}</Message>"
               f"<RequestId>{self._request_id}</RequestId><HostId>127.0.0.1</HostId>{extra}</Error>").encode()
        if self.command == "HEAD":
            self._send(error.status, headers={"x-oss-err": base64.b64encode(xml).decode(),
                                              "Content-Type": "application/xml"}, content_length=0)
        else:
            self._send(error.status, xml, {"Content-Type": "application/xml"})

    def _serve(self) -> None:
        self._request_id = uuid.uuid4().hex[:24].upper()
        try:
            body = self._read_body()
            parts = urlsplit(self.path)
            _, _, rest = parts.path.partition("/")
            bucket, _, raw_key = rest.partition("/")
            bucket, key = unquote(bucket), unquote(raw_key)
            query = parse_qsl(parts.query, keep_blank_values=True)
            self._authenticate(bucket, key, query)
            if self.oss.fail_with is not None:
                status, code = self.oss.fail_with
                raise OssError(status, code, "told to fail")
            self._dispatch(bucket, key, dict(query), body)
        except OssError as error:
            self._send_error(error)
        except Exception as error:  # a bug in this server: say so to the client
            self._send_error(OssError(500, "InternalError", f"{type(error).__name__}: {error}"))

    def _authenticate(self, bucket: str, key: str, query: list[tuple[str, str]]) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        authorization = headers.get("authorization", "")
        if not authorization.startswith("OSS ") or ":" not in authorization:
            raise OssError(403, "AccessDenied", "You have no right to access this object because of bucket acl.")
        access_key_id, _, provided = authorization[4:].rpartition(":")
        secret = self.oss.credentials.get(access_key_id)
        if secret is None:
            raise OssError(403, "InvalidAccessKeyId",
                           "The OSS Access Key Id you provided does not exist in our records.",
                           OSSAccessKeyId=access_key_id)
        date = headers.get("x-oss-date") or headers.get("date", "")
        try:
            sent = email.utils.parsedate_to_datetime(date)
        except (TypeError, ValueError):
            raise OssError(403, "AccessDenied", "OSS authentication requires a valid Date.") from None
        if abs((datetime.now(timezone.utc) - sent).total_seconds()) > MAX_SKEW_S:
            raise OssError(403, "RequestTimeTooSkewed", "The difference between the request time and the current "
                           "time is too large.")
        text = string_to_sign(self.command, headers, bucket, key, query)
        if not hmac.compare_digest(sign(secret, text), provided):
            raise OssError(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the "
                           "signature you provided. Check your key and signing method.",
                           OSSAccessKeyId=access_key_id, SignatureProvided=provided, StringToSign=text)

    def _dispatch(self, bucket_name: str, key: str, query: dict[str, str], body: bytes) -> None:
        oss = self.oss
        if not bucket_name:
            raise OssError(400, "NotImplemented", "service-level operations are not implemented")
        with oss.lock:
            bucket = oss.buckets.get(bucket_name)
        if bucket is None:
            raise OssError(404, "NoSuchBucket", "The specified bucket does not exist.", BucketName=bucket_name)
        method = self.command
        if not key:
            if method == "GET" and "uploads" in query:
                return self._list_uploads(bucket_name)
            raise OssError(400, "NotImplemented", f"{method} on a bucket is not implemented")
        if "content-md5" in {name.lower() for name in self.headers}:
            expected = base64.b64encode(hashlib.md5(body).digest()).decode()
            if self.headers["Content-MD5"] != expected:
                raise OssError(400, "InvalidDigest", "The Content-MD5 you specified is not valid.")
        content_type = self.headers.get("Content-Type", "application/octet-stream")
        if method == "PUT" and "uploadId" in query:
            return self._upload_part(bucket_name, key, query, body)
        if method == "PUT":
            stored = StoredObject(body, _etag(body), content_type, _crc64(body))
            with oss.lock:
                bucket[key] = stored
            return self._send(200, headers={"ETag": f'"{stored.etag}"', "x-oss-hash-crc64ecma": str(stored.crc64)})
        if method == "POST" and "uploads" in query:
            upload_id = uuid.uuid4().hex.upper()
            with oss.lock:
                oss.uploads[upload_id] = Upload(bucket_name, key, content_type)
            xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<InitiateMultipartUploadResult>'
                   f"<Bucket>{escape(bucket_name)}</Bucket><Key>{escape(key)}</Key><UploadId>{upload_id}</UploadId>"
                   "</InitiateMultipartUploadResult>").encode()
            return self._send(200, xml, {"Content-Type": "application/xml"})
        if method == "POST" and "uploadId" in query:
            return self._complete(bucket, bucket_name, key, query["uploadId"], body)
        if method == "DELETE" and "uploadId" in query:
            with oss.lock:
                self._upload(bucket_name, key, query["uploadId"])
                del oss.uploads[query["uploadId"]]
            return self._send(204)
        if method == "DELETE":
            with oss.lock:
                bucket.pop(key, None)
            return self._send(204)
        if method in ("GET", "HEAD"):
            with oss.lock:
                stored = bucket.get(key)
            if stored is None:
                raise OssError(404, "NoSuchKey", "The specified key does not exist.", Key=key)
            headers = {"ETag": f'"{stored.etag}"', "Content-Type": stored.content_type,
                       "x-oss-hash-crc64ecma": str(stored.crc64),
                       "x-oss-object-type": "Multipart" if "-" in stored.etag else "Normal"}
            wanted = self.headers.get("Range", "")
            if method == "GET" and wanted.startswith("bytes="):
                return self._send_range(stored, wanted, headers)
            return self._send(200, stored.data, headers, content_length=len(stored.data))
        raise OssError(400, "NotImplemented", f"{method} with {sorted(query)} is not implemented")

    def _send_range(self, stored: StoredObject, wanted: str, headers: dict[str, str]) -> None:
        """A ranged GET with x-oss-range-behavior: standard (a start past the end is 416)."""
        first, _, last = wanted.removeprefix("bytes=").partition("-")
        size = len(stored.data)
        start, end = int(first), min(int(last) if last else size - 1, size - 1)
        if start >= size:
            raise OssError(416, "InvalidRange", "The requested range cannot be satisfied.")
        headers = {**headers, "Content-Range": f"bytes {start}-{end}/{size}"}
        del headers["x-oss-hash-crc64ecma"]  # of the whole object, not of the part sent
        self._send(206, stored.data[start:end + 1], headers)

    def _upload(self, bucket_name: str, key: str, upload_id: str) -> Upload:
        upload = self.oss.uploads.get(upload_id)
        if upload is None or upload.bucket != bucket_name or upload.key != key:
            raise OssError(404, "NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, "
                           "or the upload may have been aborted or completed.", UploadId=upload_id)
        return upload

    def _upload_part(self, bucket_name: str, key: str, query: dict[str, str], body: bytes) -> None:
        try:
            number = int(query.get("partNumber", ""))
        except ValueError:
            raise OssError(400, "InvalidArgument", "partNumber is not a number") from None
        if not 1 <= number <= 10000:
            raise OssError(400, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive.")
        part = StoredObject(body, _etag(body), "", _crc64(body))
        with self.oss.lock:
            self._upload(bucket_name, key, query["uploadId"]).parts[number] = part
        self._send(200, headers={"ETag": f'"{part.etag}"', "x-oss-hash-crc64ecma": str(part.crc64)})

    def _complete(self, bucket: dict[str, StoredObject], bucket_name: str, key: str, upload_id: str,
                  body: bytes) -> None:
        try:
            root = ElementTree.fromstring(body)
            listed = [(int(part.findtext("PartNumber", "")), part.findtext("ETag", "").strip().strip('"'))
                      for part in root.findall("Part")]
        except (ElementTree.ParseError, ValueError):
            raise OssError(400, "MalformedXML", "The XML you provided was not well-formed.") from None
        if not listed:
            raise OssError(400, "MalformedXML", "The XML you provided has no Part.")
        numbers = [number for number, _ in listed]
        if numbers != sorted(set(numbers)):
            raise OssError(400, "InvalidPartOrder", "The list of parts was not in ascending order.")
        with self.oss.lock:
            upload = self._upload(bucket_name, key, upload_id)
            data = bytearray()
            digests = b""
            for index, (number, etag) in enumerate(listed):
                part = upload.parts.get(number)
                if part is None or part.etag != etag.upper():
                    raise OssError(400, "InvalidPart", "One or more of the specified parts could not be found or "
                                   "the specified entity tag might not have matched the part's entity tag.",
                                   PartNumber=str(number), ETag=etag)
                if index < len(listed) - 1 and len(part.data) < MIN_PART:
                    raise OssError(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum "
                                   "allowed size.", PartNumber=str(number))
                data += part.data
                digests += bytes.fromhex(part.etag)
            stored = StoredObject(bytes(data), f"{hashlib.md5(digests).hexdigest().upper()}-{len(listed)}",
                                  upload.content_type, _crc64(bytes(data)))
            bucket[key] = stored
            del self.oss.uploads[upload_id]
        xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<CompleteMultipartUploadResult>'
               f"<Location>{self.oss.endpoint}/{escape(bucket_name)}/{escape(key)}</Location>"
               f"<Bucket>{escape(bucket_name)}</Bucket><Key>{escape(key)}</Key><ETag>\"{stored.etag}\"</ETag>"
               "</CompleteMultipartUploadResult>").encode()
        self._send(200, xml, {"Content-Type": "application/xml", "ETag": f'"{stored.etag}"',
                              "x-oss-hash-crc64ecma": str(stored.crc64)})

    def _list_uploads(self, bucket_name: str) -> None:
        with self.oss.lock:
            uploads = sorted(((u.key, upload_id, u.initiated) for upload_id, u in self.oss.uploads.items()
                              if u.bucket == bucket_name))
        entries = "".join(
            f"<Upload><Key>{escape(key)}</Key><UploadId>{upload_id}</UploadId>"
            f"<Initiated>{datetime.fromtimestamp(initiated, timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.000Z')}"
            "</Initiated></Upload>"
            for key, upload_id, initiated in uploads)
        xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<ListMultipartUploadsResult>'
               f"<Bucket>{escape(bucket_name)}</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>"
               "<NextKeyMarker></NextKeyMarker><NextUploadIdMarker></NextUploadIdMarker><Delimiter></Delimiter>"
               f"<Prefix></Prefix><MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>{entries}"
               "</ListMultipartUploadsResult>").encode()
        self._send(200, xml, {"Content-Type": "application/xml"})
