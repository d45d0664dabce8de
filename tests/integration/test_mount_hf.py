"""hf://: a Hugging Face Hub repository through the mount, against the Hub
stand-in (servers/hub_server.py: the revision and tree APIs with pages,
resolve with a 302 to a CDN on another port with signed, expiring URLs).

Covers: every byte and name of a model repo (shards, index, tokenizer,
nested dirs, files in git and in LFS) with pages of 3 entries, lazy and
whole listings; the LFS sha256 and the commit as xattrs; a push to main
during a read (the mount stays on its commit); the token only ever sent
to the Hub, never to the CDN; a signed URL revoked mid-read (resolved
again, right bytes); 401/403/404, a bad token and a missing revision at
mount (one line, exit 2); 429 with Retry-After; the token's places;
datasets, subdirectories, tags; list_ttl following the branch."""

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time

import pytest

import wfs_testlib as lib
from servers.hub_server import HubServer

MiB = lib.MiB
REPO = "org/model"


def model_files():
    shards = {"model-%05d-of-00003.safetensors" % (i + 1):
              lib.random_bytes(2 * MiB + 1000 * i + 7, seed=i + 1)
              for i in range(3)}
    index = {"metadata": {"total_size": sum(map(len, shards.values()))},
             "weight_map": {"w%d" % i: n for i, n in
                            enumerate(sorted(shards))}}
    files = dict(shards)
    files["model.safetensors.index.json"] = json.dumps(index).encode()
    files["tokenizer.json"] = json.dumps({"model": {"vocab": {
        "tok%d" % i: i for i in range(3000)}}}).encode()
    files["config.json"] = b'{"architectures": ["X"]}\n'
    files["README.md"] = b"# a model\n"
    files["sub/dir/deep.bin"] = lib.random_bytes(MiB + 3, seed=9)
    files["sub/dir/small.txt"] = b"small\n"
    files["sub/other.bin"] = lib.random_bytes(5, seed=10)
    return files


LFS = {p for p in model_files() if p.endswith((".safetensors", ".bin"))}


@pytest.fixture
def hub():
    h = HubServer(page_size=3)
    yield h
    h.stop()


def hf_env(hub, tmp_path, token=None, **extra):
    env = dict(os.environ)
    for k in ("HF_TOKEN", "HF_TOKEN_PATH", "HUGGING_FACE_HUB_TOKEN"):
        env.pop(k, None)
    env["HF_HOME"] = str(tmp_path / "hf_home")  # no token file there
    env["HF_ENDPOINT"] = hub.url
    if token:
        env["HF_TOKEN"] = token
    env.update(extra)
    return env


