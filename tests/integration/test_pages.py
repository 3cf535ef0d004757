"""The pages of pages = true (SPEC 5) on a real mount: index.html in /, in every dashboard
and in every widget directory, listed last, generated at lookup with an exact size and
without a single upstream request, names HTML-escaped and URLs percent-encoded, no
script. The browser tests open them over file:// in headless Chromium (Debian's
chromium, chromium-driver and python3-selenium, SPEC 10): every image loads at 800x600,
the links reach the widget pages, a hostile widget name shows as text and runs nothing,
and a screenshot is not blank."""
import errno
import html
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import urllib.parse
import zlib

import pytest

from conftest import BIN, ROOT, TIME_FACTOR, is_mounted, wait_for

HOSTILE = "<img src=x onerror=alert(1)>"
ODD = "R&D \"ops\" 'x' %41"
PAGES = "pages = true;\ntime = { align_s = 3600; };\nhistory_days = 3;\n"
BODY = PAGES + """dashboards = (
  { name = "web"; id = "df_457958429047263232";
    widgets = ( { name = "cpu"; id = "cpu_avg__1234"; },
                { name = "%s"; id = "mem_used__5678"; },
                { name = "network in"; id = "net_in__9012"; } ); },
  { name = "%s"; id = "1000123";
    widgets = ( { name = "qps"; id = "555"; } ); },
  { name = "empty"; id = "df_empty"; widgets = (); }
);
""" % (HOSTILE, ODD.replace('"', '\\"'))
PRESETS = ["last-1h", "last-6h", "last-24h", "last-7d", "today", "yesterday"]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def errno_of(call, *args):
    try:
        call(*args)
    except OSError as e:
        return e.errno
    return 0


def url(name):
    """A name as the pages put it in a URL: every byte outside A-Z a-z 0-9 - . _ ~ as %XX."""
    return urllib.parse.quote(name, safe="-._~")


def pages_of(m):
    """Every page of the mount, by path relative to the mount."""
    out = ["index.html"]
    for d in os.listdir(m.mnt):
        if d == "index.html":
            continue
        out.append(os.path.join(d, "index.html"))
        for w in os.listdir(m.path(d)):
            if w != "index.html":
                out.append(os.path.join(d, w, "index.html"))
    return out


# ---- without a browser -------------------------------------------------------------------


def test_listing_sizes_modes_and_no_request(api, config, mount):
    m = mount(config(body=BODY))
    api.clear_log()
    # index.html comes last in /, a dashboard and a widget directory; never in days/.
    assert os.listdir(m.mnt) == ["web", ODD, "empty", "index.html"]
    assert os.listdir(m.path("web")) == ["cpu", HOSTILE, "network in", "index.html"]
    assert os.listdir(m.path("empty")) == ["index.html"]
    assert os.listdir(m.path("web", "cpu")) == [p + ".png" for p in PRESETS] + ["days",
                                                                                "index.html"]
    days = os.listdir(m.path("web", "cpu", "days"))
    assert len(days) == 3 and "index.html" not in days
    assert errno_of(os.stat, m.path("web", "cpu", "days", "index.html")) == errno.ENOENT
    # Each page: 0444, exact size, the bytes of one snapshot; no script anywhere.
    pages = pages_of(m)
    assert len(pages) == 1 + 3 + 4
    for p in pages:
        st = os.stat(m.path(p))
        data = read(m.path(p))
        assert st.st_mode == 0o100444, p
        assert st.st_size == len(data) and st.st_nlink == 1, p
        assert data.startswith(b"<!DOCTYPE html>\n") and data.endswith(b"</html>\n"), p
        assert b'<meta charset="utf-8">' in data
        assert b"<script" not in data.lower() and b"javascript:" not in data.lower(), p
    # Generating the pages asked the API nothing (listing and stat'ing them neither).
    assert api.requests() == []


