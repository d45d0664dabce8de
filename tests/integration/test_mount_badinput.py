"""Bad input to `weightfs`: a clear message on stderr that names the
problem, exit status 2, nothing mounted, no daemon left behind."""

import http.server
import json
import os
import threading

import pytest

from wfs_testlib import free_port, find_daemon_pid, is_mounted

MODES = [pytest.param([], id="daemonize"), pytest.param(["-f"], id="fg")]


def check_refused(r, mountpoint, *words):
    """@r exited 2, stderr mentions one of @words, nothing mounted."""
    assert r.returncode == 2, "exit %d\nstdout: %s\nstderr: %s" % (
        r.returncode, r.stdout, r.stderr)
    err = r.stderr.lower()
    assert err.strip(), "no message on stderr"
    assert any(w.lower() in err for w in words), \
        "stderr does not name the problem (%s): %r" % (words, r.stderr)
    assert not is_mounted(mountpoint)
    assert find_daemon_pid(mountpoint) is None, "a daemon was left running"


@pytest.fixture(scope="module")
def web(nginx_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("badinput") / "root"
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "f.bin").write_bytes(b"x" * 1000)
    (root / "notjson.json").write_bytes(b"this is not JSON\n")
    return nginx_session(str(root))


@pytest.mark.asan
@pytest.mark.parametrize("fg", MODES)
def test_unreachable_source(weightfs_run, mountpoint, fg):
    port = free_port()
    r = weightfs_run(*fg, "http://127.0.0.1:%d/models/" % port, mountpoint)
    check_refused(r, mountpoint, str(port), "connect", "refused",
                  "unreachable")


@pytest.mark.parametrize("fg", MODES)
def test_404_root(weightfs_run, web, mountpoint, fg):
    r = weightfs_run(*fg, web.url + "no-such-dir/", mountpoint)
    check_refused(r, mountpoint, "404", "not found")


def test_404_single_file(weightfs_run, web, mountpoint):
    r = weightfs_run(web.url + "dir/no-such-file.bin", mountpoint)
    check_refused(r, mountpoint, "404", "not found")


@pytest.mark.asan
def test_html_listing_is_not_json(weightfs_run, nginx, web, mountpoint):
    """A real nginx with the default (HTML) autoindex."""
    html = nginx(web.root, fmt="html")
    r = weightfs_run(html.url + "dir/", mountpoint)
    check_refused(r, mountpoint, "json")


@pytest.mark.parametrize("body,ctype", [
    (b"<html><body>hello</body></html>", "text/html"),
    (b"{\"name\": \"not a list\"}", "application/json"),
    (b"[{\"name\": 1", "application/json"),
    (b"", "application/json"),
], ids=["html", "object", "truncated", "empty"])
def test_listing_not_json_array(weightfs_run, fault_server, web, mountpoint,
                                body, ctype):
    srv = fault_server(web.root)
    srv.listing_override["/dir/"] = (200, ctype, body)
    r = weightfs_run(srv.url + "dir/", mountpoint)
    check_refused(r, mountpoint, "json", "listing")


@pytest.mark.parametrize("opt,word", [
    ("no_such_option", "no_such_option"),
    ("block_size=lots", "block_size"),
    ("block_size=0", "block_size"),
    ("cache_mem=-1", "cache_mem"),
    ("cache_mem=12Q", "cache_mem"),
    ("cache_mem=100000G", "memory"),  # more than RAM: refused
    ("connections=0", "connections"),
    ("connections=many", "connections"),
    ("prefetch=maybe", "prefetch"),
    ("retries=-3", "retries"),
    ("timeout=soon", "timeout"),
    ("readahead_max=1X", "readahead_max"),
    ("cache_huge=maybe", "cache_huge"),
])
def test_bad_option(weightfs_run, web, mountpoint, opt, word):
    r = weightfs_run("-o", opt, web.url + "dir/", mountpoint)
    check_refused(r, mountpoint, word)


@pytest.mark.parametrize("source,words", [
    ("ftp://127.0.0.1/models/", ("ftp", "scheme")),
    ("gopher://x/", ("gopher", "scheme")),
    ("models/llama", ("models/llama", "scheme", "source", "url")),
    ("http://", ("http://", "host", "url")),
    ("file://relative/dir", ("relative", "absolute", "file://")),
    ("file:///no/such/dir/anywhere", ("/no/such/dir/anywhere",)),
], ids=["ftp", "gopher", "bare-path", "no-host", "relative-file",
        "missing-dir"])
def test_bad_source(weightfs_run, mountpoint, source, words):
    r = weightfs_run(source, mountpoint)
    check_refused(r, mountpoint, *words)


def test_mountpoint_missing(weightfs_run, web, tmp_path):
    mp = str(tmp_path / "does-not-exist")
    r = weightfs_run(web.url + "dir/", mp)
    assert r.returncode != 0
    assert r.stderr.strip()
    assert not is_mounted(mp)


