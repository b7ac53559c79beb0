"""mailfs as a system citizen (issue 6): the installed layout, mount(8)
and fstab, mount.fuse3, systemd notifications, SIGTERM/unmount draining
the queue, SIGHUP reloading the accounts, the status, several accounts
failing independently, and mounting offline.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

import corpus
from util import (wait_until, run_with_timeout, messages, count, read, deliver, with_flags,
                  write_config, fuse_skip_reason, mailfs_binary, REPO, FUSERMOUNT)

if fuse_skip_reason():
    pytest.skip(fuse_skip_reason(), allow_module_level=True)

NETWORK_LOG = (r"(connect|connection|refused|reset|timed? ?out|closed|eof|retry|"
               r"not responding|no answer|BYE|shutting down|cannot list|unavailable|"
               r"input/output)")
SYNC_WAIT = 40
# The PATH mount(8) leaves to its helpers: /bin/sh's default.
SH_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def msg(i, tag="sys"):
    return corpus.message("%s %d" % (tag, i), ("line %d\n" % i) * (1 + i % 4),
                          msgid="%s-%d@mailfs.test" % (tag, i), date=corpus.date_at(i))


def status(mnt):
    r = subprocess.run([mailfs_binary(), "--status", mnt], capture_output=True, text=True,
                       timeout=20)
    return r.stdout


def build_dir():
    return os.path.dirname(os.path.dirname(mailfs_binary()))


def daemon_pid(mnt):
    m = re.search(r"\(pid (\d+)\)", status(mnt))
    return int(m.group(1)) if m else None


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def mount_line(mnt):
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[1] == mnt:
                return fields
    return None


def add_account(m, name, server, proxy=None, **opts):
    acct = dict(next(iter(m.accounts.values())))
    acct["host"], acct["port"] = server.host, server.port
    if proxy is not None:
        acct["host"], acct["port"] = proxy.listen_host, proxy.port
    acct.update(opts)
    m.accounts[name] = acct


# --------------------------------------------------------------------------
# 1. install layout, man pages, units


def test_meson_install_layout(tmp_path):
    build = build_dir()
    if not os.path.exists(os.path.join(build, "build.ninja")):
        pytest.skip("no meson build directory at %s" % build)
    dest = tmp_path / "dest"
    r = subprocess.run(["meson", "install", "-C", build, "--no-rebuild", "--destdir", str(dest)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    intro = subprocess.run(["meson", "introspect", build, "--buildoptions"],
                           capture_output=True, text=True, timeout=60).stdout
    prefix = re.search(r'"name": "prefix", "value": "([^"]+)"', intro).group(1)
    root = str(dest) + prefix

    sbin = os.path.join(root, "sbin", "mount.mailfs")
    assert os.access(sbin, os.X_OK)
    # `mailfs`, the command mount.fuse3 runs for type fuse.mailfs, is on PATH
    link = os.path.join(root, "bin", "mailfs")
    assert os.path.islink(link)
    assert os.path.realpath(link) == os.path.realpath(sbin)
    out = subprocess.run([link, "--version"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stdout.startswith("mailfs ")

    man = os.path.join(root, "share", "man")
    pages = {"man8/mount.mailfs.8": ["--status", "SIGHUP", "drain_timeout", "fuse.mailfs",
                                     "fstab", "mailfs@mail", "/mailfs@.service",
                                     "/share/doc/mailfs/home-u-mail.mount"],
             "man5/mailfs.conf.5": ["drain_timeout", "fetch_timeout", "password_command",
                                    "prefetch", "oauth"],
             "man1/mailfs-auth.1": ["login", "--device", "--port", "--no-browser", "token",
                                    "--scope", "--xoauth2", "status", "logout", "client_id",
                                    "tenant", "client_secret", "scopes", "auth_url",
                                    "token_url", "device_url", "AES"]}
    groff = shutil.which("groff")
    for page, words in pages.items():
        path = os.path.join(man, page)
        text = open(path).read()
        assert "@VERSION@" not in text and "@DOCDIR@" not in text
        plain = text.replace("\\-", "-")
        for w in words:
            assert w in plain, "%s does not mention %s" % (page, w)
        # every installed file a page names is installed
        for path_named in re.findall(r"%s/[\w./@-]+\w" % re.escape(prefix), plain):
            assert os.path.exists(str(dest) + path_named), (page, path_named)
        if groff:
            r = subprocess.run([groff, "-man", "-ww", "-z", "-Tutf8", path],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0 and not r.stderr.strip(), (page, r.stderr)

    doc = os.path.join(root, "share", "doc", "mailfs")
    assert read(os.path.join(doc, "mailfs.conf")) == read(os.path.join(REPO, "mailfs.conf"))
    mount_unit = open(os.path.join(doc, "home-u-mail.mount")).read()
    assert "Type=fuse.mailfs" in mount_unit and "Where=/home/u/mail" in mount_unit

    units = [os.path.join(d, "mailfs@.service") for d, _, files in os.walk(str(dest))
             if "mailfs@.service" in files]
    assert len(units) == 1, units
    unit = open(units[0]).read()
    assert "Type=notify" in unit
    assert re.search(r"^ExecStart=%s -f .*%%h/%%I$" % re.escape(prefix + "/sbin/mount.mailfs"),
                     unit, re.M), unit
    assert re.search(r"^ExecStop=-\S*fusermount3 -u %h/%I$", unit, re.M), unit
    assert re.search(r"^ExecReload=.*kill -HUP \$MAINPID$", unit, re.M), unit
    analyze = shutil.which("systemd-analyze")
    if analyze:
        # systemd checks the unit (with the binary where it was installed)
        udir = tmp_path / "units"
        udir.mkdir()
        (udir / "mailfs@.service").write_text(unit.replace(prefix + "/sbin/mount.mailfs", sbin))
        os.symlink("mailfs@.service", str(udir / "mailfs@mail.service"))
        shutil.copy(os.path.join(doc, "home-u-mail.mount"), str(udir / "home-u-mail.mount"))
        for name in ("mailfs@mail.service", "home-u-mail.mount"):
            r = subprocess.run([analyze, "verify", "--man=no", str(udir / name)],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, (name, r.stdout, r.stderr)


# --------------------------------------------------------------------------
# 2. mount(8), fstab, mount.fuse3


def _config(tmp_path, server, **general):
    conf = str(tmp_path / "mailfs.conf")
    gen = {"cache_dir": str(tmp_path / "cache"), "state_dir": str(tmp_path / "state"),
           "fetch_timeout": 5}
    gen.update(general)
    write_config(conf, gen, {"test": {"type": "imap", "host": server.host,
                                      "port": server.port, "tls": "none",
                                      "user": server.user, "password": server.password,
                                      "poll_interval": 2, "timeout": 5}})
    return conf


def _check_mounted_and_unmount(mnt, dovecot, body, umount):
    """The mount shows the mail, answers --status, and goes away cleanly
    with umount; returns the daemon's pid."""
    wait_until(lambda: count(os.path.join(mnt, "test"), "INBOX") == 1, SYNC_WAIT)
    path = messages(os.path.join(mnt, "test"), "INBOX")[0]
    assert read(path) == body
    line = mount_line(mnt)
    assert line and line[0] == "mailfs" and line[2] == "fuse.mailfs", line
    pid = wait_until(lambda: daemon_pid(mnt), 20, msg="--status of the mount")
    assert "account test" in status(mnt)
    # mount(8) ran the daemon without $XDG_RUNTIME_DIR; a shell that has
    # one still finds its socket
    run = os.path.join(os.path.dirname(mnt), "xdg-run")
    os.makedirs(run, mode=0o700, exist_ok=True)
    r = subprocess.run([mailfs_binary(), "--status", mnt], capture_output=True, text=True,
                       timeout=20, env=dict(os.environ, XDG_RUNTIME_DIR=run))
    assert r.returncode == 0 and "account test" in r.stdout, r.stderr
    r = subprocess.run(umount + [mnt], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: not pid_alive(pid), 30, msg="the daemon exiting after umount")
    assert mount_line(mnt) is None
    return pid


