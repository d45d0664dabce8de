"""Shared fixtures for the integration tests (all of tests/integration).

Paths:   build_dir, weightfs_bin, ctl_bin (skip when the binary is not built),
         fixtures_dir ($WEIGHTFS_FIXTURES), asan_build (bool).
Servers: nginx(root, fmt="json") -> NginxServer (real nginx, generated
         config in a tmp dir; .url .port .access_log; stopped at teardown);
         nginx_session (the same, session-scoped);
         fault_server(root) -> FaultServer (servers/fault_server.py).
Mounts:  mount(source, options=..., foreground=True) -> Mount: runs the real
         binary, waits for the mount, and at teardown unmounts and fails the
         test if the daemon did not exit 0 or a sanitizer reported anything;
         weightfs_run(*args) runs the binary to completion (bad-input tests).
Data:    sample_tree (session: a directory of files of awkward sizes and
         their sha256), make_data(root, {rel: size}) -> {rel: sha256}, and
         the helpers in wfs_testlib (write_random, sha256_file, ...).
Ports:   free_port() (a function, also importable from wfs_testlib).

Test modules named test_mount_* are skipped as a whole, with the reason,
when the daemon binary is not built.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import wfs_testlib as lib  # noqa: E402
from servers.fault_server import FaultServer  # noqa: E402
from servers.nginx import NginxServer  # noqa: E402

free_port = lib.free_port

MOUNT_PREFIX = "test_mount_"


def _missing_binary_reason():
    if not os.access(lib.WEIGHTFS, os.X_OK):
        return ("weightfs not built: %s missing (build with `meson setup "
                "build && meson compile -C build`, or set WEIGHTFS_BUILD)" %
                lib.WEIGHTFS)
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    if shutil.which(lib.FUSERMOUNT) is None:
        return "fusermount3 not installed (Debian fuse3)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _missing_binary_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if os.path.basename(str(item.fspath)).startswith(MOUNT_PREFIX):
            item.add_marker(skip)


def _have_cuda_device():
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")


def pytest_runtest_setup(item):
    if "slow" in item.keywords and os.environ.get("WEIGHTFS_SLOW") != "1":
        pytest.skip("slow test: set WEIGHTFS_SLOW=1 to run it")
    if item.get_closest_marker("cuda") and not _have_cuda_device():
        pytest.skip("needs a CUDA GPU (no /dev/nvidiactl here)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Lets fixtures see at teardown whether the test itself failed.
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def pytest_report_header(config):
    return ["weightfs build: %s%s" % (lib.BUILD, " (ASan)" if
                                      lib.is_asan_build() else ""),
            "fixtures: %s" % lib.FIXTURES]


# -- paths ---------------------------------------------------------------

@pytest.fixture(scope="session")
def build_dir():
    return lib.BUILD


@pytest.fixture(scope="session")
def weightfs_bin():
    reason = _missing_binary_reason()
    if reason:
        pytest.skip(reason)
    return lib.WEIGHTFS


@pytest.fixture(scope="session")
def ctl_bin(weightfs_bin):
    if not os.access(lib.WEIGHTFS_CTL, os.X_OK):
        pytest.skip("weightfs-ctl not built: %s missing" % lib.WEIGHTFS_CTL)
    return lib.WEIGHTFS_CTL


@pytest.fixture(scope="session")
def fixtures_dir():
    if not os.path.isdir(lib.FIXTURES):
        lib.missing_fixture(lib.FIXTURES)
    return lib.FIXTURES


@pytest.fixture(scope="session")
def asan_build():
    return lib.is_asan_build()


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("session")


# -- servers -------------------------------------------------------------

class _ServerFactory:
    def __init__(self, tmp):
        self.tmp = tmp
        self.servers = []

    def nginx(self, root, fmt="json", **kw):
        work = tempfile.mkdtemp(prefix="nginx-", dir=self.tmp)
        srv = NginxServer(str(root), work, fmt=fmt, **kw)
        self.servers.append(srv)
        return srv

    def fault(self, root, **kw):
        srv = FaultServer(str(root), **kw)
        self.servers.append(srv)
        return srv

    def stop(self):
        for s in reversed(self.servers):
            s.stop()


@pytest.fixture
def nginx(tmp_path):
    """nginx(root, fmt="json") -> a started NginxServer serving @root."""
    f = _ServerFactory(str(tmp_path))
    yield f.nginx
    f.stop()


@pytest.fixture(scope="session")
def nginx_session(tmp_path_factory):
    """As `nginx`, but the servers live for the whole session."""
    f = _ServerFactory(str(tmp_path_factory.mktemp("nginx")))
    yield f.nginx
    f.stop()


@pytest.fixture
def fault_server():
    """fault_server(root) -> a started FaultServer serving @root."""
    f = _ServerFactory(None)
    yield f.fault
    f.stop()


# -- mounts --------------------------------------------------------------

@pytest.fixture
def mount(weightfs_bin, tmp_path, asan_build, request):
    """mount(source, options=None, foreground=True, debug=False,
    mountpoint=None, env=None, timeout=None) -> wfs_testlib.Mount.

    options: dict {"block_size": "1M", "insecure": True} or list of strings.
    Teardown unmounts every mount still up (fusermount3 -u, lazily if
    busy), waits for each daemon, and fails the test if one did not exit
    with status 0 or left a sanitizer report."""
    made = []
    counter = [0]

    def start(source, options=None, foreground=True, debug=False,
              mountpoint=None, env=None, timeout=None, extra_args=()):
        counter[0] += 1
        n = counter[0]
        mp = mountpoint or str(tmp_path / ("mnt%d" % n))
        os.makedirs(mp, exist_ok=True)
        san = str(tmp_path / ("sanitizer%d" % n))
        m = lib.start_mount(source, mp, options, foreground, debug,
                            extra_args, env,
                            log_path=str(tmp_path / ("weightfs%d.log" % n)),
                            sanitizer_dir=san,
                            timeout=timeout or (60 if asan_build else 30))
        made.append(m)
        return m

    yield start
    call = getattr(request.node, "rep_call", None)
    test_failed = call is not None and call.failed
    problems = []
    for m in reversed(made):
        for p in m.finish(exit_timeout=60 if asan_build else 30):
            if test_failed and p.startswith("daemon exited with status"):
                continue  # the test's own failure says enough
            problems.append("%s: %s\n--- daemon log (tail) ---\n%s" %
                            (m, p, m.log()[-6000:]))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def weightfs_run(weightfs_bin, tmp_path, asan_build):
    """weightfs_run(*args, timeout=60, env=None) -> CompletedProcess (text).

    Runs the binary to completion (for options and bad input). Any mount it
    left behind under tmp_path is undone at teardown, and its daemon
    killed."""
    def run(*args, timeout=60, env=None):
        e = lib.sanitizer_env(dict(os.environ if env is None else env),
                              str(tmp_path / "sanitizer-run"))
        return subprocess.run([lib.WEIGHTFS] + [str(a) for a in args],
                              capture_output=True, text=True,
                              timeout=timeout, env=e,
                              stdin=subprocess.DEVNULL)
    yield run
    base = os.path.realpath(str(tmp_path))
    for mp in list(lib.mounts()):
        if mp.startswith(base + os.sep):
            pid = lib.find_daemon_pid(mp)
            lib.unmount(mp)
            if pid and lib.pid_alive(pid):
                os.kill(pid, 9)


@pytest.fixture
def mountpoint(tmp_path):
    """An empty directory to mount on."""
    p = tmp_path / "mnt"
    p.mkdir()
    return str(p)


# -- data ----------------------------------------------------------------

# Sizes chosen around a 1 MiB block size (tests mount with block_size=1M).
SAMPLE_SPEC = {
    "empty.bin": 0,
    "one.bin": 1,
    "small.txt": 4095,
    "block.bin": lib.MiB,
    "block_plus_one.bin": lib.MiB + 1,
    "odd.bin": 3 * lib.MiB + 12345,
    "big.bin": 24 * lib.MiB + 4321,
    "with space.bin": 1000,
    "unicod\u00e9 \u00fc.bin": 2000,
    "plus+percent%20.bin": 3000,
    "nested/a.bin": 100000,
    "nested/dir/deep/file.bin": 2 * lib.MiB - 7,
    "nested/dir/other.bin": 5,
    "emptydir/": 0,
}


class SampleTree:
    """root: the directory; sums: {relpath: sha256}; sizes: {relpath: size};
    files: sorted relpaths of the files."""

    def __init__(self, root, sums, spec):
        self.root = root
        self.sums = sums
        self.sizes = {k: v for k, v in spec.items() if not k.endswith("/")}
        self.files = sorted(sums)

    def path(self, rel):
        return os.path.join(self.root, rel)


@pytest.fixture(scope="session")
def sample_tree(tmp_path_factory):
    """A directory of files of awkward sizes (0, 1, a block, a block + 1,
    not a multiple of 1 MiB, 24 MiB), nested and empty directories, and
    names with spaces, non-ASCII, '+' and '%'. Read-only by convention."""
    root = str(tmp_path_factory.mktemp("sample") / "tree")
    os.makedirs(root)
    sums = lib.make_tree(root, SAMPLE_SPEC)
    return SampleTree(root, sums, SAMPLE_SPEC)


@pytest.fixture
def make_data():
    """make_data(root, {relpath: size}, seed=1) -> {relpath: sha256}."""
    return lib.make_tree
