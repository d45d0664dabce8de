"""Fewer, larger ranged GETs for sequential streams (issue 10 item 1),
end to end: a sequential read through a real mount of nginx makes one GET
per run of readahead blocks (up to request_size), not one per block, with
the right bytes; a reader's block (demand) and random reads still fetch
block by block; a run the server truncates keeps the blocks that arrived
and retries only the rest (servers/fault_server.py), or gives EIO when no
retries are left."""

import errno
import os
import random
import re

import pytest

from wfs_testlib import MiB, make_tree, sha256_file, wait_until

BIG = 256 * MiB


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("coalesce") / "tree")
    make_tree(root, {"big.bin": BIG, "t.bin": 48 * MiB + 4097})
    return root


def gets(srv, uri):
    return [r for r in srv.requests()
            if r["method"] == "GET" and r["uri"] == uri]


def span(rng):
    """(start, end) of "bytes=S-E"."""
    m = re.match(r"bytes=(\d+)-(\d+)$", rng)
    assert m, "not a single range: %r" % rng
    return int(m.group(1)), int(m.group(2))


def test_sequential_read_makes_few_large_gets(nginx, mount, tree):
    """256 MiB read in order in 2M blocks (128 of them), request_size 32M,
    4 connections: the GETs are far fewer than the blocks, each a whole
    number of blocks, the largest request_size, the last ones shorter (an
    even share of the rest over the connections), none fetched twice; the
    bytes are the file's."""
    srv = nginx(tree)
    m = mount(srv.url, {"cache_mem": "1G", "block_size": "2M",
                        "connections": "4"})
    path = m.file("big.bin")
    assert sha256_file(path) == sha256_file(os.path.join(tree, "big.bin"))
    st = m.stats()
    g = gets(srv, "/big.bin")
    assert st["bytes_fetched"] == BIG, st
    assert st["requests"] == len(g), (st["requests"], len(g))
    # 1 per block before; about 20 here (more while the window ramps up
    # on a slow machine).
    assert len(g) <= 48, "%d GETs for 128 blocks: %s" % (
        len(g), [r["range"] for r in g])
    covered = 0
    for r in g:
        s, e = span(r["range"])
        assert s % (2 * MiB) == 0 and e - s + 1 <= 32 * MiB, r["range"]
        assert r["status"] == 206 and r["bytes"] == e - s + 1, r
        covered += e - s + 1
    assert covered == BIG, "blocks fetched twice or missed: %d" % covered
    sizes = [span(r["range"])[1] - span(r["range"])[0] + 1 for r in g]
    assert max(sizes) == 32 * MiB, sizes
    last = max(g, key=lambda r: span(r["range"])[0])
    assert span(last["range"])[1] - span(last["range"])[0] + 1 < 32 * MiB


def test_request_size_of_one_block_is_a_get_per_block(nginx, mount, tree):
    """request_size=block_size: the old behaviour, one GET per block."""
    srv = nginx(tree)
    m = mount(srv.url, {"cache_mem": "1G", "request_size": "8M"})
    assert sha256_file(m.file("big.bin")) == \
        sha256_file(os.path.join(tree, "big.bin"))
    g = gets(srv, "/big.bin")
    assert len(g) == 32 and m.stats()["requests"] == 32, len(g)
    assert all(span(r["range"])[1] - span(r["range"])[0] + 1 == 8 * MiB
               for r in g)


def test_request_size_must_be_whole_blocks(weightfs_run, tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    r = weightfs_run("-o", "block_size=8M,request_size=12M",
                     "file://%s" % d, str(tmp_path))
    assert r.returncode == 2 and "request_size" in r.stderr, r.stderr


def _pread(path, off, n=4096):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, off)
    finally:
        os.close(fd)


