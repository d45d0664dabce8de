"""weightfs-pack --encrypt end to end: sealed objects (docs/sealed-format.md)
packed from the safetensors fixtures and a generated file, stored, zstd and
grouped; read back by weightfs-pack --unpack/--test and by an independent
reader written from the format document (sealed_ref.py: Python's
cryptography and the zstd CLI); key files checked; damaged objects and wrong
keys refused with a clear message and no output. Signed objects (--sign,
--trust): the same round trips, and each attack refused, above all a frame
a key holder sealed again with a valid GCM tag.

Environment: WEIGHTFS_BUILD (default <repo>/build), WEIGHTFS_FIXTURES
(default <repo>/tests/fixtures).
"""

import os
import shutil
import struct
import subprocess

import pytest

import wfs_testlib as lib
from sealed_ref import (FOOTER, ed25519_keys, forge_frame, have_crypto,
                        read_sealed)

PACK = os.path.join(lib.BUILD, "tools", "weightfs-pack")

pytestmark = pytest.mark.skipif(
    not os.access(PACK, os.X_OK),
    reason="weightfs-pack not built: %s missing" % PACK)

needs_crypto = pytest.mark.skipif(
    not have_crypto, reason="python3-cryptography not installed")
needs_zstd = pytest.mark.skipif(shutil.which("zstd") is None,
                                reason="zstd CLI not installed")


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


# ---- publisher signatures (--sign, --trust) ----


@needs_crypto
@needs_zstd
@pytest.mark.parametrize("mode", sorted(MODES))
def test_signed_roundtrip_and_independent_reader(weights, tmp_path, mode):
    key = key_file(tmp_path / "key")
    priv, pub, raw = ed25519_keys(tmp_path)
    out = tmp_path / "out"
    pack("-q", "-f", "64K", "--encrypt", tmp_path / "key", "--sign", priv,
         *MODES[mode], "-o", out, weights)
    names = sorted(os.listdir(out))
    assert names == ["empty.bin.sealed", "odd.bin.sealed", "w.bin.sealed"]
    for n in names:
        sealed = (out / n).read_bytes()
        plain = (weights / n[:-len(".sealed")]).read_bytes()
        assert sealed[-FOOTER + 9] & 4  # the signed flag
        assert read_sealed(sealed, key, trusted=[raw]) == plain, n
        assert read_sealed(sealed, key) == plain, n  # trusting no one
        with pytest.raises(ValueError, match="untrusted"):
            read_sealed(sealed, key, trusted=[os.urandom(32)])
    pack("-q", "--test", "--key", tmp_path / "key", "--trust", pub, out)
    pack("-q", "--test", "--key", tmp_path / "key", out)  # trusting no one
    pack("-q", "--unpack", "--key", tmp_path / "key", "--trust", pub, "-o",
         tmp_path / "u", out)
    for n in names:
        p = n[:-len(".sealed")]
        assert (tmp_path / "u" / p).read_bytes() == (weights / p).read_bytes()


def signed_object(weights, tmp_path):
    """w.bin sealed --store in 64 KiB frames and signed: (path, key, the
    public key's PEM file, the raw public key)."""
    key = key_file(tmp_path / "key")
    priv, pub, raw = ed25519_keys(tmp_path)
    pack("-q", "-f", "64K", "--store", "--encrypt", tmp_path / "key",
         "--sign", priv, "-o", tmp_path / "o", weights / "w.bin")
    return tmp_path / "o" / "w.bin.sealed", key, pub, raw


ATTACKS = {
    # case: (what pack --test --trust says, what the reference reader says)
    "unsigned": ("not signed", "not signed"),
    "other-signer": ("signed by another key", "untrusted"),
    "signature-byte": ("signature does not hold", "bad signature"),
    "digest-byte": ("signature does not hold", "bad signature"),
    "frame-byte": ("authentication failed", "frame digest"),
    # a key holder: the frame sealed again, its GCM tag valid
    "forged-frame": ("authentication failed", "frame digest"),
    # ... and its digest and the tail tag made to match
    "forged-frame-and-digest": ("signature does not hold", "bad signature"),
}


