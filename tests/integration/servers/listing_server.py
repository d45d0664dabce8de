"""A hostile directory-listing server, for the listing-bounds tests.

It lists directories the way nginx's `autoindex_format json` does, but
with listings chosen to attack the lister (issue 9 item 7), and answers
HEAD and ranged GETs of the files it names (each file of `size` bytes,
all b"x"). Modes:

  dup          every directory names subdirectory "a" three times (and a
               file "f"), `depth` levels deep: listed once each, that is
               depth + 1 listings, not 3^depth
  heavy        each level's index holds `entries` entries of a type the
               lister skips, plus subdirectory "d", `depth` levels deep:
               a lister that keeps each level's parsed index while it
               lists the next holds them all at once
  html_subdir  the root names "ok.bin" and directories "good" (holding
               "in.bin") and "html", whose listing is an HTML index page
  head_fail    the root names "ok.bin", "denied.bin" (HEAD and GET: 403)
               and "missing.bin" (404)
  root_html    the root listing is an HTML page
  big          the root names directories "a", "b" and "c"; every other
               directory's index is about `big_bytes` of entries of a
               type the lister skips (names, sizes and dates as a file's,
               so parsing costs what a real listing costs) plus
               subdirectory "d" until `depth`: the memory a listing of
               that size takes, with nothing kept
  loop         every directory names subdirectory "a" (and file "f"),
               endlessly, as a server-side symlink loop a -> . does
  fanout       every directory names subdirectories "a" and "b",
               endlessly
  cut_once     the root names `entries` files and directory "d" (naming
               file "in.bin"); the first answer of each index stops
               halfway through its body (connection closed), later ones
               are whole
  s3_tokens    S3 ListObjectsV2 for any bucket: each page holds one key
               and says it is truncated, with a fresh continuation token
               of `token_len` bytes (never repeated)

    srv = ListingServer("dup", depth=40)   # started; srv.url
    srv.log                                # [(method, path, query)]
    srv.stop()
"""

import http.server
import json
import socketserver
import threading
import urllib.parse

HTML = b"<html><body><a href='x'>x</a></body></html>\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def send(self, status, body, ctype="application/octet-stream",
             headers=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def index(self, entries):
        body = json.dumps(entries).encode()
        self.send(200, body, "application/json")

    def file(self, name):
        srv = self.server.owner
        if srv.mode == "head_fail" and name in ("denied.bin", "missing.bin"):
            return self.send(403 if name == "denied.bin" else 404, b"no\n",
                             "text/plain")
        data = b"x" * srv.size
        hdrs = {"ETag": '"%s"' % name, "Accept-Ranges": "bytes"}
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            a = int(a)
            b = min(int(b) if b else len(data) - 1, len(data) - 1)
            hdrs["Content-Range"] = "bytes %d-%d/%d" % (a, b, len(data))
            return self.send(206, data[a:b + 1], headers=hdrs)
        return self.send(200, data, headers=hdrs)

    def s3(self, query):
        srv = self.server.owner
        q = dict(urllib.parse.parse_qsl(query))
        with srv.lock:
            srv.page += 1
            n = srv.page
        token = ("%08d" % n) + "t" * max(0, srv.token_len - 8)
        body = ('<?xml version="1.0" encoding="UTF-8"?>'
                "<ListBucketResult><Name>b</Name>"
                "<IsTruncated>true</IsTruncated>"
                "<NextContinuationToken>%s</NextContinuationToken>"
                "<Contents><Key>k%08d</Key><Size>1</Size>"
                "<ETag>&quot;e&quot;</ETag></Contents>"
                "</ListBucketResult>" % (token, n)).encode()
        del q
        self.send(200, body, "application/xml")

    def handle_any(self):
        srv = self.server.owner
        raw_path, _, query = self.path.partition("?")
        path = urllib.parse.unquote(raw_path)
        with srv.lock:
            srv.log.append((self.command, path, query))
        if srv.mode == "s3_tokens":
            return self.s3(query)
        if not path.endswith("/"):
            return self.file(path.rsplit("/", 1)[1])
        depth = path.count("/") - 1
        mode = srv.mode
        if mode == "root_html" or (mode == "html_subdir" and
                                   path == "/html/"):
            return self.send(200, HTML, "text/html")
        if mode == "dup":
            entries = [{"name": "f", "type": "file", "size": srv.size}]
            if depth < srv.depth:
                entries += [{"name": "a", "type": "directory"}] * 3
            return self.index(entries)
        if mode == "loop":
            return self.index([{"name": "f", "type": "file",
                                "size": srv.size},
                               {"name": "a", "type": "directory"}])
        if mode == "fanout":
            return self.index([{"name": "a", "type": "directory"},
                               {"name": "b", "type": "directory"}])
        if mode == "heavy":
            entries = [{"name": "s%06d" % i, "type": "other"}
                       for i in range(srv.entries)]
            if depth < srv.depth:
                entries.append({"name": "d", "type": "directory"})
            return self.index(entries)
        if mode == "big":
            if path == "/":
                return self.index([{"name": n, "type": "directory"}
                                   for n in ("a", "b", "c")])
            body = srv.big_body(depth < srv.depth)
            return self.send(200, body, "application/json")
        if mode == "cut_once":
            if path == "/":
                entries = [{"name": "f%05d" % i, "type": "file",
                            "size": srv.size} for i in range(srv.entries)]
                entries.append({"name": "d", "type": "directory"})
            else:
                entries = [{"name": "in.bin", "type": "file",
                            "size": srv.size}]
            body = json.dumps(entries).encode()
            with srv.lock:
                first = path not in srv.cut
                srv.cut.add(path)
            if not first:
                return self.send(200, body, "application/json")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return None
        if mode == "html_subdir":
            if path == "/":
                return self.index([
                    {"name": "ok.bin", "type": "file", "size": srv.size},
                    {"name": "good", "type": "directory"},
                    {"name": "html", "type": "directory"}])
            return self.index([{"name": "in.bin", "type": "file",
                                "size": srv.size}])
        if mode == "head_fail":
            return self.index([
                {"name": n, "type": "file", "size": srv.size}
                for n in ("ok.bin", "denied.bin", "missing.bin")])
        return self.send(404, b"", "text/plain")

    do_GET = do_HEAD = handle_any


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class ListingServer:
    def __init__(self, mode, depth=8, entries=1000, size=100, token_len=100,
                 big_bytes=64 << 20, host="127.0.0.1"):
        self.mode = mode
        self.depth = depth
        self.entries = entries
        self.size = size
        self.token_len = token_len
        self.page = 0
        self.big_bytes = big_bytes
        self.big = {}
        self.cut = set()
        self.log = []
        self.lock = threading.Lock()
        self.httpd = _Server((host, 0), _Handler)
        self.httpd.owner = self
        self.url = "http://%s:%d/" % (host, self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)
        self.thread.start()

    def big_body(self, with_subdir):
        """The `big` index, made once (with or without "d")."""
        with self.lock:
            if with_subdir not in self.big:
                one = ('{"name":"s%07d","type":"other","mtime":'
                       '"Mon, 07 Dec 2026 00:00:00 GMT","size":%d}')
                n = self.big_bytes // (len(one % (0, 1 << 30)) + 1)
                parts = [one % (i, i * 4099) for i in range(n)]
                if with_subdir:
                    parts.append('{"name":"d","type":"directory"}')
                self.big[with_subdir] = ("[" + ",".join(parts) +
                                         "]").encode()
            return self.big[with_subdir]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
