"""Sealed models through the mount (-o key_file): objects NAME.sealed that
weightfs-pack --encrypt wrote show as NAME with the plain size and read back
bit for bit over nginx and s3rver, through FUSE and the loader's fast path;
a damaged frame is EIO with one log line and decrypt_failed counted, never
bytes; a missing or wrong key lists the file and fails its reads with
EACCES; a key file others may read refuses the mount; the disk tier holds
their blocks sealed again, no plaintext, serves them after a remount,
refetches a damaged or moved one and serves none without the key; core
dumps leave the cache out. With -o trust= only what the publisher signed
is read: other objects are listed, refused at listing with one line, and
read EACCES; a frame a key holder sealed again reads EIO.

Environment: WEIGHTFS_BUILD (default <repo>/build), WEIGHTFS_FIXTURES.
"""

import ctypes
import errno
import glob
import json
import os
import shutil
import struct
import subprocess

import pytest

import wfs_testlib as lib
from s3_fixtures import (  # noqa: F401 (s3rver: a fixture)
    S3RVER_KEY, aws_env, s3rver)
from sealed_ref import ed25519_keys, forge_frame, have_crypto

PACK = os.path.join(lib.BUILD, "tools", "weightfs-pack")
MiB = lib.MiB
OPTS = {"block_size": "1M"}
MARKER = b"SEALED-PLAINTEXT-MARKER-7f3a"

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    have_crypto = True
except ImportError:  # Debian python3-cryptography
    have_crypto = False
needs_crypto = pytest.mark.skipif(
    not have_crypto, reason="python3-cryptography not installed")

pytestmark = [pytest.mark.asan, pytest.mark.skipif(
    not os.access(PACK, os.X_OK),
    reason="weightfs-pack not built: %s missing" % PACK)]


