"""Compressed models through the mount (-o zstd=auto): objects NAME.zst that
weightfs-pack wrote (seekable zstd) show as NAME with the uncompressed size
and read back bit for bit, over file://, real nginx and s3rver, through the
FUSE path and the loader's fast path; corrupt frames are EIO with a log line,
never wrong bytes; NAME and NAME.zst side by side; zstd=off.

Environment: WEIGHTFS_BUILD (default <repo>/build), WEIGHTFS_FIXTURES.
"""

import errno
import json
import os
import shutil
import subprocess

import pytest

import wfs_testlib as lib
from s3_fixtures import (  # noqa: F401 (s3rver: a fixture)
    S3RVER_KEY, aws_env, s3rver)

PACK = os.path.join(lib.BUILD, "tools", "weightfs-pack")
MiB = lib.MiB
OPTS = {"block_size": "1M"}

pytestmark = [pytest.mark.asan, pytest.mark.skipif(
    not os.access(PACK, os.X_OK),
    reason="weightfs-pack not built: %s missing" % PACK)]

# Half the bits of each byte random: compresses about 2:1, like weights.
LOW_NIBBLE = bytes(b & 0x0F for b in range(256))


def compressible(size, seed):
    return lib.random_bytes(size, seed).translate(LOW_NIBBLE)