def _mount_cleanup(mnt):
    if mount_line(mnt):
        subprocess.run([FUSERMOUNT, "-u", "-z", mnt], capture_output=True)


def test_mount_fuse3_runs_mailfs_from_path(dovecot, tmp_path):
    """What mount(8) does for -t fuse.mailfs: mount.fuse3 runs `mailfs
    SOURCE MOUNTPOINT -o OPTIONS` through /bin/sh; the daemon detaches."""
    mount_fuse3 = shutil.which("mount.fuse3", path="/sbin:/usr/sbin")
    if not mount_fuse3:
        pytest.skip("mount.fuse3 is missing")
    body = msg(1)
    dovecot.append("INBOX", body, flags=("\\Seen",))
    conf = _config(tmp_path, dovecot)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(mailfs_binary(), str(bindir / "mailfs"))
    mnt = str(tmp_path / "mnt")
    os.mkdir(mnt)
    env = dict(os.environ, PATH="%s:%s" % (bindir, os.environ.get("PATH", SH_DEFAULT_PATH)))
    try:
        # (a config path relative to where it was started)
        r = subprocess.run([mount_fuse3, "mailfs", mnt, "-t", "fuse.mailfs", "-o",
                            "rw,nosuid,nodev,config=" + os.path.basename(conf)], env=env,
                           capture_output=True, text=True, timeout=60,
                           cwd=os.path.dirname(conf))
        assert r.returncode == 0, r.stdout + r.stderr
        # detached: mount.fuse3 returned, the daemon lives on and logs to
        # syslog, not to the terminal it was started from
        assert r.stderr == ""
        # the detached daemon (now in "/") reads its config again on SIGHUP
        pid = wait_until(lambda: daemon_pid(mnt), 20, msg="--status of the mount")
        with open(conf, "a") as f:
            f.write("\n[account again]\ntype = imap\nhost = %s\nport = %d\ntls = none\n"
                    "user = %s\npassword = %s\n" % (dovecot.host, dovecot.port, dovecot.user,
                                                     dovecot.password))
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: count(os.path.join(mnt, "again"), "INBOX") == 1, SYNC_WAIT,
                   msg="the account added by SIGHUP")
        _check_mounted_and_unmount(mnt, dovecot, body, [FUSERMOUNT, "-u"])
    finally:
        _mount_cleanup(mnt)


