"""Fault injection against a real mount (RELIABILITY.md P1-P5; T1, T3, T4, T5, T7, T9,
T11, T12, T17-T19; SPEC sections 6 and 7).

Every test mounts build/insightfs for real against the bundled local API and asserts
exact errno values, exact bytes and exact upstream request counts taken from the local
API's request log. Waits are conditions with deadlines scaled by TIME_FACTOR; a wait for
a TTL to pass polls time.monotonic() until it has.
"""
import errno
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import DEFAULT_DASHBOARDS, SANITIZE, TIME_FACTOR, VALGRIND, is_mounted, wait_for
from client import LocalAPI, image_target

DASH, WIDGET = "df_457958429047263232", "cpu_avg__1234"  # web/cpu
BASE_MS = 1733011200000  # 2024-12-01T00:00Z: every range below is old, so final


# ---- helpers ---------------------------------------------------------------------------

def rng(i):
    """A distinct absolute one-hour range per index."""
    start = BASE_MS + i * 60000
    return start, start + 3600000


def name(i):
    return "%d-%d.png" % rng(i)


def target(i):
    return image_target(DASH, WIDGET, *rng(i))


def img(m, i):
    return m.path("web", "cpu", name(i))


def count(api, tgt):
    """Requests the local API received for one request target."""
    return sum(1 for e in api.requests() if e["target"] == tgt)


def expected_png(api, tgt):
    """The exact bytes the API serves for tgt (one extra, signed request)."""
    status, _, body = api.signed_get(tgt)
    assert status == 200
    return body


def stat_errno(path):
    try:
        os.stat(path)
    except OSError as e:
        return e.errno
    return 0


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def read_errno(path):
    """The errno of open+read (open may already fail: default_permissions makes the
    kernel ask GETATTR first), or 0."""
    try:
        read_file(path)
    except OSError as e:
        return e.errno
    return 0


def cfg_text(api_extra="", cache="", time_group=""):
    """(api_extra, body) for the config fixture."""
    body = ""
    if cache:
        body += "cache = {\n%s\n};\n" % cache
    if time_group:
        body += "time = {\n%s\n};\n" % time_group
    return api_extra, body + DEFAULT_DASHBOARDS


