#!/usr/bin/python3
"""make demo: mount the bundled local Cloud Insight API and show what insightfs does.

Non-interactive by default: starts the local API on a free loopback port, writes a demo
configuration (mode 0600, pages = true), mounts, prints the tree and `file` of a few
images, copies them out to ./demo-out/, copies the whole tree with its pages (index.html
in every folder) to ./demo-out/site/ and prints the file:// URL of its index.html, then
unmounts and stops the API, leaving nothing behind. The copied pages work offline: every
link and image they name is checked to be in the copy after the unmount.
With --keep it stays mounted until you press Enter or Ctrl-C, so you can browse the
mount with a file manager or image viewer.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "localapi"))
from client import LocalAPI  # noqa: E402

CONFIG = """# insightfs demo configuration (written by make demo)
api = {
  endpoint = "%(url)s";
  access_key = "%(ak)s";
  secret_key = "%(sk)s";
};
presets = [ "last-1h", "last-24h", "last-7d", "today", "yesterday" ];
history_days = 7;
pages = true;
dashboards = (
  { name = "web"; id = "df_457958429047263232";
    widgets = ( { name = "cpu"; id = "cpu_avg__1234"; },
                { name = "memory"; id = "mem_used__5678"; } ); },
  { name = "db"; id = "1000123";
    widgets = ( { name = "qps"; id = "555"; } ); }
);
"""


def wait_mounted(mnt, proc, deadline):
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with open("/proc/self/mountinfo") as f:
            if any(line.split()[4] == mnt for line in f):
                return True
        time.sleep(0.05)
    return False


def broken_links(site):
    """The links and images of the pages under site that name nothing in it."""
    missing = []
    for folder, _, files in os.walk(site):
        if "index.html" not in files:
            continue
        page = os.path.join(folder, "index.html")
        with open(page, encoding="utf-8") as f:
            text = f.read()
        for ref in re.findall(r'(?:href|src)="([^"]*)"', text):
            target = os.path.normpath(os.path.join(folder, urllib.parse.unquote(ref)))
            if not target.startswith(site + os.sep) or not os.path.exists(target):
                missing.append("%s: %s" % (os.path.relpath(page, site), ref))
    return missing


def screenshot(page, png):
    """Save headless Chromium's view of page (a file) to png; 0, or 1 with a message."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix="insightfs-demo-chromium.")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--user-data-dir=" + profile, "--window-size=1280,900"):
        opts.add_argument(a)
    drv = webdriver.Chrome(options=opts,
                           service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"))
    try:
        drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 1280, "height": 900, "deviceScaleFactor": 1,
                             "mobile": False})
        drv.get("file://" + urllib.parse.quote(page))
        deadline = time.monotonic() + 30
        while not drv.execute_script("return Array.from(document.images).every("
                                     "function (i) { return i.complete && i.naturalWidth; })"):
            if time.monotonic() > deadline:
                print("demo: the page's images did not load", file=sys.stderr)
                return 1
            time.sleep(0.05)
        drv.save_screenshot(png)
        print("screenshot of %s -> %s" % (page, png))
        return 0
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def show(cmd):
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--keep", action="store_true", help="stay mounted until Enter/Ctrl-C")
    ap.add_argument("--out", default="demo-out")
    ap.add_argument("--screenshot", metavar="PNG",
                    help="after the unmount, save headless Chromium's view (1280x900) of the "
                         "copied web dashboard page to PNG (needs chromium, chromium-driver, "
                         "python3-selenium)")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="insightfs-demo.")
    api = LocalAPI()
    api.start(os.path.join(work, "api"))
    proc = None
    mnt = os.path.join(work, "mnt")
    status = 1
    try:
        os.mkdir(mnt)
        conf = os.path.join(work, "insightfs.conf")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(CONFIG % {"url": api.url, "ak": api.access_key, "sk": api.secret_key})
        print("local Cloud Insight API on %s; configuration %s" % (api.url, conf))
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        proc = subprocess.Popen([args.bin, "-f", conf, mnt], env=env)
        if not wait_mounted(mnt, proc, time.monotonic() + 15):
            print("demo: the mount did not come up", file=sys.stderr)
            return 1
        print("mounted on %s\n" % mnt)
        show(["ls", "-la", mnt])
        show(["ls", os.path.join(mnt, "web"), os.path.join(mnt, "web", "cpu")])
        show(["ls", os.path.join(mnt, "web", "cpu", "days")])
        picks = [os.path.join(mnt, "web", "cpu", "last-24h.png"),
                 os.path.join(mnt, "web", "memory", "last-1h@high.png"),
                 os.path.join(mnt, "db", "qps", "yesterday.png"),
                 os.path.join(mnt, "web", "cpu", "20241202T0000Z-20241203T0000Z.png")]
        show(["file"] + picks)
        show(["ls", "-l"] + picks)
        os.makedirs(args.out, exist_ok=True)
        for p in picks:
            dst = os.path.join(args.out, "-".join(os.path.relpath(p, mnt).split(os.sep)))
            shutil.copyfile(p, dst)
            print("copied %s -> %s" % (os.path.relpath(p, mnt), dst))
        # The pages: the whole tree (graphs, days/, an index.html in every folder) copied
        # as any program would; the copy is a small static site that works offline.
        site = os.path.abspath(os.path.join(args.out, "site"))
        shutil.rmtree(site, ignore_errors=True)
        show(["cp", "-r", mnt + "/.", site])
        # The copy keeps the mount's read-only modes; make it the user's to change or
        # delete (the next make demo replaces it).
        for folder, _, files in os.walk(site):
            for name in [folder] + [os.path.join(folder, f) for f in files]:
                os.chmod(name, os.stat(name).st_mode | 0o200)
        show(["cat", os.path.join(mnt, ".insightfs", "stats")])
        if args.keep:
            print("\nkept mounted on %s - browse it; press Enter (or Ctrl-C) to unmount" % mnt)
            try:
                sys.stdin.readline()
            except KeyboardInterrupt:
                pass
        status = 0
    finally:
        if proc is not None:
            subprocess.run(["fusermount3", "-u", mnt], check=False)
            try:
                rc = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            if rc != 0:
                print("demo: insightfs exited with %d" % rc, file=sys.stderr)
                status = 1
        api.stop()
        shutil.rmtree(work, ignore_errors=True)
    if status == 0:
        missing = broken_links(site)
        if missing:
            print("demo: the copied pages name what the copy lacks:\n  " + "\n  ".join(missing),
                  file=sys.stderr)
            status = 1
    if status == 0:
        print("\nthe dashboards as web pages, a copy that works without the mount:\n  file://%s"
              % urllib.parse.quote(os.path.join(site, "index.html")))
    if status == 0 and args.screenshot:
        status = screenshot(os.path.join(site, "web", "index.html"), args.screenshot)
    print("\ndemo done: unmounted, local API stopped" if status == 0 else "demo failed")
    return status


if __name__ == "__main__":
    sys.exit(main())
