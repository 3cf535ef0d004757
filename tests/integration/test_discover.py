"""discover = true on a real mount (SPEC 4, Discovery): the configured entries first,
then what GetDashboardList / GetDashboardWidgetList give, sanitized, with collisions
suffixed; refreshed only when older than discover_ttl_s; failures fall back to the last
good list, or to the configured entries with the refresh's errno for unknown names.
Request counts come from the local API's log."""
import errno
import os
import signal
import subprocess
import time

from conftest import TIME_FACTOR, wait_for
from client import image_target
from test_engine import Crowd, api_settings, bounded, hung, img, stat_errno, stats, wait_monotonic

LIST = "/cw_fea/real/cw/api/chart/dashboard"
WEB = "df_457958429047263232"

CONFIGURED = """discover = true;
dashboards = (
  { name = "web"; id = "df_457958429047263232";
    widgets = ( { name = "cpu"; id = "cpu_avg__1234"; } ); },
  { name = "empty"; id = "mine"; widgets = (); }
);
"""


def listing(path):
    return sorted(os.listdir(path)), os.listdir(path)


def targets(api):
    return [e["target"] for e in api.requests()]


def errno_of(call, *args):
    try:
        call(*args)
    except OSError as e:
        return e.errno
    return 0


def test_configured_first_then_discovered_sanitized_and_suffixed(api, config, mount):
    m = mount(config(api_extra="  retries = 0;\n", body=CONFIGURED))
    api.clear_log()
    # web is configured (its API twin is dropped: configured wins by id); "empty" is
    # taken by a configured entry, so the API's df_empty becomes "empty (df_empty)".
    assert os.listdir(m.mnt) == ["web", "empty", "db", "empty (df_empty)", "we_ird_.name"]
    assert targets(api) == [LIST]
    # Configured widgets first, then the discovered ones of the same dashboard.
    assert os.listdir(m.path("web")) == ["cpu", "memory", "network in"]
    assert os.listdir(m.path("we_ird_.name")) == ["a_b", "w2"]
    assert os.listdir(m.path("db")) == ["qps", "disk_io__77"]
    assert targets(api) == [LIST, LIST + "/%s/widgets" % WEB, LIST + "/df_weird/widgets",
                            LIST + "/1000123/widgets"]
    # Within discover_ttl_s nothing is asked again, and ids reach the same entries.
    assert os.listdir(m.mnt)[2:] == ["db", "empty (df_empty)", "we_ird_.name"]
    assert os.listdir(m.path("1000123")) == ["qps", "disk_io__77"]
    assert len(api.requests()) == 4
    # A discovered widget serves its graph.
    api.clear_log()
    with open(m.path("db", "qps", "20241202T0000Z-20241203T0000Z.png"), "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert targets(api) == [image_target("1000123", "555", 1733097600000, 1733184000000)]


def test_unknown_name_refreshes_once_then_enoent(api, config, mount):
    m = mount(config(api_extra="  retries = 0;\n", body=CONFIGURED))
    api.clear_log()
    # The first lookup of an unknown name asks the API; the answer is then fresh.
    assert errno_of(os.stat, m.path("nope")) == errno.ENOENT
    assert targets(api) == [LIST]
    assert errno_of(os.stat, m.path("nope2")) == errno.ENOENT
    assert os.stat(m.path("db")).st_mode & 0o777 == 0o555
    assert targets(api) == [LIST]


def test_refresh_failure_without_a_good_list(api, config, mount):
    m = mount(config(api_extra="  retries = 0;\n",
                     body=CONFIGURED + "cache = { error_ttl_s = 1; };\n"))
    api.fault("status", prefix=LIST, count=-1, status=503, errorCode="500",
              message="Endpoint Error")
    # Listings show the configured entries; an unknown name gets the errno, never ENOENT.
    assert os.listdir(m.mnt) == ["web", "empty"]
    assert errno_of(os.stat, m.path("db")) == errno.EIO
    assert os.listdir(m.path("web")) == ["cpu"]
    # One failed refresh of each list, remembered for error_ttl_s (10 s by default).
    assert targets(api) == [LIST, LIST + "/%s/widgets" % WEB]
    api.clear_faults()
    api.fault("status", prefix=LIST, count=-1, status=401, errorCode="200",
              message="Authentication Failed")
    failed_at = time.monotonic()
    wait_for(lambda: time.monotonic() - failed_at > 1.1, 5, "error_ttl_s")
    assert errno_of(os.stat, m.path("db")) == errno.EACCES
    # Configured entries keep working.
    assert os.stat(m.path("web", "cpu")).st_mode & 0o777 == 0o555


def test_refresh_failure_keeps_the_last_good_list(api, config, mount):
    m = mount(config(api_extra="  retries = 0;\n", body=CONFIGURED + "discover_ttl_s = 10;\n"))
    before = os.listdir(m.mnt)
    assert before == ["web", "empty", "db", "empty (df_empty)", "we_ird_.name"]
    listed_at = time.monotonic()
    api.fault("status", prefix=LIST, count=-1, status=503, errorCode="500",
              message="Endpoint Error")
    api.clear_log()
    # discover_ttl_s is 10 s: wait until the list is due for a refresh.
    wait_for(lambda: time.monotonic() - listed_at > 10.5, 15 / TIME_FACTOR + 5, "discover_ttl_s")
    assert os.listdir(m.mnt) == before
    assert targets(api) == [LIST]  # the refresh was tried, failed, and the old list stayed
    # The failure is remembered for error_ttl_s: no new request for an unknown name.
    assert errno_of(os.stat, m.path("nope")) == errno.ENOENT
    assert os.listdir(m.mnt) == before
    assert targets(api) == [LIST]


def test_breaker_fast_fail_is_not_remembered(api, config, mount):
    """SPEC 6: breaker failures are not remembered failures. A refresh of the dashboards'
    list that the open breaker fails at once (no request) is asked again as soon as the
    breaker closes, not after error_ttl_s (60 s here): before the fix an unknown name in /
    kept getting EIO, and listings showed only the configured entries, for a minute."""
    m = mount(config(api_extra=api_settings(timeout_ms=1000, connect_timeout_ms=500, retries=0),
                     body=CONFIGURED + "cache = { error_ttl_s = 60; };\n"))
    # The breaker wants no answer for timeout_ms as well as 3 failed tries.
    wait_monotonic(time.monotonic() + 1.1)
    api.fault("status", count=-1, status=503)
    for i in range(3):
        assert stat_errno(img(m, i)) == errno.EIO
    wait_for(lambda: "insightfs: warn: upstream down: EIO" in m.stderr(), 5, "the breaker")
    api.clear_log()
    # Within the probe interval (1 s after the last failed try): failed at once, unasked.
    assert errno_of(os.stat, m.path("db")) == errno.EIO
    assert targets(api) == []
    api.clear_faults()
    # The probe (the first fetch after the probe interval) gets an answer: closed.
    k = [100]

    def fetched():
        k[0] += 1
        return bounded(lambda: stat_errno(img(m, k[0])), 5, "a stat") == 0
    wait_for(fetched, 40, "a new name to be fetched after recovery")
    assert "insightfs: info: upstream up after" in m.stderr()
    api.clear_log()
    assert os.stat(m.path("db")).st_mode & 0o777 == 0o555
    assert os.listdir(m.mnt) == ["web", "empty", "db", "empty (df_empty)", "we_ird_.name"]
    assert targets(api) == [LIST]


def test_lookup_kept_for_discovery_holds_up_no_other_name(api, config, mount):
    """A LOOKUP of an unknown name in / is kept while the dashboards' list is refreshed;
    with the API hung that lasts up to its deadline. LOOKUPs of other names in / answer
    at once meanwhile: the daemon sends FUSE_PARALLEL_DIROPS (fs_io.c), which libfuse
    3.14 leaves out, so the kernel does not queue them behind the kept one."""
    deadline_s = 10 * TIME_FACTOR
    m = mount(config(api_extra="  retries = 0;\n  timeout_ms = %d;\n" % (deadline_s * 1000),
                     body=CONFIGURED))
    api.fault("hang", prefix=LIST, count=-1)
    api.clear_log()
    waiter = subprocess.Popen(["stat", m.path("nope")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: hung(api), 5, "the hung refresh of the dashboards' list")
        assert waiter.poll() is None  # its LOOKUP is kept
        # Names of / that were never looked up: a configured dashboard, /.insightfs.
        t0 = time.monotonic()
        st = bounded(lambda: os.stat(m.path("web")), 2, "a LOOKUP of / beside the kept one")
        assert st.st_mode & 0o777 == 0o555
        with open(m.path(".insightfs", "stats"), "rb") as f:
            assert f.read().startswith(b'{"cache":')
        assert time.monotonic() - t0 < deadline_s / 2
        assert waiter.poll() is None  # still kept: the others did not wait for it
    finally:
        waiter.send_signal(signal.SIGINT)  # an interrupted kept LOOKUP answers EINTR at once
        waiter.communicate(timeout=5 * TIME_FACTOR)
    assert waiter.returncode == -signal.SIGINT
    assert targets(api) == [LIST]


def test_single_flight_holds_at_error_ttl_0(api, config, mount):
    """Item 6 of the request engine issue: with error_ttl_s = 0 (failures not remembered),
    LOOKUPs that wait for one refresh of the dashboards' list still share it and its
    failure. 8 of unknown names against a hung API: one request, and all 8 get ETIMEDOUT
    at its deadline (before the fix: 5 requests one after another, and 3 ETIMEDOUT)."""
    m = mount(config(api_extra="  retries = 0;\n  timeout_ms = %d;\n" % (2000 * TIME_FACTOR),
                     body=CONFIGURED + "cache = { error_ttl_s = 0; };\n"))
    api.fault("hang", prefix=LIST, count=-1)
    api.clear_log()
    crowd = Crowd(lambda i: errno_of(os.stat, m.path("nope%d" % i)), [(i,) for i in range(8)])
    crowd.release()
    wait_for(lambda: stats(m)["upstream"]["waiting"] == 8, 5, "8 LOOKUPs kept on one refresh")
    # The refresh's one request may reach the API after the 8 are kept (a slow build).
    wait_for(lambda: hung(api), 5, "the hung refresh of the dashboards' list")
    assert targets(api) == [LIST]
    assert crowd.join(2 * TIME_FACTOR + 10) == [errno.ETIMEDOUT] * 8
    assert targets(api) == [LIST]
    assert stats(m)["upstream"]["waiting"] == 0


# A configured dashboard named like a discovered id. "df_222" names the configured
# dashboard (id df_111); the API's df_222 is discovered as "DB". Names resolve name first
# ("df_222" is the configured one), but what a directory stores is an id, and an id must
# lead back to its own dashboard: DB's directory is df_222's, whatever names say.
COLLIDING = """discover = true;
dashboards = (
  { name = "df_222"; id = "df_111"; widgets = (); }
);
"""
COLLIDING_DATA = [
    {"id": "df_111", "name": "first", "widgets": [{"widgetId": "w_a", "name": "a"}]},
    {"id": "df_222", "name": "DB", "widgets": [{"widgetId": "w_b", "name": "b"},
                                                {"widgetId": "w_c", "name": "c"}]},
]
DAY = (1733097600000, 1733184000000)  # 20241202T0000Z-20241203T0000Z


def test_configured_name_equal_to_a_discovered_id(api, config, mount):
    api.set_data(COLLIDING_DATA)
    m = mount(config(api_extra="  retries = 0;\n", body=COLLIDING))
    assert os.listdir(m.mnt) == ["df_222", "DB"]
    # DB is df_222: its widgets, not those of the dashboard whose name is "df_222".
    assert os.listdir(m.path("DB")) == ["b", "c"]
    assert os.listdir(m.path("df_222")) == ["a"]
    assert os.listdir(m.path("df_111")) == ["a"]
    assert errno_of(os.stat, m.path("df_222", "b")) == errno.ENOENT
    assert errno_of(os.stat, m.path("DB", "a")) == errno.ENOENT
    # Looked up (not only listed), DB's widgets serve df_222's graphs.
    for dash, widget, ids in (("DB", "b", ("df_222", "w_b")), ("DB", "w_c", ("df_222", "w_c")),
                              ("df_222", "a", ("df_111", "w_a"))):
        api.clear_log()
        with open(m.path(dash, widget, "20241202T0000Z-20241203T0000Z.png"), "rb") as f:
            data = f.read()
        target = image_target(ids[0], ids[1], *DAY)
        assert targets(api) == [target]
        status, _, body = api.signed_get(target)
        assert status == 200 and data == body


def test_fetch_configured_name_equal_to_a_discovered_id(api, config, run_insightfs):
    api.set_data(COLLIDING_DATA)
    cfg = config(api_extra="  retries = 0;\n", body=COLLIDING)
    for path, ids in (("DB/b/", ("df_222", "w_b")), ("/df_222/a/", ("df_111", "w_a")),
                      ("df_111/w_a/", ("df_111", "w_a")), ("DB/c/days/", ("df_222", "w_c"))):
        api.clear_log()
        name = "2024-12-02.png" if path.endswith("days/") else "20241202T0000Z-20241203T0000Z.png"
        p = run_insightfs(["--fetch", path + name, "--config", cfg])
        assert p.returncode == 0, p.stderr
        target = image_target(ids[0], ids[1], *DAY)
        assert [t for t in targets(api) if "?" in t] == [target]
        status, _, body = api.signed_get(target)
        assert status == 200 and p.stdout == body
    p = run_insightfs(["--fetch", "df_222/b/20241202T0000Z-20241203T0000Z.png", "--config", cfg])
    assert p.returncode == 1 and p.stdout == b""
    assert p.stderr.decode().endswith(
        "insightfs: df_222/b/20241202T0000Z-20241203T0000Z.png: No such file or directory\n")


def test_ids_nothing_can_address_are_left_out(api, config, mount):
    # "." and ".." cannot be path segments of a request and no configuration may name an
    # id with a control character: a mount leaves such entries out of its listings (one
    # warn line per list answer) and never asks for them; the others work as usual.
    api.set_data([{"id": "..", "name": "up", "widgets": [{"widgetId": "w", "name": "w"}]},
                  {"id": "good", "name": "good", "widgets": [
                      {"widgetId": ".", "name": "dot"}, {"widgetId": "t\tab", "name": "tab"},
                      {"widgetId": "fine", "name": "fine"}]}])
    m = mount(config(api_extra="  retries = 0;\n", body="discover = true;\n"))
    api.clear_log()
    assert os.listdir(m.mnt) == ["good"]
    assert os.listdir(m.path("good")) == ["fine"]
    for parent, name in ((m.mnt, "up"), (m.path("good"), "dot"), (m.path("good"), "tab")):
        assert errno_of(os.stat, os.path.join(parent, name)) == errno.ENOENT
    assert targets(api) == [LIST, LIST + "/good/widgets"]
    with open(m.path("good", "fine", "20241202T0000Z-20241203T0000Z.png"), "rb") as f:
        data = f.read()
    target = image_target("good", "fine", *DAY)
    assert targets(api)[2:] == [target]
    status, _, body = api.signed_get(target)
    assert status == 200 and data == body
    why = ('left out (an id that is empty, "." or "..", or has a control character, can be '
           'neither asked for nor configured)')
    wait_for(lambda: m.stderr().count(why) == 2, 5, "two warn lines")
    assert "insightfs: warn: upstream: GET %s: 1 entry %s\n" % (LIST, why) in m.stderr()
    assert "insightfs: warn: upstream: GET %s/good/widgets: 2 entries %s\n" % (LIST, why) \
        in m.stderr()
