"""The mount over HTTP, against a real nginx (JSON autoindex): every byte,
the tree, stat, xattrs, read-only, concurrent readers (read and mmap,
threads and processes), the fixture models, stats counters, cache,
prefetch, single-file and subdirectory sources, daemon lifetime."""

import concurrent.futures
import errno
import json
import mmap
import os
import random
import signal
import stat
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest

from wfs_testlib import (EROFS_LIKE, MiB, check_safetensors, is_mounted,
                         sha256_bytes, sha256_file, sha256_mmap,
                         tree_listing, wait_until)

OPTS = {"block_size": "1M"}


@pytest.fixture(scope="module")
def web(nginx_session, sample_tree):
    """nginx serving the sample tree for this module."""
    return nginx_session(sample_tree.root)


@pytest.fixture(scope="module")
def models(nginx_session, fixtures_dir):
    """nginx serving the fixtures' safetensors directory."""
    return nginx_session(os.path.join(fixtures_dir, "safetensors"))


@pytest.fixture(scope="module")
def expected(fixtures_dir):
    with open(os.path.join(fixtures_dir, "safetensors",
                           "EXPECTED.json")) as f:
        return json.load(f)["files"]


def src_bytes(tree, rel):
    with open(tree.path(rel), "rb") as f:
        return f.read()


