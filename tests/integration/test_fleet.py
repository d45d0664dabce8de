"""Many nodes on one machine: N weightfs daemons (each its own mount,
cache and fetch engine) read the same file at the same moment through
one rack cache (packaging/rack-cache/nginx-http.conf.template: nginx
proxy_cache + slice + proxy_cache_lock) in front of a throttled origin
(nginx limit_rate, as tools/bench-net). The origin must see each byte
about once (<= 1.05x the file), whatever the number of nodes; a node
whose cache dies mid-read reads on from the next proxy of its list, or
from the origin, with right bytes.

Loopback addresses always (origin 127.0.0.1, cache 127.0.0.2); the same
run with each node in its own network namespace behind a veth pair where
namespaces can be made (root, iproute2), skipped with the reason
otherwise. tools/bench-fleet prints the figures (times, warm cache,
direct vs cached) and tools/fleet-model the arithmetic they agree with."""

import hashlib
import os
import shutil
import subprocess
import threading
import time

import pytest

import wfs_testlib as lib
from benchlib import RackCache
from wfs_testlib import MiB, write_random

SIZE = 64 * MiB
SLICE = "4m"
NODE_OPTS = {"block_size": "4M", "request_size": "8M", "connections": 8,
             "cache_mem": "160M"}


@pytest.fixture(scope="module")
def origin(nginx_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet") / "root"
    root.mkdir()
    digest = write_random(str(root / "model.bin"), SIZE, seed=41)
    # 40 MiB/s per connection: a store's per-connection cap.
    return nginx_session(str(root), extra="        limit_rate 40m;"), digest


@pytest.fixture
def rack(tmp_path, origin):
    made = []

    def start(name="rack", listen_host="127.0.0.2"):
        srv, _ = origin
        rc = RackCache("nginx-http.conf.template", str(tmp_path / name),
                       "127.0.0.1", srv.port, slice_size=SLICE,
                       listen_host=listen_host)
        made.append(rc)
        return rc
    yield start
    for rc in made:
        rc.stop()


def origin_file_bytes(srv, name="/model.bin", since=0):
    reqs = [r for r in srv.requests()[since:]
            if r["method"] == "GET" and r["uri"] == name]
    return sum(r["bytes"] for r in reqs), len(reqs)


def sha256_path(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MiB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def read_all_at_once(paths):
    """Read every path in its own thread, started together: their
    digests, in order."""
    out = [None] * len(paths)
    go = threading.Barrier(len(paths))

    def one(i):
        go.wait()
        try:
            out[i] = sha256_path(paths[i])
        except OSError as e:
            out[i] = "error: %s" % e
    ts = [threading.Thread(target=one, args=(i,)) for i in range(len(paths))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    return out


def no_proxy_env():
    return {k: v for k, v in os.environ.items()
            if k.lower() not in ("http_proxy", "https_proxy", "all_proxy",
                                 "no_proxy")}


def test_four_nodes_one_origin_read(mount, origin, rack):
    srv, digest = origin
    rc = rack()
    since = len(srv.requests())
    nodes = [mount(srv.url, dict(NODE_OPTS, proxy=rc.url),
                   env=no_proxy_env()) for _ in range(4)]
    got = read_all_at_once([m.file("model.bin") for m in nodes])
    assert got == [digest] * 4, got
    sent, n = origin_file_bytes(srv, since=since)
    assert sent <= 1.05 * SIZE, \
        "origin sent %.2fx the file in %d requests" % (sent / SIZE, n)
    assert sent >= SIZE
    # Each slice once: 64 MiB / 4 MiB.
    assert n <= SIZE // (4 * MiB) + 2, n
    served = sum(r["bytes"] for r in rc.requests() if r["uri"] == "/model.bin")
    assert served >= 4 * SIZE


def test_warm_cache_no_origin_bytes(mount, origin, rack):
    srv, digest = origin
    rc = rack()
    m = mount(srv.url, dict(NODE_OPTS, proxy=rc.url), env=no_proxy_env())
    assert read_all_at_once([m.file("model.bin")]) == [digest]
    since = len(srv.requests())
    m2 = mount(srv.url, dict(NODE_OPTS, proxy=rc.url), env=no_proxy_env())
    assert read_all_at_once([m2.file("model.bin")]) == [digest]
    assert origin_file_bytes(srv, since=since) == (0, 0)


@pytest.mark.parametrize("fallback", ["direct", "second_proxy"])
def test_cache_dies_mid_read(mount, origin, rack, fallback):
    srv, digest = origin
    rc = rack()
    spare = rack("spare", listen_host="127.0.0.3") \
        if fallback == "second_proxy" else None
    chain = "%s|%s" % (rc.url, spare.url if spare else "direct")
    nodes = [mount(srv.url, dict(NODE_OPTS, proxy=chain, connections=4),
                   env=no_proxy_env()) for _ in range(2)]
    result = []
    t = threading.Thread(target=lambda: result.extend(
        read_all_at_once([m.file("model.bin") for m in nodes])))
    t.start()
    # Kill the cache once the nodes are well into the file.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if sum(r["bytes"] for r in rc.requests()) >= SIZE // 2:
            break
        time.sleep(0.05)
    rc.kill()
    t.join(300)
    assert result == [digest] * 2, (result, [m.log()[-3000:] for m in nodes])
    if spare:
        assert any(r["uri"] == "/model.bin" for r in spare.requests())


def _netns_reason():
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip") or not shutil.which("nsenter"):
        return "iproute2 (ip) or nsenter missing"
    name = "wfsprobe%d" % os.getpid()
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True,
                       text=True)
    if r.returncode:
        return "cannot create a network namespace: " + r.stderr.strip()
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


class NetnsNodes:
    """@n network namespaces, node i behind veth pair 10.201.i.1 (host
    side) - 10.201.i.2 (its side); torn down by close()."""

    def __init__(self, n):
        self.tag = "wfs%d" % (os.getpid() % 100000)
        self.names = []
        for i in range(n):
            ns = "%sn%d" % (self.tag, i)
            host_if, ns_if = "%sh%d" % (self.tag, i), "%sv%d" % (self.tag, i)
            self.names.append(ns)
            for cmd in (["ip", "netns", "add", ns],
                        ["ip", "link", "add", host_if, "type", "veth",
                         "peer", "name", ns_if],
                        ["ip", "link", "set", ns_if, "netns", ns],
                        ["ip", "addr", "add", "10.201.%d.1/24" % i, "dev",
                         host_if],
                        ["ip", "link", "set", host_if, "up"],
                        ["ip", "-n", ns, "addr", "add", "10.201.%d.2/24" % i,
                         "dev", ns_if],
                        ["ip", "-n", ns, "link", "set", ns_if, "up"],
                        ["ip", "-n", ns, "link", "set", "lo", "up"]):
                subprocess.run(cmd, check=True, capture_output=True)

    def prefix(self, i):
        """The command prefix that runs a program in node @i's network
        namespace (mounts stay visible: only the network is entered)."""
        return ["nsenter", "--net=/run/netns/" + self.names[i]]

    def close(self):
        for i, ns in enumerate(self.names):
            subprocess.run(["ip", "link", "del", "%sh%d" % (self.tag, i)],
                           capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_four_nodes_in_network_namespaces(origin, tmp_path):
    reason = _netns_reason()
    if reason:
        pytest.skip(reason)
    srv, digest = origin
    ns = NetnsNodes(4)
    caches, procs, mps = [], [], []
    try:
        # One cache, listening on each node's host-side address (a node
        # reaches only its own link).
        rc = RackCache("nginx-http.conf.template", str(tmp_path / "rack"),
                       "127.0.0.1", srv.port, slice_size=SLICE,
                       listen_host="0.0.0.0")
        caches.append(rc)
        since = len(srv.requests())
        opts = ",".join("%s=%s" % kv for kv in NODE_OPTS.items())
        for i in range(4):
            mp = tmp_path / ("mnt%d" % i)
            mp.mkdir()
            log = open(str(tmp_path / ("node%d.log" % i)), "wb")
            p = subprocess.Popen(
                ns.prefix(i) + [lib.WEIGHTFS, "-f", "-o", opts +
                                ",proxy=http://10.201.%d.1:%d" % (i, rc.port),
                                srv.url, str(mp)],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                env=no_proxy_env())
            log.close()
            procs.append(p)
            mps.append(str(mp))
        for mp, p in zip(mps, procs):
            assert lib.wait_until(lambda: lib.is_mounted(mp) or
                                  p.poll() is not None, 30)
            assert lib.is_mounted(mp), open(
                str(tmp_path / ("node%d.log" % procs.index(p)))).read()
        got = read_all_at_once([os.path.join(mp, "model.bin") for mp in mps])
        assert got == [digest] * 4, got
        sent, n = origin_file_bytes(srv, since=since)
        assert SIZE <= sent <= 1.05 * SIZE, (sent / SIZE, n)
    finally:
        for mp in mps:
            lib.unmount(mp)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        for rc in caches:
            rc.stop()
        ns.close()


# -- S3 through packaging/rack-cache/nginx-s3.conf.template ---------------

S3_SIZE = 32 * MiB


@pytest.fixture
def s3_origin():
    from servers.s3_verify import S3VerifyServer
    srv = S3VerifyServer()
    data = lib.random_bytes(S3_SIZE, 43)
    srv.put("models/model.bin", data)
    srv.add_credentials("AKIDFLEET", "fleet/secret")
    yield srv, hashlib.sha256(data).hexdigest()
    srv.stop()


def s3_env(tmp_path, signed):
    from s3_fixtures import aws_env
    extra = {"AWS_REGION": "us-east-1"}
    if signed:
        extra.update(AWS_ACCESS_KEY_ID="AKIDFLEET",
                     AWS_SECRET_ACCESS_KEY="fleet/secret")
    return aws_env(tmp_path, **extra)


def check_s3_origin(srv):
    assert not srv.errors(), srv.errors()[:3]
    gets = [r for r in srv.log if r["method"] == "GET" and
            r["path"] == "/bucket/models/model.bin"]
    # One request per 4 MiB slice, each exactly a slice: the node's ranges
    # were rewritten, and signatures (where sent) still held.
    assert len(gets) == S3_SIZE // (4 * MiB), [g["range"] for g in gets]
    for g in gets:
        a, b = map(int, g["range"][6:].split("-"))
        assert a % (4 * MiB) == 0 and b - a + 1 == 4 * MiB, g["range"]


def test_s3_signed_nodes_through_forward_cache(mount, s3_origin, tmp_path):
    srv, digest = s3_origin
    rc = RackCache("nginx-s3.conf.template", str(tmp_path / "rack"),
                   "127.0.0.1", srv.port, slice_size=SLICE)
    try:
        nodes = [mount("s3://bucket/models", dict(
            NODE_OPTS, endpoint=srv.url, path_style=True, proxy=rc.url),
            env=s3_env(tmp_path, True)) for _ in range(3)]
        got = read_all_at_once([m.file("model.bin") for m in nodes])
        assert got == [digest] * 3, (got, srv.errors()[:2])
        check_s3_origin(srv)
        assert any(r["access_key"] == "AKIDFLEET" for r in srv.log)
    finally:
        rc.stop()


def test_s3_anonymous_nodes_through_reverse_cache(mount, s3_origin,
                                                  tmp_path):
    srv, digest = s3_origin
    srv.anonymous = True
    rc = RackCache("nginx-s3.conf.template", str(tmp_path / "rack"),
                   "127.0.0.1", srv.port, slice_size=SLICE)
    try:
        nodes = [mount("s3://bucket/models", dict(
            NODE_OPTS, endpoint=rc.url, path_style=True,
            no_sign_request=True), env=s3_env(tmp_path, False))
            for _ in range(3)]
        got = read_all_at_once([m.file("model.bin") for m in nodes])
        assert got == [digest] * 3, got
        check_s3_origin(srv)
    finally:
        rc.stop()


# -- the tools -------------------------------------------------------------

TOOLS = os.path.join(lib.REPO, "tools")


def test_fleet_model_arithmetic():
    import json
    r = subprocess.run([os.path.join(TOOLS, "fleet-model"), "--nodes",
                        "1000", "--per-rack", "40", "--model", "140GB",
                        "--request", "8MB", "--granule", "8MB", "--json"],
                       capture_output=True, text=True, check=True)
    s = json.loads(r.stdout)["shapes"]
    assert s["direct"]["gets"] == 17_500_000
    assert abs(s["direct"]["seconds"] / 60 - 53.03) < 0.01
    assert s["rack cache"]["gets"] == 25 * 17_500
    assert s["rack cache"]["bytes_per_model_byte"] == 25
    assert s["p2p"]["bytes"] == 140 * 10 ** 9


def test_bench_fleet_runs_and_agrees_with_the_model(tmp_path):
    """At a small size: every row there, the cached rows' origin bytes and
    GETs equal fleet-model's."""
    r = subprocess.run([os.path.join(TOOLS, "bench-fleet"), "--nodes", "2",
                        "--size", "16M", "--block-size", "1M",
                        "--request-size", "4M", "--connections", "4"],
                       capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, WEIGHTFS_BUILD=lib.BUILD))
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {}
    for line in r.stdout.splitlines():
        f = line.split()
        if f and f[0] == "2":
            shape = " ".join(f[1:-6])
            rows[shape] = [float(x.rstrip("x")) for x in f[-6:]]
    assert set(rows) == {"direct", "cold cache", "warm cache"}, r.stdout
    t, ratio, bpm, gets, model_bpm, model_gets = rows["cold cache"]
    assert bpm == model_bpm == 1.0 and gets == model_gets == 16, r.stdout
    assert rows["warm cache"][2] == 0 and rows["warm cache"][3] == 0
    assert rows["direct"][2] == rows["direct"][4] == 2.0
