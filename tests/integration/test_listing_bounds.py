"""Listing work and memory are bounded (issue 9 item 7): each directory is
listed once, a level's parsed index is freed before its subdirectories
are listed, continuation tokens cannot grow memory, and one bad
subdirectory or file is skipped with a warning while a bad root still
fails the mount (exit 2). The hostile listings come from
servers/listing_server.py."""

import errno
import os

import pytest

from s3_fixtures import aws_env
from servers.listing_server import ListingServer

pytestmark = pytest.mark.asan


@pytest.fixture
def listing_server():
    made = []

    def start(mode, **kw):
        srv = ListingServer(mode, **kw)
        made.append(srv)
        return srv
    yield start
    for s in made:
        s.stop()


def _listings(srv):
    return [p for m, p, q in srv.log if m == "GET" and p.endswith("/")]


def _hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM for %d" % pid)


def test_directory_named_thrice_is_listed_once(mount, listing_server):
    srv = listing_server("dup", depth=6)
    m = mount(srv.url, {"list": "eager"})  # the recursion
    listed = _listings(srv)
    assert sorted(listed) == sorted(set(listed)), "a directory listed twice"
    assert len(listed) == 7, listed
    path = m.path
    for _ in range(6):
        assert os.listdir(path) == ["a", "f"] or \
            sorted(os.listdir(path)) == ["a", "f"]
        path = os.path.join(path, "a")
    assert os.listdir(path) == ["f"]
    with open(os.path.join(path, "f"), "rb") as f:
        assert f.read() == b"x" * 100
    assert "duplicate" in m.log()


def test_parsed_levels_are_freed_before_recursing(mount, listing_server,
                                                  asan_build):
    """Each level's index is ~2.5 MB of JSON, ~60 MB parsed; 10 levels
    held at once took the daemon to 650 MB, one at a time takes ~75 MB."""
    if asan_build:
        pytest.skip("peak RSS means nothing under ASan (quarantine)")
    levels, entries = 10, 60000
    srv = listing_server("heavy", depth=levels, entries=entries)
    m = mount(srv.url, {"list": "eager"}, timeout=120)  # recursion
    assert len(_listings(srv)) == levels + 1
    one_level = _hwm_kib(m.pid)
    path = os.path.join(m.path, *(["d"] * levels))
    assert os.path.isdir(path)
    # The peak while listing stays near what one level needs.
    assert one_level < 200 * 1024, "peak RSS %d KiB" % one_level


def test_html_subdirectory_is_skipped(mount, listing_server):
    srv = listing_server("html_subdir")
    m = mount(srv.url, {"list": "eager"})  # the recursion
    assert sorted(os.listdir(m.path)) == ["good", "html", "ok.bin"]
    assert os.listdir(m.file("html")) == []
    with open(m.file("good/in.bin"), "rb") as f:
        assert f.read() == b"x" * 100
    assert "not a JSON directory index; skipping" in m.log()


def test_failing_files_fail_when_read(mount, listing_server):
    """Files are not HEADed at listing (one request per directory), so a
    file the server refuses is listed and fails when read, with the
    errno its status maps to. A file without a size in the index is still
    HEADed (and skipped when that fails)."""
    srv = listing_server("head_fail")
    m = mount(srv.url)
    assert sorted(os.listdir(m.path)) == ["denied.bin", "missing.bin",
                                          "ok.bin"]
    assert not [r for r in srv.log if r[0] == "HEAD"], srv.log
    with open(m.file("ok.bin"), "rb") as f:
        assert f.read() == b"x" * 100
    for name, want in (("denied.bin", errno.EACCES),
                       ("missing.bin", errno.EIO)):
        with pytest.raises(OSError) as e:
            with open(m.file(name), "rb") as f:
                f.read()
        assert e.value.errno == want, (name, e.value)


def test_failing_root_listing_exits_2(weightfs_run, listing_server, tmp_path):
    srv = listing_server("root_html")
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = weightfs_run("-f", srv.url, mp)
    assert r.returncode == 2, r.stderr
    assert "not a JSON directory index" in r.stderr
    assert not os.path.ismount(str(mp))


def test_endless_fresh_tokens_fail_in_bounded_memory(weightfs_run,
                                                     listing_server,
                                                     tmp_path):
    """A server returning a fresh 60 KB continuation token on every page
    ends the mount at once with a message, instead of listing forever and
    keeping every token."""
    srv = listing_server("s3_tokens", token_len=60000)
    mp = tmp_path / "mnt"
    mp.mkdir()
    env = aws_env(tmp_path, AWS_ACCESS_KEY_ID="AKIDEXAMPLE",
                  AWS_SECRET_ACCESS_KEY="secret")
    r = weightfs_run("-f", "-o", "endpoint=" + srv.url.rstrip("/"),
                     "s3://bucket", mp, env=env, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "continuation token longer than" in r.stderr, r.stderr
    assert len(srv.log) <= 2, len(srv.log)
