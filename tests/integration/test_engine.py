"""The request engine under load and faults (RELIABILITY.md T21-T24, P1, P4; SPEC sections
5, 6, 7 and 12.4): bounded waits whatever the number of calls in flight, load shedding
past max_pending, bounded memory whatever the number of names, the two clocks, the
circuit breaker, readahead of a listing, INTERRUPT, teardown and reload.

Every test mounts build/insightfs for real against the bundled local API. Errno values
are exact; request counts come from the local API's request log (or, with the API
stopped, from the daemon's stats); times are CLOCK_MONOTONIC, the same clock as the
log's "t", and every bound is multiplied by TIME_FACTOR. Waits poll a condition with a
deadline. Filesystem calls that a broken daemon could block forever run in daemon
threads joined with a deadline (`bounded`), so a regression fails instead of hanging.
"""
import ctypes
import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import SANITIZE, TIME_FACTOR, VALGRIND, is_mounted, wait_for
from client import image_target

DASH, WIDGET = "df_457958429047263232", "cpu_avg__1234"  # web/cpu
BASE_MS = 1733011200000  # 2024-12-01T00:00Z: every range below is old, so final
MIB = 1048576

# The engine's numbers from SPEC 6 and 12.4.
SPARE_THREADS = 16  # daemon threads <= max_connections + 16
AT_ONCE = 0.05 * TIME_FACTOR  # "a cached file reads in under 50 ms" (P1)

DASHBOARDS = """dashboards = (
  { name = "web"; id = "df_457958429047263232";
    widgets = ( { name = "cpu"; id = "cpu_avg__1234"; },
                { name = "memory"; id = "mem_used__5678"; },
                { name = "gone"; id = "no_such_widget__404"; } ); }
);
"""


# ---- helpers ---------------------------------------------------------------------------

def rng(i):
    """A distinct absolute one-hour range per index (final: it ended long ago)."""
    start = BASE_MS + i * 60000
    return start, start + 3600000


def name(i):
    return "%d-%d.png" % rng(i)


def target(i, widget=WIDGET):
    return image_target(DASH, widget, *rng(i))


def img(m, i, widget="cpu"):
    return m.path("web", widget, name(i))


def count(api, tgt):
    return sum(1 for e in api.requests() if e["target"] == tgt)


def cfg(api_extra="", cache="", time_group="", top=""):
    """(api_extra, body) for the config fixture."""
    body = ""
    if cache:
        body += "cache = {\n%s\n};\n" % cache
    if time_group:
        body += "time = {\n%s\n};\n" % time_group
    return api_extra, body + top + DASHBOARDS


def api_settings(**kw):
    return "".join("  %s = %s;\n" % (k, v) for k, v in kw.items())


def stat_errno(path):
    try:
        os.stat(path)
    except OSError as e:
        return e.errno
    return 0


def timed_stat(path):
    """(errno or 0, monotonic start, monotonic end) of one os.stat."""
    t0 = time.monotonic()
    e = stat_errno(path)
    return e, t0, time.monotonic()


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def bounded(fn, timeout, what):
    """Run fn() in a daemon thread; its result, or fail if it is still blocked after
    timeout (scaled). A call a broken daemon never answers then fails the test instead
    of hanging it (the thread stays in the kernel until the mount goes)."""
    box = {}

    def body():
        try:
            box["v"] = fn()
        except BaseException as e:  # noqa: B902 - re-raised below
            box["e"] = e

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(timeout * TIME_FACTOR)
    if t.is_alive():
        raise AssertionError("%s still blocked after %.1f s" % (what, timeout * TIME_FACTOR))
    if "e" in box:
        raise box["e"]
    return box["v"]


def stats(m, timeout=5):
    def get():
        with open(m.path(".insightfs", "stats")) as f:
            return json.loads(f.read())
    return bounded(get, timeout, "reading .insightfs/stats")


class Crowd:
    """fn(*args) in one thread each, released together by a barrier; results (an
    exception counts as a result) by index once every thread has returned."""

    def __init__(self, fn, args_list):
        self.results = [None] * len(args_list)
        self.barrier = threading.Barrier(len(args_list) + 1)
        self.threads = []
        for k, args in enumerate(args_list):
            t = threading.Thread(target=self._body, args=(k, fn, args), daemon=True)
            self.threads.append(t)
        for t in self.threads:
            t.start()

    def _body(self, k, fn, args):
        try:
            self.barrier.wait(timeout=30 * TIME_FACTOR)
            self.results[k] = fn(*args)
        except BaseException as e:  # noqa: B902 - reported to the test
            self.results[k] = e

    def release(self):
        """Let every thread go at once; returns the monotonic time of the release."""
        self.barrier.wait(timeout=30 * TIME_FACTOR)
        return time.monotonic()

    def join(self, timeout, strict=True):
        """The results once every thread has returned. After timeout: fail (strict),
        or give None for the threads still blocked."""
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [k for k, t in enumerate(self.threads) if t.is_alive()]
        assert not (strict and stuck), "%d calls still blocked after %.1f s (first: %s)" % (
            len(stuck), timeout, stuck[:10])
        return [None if k in stuck else r for k, r in enumerate(self.results)]


class Sampler:
    """Calls fn() every `period` seconds in a thread until stopped; keeps the results."""

    def __init__(self, fn, period=0.005):
        self.fn = fn
        self.period = period
        self.values = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_event.is_set():
            try:
                self.values.append(self.fn())
            except (OSError, ValueError):
                return
            self.stop_event.wait(self.period)

    def stop(self):
        self.stop_event.set()
        self.thread.join(5)
        return self.values


