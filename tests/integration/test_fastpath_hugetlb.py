"""The fast path on hugetlbfs pages: where the system has free huge pages
the loader's host destination (and pinned staging) is a MFD_HUGETLB memfd,
one fault per 2 MiB instead of per 4 KiB, with the same bytes and the same
one copy per byte (the daemon's); with too few free it falls back to a
shmem memfd. And a client that punches a hole in its hugetlbfs memfd
(F_SEAL_SHRINK allows that) cannot kill the daemon with SIGBUS.

Needs root to reserve huge pages (vm.nr_hugepages, put back after); skips
with the reason where they cannot be reserved."""

import ctypes
import fcntl
import gc
import json
import mmap
import os
import subprocess

import pytest

from test_fastpath import (Client, MAGIC, MAP, MAP_FMT, digest,
                           import_weightfs, load_json, socket_of,
                           warm_model)
from wfs_testlib import MiB, free_huge_pages, meminfo, random_bytes

HUGE = 2 * MiB
PAGES = 64  # 128 MiB: enough for every model here, twice


@pytest.fixture(scope="module")
def huge_pages():
    """PAGES free 2 MiB huge pages, the pool put back as it was after."""
    with free_huge_pages(PAGES) as why:
        if why:
            pytest.skip(why)
        yield PAGES


@pytest.fixture
def load_bin(build_dir):
    p = os.path.join(build_dir, "tools", "weightfs-load")
    if not os.path.exists(p):
        pytest.skip("no %s (build first)" % p)
    return p


def model_page_sizes():
    """KernelPageSize (kB) of each of this process's mappings of the
    library's host memfds."""
    out, cur = [], False
    with open("/proc/self/smaps") as f:
        for ln in f:
            if not ln.split()[0].endswith(":"):  # a mapping's first line
                cur = "memfd:weightfs-model" in ln
            elif cur and ln.startswith("KernelPageSize:"):
                out.append(int(ln.split()[1]))
    return out


@pytest.mark.asan
def test_hugetlb_load_exact_one_copy(mount, tmp_path, build_dir, load_bin,
                                     huge_pages):
    """weightfs-load with huge pages free: exact tensors, the loader copies
    nothing, the daemon each byte once (into the huge-page memfd: the next
    test shows it is one)."""
    m, f, sums = warm_model(mount, tmp_path, build_dir)
    n = 24 * MiB + 6
    before = m.stats()["fastpath_bytes_copied"]
    got = load_json(load_bin, f)
    assert got["path"] == "fastpath" and got["bytes"] == n
    assert {t["name"]: t["digest"] for t in got["tensors"]} == sums
    assert got["loader_bytes_copied"] == 0
    assert got["daemon_bytes_copied"] == n
    assert m.stats()["fastpath_bytes_copied"] - before == n


