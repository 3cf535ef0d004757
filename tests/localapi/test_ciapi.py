"""Self-tests of the local Cloud Insight API (ciapi.py).  Run: pytest-3 tests/localapi

Every check is exact: status codes, JSON bodies, headers, log entries, PNG
structure; faults are observed with http.client or raw sockets.
"""

import email.utils
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import zlib

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import certs  # noqa: E402
from client import (API_PREFIX, DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, LocalAPI,  # noqa: E402
                    image_target, now_ms, sign, signed_headers, time_factor)

WEB = "df_457958429047263232"
CPU = "cpu_avg__1234"
DAY0 = 1733011200000          # 2024-12-01T00:00Z
DAY1 = DAY0 + 86400000
CPU_TARGET = image_target(WEB, CPU, DAY0, DAY1, "AUTO")

AUTH_FAILED = {"errorCode": "200", "message": "Authentication Failed"}


# --------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def api(tmp_path_factory):
    server = LocalAPI().start(tmp_path_factory.mktemp("api"))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def clean(request):
    """Each test starts with no faults, an empty log and the true clock."""
    if "api" in request.fixturenames:
        server = request.getfixturevalue("api")
        server.clear_faults()
        server.clear_log()
        server.set_clock(0)
        server.set_latency(0)
    yield


@pytest.fixture(scope="module")
def certset(tmp_path_factory):
    return certs.make_certs(tmp_path_factory.mktemp("certs"))


def error_of(body):
    """The gateway error object without its free-text details."""
    err = json.loads(body)["error"]
    assert isinstance(err["details"], str) and err["details"]
    return {"errorCode": err["errorCode"], "message": err["message"]}


def png_chunks(data):
    """[(type, payload)] of a PNG; asserts signature, bounds and every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        assert pos + 12 <= len(data), "chunk header past the end"
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + length]
        assert len(payload) == length, "chunk data past the end"
        crc, = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(ctype + payload) & 0xFFFFFFFF, "bad CRC in %r" % ctype
        chunks.append((ctype, payload))
        pos += 12 + length
    assert pos == len(data)
    return chunks


def check_png(data):
    """Full structural check of a chart; returns its tEXt comment."""
    chunks = png_chunks(data)
    types = [t for t, _ in chunks]
    assert types[0] == b"IHDR" and types[-1] == b"IEND" and chunks[-1][1] == b""
    assert types.count(b"IEND") == 1
    width, height, depth, colour, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (width, height, depth, comp, filt, interlace) == (800, 600, 8, 0, 0, 0)
    assert colour in (2, 3)
    bpp = 3 if colour == 2 else 1
    if colour == 3:
        assert b"PLTE" in types and types.index(b"PLTE") < types.index(b"IDAT")
    raw = zlib.decompress(b"".join(p for t, p in chunks if t == b"IDAT"))
    assert len(raw) == 600 * (1 + 800 * bpp)
    assert all(raw[y * (1 + 800 * bpp)] == 0 for y in range(600))  # filter 0 everywhere
    assert len(set(raw)) >= 4, "a chart, not a blank image"
    comments = [p for t, p in chunks if t == b"tEXt"]
    return comments[0].decode("latin-1") if comments else ""


def raw_exchange(port, request, timeout=5.0):
    """Send raw bytes, read until EOF; returns (bytes, error or None)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    got = b""
    try:
        sock.sendall(request)
        while True:
            data = sock.recv(65536)
            if not data:
                return got, None
            got += data
    except OSError as e:
        return got, e
    finally:
        sock.close()


