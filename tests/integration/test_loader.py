"""The loader end to end: weightfs-load and the Python package (weightfs.numpy,
weightfs.torch) against the fixtures written by the official safetensors
library (EXPECTED.json: dtype, shape, SHA-256 of every tensor), and against
malformed files.

Environment: WEIGHTFS_BUILD (default <repo>/build), WEIGHTFS_FIXTURES
(default <repo>/tests/fixtures); WEIGHTFS_REQUIRE_FIXTURES=1 fails instead of
skipping when they are missing.
"""

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("WEIGHTFS_BUILD", REPO / "build"))
FIXTURES = Path(os.environ.get("WEIGHTFS_FIXTURES",
                               REPO / "tests" / "fixtures"))
ST = FIXTURES / "safetensors"
LOAD = BUILD / "tools" / "weightfs-load"
LIB = BUILD / "loader" / "libweightfs.so"


@pytest.fixture(autouse=True)
def _fixtures_present():
    if not (ST / "EXPECTED.json").exists():
        msg = f"fixture missing: {ST} (set WEIGHTFS_FIXTURES)"
        if os.environ.get("WEIGHTFS_REQUIRE_FIXTURES", "") == "1":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


needs_cli = pytest.mark.skipif(not LOAD.exists(),
                               reason=f"no {LOAD} (build first, or set "
                               "WEIGHTFS_BUILD)")

# safetensors dtype for each PyTorch dtype name in EXPECTED.json
TORCH_TO_ST = {"bool": "BOOL", "uint8": "U8", "int8": "I8",
               "float8_e5m2": "F8_E5M2", "float8_e4m3fn": "F8_E4M3",
               "int16": "I16", "uint16": "U16", "float16": "F16",
               "bfloat16": "BF16", "int32": "I32", "uint32": "U32",
               "float32": "F32", "float64": "F64", "int64": "I64",
               "uint64": "U64"}

SHARDS = [f"tiny-llama-sharded/model-0000{i}-of-00003.safetensors"
          for i in (1, 2, 3)]
MODELS = {
    "dtypes.safetensors": ["dtypes.safetensors"],
    "tiny-llama/model.safetensors": ["tiny-llama/model.safetensors"],
    "tiny-llama": ["tiny-llama/model.safetensors"],
    "tiny-llama-sharded": SHARDS,
}


def expected(files):
    """{name: {dtype, shape, sha256}} of the tensors of @files."""
    doc = json.loads((ST / "EXPECTED.json").read_text())
    out = {}
    for f in files:
        for name, t in doc["files"][f].items():
            if name != "__metadata__":
                out[name] = t
    return out


def run_load(*args):
    return subprocess.run([str(LOAD), *map(str, args)], capture_output=True,
                          text=True, timeout=120)


# ---- weightfs-load -------------------------------------------------------

@needs_cli
@pytest.mark.asan
@pytest.mark.parametrize("model", sorted(MODELS))
def test_cli_json_matches_expected(model):
    r = run_load("--json", "--digest", "sha256", ST / model)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"path", "bytes", "seconds", "gbps", "tensors",
                        "startup_seconds", "loader_bytes_copied",
                        "daemon_bytes_copied", "threads", "staging",
                        "direct_io_files"}
    assert out["path"] == "direct"
    assert out["staging"] in ("none", "host")  # a CPU load
    assert out["seconds"] > 0 and out["gbps"] > 0
    want = expected(MODELS[model])
    got = {t["name"]: t for t in out["tensors"]}
    assert len(got) == len(out["tensors"]) == len(want)
    for name, w in want.items():
        t = got[name]
        assert set(t) == {"name", "dtype", "shape", "digest"}
        assert t["dtype"] == TORCH_TO_ST[w["dtype"]], name
        assert t["shape"] == w["shape"], name
        assert t["digest"] == "sha256:" + w["sha256"], name
    assert out["bytes"] > 0


