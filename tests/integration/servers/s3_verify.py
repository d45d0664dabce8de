"""A small S3 stand-in that checks every request's SigV4 signature with
botocore (the AWS SDK's own signer) and rejects mismatches as S3 does.

It serves objects from memory: ListObjectsV2 (prefix, max-keys,
continuation tokens that always contain '+', '/' and '=', encoding-type=url
answered the way S3 answers it), GET and HEAD with Range and If-Match.
Path-style and virtual-hosted requests are both understood; the latter
arrive through the server acting as an HTTP proxy (absolute request URIs),
so no DNS is needed.

Credentials are registered with add_credentials() (temporary ones with a
session token and an expiry); the credential stand-ins in aws_metadata.py
register the ones they hand out. Every request is logged in .log as a
dict: method, path, query, host, access_key, token, status, code.

Run with Debian's /usr/bin/python3 (python3-botocore).
"""

import base64
import datetime
import hashlib
import http.server
import os
import sys
import threading
import time
import urllib.parse
from email.utils import formatdate
from xml.sax.saxutils import escape

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class S3Object:
    def __init__(self, data, mtime=None, checksum=None):
        self.data = data
        self.etag = '"%s"' % hashlib.md5(data).hexdigest()
        self.mtime = mtime or time.time()
        self.checksum = checksum  # SHA-256 digest (bytes) S3 keeps, or None


def s3_url_encode(key):
    """What S3 sends for encoding-type=url: form encoding, '/' kept."""
    return urllib.parse.quote_plus(key, safe="/")


def make_token(key):
    """An opaque continuation token that contains '+', '/' and '='."""
    raw = b"\xfb\xff" + key.encode("utf-8")
    if len(raw) % 3 == 0:
        raw += b"\x00"
    tok = base64.b64encode(raw).decode()
    assert "+" in tok and "/" in tok and "=" in tok
    return tok


def parse_token(tok):
    raw = base64.b64decode(tok.encode(), validate=True)
    if not raw.startswith(b"\xfb\xff"):
        raise ValueError("bad token")
    return raw[2:].rstrip(b"\x00").decode("utf-8")


