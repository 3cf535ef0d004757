"""A fleet's shared cache in Redis (SPEC 13, with the `shared` group of section 3, the
stats of section 5, sections 6 and 7; RELIABILITY.md T25, P1, P2, P3, P8).

Each test starts its own redis-server on a free loopback port (the `redis` fixture) and
its own local API, and mounts three insightfs processes on them: a fleet. Request counts
come from the local API's request log; Redis is inspected with the fixture's RESP client
(keys, values, PTTL). Times are CLOCK_MONOTONIC (the log's "t"), except the fleet rate,
counted per calendar second on the log's "wall"; every bound is multiplied by
TIME_FACTOR, and so is shared.timeout_ms. Waits poll a condition with a deadline;
filesystem calls a broken daemon could block forever run in `bounded` threads.
"""
import errno
import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import (SANITIZE, TIME_FACTOR, VALGRIND, free_port, is_mounted, run,
                      shared_group, wait_for)
from client import image_target
# The names and request counting of the engine's tests (one range per index).
from test_engine import bounded, count, img, name, read_file, rng, stat_errno, target  # noqa: F401

DASH, WIDGET, GONE = "df_457958429047263232", "cpu_avg__1234", "no_such_widget__404"
BASE_MS = 1733011200000  # 2024-12-01T00:00Z: every range below is old, so final
FLEET = 3
SLOW_BUILD = VALGRIND or "thread" in SANITIZE

DASHBOARDS = """dashboards = (
  { name = "web"; id = "df_457958429047263232";
    widgets = ( { name = "cpu"; id = "cpu_avg__1234"; },
                { name = "gone"; id = "no_such_widget__404"; } ); }
);
"""

# Tries short enough for a test, long enough for a loaded machine: D = 8 s x 2.
TIMEOUT_MS, RETRIES = 8000, 1
D = TIMEOUT_MS / 1000.0 * (RETRIES + 1)
API = "  timeout_ms = %d;\n  connect_timeout_ms = 2000;\n  retries = %d;\n" % (TIMEOUT_MS,
                                                                              RETRIES)

KEY_RE = re.compile(r"insightfs:1:(img|lease|err|rate|done):[0-9a-f]{64}")
VALUE_HEADER = struct.Struct(">4sqB3xQ8x")  # SPEC 13: 32 bytes before the PNG
PNG_SIG = b"\x89PNG\r\n\x1a\n"


# ---- helpers ---------------------------------------------------------------------------



def image_requests(api):
    prefix = image_target(DASH, WIDGET, 0, 1).split("?")[0] + "?"
    return [e for e in api.requests() if e["target"].startswith(prefix)]


def expected_png(api, tgt):
    """The exact bytes the API serves for tgt (one extra, signed request)."""
    status, _, body = api.signed_get(tgt)
    assert status == 200
    return body


def shared_cfg(redis, api_extra=API, cache="", top="", url=None, **shared_kw):
    """(api_extra, body) for the config fixture: a `shared` group on `redis`."""
    body = ""
    if cache:
        body += "cache = {\n%s\n};\n" % cache
    body += shared_group(url or redis.url, **shared_kw)
    return api_extra, body + top + DASHBOARDS


def fleet(mount, path, n=FLEET):
    return [mount(path) for _ in range(n)]


def timed_read(path, limit):
    """(bytes, seconds) of one read, failing if it takes more than limit (scaled)."""
    t = time.monotonic()
    data = bounded(lambda: read_file(path), limit + 2, "a read of " + path)
    return data, time.monotonic() - t


def stats(m):
    return json.loads(bounded(lambda: read_file(m.path(".insightfs", "stats")), 5,
                              "reading .insightfs/stats"))


def shared_stats(m):
    return stats(m)["shared"]


def lines(m, prefix):
    return [ln for ln in m.stderr().splitlines() if ln.startswith(prefix)]


UNAVAILABLE = "insightfs: warn: shared cache unavailable: "
BACK = "insightfs: info: shared cache back"


def keys(redis, pattern="*", db=0):
    return sorted(k.decode() for k in redis.cmd("KEYS", pattern, db=db))


def cache_hash(api, dash, widget, start, end, mode="AUTO"):
    """H of SPEC 13: hex SHA-256 of the cache key's fields joined by NUL."""
    fields = [api.url, api.access_key, dash, widget, str(start), str(end), mode]
    return hashlib.sha256("\0".join(fields).encode()).hexdigest()


def rate_hash(api):
    return hashlib.sha256(("%s\0%s" % (api.url, api.access_key)).encode()).hexdigest()


def parse_value(v):
    """(magic, fetched_at ms, final flag, length, png) of a stored value; the zero
    bytes of the header are checked here."""
    assert len(v) >= 32, v
    magic, fetched_at, final, length = VALUE_HEADER.unpack(v[:32])
    assert v[13:16] == b"\0" * 3 and v[24:32] == b"\0" * 8, v[:32]
    return magic, fetched_at, final, length, v[32:]


