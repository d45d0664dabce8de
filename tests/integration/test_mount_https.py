"""The mount over HTTPS, against a real nginx with TLS that offers HTTP/2
(ALPN): the certificate is verified unless `insecure` says otherwise, every
byte arrives, and range requests go over HTTP/1.1, one transfer a TCP
connection. (With HTTP/2 libcurl carried a thread's transfers over one
connection, and a transfer reusing a handle failed: reads got EIO.)"""

import os

import pytest

from wfs_testlib import MiB, sha256_file, write_random

from test_mount_badinput import check_refused


@pytest.fixture(scope="module")
def tls_web(nginx_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("https") / "root"
    root.mkdir()
    sums = {
        "big.bin": write_random(str(root / "big.bin"), 64 * MiB, seed=21),
        "odd.bin": write_random(str(root / "odd.bin"), 3 * MiB + 7, seed=22),
    }
    return nginx_session(root, tls=True), sums


def test_https_reads_right_bytes_over_http1(mount, tls_web):
    srv, sums = tls_web
    assert srv.url.startswith("https://")
    m = mount(srv.url, {"insecure": True, "block_size": "2M",
                        "request_size": "2M", "connections": 16})
    for name, digest in sums.items():
        assert sha256_file(m.file(name)) == digest, name
    gets = [r for r in srv.requests()
            if r["method"] == "GET" and r["uri"] == "/big.bin"]
    assert len(gets) >= 32, gets
    assert {r["proto"] for r in gets} == {"HTTP/1.1"}, \
        "range requests over %s" % sorted({r["proto"] for r in gets})
    conns = {(r["pid"], r["conn"]) for r in gets}
    # 16 connections wanted and 32 blocks read ahead at once: HTTP/2 put
    # them on 3 connections.
    assert len(conns) >= 6, "%d GETs over %d connections" % (len(gets),
                                                              len(conns))


def test_https_unverified_certificate_refused(weightfs_run, tls_web,
                                              tmp_path):
    srv, _ = tls_web
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = weightfs_run(srv.url, str(mp))
    check_refused(r, str(mp), "certificate", "tls", "ssl", "verify")
