"""weightfs-pack end to end: pack the safetensors fixtures and a generated
bigger file into seekable-zstd objects, restore them with --unpack and with
the real `zstd -d`, check the seek table with an independent parser here, and
check that corrupt objects fail loudly and never leave output under the final
name.

Environment: WEIGHTFS_BUILD (default <repo>/build), WEIGHTFS_FIXTURES
(default <repo>/tests/fixtures).
"""

import os
import pty
import shutil
import signal
import struct
import subprocess
import time

import pytest

import wfs_testlib as lib

PACK = os.path.join(lib.BUILD, "tools", "weightfs-pack")
MiB = lib.MiB

pytestmark = pytest.mark.skipif(
    not os.access(PACK, os.X_OK),
    reason="weightfs-pack not built: %s missing (meson compile -C build, "
    "or set WEIGHTFS_BUILD)" % PACK)
needs_zstd = pytest.mark.skipif(shutil.which("zstd") is None,
                                reason="zstd CLI not installed (Debian zstd)")

ZSTD_MAGIC = 0xFD2FB528
SKIPPABLE_MAGIC = 0x184D2A5E
SEEKABLE_MAGIC = 0x8F92EAB1
GROUPED_FLAG = 0x40
GROUP_HEADER = b"WZG1\x02\x00\x00\x00"


