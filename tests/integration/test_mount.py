"""The mounted filesystem against the local API: names, listings, attributes, bytes,
read-only-ness, xattrs, stats, statfs, signals, refresh and the mount helper
(SPEC sections 2, 4, 5, 7, 12).

Every test asserts exact values: bytes equal to what the local API answers for the
request target the SPEC prescribes, exact errno, exact upstream request counts taken
from the local API's request log.

Expected bytes come from a second, independent local API process (the `oracle`): the
images depend only on (dashboard, widget, start, end, mode), the same on every run
(tests/localapi/README.md), and asking the oracle leaves the mounted API's request log
untouched, so counts stay exact.

Known clock: the daemon runs with INSIGHTFS_TEST_CLOCK_OFFSET_MS and the local API with
the same clock offset (so signatures and its 5-minute check stay valid), placing "now"
at VNOW = 2024-12-02T10:30:00Z; with align_s = 3600, T = 2024-12-02T10:00:00Z for half
an hour of real time. settle_s = 3600 keeps windows that end at T live (a version is final
iff its end < signing time - settle_s); past days and FIN stay final.
"""
import ctypes
import errno
import json
import os
import shlex
import signal
import stat
import subprocess
import threading
import time

import pytest

from conftest import (BIN, DEFAULT_DASHBOARDS, TIME_FACTOR, VALGRIND, bin_cmd, is_mounted,
                      make_config, wait_for)
from client import LocalAPI, image_target, now_ms

DASH = "df_457958429047263232"   # web
CPU = "cpu_avg__1234"             # web/cpu

HOUR = 3600 * 1000
DAY = 86400 * 1000
VNOW = 1733135400000              # 2024-12-02T10:30:00Z (19:30 in Asia/Seoul)
T = 1733133600000                 # VNOW rounded down to align_s = 3600
UTC_DAY = {"2024-12-02": 1733097600000, "2024-12-01": 1733011200000,
           "2024-11-30": 1732924800000, "2024-12-03": 1733184000000}
KST_DAY = {k: v - 9 * HOUR for k, v in UTC_DAY.items()}   # first instant of the day in +09:00

# A final range (it ended long before any fetch): 2024-11-30 00:00 to 12:00 UTC.
FIN_S, FIN_E = 1732924800000, 1732968000000
FIN = "%d-%d" % (FIN_S, FIN_E)

DT_DIR, DT_REG = 4, 8


# ---- helpers -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """An independent local API that computes the expected bytes of a request target."""
    server = LocalAPI().start(str(tmp_path_factory.mktemp("oracle")))
    cache = {}

    def expect(target):
        if target not in cache:
            status, _, body = server.signed_get(target)
            assert status == 200, (target, status, body[:200])
            cache[target] = body
        return cache[target]

    yield expect
    server.stop()


def body(presets=("last-1h", "today"), history_days=3, cache="", tm="align_s = 3600;",
         dashboards=DEFAULT_DASHBOARDS):
    """The part of a configuration after `api`."""
    text = "presets = [ %s ];\nhistory_days = %d;\n" % (
        ", ".join('"%s"' % p for p in presets), history_days)
    # settle_s = 3600: relative windows ending at T (30 minutes before VNOW) are live.
    text += "cache = { settle_s = 3600; %s };\n" % cache
    if tm:
        text += "time = { %s };\n" % tm
    return text + dashboards


def fixed_clock(api):
    """Shift the local API's clock so that now is VNOW; the daemon's env for the same."""
    offset = VNOW - now_ms()
    api.set_clock(offset)
    return offset, {"INSIGHTFS_TEST_CLOCK_OFFSET_MS": str(offset)}


def targets(api):
    return [e["target"] for e in api.requests()]


def img(start, end, mode="AUTO", d=DASH, w=CPU):
    return image_target(d, w, start, end, mode)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def enoent(path):
    """The errno of stat(path) and of open(path) (they must agree)."""
    codes = []
    for call in (os.stat, lambda p: os.close(os.open(p, os.O_RDONLY))):
        try:
            call(path)
            codes.append(0)
        except OSError as e:
            codes.append(e.errno)
    return codes


_libc = ctypes.CDLL(None, use_errno=True)


class _Dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]


_libc.opendir.restype = ctypes.c_void_p
_libc.opendir.argtypes = [ctypes.c_char_p]
_libc.readdir.restype = ctypes.POINTER(_Dirent)
_libc.readdir.argtypes = [ctypes.c_void_p]
_libc.closedir.argtypes = [ctypes.c_void_p]


def readdir(path):
    """Every entry of path in readdir order, "." and ".." included: [(name, d_type)]."""
    d = _libc.opendir(path.encode())
    if not d:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    out = []
    try:
        while True:
            ctypes.set_errno(0)
            ent = _libc.readdir(d)
            if not ent:
                assert ctypes.get_errno() == 0
                return out
            out.append((ent.contents.d_name.decode(), ent.contents.d_type))
    finally:
        _libc.closedir(d)


def scandir_kinds(path):
    """os.scandir in readdir order: [(name, 'd'|'f')] from d_type (no stat)."""
    out = []
    with os.scandir(path) as it:
        for e in it:
            assert e.is_dir(follow_symlinks=False) != e.is_file(follow_symlinks=False)
            out.append((e.name, "d" if e.is_dir(follow_symlinks=False) else "f"))
    return out


def stats(m):
    with open(m.path(".insightfs", "stats"), "rb") as f:
        text = f.read()
    assert text.endswith(b"\n") and text.count(b"\n") == 1
    return json.loads(text)


def log_line(m, text):
    return any(text in line for line in m.stderr().splitlines())


# ---- listings and lookups ------------------------------------------------------------

def test_listings_in_config_order_and_no_fetch(api, config, mount):
    offset, env = fixed_clock(api)
    m = mount(config(body=body(presets=("today", "last-1h", "yesterday"))), env=env)

    assert readdir(m.mnt) == [(".", DT_DIR), ("..", DT_DIR), ("web", DT_DIR), ("db", DT_DIR)]
    assert readdir(m.path("web")) == [(".", DT_DIR), ("..", DT_DIR), ("cpu", DT_DIR),
                                      ("memory", DT_DIR), ("network in", DT_DIR)]
    assert readdir(m.path("db")) == [(".", DT_DIR), ("..", DT_DIR), ("qps", DT_DIR),
                                     ("disk_io__77", DT_DIR)]
    assert readdir(m.path("web", "cpu")) == [
        (".", DT_DIR), ("..", DT_DIR), ("today.png", DT_REG), ("last-1h.png", DT_REG),
        ("yesterday.png", DT_REG), ("days", DT_DIR)]
    assert readdir(m.path("web", "cpu", "days")) == [
        (".", DT_DIR), ("..", DT_DIR), ("2024-12-02.png", DT_REG), ("2024-12-01.png", DT_REG),
        ("2024-11-30.png", DT_REG)]
    # The same through os.listdir / os.scandir (d_type, no stat).
    assert os.listdir(m.mnt) == ["web", "db"]
    assert scandir_kinds(m.path("db", "qps")) == [("today.png", "f"), ("last-1h.png", "f"),
                                                  ("yesterday.png", "f"), ("days", "d")]
    assert scandir_kinds(m.path("1000123", "555", "days")) == [
        ("2024-12-02.png", "f"), ("2024-12-01.png", "f"), ("2024-11-30.png", "f")]
    # .insightfs is reachable but never listed.
    assert stat.S_ISDIR(os.stat(m.path(".insightfs")).st_mode)
    assert ".insightfs" not in os.listdir(m.mnt)
    # Plain listings (and even walking the tree without stat) never fetch.
    for _ in os.walk(m.mnt):
        pass
    assert api.requests() == []


