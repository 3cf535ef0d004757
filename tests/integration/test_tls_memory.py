"""SPEC section 7: TLS connections share one certificate store, so 32 TLS connections
add no more than a few MiB to the daemon's RSS.

Before, every connection parsed the CA bundle (system bundle + api.ca_file) into a store
of its own: about 1.35 MiB each, some 40 MiB for 32 connections at once. The test mounts
against the local API over HTTPS (the test CA given as api.ca_file) with
max_connections = 32 and reads 32 uncached images at once while the API holds each
answer long enough for all 32 connections to be open together. It asserts the exact
bytes (equal to what --fetch gives), 32 upstream requests on 32 connections, and an RSS
growth under 8 MiB. RSS is only meaningful in the plain build: under sanitizers or
valgrind the test is skipped.
"""
import os
import subprocess
import threading
import time

import pytest

from conftest import TIME_FACTOR, VALGRIND, bin_cmd, clean_env, make_config, wait_for
from client import LocalAPI, image_target
import certs

DASH, WIDGET = "df_457958429047263232", "cpu_avg__1234"  # web/cpu
BASE_MS = 1733011200000  # 2024-12-01T00:00Z: old ranges, final versions
N = 32
LATENCY_MS = 400  # each answer waits this long: the 32 connections overlap
MAX_GROWTH_KIB = 8 * 1024
PNG_SIG = b"\x89PNG\r\n\x1a\n"

SANITIZED = bool(os.environ.get("INSIGHTFS_SANITIZE"))

pytestmark = pytest.mark.skipif(
    SANITIZED or VALGRIND,
    reason="RSS is only meaningful in the plain build: sanitizers and valgrind add "
           "their own shadow memory and allocator")


def rng(i):
    start = BASE_MS + i * 60000
    return start, start + 3600000


def name(i):
    return "%d-%d.png" % rng(i)


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def established_to(pid, port):
    """The daemon's TCP connections to port that are established now."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            link = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    n = 0
    for table in ("tcp", "tcp6"):
        with open("/proc/%d/net/%s" % (pid, table)) as f:
            next(f)
            for line in f:
                fields = line.split()
                rem_port = int(fields[2].rsplit(":", 1)[1], 16)
                if rem_port == port and fields[3] == "01" and fields[9] in inodes:
                    n += 1
    return n


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def tls_api(tmp_path):
    c = certs.make_certs(str(tmp_path / "certs"))
    api = LocalAPI().start(str(tmp_path / "tlsapi"), tls=c.valid)
    yield api, c
    api.stop()


def test_32_tls_connections_share_one_certificate_store(tmp_path, tls_api, mount):
    api, c = tls_api
    assert api.url.startswith("https://127.0.0.1:")
    cfg = make_config(tmp_path / "tls.conf", api,
                      '  ca_file = "%s";\n  max_connections = %d;\n  retries = 0;\n'
                      '  timeout_ms = %d;\n' % (c.ca, N, int(30000 * TIME_FACTOR)))
    m = mount(cfg)
    pid = m.proc.pid
    paths = [m.path("web", "cpu", name(i)) for i in range(N)]
    targets = [image_target(DASH, WIDGET, *rng(i)) for i in range(N)]

    # The daemon is idle after the mount: no connection has been made yet.
    assert api.requests() == []
    rss_before = vm_rss_kib(pid)
    api.set_latency(LATENCY_MS)

    results = [None] * N
    barrier = threading.Barrier(N)

    def reader(i):
        try:
            barrier.wait(timeout=10 * TIME_FACTOR)
            results[i] = read_all(paths[i])
        except BaseException as e:  # noqa: B902 - reported below
            results[i] = e

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(N)]
    for t in threads:
        t.start()
    # All 32 requests are with the API at once (each held LATENCY_MS): RSS then holds
    # 32 live TLS connections.
    wait_for(lambda: len(api.requests()) == N, 20, "32 requests in flight")
    peak = vm_rss_kib(pid)
    open_conns = established_to(pid, api.port)
    deadline = time.monotonic() + 60 * TIME_FACTOR
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not [i for i, t in enumerate(threads) if t.is_alive()], "readers still blocked"
    rss_after = vm_rss_kib(pid)
    api.set_latency(0)

    errors = [(i, r) for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert not errors, errors
    log = api.requests()
    assert sorted(e["target"] for e in log) == sorted(targets)
    assert all(e["status"] == 200 for e in log), log
    # 32 TLS connections were open at once (none reused: all answers were pending).
    assert open_conns == N, open_conns

    growth = max(peak, rss_after) - rss_before
    assert growth < MAX_GROWTH_KIB, (
        "RSS grew by %d KiB for %d TLS connections (before %d KiB, peak %d KiB, after "
        "%d KiB)" % (growth, N, rss_before, peak, rss_after))

    # The bytes: valid PNGs, each exactly what --fetch gives for the same name.
    for i in range(N):
        body = results[i]
        assert body.startswith(PNG_SIG) and body.endswith(b"IEND\xaeB`\x82"), i
        p = subprocess.run(bin_cmd(["--fetch", "web/cpu/" + name(i), "--config", cfg]),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=clean_env(), timeout=60 * TIME_FACTOR)
        assert p.returncode == 0, p.stderr
        assert p.stdout == body, i
