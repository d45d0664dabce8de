"""The mount against a misbehaving server (servers/fault_server.py):
transient faults are retried and the bytes are still right; a server that
lies, or an object that changes while open, gives EIO and never wrong or
mixed bytes; the daemon keeps serving other files; hostile names in a
listing are skipped."""

import errno
import os
import time

import pytest

from servers.fault_server import etag_of
from wfs_testlib import (MiB, make_tree, random_bytes, sha256_file,
                         tree_listing)

OPTS = {"block_size": "1M", "retries": 5, "timeout": 5}

SPEC = {"a.bin": 8 * MiB + 123, "b.bin": 3 * MiB + 5, "sub/c.bin": 2 * MiB}


class Tree:
    def __init__(self, root):
        self.root = root
        self.sums = make_tree(root, SPEC)

    def path(self, rel):
        return os.path.join(self.root, rel)

    def data(self, rel):
        with open(self.path(rel), "rb") as f:
            return f.read()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Files the fault server serves (not modified by tests)."""
    return Tree(str(tmp_path_factory.mktemp("faults") / "tree"))


@pytest.fixture
def srv(fault_server, tree):
    return fault_server(tree.root)


def read_chunks(path, chunk=MiB):
    """Read @path in @chunk preads until EOF or an error. Returns (bytes
    read before the error, errno or None)."""
    out = bytearray()
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            try:
                b = os.pread(fd, chunk, len(out))
            except OSError as e:
                return bytes(out), e.errno
            if not b:
                return bytes(out), None
            out += b
    finally:
        os.close(fd)


def assert_other_files_fine(m, tree):
    assert sha256_file(m.file("b.bin")) == tree.sums["b.bin"]
    assert sha256_file(m.file("sub/c.bin")) == tree.sums["sub/c.bin"]


# -- the mock on the normal path ----------------------------------------

@pytest.mark.asan
def test_normal_path_pinned_gets(mount, srv, tree):
    """With no faults the mount reads right, and every data GET asks for a
    range pinned (If-Match) to the file's ETag: the index gives none, so
    the first responses set it (GETs sent before one arrived carry no
    If-Match, and are checked against it on arrival)."""
    m = mount(srv.url, OPTS)
    assert tree_listing(m.path) == tree_listing(tree.root)
    for rel in SPEC:
        assert sha256_file(m.file(rel)) == tree.sums[rel], rel
    etag = etag_of(os.stat(tree.path("a.bin")))
    gets = srv.requests("GET", "/a.bin")
    assert gets
    for method, path, rng, if_match, status, fault in gets:
        assert rng and rng.startswith("bytes="), gets
        assert if_match in (None, "", etag), gets
        assert status == 206, gets
    # prefetch=open may send every GET of a small file before the first
    # answer: then none is pinned, but each answer was checked against
    # the ETag the first one set.
    assert os.getxattr(m.file("a.bin"), "user.weightfs.etag").decode() == \
        etag


# -- transient faults: retried, bytes right ------------------------------

@pytest.mark.asan
@pytest.mark.parametrize("status", [503, 500, 502])
def test_5xx_burst_recovered(mount, srv, tree, ctl_bin, status):
    rule = srv.add_fault("status", path="/a.bin", count=3, status=status,
                         ranged_only=True)
    m = mount(srv.url, OPTS)
    assert sha256_file(m.file("a.bin")) == tree.sums["a.bin"]
    assert rule.hits == 3
    assert m.stats()["retries"] > 0


def test_429_retry_after_honoured(mount, srv, tree):
    """A 429 whose Retry-After says 2 s: the block is asked again no
    sooner (the backoff alone would retry within 100 ms), then read
    right."""
    rule = srv.add_fault("status", path="/a.bin", count=1, status=429,
                         ranged_only=True, retry_after=2)
    m = mount(srv.url, dict(OPTS, prefetch="off"))
    t0 = time.monotonic()
    assert sha256_file(m.file("a.bin")) == tree.sums["a.bin"]
    assert rule.hits == 1
    assert time.monotonic() - t0 >= 1.9
    assert m.stats()["retries"] >= 1


@pytest.mark.parametrize("kind,params", [
    ("reset", {"after": 300000}),
    ("truncate", {"after": 100000}),
    ("truncate", {"after": 0}),
    ("drop", {}),
], ids=["reset-mid-body", "truncated-body", "headers-only", "dropped"])
def test_broken_transfer_recovered(mount, srv, tree, ctl_bin, kind, params):
    rule = srv.add_fault(kind, path="/a.bin", count=2, ranged_only=True,
                         **params)
    m = mount(srv.url, OPTS)
    assert sha256_file(m.file("a.bin")) == tree.sums["a.bin"]
    assert rule.hits == 2
    assert m.stats()["retries"] > 0


def test_stall_recovered_by_timeout(mount, srv, tree, ctl_bin):
    """A transfer that stalls is abandoned after `timeout` and retried."""
    stall = 30
    rule = srv.add_fault("stall", path="/a.bin", count=1, after=65536,
                         seconds=stall, ranged_only=True)
    m = mount(srv.url, dict(OPTS, timeout=2))
    t0 = time.monotonic()
    assert sha256_file(m.file("a.bin")) == tree.sums["a.bin"]
    took = time.monotonic() - t0
    assert rule.hits == 1
    assert took < stall - 10, "read waited out the stall (%.1fs)" % took
    assert m.stats()["retries"] > 0


def test_listing_and_head_5xx_retried(mount, srv, tree):
    """Transient errors while listing (GET of a directory, HEAD of a file)
    are retried like any other."""
    srv.add_fault("status", path="/", count=2, status=503)
    srv.add_fault("status", path="/sub/", count=1, status=502)
    srv.add_fault("status", path="/b.bin", methods=("HEAD",), count=2,
                  status=503)
    m = mount(srv.url, OPTS)
    assert tree_listing(m.path) == tree_listing(tree.root)
    assert sha256_file(m.file("b.bin")) == tree.sums["b.bin"]


def test_retries_spent_gives_eio_then_recovers(mount, srv, tree, ctl_bin):
    """A file whose server keeps failing: EIO once retries are spent, in
    bounded time; other files still served; once the server is well
    again, the file reads."""
    srv.add_fault("status", path="/a.bin", count=None, status=503,
                  ranged_only=True)
    m = mount(srv.url, dict(OPTS, retries=2))
    t0 = time.monotonic()
    data, err = read_chunks(m.file("a.bin"))
    assert err == errno.EIO, "read gave %r after %d bytes" % (err, len(data))
    assert time.monotonic() - t0 < 60
    assert data == b""
    assert_other_files_fine(m, tree)
    assert m.stats()["errors"] > 0
    srv.clear_faults()
    assert sha256_file(m.file("a.bin")) == tree.sums["a.bin"]


# -- lies: EIO, never wrong bytes ----------------------------------------

@pytest.mark.asan
@pytest.mark.parametrize("kind", ["wrong_range", "wrong_length",
                                  "short_length"])
def test_lying_server_gives_eio(mount, srv, tree, ctl_bin, kind):
    srv.add_fault(kind, path="/a.bin", count=None, ranged_only=True)
    m = mount(srv.url, dict(OPTS, retries=2))
    data, err = read_chunks(m.file("a.bin"))
    assert err == errno.EIO, "read gave %r after %d bytes" % (err, len(data))
    src = tree.data("a.bin")
    assert data == src[:len(data)], "wrong bytes before the error"
    assert_other_files_fine(m, tree)
    assert m.stats()["errors"] > 0


def test_range_ignored_never_wrong_bytes(mount, srv, tree):
    """A server that answers a range request with the whole file (200):
    the reader gets the right bytes or EIO, never others."""
    srv.add_fault("ignore_range", path="/a.bin", count=None)
    m = mount(srv.url, dict(OPTS, retries=1))
    data, err = read_chunks(m.file("a.bin"))
    src = tree.data("a.bin")
    assert err in (None, errno.EIO)
    assert data == src[:len(data)]
    if err is None:
        assert data == src
    assert_other_files_fine(m, tree)


# -- an object replaced while open ---------------------------------------

@pytest.mark.parametrize("honour_if_match", [True, False],
                         ids=["if-match-honoured", "if-match-ignored"])
def test_replaced_while_open_gives_eio(mount, fault_server, tmp_path,
                                       honour_if_match):
    """The object changes after the file was opened and partly read: the
    rest reads as EIO; every byte that was returned is the old object's.
    With a server that ignores If-Match the daemon must notice the new ETag
    on the response itself."""
    root = tmp_path / "src"
    root.mkdir()
    size = 16 * MiB + 77
    old = random_bytes(size, 1)
    new = random_bytes(size, 2)
    (root / "m.bin").write_bytes(old)
    (root / "other.bin").write_bytes(random_bytes(MiB + 1, 3))
    srv = fault_server(str(root))
    if not honour_if_match:
        srv.add_fault("ignore_if_match", path="/m.bin", count=None)
    m = mount(srv.url, dict(OPTS, prefetch="off", readahead_max="1M"))
    fd = os.open(m.file("m.bin"), os.O_RDONLY)
    try:
        assert os.pread(fd, MiB, 0) == old[:MiB]
        srv.replace("m.bin", new)
        off, err = MiB, None
        while off < size:
            try:
                b = os.pread(fd, MiB, off)
            except OSError as e:
                err = e.errno
                break
            assert b == old[off:off + len(b)], \
                "bytes at %d are not the old object's" % off
            if not b:
                break
            off += len(b)
    finally:
        os.close(fd)
    assert err == errno.EIO, "read past the change without EIO (%d)" % off
    assert sha256_file(m.file("other.bin")) == \
        sha256_file(str(root / "other.bin"))


# -- hostile listings ----------------------------------------------------

HOSTILE = [
    {"name": "..", "type": "directory"},
    {"name": ".", "type": "directory"},
    {"name": "", "type": "file", "size": 3},
    {"name": "a/b", "type": "file", "size": 3},
    {"name": "../escape", "type": "file", "size": 3},
    {"name": "/abs", "type": "file", "size": 3},
    {"name": "x" * 256, "type": "file", "size": 3},
    {"name": "ctl\x01char", "type": "file", "size": 3},
    {"name": "new\nline", "type": "file", "size": 3},
    {"name": "nul\x00byte", "type": "file", "size": 3},
    {"name": "esc\x1b[2J", "type": "directory"},
]


def test_hostile_names_skipped(mount, fault_server, tmp_path):
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    sums = make_tree(str(root), {"good.bin": 5000, "sub/fine.bin": 70000,
                                 "y" * 255: 10})
    srv = fault_server(str(root))
    mtime = "Mon, 01 Jan 2024 00:00:00 GMT"
    srv.extra_entries["/"] = [dict(e, mtime=mtime) for e in HOSTILE]
    srv.extra_entries["/sub/"] = [dict(e, mtime=mtime) for e in HOSTILE]
    m = mount(srv.url, OPTS)
    assert tree_listing(m.path) == tree_listing(str(root))
    for rel, digest in sums.items():
        assert sha256_file(m.file(rel)) == digest, rel
    log = m.log().lower()
    assert any(w in log for w in ("warn", "skip", "ignor")), \
        "no warning about the skipped names:\n" + m.log()


ODD_FIELDS = [
    {"name": "nullmtime.bin", "type": "file", "size": 3, "mtime": None},
    {"name": "intmtime.bin", "type": "file", "size": 3, "mtime": 12},
    {"name": "nulltype.bin", "type": None, "size": 3},
    {"name": None, "type": "file", "size": 3},
    {"name": "negative.bin", "type": "file", "size": -5},
    {"name": "strsize.bin", "type": "file", "size": "big"},
    {"type": "file"},
    {},
    [],
    "just a string",
    None,
]


def test_odd_listing_fields_harm_nothing(mount, fault_server, tmp_path):
    """Fields of the wrong JSON type (null mtime, string size...) are
    skipped or defaulted, never a crash; the real files still serve."""
    root = tmp_path / "src"
    root.mkdir()
    sums = make_tree(str(root), {"good.bin": 5000})
    srv = fault_server(str(root))
    srv.extra_entries["/"] = ODD_FIELDS
    for e in ODD_FIELDS:  # the named ones exist, for their HEAD
        if isinstance(e, dict) and isinstance(e.get("name"), str):
            (root / e["name"]).write_bytes(b"abc")
    m = mount(srv.url, OPTS)
    assert sha256_file(m.file("good.bin")) == sums["good.bin"]
    assert "good.bin" in os.listdir(m.path)


@pytest.mark.asan
def test_tiny_cache_many_readers(mount, fault_server, tree):
    """A cache of two blocks and many concurrent readers whose reads span
    blocks: everything is read, nothing deadlocks."""
    import concurrent.futures
    srv = fault_server(tree.root)
    m = mount(srv.url, {"block_size": "64K", "cache_mem": "128K",
                        "retries": 5, "timeout": 5})

    def read_all(rel, direct):
        flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
        fd = os.open(m.file(rel), flags)
        try:
            import mmap
            buf = mmap.mmap(-1, MiB)
            out = bytearray()
            while True:
                n = os.readv(fd, [buf])
                out += buf[:n]
                if n < MiB:
                    return bytes(out)
        finally:
            os.close(fd)

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        jobs = [ex.submit(read_all, rel, i % 2 == 0)
                for i, rel in enumerate(["a.bin", "b.bin", "sub/c.bin"] * 3)]
        for f, rel in zip(jobs, ["a.bin", "b.bin", "sub/c.bin"] * 3):
            assert f.result(timeout=120) == tree.data(rel)