def test_lookup_by_id_shares_the_fetch(api, config, mount, oracle):
    offset, env = fixed_clock(api)
    m = mount(config(body=body()), env=env)
    by_name = read(m.path("web", "cpu", "last-1h.png"))
    expect = img(T - HOUR, T)
    assert targets(api) == [expect]
    for p in ((DASH, CPU), ("web", CPU), (DASH, "cpu")):
        assert read(m.path(*p, "last-1h.png")) == by_name
        assert os.stat(m.path(*p, "last-1h.png")).st_ino == \
            os.stat(m.path("web", "cpu", "last-1h.png")).st_ino
    assert targets(api) == [expect]
    assert by_name == oracle(expect)
    # Integer and missing-name entries by id too.
    assert read(m.path("1000123", "555", FIN + ".png")) == \
        oracle(img(FIN_S, FIN_E, d="1000123", w="555"))
    assert read(m.path("db", "disk_io__77", FIN + ".png")) == \
        oracle(img(FIN_S, FIN_E, d="1000123", w="disk_io__77"))
    assert len(api.requests()) == 3


# ---- attributes ----------------------------------------------------------------------

def test_file_and_directory_attributes(api, config, mount, oracle):
    offset, env = fixed_clock(api)
    before_mount = time.time_ns()
    m = mount(config(body=body()), env=env)
    # The mount shows in /proc/mounts before the daemon has answered INIT; the first
    # answered request comes after INIT, so it bounds the time the mount was ready.
    os.stat(m.path())
    after_mount = time.time_ns()

    # A final range: mtime = atime = ctime = END.
    p = m.path("web", "cpu", FIN + ".png")
    data = read(p)
    assert data == oracle(img(FIN_S, FIN_E))
    st = os.stat(p)
    assert st.st_size == len(data)
    assert st.st_blocks == (len(data) + 511) // 512
    assert st.st_blksize == 4096
    assert st.st_mode == stat.S_IFREG | 0o444
    assert st.st_nlink == 1
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
    assert st.st_mtime_ns == st.st_atime_ns == st.st_ctime_ns == FIN_E * 10**6

    # A live one: the signing time of its fetch (the shifted clock).
    lo = now_ms() + offset
    p = m.path("web", "cpu", "last-1h.png")
    st = os.stat(p)
    hi = now_ms() + offset
    data = read(p)
    assert data == oracle(img(T - HOUR, T))
    assert st.st_size == len(data) and st.st_blocks == (len(data) + 511) // 512
    assert st.st_mode == stat.S_IFREG | 0o444 and st.st_nlink == 1
    signed = int(os.getxattr(p, "user.insightfs.fetched_at"))
    assert lo - 5 <= signed <= hi + 5
    assert st.st_mtime_ns == st.st_atime_ns == st.st_ctime_ns == signed * 10**6
    assert len(api.requests()) == 2

    # Directories: 0555, 2 + subdirectories, size 0, times = when the mount was ready.
    dirs = {(): 2 + 2 + 1,                     # web, db, .insightfs
            ("web",): 2 + 3, ("db",): 2 + 2, ("web", "cpu"): 2 + 1,
            (".insightfs",): 2, ("web", "cpu", "days"): 2}
    for parts, nlink in dirs.items():
        st = os.stat(m.path(*parts))
        assert st.st_mode == stat.S_IFDIR | 0o555, parts
        assert st.st_nlink == nlink, parts
        assert st.st_size == 0, parts
        assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
        assert st.st_mtime_ns == st.st_atime_ns == st.st_ctime_ns, parts
        if parts == ("web", "cpu", "days"):
            assert st.st_mtime_ns == UTC_DAY["2024-12-02"] * 10**6   # start of today
        else:
            assert before_mount <= st.st_mtime_ns <= after_mount, parts


def test_uid_gid_options(api, config, mount):
    m = mount(config(body=body()), args=("-o", "uid=1234,gid=5678"))
    for parts in ((), ("web",), ("web", "cpu"), ("web", "cpu", "days"), (".insightfs",),
                  (".insightfs", "stats"), ("web", "cpu", FIN + ".png")):
        st = os.stat(m.path(*parts))
        assert (st.st_uid, st.st_gid) == (1234, 5678), parts
    assert len(api.requests()) == 1


# ---- names that mean the same image ---------------------------------------------------

def test_spellings_share_one_fetch(api, config, mount, oracle):
    offset, env = fixed_clock(api)
    m = mount(config(body=body()), env=env)
    w = m.path("web", "cpu")

    # ISO and epoch spellings of one range.
    names = [FIN + ".png", "20241130T0000Z-20241130T1200Z.png",
             "20241130T000000Z-1732968000000.png", "1732924800000-20241130T120000Z.png",
             FIN + "@auto.png"]
    got = {read(os.path.join(w, n)) for n in names}
    assert got == {oracle(img(FIN_S, FIN_E))}
    assert len({os.stat(os.path.join(w, n)).st_ino for n in names}) == 1
    assert targets(api) == [img(FIN_S, FIN_E)]

    # @high is its own image, sent with widgetResolutionMode=HIGH.
    high = read(os.path.join(w, FIN + "@high.png"))
    assert high == oracle(img(FIN_S, FIN_E, "HIGH")) and high != oracle(img(FIN_S, FIN_E))
    assert targets(api) == [img(FIN_S, FIN_E), img(FIN_S, FIN_E, "HIGH")]
    assert read(os.path.join(w, "20241130T0000Z-20241130T1200Z@high.png")) == high
    assert len(api.requests()) == 2

    # last-60m, last-1h, last-1h@auto: one image, one fetch.
    rel = {read(os.path.join(w, n)) for n in ("last-60m.png", "last-1h.png", "last-1h@auto.png",
                                               "last-60m@auto.png")}
    assert rel == {oracle(img(T - HOUR, T))}
    assert targets(api)[2:] == [img(T - HOUR, T)]
    # Weeks, days, hours: last-1w == last-7d == last-168h.
    wk = {read(os.path.join(w, n)) for n in ("last-1w.png", "last-7d.png", "last-168h.png")}
    assert wk == {oracle(img(T - 7 * DAY, T))}
    assert targets(api)[3:] == [img(T - 7 * DAY, T)]


