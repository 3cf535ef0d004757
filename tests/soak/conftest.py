"""Fixtures for the soak test: the integration suite's own (`api`, `config`, `mount`) and
helpers (`wait_for`, `TIME_FACTOR`, ...), re-exported.

tests/integration/conftest.py is loaded from its file under another module name, so it
does not clash with this file (pytest imports both as `conftest`). Only `make soak` runs
this directory; `make check` runs tests/localapi and tests/integration.
"""
import importlib.util
import os

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "integration", "conftest.py")
_spec = importlib.util.spec_from_file_location("insightfs_integration_conftest", _PATH)
_ic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ic)  # also puts tests/localapi on sys.path

# Fixtures (pytest finds them by name in this module) and helpers for test_soak.py.
api = _ic.api
config = _ic.config
mount = _ic.mount
BIN = _ic.BIN
DEFAULT_DASHBOARDS = _ic.DEFAULT_DASHBOARDS
TIME_FACTOR = _ic.TIME_FACTOR
check_stderr = _ic.check_stderr
is_mounted = _ic.is_mounted
make_config = _ic.make_config
wait_for = _ic.wait_for
