"""Fixtures for the integration suite, in the style of libfuse's own tests.

- `api`: the bundled local Cloud Insight API on a free loopback port (tests/localapi).
- `config`: writes a configuration file (mode 0600) pointing at that API.
- `run_insightfs`: runs build/insightfs in a non-mount mode and returns its result.
- `mount`: mounts for real with `insightfs -f`, waits for the mount with a deadline, and
  on teardown unmounts, asserts exit status 0 and that the daemon's stderr holds no
  sanitizer report.
- `bin_cmd(args)`: the argv that runs build/insightfs; every run of the binary goes
  through it. With INSIGHTFS_VALGRIND=1 (`make check VALGRIND=1`) it is prefixed by
  valgrind, which writes each process's report to its own log file; the autouse fixture
  `valgrind_clean` fails the test if any of them is non-empty (stderr stays exact).
- `redis`: a redis-server of the test's own on a free loopback port (SPEC 13), with a tiny
  RESP client, kill/pause/resume/restart; `shared_group()` writes the `shared` group.
Time bounds are multiplied by INSIGHTFS_TEST_TIME_FACTOR (3 under sanitizers, 20 under
valgrind).
"""
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "localapi"))

from client import LocalAPI  # noqa: E402

BIN = os.environ.get("INSIGHTFS_BIN", os.path.join(ROOT, "build", "insightfs"))
VALGRIND = os.environ.get("INSIGHTFS_VALGRIND", "") not in ("", "0")
# The sanitizers of the build under test (`make check SANITIZE=...`): "" for the plain
# build, else e.g. "address,undefined" or "thread".
SANITIZE = os.environ.get("INSIGHTFS_SANITIZE", "")
TIME_FACTOR = float(os.environ.get("INSIGHTFS_TEST_TIME_FACTOR",
                                   "20" if VALGRIND else
                                   "3" if os.environ.get("INSIGHTFS_SANITIZE") else "1"))

# Valgrind's flags, the same as the Makefile's VALGRIND_FLAGS for the unit tests. A
# finding exits 99, a status insightfs never uses, so it cannot pass for an expected one.
VALGRIND_EXIT = 99
VALGRIND_ARGS = ["valgrind", "-q", "--error-exitcode=%d" % VALGRIND_EXIT, "--leak-check=full",
                 "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite",
                 "--num-callers=40", "--vgdb=no",
                 "--suppressions=" + os.path.join(ROOT, "tests", "valgrind.supp")]
_vg_dir = []  # the current test's log directory (set by valgrind_clean)


def bin_cmd(args=()):
    """The argv running insightfs with args: BIN, under valgrind with INSIGHTFS_VALGRIND."""
    if not VALGRIND:
        return [BIN] + list(args)
    if not _vg_dir:  # outside valgrind_clean (tests/soak, unchecked): one directory a process
        _vg_dir.append(tempfile.mkdtemp(prefix="insightfs-valgrind-"))
        os.chmod(_vg_dir[0], 0o1777)
    return VALGRIND_ARGS + ["--log-file=" + os.path.join(_vg_dir[0], "vg.%p"), BIN] + list(args)


@pytest.fixture(autouse=True)
def valgrind_clean():
    """Under valgrind, fail the test if any insightfs it ran reported anything. Set up
    before (so torn down after) the `mount` fixture, whose teardown waits for the daemon.
    The directory is world-writable: one test runs insightfs as nobody."""
    if not VALGRIND:
        yield
        return
    d = tempfile.mkdtemp(prefix="insightfs-valgrind-")
    os.chmod(d, 0o1777)
    _vg_dir[:] = [d]
    yield
    del _vg_dir[:]
    reports = []
    for path in sorted(glob.glob(os.path.join(d, "vg.*"))):
        with open(path, errors="replace") as f:
            text = f.read()
        if text:
            reports.append("%s:\n%s" % (path, text))
    if reports:
        raise AssertionError("valgrind reports (kept in %s):\n%s" % (d, "\n".join(reports)))
    shutil.rmtree(d, ignore_errors=True)


SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "ThreadSanitizer")

DEFAULT_DASHBOARDS = """dashboards = (
  { name = "web"; id = "df_457958429047263232";
    widgets = ( { name = "cpu"; id = "cpu_avg__1234"; },
                { name = "memory"; id = "mem_used__5678"; },
                { name = "network in"; id = "net_in__9012"; } ); },
  { name = "db"; id = "1000123";
    widgets = ( { name = "qps"; id = "555"; }, { id = "disk_io__77"; } ); }
);
"""