@pytest.fixture
def mailfs_on_default_path():
    """`mailfs` where mount(8)'s helpers find it (they run with /bin/sh's
    default PATH): the installed one, or a link to the build for the test."""
    found = shutil.which("mailfs", path=SH_DEFAULT_PATH)
    made = None
    if found is None:
        made = "/usr/local/bin/mailfs"
        try:
            os.makedirs("/usr/local/bin", exist_ok=True)
            os.symlink(mailfs_binary(), made)
        except OSError as e:
            pytest.skip("cannot put mailfs on the default PATH: %s" % e)
    elif os.path.realpath(found) != os.path.realpath(mailfs_binary()):
        pytest.skip("another mailfs is installed at %s" % found)
    yield
    if made:
        os.unlink(made)


@pytest.mark.parametrize("how", ["mount -t", "fstab"])
def test_mount_command_and_fstab(dovecot, tmp_path, mailfs_on_default_path, how):
    if os.geteuid() != 0:
        pytest.skip("mount(8) of a FUSE type needs root here")
    body = msg(2)
    dovecot.append("INBOX", body, flags=("\\Seen",))
    conf = _config(tmp_path, dovecot)
    mnt = str(tmp_path / "mnt")
    os.mkdir(mnt)
    if how == "mount -t":
        cmd = ["mount", "-t", "fuse.mailfs", "mailfs", mnt, "-o", "config=" + conf]
    else:
        fstab = tmp_path / "fstab"
        fstab.write_text("# a user's line, as in the README\n"
                         "mailfs %s fuse.mailfs noauto,user,config=%s 0 0\n" % (mnt, conf))
        cmd = ["mount", "-T", str(fstab), mnt]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stdout + r.stderr
        _check_mounted_and_unmount(mnt, dovecot, body, ["umount"])
    finally:
        _mount_cleanup(mnt)