def run_threads(fn, args_list, timeout):
    """Run fn(*args) in one thread each, started together; return their results (an
    exception counts as a result). Fails if a thread is still running after timeout."""
    results = [None] * len(args_list)
    barrier = threading.Barrier(len(args_list))

    def body(k, args):
        try:
            barrier.wait(timeout=10 * TIME_FACTOR)
            results[k] = fn(*args)
        except BaseException as e:  # noqa: B902 - reported to the test
            results[k] = e

    threads = [threading.Thread(target=body, args=(k, a), daemon=True)
               for k, a in enumerate(args_list)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [k for k, t in enumerate(threads) if t.is_alive()]
    assert not stuck, "threads %s still blocked after %.1f s" % (stuck, timeout)
    return results


def stats(m):
    with open(m.path(".insightfs", "stats")) as f:
        return json.loads(f.read())


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def wait_monotonic(until):
    """Wait for a TTL to pass: poll the monotonic clock until `until`."""
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


def avoid_day_boundary(margin_s=60):
    """With align_s = 86400 a relative name changes key at UTC midnight: if midnight is
    less than margin_s away, wait for it to pass (a condition on the clock)."""
    while 86400 - time.time() % 86400 < margin_s:
        time.sleep(0.2)


# ---- the errno table (SPEC 6), one mount per fault mode ---------------------------------

RETRIES = 1
# Faults that only end by a timeout run with short tries (D = timeout_ms x tries).
SHORT = {"hang": (500, 0), "drip": (1000, 1), "stall": (1000, 1)}
FAULTS = [
    # id, fault kind, fault parameters, errno, retried
    ("400", "status", {"status": 400}, errno.EINVAL, False),
    ("401", "status", {"status": 401}, errno.EACCES, False),
    ("403", "status", {"status": 403}, errno.EACCES, False),
    ("404", "status", {"status": 404}, errno.ENOENT, False),
    ("429", "status", {"status": 429}, errno.EAGAIN, True),
    # 429 with errorCode 400 (quota exceeded) is final; errorCode may be an integer.
    ("429-quota", "status", {"status": 429, "errorCode": "400"}, errno.EAGAIN, False),
    ("429-quota-int", "status", {"status": 429, "errorCode": 400}, errno.EAGAIN, False),
    # 413 with the gateway's errorCode 430, request entity too large (SPEC 1): other 4xx.
    ("413", "status", {"status": 413}, errno.EIO, False),
    ("418", "status", {"status": 418}, errno.EIO, False),
    ("202", "status", {"status": 202}, errno.EIO, False),
    ("500", "status", {"status": 500}, errno.EIO, True),
    ("503", "status", {"status": 503}, errno.EIO, True),
    ("504", "status", {"status": 504}, errno.EIO, True),
    ("hang", "hang", {}, errno.ETIMEDOUT, True),
    ("reset", "reset", {}, errno.EIO, True),
    ("close", "close", {}, errno.EIO, True),
    ("truncate", "truncate", {"bytes": 100}, errno.EIO, True),
    ("truncate-rst", "truncate", {"bytes": 100, "rst": True}, errno.EIO, True),
    # A close-delimited 200 (no Content-Length) cut inside a PNG chunk: complete as HTTP
    # goes, truncated as a PNG - retried, not taken for a foreign body (issue 6, item 6).
    ("truncate-no-length", "truncate", {"bytes": 100, "content_length": False}, errno.EIO,
     True),
    ("stall", "stall", {"bytes": 100}, errno.EIO, True),
    ("drip", "drip", {"bytes_per_s": 1}, errno.EIO, True),
    ("notpng", "notpng", {}, errno.EIO, False),
    ("notpng-json", "notpng", {"body": '{"ok": true}', "content_type": "application/json"},
     errno.EIO, False),
    ("nopngiend", "nopngiend", {}, errno.EIO, False),
    ("oversize", "oversize", {"bytes": 100000}, errno.EIO, False),
    ("endless", "endless", {}, errno.EIO, False),
    ("redirect", "redirect", {"status": 302}, errno.EIO, False),
]


@pytest.mark.parametrize("fid,kind,params,want,retried", FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_errno(api, config, mount, fid, kind, params, want, retried):
    timeout_ms, retries = SHORT.get(kind, (3000, RETRIES))
    extra = ("  timeout_ms = %d;\n  connect_timeout_ms = %d;\n  retries = %d;\n"
             "  max_image_bytes = 65536;\n" % (timeout_ms, timeout_ms // 2, retries))
    tries = retries + 1 if retried else 1
    # A stall or drip try lasts timeout_ms: at the third failed try, with no answer for
    # timeout_ms, the circuit breaker opens (SPEC 6) and fails the second image's retry at
    # once. Breaker failures are not remembered, so image 1 may get one probe later.
    breaker = kind in ("stall", "drip")
    tries_b = 1 if breaker else tries
    d = timeout_ms / 1000.0 * (retries + 1)
    m = mount(config(*cfg_text(extra)))
    # An answer first: the circuit breaker counts "no answer for timeout_ms" from the
    # last answer (SPEC 6), so the quick failures below stay within it and only the
    # slow ones (stall, drip) open it. Not before a reset or close: libcurl resends a
    # request once by itself when a reused connection dies before any answer byte; those
    # fail at once, well within timeout_ms of the mount's start.
    warm = kind not in ("reset", "close")
    if warm:
        assert os.stat(img(m, 2)).st_size > 0
        api.clear_log()
    api.fault(kind, count=-1, **params)

    # stat is the first call that needs the size; open+read the first that needs bytes.
    t0 = time.monotonic()
    assert stat_errno(img(m, 0)) == want
    assert time.monotonic() - t0 <= (d + 1) * TIME_FACTOR
    t0 = time.monotonic()
    assert read_errno(img(m, 1)) == want
    assert time.monotonic() - t0 <= (d + 1) * TIME_FACTOR
    assert count(api, target(0)) == tries
    assert count(api, target(1)) == tries_b
    assert len(api.requests()) == tries + tries_b
    # Remembered: more calls make no request; nothing was cached.
    assert stat_errno(img(m, 0)) == want
    assert read_errno(img(m, 1)) == want
    n = len(api.requests())
    assert n == tries + tries_b or (breaker and n == tries + tries_b + 1)
    s = stats(m)
    assert s["cache"]["entries"] == warm  # the answer before the faults
    assert s["upstream"]["requests"] == n + warm
    assert s["upstream"]["failures"] == n
    assert s["upstream"]["retries"] == (tries - 1) + (tries_b - 1)
    assert s["upstream"]["down_total"] == (1 if breaker else 0)
    # One warn line per failed logical fetch, naming the errno (SPEC 8); a rejected 200
    # body is quoted, escaped.
    err = m.stderr()
    lines = [ln for ln in err.splitlines()
             if ln.startswith("insightfs: warn: upstream: GET %s: " % target(0))]
    assert len(lines) == 1, err
    tail = "after %d tries: %s" % (tries, errno.errorcode[want])
    if kind in ("notpng", "nopngiend"):
        assert tail + ' body="' in lines[0], lines[0]
    else:
        assert lines[0].endswith(tail), lines[0]
    if kind == "status":
        assert "HTTP %d " % params["status"] in lines[0], lines[0]
    if fid == "413":
        assert ': HTTP 413 errorCode=430 "Request Entity Too Large" after 1 tries: EIO' \
            in lines[0], lines[0]


@pytest.mark.parametrize("value,retried", [("999999999", True), ("-5", True), ("abc", True),
                                           ("7" * 10000, True), ("10", False)])
def test_hostile_retry_after(api, config, mount, value, retried):
    """T6: Retry-After over 86400 s or malformed is ignored (the normal backoff applies);
    one that would end after D means no further try: the fetch fails at once."""
    m = mount(config(*cfg_text("  timeout_ms = 1000;\n  retries = 1;\n")))
    api.fault("status", count=-1, status=503, retry_after=value)
    t0 = time.monotonic()
    assert stat_errno(img(m, 0)) == errno.EIO
    took = time.monotonic() - t0
    assert took <= (2 + 1) * TIME_FACTOR
    if not retried:
        assert took < 1.0 * TIME_FACTOR  # no sleep towards a retry that cannot happen
    assert count(api, target(0)) == (2 if retried else 1)


def test_stalled_body_ends_at_the_low_speed_window(api, config, mount):
    """A 200 whose body stops after 100 bytes, with timeout_ms = 10000: the try is
    aborted by the low-speed limit (under 1 byte/s over min(5000, timeout_ms) ms, SPEC 6)
    after about 5 s, not by the 10 s timeout; EIO, one request."""
    extra = "  timeout_ms = 10000;\n  retries = 0;\n"
    m = mount(config(*cfg_text(extra)))
    api.fault("stall", count=-1, bytes=100)
    t0 = time.monotonic()
    assert stat_errno(img(m, 0)) == errno.EIO
    took = time.monotonic() - t0
    assert 4.5 <= took <= 9.0, took
    assert count(api, target(0)) == 1
    assert len(api.requests()) == 1


@pytest.mark.parametrize("first,then,want", [
    (("status", {"status": 503}), ("hang", {}), errno.ETIMEDOUT),
    (("hang", {}), ("status", {"status": 503}), errno.EIO),
    (("status", {"status": 429}), ("status", {"status": 404}), errno.ENOENT),
], ids=["503-then-hang", "hang-then-503", "429-then-404"])
def test_errno_is_the_last_tries(api, config, mount, first, then, want):
    """SPEC 6: the errno of a logical fetch is that of its last try, whatever the
    first one was. Two tries (retries = 1, timeout_ms = 1000), two requests."""
    m = mount(config(*cfg_text("  timeout_ms = 1000;\n  retries = 1;\n")))
    api.fault(first[0], count=1, **first[1])
    api.fault(then[0], count=-1, **then[1])
    t0 = time.monotonic()
    assert stat_errno(img(m, 0)) == want
    assert time.monotonic() - t0 <= (2.0 + 1) * TIME_FACTOR
    assert count(api, target(0)) == 2
    err = m.stderr()
    assert err.count("insightfs: warn: upstream: GET %s: " % target(0)) == 1, err
    assert ("after 2 tries: %s" % errno.errorcode[want]) in err, err


def test_redirect_not_followed(api, config, mount, tmp_path):
    """T11: a 302 to another loopback server is EIO and that server receives nothing."""
    other = LocalAPI().start(str(tmp_path / "other"))
    try:
        m = mount(config(*cfg_text("  retries = 2;\n")))
        api.fault("redirect", count=-1, status=302, location=other.url + target(0))
        assert stat_errno(img(m, 0)) == errno.EIO
        api.clear_faults()
        api.fault("redirect", count=-1, status=307, location=other.url + target(1))
        assert read_errno(img(m, 1)) == errno.EIO
        assert [e["status"] for e in api.requests()] == [302, 307]
        assert other.log() == []
        assert other.stats()["requests"] == 0
    finally:
        other.stop()


# ---- remembered failures ----------------------------------------------------------------

def test_remembered_failure_then_recovery(api, config, mount):
    # error_ttl_s is whole seconds; under valgrind the first failed fetch alone can take
    # over 0.6 s, so there the TTL, and every time below in its units, is 5 s.
    ttl = 5 if VALGRIND else 1
    m = mount(config(*cfg_text("  retries = 0;\n", cache="  error_ttl_s = %d;" % ttl)))
    good = expected_png(api, target(0))
    api.clear_log()
    api.fault("status", count=-1, status=503)

    t0 = time.monotonic()
    assert stat_errno(img(m, 0)) == errno.EIO
    failed_by = time.monotonic()
    assert count(api, target(0)) == 1
    # A burst within error_ttl_s (the failure is remembered from some time after t0 for
    # 1 s; calls start before t0 + 0.6 s): one logical fetch for all of it.
    n = 0
    while n < 20 and time.monotonic() < t0 + 0.6 * ttl:
        assert stat_errno(img(m, 0)) == errno.EIO
        assert read_errno(img(m, 0)) == errno.EIO
        n += 1
    assert n >= 3, "too slow to test a burst inside error_ttl_s"
    assert time.monotonic() < t0 + 1.0 * ttl
    assert count(api, target(0)) == 1

    # After error_ttl_s, with the fault gone: one new request, the exact bytes.
    api.clear_faults()
    wait_monotonic(failed_by + ttl + 0.05)
    assert read_file(img(m, 0)) == good
    assert count(api, target(0)) == 2
    assert os.stat(img(m, 0)).st_size == len(good)
    assert read_file(img(m, 0)) == good
    assert count(api, target(0)) == 2


# ---- stale-if-error (SPEC 6) ------------------------------------------------------------

STALE_CACHE = "  live_ttl_s = 1;\n  settle_s = 604800;\n  stale_if_error_s = %d;\n  error_ttl_s = %d;"
STALE_TIME = "  align_s = 86400;"  # last-1h keeps its key all day; settle_s keeps it live


def read_live(api, m):
    """Read last-1h.png (live); return (path, target, bytes, monotonic time when done)."""
    avoid_day_boundary()
    p = m.path("web", "cpu", "last-1h.png")
    data = read_file(p)
    done = time.monotonic()
    tgt = os.getxattr(p, "user.insightfs.api_path").decode()
    assert data == expected_png(api, tgt)
    assert count(api, tgt) == 2  # ours and the check's
    return p, tgt, data, done


def stale_lines(text):
    return [ln for ln in text.splitlines() if ln.startswith("insightfs: warn: ") and "stale" in ln]


@pytest.mark.parametrize("how", ["503", "reset", "refused"])
def test_stale_if_error_serves_old_bytes(api, config, mount, how):
    """T3: a live image whose refresh fails with EIO is served stale, with one warning."""
    m = mount(config(*cfg_text("  retries = 0;\n", cache=STALE_CACHE % (3600, 10),
                               time_group=STALE_TIME)))
    p, tgt, old, done = read_live(api, m)
    wait_monotonic(done + 1.05)  # live_ttl_s passed: the next lookup refreshes
    if how == "503":
        api.fault("status", count=-1, status=503)
    elif how == "reset":
        api.fault("reset", count=-1)
    else:
        api.stop()  # connection refused

    t0 = time.monotonic()
    assert read_file(p) == old
    assert os.stat(p).st_size == len(old)
    assert time.monotonic() - t0 < 2 * TIME_FACTOR
    if how == "503":
        assert count(api, tgt) == 3
    elif how == "reset":
        # libcurl resends a request once, on a fresh connection, when a reused keep-alive
        # connection dies before any byte of the answer (lib/transfer.c
        # Curl_retry_request; not configurable). The first read left such a connection,
        # so this one try may reach the server twice.
        assert count(api, tgt) in (3, 4)
    err = m.stderr()
    assert len(stale_lines(err)) == 1, err
    # While the failure is remembered, the name keeps giving the stale version: no request.
    wait_monotonic(time.monotonic() + 1.05)  # past live_ttl_s again
    if how != "refused":
        n = count(api, tgt)
    assert read_file(p) == old
    if how != "refused":
        assert count(api, tgt) == n
    assert len(stale_lines(m.stderr())) == 1


def test_stale_served_silently_while_upstream_down(api, config, mount):
    """SPEC 6: while the circuit breaker is open, a live image past live_ttl_s is served
    stale at once - no request for it, and no stale warning (the one `upstream down`
    line speaks for the outage)."""
    m = mount(config(*cfg_text("  timeout_ms = 500;\n  connect_timeout_ms = 250;\n"
                               "  retries = 0;\n", cache=STALE_CACHE % (3600, 10),
                               time_group=STALE_TIME)))
    p, tgt, old, done = read_live(api, m)
    api.fault("hang", count=-1)
    for i in range(3):  # three failed tries, 0.5 s each, no answer since: down
        assert stat_errno(img(m, i)) == errno.ETIMEDOUT
    wait_for(lambda: stats(m)["upstream"]["down"] == 1, 5, "the breaker to open")
    wait_monotonic(done + 1.05)  # live_ttl_s passed: a lookup would refresh
    n = len(api.requests())
    t0 = time.monotonic()
    assert read_file(p) == old
    assert time.monotonic() - t0 < 0.2 * TIME_FACTOR
    assert len(api.requests()) == n
    err = m.stderr()
    assert stale_lines(err) == [], err
    assert err.count("insightfs: warn: upstream down: ETIMEDOUT") == 1, err


@pytest.mark.parametrize("status,want", [(401, errno.EACCES), (403, errno.EACCES),
                                         (404, errno.ENOENT)])
def test_stale_not_served_after_auth_or_not_found(api, config, mount, status, want):
    m = mount(config(*cfg_text("  retries = 0;\n", cache=STALE_CACHE % (3600, 10),
                               time_group=STALE_TIME)))
    p, tgt, old, done = read_live(api, m)
    wait_monotonic(done + 1.05)
    api.fault("status", count=-1, status=status)
    assert stat_errno(p) == want
    assert read_errno(p) == want
    assert count(api, tgt) == 3
    assert stale_lines(m.stderr()) == []


def test_stale_window_expires(api, config, mount):
    """Past fetched_at + live_ttl_s + stale_if_error_s a failed refresh is the errno."""
    m = mount(config(*cfg_text("  retries = 0;\n", cache=STALE_CACHE % (1, 10),
                               time_group=STALE_TIME)))
    p, tgt, old, done = read_live(api, m)
    wait_monotonic(done + 2.1)
    api.fault("status", count=-1, status=503)
    assert stat_errno(p) == errno.EIO
    assert read_errno(p) == errno.EIO
    assert count(api, tgt) == 3
    assert stale_lines(m.stderr()) == []


# ---- bounded waits (P1, T1) ---------------------------------------------------------------

T1_API = ("  timeout_ms = 1000;\n  connect_timeout_ms = 500;\n  retries = 1;\n"
          "  max_connections = 2;\n")
T1_D = 1.0 * (1 + 1)  # timeout_ms x (retries + 1), seconds
# "At once" while fetches hang: RELIABILITY T1's 50 ms (scaled under sanitizers).
AT_ONCE = 0.05 * TIME_FACTOR


def test_hang_times_out_and_cached_file_stays_fast(api, config, mount):
    m = mount(config(*cfg_text(T1_API)))
    cached = read_file(img(m, 0))
    assert cached == expected_png(api, target(0))
    api.fault("hang", count=-1)

    # One uncached image: ETIMEDOUT by D + 1 s, after exactly retries + 1 tries.
    t0 = time.monotonic()
    assert stat_errno(img(m, 1)) == errno.ETIMEDOUT
    took = time.monotonic() - t0
    assert took <= (T1_D + 1) * TIME_FACTOR, took
    assert took >= 1.0  # the first try waited its whole timeout_ms
    assert count(api, target(1)) == 2

    # max_connections fetches hang and more wait for a slot...
    def timed_stat(i):
        t = time.monotonic()
        e = stat_errno(img(m, i))
        return e, time.monotonic() - t

    holder = {}
    runner = threading.Thread(
        target=lambda: holder.update(r=run_threads(timed_stat, [(i,) for i in range(2, 6)],
                                                   (T1_D + 5) * TIME_FACTOR)), daemon=True)
    runner.start()
    hung = lambda: [e for e in api.requests() if e["fault"] == "hang"  # noqa: E731
                    and e["target"] in {target(i) for i in range(2, 6)}]
    wait_for(lambda: len(hung()) >= 2, 5, "two hung fetches")
    # ... while a cached file reads completely at once, and listings answer.
    t = time.monotonic()
    with open(img(m, 0), "rb") as f:
        data = f.read()
    read_took = time.monotonic() - t
    assert data == cached
    assert read_took < AT_ONCE, read_took
    # The same with the kernel's pages dropped, so the daemon itself serves the READ.
    t = time.monotonic()
    with open(img(m, 0), "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        data = f.read()
    read_took = time.monotonic() - t
    assert data == cached
    assert read_took < AT_ONCE, read_took
    t = time.monotonic()
    listing = os.listdir(m.path("web", "cpu"))
    list_took = time.monotonic() - t
    assert "last-1h.png" in listing and "days" in listing
    assert list_took < AT_ONCE, list_took
    t = time.monotonic()
    assert os.stat(img(m, 0)).st_size == len(cached)
    assert sorted(os.listdir(m.mnt)) == ["db", "web"]
    assert time.monotonic() - t < AT_ONCE
    assert len(hung()) == 2  # the slot waiters really waited (max_connections = 2)

    runner.join((T1_D + 6) * TIME_FACTOR)
    assert not runner.is_alive()
    results = holder["r"]
    for e, took in results:
        assert e == errno.ETIMEDOUT
        assert took <= (T1_D + 1) * TIME_FACTOR, took
    for i in range(2, 6):
        assert count(api, target(i)) <= 2


# ---- single flight with failures (P2, T17) ------------------------------------------------

def test_single_flight_failure(api, config, mount):
    m = mount(config(*cfg_text("  retries = 1;\n")))
    api.fault("status", count=-1, status=503)
    results = run_threads(stat_errno, [(img(m, 0),)] * 16, 30 * TIME_FACTOR)
    assert results == [errno.EIO] * 16
    assert count(api, target(0)) == 2
    assert len(api.requests()) == 2


def test_single_flight_success(api, config, mount):
    m = mount(config(*cfg_text()))
    api.set_latency(200)
    results = run_threads(read_file, [(img(m, 0),)] * 16, 30 * TIME_FACTOR)
    api.set_latency(0)
    assert results == [expected_png(api, target(0))] * 16
    assert count(api, target(0)) == 2  # the daemon's one and ours


# ---- eviction and the memory bound (P4, T18) ----------------------------------------------

def test_eviction_bounds_bytes(api, config, mount):
    max_bytes = 1048576
    m = mount(config(*cfg_text("  max_connections = 8;\n",
                               cache="  max_bytes = %d;" % max_bytes)))
    n = 400
    first = expected_png(api, target(0))
    second = expected_png(api, target(1))
    api.clear_log()

    # Image 0 stays open while it is evicted.
    fd = os.open(img(m, 0), os.O_RDONLY)
    try:
        assert os.pread(fd, len(first) + 1, 0) == first
        assert read_file(img(m, 1)) == second
        sizes = run_threads(lambda lo: sum(len(read_file(img(m, i)))
                                           for i in range(lo, n, 8)),
                            [(lo,) for lo in range(2, 10)], 120 * TIME_FACTOR)
        total = len(first) + len(second) + sum(sizes)
        assert total > 1.5 * max_bytes  # ~5 kB each: about twice what the cache holds
        assert len(api.requests()) == n

        s = stats(m)["cache"]
        assert s["max_bytes"] == max_bytes
        assert s["bytes"] <= max_bytes
        assert s["evictions"] > 0
        assert s["entries"] < n
        assert s["pinned_bytes"] >= len(first)  # the open file's version

        # The open file still reads its full bytes from the daemon (page cache dropped).
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(fd, len(first) + 1, 0) == first
    finally:
        os.close(fd)
    # Image 1 was the least recently used after 0: evicted; a re-read fetches it again.
    assert read_file(img(m, 1)) == second
    assert count(api, target(1)) == 2
    s = stats(m)["cache"]
    assert s["bytes"] <= max_bytes


def test_endless_and_oversize_bodies_bounded(api, config, mount):
    """T7: bodies over max_image_bytes abort at the cap, EIO, not retried, RSS flat."""
    m = mount(config(*cfg_text("  max_image_bytes = 65536;\n  retries = 2;\n")))
    assert len(read_file(img(m, 0))) > 0
    pid = m.proc.pid
    start_rss = vm_rss_kib(pid)
    peak = [start_rss]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], vm_rss_kib(pid))
            except (OSError, AssertionError):
                return
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        cases = [("endless", {}), ("endless", {"chunked": False}),
                 ("oversize", {"bytes": 1 << 30})]
        i = 1
        for kind, params in cases:
            api.clear_faults()
            api.fault(kind, count=-1, **params)
            for _ in range(4):
                assert stat_errno(img(m, i)) == errno.EIO
                assert count(api, target(i)) == 1
                i += 1
    finally:
        stop.set()
        sampler.join(5)
    # A body is dropped at the 64 KiB cap: the plain build's RSS grows by about 0.1 MiB
    # here (ASan's shadow and quarantine keep more, so its bound is looser).
    bound_kib = 64 * 1024 if (SANITIZE or VALGRIND) else 4 * 1024
    assert peak[0] - start_rss < bound_kib, (start_rss, peak[0])
    assert stats(m)["cache"]["entries"] == 1
    # The server saw each connection close early: every transfer ended far below 1 GiB.
    # What it could send beyond the cap is what the two sockets' buffers hold (send
    # buffer at most 4 MiB by Debian's tcp_wmem; 2.7 MiB at most measured here).
    wait_for(lambda: len([e for e in api.file_log() if e["fault"]]) == 12, 10,
             "the faulted requests to finish")
    for e in api.file_log():
        if e["fault"]:
            assert e["bytes"] < 8 << 20, e


# ---- retries (T4, T5) ---------------------------------------------------------------------

def test_retry_after_is_honoured(api, config, mount):
    m = mount(config(*cfg_text()))
    api.fault("status", count=1, status=503, retry_after="1")
    assert read_file(img(m, 0)) == expected_png(api, target(0))
    log = [e for e in api.requests() if e["target"] == target(0)]
    assert [e["status"] for e in log] == [503, 200, 200]  # the last one is ours
    assert log[1]["t"] - log[0]["t"] >= 1.0


def test_429_storm_spends_the_retry_budget(api, config, mount):
    m = mount(config(*cfg_text("  retries = 2;\n")))
    api.fault("status", count=-1, status=429)
    n = 40
    results = run_threads(lambda lo: [read_errno(img(m, i)) for i in range(lo, n, 8)],
                          [(lo,) for lo in range(8)], 60 * TIME_FACTOR)
    assert [e for r in results for e in r] == [errno.EAGAIN] * n
    per_image = [count(api, target(i)) for i in range(n)]
    assert all(1 <= c <= 3 for c in per_image), per_image
    total = len(api.requests())
    # The retry budget (SPEC 6): 10 tokens, starting full, capped at 10; every first try
    # adds 0.1 and every retry spends 1. The first tries can add at most 40 x 0.1 = 4
    # tokens, so at most 10 + 4 = 14 retries happen: total <= 40 + 14. Each image wants
    # 2 retries (80 >> 14), so the 10 starting tokens are all spent: total >= 40 + 10.
    assert n + 10 <= total <= n + 10 + 4, (total, per_image)
    assert stats(m)["upstream"]["retries"] == total - n


# ---- lifecycle (P5, T19) ------------------------------------------------------------------

@pytest.mark.parametrize("how", ["sigterm", "fusermount"])
def test_stop_with_fetches_in_flight(api, config, mount, how):
    """P5: SIGTERM, or `fusermount3 -u` (lazily, as root's libfuse does), while five
    fetches hang: the daemon exits 0 within P1's bound (D + 1 s), no mount is left and
    every blocked stat returns an error."""
    m = mount(config(*cfg_text(T1_API.replace("max_connections = 2", "max_connections = 8"))))
    api.fault("hang", count=-1)
    holder = {}
    runner = threading.Thread(
        target=lambda: holder.update(r=run_threads(stat_errno, [(img(m, i),) for i in range(5)],
                                                   (T1_D + 10) * TIME_FACTOR)), daemon=True)
    runner.start()
    wait_for(lambda: len([e for e in api.requests() if e["fault"] == "hang"]) >= 5, 5,
             "five hung fetches")
    t0 = time.monotonic()
    if how == "sigterm":
        m.proc.send_signal(signal.SIGTERM)
    else:
        subprocess.run(["fusermount3", "-u", "-z", m.mnt], check=True)
    rc = m.proc.wait(timeout=(T1_D + 5) * TIME_FACTOR)
    took = time.monotonic() - t0
    assert rc == 0, m.stderr()
    assert took <= (T1_D + 1) * TIME_FACTOR, took
    wait_for(lambda: not is_mounted(m.mnt), 5, "the mount to go away")
    runner.join((T1_D + 11) * TIME_FACTOR)
    assert not runner.is_alive(), "blocked stats never returned"
    for e in holder["r"]:
        assert isinstance(e, int) and e != 0, holder["r"]


# ---- clock skew (T12) ----------------------------------------------------------------------

def test_clock_skew_is_corrected(api, config, mount):
    good = expected_png(api, target(0))
    api.clear_log()
    api.set_clock(10 * 60 * 1000)
    m = mount(config(*cfg_text()))
    assert read_file(img(m, 0)) == good
    assert [e["status"] for e in api.requests()] == [401, 200]
    err = m.stderr()
    assert re.search(r"insightfs: warn: local clock is (599|600) s behind the gateway", err), err
    # The corrected clock is used from now on: one request per new image.
    assert read_file(img(m, 1)) == expected_png_skewed(api, target(1))
    assert count(api, target(1)) == 2


def expected_png_skewed(api, tgt):
    status, _, body = api.signed_get(tgt, timestamp=int(time.time() * 1000) + 600000)
    assert status == 200
    return body


def test_clock_change_forgets_remembered_eacces(api, config, mount):
    """SPEC 6: a change of the applied gateway offset forgets remembered EACCES errors
    (they may have been caused by the wrong clock). error_ttl_s is long so that the
    clock moving 10 minutes forward does not expire the failure by itself."""
    m = mount(config(*cfg_text(cache="  error_ttl_s = 3600;")))
    api.fault("status", count=1, status=401)
    assert stat_errno(img(m, 0)) == errno.EACCES
    assert stat_errno(img(m, 0)) == errno.EACCES  # remembered
    assert count(api, target(0)) == 1
    api.set_clock(10 * 60 * 1000)
    assert read_file(img(m, 1)) == expected_png_skewed(api, target(1))
    assert [e["status"] for e in api.requests() if e["target"] == target(1)] == [401, 200, 200]
    # The offset changed: image 0's EACCES is forgotten and it is fetched again.
    assert read_file(img(m, 0)) == expected_png_skewed(api, target(0))
    assert count(api, target(0)) == 3  # 401, the new fetch, ours
