"""The S3 source against a server that re-computes every request's SigV4
signature with botocore (servers/s3_verify.py): listings over several
pages whose continuation tokens hold '+', '/' and '=', keys with spaces,
UTF-8 and '+ = & ~ ( ) ;', ranged reads, session tokens, profiles, regions,
virtual-hosted addressing, and the errors that must stop a mount."""

import os

import pytest

import wfs_testlib as lib

pytest.importorskip("botocore", reason="needs botocore (Debian "
                    "python3-botocore; run pytest with /usr/bin/python3)")
from s3_fixtures import aws_env, mount_tree, s3_verify  # noqa: E402,F401

pytestmark = pytest.mark.asan

AK, SK = "AKIDWEIGHTFSTEST", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYWEIGHTFS"

ODD_KEYS = {
    "with space.bin": 1000,
    "plus+eq=amp&tilde~(paren);semi.bin": 1500,
    "\u00fcnic\u00f6de/\u00df \u65e5\u672c.bin": 2000,
    "percent%20literal.bin": 10,
    "star*quote'comma,at@dollar$.bin": 20,
    "nested/dir/deep/file.bin": 3 * lib.MiB + 17,
    "empty.bin": 0,
}


def objects(spec, seed=7):
    return {k: lib.random_bytes(n, (seed, i))
            for i, (k, n) in enumerate(sorted(spec.items()))}


@pytest.fixture
def server(s3_verify):
    s = s3_verify()
    s.add_credentials(AK, SK)
    return s


def env_for(tmp_path, **kw):
    base = {"AWS_ACCESS_KEY_ID": AK, "AWS_SECRET_ACCESS_KEY": SK}
    base.update(kw)
    return aws_env(tmp_path, **base)


@pytest.mark.parametrize("list_mode", ["eager", "lazy"])
def test_pages_odd_keys_ranged_reads(server, mount, tmp_path, list_mode):
    spec = dict(ODD_KEYS)
    spec.update({"many/k%05d" % i: 1 + i % 97 for i in range(2100)})
    objs = objects(spec)
    for k, v in objs.items():
        server.put(k, v)
    m = mount("s3://bucket", {"endpoint": server.url, "block_size": "1M",
                              "list": list_mode},
              env=env_for(tmp_path))
    listing = lib.tree_listing(m.path)
    assert {k: v for k, v in listing.items() if v[0] == "f"} == \
        {k: ("f", len(v)) for k, v in objs.items()}
    # Read every odd key and a sample of the many (each read is a GET the
    # server verifies, which takes a while in Python).
    for k in list(ODD_KEYS) + ["many/k%05d" % i for i in range(0, 2100, 150)]:
        assert lib.sha256_file(m.file(k)) == lib.sha256_bytes(objs[k]), k
    # A range inside the large file, through its own block.
    with open(m.file("nested/dir/deep/file.bin"), "rb") as f:
        f.seek(2 * lib.MiB + 5)
        assert f.read(1000) == \
            objs["nested/dir/deep/file.bin"][2 * lib.MiB + 5:][:1000]
    assert server.errors() == []
    lists = [r for r in server.log if r["query"]]
    if list_mode == "lazy":
        # One delimited listing per directory (the odd keys' directories
        # and "many/", whose 2100 keys take 3 pages), all signed right.
        assert all("delimiter=%2F" in r["query"] for r in lists)
        assert len(lists) == 1 + 1 + 3 + 3, lists
        return
    assert len(lists) == 3, lists
    tokens = [r["query"] for r in lists if "continuation-token" in r["query"]]
    assert len(tokens) == 2
    for q in tokens:  # '+', '/', '=' sent percent-encoded and signed so
        assert "%2B" in q and "%2F" in q and "%3D" in q
    assert all(r["access_key"] == AK for r in server.log)


def test_prefix_is_root(server, mount, tmp_path):
    objs = {"models/llama/config.json": b"{}",
            "models/llama/w/model.safetensors": b"x" * 5000,
            "models/llama2/other.bin": b"no",
            "models/llama": b"a file named like the prefix",
            "top.bin": b"no"}
    for k, v in objs.items():
        server.put(k, v)
    m = mount("s3://bucket/models/llama/", {"endpoint": server.url},
              env=env_for(tmp_path))
    assert mount_tree(m.path) == {
        "config.json": lib.sha256_bytes(b"{}"),
        "w/model.safetensors": lib.sha256_bytes(b"x" * 5000)}
    assert server.errors() == []


def test_session_token_signed(server, mount, tmp_path):
    server.add_credentials("ASIATEMP", "tempsecret", "tok+/=en", None)
    server.put("a.bin", b"abc" * 1000)
    m = mount("s3://bucket", {"endpoint": server.url},
              env=aws_env(tmp_path, AWS_ACCESS_KEY_ID="ASIATEMP",
                          AWS_SECRET_ACCESS_KEY="tempsecret",
                          AWS_SESSION_TOKEN="tok+/=en"))
    with open(m.file("a.bin"), "rb") as f:
        assert f.read() == b"abc" * 1000
    assert server.errors() == []
    assert all(r["token"] == "tok+/=en" for r in server.log)