def test_windows_against_a_known_clock_utc(api, config, mount, oracle):
    offset, env = fixed_clock(api)
    m = mount(config(body=body(presets=("last-1h",))), env=env)
    w = m.path("web", "cpu")
    cases = [
        ("last-1h.png", T - HOUR, T, "AUTO"),
        ("last-90m@high.png", T - 90 * 60 * 1000, T, "HIGH"),
        ("last-2d.png", T - 2 * DAY, T, "AUTO"),
        ("today.png", UTC_DAY["2024-12-02"], T, "AUTO"),
        ("yesterday.png", UTC_DAY["2024-12-01"], UTC_DAY["2024-12-02"], "AUTO"),
        ("days/2024-11-30.png", UTC_DAY["2024-11-30"], UTC_DAY["2024-12-01"], "AUTO"),
        ("days/2024-12-01@high.png", UTC_DAY["2024-12-01"], UTC_DAY["2024-12-02"], "HIGH"),
    ]
    for name, s, e, mode in cases:
        before = len(api.requests())
        data = read(os.path.join(w, name))
        assert targets(api)[before:] == [img(s, e, mode)], name
        assert data == oracle(img(s, e, mode)), name
        assert int(os.getxattr(os.path.join(w, name), "user.insightfs.start_ms")) == s
        assert int(os.getxattr(os.path.join(w, name), "user.insightfs.end_ms")) == e
    n = len(api.requests())
    # Today's day file is "today"; yesterday's is "yesterday": no new fetch.
    assert read(os.path.join(w, "days", "2024-12-02.png")) == read(os.path.join(w, "today.png"))
    assert read(os.path.join(w, "days", "2024-12-01.png")) == \
        read(os.path.join(w, "yesterday.png"))
    assert len(api.requests()) == n
    # A final past day: mtime END; days/ mtime: start of today.
    assert os.stat(os.path.join(w, "days", "2024-11-30.png")).st_mtime_ns == \
        UTC_DAY["2024-12-01"] * 10**6
    assert os.stat(os.path.join(w, "days")).st_mtime_ns == UTC_DAY["2024-12-02"] * 10**6
    # Tomorrow does not exist yet.
    assert enoent(os.path.join(w, "days", "2024-12-03.png")) == [errno.ENOENT] * 2
    assert len(api.requests()) == n


def test_windows_in_asia_seoul(api, config, mount, oracle):
    offset, env = fixed_clock(api)
    # Readahead off: this test reads days/ in listing order and counts every request.
    m = mount(config(body=body(tm='align_s = 3600; timezone = "Asia/Seoul";',
                               cache="readahead = false;")), env=env)
    w = m.path("web", "cpu")
    # 10:30 UTC is 19:30 on 2024-12-02 in Seoul.
    assert os.listdir(os.path.join(w, "days")) == ["2024-12-02.png", "2024-12-01.png",
                                                   "2024-11-30.png"]
    assert api.requests() == []
    today = read(os.path.join(w, "today.png"))
    assert targets(api) == [img(KST_DAY["2024-12-02"], T)]
    assert today == oracle(img(KST_DAY["2024-12-02"], T))
    assert read(os.path.join(w, "days", "2024-12-02.png")) == today
    assert len(api.requests()) == 1
    day = read(os.path.join(w, "days", "2024-12-01.png"))
    assert targets(api)[1:] == [img(KST_DAY["2024-12-01"], KST_DAY["2024-12-02"])]
    assert day == oracle(img(KST_DAY["2024-12-01"], KST_DAY["2024-12-02"]))
    assert read(os.path.join(w, "yesterday.png")) == day
    assert read(os.path.join(w, "last-1h.png")) == oracle(img(T - HOUR, T))
    assert len(api.requests()) == 3
    assert os.stat(os.path.join(w, "days")).st_mtime_ns == KST_DAY["2024-12-02"] * 10**6
    assert os.stat(os.path.join(w, "days", "2024-12-01.png")).st_mtime_ns == \
        KST_DAY["2024-12-02"] * 10**6
    assert enoent(os.path.join(w, "days", "2024-12-03.png")) == [errno.ENOENT] * 2
    assert len(api.requests()) == 3


def test_concurrent_readers_of_one_uncached_image(api, config, mount, oracle):
    m = mount(config(body=body()))
    api.fault("latency", prefix=img(FIN_S, FIN_E).split("?")[0], count=-1, ms=300)
    spellings = [("web", "cpu", FIN + ".png"),
                 (DASH, CPU, FIN + ".png"),
                 ("web", "cpu", "20241130T0000Z-20241130T1200Z.png"),
                 (DASH, "cpu", "1732924800000-20241130T120000Z@auto.png")]
    barrier = threading.Barrier(16)
    results = [None] * 16

    def reader(i):
        path = m.path(*spellings[i % len(spellings)])
        barrier.wait()
        try:
            results[i] = read(path)
        except OSError as e:
            results[i] = e

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(16)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30 * TIME_FACTOR)
    assert not any(t.is_alive() for t in threads)
    elapsed = time.monotonic() - t0
    assert all(isinstance(r, bytes) for r in results), results
    assert set(results) == {oracle(img(FIN_S, FIN_E))}
    assert targets(api) == [img(FIN_S, FIN_E)]
    # They waited together for one fetch, not one after another.
    assert elapsed < 0.3 * 4 * TIME_FACTOR


# ---- invalid names -------------------------------------------------------------------

INVALID = [
    # unknown dashboards and widgets
    "nope", "web/nope", "web/cpu_avg__9999", "db/cpu", "1000123/cpu_avg__1234",
    "WEB", "web/CPU", ".insightfs/nope", "web/.insightfs", "web/cpu/.insightfs",
    # escapes and dots
    "web%2Fcpu", "web/cpu%2Flast-1h.png", "web/cpu/last%2D1h.png", "web/cpu/..png",
    "web/cpu/...png", "web/cpu/.png", "web/cpu/" + FIN.replace("-", "..") + ".png",
    # overflow and out of range
    "web/cpu/last-9999999999h.png", "web/cpu/last-999999999w.png",
    "web/cpu/last-99999999999999999999m.png",
    "web/cpu/99999999999999-99999999999999.png", "web/cpu/1732924800000-99999999999999.png",
    "web/cpu/173292480000-1732968000000.png", "web/cpu/-1732924800000-1732968000000.png",
    "web/cpu/+1732924800000-1732968000000.png",
    "web/cpu/20241301T0000Z-20241302T0000Z.png", "web/cpu/20240230T0000Z-20240301T0000Z.png",
    "web/cpu/20241201T2400Z-20241202T0000Z.png", "web/cpu/20241201T000060Z-20241202T0000Z.png",
    "web/cpu/19691231T2359Z-19700101T0100Z.png", "web/cpu/20241201t0000z-20241202T0000Z.png",
    # start >= end
    "web/cpu/1732968000000-1732924800000.png", "web/cpu/%s-%s.png" % (FIN_S, FIN_S),
    "web/cpu/20241130T1200Z-20241130T0000Z.png",
    # wrong suffix, wrong extension, doubled
    "web/cpu/last-1h.jpg", "web/cpu/last-1h.PNG", "web/cpu/last-1h", "web/cpu/last-1h@HIGH.png",
    "web/cpu/last-1h@low.png", "web/cpu/last-1h@high@auto.png", "web/cpu/last-1h.png.png",
    "web/cpu/last-1h@high", "web/cpu/last-1h.png@high", "web/cpu/" + FIN + ".png.png",
    "web/cpu/last-1h .png", "web/cpu/ last-1h.png", "web/cpu/last-1h\n.png",
    "web/cpu/last-1h\r.png",
    # bad relative names
    "web/cpu/last-0h.png", "web/cpu/last-01h.png", "web/cpu/last-1s.png", "web/cpu/last-1y.png",
    "web/cpu/last-h.png", "web/cpu/last-1H.png", "web/cpu/Today.png", "web/cpu/tomorrow.png",
    "web/cpu/last1h.png",
    # 255 bytes
    "web/cpu/" + "a" * 251 + ".png", "web/cpu/last-1h" + "@" * 244 + ".png",
    # days/: only dates, only up to today
    "web/cpu/days/2024-12-03.png", "web/cpu/days/2026-12-31.png", "web/cpu/days/9999-12-31.png",
    "web/cpu/days/1969-12-31.png", "web/cpu/days/2024-02-30.png", "web/cpu/days/2024-12-1.png",
    "web/cpu/days/2024-12-01", "web/cpu/days/today.png", "web/cpu/days/last-1h.png",
    "web/cpu/days/" + FIN + ".png", "web/cpu/2024-12-01.png",
    # deep paths through names that do not exist
    "web/cpu/nope/last-1h.png", "web/cpu/days/days/2024-12-01.png", "web/cpu/last-1h/x.png",
    "nope/cpu/last-1h.png",
]


