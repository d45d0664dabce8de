"""A mountpoint whose name /proc/self/mountinfo escapes (a space as \\040,
a tab as \\011, a backslash as \\134): the daemon still finds its mount
there, so it sets the kernel's readahead on it and the fast path grants
files of it (both look the mount's device up in mountinfo)."""

import json
import os

import pytest

from test_fastpath import load_json, load_bin  # noqa: F401 (a fixture)


def expected_tensors(fixtures_dir, files):
    src = os.path.join(fixtures_dir, "safetensors")
    exp = json.load(open(os.path.join(src, "EXPECTED.json")))["files"]
    return {name: "sha256:" + t["sha256"]
            for f in files for name, t in exp[f].items()
            if name != "__metadata__"}


@pytest.mark.asan
@pytest.mark.parametrize("name", ["my models", "tab\there back\\slash"])
def test_escaped_mountpoint_readahead_and_fastpath(mount, tmp_path,
                                                   fixtures_dir, load_bin,
                                                   name):
    mp = tmp_path / "x" / name
    mp.mkdir(parents=True)
    m = mount("file://" + os.path.join(fixtures_dir, "safetensors"),
              mountpoint=str(mp), options={"readahead_max": "12M"})

    # (a) the kernel's readahead on this mount is what the daemon asked
    # for: min(readahead_max, 16 MiB) = 12 MiB, not the default 128 KiB.
    if os.geteuid() == 0:
        dev = os.stat(str(mp)).st_dev
        bdi = "/sys/class/bdi/%d:%d/read_ahead_kb" % (os.major(dev),
                                                      os.minor(dev))
        with open(bdi) as f:
            assert int(f.read()) == 12 * 1024, bdi

    # (b) the loader's fast path works through it: the daemon granted the
    # file (it knows the mount's device) and copied the bytes itself.
    before = m.stats()["fastpath_bytes_copied"]
    got = load_json(load_bin, m.file("tiny-llama"))
    assert got["path"] == "fastpath"
    assert ({t["name"]: t["digest"] for t in got["tensors"]} ==
            expected_tensors(fixtures_dir, ["tiny-llama/model.safetensors"]))
    assert got["daemon_bytes_copied"] == got["bytes"] > 0
    assert m.stats()["fastpath_bytes_copied"] - before == got["bytes"]
