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
HELLO, MAP, READ, PREFETCH, EVICT, GRANT = 1, 2, 3, 4, 5, 6
HELLO_FMT = "=IIQIIQ"
GRANT_FMT = "=IIQQq"
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
        return self.call(HELLO_FMT, MAGIC, HELLO, 1, 2, 0, 0)

    def grant(self, fd):
        """-> (ino, result) for a descriptor sent as the proof."""
        r = self.call(GRANT_FMT, MAGIC, GRANT, 3, 0, 0,
                      fds=[fd] if fd is not None else None)
        return r[3], r[4]

    def grant_path(self, path, flags=os.O_RDONLY):
        fd = os.open(path, flags)
        try:
            return self.grant(fd)
        finally:
            os.close(fd)

    def map(self, size, seal=True):
        fd = os.memfd_create("t", os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, size)
        if seal:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
        r = self.call(MAP_FMT, MAGIC, MAP, 2, size, 0, 0, fds=[fd])
        m = mmap.mmap(fd, size)
        os.close(fd)
        return r[4], m

    def read(self, ino, off, n, region=0, region_off=0, kind=READ):
        self.tag += 1
        r = self.call(READ_FMT, MAGIC, kind, self.tag, ino, off, n,
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
                 struct.pack(HELLO_FMT, 0xdead, HELLO, 1, 2, 0, 0),
                 struct.pack(HELLO_FMT, MAGIC, HELLO, 1, 99, 0, 0),
                 struct.pack("=IIQII", MAGIC, HELLO, 1, 1, 0),  # version 1
                 struct.pack(READ_FMT, MAGIC, READ, 1, ino, 0, 10, 0, 0, 0, 0),
                 struct.pack(HELLO_FMT, MAGIC, 77, 1, 2, 0, 0)]:
        c = Client(sock)
        c.s.send(junk)
        assert dropped(c), junk
        c.close()

    c = Client(sock)
    assert c.hello()[4] == 1 << 20
    # Nothing is served before a grant; bad grants are refused.
    assert c.read(ino, 0, 10) == -13  # EACCES, no grant
    assert c.grant(None)[1] < 0
    assert c.grant_path(m.path)[1] < 0  # a directory
    assert c.grant_path(path, os.O_PATH)[1] < 0
    assert c.grant_path("/proc/self/status")[1] < 0  # not this mount
    assert c.grant_path(path) == (ino, 0)
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
            k.grant_path(path)
            k.map(4 * MiB)
            k.s.send(struct.pack(READ_FMT, MAGIC, READ, 9, ino, 0, 3 * MiB,
                                 0, 0, 0, 0))
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(child, 0)

    # Many clients at once, each whole; the mount still reads right.
    clients = [Client(sock) for _ in range(40)]
    for k in clients:
        k.hello()
        k.map(MiB)
    for k in clients:
        k.close()
    with open(path, "rb") as f:
        assert f.read() == data


NOBODY = 65534

