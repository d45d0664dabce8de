"""weightfs.torch.iter_weights: (name, tensor) in load order, right bytes,
a part with select=, and host memory bounded by staging + one tensor for a
model 4x larger than that."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("WEIGHTFS_BUILD", REPO / "build"))
LIB = BUILD / "loader" / "libweightfs.so"
MiB = 1 << 20

pytest.importorskip("torch")
np = pytest.importorskip("numpy")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_mount_tensor_ahead import write_safetensors  # noqa: E402

STAGING = 8 * MiB
TENSOR = 4 * MiB  # [2048, 1024] BF16
N = 24            # 96 MiB: 8x staging + one tensor

CHILD = r'''
import hashlib, json, os, sys
sys.path.insert(0, sys.argv[2])
import torch
from weightfs.torch import iter_weights

def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
# Warm up the library and its staging on a first, small pass.
for _ in iter_weights(sys.argv[1], staging_bytes=int(sys.argv[3]),
                      threads=2, select={"tensors": ["w.000"]}):
    pass
base = rss("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM
sums = {}
for name, t in iter_weights(sys.argv[1], staging_bytes=int(sys.argv[3]),
                            threads=2):
    sums[name] = hashlib.sha256(t.view(torch.uint8).numpy().tobytes()
                                ).hexdigest()
print(json.dumps({"sums": sums, "grew": rss("VmHWM:") - base,
                  "order": list(sums)}))
'''


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    if not LIB.exists():
        pytest.skip(f"no {LIB} (build first)")
    p = str(tmp_path_factory.mktemp("iter") / "m.safetensors")
    specs = [("w.%03d" % i, "BF16", [2048, 1024]) for i in range(N)]
    return p, write_safetensors(p, specs, 7)


def test_iter_bounded_memory_and_right_bytes(model):
    path, sums = model
    env = dict(os.environ, WEIGHTFS_LIB=str(LIB))
    r = subprocess.run([sys.executable, "-c", CHILD, path,
                        str(REPO / "loader" / "python"), str(STAGING)],
                       capture_output=True, text=True, timeout=300, env=env)
    if r.returncode and "libweightfs not found" in r.stderr:
        pytest.skip("cannot load %s here (an ASan build?)" % LIB)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["sums"] == sums
    assert out["order"] == ["w.%03d" % i for i in range(N)]
    # The model is 96 MiB; staging + one tensor is 12 MiB.
    assert out["grew"] <= STAGING + TENSOR + 4 * MiB, out["grew"] / MiB


def test_iter_select(model):
    path, sums = model
    os.environ["WEIGHTFS_LIB"] = str(LIB)
    sys.path.insert(0, str(REPO / "loader" / "python"))
    try:
        from weightfs.torch import iter_weights
    except ImportError as e:  # an ASan build's library needs its runtime
        pytest.skip(f"cannot load {LIB} here: {e}")
    finally:
        sys.path.pop(0)
    got = [(n, tuple(t.shape)) for n, t in iter_weights(
        path, select={"tensors": ["w.00[0-3]"], "shard": (1, 2)})]
    assert got == [("w.%03d" % i, (1024, 1024)) for i in range(4)]
