"""client.py - drive the local Cloud Insight API (ciapi.py) from Python tests.

    import sys; sys.path.insert(0, "<repo>/tests/localapi")
    from client import LocalAPI, sign

    api = LocalAPI().start(tmpdir)                 # or: with LocalAPI().start(tmpdir) as api:
    api.url, api.port, api.access_key, api.secret_key, api.log_path
    api.fault("status", prefix="/cw_fea", status=503, retry_after="1")
    status, headers, body = api.signed_get("/cw_fea/real/cw/api/chart/dashboard")
    api.requests()                                  # log entries of API requests
    api.stop()                                      # SIGTERM; asserts exit status 0

Standard library only.  Control calls use http.client directly, so proxy
variables in the environment never apply.
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "ciapi.py")
PYTHON = "/usr/bin/python3"

DEFAULT_ACCESS_KEY = "LOCALTESTACCESSKEY0001"
DEFAULT_SECRET_KEY = "local-test-secret-key-0123456789"
API_PREFIX = "/cw_fea/real/cw/api/chart/dashboard"


def time_factor():
    """INSIGHTFS_TEST_TIME_FACTOR (SPEC section 10): 3 under sanitizers, 20 under valgrind."""
    try:
        return max(1.0, float(os.environ.get("INSIGHTFS_TEST_TIME_FACTOR") or 1))
    except ValueError:
        return 1.0


def now_ms():
    return int(time.time() * 1000)


def sign(secret, method, target, timestamp, access_key):
    """x-ncp-apigw-signature-v2 for one request:
    base64(HMAC-SHA256(secret, METHOD + " " + TARGET + "\\n" + TIMESTAMP + "\\n" + ACCESS_KEY))."""
    message = "%s %s\n%s\n%s" % (method, target, timestamp, access_key)
    digest = hmac.new(secret.encode("utf-8"), message.encode("latin-1"),
                      hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def signed_headers(target, access_key=DEFAULT_ACCESS_KEY, secret_key=DEFAULT_SECRET_KEY,
                   method="GET", timestamp=None):
    """The three gateway headers for `target` (timestamp: now, Unix ms, unless given)."""
    ts = str(now_ms() if timestamp is None else timestamp)
    return {
        "x-ncp-apigw-timestamp": ts,
        "x-ncp-iam-access-key": access_key,
        "x-ncp-apigw-signature-v2": sign(secret_key, method, target, ts, access_key),
    }


def image_target(dashboard_id, widget_id, start_ms, end_ms, mode="AUTO"):
    """The request target insightfs sends for an image (SPEC section 1): ids
    escaped byte by byte outside A-Z a-z 0-9 - . _ ~, uppercase hex."""
    return "%s/%s/widgets/%s?startTime=%d&endTime=%d&widgetResolutionMode=%s" % (
        API_PREFIX, escape_id(dashboard_id), escape_id(widget_id), start_ms, end_ms, mode)


def escape_id(ident):
    return urllib.parse.quote(str(ident).encode("utf-8"), safe="-._~")


class ControlError(RuntimeError):
    pass


class LocalAPI:
    """One ciapi.py process on a free loopback port."""

    def __init__(self):
        self.proc = None
        self.port = None
        self.url = None
        self.scheme = "http"
        self.access_key = DEFAULT_ACCESS_KEY
        self.secret_key = DEFAULT_SECRET_KEY
        self.dir = None
        self.log_path = None
        self.port_file = None
        self.out_path = None

    # -- lifecycle ------------------------------------------------------------------
    def start(self, tmpdir, tls=None, clock_offset_ms=0, latency_ms=0, data=None,
              extra_args=(), access_key=None, secret_key=None):
        """Start the server; return self once it listens.

        tls: a (cert, key) pair of paths (e.g. certs.make_certs(...).valid), or None.
        data: a dataset (list, written to a file) or the path of a JSON file.
        Files (port file, request log, stdout/stderr) go to a fresh folder in tmpdir.
        """
        assert self.proc is None, "already started"
        os.makedirs(str(tmpdir), exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="ciapi-", dir=str(tmpdir))
        self.port_file = os.path.join(self.dir, "port")
        self.log_path = os.path.join(self.dir, "requests.log")
        self.out_path = os.path.join(self.dir, "ciapi.out")
        if access_key is not None:
            self.access_key = access_key
        if secret_key is not None:
            self.secret_key = secret_key
        args = [PYTHON, SERVER, "--host", "127.0.0.1", "--port", "0",
                "--port-file", self.port_file, "--log", self.log_path,
                "--access-key", self.access_key, "--secret-key", self.secret_key,
                "--clock-offset-ms", str(int(clock_offset_ms)),
                "--latency-ms", str(latency_ms)]
        if tls is not None:
            cert, key = tls
            args += ["--tls", str(cert), str(key)]
            self.scheme = "https"
        if data is not None:
            if isinstance(data, (list, dict)):
                path = os.path.join(self.dir, "data.json")
                with open(path, "w", encoding="utf-8") as f:
                    json.dump(data, f)
                data = path
            args += ["--data", str(data)]
        args += [str(a) for a in extra_args]
        out = open(self.out_path, "wb")
        try:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, close_fds=True)
        finally:
            out.close()
        deadline = time.monotonic() + 15 * time_factor()
        while True:
            # The server writes the file atomically (temp + rename) once it listens.
            try:
                with open(self.port_file) as f:
                    text = f.read()
                if text.endswith("\n"):
                    self.port = int(text)
                    break
            except FileNotFoundError:
                pass
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError("ciapi.py exited at start:\n" + self.output())
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                self.proc = None
                raise RuntimeError("ciapi.py did not write its port file in time:\n"
                                   + self.output())
            time.sleep(0.01)
        self.url = "%s://127.0.0.1:%d" % (self.scheme, self.port)
        return self

    def stop(self, sig=signal.SIGTERM):
        """Stop the server with `sig` (SIGTERM by default); assert it exits 0."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.send_signal(sig)
        try:
            rc = proc.wait(timeout=10 * time_factor())
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("ciapi.py did not exit after signal %d:\n%s"
                                 % (sig, self.output()))
        assert rc == 0, "ciapi.py exited with %r:\n%s" % (rc, self.output())

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def output(self):
        """What the server printed (stdout and stderr)."""
        try:
            with open(self.out_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- connections ---------------------------------------------------------------------
    def connection(self, timeout=10, context=None):
        """An http.client connection to the server (HTTPS unverified unless a
        context is given)."""
        if self.scheme == "https":
            if context is None:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                               context=context)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def control(self, method, path, body=None):
        """One control call; the decoded JSON (or text) answer.  Raises ControlError
        on a status other than 200."""
        conn = self.connection()
        try:
            data = None if body is None else json.dumps(body).encode("utf-8")
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, "/_control/" + path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise ControlError("%s /_control/%s: HTTP %d %s" % (method, path, resp.status,
                                                                raw.decode("utf-8", "replace")))
        if resp.getheader("Content-Type", "").startswith("application/json"):
            return json.loads(raw)
        return raw.decode("utf-8")

    # -- faults, log, clock -----------------------------------------------------------------
    def fault(self, kind, prefix="*", count=1, **params):
        """Add a fault (see README.md); returns the stored fault with its id."""
        spec = dict(params, kind=kind, prefix=prefix, count=count)
        return self.control("POST", "fault", spec)

    def faults(self):
        return self.control("GET", "faults")

    def clear_faults(self):
        return self.control("DELETE", "faults")

    def log(self):
        """Every logged request (API and /static/), oldest first."""
        return self.control("GET", "log")

    def clear_log(self):
        self.control("DELETE", "log")

    def requests(self, prefix="/cw_fea"):
        """Log entries whose target starts with `prefix` (default: the API)."""
        return [e for e in self.log() if e["target"].startswith(prefix)]

    def file_log(self):
        """The request log file, parsed (lines are written when a request is done)."""
        with open(self.log_path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def set_clock(self, offset_ms):
        return self.control("POST", "clock", {"offset_ms": int(offset_ms)})

    def set_latency(self, ms):
        return self.control("POST", "latency", {"ms": ms})

    def set_data(self, dataset):
        return self.control("POST", "data", dataset)

    def stats(self):
        return self.control("GET", "stats")

    def health(self):
        return self.control("GET", "health")

    # -- signed requests -----------------------------------------------------------------
    def signed_get(self, target, headers=None, method="GET", timestamp=None, access_key=None,
                   secret_key=None, timeout=10, context=None, conn=None):
        """Send one signed request; return (status, headers, body).

        headers is the http.client HTTPMessage (case-insensitive get()).  Pass
        conn to reuse a keep-alive connection (it is left open)."""
        hdrs = signed_headers(target,
                              self.access_key if access_key is None else access_key,
                              self.secret_key if secret_key is None else secret_key,
                              method, timestamp)
        hdrs["User-Agent"] = "ciapi-client"
        if headers:
            hdrs.update(headers)
        own = conn is None
        if own:
            conn = self.connection(timeout=timeout, context=context)
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            for name, value in hdrs.items():
                if value is not None:
                    conn.putheader(name, value)
            conn.endheaders()
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, resp.msg, body
        finally:
            if own:
                conn.close()

    def get(self, target, headers=None, method="GET", timeout=10):
        """An unsigned request (for /static/): (status, headers, body)."""
        conn = self.connection(timeout=timeout)
        try:
            conn.request(method, target, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.msg, resp.read()
        finally:
            conn.close()