def raw_get(target, headers):
    lines = ["GET %s HTTP/1.1" % target, "Host: 127.0.0.1"]
    lines += ["%s: %s" % kv for kv in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def wait_for(predicate, what, timeout=5.0):
    deadline = time.monotonic() + timeout * time_factor()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


# --------------------------------------------------------------------------
# the three APIs
# --------------------------------------------------------------------------

def test_health_and_port_file(api):
    assert api.health() == "ok"
    with open(api.port_file) as f:
        assert f.read() == "%d\n" % api.port
    assert api.url == "http://127.0.0.1:%d" % api.port


def test_dashboard_list(api):
    status, headers, body = api.signed_get(API_PREFIX)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    assert json.loads(body) == [
        {"id": "df_457958429047263232", "name": "web"},
        {"id": 1000123, "name": "db"},
        {"id": "df_empty", "name": "empty"},
        {"id": "df_weird", "name": "we/ird\u0001.name"},
    ]


def test_widget_lists(api):
    def widgets(d):
        status, _, body = api.signed_get(API_PREFIX + "/" + d + "/widgets")
        assert status == 200
        return json.loads(body)

    assert widgets(WEB) == [
        {"dashboardId": WEB, "name": "cpu", "widgetId": "cpu_avg__1234"},
        {"dashboardId": WEB, "name": "memory", "widgetId": "mem_used__5678"},
        {"dashboardId": WEB, "name": "network in", "widgetId": "net_in__9012"},
    ]
    # Integer ids stay integers; a widget without a name has no "name" key.
    assert widgets("1000123") == [
        {"dashboardId": 1000123, "name": "qps", "widgetId": 555},
        {"dashboardId": 1000123, "widgetId": "disk_io__77"},
    ]
    assert widgets("df_empty") == []
    assert widgets("df_weird") == [
        {"dashboardId": "df_weird", "name": "a/b", "widgetId": "w1"},
        {"dashboardId": "df_weird", "name": None, "widgetId": "w2"},
    ]
    # Ids are percent-decoded from the path; the signature covers the raw target.
    assert widgets("df%5Fempty") == []
    assert widgets("%31000123")[0]["widgetId"] == 555


def test_image_ok_and_head(api):
    status, headers, body = api.signed_get(CPU_TARGET)
    assert status == 200
    assert headers["Content-Type"] == "image/png"
    assert int(headers["Content-Length"]) == len(body)
    comment = check_png(body)
    assert "points=60" in comment and "mode=AUTO" in comment
    assert 1000 < len(body) < 20000
    # HEAD: same headers, no body.
    status, headers, head_body = api.signed_get(CPU_TARGET, method="HEAD")
    assert (status, head_body) == (200, b"")
    assert int(headers["Content-Length"]) == len(body)
    # Integer ids work as their decimal strings.
    status, _, body = api.signed_get(image_target(1000123, 555, DAY0, DAY1, "HIGH"))
    assert status == 200
    assert "points=120" in check_png(body)


def test_date_header_follows_clock(api):
    for offset in (0, 600000, -3600000):
        api.set_clock(offset)
        ts = now_ms() + offset
        status, headers, _ = api.signed_get(API_PREFIX, timestamp=ts)
        assert status == 200
        date = email.utils.parsedate_to_datetime(headers["Date"]).timestamp()
        assert abs(date - (time.time() + offset / 1000.0)) < 2.0


def test_unknown_ids_are_404(api):
    targets = [
        API_PREFIX + "/nope/widgets",
        image_target("nope", CPU, DAY0, DAY1),
        image_target(WEB, "nope", DAY0, DAY1),
        image_target(WEB, "w1", DAY0, DAY1),          # a widget of another dashboard
        API_PREFIX + "/" + WEB,                           # no such API
        API_PREFIX + "/" + WEB + "/widgets/" + CPU + "/x",
        API_PREFIX + "//widgets",
        "/cw_fea/real/cw/api/other",
    ]
    for target in targets:
        status, headers, body = api.signed_get(target)
        assert status == 404, target
        assert headers["Content-Type"] == "application/json"
        assert error_of(body) == {"errorCode": "300", "message": "Not Found"}, target


@pytest.mark.parametrize("query", [
    "",
    "?startTime=%d&endTime=%d" % (DAY0, DAY1),
    "?startTime=%d&widgetResolutionMode=AUTO" % DAY0,
    "?endTime=%d&widgetResolutionMode=AUTO" % DAY1,
    "?startTime=%d&endTime=%d&widgetResolutionMode=AUTO" % (DAY1, DAY0),
    "?startTime=%d&endTime=%d&widgetResolutionMode=AUTO" % (DAY0, DAY0),
    "?startTime=abc&endTime=%d&widgetResolutionMode=AUTO" % DAY1,
    "?startTime=-5&endTime=%d&widgetResolutionMode=AUTO" % DAY1,
    "?startTime=%d&endTime=%d&widgetResolutionMode=LOW" % (DAY0, DAY1),
    "?startTime=%d&endTime=%d&widgetResolutionMode=auto" % (DAY0, DAY1),
    "?startTime=%d&endTime=%d&widgetResolutionMode=" % (DAY0, DAY1),
    "?startTime=%d&startTime=%d&endTime=%d&widgetResolutionMode=AUTO" % (DAY0, DAY0, DAY1),
])
def test_bad_parameters_are_400(api, query):
    status, headers, body = api.signed_get(API_PREFIX + "/%s/widgets/%s%s" % (WEB, CPU, query))
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert error_of(body) == {"errorCode": "100", "message": "Bad Request"}


# --------------------------------------------------------------------------
# authentication
# --------------------------------------------------------------------------

def test_sign_known_vector():
    # Computed independently: HMAC-SHA256 over the documented message layout.
    import base64
    import hmac
    msg = b"GET /x?a=1\n1700000000000\nAK"
    want = base64.b64encode(hmac.new(b"SK", msg, hashlib.sha256).digest()).decode()
    assert sign("SK", "GET", "/x?a=1", "1700000000000", "AK") == want
    assert sign("SK", "GET", "/x?a=1", 1700000000000, "AK") == want
    # The known answer of a public NCP client's test suite (SPEC section 1).
    assert sign("TestSecretKey", "GET", "/vserver/v2/getServerInstanceList?responseFormatType=json",
                "1234567890123", "TestAccessKey") == "FPsYYX8fuMAgi+cue3eACOW0dNtIwu1LYWfg/megA2M="


@pytest.mark.parametrize("case", [
    "no_timestamp", "no_access_key", "no_signature", "wrong_access_key", "wrong_secret",
    "bad_timestamp", "signed_other_target", "signed_other_method", "stale", "future",
])
def test_auth_rejected(api, case):
    ts = now_ms()
    headers = {}
    kwargs = {}
    if case == "no_timestamp":
        headers["x-ncp-apigw-timestamp"] = None
    elif case == "no_access_key":
        headers["x-ncp-iam-access-key"] = None
    elif case == "no_signature":
        headers["x-ncp-apigw-signature-v2"] = None
    elif case == "wrong_access_key":
        kwargs["access_key"] = "SOMEOTHERACCESSKEY0001"
    elif case == "wrong_secret":
        kwargs["secret_key"] = "not-the-secret"
    elif case == "bad_timestamp":
        headers = signed_headers(CPU_TARGET, timestamp="12x4")
    elif case == "signed_other_target":
        # Signed for the decoded form, sent encoded: the raw target counts.
        target = API_PREFIX + "/df%5Fempty/widgets"
        headers = signed_headers(API_PREFIX + "/df_empty/widgets")
        status, _, body = api.signed_get(target, headers=headers)
        assert status == 401 and error_of(body) == AUTH_FAILED
        return
    elif case == "signed_other_method":
        headers = signed_headers(CPU_TARGET, method="HEAD")
    elif case == "stale":
        kwargs["timestamp"] = ts - 300000 - 2000
    elif case == "future":
        kwargs["timestamp"] = ts + 300000 + 2000
    status, hdrs, body = api.signed_get(CPU_TARGET, headers=headers, **kwargs)
    assert status == 401
    assert hdrs["Content-Type"] == "application/json"
    assert error_of(body) == AUTH_FAILED
    assert hdrs["Date"]


def test_auth_accepts_within_five_minutes(api):
    for delta in (-295000, 295000):
        status, _, _ = api.signed_get(API_PREFIX, timestamp=now_ms() + delta)
        assert status == 200, delta


def test_clock_offset_via_control(api):
    api.set_clock(600000)  # the gateway is 10 minutes ahead
    status, headers, body = api.signed_get(API_PREFIX)
    assert status == 401 and error_of(body) == AUTH_FAILED
    skew = email.utils.parsedate_to_datetime(headers["Date"]).timestamp() - time.time()
    assert 598 < skew < 602
    status, _, _ = api.signed_get(API_PREFIX, timestamp=now_ms() + 600000)
    assert status == 200
    api.set_clock(0)
    assert api.signed_get(API_PREFIX)[0] == 200


def test_clock_offset_option_and_custom_keys(tmp_path):
    with LocalAPI().start(tmp_path, clock_offset_ms=-600000, access_key="AK2",
                          secret_key="SK2") as other:
        assert other.signed_get(API_PREFIX)[0] == 401
        status, headers, _ = other.signed_get(API_PREFIX, timestamp=now_ms() - 600000)
        assert status == 200
        skew = email.utils.parsedate_to_datetime(headers["Date"]).timestamp() - time.time()
        assert -602 < skew < -598
        # The default keys are not accepted by a server with other keys.
        status, _, _ = other.signed_get(API_PREFIX, timestamp=now_ms() - 600000,
                                        access_key=DEFAULT_ACCESS_KEY,
                                        secret_key=DEFAULT_SECRET_KEY)
        assert status == 401


# --------------------------------------------------------------------------
# images: validity and determinism
# --------------------------------------------------------------------------

def test_images_differ_by_every_key_part(api):
    targets = [
        image_target(WEB, CPU, DAY0, DAY1, "AUTO"),
        image_target(WEB, CPU, DAY0, DAY1, "HIGH"),
        image_target(WEB, CPU, DAY0, DAY1 + 1, "AUTO"),
        image_target(WEB, CPU, DAY0 + 1, DAY1, "AUTO"),
        image_target(WEB, "mem_used__5678", DAY0, DAY1, "AUTO"),
        image_target(1000123, 555, DAY0, DAY1, "AUTO"),
    ]
    bodies = []
    for target in targets:
        status, _, body = api.signed_get(target)
        assert status == 200
        check_png(body)
        bodies.append(body)
    assert len(set(bodies)) == len(bodies)
    # Same request again: same bytes.
    assert api.signed_get(targets[0])[2] == bodies[0]
    # Equivalent spellings of an id are the same image.
    assert api.signed_get(targets[0].replace("cpu_avg__1234", "cpu%5Favg__1234"))[2] == bodies[0]


def test_images_identical_across_processes(api, tmp_path):
    targets = [CPU_TARGET, image_target(1000123, "disk_io__77", 1, 2, "HIGH"),
               image_target("df_weird", "w2", DAY0, DAY0 + 3600000, "AUTO")]
    first = [api.signed_get(t)[2] for t in targets]
    # A second process (with another hash seed) renders the same bytes.
    with LocalAPI().start(tmp_path) as other:
        second = [other.signed_get(t)[2] for t in targets]
    assert first == second
    for body in first:
        check_png(body)


def test_custom_dataset(tmp_path):
    data = [{"id": 7, "widgets": [{"widgetId": "x y/z", "name": "ex"}], "extra": True}]
    with LocalAPI().start(tmp_path, data=data) as other:
        status, _, body = other.signed_get(API_PREFIX)
        assert (status, json.loads(body)) == (200, [{"id": 7, "extra": True}])
        status, _, body = other.signed_get(API_PREFIX + "/7/widgets")
        assert json.loads(body) == [{"dashboardId": 7, "name": "ex", "widgetId": "x y/z"}]
        status, _, body = other.signed_get(image_target(7, "x y/z", DAY0, DAY1))
        assert status == 200
        check_png(body)
        assert other.signed_get(API_PREFIX + "/df_empty/widgets")[0] == 404
        # Replaced at run time through the control endpoint.
        other.set_data([{"id": "n", "name": "new", "widgets": []}])
        assert json.loads(other.signed_get(API_PREFIX)[2]) == [{"id": "n", "name": "new"}]


def test_bad_dataset_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"id": True, "widgets": []}]))
    with pytest.raises(RuntimeError, match="string or an integer"):
        LocalAPI().start(tmp_path, data=str(path))


