#!/usr/bin/python3
"""ciapi.py - a local stand-in for the NAVER Cloud Insight API (SPEC.md section 9).

It serves, on loopback, with the Python standard library only:

  * the three Cloud Insight APIs insightfs uses (GetDashboardList,
    GetDashboardWidgetList, GetDashboardWidgetImage), checking the API gateway
    headers and signature the way the real gateway does (and recording the
    optional x-ncp-dmn_cd domain code of each request);
  * deterministic 800x600 PNG line charts (same request -> same bytes, across
    restarts);
  * an unsigned control endpoint under /_control/ to inject faults, read the
    request log and move the server's clock;
  * the same PNGs as plain static files under /static/ (for the benchmark's
    httpdirfs and rclone peers).

README.md beside this file documents every option, the control endpoint and
the log format.  Run `ciapi.py --help` for the command line.
"""

import argparse
import base64
import collections
import email.utils
import hashlib
import hmac
import html
import http.server
import json
import os
import random
import re
import select
import signal
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import urllib.parse
import zlib

API_PREFIX = "/cw_fea/real/cw/api/chart/dashboard"
CONTROL_PREFIX = "/_control/"
STATIC_PREFIX = "/static"

DEFAULT_ACCESS_KEY = "LOCALTESTACCESSKEY0001"
DEFAULT_SECRET_KEY = "local-test-secret-key-0123456789"

# The gateway refuses a request whose timestamp is more than 5 minutes off.
MAX_SKEW_MS = 5 * 60 * 1000

# The built-in dataset (SPEC section 9 brief).  Ids are kept exactly as given
# (string or integer) so that clients see both JSON forms; a widget without a
# "name" key and one with "name": null are both present on purpose.
DEFAULT_DATASET = [
    {"id": "df_457958429047263232", "name": "web", "widgets": [
        {"widgetId": "cpu_avg__1234", "name": "cpu"},
        {"widgetId": "mem_used__5678", "name": "memory"},
        {"widgetId": "net_in__9012", "name": "network in"},
    ]},
    {"id": 1000123, "name": "db", "widgets": [
        {"widgetId": 555, "name": "qps"},
        {"widgetId": "disk_io__77"},
    ]},
    {"id": "df_empty", "name": "empty", "widgets": []},
    {"id": "df_weird", "name": "we/ird\u0001.name", "widgets": [
        {"widgetId": "w1", "name": "a/b"},
        {"widgetId": "w2", "name": None},
    ]},
]

# Gateway error codes by HTTP status (SPEC section 1), used by the "status"
# fault when the caller gives no errorCode / message of its own.
GATEWAY_ERRORS = {
    400: ("100", "Bad Request"),
    401: ("200", "Authentication Failed"),
    403: ("210", "Permission Denied"),
    404: ("300", "Not Found"),
    405: ("100", "Bad Request"),
    413: ("430", "Request Entity Too Large"),
    429: ("410", "Throttle Limited"),
    500: ("900", "Unexpected Error"),
    503: ("500", "Endpoint Error"),
    504: ("510", "Endpoint Timeout"),
}

# The values of the optional x-ncp-dmn_cd request header (SPEC section 1): the
# cloud a request is meant for.  Not part of the signed string.
DOMAIN_HEADER = "x-ncp-dmn_cd"
DOMAIN_CODES = ("PUB", "GOV", "FIN")

# Fixed ranges listed in every widget directory under /static/: four UTC days
# starting 2024-12-01 (any other range is served too, just not listed).
STATIC_FIRST_DAY_MS = 1733011200000
STATIC_DAY_MS = 86400000
STATIC_LISTED_DAYS = 4

FAULT_KINDS = ("latency", "status", "hang", "reset", "close", "truncate", "stall",
               "drip", "notpng", "nopngiend", "oversize", "endless", "redirect")


