"""connections=auto (the default) against a link that caps each connection
(nginx limit_rate): more connections pay there, so the tuner must grow
past its start (16) while a sequential read returns the right bytes; a
fixed connections=N must stay N; connections_max bounds the growth; and
`weightfs-ctl stats` shows the limit in use (connections_now)."""

import json
import os
import threading
import time

import pytest

import wfs_testlib as lib

MiB = 1024 * 1024
SIZE = 192 * MiB
BLOCK = "4M"
# Per connection. nginx sends a request's first second of bytes at once,
# so a 4 MiB block takes about 1 s: 4 MiB/s per connection, 64 MiB/s for
# 16 of them.
RATE = "2m"
START = 16

# A throttled subdirectory: /slow/ is the data dir, capped per connection.
SLOW = """\
        location /slow/ {{
            alias {root}/;
            autoindex on;
            autoindex_format json;
            autoindex_exact_size on;
            limit_rate {rate};
        }}
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("conn-auto")
    path = str(d / "model.bin")
    lib.write_random(path, SIZE, seed=10)
    return str(d), lib.sha256_file(path)


@pytest.fixture
def link(nginx, data):
    root, _ = data
    srv = nginx(root, extra=SLOW.format(root=root, rate=RATE))
    return srv.url + "slow/"


def _now(m):
    """connections_now, from the root's stats xattr (what `weightfs-ctl
    stats` prints; read in-process, cheap enough to sample often)."""
    return json.loads(os.getxattr(m.path, "user.weightfs.stats"))[
        "connections_now"]


def _read_sampling(m, path):
    """sha256 of @path read sequentially, and the connections_now values
    the stats showed meanwhile (every 0.05 s) and after."""
    seen = []
    done = threading.Event()

    def sample():
        while not done.wait(0.05):
            try:
                seen.append(_now(m))
            except (OSError, KeyError, ValueError):
                pass
    t = threading.Thread(target=sample)
    t.start()
    try:
        digest = lib.sha256_file(path)
    finally:
        done.set()
        t.join()
    seen.append(m.stats()["connections_now"])
    return digest, seen


@pytest.mark.asan
def test_auto_grows_on_capped_link(mount, link, data):
    """Default options: the limit starts at 16, rises on a link where each
    connection is capped, never passes the maximum (64), and the bytes are
    right."""
    _, want = data
    m = mount(link, {"block_size": BLOCK})
    s = m.stats()
    assert s["connections_max"] == 64, s
    assert s["connections_now"] == START, s
    t0 = time.monotonic()
    digest, seen = _read_sampling(m, m.file("model.bin"))
    took = time.monotonic() - t0
    assert digest == want
    assert max(seen) > START, "limit never rose: %s (read took %.1f s)" % (
        seen, took)
    assert max(seen) <= 64, seen


def test_auto_within_connections_max(mount, link, data):
    """connections_max=24: it grows to 24 at most."""
    _, want = data
    m = mount(link, {"block_size": BLOCK, "connections": "auto",
                     "connections_max": 24})
    assert m.stats()["connections_max"] == 24
    digest, seen = _read_sampling(m, m.file("model.bin"))
    assert digest == want
    assert max(seen) == 24, seen


@pytest.mark.asan
def test_fixed_connections_stay(mount, link, data):
    """connections=N: N from start to end, however much more would pay;
    nginx sees no more than N connections."""
    _, want = data
    m = mount(link, {"block_size": BLOCK, "connections": 12})
    s = m.stats()
    assert s["connections_now"] == 12 and s["connections_max"] == 12, s
    path = m.file("model.bin")
    f = os.open(path, os.O_RDONLY)
    try:
        # A third of the file is enough to show it (12 x 4 MiB/s).
        got = os.read(f, 48 * MiB)
        while len(got) < 48 * MiB:
            b = os.read(f, 48 * MiB - len(got))
            assert b
            got += b
    finally:
        os.close(f)
    assert lib.sha256_bytes(got) == lib.sha256_bytes(
        open(os.path.join(data[0], "model.bin"), "rb").read(48 * MiB))
    s = m.stats()
    assert s["connections_now"] == 12 and s["connections_max"] == 12, s