def pack(src, out, *args):
    r = subprocess.run([PACK, "-q", *map(str, args), str(src), "-o",
                        str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def trees(tmp_path_factory, fixtures_dir):
    """orig/: the safetensors fixtures and big.bin (22 MiB + a bit, frames
    of 1 MiB: blocks cut frames at odd places with block_size 1M only at
    the end); packed/: the same, every file as NAME.zst."""
    base = tmp_path_factory.mktemp("zstd")
    orig, packed = base / "orig", base / "packed"
    shutil.copytree(os.path.join(fixtures_dir, "safetensors"), str(orig))
    with open(str(orig / "big.bin"), "wb") as f:
        f.write(compressible(22 * MiB + 12345, 5))
    pack(orig, packed)
    # A second object with frames that do not line up with blocks.
    with open(str(base / "odd.bin"), "wb") as f:
        f.write(compressible(3 * MiB + 777, 6))
    pack(base / "odd.bin", packed, "--frame-size", "300K")
    shutil.copy(str(base / "odd.bin"), str(orig / "odd.bin"))
    return {"base": base, "orig": str(orig), "packed": str(packed),
            "files": lib.files_under(str(orig))}


def check_stats(m, files):
    s = m.stats()
    total = sum(len(v) for v in files.values())
    assert 0 < s["bytes_fetched"] < total * 0.8, s
    assert s["bytes_decompressed"] >= total, s
    assert s["frames_decoded"] >= 22 + 11, s
    assert s["errors"] == 0, s


def test_file_source(trees, mount):
    m = mount("file://" + trees["packed"], OPTS)
    st = os.stat(m.file("big.bin"))
    assert st.st_size == 22 * MiB + 12345
    lib.check_tree(m, trees["files"])
    check_stats(m, trees["files"])
    # Reads at odd offsets, across frame and block boundaries.
    data = trees["files"]["odd.bin"]
    for off, n in ((0, 1), (300 * 1024 - 3, 10), (MiB - 5, 300 * 1024),
                   (len(data) - 100, 1000)):
        err, got = lib.read_errno(m.file("odd.bin"), n, off)
        assert err is None and got == data[off:off + n], (off, n)


def test_http_source(trees, mount, nginx):
    srv = nginx(trees["packed"])
    m = mount(srv.url, OPTS)
    lib.check_tree(m, trees["files"])
    check_stats(m, trees["files"])


def test_s3_source(trees, mount, s3rver, tmp_path):
    s3rver.make_bucket("packed")
    objs = {}
    for rel, data in lib.files_under(trees["packed"]).items():
        objs["m/" + rel] = data
    s3rver.upload("packed", objs)
    m = mount("s3://packed/m", {"endpoint": s3rver.endpoint,
                                "block_size": "1M"},
              env=aws_env(tmp_path, AWS_ACCESS_KEY_ID=S3RVER_KEY,
                          AWS_SECRET_ACCESS_KEY=S3RVER_KEY))
    lib.check_tree(m, trees["files"])
    check_stats(m, trees["files"])


def test_fast_path_same_tensors(trees, mount, nginx):
    """weightfs-load through the mount (its fast path) of the packed model
    gives the tensors of the unpacked one, bit for bit."""
    load = lib.WEIGHTFS_LOAD
    if not os.access(load, os.X_OK):
        pytest.skip("weightfs-load not built")
    srv = nginx(trees["packed"])
    m = mount(srv.url, OPTS)

    def tensors(path):
        r = subprocess.run([load, "--json", "--digest", "sha256", path],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return {t["name"]: (t.get("dtype"), t.get("shape"), t["digest"])
                for t in json.loads(r.stdout)["tensors"]}

    for rel in ("tiny-llama/model.safetensors", "dtypes.safetensors"):
        want = tensors(os.path.join(trees["orig"], rel))
        assert want
        assert tensors(m.file(rel)) == want, rel
    assert m.stats()["fastpath_bytes_copied"] > 0


def flip_middle_byte(path):
    """Corrupt the object at @path: one bit of its middle byte."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 2)
        b = f.read(1)
        f.seek(size // 2)
        f.write(bytes([b[0] ^ 0x40]))


def mib_reads_right_or_eio(path, data):
    """Read @path a MiB at a time: every read is @data's bytes or fails
    with EIO, never wrong bytes. @return how many failed."""
    bad = 0
    for i in range(0, len(data), MiB):
        err, got = lib.read_errno(path, MiB, i)
        if err is None:
            assert got == data[i:i + MiB], i
        else:
            assert err == errno.EIO
            bad += 1
    return bad


def test_corrupt_frame_is_eio(trees, mount, nginx, tmp_path):
    src = tmp_path / "bad"
    src.mkdir()
    shutil.copy(os.path.join(trees["packed"], "big.bin.zst"),
                str(src / "big.bin.zst"))
    flip_middle_byte(str(src / "big.bin.zst"))
    srv = nginx(str(src))
    m = mount(srv.url, OPTS)
    data = trees["files"]["big.bin"]
    assert os.path.getsize(m.file("big.bin")) == len(data)
    err, _ = lib.read_errno(m.file("big.bin"))
    assert err == errno.EIO
    # Every block reads as the original or fails: never wrong bytes.
    assert 1 <= mib_reads_right_or_eio(m.file("big.bin"), data) <= 2
    assert lib.wait_until(lambda: "is corrupt" in m.log(), 5), m.log()
    line = [ln for ln in m.log().splitlines() if "is corrupt" in ln][0]
    assert "big.bin.zst" in line and "frame " in line, line
    assert m.stats()["errors"] >= 1


def test_side_by_side_and_plain_zst(trees, mount, tmp_path):
    """NAME next to NAME.zst: both as they are. A plain (not seekable) .zst
    and one with a broken seek table: as they are."""
    src = tmp_path / "src"
    src.mkdir()
    orig = trees["files"]["odd.bin"]
    packed = os.path.join(trees["packed"], "odd.bin.zst")
    shutil.copy(packed, str(src / "both.bin.zst"))
    with open(str(src / "both.bin"), "wb") as f:
        f.write(b"the real both.bin")
    shutil.copy(packed, str(src / "only.bin.zst"))
    with open(packed, "rb") as f:
        zdata = f.read()
    # The footer's frame count made inconsistent: a broken table.
    broken = bytearray(zdata)
    broken[-9] ^= 0x01
    with open(str(src / "broken.bin.zst"), "wb") as f:
        f.write(broken)
    with open(str(src / "tiny.zst"), "wb") as f:
        f.write(b"x" * 16)
    plain = None
    if shutil.which("zstd"):
        subprocess.run(["zstd", "-q", "-o", str(src / "plain.bin.zst"),
                        str(trees["base"] / "odd.bin")], check=True)
        with open(str(src / "plain.bin.zst"), "rb") as f:
            plain = f.read()
    m = mount("file://" + str(src), OPTS)
    names = sorted(os.listdir(m.path))
    want = ["both.bin", "both.bin.zst", "broken.bin.zst", "only.bin",
            "tiny.zst"] + (["plain.bin.zst"] if plain else [])
    assert names == sorted(want)
    with open(m.file("both.bin"), "rb") as f:
        assert f.read() == b"the real both.bin"
    with open(m.file("both.bin.zst"), "rb") as f:
        assert f.read() == zdata
    with open(m.file("only.bin"), "rb") as f:
        assert f.read() == orig
    with open(m.file("broken.bin.zst"), "rb") as f:
        assert f.read() == bytes(broken)
    if plain:
        with open(m.file("plain.bin.zst"), "rb") as f:
            assert f.read() == plain
    assert "broken.bin.zst: a broken zstd seek table" in m.log()


def test_zstd_off(trees, mount):
    m = mount("file://" + trees["packed"], dict(OPTS, zstd="off"))
    packed = lib.files_under(trees["packed"])
    got = {}
    for d, _, names in os.walk(m.path):
        for n in names:
            p = os.path.join(d, n)
            got[os.path.relpath(p, m.path)] = lib.sha256_file(p)
    assert got == {k: lib.sha256_bytes(v) for k, v in packed.items()}
    assert m.stats()["frames_decoded"] == 0


def test_bad_zstd_option(weightfs_run, tmp_path):
    r = weightfs_run("file://" + str(tmp_path), str(tmp_path), "-o",
                     "zstd=maybe")
    assert r.returncode == 2
    assert "zstd" in r.stderr


def test_relist_sees_a_new_version(trees, mount, tmp_path):
    """list_ttl: a .zst replaced by another version shows the new content
    (the table is read again), never a mix."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(os.path.join(trees["packed"], "odd.bin.zst"),
                str(src / "w.bin.zst"))
    m = mount("file://" + str(src), dict(OPTS, list_ttl=1))
    with open(m.file("w.bin"), "rb") as f:
        assert f.read() == trees["files"]["odd.bin"]
    new = compressible(2 * MiB + 3, 99)
    with open(str(tmp_path / "new.bin"), "wb") as f:
        f.write(new)
    pack(tmp_path / "new.bin", tmp_path / "newpack")
    os.replace(str(tmp_path / "newpack" / "new.bin.zst"),
               str(src / "w.bin.zst"))
    assert lib.wait_until(
        lambda: os.path.getsize(m.file("w.bin")) == len(new), 10)
    with open(m.file("w.bin"), "rb") as f:
        assert f.read() == new


def test_relist_reuses_unchanged_tables(trees, mount, tmp_path):
    """A relisting does not read the seek table of an object again when
    its validator did not change: one request per object, at mount."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.bin", "b.bin"):
        shutil.copy(os.path.join(trees["packed"], "odd.bin.zst"),
                    str(src / (name + ".zst")))
    m = mount("file://" + str(src), dict(OPTS, list_ttl=1))
    assert sorted(os.listdir(m.path)) == ["a.bin", "b.bin"]
    assert m.stats()["requests"] == 2
    # Relistings happen: a new file shows up, then another.
    for name in ("c.txt", "d.txt"):
        with open(str(src / name), "w") as f:
            f.write("new")
        assert lib.wait_until(lambda: os.path.exists(m.file(name)), 10)
    assert m.stats()["requests"] == 2
    with open(m.file("a.bin"), "rb") as f:
        assert f.read() == trees["files"]["odd.bin"]


def test_single_file_source(trees, mount, nginx):
    """SOURCE the URL of one NAME.zst: the mount shows NAME."""
    srv = nginx(trees["packed"])
    m = mount(srv.url + "odd.bin.zst", OPTS)
    assert os.listdir(m.path) == ["odd.bin"]
    with open(m.file("odd.bin"), "rb") as f:
        assert f.read() == trees["files"]["odd.bin"]


@pytest.fixture(scope="module")
def grouped(trees):
    """The same trees packed with --group (the byte-grouped variant): every
    file, and odd.bin (odd size: a trailing odd byte) in 300K frames."""
    out = trees["base"] / "grouped"
    pack(trees["orig"], out, "--group")
    pack(trees["base"] / "odd.bin", out, "--group", "--frame-size", "300K")
    return str(out)


def tensors(path):
    r = subprocess.run([lib.WEIGHTFS_LOAD, "--json", "--digest", "sha256",
                        path], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return {t["name"]: (t.get("dtype"), t.get("shape"), t["digest"])
            for t in json.loads(r.stdout)["tensors"]}


def test_grouped_reads_bit_for_bit(trees, grouped, mount, nginx):
    """A --group packed model reads through the mount as the originals,
    over file:// and nginx, at odd offsets too; the fast path loads the
    same tensors as the unpacked model."""
    with open(os.path.join(grouped, "big.bin.zst"), "rb") as f:
        assert f.read(8) == b"WZG1\x02\x00\x00\x00"
    m = mount("file://" + grouped, OPTS)
    lib.check_tree(m, trees["files"])
    check_stats(m, trees["files"])
    data = trees["files"]["odd.bin"]
    for off, n in ((0, 1), (1, 2), (300 * 1024 - 3, 10),
                   (MiB - 5, 300 * 1024), (len(data) - 1, 1),
                   (len(data) - 100, 1000)):
        err, got = lib.read_errno(m.file("odd.bin"), n, off)
        assert err is None and got == data[off:off + n], (off, n)
    srv = nginx(grouped)
    m2 = mount(srv.url, OPTS)
    lib.check_tree(m2, trees["files"])
    if not os.access(lib.WEIGHTFS_LOAD, os.X_OK):
        pytest.skip("weightfs-load not built")
    for rel in ("tiny-llama/model.safetensors", "dtypes.safetensors"):
        want = tensors(os.path.join(trees["orig"], rel))
        assert want
        assert tensors(m2.file(rel)) == want, rel
    assert m2.stats()["fastpath_bytes_copied"] > 0


def test_grouped_corrupt_frame_is_eio(trees, grouped, mount, tmp_path):
    """A corrupt frame of a grouped object: EIO for its blocks, the others
    right, never wrong (or still grouped) bytes."""
    src = tmp_path / "bad"
    src.mkdir()
    z = str(src / "big.bin.zst")
    shutil.copy(os.path.join(grouped, "big.bin.zst"), z)
    flip_middle_byte(z)
    m = mount("file://" + str(src), OPTS)
    data = trees["files"]["big.bin"]
    assert 1 <= mib_reads_right_or_eio(m.file("big.bin"), data) <= 2
    assert lib.wait_until(lambda: "is corrupt" in m.log(), 5), m.log()


def seek_frames(path):
    """[(compressed offset, compressed size, decompressed size)] of every
    frame of the seekable object at @path, from its seek table."""
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[-9:-5], "little")
    esz = 12 if data[-5] & 0x80 else 8
    t = len(data) - 9 - n * esz
    out, coff = [], 0
    for i in range(n):
        e = data[t + i * esz:t + i * esz + 8]
        c, d = int.from_bytes(e[:4], "little"), int.from_bytes(e[4:], "little")
        out.append((coff, c, d))
        coff += c
    return out


@pytest.mark.parametrize("form", ["plain", "grouped"])
def test_blocks_of_many_frames(trees, grouped, mount, tmp_path, form):
    """block_size 4M over 1 MiB frames: a block's compressed bytes are
    fetched into the end of the block itself and decoded there; a file of
    random bytes (frames that grow) goes through a buffer of its own. Both
    read bit for bit. A corrupt frame in the middle of a block fails that
    block only (EIO, never wrong bytes), and the log names that frame."""
    src = tmp_path / "src"
    src.mkdir()
    packed = trees["packed"] if form == "plain" else grouped
    opts = ["--group"] if form == "grouped" else []
    shutil.copy(os.path.join(packed, "big.bin.zst"), str(src / "big.bin.zst"))
    rnd = lib.random_bytes(5 * MiB + 3, 8)
    with open(str(tmp_path / "rnd.bin"), "wb") as f:
        f.write(rnd)
    pack(tmp_path / "rnd.bin", src, *opts)
    m = mount("file://" + str(src), {"block_size": "4M"})
    data = trees["files"]["big.bin"]
    assert lib.sha256_file(m.file("big.bin")) == lib.sha256_bytes(data)
    assert lib.sha256_file(m.file("rnd.bin")) == lib.sha256_bytes(rnd)
    for off, n in ((4 * MiB - 7, 20), (5 * MiB + 1, 3 * MiB)):
        err, got = lib.read_errno(m.file("big.bin"), n, off)
        assert err is None and got == data[off:off + n], (off, n)

    bad = tmp_path / "bad"
    bad.mkdir()
    z = str(bad / "big.bin.zst")
    shutil.copy(str(src / "big.bin.zst"), z)
    frames = seek_frames(z)
    # the data frame holding bytes 7..8 MiB, block 1's last: decoding the
    # block in place has overwritten the input of the frames before it
    idx = [i for i, (_, _, d) in enumerate(frames) if d][7]
    coff, csize, _ = frames[idx]
    with open(z, "r+b") as f:
        f.seek(coff + csize // 2)
        b = f.read(1)
        f.seek(coff + csize // 2)
        f.write(bytes([b[0] ^ 0x40]))
    m2 = mount("file://" + str(bad), {"block_size": "4M"})
    for i in range(0, len(data), 4 * MiB):
        err, got = lib.read_errno(m2.file("big.bin"), MiB, i)
        if i == 4 * MiB:
            assert err == errno.EIO, i
        else:
            assert err is None and got == data[i:i + MiB], i
    assert lib.wait_until(lambda: "is corrupt" in m2.log(), 5), m2.log()
    want = "frame %d of big.bin.zst (compressed bytes %d-%d)" % (
        idx, coff, coff + csize)
    assert want in m2.log(), m2.log()
