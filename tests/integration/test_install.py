"""`make install` and `make uninstall` (SPEC 2 and 10, issue 7 item 1): the exact tree
under DESTDIR and PREFIX, the man page rendered by man(1) and groff without a warning,
the systemd template accepted by `systemd-analyze verify`, an uninstall that removes
exactly what install put there, and `mount -t fuse.insightfs CONFIG MNT` running the
binary that `make install` put in $(PREFIX)/bin through fuse3's mount helper.

Every install runs the repository's Makefile with the sanitizer setting of the build under
test (SANITIZE selects build/, build/asan/ or build/tsan/), so the installed binary is the
one the rest of the suite tests, and under umask 077, so the modes come from the Makefile
and not from the caller's umask."""
import os
import re
import shlex
import shutil
import signal
import subprocess

import pytest

from conftest import (BIN, DEFAULT_DASHBOARDS, ROOT, SANITIZE, TIME_FACTOR, VALGRIND,
                      VALGRIND_ARGS, _vg_dir, clean_env, make_config, wait_for)
from client import image_target

FINAL_S, FINAL_E = 1732924800000, 1732968000000  # 2024-11-30 00:00-12:00 UTC: final

BIN_REL = "bin/insightfs"
MAN_REL = "share/man/man1/insightfs.1"
DOC_REL = "share/doc/insightfs/insightfs.conf.example"
UNIT_REL = "lib/systemd/system/insightfs@.service"


def version():
    """VERSION, set in one place in the Makefile."""
    with open(os.path.join(ROOT, "Makefile")) as f:
        m = re.search(r"^VERSION := (\S+)$", f.read(), re.M)
    assert m, "no VERSION in the Makefile"
    return m.group(1)


def source(rel):
    with open(os.path.join(ROOT, "conf", rel), "rb") as f:
        return f.read()


def make(target, **variables):
    """Run `make TARGET VAR=VALUE...` from the repository root under umask 077 and return
    its stdout. The outer make's MAKEFLAGS (jobserver, command-line variables) stay out."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "DESTDIR",
                        "PREFIX")}
    args = ["make", "--no-print-directory", target, "SANITIZE=" + SANITIZE]
    args += ["%s=%s" % kv for kv in sorted(variables.items())]
    p = subprocess.run(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env, timeout=600 * TIME_FACTOR, preexec_fn=lambda: os.umask(0o077))
    assert p.returncode == 0, "%s failed:\n%s%s" % (" ".join(args), p.stdout.decode(),
                                                    p.stderr.decode())
    return p.stdout.decode()


def tree(top):
    """Everything under top: {relative path: "d" or ("f", mode)}."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for d in dirnames:
            full = os.path.join(dirpath, d)
            assert not os.path.islink(full), full
            out[os.path.relpath(full, top)] = "d"
        for name in filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            assert os.path.isfile(full) and not os.path.islink(full), full
            out[os.path.relpath(full, top)] = ("f", st.st_mode & 0o7777)
    return out


def parents(rel):
    """Every proper ancestor of a relative path: usr/bin/x -> {usr, usr/bin}."""
    parts = rel.split("/")
    return {"/".join(parts[:i]) for i in range(1, len(parts))}


