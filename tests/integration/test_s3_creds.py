"""The AWS credential chain of the S3 source against loopback stand-ins for
EC2 instance metadata (IMDSv2), the container credentials endpoint (ECS,
EKS Pod Identity) and STS AssumeRoleWithWebIdentity (IRSA), with an S3
server that verifies signatures and refuses expired credentials: temporary
credentials must be refreshed before they expire, without a failed read."""

import os
import time

import pytest

import wfs_testlib as lib

pytest.importorskip("botocore", reason="needs botocore (Debian "
                    "python3-botocore; run pytest with /usr/bin/python3)")
from s3_fixtures import aws_env, cred_server, s3_verify  # noqa: E402,F401

pytestmark = pytest.mark.asan

ROLE_ARN = "arn:aws:iam::123456789012:role/weightfs-test"


def put_files(server, n=12, size=300000):
    objs = {"f%02d.bin" % i: lib.random_bytes(size, (3, i))
            for i in range(n)}
    for k, v in objs.items():
        server.put(k, v)
    return objs


def read_over_time(m, objs, seconds):
    """Read one not yet cached file about every half second for @seconds;
    every read must succeed with the right bytes."""
    names = sorted(objs)
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        assert i < len(names), "ran out of files"
        with open(m.file(names[i]), "rb") as f:
            assert f.read() == objs[names[i]], names[i]
        i += 1
        time.sleep(0.5)
    return i


def check_refreshed(server, creds, at_least=3):
    assert server.errors() == [], server.errors()
    assert creds.fetches >= at_least, creds.fetches
    keys = {r["access_key"] for r in server.log}
    assert len(keys) >= 2, keys  # reads were signed with fresh credentials


def test_imds_refresh(s3_verify, cred_server, mount, tmp_path):
    server = s3_verify()
    imds = cred_server("imds", server, lifetime=4)
    objs = put_files(server)
    env = aws_env(tmp_path, AWS_EC2_METADATA_DISABLED=None,
                  AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url + "/")
    m = mount("s3://bucket", {"endpoint": server.url}, env=env)
    read_over_time(m, objs, 5.5)
    check_refreshed(server, imds)
    paths = {p for _, p, _ in imds.log}
    assert "/latest/api/token" in paths


def test_container_refresh_with_token_file(s3_verify, cred_server, mount,
                                           tmp_path):
    server = s3_verify()
    creds = cred_server("container", server, lifetime=4,
                        auth_token="Bearer pod-identity-token")
    objs = put_files(server)
    tok = tmp_path / "token"
    tok.write_text("Bearer pod-identity-token\n")
    env = aws_env(tmp_path,
                  AWS_CONTAINER_CREDENTIALS_FULL_URI=creds.url + "/v1/creds",
                  AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=tok)
    m = mount("s3://bucket", {"endpoint": server.url}, env=env)
    read_over_time(m, objs, 5.5)
    check_refreshed(server, creds)


def test_container_token_env(s3_verify, cred_server, mount, tmp_path):
    server = s3_verify()
    creds = cred_server("container", server, auth_token="ecs-token")
    objs = put_files(server, n=1)
    env = aws_env(tmp_path,
                  AWS_CONTAINER_CREDENTIALS_FULL_URI=creds.url + "/creds",
                  AWS_CONTAINER_AUTHORIZATION_TOKEN="ecs-token")
    m = mount("s3://bucket", {"endpoint": server.url}, env=env)
    assert open(m.file("f00.bin"), "rb").read() == objs["f00.bin"]
    assert server.errors() == []


def test_container_bad_token_fails(s3_verify, cred_server, weightfs_run,
                                   tmp_path):
    server = s3_verify()
    creds = cred_server("container", server, auth_token="right")
    mp = tmp_path / "mnt"
    mp.mkdir()
    env = aws_env(tmp_path,
                  AWS_CONTAINER_CREDENTIALS_FULL_URI=creds.url + "/creds",
                  AWS_CONTAINER_AUTHORIZATION_TOKEN="wrong-token-value")
    r = weightfs_run("-f", "-o", "endpoint=" + server.url, "s3://bucket",
                     mp, env=env)
    assert r.returncode == 2, r.stderr
    assert "container credentials" in r.stderr and "401" in r.stderr
    assert "wrong-token-value" not in r.stderr