# --------------------------------------------------------------------------
# 3. leaving: SIGTERM and unmount drain the queue


def test_sigterm_drains_the_queue_then_exits(dovecot, mailfs, proxy):
    dovecot.append("INBOX", msg(3), flags=("\\Seen",))
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p, general={"drain_timeout": 60})
    m.expect_log(NETWORK_LOG)
    wait_until(lambda: count(m.acct, "INBOX") == 1, SYNC_WAIT)
    p.stop()                                    # the server goes away
    path = messages(m.acct, "INBOX")[0]
    os.rename(path, os.path.join(m.folder("INBOX"), "cur",
                                 with_flags(os.path.basename(path), "FS")))
    wait_until(lambda: "1 change waiting" in status(m.mnt), 20)
    m.proc.send_signal(signal.SIGTERM)
    # the mount goes at once; the daemon stays to send the change
    wait_until(lambda: "sending 1 queued change" in m.log(), 30,
               msg="the drain starting")
    wait_until(lambda: mount_line(m.mnt) is None, 20, msg="unmounted before draining")
    assert m.proc.poll() is None
    p.start()                                   # ... and comes back
    rc = m.proc.wait(90)
    assert rc == 0, "exit code %s\n%s" % (rc, m.log_tail())
    m.proc = None
    assert "every queued change is on the server" in m.log()
    with dovecot.client() as c:
        assert c.flags("INBOX", c.uids("INBOX")[0]) == {"\\Seen", "\\Flagged"}


def test_unmount_drain_is_bounded_and_the_rest_waits(dovecot, mailfs, proxy):
    dovecot.append("INBOX", msg(4), flags=("\\Seen",))
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p, general={"drain_timeout": 3})
    m.expect_log(NETWORK_LOG)
    wait_until(lambda: count(m.acct, "INBOX") == 1, SYNC_WAIT)
    p.blackhole()                               # a hung server: nothing drains
    path = messages(m.acct, "INBOX")[0]
    os.rename(path, os.path.join(m.folder("INBOX"), "cur",
                                 with_flags(os.path.basename(path), "RS")))
    wait_until(lambda: "1 change waiting" in status(m.mnt), 20)
    m.stop(timeout=60)                          # fusermount3 -u; exit code 0
    assert re.search(r"1 change stays queued for the next mount", m.log()), m.log_tail()
    with dovecot.client() as c:
        assert c.flags("INBOX", c.uids("INBOX")[0]) == {"\\Seen"}
    p.forward()
    m.start()
    with dovecot.client() as c:
        wait_until(lambda: c.flags("INBOX", c.uids("INBOX")[0]) == {"\\Seen", "\\Answered"},
                   SYNC_WAIT, interval=0.5, msg="the queued change sent by the next mount")


# --------------------------------------------------------------------------
# 4. SIGHUP, systemd notifications


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    got = []

    def messages_so_far():
        while True:
            try:
                got.append(s.recv(4096).decode())
            except socket.timeout:
                return list(got)

    yield messages_so_far
    s.close()