def test_copies_of_the_tree_keep_the_pages(api, config, mount, tmp_path):
    """Each lookup takes a new snapshot, yet equal bytes show the same st_ino, so cp -r
    (which skips a file whose st_ino changed between its stat and its open) and rsync copy
    the pages; the copy is the same site."""
    m = mount(config(body=BODY))
    a, b = os.stat(m.path("web", "index.html")), os.stat(m.path("web", "index.html"))
    assert a.st_ino == b.st_ino and a.st_ino != os.stat(m.path("index.html")).st_ino
    assert a.st_ino >= 1 << 62
    for tool in (["cp", "-r", m.mnt + "/.", str(tmp_path / "cp")],
                 ["rsync", "-a", m.mnt + "/", str(tmp_path / "rsync")]):
        p = subprocess.run(tool, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=60 * TIME_FACTOR)
        assert (p.returncode, p.stderr) == (0, b""), tool
        copy = tool[-1]
        for page in pages_of(m):
            assert read(os.path.join(copy, page)) == read(m.path(page)), (tool[0], page)
        assert read(os.path.join(copy, "web", "cpu", "last-1h.png"))[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_site_works_after_the_unmount(tmp_path):
    """make demo (tests/demo.py) copies the tree with its pages into OUT/site and prints
    the file:// URL of its index.html; after the unmount every link and image of every
    copied page is there (demo.py checks that itself and fails otherwise)."""
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "demo.py"), "--bin", BIN,
                        "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       cwd=str(tmp_path), timeout=120 * TIME_FACTOR)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    site = out / "site"
    url_line = "  file://%s\n" % urllib.parse.quote(str(site / "index.html"))
    assert url_line in p.stdout.decode()
    mnt = re.search(r"^mounted on (\S+)$", p.stdout.decode(), re.M).group(1)
    assert not is_mounted(mnt) and not os.path.exists(mnt)
    assert sorted(os.listdir(site)) == ["db", "index.html", "web"]
    root = read(str(site / "index.html")).decode()
    assert re.findall(r'href="([^"]*)"', root) == ["web/index.html", "db/index.html"]
    web = read(str(site / "web" / "index.html")).decode()
    for src in re.findall(r'<img src="([^"]*)"', web):
        assert read(str(site / "web" / src))[:8] == b"\x89PNG\r\n\x1a\n"


def test_page_contents(api, config, mount):
    m = mount(config(body=BODY))
    api.clear_log()
    root = read(m.path("index.html")).decode()
    # Links to every dashboard, relative, percent-encoded; names HTML-escaped.
    hrefs = re.findall(r'href="([^"]*)"', root)
    assert hrefs == ["web/index.html", url(ODD) + "/index.html", "empty/index.html"]
    assert url(ODD) == "R%26D%20%22ops%22%20%27x%27%20%2541"
    assert ">%s</a>" % html.escape(ODD, quote=True).replace("&#x27;", "&#39;") in root
    assert "R&amp;D &quot;ops&quot; &#39;x&#39; %41" in root
    assert "<img" not in root and "http-equiv" not in root  # no graph: nothing live
    # A dashboard: each widget's first preset, 800x600, eager, linked to the widget's page.
    web = read(m.path("web", "index.html")).decode()
    imgs = re.findall(r"<img [^>]*>", web)
    assert imgs == ['<img src="%s/last-1h.png" width="800" height="600" alt="%s">'
                    % (url(w), html.escape(w, quote=True).replace("&#x27;", "&#39;"))
                    for w in ("cpu", HOSTILE, "network in")]
    assert "loading=" not in web
    assert HOSTILE not in web and "&lt;img src=x onerror=alert(1)&gt;" in web
    assert '<a href="%s/index.html">' % url(HOSTILE) in web
    assert '<a href="network%20in/index.html">' in web
    assert '<meta http-equiv="refresh" content="3600">' in web
    assert '<a href="../index.html">' in web
    # The empty dashboard shows nothing live.
    empty = read(m.path("empty", "index.html")).decode()
    assert "<img" not in empty and "http-equiv" not in empty
    # A widget: every preset, then days/ newest first (as listed), all lazy.
    cpu = read(m.path("web", "cpu", "index.html")).decode()
    days = os.listdir(m.path("web", "cpu", "days"))
    srcs = re.findall(r'<img src="([^"]*)" width="800" height="600" loading="lazy"', cpu)
    assert srcs == [p + ".png" for p in PRESETS] + ["days/" + d for d in days]
    assert len(re.findall(r"<img ", cpu)) == len(srcs)
    assert '<meta http-equiv="refresh" content="3600">' in cpu
    assert "<title>web / cpu</title>" in cpu
    assert '<a href="../../index.html">' in cpu and '<a href="../index.html">web</a>' in cpu
    hostile = read(m.path("web", HOSTILE, "index.html")).decode()
    assert "<title>web / &lt;img src=x onerror=alert(1)&gt;</title>" in hostile
    assert api.requests() == []
    # Every relative link and image of every page names an entry of the mount (the
    # images are fetched now, on purpose).
    for p in pages_of(m):
        text = read(m.path(p)).decode()
        base = os.path.dirname(m.path(p))
        for ref in re.findall(r'(?:href|src)="([^"]*)"', text):
            target = os.path.normpath(os.path.join(base, urllib.parse.unquote(ref)))
            assert target.startswith(m.mnt) and os.path.exists(target), (p, ref)