AS_NOBODY = r"""
import array, json, os, socket, struct, sys
MAGIC = 0x53465457
args = json.loads(sys.argv[1])
out = {}

def conn(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(10)
    s.connect(path)
    return s

def call(s, fmt, *fields, fds=None):
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
            array.array("i", fds))] if fds else []
    s.sendmsg([struct.pack(fmt, *fields)], anc)
    b = s.recv(4096)
    if not b:
        raise ConnectionResetError("dropped")
    return struct.unpack(fmt, b)

def attempt(name, f):
    try:
        out[name] = f()
    except OSError as e:
        out[name] = "error:" + type(e).__name__

def hello(path):
    s = conn(path)
    try:
        call(s, "=IIQIIQ", MAGIC, 1, 1, 2, 0, 0)
    except OSError:
        # A daemon of protocol version 1 (before grants): the probe then
        # shows what that one served.
        s = conn(path)
        call(s, "=IIQII", MAGIC, 1, 1, 1, 0)
    return s

try:
    os.listdir(os.path.dirname(args["sock"]))
    out["listdir"] = "listed"
except OSError as e:
    out["listdir"] = "error:" + type(e).__name__
attempt("open", lambda: open(args["file"], "rb").read(6).decode())
attempt("hello", lambda: hello(args["sock"]) and "ok")

def reads():
    s = hello(args["sock"])
    fd = os.memfd_create("t", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, 1 << 20)
    import fcntl
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    assert call(s, "=IIQQiI", MAGIC, 2, 2, 1 << 20, 0, 0, fds=[fd])[4] == 0
    res = {}
    # Every inode, without a grant.
    res["ungranted"] = sorted({call(s, "=IIQQQQQiIq", MAGIC, 3, 9, ino, 0, 6,
                                    0, 0, 0, 0)[-1]
                               for ino in range(1, 50)})
    # A grant with a descriptor of a file elsewhere.
    g = os.open("/proc/self/status", os.O_RDONLY)
    try:
        res["foreign_grant"] = call(s, "=IIQQq", MAGIC, 6, 3, 0, 0,
                                    fds=[g])[4]
    except OSError as e:
        res["foreign_grant"] = "error:" + type(e).__name__
        return res
    for name in ("readable",):
        if args.get(name):
            f = os.open(args[name], os.O_RDONLY)
            ino, r = call(s, "=IIQQq", MAGIC, 6, 3, 0, 0, fds=[f])[3:5]
            res["grant"] = r
            res["read"] = call(s, "=IIQQQQQiIq", MAGIC, 3, 9, ino, 0, 6,
                               0, 0, 0, 0)[-1]
            res["prefetch"] = call(s, "=IIQQQQQiIq", MAGIC, 4, 9, ino, 0, 6,
                                   0, 0, 0, 0)[-1]
            res["evict"] = call(s, "=IIQQQQQiIq", MAGIC, 5, 9, ino, 0, 0,
                                0, 0, 0, 0)[-1]
    return res
attempt("reads", reads)

def many():
    held, ok = [], 0
    for _ in range(args.get("many", 0)):
        try:
            held.append(hello(args["sock"]))
            ok += 1
        except OSError:
            pass
    if args.get("hold"):
        sys.stdout.write(json.dumps({"held": ok}) + "\n")
        sys.stdout.flush()
        sys.stdin.read()
    return ok
if args.get("many"):
    attempt("many", many)
print(json.dumps(out))
"""