def test_invalid_names_are_enoent_without_a_request(api, config, mount):
    offset, env = fixed_clock(api)
    m = mount(config(body=body()), env=env)
    assert [len(n) - len("web/cpu/") for n in INVALID if len(n) > 200] == [255, 255]
    for name in INVALID:
        assert enoent(m.path(name)) == [errno.ENOENT, errno.ENOENT], repr(name)
    # A file name under an image: the kernel answers ENOTDIR (POSIX) after a LOOKUP of
    # the image that must not fetch it.
    for name in ("web/cpu/last-1h.png/x", "web/cpu/days/2024-12-01.png/x.png",
                 "web/cpu/%s.png/%s.png" % (FIN, FIN)):
        assert enoent(m.path(name)) == [errno.ENOTDIR, errno.ENOTDIR], name
    # Longer names reach the daemon (FUSE allows 1024 bytes): ENOENT as well.
    for n in (256, 1000):
        assert enoent(m.path("web/cpu/last-1h" + "@" * (n - 11) + ".png")) == [errno.ENOENT] * 2
    assert api.requests() == []
    # Still serving after all that, and the name is still unknown (no negative entry
    # was remembered for names that exist).
    assert len(read(m.path("web", "cpu", "last-1h.png"))) > 0
    assert len(api.requests()) == 1


# ---- read-only -----------------------------------------------------------------------

def test_every_mutation_is_erofs(api, config, mount, tmp_path):
    cfg = config(body=body())
    rel = os.path.relpath(cfg)          # the positional CONFIG exactly as given
    m = mount(rel)
    f = m.path("web", "cpu", FIN + ".png")
    data = read(f)
    d = m.path("web", "cpu")
    days = m.path("web", "cpu", "days")
    new = m.path("web", "cpu", "new.png")
    calls = [
        ("open O_WRONLY", lambda: os.open(f, os.O_WRONLY)),
        ("open O_RDWR", lambda: os.open(f, os.O_RDWR)),
        ("open O_TRUNC", lambda: os.open(f, os.O_RDONLY | os.O_TRUNC)),
        ("open O_APPEND", lambda: os.open(f, os.O_WRONLY | os.O_APPEND)),
        ("O_CREAT existing", lambda: os.open(f, os.O_WRONLY | os.O_CREAT, 0o644)),
        ("O_CREAT new", lambda: os.open(new, os.O_WRONLY | os.O_CREAT, 0o644)),
        ("O_CREAT|O_EXCL new", lambda: os.open(new, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)),
        ("mkdir", lambda: os.mkdir(m.path("web", "x"))),
        ("mkdir root", lambda: os.mkdir(m.path("x"))),
        ("mknod", lambda: os.mknod(m.path("web", "cpu", "fifo"), 0o600 | stat.S_IFIFO)),
        ("unlink", lambda: os.unlink(f)),
        ("rmdir", lambda: os.rmdir(days)),
        ("rmdir dashboard", lambda: os.rmdir(m.path("db"))),
        ("rename", lambda: os.rename(f, new)),
        ("rename dir", lambda: os.rename(m.path("web"), m.path("web2"))),
        ("symlink", lambda: os.symlink("x", m.path("web", "link"))),
        ("link", lambda: os.link(f, new)),
        ("setxattr", lambda: os.setxattr(f, "user.insightfs.start_ms", b"1")),
        ("setxattr new", lambda: os.setxattr(d, "user.x", b"1")),
        ("removexattr", lambda: os.removexattr(f, "user.insightfs.start_ms")),
        ("truncate", lambda: os.truncate(f, 0)),
        ("chmod", lambda: os.chmod(f, 0o644)),
        ("chmod dir", lambda: os.chmod(d, 0o755)),
        ("chown", lambda: os.chown(f, 1, 1)),
        ("utime", lambda: os.utime(f, (0, 0))),
        ("utime now", lambda: os.utime(d, None)),
    ]
    for what, call in calls:
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EROFS, what
    # An open read-only file cannot be written or truncated either.
    with open(f, "rb") as fh:
        with pytest.raises(OSError) as e:
            os.write(fh.fileno(), b"x")
        assert e.value.errno == errno.EBADF
        with pytest.raises(OSError) as e:
            os.ftruncate(fh.fileno(), 0)
        assert e.value.errno == errno.EINVAL
    assert read(f) == data
    assert not os.path.exists(new)
    assert len(api.requests()) == 1

    line = is_mounted(m.mnt).split()
    sep = line.index("-")
    assert {"ro", "nosuid", "nodev"} <= set(line[5].split(","))
    assert line[sep + 1] == "fuse.insightfs"
    assert line[sep + 2] == rel
    assert {"ro", "default_permissions"} <= set(line[sep + 3].split(","))


# ---- cp, rsync, file -----------------------------------------------------------------

def test_cp_r_of_a_widget_gives_exact_bytes(api, config, mount, oracle, tmp_path):
    offset, env = fixed_clock(api)
    m = mount(config(body=body(presets=("today", "last-1h", "yesterday"))), env=env)
    dest = str(tmp_path / "copy")
    subprocess.run(["cp", "-r", m.path("web", "cpu"), dest], check=True,
                   timeout=60 * TIME_FACTOR)
    expect = {
        "today.png": img(UTC_DAY["2024-12-02"], T),
        "last-1h.png": img(T - HOUR, T),
        "yesterday.png": img(UTC_DAY["2024-12-01"], UTC_DAY["2024-12-02"]),
        "days/2024-12-02.png": img(UTC_DAY["2024-12-02"], T),
        "days/2024-12-01.png": img(UTC_DAY["2024-12-01"], UTC_DAY["2024-12-02"]),
        "days/2024-11-30.png": img(UTC_DAY["2024-11-30"], UTC_DAY["2024-12-01"]),
    }
    got = sorted(os.path.relpath(os.path.join(r, f), dest)
                 for r, _, fs in os.walk(dest) for f in fs)
    assert got == sorted(expect)
    for name, target in expect.items():
        assert read(os.path.join(dest, name)) == oracle(target), name
    # One fetch per distinct image (today is days/<today>, yesterday days/<yesterday>).
    assert sorted(targets(api)) == sorted(set(expect.values()))


def test_rsync_twice_copies_nothing_the_second_time(api, config, mount, oracle, tmp_path):
    offset, env = fixed_clock(api)
    m = mount(config(body=body(cache="live_ttl_s = 3600;")), env=env)
    src = m.path("web", "cpu", "days") + "/"
    dest = str(tmp_path / "days")
    r = subprocess.run(["rsync", "-a", src, dest + "/"], capture_output=True, text=True,
                       timeout=60 * TIME_FACTOR)
    assert r.returncode == 0, r.stderr
    days = {"2024-12-02.png": img(UTC_DAY["2024-12-02"], T),
            "2024-12-01.png": img(UTC_DAY["2024-12-01"], UTC_DAY["2024-12-02"]),
            "2024-11-30.png": img(UTC_DAY["2024-11-30"], UTC_DAY["2024-12-01"])}
    assert sorted(os.listdir(dest)) == sorted(days)
    for name, target in days.items():
        assert read(os.path.join(dest, name)) == oracle(target)
    assert sorted(targets(api)) == sorted(days.values())
    # rsync -a kept the times: END for final days.
    assert os.stat(os.path.join(dest, "2024-12-01.png")).st_mtime_ns == \
        UTC_DAY["2024-12-02"] * 10**6
    assert os.stat(os.path.join(dest, "2024-11-30.png")).st_mtime_ns == \
        UTC_DAY["2024-12-01"] * 10**6

    n = len(api.requests())
    r = subprocess.run(["rsync", "-a", "--itemize-changes", src, dest + "/"],
                       capture_output=True, text=True, timeout=60 * TIME_FACTOR)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert len(api.requests()) == n

    for path in (os.path.join(dest, "2024-12-01.png"), m.path("web", "cpu", "days",
                                                              "2024-11-30.png")):
        out = subprocess.run(["file", "-b", path], capture_output=True, text=True, check=True)
        assert out.stdout.startswith("PNG image data, 800 x 600"), out.stdout
    assert len(api.requests()) == n