def pack(src, out, key, *args):
    r = subprocess.run([PACK, "-q", "--encrypt", str(key), *map(str, args),
                        str(src), "-o", str(out)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r


def write_key(path, mode=0o600):
    with open(path, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(path, mode)
    return str(path)


@pytest.fixture(scope="module")
def trees(tmp_path_factory, fixtures_dir):
    """orig/: the safetensors fixtures and big.bin (9 MiB + a bit, with a
    marker every MiB); sealed/: the same sealed with key (zstd frames of
    1 MiB, odd.bin stored in frames of 300 KiB)."""
    base = tmp_path_factory.mktemp("sealed")
    orig, sealed = base / "orig", base / "sealed"
    shutil.copytree(os.path.join(fixtures_dir, "safetensors"), str(orig))
    big = bytearray(lib.random_bytes(9 * MiB + 4321, 11))
    for off in range(0, len(big) - 64, MiB):
        big[off + 100:off + 100 + len(MARKER)] = MARKER
    (orig / "big.bin").write_bytes(bytes(big))
    key = write_key(base / "key")
    pack(orig, sealed, key)
    (base / "odd.bin").write_bytes(lib.random_bytes(2 * MiB + 777, 12))
    pack(base / "odd.bin", sealed, key, "--store", "--frame-size", "300K")
    shutil.copy(str(base / "odd.bin"), str(orig / "odd.bin"))
    return {"base": base, "orig": str(orig), "sealed": str(sealed),
            "key": key, "files": lib.files_under(str(orig))}


def test_http_source(trees, mount, nginx):
    srv = nginx(trees["sealed"])
    m = mount(srv.url, dict(OPTS, key_file=trees["key"]))
    lib.check_tree(m, trees["files"])
    data = trees["files"]["odd.bin"]
    for off, n in ((0, 1), (300 * 1024 - 3, 10), (MiB - 5, 300 * 1024),
                   (len(data) - 100, 1000)):
        err, got = lib.read_errno(m.file("odd.bin"), n, off)
        assert err is None and got == data[off:off + n], (off, n)
    s = m.stats()
    assert s["decrypt_failed"] == 0 and s["errors"] == 0, s
    assert s["bytes_decompressed"] >= sum(map(len, trees["files"].values()))


def test_s3_source(trees, mount, s3rver, tmp_path):
    s3rver.make_bucket("sealed")
    s3rver.upload("sealed", {"m/" + rel: data for rel, data in
                             lib.files_under(trees["sealed"]).items()})
    m = mount("s3://sealed/m", {"endpoint": s3rver.endpoint,
                                "block_size": "1M",
                                "key_file": trees["key"]},
              env=aws_env(tmp_path, AWS_ACCESS_KEY_ID=S3RVER_KEY,
                          AWS_SECRET_ACCESS_KEY=S3RVER_KEY))
    lib.check_tree(m, trees["files"])


def test_fast_path_same_tensors(trees, mount, nginx):
    load = lib.WEIGHTFS_LOAD
    if not os.access(load, os.X_OK):
        pytest.skip("weightfs-load not built")
    srv = nginx(trees["sealed"])
    m = mount(srv.url, dict(OPTS, key_file=trees["key"]))

    def tensors(path):
        r = subprocess.run([load, "--json", "--digest", "sha256", path],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return {t["name"]: (t.get("dtype"), t.get("shape"), t["digest"])
                for t in json.loads(r.stdout)["tensors"]}

    for rel in ("tiny-llama/model.safetensors", "dtypes.safetensors"):
        want = tensors(os.path.join(trees["orig"], rel))
        assert want and tensors(m.file(rel)) == want, rel
    assert m.stats()["fastpath_bytes_copied"] > 0


# big.bin: zstd frames, opened from scratch on decode workers; odd.bin:
# stored frames of 300 KiB across 1 MiB blocks, decrypted as they arrive.
@pytest.mark.parametrize("name,at", [("big.bin", 4 * MiB + 1000),
                                     ("odd.bin", 3 * 300 * 1024 + 5)])
def test_damaged_frame_is_eio(trees, mount, nginx, tmp_path, name, at):
    src = tmp_path / "bad"
    src.mkdir()
    obj = src / (name + ".sealed")
    shutil.copy(os.path.join(trees["sealed"], name + ".sealed"), str(obj))
    with open(obj, "r+b") as f:  # a bit of one frame's ciphertext
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 1]))
    srv = nginx(str(src))
    m = mount(srv.url, dict(OPTS, key_file=trees["key"]))
    data = trees["files"][name]
    bad = 0
    for i in range(0, len(data), MiB):
        err, got = lib.read_errno(m.file(name), MiB, i)
        if err is None:
            assert got == data[i:i + MiB], i
        else:
            assert err == errno.EIO
            bad += 1
    assert 1 <= bad <= 2
    assert m.stats()["decrypt_failed"] >= 1
    assert lib.wait_until(lambda: "fails authentication" in m.log(), 5)
    lines = [ln for ln in m.log().splitlines()
             if "fails authentication" in ln]
    assert len(lines) == 1 and name + ".sealed" in lines[0], lines


@pytest.mark.parametrize("kind", ["reset", "truncate"])
def test_broken_transfer_retried(trees, mount, fault_server, kind):
    """A stored object's frames decrypt as they arrive: a transfer cut
    after some of them starts the block again, right bytes in the end."""
    srv = fault_server(trees["sealed"])
    m = mount(srv.url, dict(OPTS, key_file=trees["key"]))
    # After the listing (its tails read): every block's GET (254 KiB or
    # more) is cut, not one that ends first.
    srv.add_fault(kind, path="/odd.bin.sealed", count=2, after=100 * 1024)
    with open(m.file("odd.bin"), "rb") as f:
        assert f.read() == trees["files"]["odd.bin"]
    s = m.stats()
    assert s["retries"] >= 1 and s["decrypt_failed"] == 0, s
    assert [e for e in srv.log if e[5] == kind], srv.log


def test_aligned_frames_read_in_runs(mount, fault_server, tmp_path, trees):
    """Frames that end where blocks end: readahead asks for several
    blocks' stored bytes in one range request, as for a plain file, not
    one request per block. Whether readahead gets ahead of the reader to
    queue blocks behind the one connection is timing: three tries."""
    src = tmp_path / "src"
    src.mkdir()
    data = lib.random_bytes(32 * MiB, 21)
    (tmp_path / "s.bin").write_bytes(data)
    pack(tmp_path / "s.bin", src, trees["key"], "--store", "--frame-size",
         "1M")
    srv = fault_server(str(src))
    spans = []
    for _ in range(3):
        m = mount(srv.url, dict(OPTS, key_file=trees["key"],
                                request_size="4M", connections=1))
        with open(m.file("s.bin"), "rb") as f:
            assert f.read() == data
        assert m.stats()["decrypt_failed"] == 0
        assert not m.finish()
        for e in srv.requests("GET", "/s.bin.sealed"):
            a, b = e[2].split("=")[1].split("-")
            spans.append(int(b) + 1 - int(a))
        if max(spans) > MiB + 16:
            break
    # a run of 4 blocks of 1 MiB and 4 frames' tags
    assert max(spans) == 4 * (MiB + 16), sorted(set(spans))


@pytest.mark.parametrize("which", ["none", "wrong"])
def test_missing_or_wrong_key_is_eacces(trees, mount, nginx, tmp_path,
                                        which):
    srv = nginx(trees["sealed"])
    opts = dict(OPTS)
    if which == "wrong":
        opts["key_file"] = write_key(tmp_path / "other")
    m = mount(srv.url, opts)
    data = trees["files"]["big.bin"]
    # Listed under its name, with its size; its bytes are not served.
    assert os.path.getsize(m.file("big.bin")) == len(data)
    assert not os.path.exists(m.file("big.bin.sealed"))
    err, _ = lib.read_errno(m.file("big.bin"), 4096)
    assert err == errno.EACCES
    err, _ = lib.read_errno(m.file("big.bin"), 4096, MiB)
    assert err == errno.EACCES
    assert lib.wait_until(lambda: "which no key_file holds" in m.log(), 5)
    lines = [ln for ln in m.log().splitlines()
             if "which no key_file holds" in ln]
    assert len(lines) == 1 and "big.bin.sealed" in lines[0], lines
    assert m.stats()["bytes_fetched"] < 2 * MiB  # tails only


def test_key_directory(trees, mount, nginx, tmp_path):
    """Two models under two keys, one mount: each finds its key by id."""
    src = tmp_path / "two"
    shutil.copytree(trees["sealed"], str(src / "a"))
    keys = tmp_path / "keys"
    keys.mkdir()
    shutil.copy(trees["key"], str(keys / "a.key"))
    k2 = write_key(keys / "b.key")
    (tmp_path / "b.bin").write_bytes(trees["files"]["odd.bin"])
    pack(tmp_path / "b.bin", src / "b", k2)
    srv = nginx(str(src))
    m = mount(srv.url, dict(OPTS, key_file=str(keys)))
    assert open(m.file("b/b.bin"), "rb").read() == trees["files"]["odd.bin"]
    assert lib.sha256_file(m.file("a/big.bin")) == \
        lib.sha256_bytes(trees["files"]["big.bin"])


@pytest.mark.parametrize("case", ["loose", "missing", "not-a-key"])
def test_bad_key_file_refuses_mount(trees, weightfs_run, tmp_path, case):
    key = tmp_path / "key"
    if case == "loose":
        write_key(key, 0o644)
    elif case == "not-a-key":
        key.write_bytes(b"hello")
        os.chmod(key, 0o600)
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = weightfs_run("-f", "-o", "key_file=%s" % key,
                     "file://" + trees["sealed"], mp, timeout=30)
    assert r.returncode == 2, r.stderr
    want = {"loose": "chmod 600", "missing": "No such file",
            "not-a-key": "not a key"}[case]
    assert want in r.stderr and "key_file" in r.stderr, r.stderr
    assert not lib.is_mounted(str(mp))


def blocks_of(files):
    return sum((len(d) + MiB - 1) // MiB for d in files.values())


def tier_files(cache):
    return sorted(glob.glob(os.path.join(str(cache), "wfs1", "*", "*.blk")))


def fill_tier(trees, mount, url, cache):
    """Read every file through a mount with the disk tier in @cache, and
    unmount (the unmount writes what is left); return the tier's files."""
    m = mount(url, dict(OPTS, key_file=trees["key"], cache_dir=str(cache)))
    lib.check_tree(m, trees["files"])
    assert not m.finish()
    return tier_files(cache)


def read_from_tier(trees, mount, url, cache):
    """A remount over @cache reads every file right: its stats after the
    reads, and the bytes fetched by them (listing's tails not counted)."""
    m = mount(url, dict(OPTS, key_file=trees["key"], cache_dir=str(cache)))
    for d, _, _ in os.walk(m.path):  # every directory listed: tails read
        pass
    before = m.stats()["bytes_fetched"]
    lib.check_tree(m, trees["files"])
    s = m.stats()
    return s, s["bytes_fetched"] - before


HDR = 4096  # a tier file's header (fs/cache/disk_store.c)


def xxh3(b):
    f = ctypes.CDLL("libxxhash.so.0").XXH3_64bits
    f.restype, f.argtypes = ctypes.c_uint64, [ctypes.c_char_p, ctypes.c_size_t]
    return f(bytes(b), len(b))


def forge(path, data=None, key=None):
    """Rewrite tier file @path with @data (else its own) and header key
    @key, with checksums that match: only the seal can tell."""
    with open(path, "rb") as f:
        hdr, old = bytearray(f.read(HDR)), f.read()
    data = old if data is None else data
    if key is not None:
        hdr[8:24] = key
    hdr[32:40] = struct.pack("<Q", xxh3(data))
    hdr[64:72] = struct.pack("<Q", xxh3(hdr[:64]))
    with open(path, "wb") as f:
        f.write(bytes(hdr) + data)


def test_disk_tier_holds_sealed_blocks_only(trees, mount, nginx, tmp_path):
    """The tier holds the sealed files' blocks (sealed again), no
    plaintext, and a remount reads them all from it."""
    srv = nginx(trees["sealed"])
    cache = tmp_path / "cache"
    files = fill_tier(trees, mount, srv.url, cache)
    n = blocks_of(trees["files"])
    assert len(files) >= 0.99 * n, (len(files), n)
    odd = trees["files"]["odd.bin"]  # stored frames: random plaintext
    for path in glob.glob(os.path.join(str(cache), "**"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                b = f.read()
            assert MARKER not in b, path
            for off in range(0, len(odd) - 64, 256 * 1024):
                assert odd[off:off + 64] not in b, (path, off)
    s, fetched = read_from_tier(trees, mount, srv.url, cache)
    assert fetched == 0, s
    assert s["disk_hits"] == n and s["disk_corrupt"] == 0, s
    assert s["decrypt_failed"] == 0 and s["errors"] == 0, s


def test_disk_tier_s3(trees, mount, s3rver, tmp_path):
    s3rver.make_bucket("sealtier")
    s3rver.upload("sealtier", {"m/" + rel: data for rel, data in
                               lib.files_under(trees["sealed"]).items()})
    env = aws_env(tmp_path, AWS_ACCESS_KEY_ID=S3RVER_KEY,
                  AWS_SECRET_ACCESS_KEY=S3RVER_KEY)
    cache = tmp_path / "cache"

    def one():
        m = mount("s3://sealtier/m", dict(OPTS, endpoint=s3rver.endpoint,
                                          key_file=trees["key"],
                                          cache_dir=str(cache)), env=env)
        lib.check_tree(m, trees["files"])
        s = m.stats()
        assert not m.finish()
        return s

    one()
    s = one()
    assert s["disk_hits"] == blocks_of(trees["files"]), s
    assert s["disk_corrupt"] == 0, s


@pytest.mark.parametrize("how", ["flipped", "forged", "moved"])
def test_disk_tier_damaged_block_is_refetched(trees, mount, nginx, tmp_path,
                                              how):
    """flipped: a byte of a block (its XXH3 catches it); forged: the same
    with checksums made to match, and moved: another block's file under
    this block's name and key (the seal catches both). Each is refetched,
    never served."""
    srv = nginx(trees["sealed"])
    cache = tmp_path / "cache"
    files = fill_tier(trees, mount, srv.url, cache)
    full = [p for p in files if os.path.getsize(p) == HDR + MiB]
    victim = full[0]
    if how == "moved":
        with open(full[1], "rb") as f:
            forge(victim, f.read()[HDR:],
                  bytes.fromhex(os.path.basename(victim)[:-4]))
    else:
        with open(victim, "rb") as f:
            b = bytearray(f.read()[HDR:])
        b[300000] ^= 0x10
        if how == "forged":
            forge(victim, b)
        else:
            with open(victim, "r+b") as f:
                f.seek(HDR + 300000)
                f.write(bytes([b[300000]]))
    s, fetched = read_from_tier(trees, mount, srv.url, cache)
    n = blocks_of(trees["files"])
    assert s["disk_corrupt"] == 1, s
    assert s["disk_hits"] == n - 1, s
    assert 0 < fetched <= 2 * MiB, s  # that block's frames
    assert s["decrypt_failed"] == 0 and s["errors"] == 0, s


@pytest.mark.parametrize("which", ["none", "wrong"])
def test_disk_tier_without_the_key_is_eacces(trees, mount, nginx, tmp_path,
                                             which):
    """A remount without the key, or with another, gets EACCES, not the
    tier's blocks, and leaves them there for a mount with the key."""
    srv = nginx(trees["sealed"])
    cache = tmp_path / "cache"
    files = fill_tier(trees, mount, srv.url, cache)
    opts = dict(OPTS, cache_dir=str(cache))
    if which == "wrong":
        opts["key_file"] = write_key(tmp_path / "other")
    m = mount(srv.url, opts)
    for off in (0, MiB, 5 * MiB):
        err, _ = lib.read_errno(m.file("big.bin"), 4096, off)
        assert err == errno.EACCES, off
    s = m.stats()
    assert s["disk_hits"] == 0 and s["disk_corrupt"] == 0, s
    assert not m.finish()
    assert tier_files(cache) == files
    s, fetched = read_from_tier(trees, mount, srv.url, cache)
    assert fetched == 0 and s["disk_hits"] == blocks_of(trees["files"]), s


def test_disk_tier_staged_sealed(trees, mount, nginx, ctl_bin, tmp_path):
    """`weightfs-ctl prefetch` stages a sealed file on the tier, sealed;
    a remount reads it from there."""
    srv = nginx(trees["sealed"])
    cache = tmp_path / "cache"
    o = dict(OPTS, key_file=trees["key"], cache_dir=str(cache),
             cache_mem="4M")
    m = mount(srv.url, o)
    r = subprocess.run([ctl_bin, "prefetch", m.file("big.bin")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    n = blocks_of({"big.bin": trees["files"]["big.bin"]})
    assert m.stats()["disk_writes"] == n
    assert not m.finish()
    for path in tier_files(cache):
        with open(path, "rb") as f:
            assert MARKER not in f.read(), path
    m = mount(srv.url, dict(o, cache_mem="64M"))
    before = m.stats()["bytes_fetched"]
    assert lib.sha256_file(m.file("big.bin")) == \
        lib.sha256_bytes(trees["files"]["big.bin"])
    s = m.stats()
    assert s["bytes_fetched"] == before, s
    assert s["disk_hits"] == n and s["disk_corrupt"] == 0, s


@needs_crypto
def test_disk_tier_blocks_as_documented(trees, mount, nginx, tmp_path):
    """Each tier block of big.bin opens, with an implementation written
    here from docs/sealed-format.md ("Disk tier blocks"), as exactly one
    block of the file, at its place."""
    srv = nginx(trees["sealed"])
    cache = tmp_path / "cache"
    files = fill_tier(trees, mount, srv.url, cache)
    with open(trees["key"], "rb") as f:
        key = f.read()
    with open(os.path.join(trees["sealed"], "big.bin.sealed"), "rb") as f:
        f.seek(-72, os.SEEK_END)
        object_id = f.read()[40:56]
    tkey = HKDF(algorithm=hashes.SHA256(), length=32, salt=object_id,
                info=b"weightfs sealed v1 tier key").derive(key)
    data = trees["files"]["big.bin"]
    found = set()
    for path in files:
        with open(path, "rb") as f:
            hdr, body = f.read(HDR), f.read()
        assert hdr[40] == 1, path  # sealed
        tag = hdr[48:64]
        for off in range(0, len(data), MiB):
            n = min(MiB, len(data) - off)
            if n != len(body):
                continue
            nonce = struct.pack("<QI", off, n)
            aad = b"WFST" + object_id + struct.pack("<QQ", off, n)
            try:
                got = AESGCM(tkey).decrypt(nonce, body + tag, aad)
            except InvalidTag:
                continue
            assert got == data[off:off + n] and off not in found
            found.add(off)
    assert found == set(range(0, len(data), MiB))


def test_core_dumps_leave_the_cache_out(trees, mount, nginx):
    srv = nginx(trees["sealed"])
    m = mount(srv.url, dict(OPTS, key_file=trees["key"],
                            cache_mem="64M"))
    lib.sha256_file(m.file("big.bin"))
    pid = lib.find_daemon_pid(m.path)
    assert pid
    # The cache's mapping (the largest) carries VmFlags dd.
    best = (0, "")
    cur = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5:
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                cur = hi - lo
            elif line.startswith("VmFlags:") and cur and cur > best[0]:
                best = (cur, line)
    assert best[0] >= 64 * MiB and " dd" in best[1], best


# ---- publisher signatures (-o trust=) ----

needs_crypto = pytest.mark.skipif(not have_crypto,
                                  reason="python3-cryptography not installed")


@pytest.fixture(scope="module")
def signed(trees, tmp_path_factory):
    """src/: good/ (every file of orig/, sealed with the trees' key and
    signed by the publisher), other/odd.bin.sealed (signed by another key),
    unsigned/odd.bin.sealed (sealed, not signed); the publishers' public
    key files; stored.sealed: odd.bin signed, --store in 300 KiB frames."""
    base = tmp_path_factory.mktemp("signed")
    priv, pub, _ = ed25519_keys(base)
    priv2, pub2, raw2 = ed25519_keys(base, "other")
    src = base / "src"
    odd = os.path.join(trees["orig"], "odd.bin")
    pack(trees["orig"], src / "good", trees["key"], "--sign", priv)
    pack(odd, src / "other", trees["key"], "--sign", priv2)
    pack(odd, src / "unsigned", trees["key"])
    pack(odd, base / "stored", trees["key"], "--sign", priv, "--store",
         "--frame-size", "300K")
    return {"src": str(src), "pub": pub, "pub2": pub2, "raw2": raw2,
            "stored": str(base / "stored" / "odd.bin.sealed"),
            "base": base}


def refused_lines(m, what):
    return [ln for ln in m.log().splitlines() if what in ln]


@needs_crypto
def test_trust_reads_signed_refuses_the_rest(trees, signed, mount, nginx):
    srv = nginx(signed["src"])
    m = mount(srv.url, dict(OPTS, key_file=trees["key"],
                            trust=signed["pub"]))
    # Refused at listing (of each directory), before any read, each in
    # one clear line.
    assert os.listdir(m.file("other")) == ["odd.bin"]
    assert os.listdir(m.file("unsigned")) == ["odd.bin"]
    other = "signed by public key %s, which trust= does not hold" % \
        signed["raw2"].hex()
    assert lib.wait_until(lambda: refused_lines(m, other), 5), m.log()
    lines = refused_lines(m, other)
    assert len(lines) == 1 and "other/odd.bin.sealed" in lines[0], lines
    lines = refused_lines(m, "not signed by a publisher")
    assert len(lines) == 1 and "unsigned/odd.bin.sealed" in lines[0], lines
    data = trees["files"]["odd.bin"]
    for d in ("other", "unsigned"):
        assert os.path.getsize(m.file(d + "/odd.bin")) == len(data)
        err, _ = lib.read_errno(m.file(d + "/odd.bin"), 4096)
        assert err == errno.EACCES, d
    # The mount serves the rest: the signed model, bit for bit.
    for rel, want in trees["files"].items():
        assert lib.sha256_file(m.file("good/" + rel)) == \
            lib.sha256_bytes(want), rel
    assert m.stats()["decrypt_failed"] == 0  # (the EACCES reads: errors)


@needs_crypto
def test_trust_directory(trees, signed, mount, nginx, tmp_path):
    keys = tmp_path / "publishers"
    keys.mkdir()
    shutil.copy(signed["pub"], str(keys / "a.pem"))
    shutil.copy(signed["pub2"], str(keys / "b.pem"))
    srv = nginx(signed["src"])
    m = mount(srv.url, dict(OPTS, key_file=trees["key"], trust=str(keys)))
    data = trees["files"]["odd.bin"]
    for d in ("good", "other"):
        assert open(m.file(d + "/odd.bin"), "rb").read() == data, d
    err, _ = lib.read_errno(m.file("unsigned/odd.bin"), 4096)
    assert err == errno.EACCES


@needs_crypto
def test_trust_catches_a_key_holders_frame(trees, signed, mount, nginx,
                                           tmp_path):
    """A key holder seals frame 2 again with other bytes and a valid GCM
    tag: a mount trusting only the key serves the forged bytes (the
    attack); with trust= the frame reads EIO, the others right. Forging
    the digest too breaks the signature: refused at listing."""
    key = open(trees["key"], "rb").read()
    data = open(signed["stored"], "rb").read()
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.bin.sealed").write_bytes(forge_frame(data, key, 2))
    (src / "g.bin.sealed").write_bytes(forge_frame(data, key, 2,
                                                   fix_digest=True))
    want = trees["files"]["odd.bin"]
    frame = 300 * 1024
    srv = nginx(str(src))
    m = mount(srv.url, dict(OPTS, key_file=trees["key"]))
    got = open(m.file("f.bin"), "rb").read()
    assert got[:2 * frame] == want[:2 * frame]
    assert got[2 * frame:3 * frame] == bytes(b ^ 0xff for b in
                                             want[2 * frame:3 * frame])
    m = mount(srv.url, dict(OPTS, key_file=trees["key"],
                            trust=signed["pub"]))
    assert sorted(os.listdir(m.path)) == ["f.bin", "g.bin"]
    for off in range(0, len(want), MiB):  # blocks of 1 MiB
        err, got = lib.read_errno(m.file("f.bin"), MiB, off)
        if off == 0:  # the block that holds frame 2 (600-900 KiB)
            assert err == errno.EIO
        else:
            assert err is None and got == want[off:off + MiB], off
    assert m.stats()["decrypt_failed"] >= 1
    assert lib.wait_until(lambda: refused_lines(m, "fails authentication"),
                          5)
    assert "f.bin.sealed" in refused_lines(m, "fails authentication")[0]
    lines = refused_lines(m, "does not hold: changed after signing")
    assert len(lines) == 1 and "g.bin.sealed" in lines[0], lines
    err, _ = lib.read_errno(m.file("g.bin"), 4096)
    assert err == errno.EACCES


@needs_crypto
def test_trust_ignores_tier_blocks_sealed_untrusted(trees, signed, mount,
                                                   nginx, tmp_path):
    """A mount without trust= that read a key holder's frame seals it on
    the disk tier; a trust= mount sharing the tier must not serve it from
    there (its blocks take a key bound to what was signed): EIO still,
    and the rest right; its own blocks it serves after a remount."""
    key = open(trees["key"], "rb").read()
    data = open(signed["stored"], "rb").read()
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.bin.sealed").write_bytes(forge_frame(data, key, 2))
    want = trees["files"]["odd.bin"]
    srv = nginx(str(src))
    cache = tmp_path / "cache"
    o = dict(OPTS, key_file=trees["key"], cache_dir=str(cache))
    m = mount(srv.url, o)
    got = open(m.file("f.bin"), "rb").read()
    assert got[:MiB] != want[:MiB]  # the forged frame, read and kept
    assert not m.finish()
    assert len(tier_files(cache)) == blocks_of({"f": want})
    m = mount(srv.url, dict(o, trust=signed["pub"]))
    err, _ = lib.read_errno(m.file("f.bin"), MiB, 0)
    assert err == errno.EIO
    for off in range(MiB, len(want), MiB):
        err, got = lib.read_errno(m.file("f.bin"), MiB, off)
        assert err is None and got == want[off:off + MiB], off
    s = m.stats()
    assert s["disk_hits"] == 0 and s["decrypt_failed"] >= 1, s
    assert not m.finish()
    m = mount(srv.url, dict(o, trust=signed["pub"]))
    err, got = lib.read_errno(m.file("f.bin"), MiB, MiB)
    assert err is None and got == want[MiB:2 * MiB]
    assert m.stats()["disk_hits"] >= 1


@pytest.mark.parametrize("case", ["not-a-key", "missing", "empty-dir"])
def test_bad_trust_refuses_mount(trees, weightfs_run, tmp_path, case):
    trust = tmp_path / "trust"
    if case == "not-a-key":
        trust.write_bytes(b"hello")
    elif case == "empty-dir":
        trust.mkdir()
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = weightfs_run("-f", "-o", "trust=%s" % trust,
                     "file://" + trees["sealed"], mp, timeout=30)
    assert r.returncode == 2, r.stderr
    want = {"not-a-key": "not an Ed25519 public key",
            "missing": "No such file", "empty-dir": "no public key"}[case]
    assert want in r.stderr and "trust" in r.stderr, r.stderr
