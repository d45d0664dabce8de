"""The Debian packages: built from a copy of the source with
dpkg-buildpackage -us -uc -b, checked by lintian, installed with
apt-get install ./*.deb, used (a mount through the installed binary and
mount.fuse3, a load with the installed Python package and weightfs-load),
purged, and nothing left behind.

Install and purge happen in a private mount namespace with overlays over
/usr, /etc and /var (unshare -m): dpkg and apt really run, but the machine's
own package database and files stay as they were, and whatever a purge
leaves behind is visible in the overlays' upper directories.
Needs root and the build dependencies (tools/setup-debian installs them);
about a minute on 2 cores."""

import os
import shutil
import subprocess
import textwrap

import pytest

import wfs_testlib as lib

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("dpkg-buildpackage") is None or
    shutil.which("unshare") is None or not os.path.exists("/dev/fuse"),
    reason="needs root, unshare, /dev/fuse and dpkg-buildpackage "
           "(tools/setup-debian installs debhelper, dh-python)")

PACKAGES = ["weightfs", "libweightfs0", "libweightfs-dev", "python3-weightfs"]


def _source_copy(dst):
    """The working tree's files (tracked and not ignored), with
    packaging/debian as debian/: the checkout itself stays clean."""
    files = subprocess.run(
        ["git", "-C", lib.REPO, "ls-files", "-co", "--exclude-standard",
         "-z"], capture_output=True, check=True).stdout.split(b"\0")
    for f in files:
        f = f.decode()
        if not f or f.startswith("node_modules") or \
                not os.path.isfile(os.path.join(lib.REPO, f)):
            continue
        os.makedirs(os.path.join(dst, os.path.dirname(f)), exist_ok=True)
        shutil.copy2(os.path.join(lib.REPO, f), os.path.join(dst, f))
    shutil.copytree(os.path.join(dst, "packaging", "debian"),
                    os.path.join(dst, "debian"))


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    top = tmp_path_factory.mktemp("deb")
    src = top / "weightfs-src"
    _source_copy(str(src))
    r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src,
                       capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, DEB_BUILD_OPTIONS="parallel=2"))
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    found = sorted(p.name for p in top.glob("*.deb"))
    return top, found


def test_changelog_version_is_meson_version():
    """debian/changelog must carry the project's version (meson.build)."""
    first = open(os.path.join(lib.REPO, "packaging", "debian",
                              "changelog")).readline()
    ver = first.split("(")[1].split(")")[0].split("-")[0]
    meson = open(os.path.join(lib.REPO, "meson.build")).read()
    assert "version: '%s'" % ver in meson, ver


def test_builds_four_packages(debs):
    top, found = debs
    for p in PACKAGES:
        assert any(f.startswith(p + "_") for f in found), (p, found)
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(next(top.glob("weightfs_*.deb")))],
        capture_output=True, text=True, check=True).stdout
    for path in ("./usr/bin/weightfs", "./usr/bin/weightfs-ctl",
                 "./usr/bin/weightfs-load",
                 "./lib/systemd/system/weightfs@.service",
                 "./usr/share/man/man1/weightfs.1.gz"):
        assert path in listing, path


@pytest.mark.skipif(shutil.which("lintian") is None,
                    reason="lintian not installed")
def test_lintian_clean(debs):
    top, found = debs
    changes = [str(p) for p in top.glob("*.changes")]
    r = subprocess.run(["lintian", "--fail-on", "error,warning",
                        "--suppress-tags", "bad-distribution-in-changes-file"]
                       + changes, capture_output=True, text=True,
                       timeout=600)
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr


def test_install_use_purge(debs, fixtures_dir, tmp_path):
    top, found = debs
    model = os.path.join(fixtures_dir, "safetensors", "tiny-llama")
    ov = tmp_path / "ov"
    mnt = tmp_path / "mnt"
    script = textwrap.dedent("""\
        set -eu
        for d in usr etc var; do
            mkdir -p {ov}/$d/upper {ov}/$d/work
            mount -t overlay overlay -o lowerdir=/$d,upperdir={ov}/$d/upper,workdir={ov}/$d/work /$d
        done
        cd {top}
        apt-get install -y -q ./weightfs_*.deb ./libweightfs0_*.deb \
            ./libweightfs-dev_*.deb ./python3-weightfs_*.deb >{tmp}/apt.log 2>&1 ||
            {{ tail -30 {tmp}/apt.log; exit 1; }}
        echo "== installed: $(dpkg-query -W -f '${{Package}} ' {pkgs})"
        command -v weightfs
        mkdir -p {mnt}
        mount -t fuse.weightfs -o ro,allow_other,nofail file://{model} {mnt}
        findmnt -n -o FSTYPE {mnt}
        weightfs-load -q {mnt}
        cd /
        env -i PATH=/usr/bin:/bin /usr/bin/python3 -c '
        import weightfs, weightfs.numpy
        print("python lib", weightfs._lib._lib._name)
        a = weightfs.numpy.load_file("{mnt}")
        print("python tensors", len(a))
        '
        weightfs-ctl stats --prometheus {mnt} | grep -c '^weightfs_' | sed 's/^/metrics /'
        umount {mnt}
        man -w weightfs libweightfs >/dev/null && echo "man ok"
        apt-get purge -y -q {pkgs} >>{tmp}/apt.log 2>&1 ||
            {{ tail -30 {tmp}/apt.log; exit 1; }}
        echo "== purged"
        if dpkg-query -W {pkgs} 2>/dev/null | grep -v '^$'; then
            dpkg -l {pkgs} | grep -E '^(ii|rc)' && {{ echo "still known to dpkg"; exit 1; }}
        fi
        """).format(ov=ov, top=top, tmp=tmp_path, mnt=mnt, model=model,
                    pkgs=" ".join(PACKAGES))
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                   "/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
           "DEBIAN_FRONTEND": "noninteractive"}
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh",
                        "-c", script], capture_output=True, text=True,
                       timeout=600, env=env)
    out = r.stdout + r.stderr
    print(out)
    assert r.returncode == 0, out
    assert "== installed: " + " ".join(sorted(PACKAGES)) + " " in out
    assert "/usr/bin/weightfs" in out
    assert "fuse.weightfs" in out
    assert "python lib /usr/lib/x86_64-linux-gnu/libweightfs.so.0" in out \
        or "python lib /usr/lib/" in out
    assert "python tensors " in out and "python tensors 0" not in out
    assert "man ok" in out and "== purged" in out
    # Nothing the packages installed or made is left: no path naming
    # weightfs in what the install and purge wrote.
    left = []
    for d in ("usr", "etc", "var"):
        for root, dirs, files in os.walk(ov / d / "upper"):
            for n in dirs + files:
                if "weightfs" in n:
                    left.append(os.path.join(root, n))
    assert not left, "left behind after purge: %s" % left
