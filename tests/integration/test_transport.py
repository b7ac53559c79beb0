"""IMAP transport features: COMPRESS=DEFLATE, tunnel = COMMAND, LIST-STATUS
polls, and pipelined body fetches for prefetch.

Run against your own build:
    MAILFS_BUILD_DIR=build-net /usr/bin/pytest-3 -v tests/integration/test_transport.py
"""

import os
import re
import time

import pytest

from util import (wait_until, run_with_timeout, messages, read, fuse_skip_reason,
                  with_flags)

if fuse_skip_reason():
    pytest.skip(fuse_skip_reason(), allow_module_level=True)

NETWORK_LOG = (r"(connect|connection|refused|reset|timed? ?out|EIO|closed|eof|"
               r"cannot fetch|no answer)")

# Dovecot offers COMPRESS=DEFLATE only with the imap_zlib plugin.
ZLIB_CONFIG = "protocol imap {\n  mail_plugins = $mail_plugins imap_zlib\n}\n"

IMAP_BIN = "/usr/lib/dovecot/imap"


def message(i):
    lines = "".join("Line %d of message %d: the quick brown fox jumps over "
                    "the lazy dog.\r\n" % (j, i) for j in range(8 + i % 13))
    return ("From: Sender %d <sender%d@example.org>\r\n"
            "To: Receiver <receiver@example.org>\r\n"
            "Subject: transport test message number %d\r\n"
            "Date: Mon, 01 Jan 2024 10:%02d:00 +0000\r\n"
            "Message-ID: <transport-%d@mailfs.test>\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n"
            "\r\n%s" % (i, i, i, i % 60, i, lines)).encode()


def seed(server, n, folder="INBOX", flags=lambda i: ()):
    with server.client() as c:
        for i in range(n):
            c.append(folder, message(i), flags=flags(i))
    return {message(i) for i in range(n)}


def imap_commands(log, verb):
    """Client command lines of the debug log whose command is verb."""
    pat = re.compile(r"C: a\d+ (UID )?%s\b" % verb)
    return [ln for ln in log.splitlines() if pat.search(ln)]


def read_all(m, folder="INBOX"):
    out = set()
    for path in messages(m.acct, folder):
        state, data = run_with_timeout(read, 15, path)
        assert state == "ok", (path, state, data)
        out.add(data)
    return out


# --------------------------------------------------------------------------
# COMPRESS=DEFLATE

def listing_bytes(mailfs, server, proxy, n, **opts):
    p = proxy(server)
    m = mailfs(server, proxy=p, **opts)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == n, 30, msg="listing")
    time.sleep(0.5)
    total = p.bytes_up + p.bytes_down
    return m, p, total


def test_compress_saves_bytes(dovecot_factory, mailfs, proxy):
    n = 200
    d = dovecot_factory(extra_config=ZLIB_CONFIG)
    with d.client() as c:
        assert "COMPRESS=DEFLATE" in c.capabilities()
    wanted = seed(d, n)

    m1, p1, with_compress = listing_bytes(mailfs, d, proxy, n)
    assert "compression enabled" in m1.log()
    assert read_all(m1) == wanted
    m1.stop()

    m2, p2, without = listing_bytes(mailfs, d, proxy, n, compress=False)
    assert "compression enabled" not in m2.log()
    assert read_all(m2) == wanted
    m2.stop()

    print("listing of %d messages: %d bytes compressed, %d bytes plain"
          % (n, with_compress, without))
    assert with_compress * 2 < without, (with_compress, without)


def test_compress_writes_reach_server(dovecot_factory, mailfs):
    d = dovecot_factory(extra_config=ZLIB_CONFIG)
    seed(d, 5)
    m = mailfs(d)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 5, 20, msg="listing")
    assert "compression enabled" in m.log()
    path = messages(m.acct, "INBOX")[0]
    os.rename(path, os.path.join(os.path.dirname(os.path.dirname(path)), "cur",
                                 with_flags(os.path.basename(path), "F")))

    def flagged():
        with d.client() as c:
            return sum(1 for f in c.all_flags("INBOX").values() if "\\Flagged" in f)
    wait_until(lambda: flagged() == 1, 15, msg="flag on the server")


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_compress_over_tls(dovecot_factory, mailfs, tls):
    """COMPRESS sits above TLS (it starts after login)."""
    d = dovecot_factory(tls=True, extra_config=ZLIB_CONFIG)
    wanted = seed(d, 20)
    m = mailfs(d, tls=tls)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 20, 20, msg="listing")
    log = m.log()
    assert "compression enabled" in log
    assert log.index("TLS") < log.index("compression enabled")
    assert read_all(m) == wanted


