"""tools/bench-net end to end, small: a throttled link really throttles
(one curl gets about the cap, and the first-byte delay is paid), and a tiny
run prints every row with numbers, without leaving mounts behind."""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

import wfs_testlib as lib

BENCH = os.path.join(lib.REPO, "tools", "bench-net")
ECHO = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
MiB = 1024 * 1024


def _need_tools():
    if os.geteuid() != 0:
        pytest.skip("bench-net needs root (drop_caches, FUSE)")
    if shutil.which("nginx") is None or not os.path.exists(ECHO):
        pytest.skip("nginx or its echo module (libnginx-mod-http-echo) "
                    "missing: tools/setup-debian")


def _load_bench():
    """bench-net as a module (it has no .py suffix)."""
    import importlib.machinery
    import importlib.util
    loader = importlib.machinery.SourceFileLoader("bench_net", BENCH)
    spec = importlib.util.spec_from_loader("bench_net", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def test_link_caps_rate_and_delays_first_byte(tmp_path, weightfs_bin):
    """The link's nginx gives one connection about its cap, and a request
    waits the first-byte delay."""
    _need_tools()
    bn = _load_bench()

    class Args:
        tmpdir = str(tmp_path)
        size = 16 * MiB
    b = bn.Bench(Args)
    try:
        lib.write_random(b.file, 16 * MiB, seed=3)
        link = bn.Link(b, "http", 20, 200)
        b.links.append(link)
        t0 = time.monotonic()
        r = subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", "-w",
                            "%{time_starttransfer} %{time_total}",
                            link.url], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        first, total = map(float, r.stdout.split())
        assert first >= 0.19, "first byte after %.3f s, not 0.2" % first
        rate = 16 * MiB / (total - first)
        # 20 MiB/s: nginx lets a first burst through, so only bounds.
        assert 10 * MiB < rate < 30 * MiB, "%.1f MiB/s" % (rate / MiB)
        assert time.monotonic() - t0 < 30
    finally:
        for link in b.links:
            link.stop()


def test_quick_run_prints_every_row(tmp_path, weightfs_bin):
    _need_tools()
    env = dict(os.environ, WEIGHTFS_BUILD=lib.BUILD)
    r = subprocess.run([sys.executable, BENCH, "--quick", "--size", "32M",
                        "--link", "http:100:0", "--skip", "rclone,s3fs",
                        "--tmpdir", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for row in ("16 curls", "weightfs c=16 cold dd, fresh mount",
                "weightfs c=16 cold dd, again (evict)",
                "weightfs c=16 cold dd, cache_mem=file/2",
                "weightfs auto cold dd, fresh mount (K=",
                "weightfs auto cold dd, again (evict)",
                "weightfs-load c=16 fast path ",
                "weightfs-load c=16 fast path, huge pages"):
        line = [ln for ln in out.splitlines() if ln.startswith(row)]
        if not line and "huge pages" in row:
            # the kernel may not find the pages (fragmented memory)
            assert "(fast path on huge pages skipped: " in out, out
            continue
        assert line, "row %r missing:\n%s" % (row, out)
        nums = re.findall(r"\d+\.\d+", line[0])
        assert len(nums) >= 4, line[0]
        assert float(nums[0]) > 0, line[0]
    # connections=auto: how its limit went, starting at 16.
    trace = [ln for ln in out.splitlines()
             if ln.startswith("  auto limit over time, fresh run 1: ")]
    assert trace and re.search(r": \d+\.\ds 16\b", trace[0]), out
    # Nothing left mounted under the temporary directory.
    assert not [m for m in lib.mounts() if str(tmp_path) in m], lib.mounts()
