"""The loader's GPU path without a GPU: weightfs-load --device cuda and
tools/gpu-check --dry-run against the CUDA runtime stand-in (tests/cuda,
built where the CUDA toolkit's headers are), which takes the place of
libcudart.so.13 through LD_LIBRARY_PATH.

The stand-in aborts the program on misuse a GPU would punish (a source
changed or unpinned while its copy is pending, a destination outside device
memory, a stream used with another device current) and, with
CUDA_STANDIN_LEAKCHECK=1, on anything CUDA left allocated at exit."""
import json
import os
import subprocess
import sys

import pytest

import wfs_testlib as lib

STANDIN_DIR = os.path.join(lib.BUILD, "tests", "cuda")
FIXTURES = os.path.join(lib.REPO, "tests", "fixtures", "safetensors")

pytestmark = pytest.mark.skipif(
    not os.path.exists(os.path.join(STANDIN_DIR, "libcudart.so.13")),
    reason="built without the CUDA toolkit's headers: no CUDA stand-in")


def standin_env(**extra):
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = STANDIN_DIR + (
        ":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    env["CUDA_STANDIN_LEAKCHECK"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def load(*args, **env):
    return subprocess.run([lib.WEIGHTFS_LOAD, "-q", *args],
                          capture_output=True, text=True, timeout=120,
                          env=standin_env(**env))


def digests(out):
    return {t["name"]: t["digest"] for t in json.loads(out)["tensors"]}


@pytest.mark.parametrize("threads,chunk,direct", [
    (2, "64K", "never"), (3, "1M", "always"), (16, "64K", "always"),
    (8, "8M", "never")])
def test_cli_cuda_matches_cpu(threads, chunk, direct):
    model = os.path.join(FIXTURES, "tiny-llama-sharded")
    cpu = load("--json", "--digest", "sha256", model)
    assert cpu.returncode == 0, cpu.stderr
    r = load("--json", "--digest", "sha256", "--device", "cuda:0",
             "-t", str(threads), "-c", chunk, "--direct-io", direct, model)
    assert r.returncode == 0, r.stderr
    assert digests(r.stdout) == digests(cpu.stdout)
    j = json.loads(r.stdout)
    assert j["staging"] == "shared"
    assert j["direct_io_files"] == (3 if direct == "always" else 0)


@pytest.mark.asan
@pytest.mark.parametrize("fail", [
    "MEMCPY=3", "EVENT_RECORD=2", "EVENT_SYNC=2+", "MALLOC=1",
    "STREAM_CREATE=2", "HOST_ALLOC=1"])
def test_cli_cuda_injected_failure(fail):
    """An injected CUDA failure: exit 1 with the CUDA error said, never a
    crash or a stand-in abort (staging reused or unpinned while a copy
    from it is pending, or anything left allocated)."""
    name, n = fail.split("=")
    env = {"CUDA_STANDIN_FAIL_" + name: n, "CUDA_STANDIN_STALL_MS": 200}
    if name == "HOST_ALLOC":  # reached only when registering fails
        env["CUDA_STANDIN_FAIL_HOST_REGISTER"] = "1+"
    if name == "EVENT_SYNC":  # the staging is abandoned, by design
        env["CUDA_STANDIN_LEAKCHECK"] = "0"
    r = load("--device", "cuda:0", "-t", "2", "-c", "64K",
             os.path.join(FIXTURES, "tiny-llama"), **env)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "weightfs-load: CUDA" in r.stderr or "CUDA" in r.stderr
    assert "stand-in" not in r.stderr, r.stderr


def test_cli_cuda_old_driver():
    r = load("--device", "cuda:0", os.path.join(FIXTURES, "tiny-llama"),
             CUDA_STANDIN_DRIVER="old")
    assert r.returncode == 1
    assert "driver supports CUDA 12.2" in r.stderr, r.stderr


@pytest.mark.asan
def test_cli_cuda1_no_context_on_device0():
    """Two devices; loading to cuda:1 never makes a context on device 0
    (the stand-in aborts if it does)."""
    r = load("--json", "--digest", "sha256", "--device", "cuda:1",
             os.path.join(FIXTURES, "dtypes.safetensors"),
             CUDA_STANDIN_DEVICES=2, CUDA_STANDIN_NO_CONTEXT=0)
    assert r.returncode == 0, r.stderr
    cpu = load("--json", "--digest", "sha256",
               os.path.join(FIXTURES, "dtypes.safetensors"))
    assert digests(r.stdout) == digests(cpu.stdout)


def test_gpu_check_dry_run(tmp_path):
    """tools/gpu-check --dry-run: every step of the device run, here,
    against the stand-in and a local mount; no check fails."""
    env = dict(os.environ, OUT=str(tmp_path / "out"),
               CKPT_DIR=str(tmp_path / "model"), PYTHON=sys.executable)
    r = subprocess.run([os.path.join(lib.REPO, "tools", "gpu-check"),
                        "--dry-run", "--build", lib.BUILD],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    with open(tmp_path / "out" / "results.jsonl") as f:
        rows = [json.loads(line) for line in f]
    names = {row["name"] for row in rows}
    for want in ("test_loader_cuda", "bit-identical, default",
                 "bit-identical, o_direct",
                 "weightfs.torch vs safetensors, integer views",
                 "pinned host-to-device copy (the limit)",
                 "weightfs-load (page cache)"):
        assert want in names, (want, names)
    if os.geteuid() == 0 and os.path.exists("/dev/fuse"):
        assert "bit-identical, fastpath" in names
        assert "weightfs-load fast path (mount)" in names
    assert not [row for row in rows if row["ok"] is False]
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "FAILED" not in summary


@pytest.mark.asan
@pytest.mark.parametrize("fail", [None, "EVENT_RECORD=3", "MEMCPY=5",
                                  "EVENT_SYNC=3+"])
def test_cli_cuda_fastpath(mount, fail):
    """Through a weightfs mount (the fast path): the daemon writes the
    reads into the pinned staging it shares with the loader, which the
    stand-in watches: a slot written while a copy from it is pending
    aborts. Right bytes without a failure; a clean error with one."""
    m = mount("file://" + FIXTURES)
    model = m.file("tiny-llama-sharded")
    env = {"CUDA_STANDIN_STALL_MS": 200}
    if fail:
        name, n = fail.split("=")
        env["CUDA_STANDIN_FAIL_" + name] = n
        if name == "EVENT_SYNC":  # the staging is abandoned, by design
            env["CUDA_STANDIN_LEAKCHECK"] = "0"
    r = load("--json", "--digest", "sha256", "--device", "cuda:0", "-t", "3",
             "-c", "64K", model, **env)
    if fail:
        assert r.returncode == 1, (r.returncode, r.stderr)
        assert "CUDA" in r.stderr and "stand-in" not in r.stderr, r.stderr
        return
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["path"] == "fastpath" and j["staging"] == "shared"
    assert j["daemon_bytes_copied"] > 0
    cpu = load("--json", "--digest", "sha256",
               os.path.join(FIXTURES, "tiny-llama-sharded"))
    assert digests(r.stdout) == digests(cpu.stdout)
