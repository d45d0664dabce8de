"""weightfs-pack --encrypt end to end: sealed objects (docs/sealed-format.md)
packed from the safetensors fixtures and a generated file, stored, zstd and
grouped; read back by weightfs-pack --unpack/--test and by an independent
reader written here from the format document (Python's cryptography and the
zstd CLI); key files checked; damaged objects and wrong keys refused with a
clear message and no output.

Environment: WEIGHTFS_BUILD (default <repo>/build), WEIGHTFS_FIXTURES
(default <repo>/tests/fixtures).
"""

import hashlib
import os
import shutil
import struct
import subprocess

import pytest

import wfs_testlib as lib

PACK = os.path.join(lib.BUILD, "tools", "weightfs-pack")

pytestmark = pytest.mark.skipif(
    not os.access(PACK, os.X_OK),
    reason="weightfs-pack not built: %s missing" % PACK)

try:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    have_crypto = True
except ImportError:  # Debian python3-cryptography
    have_crypto = False
needs_crypto = pytest.mark.skipif(
    not have_crypto, reason="python3-cryptography not installed")
needs_zstd = pytest.mark.skipif(shutil.which("zstd") is None,
                                reason="zstd CLI not installed")

FOOTER = 72


def pack(*args, check=True):
    r = subprocess.run([PACK, *map(str, args)], capture_output=True,
                       text=True, timeout=300)
    if check:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def key_file(path, key=None, mode=0o600, hexform=False):
    key = key if key is not None else os.urandom(32)
    with open(path, "wb") as f:
        f.write(key.hex().encode() + b"\n" if hexform else key)
    os.chmod(path, mode)
    return key


def ungroup(b):
    """Inverse of weightfs's byte grouping of 2-byte elements."""
    n = len(b) // 2
    out = bytearray(len(b))
    out[1:2 * n:2] = b[:n]
    out[0:2 * n:2] = b[n:2 * n]
    if len(b) % 2:
        out[-1] = b[-1]
    return bytes(out)


def read_sealed(data, key):
    """The format document, implemented independently of the C code:
    returns the plain file, or raises ValueError."""
    if len(data) < FOOTER or data[-FOOTER:-FOOTER + 8] != b"WFSSEAL1":
        raise ValueError("not sealed")
    f = data[-FOOTER:]
    version, flags, reserved, n, size = struct.unpack_from("<BBHIQ", f, 8)
    key_id, object_id, tag = f[24:40], f[40:56], f[56:72]
    if version != 1 or flags & ~3 or reserved or (flags == 2):
        raise ValueError("bad footer")
    index = data[-FOOTER - 8 * n:-FOOTER]
    entries = [struct.unpack_from("<II", index, 8 * i) for i in range(n)]
    if sum(i + 16 for i, _ in entries) != len(data) - 8 * n - FOOTER or \
            sum(p for _, p in entries) != size:
        raise ValueError("sizes")
    if hashlib.sha256(b"weightfs sealed key id\0" + key).digest()[:16] \
            != key_id:
        raise ValueError("other key")
    okey = HKDF(algorithm=hashes.SHA256(), length=32, salt=object_id,
                info=b"weightfs sealed v1 object key").derive(key)
    gcm = AESGCM(okey)
    gcm.decrypt(b"\xff" * 12, tag, f[:56] + index)  # raises InvalidTag
    out, off = [], 0
    for i, (inner, plain) in enumerate(entries):
        ct = data[off:off + inner + 16]
        off += inner + 16
        aad = b"WFSF" + object_id + struct.pack("<III", i, inner, plain)
        pt = gcm.decrypt(struct.pack("<I", i) + b"\0" * 8, ct, aad)
        if flags & 1:
            pt = subprocess.run(["zstd", "-dc"], input=pt,
                                capture_output=True, check=True).stdout
            if flags & 2:
                pt = ungroup(pt)
        if len(pt) != plain:
            raise ValueError("frame size")
        out.append(pt)
    return b"".join(out)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """5 MiB of BF16-like bytes (compressible, grouped better) and a
    recognisable plaintext pattern to search for."""
    d = tmp_path_factory.mktemp("src")
    import random
    rnd = random.Random(7)
    body = bytearray()
    while len(body) < 5 << 20:
        body += bytes((rnd.getrandbits(8), 0x3c + rnd.getrandbits(2)))
    body[1000:1000 + 32] = b"PLAINTEXT-MARKER-0123456789abcde"
    (d / "w.bin").write_bytes(bytes(body))
    (d / "odd.bin").write_bytes(bytes(body[:12345]))
    (d / "empty.bin").write_bytes(b"")
    return d


MODES = {"zstd": [], "grouped": ["--group"], "stored": ["--store"]}