def wait_for(pred, timeout, what):
    """Poll pred() until it is true or timeout (scaled) passes; fail naming what."""
    deadline = time.monotonic() + timeout * TIME_FACTOR
    delay = 0.005
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy") and not k.startswith("NCLOUD_")
           and k != "INSIGHTFS_CONFIG"}
    env["HOME"] = env.get("HOME", "/root")
    if extra:
        env.update(extra)
    return env


@pytest.fixture
def api(tmp_path):
    server = LocalAPI()
    server.start(str(tmp_path / "api"))
    yield server
    server.stop()


def make_config(path, api, api_extra="", body=None, secret=None, access=None, mode=0o600):
    """Write a configuration for api at path; returns the path."""
    text = ('api = {\n  endpoint = "%s";\n  access_key = "%s";\n  secret_key = "%s";\n%s};\n'
            % (api.url, access or api.access_key, secret or api.secret_key, api_extra))
    text += DEFAULT_DASHBOARDS if body is None else body
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(str(path), mode)
    return str(path)


@pytest.fixture
def config(tmp_path, api):
    def _make(api_extra="", body=None, name="insightfs.conf", **kw):
        return make_config(tmp_path / name, api, api_extra, body, **kw)
    return _make


def run(args, env=None, timeout=60, input=None):
    """Run insightfs to its end. A sanitizer report fails the test even when the exit
    status is the one expected (ASan exits 1, as insightfs does for a refused input)."""
    p = subprocess.run(bin_cmd(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=clean_env(env), timeout=timeout * TIME_FACTOR, input=input)
    check_stderr(p.stderr.decode(errors="replace"))
    return p


@pytest.fixture
def run_insightfs():
    return run


def is_mounted(mnt):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == mnt:
                return line
    return None


class Mount:
    def __init__(self, mnt, proc, stderr_path):
        self.mnt = mnt
        self.proc = proc
        self.stderr_path = stderr_path

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def stderr(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    def unmount(self):
        if is_mounted(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", self.mnt], check=False)
        try:
            rc = self.proc.wait(timeout=20 * TIME_FACTOR)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("insightfs did not exit after unmount")
        return rc


def check_stderr(text):
    for mark in SANITIZER_MARKS:
        assert mark not in text, "sanitizer report in the daemon's stderr:\n" + text


@pytest.fixture
def mount(tmp_path):
    mounts = []

    def _mount(config_path, args=(), env=None, wait=True):
        mnt = str(tmp_path / ("mnt%d" % len(mounts)))
        os.mkdir(mnt)
        stderr_path = str(tmp_path / ("daemon%d.stderr" % len(mounts)))
        err = open(stderr_path, "w")
        proc = subprocess.Popen(bin_cmd(["-f"] + list(args) + [config_path, mnt]),
                                stdout=err, stderr=err, env=clean_env(env))
        err.close()
        m = Mount(mnt, proc, stderr_path)
        mounts.append(m)
        if wait:
            def ready():
                if proc.poll() is not None:
                    raise AssertionError("insightfs exited with %d:\n%s"
                                         % (proc.returncode, m.stderr()))
                return is_mounted(mnt)
            wait_for(ready, 10, "the mount")
        return m

    yield _mount
    failures = []
    for m in mounts:
        if m.proc.poll() is None or is_mounted(m.mnt):
            rc = m.unmount()
            if rc != 0:
                failures.append("exit status %d:\n%s" % (rc, m.stderr()))
        check_stderr(m.stderr())
    assert not failures, failures


# ---- a Redis server of the test's own (SPEC 13) ----------------------------------------------

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisError(Exception):
    """An error reply (`-ERR ...`) from Redis."""


def _resp_encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = b"%d" % a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def _resp_read(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("Redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        if len(data) != n + 2:
            raise ConnectionError("Redis closed the connection")
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise ConnectionError("not a RESP reply: %r" % line)


def free_port():
    """A loopback TCP port nothing listens on right now."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


class RedisServer:
    """One redis-server of the test's own on a free loopback port, no persistence, also
    on a unix socket (`.socket`). `.url` is redis://127.0.0.1:PORT/0. `cmd(*args)` is a
    tiny RESP client (a fresh connection per command; AUTH with the password, SELECT db):
    bulk strings come back as bytes, errors raise RedisError. kill() is SIGKILL, pause()
    SIGSTOP, resume() SIGCONT, restart() a new server on the same port (empty)."""

    def __init__(self, tmpdir, password=None):
        self.dir = tempfile.mkdtemp(prefix="redis-", dir=str(tmpdir))
        self.password = password
        self.port = None
        self.proc = None
        self.paused = False
        self.socket = os.path.join(self.dir, "redis.sock")
        self.out_path = os.path.join(self.dir, "redis.out")

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def output(self):
        try:
            with open(self.out_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def start(self, port=None):
        """Start on port (or a free one); returns once it answers PING."""
        assert self.proc is None, "already running"
        for attempt in range(5):
            self.port = port or free_port()
            args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no", "--daemonize", "no",
                    "--dir", self.dir, "--unixsocket", self.socket, "--unixsocketperm", "700",
                    "--logfile", ""]
            if self.password is not None:
                args += ["--requirepass", self.password]
            out = open(self.out_path, "ab")
            try:
                self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, close_fds=True)
            except FileNotFoundError:
                raise RuntimeError("%s not found: `make deps` installs redis-server"
                                   % REDIS_SERVER) from None
            finally:
                out.close()
            deadline = time.monotonic() + 10 * TIME_FACTOR
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    if self.cmd("PING", timeout=1) == "PONG":
                        self.paused = False
                        return self
                except (OSError, RedisError):
                    pass
                time.sleep(0.01)
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None
            if port is not None and attempt >= 2:
                break  # the same port, refused three times: give up
            if port is None and "Address already in use" not in self.output():
                break
            time.sleep(0.2)
        raise RuntimeError("redis-server did not answer PING:\n" + self.output())

    def cmd(self, *args, db=0, timeout=None):
        """One command on a fresh connection; its decoded reply."""
        s = socket.create_connection(("127.0.0.1", self.port),
                                     timeout=timeout or 5 * TIME_FACTOR)
        try:
            f = s.makefile("rb")
            pre = []
            if self.password is not None:
                pre.append(("AUTH", self.password))
            if db:
                pre.append(("SELECT", db))
            s.sendall(b"".join(_resp_encode(list(c)) for c in pre + [args]))
            for _ in pre:
                _resp_read(f)
            return _resp_read(f)
        finally:
            s.close()

    def kill(self):
        """SIGKILL: the server is gone at once, its data with it."""
        if self.proc is None:
            return
        if self.paused:
            self.proc.send_signal(signal.SIGCONT)
            self.paused = False
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def pause(self):
        """SIGSTOP: connections are accepted by the kernel, nothing is answered."""
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def restart(self):
        """Kill (if running) and start again on the same port, empty."""
        self.kill()
        return self.start(self.port)

    def stop(self):
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if self.paused:
            proc.send_signal(signal.SIGCONT)
            self.paused = False
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10 * TIME_FACTOR)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pytest_configure(config):
    config.addinivalue_line("markers", "redis_password(pw): the `redis` fixture's "
                            "server requires this password (--requirepass)")


@pytest.fixture
def redis(request, tmp_path):
    """A redis-server of this test's own (RedisServer), stopped at teardown. Ask for it
    before `mount` so the mounts are torn down first. `@pytest.mark.redis_password(PW)`
    starts it with --requirepass PW."""
    mark = request.node.get_closest_marker("redis_password")
    server = RedisServer(tmp_path, password=mark.args[0] if mark else None)
    server.start()
    yield server
    server.stop()


def shared_group(redis_url, timeout_ms=500, password_file=None, final_ttl_s=None,
                 fleet_requests_per_second=None):
    """The `shared = { ... };` group for a configuration body. timeout_ms is multiplied
    by TIME_FACTOR (SPEC 13) and kept within its range (10-10000)."""
    text = 'shared = {\n  redis = "%s";\n  timeout_ms = %d;\n' % (
        redis_url, min(10000, max(10, int(timeout_ms * TIME_FACTOR))))
    if password_file is not None:
        text += '  password_file = "%s";\n' % password_file
    if final_ttl_s is not None:
        text += "  final_ttl_s = %d;\n" % final_ttl_s
    if fleet_requests_per_second is not None:
        text += "  fleet_requests_per_second = %d;\n" % fleet_requests_per_second
    return text + "};\n"
