"""The fast path: libweightfs on a weightfs mount takes blocks from the
daemon over its Unix socket (common/wire.h) instead of FUSE reads. Exact
bytes against the fixtures, no kernel page cache, each byte fetched once,
concurrent loaders, loaders that die, clients that send garbage, and
access by another uid."""

import array
import fcntl
import hashlib
import json
import mmap
import os
import signal
import socket
import struct
import subprocess
import time

import pytest

from wfs_testlib import MiB, random_bytes

LOAD_TIMEOUT = 300

# common/wire.h
MAGIC = 0x53465457
HELLO, MAP, READ = 1, 2, 3
HELLO_FMT = "=IIQII"
MAP_FMT = "=IIQQiI"
READ_FMT = "=IIQQQQQiIq"


def load_json(load_bin, path, env=None, digest=True):
    cmd = [load_bin, "--json"] + (["--digest", "sha256"] if digest else [])
    r = subprocess.run(cmd + [path], capture_output=True, text=True,
                       timeout=LOAD_TIMEOUT,
                       env=dict(os.environ, **(env or {})))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def load_bin(build_dir):
    p = os.path.join(build_dir, "tools", "weightfs-load")
    if not os.path.exists(p):
        pytest.skip("no %s (build first)" % p)
    return p


def write_safetensors(path, sizes, seed=7):
    """A safetensors file of U8 tensors of @sizes; returns the data bytes
    per tensor name's sha256."""
    header, off = {}, 0
    for i, n in enumerate(sizes):
        header["t%d" % i] = {"dtype": "U8", "shape": [n],
                             "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    sums = {}
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for i, n in enumerate(sizes):
            done, d = 0, hashlib.sha256()
            while done < n:
                part = random_bytes(min(16 * MiB, n - done), (seed, i, done))
                f.write(part)
                d.update(part)
                done += len(part)
            sums["t%d" % i] = "sha256:" + d.hexdigest()
    return sums


class Client:
    """A raw fast-path client, for the tests that misbehave on purpose."""

    def __init__(self, sock_path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.s.settimeout(30)
        self.s.connect(sock_path)
        self.tag = 0

    def call(self, fmt, *fields, fds=None):
        msg = struct.pack(fmt, *fields)
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                array.array("i", fds))] if fds else []
        self.s.sendmsg([msg], anc)
        return struct.unpack(fmt, self.s.recv(4096))

    def hello(self):
        return self.call(HELLO_FMT, MAGIC, HELLO, 1, 1, 0)

    def map(self, size, seal=True):
        fd = os.memfd_create("t", os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, size)
        if seal:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
        r = self.call(MAP_FMT, MAGIC, MAP, 2, size, 0, 0, fds=[fd])
        m = mmap.mmap(fd, size)
        os.close(fd)
        return r[4], m

    def read(self, ino, off, n, region=0, region_off=0):
        self.tag += 1
        r = self.call(READ_FMT, MAGIC, READ, self.tag, ino, off, n,
                      region_off, region, 0, 0)
        assert r[2] == self.tag
        return r[-1]

    def close(self):
        self.s.close()


def page_cache_bytes(path):
    """Bytes of @path in the kernel's page cache (fincore)."""
    r = subprocess.run(["fincore", "--bytes", "--noheadings", "--output",
                        "RES", path], capture_output=True, text=True,
                       check=True)
    return int(r.stdout.split()[0])


def socket_of(path):
    return os.getxattr(path, "user.weightfs.socket").decode()


def test_fixtures_exact_through_fastpath(mount, fixtures_dir, load_bin):
    src = os.path.join(fixtures_dir, "safetensors")
    expected = json.load(open(os.path.join(src, "EXPECTED.json")))["files"]
    m = mount("file://" + src)
    for model, files in [("dtypes.safetensors", ["dtypes.safetensors"]),
                         ("tiny-llama", ["tiny-llama/model.safetensors"]),
                         ("tiny-llama-sharded",
                          [f for f in expected if f.startswith("tiny-llama-sharded/")])]:
        got = load_json(load_bin, m.file(model))
        assert got["path"] == "fastpath"
        want = {}
        for f in files:
            for name, t in expected[f].items():
                if name != "__metadata__":
                    want[name] = "sha256:" + t["sha256"]
        assert {t["name"]: t["digest"] for t in got["tensors"]} == want
        # The switch turns it off; the bytes stay the same.
        plain = load_json(load_bin, m.file(model),
                          env={"WEIGHTFS_FASTPATH": "0"})
        assert plain["path"] == "direct"
        assert plain["tensors"] == got["tensors"]