def test_random_reads_fetch_block_by_block(nginx, mount, tree):
    """Reads far apart: each block read is a GET of its own; readahead of
    a random read stays what it was (the 2 blocks after it, no request's
    worth more); with prefetch=off exactly one GET per block read."""
    srv = nginx(tree)
    want = open(os.path.join(tree, "big.bin"), "rb")
    blocks = [0, 12, 5, 27, 19, 8]  # 8M blocks, none next to another read
    rnd = random.Random(7)

    m = mount(srv.url, {"cache_mem": "1G", "prefetch": "off"})
    for b in blocks:
        off = b * 8 * MiB + rnd.randrange(8 * MiB - 4096)
        want.seek(off)
        assert _pread(m.file("big.bin"), off) == want.read(4096)
    g = gets(srv, "/big.bin")
    assert sorted(span(r["range"])[0] // (8 * MiB) for r in g) == \
        sorted(blocks), [r["range"] for r in g]
    assert all(span(r["range"])[1] - span(r["range"])[0] + 1 == 8 * MiB
               for r in g)

    srv2 = nginx(tree)
    m2 = mount(srv2.url, {"cache_mem": "1G"})
    for b in blocks:
        off = b * 8 * MiB + 4096
        want.seek(off)
        assert _pread(m2.file("big.bin"), off) == want.read(4096)
    # Readahead may still be running: wait for it, then count.
    assert wait_until(lambda: m2.stats()["bytes_fetched"] >=
                      len(set(b + k for b in blocks for k in range(3)))
                      * 8 * MiB, 30)
    st = m2.stats()
    assert st["bytes_fetched"] <= 3 * len(blocks) * 8 * MiB, st
    for r in gets(srv2, "/big.bin"):
        s, e = span(r["range"])
        assert e - s + 1 <= 2 * 8 * MiB, r["range"]


def test_truncated_run_keeps_arrived_blocks(fault_server, mount, tree):
    """Runs of 1M blocks cut after 1.5 MiB: the block that arrived whole is
    kept (never asked for again), the rest is retried; the bytes are right."""
    srv = fault_server(tree)
    # Every GET: a lone 1M block is whole before the cut (then FIN).
    srv.add_fault("truncate", path="/t.bin", count=None, after=3 * MiB // 2)
    m = mount(srv.url, {"block_size": "1M", "request_size": "8M",
                        "connections": "4", "retries": "5"})
    path = m.file("t.bin")
    assert sha256_file(path) == sha256_file(os.path.join(tree, "t.bin"))
    log = [r for r in srv.requests("GET", "/t.bin")]
    cut = [r for r in log if r[5] == "truncate"]
    runs = [r for r in cut if span(r[2])[1] - span(r[2])[0] + 1 >= 2 * MiB]
    assert runs, "no run was truncated: %s" % [r[2] for r in log]
    for r in runs:
        s = span(r[2])[0]
        later = log[log.index(r) + 1:]
        assert not [x for x in later if span(x[2])[0] == s], \
            "block at %d fetched again after it arrived" % s
        assert [x for x in later if span(x[2])[0] == s + MiB], \
            "the cut block at %d was not retried" % (s + MiB)
    assert m.stats()["retries"] >= len(runs)


def test_cut_runs_without_retries_give_right_bytes_or_eio(fault_server,
                                                          mount, tree):
    """No retries left and every GET cut after 1.5 MiB (a stall, then the
    server closes): each run keeps its first block, its other blocks fail
    (errors counted) and a reader that asks for one again fetches it alone
    (1 MiB, not cut) or gets EIO; never a wrong byte."""
    srv = fault_server(tree)
    srv.add_fault("stall", path="/t.bin", count=None, after=3 * MiB // 2,
                  seconds=0.3, then="close")
    m = mount(srv.url, {"block_size": "1M", "request_size": "8M",
                        "connections": "4", "retries": "0"})
    want = open(os.path.join(tree, "t.bin"), "rb").read()
    fd = os.open(m.file("t.bin"), os.O_RDONLY)
    got, err = b"", None
    try:
        while len(got) < len(want):
            try:
                d = os.pread(fd, MiB, len(got))
            except OSError as e:
                err = e.errno
                break
            if not d:
                break
            got += d
    finally:
        os.close(fd)
    assert err in (None, errno.EIO), err
    assert got == want[:len(got)], "wrong bytes before %d" % len(got)
    if err is None:
        assert len(got) == len(want)
    log = srv.requests("GET", "/t.bin")
    assert [r for r in log if span(r[2])[1] - span(r[2])[0] + 1 >= 2 * MiB]
    st = m.stats()
    assert st["errors_other"] >= 1 and st["retries"] == 0, st
