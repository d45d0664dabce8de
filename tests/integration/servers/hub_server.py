"""A Hugging Face Hub stand-in: the API and resolve endpoints weightfs and
the official clients use, and a second "CDN" server on another port.

Hub (HubServer.url):
  GET  /api/{models,datasets}/ORG/NAME/revision/REV   {"id", "sha", ...}
  GET  /api/{models,datasets}/ORG/NAME/tree/REV[/PATH]?recursive=&cursor=
       one page of `page_size` entries, the next page in
       Link: <URL>; rel="next"; entries as the Hub gives them
       ({"type", "oid", "size", "path", "lfs": {"oid", "size",
       "pointerSize"}})
  GET/HEAD /[datasets/]ORG/NAME/resolve/REV/PATH
       a file kept in git: 200 (Range honoured), ETag "<git blob id>";
       an LFS file: 302 to the CDN with X-Linked-Etag "<sha256>",
       X-Linked-Size, X-Repo-Commit
  Errors as the Hub words them (X-Error-Code: RepoNotFound, GatedRepo,
  RevisionNotFound, EntryNotFound; X-Error-Message): a private repo
  without a good token is 401 RepoNotFound, a gated one 401/403
  GatedRepo, a bad token 401 "Invalid credentials".
  hub.throttle = N: the next N requests get 429 with Retry-After: 1.
  hub.renamed["org/old"] = "org/new": a renamed repository, every request
  under the old name answered 307 with the new one (a relative Location).

CDN (HubServer.cdn_url): GET/HEAD /SHA256?Expires=E&Signature=S, signed
by the Hub with a secret, 403 once expired (`url_ttl` seconds) or revoked
(hub.revoke()), Range honoured, its own ETag (not the sha256). Every
request carrying Authorization is counted in hub.cdn_auth_seen.
hub.corrupt.add(SHA256) flips a byte in every body of that object.

In a test:
    hub = HubServer()
    sha = hub.commit("org/model", {"a.bin": data, "cfg.json": b"{}"},
                     lfs={"a.bin"})
    hub.private.add("org/model"); hub.tokens.add("hf_good")
    hub.log   # [(server, method, path, range, status, auth)]
    hub.stop()
From the shell: hub_server.py DIR REPO [--port N --cdn-port M]: serves
the files under DIR (files over 1 MiB as LFS) as REPO at main, and prints
the Hub's URL.
"""

import argparse
import hashlib
import hmac
import http.server
import json
import os
import socketserver
import sys
import threading
import time
import urllib.parse

LFS_MIN = 1 << 20