def test_dashboard_without_presets_shows_today(api, config, mount):
    body = BODY.replace(PAGES, PAGES + "presets = [];\n")
    m = mount(config(body=body))
    today = os.listdir(m.path("web", "cpu", "days"))[0]
    web = read(m.path("web", "index.html")).decode()
    assert re.findall(r'<img src="([^"]*)"', web) == [
        "%s/days/%s" % (url(w), today) for w in ("cpu", HOSTILE, "network in")]
    assert '<meta http-equiv="refresh" content="3600">' in web
    cpu = read(m.path("web", "cpu", "index.html")).decode()
    assert re.findall(r'<img src="([^"]*)"', cpu) == ["days/" + d for d in
                                                     os.listdir(m.path("web", "cpu", "days"))]


def test_pages_off_by_default(api, config, mount):
    m = mount(config(body=BODY.replace("pages = true;", "")))
    for d in ((), ("web",), ("web", "cpu")):
        assert "index.html" not in os.listdir(m.path(*d))
        assert errno_of(os.stat, m.path(*(d + ("index.html",)))) == errno.ENOENT
    assert "pages = false;" in read(m.path(".insightfs", "config")).decode()


def test_page_is_a_snapshot_of_the_tree_as_it_is(api, config, mount):
    """With discover = true a page shows what is known and never waits for (or starts) a
    refresh; a discovered dashboard or widget named index.html gets " (<id>)"."""
    api.set_data([
        {"id": "df_457958429047263232", "name": "web", "widgets": [
            {"widgetId": "cpu_avg__1234", "name": "cpu"},
            {"widgetId": "w_idx", "name": "index.html"}]},
        {"id": "df_idx", "name": "index.html", "widgets": []},
    ])
    m = mount(config(body=PAGES + "discover = true;\ndashboards = (\n"
                     '  { name = "web"; id = "df_457958429047263232"; widgets = (); }\n);\n'))
    api.clear_log()
    before = read(m.path("index.html")).decode()
    assert re.findall(r'href="([^"]*)"', before) == ["web/index.html"]
    assert api.requests() == []
    assert os.listdir(m.mnt) == ["web", "index.html (df_idx)", "index.html"]
    assert os.listdir(m.path("web")) == ["cpu", "index.html (w_idx)", "index.html"]
    n = len(api.requests())
    after = read(m.path("index.html")).decode()
    assert re.findall(r'href="([^"]*)"', after) == [
        "web/index.html", "index.html%20%28df_idx%29/index.html"]
    web = read(m.path("web", "index.html")).decode()
    assert "index.html%20%28w_idx%29/index.html" in web
    assert os.path.isdir(m.path("index.html (df_idx)"))
    assert len(api.requests()) == n


@pytest.mark.parametrize("where", ["dashboard", "widget", "implied"])
def test_configured_index_html_is_an_error_with_pages(api, config, run_insightfs, tmp_path, where):
    entry = {"dashboard": ('{ name = "index.html"; id = "1000123"; widgets = (); }',
                           "dashboards.[1].name", "(rename it, or set pages = false)"),
             "widget": ('{ name = "db"; id = "1000123"; widgets = (\n'
                        '    { name = "index.html"; id = "555"; } ); }',
                        "dashboards.[1].widgets.[0].name", "(rename it, or set pages = false)"),
             "implied": ('{ name = "db"; id = "1000123"; widgets = (\n'
                         '    { id = "index.html"; } ); }', "dashboards.[1].widgets.[0].id",
                         "(set name: without one the id is used)")}[where]
    body = ('dashboards = (\n  { name = "web"; id = "df_457958429047263232"; widgets = (); },\n'
            "  %s\n);\n" % entry[0])
    path = config(body=body + "pages = true;\n")
    line = 8 if where == "dashboard" else 9
    want = ('insightfs: %s:%d: %s: "index.html" is the name of the pages while pages = true %s\n'
            % (path, line, entry[1], entry[2]))
    p = run_insightfs(["--fetch", "web/x/last-1h.png", "--config", path])
    assert (p.returncode, p.stdout, p.stderr.decode()) == (1, b"", want)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p = run_insightfs([path, str(mnt)])
    assert (p.returncode, p.stdout, p.stderr.decode()) == (1, b"", want)
    # Without pages the same name is an ordinary name.
    p = run_insightfs(["--check-config", "--config", config(body=body)])
    assert (p.returncode, p.stderr) == (0, b"")


# ---- in a browser ------------------------------------------------------------------------


