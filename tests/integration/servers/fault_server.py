"""A small HTTP/1.1 file server that misbehaves on demand.

It serves the files under a directory the way nginx with
`autoindex on; autoindex_format json;` does (JSON directory listings, HEAD,
ETag, Last-Modified, single byte ranges, If-Match -> 412, 301 for a
directory without its trailing slash), keep-alive, one thread per
connection. On top of that, rules make chosen requests fail in ways real
servers do only by accident:

  kind           what the matching request gets
  status         an error status (default 503) with a short body (and
                 a Retry-After header with `retry_after`)
  reset          headers and `after` body bytes, then a TCP reset
  truncate       headers (full Content-Length) and `after` bytes, then FIN
  stall          headers and `after` bytes, a pause of `seconds`, then the
                 rest (or a close when then="close")
  drop           connection closed before any response
  wrong_range    206 whose Content-Range (and body) is `shift` bytes off the
                 range asked for
  wrong_length   206 with the right Content-Range but `extra` more bytes
                 (and a Content-Length that says so)
  short_length   206 with the right Content-Range but `missing` fewer bytes
                 (and a Content-Length that says so)
  ignore_range   200 with the whole file although a range was asked for
  ignore_if_match  serve even when If-Match does not match
  hang           the request is read and never answered (until stop())
  gzip           the body gzip-compressed, with Content-Encoding: gzip
                 (a server that compresses whatever the client accepts)

srv.weak_etags = True makes every ETag weak (W/"..."), compared strongly in
If-Match as RFC 9110 says (a weak tag there never matches: 412).

A rule matches by URL path (fnmatch pattern on the decoded path, e.g.
"/a.bin" or "*.bin"), by method (default GET) and, optionally, only
requests with a Range header; `count` rules apply that many times (None:
forever). Normal-path tests use nginx; this server stands in only for
faults.

In a test:
    srv = FaultServer(root)                 # started, srv.url
    srv.add_fault("status", path="/a.bin", count=3, status=503)
    srv.add_fault("reset", path="/b.bin", after=100000)
    srv.replace("a.bin", new_bytes)          # new inode, mtime, ETag
    srv.extra_entries["/"] = [{"name": "..", "type": "file", "size": 1}]
    srv.listing_override["/"] = (200, "text/html", b"<html>")
    srv.log                                  # [(method, path, range, status, fault)]
    srv.stop()

From the shell: fault_server.py ROOT [--port N]; then rules are set with
POST /__fault__ {"action": "add", "kind": ..., ...} or {"action": "clear"},
and GET /__fault__ returns the request log as JSON.
"""

import argparse
import email.utils
import fnmatch
import gzip
import http.server
import json
import os
import socket
import socketserver
import struct
import sys
import tempfile
import threading
import time
import urllib.parse

CONTROL_PATH = "/__fault__"
KINDS = ("status", "reset", "truncate", "stall", "drop", "wrong_range",
         "wrong_length", "short_length", "ignore_range", "ignore_if_match",
         "hang", "gzip")
CHUNK = 256 * 1024


class Rule:
    def __init__(self, kind, path="*", count=1, methods=("GET",),
                 ranged_only=False, **params):
        if kind not in KINDS:
            raise ValueError("unknown fault kind %r" % kind)
        self.kind = kind
        self.path = path
        self.count = count
        self.methods = tuple(m.upper() for m in methods)
        self.ranged_only = ranged_only
        self.params = params
        self.hits = 0

    def matches(self, method, path, has_range):
        if self.count is not None and self.hits >= self.count:
            return False
        if method not in self.methods:
            return False
        if self.ranged_only and not has_range:
            return False
        return fnmatch.fnmatchcase(path, self.path)

    def __repr__(self):
        return "Rule(%s %s x%s %s)" % (self.kind, self.path, self.count,
                                       self.params)


def etag_of(st):
    """nginx-like strong validator that changes whenever a file is
    rewritten (even within the same second) or replaced."""
    return '"%x-%x-%x"' % (st.st_mtime_ns, st.st_size, st.st_ino)


def http_date(t):
    return email.utils.formatdate(t, usegmt=True)