def drop_page_cache(path):
    """Evict @path's pages from the kernel page cache, so the next read
    reaches the daemon."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
    except OSError:
        pass


def head(url):
    req = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers


# -- content -------------------------------------------------------------

@pytest.mark.asan
def test_tree_matches_source(mount, web, sample_tree):
    m = mount(web.url, OPTS)
    assert tree_listing(m.path) == tree_listing(sample_tree.root)
    assert sorted(os.listdir(m.file("emptydir"))) == []


@pytest.mark.asan
def test_every_byte_matches(mount, web, sample_tree):
    m = mount(web.url, OPTS)
    got = {rel: sha256_file(m.file(rel)) for rel in sample_tree.files}
    assert got == sample_tree.sums


def test_stat(mount, web, sample_tree):
    m = mount(web.url, OPTS)
    for rel in sample_tree.files:
        st = os.stat(m.file(rel))
        src = os.stat(sample_tree.path(rel))
        assert stat.S_ISREG(st.st_mode), rel
        assert st.st_size == src.st_size, rel
        assert abs(st.st_mtime - src.st_mtime) <= 1.0, rel
        assert st.st_mode & 0o444, "%s not readable: %o" % (rel, st.st_mode)
    for d in ("nested", "nested/dir", "nested/dir/deep", "emptydir"):
        st = os.stat(m.file(d))
        assert stat.S_ISDIR(st.st_mode), d
    assert stat.S_ISDIR(os.stat(m.path).st_mode)
    with pytest.raises(FileNotFoundError):
        os.stat(m.file("no-such-file"))
    with pytest.raises(FileNotFoundError):
        os.stat(m.file("nested/no-such-dir/x"))
    with pytest.raises(NotADirectoryError):
        os.listdir(m.file("odd.bin"))


def test_pread_edges(mount, web, sample_tree):
    """Reads at block boundaries, at and past EOF, of random spans."""
    m = mount(web.url, OPTS)
    for rel in ("odd.bin", "block.bin", "block_plus_one.bin", "one.bin",
                "empty.bin", "small.txt"):
        data = src_bytes(sample_tree, rel)
        size = len(data)
        fd = os.open(m.file(rel), os.O_RDONLY)
        try:
            assert os.pread(fd, 10, size) == b"", rel
            assert os.pread(fd, 10, size + 12345) == b"", rel
            if size:
                assert os.pread(fd, 10, size - 1) == data[-1:], rel
                assert os.pread(fd, size + 100, 0) == data, rel
            rng = random.Random(rel)
            spots = [k * MiB + d for k in range(size // MiB + 1)
                     for d in (-3, 0, 1)]
            spots += [rng.randrange(size + 1) for _ in range(50)]
            for off in spots:
                if not 0 <= off <= size:
                    continue
                n = rng.choice((1, 7, 4096, 65537, MiB + 3))
                assert os.pread(fd, n, off) == data[off:off + n], \
                    "%s at %d+%d" % (rel, off, n)
        finally:
            os.close(fd)


def test_cp_and_sha256sum(mount, web, sample_tree, tmp_path):
    """Unmodified programs read the files."""
    m = mount(web.url, OPTS)
    out = tmp_path / "copy.bin"
    subprocess.run(["cp", m.file("big.bin"), str(out)], check=True)
    assert sha256_file(str(out)) == sample_tree.sums["big.bin"]
    r = subprocess.run(["sha256sum", "--", "odd.bin", "nested/a.bin",
                        "with space.bin", "empty.bin"], cwd=m.path,
                       capture_output=True, text=True, check=True)
    for line in r.stdout.splitlines():
        digest, name = line.split(None, 1)
        assert digest == sample_tree.sums[name.lstrip("*")], name


def test_read_only(mount, web, sample_tree):
    m = mount(web.url, OPTS)
    f = m.file("odd.bin")
    attempts = [
        ("open r+", lambda: open(f, "r+b")),
        ("open w", lambda: open(f, "wb")),
        ("open a", lambda: open(f, "ab")),
        ("create", lambda: open(m.file("new.bin"), "wb")),
        ("mkdir", lambda: os.mkdir(m.file("newdir"))),
        ("unlink", lambda: os.unlink(f)),
        ("rmdir", lambda: os.rmdir(m.file("emptydir"))),
        ("rename", lambda: os.rename(f, m.file("renamed.bin"))),
        ("chmod", lambda: os.chmod(f, 0o777)),
        ("utime", lambda: os.utime(f, (0, 0))),
        ("truncate", lambda: os.truncate(f, 0)),
        ("symlink", lambda: os.symlink("odd.bin", m.file("ln"))),
        ("link", lambda: os.link(f, m.file("hard"))),
        ("setxattr", lambda: os.setxattr(f, "user.x", b"1")),
    ]
    for what, fn in attempts:
        with pytest.raises(OSError) as e:
            fn()
        assert e.value.errno in EROFS_LIKE + (errno.ENOTSUP,), \
            "%s: %s" % (what, e.value)
    assert sha256_file(f) == sample_tree.sums["odd.bin"]
    assert tree_listing(m.path) == tree_listing(sample_tree.root)


def test_xattrs(mount, web, sample_tree):
    m = mount(web.url, OPTS)
    for rel in ("odd.bin", "nested/dir/deep/file.bin", "with space.bin",
                "empty.bin"):
        p = m.file(rel)
        names = os.listxattr(p)
        assert "user.weightfs.source" in names, (rel, names)
        assert "user.weightfs.etag" in names, (rel, names)
        url = web.url + urllib.parse.quote(rel)
        source = os.getxattr(p, "user.weightfs.source").decode()
        assert urllib.parse.unquote(source) == web.url + rel, source
        # An HTTP index gives no ETag: a file's validator is its first
        # block's (no HEAD per file at listing); an empty file has none.
        if os.path.getsize(p) == 0:
            with pytest.raises(OSError) as e:
                os.getxattr(p, "user.weightfs.etag")
            assert e.value.errno == errno.ENODATA
            continue
        with open(p, "rb") as f:
            f.read(1)
        etag = os.getxattr(p, "user.weightfs.etag").decode()
        assert etag.strip('"') == head(url)["ETag"].strip('"'), rel
    with pytest.raises(OSError) as e:
        os.getxattr(m.file("odd.bin"), "user.weightfs.nonexistent")
    assert e.value.errno == errno.ENODATA


# -- concurrency ---------------------------------------------------------

def _read_all(path, chunk):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def _mmap_backwards(path, chunk):
    """sha256 of the file, faulting its pages in from the end."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            parts = []
            off = (size - 1) // chunk * chunk
            while off >= 0:
                parts.append(m[off:off + chunk])
                off -= chunk
    return sha256_bytes(b"".join(reversed(parts)))


def _random_preads(path, data, seed, count=200):
    rng = random.Random(seed)
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(count):
            off = rng.randrange(len(data))
            n = rng.randrange(1, 3 * MiB)
            got = os.pread(fd, n, off)
            if got != data[off:off + n]:
                return "mismatch at %d+%d" % (off, n)
    finally:
        os.close(fd)
    return "ok"


