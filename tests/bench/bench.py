#!/usr/bin/python3
"""make bench: SPEC section 11's performance targets, measured side by side in one run.

A benchmark, not a test: it never runs under `make check`, and a missed target is
printed (MISSED), not fatal. It exits non-zero only when something broke: a mount that
fails, a read that fails or returns other bytes than the local API serves for that
image, a daemon that does not exit 0.

One local API process (tests/localapi/ciapi.py, plain HTTP/1.1 keep-alive, PNGs at zlib
level 6, ~6.5 kB) serves the signed API and /static/ alike; its global latency is set per
measurement. Every image is rendered once by a Python client before it is timed (the
expected bytes), so the server's render time is never in a measurement.

Rows (see tests/bench/README.md for how to read the table):
  1  warm read: 1000 x (open, read, close) of a file already read, insightfs vs a private
     tmpfs holding the same bytes at the same depth; median of batches.
  2  cold read of one image, latency 20 ms: `cat NAME` of a name not read since the
     mount (connection already open) vs one `curl -s -o /dev/null` process with the
     signed headers; medians, interleaved.
  3  32 different images at once in one directory, latency 50 ms, max_connections = 8,
     vs the stand-in's floor: 8 threads, each with an open keep-alive connection,
     4 signed GETs each (the same 32 targets).
  4  32 readers of one uncached image through 8 spellings (name and id paths, ISO and
     epoch names, @auto): upstream requests for it in the local API's log.
  5  VmRSS of the daemon after reading N different images (default 5000) with
     cache.max_bytes = 8 MiB, vs max_bytes + pinned_bytes + 32 MiB.
  6  insightfs (max_connections = 32) vs httpdirfs --cache and rclone mount
     --vfs-cache-mode full, both on /static/: cold read (cat), warm read, 32 parallel
     reads of different files; latency 20 ms.
  7  the next bar, against physical floors:
     a  warm read vs floorfs (tests/bench/floorfs.c, built here with cc + pkg-config
        fuse3): a minimal low-level FUSE server the kernel serves alone; interleaved
        medians; within 1.05x.
     b  cold read over HTTPS (a second local API process, TLS, certificates made now),
        latency 20 ms, vs cat of a tmpfs file + one signed GET on an open keep-alive TLS
        connection of the bench's own; within 1.05x.
     c  the same cats vs one curl process per request; faster.
     d  32 images at once, max_connections 32, latency 20 ms, vs 32 threads of the bench
        each with its own open keep-alive connection, one GET each; within 1.1x.
     e  daemon CPU (user + system, /proc/PID/stat) per cold fetch vs rclone's CPU per
        cold read, over row 6's timed cold reads; at most 0.3x.
     f  ls -l of a widget's 30 days/, latency 20 ms, max_connections 8, vs
        ceil(30/8) x 20 ms; within 2x and exactly 30 upstream requests.
     g  the fleet (SPEC 13): 3 mounts sharing one redis-server of the bench's own, each
        reading the same 100 new final images at once, latency 20 ms: exactly 100
        upstream requests in the local API's log.
     h  a shared-cache hit: a cold LOOKUP + READ on mount B of an image mount A fetched,
        vs one Redis GET of the same value + a cold LOOKUP and READ through floorfs;
        interleaved medians; within 1.5x.
     Rows 7g-7h are "not available" (not a failure) while insightfs rejects the `shared`
     group or redis-server is not installed.

Standard library only (Redis spoken in RESP over a socket), plus
tests/localapi/client.py and certs.py.
"""
import argparse
import hashlib
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "localapi"))
from certs import make_certs  # noqa: E402
from client import LocalAPI, image_target, signed_headers  # noqa: E402

MIB = 1 << 20
HOUR = 3600 * 1000
DAY = 86400 * 1000
STATIC_FIRST_DAY = 1733011200000     # 2024-12-01: the 4 days /static/ lists per widget
STATIC_DAYS = [STATIC_FIRST_DAY + i * DAY for i in range(4)]
BASE_A = 1704067200000               # 2024-01-01: rows 1-4 (final ranges, hours)
BASE_B = 1719792000000               # 2024-07-01: row 5

DASH_ID, DASH_NAME = "df_bench_0001", "bench"
N_WIDGETS = 192                      # 0-63 rows 1-6 and 7a-7f; 64-191 row 7e's cold reads
CPU_FIRST_WIDGET = 64
CPU_ROUNDS = 4                       # row 7e: interleaved rounds of 128 files per side
WIDGETS = [("wid_%02d" % i, "w%02d" % i) for i in range(N_WIDGETS)]  # (id, name)
DATASET = [{"id": DASH_ID, "name": DASH_NAME,
            "widgets": [{"widgetId": wid, "name": name} for wid, name in WIDGETS]}]

MEM_MAX_BYTES = 8 * MIB
HISTORY_DAYS = 30                    # days/ of every mount (row 7f lists one)


class BenchError(Exception):
    """Something broke (not a missed target)."""


class PeerUnavailable(Exception):
    """A peer filesystem could not be mounted: its rows are not measured."""


def log(msg):
    sys.stderr.write("[bench] %s\n" % msg)
    sys.stderr.flush()


def median(xs):
    return statistics.median(xs)


