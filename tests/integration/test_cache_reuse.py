"""Cache memory is reused, not given back and faulted in again: after
`weightfs-ctl evict` the daemon keeps the memory its blocks had (within
cache_mem), and the next cold read of the file goes to that memory (no new
pages for the kernel to zero), with the right bytes."""

import subprocess

import pytest

from wfs_testlib import (MiB, is_asan_build, sha256_file, vm_rss,
                         write_random)


def test_evict_then_read_reuses_memory(mount, ctl_bin, tmp_path):
    if is_asan_build():
        pytest.skip("RSS means nothing under ASan (shadow memory)")
    src = tmp_path / "src"
    src.mkdir()
    path = src / "m.bin"
    write_random(str(path), 64 * MiB, seed=7)
    want = sha256_file(str(path))
    m = mount("file://" + str(src), {"cache_mem": "256M", "block_size": "8M",
                                     "prefetch": "off"})
    f = m.file("m.bin")
    rss0 = vm_rss(m.pid)
    assert sha256_file(f) == want
    rss1 = vm_rss(m.pid)
    assert rss1 - rss0 >= 56 * MiB, "the read cached %d MiB" % (
        (rss1 - rss0) // MiB)
    r = subprocess.run([ctl_bin, "evict", f], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    st = m.stats()
    assert st["cache_bytes"] == 0, st
    rss2 = vm_rss(m.pid)
    assert rss2 >= rss1 - 8 * MiB, \
        "evict gave the memory back: RSS %d -> %d MiB" % (rss1 // MiB,
                                                         rss2 // MiB)
    assert sha256_file(f) == want
    rss3 = vm_rss(m.pid)
    assert rss3 <= rss1 + 8 * MiB, \
        "the read after evict took new memory: RSS %d -> %d MiB" % (
            rss1 // MiB, rss3 // MiB)
    assert m.stats()["cache_misses"] >= 2 * 8, "not read from the source again"