def parse_range(value, size):
    """(start, end_inclusive) for a single "bytes=" range, None for a
    header we ignore (multi-range, junk), or "unsatisfiable"."""
    if not value or not value.startswith("bytes=") or "," in value:
        return None
    spec = value[6:].strip()
    first, sep, last = spec.partition("-")
    if not sep:
        return None
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return "unsatisfiable"
            return (max(0, size - n), size - 1) if size else "unsatisfiable"
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return "unsatisfiable"
    return (start, min(end, size - 1))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fault_server/1"

    def log_message(self, fmt, *args):
        if self.server.owner.verbose:
            sys.stderr.write("fault_server: " + (fmt % args) + "\n")

    # -- plumbing --------------------------------------------------------
    def _record(self, status, fault=None):
        self.server.owner._record(self.command, self._path,
                                  self.headers.get("Range"),
                                  self.headers.get("If-Match"), status, fault)

    def _simple(self, status, body=b"", ctype="text/plain", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _reset(self):
        """Abort the connection with a TCP RST."""
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass

    def _fin(self):
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.close_connection = True

    def do_GET(self):
        self._serve()

    def do_HEAD(self):
        self._serve()

    def do_POST(self):
        if urllib.parse.urlsplit(self.path).path != CONTROL_PATH:
            self._record(405)
            return self._simple(405, b"method not allowed\n")
        n = int(self.headers.get("Content-Length") or 0)
        try:
            req = json.loads(self.rfile.read(n) or b"{}")
            action = req.pop("action", "add")
            if action == "clear":
                self.server.owner.clear_faults()
            elif action == "add":
                kind = req.pop("kind")
                if "methods" in req:
                    req["methods"] = tuple(req["methods"])
                self.server.owner.add_fault(kind, **req)
            else:
                raise ValueError("unknown action %r" % action)
        except (ValueError, KeyError, TypeError) as e:
            return self._simple(400, ("%s\n" % e).encode())
        self._simple(200, b"ok\n")

    # -- serving ---------------------------------------------------------
    def _serve(self):
        owner = self.server.owner
        split = urllib.parse.urlsplit(self.path)
        self._path = urllib.parse.unquote(split.path)
        if self._path == CONTROL_PATH:
            body = json.dumps([list(x) for x in owner.log]).encode()
            return self._simple(200, body, "application/json")

        rule = owner._take_rule(self.command, self._path,
                                "Range" in self.headers)
        kind = rule.kind if rule else None
        if kind == "drop":
            self._record(0, kind)
            return self._reset()
        if kind == "hang":
            self._record(0, kind)
            owner._stopping.wait()
            self.close_connection = True
            return
        if kind == "status":
            status = rule.params.get("status", 503)
            after = rule.params.get("retry_after")
            self._record(status, kind)
            return self._simple(status, b"injected fault\n", headers=(
                [("Retry-After", str(after))] if after is not None else []))

        override = owner.listing_override.get(self._path)
        if override is not None:
            status, ctype, body = override
            self._record(status)
            return self._simple(status, body, ctype)

        fs_path = owner._fs_path(self._path)
        if fs_path is None:
            self._record(404)
            return self._simple(404, b"not found\n", "text/html")
        if os.path.isdir(fs_path):
            if not self._path.endswith("/"):
                loc = "http://%s%s/" % (self.headers.get("Host", "localhost"),
                                        split.path)
                self._record(301)
                return self._simple(301, b"moved\n", "text/html",
                                    [("Location", loc)])
            return self._listing(fs_path)
        try:
            f = open(fs_path, "rb")
        except OSError:
            self._record(404)
            return self._simple(404, b"not found\n", "text/html")
        with f:
            self._file(f, rule)

    def _listing(self, fs_path):
        owner = self.server.owner
        entries = []
        with os.scandir(fs_path) as it:
            for e in it:
                if e.name.startswith("."):
                    continue  # as nginx's autoindex does
                st = e.stat()
                ent = {"name": e.name,
                       "type": "directory" if e.is_dir() else "file",
                       "mtime": http_date(st.st_mtime)}
                if not e.is_dir():
                    ent["size"] = st.st_size
                entries.append(ent)
        entries.extend(owner.extra_entries.get(self._path, []))
        body = json.dumps(entries, indent=0).encode()
        self._record(200)
        self._simple(200, body, "application/json")

    def _file(self, f, rule):
        kind = rule.kind if rule else None
        params = rule.params if rule else {}
        st = os.fstat(f.fileno())
        size = st.st_size
        etag = etag_of(st)
        if self.server.owner.weak_etags:
            etag = "W/" + etag
        head = self.command == "HEAD"

        im = self.headers.get("If-Match")
        if im is not None and kind != "ignore_if_match":
            tags = [t.strip() for t in im.split(",")]
            # Strong comparison: a weak tag matches nothing.
            strong = [t for t in tags if not t.startswith("W/")]
            if "*" not in tags and (etag.startswith("W/") or
                                    etag not in strong):
                self._record(412, kind)
                return self._simple(412, b"precondition failed\n",
                                    "text/html")

        rng = parse_range(self.headers.get("Range"), size)
        if kind == "ignore_range":
            rng = None
        if rng == "unsatisfiable":
            self._record(416, kind)
            return self._simple(416, b"range not satisfiable\n", "text/html",
                                [("Content-Range", "bytes */%d" % size)])

        if rng is None:
            status, start, length, crange = 200, 0, size, None
        else:
            status = 206
            start, end = rng
            length = end - start + 1
            crange = (start, end)

        body_start, body_len, trailer = start, length, b""
        if status == 206 and kind == "wrong_range":
            shift = params.get("shift", 1)
            s2 = min(max(0, start + shift), max(0, size - length))
            if s2 == start:  # cannot shift inside the file: claim anyway
                s2 = start + shift
            crange = (s2, s2 + length - 1)
            body_start = min(s2, size)
        elif status == 206 and kind == "wrong_length":
            extra = params.get("extra", 100)
            avail = max(0, size - (start + length))
            body_len = length + min(extra, avail)
            trailer = b"\xa5" * (extra - min(extra, avail))
        elif status == 206 and kind == "short_length":
            body_len = max(0, length - params.get("missing", 100))

        if kind == "gzip" and not head:
            f.seek(body_start)
            body = gzip.compress(f.read(body_len))
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", etag)
            if crange is not None:
                self.send_header("Content-Range", "bytes %d-%d/%d" %
                                 (crange[0], crange[1], size))
            self.end_headers()
            self._record(status, kind)
            self.wfile.write(body)
            self.wfile.flush()
            return

        total = body_len + len(trailer)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(total))
        self.send_header("Last-Modified", http_date(st.st_mtime))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        if crange is not None:
            self.send_header("Content-Range",
                             "bytes %d-%d/%d" % (crange[0], crange[1], size))
        self.end_headers()
        if head:
            self._record(status, kind)
            return

        stop_after = None
        if kind in ("reset", "truncate", "stall"):
            stop_after = min(params.get("after", 65536), total)
        self._record(status, kind)
        sent = 0
        try:
            f.seek(body_start)
            remaining = body_len
            while remaining > 0:
                n = min(CHUNK, remaining)
                if stop_after is not None and sent < stop_after:
                    n = min(n, stop_after - sent)
                elif stop_after is not None and sent == stop_after:
                    if kind == "reset":
                        return self._reset()
                    if kind == "truncate":
                        return self._fin()
                    # stall
                    self.wfile.flush()
                    time.sleep(params.get("seconds", 5.0))
                    if params.get("then") == "close":
                        return self._fin()
                    stop_after = None
                    continue
                data = f.read(n)
                if not data:
                    data = b"\0" * n  # file shrank under us: keep framing
                self.wfile.write(data)
                sent += len(data)
                remaining -= len(data)
            if stop_after is not None and sent == stop_after and \
                    kind in ("reset", "truncate"):
                return self._reset() if kind == "reset" else self._fin()
            if trailer:
                self.wfile.write(trailer)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, owner):
        self.owner = owner
        super().__init__(addr, Handler)

    def process_request(self, request, client_address):
        self.owner._track(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        self.owner._untrack(request)
        super().shutdown_request(request)


class FaultServer:
    """The server, started in a background thread of this process."""

    def __init__(self, root, host="127.0.0.1", port=0, verbose=False):
        self.root = os.path.realpath(root)
        self.verbose = verbose
        self._lock = threading.Lock()
        self._rules = []
        self._conns = set()
        self.log = []
        self.extra_entries = {}     # URL dir path -> [entry dicts]
        self.listing_override = {}  # URL path -> (status, ctype, body)
        self.weak_etags = False
        self._stopping = threading.Event()  # "hang" rules wait for it
        self._srv = _Server((host, port), self)
        self.host, self.port = self._srv.server_address[:2]
        self.url = "http://%s:%d/" % (self.host, self.port)
        self._thread = threading.Thread(target=self._srv.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="fault_server", daemon=True)
        self._thread.start()

    # -- rules -----------------------------------------------------------
    def add_fault(self, kind, path="*", count=1, **kw):
        """Add a rule (see the module docstring); returns it, so a test can
        read rule.hits."""
        rule = Rule(kind, path=path, count=count, **kw)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_faults(self):
        with self._lock:
            self._rules.clear()

    def _take_rule(self, method, path, has_range):
        with self._lock:
            for r in self._rules:
                if r.matches(method, path, has_range):
                    r.hits += 1
                    return r
        return None

    def _record(self, method, path, rng, if_match, status, fault):
        with self._lock:
            self.log.append((method, path, rng, if_match, status, fault))

    def requests(self, method=None, path=None):
        """Logged requests, optionally only of @method and @path."""
        with self._lock:
            return [r for r in self.log
                    if (method is None or r[0] == method) and
                    (path is None or r[1] == path)]

    # -- content ---------------------------------------------------------
    def _fs_path(self, url_path):
        rel = url_path.lstrip("/")
        p = os.path.realpath(os.path.join(self.root, rel))
        if p != self.root and not p.startswith(self.root + os.sep):
            return None
        return p if os.path.exists(p) else None

    def replace(self, rel, data):
        """Replace the file @rel atomically (new inode, so a response in
        flight keeps sending the old bytes) with @data; its ETag changes."""
        dest = os.path.join(self.root, rel)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=".new-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)

    # -- lifetime --------------------------------------------------------
    def _track(self, sock):
        with self._lock:
            self._conns.add(sock)

    def _untrack(self, sock):
        with self._lock:
            self._conns.discard(sock)

    def stop(self):
        self._stopping.set()
        self._srv.shutdown()
        self._srv.server_close()
        with self._lock:
            conns = list(self._conns)
        for s in conns:  # wake handler threads blocked on keep-alive
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def main():
    p = argparse.ArgumentParser(
        description="Serve ROOT like nginx's JSON autoindex, with faults "
        "set through POST " + CONTROL_PATH)
    p.add_argument("root")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    srv = FaultServer(args.root, port=args.port, verbose=args.verbose)
    print(srv.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main()