def iso(ms, seconds=False):
    return time.strftime("%Y%m%dT%H%M%SZ" if seconds else "%Y%m%dT%H%MZ",
                         time.gmtime(ms // 1000))


def mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def mounts_under(prefix):
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            p = line.split()[4]
            if p == prefix or p.startswith(prefix + "/"):
                out.append(p)
    return out


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy") and not k.startswith("NCLOUD_")
           and k != "INSIGHTFS_CONFIG"}
    env.setdefault("HOME", "/root")
    if extra:
        env.update(extra)
    return env


def read_all(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while True:
            b = os.read(fd, 65536)
            if not b:
                return b"".join(chunks)
            chunks.append(b)
    finally:
        os.close(fd)


def tail(path, n=2000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


# ---- the result table --------------------------------------------------------------------

class Row:
    def __init__(self, key, what, target):
        self.key, self.what, self.target = key, what, target
        self.ours = self.ref = self.ratio = "-"
        self.status = "not measured"
        self.notes = []

    def set(self, ours, ref, ratio, met):
        self.ours, self.ref = ours, ref
        self.ratio = "-" if ratio is None else "%.2fx" % ratio
        self.status = "met" if met else "MISSED"

    def fail(self, why):
        self.status = "FAILED"
        self.notes.append(why)

    def skip(self, why):
        self.status = "not measured"
        self.notes.append(why)

    def unavailable(self, why):
        """The feature the row measures is not in this build (or a tool it needs is
        missing): not a failure, not a missed target."""
        self.status = "not available"
        self.notes.append("not available: " + why)


def fmt_time(s):
    if s < 1e-3:
        return "%.1f us" % (s * 1e6)
    if s < 1:
        return "%.1f ms" % (s * 1e3)
    return "%.2f s" % s


def print_table(rows, out):
    head = ("#", "what", "insightfs", "reference", "ratio", "target", "result")
    data = [head] + [(r.key, r.what, r.ours, r.ref, r.ratio, r.target, r.status) for r in rows]
    widths = [max(len(str(d[i])) for d in data) for i in range(len(head))]
    line = "+".join("-" * (w + 2) for w in widths)
    out.write("+" + line + "+\n")
    for k, d in enumerate(data):
        out.write("| " + " | ".join(str(v).ljust(w) for v, w in zip(d, widths)) + " |\n")
        if k == 0:
            out.write("+" + line + "+\n")
    out.write("+" + line + "+\n")
    notes = [(r.key, n) for r in rows for n in r.notes]
    if notes:
        out.write("\nNotes:\n")
        for key, n in notes:
            out.write("  %s: %s\n" % (key, n))
    missed = [r.key for r in rows if r.status == "MISSED"]
    failed = [r.key for r in rows if r.status == "FAILED"]
    unmeasured = [r.key for r in rows if r.status == "not measured"]
    unavailable = [r.key for r in rows if r.status == "not available"]
    out.write("\n")
    out.write("MISSED targets: %s\n" % (", ".join(missed) if missed else "none"))
    if unmeasured:
        out.write("not measured: %s\n" % ", ".join(unmeasured))
    if unavailable:
        out.write("not available: %s\n" % ", ".join(unavailable))
    if failed:
        out.write("FAILED (something broke): %s\n" % ", ".join(failed))
    out.flush()


# ---- the bench -------------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.bin = args.bin
        self.tmp = tempfile.mkdtemp(prefix="insightfs-bench.")
        global EXPECTED_DIR
        EXPECTED_DIR = os.path.join(self.tmp, "expected")
        os.mkdir(EXPECTED_DIR)
        self.api = None
        self.procs = []       # (name, Popen, mountpoint or None, stderr path)
        self.tmpfs = []       # tmpfs mount points
        self.expected = {}    # request target -> bytes
        self.expect_conn = None
        self.other_apis = []  # more local API processes (the HTTPS one of row 7b)
        self.redis = None     # (Popen, port, stderr path) of rows 7g-7h's redis-server

    # -- lifecycle ---------------------------------------------------------------------
    def start_api(self):
        self.api = LocalAPI().start(os.path.join(self.tmp, "api"), data=DATASET,
                                    extra_args=("--zlib-level", "6"))
        log("local API on %s (pid %d)" % (self.api.url, self.api.proc.pid))

    def cleanup(self):
        problems = []
        for name, proc, mnt, errpath in reversed(self.procs):
            try:
                self._stop_proc(name, proc, mnt)
            except Exception as e:  # keep cleaning up
                problems.append("%s: %s" % (name, e))
        self.procs = []
        try:
            self.stop_redis()
        except BenchError as e:
            problems.append(str(e))
        for mnt in reversed(self.tmpfs):
            if mounted(mnt):
                r = subprocess.run(["umount", mnt], stderr=subprocess.PIPE)
                if r.returncode != 0:
                    subprocess.run(["umount", "-l", mnt], stderr=subprocess.DEVNULL)
        self.tmpfs = []
        if self.expect_conn is not None:
            self.expect_conn.close()
            self.expect_conn = None
        for api in reversed(self.other_apis):
            try:
                api.stop()
            except Exception as e:
                problems.append("local API (%s): %s" % (api.url, e))
                if api.proc is not None and api.proc.poll() is None:
                    api.proc.kill()
                    api.proc.wait()
        self.other_apis = []
        if self.api is not None:
            try:
                self.api.stop()
            except Exception as e:
                problems.append("local API: %s" % e)
                if self.api.proc is not None and self.api.proc.poll() is None:
                    self.api.proc.kill()
                    self.api.proc.wait()
            self.api = None
        left = mounts_under(self.tmp)
        for m in sorted(left, reverse=True):
            subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)
        left = mounts_under(self.tmp)
        if left:
            problems.append("still mounted, %s left in place: %s" % (self.tmp, left))
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return problems

    def _stop_proc(self, name, proc, mnt):
        if mnt is not None and mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", mnt], stderr=subprocess.DEVNULL)
        try:
            return proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise BenchError("%s did not exit after unmount" % name)

    def unmount(self, name):
        """Unmount one of ours now; insightfs must exit 0."""
        for i, (n, proc, mnt, errpath) in enumerate(self.procs):
            if n == name:
                del self.procs[i]
                rc = self._stop_proc(n, proc, mnt)
                if (n.startswith("insightfs") or n == "floorfs") and rc != 0:
                    raise BenchError("%s exited with %d:\n%s" % (n, rc, tail(errpath)))
                return
        raise KeyError(name)

    def mount_tmpfs(self, name="tmpfs"):
        mnt = os.path.join(self.tmp, name)
        os.mkdir(mnt)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755",
                        "insightfs-bench", mnt], check=True)
        self.tmpfs.append(mnt)
        return mnt

    def mount_floorfs(self, png):
        """Mount floorfs (tests/bench/floorfs.c): /web/cpu/f0..f49, each holding `png`."""
        src = os.path.join(self.tmp, "floorfs.png")
        with open(src, "wb") as f:
            f.write(png)
        mnt = os.path.join(self.tmp, "floorfs")
        os.makedirs(mnt, exist_ok=True)
        errpath = os.path.join(self.tmp, "floorfs.stderr")
        with open(errpath, "w") as err:
            proc = subprocess.Popen([FLOORFS, mnt, src], stdin=subprocess.DEVNULL,
                                    stdout=err, stderr=err, env=clean_env())
        self.procs.append(("floorfs", proc, mnt, errpath))
        try:
            self._wait_mount("floorfs", proc, mnt, errpath, 15)
        except PeerUnavailable as e:
            raise BenchError(str(e))
        log("floorfs mounted on %s (pid %d)" % (mnt, proc.pid))
        return mnt

    def start_tls_api(self):
        """A second local API process, over HTTPS with certificates made now (certs.py):
        (api, CA file). Stopped by cleanup() or stop_api()."""
        c = make_certs(os.path.join(self.tmp, "certs"))
        api = LocalAPI().start(os.path.join(self.tmp, "api-tls"), tls=c.valid, data=DATASET,
                               extra_args=("--zlib-level", "6"))
        self.other_apis.append(api)
        log("local API over TLS on %s (pid %d)" % (api.url, api.proc.pid))
        return api, c.ca

    def stop_api(self, api):
        self.other_apis.remove(api)
        api.stop()

    def start_redis(self):
        """A redis-server of the bench's own on a free loopback port, without persistence
        (SPEC 13's test set-up): its port. Stopped by stop_redis() or cleanup()."""
        if shutil.which("redis-server") is None:
            raise PeerUnavailable("redis-server is not installed (make bench-deps)")
        rdir = os.path.join(self.tmp, "redis")
        os.makedirs(rdir, exist_ok=True)
        errpath = os.path.join(rdir, "redis.out")
        for attempt in range(5):   # the port is free when picked; another may take it
            port = free_port()
            with open(errpath, "w") as err:
                proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind",
                                         "127.0.0.1", "--save", "", "--appendonly", "no",
                                         "--dir", rdir, "--daemonize", "no"],
                                        stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                        env=clean_env())
            self.redis = (proc, port, errpath)
            deadline = time.monotonic() + 15
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    with Resp(port) as r:
                        if r.command("PING") == "PONG":
                            log("redis-server on 127.0.0.1:%d (pid %d)" % (port, proc.pid))
                            return port
                except (OSError, BenchError):
                    pass
                time.sleep(0.02)
            self.stop_redis()
        raise BenchError("redis-server did not start: %s" % tail(errpath, 600).strip())

    def stop_redis(self):
        if self.redis is None:
            return
        proc, port, errpath = self.redis
        self.redis = None
        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchError("redis-server (pid %d) did not exit on SIGTERM" % proc.pid)

    def unmount_tmpfs(self, mnt):
        subprocess.run(["umount", mnt], check=True)
        self.tmpfs.remove(mnt)

    def _wait_mount(self, name, proc, mnt, errpath, timeout):
        deadline = time.monotonic() + timeout
        while not mounted(mnt):
            if proc.poll() is not None:
                raise PeerUnavailable("%s exited with %d before mounting: %s"
                                      % (name, proc.returncode, tail(errpath, 600).strip()))
            if time.monotonic() > deadline:
                raise PeerUnavailable("%s did not mount within %d s: %s"
                                      % (name, timeout, tail(errpath, 600).strip()))
            time.sleep(0.02)
        os.listdir(mnt)  # the first request waits for FUSE INIT

    def write_config(self, name, max_connections, cache_extra="", api=None, api_extra="",
                     top_extra=""):
        """Write NAME.conf (mode 0600) for a mount against `api` (default: the plain HTTP
        local API); api_extra: more settings of the api group (e.g. ca_file); top_extra:
        more top-level settings (e.g. the shared group). Its path."""
        api = api or self.api
        conf = os.path.join(self.tmp, name + ".conf")
        widgets = ",\n".join('      { name = "%s"; id = "%s"; }' % (n, w) for w, n in WIDGETS)
        text = ('api = {\n  endpoint = "%s";\n  access_key = "%s";\n  secret_key = "%s";\n'
                '  max_connections = %d;\n%s%s};\n'
                'log_level = "warn";\n'
                'history_days = %d;\n'
                'dashboards = (\n  { name = "%s"; id = "%s";\n    widgets = (\n%s\n    ); }\n);\n'
                % (api.url, api.access_key, api.secret_key, max_connections,
                   "  max_image_bytes = 1048576;\n" if cache_extra else "", api_extra,
                   HISTORY_DAYS, DASH_NAME, DASH_ID, widgets))
        if cache_extra:
            text += "cache = { %s };\n" % cache_extra
        text += top_extra
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return conf

    def mount_insightfs(self, name, max_connections, cache_extra="", api=None, api_extra="",
                        conf=None):
        """Mount insightfs as `name` with the configuration write_config() makes from the
        same arguments, or with the file `conf`: (mount point, process)."""
        if conf is None:
            conf = self.write_config(name, max_connections, cache_extra, api, api_extra)
        mnt = os.path.join(self.tmp, name)
        os.mkdir(mnt)
        errpath = os.path.join(self.tmp, name + ".stderr")
        with open(errpath, "w") as err:
            proc = subprocess.Popen([self.bin, "-f", conf, mnt], stdin=subprocess.DEVNULL,
                                    stdout=err, stderr=err, env=clean_env())
        self.procs.append((name, proc, mnt, errpath))
        try:
            self._wait_mount(name, proc, mnt, errpath, 15)
        except PeerUnavailable as e:
            raise BenchError(str(e))
        log("%s mounted on %s (pid %d, max_connections %d%s)"
            % (name, mnt, proc.pid, max_connections, ", " + cache_extra if cache_extra else ""))
        return mnt, proc

    def mount_peer(self, name, argv, mnt, env=None):
        errpath = os.path.join(self.tmp, name + ".stderr")
        with open(errpath, "w") as err:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                        env=clean_env(env))
            except OSError as e:
                raise PeerUnavailable("%s: %s" % (argv[0], e))
        self.procs.append((name, proc, mnt, errpath))
        self._wait_mount(name, proc, mnt, errpath, 30)
        log("%s mounted on %s (pid %d)" % (name, mnt, proc.pid))
        return proc

    # -- expected bytes ------------------------------------------------------------------------
    def expect(self, target):
        """The bytes the local API serves for `target` (fetched once, which also puts the
        PNG in the server's render cache)."""
        body = self.expected.get(target)
        if body is None:
            for attempt in (0, 1):
                if self.expect_conn is None:
                    self.expect_conn = self.api.connection(timeout=60)
                try:
                    status, _, body = self.api.signed_get(target, conn=self.expect_conn)
                    break
                except OSError:
                    self.expect_conn.close()
                    self.expect_conn = None
                    if attempt:
                        raise
            if status != 200 or not body.startswith(b"\x89PNG"):
                raise BenchError("local API: %s: HTTP %d" % (target, status))
            self.expected[target] = body
        return body

    def check(self, what, got, target):
        if isinstance(got, Exception):
            raise BenchError("%s: %s" % (what, got))
        exp = self.expect(target)
        if got != exp:
            raise BenchError("%s: wrong bytes (%d read, sha256 %s; expected %d, sha256 %s)"
                             % (what, len(got), hashlib.sha256(got).hexdigest()[:16], len(exp),
                                hashlib.sha256(exp).hexdigest()[:16]))

    def requests(self):
        return self.api.stats()["requests"]

    def connections(self):
        """TCP connections the local API accepted so far, this control call's own
        included: a later call minus an earlier one, minus 1, counts the others."""
        return self.api.stats()["connections"]


# ---- measurements ---------------------------------------------------------------------------

WARMREAD = None  # tests/bench/warmread.c, built by `make bench` (--warmread)
FLOORFS = None   # tests/bench/floorfs.c, built by build_floorfs()
EXPECTED_DIR = None