def test_container_plain_http_elsewhere_refused(weightfs_run, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    env = aws_env(tmp_path, AWS_CONTAINER_CREDENTIALS_FULL_URI=
                  "http://192.0.2.1/creds")
    r = weightfs_run("-f", "s3://bucket", mp, env=env)
    assert r.returncode == 2 and "loopback" in r.stderr, r.stderr


def test_web_identity_refresh(s3_verify, cred_server, mount, tmp_path):
    server = s3_verify()
    tok = tmp_path / "web-identity-token"
    tok.write_text("eyJhbGciOiJSUzI1NiJ9.irsa+/=token")
    sts = cred_server("sts", server, lifetime=4,
                      web_identity_token="eyJhbGciOiJSUzI1NiJ9.irsa+/=token",
                      role_arn=ROLE_ARN)
    objs = put_files(server)
    env = aws_env(tmp_path, AWS_WEB_IDENTITY_TOKEN_FILE=tok,
                  AWS_ROLE_ARN=ROLE_ARN, AWS_ROLE_SESSION_NAME="test",
                  AWS_ENDPOINT_URL_STS=sts.url)
    m = mount("s3://bucket", {"endpoint": server.url}, env=env)
    read_over_time(m, objs, 5.5)
    check_refreshed(server, sts)


def test_web_identity_from_profile(s3_verify, cred_server, mount, tmp_path):
    server = s3_verify()
    tok = tmp_path / "tok"
    tok.write_text("profile-token")
    sts = cred_server("sts", server, web_identity_token="profile-token",
                      role_arn=ROLE_ARN)
    put_files(server, n=1)
    config = tmp_path / "config"
    config.write_text("[profile irsa]\nrole_arn = %s\n"
                      "web_identity_token_file = %s\n" % (ROLE_ARN, tok))
    env = aws_env(tmp_path, AWS_CONFIG_FILE=config, AWS_PROFILE="irsa",
                  AWS_ENDPOINT_URL_STS=sts.url)
    m = mount("s3://bucket", {"endpoint": server.url}, env=env)
    assert os.path.getsize(m.file("f00.bin")) == 300000
    assert lib.sha256_file(m.file("f00.bin"))
    assert server.errors() == [] and sts.fetches == 1


def test_web_identity_rejected(s3_verify, cred_server, weightfs_run,
                               tmp_path):
    server = s3_verify()
    sts = cred_server("sts", server, web_identity_token="right",
                      role_arn=ROLE_ARN)
    tok = tmp_path / "tok"
    tok.write_text("wrong-web-token")
    mp = tmp_path / "mnt"
    mp.mkdir()
    env = aws_env(tmp_path, AWS_WEB_IDENTITY_TOKEN_FILE=tok,
                  AWS_ROLE_ARN=ROLE_ARN, AWS_ENDPOINT_URL_STS=sts.url)
    r = weightfs_run("-f", "-o", "endpoint=" + server.url, "s3://bucket",
                     mp, env=env)
    assert r.returncode == 2, r.stderr
    assert "InvalidIdentityToken" in r.stderr
    assert "wrong-web-token" not in r.stderr


def test_env_comes_first(s3_verify, cred_server, mount, tmp_path):
    """Environment keys win over the services further down the chain."""
    server = s3_verify()
    server.add_credentials("AKIDENV", "envsecret")
    imds = cred_server("imds", server)
    put_files(server, n=1)
    env = aws_env(tmp_path, AWS_ACCESS_KEY_ID="AKIDENV",
                  AWS_SECRET_ACCESS_KEY="envsecret",
                  AWS_EC2_METADATA_DISABLED=None,
                  AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url)
    m = mount("s3://bucket", {"endpoint": server.url}, env=env)
    assert os.path.getsize(m.file("f00.bin")) == 300000
    lib.sha256_file(m.file("f00.bin"))
    assert imds.fetches == 0
    assert {r["access_key"] for r in server.log} == {"AKIDENV"}


def test_imds_unreachable_fails(weightfs_run, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    env = aws_env(tmp_path, AWS_EC2_METADATA_DISABLED=None,
                  AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:%d" %
                  lib.free_port())
    r = weightfs_run("-f", "s3://bucket", mp, env=env)
    assert r.returncode == 2, r.stderr
    assert "no AWS credentials" in r.stderr and "instance metadata" in \
        r.stderr