# --------------------------------------------------------------------------
# the request log
# --------------------------------------------------------------------------

def without_times(entry):
    """A log entry without its two clock readings ("t" and "wall")."""
    return {k: v for k, v in entry.items() if k not in ("t", "wall")}


def test_log_entries_exact(api):
    t0 = time.monotonic()
    status, _, png = api.signed_get(CPU_TARGET)
    assert status == 200
    status, _, denied = api.signed_get(CPU_TARGET, secret_key="wrong")
    assert status == 401
    api.health()                       # control requests are not logged
    api.get("/static/web/")
    t1 = time.monotonic()
    log = api.log()
    assert [without_times(e) for e in log] == [
        {"method": "GET", "target": CPU_TARGET, "status": 200, "bytes": len(png), "fault": None,
         "domain_code": None},
        {"method": "GET", "target": CPU_TARGET, "status": 401, "bytes": len(denied), "fault": None,
         "domain_code": None},
        {"method": "GET", "target": "/static/web/", "status": 200,
         "bytes": log[2]["bytes"], "fault": None, "domain_code": None},
    ]
    assert log[2]["bytes"] > 0
    assert t0 <= log[0]["t"] <= log[1]["t"] <= log[2]["t"] <= t1
    # The file holds the same objects, one JSON object per line.
    assert api.file_log() == log
    with open(api.log_path) as f:
        lines = f.read().splitlines()
    assert [json.loads(line) for line in lines] == log
    assert api.requests() == log[:2]
    assert api.requests("/static/") == log[2:]
    api.clear_log()
    assert api.log() == [] and api.file_log() == []


