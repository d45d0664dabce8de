"""Loading a part of a model (wfs_model_select(), Model.select(),
weightfs-load --tensors/--shard/--shard-dim/--slice): shards of every dtype
concatenated equal the whole tensors bit for bit, only the selected bytes
are read, and a slice that splits a packed element is refused."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("WEIGHTFS_BUILD", REPO / "build"))
LOAD = BUILD / "tools" / "weightfs-load"
LIB = BUILD / "loader" / "libweightfs.so"

BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
        "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
        "I32": 32, "U32": 32, "F32": 32, "F64": 64, "I64": 64, "U64": 64,
        "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
SHAPE = [8, 16]


def write_model(path):
    """One [8, 16] tensor of each dtype plus a 1-D one, random bytes.
    @return {name: (dtype, shape, raw bytes)}."""
    header, off, blobs, out = {}, 0, [], {}
    specs = [("t." + dt, dt, SHAPE) for dt in BITS]
    specs.append(("norm", "F32", [16]))
    for name, dt, shape in specs:
        n = shape[0] * (shape[1] if len(shape) > 1 else 1) * BITS[dt] // 8
        b = os.urandom(n)
        header[name] = {"dtype": dt, "shape": shape,
                        "data_offsets": [off, off + n]}
        blobs.append(b)
        out[name] = (dt, shape, b)
        off += n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    return out


@pytest.fixture(scope="module")
def lib():
    if not LIB.exists():
        pytest.skip(f"no {LIB} (build first, or set WEIGHTFS_BUILD)")
    os.environ["WEIGHTFS_LIB"] = str(LIB)
    sys.path.insert(0, str(REPO / "loader" / "python"))
    try:
        from weightfs import _lib
        return _lib
    except ImportError as e:  # an ASan build's library needs its runtime
        pytest.skip(f"cannot load {LIB} here: {e}")
    finally:
        sys.path.pop(0)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    p = tmp_path_factory.mktemp("select") / "m.safetensors"
    return str(p), write_model(str(p))


def load_raw(lib, path, **select):
    """{name: (shape, raw bytes)} of a selection, and the load's stats."""
    m = lib.Model(path)
    try:
        m.select(**select)
        st = m.load("cpu")
        infos = m.tensors()  # offsets: the load's layout
        mem = bytes(m.host_memory())
    finally:
        m.close()
    return {t.name: (t.shape, mem[t.offset:t.offset + t.nbytes])
            for t in infos}, st


def rows(raw, nrows):
    n = len(raw) // nrows
    return [raw[i * n:(i + 1) * n] for i in range(nrows)]


def test_shard_rule_replicates_what_it_cannot_cut(lib, model):
    """A 1-D tensor under a dim-1 rule is loaded whole."""
    path, full = model
    got, _ = load_raw(lib, path, shard=(1, 2), shard_dims={"*": 1})
    assert got["norm"] == ((16,), full["norm"][2])
    assert got["t.U8"][0] == (8, 8)


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("dim", [0, 1])
def test_shards_concatenate_to_whole_tensors(lib, model, world, dim):
    path, full = model
    parts = [load_raw(lib, path, shard=(r, world),
                      shard_dims={"t.*": dim})
             for r in range(world)]
    for name, (dt, shape, raw) in full.items():
        got = [p[0][name] for p in parts]
        if name == "norm":
            # Matching no shard rule: whole on every rank.
            assert all(g == (tuple(shape), raw) for g in got)
            continue
        want_shape = list(shape)
        want_shape[dim] //= world
        assert all(g[0] == tuple(want_shape) for g in got), (name, got[0])
        if dim == 0:
            assert b"".join(g[1] for g in got) == raw, name
        else:
            joined = [b"".join(r) for r in
                      zip(*(rows(g[1], shape[0]) for g in got))]
            assert b"".join(joined) == raw, name
    # Only the selected bytes were read: a 1/world share of the model.
    total = sum(len(v[2]) for v in full.values())
    for p in parts:
        assert p[1]["bytes"] == sum(len(v[1]) for v in p[0].values())
        assert p[1]["bytes"] <= total // world + 64


def test_names_and_explicit_slice(lib, model):
    path, full = model
    got, st = load_raw(lib, path, tensors=["t.BF16", "t.F4"],
                       slices={"t.BF16": (1, 3, 5)})
    assert sorted(got) == ["t.BF16", "t.F4"]
    shape, raw = got["t.BF16"]
    assert shape == (8, 5)
    whole = full["t.BF16"][2]
    assert raw == b"".join(r[6:16] for r in rows(whole, 8))
    assert got["t.F4"] == ((8, 16), full["t.F4"][2])
    assert st["bytes"] == len(raw) + len(full["t.F4"][2])


@pytest.mark.parametrize("select,what", [
    ({"shard": (0, 8), "shard_dims": {"t.F6_E2M3": 1}}, "split a byte"),
    ({"slices": {"t.F4": (1, 1, 4)}}, "split a byte"),
    ({"shard": (0, 3)}, "does not divide"),
    ({"slices": {"t.U8": (1, 10, 8)}}, "past dim"),
    ({"slices": {"norm": (1, 0, 1)}}, "no dim 1"),
])
def test_refused_with_a_clear_error(lib, model, select, what):
    path, _ = model
    m = lib.Model(path)
    try:
        with pytest.raises(lib.WeightfsError) as e:
            m.select(**select)
        assert what in str(e.value)
        assert len(m.tensors()) == 21  # the previous selection (all) kept
    finally:
        m.close()


@pytest.mark.skipif(not LOAD.exists(), reason=f"no {LOAD}")
def test_cli_shard(model):
    path, full = model
    got = []
    for r in range(2):
        p = subprocess.run([str(LOAD), "--json", "--digest", "sha256",
                            "--shard", f"{r}/2", "--shard-dim", "t.*=1",
                            path], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stderr
        got.append(json.loads(p.stdout))
    for g in got:
        shapes = {t["name"]: t["shape"] for t in g["tensors"]}
        assert shapes["t.F32"] == [8, 8] and shapes["norm"] == [16]
    bad = subprocess.run([str(LOAD), "--shard", "0/8", "--shard-dim",
                          "t.F6*=1", path], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 1 and "split a byte" in bad.stderr
    for args in (["--shard", "2/2"], ["--shard-dim", "x=1"],
                 ["--slice", "x=1:2"]):
        p = subprocess.run([str(LOAD), *args, path], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 2, (args, p.stderr)