def test_sighup_adds_and_removes_accounts(dovecot, mailfs, proxy, notify_socket):
    dovecot.append("INBOX", msg(5), flags=("\\Seen",))
    p = proxy(dovecot)
    m = mailfs(dovecot, account="one", proxy=p)
    m.expect_log(NETWORK_LOG)
    m.expect_log(r"cannot be read|unknown section|expected|the config in force stays")
    one, two = os.path.join(m.mnt, "one"), os.path.join(m.mnt, "two")
    wait_until(lambda: count(one, "INBOX") == 1, SYNC_WAIT)
    wait_until(lambda: "READY=1" in notify_socket(), 10, msg="READY=1 to systemd")

    # add an account: its directory appears, with its mail
    add_account(m, "two", dovecot)
    m.write_config()
    m.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: count(two, "INBOX") == 1, SYNC_WAIT, msg="account two after SIGHUP")
    assert sorted(os.listdir(m.mnt)) == ["one", "two"]
    assert "account two" in status(m.mnt)
    wait_until(lambda: "RELOADING=1" in notify_socket(), 10)
    assert notify_socket()[-1] == "READY=1"

    # changed settings: that account reconnects, the other is left alone
    m.accounts["two"]["poll_interval"] = 3
    m.write_config()
    m.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "account two: settings changed; restarting" in m.log(), 20)
    wait_until(lambda: re.search(r"account two .*: connected, in sync", status(m.mnt)), SYNC_WAIT)
    assert "account one: settings changed" not in m.log()
    assert count(two, "INBOX") == 1

    # a broken file changes nothing
    with open(m.config_path, "a") as f:
        f.write("[nonsense\n")
    m.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "the config in force stays" in m.log(), 20)
    assert sorted(os.listdir(m.mnt)) == ["one", "two"]

    # remove "one" while a change of it is queued (its server away)
    p.stop()
    path = messages(one, "INBOX")[0]
    os.rename(path, os.path.join(one, "INBOX", "cur", with_flags(os.path.basename(path), "FS")))
    wait_until(lambda: "1 change waiting" in status(m.mnt), 20)
    del m.accounts["one"]
    m.write_config()
    m.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: os.listdir(m.mnt) == ["two"], 20, msg="account one gone")
    assert "account one: removed; its queued changes stay in the store" in m.log()
    assert not os.path.exists(one)
    assert "account one" not in status(m.mnt)
    assert count(two, "INBOX") == 1                # the other one never stopped

    # back again (server too): the queued change goes up
    p.start()
    add_account(m, "one", dovecot, proxy=p)
    m.write_config()
    m.proc.send_signal(signal.SIGHUP)
    with dovecot.client() as c:
        wait_until(lambda: c.flags("INBOX", c.uids("INBOX")[0]) == {"\\Seen", "\\Flagged"},
                   SYNC_WAIT, interval=0.5, msg="account one's queued change after re-adding")
    assert sorted(os.listdir(m.mnt)) == ["one", "two"]
    m.stop()
    assert "STOPPING=1" in notify_socket()


# --------------------------------------------------------------------------
# 5. status: first listing, cache, prefetch


def test_status_first_listing_cache_and_prefetch(dovecot, mailfs, proxy):
    nfolders = 6
    sizes = []
    with dovecot.client() as c:
        for f in range(nfolders):
            folder = "INBOX" if f == 0 else "Box%d" % f
            if f:
                c.create(folder)
            for i in range(3):
                body = msg(f * 10 + i)
                sizes.append(len(body))
                c.append(folder, body, flags=("\\Seen",), date=corpus.date_at(i))
    p = proxy(dovecot)
    p.delay(0.25)                               # a slow first listing
    m = mailfs(dovecot, proxy=p, prefetch="all", start=False)
    m.expect_log(NETWORK_LOG)
    m.start(wait=False)
    seen = wait_until(lambda: re.search(r"first listing: folder \d+ of \d+",
                                        status(m.mnt)), 60, interval=0.05,
                      msg="the first listing's progress in the status")
    assert seen
    m.wait_for_mount(60)
    p.forward()
    wait_until(lambda: "first listing done" in m.log(), 60)
    assert re.search(r"first listing: folder \d+ of \d+", m.log())
    total = len(sizes)
    out = wait_until(lambda: (lambda s: s if "%d of %d bodies cached, 0 left" % (total, total)
                              in s else None)(status(m.mnt)), 60,
                     msg="prefetch complete in the status")
    assert "prefetch (all)" in out
    cache = re.search(r"cache: (\d+) of (\d+) bodies, (\d+) bytes", out)
    assert cache, out
    assert (int(cache.group(1)), int(cache.group(2))) == (total, total)
    # bodies as the server stores them (CRLF line ends)
    with dovecot.client() as c:
        server_bytes = sum(sum(c.sizes(f).values()) for f in
                           ["INBOX"] + ["Box%d" % f for f in range(1, nfolders)])
    assert int(cache.group(3)) == server_bytes
    assert "connected, in sync" in out and "last complete sync:" in out
    assert "queue: empty" in out