def git_oid(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class File:
    def __init__(self, data, lfs):
        self.data = data
        self.lfs = lfs
        self.oid = git_oid(data)
        self.sha256 = hashlib.sha256(data).hexdigest() if lfs else None


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _parse_range(h, size):
    if not h or not h.startswith("bytes="):
        return None
    a, _, b = h[6:].partition("-")
    if "," in h or not a:
        return None
    start = int(a)
    end = int(b) if b else size - 1
    if start >= size:
        return "bad"
    return start, min(end, size - 1)


class HubServer:
    def __init__(self, page_size=3, url_ttl=3600, port=0, cdn_port=0):
        self.repos = {}  # "models/org/name" -> {"refs": {}, "commits": {}}
        self.private = set()
        self.gated = set()
        self.gated_ok = set()  # tokens granted access to gated repos
        self.tokens = set()
        self.page_size = page_size
        self.url_ttl = url_ttl
        self.throttle = 0
        self.corrupt = set()
        self.revoked_before = 0.0
        self.cdn_auth_seen = 0
        self.log = []
        self.blobs = {}  # sha256 -> bytes
        self.secret = os.urandom(16)
        self.lock = threading.Lock()
        self.commits_made = 0
        self.renamed = {}  # "org/old" -> "org/new": 307 to the new name
        hub = self

        class Hub(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                hub._hub(self, head=False)

            def do_HEAD(self):
                hub._hub(self, head=True)

        class Cdn(Hub):
            def do_GET(self):
                hub._cdn(self, head=False)

            def do_HEAD(self):
                hub._cdn(self, head=True)

        self.httpd = _Server(("127.0.0.1", port), Hub)
        self.cdn = _Server(("127.0.0.1", cdn_port), Cdn)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.cdn_url = "http://127.0.0.1:%d" % self.cdn.server_address[1]
        for s in (self.httpd, self.cdn):
            threading.Thread(target=s.serve_forever, daemon=True).start()

    def stop(self):
        for s in (self.httpd, self.cdn):
            s.shutdown()
            s.server_close()

    # -- repositories ---------------------------------------------------

    def commit(self, repo, files, lfs=None, branch="main", kind="models",
               keep=False):
        """Make a commit of @files ({path: bytes}; with @keep, on top of
        the branch's files) and move @branch to it. @lfs: the paths
        stored with LFS (default: files of 1 MiB or more)."""
        with self.lock:
            r = self.repos.setdefault(kind + "/" + repo,
                                      {"refs": {}, "commits": {}})
            tree = {}
            if keep and branch in r["refs"]:
                tree.update(r["commits"][r["refs"][branch]])
            for p, data in files.items():
                is_lfs = (p in lfs) if lfs is not None else \
                    len(data) >= LFS_MIN
                f = File(data, is_lfs)
                tree[p] = f
                if is_lfs:
                    self.blobs[f.sha256] = data
            self.commits_made += 1
            sha = hashlib.sha1(b"%s %d %f" % (repo.encode(),
                                              self.commits_made,
                                              time.time())).hexdigest()
            r["commits"][sha] = tree
            r["refs"][branch] = sha
            return sha

    def revoke(self):
        """Every signed URL given out so far stops working."""
        self.revoked_before = time.time()
        time.sleep(2.1)  # URLs carry whole seconds

    # -- helpers --------------------------------------------------------

    def _send(self, h, status, body=b"", headers=(), head=False,
              ctype="application/json"):
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            h.send_header(k, v)
        h.end_headers()
        if not head and body:
            try:
                h.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    def _error(self, h, status, code, msg, head):
        body = json.dumps({"error": msg}).encode()
        hdrs = [("X-Error-Message", msg)]
        if code:
            hdrs.append(("X-Error-Code", code))
        self._send(h, status, body, hdrs, head)
        return status

    def _auth(self, h):
        a = h.headers.get("Authorization")
        if not a:
            return None
        return a[7:] if a.startswith("Bearer ") else ""

    def _access(self, h, key, head):
        """None when the request may read repo @key, else the status sent."""
        tok = self._auth(h)
        if tok is not None and tok not in self.tokens:
            return self._error(h, 401, None,
                               "Invalid credentials in Authorization "
                               "header", head)
        if key not in self.repos or (key in self.private and tok is None):
            return self._error(h, 404 if tok else 401, "RepoNotFound",
                               "Repository not found", head)
        if key in self.gated and tok not in self.gated_ok:
            return self._error(h, 403 if tok else 401, "GatedRepo",
                               "Access to this model is restricted", head)
        return None

    def _commit_of(self, key, rev):
        r = self.repos[key]
        if rev in r["refs"]:
            return r["refs"][rev]
        if rev in r["commits"]:
            return rev
        return None

    def _sign(self, sha256, expires):
        return hmac.new(self.secret, ("%s:%d" % (sha256, expires)).encode(),
                        hashlib.sha256).hexdigest()

    def _body(self, h, data, headers, head, corrupt=False):
        rng = _parse_range(h.headers.get("Range"), len(data))
        if rng == "bad":
            self._send(h, 416, b"", [("Content-Range",
                                      "bytes */%d" % len(data))], head)
            return 416
        if rng:
            a, b = rng
            body = data[a:b + 1]
            headers = headers + [("Content-Range",
                                  "bytes %d-%d/%d" % (a, b, len(data)))]
            status = 206
        else:
            body, status = data, 200
        if corrupt and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        headers = headers + [("Accept-Ranges", "bytes")]
        self._send(h, status, body, headers, head,
                   ctype="application/octet-stream")
        return status

    # -- the Hub --------------------------------------------------------

    def _hub(self, h, head):
        u = urllib.parse.urlsplit(h.path)
        path = urllib.parse.unquote(u.path)
        status = self._hub_route(h, u, path, head)
        with self.lock:
            self.log.append(("hub", h.command, path, h.headers.get("Range"),
                             status, bool(h.headers.get("Authorization"))))

    def _hub_route(self, h, u, path, head):
        if self.throttle > 0:
            with self.lock:
                self.throttle -= 1
            return self._throttled(h, head)
        for old, new in self.renamed.items():
            for pre in ("/api/models/", "/api/datasets/", "/", "/datasets/"):
                if path.startswith(pre + old + "/"):
                    loc = pre + new + u.path[len(pre + old):]
                    if u.query:
                        loc += "?" + u.query
                    self._send(h, 307, b"", [("Location", loc)], head)
                    return 307
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 6 and \
                parts[1] in ("models", "datasets"):
            key = "/".join(parts[1:4])
            denied = self._access(h, key, head)
            if denied:
                return denied
            if parts[4] == "revision":
                return self._revision(h, key, "/".join(parts[5:]), head)
            if parts[4] == "tree":
                return self._tree(h, u, key, parts[5], "/".join(parts[6:]),
                                  head)
            return self._error(h, 404, None, "Not found", head)
        kind = "models"
        if parts[0] == "datasets":
            kind, parts = "datasets", parts[1:]
        if len(parts) >= 5 and parts[2] == "resolve":
            key = "%s/%s/%s" % (kind, parts[0], parts[1])
            denied = self._access(h, key, head)
            if denied:
                return denied
            return self._resolve(h, key, parts[3], "/".join(parts[4:]),
                                 head)
        return self._error(h, 404, None, "Not found", head)

    def _throttled(self, h, head):
        self._send(h, 429, b'{"error":"rate limited"}',
                   [("Retry-After", "1")], head)
        return 429

    def _revision(self, h, key, rev, head):
        sha = self._commit_of(key, rev)
        if not sha:
            return self._error(h, 404, "RevisionNotFound",
                               "Invalid rev id: %s" % rev, head)
        tree = self.repos[key]["commits"][sha]
        body = json.dumps({
            "id": key.split("/", 1)[1],
            "sha": sha,
            "private": key in self.private,
            "lastModified": "2025-01-02T03:04:05.000Z",
            "siblings": [{"rfilename": p} for p in sorted(tree)],
        }).encode()
        self._send(h, 200, body, [], head)
        return 200

    def _entries(self, tree, base, recursive):
        out, dirs = [], set()
        prefix = base + "/" if base else ""
        for p in sorted(tree):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):].split("/")
            for i in range(1, len(rest)):
                d = prefix + "/".join(rest[:i])
                if (recursive or i == 1) and d not in dirs:
                    dirs.add(d)
                    out.append({"type": "directory",
                                "oid": git_oid(d.encode()), "size": 0,
                                "path": d})
            if len(rest) == 1 or recursive:
                f = tree[p]
                e = {"type": "file", "oid": f.oid, "size": len(f.data),
                     "path": p}
                if f.lfs:
                    e["lfs"] = {"oid": f.sha256, "size": len(f.data),
                                "pointerSize": 134}
                out.append(e)
        return out

    def _tree(self, h, u, key, rev, base, head):
        sha = self._commit_of(key, rev)
        if not sha:
            return self._error(h, 404, "RevisionNotFound",
                               "Invalid rev id: %s" % rev, head)
        tree = self.repos[key]["commits"][sha]
        q = urllib.parse.parse_qs(u.query)
        recursive = q.get("recursive", ["false"])[0] == "true"
        if base and base not in {"/".join(p.split("/")[:i])
                                 for p in tree
                                 for i in range(1, p.count("/") + 1)}:
            return self._error(h, 404, "EntryNotFound",
                               "%s does not exist" % base, head)
        entries = self._entries(tree, base, recursive)
        cursor = int(q.get("cursor", ["0"])[0])
        page = entries[cursor:cursor + self.page_size]
        hdrs = []
        if cursor + self.page_size < len(entries):
            nq = dict((k, v[0]) for k, v in q.items())
            nq["cursor"] = str(cursor + self.page_size)
            nxt = "%s%s?%s" % (self.url, u.path, urllib.parse.urlencode(nq))
            hdrs.append(("Link", '<%s>; rel="next"' % nxt))
        self._send(h, 200, json.dumps(page).encode(), hdrs, head)
        return 200

    def _resolve(self, h, key, rev, path, head):
        sha = self._commit_of(key, urllib.parse.unquote(rev))
        if not sha:
            return self._error(h, 404, "RevisionNotFound",
                               "Invalid rev id: %s" % rev, head)
        f = self.repos[key]["commits"][sha].get(path)
        if f is None:
            return self._error(h, 404, "EntryNotFound",
                               "%s does not exist" % path, head)
        hdrs = [("X-Repo-Commit", sha)]
        if not f.lfs:
            return self._body(h, f.data, hdrs + [("ETag", '"%s"' % f.oid)],
                              head)
        expires = int(time.time() + self.url_ttl)
        loc = "%s/%s?Expires=%d&Signature=%s" % (
            self.cdn_url, f.sha256, expires, self._sign(f.sha256, expires))
        self._send(h, 302, b"", hdrs + [
            ("Location", loc), ("X-Linked-Etag", '"%s"' % f.sha256),
            ("X-Linked-Size", str(len(f.data))), ("ETag", '"%s"' % f.oid)],
            head)
        return 302

    # -- the CDN --------------------------------------------------------

    def _cdn(self, h, head):
        u = urllib.parse.urlsplit(h.path)
        sha256 = u.path.strip("/")
        q = urllib.parse.parse_qs(u.query)
        auth = bool(h.headers.get("Authorization"))
        if auth:
            with self.lock:
                self.cdn_auth_seen += 1
        try:
            expires = int(q["Expires"][0])
            sig = q["Signature"][0]
        except (KeyError, ValueError):
            expires, sig = 0, ""
        good = hmac.compare_digest(sig, self._sign(sha256, expires))
        issued = expires - self.url_ttl
        if not good or expires < time.time() or \
                issued < self.revoked_before:
            status = self._error(h, 403, None, "Request has expired", head)
        elif sha256 not in self.blobs:
            status = self._error(h, 404, None, "NoSuchKey", head)
        else:
            data = self.blobs[sha256]
            etag = '"%s"' % hashlib.md5(data).hexdigest()
            status = self._body(h, data, [("ETag", etag)], head,
                                corrupt=sha256 in self.corrupt)
        with self.lock:
            self.log.append(("cdn", h.command, sha256,
                             h.headers.get("Range"), status, auth))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("repo")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cdn-port", type=int, default=0)
    ap.add_argument("--cdn-url", help="the CDN as clients reach it "
                    "(a proxy in front of --cdn-port)")
    args = ap.parse_args()
    hub = HubServer(page_size=1000, port=args.port, cdn_port=args.cdn_port)
    if args.cdn_url:
        hub.cdn_url = args.cdn_url
    files = {}
    for root, _, names in os.walk(args.dir):
        for n in names:
            p = os.path.join(root, n)
            with open(p, "rb") as f:
                files[os.path.relpath(p, args.dir)] = f.read()
    hub.commit(args.repo, files)
    print(hub.url, hub.cdn_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    sys.exit(main())