# ---- xattrs --------------------------------------------------------------------------

XATTRS = ["user.insightfs.start_ms", "user.insightfs.end_ms", "user.insightfs.resolution",
          "user.insightfs.api_path", "user.insightfs.fetched_at"]


def test_xattrs(api, config, mount):
    offset, env = fixed_clock(api)
    m = mount(config(body=body()), env=env)
    w = m.path("web", "cpu")
    high = os.path.join(w, "last-1h@high.png")
    # The names of an image not fetched yet, without fetching it. (fetched_at's ENODATA
    # before the first fetch cannot be observed through the syscall interface: with
    # default_permissions the kernel checks read permission, with a GETATTR, before a
    # user.* getxattr of a regular file whose attributes are not cached, and that GETATTR
    # fetches. listxattr has no such check.)
    assert os.listxattr(high) == XATTRS
    assert os.listxattr(os.path.join(w, "days", "2024-12-01.png")) == XATTRS
    assert api.requests() == []

    lo = now_ms() + offset
    data = read(high)
    hi = now_ms() + offset
    assert targets(api) == [img(T - HOUR, T, "HIGH")]
    x = {n: os.getxattr(high, n) for n in XATTRS}
    fetched = int(x["user.insightfs.fetched_at"])
    assert lo - 5 <= fetched <= hi + 5
    assert x == {"user.insightfs.start_ms": str(T - HOUR).encode(),
                 "user.insightfs.end_ms": str(T).encode(),
                 "user.insightfs.resolution": b"HIGH",
                 "user.insightfs.api_path": img(T - HOUR, T, "HIGH").encode(),
                 "user.insightfs.fetched_at": str(fetched).encode()}
    st = os.stat(high)
    assert st.st_mtime_ns == fetched * 10**6   # live: mtime is the signing time
    assert st.st_size == len(data)
    with open(high, "rb") as fh:
        assert os.getxattr(fh.fileno(), "user.insightfs.resolution") == b"HIGH"
        assert os.listxattr(fh.fileno()) == XATTRS

    # A final image with an id path: AUTO, the escaped target, mtime END.
    fin = m.path("1000123", "disk_io__77", FIN + ".png")
    read(fin)
    assert os.stat(fin).st_mtime_ns == FIN_E * 10**6
    assert os.getxattr(fin, "user.insightfs.resolution") == b"AUTO"
    assert os.getxattr(fin, "user.insightfs.api_path") == \
        img(FIN_S, FIN_E, d="1000123", w="disk_io__77").encode()
    assert os.getxattr(fin, "user.insightfs.start_ms") == str(FIN_S).encode()
    assert os.getxattr(fin, "user.insightfs.end_ms") == str(FIN_E).encode()
    assert int(os.getxattr(fin, "user.insightfs.fetched_at")) >= fetched
    assert targets(api)[1:] == [img(FIN_S, FIN_E, d="1000123", w="disk_io__77")]

    # Other names: ENODATA; directories and /.insightfs files: none at all.
    for path, name in ((high, "user.insightfs.other"), (high, "user.insightfs"),
                       (high, "user.insightfs.start_ms2"), (high, "user.other"),
                       (high, "trusted.insightfs.start_ms"), (high, "security.selinux"),
                       (w, "user.insightfs.start_ms"), (m.mnt, "user.insightfs.api_path"),
                       (os.path.join(w, "days"), "user.insightfs.end_ms"),
                       (m.path(".insightfs", "stats"), "user.insightfs.start_ms")):
        with pytest.raises(OSError) as e:
            os.getxattr(path, name)
        assert e.value.errno == errno.ENODATA, (path, name)
    for path in (m.mnt, w, os.path.join(w, "days"), m.path("web"), m.path(".insightfs"),
                 m.path(".insightfs", "stats")):
        assert os.listxattr(path) == [], path
    assert len(api.requests()) == 2


# ---- stats and statfs ----------------------------------------------------------------

# What one key (its records, inode and remembered name) may count in cache.bytes besides
# image bytes (SPEC 7: everything kept per name counts, at its real size).
PER_KEY = 1024


def bytes_ok(s, images):
    """cache.bytes is the image bytes plus a bounded record cost per key."""
    b, keys = s["cache"]["bytes"], s["cache"]["keys"]
    return images < b <= images + keys * PER_KEY if keys else b == images


def upstream_of(s):
    """The upstream counters of the first stats format (requests .. bytes)."""
    return {k: s["upstream"][k] for k in ("requests", "failures", "retries", "in_flight",
                                          "bytes")}