@needs_crypto
@pytest.mark.parametrize("case", sorted(ATTACKS))
def test_signed_attacks_refused(weights, tmp_path, case):
    p, key, pub, raw = signed_object(weights, tmp_path)
    data = p.read_bytes()
    n = struct.unpack_from("<I", data, len(data) - FOOTER + 12)[0]
    sigblock = len(data) - FOOTER - 96
    if case == "unsigned":
        pack("-q", "-f", "64K", "--store", "--encrypt", tmp_path / "key",
             "-o", tmp_path / "plain", weights / "w.bin")
        data = (tmp_path / "plain" / "w.bin.sealed").read_bytes()
    elif case == "other-signer":
        priv2, _, _ = ed25519_keys(tmp_path, "other")
        pack("-q", "-f", "64K", "--store", "--encrypt", tmp_path / "key",
             "--sign", priv2, "-o", tmp_path / "o2", weights / "w.bin")
        data = (tmp_path / "o2" / "w.bin.sealed").read_bytes()
    elif case == "signature-byte":
        data = bytearray(data)
        data[sigblock + 32 + 10] ^= 1
    elif case == "digest-byte":
        data = bytearray(data)
        data[sigblock - 32 * n + 32 * 3 + 7] ^= 1
    elif case == "frame-byte":
        data = bytearray(data)
        data[100000] ^= 1
    else:
        forged = forge_frame(data, key, 2, fix_digest=case.endswith("digest"))
        # the attack is real: GCM alone takes the forged frame
        got = read_sealed(forged, key)
        assert got != (weights / "w.bin").read_bytes()
        assert len(got) == len(weights.joinpath("w.bin").read_bytes())
        data = forged
    p.write_bytes(bytes(data))
    want, ref = ATTACKS[case]
    with pytest.raises(ValueError, match=ref):
        read_sealed(bytes(data), key, trusted=[raw])
    r = pack("--test", "--key", tmp_path / "key", "--trust", pub, p,
             check=False)
    assert r.returncode == 1 and want in r.stderr, r.stderr
    r = pack("--unpack", "--key", tmp_path / "key", "--trust", pub, "-o",
             tmp_path / "u", p, check=False)
    assert r.returncode == 1 and want in r.stderr, r.stderr
    u = tmp_path / "u"
    assert not u.exists() or os.listdir(u) == []
    if case.startswith("forged"):
        # without --trust the forged frame passes GCM: why signatures bind
        # every frame's bytes, not only the footer and index
        pack("-q", "--test", "--key", tmp_path / "key", p)


def test_signing_key_checks(weights, tmp_path):
    key_file(tmp_path / "key")
    if have_crypto:
        priv, pub, _ = ed25519_keys(tmp_path)
    else:
        pytest.skip("python3-cryptography not installed")
    os.chmod(priv, 0o640)
    r = pack("--encrypt", tmp_path / "key", "--sign", priv, "-o",
             tmp_path / "o", weights / "odd.bin", check=False)
    assert r.returncode == 2 and "chmod 600" in r.stderr, r.stderr
    os.chmod(priv, 0o600)
    shutil.copy(pub, str(tmp_path / "pub-as-priv"))
    os.chmod(tmp_path / "pub-as-priv", 0o600)
    r = pack("--encrypt", tmp_path / "key", "--sign",
             tmp_path / "pub-as-priv", "-o", tmp_path / "o",
             weights / "odd.bin", check=False)
    assert r.returncode == 2 and "not an Ed25519 private key" in r.stderr
    r = pack("--test", "--key", tmp_path / "key", "--trust", priv,
             weights / "odd.bin", check=False)
    assert r.returncode == 2 and "not an Ed25519 public key" in r.stderr
    for args in (["--sign", priv, "-o", tmp_path / "o"],
                 ["--trust", pub, "--encrypt", tmp_path / "key", "-o",
                  tmp_path / "o"]):
        r = pack(*args, weights / "odd.bin", check=False)
        assert r.returncode == 2 and "--sign" in r.stderr, args
    assert not (tmp_path / "o").exists()


@needs_crypto
@pytest.mark.skipif(shutil.which("openssl") is None,
                    reason="openssl CLI not installed")
def test_openssl_genpkey_keys(weights, tmp_path):
    """The key files the README tells publishers to make."""
    key = key_file(tmp_path / "key")
    priv, pub = tmp_path / "p.pem", tmp_path / "p.pub.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out",
                    priv], check=True)
    os.chmod(priv, 0o600)
    subprocess.run(["openssl", "pkey", "-in", priv, "-pubout", "-out", pub],
                   check=True)
    pack("-q", "--encrypt", tmp_path / "key", "--sign", priv, "-o",
         tmp_path / "o", weights / "odd.bin")
    pack("-q", "--test", "--key", tmp_path / "key", "--trust", pub,
         tmp_path / "o")
    from cryptography.hazmat.primitives import serialization
    raw = serialization.load_pem_public_key(pub.read_bytes()).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert read_sealed((tmp_path / "o" / "odd.bin.sealed").read_bytes(), key,
                       trusted=[raw]) == (weights / "odd.bin").read_bytes()
