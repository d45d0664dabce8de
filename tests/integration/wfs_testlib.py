"""Plain helpers for the integration tests (conftest.py turns them into
fixtures; test modules may import them directly).

Paths: the build directory is $WEIGHTFS_BUILD (default <repo>/build), the
fixtures $WEIGHTFS_FIXTURES (default <repo>/tests/fixtures). With
WEIGHTFS_REQUIRE_FIXTURES=1 (tools/run-tests sets it) a missing fixture fails
the test instead of skipping it.
"""

import errno
import hashlib
import json
import os
import re
import sys

from servers.nginx import free_port, wait_port  # noqa: F401 (re-exported)

# Helpers the benchmarks' library has too, taken from it (tools/ never
# imports from tests/, tests may import from tools/).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))), "tools"))
from benchlib import (  # noqa: E402,F401 (re-exported)
    SANITIZER_MARKERS, Mount, MountError, find_daemon_pid, free_huge_pages,
    is_mounted, join_options, meminfo, pid_alive, random_bytes,
    sanitizer_env, start_mount, unmount, wait_until, write_random)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BUILD = os.path.abspath(os.environ.get("WEIGHTFS_BUILD",
                                       os.path.join(REPO, "build")))
FIXTURES = os.path.abspath(os.environ.get(
    "WEIGHTFS_FIXTURES", os.path.join(REPO, "tests", "fixtures")))
REQUIRE_FIXTURES = os.environ.get("WEIGHTFS_REQUIRE_FIXTURES", "") == "1"
WEIGHTFS = os.path.join(BUILD, "fs", "weightfs")
WEIGHTFS_CTL = os.path.join(BUILD, "tools", "weightfs-ctl")
WEIGHTFS_LOAD = os.path.join(BUILD, "tools", "weightfs-load")
FUSERMOUNT = "fusermount3"

MiB = 1024 * 1024


def missing_fixture(what):
    """A test cannot run without fixture @what: skip it, or fail it when
    WEIGHTFS_REQUIRE_FIXTURES=1 (CI: the fixtures are part of the tree)."""
    import pytest
    msg = "fixture missing: %s (set WEIGHTFS_FIXTURES)" % what
    if REQUIRE_FIXTURES:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)



def is_asan_build(build=BUILD):
    """Whether @build was configured with -Db_sanitize=...address..."""
    try:
        with open(os.path.join(build, "meson-info",
                               "intro-buildoptions.json")) as f:
            for opt in json.load(f):
                if opt.get("name") == "b_sanitize":
                    v = opt.get("value")
                    v = ",".join(v) if isinstance(v, list) else str(v)
                    return "address" in v
    except (OSError, ValueError):
        pass
    try:
        with open(WEIGHTFS, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


# -- data ----------------------------------------------------------------

def make_tree(root, spec, seed=1):
    """Create files under @root from @spec {relpath: size} (a relpath
    ending in "/" makes an empty directory); returns {relpath: sha256}."""
    sums = {}
    for i, (rel, size) in enumerate(sorted(spec.items())):
        p = os.path.join(root, rel)
        if rel.endswith("/"):
            os.makedirs(p, exist_ok=True)
            continue
        sums[rel] = write_random(p, size, seed=(seed, i))
    return sums


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path, bufsize=4 * MiB):
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_mmap(path, slice_size=48 * MiB):
    """sha256 of @path read through a read-only mapping, in slices."""
    import mmap
    h = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return h.hexdigest()
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            for off in range(0, size, slice_size):
                h.update(m[off:off + slice_size])
    return h.hexdigest()


def files_under(root):
    """{relpath: bytes} of every file under @root."""
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


def check_tree(m, files):
    """Mount @m shows exactly @files ({relpath: bytes}): every name, size
    and content, and nothing else."""
    got = {}
    for d, _, names in os.walk(m.path):
        for n in names:
            p = os.path.join(d, n)
            got[os.path.relpath(p, m.path)] = os.stat(p).st_size
    assert got == {k: len(v) for k, v in files.items()}
    for rel, data in files.items():
        assert sha256_file(m.file(rel)) == sha256_bytes(data), rel


def tree_listing(root):
    """{relpath: ("d", 0) or ("f", size)} of everything under @root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            out[os.path.normpath(os.path.join(rel, d))] = ("d", 0)
        for fn in filenames:
            p = os.path.join(dirpath, fn)
            out[os.path.normpath(os.path.join(rel, fn))] = (
                "f", os.stat(p).st_size)
    return out


def parse_safetensors_header(f):
    """(header dict, data start offset) of an open safetensors file."""
    raw = f.read(8)
    n = int.from_bytes(raw, "little")
    if len(raw) != 8 or n > 100 * MiB:
        raise ValueError("not a safetensors file")
    header = json.loads(f.read(n))
    return header, 8 + n


# -- mounts ---------------------------------------------------------------

def _unescape_mountinfo(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mounts():
    """{mountpoint: fstype} from /proc/self/mountinfo."""
    out = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            try:
                sep = fields.index("-")
            except ValueError:
                continue
            out[_unescape_mountinfo(fields[4])] = fields[sep + 1]
    return out


def vm_rss(pid):
    """The resident memory of process @pid, in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


def read_errno(path, size=None, offset=0):
    """Read @path (all of it, or @size bytes at @offset); returns the errno
    of the OSError raised, or None and the data."""
    try:
        with open(path, "rb", buffering=0) as f:
            if size is None:
                data = f.read()
            else:
                data = os.pread(f.fileno(), size, offset)
        return None, data
    except OSError as e:
        return e.errno, None


EROFS_LIKE = (errno.EROFS, errno.EACCES, errno.EPERM)


SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16",
    "BF16": "bfloat16", "I64": "int64", "I32": "int32", "I16": "int16",
    "I8": "int8", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2", "U16": "uint16", "U32": "uint32",
    "U64": "uint64",
}


def check_safetensors(path, expected):
    """Read the safetensors file @path the way safetensors.safe_open does
    (parse the header, mmap the file, slice each tensor) and compare with
    @expected, one file's entry of fixtures' EXPECTED.json. Returns a list
    of mismatches (empty when all tensors match)."""
    import mmap
    bad = []
    with open(path, "rb") as f:
        header, start = parse_safetensors_header(f)
        size = os.fstat(f.fileno()).st_size
        meta = header.pop("__metadata__", None)
        if meta != expected.get("__metadata__"):
            bad.append("__metadata__: %r != %r" %
                       (meta, expected.get("__metadata__")))
        names = set(k for k in expected if k != "__metadata__")
        if set(header) != names:
            bad.append("tensor names differ: %s" %
                       sorted(set(header) ^ names))
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            for name, info in header.items():
                exp = expected.get(name)
                if exp is None:
                    continue
                b, e = info["data_offsets"]
                if not (0 <= b <= e and start + e <= size):
                    bad.append("%s: offsets %r outside the file" %
                               (name, info["data_offsets"]))
                    continue
                got = sha256_bytes(m[start + b:start + e])
                if got != exp["sha256"]:
                    bad.append("%s: sha256 %s != %s" %
                               (name, got, exp["sha256"]))
                if list(info["shape"]) != list(exp["shape"]):
                    bad.append("%s: shape %r != %r" %
                               (name, info["shape"], exp["shape"]))
                dt = SAFETENSORS_DTYPES.get(info["dtype"], info["dtype"])
                if dt != exp["dtype"]:
                    bad.append("%s: dtype %s != %s" %
                               (name, dt, exp["dtype"]))
    return bad
