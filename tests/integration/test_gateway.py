"""Fidelity to the real API gateway (SPEC section 1): the x-ncp-dmn_cd domain code.

The bundled local API records the header of every request in its request log
(`domain_code`), so these tests see exactly what a mount, --fetch and --check-config
sent. The endpoint rule (FIN for cw.apigw.fin-ntruss.com) needs a host that cannot be
reached from here: tests/unit/test_api.c covers it through api_domain_code.
"""
import os
import signal

import pytest

from conftest import DEFAULT_DASHBOARDS, wait_for

BASE_MS = 1733011200000  # 2024-12-01T00:00Z: old ranges, so final and fetched once
HOUR_MS = 3600000


def hour(i):
    return "%d-%d.png" % (BASE_MS + i * HOUR_MS, BASE_MS + (i + 1) * HOUR_MS)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def exercise(m):
    """Three image fetches of a mount: two by stat, one by read."""
    os.stat(m.path("web", "cpu", hour(0)))
    os.stat(m.path("web", "memory", hour(1)))
    assert read_file(m.path("db", "qps", hour(2)))[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("code", ["GOV", None])
def test_mount_sends_domain_code(api, config, mount, code):
    """With api.domain_code every request carries it; without it (and a loopback
    endpoint) none does. The setting is shown in /.insightfs/config only when set."""
    extra = '  domain_code = "%s";\n' % code if code else ""
    m = mount(config(extra, DEFAULT_DASHBOARDS + "discover = true;\n"))
    # discover = true lists dashboards and widgets too: every API call is covered.
    assert sorted(os.listdir(m.mnt)) == ["db", "empty", "we_ird_.name", "web"]
    exercise(m)
    log = api.requests()
    assert len([e for e in log if "/widgets/" in e["target"]]) == 3
    assert any(e["target"].endswith("/dashboard") for e in log)
    assert [e["domain_code"] for e in log] == [code] * len(log), log
    shown = read_file(m.path(".insightfs", "config")).decode()
    if code:
        assert '  domain_code = "%s";\n' % code in shown
    else:
        assert "domain_code" not in shown


def test_fetch_and_check_config_send_domain_code(api, config, run_insightfs):
    cfg = config('  domain_code = "FIN";\n')
    p = run_insightfs(["--check-config", "--config", cfg])
    assert p.returncode == 0, p.stderr
    p = run_insightfs(["--fetch", "web/cpu/" + hour(0), "--config", cfg])
    assert p.returncode == 0, p.stderr
    assert p.stdout[:8] == b"\x89PNG\r\n\x1a\n"
    log = api.requests()
    assert len(log) == 2
    assert [e["domain_code"] for e in log] == ["FIN", "FIN"]


@pytest.mark.parametrize("value", ['"fin"', '"PUBLIC"', '""'])
def test_bad_domain_code_is_a_config_error(api, config, run_insightfs, value):
    """SPEC 2's one-line form, naming api.domain_code; nothing is sent."""
    cfg = config("  domain_code = %s;\n" % value)
    p = run_insightfs(["--check-config", "--config", cfg])
    assert p.returncode == 1
    assert p.stdout == b""
    assert p.stderr.decode() == (
        "insightfs: %s:5: api.domain_code: %s is not PUB, GOV or FIN\n" % (cfg, value))
    assert api.requests() == []


def test_reload_changes_domain_code(api, config, mount):
    """SIGHUP with a new api.domain_code: the next request carries the new value."""
    m = mount(config('  domain_code = "GOV";\n'))
    os.stat(m.path("web", "cpu", hour(0)))
    config('  domain_code = "FIN";\n')
    m.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: 'domain_code = "FIN"' in read_file(m.path(".insightfs", "config")).decode(),
             10, "the reload")
    os.stat(m.path("web", "cpu", hour(1)))
    assert [e["domain_code"] for e in api.requests()] == ["GOV", "FIN"]