def unit_settings(text):
    """[(section, key, value)] of a unit file, in order, comments left out."""
    out, section = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, value = line.split("=", 1)
        out.append((section, key, value))
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A `make install DESTDIR=... PREFIX=/usr` into a fresh directory: (destdir, prefix)."""
    dest = str(tmp_path_factory.mktemp("destdir"))
    make("install", DESTDIR=dest, PREFIX="/usr")
    return dest, os.path.join(dest, "usr")


def test_install_puts_exactly_four_files_in_place(installed):
    dest, usr = installed
    files = {"usr/" + BIN_REL: ("f", 0o755), "usr/" + MAN_REL: ("f", 0o644),
             "usr/" + DOC_REL: ("f", 0o644), "usr/" + UNIT_REL: ("f", 0o644)}
    dirs = set().union(*(parents(p) for p in files))
    assert tree(dest) == dict(files, **{d: "d" for d in dirs})
    assert dirs == {"usr", "usr/bin", "usr/share", "usr/share/man", "usr/share/man/man1",
                    "usr/share/doc", "usr/share/doc/insightfs", "usr/lib", "usr/lib/systemd",
                    "usr/lib/systemd/system"}

    with open(os.path.join(usr, BIN_REL), "rb") as f, open(BIN, "rb") as g:
        assert f.read() == g.read(), "the installed binary is not the one under test"
    with open(os.path.join(usr, DOC_REL), "rb") as f:
        assert f.read() == source("insightfs.conf.example")
    with open(os.path.join(usr, MAN_REL), "rb") as f:
        page = f.read()
    assert page == source("insightfs.1").replace(b"@VERSION@", version().encode())
    assert b"@" + b"VERSION@" not in page

    # The unit names the binary at its installed path ($(PREFIX)/bin, DESTDIR left out).
    with open(os.path.join(usr, UNIT_REL)) as f:
        unit = f.read()
    assert unit.encode() == source("insightfs@.service").replace(b"@BINDIR@", b"/usr/bin")
    settings = unit_settings(unit)
    assert [s for s in settings if s[0] == "Service"] == [
        ("Service", "Type", "exec"),
        ("Service", "ExecStartPre", "/bin/mkdir -p /mnt/insight/%i"),
        ("Service", "ExecStartPre", "-/bin/fusermount3 -uz /mnt/insight/%i"),
        ("Service", "ExecStart", "/usr/bin/insightfs -f -o allow_other,auto_unmount "
                                 "/etc/insightfs/%i.conf /mnt/insight/%i"),
        ("Service", "ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Service", "ExecStop", "/bin/fusermount3 -u /mnt/insight/%i"),
        ("Service", "Restart", "on-failure"),
        ("Service", "RestartSec", "5s"),
    ]
    assert {(k, v) for s, k, v in settings if s == "Unit"} >= {
        ("After", "network-online.target"), ("Wants", "network-online.target"),
        ("Documentation", "man:insightfs(1)")}
    assert [(k, v) for s, k, v in settings if s == "Install"] == [
        ("WantedBy", "multi-user.target")]


# What a reader of the page must find in it: every option of SPEC 2, every setting of
# SPEC 3, the name forms of SPEC 4, the files of /.insightfs with every stats field, the
# errno table of SPEC 6, the signals, fstab, mount -t, systemd, getting started with every
# --check-config verdict, the environment and the pages it points to.
MAN_MUST_SAY = [
    # options
    "-c FILE, --config FILE", "-f ", "-d ", "-s ", "-o OPTION[,OPTION...]", "allow_other",
    "auto_unmount", "uid=N, gid=N", "config=FILE", "--fetch PATH", "--discover",
    "--check-config", "-h, --help", "-V, --version", "user_allow_other",
    "ro,nosuid,nodev,default_permissions",
    # configuration: every setting with its default, and the ranges
    'endpoint = "https://cw.apigw.ntruss.com";', 'access_key = "...";',
    'secret_key = "...";', "secret_key_file =", "timeout_ms = 15000;", "100 to 600000",
    "connect_timeout_ms = 5000;", "100 to timeout_ms", "retries = 2;", "0 to 10",
    "max_connections = 8;", "1 to 256", "max_requests_per_second = 0;", "0 to 10000",
    "max_image_bytes = 16777216;", "1024 to cache.max_bytes", "ca_file =",
    'resolution = "AUTO";', "max_pending = 4096;", "16 to 1000000", "domain_code =",
    "PUB, GOV or FIN", "x-ncp-dmn_cd", "max_bytes = 268435456;", "1 MiB to 1 TiB",
    "live_ttl_s = 60;", "0 to 86400 seconds", "settle_s = 300;", "0 to 604800 seconds",
    "error_ttl_s = 10;", "0 to 3600 seconds", "stale_if_error_s = 3600;",
    "readahead = true;", "align_s = 60;", "1 to 86400 seconds", 'timezone = "UTC";',
    'presets = [ "last-1h", "last-6h", "last-24h", "last-7d", "today", "yesterday" ];',
    "history_days = 30;", "1 to 3660", "dashboards = ( ... );", "discover = false;",
    "discover_ttl_s = 300;", "10 to 86400 seconds", "pages = false;",
    'log_level = "info";', "@include", "chmod 600",
    # names
    "START-END", "EPOCH", "YYYYMMDDTHHMMZ", "YYYYMMDDTHHMMSSZ", "last-NUNIT", "today",
    "yesterday", "@high, @auto", "days/", "YYYY-MM-DD.png", "by its name and by its id",
    "index.html",
    # /.insightfs
    "/.insightfs/", "stats", "metrics", "metrics.prom", "config", "cache.entries",
    "cache.bytes", "cache.pinned_bytes", "cache.max_bytes", "cache.hits, cache.misses",
    "cache.evictions", "cache.keys", "cache.inodes", "cache.readahead",
    "upstream.requests", "upstream.failures", "upstream.retries", "upstream.in_flight",
    "upstream.bytes", "upstream.queued", "upstream.waiting", "upstream.shed",
    "upstream.down", "upstream.down_total", "uptime_s", "insightfs_cache_hits_total",
    "insightfs_upstream_down_total", "user.insightfs.api_path",
    # errors
    "ENOENT", "EINVAL", "EACCES", "EAGAIN", "ETIMEDOUT", "EIO", "EINTR", "EROFS",
    "ENOTCONN", "ECONNABORTED", "EISDIR", "upstream down: ETIMEDOUT", "upstream up after",
    # signals, fstab, mount -t, systemd
    "SIGINT, SIGTERM", "SIGHUP", "reload failed, keeping the old configuration",
    "/etc/insightfs/insightfs.conf /mnt/insight fuse.insightfs allow_other,_netdev 0 0",
    "mount -t fuse.insightfs /etc/insightfs/insightfs.conf /mnt/insight",
    "systemctl enable --now insightfs@web", "/etc/insightfs/web.conf on /mnt/insight/web",
    "insightfs -f -o allow_other,auto_unmount",
    # getting started and every --check-config verdict
    "insightfs --discover >>insightfs.conf", "OK (3 dashboards visible)",
    "authentication failed: wrong access_key or secret_key (errorCode 200)",
    "permission denied for this key (errorCode 210)",
    "local clock is N s ahead of the gateway (limit 300 s): fix NTP",
    "local clock is N s behind the gateway (limit 300 s): fix NTP",
    "endpoint unreachable: REASON",
    "TLS verification failed: REASON (api.ca_file adds a CA)",
    "unexpected answer: HTTP STATUS",
    # environment, see also
    "NCLOUD_ACCESS_KEY", "NCLOUD_SECRET_KEY", "INSIGHTFS_CONFIG", "XDG_CONFIG_HOME",
    "fusermount3(1)", "mount.fuse3(8)",
]
MAN_SECTIONS = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "CONFIGURATION", "NAMES",
                "THE TREE", "FILES", "ERRORS", "SIGNALS", "FSTAB AND MOUNT", "SYSTEMD",
                "GETTING STARTED", "ENVIRONMENT", "EXIT STATUS", "SEE ALSO"]


def test_man_page_renders_without_warnings(installed):
    if not shutil.which("man"):
        pytest.skip("man(1) is not installed (package man-db)")
    _, usr = installed
    page = os.path.join(usr, MAN_REL)
    env = clean_env({"MANWIDTH": "80", "LC_ALL": "C.UTF-8", "MANPAGER": "cat",
                     "PAGER": "cat"})
    env.pop("MAN_KEEP_FORMATTING", None)
    p = subprocess.run(["man", "--warnings", "-l", page], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env, timeout=60 * TIME_FACTOR)
    assert (p.returncode, p.stderr.decode()) == (0, "")
    text = p.stdout.decode()
    assert "\b" not in text and "\x1b" not in text, "formatting left in piped output"
    # No word is hyphenated at a line end: option names stay whole.
    assert "\u2010" not in text
    lines = text.splitlines()
    assert lines[0].split() == ["INSIGHTFS(1)", "User", "Commands", "INSIGHTFS(1)"]
    assert lines[-1].split() == ["insightfs", version(), "INSIGHTFS(1)"]
    assert [l for l in lines[1:-1] if l and l[0].isupper()] == MAN_SECTIONS
    flat = " ".join(text.split())
    missing = [s for s in MAN_MUST_SAY if " ".join(s.split()) not in flat]
    assert missing == []
    # Section 13's shared cache: the group, its settings with defaults and ranges, what
    # happens when Redis is down, the no-TLS note, its stats and metrics.
    shared = ["The shared group", 'redis = "redis://HOST[:PORT][/DB]";',
              '"unix:/PATH[?db=N]"', 'password_file = "FILE";', "timeout_ms = 100;",
              "10 to 10000", "final_ttl_s = 2592000;", "60 to 31536000 seconds",
              "fleet_requests_per_second = 0;", "shared cache unavailable:",
              "shared cache back", "not encrypted", "shared.up", "shared.invalid",
              "shared.leases_won, shared.leases_waited", "insightfs_shared_up",
              "insightfs_shared_invalid_total", "shared.redis: REASON"]
    assert [s for s in shared if " ".join(s.split()) not in flat] == []

    # groff with every warning enabled, on the source as committed.
    if shutil.which("groff"):
        p = subprocess.run(["groff", "-man", "-ww", "-z", os.path.join(ROOT, "conf",
                                                                       "insightfs.1")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=60 * TIME_FACTOR)
        assert (p.returncode, p.stdout, p.stderr.decode()) == (0, b"", "")


def test_systemd_analyze_verify_accepts_an_instance(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (package systemd): the unit is "
                    "not verified")
    prefix = str(tmp_path / "prefix")
    make("install", PREFIX=prefix)  # no DESTDIR: ExecStart names a binary that exists
    units = tmp_path / "units"
    units.mkdir()
    unit = str(units / "insightfs@web.service")
    shutil.copyfile(os.path.join(prefix, UNIT_REL), unit)
    with open(unit) as f:
        assert ("ExecStart=%s/bin/insightfs -f " % prefix) in f.read()

    def verify():
        return subprocess.run(["systemd-analyze", "verify", "--man=no", unit],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=120 * TIME_FACTOR)

    p = verify()
    out = p.stdout.decode() + p.stderr.decode()
    assert p.returncode == 0, out
    assert "insightfs" not in out, out

    # The same check fails once the binary is gone: it does look at ExecStart.
    make("uninstall", PREFIX=prefix)
    p = verify()
    assert p.returncode != 0
    assert ("insightfs@web.service: Command %s/bin/insightfs is not executable"
            % prefix) in p.stderr.decode()


def test_uninstall_removes_exactly_what_install_put_there(tmp_path):
    # A system's standard directories, and files of other packages in them.
    dest = str(tmp_path / "dest")
    for d in ("usr/bin", "usr/share/man/man1", "usr/share/doc", "usr/lib/systemd/system"):
        os.makedirs(os.path.join(dest, d))
    for rel in ("usr/bin/other", "usr/share/man/man1/other.1",
                "usr/lib/systemd/system/other.service"):
        with open(os.path.join(dest, rel), "w") as f:
            f.write("not insightfs\n")
        os.chmod(os.path.join(dest, rel), 0o644)
    before = tree(dest)
    assert len(before) == 12

    make("install", DESTDIR=dest, PREFIX="/usr")
    added = {"usr/" + BIN_REL: ("f", 0o755), "usr/" + MAN_REL: ("f", 0o644),
             "usr/" + DOC_REL: ("f", 0o644), "usr/" + UNIT_REL: ("f", 0o644),
             "usr/share/doc/insightfs": "d"}
    assert tree(dest) == dict(before, **added)

    make("uninstall", DESTDIR=dest, PREFIX="/usr")
    assert tree(dest) == before
    # Again, with nothing left to remove: still no error, nothing else touched.
    make("uninstall", DESTDIR=dest, PREFIX="/usr")
    assert tree(dest) == before

    # The doc directory stays when something else is in it.
    make("install", DESTDIR=dest, PREFIX="/usr")
    notes = os.path.join(dest, "usr/share/doc/insightfs/NOTES")
    with open(notes, "w") as f:
        f.write("mine\n")
    os.chmod(notes, 0o644)
    make("uninstall", DESTDIR=dest, PREFIX="/usr")
    assert tree(dest) == dict(before, **{"usr/share/doc/insightfs": "d",
                                         "usr/share/doc/insightfs/NOTES": ("f", 0o644)})


# ---- mount -t fuse.insightfs with the installed binary ------------------------------

def _daemon_pids(mnt):
    """Processes of an insightfs (the binary or valgrind running it) serving mnt."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
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
def installed_on_system_path(tmp_path):
    """`make install PREFIX=/usr/local` staged in a DESTDIR, its binary made visible as
    /usr/local/bin/insightfs for the test (a symlink; under valgrind a script running it
    under valgrind): what mount.fuse3 finds on the system PATH after a real install."""
    if os.geteuid() != 0:
        pytest.skip("mount(8) of a FUSE type needs root")
    if not os.path.exists("/usr/sbin/mount.fuse3") and not os.path.exists("/sbin/mount.fuse3"):
        pytest.skip("mount.fuse3 (package fuse3) is not installed")
    link = "/usr/local/bin/insightfs"
    for other in ("/usr/local/sbin/insightfs", link):
        if os.path.lexists(other):
            pytest.skip(other + " exists: it would shadow or be replaced by the binary "
                        "under test")
    dest = str(tmp_path / "dest")
    make("install", DESTDIR=dest, PREFIX="/usr/local")
    binary = os.path.join(dest, "usr/local", BIN_REL)
    made_dir = not os.path.isdir("/usr/local/bin")
    os.makedirs("/usr/local/bin", exist_ok=True)
    if VALGRIND:
        fd = os.open(link, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755)
        with os.fdopen(fd, "w") as f:
            f.write("#!/bin/sh\nexec %s \"$@\"\n" % " ".join(shlex.quote(a) for a in (
                VALGRIND_ARGS + ["--log-file=" + os.path.join(_vg_dir[0], "vg.%p"), binary])))
    else:
        os.symlink(binary, link)
    try:
        yield binary
    finally:
        os.unlink(link)
        if made_dir:
            try:
                os.rmdir("/usr/local/bin")
            except OSError:
                pass