class S3VerifyServer:
    def __init__(self, bucket="bucket", region="us-east-1", host="127.0.0.1",
                 vhost_suffix="s3.test"):
        self.bucket = bucket
        self.cycle_tokens = False
        self.issued = []  # continuation tokens handed out, in order
        self.region = region
        self.vhost_suffix = vhost_suffix
        self.objects = {}
        self.creds = {}  # access key -> (secret, token or None, expiry)
        self.log = []
        self.fail_list = []  # statuses to answer the next listings with
        self.list_delay = 0.0  # seconds each listing takes, at least
        self.anonymous = False  # True: unsigned requests are served
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"srv": self})
        self.httpd = http.server.ThreadingHTTPServer((host, 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = "http://%s:%d" % (host, self.port)
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)
        self.thread.start()

    def add_credentials(self, access_key, secret, token=None, expires=None):
        with self.lock:
            self.creds[access_key] = (secret, token, expires)

    def put(self, key, data, checksum=None):
        """@checksum: True, the data's SHA-256 kept as a full-object
        checksum (as an upload with ChecksumAlgorithm SHA256 leaves it); a
        digest (bytes), that one (a wrong one, for tests); None: none."""
        if checksum is True:
            checksum = hashlib.sha256(data).digest()
        self.objects[key] = S3Object(data, checksum=checksum)

    def errors(self):
        return [r for r in self.log if r["status"] >= 400]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    srv = None
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if os.environ.get("S3_VERIFY_DEBUG"):
            sys.stderr.write("s3_verify: " + fmt % args + "\n")

    # -- responses --

    def send(self, status, body=b"", headers=None, code=None):
        self.entry["status"] = status
        self.entry["code"] = code
        with self.srv.lock:
            self.srv.log.append(self.entry)
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, status, code, message, **extra):
        body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s"
                "</Code><Message>%s</Message>%s<RequestId>1</RequestId>"
                "</Error>" % (code, escape(message), "".join(
                    "<%s>%s</%s>" % (k, escape(v), k)
                    for k, v in extra.items()))).encode()
        self.send(status, body, {"Content-Type": "application/xml"}, code)

    # -- signature --

    def verify(self, host, raw_path, raw_query):
        """None when the request is signed right, else (status, code,
        message)."""
        auth = self.headers.get("Authorization")
        if not auth and self.srv.anonymous:
            return None
        if not auth:
            return 403, "AccessDenied", "Access Denied (anonymous)"
        try:
            algo, rest = auth.split(" ", 1)
            parts = dict(p.strip().split("=", 1) for p in rest.split(","))
            cred = parts["Credential"].split("/")
            access_key, date, region, service = cred[0], cred[1], cred[2], \
                cred[3]
            signed = parts["SignedHeaders"].split(";")
            signature = parts["Signature"]
        except (ValueError, KeyError, IndexError):
            return 400, "AuthorizationHeaderMalformed", "malformed"
        self.entry["access_key"] = access_key
        if algo != "AWS4-HMAC-SHA256" or service != "s3":
            return 400, "AuthorizationHeaderMalformed", "algorithm/service"
        if region != self.srv.region:
            return (400, "AuthorizationHeaderMalformed",
                    "the region '%s' is wrong; expecting '%s'" %
                    (region, self.srv.region))
        with self.srv.lock:
            known = self.srv.creds.get(access_key)
        if not known:
            return (403, "InvalidAccessKeyId", "The AWS Access Key Id you "
                    "provided does not exist in our records.")
        secret, token, expires = known
        sent_token = self.headers.get("X-Amz-Security-Token")
        self.entry["token"] = sent_token
        if token != sent_token:
            return 403, "InvalidToken", "The provided token is malformed " \
                "or otherwise invalid."
        if expires is not None and time.time() >= expires:
            return 400, "ExpiredToken", "The provided token has expired."
        # What S3 itself requires signed: Host and every x-amz-* header.
        # Range and If-Match may go unsigned (weightfs leaves them out, so
        # that a rack cache may rewrite Range to its slice's).
        required = {"host", "x-amz-date", "x-amz-content-sha256"}
        for h in self.headers.keys():
            if h.lower().startswith("x-amz-"):
                required.add(h.lower())
        if not required <= set(signed):
            return (403, "AccessDenied", "headers not signed: %s" %
                    sorted(required - set(signed)))
        amz_date = self.headers.get("X-Amz-Date", "")
        try:
            t = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")
        except ValueError:
            return 403, "AccessDenied", "bad X-Amz-Date"
        skew = abs((t - datetime.datetime.utcnow()).total_seconds())
        if skew > 900 or date != amz_date[:8]:
            return 403, "RequestTimeTooSkewed", "skewed"
        payload = self.headers.get("X-Amz-Content-SHA256")
        if payload not in (EMPTY_SHA256, "UNSIGNED-PAYLOAD"):
            return 400, "XAmzContentSHA256Mismatch", "payload hash"
        # Recompute with botocore over exactly the signed headers.
        hdrs = {}
        for name in signed:
            values = self.headers.get_all(name)
            if values is None:
                return 403, "AccessDenied", "signed header %s missing" % name
            hdrs[name] = ",".join(values)
        url = "http://%s%s%s" % (host, raw_path,
                                 "?" + raw_query if raw_query else "")
        req = AWSRequest(method=self.command, url=url, headers=hdrs)
        req.context["timestamp"] = amz_date
        signer = S3SigV4Auth(Credentials(access_key, secret, token), "s3",
                             region)
        creq = signer.canonical_request(req)
        sts = signer.string_to_sign(req, creq)
        if signer.signature(sts, req) != signature:
            return (403, "SignatureDoesNotMatch", "The request signature we "
                    "calculated does not match the signature you provided. "
                    "Check your key and signing method.")
        return None

    # -- requests --

    def route(self):
        """(host, bucket, key or None, raw path, raw query)."""
        target = self.path
        host = self.headers.get("Host", "")
        if target.startswith("http://"):  # through us as a proxy
            u = urllib.parse.urlsplit(target)
            raw_path, raw_query = u.path or "/", u.query
            if u.netloc != host:
                host = u.netloc
        else:
            raw_path, _, raw_query = target.partition("?")
        path = urllib.parse.unquote(raw_path)
        hostname = host.split(":")[0]
        suffix = "." + self.srv.vhost_suffix
        if hostname.endswith(suffix):
            bucket = hostname[:-len(suffix)]
            key = path[1:] or None
        else:
            bucket, _, key = path[1:].partition("/")
            key = key or None
        return host, bucket, key, raw_path, raw_query

    def handle_any(self):
        host, bucket, key, raw_path, raw_query = self.route()
        self.entry = {"method": self.command, "path": raw_path,
                      "query": raw_query, "host": host, "access_key": None,
                      "token": None, "range": self.headers.get("Range")}
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        bad = self.verify(host, raw_path, raw_query)
        if bad:
            status, code, message = bad
            return self.error(status, code, message)
        if bucket != self.srv.bucket:
            return self.error(404, "NoSuchBucket",
                              "The specified bucket does not exist",
                              BucketName=bucket)
        if self.command not in ("GET", "HEAD"):
            return self.error(405, "MethodNotAllowed", "read-only")
        if key is None:
            return self.list_objects(raw_query)
        return self.get_object(key)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = handle_any

    def list_objects(self, raw_query):
        q = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
        if q.get("list-type") != "2":
            return self.error(400, "InvalidArgument", "ListObjects v1")
        prefix = q.get("prefix", "")
        max_keys = min(int(q.get("max-keys", "1000")), 1000)
        with self.srv.lock:
            fail = self.srv.fail_list.pop(0) if self.srv.fail_list else None
        if self.srv.list_delay:
            time.sleep(self.srv.list_delay)
        if fail:
            return self.error(fail, "SlowDown" if fail == 503 else
                              "InternalError", "try again")
        after = None
        if "continuation-token" in q:
            try:
                after = parse_token(q["continuation-token"])
            except ValueError:
                return self.error(400, "InvalidArgument",
                                  "The continuation token provided is "
                                  "incorrect")
        keys = sorted((k for k in self.srv.objects if k.startswith(prefix)),
                      key=lambda k: k.encode("utf-8"))
        # delimiter: keys below the next delimiter roll up into one
        # CommonPrefixes entry, paged in key order like the keys.
        delim, rolled = q.get("delimiter", ""), set()
        if delim:
            entries = []
            for k in keys:
                i = k.find(delim, len(prefix))
                if i >= 0:
                    k = k[:i + len(delim)]
                    rolled.add(k)
                if not entries or entries[-1] != k:
                    entries.append(k)
            keys = entries
        if after is not None:
            keys = [k for k in keys if k.encode() > after.encode()]
        page, rest = keys[:max_keys], keys[max_keys:]
        enc = q.get("encoding-type") == "url"
        out = ["<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/"
               "2006-03-01/\"><Name>%s</Name><Prefix>%s</Prefix>"
               "<KeyCount>%d</KeyCount><MaxKeys>%d</MaxKeys>" %
               (self.srv.bucket, escape(s3_url_encode(prefix) if enc else
                                        prefix), len(page), max_keys)]
        if enc:
            out.append("<EncodingType>url</EncodingType>")
        out.append("<IsTruncated>%s</IsTruncated>" %
                   ("true" if rest else "false"))
        if "continuation-token" in q:
            out.append("<ContinuationToken>%s</ContinuationToken>" %
                       escape(q["continuation-token"]))
        if rest:
            tok = make_token(page[-1])
            with self.srv.lock:
                # cycle_tokens: a broken server whose tokens loop
                # (A -> B -> A ...), which a client must notice.
                if self.srv.cycle_tokens and len(self.srv.issued) >= 2:
                    tok = self.srv.issued[0]
                self.srv.issued.append(tok)
            out.append("<NextContinuationToken>%s</NextContinuationToken>"
                       % escape(tok))
        for k in page:
            if k in rolled:
                out.append("<CommonPrefixes><Prefix>%s</Prefix>"
                           "</CommonPrefixes>" %
                           escape(s3_url_encode(k) if enc else k))
                continue
            o = self.srv.objects[k]
            out.append(
                "<Contents><Key>%s</Key><LastModified>%s</LastModified>"
                "<ETag>%s</ETag><Size>%d</Size><StorageClass>STANDARD"
                "</StorageClass></Contents>" %
                (escape(s3_url_encode(k) if enc else k),
                 time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                               time.gmtime(o.mtime)),
                 escape(o.etag), len(o.data)))
        out.append("</ListBucketResult>")
        self.send(200, "".join(out).encode(),
                  {"Content-Type": "application/xml"})

    def get_object(self, key):
        o = self.srv.objects.get(key)
        if o is None:
            return self.error(404, "NoSuchKey",
                              "The specified key does not exist.", Key=key)
        im = self.headers.get("If-Match")
        if im is not None and im != o.etag:
            return self.error(412, "PreconditionFailed",
                              "At least one of the pre-conditions you "
                              "specified did not hold")
        size = len(o.data)
        headers = {"ETag": o.etag, "Accept-Ranges": "bytes",
                   "Last-Modified": formatdate(o.mtime, usegmt=True),
                   "Content-Type": "application/octet-stream"}
        if o.checksum and self.headers.get(
                "x-amz-checksum-mode", "").upper() == "ENABLED":
            headers["x-amz-checksum-sha256"] = \
                base64.b64encode(o.checksum).decode()
            headers["x-amz-checksum-type"] = "FULL_OBJECT"
        rng = self.headers.get("Range")
        if rng:
            try:
                unit, spec = rng.split("=", 1)
                a, b = spec.split("-", 1)
                a, b = int(a), (int(b) if b else size - 1)
                assert unit == "bytes" and a <= b
            except (ValueError, AssertionError):
                return self.error(400, "InvalidArgument", "bad Range")
            if a >= size:
                return self.error(416, "InvalidRange",
                                  "The requested range is not satisfiable")
            b = min(b, size - 1)
            headers["Content-Range"] = "bytes %d-%d/%d" % (a, b, size)
            return self.send(206, o.data[a:b + 1], headers)
        return self.send(200, o.data, headers)
