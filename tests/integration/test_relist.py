"""list_ttl: the source is listed again; new files appear, changed files
show their new bytes (never a mix), files gone fail with EIO; without
list_ttl the first listing stays."""

import errno
import os
import time

import pytest

from wfs_testlib import MiB, random_bytes, wait_until


def _sources(kind, root, nginx):
    if kind.startswith("file"):
        return "file://" + str(root)
    return nginx(str(root)).url


@pytest.mark.asan
@pytest.mark.parametrize("kind", ["file", "http", "file-eager",
                                  "http-eager"])
def test_relisting_shows_changes(mount, nginx, tmp_path, kind):
    root = tmp_path / "src"
    root.mkdir()
    old = random_bytes(3 * MiB, 1)
    (root / "a.bin").write_bytes(old)
    (root / "gone.bin").write_bytes(b"x" * 100)
    m = mount(_sources(kind, root, nginx),
              options={"block_size": "1M", "list_ttl": "1",
                       "list": "eager" if "eager" in kind else "lazy"})
    with open(m.file("a.bin"), "rb") as f:
        assert f.read() == old
    assert not os.path.exists(m.file("new/b.bin"))

    new = random_bytes(2 * MiB + 3, 2)
    (root / "new").mkdir()
    (root / "new" / "b.bin").write_bytes(new)
    tmp = root / "a.tmp"
    tmp.write_bytes(new)
    os.utime(str(tmp), (1, 1))  # a different mtime, so a different ETag
    os.rename(str(tmp), str(root / "a.bin"))
    os.unlink(str(root / "gone.bin"))

    assert wait_until(lambda: os.path.exists(m.file("new/b.bin")), 10)
    assert "b.bin" in os.listdir(m.file("new"))
    with open(m.file("new/b.bin"), "rb") as f:
        assert f.read() == new

    def a_is_new():
        try:
            with open(m.file("a.bin"), "rb") as f:
                return f.read() == new
        except OSError:
            return False
    assert wait_until(a_is_new, 10)
    assert os.path.getsize(m.file("a.bin")) == len(new)

    def gone_fails():
        try:
            with open(m.file("gone.bin"), "rb") as f:
                f.read()
            return False
        except OSError as e:
            return e.errno == errno.EIO
    assert wait_until(gone_fails, 10)


def test_without_list_ttl_listing_stays(mount, tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    (root / "a.bin").write_bytes(b"a")
    m = mount("file://" + str(root))
    # A second mount of the same source with list_ttl=1 is the control:
    # once it shows b.bin, a relist of the first one would have too.
    control = mount("file://" + str(root), options={"list_ttl": "1"})
    assert os.listdir(m.path) == ["a.bin"]
    (root / "b.bin").write_bytes(b"b")
    assert wait_until(lambda: "b.bin" in os.listdir(control.path), 10)
    assert os.listdir(m.path) == ["a.bin"]


@pytest.mark.asan
@pytest.mark.parametrize("kind", ["file", "http", "file-eager",
                                  "http-eager"])
def test_relist_type_change_is_applied_whole(mount, nginx, tmp_path, kind):
    """A relist in which one path turns from a file into a directory while
    another file changes: both changes show, the changed file reads all
    new bytes (the kernel was told to drop its old pages), and later
    relists keep working (issue 9 item 1)."""
    root = tmp_path / "src"
    root.mkdir()
    old = random_bytes(3 * MiB, 3)
    (root / "f.bin").write_bytes(old)
    (root / "x").write_bytes(b"a file, for now")
    m = mount(_sources(kind, root, nginx),
              options={"block_size": "1M", "list_ttl": "1",
                       "list": "eager" if "eager" in kind else "lazy"})
    with open(m.file("f.bin"), "rb") as f:
        assert f.read(MiB) == old[:MiB]  # its first pages are cached now
    assert os.path.isfile(m.file("x"))

    new = random_bytes(3 * MiB, 4)
    tmp = root / "f.tmp"
    tmp.write_bytes(new)
    os.utime(str(tmp), (1, 1))  # a different mtime, so a different ETag
    os.rename(str(tmp), str(root / "f.bin"))
    os.unlink(str(root / "x"))
    (root / "x").mkdir()
    (root / "x" / "y.bin").write_bytes(b"y" * 1000)

    assert wait_until(lambda: os.path.exists(m.file("x/y.bin")), 10), \
        "the relist with a type change never applied:\n" + m.log()
    assert os.path.isdir(m.file("x"))
    with open(m.file("x/y.bin"), "rb") as f:
        assert f.read() == b"y" * 1000
    with open(m.file("f.bin"), "rb") as f:
        got = f.read()
    assert len(got) == len(new)
    assert got == new, "old pages mixed with new bytes"

    # Later relists keep working, the other way round too.
    (root / "later.bin").write_bytes(b"later")
    assert wait_until(lambda: os.path.exists(m.file("later.bin")), 10)
    (root / "x" / "y.bin").unlink()
    (root / "x").rmdir()
    (root / "x").write_bytes(b"a file again")
    assert wait_until(lambda: os.path.isfile(m.file("x")), 10)
    with open(m.file("x"), "rb") as f:
        assert f.read() == b"a file again"
    assert "relisting failed" not in m.log()


@pytest.mark.asan
def test_readdir_across_a_relist_neither_skips_nor_repeats(mount, tmp_path):
    """A directory read partly before a relist that adds names sorting
    before the ones there, and the rest after it, lists exactly what was
    there at opendir: each handle reads its own snapshot."""
    root = tmp_path / "src"
    root.mkdir()
    before = ["m%05d" % i for i in range(3000)]
    for n in before:
        (root / n).write_bytes(b"")
    m = mount("file://" + str(root), options={"list_ttl": "1"})
    it = os.scandir(m.path)
    seen = [next(it).name for _ in range(200)]
    for i in range(3000):
        (root / ("a%05d" % i)).write_bytes(b"")
    assert wait_until(lambda: os.path.exists(m.file("a02999")), 15)
    seen += [e.name for e in it]
    it.close()
    assert len(seen) == len(set(seen)), "entries repeated"
    assert sorted(seen) == before, "entries skipped or foreign"
    # A new handle sees the new names.
    assert len(os.listdir(m.path)) == 6000
