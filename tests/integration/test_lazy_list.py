"""Lazy listing (-o list=lazy, the default): a deep tree mounts with only
its root listed, each directory is listed (one level) when first looked
in, `find` sees the same tree as an eager mount, a directory whose listing
fails gives EIO to that lookup only (and is listed by a later one), and
many parallel lookups in one unlisted directory make one listing.

Against s3rver (an independent S3 implementation), the SigV4-checking S3
server (servers/s3_verify.py, for failures and request counts) and nginx
(JSON autoindex, its access log)."""

import errno
import os
import threading
import urllib.parse

import pytest

import wfs_testlib as lib

pytest.importorskip("botocore", reason="needs botocore (Debian "
                    "python3-botocore; run pytest with /usr/bin/python3)")
from s3_fixtures import (  # noqa: E402,F401 (fixtures)
    S3RVER_KEY, aws_env, mount_tree, s3_verify, s3rver)

pytestmark = pytest.mark.asan

AK, SK = "AKIDWEIGHTFSTEST", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYWEIGHTFS"

# A tree 6 levels deep with files at every level, a wide directory and
# odd names (the prefix of a delimited listing is URL-encoded and signed).
DEEP = "a/b/c/d/e/f"
SPEC = {"top.bin": 100, "a/one.bin": 1000, "a/b/two.bin": 2000,
        "a/b/c/three.bin": 3, "a/b/c/d/four.bin": 4, "a/b/c/d/e/five.bin": 5,
        "a/b/c/d/e/f/deep.bin": 3 * lib.MiB + 5, "a/b/c/d/e/f/g.bin": 7,
        "a/b/c/sib/x.bin": 10, "odd dir+=/\u00fcn.bin": 33,
        "wide/empty.bin": 0}
# Directories holding only directories: s3rver (0.x, a filesystem store)
# leaves such a prefix out of CommonPrefixes, which S3 does not; only the
# S3 server of servers/s3_verify.py gets them.
ONLY_DIRS = {"p/q/r/s.bin": 9}
SPEC.update({"wide/k%04d.bin" % i: 1 + i % 13 for i in range(1100)})


def objects(spec, seed=11):
    return {k: lib.random_bytes(n, (seed, i))
            for i, (k, n) in enumerate(sorted(spec.items()))}


OBJS = objects(SPEC)
ALL = dict(OBJS, **objects(ONLY_DIRS, seed=12))


@pytest.fixture(scope="module")
def bucket(s3rver):
    s3rver.make_bucket("lazy")
    s3rver.upload("lazy", OBJS)
    return "lazy"


def s3rver_mount(mount, s3rver, tmp_path, mode):
    env = aws_env(tmp_path, AWS_ACCESS_KEY_ID=S3RVER_KEY,
                  AWS_SECRET_ACCESS_KEY=S3RVER_KEY)
    return mount("s3://lazy", {"endpoint": s3rver.endpoint, "path_style": True,
                               "block_size": "1M", "list": mode}, env=env)


def test_s3rver_deep_tree_lists_on_demand(s3rver, bucket, mount, tmp_path):
    m = s3rver_mount(mount, s3rver, tmp_path, "lazy")
    assert m.stats()["dirs_listed"] == 1, "more than the root at mount"
    # One file six levels down: each directory on the way listed once.
    with open(m.file(DEEP + "/deep.bin"), "rb") as f:
        assert lib.sha256_bytes(f.read()) == \
            lib.sha256_bytes(OBJS[DEEP + "/deep.bin"])
    assert m.stats()["dirs_listed"] == 1 + 6
    assert sorted(os.listdir(m.file("a/b/c"))) == ["d", "sib", "three.bin"]
    assert m.stats()["dirs_listed"] == 1 + 6, "a listed directory again"
    # find of everything: the same tree as an eager mount, byte for byte.
    lazy_tree = mount_tree(m.path)
    assert lazy_tree == {k: lib.sha256_bytes(v) for k, v in OBJS.items()}
    e = s3rver_mount(mount, s3rver, tmp_path, "eager")
    assert e.stats()["dirs_listed"] == 0
    assert lib.tree_listing(e.path) == lib.tree_listing(m.path)
    assert m.stats()["dirs_listed"] == 1 + 6 + 3  # sib, odd dir, wide