def test_hugetlb_python_load_on_huge_pages(mount, tmp_path, build_dir,
                                           huge_pages):
    """weightfs.numpy with huge pages free: the model's memory is on 2 MiB
    pages (smaps), exact, copied once by the daemon, and goes back to the
    pool when the arrays are gone."""
    m, f, sums = warm_model(mount, tmp_path, build_dir)
    n = 24 * MiB + 6
    wl = import_weightfs(build_dir, "numpy")
    gc.collect()
    free0 = meminfo("HugePages_Free")
    before = m.stats()["fastpath_bytes_copied"]
    stats = {}
    arrays = wl.load_file(f, stats=stats)
    assert stats["path"] == "fastpath" and stats["bytes"] == n
    assert stats["bytes_copied"] == 0
    assert m.stats()["fastpath_bytes_copied"] - before == n
    assert model_page_sizes() == [HUGE // 1024]
    # 24 MiB and the tensors' alignment: 13 huge pages, in use.
    assert free0 - meminfo("HugePages_Free") == 13
    assert {k: digest(a.tobytes()) for k, a in arrays.items()} == sums
    del arrays
    gc.collect()
    assert model_page_sizes() == []
    assert meminfo("HugePages_Free") == free0


def test_hugetlb_fallback_when_too_few_free(mount, tmp_path, build_dir,
                                            huge_pages):
    """With the huge pages all reserved by someone else (or with
    WEIGHTFS_HUGETLB=0) the load takes 4 KiB shmem pages, as before:
    the same bytes, the same single copy."""
    m, f, sums = warm_model(mount, tmp_path, build_dir)
    wl = import_weightfs(build_dir, "numpy")
    hog = os.memfd_create("hog", os.MFD_HUGETLB)
    free = meminfo("HugePages_Free") - meminfo("HugePages_Rsvd")
    os.ftruncate(hog, free * HUGE)
    held = mmap.mmap(hog, free * HUGE)  # reserves every free page
    try:
        for env in [{}, {"WEIGHTFS_HUGETLB": "0"}]:
            old = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                stats = {}
                arrays = wl.load_file(f, stats=stats)
            finally:
                for k, v in old.items():
                    if v is None:
                        os.environ.pop(k)
                    else:
                        os.environ[k] = v
            assert stats["path"] == "fastpath"
            assert stats["bytes_copied"] == 0
            assert model_page_sizes() == [4]
            assert ({k: digest(a.tobytes()) for k, a in arrays.items()}
                    == sums)
            del arrays
            gc.collect()
    finally:
        held.close()
        os.close(hog)


@pytest.mark.asan
def test_hole_punched_in_hugetlb_region_harms_nothing(mount, tmp_path,
                                                      huge_pages):
    """A client punches a hole in its sealed hugetlbfs memfd and takes every
    free huge page: the daemon's copy there would fault with no page to
    give (SIGBUS). The read fails (EFAULT), the daemon lives, other reads
    work. A hugetlbfs region of part of a huge page is refused (munmap
    could not give it back)."""
    root = tmp_path / "src"
    root.mkdir()
    data = random_bytes(3 * MiB, 5)
    (root / "f.bin").write_bytes(data)
    m = mount("file://" + str(root), options={"block_size": "1M"})
    path = m.file("f.bin")
    ino = os.stat(path).st_ino
    c = Client(socket_of(path))
    c.hello()
    assert c.grant_path(path) == (ino, 0)

    fd = os.memfd_create("t", os.MFD_ALLOW_SEALING | os.MFD_HUGETLB)
    os.ftruncate(fd, 2 * HUGE)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    buf = mmap.mmap(fd, 2 * HUGE)  # reserves both pages
    buf[0] = buf[HUGE] = 1  # and faults them in
    assert c.call(MAP_FMT, MAGIC, MAP, 2, MiB, 0, 0, fds=[fd])[4] == -22
    assert c.call(MAP_FMT, MAGIC, MAP, 2, 2 * HUGE, 0, 0, fds=[fd])[4] == 0
    assert c.read(ino, 0, MiB, region_off=HUGE) == MiB
    assert buf[HUGE:HUGE + MiB] == data[:MiB]

    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long,
                               ctypes.c_long]
    punch = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
    assert libc.fallocate(fd, punch, 0, HUGE) == 0, ctypes.get_errno()
    hog = os.memfd_create("hog", os.MFD_HUGETLB)
    free = meminfo("HugePages_Free") - meminfo("HugePages_Rsvd")
    held = None
    try:
        if free:
            os.ftruncate(hog, free * HUGE)
            held = mmap.mmap(hog, free * HUGE)
        assert meminfo("HugePages_Free") == meminfo("HugePages_Rsvd")
        assert c.read(ino, 0, MiB) == -14  # EFAULT, not a dead daemon
        assert c.read(ino, MiB, MiB, region_off=HUGE) == MiB
        assert buf[HUGE:HUGE + MiB] == data[MiB:2 * MiB]
    finally:
        if held:
            held.close()
        os.close(hog)
    with open(path, "rb") as fh:
        assert fh.read() == data
    assert c.read(ino, 0, MiB) == MiB  # pages again: the hole refills
    assert buf[:MiB] == data[:MiB]
    c.close()
    buf.close()
    os.close(fd)


