"""The command line without a mount: --fetch, --discover, --check-config, --help,
--version and configuration errors, against the bundled local Cloud Insight API.

Every run asserts exact things: the bytes on stdout (equal to the local API's own
answer for the same request target), the exact stderr lines of SPEC sections 2 and 8,
the exit status, and the exact upstream requests from the local API's request log.
No run may print the secret key or the whole access key (checked after every test).
"""
import calendar
import email.utils
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import (DEFAULT_DASHBOARDS, ROOT, TIME_FACTOR, VALGRIND, bin_cmd, clean_env,
                      check_stderr, is_mounted, make_config, run, wait_for)
from client import API_PREFIX, DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, LocalAPI, image_target, now_ms
import certs

# A range every test may use: UTC 2024-12-01, a final day.
S, E = 1733011200000, 1733097600000
RANGE = "%d-%d.png" % (S, E)
WEB, CPU = "df_457958429047263232", "cpu_avg__1234"
CPU_TARGET = image_target(WEB, CPU, S, E)

STRERROR = {
    "EINVAL": "Invalid argument",
    "EACCES": "Permission denied",
    "ENOENT": "No such file or directory",
    "EAGAIN": "Resource temporarily unavailable",
    "ETIMEDOUT": "Connection timed out",
    "EIO": "Input/output error",
    "EISDIR": "Is a directory",
    "ENOTDIR": "Not a directory",
}

# ---- every run is checked for leaked credentials -------------------------------------

FORBIDDEN = [DEFAULT_SECRET_KEY.encode(), DEFAULT_ACCESS_KEY.encode()]
_outputs = []
_extra_forbidden = []


def forbid(secret):
    """Register another credential that no output of this test may contain."""
    _extra_forbidden.append(secret.encode())
    return secret


@pytest.fixture(autouse=True)
def no_credentials_printed():
    del _outputs[:]
    del _extra_forbidden[:]
    yield
    for args, out, err in _outputs:
        for secret in FORBIDDEN + _extra_forbidden:
            assert secret not in out, "stdout of %r holds a credential" % (args,)
            assert secret not in err, "stderr of %r holds a credential:\n%s" % (args, err)


