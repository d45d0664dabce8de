"""HTTP directory listings (issue 23 item 4, issue 25 item 7): a listing is
one request (no HEAD per file: a file's ETag is taken from its first
block), parsed as a stream into the tree, its memory given back after;
`ls -l` gets the attributes with the names (READDIRPLUS). A file changed
after the listing reads as one version or fails, never a mix."""

import errno
import os

import pytest

from wfs_testlib import MiB, random_bytes

OPTS = {"block_size": "1M"}


def test_listed_directory_costs_one_request(mount, nginx, tmp_path):
    """`ls -l` of a directory: one GET of its index, no HEAD, no GET of a
    file; sizes and mtimes as the server has them."""
    root = tmp_path / "src"
    (root / "many").mkdir(parents=True)
    (root / "many" / "sub").mkdir()
    want = {}
    for i in range(300):
        p = root / "many" / ("f%03d.bin" % i)
        p.write_bytes(b"%d" % i * (i % 7))
        os.utime(p, (1700000000 + i, 1700000000 + i))
        want[p.name] = (p.stat().st_size, 1700000000 + i)
    srv = nginx(root)
    m = mount(srv.url, OPTS)
    got = {}
    with os.scandir(m.file("many")) as it:
        for e in it:
            st = e.stat()
            if e.is_file():
                got[e.name] = (st.st_size, int(st.st_mtime))
    assert got == want
    reqs = srv.requests()
    assert not [r for r in reqs if r["method"] == "HEAD"], reqs
    listings = [r for r in reqs if r["uri"] == "/many/"]
    assert len(listings) == 1, listings
    assert not [r for r in reqs if r["uri"].endswith(".bin")], reqs
    # Reads still right, pinned from the first block on.
    with open(m.file("many/f299.bin"), "rb") as f:
        assert f.read() == b"299" * (299 % 7)


def test_changed_after_listing_reads_one_version(mount, fault_server,
                                                 tmp_path):
    """Changed between the listing and the first read: a file of the same
    size reads whole as the new version (its first block's ETag pins the
    rest); one of another size fails with EIO. Never a mix."""
    root = tmp_path / "src"
    root.mkdir()
    size = 8 * MiB + 5
    old, new = random_bytes(size, 1), random_bytes(size, 2)
    (root / "same.bin").write_bytes(old)
    (root / "grown.bin").write_bytes(old)
    srv = fault_server(str(root))
    m = mount(srv.url, dict(OPTS, prefetch="off", readahead_max="1M"))
    assert sorted(os.listdir(m.path)) == ["grown.bin", "same.bin"]
    srv.replace("same.bin", new)
    srv.replace("grown.bin", old + b"more")
    with open(m.file("same.bin"), "rb") as f:
        assert f.read() == new
    with pytest.raises(OSError) as e:
        with open(m.file("grown.bin"), "rb") as f:
            f.read()
    assert e.value.errno == errno.EIO
    assert not [r for r in srv.log if r[0] == "HEAD"], srv.log