@needs_crypto
@needs_zstd
@pytest.mark.parametrize("mode", sorted(MODES))
def test_roundtrip_and_independent_reader(weights, tmp_path, mode):
    key = key_file(tmp_path / "key", hexform=(mode == "zstd"))
    out = tmp_path / "out"
    pack("-q", "-f", "64K", "--encrypt", tmp_path / "key", *MODES[mode],
         "-o", out, weights)
    names = sorted(os.listdir(out))
    assert names == ["empty.bin.sealed", "odd.bin.sealed", "w.bin.sealed"]
    for n in names:
        sealed = (out / n).read_bytes()
        plain = (weights / n[:-len(".sealed")]).read_bytes()
        assert b"PLAINTEXT-MARKER" not in sealed
        assert read_sealed(sealed, key) == plain, n
    pack("-q", "--test", "--key", tmp_path / "key", out)
    pack("-q", "--unpack", "--key", tmp_path / "key", "-o", tmp_path / "u",
         out)
    for n in names:
        p = n[:-len(".sealed")]
        assert (tmp_path / "u" / p).read_bytes() == (weights / p).read_bytes()


@needs_crypto
@needs_zstd
def test_fixture_model_roundtrip(fixtures_dir, tmp_path):
    src = os.path.join(fixtures_dir, "safetensors", "tiny-llama-sharded")
    key = key_file(tmp_path / "key")
    pack("-q", "--encrypt", tmp_path / "key", "-o", tmp_path / "out", src)
    n = 0
    for d, _, files in os.walk(tmp_path / "out"):
        for f in files:
            rel = os.path.relpath(os.path.join(d, f), tmp_path / "out")
            with open(os.path.join(d, f), "rb") as fh:
                got = read_sealed(fh.read(), key)
            with open(os.path.join(src, rel[:-len(".sealed")]), "rb") as fh:
                assert got == fh.read(), rel
            n += 1
    assert n >= 3


def test_two_packs_differ(weights, tmp_path):
    key_file(tmp_path / "key")
    for o in ("a", "b"):
        pack("-q", "--encrypt", tmp_path / "key", "-o", tmp_path / o,
             weights / "w.bin")
    a = (tmp_path / "a" / "w.bin.sealed").read_bytes()
    b = (tmp_path / "b" / "w.bin.sealed").read_bytes()
    assert len(a) == len(b) and a != b  # a fresh object id, a fresh key


@pytest.mark.parametrize("where", ["frame", "index", "footer", "truncate",
                                   "extend"])
def test_damage_refused_without_output(weights, tmp_path, where):
    key_file(tmp_path / "key")
    pack("-q", "-f", "64K", "--encrypt", tmp_path / "key", "-o",
         tmp_path / "o", weights / "w.bin")
    p = tmp_path / "o" / "w.bin.sealed"
    data = bytearray(p.read_bytes())
    n = struct.unpack_from("<I", data, len(data) - FOOTER + 12)[0]
    if where == "frame":
        data[100000] ^= 1
    elif where == "index":
        data[len(data) - FOOTER - 8 * n + 5] ^= 1
    elif where == "footer":
        data[len(data) - FOOTER + 45] ^= 1  # the object id
    elif where == "truncate":
        del data[-100:]
    else:
        data += b"\0" * 8
    p.write_bytes(bytes(data))
    r = pack("--unpack", "--key", tmp_path / "key", "-o", tmp_path / "u", p,
             check=False)
    assert r.returncode == 1
    assert "w.bin.sealed" in r.stderr
    assert any(w in r.stderr for w in ("authentication failed", "corrupt",
                                       "not a sealed file")), r.stderr
    u = tmp_path / "u"
    assert not u.exists() or os.listdir(u) == []  # no temporary left


def test_wrong_key_and_no_key(weights, tmp_path):
    key_file(tmp_path / "key")
    key_file(tmp_path / "other")
    pack("-q", "--encrypt", tmp_path / "key", "-o", tmp_path / "o",
         weights / "odd.bin")
    s = tmp_path / "o" / "odd.bin.sealed"
    r = pack("--test", "--key", tmp_path / "other", s, check=False)
    assert r.returncode == 1 and "another key" in r.stderr, r.stderr
    r = pack("--test", s, check=False)
    assert r.returncode == 1 and "--key" in r.stderr, r.stderr


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_loose_key_file_refused(weights, tmp_path, mode):
    key_file(tmp_path / "key", mode=mode)
    r = pack("--encrypt", tmp_path / "key", "-o", tmp_path / "o",
             weights / "odd.bin", check=False)
    assert r.returncode == 2 and "chmod 600" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_bad_key_files(weights, tmp_path):
    for body in (b"short", b"z" * 64, os.urandom(33)):
        (tmp_path / "key").write_bytes(body)
        os.chmod(tmp_path / "key", 0o600)
        r = pack("--encrypt", tmp_path / "key", "-o", tmp_path / "o",
                 weights / "odd.bin", check=False)
        assert r.returncode == 2 and "not a key" in r.stderr, r.stderr
    r = pack("--encrypt", tmp_path / "missing", "-o", tmp_path / "o",
             weights / "odd.bin", check=False)
    assert r.returncode == 2 and "No such file" in r.stderr


def test_usage_errors(weights, tmp_path):
    key_file(tmp_path / "key")
    for args in (["--store", "-o", tmp_path / "o"],
                 ["--encrypt", tmp_path / "key", "--store", "--group", "-o",
                  tmp_path / "o"],
                 ["--unpack", "--encrypt", tmp_path / "key", "-o",
                  tmp_path / "o"],
                 ["--key", tmp_path / "key", "-o", tmp_path / "o"]):
        r = pack(*args, weights / "odd.bin", check=False)
        assert r.returncode == 2, args