# --------------------------------------------------------------------------
# tunnel

def tunnel_command(server):
    """Dovecot's imap as a pre-authenticated session.  Run as root with a
    socket on stdout it refuses ("must not be started from inetd"), so
    cat turns the tunnel's socket into pipes, as ssh would."""
    err = os.path.join(server.root_dir, "tunnel.err")
    return "cat | %s -c %s -u %s 2>>%s | cat" % (IMAP_BIN, server.config_path,
                                                  server.user, err)


def tunnel_children(config_path):
    """Pids of running (non-zombie) processes whose command line names
    config_path."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read()
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
        except OSError:
            continue
        state = stat[stat.rindex(")") + 2:].split()[0]
        if config_path.encode() in cmd and state != "Z" and \
                b"/usr/sbin/dovecot" not in cmd:
            pids.append(int(pid))
    return pids


@pytest.mark.skipif(not os.path.exists(IMAP_BIN), reason="no %s" % IMAP_BIN)
def test_tunnel_mount(dovecot, mailfs):
    wanted = seed(dovecot, 4)
    m = mailfs(dovecot, tunnel=tunnel_command(dovecot), host=None, port=None,
               tls=None, user=None, password=None)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 4, 20, msg="listing")
    assert read_all(m) == wanted
    log = m.log()
    assert "tunnel command started" in log
    assert "PREAUTH" in log
    assert not imap_commands(log, "LOGIN") and not imap_commands(log, "AUTHENTICATE")

    path = sorted(messages(m.acct, "INBOX"))[0]
    name = os.path.basename(path)
    os.rename(path, os.path.join(os.path.dirname(os.path.dirname(path)), "cur",
                                 with_flags(name, "F")))

    def flagged():
        with dovecot.client() as c:
            return sum(1 for f in c.all_flags("INBOX").values() if "\\Flagged" in f)
    wait_until(lambda: flagged() == 1, 15, msg="flag on the server")

    assert tunnel_children(dovecot.config_path)
    m.stop()
    # every tunnel child was reaped (no zombies of ours: the daemon is gone,
    # and none of the commands outlived it)
    wait_until(lambda: not tunnel_children(dovecot.config_path), 10,
               msg="tunnel commands gone")


@pytest.mark.skipif(not os.path.exists(IMAP_BIN), reason="no %s" % IMAP_BIN)
def test_tunnel_failing_command(dovecot, mailfs):
    """A command that exits at once: a clear error, no hang, no zombies."""
    m = mailfs(dovecot, tunnel="exit 3", host=None, port=None, tls=None,
               user=None, password=None)
    m.expect_log(NETWORK_LOG)
    m.expect_log(r"(tunnel|error)")
    assert os.path.isdir(m.mnt)
    time.sleep(2)
    zombies = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] == "Z" and int(fields[1]) == m.proc.pid:
            zombies.append(pid)
    assert not zombies


# --------------------------------------------------------------------------
# LIST-STATUS

def test_list_status_poll_is_one_list(dovecot, mailfs):
    dovecot.create("Archive")
    dovecot.create("Archive/2024")
    seed(dovecot, 3)
    seed(dovecot, 2, folder="Archive")
    m = mailfs(dovecot)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 3, 20, msg="listing")
    wait_until(lambda: len(messages(m.acct, "Archive")) == 2, 20, msg="listing")
    # let the first syncs settle (two poll intervals), then watch two more
    time.sleep(4.5)
    start = len(m.log())
    time.sleep(4.5)
    window = m.log()[start:]
    lists = imap_commands(window, "LIST")
    assert lists, window[-3000:]
    # QRESYNC: no MESSAGES (an expunge raises HIGHESTMODSEQ anyway); the
    # special-use attributes are remembered from the first LIST.
    assert all(ln.endswith('LIST "" "*" RETURN (STATUS (UIDVALIDITY UIDNEXT '
                           'HIGHESTMODSEQ))') for ln in lists), lists
    assert not imap_commands(window, "STATUS"), window[-3000:]
    assert not imap_commands(window, "SELECT"), window[-3000:]
    assert not imap_commands(window, "EXAMINE"), window[-3000:]
    assert not imap_commands(window, "FETCH"), window[-3000:]

    # and a change is still picked up
    dovecot.append("Archive", message(50))
    wait_until(lambda: len(messages(m.acct, "Archive")) == 3, 15, msg="new mail")


JUNK_CONF = """namespace inbox {
  mailbox Quarantine {
    special_use = \\Junk
  }
  mailbox Later {
    special_use = \\Junk
  }
}
"""

LIST_VIEW = """
[view lists]
match = List-Id: *transport*
"""


def list_message(i):
    return message(i).replace(b"\r\n\r\n", b"\r\nList-Id: <transport.example.org>\r\n\r\n", 1)


def test_special_use_is_remembered_across_polls(dovecot_factory, mailfs):
    # Polls leave SPECIAL-USE out of their LIST and keep what the first
    # LIST said; a folder that turns up later is asked about at once.
    # Seen through a view, which leaves out \Junk folders (named here so
    # that no name guess could find them).
    server = dovecot_factory(extra_config=JUNK_CONF)
    server.create("Quarantine")
    with server.client() as c:
        c.append("INBOX", list_message(1))
        c.append("Quarantine", list_message(2))
    m = mailfs(server, poll_interval=1, start=False)
    with open(m.config_path, "a") as f:
        f.write(LIST_VIEW)
    m.start()
    view = os.path.join(m.mnt, "@lists")

    def view_count():
        return sum(len(os.listdir(os.path.join(view, s))) for s in ("cur", "new"))

    assert view_count() == 1
    wait_until(lambda: len(imap_commands(m.log(), "LIST")) >= 4, 20, msg="polls")
    lists = imap_commands(m.log(), "LIST")
    assert "SPECIAL-USE" in lists[0], lists
    assert all("SPECIAL-USE" not in ln for ln in lists[1:]), lists

    # A later poll still knows Quarantine is \Junk: new list mail shows
    # in the view, Quarantine's does not.
    with server.client() as c:
        c.append("INBOX", list_message(3))
        c.append("Quarantine", list_message(4))
    wait_until(lambda: view_count() == 2, 20, msg="new list mail in the view")
    time.sleep(2)
    assert view_count() == 2

    # A new \Junk folder: the poll that sees it asks for SPECIAL-USE.
    start = len(m.log())
    server.create("Later")
    with server.client() as c:
        c.append("Later", list_message(5))
    wait_until(lambda: len(messages(m.acct, "Later")) == 1, 20, msg="Later listed")
    assert any("SPECIAL-USE" in ln for ln in imap_commands(m.log()[start:], "LIST"))
    time.sleep(2)
    assert view_count() == 2
    m.check_log()


def test_remount_with_nothing_new_selects_nothing(dovecot, mailfs):
    # The store knows every folder's cursor; the first sync of a remount
    # trusts the listing's statuses like any poll: one LIST, no SELECT.
    dovecot.create("Archive")
    seed(dovecot, 3)
    seed(dovecot, 2, folder="Archive")
    m = mailfs(dovecot)
    wait_until(lambda: len(messages(m.acct, "Archive")) == 2, 20, msg="listing")
    m.stop()
    start = len(m.log())
    m.start()
    wait_until(lambda: "connected, in sync" in m.log()[start:], 20, msg="first sync")
    window = m.log()[start:]
    window = window[:window.index("connected, in sync")]
    assert imap_commands(window, "LIST"), window[-3000:]
    # (The push connection selects INBOX for IDLE on its own; the
    # engine's first sync must select nothing: Archive shows it.)
    selects = imap_commands(window, "SELECT")
    assert not [ln for ln in selects if '"Archive"' in ln], selects
    assert not imap_commands(window, "STATUS"), window[-3000:]
    assert len(messages(m.acct, "INBOX")) == 3


# --------------------------------------------------------------------------
# prefetch through fetch_bodies

def test_prefetch_uses_uid_fetch_sets(dovecot, mailfs, proxy):
    n = 100
    wanted = seed(dovecot, n)
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p, prefetch="all")
    m.expect_log(NETWORK_LOG)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == n, 30, msg="listing")
    def prefetched():
        # the engine may report the prefetch in several runs
        return sum(int(x) for x in re.findall(r"prefetch done \((\d+) bodies\)",
                                              m.log())) >= n
    wait_until(prefetched, 60, msg="prefetch of every body")
    fetches = [ln for ln in imap_commands(m.log(), "FETCH") if "BODY.PEEK[]" in ln]
    assert fetches
    assert len(fetches) <= n // 10, len(fetches)
    p.stop()
    assert read_all(m) == wanted
    p.start()
    with dovecot.client() as c:
        flags = c.all_flags("INBOX")
    assert not any("\\Seen" in f for f in flags.values())
