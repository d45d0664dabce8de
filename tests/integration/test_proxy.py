"""Proxies: -o proxy=URL (HTTP forward proxy, CONNECT for HTTPS, SOCKS5),
credentials from a file only (never on the command line, in logs, stats or
xattrs), the conventional HTTPS_PROXY/HTTP_PROXY/NO_PROXY variables,
proxy=none, a list that fails over to the next entry (direct: the origin)
while a proxy cannot be reached, and Dragonfly's headers with p2p_tag.
The proxy is a small one of our own (servers/forward_proxy.py) that
records what it relayed."""

import os
import subprocess

import pytest

import wfs_testlib as lib
from servers.forward_proxy import ForwardProxy
from servers.nginx import free_port
from wfs_testlib import MiB, sha256_file, write_random

from test_mount_badinput import check_refused

SECRET = "pr0xy-s3cret-7f3a"


@pytest.fixture(scope="module")
def origin(nginx_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("proxy") / "root"
    root.mkdir()
    sums = {"a.bin": write_random(str(root / "a.bin"), 6 * MiB + 5, seed=31)}
    return nginx_session(str(root)), sums


@pytest.fixture(scope="module")
def tls_origin(nginx_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("proxytls") / "root"
    root.mkdir()
    sums = {"t.bin": write_random(str(root / "t.bin"), 3 * MiB + 1, seed=32)}
    return nginx_session(str(root), tls=True), sums


@pytest.fixture
def proxy():
    made = []

    def start(**kw):
        p = ForwardProxy(**kw)
        made.append(p)
        return p
    yield start
    for p in made:
        p.stop()


def clean_env(**extra):
    """The environment without any proxy variable, plus @extra."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy",
                                "no_proxy")}
    env.update(extra)
    return env


def port_of(url):
    return int(url.rstrip("/").rsplit(":", 1)[1])


OPTS = {"block_size": "1M", "request_size": "2M", "connections": 4}


def check_reads(m, sums):
    for name, digest in sums.items():
        assert sha256_file(m.file(name)) == digest, name


def test_http_through_proxy(mount, origin, proxy):
    srv, sums = origin
    p = proxy()
    m = mount(srv.url, dict(OPTS, proxy=p.url), env=clean_env())
    check_reads(m, sums)
    kinds = {r["kind"] for r in p.seen}
    assert kinds == {"http"}, p.seen
    target = "127.0.0.1:%d" % port_of(srv.url)
    assert {r["target"] for r in p.seen} == {target}
    # Data GETs went through it too, not just the listing.
    assert any("a.bin" in r["request"] for r in p.seen), p.seen


def test_https_through_connect(mount, tls_origin, proxy):
    srv, sums = tls_origin
    p = proxy()
    m = mount(srv.url, dict(OPTS, proxy=p.url, insecure=True),
              env=clean_env())
    check_reads(m, sums)
    assert p.seen and {r["kind"] for r in p.seen} == {"connect"}, p.seen


def test_socks5(mount, origin, proxy):
    srv, sums = origin
    p = proxy()
    m = mount(srv.url, dict(OPTS, proxy=p.url.replace("http", "socks5h")),
              env=clean_env())
    check_reads(m, sums)
    assert p.seen and {r["kind"] for r in p.seen} == {"socks5"}, p.seen


def test_credentials_from_file_never_shown(mount, origin, proxy, tmp_path):
    srv, sums = origin
    p = proxy(auth="weights:" + SECRET)
    # Without credentials: the proxy says 407, the mount is refused.
    mp = tmp_path / "nocred"
    mp.mkdir()
    # (not weightfs_run: its teardown would kill the mount below)
    r = subprocess.run([lib.WEIGHTFS, "-o", "proxy=" + p.url, srv.url,
                        str(mp)], capture_output=True, text=True,
                       env=clean_env(), timeout=60)
    assert r.returncode != 0 and not lib.is_mounted(str(mp)), r
    cred = tmp_path / "proxy.cred"
    cred.write_text("weights:%s\n" % SECRET)
    os.chmod(str(cred), 0o600)
    m = mount(srv.url, dict(OPTS, proxy=p.url,
                            proxy_credentials=str(cred)),
              env=clean_env(), debug=True)
    check_reads(m, sums)
    assert all(r["auth"] == "weights:" + SECRET
               for r in p.seen[1:]), p.seen
    stats = subprocess.run([lib.WEIGHTFS_CTL, "stats", m.path], capture_output=True,
                           text=True).stdout
    names = os.listxattr(m.path)
    values = "".join(os.getxattr(m.path, n).decode(errors="replace")
                     for n in names)
    with open("/proc/%d/cmdline" % m.pid, "rb") as f:
        cmdline = f.read().decode(errors="replace")
    for where, text in (("log", m.log()), ("stats", stats),
                        ("xattrs", values), ("cmdline", cmdline),
                        ("stderr", r.stderr)):
        assert SECRET not in text, "credentials in the %s" % where


def test_credentials_in_url_refused(weightfs_run, origin, tmp_path):
    srv, _ = origin
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = weightfs_run("-o", "proxy=http://u:%s@127.0.0.1:1" % SECRET,
                     srv.url, str(mp), env=clean_env())
    check_refused(r, str(mp), "credentials")
    assert SECRET not in r.stderr


@pytest.mark.parametrize("bad", ["ftp://h:1", "http://", "direct|http://h:1",
                                 "http://a:1|http://b:1|http://c:1|"
                                 "http://d:1|direct", "http://a b:1"])
def test_bad_proxy_refused(weightfs_run, origin, tmp_path, bad):
    srv, _ = origin
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = weightfs_run("-o", "proxy=" + bad, srv.url, str(mp), env=clean_env())
    check_refused(r, str(mp), "proxy")


def test_environment_variables(mount, origin, proxy):
    srv, sums = origin
    p = proxy()
    # HTTP_PROXY (upper case, which libcurl alone ignores) is honoured.
    m = mount(srv.url, OPTS, env=clean_env(HTTP_PROXY=p.url))
    check_reads(m, sums)
    assert p.seen and {r["kind"] for r in p.seen} == {"http"}
    m.finish()
    # NO_PROXY names the origin: straight there.
    n = len(p.seen)
    m = mount(srv.url, OPTS, env=clean_env(HTTP_PROXY=p.url,
                                           NO_PROXY="127.0.0.1"))
    check_reads(m, sums)
    m.finish()
    # proxy=none: the environment is ignored.
    m = mount(srv.url, dict(OPTS, proxy="none"),
              env=clean_env(HTTP_PROXY=p.url, http_proxy=p.url,
                            ALL_PROXY=p.url))
    check_reads(m, sums)
    assert len(p.seen) == n, p.seen[n:]


def test_https_proxy_variable(mount, tls_origin, proxy):
    srv, sums = tls_origin
    p = proxy()
    m = mount(srv.url, dict(OPTS, insecure=True),
              env=clean_env(HTTPS_PROXY=p.url))
    check_reads(m, sums)
    assert p.seen and {r["kind"] for r in p.seen} == {"connect"}


def test_list_fails_over(mount, origin, proxy):
    """The first proxy is down: the second serves; both down: direct."""
    srv, sums = origin
    p = proxy()
    dead = "http://127.0.0.1:%d" % free_port()
    m = mount(srv.url, dict(OPTS, proxy="%s|%s" % (dead, p.url)),
              env=clean_env())
    check_reads(m, sums)
    assert p.seen
    m.finish()
    n = len(p.seen)
    dead2 = "http://127.0.0.1:%d" % free_port()
    m = mount(srv.url, dict(OPTS, proxy="%s|%s|direct" % (dead, dead2)),
              env=clean_env())
    check_reads(m, sums)
    assert len(p.seen) == n


def test_p2p_tag_sends_dragonfly_headers(mount, origin, proxy):
    srv, sums = origin
    p = proxy()
    m = mount(srv.url, {"block_size": "4M", "range_align": "8M",
                        "connections": 2, "proxy": p.url,
                        "p2p_tag": "llama-70b@abc123"}, env=clean_env())
    check_reads(m, sums)
    data = [r for r in p.seen if "range" in r["headers"]]
    assert data, p.seen
    for r in data:
        h = r["headers"]
        assert h.get("x-dragonfly-tag") == "llama-70b@abc123", h
        assert h.get("x-dragonfly-use-p2p") == "true", h
        assert h.get("x-dragonfly-piece-length") == "8mib", h
        # No header that differs from node to node on a data GET.
        assert not set(h) & {"x-request-id", "date", "cookie"}, h


def test_p2p_tag_needs_4m_pieces(weightfs_run, origin, tmp_path):
    srv, _ = origin
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = weightfs_run("-o", "block_size=1M,p2p_tag=x", srv.url, str(mp),
                     env=clean_env())
    check_refused(r, str(mp), "range_align")