@pytest.fixture
def server(s3_verify):
    s = s3_verify()
    s.add_credentials(AK, SK)
    for k, v in ALL.items():
        s.put(k, v)
    return s


def verify_mount(mount, server, tmp_path, **opts):
    o = {"endpoint": server.url, "block_size": "1M", "retries": 0}
    o.update(opts)
    return mount("s3://bucket", o, env=aws_env(
        tmp_path, AWS_ACCESS_KEY_ID=AK, AWS_SECRET_ACCESS_KEY=SK))


def listings(server, prefix=None):
    out = [r for r in list(server.log) if r["query"]]
    if prefix is not None:
        enc = "prefix=" + urllib.parse.quote(prefix, safe="-_.~")
        out = [r for r in out if enc in r["query"].split("&")]
    return out


def test_mount_lists_only_the_root(server, mount, tmp_path):
    m = verify_mount(mount, server, tmp_path)
    ls = listings(server)
    assert len(ls) == 1 and "delimiter=%2F" in ls[0]["query"], ls
    assert "prefix=" not in ls[0]["query"]
    assert sorted(os.listdir(m.path)) == ["a", "odd dir+=", "p", "top.bin",
                                          "wide"]
    assert len(listings(server)) == 1
    # 1100 keys in one directory: two pages of one delimited listing.
    assert len(os.listdir(m.file("wide"))) == 1101
    assert len(listings(server, "wide/")) == 2
    assert os.path.getsize(m.file("odd dir+=/\u00fcn.bin")) == 33
    assert len(listings(server, "odd dir+=/")) == 1
    # Directories of directories only, down to a file.
    with open(m.file("p/q/r/s.bin"), "rb") as f:
        assert f.read() == ALL["p/q/r/s.bin"]
    # Every directory listed (sizes: reading 1100 files through a server
    # that checks each signature in Python takes long).
    assert {k: v for k, v in lib.tree_listing(m.path).items()
            if v[0] == "f"} == {k: ("f", len(v)) for k, v in ALL.items()}
    assert server.errors() == []


def test_failed_listing_gives_eio_then_retries(server, mount, tmp_path):
    m = verify_mount(mount, server, tmp_path)
    server.fail_list.append(500)  # the next listing (of "a") fails
    with pytest.raises(OSError) as ei:
        os.stat(m.file("a/one.bin"))
    assert ei.value.errno == errno.EIO
    # The rest of the mount works meanwhile.
    with open(m.file("top.bin"), "rb") as f:
        assert f.read() == OBJS["top.bin"]
    # A later lookup lists it again, and succeeds.
    with open(m.file("a/one.bin"), "rb") as f:
        assert f.read() == OBJS["a/one.bin"]
    assert len(listings(server, "a/")) == 2
    assert "listing directory 'a' failed" in m.log()
    assert m.stats()["dirs_listed"] == 2