def test_virtual_hosted(server, mount, tmp_path):
    """Without path_style the bucket goes in the host name; the server
    stands in as the HTTP proxy, so no DNS is needed."""
    server.put("dir/v.bin", b"v" * 3000)
    env = env_for(tmp_path, http_proxy=server.url)
    m = mount("s3://bucket", {"endpoint": "http://s3.test"}, env=env)
    with open(m.file("dir/v.bin"), "rb") as f:
        assert f.read() == b"v" * 3000
    assert server.errors() == []
    assert {r["host"] for r in server.log} == {"bucket.s3.test"}
    assert all(not r["path"].startswith("/bucket") for r in server.log)


def test_path_style_option(server, mount, tmp_path):
    server.put("p.bin", b"p")
    env = env_for(tmp_path, http_proxy=server.url)
    m = mount("s3://bucket", {"endpoint": "http://s3.test",
                              "path_style": True}, env=env)
    assert open(m.file("p.bin"), "rb").read() == b"p"
    assert {r["host"] for r in server.log} == {"s3.test"}
    assert all(r["path"].startswith("/bucket") for r in server.log)


def test_endpoint_and_region_from_env(s3_verify, mount, tmp_path):
    server = s3_verify(region="eu-central-1")
    server.add_credentials(AK, SK)
    server.put("r.bin", b"r")
    m = mount("s3://bucket", None,
              env=env_for(tmp_path, AWS_ENDPOINT_URL_S3=server.url,
                          AWS_ENDPOINT_URL="http://127.0.0.1:1",
                          AWS_REGION="eu-central-1",
                          AWS_DEFAULT_REGION="us-west-2"))
    assert open(m.file("r.bin"), "rb").read() == b"r"
    assert server.errors() == []


def test_profile_files(s3_verify, mount, tmp_path):
    """-o profile= reads the shared credentials file and the config file's
    region; it wins over keys in the environment."""
    server = s3_verify(region="ap-south-1")
    server.add_credentials("AKIDPROFILE", "profile/secret+")
    server.put("f.bin", b"f")
    creds = tmp_path / "creds"
    creds.write_text("[default]\naws_access_key_id = AKIDDEFAULT\n"
                     "aws_secret_access_key = nope\n\n"
                     "# comment\n[team]\naws_access_key_id = AKIDPROFILE\n"
                     "aws_secret_access_key = profile/secret+\n")
    config = tmp_path / "config"
    config.write_text("[profile team]\nregion = ap-south-1\ns3 =\n"
                      "  addressing_style = path\n")
    env = aws_env(tmp_path, AWS_SHARED_CREDENTIALS_FILE=creds,
                  AWS_CONFIG_FILE=config, AWS_ACCESS_KEY_ID=AK,
                  AWS_SECRET_ACCESS_KEY=SK)
    m = mount("s3://bucket", {"endpoint": server.url, "profile": "team"},
              env=env)
    assert open(m.file("f.bin"), "rb").read() == b"f"
    assert server.errors() == []
    assert {r["access_key"] for r in server.log} == {"AKIDPROFILE"}


def test_aws_profile_env_and_home(s3_verify, mount, tmp_path):
    server = s3_verify()
    server.add_credentials("AKIDHOME", "homesecret")
    server.put("h.bin", b"h")
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text(
        "[dev]\naws_access_key_id=AKIDHOME\naws_secret_access_key="
        "homesecret\n")
    m = mount("s3://bucket", {"endpoint": server.url},
              env=aws_env(tmp_path, AWS_PROFILE="dev"))
    assert open(m.file("h.bin"), "rb").read() == b"h"
    assert server.errors() == []


def test_listing_retries_slowdown(server, mount, tmp_path):
    server.put("s.bin", b"s")
    server.fail_list = [503, 500]
    m = mount("s3://bucket", {"endpoint": server.url},
              env=env_for(tmp_path))
    assert open(m.file("s.bin"), "rb").read() == b"s"
    assert [r["status"] for r in server.log if r["query"]][:3] == \
        [503, 500, 200]


