"""`meson install` and mounting the ways admins do, for real.

Each test installs the build into /usr/local inside a private mount
namespace (unshare -m, with an overlay over /usr/local), so nothing
leaks onto the machine and concurrent runs do not collide; in there, the
installed binary is the one mount.fuse3 finds for `-t fuse.weightfs`, and
the system python3 imports the installed package with a clean environment.
Root only (mount namespaces, mount(8)); skipped otherwise.
"""

import hashlib
import os
import shutil
import subprocess
import textwrap

import pytest

import wfs_testlib as lib

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or
    not os.path.exists("/dev/fuse"),
    reason="needs root, unshare(1) and /dev/fuse")


def in_namespace(script, tmp_path, timeout=120):
    """Run @script (sh) in a private mount namespace where the build is
    installed into /usr/local (an overlay: what is there stays, the
    install goes to @tmp_path); returns CompletedProcess."""
    prologue = textwrap.dedent("""\
        set -eu
        mkdir -p {tmp}/upper {tmp}/work
        mount -t overlay overlay -o lowerdir=/usr/local,upperdir={tmp}/upper,workdir={tmp}/work /usr/local
        meson install -C {build} --no-rebuild --quiet >/dev/null
        # ldconfig, into a cache of this namespace only
        ldconfig -C {tmp}/ld.so.cache
        mount --bind {tmp}/ld.so.cache /etc/ld.so.cache
        """).format(build=lib.BUILD, tmp=tmp_path)
    path = tmp_path / "ns.sh"
    path.write_text(prologue + textwrap.dedent(script))
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                   "/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", str(path)],
        capture_output=True, text=True, timeout=timeout, env=env)


def test_meson_install_layout(tmp_path):
    """Everything lands where Debian expects it, under a DESTDIR."""
    dest = tmp_path / "dest"
    r = subprocess.run(["meson", "install", "-C", lib.BUILD, "--no-rebuild",
                        "--destdir", str(dest)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    root = dest / "usr" / "local"
    want = ["bin/weightfs", "bin/weightfs-ctl", "bin/weightfs-load",
            "include/weightfs.h", "include/weightfs_version.h",
            "lib/x86_64-linux-gnu/libweightfs.so.0",
            "lib/x86_64-linux-gnu/pkgconfig/weightfs.pc",
            "lib/systemd/system/weightfs@.service",
            "share/man/man1/weightfs.1", "share/man/man1/weightfs-ctl.1",
            "share/man/man1/weightfs-load.1", "share/man/man3/libweightfs.3",
            "share/doc/weightfs/examples/mnt-models.mount"]
    missing = [w for w in want if not os.path.lexists(root / w)]
    assert not missing, "not installed: %s" % missing
    pys = list(root.glob("lib/python3*/dist-packages/weightfs/_config.py"))
    assert pys, "python package not in /usr/local/lib/python3.X/dist-packages"
    assert "/usr/local/lib/x86_64-linux-gnu/libweightfs.so.0" in \
        pys[0].read_text()
    pc = (root / "lib/x86_64-linux-gnu/pkgconfig/weightfs.pc").read_text()
    assert "Version: " in pc and "-lweightfs" in pc


def test_installed_library_pkgconfig_and_python(tmp_path, fixtures_dir):
    """A C program built with pkg-config against the installed header and
    library runs; the system python3 imports the installed package with no
    WEIGHTFS_* variable and loads a model."""
    prog = tmp_path / "p.c"
    prog.write_text(textwrap.dedent("""\
        #include <stdio.h>
        #include <string.h>
        #include <weightfs.h>
        int main(void)
        {
            struct wfs_load_opts o;
            if (wfs_load_opts_init(&o, sizeof(o)) || o.device != WFS_DEVICE_CPU)
                return 1;
            printf("%s %s\\n", wfs_version_string(), WFS_VERSION_STRING);
            return strcmp(wfs_version_string(), WFS_VERSION_STRING) != 0;
        }
        """))
    model = os.path.join(fixtures_dir, "safetensors", "tiny-llama")
    r = in_namespace("""\
        cc -o {t}/p {t}/p.c $(pkg-config --cflags --libs weightfs)
        {t}/p
        cd /
        env -i PATH=/usr/bin:/bin /usr/bin/python3 -c '
        import weightfs, weightfs.numpy
        print("lib", weightfs._lib._lib._name)
        a = weightfs.numpy.load_file("{m}")
        print("tensors", len(a), weightfs.__version__)
        '
        """.format(t=tmp_path, m=model), tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "lib /usr/local/lib/x86_64-linux-gnu/libweightfs.so.0" in r.stdout
    assert "tensors " in r.stdout and "tensors 0" not in r.stdout


def test_mount_fstab_and_type(tmp_path, fixtures_dir):
    """mount --fstab with a fuse.weightfs line carrying the generic options
    fstab and systemd pass on, then mount -t fuse.weightfs -o ...; each
    through mount.fuse3 and the installed binary, read back and checked."""
    src = os.path.join(fixtures_dir, "safetensors")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with open(os.path.join(src, "dtypes.safetensors"), "rb") as f:
        want = hashlib.sha256(f.read()).hexdigest()
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "# a test fstab\n"
        "file://%s %s fuse.weightfs ro,allow_other,_netdev,nofail,noauto,"
        "nodev,nosuid,noexec,x-systemd.mount-timeout=30,"
        "x-systemd.requires=network-online.target,comment=x,"
        "cache_mem=64M,block_size=1M 0 0\n" % (src, mnt))
    r = in_namespace("""\
        mount --fstab {tab} {mnt}
        findmnt -n -o FSTYPE,OPTIONS {mnt}
        sha256sum {mnt}/dtypes.safetensors
        weightfs-ctl stats {mnt}
        umount {mnt}
        ! mountpoint -q {mnt}
        mount -t fuse.weightfs -o ro,defaults,users,auto,rw,relatime,nodiratime,lazytime file://{src} {mnt}
        sha256sum {mnt}/dtypes.safetensors
        findmnt -n -o OPTIONS {mnt}
        umount {mnt}
        echo unmounted
        """.format(tab=fstab, mnt=mnt, src=src), tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "fuse.weightfs" in out and "allow_other" in out, out
    assert out.count(want) == 2, out
    assert "bytes_fetched" in out
    lines = [ln for ln in r.stdout.splitlines() if "user_id=" in ln]
    assert all(ln.split()[-1].startswith("ro,") or " ro," in ln
               for ln in lines), lines  # "rw" was ignored: still read-only
    assert "unmounted" in out


def test_bad_mount_option_still_refused(tmp_path, weightfs_run, mountpoint,
                                        fixtures_dir):
    """Generic options are ignored; a misspelled option still fails."""
    r = weightfs_run("-o", "nofail,_netdev,x-systemd.automount,no_such_opt",
                     "file://" + fixtures_dir, mountpoint)
    assert r.returncode != 0
    assert "no_such_opt" in r.stderr


def _units(tmp_path):
    unit = os.path.join(lib.BUILD, "packaging", "systemd", "weightfs@.service")
    text = open(unit).read()
    installed_bin = [w.split("=")[-1] for w in text.split()
                     if w.startswith("ExecStart=")][0]
    # The unit names the installed binary; verify checks it is executable,
    # so point it at the build's (the only change).
    text = text.replace(installed_bin, lib.WEIGHTFS)
    d = tmp_path / "units"
    d.mkdir()
    (d / "weightfs@mnt-models.service").write_text(text)
    shutil.copy(os.path.join(lib.REPO, "packaging", "systemd",
                             "mnt-models.mount"), d)
    return d, text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed (Debian systemd)")
def test_systemd_units_verify(tmp_path):
    d, text = _units(tmp_path)
    assert "Type=forking" in text
    assert "ExecStartPre=-/bin/fusermount3 -u -z %f" in text
    r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                        "weightfs@mnt-models.service", "mnt-models.mount"],
                       cwd=d, capture_output=True, text=True, timeout=60)
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", "systemd-analyze warned:\n" + r.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed (Debian systemd)")
def test_systemd_verify_can_fail(tmp_path):
    """The check above is not vacuous: a broken unit is reported."""
    d, text = _units(tmp_path)
    (d / "weightfs@mnt-models.service").write_text(
        text.replace(lib.WEIGHTFS, "/nonexistent/weightfs"))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                        "weightfs@mnt-models.service"],
                       cwd=d, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "not executable" in r.stderr


