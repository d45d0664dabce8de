"""The mount over a local directory (file://): the same promises as over
HTTP: every byte, the tree, stat, xattrs, read-only, concurrent readers,
the fixture models."""

import concurrent.futures
import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from wfs_testlib import (EROFS_LIKE, MiB, check_safetensors, sha256_file,
                         sha256_mmap, tree_listing, vm_rss)

OPTS = {"block_size": "1M"}


def file_url(path):
    return "file://" + os.path.abspath(path)


@pytest.mark.asan
def test_tree_and_bytes(mount, sample_tree):
    m = mount(file_url(sample_tree.root), OPTS)
    assert tree_listing(m.path) == tree_listing(sample_tree.root)
    got = {rel: sha256_file(m.file(rel)) for rel in sample_tree.files}
    assert got == sample_tree.sums


def test_trailing_slash_same_tree(mount, sample_tree):
    m = mount(file_url(sample_tree.root) + "/", OPTS)
    assert tree_listing(m.path) == tree_listing(sample_tree.root)


def test_subdirectory_source(mount, sample_tree):
    m = mount(file_url(sample_tree.path("nested")), OPTS)
    assert tree_listing(m.path) == tree_listing(sample_tree.path("nested"))
    assert sha256_file(m.file("dir/deep/file.bin")) == \
        sample_tree.sums["nested/dir/deep/file.bin"]


def test_stat_and_xattrs(mount, sample_tree):
    m = mount(file_url(sample_tree.root), OPTS)
    for rel in sample_tree.files:
        st, src = os.stat(m.file(rel)), os.stat(sample_tree.path(rel))
        assert stat.S_ISREG(st.st_mode) and st.st_size == src.st_size, rel
        assert abs(st.st_mtime - src.st_mtime) <= 1.0, rel
    assert stat.S_ISDIR(os.stat(m.file("nested/dir")).st_mode)
    p = m.file("nested/dir/deep/file.bin")
    assert "user.weightfs.source" in os.listxattr(p)
    source = os.getxattr(p, "user.weightfs.source").decode()
    assert source.endswith("nested/dir/deep/file.bin"), source
    assert source.startswith("file://"), source


def test_read_only(mount, sample_tree):
    m = mount(file_url(sample_tree.root), OPTS)
    f = m.file("odd.bin")
    for what, fn in [("open w", lambda: open(f, "r+b")),
                     ("create", lambda: open(m.file("new"), "wb")),
                     ("mkdir", lambda: os.mkdir(m.file("d"))),
                     ("unlink", lambda: os.unlink(f)),
                     ("truncate", lambda: os.truncate(f, 0))]:
        with pytest.raises(OSError) as e:
            fn()
        assert e.value.errno in EROFS_LIKE + (errno.ENOTSUP,), what
    assert sha256_file(sample_tree.path("odd.bin")) == \
        sample_tree.sums["odd.bin"]


def test_concurrent_read_and_mmap(mount, sample_tree):
    m = mount(file_url(sample_tree.root), dict(OPTS, cache_mem="8M"))
    big, odd = m.file("big.bin"), m.file("odd.bin")
    jobs = [(sha256_file, big), (sha256_mmap, big), (sha256_mmap, big, MiB),
            (sha256_file, odd), (sha256_mmap, odd, 4096),
            (sha256_file, big, 65536)]
    want = [sample_tree.sums["big.bin"]] * 3 + \
        [sample_tree.sums["odd.bin"]] * 2 + [sample_tree.sums["big.bin"]]
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as ex:
        got = [f.result(timeout=120) for f in
               [ex.submit(*j) for j in jobs]]
    assert got == want


@pytest.mark.asan
def test_fixture_models(mount, fixtures_dir):
    src = os.path.join(fixtures_dir, "safetensors")
    with open(os.path.join(src, "EXPECTED.json")) as f:
        expected = json.load(f)["files"]
    m = mount(file_url(src), OPTS)
    assert tree_listing(m.path) == tree_listing(src)
    for rel, exp in sorted(expected.items()):
        assert sha256_file(m.file(rel)) == \
            sha256_file(os.path.join(src, rel)), rel
        assert check_safetensors(m.file(rel), exp) == [], rel


