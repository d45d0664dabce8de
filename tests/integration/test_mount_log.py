"""In the background the daemon logs to syslog (facility daemon), naming
the mountpoint in each message; with -f it logs to stderr.

/dev/log is a datagram socket of this test, bound over /dev/log in a
private mount namespace (unshare -m), so the real syslog is not needed."""

import os
import shutil
import socket
import subprocess
import textwrap

import pytest

import wfs_testlib as lib

LOG_DAEMON = 3 << 3


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare(1)")
def test_background_logs_to_syslog_with_mountpoint(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"a" * 4096)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    sock_path = str(tmp_path / "log.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(10)
    # The object changes after listing: the read fails with EIO and the
    # daemon logs why (an error, from its background).
    script = textwrap.dedent("""\
        set -eu
        # A /dev of this namespace: fuse and null from the real one, and
        # log, the test's socket.
        mkdir {tmp}/olddev
        mount --rbind /dev {tmp}/olddev
        mount -t tmpfs tmpfs /dev
        for d in fuse null log; do touch /dev/$d; done
        mount --bind {tmp}/olddev/fuse /dev/fuse
        mount --bind {tmp}/olddev/null /dev/null
        mount --bind {sock} /dev/log
        {wfs} file://{src} {mnt}
        echo b >> {src}/w.bin
        touch -d '2001-01-01' {src}/w.bin
        if cat {mnt}/w.bin >/dev/null 2>&1; then echo "read did not fail"; fi
        fusermount3 -u {mnt}
        """).format(tmp=tmp_path, sock=sock_path, wfs=lib.WEIGHTFS, src=src, mnt=mnt)
    try:
        r = subprocess.run(["unshare", "-m", "--propagation", "private",
                            "sh", "-c", script], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "read did not fail" not in r.stdout
        msgs = []
        while True:
            try:
                msgs.append(sock.recv(4096).decode(errors="replace"))
            except socket.timeout:
                break
            if any("changed" in m for m in msgs):
                break
    finally:
        sock.close()
    print(msgs)
    hits = [m for m in msgs if "changed" in m]
    assert hits, "no message on /dev/log: %r (stderr %r)" % (msgs, r.stderr)
    m = hits[0]
    pri = int(m[1:m.index(">")])
    assert pri & ~7 == LOG_DAEMON, "facility %d, not daemon" % (pri >> 3)
    assert "weightfs[" in m
    assert "%s: " % os.path.realpath(str(mnt)) in m, m