def test_stats_counters(api, config, mount):
    m = mount(config(body=body(cache="max_bytes = 8388608;")))
    s = stats(m)
    assert list(s) == ["cache", "upstream", "uptime_s"]
    assert list(s["cache"]) == ["entries", "bytes", "pinned_bytes", "max_bytes", "hits",
                                "misses", "evictions", "keys", "inodes", "readahead"]
    assert list(s["upstream"]) == ["requests", "failures", "retries", "in_flight", "bytes",
                                   "queued", "waiting", "shed", "down", "down_total"]
    assert all(type(v) is int for g in ("cache", "upstream") for v in s[g].values())
    assert type(s["uptime_s"]) is int and 0 <= s["uptime_s"] <= 10 * TIME_FACTOR
    assert s["cache"] == {"entries": 0, "bytes": 0, "pinned_bytes": 0, "max_bytes": 8388608,
                          "hits": 0, "misses": 0, "evictions": 0, "keys": 0, "inodes": 0,
                          "readahead": 0}
    assert s["upstream"] == {"requests": 0, "failures": 0, "retries": 0, "in_flight": 0,
                             "bytes": 0, "queued": 0, "waiting": 0, "shed": 0, "down": 0,
                             "down_total": 0}

    a = m.path("web", "cpu", FIN + ".png")
    # stat: a daemon LOOKUP of an uncached name (a miss) whose GETATTR fetches.
    size = os.stat(a).st_size
    s = stats(m)
    log = api.requests()
    assert len(log) == 1 and log[0]["bytes"] == size
    assert s["cache"]["misses"] == 1 and s["cache"]["hits"] == 0
    assert s["cache"]["entries"] == 1 and bytes_ok(s, size)
    assert s["cache"]["keys"] == 1 and s["cache"]["inodes"] == 1
    assert s["upstream"]["requests"] == 1 and s["upstream"]["bytes"] == size
    # The entry of the pending version stays valid (only its attributes were not), and
    # the GETATTR's attributes last a day: from then on the kernel answers alone.
    os.stat(a)
    os.stat(a)
    read(a)
    read(a)
    s = stats(m)
    assert (s["cache"]["hits"], s["cache"]["misses"]) == (0, 1)
    assert s["upstream"]["requests"] == 1
    # The same range spelled in ISO: a daemon LOOKUP that finds the version fresh in the
    # cache, one hit and no request.
    assert os.stat(m.path("web", "cpu", "20241130T0000Z-20241130T1200Z.png")).st_size == size
    s = stats(m)
    assert (s["cache"]["hits"], s["cache"]["misses"]) == (1, 1)
    assert s["upstream"]["requests"] == 1 and s["cache"]["entries"] == 1

    # A read of another uncached image: one more miss, one more request.
    b = m.path("web", "memory", FIN + ".png")
    size_b = len(read(b))
    s = stats(m)
    assert (s["cache"]["hits"], s["cache"]["misses"]) == (1, 2)
    assert s["cache"]["entries"] == 2 and bytes_ok(s, size + size_b)

    # A failed fetch: a request, a failure, its body bytes; remembered (256 bytes).
    c = m.path("db", "qps", FIN + ".png")
    api.fault("status", prefix=img(FIN_S, FIN_E, d="1000123", w="555").split("?")[0],
              status=404)
    with pytest.raises(OSError) as e:
        os.stat(c)
    assert e.value.errno == errno.ENOENT
    s = stats(m)
    log = api.requests()
    assert [e["status"] for e in log] == [200, 200, 404]
    assert upstream_of(s) == {"requests": 3, "failures": 1, "retries": 0, "in_flight": 0,
                              "bytes": sum(e["bytes"] for e in log)}
    assert s["cache"]["misses"] == 3 and s["cache"]["hits"] == 1
    assert s["cache"]["entries"] == 2 and s["cache"]["keys"] == 3
    assert bytes_ok(s, size + size_b)
    assert s["cache"]["evictions"] == 0 and s["cache"]["pinned_bytes"] == 0

    # A 503, then a 200 held for 1 s by the API (in flight meanwhile): one retry, two
    # requests, one failure.
    prefix = img(FIN_S, FIN_E, w="net_in__9012").split("?")[0]
    api.fault("status", prefix=prefix, status=503)
    api.fault("latency", prefix=prefix, ms=1000)
    got = []
    t = threading.Thread(target=lambda: got.append(read(m.path("web", "network in",
                                                                FIN + ".png"))))
    t.start()
    try:
        wait_for(lambda: stats(m)["upstream"]["in_flight"] == 1, 5, "a fetch in flight")
    finally:
        t.join(30 * TIME_FACTOR)
    s = stats(m)
    log = api.requests()
    assert [e["status"] for e in log] == [200, 200, 404, 503, 200]
    assert upstream_of(s) == {"requests": 5, "failures": 2, "retries": 1, "in_flight": 0,
                              "bytes": sum(e["bytes"] for e in log)}
    assert s["cache"]["entries"] == 3 and s["cache"]["misses"] == 4
    assert s["cache"]["keys"] == 4 and bytes_ok(s, size + size_b + len(got[0]))
    # uptime_s counts the seconds since the mount was ready.
    u0 = s["uptime_s"]
    wait_for(lambda: stats(m)["uptime_s"] == u0 + 1, 3, "uptime_s to count a second")


def test_statfs(api, config, mount):
    m = mount(config(body=body(cache="max_bytes = 8388608;")))
    sv = os.statvfs(m.mnt)
    assert sv.f_bsize == 4096 and sv.f_frsize == 4096
    assert sv.f_blocks == 8388608 // 4096
    assert sv.f_bfree == sv.f_bavail == 8388608 // 4096
    assert sv.f_files == 0
    assert sv.f_namemax == 255
    assert sv.f_flag & os.ST_RDONLY and sv.f_flag & os.ST_NOSUID and sv.f_flag & os.ST_NODEV
    size = len(read(m.path("web", "cpu", FIN + ".png")))
    sv = os.statvfs(m.path("web"))
    s = stats(m)
    assert bytes_ok(s, size)
    assert sv.f_bfree == sv.f_bavail == (8388608 - s["cache"]["bytes"]) // 4096
    assert sv.f_bfree < 8388608 // 4096
    assert sv.f_files == 1
    # df shows it.
    out = subprocess.run(["df", "-P", m.mnt], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[1].split()[1] == str(8388608 // 1024)


METRICS = [  # (name, type) in SPEC 5's order: the gauges, then the counters
    ("insightfs_cache_entries", "gauge"), ("insightfs_cache_bytes", "gauge"),
    ("insightfs_cache_pinned_bytes", "gauge"), ("insightfs_cache_max_bytes", "gauge"),
    ("insightfs_upstream_in_flight", "gauge"), ("insightfs_uptime_seconds", "gauge"),
    ("insightfs_cache_keys", "gauge"), ("insightfs_cache_inodes", "gauge"),
    ("insightfs_upstream_queued", "gauge"), ("insightfs_upstream_waiting", "gauge"),
    ("insightfs_upstream_down", "gauge"),
    ("insightfs_cache_hits_total", "counter"), ("insightfs_cache_misses_total", "counter"),
    ("insightfs_cache_evictions_total", "counter"),
    ("insightfs_upstream_requests_total", "counter"),
    ("insightfs_upstream_failures_total", "counter"),
    ("insightfs_upstream_retries_total", "counter"), ("insightfs_upstream_bytes_total", "counter"),
    ("insightfs_cache_readahead_total", "counter"), ("insightfs_upstream_shed_total", "counter"),
    ("insightfs_upstream_down_total", "counter")]


def parse_metrics(text):
    """Prometheus text 0.0.4 as SPEC 5 gives it: per metric exactly HELP, TYPE, one sample
    without labels or timestamp, in METRICS order; returns {name: int}."""
    assert text.endswith("\n")
    lines = text[:-1].split("\n")
    assert len(lines) == 3 * len(METRICS)
    values = {}
    for k, (name, kind) in enumerate(METRICS):
        helpl, typel, sample = lines[3 * k:3 * k + 3]
        assert helpl.startswith("# HELP %s " % name) and len(helpl) > len(name) + 8, helpl
        assert typel == "# TYPE %s %s" % (name, kind)
        sname, value = sample.split(" ")
        assert sname == name and value.isdigit(), sample
        values[name] = int(value)
    return values


def test_meta_files(api, config, mount):
    cfg = config(body=body(cache="max_bytes = 8388608;"))
    m = mount(cfg)
    meta = m.path(".insightfs")
    assert readdir(meta) == [(".", DT_DIR), ("..", DT_DIR), ("stats", DT_REG),
                             ("metrics", DT_REG), ("metrics.prom", DT_REG), ("config", DT_REG)]
    size = len(read(m.path("web", "cpu", FIN + ".png")))
    for name in ("stats", "metrics", "metrics.prom", "config"):
        p = os.path.join(meta, name)
        st = os.stat(p)
        assert st.st_mode == stat.S_IFREG | 0o444, name
        assert st.st_size == len(read(p)) > 0, name   # each lookup: a new snapshot

    # metrics: the same numbers as stats (nothing moves between the two reads).
    s = stats(m)
    text = read(os.path.join(meta, "metrics")).decode()
    v = parse_metrics(text)
    assert bytes_ok(s, size)
    assert v == {
        "insightfs_cache_entries": 1, "insightfs_cache_bytes": s["cache"]["bytes"],
        "insightfs_cache_pinned_bytes": 0, "insightfs_cache_max_bytes": 8388608,
        "insightfs_upstream_in_flight": 0,
        "insightfs_uptime_seconds": v["insightfs_uptime_seconds"],
        "insightfs_cache_keys": 1, "insightfs_cache_inodes": 1,
        "insightfs_upstream_queued": 0, "insightfs_upstream_waiting": 0,
        "insightfs_upstream_down": 0,
        "insightfs_cache_hits_total": s["cache"]["hits"],
        "insightfs_cache_misses_total": 1, "insightfs_cache_evictions_total": 0,
        "insightfs_upstream_requests_total": 1, "insightfs_upstream_failures_total": 0,
        "insightfs_upstream_retries_total": 0, "insightfs_upstream_bytes_total": size,
        "insightfs_cache_readahead_total": 0, "insightfs_upstream_shed_total": 0,
        "insightfs_upstream_down_total": 0}
    assert s["uptime_s"] <= v["insightfs_uptime_seconds"] <= s["uptime_s"] + 1
    # metrics.prom: the same bytes (for node_exporter's textfile collector), unless the
    # uptime ticked between the two snapshots.
    prom = read(os.path.join(meta, "metrics.prom")).decode()
    strip = lambda t: [ln for ln in t.split("\n")  # noqa: E731
                       if not ln.startswith("insightfs_uptime_seconds ")]
    assert strip(prom) == strip(text)
    assert len(api.requests()) == 1   # none of this went upstream

    # config: the configuration in force, libconfig text, defaults filled in, never the
    # secret, the access key as "..." and its last 4 characters.
    conf = read(os.path.join(meta, "config")).decode()
    assert api.secret_key not in conf and "secret_key" not in conf
    assert api.access_key not in conf
    assert 'access_key = "...%s";' % api.access_key[-4:] in conf
    assert 'endpoint = "%s";' % api.url in conf
    assert "max_bytes = 8388608" in conf
    assert "live_ttl_s = " in conf and "error_ttl_s = " in conf   # defaults filled in
    assert '"cpu"' in conf and '"%s"' % CPU in conf

    # After a reload, the configuration now in force.
    make_config(cfg, api, body=body(cache="max_bytes = 16777216;"))
    m.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: log_line(m, "insightfs: info: configuration reloaded from " + cfg), 10,
             "the reload line")
    conf = read(os.path.join(meta, "config")).decode()
    assert "max_bytes = 16777216" in conf and "max_bytes = 8388608" not in conf
    v = parse_metrics(read(os.path.join(meta, "metrics")).decode())
    assert v["insightfs_cache_max_bytes"] == 16777216


# ---- signals -------------------------------------------------------------------------

def test_sighup_burst_merges_reloads(api, config, mount, oracle):
    """A burst of SIGHUPs makes one reload, or a few when some come during one: the
    reload thread reads every byte queued before it reloads, and a stop drops what is
    still queued. The daemon stays up, serves, and exits 0 on SIGTERM. The kernel merges
    a SIGHUP sent while another is pending, so how many bytes the burst queues varies:
    the exact count (one reload for 64 queued SIGHUPs) is tests/unit/test_fs.c's."""
    cfg = config(body=body())
    m = mount(cfg)
    data = read(m.path("web", "cpu", FIN + ".png"))
    assert data == oracle(img(FIN_S, FIN_E))
    for _ in range(200):
        os.kill(m.proc.pid, signal.SIGHUP)
    # A changed file (renamed into place: a reload may be reading it) and one more SIGHUP.
    os.replace(make_config(cfg + ".new", api, body=body(cache="max_bytes = 16777216;")), cfg)
    os.kill(m.proc.pid, signal.SIGHUP)
    wait_for(lambda: "max_bytes = 16777216" in read(m.path(".insightfs", "config")).decode(),
             10, "the last reload")
    assert m.proc.poll() is None and is_mounted(m.mnt)
    assert read(m.path("web", "cpu", FIN + ".png")) == data
    assert len(api.requests()) == 1
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=10 * TIME_FACTOR) == 0, m.stderr()
    assert not is_mounted(m.mnt)
    n = m.stderr().count("insightfs: info: configuration reloaded from " + cfg)
    assert 1 <= n <= 10, n
    assert "reload failed" not in m.stderr()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_unmount_with_status_0(api, config, mount, sig):
    m = mount(config(body=body()))
    assert len(read(m.path("web", "cpu", FIN + ".png"))) > 0
    m.proc.send_signal(sig)
    assert m.proc.wait(timeout=10 * TIME_FACTOR) == 0, m.stderr()
    assert not is_mounted(m.mnt)