def hugetlb_cgroup_root():
    """The cgroup v2 hierarchy that has the hugetlb controller, or None."""
    with open("/proc/self/mounts") as f:
        for ln in f:
            dev, path, kind = ln.split()[:3]
            if kind != "cgroup2":
                continue
            try:
                with open(os.path.join(path, "cgroup.controllers")) as c:
                    if "hugetlb" in c.read().split():
                        return path
            except OSError:
                pass
    return None


@pytest.fixture
def hugetlb_cgroup(tmp_path):
    """A fresh cgroup (v2) whose hugetlb.2MB.max the test sets; removed,
    and the hugetlb controller put back as it was, after."""
    root = hugetlb_cgroup_root()
    if root is None:
        pytest.skip("no cgroup v2 hierarchy with the hugetlb controller")
    ctl = os.path.join(root, "cgroup.subtree_control")
    with open(ctl) as f:
        enabled = "hugetlb" in f.read().split()
    try:
        if not enabled:
            with open(ctl, "w") as f:
                f.write("+hugetlb")
        cg = os.path.join(root, "weightfs-test-%d" % os.getpid())
        os.mkdir(cg)
    except OSError as e:
        pytest.skip("cannot make a hugetlb cgroup here: %s" % e)
    try:
        yield cg
    finally:
        os.rmdir(cg)
        if not enabled:
            with open(ctl, "w") as f:
                f.write("-hugetlb")


# Loads @path with weightfs.numpy and prints what the test checks.
LOAD_CHILD = r"""
import hashlib, json, sys
sys.path.insert(0, sys.argv[2])
import weightfs.numpy as wl
stats = {}
arrays = wl.load_file(sys.argv[1], stats=stats)
sizes, cur = [], False
for ln in open("/proc/self/smaps"):
    if not ln.split()[0].endswith(":"):
        cur = "memfd:weightfs-model" in ln
    elif cur and ln.startswith("KernelPageSize:"):
        sizes.append(int(ln.split()[1]))
print(json.dumps({"stats": stats, "page_sizes": sizes,
                  "sums": {k: "sha256:" + hashlib.sha256(a.tobytes())
                           .hexdigest() for k, a in arrays.items()}}))
"""


def test_hugetlb_fallback_under_cgroup_limit(mount, tmp_path, build_dir,
                                            huge_pages, hugetlb_cgroup):
    """Huge pages free in the pool, but the loader and the daemon in a
    cgroup whose hugetlb limit (2 pages) is below what the model needs
    (13), as in one container: the mapping's reservation succeeds (the
    limit is charged at fault time), and the daemon's copy into the pages
    past the limit faulted (EFAULT, a failed load). Populating the pages
    up front shows they cannot be had: the load falls back to 4 KiB shmem
    pages, the same bytes, the same single copy."""
    m, f, sums = warm_model(mount, tmp_path, build_dir)
    import_weightfs(build_dir, "numpy")  # skips where it cannot load
    with open(os.path.join(hugetlb_cgroup, "hugetlb.2MB.max"), "w") as fh:
        fh.write(str(2 * HUGE))
    procs = os.path.join(hugetlb_cgroup, "cgroup.procs")

    def join_cgroup():
        with open(procs, "w") as fh:
            fh.write("0")

    py = os.path.join(os.path.dirname(__file__), "..", "..", "loader",
                      "python")
    before = m.stats()["fastpath_bytes_copied"]
    with open("/proc/%d/cgroup" % m.pid) as fh:
        home = [ln.strip()[3:] for ln in fh if ln.startswith("0::")][0]
    with open(procs, "w") as fh:
        fh.write(str(m.pid))
    try:
        r = subprocess.run(["/usr/bin/python3", "-c", LOAD_CHILD, f, py],
                           capture_output=True, text=True, timeout=120,
                           preexec_fn=join_cgroup)
    finally:
        root = hugetlb_cgroup_root()
        with open(os.path.join(root + home, "cgroup.procs"), "w") as fh:
            fh.write(str(m.pid))
    assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
    got = json.loads(r.stdout)
    assert got["sums"] == sums
    assert got["stats"]["path"] == "fastpath"
    assert got["stats"]["bytes_copied"] == 0
    assert got["page_sizes"] == [4]
    assert m.stats()["fastpath_bytes_copied"] - before == 24 * MiB + 6
