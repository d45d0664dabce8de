"""The mount over a local directory (file://): the same promises as over
HTTP: every byte, the tree, stat, xattrs, read-only, concurrent readers,
the fixture models."""

import concurrent.futures
import errno
import json
import os
import stat
import subprocess

import pytest

from wfs_testlib import (EROFS_LIKE, MiB, check_safetensors, sha256_file,
                         sha256_mmap, tree_listing)

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