def test_log_entries_carry_wall_time(api):
    """Each entry has "wall", Unix seconds (float) when the request had been read, next
    to the monotonic "t": a window of calendar time can be counted from the log (the
    fleet rate test of the shared cache does), and "t" keeps its meaning."""
    w0, t0 = time.time(), time.monotonic()
    assert api.signed_get(CPU_TARGET)[0] == 200
    api.fault("hang")
    sock = socket.create_connection(("127.0.0.1", api.port), timeout=5)
    sock.sendall(raw_get(CPU_TARGET, signed_headers(CPU_TARGET)))
    deadline = time.monotonic() + 10
    while len(api.log()) < 2:
        assert time.monotonic() < deadline, "the hung request was never logged"
        time.sleep(0.01)
    w1, t1 = time.time(), time.monotonic()
    log = api.log()
    assert [e["status"] for e in log] == [200, None]
    for e in log:
        assert isinstance(e["wall"], float)
        assert w0 <= e["wall"] <= w1 and t0 <= e["t"] <= t1
        # The two clocks tell the same story (no step of the realtime clock here).
        assert abs((e["wall"] - w0) - (e["t"] - t0)) < 0.5
    assert log[0]["wall"] <= log[1]["wall"]
    # Both in the file too, hang included (its line is written when the hang starts).
    deadline = time.monotonic() + 10
    while len(api.file_log()) < 2:
        assert time.monotonic() < deadline, "the file log lacks the hung request"
        time.sleep(0.01)
    assert [e["wall"] for e in api.file_log()] == [e["wall"] for e in log]
    sock.close()