def cli(*args, env=None, full_env=None, cwd=None, timeout=60):
    """Run insightfs; record its output for the credential check."""
    if full_env is not None:
        p = subprocess.run(bin_cmd(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=full_env, cwd=cwd, timeout=timeout * TIME_FACTOR)
    elif cwd is not None:
        p = subprocess.run(bin_cmd(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=clean_env(env), cwd=cwd, timeout=timeout * TIME_FACTOR)
    else:
        p = run(list(args), env=env, timeout=timeout)
    check_stderr(p.stderr.decode(errors="replace"))
    _outputs.append((args, p.stdout, p.stderr))
    return p


def timed_cli(*args, **kw):
    t0 = time.monotonic()
    p = cli(*args, **kw)
    return p, time.monotonic() - t0


# ---- helpers -----------------------------------------------------------------------------

def write_file(path, text, mode=0o600):
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(str(path), mode)
    return str(path)


def api_group(api, extra="", credentials=True, secret=None):
    text = 'api = {\n  endpoint = "%s";\n' % api.url
    if credentials:
        text += '  access_key = "%s";\n  secret_key = "%s";\n' % (
            api.access_key, secret or api.secret_key)
    return text + extra + "};\n"


def targets(api, prefix=API_PREFIX):
    return [e["target"] for e in api.requests(prefix)]


def expected_png(api, target, offset_ms=0):
    """The local API's own answer for target (call after reading its log)."""
    status, _, body = api.signed_get(target, timestamp=now_ms() + offset_ms)
    assert status == 200, (target, status, body[:200])
    assert body.startswith(b"\x89PNG\r\n\x1a\n")
    return body


def fetch_ok(api, cfg, path, target, env=None, offset_ms=0, stderr=b""):
    """--fetch path: exit 0, exactly one request with target, bytes equal to the API's."""
    api.clear_log()
    p = cli("--fetch", path, "--config", cfg, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stderr == stderr
    log = api.requests()
    assert [(e["target"], e["status"]) for e in log] == [(target, 200)]
    assert len(p.stdout) == log[0]["bytes"]
    assert p.stdout == expected_png(api, target, offset_ms)
    return p.stdout


def fetch_fails(api, cfg, path, errno_name, env=None):
    """--fetch path fails without upstream requests: the one message line, exit 1."""
    api.clear_log()
    p = cli("--fetch", path, "--config", cfg, env=env)
    assert p.returncode == 1
    assert p.stdout == b""
    assert p.stderr.decode() == "insightfs: %s: %s\n" % (path, STRERROR[errno_name])
    assert api.log() == []


def warn_line(target, status, code, msg, tries, errno_name, body=None):
    """A regex for SPEC 8's warn line; msg is a regex (re.escape a literal)."""
    return (r"insightfs: warn: upstream: GET %s: HTTP %s errorCode=%s \"%s\" after %d tries: %s%s\n"
            % (re.escape(target), status, re.escape(code), msg, tries, errno_name,
               "" if body is None else ' body="%s"' % re.escape(body)))


def escape64(data):
    """SPEC 8's body excerpt: the first 64 bytes, \\xNN outside printable ASCII, " and \\."""
    return "".join(chr(b) if 0x20 <= b < 0x7f and b not in (0x22, 0x5c) else "\\x%02x" % b
                   for b in data[:64])


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def early_in_a_second():
    """Wait until the wall clock is early in its second. A Date header has whole seconds,
    so a skew measured from it is exact only to +-0.5 s; with the local API's clock
    shifted by a whole number of seconds, answering 0.05-0.9 s into a second keeps the
    measurement (and the rounded number insightfs prints) away from the .5 boundary."""
    wait_for(lambda: 0.05 <= time.time() % 1 < 0.35, 2, "the start of a second")


def utc_ms(y, mo, d, h=0, mi=0, s=0):
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1000


def with_body(extra):
    return DEFAULT_DASHBOARDS + extra


# ---- --fetch: exact bytes and exact request targets ----------------------------------------

def test_fetch_epoch_range_exact_bytes_one_request(api, config):
    cfg = config()
    png = fetch_ok(api, cfg, "web/cpu/" + RANGE, CPU_TARGET)
    assert png[12:16] == b"IHDR"
    assert png[16:24] == (800).to_bytes(4, "big") + (600).to_bytes(4, "big")


def test_fetch_iso_forms_equal_epoch(api, config):
    cfg = config()
    want = fetch_ok(api, cfg, "web/cpu/" + RANGE, CPU_TARGET)
    for name in ("20241201T0000Z-20241202T0000Z.png", "20241201T000000Z-20241202T000000Z.png",
                 "20241201T0000Z-1733097600000.png", "1733011200000-20241202T000000Z.png"):
        assert fetch_ok(api, cfg, "web/cpu/" + name, CPU_TARGET) == want
    # Seconds count: one second later is another image.
    t = image_target(WEB, CPU, S + 1000, E)
    other = fetch_ok(api, cfg, "web/cpu/20241201T000001Z-20241202T0000Z.png", t)
    assert other != want


def test_fetch_resolution_suffixes(api, config):
    cfg = config()
    high_t = image_target(WEB, CPU, S, E, "HIGH")
    high = fetch_ok(api, cfg, "web/cpu/%d-%d@high.png" % (S, E), high_t)
    auto = fetch_ok(api, cfg, "web/cpu/%d-%d@auto.png" % (S, E), CPU_TARGET)
    assert high != auto
    # api.resolution sets the default; @auto still asks for AUTO.
    cfg_high = config('  resolution = "HIGH";\n', name="high.conf")
    assert fetch_ok(api, cfg_high, "web/cpu/" + RANGE, high_t) == high
    assert fetch_ok(api, cfg_high, "web/cpu/%d-%d@auto.png" % (S, E), CPU_TARGET) == auto


def test_fetch_by_ids_names_and_leading_slash(api, config):
    cfg = config()
    want = fetch_ok(api, cfg, "web/cpu/" + RANGE, CPU_TARGET)
    for path in ("/web/cpu/" + RANGE, "%s/%s/%s" % (WEB, CPU, RANGE), "web/%s/%s" % (CPU, RANGE),
                 "/%s/cpu/%s" % (WEB, RANGE), "//web//cpu/" + RANGE):
        assert fetch_ok(api, cfg, path, CPU_TARGET) == want
    # Integer-looking ids, a widget without a name (its name is its id), a name with a space.
    fetch_ok(api, cfg, "db/qps/" + RANGE, image_target("1000123", "555", S, E))
    fetch_ok(api, cfg, "1000123/555/" + RANGE, image_target("1000123", "555", S, E))
    fetch_ok(api, cfg, "db/disk_io__77/" + RANGE, image_target("1000123", "disk_io__77", S, E))
    fetch_ok(api, cfg, "web/network in/" + RANGE, image_target(WEB, "net_in__9012", S, E))


def test_fetch_escapes_ids_in_the_target(api, config):
    """SPEC 1: every id byte outside A-Z a-z 0-9 - . _ ~ is sent as %XX (uppercase)."""
    dash_id, widget_id = "d b/+~%", "w\u00e9:?#&"
    api.set_data([{"id": dash_id, "name": "odd", "widgets": [{"widgetId": widget_id, "name": "w"}]}])
    cfg = config(body='dashboards = ( { name = "odd"; id = "%s"; widgets = ( { name = "w"; '
                      'id = "%s"; } ); } );\n' % (dash_id, widget_id))
    target = (API_PREFIX + "/d%20b%2F%2B~%25/widgets/w%C3%A9%3A%3F%23%26"
              + "?startTime=%d&endTime=%d&widgetResolutionMode=AUTO" % (S, E))
    assert target == image_target(dash_id, widget_id, S, E)
    fetch_ok(api, cfg, "odd/w/" + RANGE, target)


def test_fetch_a_directory_is_eisdir(api, config):
    cfg = config()
    for path in ("/", "web", "/web/", "web/cpu", "%s/%s" % (WEB, CPU), "web/cpu/days",
                 "/web/cpu/days/", "db/disk_io__77"):
        fetch_fails(api, cfg, path, "EISDIR")


def test_fetch_an_image_with_a_trailing_slash_is_enotdir(api, config):
    cfg = config()
    for path in ("web/cpu/" + RANGE + "/", "web/cpu/days/2024-12-01.png/"):
        fetch_fails(api, cfg, path, "ENOTDIR")


INVALID_NAMES = [
    "web/cpu/../cpu/" + RANGE,
    "web/../web/cpu/" + RANGE,
    "../web/cpu/" + RANGE,
    "web/cpu/..",
    "nope/cpu/" + RANGE,
    "web/nope/" + RANGE,
    "web/cpu/nope.png",
    "web%2Fcpu/" + RANGE,
    "web/cpu%2F" + RANGE,
    "web/cpu/%d%%2D%d.png" % (S, E),
    "web/cpu/%d-%d.png" % (E, S),                      # start > end
    "web/cpu/%d-%d.png" % (S, S),                      # start == end
    "web/cpu/17330112000000-17330976000000.png",      # 14 digits
    "web/cpu/173301120000-173309760000.png",          # 12 digits
    "web/cpu/99999999999999999999-99999999999999999999.png",
    "web/cpu/last-9999999999h.png",                   # 10 digits
    "web/cpu/last-999999999w.png",                    # the start would be negative
    "web/cpu/last-01h.png",
    "web/cpu/last-0h.png",
    "web/cpu/last-1y.png",
    "web/cpu/last-1H.png",
    "web/cpu/Today.png",
    "web/cpu/" + RANGE + ".png",                       # .png.png
    "web/cpu/%d-%d.PNG" % (S, E),
    "web/cpu/%d-%d.jpg" % (S, E),
    "web/cpu/%d-%d" % (S, E),
    "web/cpu/%d-%d@HIGH.png" % (S, E),
    "web/cpu/%d-%d@low.png" % (S, E),
    "web/cpu/%d-%d@high@high.png" % (S, E),
    "web/cpu/%d-%d.png@high" % (S, E),
    "web/cpu/20241201t0000z-20241202t0000z.png",
    "web/cpu/20241301T0000Z-20241302T0000Z.png",      # month 13
    "web/cpu/20240230T0000Z-20240301T0000Z.png",      # February 30
    "web/cpu/20241201T000060Z-20241202T0000Z.png",    # second 60
    "web/cpu/19691231T2359Z-19700102T0000Z.png",      # before 1970
    "web/cpu/last-1h\n.png",
    "web/cpu/last-1h.png\r",
    "web/cpu/" + "1" * 251 + ".png",                   # 255 bytes, not a range
    "web/cpu/" + "a" * 256 + ".png",
    "web/" + "c" * 300 + "/" + RANGE,
    "web/cpu/days/2024-12-01.png/x",
    "web/cpu/%s/x" % RANGE,
    "web/cpu/x/y/" + RANGE,
    "web/cpu/days/" + RANGE,
    "web/cpu/days/2024-12-1.png",
    "web/cpu/days/2024-13-01.png",
    "web/cpu/days/2023-02-29.png",
    "web/cpu/days/20241201.png",
    "web/cpu/days/2024-12-01",
    "web/cpu/days/2024-12-01.png.png",
    "web/cpu/days/1969-12-31.png",
    "web/cpu/days/9999-12-31.png",                    # a future day
    "web/cpu/days/last-1h.png",
    ".insightfs/" + RANGE,
]


def test_fetch_invalid_names_enoent_without_requests(api, config):
    cfg = config()
    for path in INVALID_NAMES:
        fetch_fails(api, cfg, path, "ENOENT")
    # The same names, valid again, do reach the API: the checks above are not vacuous.
    fetch_ok(api, cfg, "web/cpu/" + RANGE, CPU_TARGET)
    fetch_ok(api, cfg, "web/cpu/days/2024-12-01.png", CPU_TARGET)


# ---- --fetch: relative windows against a known clock ---------------------------------------

# "Now" for these tests: 2024-12-03T12:34:56.789Z. With align_s = 3600, T = 12:00:00Z
# for the next 25 minutes of real time, so the windows below are exact.
FIXED_NOW = utc_ms(2024, 12, 3, 12, 34, 56) + 789
T_HOUR = utc_ms(2024, 12, 3, 12)
DEC2, DEC3, DEC4 = utc_ms(2024, 12, 2), utc_ms(2024, 12, 3), utc_ms(2024, 12, 4)


def fixed_clock(api):
    """Shift insightfs's clock and the local API's by the same offset; return (env, off)."""
    off = FIXED_NOW - now_ms()
    api.set_clock(off)
    return {"INSIGHTFS_TEST_CLOCK_OFFSET_MS": str(off)}, off


def shifted_warning(off):
    return ("insightfs: warn: INSIGHTFS_TEST_CLOCK_OFFSET_MS: the clock is shifted by %d ms "
            "(tests only)\n" % off).encode()


def test_relative_windows_with_a_known_clock(api, config):
    cfg = config(body=with_body("time = { align_s = 3600; };\n"))
    env, off = fixed_clock(api)
    warn = shifted_warning(off)

    def t(start, end, mode="AUTO"):
        return image_target(WEB, CPU, start, end, mode)

    cases = [
        ("last-1h.png", t(T_HOUR - 3600000, T_HOUR)),
        ("last-60m.png", t(T_HOUR - 3600000, T_HOUR)),
        ("last-2d@high.png", t(T_HOUR - 2 * 86400000, T_HOUR, "HIGH")),
        ("last-1w.png", t(T_HOUR - 604800000, T_HOUR)),
        ("today.png", t(DEC3, T_HOUR)),
        ("yesterday.png", t(DEC2, DEC3)),
        ("days/2024-12-02.png", t(DEC2, DEC3)),
        ("days/2024-12-03.png", t(DEC3, T_HOUR)),
        ("days/2024-12-03@high.png", t(DEC3, T_HOUR, "HIGH")),
        ("days/2024-11-01.png", t(utc_ms(2024, 11, 1), utc_ms(2024, 11, 2))),
    ]
    for name, target in cases:
        fetch_ok(api, cfg, "web/cpu/" + name, target, env=env, offset_ms=off, stderr=warn)
    # Tomorrow does not exist yet: ENOENT, no request.
    api.clear_log()
    p = cli("--fetch", "web/cpu/days/2024-12-04.png", "--config", cfg, env=env)
    assert p.returncode == 1 and p.stdout == b""
    assert p.stderr == warn + b"insightfs: web/cpu/days/2024-12-04.png: No such file or directory\n"
    assert api.log() == []


def test_today_ends_at_least_one_align_step_after_midnight(api, config):
    """today = [start of today, max(T, start of today + align_s)]: with align_s = 86400,
    T is midnight, so today ends a day later."""
    cfg = config(body=with_body("time = { align_s = 86400; };\n"))
    env, off = fixed_clock(api)
    target = image_target(WEB, CPU, DEC3, DEC4)
    fetch_ok(api, cfg, "web/cpu/today.png", target, env=env, offset_ms=off,
             stderr=shifted_warning(off))
    fetch_ok(api, cfg, "web/cpu/last-1d.png", image_target(WEB, CPU, DEC2, DEC3), env=env,
             offset_ms=off, stderr=shifted_warning(off))


def test_days_follow_the_configured_timezone(api, config):
    cfg = config(body=with_body('time = { align_s = 3600; timezone = "Asia/Seoul"; };\n'))
    env, off = fixed_clock(api)
    kst = 9 * 3600000
    cases = [
        ("days/2024-12-02.png", image_target(WEB, CPU, DEC2 - kst, DEC3 - kst)),
        ("today.png", image_target(WEB, CPU, DEC3 - kst, T_HOUR)),      # 21:34 KST on Dec 3
        ("days/2024-12-03.png", image_target(WEB, CPU, DEC3 - kst, T_HOUR)),
        ("yesterday.png", image_target(WEB, CPU, DEC2 - kst, DEC3 - kst)),
    ]
    for name, target in cases:
        fetch_ok(api, cfg, "web/cpu/" + name, target, env=env, offset_ms=off,
                 stderr=shifted_warning(off))


# ---- --fetch: every failure of the API ------------------------------------------------------

CURL_TEXT = r'[^"\n]+'
FAULTS = [
    # id, fault kind, its parameters, api settings, status, errorCode, message, tries, errno
    ("400", "status", {"status": 400}, "", "400", "100", re.escape("Bad Request"), 1, "EINVAL"),
    ("401", "status", {"status": 401}, "", "401", "200", re.escape("Authentication Failed"), 1,
     "EACCES"),
    ("403", "status", {"status": 403}, "", "403", "210", re.escape("Permission Denied"), 1,
     "EACCES"),
    ("404", "status", {"status": 404}, "", "404", "300", re.escape("Not Found"), 1, "ENOENT"),
    ("409", "status", {"status": 409}, "", "409", "900", re.escape("Unexpected Error"), 1, "EIO"),
    ("429", "status", {"status": 429}, "retries = 1;", "429", "410", re.escape("Throttle Limited"),
     2, "EAGAIN"),
    ("429-rate", "status", {"status": 429, "errorCode": "420", "message": "Rate Limited"},
     "retries = 1;", "429", "420", re.escape("Rate Limited"), 2, "EAGAIN"),
    ("429-quota", "status", {"status": 429, "errorCode": "400", "message": "Quota Exceeded"},
     "retries = 2;", "429", "400", re.escape("Quota Exceeded"), 1, "EAGAIN"),
    ("429-quota-int", "status", {"status": 429, "errorCode": 400, "message": "Quota Exceeded"},
     "retries = 2;", "429", "400", re.escape("Quota Exceeded"), 1, "EAGAIN"),
    ("500", "status", {"status": 500}, "retries = 1;", "500", "900", re.escape("Unexpected Error"),
     2, "EIO"),
    ("503", "status", {"status": 503}, "retries = 1;", "503", "500", re.escape("Endpoint Error"),
     2, "EIO"),
    ("504", "status", {"status": 504}, "retries = 0;", "504", "510", re.escape("Endpoint Timeout"),
     1, "EIO"),
    ("hang", "hang", {}, "timeout_ms = 300; retries = 0;", "-", "-", CURL_TEXT, 1, "ETIMEDOUT"),
    ("reset", "reset", {}, "retries = 1;", "-", "-", CURL_TEXT, 2, "EIO"),
    ("close", "close", {}, "retries = 0;", "-", "-", CURL_TEXT, 1, "EIO"),
    ("truncate", "truncate", {"bytes": 100}, "retries = 1;", "200", "-", CURL_TEXT, 2, "EIO"),
    ("truncate-rst", "truncate", {"bytes": 100, "rst": True}, "retries = 0;", "200", "-",
     CURL_TEXT, 1, "EIO"),
    ("stall", "stall", {"bytes": 10}, "timeout_ms = 300; retries = 0;", "200", "-", CURL_TEXT, 1,
     "EIO"),
    ("drip", "drip", {"bytes_per_s": 1}, "timeout_ms = 300; retries = 0;", "200", "-", CURL_TEXT,
     1, "EIO"),
    ("oversize", "oversize", {"bytes": 100000}, "max_image_bytes = 16384;", "200", "-",
     CURL_TEXT, 1, "EIO"),
    ("endless", "endless", {}, "max_image_bytes = 16384;", "200", "-", CURL_TEXT, 1, "EIO"),
    ("endless-close", "endless", {"chunked": False}, "max_image_bytes = 16384;", "200", "-",
     CURL_TEXT, 1, "EIO"),
    ("redirect", "redirect", {}, "", "302", "-", "", 1, "EIO"),
    ("redirect-301", "redirect", {"status": 301}, "", "301", "-", "", 1, "EIO"),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f[0] for f in FAULTS])
def test_fetch_fault(api, config, fault):
    _, kind, params, extra, status, code, msg, tries, errno_name = fault
    if VALGRIND:
        # Under valgrind curl's own start can take most of a 300 ms try, which then times
        # out before the fault shows (ETIMEDOUT for stall and drip): scale the tries.
        extra = extra.replace("timeout_ms = 300;", "timeout_ms = %d;" % (300 * TIME_FACTOR))
    cfg = config("  " + extra + "\n")
    api.fault(kind, count=-1, **params)
    path = "web/cpu/" + RANGE
    p, elapsed = timed_cli("--fetch", path, "--config", cfg)
    assert p.returncode == 1
    assert p.stdout == b""
    err = p.stderr.decode()
    want = (warn_line(CPU_TARGET, status, code, msg, tries, errno_name)
            + re.escape("insightfs: %s: %s\n" % (path, STRERROR[errno_name])))
    assert re.fullmatch(want, err), err
    log = api.requests()
    assert [e["target"] for e in log] == [CPU_TARGET] * tries
    assert all(e["fault"] == kind for e in log)
    assert elapsed < 5 * TIME_FACTOR


@pytest.mark.parametrize("kind,params", [
    ("notpng", {}),
    ("notpng", {"body": '{"dashboards": [], "note": "\\\\"}', "content_type": "application/json"}),
    ("nopngiend", {}),
], ids=["html", "json", "no-iend"])
def test_fetch_rejected_200_body_logged_escaped(api, config, kind, params):
    """A 200 that is not a valid PNG: EIO, never retried, the first 64 bytes in the log."""
    cfg = config("  retries = 2;\n")
    body = expected_png(api, CPU_TARGET)
    api.clear_log()
    if kind == "notpng":
        body = params.get("body", "<html><body><h1>Service maintenance</h1></body></html>\n").encode()
    else:
        body = body[:-12]
    api.fault(kind, count=-1, **params)
    path = "web/cpu/" + RANGE
    p = cli("--fetch", path, "--config", cfg)
    assert p.returncode == 1 and p.stdout == b""
    want = (warn_line(CPU_TARGET, "200", "-", re.escape("not a valid PNG"), 1, "EIO",
                      body=escape64(body))
            + re.escape("insightfs: %s: Input/output error\n" % path))
    assert re.fullmatch(want, p.stderr.decode()), p.stderr
    assert [(e["target"], e["status"], e["bytes"]) for e in api.requests()] == \
        [(CPU_TARGET, 200, len(body))]


def test_redirect_is_never_followed(api, config, tmp_path):
    other = LocalAPI().start(str(tmp_path / "other"))
    try:
        cfg = config()
        api.fault("redirect", count=-1, location=other.url + CPU_TARGET)
        p = cli("--fetch", "web/cpu/" + RANGE, "--config", cfg)
        assert p.returncode == 1 and p.stdout == b""
        assert p.stderr.decode().endswith("insightfs: web/cpu/%s: Input/output error\n" % RANGE)
        assert targets(api) == [CPU_TARGET]
        assert other.stats()["connections"] == 1  # the stats call itself
        assert other.log() == []
    finally:
        other.stop()


def test_fetch_endpoint_refused(tmp_path):
    class Closed:
        url = "http://127.0.0.1:%d" % free_port()
        access_key, secret_key = DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
    cfg = make_config(tmp_path / "c.conf", Closed, "  retries = 1;\n")
    p = cli("--fetch", "web/cpu/" + RANGE, "--config", cfg)
    assert p.returncode == 1 and p.stdout == b""
    want = (warn_line(CPU_TARGET, "-", "-", CURL_TEXT, 2, "EIO")
            + re.escape("insightfs: web/cpu/%s: Input/output error\n" % RANGE))
    assert re.fullmatch(want, p.stderr.decode()), p.stderr


# ---- retries ------------------------------------------------------------------------------

def test_retry_after_is_honoured(api, config):
    cfg = config("  timeout_ms = 3000;\n  retries = 2;\n")
    api.fault("status", count=1, status=503, retry_after="1")
    p = cli("--fetch", "web/cpu/" + RANGE, "--config", cfg)
    assert p.returncode == 0, p.stderr
    assert p.stderr == b""
    log = api.requests()
    assert [(e["target"], e["status"]) for e in log] == [(CPU_TARGET, 503), (CPU_TARGET, 200)]
    assert log[1]["t"] - log[0]["t"] >= 1.0
    assert p.stdout == expected_png(api, CPU_TARGET)


def test_retries_are_bounded(api, config):
    cfg = config("  timeout_ms = 2000;\n  retries = 2;\n")
    api.fault("status", count=-1, status=503)
    p = cli("--fetch", "web/cpu/" + RANGE, "--config", cfg)
    assert p.returncode == 1 and p.stdout == b""
    assert re.fullmatch(warn_line(CPU_TARGET, "503", "500", "Endpoint Error", 3, "EIO")
                        + re.escape("insightfs: web/cpu/%s: Input/output error\n" % RANGE),
                        p.stderr.decode()), p.stderr
    assert targets(api) == [CPU_TARGET] * 3
    # Then the API recovers: the next process succeeds with one request.
    api.clear_faults()
    fetch_ok(api, cfg, "web/cpu/" + RANGE, CPU_TARGET)


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_final_statuses_are_not_retried(api, config, status):
    cfg = config("  retries = 3;\n")
    api.fault("status", count=1, status=status)
    p = cli("--fetch", "web/cpu/" + RANGE, "--config", cfg)
    assert p.returncode == 1
    assert targets(api) == [CPU_TARGET]


@pytest.mark.parametrize("value,tries", [
    ("999999999", 3), ("-5", 3), ("abc", 3), ("1.5", 3), ("x" * 10000, 3),
    ("86400", 1), ("3600", 1), ("DATE+3600", 1),
], ids=["huge", "negative", "abc", "fraction", "10kB", "one-day", "one-hour", "date-in-an-hour"])
def test_hostile_retry_after_never_passes_the_deadline(api, config, value, tries):
    """Retry-After outside 0-86400 s (or not a number or date) is ignored; a valid one
    that would end after the deadline ends the call at once."""
    timeout_ms, retries = 1000, 2
    cfg = config("  timeout_ms = %d;\n  retries = %d;\n" % (timeout_ms, retries))
    if value == "DATE+3600":
        value = email.utils.formatdate(time.time() + 3600, usegmt=True)
    api.fault("status", count=-1, status=503, retry_after=value)
    p, elapsed = timed_cli("--fetch", "web/cpu/" + RANGE, "--config", cfg)
    assert elapsed < (timeout_ms * (retries + 1) / 1000 + 1) * TIME_FACTOR
    assert p.returncode == 1 and p.stdout == b""
    assert re.fullmatch(warn_line(CPU_TARGET, "503", "500", "Endpoint Error", tries, "EIO")
                        + re.escape("insightfs: web/cpu/%s: Input/output error\n" % RANGE),
                        p.stderr.decode()), p.stderr
    assert targets(api) == [CPU_TARGET] * tries


def test_retry_after_http_date(api, config):
    cfg = config("  timeout_ms = 3000;\n  retries = 1;\n")
    # Under valgrind insightfs needs about 2 s to send its first request: the date is put
    # 3 s further ahead so that the retry still has to wait for it.
    when = email.utils.formatdate(time.time() + (5 if VALGRIND else 2), usegmt=True)
    api.fault("status", count=1, status=429, retry_after=when)
    p = cli("--fetch", "web/cpu/" + RANGE, "--config", cfg)
    assert p.returncode == 0, p.stderr
    log = api.requests()
    assert [e["status"] for e in log] == [429, 200]
    assert log[1]["t"] - log[0]["t"] >= 0.9  # the date has whole seconds


def test_clock_skew_401_is_retried_with_the_gateways_clock(api, config):
    cfg = config("  retries = 0;\n")
    api.set_clock(600000)
    early_in_a_second()
    p = cli("--fetch", "web/cpu/" + RANGE, "--config", cfg)
    assert p.returncode == 0, p.stderr
    assert p.stderr == (b"insightfs: warn: local clock is 600 s behind the gateway (Date header): "
                        b"using the gateway's time\n")
    log = api.requests()
    assert [(e["target"], e["status"]) for e in log] == [(CPU_TARGET, 401), (CPU_TARGET, 200)]
    assert p.stdout == expected_png(api, CPU_TARGET, offset_ms=600000)


def test_clock_skew_ahead_is_named_too(api, config):
    cfg = config("  retries = 0;\n")
    api.set_clock(-600000)
    early_in_a_second()
    p = cli("--fetch", "web/cpu/" + RANGE, "--config", cfg)
    assert p.returncode == 0, p.stderr
    assert p.stderr == (b"insightfs: warn: local clock is 600 s ahead of the gateway "
                        b"(Date header): using the gateway's time\n")
    assert [e["status"] for e in api.requests()] == [401, 200]


def test_clock_skew_over_a_day_is_ignored(api, config):
    """An offset over 24 h is logged and ignored: the 401 stays, one request."""
    cfg = config("  retries = 2;\n")
    api.set_clock(90000 * 1000)
    early_in_a_second()
    path = "web/cpu/" + RANGE
    p = cli("--fetch", path, "--config", cfg)
    assert p.returncode == 1 and p.stdout == b""
    assert re.fullmatch(re.escape("insightfs: warn: local clock is 90000 s behind the gateway "
                                  "(Date header): over 24 h, ignored\n")
                        + warn_line(CPU_TARGET, "401", "200", "Authentication Failed", 1, "EACCES")
                        + re.escape("insightfs: %s: Permission denied\n" % path),
                        p.stderr.decode()), p.stderr
    assert targets(api) == [CPU_TARGET]
    check_fails(cfg, "local clock is 90000 s behind the gateway (limit 300 s): fix NTP")


def test_a_real_401_is_not_retried_for_skew(api, config):
    """A wrong secret with a correct clock: one request, EACCES."""
    cfg = config(secret=forbid("not-the-secret-0123456789"))
    p = cli("--fetch", "web/cpu/" + RANGE, "--config", cfg)
    assert p.returncode == 1 and p.stdout == b""
    assert re.fullmatch(warn_line(CPU_TARGET, "401", "200", "Authentication Failed", 1, "EACCES")
                        + re.escape("insightfs: web/cpu/%s: Permission denied\n" % RANGE),
                        p.stderr.decode()), p.stderr
    assert targets(api) == [CPU_TARGET]


# ---- --check-config -----------------------------------------------------------------------

def check(cfg, **kw):
    """--check-config: one line, on stdout on success and on stderr on failure."""
    p = cli("--check-config", "--config", cfg, **kw)
    out, err = (p.stdout, p.stderr) if p.returncode == 0 else (p.stderr, p.stdout)
    assert err == b"", (p.stdout, p.stderr)
    assert len(out.splitlines()) == 1 and out.endswith(b"\n"), (p.stdout, p.stderr)
    return p


def check_fails(cfg, message, **kw):
    p = check(cfg, **kw)
    assert p.returncode == 1
    assert p.stdout == b""
    assert p.stderr.decode() == "insightfs: %s: %s\n" % (cfg, message)
    return p


def test_check_config_ok(api, config):
    cfg = config()
    p = check(cfg)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == "insightfs: %s: OK (4 dashboards visible)\n" % cfg
    assert p.stderr == b""
    assert targets(api) == [API_PREFIX]
    # The count is the API's: a dataset of one dashboard gives 1.
    api.set_data([{"id": "only", "name": "only", "widgets": []}])
    assert check(cfg).stdout.decode() == "insightfs: %s: OK (1 dashboards visible)\n" % cfg


def test_check_config_relative_path_is_made_absolute(api, config, tmp_path):
    config()
    p = cli("--check-config", "--config", "insightfs.conf", cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == "insightfs: %s/insightfs.conf: OK (4 dashboards visible)\n" % tmp_path


def run_in_removed_cwd(tmp_path, args, env=None):
    """insightfs run with a current directory that was removed (getcwd fails)."""
    gone = tmp_path / ("gone-%d" % len(_outputs))
    gone.mkdir()
    p = subprocess.run(bin_cmd(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=clean_env(env), cwd=str(gone), preexec_fn=lambda: os.rmdir(str(gone)),
                       timeout=60 * TIME_FACTOR)
    assert not gone.exists()
    check_stderr(p.stderr.decode(errors="replace"))
    _outputs.append((args, p.stdout, p.stderr))
    return p


def test_relative_config_in_a_removed_current_directory(tmp_path):
    """SPEC 2: a relative configuration path that cannot be made absolute is one line
    on stderr and exit 1, not a silent failure (the file's existence does not matter)."""
    why = "relative to a current directory that cannot be read: No such file or directory"
    for args, env, named in [(("--check-config", "-c", "x.conf"), None, "x.conf"),
                             (("--fetch", "web/cpu/" + RANGE, "-c", "x.conf"), None, "x.conf"),
                             (("--discover",), {"INSIGHTFS_CONFIG": "y.conf"}, "y.conf")]:
        p = run_in_removed_cwd(tmp_path, args, env)
        assert (p.returncode, p.stdout) == (1, b""), (args, p.stderr)
        assert p.stderr.decode() == "insightfs: %s: %s\n" % (named, why), args


def test_check_config_needs_only_the_api_group(api, tmp_path):
    cfg = write_file(tmp_path / "api-only.conf", api_group(api))
    p = check(cfg)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == "insightfs: %s: OK (4 dashboards visible)\n" % cfg


def test_check_config_wrong_secret(api, config):
    cfg = config(secret=forbid("wrong-secret-key-9876543210"))
    check_fails(cfg, "authentication failed: wrong access_key or secret_key (errorCode 200)")
    assert targets(api) == [API_PREFIX]


def test_check_config_wrong_access_key(api, config):
    cfg = config(access=forbid("SOMEOTHERACCESSKEY0002"))
    check_fails(cfg, "authentication failed: wrong access_key or secret_key (errorCode 200)")


def test_check_config_permission_denied(api, config):
    cfg = config()
    api.fault("status", count=-1, status=401, errorCode="210", message="Permission Denied")
    check_fails(cfg, "permission denied for this key (errorCode 210)")
    assert targets(api) == [API_PREFIX]
    api.clear_faults()
    api.fault("status", count=-1, status=403, errorCode=210)
    check_fails(cfg, "permission denied for this key (errorCode 210)")


@pytest.mark.parametrize("offset_ms,word", [(600000, "behind"), (-600000, "ahead of")])
def test_check_config_clock_skew(api, config, offset_ms, word):
    """Gateway ahead of us means our clock is behind."""
    cfg = config()
    api.set_clock(offset_ms)
    early_in_a_second()
    check_fails(cfg, "local clock is 600 s %s the gateway (limit 300 s): fix NTP" % word)


def test_check_config_small_skew_is_ok(api, config):
    cfg = config()
    api.set_clock(120000)
    p = check(cfg)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == "insightfs: %s: OK (4 dashboards visible)\n" % cfg


def test_check_config_unreachable(tmp_path):
    port = free_port()

    class Closed:
        url = "http://127.0.0.1:%d" % port
        access_key, secret_key = DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
    cfg = make_config(tmp_path / "c.conf", Closed, "  retries = 0;\n")
    p = check(cfg)
    assert p.returncode == 1 and p.stdout == b""
    assert re.fullmatch(re.escape("insightfs: %s: endpoint unreachable: " % cfg)
                        + r"[^\n]*127\.0\.0\.1 port %d[^\n]*\n" % port, p.stderr.decode()), p.stderr


def test_check_config_timeout_is_unreachable(api, config):
    cfg = config("  timeout_ms = 300;\n  retries = 0;\n")
    api.fault("hang", count=-1)
    p, elapsed = timed_cli("--check-config", "--config", cfg)
    assert p.returncode == 1 and p.stdout == b""
    assert re.fullmatch(re.escape("insightfs: %s: endpoint unreachable: " % cfg) + r"[^\n]+\n",
                        p.stderr.decode()), p.stderr
    assert elapsed < 2 * TIME_FACTOR  # D = 300 ms, plus a process start


def test_check_config_unexpected_answer(api, config):
    cfg = config("  retries = 1;\n")
    api.fault("status", count=-1, status=500)
    check_fails(cfg, "unexpected answer: HTTP 500")
    assert targets(api) == [API_PREFIX] * 2
    api.clear_faults()
    api.fault("status", count=-1, status=404)
    check_fails(cfg, "unexpected answer: HTTP 404")
    api.clear_faults()
    api.fault("notpng", count=-1)
    check_fails(cfg, "unexpected answer: HTTP 200")


@pytest.fixture(scope="module")
def test_certs(tmp_path_factory):
    return certs.make_certs(str(tmp_path_factory.mktemp("certs")))


@pytest.mark.parametrize("which,with_ca,reason", [
    ("unknown_ca", False, "unable to get local issuer certificate"),
    ("unknown_ca", True, "unable to get local issuer certificate"),
    ("valid", False, "unable to get local issuer certificate"),
    ("wrong_host", True, "no alternative certificate subject name matches target host name "
                         "'127.0.0.1'"),
    ("expired", True, "certificate has expired"),
])
def test_check_config_tls_failures(tmp_path, test_certs, which, with_ca, reason):
    api = LocalAPI().start(str(tmp_path / "tlsapi"), tls=getattr(test_certs, which))
    try:
        extra = '  ca_file = "%s";\n' % test_certs.ca if with_ca else ""
        cfg = make_config(tmp_path / "tls.conf", api, extra)
        p = check(cfg)
        assert p.returncode == 1 and p.stdout == b""
        assert re.fullmatch(re.escape("insightfs: %s: TLS verification failed: " % cfg)
                            + r"[^\n]*" + re.escape(reason)
                            + re.escape(" (api.ca_file adds a CA)\n"), p.stderr.decode()), p.stderr
        # --fetch: EIO, one try (TLS failures are never retried).
        p = cli("--fetch", "web/cpu/" + RANGE, "--config", cfg)
        assert p.returncode == 1 and p.stdout == b""
        assert re.fullmatch(warn_line(CPU_TARGET, "-", "-", r"[^\"\n]*" + re.escape(reason), 1,
                                      "EIO")
                            + re.escape("insightfs: web/cpu/%s: Input/output error\n" % RANGE),
                            p.stderr.decode()), p.stderr
        # No request bytes reached the server.
        assert api.log() == []
        assert api.stats()["requests"] == 0
    finally:
        api.stop()


def test_https_with_the_test_ca(tmp_path, test_certs):
    api = LocalAPI().start(str(tmp_path / "tlsapi"), tls=test_certs.valid)
    try:
        assert api.url.startswith("https://127.0.0.1:")
        cfg = make_config(tmp_path / "tls.conf", api, '  ca_file = "%s";\n' % test_certs.ca)
        p = check(cfg)
        assert p.returncode == 0, p.stderr
        assert p.stdout.decode() == "insightfs: %s: OK (4 dashboards visible)\n" % cfg
        fetch_ok(api, cfg, "web/cpu/" + RANGE, CPU_TARGET)
        # A relative ca_file is relative to the configuration's folder.
        os.symlink(test_certs.ca, str(tmp_path / "ca.pem"))
        cfg2 = make_config(tmp_path / "tls2.conf", api, '  ca_file = "ca.pem";\n')
        assert check(cfg2).returncode == 0
    finally:
        api.stop()


# ---- --discover ---------------------------------------------------------------------------

DISCOVERED_DEFAULT = """dashboards = (
  { name = "web"; id = "df_457958429047263232";
    widgets = (
      { name = "cpu"; id = "cpu_avg__1234"; },
      { name = "memory"; id = "mem_used__5678"; },
      { name = "network in"; id = "net_in__9012"; }
    ); },
  { name = "db"; id = "1000123";
    widgets = (
      { name = "qps"; id = "555"; },
      { name = "disk_io__77"; id = "disk_io__77"; }
    ); },
  { name = "empty"; id = "df_empty";
    widgets = (); },
  { name = "we_ird_.name"; id = "df_weird";
    widgets = (
      { name = "a_b"; id = "w1"; },
      { name = "w2"; id = "w2"; }
    ); }
);
"""


def discover(api, cfg):
    api.clear_log()
    p = cli("--discover", "--config", cfg)
    assert p.returncode == 0, p.stderr
    assert p.stderr == b""
    return p.stdout.decode()


def test_discover_default_dataset_exact(api, tmp_path):
    cfg = write_file(tmp_path / "api.conf", api_group(api))
    assert discover(api, cfg) == DISCOVERED_DEFAULT
    assert targets(api) == [API_PREFIX] + [API_PREFIX + "/%s/widgets" % d for d in
                                           (WEB, "1000123", "df_empty", "df_weird")]


def test_discover_output_loads_and_serves(api, tmp_path):
    cfg = write_file(tmp_path / "api.conf", api_group(api))
    text = discover(api, cfg)
    full = write_file(tmp_path / "full.conf", api_group(api) + text)
    p = check(full)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == "insightfs: %s: OK (4 dashboards visible)\n" % full
    fetch_ok(api, full, "we_ird_.name/a_b/" + RANGE, image_target("df_weird", "w1", S, E))
    fetch_ok(api, full, "we_ird_.name/w2/" + RANGE, image_target("df_weird", "w2", S, E))
    fetch_ok(api, full, "db/disk_io__77/" + RANGE, image_target("1000123", "disk_io__77", S, E))
    fetch_fails(api, full, "empty", "EISDIR")
    fetch_fails(api, full, "empty/x/" + RANGE, "ENOENT")


def test_discover_sanitizes_and_escapes(api, tmp_path):
    long_name = "\u00e9" * 150                       # 300 bytes: cut to 200 at a boundary
    dataset = [
        {"id": "q1", "name": 'say "hi" \\ ok', "widgets": [
            {"widgetId": "x1", "name": ".hidden"},
            {"widgetId": "x2", "name": "tab\there\x7fdel\nnl"},
            {"widgetId": "x3", "name": "dup"},
            {"widgetId": "x4", "name": "dup"},
            {"widgetId": "x5", "name": ""},
            {"widgetId": 77, "name": None, "extra": [1, 2]},
            {"widgetId": "x7", "name": "x1"},          # equals a sibling's id
            {"widgetId": "x8", "name": "nul\u0000byte"},
        ]},
        {"id": 42, "name": long_name, "widgets": []},
        {"id": "q3", "widgets": [{"widgetId": "w", "name": "\u2603 snow/man"}]},
        {"id": "q4", "name": "/", "widgets": []},
    ]
    api.set_data(dataset)
    cfg = write_file(tmp_path / "api.conf", api_group(api))
    text = discover(api, cfg)
    assert text == (
        'dashboards = (\n'
        '  { name = "say \\"hi\\" \\\\ ok"; id = "q1";\n'
        '    widgets = (\n'
        '      { name = "_hidden"; id = "x1"; },\n'
        '      { name = "tab_here_del_nl"; id = "x2"; },\n'
        '      { name = "dup"; id = "x3"; },\n'
        '      { name = "dup (x4)"; id = "x4"; },\n'
        '      { name = "x5"; id = "x5"; },\n'
        '      { name = "77"; id = "77"; },\n'
        '      { name = "x1 (x7)"; id = "x7"; },\n'
        '      { name = "nul_byte"; id = "x8"; }\n'
        '    ); },\n'
        '  { name = "%s"; id = "42";\n'
        '    widgets = (); },\n'
        '  { name = "q3"; id = "q3";\n'
        '    widgets = (\n'
        '      { name = "\u2603 snow_man"; id = "w"; }\n'
        '    ); },\n'
        '  { name = "_"; id = "q4";\n'
        '    widgets = (); }\n'
        ');\n' % ("\u00e9" * 100))
    full = write_file(tmp_path / "full.conf", api_group(api) + text)
    p = check(full)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == "insightfs: %s: OK (4 dashboards visible)\n" % full
    fetch_ok(api, full, 'say "hi" \\ ok/dup (x4)/' + RANGE, image_target("q1", "x4", S, E))
    fetch_ok(api, full, "q3/\u2603 snow_man/" + RANGE, image_target("q3", "w", S, E))


def test_discover_name_equal_to_a_later_sibling_id_still_loads(api, tmp_path):
    # "beta" is the name of the first dashboard and the id of the second: the
    # configuration forbids a name equal to a sibling's id, so the name is suffixed.
    api.set_data([{"id": "alpha", "name": "beta", "widgets": [
                       {"widgetId": "w1", "name": "w2"}, {"widgetId": "w2", "name": "x"}]},
                  {"id": "beta", "name": "gamma", "widgets": []}])
    cfg = write_file(tmp_path / "api.conf", api_group(api))
    text = discover(api, cfg)
    assert text == (
        'dashboards = (\n'
        '  { name = "beta (alpha)"; id = "alpha";\n'
        '    widgets = (\n'
        '      { name = "w2 (w1)"; id = "w1"; },\n'
        '      { name = "x"; id = "w2"; }\n'
        '    ); },\n'
        '  { name = "gamma"; id = "beta";\n'
        '    widgets = (); }\n'
        ');\n')
    full = write_file(tmp_path / "full.conf", api_group(api) + text)
    p = check(full)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == "insightfs: %s: OK (2 dashboards visible)\n" % full
    fetch_ok(api, full, "beta (alpha)/w2 (w1)/" + RANGE, image_target("alpha", "w1", S, E))


def test_discover_suffixed_names_fit_255_bytes(api, tmp_path):
    # Two siblings named 200 x "a", the second with a 93-byte id: " (<id>)" appended whole
    # made a 296-byte name, which the loader refuses (names are 1-255 bytes, NAME_MAX too).
    # The base is cut to make room; the id stays whole.
    long_id = "i" * 93
    a200 = "a" * 200
    api.set_data([{"id": "d1", "name": a200, "widgets": [
                       {"widgetId": "w1", "name": a200}, {"widgetId": long_id, "name": a200}]},
                  {"id": long_id, "name": a200, "widgets": []}])
    cfg = write_file(tmp_path / "api.conf", api_group(api))
    text = discover(api, cfg)
    cut = "a" * (255 - 96) + " (" + long_id + ")"
    assert len(cut) == 255
    assert text == (
        'dashboards = (\n'
        '  { name = "%s"; id = "d1";\n'
        '    widgets = (\n'
        '      { name = "%s"; id = "w1"; },\n'
        '      { name = "%s"; id = "%s"; }\n'
        '    ); },\n'
        '  { name = "%s"; id = "%s";\n'
        '    widgets = (); }\n'
        ');\n' % (a200, a200, cut, long_id, cut, long_id))
    full = write_file(tmp_path / "full.conf", api_group(api) + text)
    p = check(full)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == "insightfs: %s: OK (2 dashboards visible)\n" % full
    fetch_ok(api, full, "%s/%s/%s" % (a200, cut, RANGE), image_target("d1", long_id, S, E))


def test_discover_no_dashboards(api, tmp_path):
    api.set_data([])
    cfg = write_file(tmp_path / "api.conf", api_group(api))
    text = discover(api, cfg)
    assert text == "dashboards = ();\n"
    full = write_file(tmp_path / "full.conf", api_group(api) + text)
    p = check(full)
    assert p.stdout.decode() == "insightfs: %s: OK (0 dashboards visible)\n" % full


def test_discover_leaves_out_ids_nothing_can_address(api, tmp_path):
    # "." and ".." cannot be path segments of a request, and no configuration may name an
    # id with a control character: such entries are left out with one warn line per list,
    # and the rest is printed, loads and serves (one of them failed the whole run before).
    api.set_data([{"id": ".", "name": "dot", "widgets": [{"widgetId": "w", "name": "w"}]},
                  {"id": "ok", "name": "", "widgets": [
                      {"widgetId": "..", "name": "up"}, {"widgetId": "a\x01b", "name": "ctl"},
                      {"widgetId": "...", "name": "."}]},
                  {"id": "c\x7f", "name": "del", "widgets": []}])
    cfg = write_file(tmp_path / "api.conf", api_group(api))
    api.clear_log()
    p = cli("--discover", "--config", cfg)
    assert p.returncode == 0, p.stderr
    text = p.stdout.decode()
    assert text == (
        'dashboards = (\n'
        '  { name = "ok"; id = "ok";\n'
        '    widgets = (\n'
        '      { name = "_"; id = "..."; }\n'
        '    ); }\n'
        ');\n')
    why = ('entr%s left out (an id that is empty, "." or "..", or has a control character, can be '
           'neither asked for nor configured)')
    assert p.stderr.decode() == (
        "insightfs: warn: upstream: GET %s: 2 %s\n" % (API_PREFIX, why % "ies") +
        "insightfs: warn: upstream: GET %s/ok/widgets: 2 %s\n" % (API_PREFIX, why % "ies"))
    assert targets(api) == [API_PREFIX, API_PREFIX + "/ok/widgets"]
    full = write_file(tmp_path / "full.conf", api_group(api) + text)
    p = check(full)  # its one line only
    assert p.stdout.decode() == "insightfs: %s: OK (1 dashboards visible)\n" % full
    fetch_ok(api, full, "ok/_/" + RANGE, image_target("ok", "...", S, E))


def test_discover_failure(api, tmp_path):
    cfg = write_file(tmp_path / "api.conf", api_group(api, "  retries = 0;\n"))
    api.fault("status", count=-1, prefix=API_PREFIX + "/df_empty", status=404)
    p = cli("--discover", "--config", cfg)
    assert p.returncode == 1 and p.stdout == b""
    lines = p.stderr.decode().splitlines()
    assert lines[-1].startswith("insightfs: ")
    assert re.fullmatch(warn_line(API_PREFIX + "/df_empty/widgets", "404", "300", "Not Found", 1,
                                  "ENOENT"), lines[0] + "\n"), p.stderr


def test_fetch_through_discovery(api, tmp_path):
    """discover = true: names the API gives work in --fetch without being configured."""
    cfg = write_file(tmp_path / "disc.conf", api_group(api) + "discover = true;\n")
    api.clear_log()
    p = cli("--fetch", "we_ird_.name/a_b/" + RANGE, "--config", cfg)
    assert p.returncode == 0, p.stderr
    target = image_target("df_weird", "w1", S, E)
    image_requests = [t for t in targets(api) if "?" in t]
    assert image_requests == [target]
    assert p.stdout == expected_png(api, target)
    fetch_fails(api, write_file(tmp_path / "nodisc.conf", api_group(api) + "dashboards = ();\n"),
                "we_ird_.name/a_b/" + RANGE, "ENOENT")


def test_fetch_lists_only_what_its_path_walks(api, tmp_path):
    """--fetch resolves as the mount's LOOKUPs do: an unknown dashboard lists the
    dashboards, then only that dashboard's widgets; another dashboard's failing widget
    list does not fail the path (two list requests, then the image)."""
    cfg = write_file(tmp_path / "disc.conf", api_group(api, "  retries = 0;\n")
                     + "discover = true;\n")
    api.fault("status", count=-1, prefix=API_PREFIX + "/df_empty", status=404)
    api.clear_log()
    p = cli("--fetch", "we_ird_.name/a_b/" + RANGE, "--config", cfg)
    assert p.returncode == 0, p.stderr
    target = image_target("df_weird", "w1", S, E)
    assert targets(api) == [API_PREFIX, API_PREFIX + "/df_weird/widgets", target]
    assert p.stdout == expected_png(api, target)


def test_fetch_through_failed_discovery_is_not_enoent(api, tmp_path):
    """With discover = true, an unknown name while the dashboard list fails gets the
    list's errno, never ENOENT; configured names need no list call."""
    cfg = write_file(tmp_path / "disc.conf", api_group(api, "  retries = 0;\n")
                     + DEFAULT_DASHBOARDS + "discover = true;\n")
    api.fault("status", count=-1, prefix=API_PREFIX, status=503)
    path = "we_ird_.name/a_b/" + RANGE
    p = cli("--fetch", path, "--config", cfg)
    assert p.returncode == 1 and p.stdout == b""
    assert re.fullmatch(warn_line(API_PREFIX, "503", "500", "Endpoint Error", 1, "EIO")
                        + re.escape("insightfs: %s: Input/output error\n" % path),
                        p.stderr.decode()), p.stderr
    assert targets(api) == [API_PREFIX]
    # A configured name goes straight to its image.
    api.clear_log()
    p = cli("--fetch", "web/cpu/" + RANGE, "--config", cfg)
    assert p.returncode == 1
    assert targets(api) == [CPU_TARGET]
    api.clear_faults()
    fetch_ok(api, cfg, "web/cpu/" + RANGE, CPU_TARGET)


# ---- configuration errors -----------------------------------------------------------------

def config_fails(api, args, line):
    p = cli(*args)
    assert p.returncode == 1
    assert p.stdout == b""
    assert p.stderr.decode() == line + "\n"
    assert api.log() == []


MODES = [("--fetch", "web/cpu/" + RANGE), ("--check-config",), ("--discover",)]


@pytest.mark.parametrize("mode", MODES, ids=["fetch", "check", "discover"])
def test_config_errors_one_line(api, tmp_path, mode):
    def conf(name, text, mode=0o600):
        return write_file(tmp_path / name, text, mode)

    unknown = conf("unknown.conf", api_group(api, "  timeout = 5;\n") + DEFAULT_DASHBOARDS)
    config_fails(api, mode + ("--config", unknown),
                 "insightfs: %s:5: api.timeout: unknown setting" % unknown)
    rng = conf("range.conf", api_group(api, "  retries = 11;\n") + DEFAULT_DASHBOARDS)
    config_fails(api, mode + ("--config", rng),
                 "insightfs: %s:5: api.retries: 11 is out of range (0-10)" % rng)
    syntax = conf("syntax.conf", "api = { endpoint = ; };\n")
    config_fails(api, mode + ("--config", syntax), "insightfs: %s:1: syntax error" % syntax)
    loose = conf("loose.conf", api_group(api) + DEFAULT_DASHBOARDS, 0o644)
    config_fails(api, mode + ("--config", loose),
                 "insightfs: %s: api.secret_key: %s is accessible by group or others (mode 0644): "
                 "run chmod 600 %s" % (loose, loose, loose))
    missing = str(tmp_path / "missing.conf")
    config_fails(api, mode + ("--config", missing),
                 "insightfs: %s: No such file or directory" % missing)


def test_config_error_forms(api, tmp_path):
    path = "web/cpu/" + RANGE

    def conf(name, text, mode=0o600):
        return write_file(tmp_path / name, text, mode)

    for name, text, line in [
        ("include.conf", '@include "other.conf"\n' + api_group(api) + DEFAULT_DASHBOARDS,
         "1: @include is not allowed: put every setting in this file"),
        ("dup-setting.conf", api_group(api, "  retries = 1;\n  retries = 2;\n")
         + DEFAULT_DASHBOARDS, "6: duplicate setting name"),
        ("type.conf", api_group(api, '  timeout_ms = "5";\n') + DEFAULT_DASHBOARDS,
         "5: api.timeout_ms: must be an integer, not a string"),
        ("empty-secret.conf", api_group(api, secret=" ").replace('" "', '""')
         + DEFAULT_DASHBOARDS, "4: api.secret_key: is empty"),
    ]:
        f = conf(name, text)
        config_fails(api, ("--fetch", path, "--config", f), "insightfs: %s:%s" % (f, line))
    # A setting nested in a list names its libconfig path.
    bad = conf("dup.conf", api_group(api) + 'dashboards = (\n  { name = "a"; id = "1"; widgets = (\n'
               '    { name = "x"; id = "w"; },\n    { name = "x"; id = "v"; } ); }\n);\n')
    p = cli("--fetch", path, "--config", bad)
    assert p.returncode == 1 and p.stdout == b""
    assert re.fullmatch(re.escape("insightfs: %s:9: dashboards.[0].widgets.[1].name: " % bad)
                        + r"[^\n]+\n", p.stderr.decode()), p.stderr
    # --fetch needs dashboards (or discover = true); the API modes do not.
    nodash = conf("nodash.conf", api_group(api))
    p = cli("--fetch", path, "--config", nodash)
    assert p.returncode == 1 and p.stdout == b""
    assert re.fullmatch(re.escape("insightfs: %s: dashboards: " % nodash) + r"[^\n]+\n",
                        p.stderr.decode()), p.stderr
    # Out of range relative to another setting.
    rel = conf("rel.conf", api_group(api, "  timeout_ms = 1000;\n  connect_timeout_ms = 2000;\n")
               + DEFAULT_DASHBOARDS)
    p = cli("--fetch", path, "--config", rel)
    assert p.returncode == 1 and p.stdout == b""
    assert re.fullmatch(re.escape("insightfs: %s:6: api.connect_timeout_ms: " % rel)
                        + r"[^\n]+\n", p.stderr.decode()), p.stderr
    # http:// is only for loopback.
    remote = conf("remote.conf", 'api = { endpoint = "http://example.com"; access_key = "A"; '
                  'secret_key = "%s"; };\n' % DEFAULT_SECRET_KEY + DEFAULT_DASHBOARDS)
    p = cli("--fetch", path, "--config", remote)
    assert p.returncode == 1 and p.stdout == b""
    assert re.fullmatch(re.escape("insightfs: %s:1: api.endpoint: " % remote) + r"[^\n]*https[^\n]*\n",
                        p.stderr.decode()), p.stderr
    assert api.log() == []


def test_symlinks_to_secrets_are_refused(api, tmp_path):
    path = "web/cpu/" + RANGE
    real = write_file(tmp_path / "real.conf", api_group(api) + DEFAULT_DASHBOARDS)
    link = str(tmp_path / "link.conf")
    os.symlink(real, link)
    p = cli("--fetch", path, "--config", link)
    assert p.returncode == 1 and p.stdout == b""
    assert re.fullmatch(re.escape("insightfs: %s: " % link) + r"[^\n]*symbolic link[^\n]*\n",
                        p.stderr.decode()), p.stderr

    secret = write_file(tmp_path / "secret", api.secret_key + "\n")
    os.symlink(secret, str(tmp_path / "secret-link"))
    body = ('  access_key = "%s";\n  secret_key_file = "secret-link";\n' % api.access_key)
    cfg = write_file(tmp_path / "c.conf", api_group(api, body, credentials=False)
                     + DEFAULT_DASHBOARDS)
    p = cli("--fetch", path, "--config", cfg)
    assert p.returncode == 1 and p.stdout == b""
    assert p.stderr.decode() == ("insightfs: %s: api.secret_key_file: %s/secret-link is a symbolic "
                                 "link (name the file itself)\n" % (cfg, tmp_path))
    assert api.log() == []


def test_secret_key_file(api, tmp_path):
    """secret_key_file, relative to the configuration's folder, one \\r\\n dropped; a
    configuration without a secret in it may be 0644; a loose secret file is refused."""
    write_file(tmp_path / "secret", api.secret_key + "\r\n")
    body = '  access_key = "%s";\n  secret_key_file = "secret";\n' % api.access_key
    cfg = write_file(tmp_path / "c.conf", api_group(api, body, credentials=False)
                     + DEFAULT_DASHBOARDS, 0o644)
    fetch_ok(api, cfg, "web/cpu/" + RANGE, CPU_TARGET)
    os.chmod(str(tmp_path / "secret"), 0o640)
    api.clear_log()
    p = cli("--fetch", "web/cpu/" + RANGE, "--config", cfg)
    assert p.returncode == 1 and p.stdout == b""
    assert p.stderr.decode().endswith(": run chmod 600 %s/secret\n" % tmp_path), p.stderr
    assert len(p.stderr.splitlines()) == 1
    assert api.log() == []


def no_config_env(home, **extra):
    env = {k: v for k, v in clean_env().items() if k not in ("XDG_CONFIG_HOME",)}
    env["HOME"] = str(home)
    env.update(extra)
    return env


def test_no_configuration_file(tmp_path):
    if os.path.exists("/etc/insightfs/insightfs.conf"):
        pytest.skip("/etc/insightfs/insightfs.conf exists on this machine")
    home = tmp_path / "home"
    home.mkdir()
    p = cli("--fetch", "x", full_env=no_config_env(home))
    assert p.returncode == 1 and p.stdout == b""
    assert p.stderr.decode() == ("insightfs: no configuration file (tried: %s/.config/insightfs/"
                                 "insightfs.conf, /etc/insightfs/insightfs.conf)\n" % home)
    xdg = tmp_path / "xdg"
    p = cli("--fetch", "x", full_env=no_config_env(home, XDG_CONFIG_HOME=str(xdg),
                                                   INSIGHTFS_CONFIG=""))
    assert p.returncode == 1
    assert p.stderr.decode() == ("insightfs: no configuration file (tried: %s/insightfs/"
                                 "insightfs.conf, /etc/insightfs/insightfs.conf)\n" % xdg)


def test_configuration_search_order(api, tmp_path):
    home = tmp_path / "home"
    (home / ".config" / "insightfs").mkdir(parents=True)
    user = make_config(home / ".config" / "insightfs" / "insightfs.conf", api)
    path = "web/cpu/" + RANGE
    # $HOME/.config is found.
    p = cli("--fetch", path, full_env=no_config_env(home))
    assert p.returncode == 0, p.stderr
    assert targets(api) == [CPU_TARGET]
    p = cli("--check-config", full_env=no_config_env(home))
    assert p.stdout.decode() == "insightfs: %s: OK (4 dashboards visible)\n" % user
    # $XDG_CONFIG_HOME wins over $HOME/.config.
    xdg = tmp_path / "xdg"
    (xdg / "insightfs").mkdir(parents=True)
    xconf = make_config(xdg / "insightfs" / "insightfs.conf", api)
    p = cli("--check-config", full_env=no_config_env(home, XDG_CONFIG_HOME=str(xdg)))
    assert p.stdout.decode() == "insightfs: %s: OK (4 dashboards visible)\n" % xconf
    # $INSIGHTFS_CONFIG wins over both; a missing one is an error, not a fallback.
    other = make_config(tmp_path / "other.conf", api)
    p = cli("--check-config", full_env=no_config_env(home, INSIGHTFS_CONFIG=other))
    assert p.stdout.decode() == "insightfs: %s: OK (4 dashboards visible)\n" % other
    api.clear_log()
    missing = str(tmp_path / "missing.conf")
    for args in (("--fetch", path), ("--check-config",), ("--discover",)):
        p = cli(*args, full_env=no_config_env(home, INSIGHTFS_CONFIG=missing))
        assert p.returncode == 1 and p.stdout == b""
        assert p.stderr.decode() == "insightfs: %s: No such file or directory\n" % missing
    assert api.log() == []
    # --config wins over $INSIGHTFS_CONFIG.
    p = cli("--check-config", "--config", other, full_env=no_config_env(home, INSIGHTFS_CONFIG=missing))
    assert p.stdout.decode() == "insightfs: %s: OK (4 dashboards visible)\n" % other
    p = cli("--check-config", "-c", other, full_env=no_config_env(home, INSIGHTFS_CONFIG=missing))
    assert p.stdout.decode() == "insightfs: %s: OK (4 dashboards visible)\n" % other
    p = cli("--check-config", "--config=" + other, full_env=no_config_env(home))
    assert p.stdout.decode() == "insightfs: %s: OK (4 dashboards visible)\n" % other
    p = cli("--check-config", "-o", "config=" + other, full_env=no_config_env(home))
    assert p.stdout.decode() == "insightfs: %s: OK (4 dashboards visible)\n" % other


class RecordingProxy:
    """A loopback listener that records the head of every request and closes."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.heads = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                except OSError:
                    pass
                self.heads.append(data)

    def close(self):
        self.sock.close()


def test_no_configuration_file_uses_environment_and_default_endpoint(tmp_path):
    """--check-config without any file: the environment's credentials and the default
    endpoint (seen through a proxy from the standard variable: a CONNECT to it)."""
    home = tmp_path / "home"
    home.mkdir()
    proxy = RecordingProxy()
    try:
        env = no_config_env(home, NCLOUD_ACCESS_KEY=DEFAULT_ACCESS_KEY,
                            NCLOUD_SECRET_KEY=DEFAULT_SECRET_KEY,
                            HTTPS_PROXY="http://127.0.0.1:%d" % proxy.port)
        p = cli("--check-config", full_env=env)
        assert p.returncode == 1 and p.stdout == b""
        assert len(p.stderr.splitlines()) == 1
        assert re.fullmatch(r"insightfs: [^\n]*: endpoint unreachable: [^\n]+\n",
                            p.stderr.decode()), p.stderr
        assert proxy.heads, "nothing reached the proxy"
        for head in proxy.heads:
            assert head.startswith(b"CONNECT cw.apigw.ntruss.com:443 HTTP/1.1\r\n"), head
            assert DEFAULT_SECRET_KEY.encode() not in head
    finally:
        proxy.close()


def test_proxies_are_never_used_for_loopback(api, config):
    proxy = RecordingProxy()
    try:
        url = "http://127.0.0.1:%d" % proxy.port
        env = {"http_proxy": url, "HTTP_PROXY": url, "https_proxy": url, "HTTPS_PROXY": url,
               "ALL_PROXY": url, "all_proxy": url}
        cfg = config()
        fetch_ok(api, cfg, "web/cpu/" + RANGE, CPU_TARGET, env=env)
        p = cli("--check-config", "--config", cfg, env=env)
        assert p.returncode == 0, p.stderr
        assert proxy.heads == []
    finally:
        proxy.close()


def test_credentials_from_the_environment(api, tmp_path):
    cfg = write_file(tmp_path / "env.conf", api_group(api, credentials=False) + DEFAULT_DASHBOARDS,
                     0o644)
    env = {"NCLOUD_ACCESS_KEY": api.access_key, "NCLOUD_SECRET_KEY": api.secret_key}
    fetch_ok(api, cfg, "web/cpu/" + RANGE, CPU_TARGET, env=env)
    p = cli("--check-config", "--config", cfg, env=env)
    assert p.stdout.decode() == "insightfs: %s: OK (4 dashboards visible)\n" % cfg
    # The configuration wins over the environment.
    cfg2 = write_file(tmp_path / "both.conf", api_group(api) + DEFAULT_DASHBOARDS)
    bad = {"NCLOUD_ACCESS_KEY": forbid("ENVACCESSKEY00000009"),
           "NCLOUD_SECRET_KEY": forbid("env-secret-that-is-wrong-0000")}
    fetch_ok(api, cfg2, "web/cpu/" + RANGE, CPU_TARGET, env=bad)
    # Without any secret: one configuration error line, no request.
    api.clear_log()
    p = cli("--fetch", "web/cpu/" + RANGE, "--config", cfg, env={"NCLOUD_ACCESS_KEY": api.access_key})
    assert p.returncode == 1 and p.stdout == b""
    assert len(p.stderr.splitlines()) == 1
    assert p.stderr.decode().startswith("insightfs: %s: " % cfg), p.stderr
    assert "secret" in p.stderr.decode()
    assert api.log() == []


def test_environment_access_key_with_a_control_character(api, tmp_path):
    """NCLOUD_ACCESS_KEY follows api.access_key's rule (SPEC 3): a CR (an env file with
    CRLF endings) or LF would go into the request headers. One configuration error line
    naming the variable, never its value, and no request."""
    cfg = write_file(tmp_path / "env.conf", api_group(api, credentials=False) + DEFAULT_DASHBOARDS,
                     0o644)
    for bad in (api.access_key + "\r", api.access_key + "\r\nX-Injected: 1"):
        api.clear_log()
        env = {"NCLOUD_ACCESS_KEY": bad, "NCLOUD_SECRET_KEY": api.secret_key}
        for args in (("--check-config", "--config", cfg),
                     ("--fetch", "web/cpu/" + RANGE, "--config", cfg)):
            p = cli(*args, env=env)
            assert p.returncode == 1 and p.stdout == b"", (args, p.stderr)
            assert p.stderr.decode() == (
                "insightfs: %s: NCLOUD_ACCESS_KEY: contains a control character\n" % cfg), args
        assert api.log() == []


# ---- secrets ------------------------------------------------------------------------------

def test_secret_never_printed_at_debug_level(api, config, tmp_path):
    """log_level = "debug" over success, every kind of failure, discovery and checks;
    the autouse check scans every output for the secret and the whole access key."""
    cfg = config('  retries = 1;\n  timeout_ms = 500;\n',
                 body=with_body('log_level = "debug";\n'))
    path = "web/cpu/" + RANGE
    assert cli("--fetch", path, "--config", cfg).returncode == 0
    for kind, params in [("status", {"status": 401}), ("status", {"status": 503}), ("reset", {}),
                         ("notpng", {"body": "x-ncp-apigw-signature-v2"}), ("hang", {}),
                         ("redirect", {})]:
        api.clear_faults()
        api.fault(kind, count=-1, **params)
        assert cli("--fetch", path, "--config", cfg).returncode == 1
        assert cli("--check-config", "--config", cfg).returncode == 1
        assert cli("--discover", "--config", cfg).returncode == 1
    api.clear_faults()
    api.set_clock(600000)
    assert cli("--fetch", path, "--config", cfg).returncode == 0
    assert cli("--discover", "--config", cfg).returncode == 0
    wrong = config('  retries = 1;\n', body=with_body('log_level = "debug";\n'),
                   secret=forbid("debug-wrong-secret-555555"), name="wrong.conf")
    assert cli("--fetch", path, "--config", wrong).returncode == 1
    assert cli("--check-config", "--config", wrong).returncode == 1
    loose = write_file(tmp_path / "loose.conf", open(cfg).read(), 0o644)
    assert cli("--fetch", path, "--config", loose).returncode == 1
    assert len(_outputs) >= 24
    # Something was logged at debug: the scan above is not over empty output.
    assert any(b"insightfs: debug: " in err for _, _, err in _outputs)
    # The access key appears at most as its last 4 characters; nothing looks like a
    # signature (base64 of 32 bytes).
    assert not any(api.access_key[:-4].encode() in out + err for _, out, err in _outputs)
    for _, _, err in _outputs:
        assert not re.search(rb"[A-Za-z0-9+/]{43}=", err), err


def children_of(pid):
    """Pids whose parent is pid, from /proc/*/stat."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(rest[1]) == pid:
            out.append(int(d))
    return out


# A mount with credentials in its environment and -o auto_unmount: libfuse runs
# fusermount3 with the whole environment, and that child lives as long as the mount
# (SPEC 12.6, RELIABILITY P8). Neither it nor the daemon may show the credentials.
@pytest.mark.skipif(VALGRIND, reason="/proc/PID/environ is valgrind's copy, not insightfs's")
def test_mount_environment_credentials_reach_no_child(tmp_path):
    secret = forbid("mount-environ-secret-fedcba9876")
    access = forbid("MOUNTENVIRONACCESSKEY5")
    server = LocalAPI().start(str(tmp_path / "envapi"), access_key=access, secret_key=secret)
    mnt = str(tmp_path / "mnt")
    os.mkdir(mnt)
    try:
        cfg = write_file(tmp_path / "env.conf", api_group(server, credentials=False)
                         + DEFAULT_DASHBOARDS, 0o644)
        env = clean_env({"NCLOUD_ACCESS_KEY": access, "NCLOUD_SECRET_KEY": secret})
        proc = subprocess.Popen(bin_cmd(["-f", "-o", "auto_unmount", cfg, mnt]), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: is_mounted(mnt), 10, "the mount")
            # The credentials work: a read through the mount makes a signed request.
            with open(os.path.join(mnt, "web", "cpu", RANGE), "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n"
            kids = children_of(proc.pid)
            assert kids, "no fusermount3 child with -o auto_unmount"
            for pid in [proc.pid] + kids:
                with open("/proc/%d/environ" % pid, "rb") as f:
                    environ = f.read()
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    cmdline = f.read()
                assert b"PATH=" in environ, pid  # the environment itself is readable
                assert secret.encode() not in environ, (pid, cmdline)
                assert access.encode() not in environ, (pid, cmdline)
                assert secret.encode() not in cmdline, (pid, cmdline)
            assert any(b"fusermount3" in open("/proc/%d/cmdline" % k, "rb").read()
                       for k in kids)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20 * TIME_FACTOR)
        assert proc.returncode == 0, err
        check_stderr(err.decode(errors="replace"))
        _outputs.append(("mount (environ)", out, err))
        wait_for(lambda: not is_mounted(mnt), 10, "the mount to go away")
    finally:
        server.stop()


def test_secret_never_printed_by_a_debug_mount(api, config, tmp_path):
    """A mount with -d (libfuse's request trace and insightfs's debug log) reading,
    failing, retrying and listing: its whole stderr holds neither the secret, nor the
    access key beyond its last 4 characters, nor anything shaped like a signature."""
    cfg = config("  retries = 1;\n  timeout_ms = 500;\n",
                 body=with_body('log_level = "debug";\n'))
    mnt = str(tmp_path / "mnt")
    os.mkdir(mnt)
    proc = subprocess.Popen(bin_cmd(["-d", cfg, mnt]), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=clean_env())
    try:
        wait_for(lambda: is_mounted(mnt), 10, "the mount")
        cpu = os.path.join(mnt, "web", "cpu")
        with open(os.path.join(cpu, RANGE), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        os.listdir(cpu)
        for kind, params in [("status", {"status": 401}), ("status", {"status": 503}),
                             ("hang", {}), ("reset", {})]:
            api.clear_faults()
            api.fault(kind, count=-1, **params)
            s0 = S + 3600000 * (len(api.requests()) + 1)
            try:
                os.stat(os.path.join(cpu, "%d-%d.png" % (s0, s0 + 3600000)))
            except OSError:
                pass
        api.clear_faults()
        assert os.path.getsize(os.path.join(mnt, ".insightfs", "config")) > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20 * TIME_FACTOR)
    assert proc.returncode == 0, err
    check_stderr(err.decode(errors="replace"))
    assert b"insightfs: debug: " in err and b"unique: " in err  # both traces ran
    assert api.access_key[:-4].encode() not in out + err
    assert not re.search(rb"[A-Za-z0-9+/]{43}=", err)
    _outputs.append(("mount -d", out, err))
    wait_for(lambda: not is_mounted(mnt), 10, "the mount to go away")


def hung_env_config(tmp_path, server):
    """A configuration without credentials (they come from the environment) whose
    --fetch hangs on server's API, so that the process stays to be looked at."""
    server.fault("hang", count=-1)
    return write_file(tmp_path / "env.conf",
                      api_group(server, "  timeout_ms = 10000;\n  retries = 0;\n",
                                credentials=False) + DEFAULT_DASHBOARDS)


def proc_environ_cmdline(pid):
    """(/proc/PID/environ, /proc/PID/cmdline) as bytes."""
    with open("/proc/%d/environ" % pid, "rb") as f:
        environ = f.read()
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return environ, f.read()


# Valgrind builds the client's environment block itself: /proc/PID/environ shows
# valgrind's original copy (secret included), which insightfs never sees and cannot zero.
@pytest.mark.skipif(VALGRIND, reason="/proc/PID/environ is valgrind's copy, not insightfs's")
def test_environment_credentials_leave_proc_environ(tmp_path):
    secret = forbid("proc-environ-secret-abcdef0123")
    access = forbid("PROCENVIRONACCESSKEY77")
    server = LocalAPI().start(str(tmp_path / "envapi"), access_key=access, secret_key=secret)
    try:
        cfg = hung_env_config(tmp_path, server)
        env = clean_env({"NCLOUD_ACCESS_KEY": access, "NCLOUD_SECRET_KEY": secret})
        proc = subprocess.Popen(bin_cmd(["--fetch", "web/cpu/" + RANGE, "--config", cfg]), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            # The request is in flight (signed with the secret): the process holds it.
            wait_for(lambda: server.requests(), 10, "the hung request")
            environ, cmdline = proc_environ_cmdline(proc.pid)
            assert proc.poll() is None
            assert b"PATH=" in environ  # the environment itself is readable
            assert secret.encode() not in environ
            assert access.encode() not in environ
            assert secret.encode() not in cmdline
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=10 * TIME_FACTOR)
        _outputs.append(("--fetch (environ)", out, err))
        assert out == b""
    finally:
        server.stop()


# An environment block may hold a name twice (execve takes any list; subprocess cannot
# make one): this helper reads {"argv": [...], "env": ["NAME=VALUE", ...]} from the JSON
# file named by its argument and execs argv with exactly that list (the pid stays).
EXECVE_LIST = r"""
import ctypes, json, os, sys
with open(sys.argv[1]) as f:
    req = json.load(f)
def array(items):
    return (ctypes.c_char_p * (len(items) + 1))(*[s.encode() for s in items], None)
libc = ctypes.CDLL(None, use_errno=True)
libc.execve(req["argv"][0].encode(), array(req["argv"]), array(req["env"]))
sys.exit("execve: " + os.strerror(ctypes.get_errno()))
"""


@pytest.mark.skipif(VALGRIND, reason="/proc/PID/environ is valgrind's copy, not insightfs's")
def test_repeated_environment_credentials_leave_proc_environ(tmp_path):
    """Each of NCLOUD_ACCESS_KEY and NCLOUD_SECRET_KEY twice in the block: getenv sees
    only the first, unsetenv drops both from environ but leaves their bytes, and
    /proc/PID/environ shows the original block. Neither value of either may remain."""
    secret = forbid("repeated-environ-secret-0123456789")
    secret2 = forbid("repeated-environ-second-secret-9876")
    access = forbid("REPEATEDENVIRONACCESS1")
    access2 = forbid("REPEATEDENVIRONACCESS2")
    server = LocalAPI().start(str(tmp_path / "envapi"), access_key=access, secret_key=secret)
    try:
        cfg = hung_env_config(tmp_path, server)
        env = ["%s=%s" % kv for kv in clean_env().items()]
        env += ["NCLOUD_ACCESS_KEY=" + access, "NCLOUD_SECRET_KEY=" + secret,
                "NCLOUD_SECRET_KEY=" + secret2, "NCLOUD_ACCESS_KEY=" + access2]
        argv = bin_cmd(["--fetch", "web/cpu/" + RANGE, "--config", cfg])
        req = write_file(tmp_path / "execve.json", json.dumps({"argv": argv, "env": env}))
        proc = subprocess.Popen([sys.executable, "-c", EXECVE_LIST, req],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            # The request is in flight (signed with the first secret): the process holds it.
            wait_for(lambda: server.requests() or proc.poll() is not None, 10,
                     "the hung request")
            assert proc.poll() is None, proc.stderr.read()
            environ, cmdline = proc_environ_cmdline(proc.pid)
            assert cmdline.split(b"\0")[0] == argv[0].encode()  # insightfs itself
            assert b"PATH=" in environ  # the environment itself is readable
            for value in (secret, secret2, access, access2):
                assert value.encode() not in environ, value
                assert value.encode() not in cmdline, value
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=10 * TIME_FACTOR)
        _outputs.append(("--fetch (repeated environ)", out, err))
        assert out == b""
    finally:
        server.stop()


# ---- --help, --version, usage errors ------------------------------------------------------

def test_help():
    for opt in ("--help", "-h"):
        p = cli(opt)
        assert p.returncode == 0 and p.stderr == b""
        text = p.stdout.decode()
        assert text.startswith("usage: insightfs [OPTIONS] [CONFIG] MOUNTPOINT\n")
        for usage in ("insightfs --fetch PATH [--config FILE]",
                      "insightfs --discover [--config FILE]",
                      "insightfs --check-config [--config FILE]",
                      "insightfs --help | --version"):
            assert usage in text


def pkg_version(name):
    try:
        return subprocess.run(["pkg-config", "--modversion", name], stdout=subprocess.PIPE,
                              check=True).stdout.decode().strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def test_version():
    import ssl
    with open(os.path.join(ROOT, "Makefile")) as f:
        version = re.search(r"^VERSION\s*:?=\s*(\S+)", f.read(), re.M).group(1)
    for opt in ("--version", "-V"):
        p = cli(opt)
        assert p.returncode == 0 and p.stderr == b""
        lines = p.stdout.decode().split("\n")
        assert len(lines) == 5 and lines[4] == "", lines
        assert lines[0] == "insightfs " + version
        assert re.fullmatch(r"libfuse 3\.\d+\.\d+", lines[1]), lines
        assert re.fullmatch(r"libcurl \d+\.\d+\.\d+\S*", lines[2]), lines
        assert lines[3] == ssl.OPENSSL_VERSION
        for line, pkg in ((lines[1], "fuse3"), (lines[2], "libcurl")):
            v = pkg_version(pkg)
            if v:
                assert line.split(" ", 1)[1] == v


@pytest.mark.parametrize("args,message", [
    (("--bogus",), "unknown option '--bogus'"),
    (("-x",), "unknown option '-x'"),
    (("--fetch",), "--fetch needs a value"),
    (("--check-config", "--config"), "--config needs a value"),
    (("--check-config", "some.conf"), "unexpected argument 'some.conf'"),
])
def test_usage_errors(args, message):
    p = cli(*args)
    assert p.returncode == 1 and p.stdout == b""
    assert p.stderr.decode() == "insightfs: %s (see insightfs --help)\n" % message


@pytest.mark.parametrize("args,message", [
    (("-o",), "-o needs a value"),
    (("-f", "-o"), "-o needs a value"),
    (("-c",), "-c needs a value"),
    (("--fetch", "x", "--config"), "--config needs a value"),
    # A value is never an option: "--fetch -c" fetches "-c", then "x" is one too many.
    (("--fetch", "-c", "x"), "unexpected argument 'x'"),
    # Long options are exact: no prefix of them takes a glued value.
    (("--configX",), "unknown option '--configX'"),
    (("--fetchx",), "unknown option '--fetchx'"),
    (("-cX",), "unknown option '-cX'"),
    (("-fd",), "unknown option '-fd'"),
    (("-o", "uid=x"), "-o uid=x: not a number"),
    (("-o", "uid=-1"), "-o uid=-1: not a number"),
    (("-o", "gid=4294967296"), "-o gid=4294967296: not a number"),
    (("-o", "uid"), "unknown mount option 'uid'"),
    (("-o", "ro,,fsname=x"), "unknown mount option 'fsname=x'"),
    (("-o", "rw\\,dev"), "unknown mount option 'rw,dev'"),
    # The first error in argument order is the one reported.
    (("-o", "bogus", "--bogus"), "unknown mount option 'bogus'"),
    (("--bogus", "-o", "bogus"), "unknown option '--bogus'"),
    (("--bogus", "-o"), "unknown option '--bogus'"),
    (("a", "b", "c"), "too many arguments ('c')"),
    (("--discover", "x"), "unexpected argument 'x'"),
    # "--" ends the options.
    (("--check-config", "--", "-x"), "unexpected argument '-x'"),
])
def test_usage_errors_in_argument_order(args, message):
    p = cli(*args)
    assert p.returncode == 1 and p.stdout == b""
    assert p.stderr.decode() == "insightfs: %s (see insightfs --help)\n" % message


def test_help_and_version_end_the_parse():
    """What follows --help or --version is not looked at; what comes before is."""
    for args, first in ((("--help", "--bogus"), "usage: insightfs "),
                        (("-f", "-h", "--fetch"), "usage: insightfs "),
                        (("--version", "-o"), "insightfs "),
                        (("--fetch", "x", "-V", "a", "b", "c"), "insightfs ")):
        p = cli(*args)
        assert p.returncode == 0 and p.stderr == b"", args
        assert p.stdout.decode().startswith(first), args
    p = cli("--bogus", "--help")
    assert p.returncode == 1 and p.stdout == b""
    assert p.stderr.decode() == "insightfs: unknown option '--bogus' (see insightfs --help)\n"