def pack(*args, check=True):
    r = subprocess.run([PACK, *map(str, args)], capture_output=True,
                       text=True, timeout=300)
    if check:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def files_under(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            if os.path.isfile(p):  # not a dangling symlink
                out[os.path.relpath(p, root)] = lib.sha256_file(p)
    return out


def seek_table(path):
    """Parse the seek table with this file's own reading of the spec:
    returns (frames [(csize, dsize, checksum|None)], descriptor)."""
    with open(path, "rb") as f:
        data = f.read()
    nframes, desc, magic = struct.unpack("<IBI", data[-9:])
    assert magic == SEEKABLE_MAGIC
    esz = 12 if desc & 0x80 else 8
    tsize = 8 + nframes * esz + 9
    t = data[-tsize:]
    smagic, fsize = struct.unpack("<II", t[:8])
    assert smagic == SKIPPABLE_MAGIC and fsize == tsize - 8
    frames, off = [], 0
    for i in range(nframes):
        e = t[8 + i * esz:8 + (i + 1) * esz]
        c, d = struct.unpack("<II", e[:8])
        ck = struct.unpack("<I", e[8:])[0] if esz == 12 else None
        # each entry starts a real zstd frame, but the grouped variant's
        # first: its 8-byte header (listed as 0 bytes of data)
        if i == 0 and desc & GROUPED_FLAG:
            assert data[:8] == GROUP_HEADER and (c, d) == (8, 0)
        else:
            assert struct.unpack("<I", data[off:off + 4])[0] == ZSTD_MAGIC
        frames.append((c, d, ck))
        off += c
    assert off == len(data) - tsize
    return frames, desc


@pytest.fixture
def st_fixtures(fixtures_dir):
    root = os.path.join(fixtures_dir, "safetensors")
    if not os.path.isdir(root):
        pytest.skip("no safetensors fixtures at %s" % root)
    return root


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    """40 MiB + 123 bytes: incompressible, zero and text-like stretches, so
    frames compress differently and the last one is short."""
    d = tmp_path_factory.mktemp("big")
    p = d / "big.bin"
    with open(p, "wb") as f:
        f.write(lib.random_bytes(16 * MiB, 7))
        f.write(b"\0" * (8 * MiB))
        f.write((b"weightfs layer %d\n" * 1).join(
            b"%d" % i for i in range(2_000_000))[:16 * MiB + 123])
    return p


def test_pack_unpack_fixture_tree(st_fixtures, tmp_path):
    out, back = tmp_path / "packed", tmp_path / "back"
    r = pack(st_fixtures, "-o", out)
    orig = files_under(st_fixtures)
    packed = files_under(out)
    assert sorted(packed) == sorted(k + ".zst" for k in orig)
    assert "total:" in r.stdout
    pack("--unpack", out, "-o", back)
    assert files_under(back) == orig
    pack("--test", *sorted(str(out / k) for k in packed))
    # nothing but the outputs: no temporaries left behind
    assert not [k for k in packed if os.path.basename(k).startswith(".")]


@needs_zstd
def test_zstd_cli_restores_fixtures(st_fixtures, tmp_path):
    out = tmp_path / "packed"
    pack(st_fixtures, "-o", out)
    for rel, digest in files_under(st_fixtures).items():
        z = out / (rel + ".zst")
        r = subprocess.run(["zstd", "-d", "-q", "-c", str(z)],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, (rel, r.stderr)
        assert lib.sha256_bytes(r.stdout) == digest, rel


@needs_zstd
def test_big_file_roundtrip(big_file, tmp_path):
    out, back = tmp_path / "packed", tmp_path / "back"
    size = os.path.getsize(big_file)
    pack("-f", "256K", "-l", "5", "-T", "2", big_file, "-o", out)
    z = out / "big.bin.zst"
    frames, desc = seek_table(z)
    assert desc & 0x80, "checksums expected in the seek table"
    assert len(frames) == -(-size // (256 * 1024))
    assert all(d == 256 * 1024 for _, d, _ in frames[:-1])
    assert frames[-1][1] == size % (256 * 1024)
    assert sum(d for _, d, _ in frames) == size
    # zeros compress to almost nothing, random bytes do not
    assert os.path.getsize(z) < size * 0.8
    digest = lib.sha256_file(big_file)
    r = subprocess.run(["zstd", "-d", "-q", "-f", str(z), "-o",
                        str(tmp_path / "via-zstd")], timeout=120)
    assert r.returncode == 0
    assert lib.sha256_file(tmp_path / "via-zstd") == digest
    pack("-u", "-T", "3", z, "-o", back)
    assert lib.sha256_file(back / "big.bin") == digest


def test_empty_and_tiny_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "empty").write_bytes(b"")
    (src / "one").write_bytes(b"x")
    (src / "sub").mkdir()
    (src / "sub" / "frame").write_bytes(b"ab" * 2048)  # exactly 4 KiB
    # a snapshot of symlinks into a blob store: the files they point to
    (tmp_path / "blob").write_bytes(b"blob " * 3000)
    (src / "link").symlink_to(tmp_path / "blob")
    (src / "dangling").symlink_to(tmp_path / "nowhere")
    pack("-f", "4K", src, "-o", tmp_path / "out")
    assert seek_table(tmp_path / "out" / "empty.zst")[0] == []
    assert len(seek_table(tmp_path / "out" / "sub" / "frame.zst")[0]) == 1
    pack("-u", tmp_path / "out", "-o", tmp_path / "back")
    want = files_under(src)
    assert "link" in want and "dangling" not in want
    assert files_under(tmp_path / "back") == want
    assert not os.path.islink(tmp_path / "back" / "link")
    if shutil.which("zstd"):
        r = subprocess.run(["zstd", "-d", "-q", "-c",
                            str(tmp_path / "out" / "empty.zst")],
                           capture_output=True)
        assert r.returncode == 0 and r.stdout == b""


def corrupt(path, off_from_frame0):
    with open(path, "r+b") as f:
        f.seek(off_from_frame0)
        b = f.read(1)
        f.seek(off_from_frame0)
        f.write(bytes([b[0] ^ 0x40]))


@pytest.mark.parametrize("where", ["frame", "table"])
def test_corrupt_object_fails_without_output(big_file, tmp_path, where):
    out = tmp_path / "packed"
    pack("-f", "1M", big_file, "-o", out)
    z = out / "big.bin.zst"
    frames, _ = seek_table(z)
    if where == "frame":
        # the middle of frame 3 (random data: literals)
        off = sum(c for c, _, _ in frames[:3]) + frames[3][0] // 2
    else:
        # frame 5's compressed size in the seek table
        off = os.path.getsize(z) - 9 - 12 * (len(frames) - 5)
    corrupt(z, off)
    r = pack("-t", z, check=False)
    assert r.returncode == 1
    assert "corrupt" in r.stderr, r.stderr
    back = tmp_path / "back"
    back.mkdir()
    (back / "big.bin").write_bytes(b"old contents")
    r = pack("-u", z, "-o", back, check=False)
    assert r.returncode == 1 and "corrupt" in r.stderr
    # the old file is untouched and no temporary is left
    assert sorted(os.listdir(back)) == ["big.bin"]
    assert (back / "big.bin").read_bytes() == b"old contents"


@needs_zstd
def test_plain_zstd_file_is_not_seekable(tmp_path):
    p = tmp_path / "plain"
    p.write_bytes(b"hello " * 1000)
    subprocess.run(["zstd", "-q", str(p)], check=True)
    r = pack("-t", str(p) + ".zst", check=False)
    assert r.returncode == 1
    assert "not a seekable zstd file" in r.stderr


def grouped(data):
    """High bytes, then low bytes (2-byte elements); an odd byte last."""
    n = len(data) // 2
    return data[1:2 * n:2] + data[0:2 * n:2] + data[2 * n:]


@needs_zstd
def test_group_roundtrip(st_fixtures, big_file, tmp_path):
    """--group: --unpack and --test restore the fixtures and the big file
    (odd size) bit for bit; each frame, decoded by the real zstd on its
    own, is the frame's bytes grouped, so the format is what it says."""
    out, back = tmp_path / "packed", tmp_path / "back"
    pack("--group", "-f", "256K", "-T", "2", st_fixtures, big_file,
         "-o", out)
    want = files_under(st_fixtures)
    want["big.bin"] = lib.sha256_file(big_file)
    assert sorted(files_under(out)) == sorted(k + ".zst" for k in want)
    pack("--test", *sorted(str(out / (k + ".zst")) for k in want))
    pack("--unpack", out, "-o", back)
    assert files_under(back) == want
    z = out / "big.bin.zst"
    frames, desc = seek_table(z)
    assert desc & GROUPED_FLAG and desc & 0x80
    size = os.path.getsize(big_file)
    assert len(frames) == 1 + -(-size // (256 * 1024))
    assert sum(d for _, d, _ in frames) == size
    raw = z.read_bytes()
    orig = big_file.read_bytes()
    off, doff = 8, 0
    for i, (c, d, _) in enumerate(frames[1:]):
        if i in (0, 70, 100, len(frames) - 2):  # random, 0s, text, odd
            r = subprocess.run(["zstd", "-d", "-q", "-c"],
                               input=raw[off:off + c], capture_output=True,
                               timeout=60)
            assert r.returncode == 0
            assert r.stdout == grouped(orig[doff:doff + d]), i
        off += c
        doff += d
    assert d % 2 == 1, "the last frame should have an odd byte"


@needs_zstd
def test_zstd_cli_refuses_grouped(big_file, tmp_path):
    """Plain zstd -d refuses a --group file rather than writing grouped
    bytes; the default mode stays readable by it."""
    out = tmp_path / "packed"
    pack("--group", "-f", "1M", big_file, "-o", out)
    z = out / "big.bin.zst"
    r = subprocess.run(["zstd", "-d", "-q", "-c", str(z)],
                       capture_output=True, timeout=60)
    assert r.returncode != 0 and r.stdout == b""
    r = subprocess.run(["zstd", "-d", "-q", str(z), "-o",
                        str(tmp_path / "via-zstd")], capture_output=True,
                       timeout=60)
    assert r.returncode != 0
    assert not (tmp_path / "via-zstd").exists() or \
        (tmp_path / "via-zstd").stat().st_size == 0


@pytest.mark.parametrize("where", ["magic", "width", "frame"])
def test_corrupt_grouped_fails_without_output(big_file, tmp_path, where):
    out, back = tmp_path / "packed", tmp_path / "back"
    pack("--group", "-f", "1M", big_file, "-o", out)
    z = out / "big.bin.zst"
    frames, _ = seek_table(z)
    off = {"magic": 1, "width": 4,
           "frame": sum(c for c, _, _ in frames[:3]) + frames[3][0] // 2}
    corrupt(z, off[where])
    r = pack("-t", z, check=False)
    assert r.returncode == 1 and "corrupt" in r.stderr, r.stderr
    r = pack("-u", z, "-o", back, check=False)
    assert r.returncode == 1
    assert not back.exists() or os.listdir(back) == []


def test_usage(tmp_path):
    r = pack("--help")
    for word in ("--unpack", "--test", "--frame-size", "--level",
                 "--threads", "--group", "zstd -d"):
        assert word in r.stdout
    assert pack("--group", "-u", tmp_path, "-o", tmp_path,
                check=False).returncode == 2
    assert pack(check=False).returncode == 2
    assert pack(tmp_path, check=False).returncode == 2  # no -o
    assert pack("-l", "99", tmp_path, "-o", tmp_path,
                check=False).returncode == 2
    assert pack("-f", "1K", tmp_path, "-o", tmp_path,
                check=False).returncode == 2
    assert pack("-t", tmp_path, "-o", tmp_path, check=False).returncode == 2
    r = pack(tmp_path / "missing", "-o", tmp_path / "o", check=False)
    assert r.returncode == 1 and "missing" in r.stderr
    (tmp_path / "x").write_bytes(b"x")
    r = pack("-u", tmp_path / "x", "-o", tmp_path / "o", check=False)
    assert r.returncode == 1 and "not a .zst or .sealed file" in r.stderr


def test_progress_bar_on_a_terminal(big_file, tmp_path):
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(PACK, [PACK, "-T", "1", "-f", "256K", str(big_file),
                        "-o", str(tmp_path / "o")])
    out = b""
    while True:
        try:
            b = os.read(fd, 4096)
        except OSError:
            break
        if not b:
            break
        out += b
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b"[###" in out and b"%" in out and b"MiB/s" in out, out[-500:]
    # without a terminal: no bar
    r = pack("-f", "256K", big_file, "-o", tmp_path / "o2")
    assert "[#" not in r.stderr and "%" not in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_leaves_nothing(big_file, tmp_path, sig):
    """Killed mid-file: neither NAME.zst nor a temporary is left."""
    out = tmp_path / "o"
    p = subprocess.Popen([PACK, "-q", "-T", "1", "-l", "19", "-f", "256K",
                          str(big_file), "-o", str(out)])
    # wait until its temporary exists, then interrupt
    assert lib.wait_until(lambda: out.exists() and os.listdir(out), 20)
    time.sleep(0.2)
    p.send_signal(sig)
    assert p.wait(timeout=20) == -sig, "it finished before the signal"
    assert os.listdir(out) == []


def test_default_levels(tmp_path):
    """The default level is 3, and 1 with --group (grouped 16-bit weights
    are smaller and decode faster at 1): the same bytes as the explicit
    level, not those of the other one."""
    src = tmp_path / "w.bin"
    # 16-bit little-endian values with a skewed high byte, like weights
    vals = lib.random_bytes(4 * MiB, 3)
    src.write_bytes(bytes(b if i % 2 == 0 else 0x3c + (b & 3)
                          for i, b in enumerate(vals)))

    def packed(name, *args):
        out = tmp_path / name
        pack("-q", *args, src, "-o", out)
        return (out / "w.bin.zst").read_bytes()

    assert packed("d", "-f", "256K") == packed("l3", "-f", "256K", "-l", "3")
    assert packed("d", "-f", "256K") != packed("l1", "-f", "256K", "-l", "1")
    g = packed("g", "--group", "-f", "256K")
    assert g == packed("g1", "--group", "-f", "256K", "-l", "1")
    assert g != packed("g3", "--group", "-f", "256K", "-l", "3")