def read_all(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


def getxattr(path, name):
    return os.getxattr(path, name).decode()


@pytest.mark.parametrize("listing", ["lazy", "eager"])
def test_model_repo_every_byte(hub, mount, tmp_path, listing):
    files = model_files()
    sha = hub.commit(REPO, files, lfs=LFS)
    m = mount("hf://" + REPO, {"block_size": "1M", "list": listing},
              env=hf_env(hub, tmp_path))
    got = read_all(m.path)
    assert sorted(got) == sorted(files)
    for p, data in files.items():
        assert got[p] == data, p
        assert os.path.getsize(m.file(p)) == len(data)
    assert getxattr(m.path, "user.weightfs.revision") == sha
    for p in LFS:
        assert getxattr(m.file(p), "user.weightfs.sha256") == \
            hashlib.sha256(files[p]).hexdigest()
    with pytest.raises(OSError):
        getxattr(m.file("config.json"), "user.weightfs.sha256")
    assert "user.weightfs.revision" in os.listxattr(m.path)
    assert "user.weightfs.sha256" not in os.listxattr(m.file("config.json"))
    shard = m.file("model-00001-of-00003.safetensors")
    assert {"user.weightfs.sha256", "user.weightfs.revision",
            "user.weightfs.etag"} <= set(os.listxattr(shard))
    # Pages were followed: more tree requests than directories.
    trees = [e for e in hub.log if "/tree/" in e[2]]
    assert len(trees) > 3
    # Redirect targets were reused: one resolve per file, not per block.
    resolves = [e for e in hub.log if "/resolve/" in e[2] and
                e[1] == "HEAD"]
    assert len(resolves) == len(files), resolves


def test_push_to_main_during_read(hub, mount, tmp_path):
    files = model_files()
    old_sha = hub.commit(REPO, files, lfs=LFS)
    name = "model-00001-of-00003.safetensors"
    m = mount("hf://" + REPO, {"block_size": "1M", "prefetch": "off"},
              env=hf_env(hub, tmp_path))
    with open(m.file(name), "rb") as f:
        head = f.read(MiB)
        new = dict(files)
        new[name] = lib.random_bytes(len(files[name]), seed=77)
        new["added.txt"] = b"new\n"
        hub.commit(REPO, new, lfs=LFS)
        rest = f.read()
    assert head + rest == files[name]
    assert getxattr(m.path, "user.weightfs.revision") == old_sha
    assert not os.path.exists(m.file("added.txt"))
    # A new mount reads the new commit.
    m2 = mount("hf://" + REPO, {"block_size": "1M"},
               env=hf_env(hub, tmp_path))
    with open(m2.file(name), "rb") as f:
        assert f.read() == new[name]


def test_token_only_to_the_hub(hub, mount, tmp_path):
    files = model_files()
    hub.commit(REPO, files, lfs=LFS)
    hub.private.add("models/" + REPO)
    hub.tokens.add("hf_secret_token")
    m = mount("hf://" + REPO, {"block_size": "1M"}, debug=True,
              env=hf_env(hub, tmp_path, token="hf_secret_token"))
    assert read_all(m.path) == files
    cdn = [e for e in hub.log if e[0] == "cdn"]
    assert cdn, "the LFS files came from the CDN"
    assert hub.cdn_auth_seen == 0
    assert all(e[5] for e in hub.log if e[0] == "hub")
    assert "hf_secret_token" not in m.log()
    for p in ("", "config.json"):
        for name in os.listxattr(m.file(p)):
            assert "hf_secret" not in getxattr(m.file(p), name)


def test_revoked_url_mid_read(hub, mount, tmp_path):
    data = lib.random_bytes(6 * MiB + 11, seed=5)
    hub.commit(REPO, {"w.bin": data}, lfs={"w.bin"})
    m = mount("hf://" + REPO, {"block_size": "1M", "prefetch": "off"},
              env=hf_env(hub, tmp_path))
    with open(m.file("w.bin"), "rb") as f:
        head = f.read(2 * MiB)
        hub.revoke()
        rest = f.read()
    assert head + rest == data
    cdn = [e for e in hub.log if e[0] == "cdn"]
    assert any(e[4] == 403 for e in cdn), "the old URL was refused"
    resolves = [e for e in hub.log if "/resolve/" in e[2]]
    assert len(resolves) >= 2


def test_expiring_url_renewed_before_use(hub, mount, tmp_path):
    # URLs good for 62 s are renewed 60 s before they expire: after 2 s
    # the next block resolves again instead of trying a dying URL.
    hub.url_ttl = 62
    data = lib.random_bytes(3 * MiB, seed=6)
    hub.commit(REPO, {"w.bin": data}, lfs={"w.bin"})
    m = mount("hf://" + REPO, {"block_size": "1M", "prefetch": "off"},
              env=hf_env(hub, tmp_path))
    with open(m.file("w.bin"), "rb") as f:
        head = f.read(MiB)
        time.sleep(2.5)
        rest = f.read()
    assert head + rest == data
    assert not [e for e in hub.log if e[0] == "cdn" and e[4] == 403]
    assert len([e for e in hub.log if "/resolve/" in e[2]]) >= 2


def mount_fails(weightfs_run, source, mp, env):
    r = weightfs_run("-f", source, mp, env=env)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_mount_errors(hub, weightfs_run, mountpoint, tmp_path):
    hub.commit(REPO, {"a.txt": b"a"})
    hub.commit("org/private", {"a.txt": b"a"})
    hub.commit("org/gated", {"a.txt": b"a"})
    hub.private.add("models/org/private")
    hub.gated.add("models/org/gated")
    hub.tokens.add("hf_good")
    env = hf_env(hub, tmp_path)
    good = hf_env(hub, tmp_path, token="hf_good")

    msg = mount_fails(weightfs_run, "hf://org/private", mountpoint, env)
    assert "private" in msg and "HF_TOKEN" in msg and "401" in msg
    msg = mount_fails(weightfs_run, "hf://org/missing", mountpoint, good)
    assert "not found" in msg and "404" in msg
    msg = mount_fails(weightfs_run, "hf://org/gated", mountpoint, good)
    assert "gated" in msg and "403" in msg
    msg = mount_fails(weightfs_run, "hf://org/gated", mountpoint, env)
    assert "gated" in msg and "401" in msg
    msg = mount_fails(weightfs_run, "hf://" + REPO, mountpoint,
                      hf_env(hub, tmp_path, token="hf_bad"))
    assert "token was refused" in msg and "hf_bad" not in msg
    msg = mount_fails(weightfs_run, "hf://%s@nope" % REPO, mountpoint, env)
    assert "revision 'nope'" in msg and "not found" in msg
    msg = mount_fails(weightfs_run, "hf://%s/no/such/dir" % REPO,
                      mountpoint, env)
    assert "404" in msg
    msg = mount_fails(weightfs_run, "hf://justaname", mountpoint, env)
    assert "expected hf://" in msg


def test_gated_with_access_and_429_while_reading(hub, mount, tmp_path):
    files = model_files()
    hub.commit(REPO, files, lfs=LFS)
    hub.gated.add("models/" + REPO)
    hub.tokens.add("hf_ok")
    hub.gated_ok.add("hf_ok")
    m = mount("hf://" + REPO, {"block_size": "1M"},
              env=hf_env(hub, tmp_path, token="hf_ok"))
    hub.throttle = 4  # resolves and reads of git files answered 429
    assert read_all(m.path) == files
    assert [e for e in hub.log if e[4] == 429]


def test_renamed_repo_followed(hub, mount, tmp_path):
    files = {"a.txt": b"moved", "w.bin": lib.random_bytes(MiB + 1, seed=2)}
    hub.commit(REPO, files, lfs={"w.bin"})
    hub.renamed["org/old-name"] = REPO
    m = mount("hf://org/old-name", {"block_size": "1M"},
              env=hf_env(hub, tmp_path))
    assert read_all(m.path) == files
    assert any(e[4] == 307 for e in hub.log)


def test_rate_limited_then_served(hub, mount, tmp_path):
    hub.commit(REPO, {"a.txt": b"hello"})
    hub.throttle = 2
    t0 = time.monotonic()
    m = mount("hf://" + REPO, env=hf_env(hub, tmp_path))
    assert time.monotonic() - t0 >= 2.0, "Retry-After: 1 honoured twice"
    with open(m.file("a.txt"), "rb") as f:
        assert f.read() == b"hello"
    assert [e[4] for e in hub.log[:3]] == [429, 429, 200]


@pytest.mark.parametrize("how", ["HF_TOKEN_PATH", "HF_HOME"])
def test_token_files(hub, mount, tmp_path, how):
    hub.commit(REPO, {"a.txt": b"secret bytes"})
    hub.private.add("models/" + REPO)
    hub.tokens.add("hf_from_file")
    env = hf_env(hub, tmp_path)
    if how == "HF_HOME":
        os.makedirs(env["HF_HOME"], exist_ok=True)
        path = os.path.join(env["HF_HOME"], "token")
    else:
        path = str(tmp_path / "tok")
        env["HF_TOKEN_PATH"] = path
    with open(path, "w") as f:
        f.write("hf_from_file\n")
    m = mount("hf://" + REPO, env=env)
    with open(m.file("a.txt"), "rb") as f:
        assert f.read() == b"secret bytes"


def test_dataset_subdir_and_tag(hub, mount, tmp_path):
    hub.commit("org/data", {"train/a.bin": b"A" * 5000, "train/b/c.txt":
                            b"c", "test/x.txt": b"x"}, kind="datasets",
               lfs={"train/a.bin"})
    tagged = hub.repos["datasets/org/data"]["refs"]["main"]
    hub.repos["datasets/org/data"]["refs"]["v1"] = tagged
    hub.commit("org/data", {"train/a.bin": b"B" * 5000}, kind="datasets",
               lfs={"train/a.bin"})
    m = mount("hf://datasets/org/data@v1/train", env=hf_env(hub, tmp_path))
    assert sorted(read_all(m.path)) == ["a.bin", "b/c.txt"]
    with open(m.file("a.bin"), "rb") as f:
        assert f.read() == b"A" * 5000
    assert getxattr(m.path, "user.weightfs.revision") == tagged
    m2 = mount("hf://datasets/org/data@%s" % tagged[:40],
               env=hf_env(hub, tmp_path))
    assert os.path.exists(m2.file("test/x.txt"))


def test_list_ttl_follows_the_branch(hub, mount, tmp_path):
    hub.commit(REPO, {"a.txt": b"one", "w.bin": b"w" * 3000},
               lfs={"w.bin"})
    m = mount("hf://" + REPO, {"list_ttl": 1}, env=hf_env(hub, tmp_path))
    with open(m.file("a.txt"), "rb") as f:
        assert f.read() == b"one"
    new = hub.commit(REPO, {"a.txt": b"two!", "b.txt": b"b"}, keep=True)
    assert lib.wait_until(lambda: os.path.exists(m.file("b.txt")), 10)
    assert getxattr(m.path, "user.weightfs.revision") == new
    with open(m.file("a.txt"), "rb") as f:
        assert f.read() == b"two!"
    with open(m.file("w.bin"), "rb") as f:
        assert f.read() == b"w" * 3000


NODE_SCRIPT = r"""
const hub = require("@huggingface/hub");
(async () => {
  const [hubUrl, repo, token] = process.argv.slice(2);
  const out = {};
  for await (const f of hub.listFiles({repo, hubUrl, recursive: true,
                                       accessToken: token})) {
    if (f.type !== "file") continue;
    const blob = await hub.downloadFile({repo, path: f.path, hubUrl,
                                         accessToken: token});
    const buf = Buffer.from(await blob.arrayBuffer());
    out[f.path] = {size: f.size, lfs: f.lfs ? f.lfs.oid : null,
                   sha256: require("crypto").createHash("sha256")
                     .update(buf).digest("hex")};
  }
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_official_js_client_agrees(hub, mount, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    if not shutil.which("node"):
        pytest.skip("node not installed")
    if not os.path.isdir(os.path.join(root, "node_modules", "@huggingface",
                                      "hub")):
        pytest.skip("@huggingface/hub not installed: run `npm install` "
                    "at the top of the tree")
    files = model_files()
    hub.commit(REPO, files, lfs=LFS)
    hub.private.add("models/" + REPO)
    hub.tokens.add("hf_js")
    script = tmp_path / "client.js"
    script.write_text(NODE_SCRIPT)
    r = subprocess.run(["node", str(script), hub.url, REPO, "hf_js"],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ,
                                NODE_PATH=os.path.join(root,
                                                       "node_modules")))
    assert r.returncode == 0, r.stderr
    client = json.loads(r.stdout)
    m = mount("hf://" + REPO, {"block_size": "1M"},
              env=hf_env(hub, tmp_path, token="hf_js"))
    seen = {}
    for p in read_all(m.path):
        with open(m.file(p), "rb") as f:
            data = f.read()
        lfs = None
        if p in LFS:
            lfs = getxattr(m.file(p), "user.weightfs.sha256")
        seen[p] = {"size": len(data), "lfs": lfs,
                   "sha256": hashlib.sha256(data).hexdigest()}
    assert seen == client
    assert hub.cdn_auth_seen == 0, "neither sends the token to the CDN"


def test_verify_sha256_catches_a_corrupt_cdn(hub, mount, tmp_path,
                                             ctl_bin):
    good = lib.random_bytes(3 * MiB + 5, seed=3)
    bad = lib.random_bytes(2 * MiB + 9, seed=4)
    hub.commit(REPO, {"good.bin": good, "bad.bin": bad, "cfg.json": b"{}"},
               lfs={"good.bin", "bad.bin"})
    hub.corrupt.add(hashlib.sha256(bad).hexdigest())
    m = mount("hf://" + REPO, {"block_size": "1M", "verify": "sha256"},
              env=hf_env(hub, tmp_path))
    with open(m.file("good.bin"), "rb") as f:
        assert f.read() == good
    # The corrupt one: the read that completes it fails, and every
    # read after (the daemon's cache still holds the bad blocks).
    with pytest.raises(OSError) as e:
        with open(m.file("bad.bin"), "rb") as f:
            f.read()
    assert e.value.errno == 5
    assert lib.read_errno(m.file("bad.bin"), 4096, 0)[0] == 5
    st = m.stats()
    assert st["verify_failed"] == 1 and st["files_verified"] == 1
    assert m.log().count("sha256 mismatch") == 1
    # weightfs-ctl verify: on a mount without verify=, it checks.
    m2 = mount("hf://" + REPO, {"block_size": "1M"},
               env=hf_env(hub, tmp_path))
    r = subprocess.run([ctl_bin, "verify", m2.path], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1, r
    out = r.stdout
    assert "good.bin: OK" in out and "bad.bin: MISMATCH" in out
    assert "cfg.json: no checksum" in out
    r = subprocess.run([ctl_bin, "verify", m2.file("good.bin")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "OK" in r.stdout, r


def test_disk_tier_serves_a_second_daemon(hub, mount, tmp_path):
    files = model_files()
    hub.commit(REPO, files, lfs=LFS)
    cache = tmp_path / "disk"
    opts = {"block_size": "1M", "cache_dir": str(cache)}
    m = mount("hf://" + REPO, opts, env=hf_env(hub, tmp_path))
    assert read_all(m.path) == files
    m.finish()
    before = len([e for e in hub.log if e[0] == "cdn"])
    m2 = mount("hf://" + REPO, opts, env=hf_env(hub, tmp_path))
    assert read_all(m2.path) == files
    assert m2.stats()["disk_hits"] > 0
    assert len([e for e in hub.log if e[0] == "cdn"]) == before
    # A new commit changing a shard: its blocks are not the old ones.
    name = "model-00002-of-00003.safetensors"
    new = lib.random_bytes(len(files[name]), seed=99)
    hub.commit(REPO, {name: new}, lfs=LFS, keep=True)
    m3 = mount("hf://" + REPO, opts, env=hf_env(hub, tmp_path))
    with open(m3.file(name), "rb") as f:
        assert f.read() == new


def test_zstd_object_shown_uncompressed(hub, mount, tmp_path):
    pack = os.path.join(lib.BUILD, "tools", "weightfs-pack")
    if not os.access(pack, os.X_OK):
        pytest.skip("weightfs-pack not built")
    src = tmp_path / "src"
    src.mkdir()
    data = (b"\0\1\2\3" * 300000) + lib.random_bytes(MiB, seed=8)
    (src / "w.bin").write_bytes(data)
    out = tmp_path / "packed"
    r = subprocess.run([pack, "-q", str(src / "w.bin"), "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    zst = (out / "w.bin.zst").read_bytes()
    hub.commit(REPO, {"w.bin.zst": zst}, lfs={"w.bin.zst"})
    m = mount("hf://" + REPO, {"block_size": "1M"},
              env=hf_env(hub, tmp_path))
    assert os.listdir(m.path) == ["w.bin"]
    with open(m.file("w.bin"), "rb") as f:
        assert f.read() == data


def test_weightfs_load_through_the_fast_path(hub, mount, tmp_path):
    st = os.path.join(lib.FIXTURES, "safetensors")
    load = os.path.join(lib.BUILD, "tools", "weightfs-load")
    if not os.path.isdir(st) or not os.access(load, os.X_OK):
        pytest.skip("safetensors fixtures or weightfs-load missing")
    model = os.path.join(st, "tiny-llama-sharded")
    files = {}
    for n in os.listdir(model):
        with open(os.path.join(model, n), "rb") as f:
            files[n] = f.read()
    hub.commit(REPO, files,
               lfs={n for n in files if n.endswith(".safetensors")})
    want = {}
    with open(os.path.join(st, "EXPECTED.json")) as f:
        for fname, tensors in json.load(f)["files"].items():
            if fname.startswith("tiny-llama-sharded/"):
                for name, t in tensors.items():
                    if name != "__metadata__":
                        want[name] = "sha256:" + t["sha256"]
    m = mount("hf://" + REPO, {"block_size": "1M", "verify": "sha256"},
              env=hf_env(hub, tmp_path))
    r = subprocess.run([load, "--json", "--digest", "sha256", m.path],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["path"] == "fastpath", out["path"]
    assert {t["name"]: t["digest"] for t in out["tensors"]} == want
    st_ = m.stats()
    assert st_["verify_failed"] == 0
    assert st_["files_verified"] == 3, st_
    # The Python layer (weightfs.numpy) on the same mount.
    libw = os.path.join(lib.BUILD, "loader", "libweightfs.so")
    if not os.path.exists(libw):
        return
    code = ("import hashlib, json, sys, weightfs.numpy as w\n"
            "out = {}\n"
            "for p in sys.argv[1:]:\n"
            "    for k, a in w.load_file(p).items():\n"
            "        out[k] = 'sha256:' + hashlib.sha256(a.tobytes())"
            ".hexdigest()\n"
            "print(json.dumps(out))\n")
    shards = sorted(m.file(n) for n in files if n.endswith(".safetensors"))
    r = subprocess.run(
        ["/usr/bin/python3", "-c", code] + shards, capture_output=True,
        text=True, timeout=120,
        env=dict(os.environ, WEIGHTFS_LIB=libw,
                 PYTHONPATH=os.path.join(lib.REPO, "loader", "python")))
    if r.returncode and lib.is_asan_build() and \
            "libweightfs not found" in r.stderr:
        return  # an ASan library does not load into a plain Python
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == want