def test_log_records_domain_code(api):
    """x-ncp-dmn_cd is no part of the signature; each entry records it as sent."""
    for code in ("PUB", "GOV", "FIN"):
        status, _, body = api.signed_get(API_PREFIX, headers={"x-ncp-dmn_cd": code})
        assert status == 200, body
    assert api.signed_get(API_PREFIX)[0] == 200
    api.fault("status", status=503)
    assert api.signed_get(API_PREFIX, headers={"X-NCP-DMN_CD": "GOV"})[0] == 503
    got = [(e["status"], e["fault"], e["domain_code"]) for e in api.log()]
    assert got == [(200, None, "PUB"), (200, None, "GOV"), (200, None, "FIN"),
                   (200, None, None), (503, "status", "GOV")]
    assert api.file_log() == api.log()


@pytest.mark.parametrize("codes,details", [
    (["fin"], "x-ncp-dmn_cd must be PUB, GOV or FIN, not 'fin'"),
    ([""], "x-ncp-dmn_cd must be PUB, GOV or FIN, not ''"),
    (["GOV", "GOV"], "x-ncp-dmn_cd sent 2 times"),
])
def test_bad_domain_code_is_400(api, codes, details):
    """A signed request with a domain code the gateway does not know: 400/100."""
    conn = api.connection()
    try:
        conn.putrequest("GET", API_PREFIX, skip_accept_encoding=True)
        for name, value in signed_headers(API_PREFIX).items():
            conn.putheader(name, value)
        for code in codes:
            conn.putheader("x-ncp-dmn_cd", code)
        conn.endheaders()
        resp = conn.getresponse()
        status, body = resp.status, resp.read()
    finally:
        conn.close()
    assert status == 400
    assert json.loads(body) == {"error": {"errorCode": "100", "message": "Bad Request",
                                          "details": details}}
    assert [e["domain_code"] for e in api.log()] == [", ".join(codes)]


def test_log_keeps_raw_target(api):
    target = API_PREFIX + "/df%5fempty/widgets"   # lowercase hex, as sent
    assert api.signed_get(target)[0] == 200
    assert [e["target"] for e in api.log()] == [target]


# --------------------------------------------------------------------------
# faults
# --------------------------------------------------------------------------

def test_fault_latency(api):
    api.fault("latency", ms=400)
    t = time.monotonic()
    assert api.signed_get(CPU_TARGET)[0] == 200
    assert time.monotonic() - t >= 0.4
    t = time.monotonic()
    assert api.signed_get(CPU_TARGET)[0] == 200        # count 1: used up
    assert time.monotonic() - t < 0.3 * time_factor()
    assert [e["fault"] for e in api.log()] == ["latency", None]


def test_global_latency(api):
    api.set_latency(250)
    t = time.monotonic()
    assert api.get("/static/web/")[0] == 200
    assert api.signed_get(API_PREFIX)[0] == 200
    assert time.monotonic() - t >= 0.5
    t = time.monotonic()
    api.health()                                        # control is never delayed
    assert time.monotonic() - t < 0.2 * time_factor()


def test_fault_status_and_count(api):
    api.fault("status", status=503, count=2, retry_after="1")
    for _ in range(2):
        status, headers, body = api.signed_get(CPU_TARGET)
        assert status == 503
        assert headers["Retry-After"] == "1"
        assert headers["Content-Type"] == "application/json"
        assert error_of(body) == {"errorCode": "500", "message": "Endpoint Error"}
    assert api.signed_get(CPU_TARGET)[0] == 200
    assert [(e["status"], e["fault"]) for e in api.log()] == \
        [(503, "status"), (503, "status"), (200, None)]
    assert api.faults() == []


@pytest.mark.parametrize("status,code,message", [
    (400, "100", "Bad Request"), (401, "200", "Authentication Failed"),
    (403, "210", "Permission Denied"), (404, "300", "Not Found"),
    (413, "430", "Request Entity Too Large"),
    (429, "410", "Throttle Limited"), (500, "900", "Unexpected Error"),
    (504, "510", "Endpoint Timeout"),
])
def test_fault_status_defaults(api, status, code, message):
    api.fault("status", status=status)
    got, headers, body = api.signed_get(CPU_TARGET)
    assert got == status
    assert error_of(body) == {"errorCode": code, "message": message}
    assert headers.get("Retry-After") is None


def test_fault_status_custom(api):
    hostile = "9" * 10000
    api.fault("status", status=429, errorCode=400, message="Quota Exceeded", retry_after=hostile)
    status, headers, body = api.signed_get(CPU_TARGET)
    assert status == 429 and headers["Retry-After"] == hostile
    assert error_of(body) == {"errorCode": 400, "message": "Quota Exceeded"}
    api.fault("status", status=500, body="not json", content_type="text/plain")
    status, headers, body = api.signed_get(CPU_TARGET)
    assert (status, headers["Content-Type"], body) == (500, "text/plain", b"not json")