def png_colours(data, every=4):
    """The distinct pixel values of an 8-bit RGB(A) PNG (decoded with zlib alone: PIL is
    not among the test packages), of every `every`th row and column."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, bpp = 8, b"", 0, 0, 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and ctype in (2, 6), (depth, ctype)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    colours = set()
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif ftype == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev))
        elif ftype == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        if y % every == 0:
            colours.update(bytes(line[i:i + bpp]) for i in range(0, stride, bpp * every))
        prev = line
    return colours


@pytest.fixture
def browser():
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        pytest.skip("python3-selenium is not installed (make deps installs it): %s" % e)
    chromium = shutil.which("chromium")
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("chromium and chromium-driver are not installed (make deps installs them)")
    profile = tempfile.mkdtemp(prefix="insightfs-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--user-data-dir=" + profile, "--window-size=1280,900"):
        opts.add_argument(a)
    try:
        drv = webdriver.Chrome(options=opts, service=Service(driver_bin))
    except WebDriverException as e:
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip("headless chromium cannot start here: %s" % str(e).splitlines()[0])
    drv.set_page_load_timeout(60 * TIME_FACTOR)
    yield drv
    drv.quit()
    shutil.rmtree(profile, ignore_errors=True)


def no_alert(drv):
    from selenium.common.exceptions import NoAlertPresentException
    try:
        text = drv.switch_to.alert.text
    except NoAlertPresentException:
        return True
    raise AssertionError("the page opened an alert: %r" % text)


def images_loaded(drv, n):
    """Wait (with a deadline) until the page's n images are complete; return their
    natural sizes."""
    def done():
        return drv.execute_script(
            "return Array.from(document.images).every(function (i) { return i.complete; })")
    wait_for(done, 30, "every image of %s to complete" % drv.current_url)
    sizes = drv.execute_script(
        "return Array.from(document.images).map(function (i) {"
        " return [i.naturalWidth, i.naturalHeight]; })")
    assert len(sizes) == n
    return sizes


def test_browser_root_and_dashboard(api, config, mount, browser):
    from selenium.webdriver.common.by import By
    m = mount(config(body=BODY))
    root = "file://" + urllib.parse.quote(m.path("index.html"))
    browser.get(root)
    assert browser.title == "insightfs"
    assert images_loaded(browser, 0) == []
    links = [a.get_attribute("href") for a in browser.find_elements(By.TAG_NAME, "a")]
    assert links == ["file://" + urllib.parse.quote(m.path(d, "index.html"))
                     for d in ("web", ODD, "empty")]
    assert ODD in browser.find_element(By.TAG_NAME, "body").text
    no_alert(browser)
    # Follow the link to a dashboard: every image is an 800x600 graph, loaded eagerly.
    browser.find_element(By.LINK_TEXT, "web").click()
    assert browser.title == "web"
    assert images_loaded(browser, 3) == [[800, 600]] * 3
    # The hostile name is text: no element made of it, nothing ran.
    body = browser.find_element(By.TAG_NAME, "body").text
    assert HOSTILE in body
    assert browser.find_elements(By.CSS_SELECTOR, 'img[src="x"], img[onerror]') == []
    no_alert(browser)
    shot = browser.get_screenshot_as_png()
    assert len(png_colours(shot)) > 16
    # The tiles link to the widget pages, the hostile one included.
    browser.find_element(By.LINK_TEXT, HOSTILE).click()
    assert browser.title == "web / " + HOSTILE
    assert browser.find_element(By.TAG_NAME, "h1").text == HOSTILE
    assert browser.current_url == "file://" + urllib.parse.quote(m.path("web", HOSTILE,
                                                                         "index.html"))
    no_alert(browser)
    browser.back()
    browser.find_element(By.LINK_TEXT, "network in").click()
    assert browser.title == "web / network in"
    assert browser.find_element(By.TAG_NAME, "h1").text == "network in"
    # The widget page's gallery: the presets, then three days, all real graphs once
    # scrolled into view (they load lazily).
    imgs = browser.find_elements(By.TAG_NAME, "img")
    assert len(imgs) == len(PRESETS) + 3
    for img in imgs:
        browser.execute_script("arguments[0].scrollIntoView();", img)
    assert images_loaded(browser, len(imgs)) == [[800, 600]] * len(imgs)
    no_alert(browser)


def test_png_colours_decoder():
    """The screenshot check's decoder against a PNG made by hand: 4x4, two colours, each
    row with another filter type (None, Sub, Up, Average)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    # Filter types 0-3 over constant rows leave different raw bytes; decode must agree.
    raw = bytearray()
    prev = bytearray(12)
    for y in range(4):
        line = bytearray((b"\x00\x00\x00" if y < 2 else b"\xff\x00\x00") * 4)
        f = y % 4
        if f == 0:
            enc = line
        elif f == 1:
            enc = bytearray((line[i] - (line[i - 3] if i >= 3 else 0)) & 0xFF for i in range(12))
        elif f == 2:
            enc = bytearray((line[i] - prev[i]) & 0xFF for i in range(12))
        else:
            enc = bytearray((line[i] - (((line[i - 3] if i >= 3 else 0) + prev[i]) >> 1)) & 0xFF
                            for i in range(12))
        raw += bytes([f]) + enc
        prev = line
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b""))
    assert png_colours(png, every=1) == {b"\x00\x00\x00", b"\xff\x00\x00"}
    assert png_colours(png) == {b"\x00\x00\x00"}  # row 0 only