def test_stats_counts_reads(mount, sample_tree, ctl_bin):
    m = mount(file_url(sample_tree.root), OPTS)
    s0 = m.stats()
    assert sha256_file(m.file("odd.bin")) == sample_tree.sums["odd.bin"]
    s1 = m.stats()
    assert s1["bytes_fetched"] - s0["bytes_fetched"] >= \
        sample_tree.sizes["odd.bin"], (s0, s1)
    assert s1["errors"] == 0


def test_daemonized_and_unmount(mount, sample_tree):
    m = mount(file_url(sample_tree.root), OPTS, foreground=False)
    assert sha256_file(m.file("small.txt")) == sample_tree.sums["small.txt"]
    subprocess.run(["fusermount3", "-u", m.path], check=True)
    assert m.wait_exit(30)


# -- allow_other: what other users see ------------------------------------
#
# The daemon runs as root with allow_other (as packaging/weightfs@.service
# does); other users must get exactly what the source grants them.

NOBODY = 65534


def as_nobody(code, *args):
    """Run python @code as uid/gid nobody; returns (rc, stdout)."""
    r = subprocess.run([sys.executable, "-c", code] + list(args),
                       user=NOBODY, group=NOBODY, extra_groups=[],
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout.strip() + r.stderr.strip()


READ_AS = """
import errno, sys
try:
    with open(sys.argv[1], "rb") as f:
        sys.stdout.write(f.read().decode())
except OSError as e:
    sys.stdout.write(errno.errorcode[e.errno])
"""

LIST_AS = """
import errno, os, sys
try:
    print(sorted(os.listdir(sys.argv[1])))
except OSError as e:
    print(errno.errorcode[e.errno])
"""


@pytest.fixture
def shared_dir():
    """A directory under /tmp that other users may traverse (pytest's
    tmp_path is 0700), removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root: a root daemon, and setuid to nobody")
    d = tempfile.mkdtemp(prefix="wfs-allow-other-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write(path, data, mode, uid=0):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    os.chown(path, uid, uid)


@pytest.mark.asan
def test_allow_other_mirrors_permissions(mount, shared_dir):
    src, mp = os.path.join(shared_dir, "src"), os.path.join(shared_dir, "mnt")
    os.makedirs(os.path.join(src, "private"))
    os.mkdir(mp, 0o755)
    os.chmod(src, 0o755)
    os.chmod(os.path.join(src, "private"), 0o700)
    write(os.path.join(src, "public.bin"), b"public", 0o644)
    write(os.path.join(src, "secret.bin"), b"root only", 0o600)
    write(os.path.join(src, "nobodys.bin"), b"nobody's own", 0o600, NOBODY)
    write(os.path.join(src, "private", "in.bin"), b"in private", 0o644)
    m = mount(file_url(src), dict(OPTS, allow_other=True), mountpoint=mp)
    # The kernel does the checking: default_permissions is in effect.
    with open("/proc/self/mountinfo") as f:
        opts = [ln.split(" - ")[1].split()[2] for ln in f
                if ln.split()[4] == os.path.realpath(mp)]
    assert opts and "default_permissions" in opts[-1].split(",") and \
        "allow_other" in opts[-1].split(","), opts

    # What stat shows: the source's mode less write bits, its owner.
    st = os.stat(m.file("secret.bin"))
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o400, 0)
    st = os.stat(m.file("public.bin"))
    assert stat.S_IMODE(st.st_mode) == 0o444
    st = os.stat(m.file("nobodys.bin"))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == \
        (0o400, NOBODY, NOBODY)
    st = os.stat(m.file("private"))
    assert stat.S_IMODE(st.st_mode) == 0o500

    # What the kernel grants (default_permissions), as nobody.
    assert as_nobody(READ_AS, m.file("public.bin")) == (0, "public")
    assert as_nobody(READ_AS, m.file("secret.bin")) == (0, "EACCES")
    assert as_nobody(READ_AS, m.file("nobodys.bin")) == (0, "nobody's own")
    assert as_nobody(LIST_AS, m.file("private")) == (0, "EACCES")
    assert as_nobody(READ_AS, m.file("private/in.bin")) == (0, "EACCES")
    # Root still reads everything.
    with open(m.file("secret.bin"), "rb") as f:
        assert f.read() == b"root only"


@pytest.mark.asan
def test_symlinks_stay_inside_the_source(mount, shared_dir):
    src, mp = os.path.join(shared_dir, "src"), os.path.join(shared_dir, "mnt")
    out = os.path.join(shared_dir, "outside")
    os.makedirs(os.path.join(src, "sub"))
    os.makedirs(out)
    os.mkdir(mp, 0o755)
    write(os.path.join(src, "real.bin"), b"inside", 0o644)
    write(os.path.join(out, "x.bin"), b"outside the source", 0o644)
    links = {
        "shadow": "/etc/shadow",                      # absolute, outside
        "out_abs": os.path.join(out, "x.bin"),        # absolute, outside
        "out_rel": "../outside/x.bin",                # relative, outside
        "sub/out_deep": "../../outside/x.bin",
        "in_rel": "real.bin",                         # relative, inside
        "in_abs": os.path.join(src, "real.bin"),      # absolute, inside
        "sub/in_up": "../real.bin",                   # up, still inside
        "dangling": "no-such-file",
    }
    for name, target in links.items():
        os.symlink(target, os.path.join(src, name))
    m = mount(file_url(src), dict(OPTS, allow_other=True), mountpoint=mp)

    assert sorted(os.listdir(m.path)) == ["in_abs", "in_rel", "real.bin",
                                          "sub"]
    assert os.listdir(m.file("sub")) == ["in_up"]
    for name in ("in_rel", "in_abs", "sub/in_up"):
        with open(m.file(name), "rb") as f:
            assert f.read() == b"inside", name
        assert as_nobody(READ_AS, m.file(name)) == (0, "inside"), name
    for name in ("shadow", "out_abs", "out_rel", "sub/out_deep"):
        assert not os.path.exists(m.file(name)), name
        assert as_nobody(READ_AS, m.file(name)) == (0, "ENOENT"), name
        assert "outside the source" in m.log(), m.log()


def test_symlink_swapped_after_listing(mount, shared_dir):
    """A symlink turned to point outside after the mount listed it: the
    read fails (EIO), it never returns the outside file's bytes."""
    src, mp = os.path.join(shared_dir, "src"), os.path.join(shared_dir, "mnt")
    os.makedirs(src)
    os.mkdir(mp, 0o755)
    write(os.path.join(src, "real.bin"), b"inside", 0o644)
    os.symlink("real.bin", os.path.join(src, "link"))
    m = mount(file_url(src), dict(OPTS, allow_other=True), mountpoint=mp)
    os.unlink(os.path.join(src, "link"))
    os.symlink("/etc/shadow", os.path.join(src, "link"))
    with pytest.raises(OSError) as e:
        with open(m.file("link"), "rb") as f:
            f.read()
    assert e.value.errno == errno.EIO


# -- memory: a small file costs its size, not a block ---------------------

@pytest.mark.parametrize("block_size", ["8M", "1M"])
def test_small_files_cost_their_size(mount, tmp_path, block_size):
    """400 files of 400 bytes: every one stays cached (no eviction: the
    cache is bounded by memory, not by cache_mem / block_size slots), and
    the daemon's RSS stays far below 400 blocks' worth."""
    src = tmp_path / "small"
    src.mkdir()
    for i in range(400):
        (src / ("f%03d.bin" % i)).write_bytes(bytes([i % 251]) * 400)
    m = mount(file_url(str(src)),
              {"block_size": block_size, "cache_mem": "1G"})
    rss0 = vm_rss(m.pid)
    for i in range(400):
        with open(m.file("f%03d.bin" % i), "rb") as f:
            assert f.read() == bytes([i % 251]) * 400, i
    st = m.stats()
    rss = vm_rss(m.pid)
    assert st["cache_bytes"] == 400 * 400, st
    assert st["cache_evictions"] == 0, st
    assert rss - rss0 < 64 * MiB and rss < 256 * MiB, \
        "RSS %d MiB (%d MiB before the reads)" % (rss // MiB, rss0 // MiB)