@pytest.mark.asan
def test_no_page_cache_and_each_byte_fetched_once(mount, nginx, tmp_path,
                                                  load_bin):
    root = tmp_path / "src"
    root.mkdir()
    size = 160 * MiB
    sums = write_safetensors(str(root / "model.safetensors"),
                             [size // 4] * 4)
    web = nginx(str(root))
    m = mount(web.url, options={"block_size": "1M", "cache_mem": "64M"})
    f = m.file("model.safetensors")
    got = load_json(load_bin, f)
    assert got["path"] == "fastpath"
    assert {t["name"]: t["digest"] for t in got["tensors"]} == sums
    # Almost nothing went through the kernel's page cache ...
    assert page_cache_bytes(f) < 0.05 * os.path.getsize(f)
    # ... and each byte came from the source once, though the cache is
    # smaller than the file.
    st = m.stats()
    assert os.path.getsize(f) <= st["bytes_fetched"] <= 1.05 * os.path.getsize(f)


def test_concurrent_loaders_share_fetches(mount, nginx, tmp_path, load_bin):
    root = tmp_path / "src"
    root.mkdir()
    sums = write_safetensors(str(root / "m.safetensors"), [20 * MiB] * 3)
    web = nginx(str(root))
    m = mount(web.url, options={"block_size": "1M"})
    procs = [subprocess.Popen([load_bin, "--json", "--digest", "sha256",
                               m.file("m.safetensors")],
                              stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    for p in procs:
        out, _ = p.communicate(timeout=LOAD_TIMEOUT)
        assert p.returncode == 0
        got = json.loads(out)
        assert got["path"] == "fastpath"
        assert {t["name"]: t["digest"] for t in got["tensors"]} == sums
    size = os.path.getsize(m.file("m.safetensors"))
    assert m.stats()["bytes_fetched"] <= 1.05 * size


@pytest.mark.asan
def test_garbage_and_dead_clients_harm_nothing(mount, tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    data = random_bytes(3 * MiB + 5, 3)
    (root / "f.bin").write_bytes(data)
    m = mount("file://" + str(root), options={"block_size": "1M"})
    path = m.file("f.bin")
    sock, ino = socket_of(path), os.stat(path).st_ino

    def dropped(c):
        try:
            return c.s.recv(4096) == b""
        except OSError:
            return True

    # Garbage, wrong magic, truncated messages, no hello first.
    for junk in [b"", b"x", b"\0" * 7, os.urandom(300),
                 struct.pack(HELLO_FMT, 0xdead, HELLO, 1, 1, 0),
                 struct.pack(HELLO_FMT, MAGIC, HELLO, 1, 99, 0),
                 struct.pack(READ_FMT, MAGIC, READ, 1, ino, 0, 10, 0, 0, 0, 0),
                 struct.pack(HELLO_FMT, MAGIC, 77, 1, 1, 0)]:
        c = Client(sock)
        c.s.send(junk)
        assert dropped(c), junk
        c.close()

    c = Client(sock)
    assert c.hello()[4] == 1 << 20
    # Bad maps: no fd, a pipe, a region larger than the memfd, too big.
    assert c.call(MAP_FMT, MAGIC, MAP, 2, 4096, 0, 0)[4] < 0
    rfd, wfd = os.pipe()
    assert c.call(MAP_FMT, MAGIC, MAP, 2, 4096, 0, 0, fds=[rfd])[4] < 0
    os.close(rfd)
    os.close(wfd)
    # A memfd that could shrink under the daemon (SIGBUS) is refused.
    assert c.map(MiB, seal=False)[0] == -1  # EPERM
    small = os.memfd_create("s", os.MFD_ALLOW_SEALING)
    os.ftruncate(small, 4096)
    fcntl.fcntl(small, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    assert c.call(MAP_FMT, MAGIC, MAP, 2, 1 << 20, 0, 0, fds=[small])[4] < 0
    assert c.call(MAP_FMT, MAGIC, MAP, 2, 1 << 62, 0, 0, fds=[small])[4] < 0
    os.close(small)
    region, buf = c.map(4 * MiB)
    assert region == 0
    # Bad reads: unknown region, past the region, unknown inode, a
    # directory, huge lengths; then a good one still works.
    assert c.read(ino, 0, 10, region=5) < 0
    assert c.read(ino, 0, 10, region_off=4 * MiB - 5) < 0
    assert c.read(ino, 0, 1 << 40) < 0
    assert c.read(10 ** 9, 0, 10) < 0
    assert c.read(1, 0, 10) < 0
    assert c.read(ino, 1 << 40, 10) == 0
    n = c.read(ino, MiB - 3, 2 * MiB)
    assert n == 2 * MiB and buf[:n] == data[MiB - 3:3 * MiB - 3]
    assert c.read(ino, len(data) - 5, 100) == 5
    c.close()

    # A loader that dies in the middle of a request.
    child = os.fork()
    if child == 0:
        try:
            k = Client(sock)
            k.hello()
            k.map(4 * MiB)
            k.s.send(struct.pack(READ_FMT, MAGIC, READ, 9, ino, 0, 3 * MiB,
                                 0, 0, 0, 0))
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(child, 0)

    # Many clients at once, each whole; the mount still reads right.
    clients = [Client(sock) for _ in range(20)]
    for k in clients:
        k.hello()
        k.map(MiB)
    for k in clients:
        k.close()
    with open(path, "rb") as f:
        assert f.read() == data


def test_other_uid_needs_allow_other(mount, tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    os.chmod(str(tmp_path), 0o755)
    (root / "f.bin").write_bytes(b"secret" * 1000)
    nobody = 65534

    def read_as(uid, sock, ino):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            res = -1
            try:
                os.close(r)
                os.setgid(nobody)
                os.setuid(uid)
                c = Client(sock)
                c.hello()
                res = c.map(MiB)[0]
                if res >= 0:
                    res = c.read(ino, 0, 6)
            except Exception:
                res = -1000
            finally:
                os.write(w, struct.pack("=q", res))
                os._exit(0)
        os.close(w)
        res = struct.unpack("=q", os.read(r, 8))[0]
        os.close(r)
        os.waitpid(pid, 0)
        return res

    m = mount("file://" + str(root))
    sock, ino = socket_of(m.file("f.bin")), os.stat(m.file("f.bin")).st_ino
    assert read_as(nobody, sock, ino) == -13  # EACCES
    assert read_as(0, sock, ino) == 6
    m2 = mount("file://" + str(root), options=["allow_other"])
    sock, ino = socket_of(m2.file("f.bin")), os.stat(m2.file("f.bin")).st_ino
    assert read_as(nobody, sock, ino) == 6


def test_ctl_prefetch_and_evict(mount, nginx, tmp_path, build_dir):
    ctl = os.path.join(build_dir, "tools", "weightfs-ctl")
    root = tmp_path / "src"
    (root / "d").mkdir(parents=True)
    data = random_bytes(5 * MiB + 7, 11)
    (root / "d" / "a.bin").write_bytes(data)
    (root / "b.bin").write_bytes(data[:MiB])
    web = nginx(str(root))
    m = mount(web.url, options={"block_size": "1M"})
    r = subprocess.run([ctl, "prefetch", m.path], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    st = m.stats()
    assert st["bytes_fetched"] == len(data) + MiB
    assert st["cache_bytes"] == len(data) + MiB
    # Warmed without the page cache; reads now hit the daemon's cache.
    assert page_cache_bytes(m.file("d/a.bin")) == 0
    with open(m.file("d/a.bin"), "rb") as f:
        assert f.read() == data
    assert m.stats()["bytes_fetched"] == len(data) + MiB
    # Evict: both caches forget the file; the next read fetches again.
    r = subprocess.run([ctl, "evict", m.file("d/a.bin")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert m.stats()["cache_bytes"] == MiB
    assert page_cache_bytes(m.file("d/a.bin")) == 0
    with open(m.file("d/a.bin"), "rb") as f:
        assert f.read() == data
    assert m.stats()["bytes_fetched"] == 2 * len(data) + MiB
    # Paths off the mount: an error naming them, exit 1.
    r = subprocess.run([ctl, "prefetch", str(root), "/nonexistent"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "not on a weightfs mount" in r.stderr
    assert "/nonexistent" in r.stderr


def test_stale_sockets_are_cleared(mount, tmp_path):
    """A socket left by a daemon that died is removed by the next one; a
    live daemon's socket is left alone."""
    root = tmp_path / "src"
    root.mkdir()
    (root / "f.bin").write_bytes(b"x")
    m1 = mount("file://" + str(root))
    live = socket_of(m1.file("f.bin"))
    stale = os.path.join(os.path.dirname(live), "00000000deadbeef.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(stale)
    s.close()  # the file stays; nothing listens
    assert os.path.exists(stale)
    m2 = mount("file://" + str(root))
    assert not os.path.exists(stale)
    assert os.path.exists(live)
    assert socket_of(m2.file("f.bin")) != live
