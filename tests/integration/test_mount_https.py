"""The mount over HTTPS, against a real nginx with TLS that offers HTTP/2
(ALPN): the certificate is verified (against the system's store, or the
ca_file given) unless `insecure` says otherwise, every byte arrives, and
range requests go over HTTP/1.1, one transfer a TCP connection. (With
HTTP/2 libcurl carried a thread's transfers over one connection, and a
transfer reusing a handle failed: reads got EIO.)"""

import os
import subprocess

import pytest

import wfs_testlib as lib
from servers.nginx import make_cert
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


def test_https_ca_file_verifies(mount, tls_web):
    """The server's own certificate as the CA: verified, no insecure."""
    srv, sums = tls_web
    m = mount(srv.url, {"ca_file": os.path.join(srv.workdir, "cert.pem")})
    assert sha256_file(m.file("odd.bin")) == sums["odd.bin"]


def test_https_ca_file_relative_path_daemonized(tls_web, tmp_path):
    """A relative ca_file still names the file once the daemon has left
    its working directory (it is resolved at mount)."""
    srv, sums = tls_web
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = subprocess.run([lib.WEIGHTFS, "-o", "ca_file=cert.pem", srv.url,
                        str(mp)], cwd=srv.workdir, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        assert sha256_file(str(mp / "odd.bin")) == sums["odd.bin"]
    finally:
        lib.unmount(str(mp))


def test_https_ca_file_of_another_ca_refused(weightfs_run, tls_web,
                                             tmp_path):
    srv, _ = tls_web
    other = tmp_path / "other-ca"
    other.mkdir()
    make_cert(str(other))
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = weightfs_run("-o", "ca_file=%s" % (other / "cert.pem"), srv.url,
                     str(mp))
    check_refused(r, str(mp), "certificate", "tls", "ssl", "verify")


def test_ca_file_unreadable_exits_2(weightfs_run, tls_web, tmp_path):
    srv, _ = tls_web
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = weightfs_run("-o", "ca_file=/no/such/ca.pem", srv.url, str(mp))
    check_refused(r, str(mp), "ca_file")


def test_aws_ca_bundle_is_s3s_default(weightfs_run, mount, tls_web,
                                      tmp_path):
    """$AWS_CA_BUNDLE is the CA file of S3 sources (as the AWS tools read
    it; one that cannot be read exits 2 before anything is fetched), and
    means nothing to an HTTP source."""
    srv, sums = tls_web
    mp = tmp_path / "mnt"
    mp.mkdir()
    env = dict(os.environ, AWS_CA_BUNDLE="/no/such/bundle.pem",
               AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y")
    r = weightfs_run("-o", "endpoint=https://127.0.0.1:9/", "s3://bucket",
                     str(mp), env=env)
    check_refused(r, str(mp), "ca_file")
    assert "/no/such/bundle.pem" in r.stderr
    m = mount(srv.url, {"insecure": True}, env=env)
    assert sha256_file(m.file("odd.bin")) == sums["odd.bin"]
