"""prefetch = all | new: bodies arrive ahead of reads, so they stay
readable with the server gone; prefetch never stands in a read's way.
"""

import errno
import os

import pytest

from util import (wait_until, run_with_timeout, messages, read, fuse_skip_reason,
                  parse_name)

if fuse_skip_reason():
    pytest.skip(fuse_skip_reason(), allow_module_level=True)

NETWORK_LOG = (r"(connect|connection|refused|reset|timed? ?out|EIO|closed|eof|"
               r"cannot fetch|no answer)")


def msg(i):
    return ("From: p%d@example.org\r\nTo: t@example.org\r\nSubject: prefetch %d\r\n"
            "Message-ID: <prefetch-%d@mailfs.test>\r\n\r\n%s\r\n"
            % (i, i, i, "body line %d\r\n" % i * (20 + i))).encode()


def seed(dovecot, n, seen):
    bodies = {}
    for i in range(n):
        flags = ("\\Seen",) if seen(i) else ()
        dovecot.append("INBOX", msg(i), flags=flags)
        bodies[i] = msg(i)
    return bodies



def test_prefetch_all_makes_everything_readable_offline(dovecot, mailfs, proxy):
    n = 25
    seed(dovecot, n, seen=lambda i: i % 2 == 0)
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p, prefetch="all")
    m.expect_log(NETWORK_LOG)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == n, 20, msg="listing")
    wait_until(lambda: "prefetch done (%d bodies)" % n in m.log(), 30,
               msg="prefetch of every body")
    p.stop()
    wanted = {msg(i) for i in range(n)}
    got = set()
    for path in messages(m.acct, "INBOX"):
        state, data = run_with_timeout(read, 10, path)
        assert state == "ok", (path, state, data)
        got.add(data)
    assert got == wanted
    # Reading never set \Seen, prefetch neither.
    p.start()
    with dovecot.client() as c:
        flags = c.all_flags("INBOX")
    assert sum(1 for f in flags.values() if "\\Seen" in f) == (n + 1) // 2


def test_prefetch_new_fetches_unseen_only(dovecot, mailfs, proxy):
    n = 12
    seed(dovecot, n, seen=lambda i: i < 6)
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p, prefetch="new")
    m.expect_log(NETWORK_LOG)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == n, 20, msg="listing")
    wait_until(lambda: "prefetch done (6 bodies)" in m.log(), 30,
               msg="prefetch of the unseen bodies")
    p.stop()
    unseen_ok = seen_failed = 0
    for path in messages(m.acct, "INBOX"):
        _, letters = parse_name(os.path.basename(path))
        state, val = run_with_timeout(read, 15, path)
        if letters and "S" in letters:
            assert state == "error" and getattr(val, "errno", None) == errno.EIO, (state, val)
            seen_failed += 1
        else:
            assert state == "ok", (path, state, val)
            unseen_ok += 1
    assert (unseen_ok, seen_failed) == (6, 6)


def test_prefetch_picks_up_new_mail(dovecot, mailfs):
    m = mailfs(dovecot, prefetch="all")
    wait_until(lambda: os.path.isdir(os.path.join(m.acct, "INBOX", "new")), 20)
    dovecot.append("INBOX", msg(99))
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 1, 10, msg="IDLE delivery")
    wait_until(lambda: "prefetch done (1 bodies)" in m.log(), 20,
               msg="prefetch of the new message")
