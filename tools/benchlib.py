"""benchlib: what the benchmarks in tools/ share (they import nothing from
tests/).

- the build: BUILD ($WEIGHTFS_BUILD, default <repo>/build; use_build()
  changes it), WEIGHTFS, WEIGHTFS_CTL, WEIGHTFS_LOAD, WEIGHTFS_PACK;
- sizes: parse_size() (an argparse type: "512M", "1G"), human();
- data: write_random() (returns the sha256), sha256_file();
- mounts: start_mount() -> Mount (weightfs in the foreground or
  daemonized, sanitizer reports collected; finish() unmounts and returns
  what went wrong; the integration tests' mounts too), ForeignMount
  (rclone, s3fs), is_mounted(), unmount(), wait_until();
- servers: Nginx (serves a directory with JSON listings, or proxies an
  HTTP server such as S3; optionally throttled: limit_rate per connection
  and an added first-byte latency; its access log as requests(), GETs
  and requests in flight), S3rver (s3rver from node_modules, with an
  upload), RackCache (packaging/rack-cache/'s nginx template rendered and
  run), ScriptServer (a server program run as a child that prints its
  URL first, e.g. tests/integration/servers/hub_server.py);
- caches: can_drop_caches(), drop_caches(), read_back();
- CPU and memory: proc_cpu() (a process, all threads), children_cpu()
  (waited-for children), machine_busy_s() (the whole machine), per_gb(),
  vm_rss() (a process's resident memory);
- huge pages: free_huge_pages() (reserve and put back);
- output: note() (progress on stderr), print_table();
- Bench: a run's temporary directory, its mounts and servers, cleaned up
  together.
"""

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time

MiB = 1024 * 1024
GiB = 1024 * MiB
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUSERMOUNT = "fusermount3"
NGINX = os.environ.get("WEIGHTFS_NGINX", "nginx")
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
S3RVER_BIN = os.path.join(ROOT, "node_modules", ".bin", "s3rver")
S3_KEY = "S3RVER"  # s3rver's built-in access key id and secret


def use_build(path):
    """Take the binaries from build directory @path."""
    global BUILD, WEIGHTFS, WEIGHTFS_CTL, WEIGHTFS_LOAD, WEIGHTFS_PACK
    BUILD = os.path.abspath(path)
    WEIGHTFS = os.path.join(BUILD, "fs", "weightfs")
    WEIGHTFS_CTL = os.path.join(BUILD, "tools", "weightfs-ctl")
    WEIGHTFS_LOAD = os.path.join(BUILD, "tools", "weightfs-load")
    WEIGHTFS_PACK = os.path.join(BUILD, "tools", "weightfs-pack")


use_build(os.environ.get("WEIGHTFS_BUILD", os.path.join(ROOT, "build")))


# -- sizes and output ---------------------------------------------------------
def parse_size(s):
    """Bytes of "512M", "1G", "1.5GiB", "4096" (powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", s, re.I)
    if not m:
        raise argparse.ArgumentTypeError("bad size %r (e.g. 512M, 1G)" % s)
    mult = {"": 1, "K": 1024, "M": MiB, "G": GiB, "T": 1024 * GiB}
    return int(float(m.group(1)) * mult[m.group(2).upper()])


def human(n, fmt="%.4g"):
    """"1 GiB", "512 MiB": @n bytes in the largest unit it reaches."""
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= div:
            return (fmt + " %s") % (n / div, unit)
    return "%d B" % n


def note(msg):
    """A progress line on stderr (tables go to stdout)."""
    print("  .. " + msg, file=sys.stderr, flush=True)


def print_table(head, rows, align):
    """@rows under @head, columns padded; @align: "<" or ">" per column.
    A row of one cell is printed as it is (a section line)."""
    widths = [max(len(str(r[i])) for r in rows + [head] if len(r) > 1)
              for i in range(len(head))]

    def line(r):
        return "  ".join(format(str(c), a + str(w))
                         for c, a, w in zip(r, align, widths)).rstrip()
    print(line(head))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r) if len(r) > 1 else r[0])


# -- data ---------------------------------------------------------------------
def random_bytes(size, seed):
    """@size deterministic pseudo-random bytes from @seed."""
    try:
        import numpy as np
        return np.random.default_rng(seed).bytes(size)
    except ImportError:
        import random
        return random.Random(str(seed)).randbytes(size)


def write_random(path, size, seed=0, chunk=16 * MiB):
    """Write @size deterministic random bytes to @path (parents created);
    returns their sha256 (hex)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        done, part = 0, 0
        while done < size:
            n = min(chunk, size - done)
            data = random_bytes(n, (seed, part))
            f.write(data)
            h.update(data)
            done += n
            part += 1
    return h.hexdigest()