def test_unit_clears_stale_mount(tmp_path, fixtures_dir):
    """Issue 9.9: after SIGKILL a mount is left behind ("Transport endpoint
    is not connected") and a new mount on it fails. The unit's
    ExecStartPre, run as systemd would, clears it, and ExecStart mounts
    again and returns only once the mount is live (Type=forking)."""
    _, text = _units(tmp_path)
    pre = [ln.split("=", 1)[1] for ln in text.splitlines()
           if ln.startswith("ExecStartPre=")]
    start = [ln.split("=", 1)[1] for ln in text.splitlines()
             if ln.startswith("ExecStart=")][0]
    mnt = tmp_path / "models"
    env = {"%f": str(mnt), "$WEIGHTFS_OPTIONS": "-o cache_mem=64M",
           "${WEIGHTFS_SOURCE}": "file://" + os.path.join(fixtures_dir,
                                                          "safetensors")}

    def expand(cmd):
        for k, v in env.items():
            cmd = cmd.replace(k, v)
        return cmd.lstrip("-")

    steps = "\n".join(["%s || true" % expand(p) if p.startswith("-")
                       else expand(p) for p in pre])
    r = in_namespace("""\
        mkdir -p {mnt}
        {start}
        kill -9 $(pgrep -f -- "weightfs .*{mnt}")
        sleep 0.5
        if ls {mnt} 2>/dev/null; then echo "not stale"; exit 1; fi
        if {start} 2>/dev/null; then echo "mounted over a stale mount?"; fi
        {steps}
        {start}
        ls {mnt}
        fusermount3 -u {mnt}
        """.format(mnt=mnt, start=expand(start), steps=steps), tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "dtypes.safetensors" in out
