"""Mount-mode command line (SPEC 2): usage errors and mount-point checks answer with one
line in SPEC 2's forms and mount nothing; accepted mount(8) options are overridden by the
fixed ro,nosuid,nodev; and once an image is read the kernel serves it alone (SPEC 12.1:
OPEN and FLUSH answered ENOSYS, long timeouts), which the daemon's counters show."""
import errno
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading

import pytest

from conftest import (TIME_FACTOR, bin_cmd, check_stderr, clean_env, is_mounted, make_config,
                      run, wait_for)

FINAL = "1732924800000-1732968000000.png"  # 2024-11-30 00:00-12:00 UTC: final


def not_mounted_anywhere_under(path):
    with open("/proc/self/mountinfo") as f:
        return not any(line.split()[4].startswith(path) for line in f)


def test_mount_point_missing(config, tmp_path):
    mnt = str(tmp_path / "nope")
    p = run([config(), mnt])
    assert p.returncode == 1
    assert p.stderr.decode() == ("insightfs: %s: mount point: No such file or directory "
                                 "(see insightfs --help)\n" % mnt)
    assert not_mounted_anywhere_under(str(tmp_path))


def test_mount_point_not_a_directory(config, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    p = run([config(), str(f)])
    assert p.returncode == 1
    assert p.stderr.decode() == ("insightfs: %s: mount point is not a directory "
                                 "(see insightfs --help)\n" % f)
    assert not_mounted_anywhere_under(str(tmp_path))


def test_relative_paths_in_a_removed_current_directory(config, tmp_path):
    """SPEC 2: a relative configuration or mount point that cannot be made absolute (the
    current directory was removed) is one line on stderr and exit 1, not silence."""
    why = "relative to a current directory that cannot be read: No such file or directory"
    cfg = config()
    for i, (args, want) in enumerate([
            (["x.conf", "mnt"], "insightfs: x.conf: %s\n" % why),
            (["-f", "-c", "x.conf", "src", "mnt"], "insightfs: x.conf: %s\n" % why),
            ([cfg, "mnt"], "insightfs: mnt: mount point: %s (see insightfs --help)\n" % why)]):
        gone = tmp_path / ("gone-%d" % i)
        gone.mkdir()
        p = subprocess.run(bin_cmd(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=clean_env(), cwd=str(gone), preexec_fn=lambda: os.rmdir(str(gone)),
                           timeout=60 * TIME_FACTOR)
        assert not gone.exists()
        check_stderr(p.stderr.decode(errors="replace"))
        assert (p.returncode, p.stderr.decode()) == (1, want), args
    assert not_mounted_anywhere_under(str(tmp_path))


def test_unknown_mount_option_and_missing_mount_point(config, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p = run(["-o", "ro,bogus=1", config(), str(mnt)])
    assert (p.returncode, p.stderr.decode()) == (
        1, "insightfs: unknown mount option 'bogus=1' (see insightfs --help)\n")
    p = run(["-f"])
    assert (p.returncode, p.stderr.decode()) == (
        1, "insightfs: no mount point given (see insightfs --help)\n")
    assert not_mounted_anywhere_under(str(tmp_path))


def test_configuration_error_mounts_nothing(api, config, tmp_path):
    cfg = config(api_extra="  timeut_ms = 5;\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p = run(["-f", cfg, str(mnt)])
    assert p.returncode == 1
    assert p.stderr.decode() == "insightfs: %s:5: api.timeut_ms: unknown setting\n" % cfg
    assert not_mounted_anywhere_under(str(tmp_path))


def test_rw_dev_suid_are_accepted_and_overridden(api, config, mount):
    m = mount(config(), args=["-o", "rw,dev,suid,exec,noatime"])
    fields = is_mounted(m.mnt).split()
    assert fields[5].split(",")[:3] == ["ro", "nosuid", "nodev"]
    assert fields[fields.index("-") + 1] == "fuse.insightfs"


def test_dead_mount_is_named(api, config, tmp_path):
    mnt = str(tmp_path / "dead")
    os.mkdir(mnt)
    cfg = config()
    proc = subprocess.Popen(bin_cmd(["-f", cfg, mnt]), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=clean_env())
    try:
        wait_for(lambda: is_mounted(mnt), 10, "the mount")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        p = run([cfg, mnt])
        assert p.returncode == 1
        assert p.stderr.decode() == ("insightfs: %s: a dead FUSE mount is there: run "
                                     "fusermount3 -u %s (see insightfs --help)\n" % (mnt, mnt))
    finally:
        subprocess.run(["fusermount3", "-u", "-z", mnt], check=False)


def test_warm_reads_never_reach_the_daemon(api, config, mount):
    m = mount(config())
    path = m.path("web", "cpu", FINAL)
    with open(path, "rb") as f:
        first = f.read()
    # The first lookup answered a pending version (attribute timeout 0); the read's
    # GETATTR fetched it and gave a day's timeouts. From then on the kernel serves alone.
    os.stat(path)
    api.clear_log()

    def counters():
        with open(m.path(".insightfs", "stats"), "rb") as f:
            s = json.loads(f.read())
        return s["cache"]["hits"], s["cache"]["misses"], s["upstream"]["requests"]

    before = counters()
    for _ in range(200):
        with open(path, "rb") as f:
            assert f.read() == first
        os.stat(path)
    # No LOOKUP, GETATTR or READ reached the daemon: a lookup would count a hit.
    assert counters() == before
    assert api.requests() == []


def test_allow_other_as_non_root_needs_user_allow_other(api, tmp_path):
    # A user without user_allow_other in /etc/fuse.conf (this machine has none): a usage
    # error, given before the configuration is even read, and nothing is mounted.
    with open("/etc/fuse.conf") as f:
        assert not any(l.strip() == "user_allow_other" for l in f)
    os.chmod(str(tmp_path), 0o755)
    cfg = tmp_path / "plain.conf"
    cfg.write_text('api = { endpoint = "%s"; };\ndashboards = ();\n' % api.url)
    os.chmod(str(cfg), 0o644)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    os.chown(str(mnt), 65534, 65534)
    env = clean_env({"NCLOUD_ACCESS_KEY": api.access_key, "NCLOUD_SECRET_KEY": api.secret_key})
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
                       + bin_cmd(["-o", "allow_other", str(cfg), str(mnt)]),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=30)
    assert p.returncode == 1
    assert p.stderr.decode() == ("insightfs: -o allow_other needs user_allow_other in "
                                 "/etc/fuse.conf (see insightfs --help)\n")
    assert not_mounted_anywhere_under(str(tmp_path))


ABORT_WARN = ("insightfs: warn: a notification waits for a request nobody will answer: "
              "aborting the FUSE connection")


@pytest.mark.parametrize("uid,slash", [(0, ""), (65534, ""), (65534, "/")],
                         ids=["root", "nobody", "nobody-mnt-slash"])
def test_teardown_aborts_a_connection_nobody_reads(api, uid, slash):
    """At teardown, a thread of the daemon that waits on a request the ended session loop
    will never read is freed by aborting the connection, and the daemon unmounts and exits
    0; without the abort it would wait forever. The test hook INSIGHTFS_TEST_STUCK_NOTIFY
    makes the invalidation thread stat a fresh name inside the mount as it stops - the
    situation of a notify stuck behind such a LOOKUP, against the real kernel. The abort
    writes fusectl's abort file of the connection (it belongs to the mounting user, so
    nobody - a mount through fusermount3 - may), found by the mount's device when it was
    mounted, also when the mount point was given as `mnt/`; libfuse then leaves the
    aborted mount in place, and the daemon detaches it itself."""
    ctl = "/sys/fs/fuse/connections"
    mounted_ctl = False
    if not os.path.ismount(ctl):
        if subprocess.run(["mount", "-t", "fusectl", "none", ctl]).returncode != 0:
            pytest.skip("fusectl is not mounted on %s and cannot be" % ctl)
        mounted_ctl = True
    # pytest's tmp_path is root's alone; mountinfo shows real paths
    d = os.path.realpath(tempfile.mkdtemp(prefix="insightfs-abort-"))
    mnt = os.path.join(d, "mnt")
    proc = None
    dev_mode = os.stat("/dev/fuse").st_mode & 0o7777
    try:
        if uid != 0 and dev_mode & 0o006 != 0o006:
            # Debian's udev makes /dev/fuse 0666 so that users can mount; some containers
            # and CI machines leave it 0600. Debian's mode for this test, then back.
            os.chmod("/dev/fuse", dev_mode | 0o666)
        os.chmod(d, 0o755)
        os.mkdir(mnt)
        cfg = make_config(os.path.join(d, "insightfs.conf"), api)
        os.chown(cfg, uid, uid)
        os.chown(mnt, uid, uid)
        as_user = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups"]
        err_path = os.path.join(d, "stderr")
        with open(err_path, "w") as err:
            proc = subprocess.Popen(as_user + bin_cmd(["-f", cfg, mnt + slash]), stdout=err,
                                    stderr=err,
                                    env=clean_env({"INSIGHTFS_TEST_STUCK_NOTIFY": "1"}))
        wait_for(lambda: is_mounted(mnt) or proc.poll() is not None, 10, "the mount")
        # Served as its user sees it: INIT is done, so the invalidation thread runs.
        ls = subprocess.run(as_user + ["ls", mnt], stdout=subprocess.PIPE, timeout=30,
                            env=clean_env())
        with open(err_path) as f:
            assert ls.stdout.decode().split() == ["db", "web"], f.read()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=20 * TIME_FACTOR)
        with open(err_path) as f:
            text = f.read()
        check_stderr(text)
        assert rc == 0, text
        assert text.splitlines() == [
            "insightfs: warn: INSIGHTFS_TEST_STUCK_NOTIFY: teardown will wait on the mount "
            "(tests only)", ABORT_WARN], text
        wait_for(lambda: not is_mounted(mnt), 10, "the unmount")
    finally:
        if proc and proc.poll() is None:
            proc.kill()  # an unread LOOKUP ends on SIGKILL
            proc.wait()
        if is_mounted(mnt):
            subprocess.run(["umount", "-l", mnt], check=False)
        os.chmod("/dev/fuse", dev_mode)
        shutil.rmtree(d, ignore_errors=True)
        if mounted_ctl:
            subprocess.run(["umount", ctl], check=False)


def test_kill_9_with_auto_unmount_leaves_no_mount(api, config, tmp_path):
    mnt = str(tmp_path / "mnt")
    os.mkdir(mnt)
    proc = subprocess.Popen(bin_cmd(["-f", "-o", "auto_unmount", config(), mnt]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=clean_env())
    try:
        wait_for(lambda: is_mounted(mnt), 10, "the mount")
        assert os.listdir(mnt) == ["web", "db"]
        # A reader blocked on a fetch that hangs when the daemon dies gets an error
        # rather than hanging (RELIABILITY P5).
        api.fault("hang", count=-1)
        got = []

        def reader():
            try:
                with open(os.path.join(mnt, "web", "cpu", FINAL), "rb") as f:
                    got.append(len(f.read()))
            except OSError as e:
                got.append(e.errno)
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        wait_for(lambda: any(e["fault"] == "hang" for e in api.requests()), 10,
                 "a hung fetch")
        assert t.is_alive()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        t.join(10 * TIME_FACTOR)
        assert not t.is_alive(), "the blocked reader still hangs after kill -9"
        assert got == [errno.ECONNABORTED], got  # the kernel aborts its pending requests
        # fusermount3's auto_unmount watcher notices the dead daemon (RELIABILITY P5).
        wait_for(lambda: not is_mounted(mnt), 30, "auto_unmount after kill -9")
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", mnt], check=False)


# ---- the command line parsed by fuse_opt (SPEC 2) ----------------------------------------

def mount_source(mnt):
    line = is_mounted(mnt).split()
    return line[line.index("-") + 2]


def test_config_option_wins_and_the_positional_config_names_the_source(api, config, mount):
    """-c, --config and -o config= pick the file; the positional CONFIG, which here names
    no file at all, is then only the source that /proc/self/mountinfo shows."""
    cfg = config()
    for args in (["-c", cfg], ["--config", cfg], ["--config=" + cfg], ["-o", "config=" + cfg],
                 ["-c", "missing.conf", "-o", "ro,config=" + cfg]):
        m = mount("insight-web", args=args)
        assert os.listdir(m.mnt) == ["web", "db"]
        assert mount_source(m.mnt) == "insight-web"


def test_debug_stays_in_the_foreground(api, config, tmp_path):
    """-d (and -o debug) without -f: no daemon is forked, libfuse's request log and
    insightfs's debug lines go to stderr, and an unmount ends the process with 0."""
    cfg = config()
    for i, args in enumerate((["-d"], ["-o", "debug"])):
        mnt = str(tmp_path / ("dbg%d" % i))
        os.mkdir(mnt)
        proc = subprocess.Popen(bin_cmd(args + [cfg, mnt]), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=clean_env())
        try:
            wait_for(lambda: is_mounted(mnt) or proc.poll() is not None, 10, "the mount")
            assert is_mounted(mnt), "insightfs exited: %r" % (proc.communicate(),)
            assert os.listdir(mnt) == ["web", "db"]
            assert proc.poll() is None  # not daemonized: the process it started serves
        finally:
            subprocess.run(["fusermount3", "-u", "-z", mnt], stderr=subprocess.DEVNULL)
        out, err = proc.communicate(timeout=20 * TIME_FACTOR)
        assert proc.returncode == 0, err
        assert out == b""
        text = err.decode()
        check_stderr(text)
        assert "insightfs: debug: unique: " in text and "opcode: READDIR" in text, text


def threads(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def test_single_threaded_dispatch(api, config, mount):
    """-s serves from the main thread: the same mount without -s has libfuse's worker
    threads on top of the same insightfs threads."""
    cfg = config()
    counts = []
    for args in (["-s"], []):
        m = mount(cfg, args=args)
        with open(m.path("web", "cpu", FINAL), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.listdir(m.mnt) == ["web", "db"]
        counts.append(threads(m.proc.pid))
    assert counts[0] < counts[1], counts


def test_x_options_of_fstab_are_accepted(api, config, mount):
    """x-* options are notes for other programs (x-systemd.automount, x-gvfs-show):
    accepted like the generic mount options, and the mount is the usual one."""
    m = mount(config(), args=["-o", "x-systemd.automount,x-systemd.idle-timeout=60,"
                                    "x-gvfs-show,nofail"])
    fields = is_mounted(m.mnt).split()
    assert fields[5].split(",")[:3] == ["ro", "nosuid", "nodev"]
    assert os.listdir(m.mnt) == ["web", "db"]


def test_double_dash_ends_the_options(api, config, tmp_path):
    """After "--" an argument that starts with '-' is CONFIG or MOUNTPOINT; before it,
    it is an option."""
    cfg = config()
    os.mkdir(str(tmp_path / "-mnt"))
    mnt = str(tmp_path / "-mnt")
    p = subprocess.run(bin_cmd(["-f", cfg, "-mnt"]), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=clean_env(), cwd=str(tmp_path),
                       timeout=30 * TIME_FACTOR)
    assert (p.returncode, p.stderr.decode()) == (
        1, "insightfs: unknown option '-mnt' (see insightfs --help)\n")
    proc = subprocess.Popen(bin_cmd(["-f", "--", cfg, "-mnt"]), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=clean_env(), cwd=str(tmp_path))
    try:
        wait_for(lambda: is_mounted(mnt) or proc.poll() is not None, 10, "the mount")
        assert is_mounted(mnt), "insightfs exited: %r" % (proc.communicate(),)
        assert os.listdir(mnt) == ["web", "db"]
    finally:
        subprocess.run(["fusermount3", "-u", "-z", mnt], stderr=subprocess.DEVNULL)
    out, err = proc.communicate(timeout=20 * TIME_FACTOR)
    assert (proc.returncode, out, err) == (0, b"", b"")