def thread_count(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def vm_kib(pid, field):
    """A KiB figure of /proc/PID/status (VmRSS, VmHWM, ...)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s for pid %d" % (field, pid))


def vm_rss_kib(pid):
    return vm_kib(pid, "VmRSS")


def wait_monotonic(until):
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


def hung(api, targets=None):
    return [e for e in api.requests() if e["fault"] == "hang"
            and (targets is None or e["target"] in targets)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]


def resident_pages(fd, size):
    """How many of the file's pages are in the page cache (mincore on a mapping that
    was never touched reports the page cache, not the mapping)."""
    pages = (size + 4095) // 4096
    addr = _libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap")
    try:
        vec = ctypes.create_string_buffer(pages)
        if _libc.mincore(addr, size, vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore")
        return sum(b & 1 for b in vec.raw)
    finally:
        _libc.munmap(addr, size)


def uncached_read(path, size):
    """Read a file (read before) through the daemon: drop its pages
    (POSIX_FADV_DONTNEED), check with mincore that none is left (so the kernel must send
    READ), then time open+read. Returns (bytes, seconds)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        # The file was read before: mincore sees its pages (so it can see them gone).
        assert resident_pages(fd, size) > 0, "mincore does not see the file's pages"
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert resident_pages(fd, size) == 0, "the page cache kept the file's pages"
    finally:
        os.close(fd)
    t = time.monotonic()
    data = read_file(path)
    return data, time.monotonic() - t


def warn_lines(m):
    return [ln for ln in m.stderr().splitlines() if ln.startswith("insightfs: warn: ")]


# ---- T21: many calls against a hung API (P1, SPEC 6 and 12.4) ----------------------------

T21_CONN = 2  # max_connections
T21_API = api_settings(timeout_ms=1000, connect_timeout_ms=500, retries=1,
                       max_connections=T21_CONN)
T21_D = 1.0 * (1 + 1)  # timeout_ms x (retries + 1), seconds
T21_N = 400


def test_t21_hung_api_many_stats(api, config, mount):
    """400 concurrent stats of distinct uncached names against a hung API with
    max_connections = 2: each returns ETIMEDOUT by D + 1 s from its own start; meanwhile
    a cached file read through the daemon (its pages dropped) takes < 50 ms, and the
    daemon never runs more than max_connections + 16 threads."""
    m = mount(config(*cfg(T21_API)))
    pid = m.proc.pid
    cached = read_file(img(m, 0))
    api.fault("hang", count=-1)
    base_threads = thread_count(pid)
    threads = Sampler(lambda: thread_count(pid))

    crowd = Crowd(timed_stat, [(img(m, i),) for i in range(1, T21_N + 1)])
    crowd.release()
    targets = {target(i) for i in range(1, T21_N + 1)}
    wait_for(lambda: len(hung(api, targets)) >= 2, 5, "two hung fetches")
    # A cached file reads at once, from the daemon itself, while the fetches hang and
    # hundreds of calls wait.
    reads = []
    for _ in range(3):
        try:
            data, took = bounded(lambda: uncached_read(img(m, 0), len(cached)), T21_D + 2,
                                 "a cached read")
            assert data == cached
            reads.append(round(took, 4))
        except AssertionError as e:
            reads.append(str(e))
    reads_done = time.monotonic()
    results = crowd.join((T21_D + 5) * TIME_FACTOR, strict=False)
    samples = threads.stop()

    # Everything measured, then the verdicts (the summary names every one of them).
    errnos, stuck, slowest = {}, 0, 0.0
    for r in results:
        if r is None:
            stuck += 1
            continue
        e, start, end = r
        errnos[errno.errorcode.get(e, e)] = errnos.get(errno.errorcode.get(e, e), 0) + 1
        slowest = max(slowest, end - start)
    per = {}
    for e in api.requests():
        per[e["target"]] = per.get(e["target"], 0) + 1
    # The daemon's threads: main, libfuse's workers, max_connections fetch threads and a
    # fixed few; sanitizers and valgrind add their own.
    limit = T21_CONN + SPARE_THREADS + (2 if (SANITIZE or VALGRIND) else 0)
    summary = {"errnos": errnos, "still blocked": stuck, "slowest stat": round(slowest, 3),
               "cached reads": reads, "threads before/max/limit": (base_threads,
                                                                    max(samples), limit),
               "most requests per name": max(per.values())}
    summary = json.dumps(summary)
    assert stuck == 0, summary
    assert errnos == {"ETIMEDOUT": T21_N}, summary
    assert slowest <= (T21_D + 1) * TIME_FACTOR, summary
    assert all(isinstance(t, float) and t < AT_ONCE for t in reads), summary
    first_end = min(end for _, _, end in results)
    assert reads_done < first_end, ("the cached reads ended after a stat had returned",
                                    summary)
    assert max(samples) <= limit, summary
    assert max(per.values()) <= 2, summary  # retries + 1


def test_max_pending_sheds_with_eagain(api, config, mount):
    """api.max_pending = 16: of 40 concurrent stats against a hung API, exactly the 24
    beyond 16 are answered EAGAIN at once (well under D), the 16 others ETIMEDOUT by
    D + 1 s; stats `shed` counts the EAGAINs and a warn line says requests were shed."""
    m = mount(config(*cfg(T21_API.replace("max_connections = 2", "max_connections = 8")
                          + api_settings(max_pending=16))))
    api.fault("hang", count=-1)
    n, pending = 40, 16
    crowd = Crowd(timed_stat, [(img(m, i),) for i in range(n)])
    crowd.release()
    results = crowd.join((T21_D + 5) * TIME_FACTOR)
    bad = [r for r in results if not isinstance(r, tuple)]
    assert not bad, bad[:5]
    shed = [(end - start) for e, start, end in results if e == errno.EAGAIN]
    timed_out = [(end - start) for e, start, end in results if e == errno.ETIMEDOUT]
    assert (len(shed), len(timed_out)) == (n - pending, pending), sorted(
        errno.errorcode.get(e, e) for e, _, _ in results)
    assert max(shed) < 0.5 * TIME_FACTOR, max(shed)  # at once, not after a try's timeout
    assert max(timed_out) <= (T21_D + 1) * TIME_FACTOR, max(timed_out)
    s = stats(m)["upstream"]
    assert s["shed"] == n - pending, s
    assert s["waiting"] == 0, s
    assert [ln for ln in warn_lines(m) if re.search(r"shed|max_pending", ln, re.I)], m.stderr()


# ---- T22: memory bound whatever the number of names (P4, SPEC 7) --------------------------

SLOW_BUILD = VALGRIND or "thread" in SANITIZE
T22_LOOKUPS = 30000 if SLOW_BUILD else 300000
T22_FAILED = 2000 if SLOW_BUILD else 20000
T22_RSS_KIB = (MIB + 32 * MIB) // 1024  # max_bytes + 32 MiB: once nothing is pinned
T22_SMALL = 1000  # keys / inodes once the names have stopped and their TTLs passed