def test_sighup_reloads_and_never_stops(api, config, mount, oracle):
    cfg = config(body=body())
    m = mount(cfg)
    data = read(m.path("web", "cpu", FIN + ".png"))
    assert data == oracle(img(FIN_S, FIN_E))

    # The same file again: reloaded, still mounted, still serving from the cache.
    m.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: log_line(m, "insightfs: info: configuration reloaded from " + cfg), 10,
             "the reload line")
    assert m.proc.poll() is None and is_mounted(m.mnt)
    assert read(m.path("web", "cpu", FIN + ".png")) == data

    # A changed valid file: a new dashboard, the cpu widget renamed, "network in" and
    # the disk_io__77 widget gone.
    for p in (("web", "network in"), ("db", "disk_io__77"), (DASH, "cpu"), ("web", CPU)):
        assert stat.S_ISDIR(os.stat(m.path(*p)).st_mode)   # the kernel knows these names
    dashboards = DEFAULT_DASHBOARDS.replace('name = "cpu"', 'name = "processor"').replace(
        "dashboards = (", 'dashboards = (\n  { name = "empty"; id = "df_empty"; widgets = (); },'
    ).replace(',\n                { name = "network in"; id = "net_in__9012"; }', "").replace(
        ', { id = "disk_io__77"; }', "")
    assert dashboards.count("{") == DEFAULT_DASHBOARDS.count("{") - 1
    make_config(cfg, api, body=body(dashboards=dashboards))
    m.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: m.stderr().count("configuration reloaded from " + cfg) == 2, 10,
             "the second reload line")
    assert os.listdir(m.mnt) == ["empty", "web", "db"]
    assert os.listdir(m.path("web")) == ["processor", "memory"]
    assert os.listdir(m.path("db")) == ["qps"]
    # Removed and renamed names are gone at once (the kernel's entries were invalidated);
    # ids still lead to the same widget.
    for p in (("web", "cpu"), ("web", "network in"), ("web", "net_in__9012"),
              ("db", "disk_io__77"), (DASH, "cpu"), ("web", "cpu", FIN + ".png")):
        assert enoent(m.path(*p)) == [errno.ENOENT] * 2, p
    assert read(m.path("web", CPU, FIN + ".png")) == data
    # The cached version stays for the same (dashboard id, widget id), whatever its name.
    assert read(m.path("web", "processor", FIN + ".png")) == data
    assert len(api.requests()) == 1
    # The api group did not change, so the client (and its counters) carried over.
    assert stats(m)["upstream"]["requests"] == 1

    # An invalid file: nothing changes.
    with open(cfg, "a") as f:
        f.write("no_such_setting = 1;\n")
    m.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: log_line(m, "reload failed, keeping the old configuration: " + cfg), 10,
             "the reload failure line")
    line = [l for l in m.stderr().splitlines() if "reload failed" in l][0]
    assert line.startswith("insightfs: error: reload failed, keeping the old configuration: "
                           + cfg + ":")
    assert "no_such_setting" in line
    assert m.proc.poll() is None and is_mounted(m.mnt)
    assert os.listdir(m.mnt) == ["empty", "web", "db"]
    assert read(m.path("web", "processor", FIN + ".png")) == data
    # A syntax error, several SIGHUPs at once: still alive.
    with open(cfg, "w") as f:
        f.write("api = {\n")
    for _ in range(3):
        m.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: m.stderr().count("reload failed") >= 2, 10, "the second failure line")
    assert m.proc.poll() is None and is_mounted(m.mnt)
    assert read(m.path("web", "memory", FIN + ".png")) == oracle(
        img(FIN_S, FIN_E, w="mem_used__5678"))
    assert len(api.requests()) == 2