def test_fault_prefix_order_and_until_cleared(api):
    other = image_target(WEB, "mem_used__5678", DAY0, DAY1)
    api.fault("status", prefix=CPU_TARGET.split("?")[0], status=404, count=-1)
    api.fault("status", prefix="*", status=500, count=-1)
    for _ in range(3):
        assert api.signed_get(CPU_TARGET)[0] == 404     # the first matching fault wins
        assert api.signed_get(other)[0] == 500
    # "*" never applies to /static/ ...
    assert api.get("/static/web/")[0] == 200
    listed = api.faults()
    assert [(f["kind"], f["count"], f["hits"]) for f in listed] == [("status", -1, 3),
                                                                     ("status", -1, 3)]
    assert api.clear_faults() == {"cleared": 2}
    assert api.signed_get(CPU_TARGET)[0] == 200
    # ... but a /static prefix does.
    api.fault("status", prefix="/static/web/", status=503)
    assert api.get("/static/web/")[0] == 503
    assert api.get("/static/web/")[0] == 200


def test_fault_probability(api):
    api.fault("status", status=503, count=-1, probability=0.5)
    statuses = [api.signed_get(API_PREFIX)[0] for _ in range(40)]
    assert 0 < statuses.count(503) < 40
    assert set(statuses) == {200, 503}


def test_fault_hang(api):
    api.fault("hang")
    sock = socket.create_connection(("127.0.0.1", api.port), timeout=0.5)
    sock.sendall(raw_get(CPU_TARGET, signed_headers(CPU_TARGET)))
    with pytest.raises(socket.timeout):
        sock.recv(1)
    # The log (memory and file) shows the request with no status.
    entry = {"method": "GET", "target": CPU_TARGET, "status": None, "bytes": 0, "fault": "hang",
             "domain_code": None}
    assert [without_times(e) for e in api.log()] == [entry]
    assert [without_times(e) for e in api.file_log()] == [entry]
    sock.close()
    assert api.signed_get(CPU_TARGET)[0] == 200


def test_fault_reset(api):
    api.fault("reset")
    conn = api.connection()
    with pytest.raises(ConnectionResetError):
        conn.request("GET", CPU_TARGET, headers=signed_headers(CPU_TARGET))
        conn.getresponse()
    conn.close()
    api.fault("reset")
    got, err = raw_exchange(api.port, raw_get(CPU_TARGET, signed_headers(CPU_TARGET)))
    assert got == b"" and isinstance(err, ConnectionResetError)
    entry = {"method": "GET", "target": CPU_TARGET, "status": None, "bytes": 0, "fault": "reset",
             "domain_code": None}
    assert [without_times(e) for e in api.log()] == [entry, entry]
    assert api.signed_get(CPU_TARGET)[0] == 200


def test_fault_close(api):
    api.fault("close")
    got, err = raw_exchange(api.port, raw_get(CPU_TARGET, signed_headers(CPU_TARGET)))
    assert (got, err) == (b"", None)   # an orderly close, nothing sent


def test_fault_truncate(api):
    full = api.signed_get(CPU_TARGET)[2]
    api.fault("truncate", bytes=100)
    conn = api.connection()
    conn.request("GET", CPU_TARGET, headers=signed_headers(CPU_TARGET))
    resp = conn.getresponse()
    assert resp.status == 200 and int(resp.getheader("Content-Length")) == len(full)
    with pytest.raises(http.client.IncompleteRead) as exc:
        resp.read()
    assert exc.value.partial == full[:100]
    conn.close()
    assert api.log()[1]["bytes"] == 100 and api.log()[1]["fault"] == "truncate"
    # With rst: the connection is reset after the partial body.
    api.fault("truncate", bytes=10, rst=True)
    got, err = raw_exchange(api.port, raw_get(CPU_TARGET, signed_headers(CPU_TARGET)))
    assert isinstance(err, ConnectionResetError)
    # Without Content-Length: a close-delimited body that HTTP takes as complete.
    api.fault("truncate", bytes=100, content_length=False)
    conn = api.connection()
    conn.request("GET", CPU_TARGET, headers=signed_headers(CPU_TARGET))
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Length") is None
    assert resp.getheader("Connection") == "close"
    assert resp.read() == full[:100]
    conn.close()


def test_fault_stall(api):
    api.fault("stall", bytes=50)
    sock = socket.create_connection(("127.0.0.1", api.port), timeout=0.5)
    sock.sendall(raw_get(CPU_TARGET, signed_headers(CPU_TARGET)))
    got = b""
    with pytest.raises(socket.timeout):
        while True:
            data = sock.recv(65536)
            assert data
            got += data
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and len(body) == 50
    sock.close()


def test_fault_drip(api):
    full = api.signed_get(CPU_TARGET)[2]
    api.fault("drip", bytes_per_s=20)
    conn = api.connection()
    conn.request("GET", CPU_TARGET, headers=signed_headers(CPU_TARGET))
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Length") is None
    assert resp.getheader("Connection") == "close"
    t = time.monotonic()
    first = resp.read(8)
    elapsed = time.monotonic() - t
    assert first == full[:8]
    assert 0.3 <= elapsed < 3.0 * time_factor()   # 8 bytes at 20 B/s: about 0.4 s
    resp.close()                      # (the response holds the socket open too)
    conn.close()
    # The server notices the client left and logs what it sent.
    entry = wait_for(lambda: [e for e in api.file_log() if e["fault"] == "drip"], "drip entry")[0]
    assert entry["status"] == 200 and 8 <= entry["bytes"] < len(full)