def test_t22_memory_bound_many_names(api, config, mount):
    """max_bytes = 1 MiB: 300,000 listxattr calls on distinct names (LOOKUP and
    LISTXATTR only: zero upstream requests) and 20,000 stats of names the API answers
    404: VmRSS <= 33 MiB at every sample (plain build only), cache.bytes <= max_bytes at
    every sample, and `keys` and `inodes` fall back to a small number once the names
    stop. Counts are /10 under TSan and valgrind."""
    m = mount(config(*cfg(api_settings(max_connections=8),
                          cache="  max_bytes = %d;\n  error_ttl_s = 2;" % MIB)))
    pid = m.proc.pid
    check_rss = not (SANITIZE or VALGRIND)
    samples = []

    def sample(where):
        s = stats(m, timeout=10)
        rss = vm_rss_kib(pid)
        samples.append((where, rss, s["cache"]["bytes"], s["cache"]["keys"],
                        s["cache"]["inodes"], s["cache"]["pinned_bytes"]))
        assert s["cache"]["bytes"] <= MIB, samples[-1]
        if check_rss:
            # P4: max_bytes + pinned_bytes + 32 MiB. Pinned: the records of inodes the
            # kernel still held after their invalidation was queued (SPEC 7).
            assert rss <= T22_RSS_KIB + s["cache"]["pinned_bytes"] // 1024, samples[-1]

    sample("start")
    want_attrs = ["user.insightfs.start_ms", "user.insightfs.end_ms",
                  "user.insightfs.resolution", "user.insightfs.api_path",
                  "user.insightfs.fetched_at"]
    assert os.listxattr(img(m, 0)) == want_attrs

    # Four threads, one widget directory each (the kernel serializes LOOKUPs within a
    # directory); every name distinct.
    dirs = ["cpu", "memory", "cpu", "memory"]
    per_thread = T22_LOOKUPS // 4
    step = 5000 if not SLOW_BUILD else 1000

    done = 0
    while done < per_thread:
        chunk = min(step // 4, per_thread - done)

        def part(k, lo=done, hi=done + chunk):
            d = m.path("web", dirs[k])
            base = 1 + k * per_thread
            for j in range(lo, hi):
                os.listxattr(os.path.join(d, name(base + j)))
            return hi - lo

        crowd = Crowd(part, [(k,) for k in range(4)])
        crowd.release()
        res = crowd.join(120 * TIME_FACTOR)
        assert res == [chunk] * 4, res[:4]
        done += chunk
        sample("lookups %d" % (done * 4))
    assert len(api.requests()) == 0, "listxattr made upstream requests"

    # Failed fetches: a configured widget whose id the API does not know (404, ENOENT).
    per_thread = T22_FAILED // 8
    done = 0
    step = 2000 if not SLOW_BUILD else 500
    while done < per_thread:
        chunk = min(step // 8, per_thread - done)

        def failing(k, lo=done, hi=done + chunk):
            errs = {}
            for j in range(lo, hi):
                e = stat_errno(img(m, k * per_thread + j, widget="gone"))
                errs[e] = errs.get(e, 0) + 1
            return errs

        crowd = Crowd(failing, [(k,) for k in range(8)])
        crowd.release()
        res = crowd.join(120 * TIME_FACTOR)
        assert res == [{errno.ENOENT: chunk}] * 8, res
        done += chunk
        sample("failed %d" % (done * 8))
    assert len(api.requests()) == T22_FAILED  # one request per failed name
    if check_rss:
        # The peak between samples too (VmHWM: the most RSS the daemon ever had), against
        # the bound with the most pinned bytes any sample saw.
        hwm = vm_kib(pid, "VmHWM")
        print("T22 VmHWM %d KiB" % hwm)
        assert hwm <= T22_RSS_KIB + max(x[5] for x in samples) // 1024, (hwm, samples[-1])

    # The names have stopped: keys (pending versions, remembered failures) and the
    # kernel's inodes fall back (pending versions nobody reads go after 10 s).
    def fell_back():
        sample("after")
        return samples[-1][3] <= T22_SMALL and samples[-1][4] <= T22_SMALL
    try:
        wait_for(fell_back, 30, "keys and inodes to fall back")
        if check_rss:
            # Nothing pinned any more: the heap went back to the system (SPEC 7).
            wait_for(lambda: vm_rss_kib(pid) <= T22_RSS_KIB, 10 * TIME_FACTOR,
                     "RSS back under max_bytes + 32 MiB")
    finally:
        peak = max(samples, key=lambda s: s[1])
        print("T22 samples (where, rss KiB, bytes, keys, inodes, pinned): first %s, "
              "peak RSS %s, last %s" % (samples[0], peak, samples[-1]))


# ---- T23: the gateway clock jumps (SPEC 7, two clocks) -----------------------------------

def iso(ms, seconds):
    t = time.gmtime(ms // 1000)
    return time.strftime("%Y%m%dT%H%M%SZ" if seconds else "%Y%m%dT%H%MZ", t)


def spellings(start, end):
    """Every name of one absolute range (start and end whole minutes): EPOCH, ISO with
    and without seconds, with and without @auto. Each is a LOOKUP the kernel has not
    cached, so the daemon itself decides whether the image is fresh."""
    forms = lambda ms: ["%d" % ms, iso(ms, False), iso(ms, True)]  # noqa: E731
    return ["%s-%s%s.png" % (a, b, suffix) for suffix in ("", "@auto")
            for a in forms(start) for b in forms(end)]


@pytest.mark.parametrize("jump_s", [600, -600], ids=["plus600", "minus600"])
def test_t23_clock_jump_keeps_ttls(api, config, mount, jump_s):
    """error_ttl_s = 2 and live_ttl_s = 2 hold to within 1 s when the gateway clock
    (its Date header) jumps by +-600 s while a failure is remembered and a live version
    is cached: the 503 is retried, and the live range refreshed, error_ttl_s (live_ttl_s)
    after the first request, give or take 1 s."""
    ttl = 2
    m = mount(config(*cfg(api_settings(retries=0),
                          cache="  error_ttl_s = %d;\n  live_ttl_s = %d;\n"
                                "  stale_if_error_s = 0;" % (ttl, ttl))))
    # A live range (it ends tomorrow) and a final one that will fail with 503.
    now = int(time.time()) // 60 * 60000
    live_start, live_end = now - 3600000, now + 86400000
    live_names = spellings(live_start, live_end)
    live_tgt = image_target(DASH, WIDGET, live_start, live_end)
    err_start, err_end = rng(0)
    err_names = spellings(err_start, err_end)
    err_tgt = target(0)

    assert read_file(m.path("web", "cpu", live_names[0]))
    assert count(api, live_tgt) == 1
    api.fault("status", prefix=err_tgt, count=-1, status=503)
    assert stat_errno(m.path("web", "cpu", err_names[0])) == errno.EIO
    assert count(api, err_tgt) == 1
    t_live = [e["t"] for e in api.requests() if e["target"] == live_tgt][0]
    t_err = [e["t"] for e in api.requests() if e["target"] == err_tgt][0]

    # The gateway clock jumps; the next answer (a 401 for the old clock, then the retry
    # signed with the corrected one) tells the daemon.
    api.set_clock(jump_s * 1000)
    assert len(read_file(img(m, 1))) > 0
    assert [e["status"] for e in api.requests() if e["target"] == target(1)] == [401, 200]
    wait_for(lambda: re.search(r"insightfs: warn: local clock is (599|600|601) s",
                               m.stderr()), 5, "the daemon to apply the new offset")

    # Poll both images through fresh spellings until each makes its next request.
    new_live = new_err = None
    k = 1
    give_up = max(t_live, t_err) + ttl + 1.0 * TIME_FACTOR + 1
    while (new_live is None or new_err is None) and time.monotonic() < give_up:
        if new_live is None:
            bounded(lambda: os.stat(m.path("web", "cpu", live_names[k % len(live_names)])),
                    5, "stat of the live name")
        if new_err is None:
            assert bounded(lambda: stat_errno(m.path("web", "cpu",
                                                     err_names[k % len(err_names)])),
                           5, "stat of the failed name") == errno.EIO
        k += 1
        log = api.requests()
        lt = [e["t"] for e in log if e["target"] == live_tgt]
        et = [e["t"] for e in log if e["target"] == err_tgt]
        if new_live is None and len(lt) > 1:
            new_live = lt[1]
        if new_err is None and len(et) > 1:
            new_err = et[1]
        time.sleep(0.02)
    # Seconds from each first request to the next (None: none within the window).
    gaps = {"error": None if new_err is None else round(new_err - t_err, 3),
            "live": None if new_live is None else round(new_live - t_live, 3)}
    for what in ("error", "live"):
        assert gaps[what] is not None and ttl - 1 <= gaps[what] <= ttl + 1.0 * TIME_FACTOR, gaps


@pytest.mark.parametrize("jump_s", [600, -600])
def test_t23_clock_jump_keeps_deadlines(api, config, mount, jump_s):
    """T23's deadlines: after the gateway clock jumped by +-600 s and the daemon applied
    the offset, a fetch against a hung API still ends ETIMEDOUT at D (timeout_ms 1000,
    no retry: D = 1 s), to within 0.1 s early and 1 s late - D runs on CLOCK_MONOTONIC,
    not on the corrected wall clock."""
    m = mount(config(*cfg(api_settings(timeout_ms=1000, connect_timeout_ms=500, retries=0))))
    api.set_clock(jump_s * 1000)
    assert len(read_file(img(m, 1))) > 0  # a 401 for the old clock, then the retry
    assert [e["status"] for e in api.requests() if e["target"] == target(1)] == [401, 200]
    wait_for(lambda: re.search(r"insightfs: warn: local clock is (599|600|601) s",
                               m.stderr()), 5, "the daemon to apply the new offset")
    api.fault("hang", count=-1)
    e, t0, t1 = timed_stat(img(m, 0))
    assert e == errno.ETIMEDOUT
    assert 1.0 - 0.1 <= t1 - t0 <= (1.0 + 1) * TIME_FACTOR, t1 - t0
    assert count(api, target(0)) == 1


# ---- T24: the circuit breaker (SPEC 6) ----------------------------------------------------

T24_API = api_settings(timeout_ms=1000, connect_timeout_ms=500, retries=2)
T24_D = 1.0 * (2 + 1)
T24_TOP = "history_days = 200;\n"


def ls_l(path):
    """`ls -l` of a directory: (exit status, seconds, stderr)."""
    t = time.monotonic()
    limit = (T24_D + 3) * TIME_FACTOR + 20  # far past the bound asserted: fail, not wait
    try:
        p = subprocess.run(["ls", "-l", "--color=never", path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=dict(os.environ, LC_ALL="C"),
                           timeout=limit)
    except subprocess.TimeoutExpired:
        raise AssertionError("ls -l still running after %.0f s" % limit) from None
    return p.returncode, time.monotonic() - t, p.stderr.decode(errors="replace")


@pytest.mark.parametrize("fault", ["hang", "refused", "503"])
def test_t24_breaker(api, config, mount, tmp_path, fault):
    """`ls -l days/` of 200 days against a hung API, a refused port or a 503 storm: the
    breaker opens after 3 failed tries (`upstream down: ERRNO` at warn, stats down = 1),
    the listing ends in about D + 2 x timeout_ms with <= 10 requests (hung, refused) or
    <= 30 (503); once the API answers again a probe closes it (`upstream up after`,
    down = 0) and a new name is fetched."""
    m = mount(config(*cfg(T24_API, top=T24_TOP)))
    # The breaker wants no answer for timeout_ms as well as 3 failed tries: let that
    # much time pass since the mount (which asked nothing), so it opens on the third.
    wait_monotonic(time.monotonic() + 1.1)
    days = m.path("web", "cpu", "days")
    assert len(os.listdir(days)) == 200
    port = api.port
    if fault == "hang":
        api.fault("hang", count=-1)
        want = "ETIMEDOUT"
    elif fault == "503":
        api.fault("status", count=-1, status=503)
        want = "EIO"
    else:
        api.stop()  # nothing listens on the port: connection refused
        want = "EIO"

    rc, took, err = ls_l(days)
    assert rc != 0  # the stats failed
    s = stats(m)["upstream"]
    requests = s["requests"] if fault == "refused" else len(api.requests())
    if fault == "hang":
        assert took < (T24_D + 3) * TIME_FACTOR, took
        assert requests <= 10, requests
    elif fault == "refused":
        assert took < T24_D * TIME_FACTOR, took
        assert requests <= 10, requests
    else:
        assert took < (T24_D + 3) * TIME_FACTOR, took
        assert requests <= 30, requests
    down = [ln for ln in warn_lines(m) if ln == "insightfs: warn: upstream down: " + want]
    assert len(down) == 1, m.stderr()
    assert s["down"] == 1 and s["down_total"] >= 1, s
    # While open, a new name fails at once with the breaker's errno and no request
    # (unless it is the probe).
    before = stats(m)["upstream"]["requests"]
    t = time.monotonic()
    e = stat_errno(img(m, 1000))
    assert e == getattr(errno, want)
    assert time.monotonic() - t <= (1.0 + 0.5) * TIME_FACTOR  # at most one probe's try
    assert stats(m)["upstream"]["requests"] - before <= 1

    # Recovery: the API answers again; after the probe interval a new name succeeds.
    if fault == "refused":
        api.start(str(tmp_path / "api-again"), extra_args=["--port", str(port)])
        assert api.port == port
    else:
        api.clear_faults()
    k = [2000]

    def fetched():
        k[0] += 1
        return bounded(lambda: stat_errno(img(m, k[0])), T24_D + 2, "a stat") == 0
    wait_for(fetched, 40, "a new name to be fetched after recovery")
    assert [ln for ln in m.stderr().splitlines()
            if re.match(r"insightfs: info: upstream up after \d+ s$", ln)], m.stderr()
    s = stats(m)["upstream"]
    assert s["down"] == 0 and s["down_total"] >= 1, s


# ---- readahead of a listing (SPEC 5) --------------------------------------------------------

def ls_plain(path):
    p = subprocess.run(["ls", "-1", "--color=never", path], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=dict(os.environ, LC_ALL="C"),
                       timeout=30 * TIME_FACTOR, check=True)
    return p.stdout.decode().split()


def day_requests(api, widget):
    return [e for e in api.requests()
            if e["target"].startswith("/cw_fea/real/cw/api/chart/dashboard/%s/widgets/%s?"
                                      % (DASH, widget))]


def avoid_midnight(margin_s=30):
    while 86400 - time.time() % 86400 < margin_s:
        time.sleep(0.2)


def test_readahead_counts(api, config, mount):
    """cache.readahead = true, latency 20 ms, max_connections 8: `ls days/` makes no
    request; `ls` then one stat makes exactly 1; `ls -l days/` of 30 days makes exactly
    30, some of them fetched ahead (stats readahead > 0)."""
    avoid_midnight()
    m = mount(config(*cfg(api_settings(max_connections=8), cache="  readahead = true;")))
    api.set_latency(20)
    cpu_days = m.path("web", "cpu", "days")
    names = ls_plain(cpu_days)
    assert len(names) == 30
    assert day_requests(api, WIDGET) == []

    # A lone stat after a listing fetches its file only.
    assert os.stat(os.path.join(cpu_days, names[4])).st_size > 0
    assert len(day_requests(api, WIDGET)) == 1
    assert stats(m)["cache"]["readahead"] == 0
    # Nothing was started ahead: after ten latencies there is still one request.
    wait_monotonic(time.monotonic() + 0.2 * TIME_FACTOR)
    assert len(day_requests(api, WIDGET)) == 1
    assert stats(m)["upstream"]["in_flight"] == 0

    p = subprocess.run(["ls", "-l", "--color=never", m.path("web", "memory", "days")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=dict(os.environ, LC_ALL="C"), timeout=60 * TIME_FACTOR)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.decode().splitlines()) == 31  # "total" and 30 days
    wait_for(lambda: stats(m)["upstream"]["in_flight"] == 0, 5, "fetches to finish")
    reqs = day_requests(api, "mem_used__5678")
    assert len(reqs) == 30, len(reqs)
    assert len({e["target"] for e in reqs}) == 30
    assert stats(m)["cache"]["readahead"] > 0


def test_readahead_skips_remembered_failures(api, config, mount):
    """SPEC 5: readahead never fetches an entry remembered as failed. Five days of a
    listing fail (404) before `ls -l`; during it each is answered from memory (ENOENT)
    with no second request, and the other 25 are fetched once each: 30 requests in all."""
    avoid_midnight()
    m = mount(config(*cfg(api_settings(max_connections=8), cache="  readahead = true;")))
    api.set_latency(20)
    days = m.path("web", "memory", "days")
    names = ls_plain(days)
    assert len(names) == 30
    failing = [names[i] for i in (3, 10, 17, 24, 29)]  # never two in a row: no readahead
    api.fault("status", count=len(failing), status=404)
    for n in failing:
        assert stat_errno(os.path.join(days, n)) == errno.ENOENT
    failed = [e["target"] for e in day_requests(api, "mem_used__5678")]
    assert len(failed) == 5 and len(set(failed)) == 5
    api.clear_faults()
    p = subprocess.run(["ls", "-l", "--color=never", days], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=dict(os.environ, LC_ALL="C"),
                       timeout=60 * TIME_FACTOR)
    assert p.returncode != 0  # ls reports the five it cannot stat
    assert sorted(re.findall(r"cannot access '[^']*/([^/']+)': No such file or directory",
                             p.stderr.decode())) == sorted(failing), p.stderr
    wait_for(lambda: stats(m)["upstream"]["in_flight"] == 0, 5, "fetches to finish")
    reqs = [e["target"] for e in day_requests(api, "mem_used__5678")]
    assert all(reqs.count(t) == 1 for t in failed), reqs
    assert len(reqs) == 30 and len(set(reqs)) == 30, len(reqs)
    assert stats(m)["cache"]["readahead"] > 0


def test_readahead_window_and_out_of_order_stop(api, config, mount):
    """SPEC 5: two stats in listing order start a window of 2 (the next two entries are
    fetched ahead); a stat out of order stops it: nothing more is fetched ahead (five
    requests: the two stats, the two ahead, the one out of order). Two in a row again
    start a new window."""
    avoid_midnight()
    m = mount(config(*cfg(api_settings(max_connections=8), cache="  readahead = true;")))
    api.set_latency(20)
    days = m.path("web", "memory", "days")
    names = os.listdir(days)  # readdir order: the listing's (ls would sort it)
    assert len(names) == 30
    for i in (0, 1):
        assert os.stat(os.path.join(days, names[i])).st_size > 0
    wait_for(lambda: len(day_requests(api, "mem_used__5678")) == 4, 5, "two fetched ahead")
    assert stats(m)["cache"]["readahead"] == 2
    assert os.stat(os.path.join(days, names[20])).st_size > 0
    wait_for(lambda: stats(m)["upstream"]["in_flight"] == 0, 5, "fetches to finish")
    wait_monotonic(time.monotonic() + 0.2 * TIME_FACTOR)  # ten latencies: nothing more
    assert len(day_requests(api, "mem_used__5678")) == 5
    assert stats(m)["cache"]["readahead"] == 2
    # The two fetched ahead are served from the cache (no second request for them); two
    # stats in a row again, they start a new window: entries 4 and 5.
    for i in (2, 3):
        assert os.stat(os.path.join(days, names[i])).st_size > 0
    wait_for(lambda: len(day_requests(api, "mem_used__5678")) == 7, 5, "a new window")
    wait_for(lambda: stats(m)["upstream"]["in_flight"] == 0, 5, "fetches to finish")
    reqs = [e["target"] for e in day_requests(api, "mem_used__5678")]
    assert len(set(reqs)) == 7, reqs
    assert stats(m)["cache"]["readahead"] == 4


def test_readahead_window_doubles_from_the_middle(api, config, mount):
    """SPEC 5: the window is 2, then doubles up to max_connections (8), and each next
    window starts when the stats reach the middle of the current one. Stats of a listing
    one at a time, in its order: after the stat of entry k, the fetches started ahead
    are exactly these (entries 2-3 at k = 1; 4-7 at k = 3, the middle of 2-3; 8-15 at
    k = 6; 16-23 at k = 12, the window at its cap of 8; 24-29 at k = 20, the listing's
    end), and all 30 entries are fetched once."""
    avoid_midnight()
    m = mount(config(*cfg(api_settings(max_connections=8), cache="  readahead = true;")))
    days = m.path("web", "memory", "days")
    names = os.listdir(days)  # readdir order: the listing's
    assert len(names) == 30
    started = {1: 2, 3: 6, 6: 14, 12: 22, 20: 28}  # k -> fetches started ahead so far
    want = 0
    for k, name in enumerate(names):
        assert os.stat(os.path.join(days, name)).st_size > 0
        want = started.get(k, want)
        wait_for(lambda: stats(m)["cache"]["readahead"] >= want, 5, "readahead at %d" % k)
        assert stats(m)["cache"]["readahead"] == want, k
    wait_for(lambda: stats(m)["upstream"]["in_flight"] == 0, 5, "fetches to finish")
    reqs = [e["target"] for e in day_requests(api, "mem_used__5678")]
    assert len(reqs) == 30 and len(set(reqs)) == 30, reqs
    assert stats(m)["cache"]["readahead"] == 28


def test_readahead_listing_kept_10s_after_releasedir(api, config, mount):
    """SPEC 5: the listing is kept 10 s after RELEASEDIR (a program may stat after closing
    the directory), and not for good. 5 s after the close, two stats in its order still
    start a window; once 10 s and a housekeeping tick (1 s) have passed, two stats in
    order start nothing: each fetches its own file only."""
    avoid_midnight(60)
    m = mount(config(*cfg(api_settings(max_connections=8), cache="  readahead = true;")))
    days = m.path("web", "memory", "days")
    names = os.listdir(days)  # OPENDIR, READDIR, RELEASEDIR
    closed = time.monotonic()
    assert len(names) == 30
    wait_monotonic(closed + 5.0)  # past any sweep of a listing kept too briefly
    for i in (0, 1):
        assert os.stat(os.path.join(days, names[i])).st_size > 0
    assert time.monotonic() - closed < 10.0, "too slow to test the keep"
    wait_for(lambda: stats(m)["cache"]["readahead"] == 2, 5, "a window 5 s after the close")
    wait_monotonic(closed + 10.0 + 1.0 + 2.0 * TIME_FACTOR)
    wait_for(lambda: stats(m)["upstream"]["in_flight"] == 0, 5, "fetches to finish")
    for i in (10, 11):  # in order again: a window, had the listing been kept
        assert os.stat(os.path.join(days, names[i])).st_size > 0
    wait_monotonic(time.monotonic() + 0.2 * TIME_FACTOR)
    assert stats(m)["cache"]["readahead"] == 2
    reqs = [e["target"] for e in day_requests(api, "mem_used__5678")]
    assert len(reqs) == 6 and len(set(reqs)) == 6, reqs  # 0, 1, ahead 2, 3; 10, 11


def test_readahead_never_while_breaker_open(api, config, mount):
    """SPEC 5: no readahead while the circuit breaker is open. Three stats against a hung
    API open it; then a listing and stats of its entries in order fail at once with the
    breaker's errno, start nothing ahead, and make no request."""
    m = mount(config(*cfg(T24_API, cache="  readahead = true;")))
    wait_monotonic(time.monotonic() + 1.1)  # no answer for timeout_ms: see test_t24_breaker
    api.fault("hang", count=-1)
    crowd = [threading.Thread(target=stat_errno, args=(img(m, 3000 + i),)) for i in range(3)]
    for t in crowd:
        t.start()
    wait_for(lambda: stats(m)["upstream"]["down"] == 1, T24_D + 2, "the breaker to open")
    for t in crowd:
        t.join(T24_D * TIME_FACTOR + 5)
    before = stats(m)
    days = m.path("web", "memory", "days")
    names = os.listdir(days)
    for name in names[:6]:
        assert stat_errno(os.path.join(days, name)) == errno.ETIMEDOUT
    after = stats(m)
    assert after["cache"]["readahead"] == before["cache"]["readahead"] == 0
    # At most one request: the probe, if a stat came a second after the last failed try.
    assert after["upstream"]["requests"] - before["upstream"]["requests"] <= 1, (before, after)
    assert len(day_requests(api, "mem_used__5678")) <= 1


def test_readahead_off_stays_sequential(api, config, mount):
    """cache.readahead = false: `ls -l days/` still makes exactly 30 requests, none
    started ahead."""
    avoid_midnight()
    m = mount(config(*cfg(api_settings(max_connections=8), cache="  readahead = false;")))
    api.set_latency(20)
    p = subprocess.run(["ls", "-l", "--color=never", m.path("web", "memory", "days")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=dict(os.environ, LC_ALL="C"), timeout=60 * TIME_FACTOR)
    assert p.returncode == 0, p.stderr
    reqs = day_requests(api, "mem_used__5678")
    assert len(reqs) == 30 and len({e["target"] for e in reqs}) == 30, len(reqs)
    s = stats(m)
    assert s["cache"]["readahead"] == 0
    assert s["upstream"]["requests"] == 30


# ---- INTERRUPT of a kept request (SPEC 12.4) --------------------------------------------------

CHILD = r"""
import ctypes, json, os, signal, sys, time
signal.signal(signal.SIGINT, lambda *a: None)  # a handler: the stat returns EINTR
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(1024)
path = sys.argv[1].encode()
t0 = time.monotonic()
print(json.dumps({"t0": t0}), flush=True)
rc = libc.stat(path, buf)
e = ctypes.get_errno()
print(json.dumps({"rc": rc, "errno": e, "t_end": time.monotonic()}), flush=True)
"""


def test_interrupt_answers_eintr(api, config, mount):
    """A stat waiting on a hung API, interrupted by a signal the process handles, returns
    EINTR within 0.5 s of the signal; the shared fetch goes on, and the daemon keeps
    answering others."""
    m = mount(config(*cfg(T21_API)))
    cached = read_file(img(m, 0))
    api.fault("hang", count=-1)
    child = subprocess.Popen([sys.executable, "-c", CHILD, img(m, 1)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        t0 = json.loads(child.stdout.readline())["t0"]
        wait_for(lambda: hung(api, {target(1)}), 5, "the stat's fetch to hang")
        wait_monotonic(t0 + 0.3)
        t_sig = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=(T21_D + 5) * TIME_FACTOR)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    res = json.loads(out.decode().strip().splitlines()[-1])
    assert (res["rc"], errno.errorcode.get(res["errno"])) == (-1, "EINTR"), res
    assert res["t_end"] - t_sig < 0.5 * TIME_FACTOR, res["t_end"] - t_sig

    # The daemon still answers: a cached file reads through it at once, the tree lists,
    # and the same name joins the fetch still running (no new logical fetch).
    data, took = bounded(lambda: uncached_read(img(m, 0), len(cached)), 2, "a cached read")
    assert data == cached and took < AT_ONCE, took
    assert sorted(bounded(lambda: os.listdir(m.mnt), 2, "listing /")) == ["web"]
    e, start, end = bounded(lambda: timed_stat(img(m, 1)), T21_D + 2, "a second stat")
    assert e == errno.ETIMEDOUT
    assert end - t0 <= (T21_D + 1) * TIME_FACTOR  # the fetch's deadline, not a new one
    assert count(api, target(1)) <= 2


# ---- teardown with requests waiting (P5, SPEC 12.4) ------------------------------------------

def test_sigterm_with_waiting_stats(api, config, mount):
    """SIGTERM with 20 stats waiting on a hung API (2 connections): the daemon exits 0
    within D + 1 s, every waiting stat gets EIO from the daemon itself (SPEC 12.4: kept
    requests are answered before the unmount, not aborted by it), no mount is left."""
    d = 2.0 * (1 + 1)
    m = mount(config(*cfg(api_settings(timeout_ms=2000, connect_timeout_ms=1000, retries=1,
                                       max_connections=2))))
    api.fault("hang", count=-1)
    crowd = Crowd(timed_stat, [(img(m, i),) for i in range(20)])
    crowd.release()
    wait_for(lambda: len(hung(api)) >= 2, 5, "two hung fetches")
    wait_for(lambda: stats(m)["upstream"]["waiting"] == 20, 5, "20 waiting stats")
    # Two fetches hold the two connections; the other 18 wait for one (SPEC 5: queued).
    up = stats(m)["upstream"]
    assert (up["in_flight"], up["queued"], up["waiting"]) == (2, 18, 20), up
    t0 = time.monotonic()
    m.proc.send_signal(signal.SIGTERM)
    try:
        rc = m.proc.wait(timeout=(d + 5) * TIME_FACTOR)
    except subprocess.TimeoutExpired:
        raise AssertionError("the daemon did not exit after SIGTERM")
    took = time.monotonic() - t0
    assert rc == 0, m.stderr()
    assert took <= (d + 1) * TIME_FACTOR, took
    wait_for(lambda: not is_mounted(m.mnt), 5, "the mount to go away")
    results = crowd.join(10 * TIME_FACTOR)
    for r in results:
        assert isinstance(r, tuple) and r[0] == errno.EIO, results
        assert r[2] - r[1] <= (d + 1) * TIME_FACTOR, r


def abort_fuse_connection(mnt):
    """Abort the FUSE connection of the mount at mnt (fusectl's abort file, SPEC 12)."""
    minor = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == mnt:
                minor = fields[2].split(":")[1]
    if minor is None:
        return
    ctl = "/sys/fs/fuse/connections"
    if not os.path.exists(os.path.join(ctl, minor)):
        subprocess.run(["mount", "-t", "fusectl", "fusectl", ctl], check=False)
    with open(os.path.join(ctl, minor, "abort"), "w") as f:
        f.write("1")


def test_sigterm_while_lookups_go_unread(api, config, mount):
    """SIGTERM with a fetch hung while stats of new names in its directory keep coming:
    the LOOKUPs the kernel sends once the session loop has stopped reading are never
    answered, and each holds the directory's lock. The fetch then fails at its deadline
    and its version is dropped; the daemon must not ask the kernel to forget its entry
    any more (the notify waits for that lock, and teardown would wait for the notify
    forever). It exits 0 within D + 1 s and the mount goes away."""
    d = T21_D
    m = mount(config(*cfg(T21_API)))
    api.fault("hang", count=-1)
    threading.Thread(target=stat_errno, args=(img(m, 0),), daemon=True).start()
    wait_for(lambda: len(hung(api)) >= 1, 5, "the hung fetch")
    stop = threading.Event()

    def newcomers():
        i = 1
        while not stop.is_set() and i < 500:
            threading.Thread(target=stat_errno, args=(img(m, i),), daemon=True).start()
            i += 1
            time.sleep(0.02)  # a steady trickle of new names, before and after the loop ends

    gen = threading.Thread(target=newcomers, daemon=True)
    t0 = time.monotonic()
    m.proc.send_signal(signal.SIGTERM)
    gen.start()
    try:
        try:
            rc = m.proc.wait(timeout=(d + 5) * TIME_FACTOR)
        except subprocess.TimeoutExpired:
            # A daemon stuck in a notify cannot even be killed: abort its connection so
            # the stuck LOOKUPs end and the rest of the suite can run.
            abort_fuse_connection(m.mnt)
            raise AssertionError("the daemon did not exit after SIGTERM: " + m.stderr())
        took = time.monotonic() - t0
    finally:
        stop.set()
        gen.join()
    assert rc == 0, m.stderr()
    assert took <= (d + 1) * TIME_FACTOR, took
    wait_for(lambda: not is_mounted(m.mnt), 5, "the mount to go away")


# ---- reload keeps the endpoint's account (SPEC 7) --------------------------------------------

def test_reload_to_another_endpoint_drops_everything(api, config, mount, tmp_path):
    """SPEC 7: a reload that changes `endpoint` drops every cached version and starts
    the endpoint's account afresh (counters): the same image, looked up again under
    another spelling, is fetched from the new endpoint."""
    from client import LocalAPI
    from conftest import make_config
    path = config(*cfg(api_settings(timeout_ms=3000)))
    m = mount(path)
    data = read_file(img(m, 0))
    s = stats(m)
    assert s["cache"]["entries"] == 1 and s["upstream"]["requests"] == 1
    other = LocalAPI().start(str(tmp_path / "api2"))
    try:
        make_config(path, other, *cfg(api_settings(timeout_ms=3000)))
        m.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "insightfs: info: configuration reloaded from %s" % path
                 in m.stderr(), 5, "the reload")
        s = stats(m)
        assert s["cache"]["entries"] == 0 and s["cache"]["bytes"] == 0, s
        assert s["upstream"]["requests"] == 0, s
        start, end = rng(0)
        iso_name = "%s-%s.png" % (iso(start, False), iso(end, False))
        assert read_file(m.path("web", "cpu", iso_name)) == data
        assert count(other, target(0)) == 1
        assert count(api, target(0)) == 1
        assert stats(m)["upstream"]["requests"] == 1
    finally:
        other.stop()


def test_reload_keeps_counters(api, config, mount):
    """A SIGHUP reload that changes api.timeout_ms keeps the upstream counters: they
    describe the endpoint, not the file."""
    path = config(*cfg(api_settings(timeout_ms=3000)))
    m = mount(path)
    assert read_file(img(m, 0))
    assert stats(m)["upstream"]["requests"] == 1
    config(*cfg(api_settings(timeout_ms=4000)))  # rewrites the same file
    m.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "insightfs: info: configuration reloaded from %s" % path in m.stderr(),
             5, "the reload")
    cfgtext = bounded(lambda: read_file(m.path(".insightfs", "config")).decode(), 5,
                      "reading the config")
    assert re.search(r"timeout_ms\s*=\s*4000\s*;", cfgtext), cfgtext
    s = stats(m)["upstream"]
    assert s["requests"] == 1, s
    assert read_file(img(m, 1))
    assert stats(m)["upstream"]["requests"] == 2
    assert m.proc.poll() is None


# ---- one CPU while idle (src/cpu.c) ------------------------------------------------------

CALM_TICKS = 5  # cpu.h: CPU_SHARE_CALM_TICKS housekeeping ticks of 1 s under the line

LOAD = r"""
import os, sys, time
d, until = sys.argv[1], time.monotonic() + float(sys.argv[2])
i = 0
while time.monotonic() < until:
    for _ in range(200):
        i += 1
        try:
            os.stat(os.path.join(d, "no-such-name-%d-%d" % (os.getpid(), i)))
        except FileNotFoundError:
            pass
"""


def thread_masks(pid):
    """{tid: frozenset of the CPUs it may run on} for every thread of pid."""
    out = {}
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            out[int(t)] = frozenset(os.sched_getaffinity(int(t)))
        except OSError:  # ended meanwhile
            pass
    return out


def on_one_cpu(pid, wide):
    masks = set(thread_masks(pid).values())
    return len(masks) == 1 and len(next(iter(masks))) == 1 and next(iter(masks)) <= wide


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="this process may use one CPU")
@pytest.mark.skipif(VALGRIND, reason="valgrind runs one thread at a time anyway")
def test_threads_share_one_cpu_until_busy(api, config, mount):
    """Idle, every thread of the daemon (workers, fetch threads, timer, invalidation,
    reload) runs on one and the same CPU of the mask it was started with. Kept busy
    (LOOKUPs of names that do not exist, from three processes) it spreads over the whole
    mask within a few ticks; CALM_TICKS quiet ticks later it is back on one CPU."""
    wide = frozenset(os.sched_getaffinity(0))  # the daemon inherits this mask
    m = mount(config(*cfg()))
    pid = m.proc.pid
    status, _, body = api.signed_get(target(0))
    assert status == 200
    assert read_file(img(m, 0)) == body  # a fetch: every kind of thread has started
    assert stat_errno(m.path("web", "cpu", "no-such-name")) == errno.ENOENT
    masks = thread_masks(pid)
    assert len(masks) >= 10
    assert on_one_cpu(pid, wide), masks

    loaders = [subprocess.Popen([sys.executable, "-c", LOAD, m.path("web", "cpu"), str(60 * TIME_FACTOR)])
               for _ in range(3)]
    try:
        wait_for(lambda: set(thread_masks(pid).values()) == {wide}, 10,
                 "the busy daemon's threads to spread over %s" % sorted(wide))
    finally:
        for p in loaders:
            p.kill()
            p.wait()
    wait_for(lambda: on_one_cpu(pid, wide), CALM_TICKS + 5,
             "the quiet daemon's threads back on one CPU")
    assert count(api, target(0)) == 2  # the test's own request and the daemon's
    status, _, body = api.signed_get(target(1))
    assert status == 200
    assert read_file(img(m, 1)) == body
    assert count(api, target(1)) == 2
    assert m.proc.poll() is None