# --------------------------------------------------------------------------
# 6. several accounts: one failing never stalls the others


def test_failing_accounts_do_not_stall_the_others(dovecot, mailfs, proxy):
    dovecot.append("INBOX", msg(6), flags=("\\Seen",))
    refused = proxy(dovecot)
    refused.stop()
    hung = proxy(dovecot)
    hung.blackhole()
    m = mailfs(dovecot, account="good", start=False)
    m.expect_log(NETWORK_LOG)
    add_account(m, "refused", dovecot, proxy=refused)
    add_account(m, "hung", dovecot, proxy=hung, timeout=60)
    add_account(m, "badpass", dovecot, password="wrong")
    m.expect_log(r"(authentication|login|password|AUTHENTICATIONFAILED|credentials)")
    m.write_config()
    m.start(timeout=60)
    good = m.acct
    wait_until(lambda: count(good, "INBOX") == 1, SYNC_WAIT)
    assert sorted(os.listdir(m.mnt)) == ["badpass", "good", "hung", "refused"]
    # the good account's first listing was served while the hung one's
    # was still held (nothing entered it yet, so nothing gave up on it)
    assert "first listing still running" not in m.log()
    assert re.search(r"account hung .*: connecting", status(m.mnt))
    # entering the hung account waits for its first listing, boundedly;
    # more requests than FUSE has workers do not take them all
    results = []
    waiters = [threading.Thread(target=lambda: results.append(
        run_with_timeout(os.listdir, 40, os.path.join(m.mnt, "hung"))), daemon=True)
        for _ in range(24)]
    for t in waiters:
        t.start()
    state, val = run_with_timeout(lambda: [read(p) for p in messages(good, "INBOX")], 40)
    assert state == "ok", (state, val)
    assert "first listing still running" not in m.log()   # served before the hold ran out
    for t in waiters:
        t.join(60)
    assert len(results) == 24 and all(r[0] == "ok" for r in results), results
    assert "hung: first listing still running; serving what is there" in m.log()
    # the good account reads and writes while the others fail
    path = messages(good, "INBOX")[0]
    with dovecot.client() as c:
        assert read(path) == c.fetch("INBOX", c.uids("INBOX")[0])
    deliver(os.path.join(good, "INBOX"), "new1", msg(7))
    os.rename(path, os.path.join(good, "INBOX", "cur", with_flags(os.path.basename(path), "FS")))
    with dovecot.client() as c:
        wait_until(lambda: c.count("INBOX") == 2, SYNC_WAIT, interval=0.5)
        wait_until(lambda: {"\\Seen", "\\Flagged"} in [set(f) for f in
                                                       c.all_flags("INBOX").values()],
                   SYNC_WAIT, interval=0.5)
    # the file system answers at once for the failing accounts too
    for name in ("refused", "hung", "badpass"):
        state, val = run_with_timeout(os.listdir, 10, os.path.join(m.mnt, name))
        assert state == "ok", (name, state, val)
    out = wait_until(lambda: (lambda s: s if re.search(r"account refused .*refused", s) and
                              re.search(r"account hung .*(connecting|tim|respond|answer)", s)
                              else None)(status(m.mnt)), SYNC_WAIT,
                     msg="why each account is not connected")
    assert re.search(r"account good .*in sync", out), out
    assert re.search(r"account badpass .*: (?!connected).*", out), out
    m.stop(timeout=60)                          # hung connections do not hold the exit

    # remount with the store in place while "good" hangs too: served at once
    p = proxy(dovecot)
    m.accounts["good"]["host"], m.accounts["good"]["port"] = p.listen_host, p.port
    p.blackhole()
    m.write_config()
    m.start(timeout=60)
    state, val = run_with_timeout(lambda: messages(good, "INBOX"), 10)
    assert state == "ok" and len(val) == 2, (state, val)
    state, val = run_with_timeout(lambda: [read(p) for p in val], 10)
    assert state == "ok", state