def test_fault_notpng_and_nopngiend(api):
    full = api.signed_get(CPU_TARGET)[2]
    api.fault("notpng", body="<html>maintenance</html>", content_type="text/html")
    status, headers, body = api.signed_get(CPU_TARGET)
    assert (status, headers["Content-Type"], body) == (200, "text/html", b"<html>maintenance</html>")
    api.fault("nopngiend")
    status, headers, body = api.signed_get(CPU_TARGET)
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert body == full[:-12] and int(headers["Content-Length"]) == len(body)
    assert [t for t, _ in png_chunks(body)][-1] == b"IDAT"


def test_fault_oversize(api):
    api.fault("oversize", bytes=3000000)
    status, headers, body = api.signed_get(CPU_TARGET)
    assert status == 200 and int(headers["Content-Length"]) == 3000000
    assert len(body) == 3000000 and body[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"IEND" not in body
    assert api.log()[0]["bytes"] == 3000000


def test_fault_endless(api):
    api.fault("endless")
    conn = api.connection()
    conn.request("GET", CPU_TARGET, headers=signed_headers(CPU_TARGET))
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Transfer-Encoding") == "chunked"
    got = 0
    while got < 4 << 20:
        data = resp.read(1 << 16)
        assert data
        got += len(data)
    resp.close()
    conn.close()
    entry = wait_for(lambda: [e for e in api.file_log() if e["fault"] == "endless"],
                     "endless entry")[0]
    assert entry["status"] == 200 and entry["bytes"] >= 4 << 20
    # Close-delimited variant.
    api.fault("endless", chunked=False)
    conn = api.connection()
    conn.request("GET", CPU_TARGET, headers=signed_headers(CPU_TARGET))
    resp = conn.getresponse()
    assert resp.getheader("Transfer-Encoding") is None and resp.getheader("Content-Length") is None
    assert len(resp.read(1 << 20)) == 1 << 20
    resp.close()
    conn.close()


def test_fault_redirect(api):
    api.fault("redirect", location="http://127.0.0.1:9/elsewhere")
    status, headers, body = api.signed_get(CPU_TARGET)
    assert (status, headers["Location"], body) == (302, "http://127.0.0.1:9/elsewhere", b"")
    api.fault("redirect", status=301)
    status, headers, _ = api.signed_get(CPU_TARGET)
    assert status == 301 and headers["Location"] == "%s/redirected" % api.url


def test_bad_fault_refused(api):
    from client import ControlError
    for spec in ({"kind": "explode"}, {"kind": "status"}, {"kind": "latency", "ms": -1},
                 {"kind": "status", "status": 503, "count": 0},
                 {"kind": "status", "status": 503, "probability": 2},
                 {"kind": "truncate", "content_length": "no"}):
        with pytest.raises(ControlError, match="HTTP 400"):
            api.control("POST", "fault", spec)
    assert api.faults() == []


# --------------------------------------------------------------------------
# connections
# --------------------------------------------------------------------------

def test_keep_alive_on_one_connection(api):
    before = api.stats()["connections"]
    conn = api.connection()
    for target in (API_PREFIX, CPU_TARGET, API_PREFIX + "/nope/widgets"):
        status, _, _ = api.signed_get(target, conn=conn)
        assert status in (200, 404)
    # One connection for the three requests, one for this stats call.
    assert api.stats()["connections"] == before + 2
    conn.close()


def test_listen_backlog(api):
    if shutil.which("ss") is None:
        pytest.skip("ss(8) not installed")
    out = subprocess.run(["ss", "-Hltn", "sport = :%d" % api.port],
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    backlog = int(out.split()[2])   # Send-Q of a listening socket is its backlog
    assert backlog >= 128


def test_many_concurrent_connections(api):
    socks = [socket.create_connection(("127.0.0.1", api.port), timeout=5) for _ in range(150)]
    try:
        assert api.signed_get(API_PREFIX)[0] == 200
    finally:
        for s in socks:
            s.close()


def test_sigterm_with_hung_request(tmp_path):
    server = LocalAPI().start(tmp_path)
    server.fault("hang")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(raw_get(CPU_TARGET, signed_headers(CPU_TARGET)))
    wait_for(lambda: server.log(), "the hung request")
    t = time.monotonic()
    server.stop()                                  # asserts exit status 0
    assert time.monotonic() - t < 3 * time_factor()
    assert sock.recv(1) == b""                     # the held connection is closed
    sock.close()


def test_sigint_exits_zero(tmp_path):
    LocalAPI().start(tmp_path).stop(signal.SIGINT)


# --------------------------------------------------------------------------
# /static/
# --------------------------------------------------------------------------

def test_static_tree(api):
    status, headers, body = api.get("/static/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    for href in (b'href="web/"', b'href="db/"', b'href="empty/"', b'href="we_ird_.name/"'):
        assert href in body
    status, _, body = api.get("/static/db/")
    assert b'href="qps/"' in body and b'href="disk_io__77/"' in body
    status, _, body = api.get("/static/we_ird_.name/")
    assert b'href="a_b/"' in body and b'href="w2/"' in body
    status, _, body = api.get("/static/web/cpu/")
    files = [b"%d-%d.png" % (DAY0 + i * 86400000, DAY0 + (i + 1) * 86400000) for i in range(4)]
    for name in files:
        assert b'href="' + name + b'"' in body
    status, headers, _ = api.get("/static/web")
    assert (status, headers["Location"]) == (301, "/static/web/")
    for missing in ("/static/nope/", "/static/web/nope/", "/static/web/cpu/5-4.png",
                    "/static/web/cpu/x.png"):
        assert api.get(missing)[0] == 404, missing


def test_static_file_matches_api(api):
    png = api.signed_get(CPU_TARGET)[2]
    status, headers, body = api.get("/static/web/cpu/%d-%d.png" % (DAY0, DAY1))
    assert status == 200 and body == png
    assert headers["Content-Type"] == "image/png"
    assert headers["Last-Modified"] == "Mon, 02 Dec 2024 00:00:00 GMT"
    assert headers["Accept-Ranges"] == "bytes"
    # By id too, and @high.
    assert api.get("/static/%s/%s/%d-%d.png" % (WEB, CPU, DAY0, DAY1))[2] == png
    high = api.signed_get(image_target(WEB, CPU, DAY0, DAY1, "HIGH"))[2]
    assert api.get("/static/web/cpu/%d-%d@high.png" % (DAY0, DAY1))[2] == high
    # HEAD
    status, headers, body = api.get("/static/web/cpu/%d-%d.png" % (DAY0, DAY1), method="HEAD")
    assert (status, body, int(headers["Content-Length"])) == (200, b"", len(png))
    # Ranges
    path = "/static/web/cpu/%d-%d.png" % (DAY0, DAY1)
    status, headers, body = api.get(path, {"Range": "bytes=10-19"})
    assert (status, body, headers["Content-Range"]) == (206, png[10:20],
                                                         "bytes 10-19/%d" % len(png))
    status, _, body = api.get(path, {"Range": "bytes=-16"})
    assert (status, body) == (206, png[-16:])
    status, _, body = api.get(path, {"Range": "bytes=100-"})
    assert (status, body) == (206, png[100:])
    status, headers, _ = api.get(path, {"Range": "bytes=%d-" % len(png)})
    assert (status, headers["Content-Range"]) == (416, "bytes */%d" % len(png))
    # Conditional requests
    status, headers, _ = api.get(path)
    assert api.get(path, {"If-None-Match": headers["ETag"]})[0] == 304
    assert api.get(path, {"If-Modified-Since": headers["Last-Modified"]})[0] == 304
    # Static requests are logged, unsigned requests never reach the API.
    assert all(e["status"] in (200, 206, 304, 416) for e in api.requests("/static/"))


# --------------------------------------------------------------------------
# HTTPS
# --------------------------------------------------------------------------

def _tls_get(server, ca, host="127.0.0.1"):
    ctx = ssl.create_default_context(cafile=ca)
    conn = http.client.HTTPSConnection(host, server.port, timeout=5, context=ctx)
    try:
        conn.request("GET", API_PREFIX, headers=signed_headers(API_PREFIX))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_https_valid(tmp_path, certset):
    with LocalAPI().start(tmp_path, tls=certset.valid) as server:
        assert server.url == "https://127.0.0.1:%d" % server.port
        for host in ("127.0.0.1", "localhost"):
            status, body = _tls_get(server, certset.ca, host)
            assert status == 200 and json.loads(body)[0]["name"] == "web"
        assert [e["status"] for e in server.requests()] == [200, 200]
        # Faults work over TLS too, the reset included.
        server.fault("reset")
        with pytest.raises((ConnectionResetError, ssl.SSLError, http.client.RemoteDisconnected)):
            _tls_get(server, certset.ca)
        assert server.signed_get(CPU_TARGET)[0] == 200


@pytest.mark.parametrize("which,reason", [
    ("wrong_host", "match"), ("expired", "expired"), ("unknown_ca", "local issuer"),
])
def test_https_refused(tmp_path, certset, which, reason):
    with LocalAPI().start(tmp_path, tls=getattr(certset, which)) as server:
        with pytest.raises(ssl.SSLCertVerificationError, match=reason):
            _tls_get(server, certset.ca)
        # No HTTP request reached the server; the failed handshake is counted.
        wait_for(lambda: server.stats()["tls_handshake_failures"] == 1, "handshake failure")
        assert server.log() == []
