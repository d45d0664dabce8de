"""Fixtures of the S3 tests (test_s3_*.py import them with
`from s3_fixtures import ...`).

aws_env(home, **vars) -> an environment with no AWS_* variable or proxy of
    the caller's, HOME at @home (so no ~/.aws), instance metadata off,
    plus @vars.
s3_verify(**kw) -> servers.s3_verify.S3VerifyServer (stopped at teardown).
cred_server(kind, s3, **kw) -> servers.aws_metadata.CredentialServer.
s3rver -> S3rver (session): the npm s3rver on a free loopback port with a
    temporary directory; .endpoint, .client (botocore), .make_bucket(),
    .upload(bucket, {key: bytes}). Skips when node or s3rver is missing
    (`npm install` at the repository root installs it).
"""

import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import wfs_testlib as lib
from servers.aws_metadata import CredentialServer
from servers.s3_verify import S3VerifyServer

__all__ = ["aws_env", "s3_verify", "cred_server", "s3rver", "S3RVER_KEY",
           "hashes", "mount_tree"]

S3RVER_KEY = "S3RVER"  # s3rver's built-in access key id and secret
S3RVER_BIN = os.path.join(lib.REPO, "node_modules", ".bin", "s3rver")


def aws_env(home, **extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and
           k.lower() not in ("http_proxy", "https_proxy", "all_proxy",
                             "no_proxy")}
    env["HOME"] = str(home)
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env.update({k: str(v) for k, v in extra.items() if v is not None})
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
    return env


def hashes(objects):
    return {k: lib.sha256_bytes(v) for k, v in objects.items()}


def mount_tree(root):
    """{relpath: sha256} of every file under @root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = lib.sha256_file(p)
    return out


@pytest.fixture
def s3_verify():
    made = []

    def start(**kw):
        s = S3VerifyServer(**kw)
        made.append(s)
        return s
    yield start
    for s in made:
        s.stop()


@pytest.fixture
def cred_server():
    made = []

    def start(kind, s3, **kw):
        s = CredentialServer(kind, s3, **kw)
        made.append(s)
        return s
    yield start
    for s in made:
        s.stop()


class S3rver:
    def __init__(self, workdir):
        import botocore.session
        from botocore.config import Config

        self.dir = os.path.join(workdir, "data")
        os.makedirs(self.dir)
        self.port = lib.free_port()
        self.endpoint = "http://127.0.0.1:%d" % self.port
        env = dict(os.environ)
        # Node 20's OpenSSL 3 needs this for s3rver's continuation tokens.
        env["NODE_OPTIONS"] = (env.get("NODE_OPTIONS", "") +
                               " --openssl-legacy-provider").strip()
        self.log_path = os.path.join(workdir, "s3rver.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [S3RVER_BIN, "-d", self.dir, "-a", "127.0.0.1", "-p",
             str(self.port), "--silent"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            env=env)
        if not lib.wait_port(self.port, timeout=30, proc=self.proc):
            self.stop()
            raise RuntimeError("s3rver did not start:\n" + self.output())
        self.client = botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=S3RVER_KEY, aws_secret_access_key=S3RVER_KEY,
            config=Config(s3={"addressing_style": "path"},
                          max_pool_connections=16,
                          retries={"max_attempts": 3}))

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def make_bucket(self, name):
        self.client.create_bucket(Bucket=name)

    def upload(self, bucket, objects):
        def put(kv):
            self.client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1])
        with ThreadPoolExecutor(16) as ex:
            list(ex.map(put, objects.items()))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def s3rver():
    if shutil.which("node") is None:
        pytest.skip("node not installed (Debian nodejs)")
    if not os.access(S3RVER_BIN, os.X_OK):
        pytest.skip("s3rver not installed: run `npm install` at the "
                    "repository root (%s missing)" % S3RVER_BIN)
    pytest.importorskip("botocore", reason="botocore missing (Debian "
                        "python3-botocore)")
    work = tempfile.mkdtemp(prefix="s3rver-")
    srv = S3rver(work)
    yield srv
    srv.stop()
    shutil.rmtree(work, ignore_errors=True)


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()