# --------------------------------------------------------------------------
# 7. offline: mount with the server stopped after a first sync


def test_offline_mount_serves_cache_queues_and_catches_up(dovecot, mailfs):
    for i in range(4):
        dovecot.append("INBOX", msg(20 + i), flags=("\\Seen",))
    dovecot.create("Archive")
    m = mailfs(dovecot, prefetch="all")
    m.expect_log(NETWORK_LOG)
    wait_until(lambda: count(m.acct, "INBOX") == 4, SYNC_WAIT)
    wait_until(lambda: "4 of 4 bodies cached, 0 left" in status(m.mnt), SYNC_WAIT)
    with dovecot.client() as c:
        bodies = sorted(c.messages("INBOX").values())
    m.stop()
    dovecot.stop()                              # no server at all

    m.start(timeout=30)
    # everything cached is there at once
    state, val = run_with_timeout(lambda: sorted(read(p) for p in messages(m.acct, "INBOX")), 10)
    assert state == "ok" and val == bodies, state
    assert os.path.isdir(m.folder("Archive/cur"))
    # changes queue up
    paths = messages(m.acct, "INBOX")
    os.rename(paths[0], os.path.join(m.folder("INBOX"), "cur",
                                     with_flags(os.path.basename(paths[0]), "FS")))
    os.rename(paths[1], os.path.join(m.folder("Archive"), "cur", os.path.basename(paths[1])))
    deliver(m.folder("INBOX"), "offline1", msg(30))
    wait_until(lambda: re.search(r"queue: 3 changes waiting", status(m.mnt)), 20)
    assert re.search(r"account test .*(refused|connect)", status(m.mnt))

    dovecot.start()                             # the network returns
    with dovecot.client() as c:
        wait_until(lambda: c.count("INBOX") == 4 and c.count("Archive") == 1, 60,
                   interval=0.5, msg="moves and the upload on the server")
        wait_until(lambda: sum(1 for f in c.all_flags("INBOX").values()
                               if set(f) == {"\\Seen", "\\Flagged"}) == 1, 60, interval=0.5)
    wait_until(lambda: "queue: empty" in status(m.mnt), 60)


# --------------------------------------------------------------------------
# 8. logging: stderr with levels in the foreground, syslog when detached


def test_foreground_log_levels_and_debug_areas(dovecot, mailfs):
    dovecot.append("INBOX", msg(40), flags=("\\Seen",))
    m = mailfs(dovecot, debug=False, extra_args=["-o", "debug=sync"])
    wait_until(lambda: count(m.acct, "INBOX") == 1, SYNC_WAIT)
    wait_until(lambda: "mailfs debug: test: synced INBOX" in m.log(), SYNC_WAIT)
    log = m.log()
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} mailfs notice: mounted ", log, re.M), log
    assert "mailfs info: test: connected, in sync" in log
    assert " C: " not in log and "imap 127.0.0.1" not in log   # no imap area debug