def make_value(png, final=1, fetched_at=None, length=None, magic=b"IFS1"):
    fetched_at = int(time.time() * 1000) if fetched_at is None else fetched_at
    return VALUE_HEADER.pack(magic, fetched_at, final,
                             len(png) if length is None else length) + png


def wait_monotonic(until):
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


class Crowd:
    """fn(*args) in one thread each, released together by a barrier; results (an
    exception counts as a result) by index once every thread has returned."""

    def __init__(self, fn, args_list):
        self.results = [None] * len(args_list)
        self.barrier = threading.Barrier(len(args_list) + 1)
        self.threads = [threading.Thread(target=self._body, args=(k, fn, a), daemon=True)
                        for k, a in enumerate(args_list)]
        for t in self.threads:
            t.start()

    def _body(self, k, fn, args):
        try:
            self.barrier.wait(timeout=30 * TIME_FACTOR)
            self.results[k] = fn(*args)
        except BaseException as e:  # noqa: B902 - reported to the test
            self.results[k] = e

    def release(self):
        self.barrier.wait(timeout=30 * TIME_FACTOR)
        return time.monotonic()

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [k for k, t in enumerate(self.threads) if t.is_alive()]
        assert not stuck, "%d calls still blocked after %.1f s" % (len(stuck), timeout)
        return self.results


def summary(results, want):
    """What went wrong among results that should all equal want (for messages)."""
    bad = {}
    for r in results:
        if r != want:
            k = repr(r) if not isinstance(r, bytes) else "%d other bytes" % len(r)
            bad[k] = bad.get(k, 0) + 1
    return bad


# ---- the harness itself: runs without any shared cache in the daemon ----------------------

def test_redis_fixture(redis):
    """The fixture's server and client: SET/GET/PTTL/KEYS/DEL, a DB index, the unix
    socket; pause makes a command time out and resume answers again; kill refuses
    connections and restart is an empty server on the same port. And the value helpers
    follow SPEC 13's header byte for byte."""
    from conftest import RedisError
    assert redis.url == "redis://127.0.0.1:%d/0" % redis.port
    assert redis.cmd("SET", "insightfs:1:img:" + "a" * 64, b"\x00v\xff", "PX", 5000) == "OK"
    assert redis.cmd("GET", "insightfs:1:img:" + "a" * 64) == b"\x00v\xff"
    assert 0 < redis.cmd("PTTL", "insightfs:1:img:" + "a" * 64) <= 5000
    assert redis.cmd("SET", "k", "v", db=2) == "OK"
    assert keys(redis, db=2) == ["k"] and keys(redis) == ["insightfs:1:img:" + "a" * 64]
    assert redis.cmd("DEL", "k", db=2) == 1
    with pytest.raises(RedisError):
        redis.cmd("NOSUCHCOMMAND")
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(redis.socket)
    s.sendall(b"*1\r\n$4\r\nPING\r\n")
    assert s.recv(64) == b"+PONG\r\n"
    s.close()

    redis.pause()
    t = time.monotonic()
    with pytest.raises(socket.timeout):
        redis.cmd("PING", timeout=0.3)
    assert time.monotonic() - t < 2 * TIME_FACTOR
    redis.resume()
    assert redis.cmd("PING") == "PONG"
    port = redis.port
    redis.kill()
    with pytest.raises(ConnectionRefusedError):
        redis.cmd("PING")
    redis.restart()
    assert redis.port == port and redis.cmd("PING") == "PONG"
    assert keys(redis) == []  # no persistence
    assert redis.cmd("FLUSHALL") == "OK"
    redis.pause()  # teardown resumes before stopping

    png = PNG_SIG + b"rest"
    v = make_value(png, final=1, fetched_at=1733011200123)
    assert v[:4] == b"IFS1" and v[4:12] == (1733011200123).to_bytes(8, "big")
    assert v[12:16] == b"\x01\0\0\0" and v[16:24] == len(png).to_bytes(8, "big")
    assert v[24:32] == b"\0" * 8 and v[32:] == png
    assert parse_value(v) == (b"IFS1", 1733011200123, 1, len(png), png)
    assert parse_value(_wrong_length(v))[3] == len(png) + 1
    assert _wrong_magic(v)[:4] == b"IFS0" and _wrong_magic(v)[4:] == v[4:]
    magic, _, _, length, body = parse_value(_not_png(v))
    assert magic == b"IFS1" and length == len(body) and not body.startswith(PNG_SIG)


@pytest.mark.redis_password("fixture-pw")
def test_redis_fixture_password(redis):
    """With redis_password the server wants AUTH; the client sends it."""
    from conftest import RedisError
    assert redis.cmd("PING") == "PONG"
    redis.password = None
    try:
        with pytest.raises(RedisError, match="NOAUTH"):
            redis.cmd("GET", "x")
    finally:
        redis.password = "fixture-pw"


# ---- --check-config and the settings (SPEC 2, 3, 13) -------------------------------------