def test_parallel_lookups_make_one_listing(server, mount, tmp_path):
    m = verify_mount(mount, server, tmp_path)
    server.list_delay = 0.5  # long enough for every lookup to arrive
    names = ["wide/k%04d.bin" % i for i in range(0, 1100, 35)]
    sizes, errs = {}, []
    started = threading.Barrier(len(names))

    # Half open the directory (opendir lists it, and the kernel runs
    # opens in one directory at once), half look names up in it.
    def look(n):
        started.wait()
        try:
            if int(n[-8:-4]) % 2:
                sizes[n] = len(os.listdir(m.file("wide")))
            else:
                sizes[n] = os.stat(m.file(n)).st_size
        except OSError as e:
            errs.append((n, e))
    threads = [threading.Thread(target=look, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errs == []
    assert sizes == {n: 1101 if int(n[-8:-4]) % 2 else len(OBJS[n])
                     for n in names}
    # One listing of "wide/" (two pages), whatever the number of lookups.
    assert len(listings(server, "wide/")) == 2, listings(server, "wide/")
    assert m.stats()["dirs_listed"] == 2


def test_relist_lazy_relists_listed_directories(server, mount, tmp_path):
    m = verify_mount(mount, server, tmp_path, list_ttl=1)
    assert os.path.exists(m.file("a/one.bin"))
    server.put("a/new.bin", b"new")
    server.put("wide/later.bin", b"later")  # never listed: not relisted
    assert lib.wait_until(lambda: os.path.exists(m.file("a/new.bin")), 15)
    assert "relisting failed" not in m.log()
    n = len(listings(server, "wide/"))
    assert n == 0, "an unlisted directory was relisted"
    assert os.path.exists(m.file("wide/later.bin"))


def test_nginx_lazy_matches_eager(nginx, mount, tmp_path):
    root = tmp_path / "www"
    for k, v in OBJS.items():
        if k.startswith("wide/k") and k > "wide/k0050":
            continue  # nginx HEADs each file: keep the test quick
        p = root / k
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(v)
    srv = nginx(root)
    m = mount(srv.url, {"block_size": "1M"})
    indexes = [r for r in srv.requests() if r["method"] == "GET"]
    assert [r["uri"] for r in indexes] == ["/"], indexes
    assert m.stats()["dirs_listed"] == 1
    with open(m.file(DEEP + "/deep.bin"), "rb") as f:
        assert f.read() == OBJS[DEEP + "/deep.bin"]
    assert m.stats()["dirs_listed"] == 7
    e = mount(srv.url, {"block_size": "1M", "list": "eager"})
    assert mount_tree(m.path) == mount_tree(e.path)
    uris = [r["uri"] for r in srv.requests()
            if r["method"] == "GET" and r["uri"].endswith("/")]
    # Each directory's index fetched once per mount.
    assert len(uris) == 2 * len(set(uris)), sorted(uris)


def test_file_lazy_keeps_the_walk_rules(mount, tmp_path):
    root = tmp_path / "src"
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    deep = root / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "x.bin").write_bytes(b"x" * 100)
    (deep / "ro.bin").write_bytes(b"r")
    os.chmod(deep / "ro.bin", 0o440)
    os.chmod(root / "a" / "b", 0o750)
    (root / "a" / "link.bin").symlink_to("b/c/x.bin")   # followed
    (root / "a" / "out.bin").symlink_to(str(outside))   # outside: skipped
    (root / "a" / "dirlink").symlink_to("b")            # a directory: no
    (root / "top.bin").write_bytes(b"t")
    m = mount("file://" + str(root))
    assert m.stats()["dirs_listed"] == 1
    with open(m.file("a/b/c/x.bin"), "rb") as f:
        assert f.read() == b"x" * 100
    assert m.stats()["dirs_listed"] == 4
    e = mount("file://" + str(root), {"list": "eager"})

    def walk(top):
        out = {}
        for dirpath, dirs, files in os.walk(top):
            for n in dirs + files:
                p = os.path.join(dirpath, n)
                st = os.lstat(p)
                out[os.path.relpath(p, top)] = (st.st_mode, st.st_size,
                                                st.st_uid, st.st_gid)
        return out
    assert walk(m.path) == walk(e.path)
    assert sorted(os.listdir(m.file("a"))) == ["b", "link.bin"]
    assert os.stat(m.file("a/b")).st_mode & 0o777 == 0o550
    assert os.stat(m.file("a/b/c/ro.bin")).st_mode & 0o777 == 0o440
    assert "leads outside the source" in m.log()


def test_bad_list_mode_exits_2(weightfs_run, tmp_path):
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    r = weightfs_run("-f", "-o", "list=sometimes", "file://" + str(src),
                     str(mnt))
    assert r.returncode == 2
    assert "list must be lazy or eager" in r.stderr


def test_bad_source_still_exits_2_when_lazy(server, weightfs_run, tmp_path):
    # Only the root is listed at mount: a wrong secret still fails it.
    env = aws_env(tmp_path, AWS_ACCESS_KEY_ID=AK,
                  AWS_SECRET_ACCESS_KEY="wrong")
    (tmp_path / "mnt").mkdir()
    r = weightfs_run("-f", "-o", "endpoint=%s,list=lazy" % server.url,
                     "s3://bucket", str(tmp_path / "mnt"), env=env)
    assert r.returncode == 2, r.stderr
    assert "SignatureDoesNotMatch" in r.stderr