@pytest.mark.parametrize("how", ["detached", "journal"])
def test_daemon_logs_to_syslog(dovecot, tmp_path, how):
    """Without -f the daemon detaches and logs through syslog(3); with -f
    and stderr being the journal ($JOURNAL_STREAM, as systemd sets it) it
    logs through syslog too, so that lines keep their levels. It runs in a
    mount namespace whose /dev/log is a socket of the test's."""
    unshare = shutil.which("unshare")
    if not unshare or os.geteuid() != 0:
        pytest.skip("needs unshare(1) and root")
    dovecot.append("INBOX", msg(41), flags=("\\Seen",))
    conf = _config(tmp_path, dovecot)
    mnt = str(tmp_path / "mnt")
    os.mkdir(mnt)
    logsock = str(tmp_path / "log.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(logsock)
    s.settimeout(0.2)
    lines = []

    def syslog_text():
        while True:
            try:
                lines.append(s.recv(65536).decode("utf-8", "replace"))
            except socket.timeout:
                return "\n".join(lines)

    script = ("mount -t tmpfs -o mode=755 mailfs-dev /dev && mknod -m 666 /dev/fuse c 10 229 && "
              "mknod -m 666 /dev/null c 1 3 && ln -s %s /dev/log && exec %s %s-o config=%s,"
              "debug=sync %s" % (logsock, mailfs_binary(), "-f " if how == "journal" else "",
                                 conf, mnt))
    cmd = [unshare, "-m", "--propagation", "private", "sh", "-c", script]
    errpath = str(tmp_path / "stderr")
    pid, proc = None, None
    try:
        with open(errpath, "wb") as err:
            if how == "detached":
                r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, timeout=60,
                                   stdin=subprocess.DEVNULL)
                assert r.returncode == 0 and r.stdout == b"", read(errpath)
            else:
                st = os.fstat(err.fileno())
                env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
                proc = subprocess.Popen(cmd, stdout=err, stderr=err, env=env,
                                        stdin=subprocess.DEVNULL)
        text = wait_until(lambda: (lambda t: t if "mounted " in t else None)(syslog_text()), 30,
                          msg="'mounted' through syslog (stderr: %r)" % read(errpath)[-500:])
        # <PRI> is facility daemon (3) * 8 + level: notice 5, info 6, debug 7
        m = re.search(r"<29>.*mailfs\[(\d+)\]: mounted ", text)
        assert m, text
        pid = int(m.group(1))
        if proc:
            assert pid == proc.pid          # sh and unshare exec'd into it
        wait_until(lambda: re.search(r"<31>.*mailfs\[\d+\]: test: synced INBOX", syslog_text()),
                   SYNC_WAIT, msg="a debug line of the sync area")
        assert re.search(r"<30>.*mailfs\[\d+\]: test: connected, in sync", syslog_text())
        assert " C: " not in syslog_text()                # no imap area debug
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(pid) or (proc and proc.poll() is not None), 30,
                   msg="the daemon exiting on SIGTERM")
        if proc:
            assert proc.wait(10) == 0
        pid = None
        assert re.search(r"<29>.*mailfs\[\d+\]: unmounting ", syslog_text())
        assert read(errpath) == b""                        # nothing went to stderr
    finally:
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        s.close()


def test_status_shows_failed_operations_with_errors(dovecot, mailfs):
    dovecot.append("INBOX", msg(50), flags=("\\Seen",))
    with dovecot.client() as c:
        c.create("Gone")
    m = mailfs(dovecot, poll_interval=300)
    m.expect_log(r"(failed for good|TRYCREATE|doesn't exist|no such|Gone)")
    wait_until(lambda: count(m.acct, "INBOX") == 1 and os.path.isdir(m.folder("Gone/cur")),
               SYNC_WAIT)
    with dovecot.client() as c:
        c.delete("Gone")
    p = messages(m.acct, "INBOX")[0]
    os.rename(p, os.path.join(m.folder("Gone"), "cur", os.path.basename(p)))
    out = wait_until(lambda: (lambda s: s if "failed for good: 1" in s else None)(status(m.mnt)),
                     SYNC_WAIT, msg="the failed move in the status")
    line = re.search(r"^    \d{4}-\d\d-\d\d \d\d:\d\d:\d\d move \(message \d+, folder \d+\): (.+)$",
                     out, re.M)
    assert line and line.group(1).strip(), out
    assert "queue: empty" in out