# ---- live versions -------------------------------------------------------------------

def read_rest(fd):
    """The rest of fd, through the daemon: the kernel's cached pages of the file are
    dropped first, so the bytes come from the version the inode holds."""
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    out = b""
    while True:
        chunk = os.read(fd, 1000)
        if not chunk:
            return out
        out += chunk


def test_live_version_refreshes_after_live_ttl(api, config, mount, oracle):
    offset, env = fixed_clock(api)
    m = mount(config(body=body(cache="live_ttl_s = 1;")), env=env)
    p = m.path("web", "cpu", "last-1h.png")
    expect = oracle(img(T - HOUR, T))
    fd = os.open(p, os.O_RDONLY)
    try:
        first = os.read(fd, 100)
        st1 = os.fstat(fd)
        assert targets(api) == [img(T - HOUR, T)]
        # Fresh for live_ttl_s: the name keeps its version and nothing is fetched.
        assert os.stat(p).st_ino == st1.st_ino
        assert len(api.requests()) == 1
        # After live_ttl_s (1 s) the next lookup of the name makes a new version: poll
        # the name until it points at another inode.
        wait_for(lambda: os.stat(p).st_ino != st1.st_ino, 5, "a refreshed version")
        assert targets(api) == [img(T - HOUR, T)] * 2
        st2 = os.stat(p)
        assert st2.st_mtime_ns - st1.st_mtime_ns >= 1000 * 10**6
        assert st2.st_size == st1.st_size == len(expect)
        # The old version left the cache but the open file pins it: its bytes, and the
        # records of the inode the kernel holds (SPEC 7).
        s = stats(m)
        assert s["cache"]["entries"] == 1
        assert len(expect) < s["cache"]["pinned_bytes"] <= len(expect) + PER_KEY
        # The open file still reads its own version to the end.
        assert first + read_rest(fd) == expect
        assert os.fstat(fd).st_ino == st1.st_ino
    finally:
        os.close(fd)
    assert read(p) == expect
    assert len(api.requests()) == 2


def test_open_file_keeps_its_version_when_the_name_moves_on(api, config, mount, oracle):
    # align_s = 1: last-1h moves every second, so the new version has other bytes.
    m = mount(config(body=body(cache="live_ttl_s = 1;", tm="align_s = 1;")))
    p = m.path("web", "cpu", "last-1h.png")
    fd = os.open(p, os.O_RDONLY)
    try:
        head = os.read(fd, 64)
        old_target = os.getxattr(fd, "user.insightfs.api_path").decode()
        old_ino = os.fstat(fd).st_ino
        wait_for(lambda: os.stat(p).st_ino != old_ino, 5, "a new version of last-1h")
        new_target = os.getxattr(p, "user.insightfs.api_path").decode()
        assert new_target != old_target
        rest = read_rest(fd)
    finally:
        os.close(fd)
    old = oracle(old_target)
    assert head + rest == old
    assert read(p) == oracle(new_target) != old
    assert targets(api) == [old_target, new_target]


# ---- the mount helper (fstab) --------------------------------------------------------

def _daemon_pids(mnt):
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        # Under valgrind argv[0] is valgrind's own; the binary is a later argument.
        names = argv if VALGRIND else argv[:1]
        if any(os.path.basename(a) == b"insightfs" for a in names) and mnt.encode() in argv:
            pids.append(int(d))
    return pids


def _gone(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def helper_on_path():
    """build/insightfs as /usr/local/sbin/insightfs for the duration of a test: a symlink,
    or under valgrind a script that runs it under valgrind."""
    if not os.path.exists("/usr/sbin/mount.fuse3") and not os.path.exists("/sbin/mount.fuse3"):
        pytest.skip("mount.fuse3 (package fuse3) is not installed")
    link = "/usr/local/sbin/insightfs"
    made_dir = not os.path.isdir("/usr/local/sbin")
    if os.path.lexists(link):
        if os.path.realpath(link) != os.path.realpath(BIN):
            pytest.skip(link + " exists and is another insightfs")
        made_link = False
    else:
        os.makedirs("/usr/local/sbin", exist_ok=True)
        if VALGRIND:
            fd = os.open(link, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755)
            with os.fdopen(fd, "w") as f:
                f.write("#!/bin/sh\nexec %s \"$@\"\n"
                        % " ".join(shlex.quote(a) for a in bin_cmd([])))
        else:
            os.symlink(os.path.realpath(BIN), link)
        made_link = True
    yield link
    if made_link:
        os.unlink(link)
    if made_dir:
        try:
            os.rmdir("/usr/local/sbin")
        except OSError:
            pass


def test_mount_helper_fstab_form(api, config, tmp_path, helper_on_path, oracle):
    cfg = config(body=body())
    mnt = str(tmp_path / "fstab-mnt")
    os.mkdir(mnt)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}

    def mounts():
        with open("/proc/mounts") as f:
            return [l.split() for l in f if l.split()[1] == mnt]

    def umount_and_wait():
        pids = _daemon_pids(mnt)
        subprocess.run(["umount", mnt], check=True, env=env, timeout=20 * TIME_FACTOR)
        assert mounts() == []
        wait_for(lambda: all(_gone(p) for p in pids), 10, "the daemon to exit")

    try:
        r = subprocess.run(["mount", "-t", "fuse.insightfs", cfg, mnt, "-o", "allow_other"],
                           capture_output=True, text=True, env=env, timeout=30 * TIME_FACTOR)
        assert r.returncode == 0, r.stderr
        ms = mounts()
        assert len(ms) == 1
        assert ms[0][0] == cfg and ms[0][2] == "fuse.insightfs"
        assert ms[0][3].split(",")[:3] == ["ro", "nosuid", "nodev"]
        assert {"allow_other", "default_permissions"} <= set(ms[0][3].split(","))
        assert len(_daemon_pids(mnt)) == 1
        assert os.listdir(mnt) == ["web", "db"]
        assert read(os.path.join(mnt, "web", "cpu", FIN + ".png")) == oracle(img(FIN_S, FIN_E))
        umount_and_wait()

        # The fstab line of SPEC 2, from an alternative fstab: mount -a twice, one mount.
        fstab = str(tmp_path / "fstab")
        with open(fstab, "w") as f:
            f.write("%s %s fuse.insightfs allow_other,_netdev 0 0\n" % (cfg, mnt))
        for _ in range(2):
            r = subprocess.run(["mount", "-a", "-T", fstab], capture_output=True, text=True,
                               env=env, timeout=30 * TIME_FACTOR)
            assert r.returncode == 0, r.stderr
        ms = mounts()
        assert len(ms) == 1 and ms[0][0] == cfg and ms[0][2] == "fuse.insightfs"
        assert ms[0][3].split(",")[:3] == ["ro", "nosuid", "nodev"]
        assert len(_daemon_pids(mnt)) == 1
        assert os.listdir(os.path.join(mnt, "db")) == ["qps", "disk_io__77"]
        umount_and_wait()
    finally:
        if mounts():
            subprocess.run(["umount", "-l", mnt], env=env)
    assert len(api.requests()) == 1