def test_mount_t_fuse_insightfs_runs_the_installed_binary(api, tmp_path,
                                                          installed_on_system_path):
    binary = installed_on_system_path
    cfg = make_config(tmp_path / "web.conf", api, body=DEFAULT_DASHBOARDS)
    mnt = str(tmp_path / "mnt")
    os.mkdir(mnt)
    # As at boot: system paths only; mount(8) and mount.fuse3 find `insightfs` there.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C"}

    def mounts():
        with open("/proc/mounts") as f:
            return [l.split() for l in f if l.split()[1] == mnt]

    try:
        r = subprocess.run(["mount", "-t", "fuse.insightfs", cfg, mnt], capture_output=True,
                           text=True, env=env, timeout=30 * TIME_FACTOR)
        assert (r.returncode, r.stderr) == (0, "")
        ms = mounts()
        assert len(ms) == 1
        assert ms[0][:3] == [cfg, mnt, "fuse.insightfs"]
        assert ms[0][3].split(",")[:3] == ["ro", "nosuid", "nodev"]
        pids = _daemon_pids(mnt)
        assert len(pids) == 1
        if not VALGRIND:
            assert os.path.realpath("/proc/%d/exe" % pids[0]) == os.path.realpath(binary)

        target = image_target("df_457958429047263232", "cpu_avg__1234", FINAL_S, FINAL_E)
        path = os.path.join(mnt, "web", "cpu", "%d-%d.png" % (FINAL_S, FINAL_E))
        with open(path, "rb") as f:
            got = f.read()
        assert os.getxattr(path, "user.insightfs.api_path").decode() == target
        assert [e["target"] for e in api.requests()] == [target]
        status, _, want = api.signed_get(target)
        assert status == 200 and got == want and got[:8] == b"\x89PNG\r\n\x1a\n"

        subprocess.run(["umount", mnt], check=True, env=env, timeout=20 * TIME_FACTOR)
        assert mounts() == []
        wait_for(lambda: all(_gone(p) for p in pids), 10, "the daemon to exit")
    finally:
        if mounts():
            subprocess.run(["umount", "-l", mnt], env=env)
        for pid in _daemon_pids(mnt):
            os.kill(pid, signal.SIGKILL)