def _run_concurrent_readers(m, sample_tree):
    big = src_bytes(sample_tree, "big.bin")
    jobs = {
        "read 1M big": (_read_all, m.file("big.bin"), MiB),
        "read 128K big": (_read_all, m.file("big.bin"), 128 * 1024),
        "mmap 48M big": (sha256_mmap, m.file("big.bin")),
        "mmap 1M big": (sha256_mmap, m.file("big.bin"), MiB),
        "mmap backwards big": (_mmap_backwards, m.file("big.bin"), 2 * MiB),
        "read odd": (_read_all, m.file("odd.bin"), 65536),
        "mmap odd": (sha256_mmap, m.file("odd.bin"), 4096 * 3),
        "read deep": (_read_all, m.file("nested/dir/deep/file.bin"), MiB),
        "mmap block+1": (sha256_mmap, m.file("block_plus_one.bin")),
        "preads big 1": (_random_preads, m.file("big.bin"), big, 1),
        "preads big 2": (_random_preads, m.file("big.bin"), big, 2),
    }
    want = {
        "read 1M big": sample_tree.sums["big.bin"],
        "read 128K big": sample_tree.sums["big.bin"],
        "mmap 48M big": sample_tree.sums["big.bin"],
        "mmap 1M big": sample_tree.sums["big.bin"],
        "mmap backwards big": sample_tree.sums["big.bin"],
        "read odd": sample_tree.sums["odd.bin"],
        "mmap odd": sample_tree.sums["odd.bin"],
        "read deep": sample_tree.sums["nested/dir/deep/file.bin"],
        "mmap block+1": sample_tree.sums["block_plus_one.bin"],
        "preads big 1": "ok",
        "preads big 2": "ok",
    }
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as ex:
        futs = {name: ex.submit(*job) for name, job in jobs.items()}
        got = {name: f.result(timeout=120) for name, f in futs.items()}
    assert got == want


@pytest.mark.asan
def test_concurrent_readers_threads(mount, web, sample_tree):
    """Threads reading (read and mmap) the same and different files of a
    cold mount all get the source's bytes."""
    m = mount(web.url, OPTS)
    _run_concurrent_readers(m, sample_tree)


def test_concurrent_readers_small_cache(mount, web, sample_tree):
    """The same, with a cache much smaller than the files, so blocks are
    evicted while readers still want them."""
    m = mount(web.url, dict(OPTS, cache_mem="8M", readahead_max="4M"))
    _run_concurrent_readers(m, sample_tree)


MMAP_SHA = """
import hashlib, mmap, os, sys
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    h = hashlib.sha256()
    step = int(sys.argv[2])
    for off in range(0, len(m), step):
        h.update(m[off:off + step])
print(h.hexdigest())
"""


def test_concurrent_readers_processes(mount, web, sample_tree):
    """Several processes (sha256sum, cat, Python mmap) read the same and
    different files of a cold mount at once."""
    m = mount(web.url, OPTS)
    big, odd = m.file("big.bin"), m.file("odd.bin")
    cmds = [
        (["sha256sum", big], "big.bin"),
        (["sha256sum", big], "big.bin"),
        (["sha256sum", odd], "odd.bin"),
        (["sh", "-c", "cat \"$1\" | sha256sum", "sh", big], "big.bin"),
        ([sys.executable, "-c", MMAP_SHA, big, str(48 * MiB)], "big.bin"),
        ([sys.executable, "-c", MMAP_SHA, big, str(4096)], "big.bin"),
        ([sys.executable, "-c", MMAP_SHA, odd, str(MiB)], "odd.bin"),
    ]
    procs = [(subprocess.Popen(c, stdout=subprocess.PIPE, text=True), rel)
             for c, rel in cmds]
    for p, rel in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, p.args
        assert out.split()[0] == sample_tree.sums[rel], p.args


# -- the fixture models --------------------------------------------------

def test_fixture_models_exact(mount, models, fixtures_dir):
    """Every fixture file (safetensors, JSON) reads back byte for byte."""
    m = mount(models.url, OPTS)
    src = os.path.join(fixtures_dir, "safetensors")
    assert tree_listing(m.path) == tree_listing(src)
    for rel, kind in tree_listing(src).items():
        if kind[0] == "f":
            assert sha256_file(m.file(rel)) == \
                sha256_file(os.path.join(src, rel)), rel


@pytest.mark.asan
def test_tiny_llama_mmap_like_safetensors(mount, models, expected):
    """safe_open-style reads (header, then tensor slices of an mmap) of
    every fixture model give the tensors the official library read."""
    m = mount(models.url, OPTS)
    for rel, exp in sorted(expected.items()):
        assert check_safetensors(m.file(rel), exp) == [], rel


# -- stats, cache, prefetch ----------------------------------------------

STATS_KEYS = ("bytes_fetched", "requests", "retries", "cache_hits",
              "cache_misses", "cache_bytes", "errors")


def delta(after, before, key):
    return after[key] - before[key]


