"""mount.mailfs --status and --accept against a running mount: what each
account is doing, the queue while the server is away, and a mass removal
held back by the guard until the user accepts it.
"""

import os
import subprocess

import pytest

from util import wait_until, messages, count, fuse_skip_reason, mailfs_binary

if fuse_skip_reason():
    pytest.skip(fuse_skip_reason(), allow_module_level=True)

NETWORK_LOG = r"(connect|connection|refused|reset|timed? ?out|closed|eof|retry)"


def msg(i):
    return ("From: st%d@example.org\r\nSubject: status %d\r\nMessage-ID: <status-%d@mailfs.test>"
            "\r\n\r\nbody %d\r\n" % (i, i, i, i)).encode()


def status(m, *extra):
    args = [mailfs_binary()] + (list(extra) if extra else ["--status", m.mnt])
    return subprocess.run(args, capture_output=True, text=True, timeout=20)


def test_status_shows_connection_and_queue(dovecot, mailfs, proxy):
    dovecot.append("INBOX", msg(1), flags=("\\Seen",))
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p)
    m.expect_log(NETWORK_LOG)
    wait_until(lambda: count(m.acct, "INBOX") == 1, 20)
    r = status(m)
    assert r.returncode == 0, r.stderr
    assert "account test" in r.stdout and "in sync" in r.stdout
    assert "queue: empty" in r.stdout
    p.stop()
    path = messages(m.acct, "INBOX")[0]
    os.rename(path, path.replace(":2,S", ":2,FS"))
    wait_until(lambda: "1 change waiting" in status(m).stdout, 15,
               msg="the queued flag change in the status")
    p.start()
    wait_until(lambda: "queue: empty" in status(m).stdout, 40,
               msg="the queue drained after the server came back")
    # No daemon on a path: a clear error, exit 1.
    r = status(m, "--status", "/")
    assert r.returncode == 1 and "no mailfs is serving" in r.stderr


def test_mass_expunge_is_held_until_accepted(dovecot, mailfs):
    n = 30
    for i in range(n):
        dovecot.append("INBOX", msg(i), flags=("\\Seen",))
    m = mailfs(dovecot)
    m.expect_log(r"(nothing was removed|held|accepted)")
    wait_until(lambda: count(m.acct, "INBOX") == n, 20)
    with dovecot.client() as c:
        for uid in c.uids("INBOX"):
            c.store("INBOX", uid, "+FLAGS", ("\\Deleted",))
        c.expunge("INBOX")
        assert c.count("INBOX") == 0
    wait_until(lambda: "held back in INBOX" in status(m).stdout, 20,
               msg="the guard holding the removal back")
    assert count(m.acct, "INBOX") == n          # nothing removed locally
    out = status(m).stdout
    assert "--accept" in out and "30" in out
    r = status(m, "--accept", m.mnt, "test", "INBOX")
    assert r.returncode == 0 and r.stdout.startswith("ok"), (r.stdout, r.stderr)
    wait_until(lambda: count(m.acct, "INBOX") == 0, 20, msg="removal applied after --accept")
    assert "held back" not in status(m).stdout
    r = status(m, "--accept", m.mnt, "test", "INBOX")
    assert r.returncode == 1 and "nothing is held" in r.stdout
