"""weightfs-ctl stats --prometheus: the text exposition promtool accepts,
with conventional names, one family per counter, a mountpoint label."""

import json
import os
import re
import shutil
import subprocess

import pytest

import wfs_testlib as lib

PROMTOOL = shutil.which("promtool")


def _prom(*mnts):
    r = subprocess.run([lib.WEIGHTFS_CTL, "stats", "--prometheus", *mnts],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _samples(text):
    out = {}
    for ln in text.splitlines():
        if ln.startswith("#") or not ln.strip():
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$', ln)
        assert m, "bad sample line: %r" % ln
        out.setdefault(m.group(1), []).append((m.group(2), m.group(3)))
    return out


def test_prometheus_exposition(mount, fixtures_dir, tmp_path):
    src = "file://" + os.path.join(fixtures_dir, "safetensors")
    a = mount(src, {"cache_mem": "64M", "block_size": "1M"})
    b = mount(src, {"cache_mem": "32M", "block_size": "1M"},
              mountpoint=str(tmp_path / 'we"ird\\mnt'))
    with open(os.path.join(a.path, "dtypes.safetensors"), "rb") as f:
        size = len(f.read())
    text = _prom(a.path, b.path)
    stats = json.loads(subprocess.check_output(
        [lib.WEIGHTFS_CTL, "stats", a.path], text=True))
    s = _samples(text)
    # Every numeric key of the JSON is there, once per mount.
    for key, v in stats.items():
        if not isinstance(v, (int, float)):
            continue
        names = [n for n in s if n.startswith("weightfs_" + key)]
        assert names, "no metric for %s" % key
        assert len(s[names[0]]) == 2, (key, s[names[0]])
    assert s["weightfs_bytes_fetched_total"][0] == (
        'mountpoint="%s"' % a.path, str(stats["bytes_fetched"]))
    assert int(s["weightfs_bytes_read_total"][0][1]) >= size
    assert "# TYPE weightfs_cache_bytes gauge" in text
    assert "# TYPE weightfs_cache_mem_bytes gauge" in text
    assert int(s["weightfs_cache_mem_bytes"][1][1]) == 32 << 20
    assert 'mountpoint="%s"' % b.path.replace("\\", "\\\\").replace(
        '"', '\\"') in text
    # Each family's HELP and TYPE once, before its samples.
    types = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
    assert len(types) == len(set(t for t, _ in types))
    for name, typ in types:
        if typ == "counter":
            assert name.endswith("_total"), name
    if PROMTOOL is None:
        pytest.skip("promtool not installed (Debian prometheus); "
                    "the format was checked without it")
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                       capture_output=True, text=True, timeout=30)
    print(text, r.stdout, r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "" and r.stderr.strip() == "", \
        "promtool complained: " + r.stdout + r.stderr


def test_promtool_can_fail():
    """promtool's check is not vacuous: a counter without _total and a
    sample before its TYPE are reported."""
    if PROMTOOL is None:
        pytest.skip("promtool not installed (Debian prometheus)")
    bad = "# TYPE weightfs_bytes counter\nweightfs_bytes 1\n"
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=bad,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 or (r.stdout + r.stderr).strip()


def test_prometheus_not_a_mount(tmp_path):
    r = subprocess.run([lib.WEIGHTFS_CTL, "stats", "--prometheus",
                        str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 1 and "not a weightfs mount" in r.stderr
    assert r.stdout == ""


def test_fetch_latency_histogram(mount, nginx, tmp_path):
    """Block fetches over HTTP land in weightfs_fetch_seconds, a histogram
    whose buckets are cumulative and end in +Inf = _count."""
    root = tmp_path / "www"
    lib.write_random(str(root / "m.bin"), 3 * lib.MiB + 5, seed=3)
    srv = nginx(root)
    m = mount(srv.url, {"cache_mem": "64M", "block_size": "1M"})
    with open(os.path.join(m.path, "m.bin"), "rb") as f:
        assert len(f.read()) == 3 * lib.MiB + 5
    stats = json.loads(subprocess.check_output(
        [lib.WEIGHTFS_CTL, "stats", m.path], text=True))
    h = stats["fetch_seconds"]
    assert h["count"] >= 4 and h["count"] == stats["requests"], h
    assert h["counts"] == sorted(h["counts"]) and h["counts"][-1] <= h["count"]
    assert h["sum"] > 0
    text = _prom(m.path)
    assert "# TYPE weightfs_fetch_seconds histogram" in text
    s = _samples(text)
    inf = [v for lbl, v in s["weightfs_fetch_seconds_bucket"]
           if 'le="+Inf"' in lbl]
    assert inf == [str(h["count"])]
    assert s["weightfs_fetch_seconds_count"][0][1] == str(h["count"])
    if PROMTOOL:
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), \
            r.stdout + r.stderr
