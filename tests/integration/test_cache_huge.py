"""cache_huge=auto|on|off: whether the block cache's memory is in
transparent huge pages. `on` gives the daemon huge pages for its blocks,
`off` none; `auto` is `off` exactly where the host takes free memory back
(a virtio balloon with free page reporting: there a new huge page costs
~2.5x a 4 KiB one to touch) and `on` elsewhere. -d says which was used."""

import os

import pytest

from wfs_testlib import MiB, sha256_file, write_random

VIRTIO = "/sys/bus/virtio/devices"


def host_reclaims_free_memory():
    """The oracle, from sysfs: a balloon (device 5) with bit 5 set."""
    if not os.path.isdir(VIRTIO):
        return False
    for dev in os.listdir(VIRTIO):
        try:
            with open(os.path.join(VIRTIO, dev, "device")) as f:
                if int(f.read(), 16) != 5:
                    continue
            with open(os.path.join(VIRTIO, dev, "features")) as f:
                feats = f.read().strip()
        except OSError:
            continue
        if len(feats) > 5 and feats[5] == "1":
            return True
    return False


def thp_possible():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def anon_huge_kib(pid):
    total = 0
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            if line.startswith("AnonHugePages:"):
                total += int(line.split()[1])
    return total


@pytest.fixture
def model(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    digest = write_random(str(src / "m.bin"), 32 * MiB, seed=11)
    return src, digest


@pytest.mark.parametrize("mode", ["on", "off", "auto"])
def test_cache_huge(mount, model, mode):
    src, digest = model
    m = mount("file://" + str(src), {"cache_mem": "256M", "block_size": "8M",
                                     "cache_huge": mode}, debug=True)
    assert sha256_file(m.file("m.bin")) == digest
    huge = {"on": True, "off": False,
            "auto": not host_reclaims_free_memory()}[mode]
    word = "2 MiB huge pages" if huge else "4 KiB pages"
    assert "cache blocks in " + word in m.log(), m.log()[-2000:]
    got = anon_huge_kib(m.pid)
    if not huge:
        assert got == 0, "cache_huge=%s: %d KiB in huge pages" % (mode, got)
    elif thp_possible():
        # The kernel may not find a free 2 MiB page for every block; it
        # found one for at least one of the four.
        assert got >= 2048, "cache_huge=%s: no huge page" % mode
