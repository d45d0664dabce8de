"""An independent implementation of the sealed format, written from
docs/sealed-format.md (Python's cryptography and the zstd CLI), for the
tests: read_sealed() reads and checks an object, signatures included;
forge_frame() is a key holder changing a frame with a valid GCM tag;
ed25519_keys() writes a publisher's key pair as PEM files."""

import hashlib
import os
import struct
import subprocess

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey, Ed25519PublicKey)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    have_crypto = True
except ImportError:  # Debian python3-cryptography
    have_crypto = False

FOOTER = 72
SIGNED = 4
SIG_LABEL = b"weightfs sealed signature v1\0"


def ungroup(b):
    """Inverse of weightfs's byte grouping of 2-byte elements."""
    n = len(b) // 2
    out = bytearray(len(b))
    out[1:2 * n:2] = b[:n]
    out[0:2 * n:2] = b[n:2 * n]
    if len(b) % 2:
        out[-1] = b[-1]
    return bytes(out)


def parse(data):
    """The footer's fields, the tail (T bytes before the footer) and the
    index's entries; raises ValueError for a malformed object."""
    if len(data) < FOOTER or data[-FOOTER:-FOOTER + 8] != b"WFSSEAL1":
        raise ValueError("not sealed")
    f = data[-FOOTER:]
    version, flags, reserved, n, size = struct.unpack_from("<BBHIQ", f, 8)
    if version != 1 or flags & ~7 or reserved or (flags & 3) == 2:
        raise ValueError("bad footer")
    t = 40 * n + 96 if flags & SIGNED else 8 * n
    if t + FOOTER > len(data):
        raise ValueError("sizes")
    tail = data[-FOOTER - t:-FOOTER]
    entries = [struct.unpack_from("<II", tail, 8 * i) for i in range(n)]
    if sum(i + 16 for i, _ in entries) != len(data) - t - FOOTER or \
            sum(p for _, p in entries) != size:
        raise ValueError("sizes")
    return {"footer": f, "flags": flags, "n": n, "tail": tail,
            "entries": entries, "key_id": f[24:40], "object_id": f[40:56],
            "tag": f[56:72]}


def object_gcm(p, key):
    okey = HKDF(algorithm=hashes.SHA256(), length=32, salt=p["object_id"],
                info=b"weightfs sealed v1 object key").derive(key)
    return AESGCM(okey)


def frame_aad(p, i, inner, plain):
    return b"WFSF" + p["object_id"] + struct.pack("<III", i, inner, plain)


def nonce(i):
    return struct.pack("<I", i) + b"\0" * 8


def verify_signature(p, trusted):
    """The signature checks of the document's Signatures section: raises
    ValueError('not signed' / 'untrusted' / 'bad signature')."""
    if not p["flags"] & SIGNED:
        raise ValueError("not signed")
    n, tail = p["n"], p["tail"]
    index, digests = tail[:8 * n], tail[8 * n:40 * n]
    pub, sig = tail[40 * n:40 * n + 32], tail[40 * n + 32:]
    if pub not in trusted:
        raise ValueError("untrusted")
    msg = SIG_LABEL + hashlib.sha256(p["footer"][:56] + index +
                                     digests).digest()
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
    except InvalidSignature:
        raise ValueError("bad signature")


def read_sealed(data, key, trusted=None):
    """The plain file, or raises ValueError (or InvalidTag). @trusted: raw
    Ed25519 public keys the reader trusts; None: signatures unchecked."""
    p = parse(data)
    n, f, flags = p["n"], p["footer"], p["flags"]
    if trusted is not None:
        verify_signature(p, trusted)
    if hashlib.sha256(b"weightfs sealed key id\0" + key).digest()[:16] \
            != p["key_id"]:
        raise ValueError("other key")
    gcm = object_gcm(p, key)
    gcm.decrypt(b"\xff" * 12, p["tag"], f[:56] + p["tail"])  # InvalidTag
    out, off = [], 0
    for i, (inner, plain) in enumerate(p["entries"]):
        ct = data[off:off + inner + 16]
        off += inner + 16
        if trusted is not None and hashlib.sha256(ct).digest() != \
                p["tail"][8 * n + 32 * i:8 * n + 32 * i + 32]:
            raise ValueError("frame digest")
        pt = gcm.decrypt(nonce(i), ct, frame_aad(p, i, inner, plain))
        if flags & 1:
            pt = subprocess.run(["zstd", "-dc"], input=pt,
                                capture_output=True, check=True).stdout
            if flags & 2:
                pt = ungroup(pt)
        if len(pt) != plain:
            raise ValueError("frame size")
        out.append(pt)
    return b"".join(out)


def forge_frame(data, key, i, fix_digest=False):
    """What a key holder can do to a stored (--store) object: frame @i's
    plaintext changed (every byte inverted) and sealed again, its GCM tag
    valid. With @fix_digest also its digest (a signed object) and the tail
    tag made to match: only the signature then tells."""
    p = parse(data)
    gcm = object_gcm(p, key)
    off = sum(inner + 16 for inner, _ in p["entries"][:i])
    inner, plain = p["entries"][i]
    aad = frame_aad(p, i, inner, plain)
    pt = gcm.decrypt(nonce(i), bytes(data[off:off + inner + 16]), aad)
    ct = gcm.encrypt(nonce(i), bytes(b ^ 0xff for b in pt), aad)
    out = bytearray(data)
    out[off:off + inner + 16] = ct
    if fix_digest:
        n, t = p["n"], len(p["tail"])
        tail = bytearray(p["tail"])
        tail[8 * n + 32 * i:8 * n + 32 * i + 32] = hashlib.sha256(ct).digest()
        out[-FOOTER - t:-FOOTER] = tail
        tag = gcm.encrypt(b"\xff" * 12, b"", p["footer"][:56] + bytes(tail))
        out[-16:] = tag
    return bytes(out)


def ed25519_keys(directory, name="publisher"):
    """A new key pair: (private PEM path, mode 600; public PEM path; the
    raw public key)."""
    k = Ed25519PrivateKey.generate()
    priv = os.path.join(str(directory), name + ".pem")
    pub = os.path.join(str(directory), name + ".pub.pem")
    with open(priv, "wb") as f:
        f.write(k.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))
    os.chmod(priv, 0o600)
    with open(pub, "wb") as f:
        f.write(k.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo))
    raw = k.public_key().public_bytes(serialization.Encoding.Raw,
                                      serialization.PublicFormat.Raw)
    return priv, pub, raw