def as_nobody(args, hold=False):
    """Run the probe above as uid/gid nobody; -> its results (or, with
    hold, the process still holding its connections)."""
    import sys
    cmd = [sys.executable, "-c", AS_NOBODY, json.dumps(args)]
    if hold:
        return subprocess.Popen(cmd, user=NOBODY, group=NOBODY,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
    r = subprocess.run(cmd, user=NOBODY, group=NOBODY, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def places(tmp_path):
    """A directory nobody may enter (0700) and one anybody may (0755),
    outside pytest's own 0700 temporary directory."""
    import shutil
    import tempfile
    top = tempfile.mkdtemp(prefix="wfs-fastpath-")
    os.chmod(top, 0o755)
    priv, pub = os.path.join(top, "priv"), os.path.join(top, "pub")
    os.mkdir(priv, 0o700)
    os.mkdir(pub, 0o755)
    os.chmod(pub, 0o755)
    yield priv, pub
    shutil.rmtree(top, ignore_errors=True)


def test_fastpath_grants_what_open_grants(mount, tmp_path, places, load_bin):
    """Issue 9 item 3: on an allow_other mount under a 0700 directory, a
    user who cannot open a file cannot read it over the fast path either:
    no listing of the socket directory, no read of any inode without a
    descriptor opened on the mount, no grant from a descriptor elsewhere;
    where the user can open the file, the fast path serves it, but
    prefetch and evict stay the owner's."""
    priv, pub = places
    root = tmp_path / "src"
    root.mkdir()
    (root / "f.bin").write_bytes(b"secret" * 1000)
    hidden = mount("file://" + str(root), options=["allow_other"],
                   mountpoint=os.path.join(priv, "mnt"))
    f = hidden.file("f.bin")
    sock = socket_of(f)
    got = as_nobody({"sock": sock, "file": f})
    assert got["open"] == "error:PermissionError"
    assert got["listdir"] == "error:PermissionError"
    assert got["hello"] == "ok"  # allow_other: it may connect ...
    # ... but gets no byte of any inode.
    assert got["reads"]["ungranted"] == [-13]
    assert got["reads"]["foreign_grant"] < 0
    assert stat_mode(os.path.dirname(sock)) == 0o711

    # A mount nobody may read: its own descriptor is the proof.
    seen = mount("file://" + str(root), options=["allow_other"],
                 mountpoint=os.path.join(pub, "mnt"))
    g = seen.file("f.bin")
    got = as_nobody({"sock": socket_of(g), "file": g, "readable": g})
    assert got["open"] == "secret"
    assert got["reads"]["grant"] == 0
    assert got["reads"]["read"] == 6
    assert got["reads"]["prefetch"] == -1  # EPERM: the owner's
    assert got["reads"]["evict"] == -1
    # The loader, run by that user, takes the fast path (it trusts the
    # socket: its peer is root, the mount's user_id) and gets the bytes.
    sums = write_safetensors(str(root / "m.safetensors"), [MiB, 5])
    seen2 = mount("file://" + str(root), options=["allow_other"],
                  mountpoint=os.path.join(pub, "mnt2"))
    r = subprocess.run([load_bin, "--json", "--digest", "sha256",
                        seen2.file("m.safetensors")], user=NOBODY,
                       group=NOBODY, capture_output=True, text=True,
                       timeout=LOAD_TIMEOUT)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["path"] == "fastpath"
    assert {t["name"]: t["digest"] for t in got["tensors"]} == sums
    # The owner may.
    c = Client(socket_of(g))
    c.hello()
    ino, r = c.grant_path(g)
    assert r == 0
    assert c.read(ino, 0, 6, kind=PREFETCH) == 6
    assert c.read(ino, 0, 0, kind=EVICT) == 0
    c.close()


def stat_mode(p):
    return os.stat(p).st_mode & 0o7777


def test_fastpath_other_uid_dropped_without_allow_other(mount, tmp_path,
                                                        places):
    priv, pub = places
    root = tmp_path / "src"
    root.mkdir()
    (root / "f.bin").write_bytes(b"secret" * 1000)
    m = mount("file://" + str(root), mountpoint=os.path.join(pub, "mnt"))
    sock = socket_of(m.file("f.bin"))
    assert stat_mode(sock) == 0o600
    # Even if it could reach the socket: the daemon drops it at accept.
    os.chmod(sock, 0o666)
    got = as_nobody({"sock": sock, "file": m.file("f.bin")})
    assert got["hello"].startswith("error:"), got
    assert got["reads"].startswith("error:"), got


def test_fastpath_connections_capped_per_uid(mount, tmp_path, places,
                                             load_bin):
    """A user holding as many connections as it can does not starve the
    owner: it gets at most 32, and the owner's loader still takes the
    fast path."""
    priv, pub = places
    root = tmp_path / "src"
    root.mkdir()
    sums = write_safetensors(str(root / "m.safetensors"), [MiB, 2 * MiB])
    m = mount("file://" + str(root), options=["allow_other"],
              mountpoint=os.path.join(priv, "mnt"))
    f = m.file("m.safetensors")
    p = as_nobody({"sock": socket_of(f), "file": f, "many": 300,
                   "hold": True}, hold=True)
    try:
        held = json.loads(p.stdout.readline())["held"]
        assert held == 32
        got = load_json(load_bin, f)
        assert got["path"] == "fastpath"
        assert {t["name"]: t["digest"] for t in got["tensors"]} == sums
        c = Client(socket_of(f))
        c.hello()
        ino, r = c.grant_path(f)
        assert r == 0 and c.read(ino, 0, 8, kind=PREFETCH) == 8
        c.close()
    finally:
        p.communicate(timeout=60)


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


def warm_model(mount, tmp_path, build_dir):
    """A 24 MiB model on a file:// mount, in the daemon's cache."""
    root = tmp_path / "src"
    root.mkdir()
    sums = write_safetensors(str(root / "m.safetensors"),
                             [3 * MiB + 5, 17 * MiB, 1, 4 * MiB])
    m = mount("file://" + str(root), options={"block_size": "1M"})
    f = m.file("m.safetensors")
    ctl = os.path.join(build_dir, "tools", "weightfs-ctl")
    r = subprocess.run([ctl, "prefetch", f], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return m, f, sums


def test_warm_fastpath_load_copies_each_byte_once(mount, tmp_path, load_bin,
                                                  build_dir):
    """Issue 14: with the model in the daemon's cache, a host load over the
    fast path costs one CPU copy per byte, the daemon's (from its cache
    straight into the loader's memfd); the loader copies nothing. The
    counters: weightfs-load --json and weightfs-ctl stats."""
    m, f, sums = warm_model(mount, tmp_path, build_dir)
    before = m.stats()["fastpath_bytes_copied"]
    got = load_json(load_bin, f)
    assert got["path"] == "fastpath"
    assert {t["name"]: t["digest"] for t in got["tensors"]} == sums
    n = got["bytes"]
    assert n == 24 * MiB + 6
    assert got["loader_bytes_copied"] == 0
    assert got["daemon_bytes_copied"] == n
    assert m.stats()["fastpath_bytes_copied"] - before == n
    # The plain path copies nothing over the socket.
    plain = load_json(load_bin, f, env={"WEIGHTFS_FASTPATH": "0"})
    assert plain["path"] == "direct" and plain["daemon_bytes_copied"] == 0


def import_weightfs(build_dir, kind):
    """weightfs.<kind> over this build's libweightfs (skips if absent)."""
    import importlib
    import sys
    lib = os.path.join(build_dir, "loader", "libweightfs.so")
    if not os.path.exists(lib):
        pytest.skip("no %s (build first)" % lib)
    pytest.importorskip("numpy")
    if kind == "torch":
        pytest.importorskip("torch")
    os.environ["WEIGHTFS_LIB"] = lib
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                    "loader", "python"))
    try:
        return importlib.import_module("weightfs." + kind)
    except ImportError as e:
        pytest.skip("cannot load %s here: %s" % (lib, e))
    finally:
        sys.path.pop(0)


def shared_mappings():
    """This process's mappings of the library's host memfds."""
    with open("/proc/self/maps") as f:
        return [ln for ln in f if "memfd:weightfs-model" in ln]


def open_files():
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink("/proc/self/fd/" + fd))
        except OSError:
            pass
    return out