@pytest.mark.asan
def test_stats_cold_read_then_cache(mount, web, sample_tree, ctl_bin):
    """A cold read fetches the file once; a re-read (page cache dropped)
    is served by the daemon's cache without touching the source."""
    m = mount(web.url, OPTS)
    s0 = m.stats()
    for k in STATS_KEYS:
        assert isinstance(s0.get(k), int) and s0[k] >= 0, (k, s0)
    size = sample_tree.sizes["big.bin"]
    assert sha256_file(m.file("big.bin")) == sample_tree.sums["big.bin"]
    s1 = m.stats()
    assert size <= delta(s1, s0, "bytes_fetched") <= size * 1.1 + MiB, s1
    assert 1 <= delta(s1, s0, "requests") <= 2 * (size // MiB + 1) + 4, s1
    assert delta(s1, s0, "cache_misses") > 0, s1
    assert s1["cache_bytes"] > 0, s1
    assert s1["errors"] == 0 and s1["retries"] == 0, s1

    drop_page_cache(m.file("big.bin"))
    assert sha256_file(m.file("big.bin")) == sample_tree.sums["big.bin"]
    s2 = m.stats()
    assert delta(s2, s1, "bytes_fetched") == 0, (s1, s2)
    assert delta(s2, s1, "requests") == 0, (s1, s2)
    assert delta(s2, s1, "cache_hits") > 0, (s1, s2)


def test_reread_served_from_page_cache(mount, web, sample_tree, ctl_bin):
    """Re-opening an unchanged file keeps the kernel's page cache
    (keep_cache): the second read asks the daemon for nothing."""
    m = mount(web.url, OPTS)
    assert sha256_file(m.file("odd.bin")) == sample_tree.sums["odd.bin"]
    s1 = m.stats()
    assert sha256_file(m.file("odd.bin")) == sample_tree.sums["odd.bin"]
    s2 = m.stats()
    assert delta(s2, s1, "bytes_fetched") == 0
    assert delta(s2, s1, "cache_hits") + delta(s2, s1, "cache_misses") == 0


def test_cache_stays_within_cache_mem(mount, web, sample_tree, ctl_bin):
    m = mount(web.url, dict(OPTS, cache_mem="16M"))
    assert sha256_file(m.file("big.bin")) == sample_tree.sums["big.bin"]
    assert sha256_file(m.file("odd.bin")) == sample_tree.sums["odd.bin"]
    s = m.stats()
    assert 0 < s["cache_bytes"] <= 16 * MiB, s


def test_prefetch_open_streams_whole_file(mount, web, sample_tree, ctl_bin):
    m = mount(web.url, dict(OPTS, prefetch="open"))
    size = sample_tree.sizes["big.bin"]
    s0 = m.stats()
    with open(m.file("big.bin"), "rb") as f:
        assert f.read(1) == src_bytes(sample_tree, "big.bin")[:1]
        done = wait_until(
            lambda: delta(m.stats(), s0, "bytes_fetched") >= size, 30, 0.1)
        assert done, m.stats()
    assert delta(m.stats(), s0, "bytes_fetched") <= size * 1.1 + MiB
    assert sha256_file(m.file("big.bin")) == sample_tree.sums["big.bin"]


def test_prefetch_off_fetches_only_what_is_read(mount, web, sample_tree,
                                                ctl_bin):
    m = mount(web.url, dict(OPTS, prefetch="off"))
    s0 = m.stats()
    with open(m.file("big.bin"), "rb") as f:
        # Sequential reads: what would start readahead with prefetch on.
        for _ in range(4):
            f.read(4096)
    # Readahead is queued inside the read that triggers it, so by now it
    # would show in prefetched_blocks; the kernel's own readahead reaches
    # the daemon as plain reads, counted in bytes_fetched.
    s1 = m.stats()
    assert delta(s1, s0, "prefetched_blocks") == 0, s1
    fetched = delta(s1, s0, "bytes_fetched")
    assert 0 < fetched <= 4 * MiB, fetched


def test_gets_ranged_pinned_keepalive(mount, nginx, sample_tree):
    """Every data GET is a range request pinned to the file's ETag, and
    they share at most `connections` keep-alive connections."""
    srv = nginx(sample_tree.root)
    m = mount(srv.url, dict(OPTS, connections=4))
    # One byte first: its response pins the file; only the GETs queued
    # with it (its block's readahead) can go out before, not most.
    with open(m.file("big.bin"), "rb") as f:
        assert f.read(1)
    assert sha256_file(m.file("big.bin")) == sample_tree.sums["big.bin"]
    etag = head(srv.url + "big.bin")["ETag"]
    gets = [r for r in srv.requests()
            if r["method"] == "GET" and r["uri"] == "/big.bin"]
    assert gets
    # The index gives no ETag: the first responses' sets it (those sent
    # before one arrived carry no If-Match), every later GET is pinned.
    for r in gets:
        assert r["range"].startswith("bytes="), r
        assert r["if_match"] in ("", etag), r
        assert r["etag"] == etag, r
        assert r["status"] == 206, r
    assert sum(r["if_match"] == etag for r in gets) > len(gets) // 2, gets
    conns = {(r["pid"], r["conn"]) for r in gets}
    assert len(conns) <= 4, conns
    assert len(gets) > len(conns), "no connection was reused"


def test_all_options_accepted(mount, web, sample_tree):
    m = mount(web.url, {"block_size": "2M", "cache_mem": "64M",
                        "connections": 3, "readahead_max": "8M",
                        "prefetch": "sequential", "retries": 4,
                        "timeout": 10, "insecure": True,
                        "allow_other": True})
    assert sha256_file(m.file("odd.bin")) == sample_tree.sums["odd.bin"]
    assert sha256_file(m.file("big.bin")) == sample_tree.sums["big.bin"]


# -- sources -------------------------------------------------------------

@pytest.mark.parametrize("rel", ["odd.bin", "nested/dir/deep/file.bin",
                                 "with space.bin", "empty.bin"])
def test_single_file_url(mount, web, sample_tree, rel):
    """A URL naming a file mounts as a directory holding that file."""
    m = mount(web.url + urllib.parse.quote(rel), OPTS)
    name = os.path.basename(rel)
    assert os.listdir(m.path) == [name]
    assert os.stat(m.file(name)).st_size == sample_tree.sizes[rel]
    assert sha256_file(m.file(name)) == sample_tree.sums[rel]


@pytest.mark.parametrize("suffix", ["nested/", "nested"])
def test_subdirectory_source(mount, web, sample_tree, suffix):
    m = mount(web.url + suffix, OPTS)
    src = sample_tree.path("nested")
    assert tree_listing(m.path) == tree_listing(src)
    assert sha256_file(m.file("dir/deep/file.bin")) == \
        sample_tree.sums["nested/dir/deep/file.bin"]


# -- lifetime ------------------------------------------------------------

@pytest.mark.asan
def test_daemonized_mount_then_fusermount(mount, web, sample_tree):
    """Without -f the command returns 0 once the mount is live; the
    daemon serves, and exits when unmounted."""
    m = mount(web.url, OPTS, foreground=False)
    assert m.pid and m.alive()
    assert sha256_file(m.file("odd.bin")) == sample_tree.sums["odd.bin"]
    r = subprocess.run(["fusermount3", "-u", m.path], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert m.wait_exit(30), "daemon still running after fusermount3 -u"
    assert not is_mounted(m.path)


def test_fusermount_ends_foreground_daemon(mount, web, sample_tree):
    m = mount(web.url, OPTS)
    assert sha256_file(m.file("one.bin")) == sample_tree.sums["one.bin"]
    subprocess.run(["fusermount3", "-u", m.path], check=True)
    assert m.wait_exit(30), "daemon still running after fusermount3 -u"
    assert m.returncode == 0, m.log()


@pytest.mark.asan
@pytest.mark.parametrize("foreground", [True, False],
                         ids=["foreground", "daemonized"])
def test_sigterm_ends_daemon_cleanly(mount, web, sample_tree, foreground):
    m = mount(web.url, OPTS, foreground=foreground)
    assert sha256_file(m.file("odd.bin")) == sample_tree.sums["odd.bin"]
    m.kill(signal.SIGTERM)
    assert m.wait_exit(30), "daemon still running 30s after SIGTERM"
    if foreground:
        assert m.returncode == 0, m.log()
    assert wait_until(lambda: not is_mounted(m.path), 10), \
        "still mounted after the daemon exited"


def test_sigterm_with_reader_in_flight(mount, web, sample_tree):
    """SIGTERM while a reader is mid-file: the daemon still exits 0."""
    m = mount(web.url, dict(OPTS, prefetch="off"))
    f = open(m.file("big.bin"), "rb", buffering=0)
    try:
        f.read(MiB)
        m.kill(signal.SIGTERM)
        assert m.wait_exit(30), "daemon still running 30s after SIGTERM"
        assert m.returncode == 0, m.log()
    finally:
        try:
            f.close()
        except OSError:
            pass