def sign(secret, method, target, timestamp, access_key):
    """The gateway's signature v2: base64(HMAC-SHA256(secret, message))."""
    message = "%s %s\n%s\n%s" % (method, target, timestamp, access_key)
    digest = hmac.new(secret.encode("utf-8"), message.encode("latin-1"),
                      hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


# --------------------------------------------------------------------------
# PNG rendering
# --------------------------------------------------------------------------

WIDTH, HEIGHT = 800, 600
STRIDE = WIDTH + 1  # each scanline starts with its filter byte (always 0)

# Palette indexes.  Index 0 is white so that a zeroed raster is a blank image
# whose filter bytes are already 0.
WHITE, AXIS, GRID, LINE, FILL = range(5)
PALETTE = bytes([
    255, 255, 255,  # white background
    64, 64, 64,     # axes and ticks
    228, 228, 228,  # grid
    31, 119, 180,   # the series line
    221, 234, 246,  # area under the line
])

# The plot area (inclusive pixel coordinates).
PLOT_X0, PLOT_X1 = 60, 779
PLOT_Y0, PLOT_Y1 = 20, 559
GRID_COLUMNS, GRID_ROWS = 10, 8

AUTO_POINTS, HIGH_POINTS = 60, 120

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(ctype, data):
    """One PNG chunk: length, type, data, CRC over type and data."""
    crc = zlib.crc32(ctype + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", crc)


def ihdr_chunk():
    # 800x600, bit depth 8, colour type 3 (palette), deflate, filter 0, no interlace.
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", WIDTH, HEIGHT, 8, 3, 0, 0, 0))


def chart_series(seed, count):
    """`count` values in [0, 1] derived only from `seed` (bytes).

    A bounded random walk whose steps come from SHA-256 of (seed, block), so
    the curve looks like a metric and is identical on every run.
    """
    stream = bytearray()
    block = 0
    while len(stream) < 2 * count + 4:
        stream += hashlib.sha256(seed + block.to_bytes(4, "big")).digest()
        block += 1
    level = 0.15 + 0.7 * (stream[0] / 255.0)          # where the curve starts
    volatility = 0.04 + 0.16 * (stream[1] / 255.0)    # how jumpy it is
    values = []
    for i in range(count):
        step = (int.from_bytes(stream[2 + 2 * i:4 + 2 * i], "big") / 65535.0) - 0.5
        level += step * volatility * 2
        # Reflect at the borders so the walk stays inside the plot.
        if level < 0.03:
            level = 0.06 - level
        if level > 0.97:
            level = 1.94 - level
        values.append(level)
    return values


# zlib level of the IDAT stream: 9 gives ~4-6 kB in ~17 ms, 6 ~6-7 kB in ~5 ms.
# The bytes depend on it, so it is part of the image's identity (--zlib-level).
ZLIB_LEVEL = 9


def render_png(dashboard_id, widget_id, start_ms, end_ms, mode):
    """Render the chart for one image request; a pure function of its arguments."""
    points = HIGH_POINTS if mode == "HIGH" else AUTO_POINTS
    key = json.dumps([str(dashboard_id), str(widget_id), int(start_ms), int(end_ms), mode])
    seed = hashlib.sha256(key.encode("utf-8")).digest()
    values = chart_series(seed, points)

    img = bytearray(STRIDE * HEIGHT)

    def hline(y, x0, x1, colour):
        base = y * STRIDE + 1
        img[base + x0:base + x1 + 1] = bytes((colour,)) * (x1 - x0 + 1)

    def vline(x, y0, y1, colour):
        if y1 < y0:
            y0, y1 = y1, y0
        first = y0 * STRIDE + 1 + x
        img[first:y1 * STRIDE + 1 + x + 1:STRIDE] = bytes((colour,)) * (y1 - y0 + 1)

    # The curve's y for every pixel column of the plot (linear interpolation
    # between the sample points, which are spread evenly across the width).
    width = PLOT_X1 - PLOT_X0
    height = PLOT_Y1 - PLOT_Y0
    ys = []
    for x in range(PLOT_X0, PLOT_X1 + 1):
        pos = (x - PLOT_X0) * (points - 1) / width
        i = min(int(pos), points - 2)
        frac = pos - i
        v = values[i] * (1 - frac) + values[i + 1] * frac
        ys.append(PLOT_Y1 - int(round(v * height)))

    # Area under the curve, then the grid on top of it, then the line and axes.
    for i, y in enumerate(ys):
        if y < PLOT_Y1:
            vline(PLOT_X0 + i, y, PLOT_Y1 - 1, FILL)
    for r in range(1, GRID_ROWS):
        hline(PLOT_Y0 + r * height // GRID_ROWS, PLOT_X0 + 1, PLOT_X1, GRID)
    for c in range(1, GRID_COLUMNS + 1):
        vline(PLOT_X0 + c * width // GRID_COLUMNS, PLOT_Y0, PLOT_Y1 - 1, GRID)
    prev = ys[0]
    for i, y in enumerate(ys):
        # Join the previous column's point to this one; 2 px thick.
        vline(PLOT_X0 + i, min(prev, y), min(max(prev, y) + 1, PLOT_Y1 - 1), LINE)
        prev = y
    vline(PLOT_X0, PLOT_Y0, PLOT_Y1, AXIS)
    hline(PLOT_Y1, PLOT_X0, PLOT_X1, AXIS)
    for r in range(0, GRID_ROWS + 1):          # ticks left of the y axis
        hline(PLOT_Y0 + r * height // GRID_ROWS, PLOT_X0 - 5, PLOT_X0 - 1, AXIS)
    for c in range(0, GRID_COLUMNS + 1):       # ticks below the x axis
        vline(PLOT_X0 + c * width // GRID_COLUMNS, PLOT_Y1 + 1, PLOT_Y1 + 5, AXIS)

    comment = ("insightfs local API chart: dashboard=%s widget=%s start=%d end=%d "
               "mode=%s points=%d" % (urllib.parse.quote(str(dashboard_id), safe=""),
                                      urllib.parse.quote(str(widget_id), safe=""),
                                      int(start_ms), int(end_ms), mode, points))
    return b"".join([
        PNG_SIGNATURE,
        ihdr_chunk(),
        png_chunk(b"PLTE", PALETTE),
        png_chunk(b"tEXt", b"Comment\x00" + comment.encode("ascii")),
        png_chunk(b"IDAT", zlib.compress(bytes(img), ZLIB_LEVEL)),
        png_chunk(b"IEND", b""),
    ])


class PngCache:
    """A thread-safe LRU of rendered PNGs, bounded in bytes."""

    def __init__(self, max_bytes=64 << 20):
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        self.items = collections.OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.renders = 0

    def get(self, dashboard_id, widget_id, start_ms, end_ms, mode):
        key = (str(dashboard_id), str(widget_id), int(start_ms), int(end_ms), mode)
        with self.lock:
            png = self.items.get(key)
            if png is not None:
                self.items.move_to_end(key)
                self.hits += 1
                return png
        # Render outside the lock (zlib releases the GIL); two threads may
        # render the same key at once, which is harmless: same bytes.
        png = render_png(*key)
        with self.lock:
            self.renders += 1
            if key not in self.items:
                self.items[key] = png
                self.bytes += len(png)
                while self.bytes > self.max_bytes and len(self.items) > 1:
                    _, old = self.items.popitem(last=False)
                    self.bytes -= len(old)
        return png


# --------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------

class DatasetError(ValueError):
    pass


def _check_id(value, where):
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DatasetError("%s: must be a string or an integer" % where)
    if isinstance(value, str) and value == "":
        raise DatasetError("%s: must not be empty" % where)


def _check_name(obj, where):
    if "name" in obj and obj["name"] is not None and not isinstance(obj["name"], str):
        raise DatasetError("%s.name: must be a string, null or absent" % where)


def sanitize_name(name, ident):
    """The file name insightfs gives a discovered entry (SPEC section 4)."""
    if name is None:
        return str(ident)
    out = "".join("_" if (ch == "/" or ord(ch) < 0x20 or ch == "\x7f") else ch for ch in name)
    if out.startswith("."):
        out = "_" + out[1:]
    out = out.encode("utf-8", "surrogatepass")[:200].decode("utf-8", "ignore")
    return out or str(ident)


class Dataset:
    """Dashboards and widgets, validated and indexed by their id strings."""

    def __init__(self, raw):
        if not isinstance(raw, list):
            raise DatasetError("the dataset must be a JSON array of dashboards")
        self.raw = raw
        self.dashboards = {}   # str(id) -> dashboard object
        self.widgets = {}      # str(dashboard id) -> {str(widget id) -> widget object}
        for i, dash in enumerate(raw):
            where = "[%d]" % i
            if not isinstance(dash, dict) or "id" not in dash:
                raise DatasetError("%s: must be an object with an id" % where)
            _check_id(dash["id"], where + ".id")
            _check_name(dash, where)
            widgets = dash.get("widgets", [])
            if not isinstance(widgets, list):
                raise DatasetError("%s.widgets: must be an array" % where)
            did = str(dash["id"])
            if did in self.dashboards:
                raise DatasetError("%s.id: duplicate id %r" % (where, did))
            self.dashboards[did] = dash
            self.widgets[did] = {}
            for j, widget in enumerate(widgets):
                wwhere = "%s.widgets[%d]" % (where, j)
                if not isinstance(widget, dict) or "widgetId" not in widget:
                    raise DatasetError("%s: must be an object with a widgetId" % wwhere)
                _check_id(widget["widgetId"], wwhere + ".widgetId")
                _check_name(widget, wwhere)
                wid = str(widget["widgetId"])
                if wid in self.widgets[did]:
                    raise DatasetError("%s.widgetId: duplicate id %r" % (wwhere, wid))
                self.widgets[did][wid] = widget

    def dashboard_list(self):
        """GetDashboardList: every field but "widgets", as given."""
        return [{k: v for k, v in d.items() if k != "widgets"} for d in self.raw]

    def widget_list(self, did):
        """GetDashboardWidgetList: dashboardId, name (if present), widgetId, extras."""
        dash = self.dashboards[did]
        out = []
        for widget in self.widgets[did].values():
            item = {"dashboardId": dash["id"]}
            if "name" in widget:
                item["name"] = widget["name"]
            item["widgetId"] = widget["widgetId"]
            for k, v in widget.items():
                if k not in item:
                    item[k] = v
            out.append(item)
        return out

    # /static/ names: sanitized name first, then the id.
    def static_dashboards(self):
        return [(sanitize_name(d.get("name"), d["id"]), str(d["id"])) for d in self.raw]

    def static_widgets(self, did):
        return [(sanitize_name(w.get("name"), w["widgetId"]), wid)
                for wid, w in self.widgets[did].items()]

    @staticmethod
    def static_find(entries, segment):
        for name, ident in entries:
            if name == segment:
                return ident
        for name, ident in entries:
            if ident == segment:
                return ident
        return None


# --------------------------------------------------------------------------
# Shared server state
# --------------------------------------------------------------------------

class LogEntry:
    """One request's log object and whether its line reached the log file."""
    __slots__ = ("data", "written")

    def __init__(self, data):
        self.data = data
        self.written = False


class State:
    """Everything handler threads share; every mutable field is behind `lock`."""

    def __init__(self, args):
        self.lock = threading.Lock()
        self.access_key = args.access_key
        self.secret_key = args.secret_key
        self.clock_offset_ms = args.clock_offset_ms
        self.latency_ms = args.latency_ms
        self.dataset = Dataset(DEFAULT_DATASET)
        if args.data:
            with open(args.data, encoding="utf-8") as f:
                self.dataset = Dataset(json.load(f))
        self.faults = []
        self.next_fault_id = 1
        self.rng = random.Random(args.seed)
        self.log = []
        self.log_max = args.log_max
        self.log_path = args.log
        self.log_file = open(args.log, "a", encoding="utf-8") if args.log else None
        self.pngs = PngCache()
        self.stopping = threading.Event()
        self.verbose = args.verbose
        self.scheme = "https" if args.tls else "http"
        self.host = args.host
        self.port = None
        self.started = time.time()
        self.connections = 0
        self.tls_failures = 0
        self.requests = 0

    # -- clock --------------------------------------------------------------
    def now(self):
        """The server's clock (seconds), including the configured offset."""
        return time.time() + self.clock_offset_ms / 1000.0

    def now_ms(self):
        return int(time.time() * 1000) + self.clock_offset_ms

    # -- request log ----------------------------------------------------------
    def log_begin(self, method, target, domain_code=None):
        # "t" is for intervals (the tests' own CLOCK_MONOTONIC); "wall" (Unix seconds)
        # is for what happened in one calendar second, e.g. a fleet-wide request rate.
        entry = LogEntry({"t": time.monotonic(), "wall": time.time(), "method": method,
                          "target": target, "status": None, "bytes": 0, "fault": None,
                          "domain_code": domain_code})
        with self.lock:
            self.requests += 1
            self.log.append(entry.data)
            if len(self.log) > self.log_max:
                del self.log[:len(self.log) - self.log_max]
        return entry

    def log_update(self, entry, **fields):
        with self.lock:
            entry.data.update(fields)

    def log_add_bytes(self, entry, n):
        with self.lock:
            entry.data["bytes"] += n

    def log_write(self, entry):
        """Write the entry's line to the log file (once)."""
        with self.lock:
            if entry.written:
                return
            entry.written = True
            if self.log_file is not None:
                self.log_file.write(json.dumps(entry.data) + "\n")
                self.log_file.flush()

    def log_snapshot(self):
        with self.lock:
            return [dict(e) for e in self.log]

    def log_clear(self):
        with self.lock:
            self.log = []
            if self.log_file is not None:
                self.log_file.truncate(0)
                self.log_file.seek(0)

    # -- faults -----------------------------------------------------------------
    def add_fault(self, spec):
        fault = validate_fault(spec)
        with self.lock:
            fault["id"] = self.next_fault_id
            self.next_fault_id += 1
            self.faults.append(fault)
            return dict(fault)

    def take_fault(self, target):
        """The first fault that applies to `target`, consuming one of its count."""
        is_static = target == STATIC_PREFIX or target.startswith(STATIC_PREFIX + "/")
        with self.lock:
            for fault in self.faults:
                prefix = fault["prefix"]
                if prefix == "*":
                    if is_static:
                        continue
                elif not target.startswith(prefix):
                    continue
                p = fault["probability"]
                if p < 1.0 and self.rng.random() >= p:
                    continue
                fault["hits"] += 1
                if fault["count"] > 0:
                    fault["count"] -= 1
                    if fault["count"] == 0:
                        self.faults.remove(fault)
                return dict(fault)
        return None

    def list_faults(self):
        with self.lock:
            return [dict(f) for f in self.faults]

    def clear_faults(self):
        with self.lock:
            n = len(self.faults)
            self.faults = []
            return n

    def stats(self):
        with self.lock:
            return {"connections": self.connections, "tls_handshake_failures": self.tls_failures,
                    "requests": self.requests, "png_renders": self.pngs.renders,
                    "png_cache_hits": self.pngs.hits, "faults": len(self.faults),
                    "clock_offset_ms": self.clock_offset_ms, "latency_ms": self.latency_ms}


def _number(spec, name, default=None, minimum=0, kind=int):
    value = spec.get(name, default)
    if value is None:
        raise ValueError("%s: required" % name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (kind is int and not float(value).is_integer()):
        raise ValueError("%s: must be a number" % name)
    if value < minimum:
        raise ValueError("%s: must be >= %s" % (name, minimum))
    return kind(value)


def validate_fault(spec):
    """Check a POST /_control/fault body; return the stored fault record."""
    if not isinstance(spec, dict):
        raise ValueError("the fault must be a JSON object")
    kind = spec.get("kind")
    if kind not in FAULT_KINDS:
        raise ValueError("kind: must be one of %s" % ", ".join(FAULT_KINDS))
    prefix = spec.get("prefix", "*")
    if not isinstance(prefix, str) or prefix == "":
        raise ValueError("prefix: must be \"*\" or a non-empty target prefix")
    count = spec.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or (count < 1 and count != -1):
        raise ValueError("count: must be a positive integer or -1 (until cleared)")
    probability = spec.get("probability", 1.0)
    if isinstance(probability, bool) or not isinstance(probability, (int, float)) or \
            not 0.0 < probability <= 1.0:
        raise ValueError("probability: must be in (0, 1]")
    params = {k: v for k, v in spec.items() if k not in ("kind", "prefix", "count", "probability")}
    # Normalise and check the parameters each kind uses.
    if kind == "latency":
        params["ms"] = _number(params, "ms", kind=float)
    elif kind == "status":
        params["status"] = _number(params, "status", minimum=100)
        if params["status"] > 999:
            raise ValueError("status: must be a 3-digit HTTP status")
        for key in ("message", "details", "retry_after", "body", "content_type"):
            if key in params and not isinstance(params[key], str):
                raise ValueError("%s: must be a string" % key)
    elif kind in ("truncate", "stall"):
        params["bytes"] = _number(params, "bytes", 0)
        if kind == "truncate":
            params["content_length"] = params.get("content_length", True)
            if not isinstance(params["content_length"], bool):
                raise ValueError("content_length: must be true or false")
    elif kind == "drip":
        params["bytes_per_s"] = _number(params, "bytes_per_s", 1, kind=float)
        if params["bytes_per_s"] <= 0:
            raise ValueError("bytes_per_s: must be > 0")
    elif kind == "oversize":
        params["bytes"] = _number(params, "bytes", minimum=8)
    elif kind == "endless":
        if "bytes_per_s" in params:
            params["bytes_per_s"] = _number(params, "bytes_per_s", kind=float)
    elif kind == "redirect":
        params["status"] = _number(params, "status", 302, minimum=300)
        if "location" in params and not isinstance(params["location"], str):
            raise ValueError("location: must be a string")
    elif kind == "notpng":
        for key in ("body", "content_type"):
            if key in params and not isinstance(params[key], str):
                raise ValueError("%s: must be a string" % key)
    if "headers" in params and not isinstance(params["headers"], dict):
        raise ValueError("headers: must be an object of header names to values")
    return {"prefix": prefix, "kind": kind, "count": count, "probability": float(probability),
            "params": params, "hits": 0}


# --------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """A thread per connection (daemon threads), TLS handshakes in those threads."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024   # the listen backlog

    def __init__(self, address, handler, state, ssl_context):
        self.state = state
        self.ssl_context = ssl_context
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def server_bind(self):
        # HTTPServer.server_bind calls getfqdn(), a DNS lookup; not needed here.
        socketserver.TCPServer.server_bind(self)
        self.server_name = self.server_address[0]
        self.server_port = self.server_address[1]

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.state.lock:
            self.state.connections += 1
        return sock, addr

    def finish_request(self, request, client_address):
        if self.ssl_context is None:
            self.RequestHandlerClass(request, client_address, self)
            return
        # The handshake runs here, in the connection's own thread, so a client
        # that never completes it cannot stall the accept loop.
        request.settimeout(10)
        try:
            conn = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ValueError):
            with self.state.lock:
                self.state.tls_failures += 1
            return
        conn.settimeout(None)
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ValueError)):
            return  # a client went away, or the connection was reset on purpose
        super().handle_error(request, client_address)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ciapi/1.0"
    sys_version = ""
    timeout = 300  # seconds an idle keep-alive connection is kept

    entry = None

    # BaseHTTPRequestHandler calls do_<METHOD>; every method goes through one place.
    def do_GET(self):
        self.dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    @property
    def state(self):
        return self.server.state

    def log_message(self, fmt, *args):
        if self.state.verbose:
            sys.stderr.write("ciapi: %s %s\n" % (self.address_string(), fmt % args))

    def date_time_string(self, timestamp=None):
        return email.utils.formatdate(self.state.now() if timestamp is None else timestamp,
                                      usegmt=True)

    # -- request entry point ------------------------------------------------------
    def dispatch(self):
        method = self.command
        words = self.requestline.split()
        # The raw request target, exactly as received (self.path may be rewritten).
        target = words[1] if len(words) >= 2 else self.path
        self.entry = None
        try:
            if target.startswith(CONTROL_PREFIX) or target == CONTROL_PREFIX[:-1]:
                self.control(method, target)
                return
            self.read_body()
            self.entry = self.state.log_begin(method, target, self.domain_code())
            try:
                self.serve(method, target)
            finally:
                self.state.log_write(self.entry)
        except (OSError, ValueError):
            # The client went away (or the connection was reset on purpose).
            self.close_connection = True

    def serve(self, method, target):
        state = self.state
        fault = state.take_fault(target)
        delay_ms = state.latency_ms
        if fault is not None:
            state.log_update(self.entry, fault=fault["kind"])
            if fault["kind"] == "latency":
                delay_ms += fault["params"]["ms"]
        if delay_ms > 0:
            time.sleep(delay_ms / 1000.0)
        if fault is not None and fault["kind"] != "latency":
            self.apply_fault(fault, method, target)
        elif target == STATIC_PREFIX or target.startswith(STATIC_PREFIX + "/"):
            self.static(method, target)
        else:
            self.api(method, target)

    def read_body(self):
        """Read the request body (if any) so the connection can be reused."""
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            return b""
        return self.rfile.read(n) if n > 0 else b""

    # -- sending --------------------------------------------------------------------
    def send_head(self, status, headers, body=b"", final=False, reason=None):
        """Send the status line and headers (Date and Server first), and `body`
        in the same write, so that a small answer leaves in one TCP segment.
        final: this write completes the response (see transmit)."""
        if reason is None:
            reason = self.responses.get(status, ("Unknown",))[0]
        lines = ["HTTP/1.1 %d %s" % (status, reason),
                 "Date: " + self.date_time_string(),
                 "Server: " + self.server_version]
        for name, value in headers:
            if name.lower() == "connection" and value.lower() == "close":
                self.close_connection = True
            lines.append("%s: %s" % (name, value))
        if self.close_connection and not any(n.lower() == "connection" for n, _ in headers):
            lines.append("Connection: close")
        elif self.request_version == "HTTP/1.0" and not self.close_connection:
            lines.append("Connection: keep-alive")
        if self.entry is not None:
            self.state.log_update(self.entry, status=status)
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        self.transmit(head, body, final)

    def send_body(self, data, final=False):
        """Send body bytes, counting them in the log entry."""
        self.transmit(b"", data, final)

    def transmit(self, head, body, final):
        """Write head + body and count the body bytes in the log entry.

        The write that completes a response is logged (memory and file) before
        it is made, so a client that has received a whole answer always finds
        its log entry complete.  Other writes are counted once made."""
        entry = self.entry
        if entry is None:
            self.connection.sendall(head + body)
        elif final:
            self.state.log_add_bytes(entry, len(body))
            self.state.log_write(entry)
            self.connection.sendall(head + body)
        else:
            self.connection.sendall(head + body)
            if body:
                self.state.log_add_bytes(entry, len(body))

    def reply(self, status, body=b"", content_type=None, headers=()):
        """A complete response with Content-Length, in one write."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        hdrs = []
        if content_type:
            hdrs.append(("Content-Type", content_type))
        no_body = status in (204, 304) or 100 <= status < 200
        if not no_body:
            hdrs.append(("Content-Length", str(len(body))))
        hdrs.extend(headers)
        if self.command == "HEAD" or no_body:
            body = b""
        self.send_head(status, hdrs, body, final=True)

    def reply_json(self, status, obj, headers=()):
        self.reply(status, json.dumps(obj), "application/json", headers)

    def gateway_error(self, status, code, message, details, headers=()):
        self.reply_json(status, {"error": {"errorCode": code, "message": message,
                                           "details": details}}, headers)

    # -- the Cloud Insight API ----------------------------------------------------------
    def domain_code(self):
        """The x-ncp-dmn_cd header as received (several joined by ", "), or None."""
        values = self.headers.get_all(DOMAIN_HEADER)
        return None if not values else ", ".join(values)

    def check_domain(self):
        """None if x-ncp-dmn_cd is absent or one of PUB, GOV, FIN, else why not."""
        values = self.headers.get_all(DOMAIN_HEADER) or []
        if len(values) > 1:
            return "%s sent %d times" % (DOMAIN_HEADER, len(values))
        if values and values[0] not in DOMAIN_CODES:
            return "%s must be PUB, GOV or FIN, not %r" % (DOMAIN_HEADER, values[0])
        return None

    def check_auth(self, method, target):
        """None if the gateway headers are right, else why not (the 401 details)."""
        state = self.state
        ts = self.headers.get("x-ncp-apigw-timestamp")
        key = self.headers.get("x-ncp-iam-access-key")
        sig = self.headers.get("x-ncp-apigw-signature-v2")
        if ts is None:
            return "missing header x-ncp-apigw-timestamp"
        if key is None:
            return "missing header x-ncp-iam-access-key"
        if sig is None:
            return "missing header x-ncp-apigw-signature-v2"
        if not re.fullmatch(r"[0-9]{1,16}", ts):
            return "x-ncp-apigw-timestamp is not Unix time in milliseconds"
        skew = int(ts) - state.now_ms()
        if abs(skew) > MAX_SKEW_MS:
            return ("x-ncp-apigw-timestamp is %d ms %s the gateway clock (limit %d ms)"
                    % (abs(skew), "ahead of" if skew > 0 else "behind", MAX_SKEW_MS))
        if not hmac.compare_digest(key.encode("utf-8", "replace"),
                                   state.access_key.encode("utf-8")):
            return "unknown access key"
        expected = sign(state.secret_key, method, target, ts, key)
        if not hmac.compare_digest(sig.encode("utf-8", "replace"), expected.encode("ascii")):
            return "signature mismatch"
        return None

    def api(self, method, target):
        why = self.check_auth(method, target)
        if why is not None:
            self.gateway_error(401, "200", "Authentication Failed", why)
            return
        why = self.check_domain()
        if why is not None:
            self.gateway_error(400, "100", "Bad Request", why)
            return
        if method not in ("GET", "HEAD"):
            self.gateway_error(405, "100", "Bad Request", "method %s not allowed" % method)
            return
        path, _, query = target.partition("?")
        route = parse_api_path(path)
        if route is None:
            self.gateway_error(404, "300", "Not Found", "no such API: %s" % path)
            return
        dataset = self.state.dataset
        if route[0] == "dashboards":
            self.reply_json(200, dataset.dashboard_list())
            return
        did = route[1]
        if did not in dataset.dashboards:
            self.gateway_error(404, "300", "Not Found", "dashboard %r not found" % did)
            return
        if route[0] == "widgets":
            self.reply_json(200, dataset.widget_list(did))
            return
        wid = route[2]
        if wid not in dataset.widgets[did]:
            self.gateway_error(404, "300", "Not Found", "widget %r not found" % wid)
            return
        params, problem = parse_image_query(query)
        if problem is not None:
            self.gateway_error(400, "100", "Bad Request", problem)
            return
        png = self.state.pngs.get(did, wid, *params)
        self.reply(200, png, "image/png")

    # -- /static/ -----------------------------------------------------------------------
    def static(self, method, target):
        if method not in ("GET", "HEAD"):
            self.reply(405, "method not allowed\n", "text/plain; charset=utf-8",
                       [("Allow", "GET, HEAD")])
            return
        path = target.partition("?")[0]
        found = resolve_static(self.state.dataset, path)
        if found is None:
            self.reply(404, "not found\n", "text/plain; charset=utf-8")
        elif found[0] == "redirect":
            self.reply(301, "", None, [("Location", found[1])])
        elif found[0] == "index":
            self.reply(200, static_index(path, found[1]), "text/html; charset=utf-8",
                       [("Last-Modified", self.date_time_string(self.state.started))])
        else:
            _, did, wid, start, end, mode = found
            png = self.state.pngs.get(did, wid, start, end, mode)
            self.static_file(png, min(end / 1000.0, self.state.now()))

    def static_file(self, png, mtime):
        """A static file with validators and single-range support."""
        etag = '"%s"' % hashlib.sha256(png).hexdigest()[:32]
        last_modified = self.date_time_string(int(mtime))
        common = [("Last-Modified", last_modified), ("ETag", etag), ("Accept-Ranges", "bytes")]
        inm = self.headers.get("If-None-Match")
        ims = self.headers.get("If-Modified-Since")
        if inm is not None:
            if etag in [t.strip() for t in inm.split(",")] or inm.strip() == "*":
                self.reply(304, b"", None, common)
                return
        elif ims is not None:
            try:
                since = email.utils.parsedate_to_datetime(ims).timestamp()
            except (TypeError, ValueError):
                since = None
            if since is not None and int(mtime) <= since:
                self.reply(304, b"", None, common)
                return
        total = len(png)
        span = parse_range(self.headers.get("Range"), total)
        if span == "unsatisfiable":
            self.reply(416, b"", "image/png", [("Content-Range", "bytes */%d" % total)] + common)
        elif span is None:
            self.reply(200, png, "image/png", common)
        else:
            first, last = span
            self.reply(206, png[first:last + 1], "image/png",
                       [("Content-Range", "bytes %d-%d/%d" % (first, last, total))] + common)

    # -- faults ----------------------------------------------------------------------------
    def fault_png(self, target):
        """The PNG a faulted request would have received (a stand-in if none)."""
        path, _, query = target.partition("?")
        dataset = self.state.dataset
        route = parse_api_path(path)
        if route is not None and route[0] == "image" and route[1] in dataset.widgets and \
                route[2] in dataset.widgets[route[1]]:
            params, problem = parse_image_query(query)
            if problem is None:
                return self.state.pngs.get(route[1], route[2], *params)
        found = resolve_static(dataset, path)
        if found is not None and found[0] == "file":
            return self.state.pngs.get(*found[1:])
        return self.state.pngs.get("fault", target, 0, 1, "AUTO")

    def apply_fault(self, fault, method, target):
        kind = fault["kind"]
        p = fault["params"]
        extra = [(str(k), str(v)) for k, v in p.get("headers", {}).items()]
        if kind == "status":
            status = p["status"]
            code, message = GATEWAY_ERRORS.get(status, ("900", "Unexpected Error"))
            code = p.get("errorCode", code)
            message = p.get("message", message)
            headers = list(extra)
            if "retry_after" in p:
                headers.append(("Retry-After", p["retry_after"]))
            if "body" in p:
                self.reply(status, p["body"], p.get("content_type", "application/json"), headers)
            else:
                self.gateway_error(status, code, message,
                                   p.get("details", "injected by the local API"), headers)
        elif kind == "hang":
            self.close_connection = True
            self.state.log_write(self.entry)  # no status will ever follow
            self.hold_until_peer_closes()
        elif kind == "reset":
            self.reset_connection()
        elif kind == "close":
            self.close_connection = True  # the server closes with FIN, nothing sent
        elif kind in ("truncate", "stall"):
            png = self.fault_png(target)
            self.close_connection = True
            length = [("Content-Length", str(len(png)))] if p.get("content_length", True) else []
            self.send_head(200, [("Content-Type", "image/png")] + length
                           + [("Connection", "close")] + extra)
            self.send_body(png[:min(p["bytes"], len(png))])
            if kind == "stall":
                self.hold_until_peer_closes()
            elif p.get("rst"):
                self.reset_connection()
        elif kind == "drip":
            png = self.fault_png(target)
            self.close_connection = True
            self.send_head(200, [("Content-Type", "image/png"), ("Connection", "close")] + extra)
            self.paced_send(png, p["bytes_per_s"])
        elif kind == "notpng":
            self.reply(200, p.get("body", "<html><body><h1>Service maintenance</h1></body></html>\n"),
                       p.get("content_type", "text/html"), extra)
        elif kind == "nopngiend":
            png = self.fault_png(target)
            self.reply(200, png[:-12], "image/png", extra)  # IEND is the last 12 bytes
        elif kind == "oversize":
            n = p["bytes"]
            self.send_head(200, [("Content-Type", "image/png"), ("Content-Length", str(n))]
                           + extra)
            self.send_junk(n, None)
        elif kind == "endless":
            chunked = p.get("chunked", True)
            self.close_connection = True
            headers = [("Content-Type", "image/png")]
            headers.append(("Transfer-Encoding", "chunked") if chunked else ("Connection", "close"))
            self.send_head(200, headers + extra)
            self.send_junk(None, p.get("bytes_per_s"), chunked=chunked)
        elif kind == "redirect":
            location = p.get("location",
                             "%s://127.0.0.1:%d/redirected" % (self.state.scheme, self.state.port))
            self.reply(p["status"], b"", None, [("Location", location)] + extra)

    def hold_until_peer_closes(self):
        """Keep the connection open, answering nothing, until the client closes it
        or the server stops."""
        sock = self.connection
        while not self.state.stopping.is_set():
            readable, _, _ = select.select([sock], [], [], 0.2)
            if not readable:
                continue
            try:
                data = sock.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
            except OSError:
                return
            if not data:
                return

    def reset_connection(self):
        """Close with RST: SO_LINGER 0, then close the descriptor now."""
        sock = self.connection
        self.close_connection = True
        if self.entry is not None:
            self.state.log_write(self.entry)  # before the client can see the RST
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            return
        # detach() makes the socket object forget the descriptor (so the later
        # cleanup by socketserver is a no-op) and we close it ourselves.
        os.close(socket.socket.detach(sock))

    def paced_send(self, data, rate):
        """Send `data` at about `rate` bytes per second."""
        step = max(1, int(rate / 20))
        interval = step / rate
        next_at = time.monotonic() + interval
        for i in range(0, len(data), step):
            while True:
                if self.state.stopping.is_set():
                    return
                wait = next_at - time.monotonic()
                if wait <= 0:
                    break
                if self.peer_closed(min(wait, 0.2)):
                    return
            self.send_body(data[i:i + step])
            next_at += interval

    def peer_closed(self, wait):
        """Wait up to `wait` s; True if the client closed the connection meanwhile."""
        sock = self.connection
        readable, _, _ = select.select([sock], [], [], wait)
        if not readable:
            return False
        try:
            return sock.recv(4096) == b""
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except OSError:
            return True

    def send_junk(self, total, rate, chunked=False):
        """A PNG signature and IHDR, then filler: `total` bytes, or until the client
        goes away when `total` is None.  Optionally paced at `rate` bytes/s."""
        head = PNG_SIGNATURE + ihdr_chunk()
        filler = bytes(range(256)) * 256  # 64 KiB
        sent = 0
        started = time.monotonic()
        while total is None or sent < total:
            if self.state.stopping.is_set():
                return
            piece = head if sent == 0 else filler
            if total is not None:
                piece = piece[:total - sent]
            if rate:
                piece = piece[:max(1, int(rate / 10))]
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0 and self.peer_closed(ahead):
                    return
            if chunked:
                self.connection.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                self.state.log_add_bytes(self.entry, len(piece))
            else:
                self.send_body(piece, final=(total is not None and sent + len(piece) == total))
            sent += len(piece)

    # -- control endpoint -----------------------------------------------------------------------
    def control(self, method, target):
        body = self.read_body()
        state = self.state
        path = target.partition("?")[0]
        name = path[len(CONTROL_PREFIX):]
        try:
            doc = json.loads(body) if body.strip() else {}
        except ValueError as e:
            self.reply_json(400, {"error": "the body is not JSON: %s" % e})
            return
        route = (method, name)
        try:
            if route == ("GET", "health"):
                self.reply(200, "ok", "text/plain")
            elif route == ("POST", "fault"):
                self.reply_json(200, state.add_fault(doc))
            elif route == ("GET", "faults"):
                self.reply_json(200, state.list_faults())
            elif route in (("DELETE", "faults"), ("POST", "faults/clear")):
                self.reply_json(200, {"cleared": state.clear_faults()})
            elif route == ("GET", "log"):
                self.reply_json(200, state.log_snapshot())
            elif route in (("DELETE", "log"), ("POST", "log/clear")):
                state.log_clear()
                self.reply_json(200, {"cleared": True})
            elif route == ("GET", "clock"):
                self.reply_json(200, {"offset_ms": state.clock_offset_ms, "now_ms": state.now_ms()})
            elif route == ("POST", "clock"):
                state.clock_offset_ms = _number(doc, "offset_ms", minimum=-(1 << 62))
                self.reply_json(200, {"offset_ms": state.clock_offset_ms, "now_ms": state.now_ms()})
            elif route == ("GET", "latency"):
                self.reply_json(200, {"ms": state.latency_ms})
            elif route == ("POST", "latency"):
                state.latency_ms = _number(doc, "ms", kind=float)
                self.reply_json(200, {"ms": state.latency_ms})
            elif route == ("GET", "data"):
                self.reply_json(200, state.dataset.raw)
            elif route == ("POST", "data"):
                state.dataset = Dataset(doc)
                self.reply_json(200, {"dashboards": len(state.dataset.raw)})
            elif route == ("GET", "stats"):
                self.reply_json(200, state.stats())
            else:
                self.reply_json(404, {"error": "no control endpoint %s %s" % (method, path)})
        except ValueError as e:  # includes DatasetError
            self.reply_json(400, {"error": str(e)})


def parse_api_path(path):
    """("dashboards",) | ("widgets", d) | ("image", d, w), ids percent-decoded; or None."""
    if path == API_PREFIX:
        return ("dashboards",)
    if not path.startswith(API_PREFIX + "/"):
        return None
    parts = path[len(API_PREFIX) + 1:].split("/")
    if len(parts) not in (2, 3) or parts[1] != "widgets" or "" in parts:
        return None
    ids = [decode_segment(s) for s in parts[::2]]
    return ("widgets", ids[0]) if len(parts) == 2 else ("image", ids[0], ids[1])


def decode_segment(segment):
    """Percent-decode one path segment (no '+' rule); bytes that are not UTF-8
    become surrogates, so they match no id."""
    return urllib.parse.unquote_to_bytes(segment).decode("utf-8", "surrogateescape")


def parse_image_query(query):
    """((start, end, mode), None) or (None, why-not)."""
    values = {}
    for part in query.split("&") if query else []:
        name, eq, value = part.partition("=")
        name = urllib.parse.unquote(name)
        if name in values:
            return None, "duplicate parameter %s" % name
        values[name] = urllib.parse.unquote(value) if eq else ""
    for name in ("startTime", "endTime", "widgetResolutionMode"):
        if name not in values:
            return None, "missing parameter %s" % name
    for name in ("startTime", "endTime"):
        if not re.fullmatch(r"[0-9]{1,16}", values[name]):
            return None, "%s must be Unix time in milliseconds" % name
    start, end = int(values["startTime"]), int(values["endTime"])
    if start >= end:
        return None, "startTime must be before endTime"
    mode = values["widgetResolutionMode"]
    if mode not in ("AUTO", "HIGH"):
        return None, "widgetResolutionMode must be AUTO or HIGH"
    return (start, end, mode), None


STATIC_FILE_RE = re.compile(r"([0-9]{1,16})-([0-9]{1,16})(@high|@auto)?\.png")


def resolve_static(dataset, path):
    """What a /static/ path names:
    ("index", [(name, is_dir)...]) | ("redirect", location) |
    ("file", did, wid, start, end, mode) | None."""
    if path == STATIC_PREFIX:
        return ("redirect", STATIC_PREFIX + "/")
    if not path.startswith(STATIC_PREFIX + "/"):
        return None
    parts = path[len(STATIC_PREFIX) + 1:].split("/")
    trailing = parts[-1] == ""
    if trailing:
        parts = parts[:-1]
    if "" in parts or len(parts) > 3:
        return None
    names = [decode_segment(p) for p in parts]
    if not names:
        return ("index", [(n, True) for n, _ in dataset.static_dashboards()])
    did = dataset.static_find(dataset.static_dashboards(), names[0])
    if did is None:
        return None
    if len(names) == 1:
        if not trailing:
            return ("redirect", path + "/")
        return ("index", [(n, True) for n, _ in dataset.static_widgets(did)])
    wid = dataset.static_find(dataset.static_widgets(did), names[1])
    if wid is None:
        return None
    if len(names) == 2:
        if not trailing:
            return ("redirect", path + "/")
        return ("index", [("%d-%d.png" % (STATIC_FIRST_DAY_MS + i * STATIC_DAY_MS,
                                          STATIC_FIRST_DAY_MS + (i + 1) * STATIC_DAY_MS), False)
                          for i in range(STATIC_LISTED_DAYS)])
    if trailing:
        return None
    m = STATIC_FILE_RE.fullmatch(names[2])
    if not m or int(m.group(1)) >= int(m.group(2)):
        return None
    mode = "HIGH" if m.group(3) == "@high" else "AUTO"
    return ("file", did, wid, int(m.group(1)), int(m.group(2)), mode)


def static_index(path, entries):
    """A plain HTML listing that httpdirfs and rclone's http backend understand."""
    title = html.escape("Index of " + urllib.parse.unquote(path))
    rows = []
    for name, is_dir in entries:
        href = urllib.parse.quote(name, safe="") + ("/" if is_dir else "")
        rows.append('<a href="%s">%s</a>' % (html.escape(href), html.escape(name + ("/" if is_dir else ""))))
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>%s</title></head>\n"
            "<body><h1>%s</h1>\n<pre>\n%s\n</pre>\n</body></html>\n"
            % (title, title, "\n".join(rows)))


def parse_range(value, total):
    """(first, last) for a single satisfiable byte range, "unsatisfiable", or None
    (no header, or one we ignore: malformed or several ranges)."""
    if value is None:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*", value)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    if m.group(1) == "":                      # suffix range: the last N bytes
        n = int(m.group(2))
        if n == 0:
            return "unsatisfiable"
        return (max(0, total - n), total - 1)
    first = int(m.group(1))
    if m.group(2) and int(m.group(2)) < first:
        return None                           # invalid: ignore the header
    if first >= total:
        return "unsatisfiable"
    last = int(m.group(2)) if m.group(2) else total - 1
    return (first, min(last, total - 1))


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="Local stand-in for the NAVER Cloud Insight API (insightfs tests).")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    ap.add_argument("--port-file", help="write the port here (decimal + newline, atomically)")
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS with this PEM pair")
    ap.add_argument("--access-key", default=DEFAULT_ACCESS_KEY)
    ap.add_argument("--secret-key", default=DEFAULT_SECRET_KEY)
    ap.add_argument("--clock-offset-ms", type=int, default=0,
                    help="shift the server clock (Date header and the 5-minute check)")
    ap.add_argument("--latency-ms", type=float, default=0,
                    help="delay before every API and /static/ answer")
    ap.add_argument("--log", help="append one JSON line per request to this file")
    ap.add_argument("--log-max", type=int, default=1000000,
                    help="entries kept in memory for GET /_control/log (oldest dropped)")
    ap.add_argument("--data", help="JSON dataset replacing the built-in one")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of the random source used by fault probabilities")
    ap.add_argument("--zlib-level", type=int, default=9, choices=range(0, 10), metavar="0-9",
                    help="zlib level of the PNGs (default 9; 6 renders ~3x faster, ~30%% bigger)")
    ap.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = ap.parse_args(argv)
    if args.latency_ms < 0:
        ap.error("--latency-ms must be >= 0")
    if args.log_max < 1:
        ap.error("--log-max must be >= 1")
    return args


def write_port_file(path, port):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, path)


def main(argv=None):
    global ZLIB_LEVEL
    args = parse_args(sys.argv[1:] if argv is None else argv)
    ZLIB_LEVEL = args.zlib_level
    try:
        state = State(args)
    except (OSError, ValueError) as e:
        sys.stderr.write("ciapi: %s\n" % e)
        return 2

    ssl_context = None
    if args.tls:
        ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ssl_context.load_cert_chain(args.tls[0], args.tls[1])
        except (OSError, ssl.SSLError) as e:
            sys.stderr.write("ciapi: --tls: %s\n" % e)
            return 2
        ssl_context.set_alpn_protocols(["http/1.1"])

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    # Handlers first: whoever sees the port file may send SIGTERM at once.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        server = Server((args.host, args.port), Handler, state, ssl_context)
    except OSError as e:
        sys.stderr.write("ciapi: cannot listen on %s:%d: %s\n" % (args.host, args.port, e))
        return 2
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="accept", daemon=True)
    thread.start()
    if args.port_file:
        try:
            write_port_file(args.port_file, state.port)
        except OSError as e:
            sys.stderr.write("ciapi: --port-file: %s\n" % e)
            sys.stderr.flush()
            os._exit(2)
    host = "[%s]" % args.host if ":" in args.host else args.host
    sys.stdout.write("ciapi: listening on %s://%s:%d\n" % (state.scheme, host, state.port))
    sys.stdout.flush()

    while not stop.wait(0.5):
        pass

    state.stopping.set()
    server.shutdown()
    server.server_close()
    with state.lock:
        if state.log_file is not None:
            state.log_file.close()
            state.log_file = None
    sys.stdout.write("ciapi: stopped\n")
    sys.stdout.flush()
    # Connection threads are daemons that may sit in a blocking call (a hung
    # response, an idle keep-alive): leave without waiting for them.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