def sha256_file(path, chunk=4 * MiB):
    """The sha256 (hex) of file @path."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


# -- caches and CPU -----------------------------------------------------------
def can_drop_caches():
    return os.access("/proc/sys/vm/drop_caches", os.W_OK)


def drop_caches():
    """Empty the page cache (root); False if this process may not."""
    if not can_drop_caches():
        return False
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    return True


def read_back(paths):
    """Read each file once, so a server serves it from memory as a network
    would (after drop_caches())."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(16 * MiB):
                pass


def proc_cpu(pid):
    """utime + stime of @pid (all its threads) in seconds, or 0.0 once it
    is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def children_cpu():
    """CPU seconds of this process's children that were waited for."""
    r = os.times()
    return r.children_user + r.children_system


def machine_busy_s():
    """CPU-s spent so far by the whole machine, idle and iowait left out."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK


def per_gb(seconds, nbytes):
    """CPU-s (or s) per GB (1e9 bytes) of @nbytes."""
    return seconds / (nbytes / 1e9)


def vm_rss(pid):
    """The resident memory of process @pid in bytes (0 once it is gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def meminfo(key):
    """The /proc/meminfo value of @key (kB for sizes, a count for pages)."""
    with open("/proc/meminfo") as f:
        for ln in f:
            if ln.startswith(key + ":"):
                return int(ln.split()[1])
    return 0


HUGE_SYSCTL = "/proc/sys/vm/nr_hugepages"


@contextlib.contextmanager
def free_huge_pages(count, touch=False):
    """At least @count free 2 MiB huge pages while the block runs, raising
    vm.nr_hugepages (root) and putting it back after. With @touch each is
    touched once first: a benchmark then measures its load, not the VM
    host's first touch of the pool. Yields None, or why there are not
    enough (then the pool is as it was)."""
    if meminfo("Hugepagesize") != 2048:
        yield "the default huge page size is not 2 MiB here"
        return
    before = None
    free = meminfo("HugePages_Free") - meminfo("HugePages_Rsvd")
    try:
        if free < count:
            if not os.access(HUGE_SYSCTL, os.W_OK):
                yield "reserving huge pages (vm.nr_hugepages) needs root"
                return
            with open(HUGE_SYSCTL) as f:
                before = int(f.read())
            try:
                with open(HUGE_SYSCTL, "w") as f:
                    f.write(str(before - free + count))
            except OSError as e:
                yield "cannot set vm.nr_hugepages: %s" % e
                return
            got = meminfo("HugePages_Free") - meminfo("HugePages_Rsvd")
            if got < count:
                yield ("the kernel gave %d free huge pages of %d (memory "
                       "too fragmented)" % (got, count))
                return
        if touch:
            import mmap
            fd = os.memfd_create("touch", os.MFD_HUGETLB)
            try:
                os.ftruncate(fd, count * 2 * MiB)
                with mmap.mmap(fd, count * 2 * MiB) as mem:
                    for off in range(0, count * 2 * MiB, 2 * MiB):
                        mem[off] = 1
            finally:
                os.close(fd)
        yield None
    finally:
        if before is not None:
            with open(HUGE_SYSCTL, "w") as f:
                f.write(str(before))


# -- mounts -------------------------------------------------------------------
def wait_until(pred, timeout, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def is_mounted(path):
    """Whether @path is a mountpoint now (/proc/self/mountinfo)."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)),
                        line.split()[4])
            if mp == path:
                return True
    return False


def unmount(path, timeout=10.0):
    """fusermount3 -u @path, retrying while busy; lazy as a last resort.
    Returns "unmounted", "lazy" or "not mounted"."""
    if not is_mounted(path):
        return "not mounted"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run([FUSERMOUNT, "-u", path], capture_output=True)
        if r.returncode == 0 or not is_mounted(path):
            return "unmounted"
        time.sleep(0.1)
    subprocess.run([FUSERMOUNT, "-u", "-z", path], capture_output=True)
    return "lazy"


def join_options(options):
    """-o values from a dict {name: value or True} or a list of strings."""
    if options is None:
        return []
    if isinstance(options, str):
        return [options] if options else []
    if isinstance(options, dict):
        out = []
        for k, v in options.items():
            if v is True:
                out.append(k)
            elif v is not None and v is not False:
                out.append("%s=%s" % (k, v))
        return out
    return list(options)


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:", "UndefinedBehaviorSanitizer",
                     "ThreadSanitizer")


def pid_alive(pid):
    """True while @pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return False
    return st[st.rfind(")") + 2:][:1] not in ("Z", "X")


def find_daemon_pid(mountpoint, exclude=()):
    """PID of the weightfs process whose command line names @mountpoint."""
    mp = os.path.realpath(mountpoint)
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in exclude:
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0]:
            continue
        if os.path.basename(argv[0]) != b"weightfs":
            continue
        args = [a.decode(errors="replace") for a in argv[1:] if a]
        if any(os.path.realpath(a) == mp for a in args if a.startswith("/")):
            if pid_alive(int(d)):
                return int(d)
    return None


class MountError(RuntimeError):
    """A mount that did not come up, or a failed weightfs-ctl."""


class Mount:
    """A running weightfs mount (start_mount(); the tests' `mount` fixture).

    path: the mountpoint; pid: the daemon; source; options (list);
    log_path: the daemon's captured stdout+stderr (foreground mounts, and
    the parent's output for daemonized ones); returncode once it exited
    (foreground only).
    """

    def __init__(self, path, source, options, foreground, log_path,
                 sanitizer_dir, env, proc=None, pid=None):
        self.path = path
        self.source = source
        self.options = options
        self.foreground = foreground
        self.log_path = log_path
        self.sanitizer_dir = sanitizer_dir
        self.env = env
        self.proc = proc
        self.pid = pid if pid is not None else (proc.pid if proc else None)
        self.returncode = None
        self.finished = False

    def __repr__(self):
        return "Mount(%s -> %s, pid %s)" % (self.source, self.path, self.pid)

    def file(self, rel):
        return os.path.join(self.path, rel)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def sanitizer_reports(self):
        """Text of every sanitizer report this daemon wrote ("" if none)."""
        text = ""
        log = self.log()
        if any(m in log for m in SANITIZER_MARKERS):
            text += log
        if self.sanitizer_dir and os.path.isdir(self.sanitizer_dir):
            for name in sorted(os.listdir(self.sanitizer_dir)):
                with open(os.path.join(self.sanitizer_dir, name), "rb") as f:
                    text += f.read().decode(errors="replace")
        return text

    def stats(self):
        """`weightfs-ctl stats MOUNTPOINT`, parsed."""
        r = subprocess.run([WEIGHTFS_CTL, "stats", self.path],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise MountError("weightfs-ctl stats failed (%d): %s" %
                             (r.returncode, r.stderr))
        return json.loads(r.stdout)

    def alive(self):
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and pid_alive(self.pid)

    def wait_exit(self, timeout):
        """Wait for the daemon to end; True if it did."""
        if self.proc is not None:
            try:
                self.returncode = self.proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        return wait_until(lambda: not self.alive(), timeout, 0.05)

    def unmount(self):
        return unmount(self.path)

    def kill(self, sig=signal.SIGTERM):
        if self.pid is not None and self.alive():
            os.kill(self.pid, sig)

    def finish(self, exit_timeout=30.0):
        """Unmount (if still mounted), wait for the daemon, and return a
        list of problems: a daemon that did not exit, a non-zero exit
        code, a sanitizer report."""
        if self.finished:
            return []
        self.finished = True
        problems = []
        how = self.unmount()
        if how == "lazy":
            problems.append("mount was busy: fusermount3 -u failed, "
                            "unmounted lazily")
        if not self.wait_exit(exit_timeout):
            problems.append("daemon (pid %s) still running %.0fs after "
                            "unmount" % (self.pid, exit_timeout))
            self.kill(signal.SIGTERM)
            if not self.wait_exit(5):
                self.kill(signal.SIGKILL)
                self.wait_exit(5)
        elif self.proc is not None and self.returncode != 0:
            problems.append("daemon exited with status %s" % self.returncode)
        reports = self.sanitizer_reports()
        if reports:
            problems.append("sanitizer report:\n" + reports[-20000:])
        return problems


def sanitizer_env(base, sanitizer_dir):
    """@base environment with ASan/UBSan reports logged into
    @sanitizer_dir (a daemonized daemon has no stderr to report to)."""
    env = dict(base)
    os.makedirs(sanitizer_dir, exist_ok=True)
    asan = env.get("ASAN_OPTIONS", "detect_leaks=1")
    ubsan = env.get("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    env["ASAN_OPTIONS"] = asan + ":log_path=%s/asan" % sanitizer_dir
    env["UBSAN_OPTIONS"] = ubsan + ":log_path=%s/ubsan" % sanitizer_dir
    env["LSAN_OPTIONS"] = env.get("LSAN_OPTIONS", "") + \
        ":log_path=%s/lsan" % sanitizer_dir
    return env


def start_mount(source, mountpoint, options=None, foreground=True,
                debug=False, extra_args=(), env=None, log_path=None,
                sanitizer_dir=None, timeout=30.0):
    """Run weightfs on @source at @mountpoint and wait until it is mounted.
    Raises MountError (with the daemon's output) if it does not come up."""
    opts = join_options(options)
    cmd = [WEIGHTFS]
    if foreground:
        cmd.append("-f")
    if debug:
        cmd.append("-d")
    if opts:
        cmd += ["-o", ",".join(opts)]
    cmd += list(extra_args) + [source, mountpoint]
    env = dict(os.environ if env is None else env)
    if sanitizer_dir:
        env = sanitizer_env(env, sanitizer_dir)
    log_path = log_path or os.path.join(os.path.dirname(mountpoint),
                                        os.path.basename(mountpoint) + ".log")
    logf = open(log_path, "ab")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf,
                            stderr=logf, env=env, close_fds=True)
    logf.close()
    m = Mount(mountpoint, source, opts, foreground, log_path, sanitizer_dir,
              env, proc=proc if foreground else None,
              pid=proc.pid if foreground else None)
    deadline = time.monotonic() + timeout
    if foreground:
        while not is_mounted(mountpoint):
            if proc.poll() is not None:
                raise MountError("weightfs exited with %d before mounting "
                                 "(%s):\n%s%s" % (proc.returncode,
                                                  " ".join(cmd), m.log(),
                                                  m.sanitizer_reports()))
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise MountError("not mounted after %.0fs (%s):\n%s" %
                                 (timeout, " ".join(cmd), m.log()))
            time.sleep(0.02)
        return m
    # Daemonized: the parent exits 0 only once the mount is live.
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise MountError("weightfs did not return within %.0fs (%s):\n%s" %
                         (timeout, " ".join(cmd), m.log()))
    if rc != 0:
        raise MountError("weightfs exited with %d (%s):\n%s%s" %
                         (rc, " ".join(cmd), m.log(), m.sanitizer_reports()))
    if not is_mounted(mountpoint):
        raise MountError("weightfs exited 0 but %s is not mounted:\n%s" %
                         (mountpoint, m.log()))
    m.pid = find_daemon_pid(mountpoint, exclude=(proc.pid,))
    if m.pid is None:
        raise MountError("mounted, but no weightfs process for %s found" %
                         mountpoint)
    return m


class ForeignMount:
    """Another FUSE client (rclone mount, s3fs -f) run as @cmd, mounting
    at @mountpoint in the foreground; pid is its daemon."""

    def __init__(self, cmd, mountpoint, env=None, timeout=30):
        self.path = mountpoint
        os.makedirs(mountpoint)
        log = open(mountpoint + ".log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        self.pid = self.proc.pid
        log.close()
        if not wait_until(lambda: is_mounted(mountpoint), timeout, 0.05):
            self.stop()
            with open(mountpoint + ".log") as f:
                raise RuntimeError("%s did not mount: %s" %
                                   (cmd[0], f.read()[-2000:]))

    def stop(self):
        unmount(self.path)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- servers ------------------------------------------------------------------
def free_port(host="127.0.0.1"):
    """A TCP port on @host that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0, proc=None, host="127.0.0.1"):
    """Wait until @host:@port accepts connections; False on timeout or
    when @proc exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def stop_process(proc, timeout=10):
    """SIGTERM, then SIGKILL after @timeout s."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


NGINX_CONF = """\
# Generated by tools/benchlib.py
{load_echo}
{user}
worker_processes {workers};
pid {work}/nginx.pid;
error_log {work}/error.log warn;
daemon off;
events {{
    worker_connections 4096;
}}
http {{
    log_format bench escape=json '{{"msec":$msec,"time":$request_time,'
        '"status":$status,"bytes":$body_bytes_sent,'
        '"method":"$request_method","uri":"$uri","range":"$http_range"}}';
    access_log {work}/access.log bench;
    client_body_temp_path {work}/tmp/client_body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    sendfile_max_chunk 0;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    max_ranges 1;
{upstream}
    server {{
        listen 127.0.0.1:{port} reuseport;
        server_name localhost;
{delay_location}
{locations}
    }}
}}
"""

DELAY_LOCATION = """\
        location = /__delay {{
            internal;
            echo_sleep {delay};
            echo ok;
        }}
"""

FILE_LOCATIONS = """\
        root {root};
        location / {{
            autoindex on;
            autoindex_format {fmt};
            autoindex_exact_size on;
{throttle}
        }}
        location /html/ {{
            alias {root}/;
            autoindex on;
            autoindex_format html;
            autoindex_exact_size on;
{throttle}
        }}
"""

S3_UPSTREAM = """\
    upstream s3 {{
        server 127.0.0.1:{port};
        keepalive 128;
    }}
"""

S3_LOCATIONS = """\
        location / {{
            proxy_pass http://s3;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
{throttle}
        }}
"""


class Nginx:
    """nginx on 127.0.0.1, in the foreground as our child, its files in
    @workdir. Serves directory @root at / (listings in @fmt, "json" as
    weightfs reads them, and always HTML under /html/ for rclone), or,
    with @upstream_port, proxies the HTTP server there (S3, a Hub
    stand-in), passing the client's Host on.

    A throttled link: @rate caps each connection (nginx limit_rate, e.g.
    "50m"; nginx lets each request's first second's worth through
    uncapped), @delay_ms adds a first-byte latency to every request (an
    auth_request to an echo_sleep location: libnginx-mod-http-echo).

    url: "http://127.0.0.1:PORT/"; base: the same without the slash;
    the access log gives requests(), gets() and in_flight()."""

    def __init__(self, workdir, root=None, upstream_port=None, rate=None,
                 delay_ms=0, fmt="json", workers=2):
        self.work = os.path.abspath(workdir)
        os.makedirs(os.path.join(self.work, "tmp"), exist_ok=True)
        self.access_log = os.path.join(self.work, "access.log")
        throttle = []
        if rate:
            throttle.append("            limit_rate %s;" % rate)
        if delay_ms:
            throttle.append("            auth_request /__delay;")
        throttle = "\n".join(throttle)
        if upstream_port is None:
            locs = FILE_LOCATIONS.format(root=os.path.abspath(root), fmt=fmt,
                                         throttle=throttle)
            upstream = ""
        else:
            locs = S3_LOCATIONS.format(throttle=throttle)
            upstream = S3_UPSTREAM.format(port=upstream_port)
        self.proc = None
        for _ in range(5):
            self.port = free_port()
            conf = os.path.join(self.work, "nginx.conf")
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(
                    load_echo=("load_module %s;" % ECHO_MODULE
                               if delay_ms else ""),
                    # As root, workers would run as nobody and could not
                    # read a 0700 temp dir: keep them root (loopback only).
                    user="user root;" if os.geteuid() == 0 else "",
                    workers=workers, work=self.work, port=self.port,
                    upstream=upstream, locations=locs,
                    delay_location=(DELAY_LOCATION.format(
                        delay="%.3f" % (delay_ms / 1000.0))
                        if delay_ms else "")))
            out = open(os.path.join(self.work, "stderr.log"), "ab")
            self.proc = subprocess.Popen(
                [NGINX, "-p", self.work, "-e",
                 os.path.join(self.work, "error.log"), "-c", conf],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            out.close()
            if wait_port(self.port, 10.0, self.proc):
                break
            self.stop()
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError("nginx did not start: see %s" % self.work)
        self.base = "http://127.0.0.1:%d" % self.port
        self.url = self.base + "/"

    def stop(self):
        stop_process(self.proc)
        self.proc = None

    def log_offset(self):
        try:
            return os.path.getsize(self.access_log)
        except OSError:
            return 0

    def requests(self, offset=0):
        """The requests logged after byte @offset of the access log (0:
        all), as dicts: msec (when it ended, time.time()), time (its
        duration, s), status, bytes (body), method, uri (decoded), range;
        None without a log."""
        out = []
        try:
            with open(self.access_log) as f:
                f.seek(offset)
                lines = f.readlines()
        except OSError:
            return None
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def _log(self, offset):
        """[(end time, duration, status, body bytes, method)] of requests
        logged after @offset, or None."""
        reqs = self.requests(offset)
        if reqs is None:
            return None
        return [(r["msec"], r["time"], str(r["status"]), r["bytes"],
                 r["method"]) for r in reqs]

    def gets(self, offset):
        """Body-carrying GETs (64 KiB or more) logged after @offset: the
        requests a read made."""
        log = self._log(offset)
        if log is None:
            return None
        return sum(1 for r in log if r[4] == "GET" and r[3] >= 65536)

    def in_flight(self, offset, t0, t1):
        """Mean number of body-carrying requests open during wall-clock
        [t0, t1] (time.time()), from the log written after @offset. nginx
        logs a request when it ends: one still running is not counted."""
        log = self._log(offset)
        if log is None:
            return None
        busy = 0.0
        for end, dur, _, sent, method in log:
            if method != "GET" or sent < 65536:
                continue
            lo, hi = max(end - dur, t0), min(end, t1)
            if hi > lo:
                busy += hi - lo
        return busy / (t1 - t0) if t1 > t0 else None


def s3_missing():
    """Why S3 benchmarks cannot run here, or None."""
    if shutil.which("node") is None:
        return "node not installed"
    if not os.access(S3RVER_BIN, os.X_OK):
        return "s3rver not installed (npm install)"
    import importlib.util
    if importlib.util.find_spec("botocore") is None:
        return "python3-botocore not installed"
    return None


def s3_env(home):
    """os.environ without AWS settings and proxies, with s3rver's keys;
    HOME=@home (no ~/.aws)."""
    env = clean_env()
    env.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_KEY,
               AWS_EC2_METADATA_DISABLED="true", HOME=home)
    return env


def clean_env():
    """os.environ without AWS settings and proxies."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("AWS_") and not k.lower().endswith("_proxy")}


class S3rver:
    """s3rver (npm) on 127.0.0.1, its objects under @workdir/data; put()
    uploads with botocore. Check s3_missing() first."""

    def __init__(self, workdir):
        self.data = os.path.join(workdir, "data")
        os.makedirs(self.data)
        self.port = free_port()
        env = dict(os.environ)
        env["NODE_OPTIONS"] = (env.get("NODE_OPTIONS", "") +
                               " --openssl-legacy-provider").strip()
        log = open(os.path.join(workdir, "s3rver.log"), "wb")
        self.proc = subprocess.Popen(
            [S3RVER_BIN, "-d", self.data, "-a", "127.0.0.1", "-p",
             str(self.port), "--silent"], stdin=subprocess.DEVNULL,
            stdout=log, stderr=log, env=env)
        log.close()
        if not wait_port(self.port, 30, self.proc):
            self.stop()
            raise RuntimeError("s3rver did not start")
        self.url = "http://127.0.0.1:%d" % self.port

    def put(self, bucket, key, path):
        """Create @bucket (if new) and upload file @path as @key."""
        import botocore.session
        from botocore.config import Config
        client = botocore.session.get_session().create_client(
            "s3", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id=S3_KEY, aws_secret_access_key=S3_KEY,
            config=Config(s3={"addressing_style": "path"},
                          read_timeout=600))
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        with open(path, "rb") as f:
            client.put_object(Bucket=bucket, Key=key, Body=f)

    def files(self):
        """Paths of what s3rver stores (to read back after drop_caches)."""
        return [os.path.join(dp, f) for dp, _, fs in os.walk(self.data)
                for f in fs]

    def stop(self):
        stop_process(self.proc)


RACK_CACHE_TEMPLATES = os.path.join(ROOT, "packaging", "rack-cache")

RACK_CACHE_MAIN = """\
# Generated by tools/benchlib.py
{user}
worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/error.log info;
daemon off;
events {{ worker_connections 1024; }}
http {{
    log_format rack escape=json '{{"method":"$request_method","uri":"$uri",'
        '"status":$status,"bytes":$body_bytes_sent,"range":"$http_range",'
        '"cache":"$upstream_cache_status","request":"$request"}}';
    access_log {work}/access.log rack;
    client_body_temp_path {work}/tmp/client_body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    default_type application/octet-stream;
    include {work}/rack.conf;
}}
"""


def render_template(path, **values):
    """File @path with its ${VARS} filled in from @values, as envsubst
    would; nginx's own $vars (not in @values) are left alone."""
    with open(path) as f:
        return string.Template(f.read()).safe_substitute(values)


class RackCache:
    """The rack cache as shipped: packaging/rack-cache/@template (a file
    name there, or a path; nginx proxy_cache + slice) rendered for an
    origin at @origin_host:@origin_port (@extra_vars fill in more
    ${VARS}), its cache and files in @workdir, nginx in the foreground as
    our child, listening on @listen_host:@port (another loopback address
    than the origin's, so the nodes' proxy is not the origin; @port
    default: a free one).

    url: "http://HOST:PORT"; requests(): its access log (method, uri,
    status, bytes, range, cache: HIT, MISS..., request); stop(); kill()
    (as a crash: SIGKILL to all its processes); start() again after
    either; log_tail()."""

    def __init__(self, template, workdir, origin_host, origin_port,
                 slice_size="1m", listen_host="127.0.0.2", port=None,
                 scheme="http", size="4g", extra_vars=None):
        self.workdir = os.path.abspath(workdir)
        os.makedirs(os.path.join(self.workdir, "tmp"), exist_ok=True)
        os.makedirs(os.path.join(self.workdir, "cache"), exist_ok=True)
        self.host = listen_host
        self.port = port or free_port(listen_host)
        values = dict(RACK_CACHE_LISTEN="%s:%d" % (listen_host, self.port),
                      RACK_CACHE_ORIGIN_HOST=origin_host,
                      RACK_CACHE_ORIGIN_PORT=str(origin_port),
                      RACK_CACHE_ORIGIN_SCHEME=scheme,
                      RACK_CACHE_DIR=os.path.join(self.workdir, "cache"),
                      RACK_CACHE_SIZE=size, RACK_CACHE_SLICE=slice_size)
        values.update(extra_vars or {})
        if os.sep not in template:
            template = os.path.join(RACK_CACHE_TEMPLATES, template)
        with open(os.path.join(self.workdir, "rack.conf"), "w") as f:
            f.write(render_template(template, **values))
        self.conf = os.path.join(self.workdir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(RACK_CACHE_MAIN.format(
                work=self.workdir,
                user="user root;" if os.geteuid() == 0 else ""))
        self.access_log = os.path.join(self.workdir, "access.log")
        self.proc = None
        self.start()
        self.url = "http://%s:%d" % (listen_host, self.port)

    def start(self):
        out = open(os.path.join(self.workdir, "stderr.log"), "ab")
        self.proc = subprocess.Popen(
            [NGINX, "-p", self.workdir, "-e",
             os.path.join(self.workdir, "error.log"), "-c", self.conf],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, close_fds=True)
        out.close()
        if not wait_port(self.port, 10.0, self.proc, self.host):
            self.stop()
            raise RuntimeError("rack cache did not start:\n" +
                               self.log_tail())

    def log_tail(self, n=4000):
        text = ""
        for name in ("stderr.log", "error.log"):
            try:
                with open(os.path.join(self.workdir, name), "rb") as f:
                    text += f.read().decode(errors="replace")[-n:]
            except OSError:
                pass
        return text

    def requests(self):
        out = []
        try:
            with open(self.access_log) as f:
                for line in f:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
        except OSError:
            pass
        return out

    def kill(self):
        """Die at once, as a crashed cache does (SIGKILL to the master and
        its workers): open connections reset, new ones refused."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            pids = subprocess.run(["pgrep", "-P", str(self.proc.pid)],
                                  capture_output=True, text=True).stdout
        except OSError:
            pids = ""
        self.proc.kill()
        for p in pids.split():
            try:
                os.kill(int(p), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        self.proc.wait()

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()


class ScriptServer:
    """A server program run as our child (@argv; a .py script runs with
    this Python) that prints its URL as the first word of its first line
    on stdout once it listens, e.g. tests/integration/servers/hub_server.py
    (run, not imported). url, port; stop()."""

    def __init__(self, argv, timeout=30.0, env=None):
        argv = list(argv)
        if argv[0].endswith(".py"):
            argv.insert(0, sys.executable)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, text=True,
                                     env=env)
        line = [None]

        def first_line():
            line[0] = self.proc.stdout.readline()
        t = threading.Thread(target=first_line, daemon=True)
        t.start()
        t.join(timeout)
        words = (line[0] or "").split()
        if not words:
            self.stop()
            raise RuntimeError("%s printed no URL in %.0fs" %
                               (" ".join(argv), timeout))
        self.first_line = line[0].strip()
        self.url = words[0]
        self.port = int(self.url.rstrip("/").rsplit(":", 1)[1])

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)
            self.proc.stdout.close()
        self.proc = None


# -- a run --------------------------------------------------------------------
class Bench:
    """One benchmark run: a temporary directory (@prefix, under @tmpdir),
    the mounts and servers started in it, all stopped by cleanup() (which
    removes the directory unless @keep)."""

    def __init__(self, prefix, tmpdir=None, keep=False):
        self.tmp = tempfile.mkdtemp(prefix=prefix, dir=tmpdir or None)
        self.keep = keep
        self.mounts = []
        self.servers = []
        self.can_drop = can_drop_caches()
        self.n_mounts = 0

    def serve(self, name, **kw):
        """An Nginx (see there for @kw) in TMP/@name, stopped at cleanup."""
        s = Nginx(os.path.join(self.tmp, name), **kw)
        self.servers.append(s)
        return s

    def rack_cache(self, name, origin_host, origin_port,
                   template="nginx-http.conf.template", **kw):
        """A RackCache (see there for @kw) in TMP/@name, stopped at
        cleanup."""
        s = RackCache(template, os.path.join(self.tmp, name), origin_host,
                      origin_port, **kw)
        self.servers.append(s)
        return s

    def script(self, argv, **kw):
        """A ScriptServer of @argv, stopped at cleanup."""
        s = ScriptServer(argv, **kw)
        self.servers.append(s)
        return s

    def stop(self, server):
        """Stop @server (one of ours) now, before cleanup."""
        server.stop()
        self.servers.remove(server)

    def mount(self, source, options=None, env=None, timeout=30.0):
        """A weightfs mount of @source at a new TMP/mntN (log: mntN.log)."""
        self.n_mounts += 1
        mp = os.path.join(self.tmp, "mnt%d" % self.n_mounts)
        os.makedirs(mp)
        m = start_mount(source, mp, options, env=env, log_path=mp + ".log",
                        timeout=timeout)
        self.mounts.append(m)
        return m

    def unmount(self, m, exit_timeout=20):
        problems = m.finish(exit_timeout=exit_timeout)
        self.mounts.remove(m)
        for p in problems:
            note("weightfs: " + p.splitlines()[0])

    def cold(self, paths=()):
        """Drop the page cache (if allowed), then read @paths back so the
        servers serve them from memory."""
        drop_caches()
        read_back(paths)

    def cleanup(self):
        for m in list(self.mounts):
            m.finish(exit_timeout=20)
        self.mounts = []
        for s in self.servers:
            s.stop()
        if self.keep:
            print("kept %s" % self.tmp, file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