def check_fails(weightfs_run, tmp_path, server_url, env, code, secret=None,
                options=None, source="s3://bucket"):
    mp = tmp_path / "mnt-fail"
    mp.mkdir(exist_ok=True)
    opts = "endpoint=%s" % server_url + ("," + options if options else "")
    r = weightfs_run("-f", "-o", opts, source, mp, env=env, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert code in r.stderr, r.stderr
    assert not os.path.ismount(str(mp))
    if secret:
        assert secret not in r.stderr and secret not in r.stdout
    return r.stderr


def test_wrong_secret_fails(server, weightfs_run, tmp_path):
    server.put("x", b"x")
    check_fails(weightfs_run, tmp_path, server.url,
                aws_env(tmp_path, AWS_ACCESS_KEY_ID=AK,
                        AWS_SECRET_ACCESS_KEY="wrong-secret-value"),
                "SignatureDoesNotMatch", secret="wrong-secret-value")


def test_unknown_key_fails(server, weightfs_run, tmp_path):
    check_fails(weightfs_run, tmp_path, server.url,
                aws_env(tmp_path, AWS_ACCESS_KEY_ID="AKIDUNKNOWN",
                        AWS_SECRET_ACCESS_KEY="some-secret-value"),
                "InvalidAccessKeyId", secret="some-secret-value")


def test_no_such_bucket_fails(server, weightfs_run, tmp_path):
    check_fails(weightfs_run, tmp_path, server.url, env_for(tmp_path),
                "NoSuchBucket", secret=SK, source="s3://other-bucket/p")


def test_anonymous_denied(server, weightfs_run, tmp_path):
    check_fails(weightfs_run, tmp_path, server.url, aws_env(tmp_path),
                "AccessDenied", options="no_sign_request")


def test_wrong_region_fails(server, weightfs_run, tmp_path):
    err = check_fails(weightfs_run, tmp_path, server.url, env_for(tmp_path),
                      "AuthorizationHeaderMalformed", secret=SK,
                      options="region=eu-west-1")
    assert "region" in err


def test_unreachable_endpoint_fails(weightfs_run, tmp_path):
    port = lib.free_port()
    check_fails(weightfs_run, tmp_path, "http://127.0.0.1:%d" % port,
                env_for(tmp_path), "cannot reach", secret=SK)


def test_no_credentials_fails(server, weightfs_run, tmp_path):
    err = check_fails(weightfs_run, tmp_path, server.url, aws_env(tmp_path),
                      "no AWS credentials")
    assert "no_sign_request" in err


def test_missing_profile_fails(server, weightfs_run, tmp_path):
    check_fails(weightfs_run, tmp_path, server.url, env_for(tmp_path),
                "profile nosuch not found", options="profile=nosuch")


def test_bad_sources_fail(weightfs_run, tmp_path):
    mp = tmp_path / "mnt-bad"
    mp.mkdir()
    for src in ("s3://", "s3://bad?bucket/x", "s3://b%20x"):
        r = weightfs_run("-f", src, mp, env=env_for(tmp_path))
        assert r.returncode == 2, (src, r.stderr)
        assert "s3://" in r.stderr
    r = weightfs_run("-f", "-o", "endpoint=ftp://x", "s3://bucket", mp,
                     env=env_for(tmp_path))
    assert r.returncode == 2 and "endpoint" in r.stderr, r.stderr


def test_looping_continuation_tokens_fail(server, weightfs_run, tmp_path):
    """A server whose tokens cycle (A -> B -> A) ends the mount with a
    message instead of listing forever."""
    for i in range(3500):
        server.put("k%05d" % i, b"")
    server.cycle_tokens = True
    check_fails(weightfs_run, tmp_path, server.url, env_for(tmp_path),
                "continuation token")
    assert len([r for r in server.log if r["query"]]) <= 4


def test_verify_sha256_with_s3_checksums(server, mount, tmp_path, ctl_bin):
    """-o verify=sha256 on S3: an object uploaded with a full-object
    SHA-256 checksum is checked against it (asked with a signed HEAD,
    x-amz-checksum-mode: ENABLED); one whose bytes do not match reads EIO;
    one without a checksum is served unchecked."""
    good = lib.random_bytes(3 * lib.MiB + 1, seed=1)
    bad = lib.random_bytes(2 * lib.MiB + 3, seed=2)
    plain = lib.random_bytes(100000, seed=3)
    server.put("good.bin", good, checksum=True)
    server.put("bad.bin", bad, checksum=b"\x01" * 32)
    server.put("plain.bin", plain)
    m = mount("s3://bucket", {"endpoint": server.url, "block_size": "1M",
                              "verify": "sha256"},
              env=env_for(tmp_path))
    assert lib.sha256_file(m.file("good.bin")) == lib.sha256_bytes(good)
    assert lib.sha256_file(m.file("plain.bin")) == lib.sha256_bytes(plain)
    assert lib.read_errno(m.file("bad.bin"))[0] == 5
    assert lib.read_errno(m.file("bad.bin"), 10, 0)[0] == 5
    st = m.stats()
    assert st["files_verified"] == 1 and st["verify_failed"] == 1
    heads = [r for r in server.log if r["method"] == "HEAD"]
    assert len(heads) == 3, heads
    assert server.errors() == []