def test_missing_arguments(weightfs_run, web):
    r = weightfs_run(web.url + "dir/")
    assert r.returncode != 0
    assert r.stderr.strip()


def test_help(weightfs_run):
    r = weightfs_run("--help")
    assert r.returncode == 0, r.stderr
    text = r.stdout + r.stderr
    for opt in ("cache_mem", "block_size", "connections", "prefetch",
                "retries", "timeout"):
        assert opt in text, opt


def test_nothing_left_on_mountpoint(weightfs_run, web, mountpoint):
    """After a refused mount the mountpoint is still an empty, usable
    directory."""
    r = weightfs_run(web.url + "no-such-dir/", mountpoint)
    assert r.returncode == 2
    assert os.listdir(mountpoint) == []
    probe = os.path.join(mountpoint, "probe")
    with open(probe, "w") as f:
        f.write("ok")
    os.unlink(probe)


# -- mountpoints, checked as mount(8) would ------------------------------

def test_mountpoint_is_a_file(weightfs_run, web, tmp_path):
    mp = tmp_path / "regular-file"
    mp.write_bytes(b"not a directory")
    r = weightfs_run(web.url + "dir/", str(mp))
    check_refused(r, str(mp), "not a directory")
    assert mp.read_bytes() == b"not a directory"


def test_mountpoint_already_mounted(weightfs_run, mount, web, mountpoint):
    # weightfs_run first: its teardown (which kills what it left mounted)
    # then runs after mount's clean unmount.
    first = mount(web.url + "dir/", mountpoint=mountpoint)
    assert os.listdir(first.path) == ["f.bin"]
    r = weightfs_run(web.url + "dir/", mountpoint)
    assert r.returncode == 2, "exit %d: %s" % (r.returncode, r.stderr)
    assert "already mounted" in r.stderr.lower(), r.stderr
    # The first mount is untouched, and only one daemon serves it.
    assert os.listdir(first.path) == ["f.bin"]
    assert find_daemon_pid(mountpoint, exclude=(first.pid,)) is None


def test_mountpoint_not_empty_warns(mount, web, tmp_path):
    mp = tmp_path / "full"
    mp.mkdir()
    (mp / "hidden.txt").write_bytes(b"x")
    m = mount(web.url + "dir/", mountpoint=str(mp))
    assert os.listdir(m.path) == ["f.bin"]
    assert "not empty" in m.log().lower(), m.log()


# -- sizes near 2^63 ------------------------------------------------------

class _HugeHandler(http.server.BaseHTTPRequestHandler):
    """A JSON listing (nginx's format) whose sizes no real file has:
    nginx cannot be made to claim them."""
    SIZES = {"huge.bin": 2**63 + 5, "max.bin": 2**63 - 1,
             "near.bin": 2**63 - 100, "ok.bin": 5}
    HEAD_SIZES = {"huge.bin": 2**63 - 1, "max.bin": 2**63 - 1,
                  "near.bin": 2**63 - 100, "ok.bin": 5}

    def log_message(self, *args):
        pass

    def _headers(self, length, ctype="application/octet-stream"):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.send_header("Last-Modified", "Tue, 01 Dec 2026 10:00:00 GMT")
        self.send_header("ETag", '"%x"' % length)
        self.end_headers()

    def do_HEAD(self):
        name = self.path.lstrip("/")
        if name not in self.HEAD_SIZES:
            self.send_error(404)
            return
        self._headers(self.HEAD_SIZES[name])

    def do_GET(self):
        if self.path == "/":
            body = json.dumps([
                {"name": n, "type": "file", "size": s,
                 "mtime": "Tue, 01 Dec 2026 10:00:00 GMT"}
                for n, s in sorted(self.SIZES.items())]).encode()
            self._headers(len(body), "application/json")
            self.wfile.write(body)
        elif self.path == "/ok.bin":
            self._headers(5)
            self.wfile.write(b"hello")
        else:
            self.send_error(416)


@pytest.fixture
def huge_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HugeHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d/" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.mark.asan
def test_size_near_2_63(mount, huge_server):
    """A listing that claims sizes near or past 2^63 (st_size is an off_t):
    each such file is clamped to at most INT64_MAX or skipped, stat
    works, the rest of the mount is fine; under the ASan/UBSan build the
    daemon must not hit signed overflow (the fixture fails the test on
    any sanitizer report)."""
    m = mount(huge_server)
    names = sorted(os.listdir(m.path))
    assert "ok.bin" in names and "near.bin" in names, names
    for name in names:
        st = os.stat(os.path.join(m.path, name))
        assert 0 <= st.st_size <= 2**63 - 1, (name, st.st_size)
        assert st.st_blocks == (st.st_size + 511) // 512, name
    assert os.stat(m.file("near.bin")).st_size == 2**63 - 100
    with open(m.file("ok.bin"), "rb") as f:
        assert f.read() == b"hello"
    os.statvfs(m.path)