def digest(raw):
    return "sha256:" + hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_python_host_load_copies_nothing_in_process(mount, tmp_path,
                                                    build_dir, kind):
    """Issue 14: weightfs.numpy / weightfs.torch (device="cpu") on a mount
    return views of memory the daemon wrote into itself: the loader copies
    nothing, the daemon one copy per byte. The memory lives as long as the
    last array viewing it (the model is long gone), then is unmapped."""
    import gc
    wl = import_weightfs(build_dir, kind)
    m, f, sums = warm_model(mount, tmp_path, build_dir)
    gc.collect()
    assert shared_mappings() == []
    before = m.stats()["fastpath_bytes_copied"]
    stats = {}
    got = wl.load_file(f, stats=stats)
    n = 24 * MiB + 6
    assert stats["path"] == "fastpath" and stats["bytes"] == n
    assert stats["bytes_copied"] == 0
    assert m.stats()["fastpath_bytes_copied"] - before == n

    def raw(a):
        return a.numpy().tobytes() if kind == "torch" else a.tobytes()
    assert {k: digest(raw(a)) for k, a in got.items()} == sums
    assert len(shared_mappings()) == 1
    # Like safetensors' load_file: the arrays hold no file open (which
    # would keep the mount busy).
    assert [p for p in open_files() if p.startswith(os.path.dirname(f))] == []
    # One view of one tensor outlives the dict, the model, a gc.
    keep = got["t1"][1:]
    del got
    gc.collect()
    junk = [bytearray(MiB) for _ in range(32)]  # reuse freed memory, if any
    del junk
    gc.collect()
    assert len(shared_mappings()) == 1
    whole = hashlib.sha256()
    path = str(tmp_path / "src" / "m.safetensors")  # warm_model's source
    with open(path, "rb") as fh:
        hlen = struct.unpack("<Q", fh.read(8))[0]
        fh.seek(8 + hlen + 3 * MiB + 5 + 1)
        whole.update(fh.read(17 * MiB - 1))
    assert hashlib.sha256(raw(keep)).hexdigest() == whole.hexdigest()
    del keep
    gc.collect()
    assert shared_mappings() == []


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_python_fixtures_exact_through_fastpath(mount, fixtures_dir,
                                                build_dir, kind):
    """weightfs.numpy / weightfs.torch over the fast path give the bytes
    the official safetensors wrote (EXPECTED.json), dtype and shape."""
    import warnings
    wl = import_weightfs(build_dir, kind)
    src = os.path.join(fixtures_dir, "safetensors")
    expected = json.load(open(os.path.join(src, "EXPECTED.json")))["files"]
    m = mount("file://" + src)
    for model, files in [("dtypes.safetensors", ["dtypes.safetensors"]),
                         ("tiny-llama", ["tiny-llama/model.safetensors"]),
                         ("tiny-llama-sharded",
                          [f for f in expected
                           if f.startswith("tiny-llama-sharded/")])]:
        stats = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's raw-bits stand-ins
            got = wl.load_file(m.file(model), stats=stats)
        assert stats["path"] == "fastpath" and stats["bytes_copied"] == 0
        want = {}
        for f in files:
            for name, t in expected[f].items():
                if name != "__metadata__":
                    want[name] = t
        assert sorted(got) == sorted(want)
        for name, t in want.items():
            a = got[name]
            assert list(a.shape) == t["shape"], name
            if kind == "torch":
                b = a.reshape(-1).view(torch_uint8()).numpy().tobytes()
            else:
                b = a.tobytes()
            assert hashlib.sha256(b).hexdigest() == t["sha256"], name


def torch_uint8():
    import torch
    return torch.uint8
