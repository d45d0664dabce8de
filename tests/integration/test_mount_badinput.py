"""Bad input to `weightfs`: a clear message on stderr that names the
problem, exit status 2, nothing mounted, no daemon left behind."""

import os

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