def warm_loop(path, expected, n):
    """Seconds for n x (open, read whole, close), timed inside warmread (C, so no
    interpreter overhead sits on either side of a ratio); every read checked."""
    exp = os.path.join(EXPECTED_DIR, hashlib.sha256(expected).hexdigest())
    if not os.path.exists(exp):
        with open(exp, "wb") as f:
            f.write(expected)
    r = subprocess.run([WARMREAD, str(n), path, exp], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise BenchError("warmread %s: %s" % (path, r.stderr.decode(errors="replace").strip()))
    return int(r.stdout) / 1e9


def warm_interleaved(paths, expected, rounds, n=1000):
    """rounds x (n reads of each path in turn), in one warmread process: per-op seconds,
    one list per path (every read checked)."""
    exp = os.path.join(EXPECTED_DIR, hashlib.sha256(expected).hexdigest())
    if not os.path.exists(exp):
        with open(exp, "wb") as f:
            f.write(expected)
    r = subprocess.run([WARMREAD, "-i", str(rounds), str(n), exp] + list(paths),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise BenchError("warmread -i: %s" % r.stderr.decode(errors="replace").strip())
    lines = [[int(x) / 1e9 / n for x in ln.split()] for ln in r.stdout.decode().splitlines()]
    if len(lines) != rounds or any(len(ln) != len(paths) for ln in lines):
        raise BenchError("warmread -i: unexpected output %r" % r.stdout[:200])
    return [[ln[k] for ln in lines] for k in range(len(paths))]


def warm_per_op(paths_expected, batches, n=1000):
    """Interleaved batches over several files; per-op median seconds for each."""
    for p, e in paths_expected:
        warm_loop(p, e, 100)
    times = [[] for _ in paths_expected]
    for _ in range(batches):
        for k, (p, e) in enumerate(paths_expected):
            times[k].append(warm_loop(p, e, n) / n)
    return [median(t) for t in times]


def timed_cat(path):
    t0 = time.perf_counter()
    r = subprocess.run(["cat", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise BenchError("cat %s: %s" % (path, r.stderr.decode(errors="replace").strip()))
    return dt, r.stdout


def timed_curl(api, target, expected_len, cacert=None):
    hdrs = signed_headers(target, api.access_key, api.secret_key)
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
            "--noproxy", "*"]
    if cacert is not None:
        argv += ["--cacert", cacert]
    for k, v in hdrs.items():
        argv += ["-H", "%s: %s" % (k, v)]
    argv.append(api.url + target)
    t0 = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if r.returncode != 0 or r.stdout.decode() != "200 %d" % expected_len:
        raise BenchError("curl %s: exit %d, %r" % (target, r.returncode, r.stdout))
    return dt


def run_parallel(fns):
    """Run fns[i]() in one thread each, released together; (seconds from release until
    the last finished, results). A result is the return value or the exception."""
    n = len(fns)
    barrier = threading.Barrier(n + 1)
    results = [None] * n
    done = [0.0] * n

    def worker(i):
        try:
            barrier.wait()
            results[i] = fns[i]()
        except Exception as e:  # reported by the caller
            results[i] = e
        done[i] = time.perf_counter()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    while barrier.n_waiting < n:
        time.sleep(0.0005)
    t0 = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join(120)
    if any(t.is_alive() for t in threads):
        raise BenchError("parallel readers still blocked after 120 s")
    return max(done) - t0, results


def parallel_read(bench, items, what):
    """items: [(path, target)]; reads them all at once, checks bytes; seconds."""
    dt, res = run_parallel([(lambda p=p: read_all(p)) for p, _ in items])
    for (p, t), r in zip(items, res):
        bench.check("%s: %s" % (what, p), r, t)
    return dt


def img(w, s, e, mode="AUTO"):
    return image_target(DASH_ID, WIDGETS[w][0], s, e, mode)


def row1_warm(bench, row, mnt):
    s, e = BASE_A, BASE_A + HOUR
    target = img(0, s, e)
    exp = bench.expect(target)
    path = os.path.join(mnt, DASH_NAME, WIDGETS[0][1], "%d-%d.png" % (s, e))
    bench.check("row 1 first read", read_all(path), target)
    tfs = bench.mount_tmpfs()
    tdir = os.path.join(tfs, DASH_NAME, WIDGETS[0][1])
    os.makedirs(tdir)
    tpath = os.path.join(tdir, "%d-%d.png" % (s, e))
    with open(tpath, "wb") as f:
        f.write(exp)
    try:
        ours, ref = warm_per_op([(path, exp), (tpath, exp)], bench.args.batches)
    finally:
        bench.unmount_tmpfs(tfs)
    ratio = ours / ref
    row.set(fmt_time(ours), "tmpfs " + fmt_time(ref), ratio, ratio <= 1.5)
    row.notes.append("per file, median of %d batches of 1000, same path depth, %d-byte PNG, "
                     "open/read to EOF/close timed in C (warmread), every read compared"
                     % (bench.args.batches, len(exp)))


def row2_cold(bench, row, mnt, reps):
    api = bench.api
    wdir = os.path.join(mnt, DASH_NAME, WIDGETS[1][1])
    names = [(BASE_A + (i + 1) * HOUR, BASE_A + (i + 2) * HOUR) for i in range(reps + 1)]
    for s, e in names:
        bench.expect(img(1, s, e))
    api.set_latency(20)
    try:
        # Warm the daemon's connection with another image.
        s, e = names[0]
        bench.check("row 2 warm-up", read_all(os.path.join(wdir, "%d-%d.png" % (s, e))),
                    img(1, s, e))
        ours, ref, new_conns = [], [], 0
        for s, e in names[1:]:
            t = img(1, s, e)
            c0 = bench.connections()
            dt, out = timed_cat(os.path.join(wdir, "%d-%d.png" % (s, e)))
            new_conns += bench.connections() - c0 - 1
            bench.check("row 2 cold cat", out, t)
            ours.append(dt)
            ref.append(timed_curl(api, t, len(bench.expect(t))))
    finally:
        api.set_latency(0)
    o, r = median(ours), median(ref)
    row.set(fmt_time(o), "curl " + fmt_time(r), o / r, o / r <= 1.2)
    row.notes.append("median of %d, interleaved (insightfs min %s max %s; curl min %s max %s); "
                     "connections insightfs opened during the timed reads: %d"
                     % (reps, fmt_time(min(ours)), fmt_time(max(ours)), fmt_time(min(ref)),
                        fmt_time(max(ref)), new_conns))


def row3_parallel(bench, row, mnt, reps):
    api = bench.api
    # Rep r uses widget 10 + r: 32 hourly ranges in one directory, never read before.
    sets = []
    for r in range(reps + 1):
        w = 10 + r
        sets.append([(os.path.join(mnt, DASH_NAME, WIDGETS[w][1], "%d-%d.png"
                                   % (BASE_A + i * HOUR, BASE_A + (i + 1) * HOUR)),
                      img(w, BASE_A + i * HOUR, BASE_A + (i + 1) * HOUR)) for i in range(32)])
    for items in sets:
        for _, t in items:
            bench.expect(t)
    api.set_latency(50)
    # Warm-up: opens the daemon's 8 connections (set 0, not timed).
    parallel_read(bench, sets[0], "row 3 warm-up")
    conns = [api.connection(timeout=60) for _ in range(8)]
    try:
        for c in conns:  # the floor's 8 keep-alive connections, open before timing
            st, _, b = api.signed_get(sets[0][0][1], conn=c)
            if st != 200:
                raise BenchError("row 3 floor warm-up: HTTP %d" % st)
        ours, floor, new_conns = [], [], 0
        for items in sets[1:]:
            c0 = bench.connections()
            ours.append(parallel_read(bench, items, "row 3"))
            new_conns += bench.connections() - c0 - 1
            targets = [t for _, t in items]

            def client(k):
                def go():
                    out = []
                    for t in targets[k::8]:   # 4 rounds on one connection
                        st, _, b = api.signed_get(t, conn=conns[k])
                        out.append((t, st, b))
                    return out
                return go
            dt, res = run_parallel([client(k) for k in range(8)])
            for r in res:
                if isinstance(r, Exception):
                    raise BenchError("row 3 floor client: %s" % r)
                for t, st, b in r:
                    bench.check("row 3 floor %s" % t, b, t)
            floor.append(dt)
    finally:
        for c in conns:
            c.close()
        api.set_latency(0)
    o, f = median(ours), median(floor)
    row.set(fmt_time(o), "floor " + fmt_time(f), o / f, o / f <= 1.5)
    row.notes.append("median of %d (insightfs %s; floor %s); connections insightfs opened "
                     "during the timed runs: %d"
                     % (reps, " ".join(fmt_time(x) for x in ours),
                        " ".join(fmt_time(x) for x in floor), new_conns))


def row4_single_flight(bench, row, mnt):
    api = bench.api
    s, e = BASE_A + 200 * DAY, BASE_A + 200 * DAY + 6 * HOUR
    wid, wname = WIDGETS[20]
    target = img(20, s, e)
    bench.expect(target)
    names = ["%d-%d.png" % (s, e), "%s-%s.png" % (iso(s), iso(e)),
             "%s-%d.png" % (iso(s, True), e), "%d-%s@auto.png" % (s, iso(e, True))]
    dirs = [(DASH_NAME, wname), (DASH_ID, wid), (DASH_NAME, wid), (DASH_ID, wname)]
    spellings = [os.path.join(mnt, d, w, n) for d, w in dirs for n in names]
    api.set_latency(50)
    api.fault("latency", prefix=target.split("?")[0], count=-1, ms=250)
    try:
        api.clear_log()
        r0 = bench.requests()
        dt, res = run_parallel([(lambda p=spellings[i % len(spellings)]: read_all(p))
                                for i in range(32)])
        for i, r in enumerate(res):
            bench.check("row 4 reader %d (%s)" % (i, spellings[i % len(spellings)]), r, target)
        total = bench.requests() - r0
        api.clear_faults()
    finally:
        api.set_latency(0)
    n = sum(1 for x in api.requests() if x["target"] == target)
    row.set("%d request%s" % (n, "" if n == 1 else "s"), "-", None, n == 1 and total == 1)
    row.notes.append("%d spellings x %d dirs (name/id paths; epoch, ISO, ISO with seconds, "
                     "mixed, @auto); latency 50 ms + 250 ms on that image; all 32 done in %s; "
                     "requests to the API during the run: %d"
                     % (len(names), len(dirs), fmt_time(dt), total))


def row5_memory(bench, row, n_images):
    items = []
    for i in range(n_images):
        w, k = i % N_WIDGETS, i // N_WIDGETS
        s, e = BASE_B + k * HOUR, BASE_B + (k + 1) * HOUR
        items.append((os.path.join(DASH_NAME, WIDGETS[w][1], "%d-%d.png" % (s, e)), img(w, s, e)))
    mnt, proc = bench.mount_insightfs("insightfs-mem", 8, "max_bytes = %d;" % MEM_MAX_BYTES)
    log("row 5: rendering %d expected images in the local API" % n_images)
    t0 = time.monotonic()
    total_bytes = 0
    for _, t in items:
        total_bytes += len(bench.expect(t))
    log("row 5: %d images, %.1f MiB, rendered in %.0f s"
        % (n_images, total_bytes / MIB, time.monotonic() - t0))
    lock = threading.Lock()
    nxt = [0]
    errors = []

    def reader():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(items) or errors:
                return
            rel, t = items[i]
            try:
                got = read_all(os.path.join(mnt, rel))
                if got != bench.expected[t]:
                    raise BenchError("row 5: %s: wrong bytes" % rel)
            except Exception as e:
                errors.append(e)

    t0 = time.monotonic()
    threads = [threading.Thread(target=reader, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    if errors:
        raise BenchError(str(errors[0]))
    if any(t.is_alive() for t in threads):
        raise BenchError("row 5 readers still blocked after 600 s")
    secs = time.monotonic() - t0
    with open("/proc/%d/status" % proc.pid) as f:
        st = {ln.split(":")[0]: ln.split(":", 1)[1].strip() for ln in f}
    rss = int(st["VmRSS"].split()[0]) * 1024
    hwm = int(st["VmHWM"].split()[0]) * 1024
    stats = json.loads(read_all(os.path.join(mnt, ".insightfs", "stats")))
    c = stats["cache"]
    bound = c["max_bytes"] + c["pinned_bytes"] + 32 * MIB
    bench.unmount("insightfs-mem")
    row.set("VmRSS %.1f MiB" % (rss / MIB), "bound %.1f MiB" % (bound / MIB), rss / bound,
            rss <= bound)
    row.notes.append("cache.max_bytes = %d (8 MiB); %d images (%.1f MiB) read by 8 threads in "
                     "%.1f s; after: cache bytes %.1f MiB, pinned_bytes %.1f MiB, entries %d, "
                     "evictions %d, upstream requests %d; VmHWM %.1f MiB; bound = max_bytes + "
                     "pinned_bytes + 32 MiB"
                     % (c["max_bytes"], n_images, total_bytes / MIB, secs, c["bytes"] / MIB,
                        c["pinned_bytes"] / MIB, c["entries"], c["evictions"],
                        stats["upstream"]["requests"], hwm / MIB))
    if c["evictions"] == 0:
        row.notes.append("WARNING: no eviction happened; the bound was not exercised")


def row6_peers(bench, rows, reps, par_reps, cpu_row):
    """rows: {(peer, kind): Row}. Mounts insightfs (32 connections), httpdirfs, rclone.
    cpu_row: row 7e, the CPU of insightfs and of rclone per cold read of the same files."""
    api = bench.api
    fss = []   # (name, root dir of dashboards)
    mnt, ins_proc = bench.mount_insightfs("insightfs-peers", 32)
    rc_proc = None
    fss.append(("insightfs", mnt))
    peers_down = {}
    hd = os.path.join(bench.tmp, "httpdirfs")
    os.mkdir(hd)
    home = os.path.join(bench.tmp, "peer-home")
    os.makedirs(home)
    penv = {"HOME": home, "XDG_CACHE_HOME": os.path.join(home, "cache"),
            "XDG_CONFIG_HOME": os.path.join(home, "config")}
    try:
        if shutil.which("httpdirfs") is None:
            raise PeerUnavailable("httpdirfs is not installed (make bench-deps)")
        os.makedirs(os.path.join(bench.tmp, "httpdirfs-cache"))
        bench.mount_peer("httpdirfs", ["httpdirfs", "-f", "--cache", "--cache-location",
                                       os.path.join(bench.tmp, "httpdirfs-cache"),
                                       "--max-conns", "256",
                                       api.url + "/static/", hd], hd, penv)
        fss.append(("httpdirfs", hd))
    except PeerUnavailable as e:
        peers_down["httpdirfs"] = str(e)
    rc = os.path.join(bench.tmp, "rclone")
    os.mkdir(rc)
    try:
        if shutil.which("rclone") is None:
            raise PeerUnavailable("rclone is not installed (make bench-deps)")
        rconf = os.path.join(home, "rclone.conf")
        open(rconf, "w").close()
        rc_proc = bench.mount_peer("rclone", ["rclone", "mount", ":http:", rc, "--http-url",
                                    api.url + "/static/", "--vfs-cache-mode", "full",
                                    "--cache-dir", os.path.join(bench.tmp, "rclone-cache"),
                                    "--config", rconf], rc, penv)
        fss.append(("rclone", rc))
    except PeerUnavailable as e:
        peers_down["rclone"] = str(e)
    for peer, why in peers_down.items():
        log("%s: not measured: %s" % (peer, why))
        for kind in ("cold", "warm", "parallel"):
            rows[(peer, kind)].skip(why)
    if rc_proc is None:
        cpu_row.skip(peers_down["rclone"])

    def path(root, w, day):
        return os.path.join(root, DASH_NAME, WIDGETS[w][1], "%d-%d.png" % (day, day + DAY))

    def tgt(w, day):
        return img(w, day, day + DAY)

    # Files: cold reps on widgets 0-3 (4 days each), the connection warm-up on widget 4,
    # 32-parallel sets of 8 widgets x 4 days from widget 8 on (the first untimed).
    cold = [(w, d) for w in range(4) for d in STATIC_DAYS][:reps]
    psets = [[(w, d) for w in range(8 + 8 * r, 16 + 8 * r) for d in STATIC_DAYS]
             for r in range(1 + max(1, min(par_reps, 6)))]
    if 16 + 8 * (len(psets) - 1) > N_WIDGETS:
        raise BenchError("not enough widgets for %d parallel sets" % len(psets))
    # Row 7e: 4 days of widgets 64-191, read cold by insightfs and by rclone, one after
    # the other, each in a CPU window of its own.
    cpu_files = [(w, d) for w in range(CPU_FIRST_WIDGET, N_WIDGETS) for d in STATIC_DAYS]
    if rc_proc is None:
        cpu_files = []
    for w, d in cold + [(4, STATIC_DAYS[0])] + [x for s in psets for x in s] + cpu_files:
        bench.expect(tgt(w, d))
    # Every directory is listed before timing (peers fetch listings and HEADs there;
    # insightfs does not go upstream for it), at latency 0.
    for name, root in fss:
        for w in range(N_WIDGETS):
            ls = os.listdir(os.path.join(root, DASH_NAME, WIDGETS[w][1]))
            if name != "insightfs" and len(ls) != 4:
                raise BenchError("%s lists %r in %s" % (name, ls, WIDGETS[w][1]))
    api.set_latency(20)
    try:
        for name, root in fss:   # connections open: one image, and one parallel set
            bench.check("%s warm-up" % name, read_all(path(root, 4, STATIC_DAYS[0])),
                        tgt(4, STATIC_DAYS[0]))
            parallel_read(bench, [(path(root, w, d), tgt(w, d)) for w, d in psets[0]],
                          "%s parallel warm-up" % name)
        cold_t = {n: [] for n, _ in fss}
        for w, d in cold:
            for name, root in fss:
                dt, out = timed_cat(path(root, w, d))
                bench.check("%s cold cat" % name, out, tgt(w, d))
                cold_t[name].append(dt)
        par_t = {n: [] for n, _ in fss}
        for s in psets[1:]:
            for name, root in fss:
                par_t[name].append(parallel_read(
                    bench, [(path(root, w, d), tgt(w, d)) for w, d in s], name + " parallel"))
        # Interleaved rounds (a quarter of the files each, the first side alternating),
        # summed per side: both see the same machine, whatever its load does meanwhile.
        cpu = {"insightfs": 0.0, "rclone": 0.0}
        cpu_n = {"insightfs": 0, "rclone": 0}
        cpu_t = {"insightfs": 0.0, "rclone": 0.0}
        cpu_how = {"insightfs": set(), "rclone": set()}
        sides = (("insightfs", mnt, ins_proc), ("rclone", rc, rc_proc))
        for k in range(CPU_ROUNDS if cpu_files else 0):
            part = cpu_files[k * len(cpu_files) // CPU_ROUNDS:
                             (k + 1) * len(cpu_files) // CPU_ROUNDS]
            for name, root, proc in (sides if k % 2 == 0 else sides[::-1]):
                api.clear_log()
                win = CpuWindow(proc.pid)
                cpu_t[name] += pool_read(bench, [(path(root, w, d), tgt(w, d)) for w, d in part],
                                         8, "row 7e %s" % name)
                time.sleep(0.2)   # work a daemon finishes after the last read returned
                used, how = win.stop()
                cpu[name] += used
                cpu_how[name].add(how)
                cpu_n[name] += len(api.requests("/cw_fea" if name == "insightfs" else "/static/"))
        cpu_how = {name: " and ".join(sorted(h)) for name, h in cpu_how.items()}
        w0, d0 = cold[0]
        exp = bench.expect(tgt(w0, d0))
        warm = warm_per_op([(path(root, w0, d0), exp) for _, root in fss],
                           max(3, bench.args.batches // 2))
        warm_t = {name: warm[k] for k, (name, _) in enumerate(fss)}
    finally:
        api.set_latency(0)
    for name, _ in fss[1:]:
        for kind, res, label in (("cold", cold_t, "median of %d cat" % len(cold)),
                                 ("warm", warm_t, "per file, median of batches of 1000"),
                                 ("parallel", par_t, "median of %d sets" % (len(psets) - 1))):
            o = median(res["insightfs"]) if kind != "warm" else res["insightfs"]
            p = median(res[name]) if kind != "warm" else res[name]
            r = rows[(name, kind)]
            r.set(fmt_time(o), "%s %s" % (name, fmt_time(p)), o / p, o < p)
            if kind == "cold":
                r.notes.append("%s; insightfs %s; %s %s" % (
                    label, " ".join(fmt_time(x) for x in cold_t["insightfs"]), name,
                    " ".join(fmt_time(x) for x in cold_t[name])))
            elif kind == "parallel":
                r.notes.append("%s of 32 files (8 dirs x 4); insightfs %s; %s %s" % (
                    label, " ".join(fmt_time(x) for x in par_t["insightfs"]), name,
                    " ".join(fmt_time(x) for x in par_t[name])))
            else:
                r.notes.append("%s; insightfs %s, %s %s" % (
                    label, fmt_time(warm_t["insightfs"]), name, fmt_time(warm_t[name])))
    if cpu_files:
        row7e_cpu(cpu_row, cpu, cpu_n, cpu_t, cpu_how, len(cpu_files))
    for n in [x[0] for x in fss]:
        bench.unmount("insightfs-peers" if n == "insightfs" else n)


# ---- the next bar (SPEC 11's second table): against physical floors --------------------------

def build_floorfs(out):
    """Compile tests/bench/floorfs.c into `out` with cc and pkg-config fuse3."""
    src = os.path.join(HERE, "floorfs.c")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    try:
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise BenchError("pkg-config fuse3: %s" % e)
    argv = (["cc", "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", out, src]
            + flags.stdout.decode().split())
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise BenchError("building floorfs: %s\n%s" % (" ".join(argv),
                                                       r.stdout.decode(errors="replace")))
    return out


def row7a_floor_warm(bench, row, mnt, rounds):
    s, e = BASE_A, BASE_A + HOUR
    target = img(0, s, e)
    exp = bench.expect(target)
    path = os.path.join(mnt, DASH_NAME, WIDGETS[0][1], "%d-%d.png" % (s, e))
    bench.check("row 7a first read", read_all(path), target)
    fmnt = bench.mount_floorfs(exp)
    fpaths = [os.path.join(fmnt, "web", "cpu", "f%d" % i) for i in range(50)]
    try:
        for p in fpaths:
            bench.check("row 7a floorfs first read of %s" % p, read_all(p), target)
        warm_interleaved([fpaths[0], path], exp, 1, 100)
        # Interleaved in one process: floor, insightfs, floor, insightfs ...
        floor, ours = warm_interleaved([fpaths[0], path], exp, rounds)
    finally:
        bench.unmount("floorfs")
    o, f = median(ours), median(floor)
    row.set(fmt_time(o), "floorfs " + fmt_time(f), o / f, o / f <= 1.05)
    row.notes.append("per file, median of %d rounds of 1000 reads, interleaved inside one "
                     "warmread process (floorfs, insightfs, floorfs, ...); floorfs: libfuse "
                     "low-level, /web/cpu/f0..f49 all holding this PNG (all read once, f0 "
                     "timed), OPEN/FLUSH ENOSYS, timeouts a day, default_permissions; "
                     "insightfs min %s max %s, floorfs min %s max %s"
                     % (rounds, fmt_time(min(ours)), fmt_time(max(ours)), fmt_time(min(floor)),
                        fmt_time(max(floor))))


def wait_idle(mnt, deadline_s=30):
    """Wait until the daemon has no fetch in flight or queued (from /.insightfs/stats)."""
    deadline = time.monotonic() + deadline_s
    while True:
        up = json.loads(read_all(os.path.join(mnt, ".insightfs", "stats")))["upstream"]
        if up["in_flight"] == 0 and up.get("queued", 0) == 0:
            return
        if time.monotonic() > deadline:
            raise BenchError("fetches still in flight %d s after the listing" % deadline_s)
        time.sleep(0.005)


def row7f_ls_days(bench, row, mnt, max_conns, w=30, latency=20):
    api = bench.api
    ddir = os.path.join(mnt, DASH_NAME, WIDGETS[w][1], "days")
    now = int(time.time() * 1000)
    today = now // DAY * DAY
    days = [today - i * DAY for i in range(HISTORY_DAYS)]   # newest first, as listed
    names = [time.strftime("%Y-%m-%d.png", time.gmtime(d // 1000)) for d in days]
    for d in days[1:]:
        bench.expect(img(w, d, d + DAY))
    bench.expect(img(w, today, max(now // 60000 * 60000, today + 60000)))  # align_s 60
    env = clean_env({"LC_ALL": "C"})
    api.set_latency(latency)
    try:
        api.clear_log()
        t0 = time.perf_counter()
        r = subprocess.run(["ls", "-l", "--color=never", ddir], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env)
        dt = time.perf_counter() - t0
        wait_idle(mnt)
        reqs = api.requests()
    finally:
        api.set_latency(0)
    if r.returncode != 0:
        raise BenchError("ls -l %s: %s" % (ddir, r.stderr.decode(errors="replace").strip()))
    listed = {}
    for line in r.stdout.decode().splitlines()[1:]:
        f = line.split()
        listed[f[-1]] = int(f[4])
    if sorted(listed) != sorted(names):
        raise BenchError("ls -l %s listed %r, expected %r" % (ddir, sorted(listed), names))
    # Bytes and sizes, after counting (these reads are served from the cache).
    for n in names:
        p = os.path.join(ddir, n)
        t = os.getxattr(p, "user.insightfs.api_path").decode()
        got = read_all(p)
        bench.check("row 7f %s" % n, got, t)
        if listed[n] != len(got):
            raise BenchError("row 7f: ls -l showed %d bytes for %s, it holds %d"
                             % (listed[n], n, len(got)))
    targets = [x["target"] for x in reqs]
    n_req = len(targets)
    floor = -(-HISTORY_DAYS // max_conns) * latency / 1000.0
    row.set("%s, %d requests" % (fmt_time(dt), n_req),
            "%s, %d requests" % (fmt_time(floor), HISTORY_DAYS), dt / floor,
            dt / floor <= 2 and n_req == HISTORY_DAYS)
    row.notes.append("ls -l of days/ (%d days, never read before), max_connections %d, latency "
                     "%d ms; floor = ceil(%d/%d) x %d ms; upstream requests counted in the "
                     "local API's log once the daemon had nothing in flight: %d (%d distinct "
                     "targets); sequential stats would take about %s"
                     % (HISTORY_DAYS, max_conns, latency, HISTORY_DAYS, max_conns, latency,
                        n_req, len(set(targets)), fmt_time(HISTORY_DAYS * latency / 1000.0)))


def row7d_parallel32(bench, row, reps):
    api = bench.api
    mnt, _ = bench.mount_insightfs("insightfs-32", 32)
    # Warm-ups: one image in each of 32 directories (LOOKUPs of different directories run
    # in parallel, so all 32 fetches overlap and open the daemon's 32 connections), then
    # set 0. Set r: widget 40 + r, 32 hourly ranges in one directory.
    base = BASE_A + 100 * DAY
    spread = [(os.path.join(mnt, DASH_NAME, WIDGETS[w][1], "%d-%d.png" % (base, base + DAY)),
               img(w, base, base + DAY)) for w in range(32)]
    sets = []
    for r in range(reps + 1):
        w = 40 + r
        sets.append([(os.path.join(mnt, DASH_NAME, WIDGETS[w][1], "%d-%d.png"
                                   % (base + i * HOUR, base + (i + 1) * HOUR)),
                      img(w, base + i * HOUR, base + (i + 1) * HOUR)) for i in range(32)])
    for items in [spread] + sets:
        for _, t in items:
            bench.expect(t)
    conns = []
    api.set_latency(20)
    try:
        parallel_read(bench, spread, "row 7d warm-up")   # opens the daemon's connections
        parallel_read(bench, sets[0], "row 7d warm-up")
        conns = [api.connection(timeout=60) for _ in range(32)]

        def first(k):
            return lambda: api.signed_get(sets[0][k][1], conn=conns[k])
        _, res = run_parallel([first(k) for k in range(32)])  # all 32 open at once
        for r in res:
            if isinstance(r, Exception) or r[0] != 200:
                raise BenchError("row 7d floor warm-up: %r" % (r if isinstance(r, Exception)
                                                               else r[0]))
        ours, floor, new_conns = [], [], 0
        for items in sets[1:]:
            c0 = bench.connections()
            ours.append(parallel_read(bench, items, "row 7d"))
            new_conns += bench.connections() - c0 - 1

            def one(k, t):
                return lambda: api.signed_get(t, conn=conns[k])
            dt, res = run_parallel([one(k, t) for k, (_, t) in enumerate(items)])
            for (_, t), r in zip(items, res):
                if isinstance(r, Exception):
                    raise BenchError("row 7d floor client: %s" % r)
                bench.check("row 7d floor %s" % t, r[2], t)
            floor.append(dt)
    finally:
        for c in conns:
            c.close()
        api.set_latency(0)
    bench.unmount("insightfs-32")
    o, f = median(ours), median(floor)
    row.set(fmt_time(o), "floor " + fmt_time(f), o / f, o / f <= 1.1)
    row.notes.append("32 different uncached images of one directory, max_connections 32, "
                     "latency 20 ms; floor: 32 threads of the bench, each with its own open "
                     "keep-alive connection, one signed GET each, released together; median of "
                     "%d, interleaved (insightfs %s; floor %s); connections insightfs opened "
                     "during the timed runs: %d"
                     % (len(ours), " ".join(fmt_time(x) for x in ours),
                        " ".join(fmt_time(x) for x in floor), new_conns))


def timed_request(api, conn, target):
    """One signed GET on an open keep-alive connection, headers made before the clock
    starts (as curl's argv is): (seconds, status, body)."""
    hdrs = signed_headers(target, api.access_key, api.secret_key)
    t0 = time.perf_counter()
    conn.putrequest("GET", target, skip_accept_encoding=True)
    for k, v in hdrs.items():
        conn.putheader(k, v)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    return time.perf_counter() - t0, resp.status, body


def row7b_https(bench, row_floor, row_curl, reps):
    api, ca = bench.start_tls_api()
    w = 2
    wdir_rel = os.path.join(DASH_NAME, WIDGETS[w][1])
    names = [(BASE_A + (i + 1) * HOUR, BASE_A + (i + 2) * HOUR) for i in range(reps + 1)]
    targets = [img(w, s, e) for s, e in names]
    conn = api.connection(timeout=60, context=ssl.create_default_context(cafile=ca))
    tfs = None
    try:
        # Every image rendered once in this server too (its own render cache); the
        # floor's connection is open and used from here on.
        for t in targets:
            _, st, b = timed_request(api, conn, t)
            if st != 200:
                raise BenchError("row 7b: TLS local API: %s: HTTP %d" % (t, st))
            bench.check("row 7b TLS local API", b, t)
        tfs = bench.mount_tmpfs("tmpfs-tls")
        os.makedirs(os.path.join(tfs, wdir_rel))
        for (s, e), t in zip(names, targets):
            with open(os.path.join(tfs, wdir_rel, "%d-%d.png" % (s, e)), "wb") as f:
                f.write(bench.expect(t))
        mnt, _ = bench.mount_insightfs("insightfs-tls", 8, api=api,
                                       api_extra='  ca_file = "%s";\n' % ca)
        api.set_latency(20)
        try:
            s, e = names[0]   # opens the daemon's connection (TLS handshake untimed)
            bench.check("row 7b warm-up", read_all(os.path.join(mnt, wdir_rel, "%d-%d.png"
                                                                % (s, e))), targets[0])
            ours, floor, cats, reqs, curl, new_conns = [], [], [], [], [], 0
            for (s, e), t in zip(names[1:], targets[1:]):
                name = "%d-%d.png" % (s, e)
                c0 = api.stats()["connections"]
                dt, out = timed_cat(os.path.join(mnt, wdir_rel, name))
                new_conns += api.stats()["connections"] - c0 - 1
                bench.check("row 7b cold cat over HTTPS", out, t)
                ours.append(dt)
                dc, out = timed_cat(os.path.join(tfs, wdir_rel, name))
                bench.check("row 7b tmpfs cat", out, t)
                dr, st, b = timed_request(api, conn, t)
                if st != 200:
                    raise BenchError("row 7b floor request: HTTP %d" % st)
                bench.check("row 7b floor request", b, t)
                cats.append(dc)
                reqs.append(dr)
                floor.append(dc + dr)
                curl.append(timed_curl(api, t, len(out), cacert=ca))
        finally:
            api.set_latency(0)
        bench.unmount("insightfs-tls")
    finally:
        conn.close()
        if tfs is not None:
            bench.unmount_tmpfs(tfs)
        bench.stop_api(api)
    o, f, c = median(ours), median(floor), median(curl)
    row_floor.set(fmt_time(o), "floor " + fmt_time(f), o / f, o / f <= 1.05)
    row_floor.notes.append(
        "HTTPS (certificates made at bench time, a second local API process), latency 20 ms; "
        "cat of a name never read since the mount, the daemon's TLS connection already open; "
        "floor = cat of a tmpfs file (median %s) + one signed GET on the bench's own open "
        "keep-alive TLS connection (http.client, median %s); median of %d, interleaved "
        "(insightfs min %s max %s; floor min %s max %s); connections insightfs opened during "
        "the timed reads: %d"
        % (fmt_time(median(cats)), fmt_time(median(reqs)), len(ours), fmt_time(min(ours)),
           fmt_time(max(ours)), fmt_time(min(floor)), fmt_time(max(floor)), new_conns))
    row_curl.set(fmt_time(o), "curl " + fmt_time(c), o / c, o < c)
    row_curl.notes.append("the same cats as 7b vs one `curl -s -o /dev/null --cacert CA` process "
                          "per request (connects and shakes hands each time), interleaved; "
                          "curl min %s max %s" % (fmt_time(min(curl)), fmt_time(max(curl))))


def proc_cpu(pid):
    """CPU seconds (user + system) of process pid so far, from /proc/PID/stat (clock
    ticks: 10 ms steps)."""
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def proc_cpu_ns(pid):
    """{tid: CPU nanoseconds} of every live thread of pid, from /proc/PID/task/*/schedstat
    (the scheduler's own count, in ns: what /proc/PID/stat rounds to clock ticks); None
    when the kernel has no schedstat."""
    out = {}
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                    out[tid] = int(f.read().split()[0])
            except (OSError, IndexError, ValueError):
                pass  # the thread ended meanwhile
    except OSError:
        return None
    return out or None


class CpuWindow:
    """The CPU a process uses from construction to stop(): in ns from the threads'
    schedstat when no thread that ran at the start has ended by the stop (their time would
    be lost), else in clock ticks (/proc/PID/stat, which keeps ended threads' time)."""

    def __init__(self, pid):
        self.pid = pid
        self.ticks0 = proc_cpu(pid)
        self.ns0 = proc_cpu_ns(pid)

    def stop(self):
        """(CPU seconds, how it was counted)."""
        ticks = proc_cpu(self.pid) - self.ticks0
        ns1 = proc_cpu_ns(self.pid)
        if self.ns0 is None or ns1 is None or not set(self.ns0) <= set(ns1):
            return ticks, "clock ticks (/proc/PID/stat; a thread ended or no schedstat)"
        return (sum(ns1.values()) - sum(self.ns0.values())) / 1e9, "ns (threads' schedstat)"


def queue_readers(bench, items, nthreads, what):
    """nthreads reader functions for run_parallel that share items, [(path, target)],
    each taking the next one in turn and checking its bytes."""
    lock = threading.Lock()
    nxt = [0]

    def reader():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(items):
                return None
            p, t = items[i]
            bench.check("%s: %s" % (what, p), read_all(p), t)

    return [reader] * nthreads


def pool_read(bench, items, nthreads, what):
    """items: [(path, target)], read by nthreads threads taking the next one in turn;
    checks bytes; seconds from start until all are read."""
    dt, res = run_parallel(queue_readers(bench, items, nthreads, what))
    for r in res:
        if isinstance(r, Exception):
            raise BenchError(str(r))
    return dt


def row7e_cpu(row, cpu, n_req, secs, how, n_files):
    """cpu/n_req/secs/how: {"insightfs"|"rclone": CPU seconds, requests logged, seconds,
    how the CPU was counted (CpuWindow)}."""
    if n_req["insightfs"] == 0:
        raise BenchError("row 7e: insightfs made no upstream request")
    o, p = cpu["insightfs"] / n_req["insightfs"], cpu["rclone"] / n_files
    if p == 0:
        row.skip("rclone used less than a clock tick of CPU in %d reads" % n_files)
        return
    row.set(fmt_time(o), "rclone " + fmt_time(p), o / p, o / p <= 0.3)
    row.notes.append(
        "%d files (4 days of widgets %d-%d from /static/, never read before), read cold by 8 "
        "threads at latency 20 ms through insightfs (max_connections 32) and through rclone in "
        "%d interleaved rounds of %d files per side (the first side alternating), each read in "
        "a CPU window of its own (+0.2 s), summed: CPU (user + system) insightfs %.1f ms for %d "
        "upstream fetches (API log) in %s, counted in %s; rclone %.1f ms for %d files (%d "
        "/static/ requests) in %s, counted in %s"
        % (n_files, CPU_FIRST_WIDGET, N_WIDGETS - 1, CPU_ROUNDS, n_files // CPU_ROUNDS,
           cpu["insightfs"] * 1000,
           n_req["insightfs"], fmt_time(secs["insightfs"]), how["insightfs"],
           cpu["rclone"] * 1000, n_files, n_req["rclone"], fmt_time(secs["rclone"]),
           how["rclone"]))


# ---- the fleet (SPEC 13): 3 mounts sharing one Redis -------------------------------------------

FLEET_BASE = 1672531200000           # 2023-01-01: rows 7g-7h (final hourly ranges)
FLEET_WIDGET = 48                    # row 7g's 100 images
FLEET_HIT_WIDGET = 49                # row 7h's images
FLEET_IMAGES = 100
FLEET_MOUNTS = ("a", "b", "c")


def free_port():
    """A loopback TCP port nobody listens on right now."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Resp:
    """A minimal Redis client (RESP2 over one TCP connection): enough to PING, look at the
    shared level's keys and time one GET as SPEC 11's floor. Not thread-safe."""

    def __init__(self, port, timeout=10):
        import socket
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    @staticmethod
    def encode(*args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise BenchError("redis: connection closed")
        self.buf += chunk

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            self._fill()

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise BenchError("redis: %s" % rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            body = bytes(self.buf[:n])
            del self.buf[:n + 2]
            return body
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise BenchError("redis: unexpected reply %r" % line[:80])

    def command(self, *args):
        self.sock.sendall(self.encode(*args))
        return self._reply()

    def timed_get(self, key):
        """One GET round trip, the request encoded before the clock starts: (seconds,
        value or None)."""
        req = self.encode("GET", key)
        t0 = time.perf_counter()
        self.sock.sendall(req)
        value = self._reply()
        return time.perf_counter() - t0, value


def shared_key(api, w, s, e, mode="AUTO"):
    """SPEC 13's key of image (widget w, s-e ms, mode): insightfs:1:img: and the hex
    SHA-256 of the section 7 cache key (endpoint, access key, dashboard id, widget id,
    start ms, end ms, mode; NUL-separated)."""
    parts = [api.url, api.access_key, DASH_ID, WIDGETS[w][0], str(s), str(e), mode]
    return "insightfs:1:img:" + hashlib.sha256("\0".join(parts).encode()).hexdigest()


def shared_value_ok(value, png):
    """Whether value is SPEC 13's value of a final version holding png: the 32-byte
    header (IFS1, fetched_at, final flag 1, zeros, big-endian length, zeros), then png."""
    return (value is not None and len(value) == 32 + len(png) and value[:4] == b"IFS1"
            and value[12:16] == b"\1\0\0\0" and value[24:32] == bytes(8)
            and int.from_bytes(value[16:24], "big") == len(png) and value[32:] == png)


def shared_stats(mnt):
    """The `shared` object of the mount's /.insightfs/stats ({} without one)."""
    return json.loads(read_all(os.path.join(mnt, ".insightfs", "stats"))).get("shared") or {}


def sum_shared(stats_list):
    keys = ("hits", "misses", "errors", "leases_won", "leases_waited", "invalid")
    return {k: sum(st.get(k, 0) for st in stats_list) for k in keys}


def shared_rejected(text):
    """Whether an error message says this insightfs does not know the shared group."""
    return "unknown setting" in text and "shared" in text


def check_config(bin_path, conf):
    """insightfs --check-config --config conf: (exit status, stdout + stderr, stripped)."""
    r = subprocess.run([bin_path, "--check-config", "--config", conf], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=clean_env(),
                       timeout=60)
    return r.returncode, r.stdout.decode(errors="replace").strip()


def wait_shared_keys(port, keys, deadline_s=10):
    """Wait until every key exists in Redis (a mount may store a value just after its
    reader got the bytes); the keys still missing at the deadline."""
    deadline = time.monotonic() + deadline_s
    with Resp(port) as r:
        while True:
            missing = [k for k in keys if not r.command("EXISTS", k)]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.01)


def rows7gh_fleet(bench, row_fleet, row_hit, reps):
    """Rows 7g (3 mounts sharing one Redis, the same 100 new final images: 100 upstream
    requests) and 7h (a shared-cache hit vs one Redis GET + a cold floorfs LOOKUP and
    READ). Both are "not available" when this insightfs rejects the shared group."""
    api = bench.api
    try:
        port = bench.start_redis()
    except PeerUnavailable as e:
        for r in (row_fleet, row_hit):
            r.unavailable(str(e))
        return
    try:
        shared = ('shared = {\n  redis = "redis://127.0.0.1:%d/0";\n};\n' % port)
        conf = bench.write_config("insightfs-fleet", 8, top_extra=shared)
        rc, out = check_config(bench.bin, conf)
        if rc != 0 and shared_rejected(out):
            why = "this insightfs rejects the shared group (--check-config: %s)" % out
            for r in (row_fleet, row_hit):
                r.unavailable(why)
            log("rows 7g, 7h: not available: %s" % why)
            return
        if rc != 0:
            raise BenchError("insightfs --check-config with the shared group: %s" % out)
        mnts = {}
        try:
            for m in FLEET_MOUNTS:
                mnts[m], _ = bench.mount_insightfs("insightfs-fleet-" + m, 8, conf=conf)
        except BenchError as e:
            if not shared_rejected(str(e)):
                raise
            why = "this insightfs rejects the shared group (mount: %s)" % str(e).splitlines()[-1]
            for r in (row_fleet, row_hit):
                r.unavailable(why)
            return
        try:
            row7g_fleet_requests(bench, row_fleet, mnts)
        except BenchError as e:
            row_fleet.fail(str(e))
            log("row 7g FAILED: %s" % e)
        try:
            row7h_shared_hit(bench, row_hit, mnts, port, reps)
        except BenchError as e:
            row_hit.fail(str(e))
            log("row 7h FAILED: %s" % e)
        for m in FLEET_MOUNTS:
            bench.unmount("insightfs-fleet-" + m)
    finally:
        api.set_latency(0)
        bench.stop_redis()


def row7g_fleet_requests(bench, row, mnts, latency=20):
    api = bench.api
    wdir = os.path.join(DASH_NAME, WIDGETS[FLEET_WIDGET][1])
    names = [(FLEET_BASE + i * HOUR, FLEET_BASE + (i + 1) * HOUR) for i in range(FLEET_IMAGES)]
    targets = [img(FLEET_WIDGET, s, e) for s, e in names]
    for t in targets:
        bench.expect(t)
    # Every mount reads all 100 in the same order with 8 threads, the 3 mounts at once:
    # up to 3 mounts miss the same image together, so the fleet lease decides.
    readers = []
    for m in FLEET_MOUNTS:
        items = [(os.path.join(mnts[m], wdir, "%d-%d.png" % (s, e)), t)
                 for (s, e), t in zip(names, targets)]
        readers += queue_readers(bench, items, 8, "row 7g")
    before = [shared_stats(mnts[m]) for m in FLEET_MOUNTS]
    api.set_latency(latency)
    try:
        api.clear_log()
        dt, res = run_parallel(readers)
        for r in res:
            if isinstance(r, Exception):
                raise BenchError(str(r))
        for m in FLEET_MOUNTS:
            wait_idle(mnts[m])
        reqs = [x["target"] for x in api.requests()]
    finally:
        api.set_latency(0)
    after = [shared_stats(mnts[m]) for m in FLEET_MOUNTS]
    ours = set(targets)
    n = sum(1 for t in reqs if t in ours)
    per = {}
    for t in reqs:
        per[t] = per.get(t, 0) + 1
    dup = sum(1 for t in ours if per.get(t, 0) > 1)
    never = sum(1 for t in ours if t not in per)
    row.set("%d requests" % n, "%d requests" % FLEET_IMAGES, None,
            n == FLEET_IMAGES and len(reqs) == FLEET_IMAGES)
    delta = {k: v - sum_shared(before)[k] for k, v in sum_shared(after).items()}
    row.notes.append("3 mounts, one config with a shared group (one redis-server of the bench's "
                     "own), each read the same %d new final images (widget %s, hourly ranges of "
                     "2023-01-01) with 8 threads, the 3 mounts at once, latency %d ms, in %s; "
                     "upstream requests in the local API's log once every mount had nothing in "
                     "flight: %d for these images (%d fetched more than once, %d never), %d in "
                     "all; shared stats over the 3 mounts: %s"
                     % (FLEET_IMAGES, WIDGETS[FLEET_WIDGET][1], latency, fmt_time(dt), n, dup,
                        never, len(reqs), " ".join("%s %d" % kv for kv in delta.items())))


def row7h_shared_hit(bench, row, mnts, port, reps, warmups=10):
    api = bench.api
    w = FLEET_HIT_WIDGET
    wdir = os.path.join(DASH_NAME, WIDGETS[w][1])
    names = [(FLEET_BASE + i * HOUR, FLEET_BASE + (i + 1) * HOUR) for i in range(warmups + reps)]
    targets = [img(w, s, e) for s, e in names]
    keys = [shared_key(api, w, s, e) for s, e in names]
    pa = [os.path.join(mnts["a"], wdir, "%d-%d.png" % (s, e)) for s, e in names]
    pb = [os.path.join(mnts["b"], wdir, "%d-%d.png" % (s, e)) for s, e in names]
    for t in targets:
        bench.expect(t)
    # Mount A fetches them all (they go to Redis); B has never looked any of them up.
    pool_read(bench, list(zip(pa, targets)), 8, "row 7h mount A")
    wait_idle(mnts["a"])
    missing = wait_shared_keys(port, keys)
    if missing:
        with Resp(port) as r:
            n_img = len(r.command("KEYS", "insightfs:1:img:*"))
        raise BenchError("row 7h: %d of %d values mount A fetched are not in Redis under "
                         "SPEC 13's key (e.g. %s); Redis holds %d insightfs:1:img: keys"
                         % (len(missing), len(keys), missing[0], n_img))
    with Resp(port) as r:
        for k, t in zip(keys, targets):
            if not shared_value_ok(r.command("GET", k), bench.expect(t)):
                raise BenchError("row 7h: the value under %s is not SPEC 13's header + the "
                                 "PNG" % k)
    # Warm-ups on B (untimed): its Redis connections and the widget directory's LOOKUPs.
    parallel_read(bench, list(zip(pb, targets))[:warmups - 2], "row 7h mount B warm-up")
    for p, t in list(zip(pb, targets))[warmups - 2:warmups]:
        bench.check("row 7h mount B warm-up", read_all(p), t)
    build_floorfs(FLOORFS)
    fmnt = bench.mount_floorfs(bench.expect(targets[0]))
    fdir = os.path.join(fmnt, "web", "cpu")
    conn = Resp(port)
    try:
        # f0 read once: the directories' LOOKUPs and the first OPEN (ENOSYS, remembered)
        # are out of the way; f1.. have never been looked up.
        bench.check("row 7h floorfs warm-up", read_all(os.path.join(fdir, "f0")), targets[0])
        conn.timed_get(keys[0])
        s0 = shared_stats(mnts["b"])
        api.clear_log()
        ours, floor, gets, cold = [], [], [], []
        for i in range(reps):
            k, t = warmups + i, targets[warmups + i]
            dg, value = conn.timed_get(keys[k])
            if not shared_value_ok(value, bench.expect(t)):
                raise BenchError("row 7h floor: GET %s: not the value of %s" % (keys[k], t))
            fpath = os.path.join(fdir, "f%d" % (i + 1))
            t0 = time.perf_counter()
            got = read_all(fpath)
            df = time.perf_counter() - t0
            bench.check("row 7h floorfs cold read of %s" % fpath, got, targets[0])
            t0 = time.perf_counter()
            got = read_all(pb[k])
            do = time.perf_counter() - t0
            bench.check("row 7h mount B cold read of %s" % pb[k], got, t)
            gets.append(dg)
            cold.append(df)
            floor.append(dg + df)
            ours.append(do)
        upstream = len(api.requests())
        s1 = shared_stats(mnts["b"])
    finally:
        conn.close()
        bench.unmount("floorfs")
    o, f = median(ours), median(floor)
    row.set(fmt_time(o), "floor " + fmt_time(f), o / f, o / f <= 1.5 and upstream == 0)
    row.notes.append(
        "a LOOKUP and READ on mount B of a name it never looked up, whose final version mount "
        "A fetched (so the bytes come from Redis, B's own cache being cold), timed in Python "
        "(open, read to EOF, close); floor = one GET of the same value (SPEC 13's key, %d "
        "bytes) over the bench's own open Redis connection (median %s) + open, read to EOF, "
        "close of a floorfs name never looked up (f1..f%d of a fresh mount; median %s), summed "
        "per repetition; median of %d, interleaved (insightfs min %s max %s; floor min %s max "
        "%s); upstream requests during the timed reads: %d (must be 0); mount B's shared hits "
        "during them: %s"
        % (32 + len(bench.expect(targets[0])), fmt_time(median(gets)), reps,
           fmt_time(median(cold)), reps, fmt_time(min(ours)), fmt_time(max(ours)),
           fmt_time(min(floor)), fmt_time(max(floor)), upstream,
           s1.get("hits", 0) - s0.get("hits", 0) if "hits" in s1 else "n/a"))


def machine_line():
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return "%d CPUs, kernel %s, load average %s" % (os.cpu_count(), os.uname().release, load)


def versions(bin_path):
    out = []
    for argv in ([bin_path, "--version"], ["httpdirfs", "--version"], ["rclone", "version"],
                 ["curl", "--version"]):
        try:
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
            first = r.stdout.decode(errors="replace").splitlines()[0].split()
            out.append(" ".join(first[:3] if argv[0] != "curl" else first[:2]))
        except (OSError, IndexError, subprocess.TimeoutExpired):
            out.append("%s: not available" % argv[0])
    return ", ".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "insightfs"))
    ap.add_argument("--warmread", default=os.path.join(ROOT, "build", "bench", "warmread"),
                    help="the C warm-read loop (tests/bench/warmread.c)")
    ap.add_argument("--floorfs", default=os.path.join(ROOT, "build", "bench", "floorfs"),
                    help="where to build the minimal FUSE server of row 7a "
                         "(tests/bench/floorfs.c, built with cc and pkg-config fuse3 on every run)")
    ap.add_argument("--rounds", type=int, default=41,
                    help="interleaved rounds of 1000 warm reads for row 7a (default 41)")
    ap.add_argument("--reps", type=int, default=11, help="repetitions of cold reads (default 11)")
    ap.add_argument("--par-reps", type=int, default=5,
                    help="repetitions of the 32-at-once runs (default 5; row 6 at most 6)")
    ap.add_argument("--tls-reps", type=int, default=21,
                    help="repetitions of row 7b's cold reads over HTTPS (default 21)")
    ap.add_argument("--hit-reps", type=int, default=41,
                    help="repetitions of row 7h's shared-cache hits (default 41, at most 49: "
                         "floorfs's f1..f49)")
    ap.add_argument("--par32-reps", type=int, default=15,
                    help="repetitions of row 7d's 32 reads at once (default 15, at most 23)")
    ap.add_argument("--batches", type=int, default=7,
                    help="batches of 1000 warm reads (default 7)")
    ap.add_argument("--images", type=int, default=5000, help="images read for row 5 (default 5000)")
    ap.add_argument("--no-peers", action="store_true", help="skip row 6")
    ap.add_argument("--fleet-only", action="store_true",
                    help="only rows 7g-7h (the shared cache in Redis, SPEC 13)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.py: needs root (tmpfs and FUSE mounts)")
    if not os.access(args.bin, os.X_OK):
        sys.exit("bench.py: %s: not an executable (make build/insightfs)" % args.bin)
    if not os.access(args.warmread, os.X_OK):
        sys.exit("bench.py: %s: not an executable (make bench builds it)" % args.warmread)
    global WARMREAD, FLOORFS
    WARMREAD = args.warmread
    FLOORFS = args.floorfs
    args.rounds = max(3, min(args.rounds, 201))
    args.reps = max(3, min(args.reps, 16))
    args.par_reps = max(1, min(args.par_reps, 40))
    args.tls_reps = max(3, min(args.tls_reps, 101))
    args.hit_reps = max(3, min(args.hit_reps, 49))
    args.par32_reps = max(1, min(args.par32_reps, 23))   # sets 0..N: widgets 40-63

    def on_term(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    rows = [Row("1", "warm read (open+read+close)", "<= 1.5x tmpfs"),
            Row("2", "cold read, latency 20 ms", "<= 1.2x curl"),
            Row("3", "32 images at once, 1 dir, 50 ms, 8 conns", "<= 1.5x floor"),
            Row("4", "32 readers, 1 image, 16 spellings", "1 request"),
            Row("5", "memory after %d images" % args.images, "<= bound")]
    peer_rows = {}
    keys = iter("abcdef")
    for peer in ("httpdirfs", "rclone"):
        for kind, what in (("cold", "cold read (cat), 20 ms"), ("warm", "warm read"),
                           ("parallel", "32 parallel reads, 20 ms")):
            r = Row("6" + next(keys), "vs %s: %s" % (peer, what), "faster (< 1x)")
            peer_rows[(peer, kind)] = r
            rows.append(r)
    nxt = {k: Row("7" + k, what, target) for k, what, target in (
        ("a", "warm read vs minimal FUSE server", "<= 1.05x floor"),
        ("b", "cold read over HTTPS, 20 ms", "<= 1.05x floor"),
        ("c", "cold read over HTTPS, 20 ms", "faster than curl"),
        ("d", "32 images at once, 1 dir, 20 ms, 32 conns", "<= 1.1x floor"),
        ("e", "daemon CPU per cold fetch", "<= 0.3x rclone"),
        ("f", "ls -l of %d days, 20 ms, 8 conns" % HISTORY_DAYS, "<= 2x floor, 30 req"),
        ("g", "3 mounts, 1 Redis, the same %d images" % FLEET_IMAGES, "%d requests" % FLEET_IMAGES),
        ("h", "shared-cache hit (another mount fetched)", "<= 1.5x floor"))}
    rows += [nxt[k] for k in "abcdefgh"]

    started = machine_line()
    bench = Bench(args)
    interrupted = False
    cleanup_problems = []
    try:
        bench.start_api()
        if args.fleet_only:
            for r in rows:
                if r.key not in ("7g", "7h"):
                    r.skip("--fleet-only")
        else:
            def row7a(r):
                build_floorfs(FLOORFS)
                row7a_floor_warm(bench, r, mnt, args.rounds)
            main_rows = ((rows[0], lambda r: row1_warm(bench, r, mnt)),
                         (nxt["a"], row7a),
                         (rows[1], lambda r: row2_cold(bench, r, mnt, args.reps)),
                         (rows[2], lambda r: row3_parallel(bench, r, mnt, args.par_reps)),
                         (rows[3], lambda r: row4_single_flight(bench, r, mnt)),
                         (nxt["f"], lambda r: row7f_ls_days(bench, r, mnt, 8)))
            try:
                mnt, _ = bench.mount_insightfs("insightfs", 8)
                for row, fn in main_rows:
                    log("row %s: %s" % (row.key, row.what))
                    try:
                        fn(row)
                    except BenchError as e:
                        row.fail(str(e))
                        log("row %s FAILED: %s" % (row.key, e))
                bench.unmount("insightfs")
            except BenchError as e:
                for row, _ in main_rows:
                    if row.status == "not measured":
                        row.fail(str(e))
            log("row 7d: %s" % nxt["d"].what)
            try:
                row7d_parallel32(bench, nxt["d"], args.par32_reps)
            except BenchError as e:
                nxt["d"].fail(str(e))
                log("row 7d FAILED: %s" % e)
            log("rows 7b, 7c: %s" % nxt["b"].what)
            try:
                row7b_https(bench, nxt["b"], nxt["c"], args.tls_reps)
            except (BenchError, RuntimeError) as e:
                for r in (nxt["b"], nxt["c"]):
                    r.fail(str(e))
                log("rows 7b, 7c FAILED: %s" % e)
        log("rows 7g, 7h: %s; %s" % (nxt["g"].what, nxt["h"].what))
        try:
            rows7gh_fleet(bench, nxt["g"], nxt["h"], args.hit_reps)
        except BenchError as e:
            for r in (nxt["g"], nxt["h"]):
                if r.status in ("not measured", "met", "MISSED"):
                    r.fail(str(e))
            log("rows 7g, 7h FAILED: %s" % e)
        if not args.fleet_only:
            log("row 5: %s" % rows[4].what)
            try:
                row5_memory(bench, rows[4], args.images)
            except BenchError as e:
                rows[4].fail(str(e))
            if args.no_peers:
                for r in list(peer_rows.values()) + [nxt["e"]]:
                    r.skip("--no-peers")
            else:
                log("rows 6, 7e: insightfs vs httpdirfs and rclone on /static/")
                try:
                    row6_peers(bench, peer_rows, args.reps, args.par_reps, nxt["e"])
                except BenchError as e:
                    log("row 6 FAILED: %s" % e)
                    for r in list(peer_rows.values()) + [nxt["e"]]:
                        if r.status == "not measured" and not r.notes:
                            r.fail(str(e))
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: cleaning up")
    finally:
        cleanup_problems = bench.cleanup()
    for p in cleanup_problems:
        log("cleanup: " + p)
    out = sys.stdout
    out.write("\ninsightfs benchmark (SPEC section 11), one local API process, plain HTTP/1.1 "
              "keep-alive, PNGs ~%d bytes\n" % (
                  median([len(b) for b in bench.expected.values()]) if bench.expected else 0))
    out.write("machine: %s at start; %s at end\n" % (started, machine_line().split("load average ")[1]))
    out.write("versions: %s\n\n" % versions(args.bin))
    print_table(rows, out)
    if interrupted:
        out.write("interrupted: the table is incomplete\n")
        return 130
    if cleanup_problems or any(r.status == "FAILED" for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