@needs_cli
@pytest.mark.asan
def test_cli_several_paths_and_xxh3():
    r = run_load("--json", "--digest", "xxh3", ST / "dtypes.safetensors",
                 ST / "tiny-llama-sharded")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    want = expected(["dtypes.safetensors"] + SHARDS)
    assert sorted(t["name"] for t in out["tensors"]) == sorted(want)
    for t in out["tensors"]:
        assert t["digest"].startswith("xxh3:") and len(t["digest"]) == 21
    empty = [t for t in out["tensors"] if t["name"] == "empty"][0]
    assert empty["digest"] == "xxh3:2d06800538d394c2"


@needs_cli
@pytest.mark.asan
def test_cli_human_output_and_help():
    r = run_load(ST / "tiny-llama")
    assert r.returncode == 0, r.stderr
    assert "GB/s" in r.stdout and "path: direct" in r.stdout
    r = run_load("--digest", "sha256", ST / "tiny-llama")
    assert r.returncode == 0
    w = expected(["tiny-llama/model.safetensors"])["model.norm.weight"]
    assert f"sha256:{w['sha256']}  model.norm.weight  BF16  [64]" in r.stdout
    r = run_load("--help")
    assert r.returncode == 0
    for opt in ("--device", "--digest", "--json", "--threads", "--staging",
                "--chunk", "--direct-io", "--help", "--version"):
        assert opt in r.stdout, opt
    assert run_load("--version").returncode == 0


@needs_cli
@pytest.mark.asan
@pytest.mark.parametrize("args", [[], ["--device", "tpu", "x"],
                                  ["--digest", "md5", "x"],
                                  ["--threads", "0", "x"],
                                  ["--staging", "lots", "x"],
                                  ["--direct-io", "maybe", "x"],
                                  ["--bogus", "x"]])
def test_cli_usage_errors(args):
    r = run_load(*args)
    assert r.returncode == 2
    assert "weightfs-load" in r.stderr


def tensor_json(name, dtype, shape, begin, end):
    return {name: {"dtype": dtype, "shape": shape,
                   "data_offsets": [begin, end]}}


def st_bytes(header, data=b"", hlen=None):
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h) if hlen is None else hlen) + h + data


F32x2 = tensor_json("t", "F32", [2], 0, 8)
MALFORMED = {
    "empty": (b"", "too short"),
    "huge-header-length": (st_bytes({}, hlen=2**64 - 1), "exceeds the limit"),
    "header-past-eof": (st_bytes({}, hlen=4096), "past the end of the file"),
    "not-json": (st_bytes(b"{this is not json}"), "not valid JSON"),
    "not-an-object": (st_bytes(b"[1,2,3]"), "does not start with '{'"),
    "truncated-data": (st_bytes(F32x2, b"\0" * 5),
                       "past the end of the data"),
    "offsets-past-end": (st_bytes({**tensor_json("a", "F32", [1], 0, 4),
                                   **tensor_json("b", "F32", [1], 8, 12)},
                                  b"\0" * 8), "gap of 4 bytes"),
    "offsets-beyond-file": (st_bytes(tensor_json("a", "U8", [64], 0, 64),
                                     b"\0" * 8), "past the end of the data"),
    "unknown-dtype": (st_bytes(tensor_json("t", "F128", [1], 0, 16),
                               b"\0" * 16), 'unknown dtype "F128"'),
    "shape-size-mismatch": (st_bytes(tensor_json("t", "F32", [3], 0, 8),
                                     b"\0" * 8), "give 12 bytes"),
    "shape-overflow": (st_bytes(tensor_json("t", "F32", [2**40, 2**40], 0, 8),
                                b"\0" * 8), "overflows"),
    "overlap": (st_bytes({**tensor_json("a", "F32", [2], 0, 8),
                          **tensor_json("b", "F32", [2], 4, 12)},
                         b"\0" * 12), "overlaps"),
    "trailing-data": (st_bytes(F32x2, b"\0" * 12), "after the last tensor"),
    # "a" and "a\u0000x": two tensors to strict parsers, never merged.
    "nul-in-name": (st_bytes({**tensor_json("a", "U8", [1], 0, 1),
                              **tensor_json("a\0x", "U8", [1], 1, 2)},
                             b"\0" * 2), "escaped NUL"),
}


