"""A forward proxy for tests: HTTP (absolute-form requests, relayed),
CONNECT tunnels (HTTPS through it) and SOCKS5 (no-auth and user/password),
one thread per connection, on 127.0.0.1.

It records what it saw in srv.seen, one dict per client connection:
kind ("http", "connect", "socks5"), target ("host:port"), auth (the
credentials the client gave, "user:password", or None), and for "http"
the first request line and its headers (lower-case names). With
auth="user:password" a client that gives other credentials (or none) gets
407 (HTTP, CONNECT) or a refusal (SOCKS5).

    srv = ForwardProxy(auth=None)   # started; srv.url, srv.port
    srv.stop()
"""

import base64
import socket
import socketserver
import threading


def _pipe(a, b):
    """Copy bytes both ways between sockets @a and @b until either closes."""
    def one_way(src, dst):
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    t = threading.Thread(target=one_way, args=(b, a), daemon=True)
    t.start()
    one_way(a, b)
    t.join()


def _read_head(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(4096)
        if not data:
            return None, b""
        buf += data
        if len(buf) > 65536:
            return None, b""
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        srv = self.server.owner
        sock = self.request
        first = sock.recv(1, socket.MSG_PEEK)
        if not first:
            return
        if first == b"\x05":
            return self.socks5(srv, sock)
        head, rest = _read_head(sock)
        if head is None:
            return
        lines = head.split("\r\n")
        method, target, _ = (lines[0].split(" ") + ["", ""])[:3]
        hdrs = {}
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        auth = None
        pa = hdrs.get("proxy-authorization", "")
        if pa.lower().startswith("basic "):
            auth = base64.b64decode(pa[6:]).decode("latin-1")
        rec = {"kind": "connect" if method == "CONNECT" else "http",
               "auth": auth, "request": lines[0], "headers": hdrs}
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
        else:
            if not target.startswith("http://"):
                sock.sendall(b"HTTP/1.1 400 Bad Request\r\n"
                             b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                return
            hostport = target[7:].split("/", 1)[0]
            host, _, port = hostport.rpartition(":")
            if not host:
                host, port = hostport, "80"
        rec["target"] = "%s:%s" % (host, port)
        srv.record(rec)
        if srv.auth is not None and auth != srv.auth:
            sock.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                         b"Proxy-Authenticate: Basic realm=\"test\"\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            return
        try:
            up = socket.create_connection((host, int(port)), timeout=10)
        except OSError:
            sock.sendall(b"HTTP/1.1 502 Bad Gateway\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            return
        up.settimeout(None)
        if method == "CONNECT":
            sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            # The origin takes the absolute form too (RFC 9112 3.2.2), so
            # later requests on this connection are relayed as they are.
            up.sendall(head.encode("latin-1") + b"\r\n\r\n" + rest)
        _pipe(sock, up)
        up.close()

    def socks5(self, srv, sock):
        def recv_exact(n):
            buf = b""
            while len(buf) < n:
                d = sock.recv(n - len(buf))
                if not d:
                    raise OSError("closed")
                buf += d
            return buf
        try:
            ver, n = recv_exact(2)
            methods = recv_exact(n)
            auth = None
            if srv.auth is not None:
                if 2 not in methods:
                    sock.sendall(b"\x05\xff")
                    return
                sock.sendall(b"\x05\x02")
                recv_exact(1)
                user = recv_exact(recv_exact(1)[0])
                pw = recv_exact(recv_exact(1)[0])
                auth = "%s:%s" % (user.decode(), pw.decode())
                ok = auth == srv.auth
                sock.sendall(b"\x01" + (b"\x00" if ok else b"\x01"))
                if not ok:
                    srv.record({"kind": "socks5", "target": None,
                                "auth": auth})
                    return
            else:
                sock.sendall(b"\x05\x00")
            _, cmd, _, atyp = recv_exact(4)
            if atyp == 1:
                host = socket.inet_ntoa(recv_exact(4))
            elif atyp == 3:
                host = recv_exact(recv_exact(1)[0]).decode()
            else:
                sock.sendall(b"\x05\x08\x00\x01" + b"\0" * 6)
                return
            port = int.from_bytes(recv_exact(2), "big")
            srv.record({"kind": "socks5", "target": "%s:%d" % (host, port),
                        "auth": auth})
            up = socket.create_connection((host, port), timeout=10)
            up.settimeout(None)
            sock.sendall(b"\x05\x00\x00\x01" + b"\0" * 6)
            _pipe(sock, up)
            up.close()
        except OSError:
            return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class ForwardProxy:
    def __init__(self, auth=None, host="127.0.0.1", port=0):
        self.auth = auth
        self.seen = []
        self._lock = threading.Lock()
        self._srv = _Server((host, port), _Handler)
        self._srv.owner = self
        self.host = host
        self.port = self._srv.server_address[1]
        self.url = "http://%s:%d" % (host, self.port)
        self._t = threading.Thread(target=self._srv.serve_forever,
                                   daemon=True)
        self._t.start()

    def record(self, rec):
        with self._lock:
            self.seen.append(rec)

    def stop(self):
        self._srv.shutdown()
        self._srv.server_close()
