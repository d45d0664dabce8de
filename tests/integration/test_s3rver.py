"""The S3 source against s3rver (npm), an independent S3 API
implementation: listings over 1000 keys (continuation tokens), odd key
names, prefixes, and the exact bytes of the fixture models."""

import os

import pytest

import wfs_testlib as lib

pytest.importorskip("botocore", reason="needs botocore (Debian "
                    "python3-botocore; run pytest with /usr/bin/python3)")
from s3_fixtures import (  # noqa: E402,F401 (s3rver: a fixture)
    S3RVER_KEY, aws_env, mount_tree, s3rver)

pytestmark = pytest.mark.asan

ODD = {
    "odd/with space.bin": b"space" * 300,
    "odd/plus+eq=amp&tilde~(paren).bin": b"plus" * 400,
    "odd/\u00fcnic\u00f6de \u65e5\u672c/\u00df.bin": b"utf8" * 500,
    "odd/percent%41.bin": b"percent",
    "odd/semi;colon:comma,.bin": b"semi",
}


def s3_env(tmp_path):
    return aws_env(tmp_path, AWS_ACCESS_KEY_ID=S3RVER_KEY,
                   AWS_SECRET_ACCESS_KEY=S3RVER_KEY)


@pytest.fixture(scope="module")
def bucket(s3rver):
    s3rver.make_bucket("weights")
    many = {"many/k%04d.bin" % i: ("%d" % i).encode() * (1 + i % 7)
            for i in range(1203)}
    s3rver.upload("weights", many)
    s3rver.upload("weights", ODD)
    s3rver.upload("weights", {"many-not/outside.bin": b"x"})
    return {"many": many}


def test_listing_over_1000_keys(s3rver, bucket, mount, tmp_path):
    m = mount("s3://weights/many", {"endpoint": s3rver.endpoint},
              env=s3_env(tmp_path))
    names = sorted(os.listdir(m.path))
    assert names == sorted(k[len("many/"):] for k in bucket["many"])
    for k in ("many/k0000.bin", "many/k0999.bin", "many/k1000.bin",
              "many/k1202.bin"):
        with open(m.file(k[len("many/"):]), "rb") as f:
            assert f.read() == bucket["many"][k]


def test_odd_keys(s3rver, bucket, mount, tmp_path):
    m = mount("s3://weights/odd/", {"endpoint": s3rver.endpoint,
                                    "path_style": True},
              env=s3_env(tmp_path))
    assert mount_tree(m.path) == {k[len("odd/"):]: lib.sha256_bytes(v)
                                  for k, v in ODD.items()}


def test_fixture_models_exact_bytes(s3rver, fixtures_dir, mount, tmp_path):
    src = os.path.join(fixtures_dir, "safetensors")
    s3rver.make_bucket("models")
    objs = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                objs["hf/" + os.path.relpath(p, src)] = fh.read()
    s3rver.upload("models", objs)
    m = mount("s3://models/hf", {"endpoint": s3rver.endpoint,
                                 "block_size": "64K"},
              env=s3_env(tmp_path))
    assert mount_tree(m.path) == mount_tree(src)
    # Through a mapping too, as safetensors reads.
    p = "tiny-llama/model.safetensors"
    assert lib.sha256_mmap(m.file(p)) == lib.sha256_file(os.path.join(src, p))


def test_no_such_bucket(s3rver, weightfs_run, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = weightfs_run("-f", "-o", "endpoint=" + s3rver.endpoint,
                     "s3://missing-bucket", mp, env=s3_env(tmp_path))
    assert r.returncode == 2 and "NoSuchBucket" in r.stderr, r.stderr