@needs_cli
@pytest.mark.asan
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_cli_malformed(case, tmp_path):
    data, msg = MALFORMED[case]
    p = tmp_path / f"{case}.safetensors"
    p.write_bytes(data)
    r = run_load("--json", p)
    assert r.returncode == 1, r.stdout
    assert r.stdout == ""
    assert msg in r.stderr and str(p) in r.stderr, r.stderr
    assert "Sanitizer" not in r.stderr


@needs_cli
@pytest.mark.asan
@pytest.mark.parametrize("where", ["model", "shard", "index"])
def test_cli_refuses_fifo(where, tmp_path):
    """A FIFO as the model path, a shard or the index fails at once with a
    clear error (it used to block weightfs-load forever)."""
    one = st_bytes(tensor_json("a", "U8", [4], 0, 4), b"\0" * 4)
    if where == "model":
        target = tmp_path / "model.safetensors"
        os.mkfifo(target)
        path = target
    else:
        (tmp_path / "1.safetensors").write_bytes(one)
        name = ("2.safetensors" if where == "shard"
                else "model.safetensors.index.json")
        target = tmp_path / name
        os.mkfifo(target)
        path = tmp_path
    r = subprocess.run([str(LOAD), "--json", str(path)], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 1, r.stdout
    assert f"{target}: not a regular file" in r.stderr, r.stderr
    assert "Sanitizer" not in r.stderr


@needs_cli
@pytest.mark.asan
@pytest.mark.parametrize("where", ["shard", "index"])
def test_cli_refuses_symlink_out_of_model_dir(where, tmp_path):
    """A model directory whose shard or index is a symlink to a file
    outside it (/etc/passwd, or a model next door) is refused with a clear
    message, as the mount refuses a file:// source's links that leave it
    (issue 23 item 5); WEIGHTFS_FOLLOW_SYMLINKS=1 follows it."""
    one = st_bytes(tensor_json("a", "U8", [4], 0, 4), b"\0" * 4)
    two = st_bytes(tensor_json("b", "U8", [4], 0, 4), b"\1" * 4)
    model, other = tmp_path / "model", tmp_path / "other"
    model.mkdir()
    other.mkdir()
    (model / "1.safetensors").write_bytes(one)
    if where == "shard":
        (other / "2.safetensors").write_bytes(two)
        link = model / "2.safetensors"
        os.symlink("../other/2.safetensors", link)
    else:
        (model / "2.safetensors").write_bytes(two)
        (other / "index.json").write_text(json.dumps(
            {"weight_map": {"a": "1.safetensors", "b": "2.safetensors"}}))
        link = model / "model.safetensors.index.json"
        os.symlink(str(other / "index.json"), link)
    r = run_load("--json", model)
    assert r.returncode == 1, r.stdout
    assert f"{link}: a symbolic link to" in r.stderr, r.stderr
    assert "outside the model directory" in r.stderr, r.stderr
    assert "WEIGHTFS_FOLLOW_SYMLINKS=1" in r.stderr, r.stderr
    # /etc/passwd as the index: refused before a byte of it is read.
    if where == "index":
        link.unlink()
        os.symlink("/etc/passwd", link)
        r = run_load("--json", model)
        assert r.returncode == 1 and "outside the model" in r.stderr, \
            r.stderr
        assert "header length" not in r.stderr and "JSON" not in r.stderr
        link.unlink()
        os.symlink(str(other / "index.json"), link)
    r = subprocess.run([str(LOAD), "--json", str(model)], capture_output=True,
                       text=True, timeout=120,
                       env=dict(os.environ, WEIGHTFS_FOLLOW_SYMLINKS="1"))
    assert r.returncode == 0, r.stderr
    # Links that stay inside the directory are fine.
    if where == "shard":
        link.unlink()
        (model / "sub").mkdir()
        (model / "sub" / "2.bin").write_bytes(two)
        os.symlink("sub/2.bin", link)
        r = run_load("--json", model)
        assert r.returncode == 0, r.stderr


@needs_cli
@pytest.mark.asan
def test_cli_loads_hugging_face_cache_layout(tmp_path):
    """The Hugging Face cache: REPO/snapshots/REV/NAME are symlinks to
    ../../blobs/HASH, inside the same repository folder: loaded as it is,
    from the snapshot directory or a link to it."""
    one = st_bytes(tensor_json("a", "U8", [4], 0, 4), b"\0" * 4)
    two = st_bytes(tensor_json("b", "U8", [4], 0, 4), b"\1" * 4)
    repo = tmp_path / "hub" / "models--org--tiny"
    blobs, snap = repo / "blobs", repo / "snapshots" / "0123abcd"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    index = json.dumps({"weight_map": {"a": "model-1.safetensors",
                                       "b": "model-2.safetensors"}})
    for name, data in (("model-1.safetensors", one),
                       ("model-2.safetensors", two),
                       ("model.safetensors.index.json", index.encode())):
        h = hashlib.sha256(data).hexdigest()
        (blobs / h).write_bytes(data)
        os.symlink("../../blobs/" + h, snap / name)
    os.symlink(str(snap), tmp_path / "latest")
    for path in (snap, tmp_path / "latest"):
        r = run_load("--json", path)
        assert r.returncode == 0, r.stderr
    # A blob of another repository is outside this one.
    other = tmp_path / "hub" / "models--org--other" / "blobs"
    other.mkdir(parents=True)
    (other / "x").write_bytes(two)
    (snap / "model-2.safetensors").unlink()
    os.symlink("../../../models--org--other/blobs/x",
               snap / "model-2.safetensors")
    r = run_load("--json", snap)
    assert r.returncode == 1 and "outside the model directory" in r.stderr, \
        r.stderr


@needs_cli
@pytest.mark.asan
def test_cli_cuda_without_gpu_fails_cleanly():
    if Path("/dev/nvidia0").exists():
        pytest.skip("a GPU is present")
    r = run_load("--device", "cuda:0", ST / "tiny-llama")
    assert r.returncode == 1
    assert "CUDA" in r.stderr
    assert "Sanitizer" not in r.stderr


# ---- the Python package ---------------------------------------------------

def import_weightfs(kind):
    """weightfs.<kind>, over this build's libweightfs (skips if absent)."""
    if not LIB.exists():
        pytest.skip(f"no {LIB} (build first, or set WEIGHTFS_BUILD)")
    pytest.importorskip("numpy")
    if kind == "torch":
        pytest.importorskip("torch")
    os.environ["WEIGHTFS_LIB"] = str(LIB)
    sys.path.insert(0, str(REPO / "loader" / "python"))
    try:
        import importlib
        return importlib.import_module(f"weightfs.{kind}")
    except ImportError as e:
        pytest.skip(f"cannot load {LIB} here: {e}")
    finally:
        sys.path.pop(0)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_numpy_matches_expected(model):
    wnp = import_weightfs("numpy")
    import numpy as np
    arrays = wnp.load_file(ST / model)
    want = expected(MODELS[model])
    assert sorted(arrays) == sorted(want)
    assert list(arrays) == sorted(arrays)
    for name, w in want.items():
        a = arrays[name]
        assert isinstance(a, np.ndarray)
        assert list(a.shape) == w["shape"], name
        assert a.dtype == wnp.numpy_dtype(TORCH_TO_ST[w["dtype"]]), name
        assert hashlib.sha256(a.tobytes()).hexdigest() == w["sha256"], name


def test_numpy_values_and_errors(tmp_path):
    wnp = import_weightfs("numpy")
    from weightfs import WeightfsError, version
    assert version() == "0.1.0"
    a = wnp.load_file(ST / "dtypes.safetensors")
    assert a["scalar"].shape == () and a["empty"].shape == (0, 4)
    assert a["bool"].dtype == bool
    p = tmp_path / "bad.safetensors"
    p.write_bytes(MALFORMED["overlap"][0])
    with pytest.raises(WeightfsError) as e:
        wnp.load_file(p)
    assert "overlaps" in str(e.value) and e.value.errno == 22
    with pytest.raises(WeightfsError) as e:
        wnp.load_file(tmp_path / "missing")
    assert e.value.errno == 2


@pytest.mark.parametrize("header", [
    {},
    {"__metadata__": {"format": "pt"}},
    {**tensor_json("a", "F32", [0, 4], 0, 0),
     **tensor_json("b", "I8", [0], 0, 0)},
])
def test_numpy_no_bytes_to_load(header, tmp_path):
    """A file with no tensors, or only empty ones, gives the right dict."""
    wnp = import_weightfs("numpy")
    import numpy as np
    p = tmp_path / "empty.safetensors"
    p.write_bytes(st_bytes(header))
    a = wnp.load_file(p)
    want = {k: v for k, v in header.items() if k != "__metadata__"}
    assert sorted(a) == sorted(want)
    for name, t in want.items():
        assert a[name].shape == tuple(t["shape"]), name
        assert a[name].dtype == wnp.numpy_dtype(t["dtype"]), name
        assert a[name].size == 0
    if want:
        assert a["a"].dtype == np.float32


def test_numpy_repeated_loads():
    wnp = import_weightfs("numpy")
    for _ in range(10):
        a = wnp.load_file(ST / "tiny-llama-sharded")
        assert len(a) == len(expected(SHARDS))


@pytest.mark.parametrize("model", sorted(MODELS))
def test_torch_cpu_matches_expected(model):
    wt = import_weightfs("torch")
    import torch
    with _maybe_warns():
        tensors = wt.load_file(ST / model, device="cpu")
    want = expected(MODELS[model])
    assert sorted(tensors) == sorted(want)
    for name, w in want.items():
        t = tensors[name]
        assert isinstance(t, torch.Tensor) and t.device.type == "cpu"
        assert list(t.shape) == w["shape"], name
        exact = getattr(torch, w["dtype"], None)
        if exact is not None:
            assert t.dtype == exact, name
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        assert hashlib.sha256(raw).hexdigest() == w["sha256"], name


def _maybe_warns():
    import contextlib
    import warnings
    ctx = contextlib.ExitStack()
    ctx.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return ctx


def test_torch_strict_dtypes():
    wt = import_weightfs("torch")
    import torch
    missing = [d for d in ("uint16", "uint32", "uint64", "float8_e4m3fn",
                           "float8_e5m2") if not hasattr(torch, d)]
    if not missing:
        pytest.skip("this PyTorch has every dtype of the fixtures")
    with pytest.raises(TypeError):
        wt.load_file(ST / "dtypes.safetensors", raw_fallback=False)
    with pytest.warns(UserWarning, match="raw bits"):
        wt.load_file(ST / "dtypes.safetensors")


@pytest.mark.cuda
def test_torch_cuda_matches_expected():
    wt = import_weightfs("torch")
    import torch
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    with _maybe_warns():
        tensors = wt.load_file(ST / "tiny-llama-sharded", device="cuda:0")
    for name, w in expected(SHARDS).items():
        t = tensors[name]
        assert t.device == torch.device("cuda", 0)
        raw = t.reshape(-1).view(torch.uint8).cpu().numpy().tobytes()
        assert hashlib.sha256(raw).hexdigest() == w["sha256"], name



def _owner(a):
    """A weak reference to the object at the bottom of a NumPy array's
    base chain: the ctypes array over the library's memory."""
    import ctypes
    import weakref
    while not isinstance(a, ctypes.Array):
        a = a.obj if isinstance(a, memoryview) else a.base
    return weakref.ref(a)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_host_arrays_outlive_the_model(kind):
    """The CPU loaders wrap the library's allocation without a copy: a
    tensor kept alone outlives the dict, the model and a gc with its
    bytes intact, and (NumPy, where the owner is visible) the memory
    goes with the last view. test_fastpath checks the unmap for both."""
    import gc
    import math
    wl = import_weightfs(kind)
    want = expected(SHARDS)
    with _maybe_warns():
        got = wl.load_file(ST / "tiny-llama-sharded")
    name = max(want, key=lambda n: math.prod(want[n]["shape"]))
    keep = got[name]
    owner = _owner(keep) if kind == "numpy" else None
    del got
    gc.collect()
    junk = [bytearray(1 << 20) for _ in range(64)]  # reuse what was freed
    del junk
    if kind == "torch":
        import torch
        raw = keep.reshape(-1).view(torch.uint8).numpy()
    else:
        raw = keep.view("uint8")
    assert hashlib.sha256(raw.tobytes()).hexdigest() == want[name]["sha256"]
    if owner is not None:
        assert owner() is not None
        del keep, raw
        gc.collect()
        assert owner() is None
