"""Many ranks, one fetch: 4 processes loading the 4 shards of one model
concurrently through one mount fetch each byte from the source about once
(the daemon's cache serves the rest), and each loads only its share."""

import json
import os
import subprocess

import pytest

import wfs_testlib as lib
from test_mount_tensor_ahead import llama_like

pytest.importorskip("numpy")

WORLD = 4


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("ranks")
    llama_like(str(d / "model.safetensors"))
    return str(d)


def test_four_ranks_fetch_once(nginx, mount, model):
    load = os.path.join(lib.BUILD, "tools", "weightfs-load")
    if not os.access(load, os.X_OK):
        pytest.skip("weightfs-load not built")
    size = os.path.getsize(os.path.join(model, "model.safetensors"))
    srv = nginx(model)
    m = mount(srv.url, {"cache_mem": "512M", "block_size": "1M",
                        "connections": "8"})
    path = m.file("model.safetensors")
    procs = [subprocess.Popen([load, "--json", "--shard", "%d/%d" % (r,
                                                                   WORLD),
                               path], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for r in range(WORLD)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(json.loads(out))
    st = m.stats()
    assert st["bytes_fetched"] <= size * 1.05, (st["bytes_fetched"], size)
    data = size - 8 - int.from_bytes(open(os.path.join(
        model, "model.safetensors"), "rb").read(8), "little")
    for o in outs:
        assert o["path"] == "fastpath"
        # Every tensor here divides by 4 along dim 0: a quarter each.
        assert o["bytes"] == data // WORLD, (o["bytes"], data)
        assert o["loader_bytes_copied"] <= o["bytes"] * 1.05


def test_iter_weights_through_the_mount(nginx, mount, model):
    """weightfs.torch.iter_weights on a mounted file: the fast path, right
    bytes, each fetched once."""
    import hashlib
    import sys
    torch = pytest.importorskip("torch")
    libso = os.path.join(lib.BUILD, "loader", "libweightfs.so")
    os.environ["WEIGHTFS_LIB"] = libso
    sys.path.insert(0, os.path.join(lib.REPO, "loader", "python"))
    try:
        from weightfs.torch import iter_weights
    except ImportError as e:
        pytest.skip("cannot load %s here: %s" % (libso, e))
    finally:
        sys.path.pop(0)
    path = os.path.join(model, "model.safetensors")
    size = os.path.getsize(path)
    want = {}
    with open(path, "rb") as f:
        header, start = lib.parse_safetensors_header(f)
        for name, t in header.items():
            if name != "__metadata__":
                b, e = t["data_offsets"]
                f.seek(start + b)
                want[name] = hashlib.sha256(f.read(e - b)).hexdigest()
    srv = nginx(model)
    m = mount(srv.url, {"block_size": "1M"})
    got = {n: hashlib.sha256(t.view(torch.uint8).numpy().tobytes())
           .hexdigest()
           for n, t in iter_weights(m.file("model.safetensors"),
                                    staging_bytes=8 << 20)}
    assert got == want
    assert m.stats()["bytes_fetched"] <= size * 1.05