def test_check_config_with_shared_ok(api, redis, config):
    """--check-config with a good `shared` group connects and PINGs: the one OK line on
    stdout, nothing on stderr, exit 0; also through the unix socket with a DB index."""
    for url in (redis.url, "unix:%s?db=2" % redis.socket):
        cfg = config(*shared_cfg(redis, url=url))
        p = run(["--check-config", "--config", cfg])
        assert (p.returncode, p.stderr) == (0, b""), p.stderr
        assert p.stdout.decode() == "insightfs: %s: OK (4 dashboards visible)\n" % cfg


def test_check_config_with_shared_unreachable(api, redis, config):
    """--check-config with a Redis port nothing listens on, and with a Redis that does
    not answer (SIGSTOP): exit 1, one line `insightfs: FILE: shared.redis: <reason>` on
    stderr, nothing on stdout; the paused one within a few timeout_ms."""
    cfg = config(*shared_cfg(redis, url="redis://127.0.0.1:%d/0" % free_port()))
    p = run(["--check-config", "--config", cfg])
    assert p.returncode == 1 and p.stdout == b"", (p.stdout, p.stderr)
    assert re.fullmatch(r"insightfs: %s: shared\.redis: [^\n]+\n" % re.escape(cfg),
                        p.stderr.decode()), p.stderr

    cfg = config(*shared_cfg(redis, timeout_ms=200), name="paused.conf")
    redis.pause()
    t = time.monotonic()
    p = run(["--check-config", "--config", cfg])
    took = time.monotonic() - t
    redis.resume()
    assert p.returncode == 1 and p.stdout == b"", (p.stdout, p.stderr)
    assert re.fullmatch(r"insightfs: %s: shared\.redis: [^\n]+\n" % re.escape(cfg),
                        p.stderr.decode()), p.stderr
    assert took < (3 * 0.2 + 2) * TIME_FACTOR, took


BAD_SETTINGS = [
    # id, the group's body, setting, message (a regular expression)
    ("timeout-low", "redis = \"redis://127.0.0.1:6390/0\"; timeout_ms = 9;",
     "shared.timeout_ms", re.escape("9 is out of range (10-10000)")),
    ("timeout-high", "redis = \"redis://127.0.0.1:6390/0\"; timeout_ms = 10001;",
     "shared.timeout_ms", re.escape("10001 is out of range (10-10000)")),
    ("final-ttl-low", "redis = \"redis://127.0.0.1:6390/0\"; final_ttl_s = 59;",
     "shared.final_ttl_s", re.escape("59 is out of range (60-31536000)")),
    ("final-ttl-high", "redis = \"redis://127.0.0.1:6390/0\"; final_ttl_s = 31536001;",
     "shared.final_ttl_s", re.escape("31536001 is out of range (60-31536000)")),
    ("fleet-negative", "redis = \"redis://127.0.0.1:6390/0\"; fleet_requests_per_second = -1;",
     "shared.fleet_requests_per_second", r"-1 is out of range \(0-\d+\)"),
    ("typo", "redis = \"redis://127.0.0.1:6390/0\"; timeout = 100;",
     "shared.timeout", "unknown setting"),
    ("scheme", "redis = \"http://127.0.0.1:6390/0\";", "shared.redis", ".+"),
    ("db", "redis = \"redis://127.0.0.1:6390/x\";", "shared.redis", ".+"),
    ("type", "redis = 6390;", "shared.redis", ".+"),
]


@pytest.mark.parametrize("body,setting,message", [b[1:] for b in BAD_SETTINGS],
                         ids=[b[0] for b in BAD_SETTINGS])
def test_shared_settings_are_checked(api, config, body, setting, message):
    """A `shared` setting of the wrong type, out of range, unknown or a redis URL that is
    not one of SPEC 13's forms: exit 1 with `insightfs: FILE:LINE: SETTING: MESSAGE`,
    before any request."""
    cfg = config(body="shared = {\n  %s\n};\n%s" % (body, DASHBOARDS))
    p = run(["--check-config", "--config", cfg])
    assert p.returncode == 1 and p.stdout == b"", (p.stdout, p.stderr)
    assert re.fullmatch(r"insightfs: %s:\d+: %s: %s\n" % (re.escape(cfg), re.escape(setting),
                                                          message),
                        p.stderr.decode()), p.stderr
    assert api.requests() == []


def test_password_file_follows_the_secret_file_rules(api, config, tmp_path):
    """shared.password_file readable by group: refused (`: run chmod 600 FILE`), and
    the password is not in the message."""
    pw = "pw-" + os.urandom(8).hex()
    pwfile = str(tmp_path / "redis-password")
    with open(pwfile, "w") as f:
        f.write(pw + "\n")
    os.chmod(pwfile, 0o640)
    group = shared_group("redis://127.0.0.1:6390/0", password_file=pwfile)
    cfg = config(body=group + DASHBOARDS)
    p = run(["--check-config", "--config", cfg])
    assert p.returncode == 1 and p.stdout == b"", (p.stdout, p.stderr)
    err = p.stderr.decode()
    assert re.match(r"insightfs: %s(:\d+)?: shared\.password_file: " % re.escape(cfg), err), err
    assert err.endswith(": run chmod 600 %s\n" % pwfile), err
    assert len(err.splitlines()) == 1 and pw not in err


