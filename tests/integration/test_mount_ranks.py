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