def own_address():
    """A non-loopback IPv4 address of this machine, or None. A connection to it never
    leaves the machine."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=10).stdout.decode()
    except (OSError, subprocess.TimeoutExpired):
        return None
    for m in re.finditer(r"\binet (\d+\.\d+\.\d+\.\d+)/", out):
        if not m.group(1).startswith("127."):
            return m.group(1)
    return None


def test_non_loopback_redis_warns_and_reads_go_on(api, redis, config, mount):
    """shared.redis on a host that is not loopback (this machine's own address, where
    the test's Redis does not listen): one warn line at start, `shared.redis is not
    encrypted: use a unix socket or a private network`; Redis refuses, so the mount goes
    on alone and a read succeeds with the API's bytes."""
    addr = own_address()
    if addr is None:
        pytest.skip("no non-loopback IPv4 address on this machine")
    m = mount(config(*shared_cfg(redis, url="redis://%s:%d/0" % (addr, redis.port))))
    data = bounded(lambda: read_file(img(m, 0)), D + 2, "a read")
    assert data == expected_png(api, target(0))
    want = "insightfs: warn: shared.redis is not encrypted: use a unix socket or a private network"
    assert [ln for ln in m.stderr().splitlines() if ln == want] == [want], m.stderr()
    wait_for(lambda: shared_stats(m)["up"] == 0, 5, "shared.up = 0")


# ---- one upstream fetch per image, fleet-wide (SPEC 13, P2, T25) ---------------------------

READERS = 16


def test_fleet_single_flight(api, redis, config, mount):
    """3 mounts x 16 readers of one uncached final image (the API answers in 200 ms):
    exactly 1 upstream request, every reader gets the API's bytes, and exactly one mount
    won the lease."""
    ms = fleet(mount, config(*shared_cfg(redis)))
    api.set_latency(200)
    crowd = Crowd(read_file, [(img(m, 0),) for m in ms for _ in range(READERS)])
    crowd.release()
    results = crowd.join((D + 5) * TIME_FACTOR)
    api.set_latency(0)
    n = count(api, target(0))
    want = expected_png(api, target(0))
    assert n == 1, (n, summary(results, want))
    assert results == [want] * (FLEET * READERS), summary(results, want)
    s = [shared_stats(m) for m in ms]
    assert [x["up"] for x in s] == [1] * FLEET, s
    assert sum(x["leases_won"] for x in s) == 1, s
    assert sum(stats(m)["upstream"]["requests"] for m in ms) == 1


def test_final_image_served_fleet_wide_and_after_a_restart(api, redis, config, mount):
    """A final image read on A is then read on B and C with 0 more requests, and on B
    again after B restarted (empty memory): from Redis, with the exact bytes. The stored
    value has SPEC 13's header (IFS1, fetched_at, final 1, the length) and its PTTL is
    final_ttl_s."""
    final_ttl_s = 3600
    path = config(*shared_cfg(redis, final_ttl_s=final_ttl_s))
    a, b, c = fleet(mount, path)
    t0 = int(time.time() * 1000)
    data = read_file(img(a, 0))
    t1 = int(time.time() * 1000)
    assert count(api, target(0)) == 1
    # A is done with it: the value is stored and the lease released.
    wait_for(lambda: keys(redis, "insightfs:1:img:*") and not keys(redis, "insightfs:1:lease:*"),
             5, "A's value in Redis and its lease released")
    (key,) = keys(redis, "insightfs:1:img:*")
    magic, fetched_at, final, length, png = parse_value(redis.cmd("GET", key))
    assert (magic, final, length, png) == (b"IFS1", 1, len(data), data)
    assert t0 - 1000 <= fetched_at <= t1 + 1000, (t0, fetched_at, t1)
    pttl = redis.cmd("PTTL", key)
    assert final_ttl_s * 1000 - 60000 * TIME_FACTOR < pttl <= final_ttl_s * 1000, pttl

    assert read_file(img(b, 0)) == data
    assert read_file(img(c, 0)) == data
    assert count(api, target(0)) == 1
    for m in (b, c):
        s = stats(m)
        assert s["upstream"]["requests"] == 0, s
        assert set(s["shared"]) == {"up", "hits", "misses", "errors", "leases_won",
                                    "leases_waited", "invalid"}, s
        assert all(isinstance(v, int) for v in s["shared"].values()), s
        assert (s["shared"]["up"], s["shared"]["hits"], s["shared"]["leases_won"]) == (1, 1, 0), s
    # The version B made from the hit has the fetch's time, not the hit's.
    assert int(os.getxattr(img(b, 0), "user.insightfs.fetched_at")) == fetched_at

    assert b.unmount() == 0
    b2 = mount(path)
    assert read_file(img(b2, 0)) == data
    assert count(api, target(0)) == 1
    s = stats(b2)
    assert s["upstream"]["requests"] == 0 and s["shared"]["hits"] == 1, s


def test_no_shared_group_no_shared_stats(api, config, mount):
    """Without a `shared` group the stats have no "shared" object (SPEC 5)."""
    m = mount(config(body=DASHBOARDS))
    assert "shared" not in stats(m)


def test_unix_socket_and_db_index(api, redis, config, mount):
    """A mount on redis://HOST:PORT/2 and one on unix:/PATH?db=2 share one image: one
    request; the keys are in DB 2, none in DB 0."""
    a = mount(config(*shared_cfg(redis, url="redis://127.0.0.1:%d/2" % redis.port),
                     name="tcp.conf"))
    b = mount(config(*shared_cfg(redis, url="unix:%s?db=2" % redis.socket), name="unix.conf"))
    data = read_file(img(a, 0))
    wait_for(lambda: keys(redis, "insightfs:1:img:*", db=2), 5, "the value in DB 2")
    assert read_file(img(b, 0)) == data
    assert count(api, target(0)) == 1
    assert stats(b)["shared"]["hits"] == 1
    assert keys(redis, db=0) == []


# ---- live versions: once per live_ttl_s fleet-wide (SPEC 7, 13) ---------------------------

LIVE_TTL_S = 2


def test_live_image_refetched_once_per_ttl_fleet_wide(api, redis, config, mount):
    """live_ttl_s = 2: a live image (its range ends tomorrow) read on all 3 mounts in a
    loop for 5 s is fetched about every 2 s fleet-wide: 2-4 requests, each at least
    live_ttl_s after the one before (give or take 0.1 s). Its value carries final 0 and
    a PTTL of at most live_ttl_s."""
    ms = fleet(mount, config(*shared_cfg(redis, cache="  live_ttl_s = %d;" % LIVE_TTL_S)))
    now = int(time.time()) // 60 * 60000
    start, end = now - 3600000, now + 86400000
    tgt = image_target(DASH, WIDGET, start, end)
    paths = [m.path("web", "cpu", "%d-%d.png" % (start, end)) for m in ms]

    first = read_file(paths[0])
    assert first.startswith(PNG_SIG)
    (key,) = wait_for(lambda: keys(redis, "insightfs:1:img:*"), 5, "the live value")
    value = redis.cmd("GET", key)
    pttl = redis.cmd("PTTL", key)
    if value is not None:  # else it expired already (a very slow machine)
        assert parse_value(value)[2] == 0, value[:32]
        assert pttl <= LIVE_TTL_S * 1000, pttl

    t_end = time.monotonic() + 5.0
    reads = 1
    while time.monotonic() < t_end:
        for p in paths:
            data = bounded(lambda: read_file(p), D + 2, "a read of the live image")
            assert data == first  # the API renders the same range the same way
            reads += 1
        time.sleep(0.01)
    times = [e["t"] for e in api.requests() if e["target"] == tgt]
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    assert 2 <= len(times) <= 4, (len(times), gaps, reads)
    assert all(g >= LIVE_TTL_S - 0.1 for g in gaps), gaps


# ---- a remembered failure, fleet-wide (SPEC 6, 13) ------------------------------------------

def test_404_is_one_request_fleet_wide(api, redis, config, mount):
    """A configured widget the API does not know (404): read on A, B and C within
    error_ttl_s, ENOENT everywhere and exactly 1 request; the failure is in Redis under
    insightfs:1:err:<H> with a PTTL of at most error_ttl_s."""
    error_ttl_s = 30
    ms = fleet(mount, config(*shared_cfg(redis, cache="  error_ttl_s = %d;" % error_ttl_s)))
    for m in ms:
        assert bounded(lambda: stat_errno(img(m, 0, "gone")), D + 2, "a stat") == errno.ENOENT
    assert count(api, target(0, GONE)) == 1
    errs = keys(redis, "insightfs:1:err:*")
    assert len(errs) == 1, keys(redis)
    pttl = redis.cmd("PTTL", errs[0])
    assert 0 < pttl <= error_ttl_s * 1000, pttl
    assert keys(redis, "insightfs:1:img:*") == []


def test_breaker_fast_fail_is_never_shared(api, redis, config, mount):
    """SPEC 6: the circuit breaker's fast-fails are never stored in a shared cache. A
    hung API opens the breaker (three failed tries); the next name fails at once with
    no request, and Redis holds neither a failure nor a lease for it."""
    api_extra = "  timeout_ms = 500;\n  connect_timeout_ms = 250;\n  retries = 0;\n"
    m = mount(config(*shared_cfg(redis, api_extra=api_extra)))
    api.fault("hang", count=-1)
    for i in range(3):
        assert bounded(lambda: stat_errno(img(m, i)), 5, "a stat") == errno.ETIMEDOUT
    wait_for(lambda: stats(m)["upstream"]["down"] == 1, 5, "the breaker to open")
    n = len(api.requests())
    t0 = time.monotonic()
    assert bounded(lambda: stat_errno(img(m, 3)), 5, "a stat") == errno.ETIMEDOUT
    assert time.monotonic() - t0 < 0.2 * TIME_FACTOR
    assert len(api.requests()) == n
    h = cache_hash(api, DASH, WIDGET, *rng(3))
    assert "insightfs:1:err:" + h not in keys(redis), keys(redis)
    assert "insightfs:1:lease:" + h not in keys(redis), keys(redis)
    # Its key was asked for (the fleet is asked before the breaker): the check above is
    # about a name this mount really handled.
    assert shared_stats(m)["misses"] >= 4


# ---- a lease holder killed with -9 (SPEC 13, T25) ------------------------------------------

def test_lease_holder_killed_another_mount_takes_over(api, redis, config, mount):
    """Mount A takes the lease of an image the API holds for 60 s, and keeps it past its
    first 2 s (renewed every 500 ms); A is killed with SIGKILL; a read on B then succeeds
    with the API's bytes before D, within the lease's 2 s plus a fetch: 2 requests in all
    (A's and B's), and no lease is left."""
    a, b, c = fleet(mount, config(*shared_cfg(redis)))
    api.fault("latency", prefix=target(0), count=1, ms=60000)
    got = []

    def reader():
        try:
            got.append(read_file(img(a, 0)))
        except OSError as e:
            got.append(e.errno)
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    wait_for(lambda: count(api, target(0)) == 1, 5, "A's request")
    t_req = time.monotonic()
    (lease,) = wait_for(lambda: keys(redis, "insightfs:1:lease:*"), 5, "A's lease")
    holder = redis.cmd("GET", lease).decode(errors="replace")
    assert str(a.proc.pid) in holder and socket.gethostname() in holder, holder
    # Past the lease's own 2 s: it is still there, so A renews it.
    wait_monotonic(t_req + 2.5)
    assert keys(redis, "insightfs:1:lease:*") == [lease]
    assert 0 < redis.cmd("PTTL", lease) <= 2000

    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    t0 = time.monotonic()
    data = bounded(lambda: read_file(img(b, 0)), D + 2, "B's read")
    took = time.monotonic() - t0
    n = count(api, target(0))
    assert data == expected_png(api, target(0))
    assert n == 2, n
    assert took < D and took <= 2.0 + 1.0 * TIME_FACTOR, took
    s = shared_stats(b)
    assert s["leases_won"] == 1 and s["leases_waited"] >= 1, s
    wait_for(lambda: not keys(redis, "insightfs:1:lease:*"), 5, "B to release its lease")
    # A's reader got an error from the dead mount, not a hang.
    t.join(10 * TIME_FACTOR)
    assert not t.is_alive() and got == [errno.ECONNABORTED], got
    subprocess.run(["fusermount3", "-u", "-z", a.mnt], check=False)
    wait_for(lambda: not is_mounted(a.mnt), 10, "A's dead mount to go")


# ---- Redis killed, paused, restarted (SPEC 13, P1, T25) ------------------------------------

def test_redis_outages_never_fail_a_read(api, redis, config, mount):
    """Redis killed (SIGKILL), then restarted; then paused (SIGSTOP), then resumed. Meanwhile
    every read of a new image on every mount succeeds with the API's bytes within D + 1 s
    (direct fetch); stats shared.up goes to 0, and back to 1 once Redis answers again; each
    mount logs `shared cache unavailable: <reason>` at warn once per outage and `shared
    cache back` at info after it; once back, the mounts share again."""
    ms = fleet(mount, config(*shared_cfg(redis, timeout_ms=200)))
    read = {}  # index -> bytes read, checked against the API at the end
    nxt = [0]

    def read_new(m):
        i = nxt[0]
        nxt[0] += 1
        data, took = timed_read(img(m, i), D + 1)
        assert took <= (D + 1) * TIME_FACTOR, (i, took)
        read[i] = data
        return data

    def poll_up(m, want, what):
        deadline = time.monotonic() + 40 * TIME_FACTOR
        while True:
            read_new(m)
            if shared_stats(m)["up"] == want:
                return
            assert time.monotonic() < deadline, "timed out waiting for " + what
            time.sleep(0.2)

    def counts():
        return [(len(lines(m, UNAVAILABLE)), len(lines(m, BACK))) for m in ms]

    for m in ms:
        read_new(m)
    assert [shared_stats(m)["up"] for m in ms] == [1] * FLEET
    assert counts() == [(0, 0)] * FLEET

    for k, (stop, start) in enumerate(((redis.kill, redis.restart),
                                       (redis.pause, redis.resume)), 1):
        stop()
        for m in ms:
            poll_up(m, 0, "shared.up = 0 after Redis went (outage %d)" % k)
        for _ in range(3):  # more reads during the outage: no more warn lines
            for m in ms:
                read_new(m)
        start()
        for m in ms:
            poll_up(m, 1, "shared.up = 1 after Redis came back (outage %d)" % k)
        try:
            wait_for(lambda: counts() == [(k, k)] * FLEET, 5, "the log lines")
        finally:
            assert counts() == [(k, k)] * FLEET, [m.stderr() for m in ms]
        for m in ms:  # the warn line first, then the info line
            text = m.stderr()
            assert text.rindex(UNAVAILABLE) < text.rindex(BACK), text
        # Shared again: an image read on one mount costs the others nothing.
        i = nxt[0]
        read_new(ms[0])
        for m in ms[1:]:
            assert read_file(img(m, i)) == read[i]
        assert count(api, target(i)) == 1

    errors = [e for e in api.requests() if e["status"] != 200]
    assert errors == [], errors[:5]
    for i, data in sorted(read.items()):
        assert data == expected_png(api, target(i)), i


# ---- a corrupted value (SPEC 13, P3, T25) -----------------------------------------------

def _not_png(good):
    body = b"<html><body>not a graph</body></html>"
    return make_value(body, fetched_at=parse_value(good)[1])


def _wrong_length(good):
    magic, fetched_at, final, length, png = parse_value(good)
    return make_value(png, final=final, fetched_at=fetched_at, length=length + 1)


def _wrong_magic(good):
    return b"IFS0" + good[4:]


CORRUPT = [("not-png", _not_png), ("wrong-length", _wrong_length),
           ("wrong-magic", _wrong_magic)]


def test_corrupted_values_are_refetched(api, redis, config, mount):
    """After A stored an image, its value in Redis is overwritten with (a) a valid header
    and a body that is not a PNG, (b) the true PNG with a wrong length in the header,
    (c) a wrong magic. Each time a read on B gets the API's bytes with 1 new request, the
    bad value is deleted or replaced by a valid one, and B's shared.invalid counts it."""
    a, b, c = fleet(mount, config(*shared_cfg(redis)))
    for i, (what, corrupt) in enumerate(CORRUPT):
        before = set(keys(redis, "insightfs:1:img:*"))
        data = read_file(img(a, i))
        new = wait_for(lambda: set(keys(redis, "insightfs:1:img:*")) - before, 5,
                       "A's value in Redis")
        (key,) = new
        good = redis.cmd("GET", key)
        assert parse_value(good)[4] == data
        bad = corrupt(good)
        assert bad != good
        assert redis.cmd("SET", key, bad, "PX", 3600000) == "OK"

        got = bounded(lambda: read_file(img(b, i)), D + 2, "B's read")
        assert got == data, what
        assert count(api, target(i)) == 2, what
        wait_for(lambda: redis.cmd("GET", key) != bad, 5, "the bad value (%s) to go" % what)
        value = redis.cmd("GET", key)
        if value is not None:
            magic, _, final, length, png = parse_value(value)
            assert (magic, final, length, png) == (b"IFS1", 1, len(data), data), what
        assert shared_stats(b)["invalid"] == i + 1, what
    assert stats(b)["upstream"]["requests"] == len(CORRUPT)


# ---- the fleet's request rate (SPEC 13, T25) -------------------------------------------

FLEET_RPS = 5
RATE_IMAGES = 30 if SLOW_BUILD else 60


def test_fleet_rate_limit(api, redis, config, mount):
    """fleet_requests_per_second = 5 over 3 mounts and 60 cold images (20 per mount, read
    at once): all succeed with the API's bytes, one request each, and the local API's log
    never shows more than 6 image requests within one second of wall time (any window
    [w, w + 1 s)). The wait for a slot counts against D, so D here is 2 x 15 s."""
    api_extra = "  timeout_ms = 15000;\n  connect_timeout_ms = 2000;\n  retries = 1;\n"
    d = 30.0
    ms = fleet(mount, config(*shared_cfg(redis, api_extra=api_extra,
                                         fleet_requests_per_second=FLEET_RPS)))
    per = RATE_IMAGES // FLEET
    jobs = [(img(m, k * per + j),) for k, m in enumerate(ms) for j in range(per)]
    crowd = Crowd(read_file, jobs)
    crowd.release()
    results = crowd.join((d + 5) * TIME_FACTOR)
    log = image_requests(api)
    walls = sorted(e["wall"] for e in log)
    worst = max(sum(1 for w in walls[k:] if w < walls[k] + 1.0) for k in range(len(walls)))
    assert worst <= FLEET_RPS + 1, (worst, [round(w - walls[0], 3) for w in walls])
    assert len(log) == RATE_IMAGES and len({e["target"] for e in log}) == RATE_IMAGES, len(log)
    for k, r in enumerate(results):
        assert r == expected_png(api, target(k)), (k, r if not isinstance(r, bytes) else "")


# ---- secrets and key names (SPEC 13, P8) ------------------------------------------------

PASSWORD = "redis-pw-" + os.urandom(12).hex()


@pytest.mark.redis_password(PASSWORD)
def test_password_never_shown(api, redis, config, mount, tmp_path):
    """Redis with a password (password_file, 0600; log_level debug): the fleet works
    (one request for an image read on 3 mounts), and the password is in no mount's
    stderr, no /.insightfs/config, no /proc/PID/cmdline or environ of a daemon, no
    --check-config output; no Redis key or value holds the access key, the secret or
    the password. A wrong password: --check-config fails on shared.redis without
    showing it."""
    pwfile = str(tmp_path / "redis-password")
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(PASSWORD + "\n")
    top = 'log_level = "debug";\n'
    path = config(*shared_cfg(redis, top=top, password_file=pwfile,
                              fleet_requests_per_second=1))
    ms = fleet(mount, path)
    data = read_file(img(ms[0], 0))
    wait_for(lambda: keys(redis, "insightfs:1:img:*"), 5, "the value in Redis")
    for m in ms[1:]:
        assert read_file(img(m, 0)) == data
    assert stat_errno(img(ms[1], 0, "gone")) == errno.ENOENT
    assert count(api, target(0)) == 1
    assert [shared_stats(m)["up"] for m in ms] == [1] * FLEET

    secrets = [PASSWORD.encode(), api.secret_key.encode()]
    p = run(["--check-config", "--config", path])
    assert p.returncode == 0, p.stderr
    outputs = {"--check-config": p.stdout + p.stderr}
    for k, m in enumerate(ms):
        outputs["stderr %d" % k] = m.stderr().encode()
        view = bounded(lambda: read_file(m.path(".insightfs", "config")), 5, "the config")
        assert b"shared" in view and redis.url.encode() in view, view
        outputs["config %d" % k] = view
        for f in ("cmdline", "environ"):
            with open("/proc/%d/%s" % (m.proc.pid, f), "rb") as fh:
                outputs["%s %d" % (f, k)] = fh.read()
    for what, text in outputs.items():
        for s in secrets:
            assert s not in text, "a secret in " + what

    for key in keys(redis):
        assert api.access_key not in key and KEY_RE.fullmatch(key), key
        if redis.cmd("TYPE", key) == "string":
            value = redis.cmd("GET", key) or b""
            for s in secrets + [api.access_key.encode()]:
                assert s not in value, key

    wrong = "not-" + PASSWORD
    with open(pwfile, "w") as f:
        f.write(wrong + "\n")
    p = run(["--check-config", "--config", path])
    assert p.returncode == 1 and p.stdout == b"", (p.stdout, p.stderr)
    err = p.stderr.decode()
    assert re.fullmatch(r"insightfs: %s: shared\.redis: [^\n]+\n" % re.escape(path), err), err
    assert wrong not in err and PASSWORD not in err, err


def test_key_names(api, redis, config, mount):
    """Every key is insightfs:1:(img|lease|err|rate|done):<64 hex>: the image's is
    img:<H> and its failure's err:<H> with H the SHA-256 of SPEC 13 (endpoint, access
    key, dashboard, widget, start, end, mode, NUL-separated), a lease in flight is
    lease:<H>, the fleet rate's rate:<SHA-256 of endpoint NUL access key>."""
    # One try a second: the rate key (its GCRA state) lives about that long after a try.
    ms = fleet(mount, config(*shared_cfg(redis, cache="  error_ttl_s = 60;",
                                         fleet_requests_per_second=1)))
    data = read_file(img(ms[0], 0))
    assert bounded(lambda: stat_errno(img(ms[1], 1, "gone")), D + 2, "a stat") == errno.ENOENT
    h_img = cache_hash(api, DASH, WIDGET, *rng(0))
    h_err = cache_hash(api, DASH, GONE, *rng(1))
    h_high = cache_hash(api, DASH, WIDGET, *rng(2), mode="HIGH")
    assert read_file(ms[2].path("web", "cpu", "%d-%d@high.png" % rng(2)))
    # A lease in flight: the API holds image 3 for a while.
    api.fault("latency", prefix=target(3), count=1, ms=3000)
    t = threading.Thread(target=lambda: stat_errno(img(ms[0], 3)), daemon=True)
    t.start()
    wait_for(lambda: count(api, target(3)) == 1, 5, "the held request")
    h_lease = cache_hash(api, DASH, WIDGET, *rng(3))
    found = keys(redis)
    t.join((D + 2) * TIME_FACTOR)
    assert not t.is_alive()

    bad = [k for k in found if not KEY_RE.fullmatch(k)]
    assert bad == [], found
    want = {"insightfs:1:img:" + h_img, "insightfs:1:err:" + h_err,
            "insightfs:1:img:" + h_high, "insightfs:1:lease:" + h_lease,
            "insightfs:1:rate:" + rate_hash(api)}
    assert want <= set(found), (sorted(want - set(found)), found)
    assert parse_value(redis.cmd("GET", "insightfs:1:img:" + h_img))[4] == data
    # The held image, once fetched, is stored under the same H; still no other key form.
    wait_for(lambda: "insightfs:1:img:" + h_lease in keys(redis), 5, "the held image's value")
    final = keys(redis)
    assert [k for k in final if not KEY_RE.fullmatch(k)] == [], final
