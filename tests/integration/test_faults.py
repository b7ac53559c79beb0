"""Faults, conflicts, hostile programs, sanitizers and security (issue #8,
items 2, 3, 7, 8, 9).

    2. network faults through util.TcpProxy: drop, refuse, blackhole, stall
       (connections stay open, nothing moves), truncate (the server's data
       cut mid-literal), delay.  No FUSE request waits past its timeout, the
       daemon reconnects, changes made during the faults converge.
    3. concurrent edits: flags on both sides, expunge vs rename, a folder
       deleted with a file open, the server restarted mid-APPEND, and races
       between a queued operation and later local changes.
    7. hostile or careless local programs through the mount.
    8. the daemon under valgrind.
    9. file modes, secrets, password_command, other users.

Bugs found are xfail(strict=True) with the reason "BUG: ..."; the lead
removes the mark with the fix.  No timing assertions: every wait is
bounded and only "did not hang past N seconds" is checked.
"""

import collections
import errno
import os
import re
import shutil
import stat
import subprocess
import threading
import time

import pytest

import corpus
from util import (wait_until, run_with_timeout, messages, count, folders, read, deliver,
                  parse_name, with_flags, imap_to_letters, fuse_skip_reason)

if fuse_skip_reason():
    pytest.skip(fuse_skip_reason(), allow_module_level=True)

POLL = 2
FETCH_TIMEOUT = 5
IDLE_WAIT = 8
POLL_WAIT = POLL + 10
SYNC_WAIT = 40
MOUNT_WAIT = 20
NETWORK_LOG = (r"(connect|connection|refused|reset|broken pipe|timed? ?out|unreachable|"
               r"offline|reconnect|EIO|input/output|backoff|retry|retrying|eof|closed|"
               r"disconnect|hang ?up|network|socket|unavailable|BYE|shutting down|"
               r"truncated|unexpected end|parse)")


def mid_of(i, tag):
    return "%s-%d@mailfs.test" % (tag, i)


def msg(i, tag="fx", body=None):
    return corpus.message("%s %d" % (tag, i), body or ("line %d\n" % i) * (1 + i % 5),
                          msgid=mid_of(i, tag), date=corpus.date_at(i))


def epoch(i):
    return int(corpus.date_at(i).timestamp())


def seed_inbox(d, n, tag="fx", flags=("\\Seen",), folder="INBOX"):
    with d.client() as c:
        for i in range(n):
            c.append(folder, msg(i, tag), flags=flags, date=corpus.date_at(i))


def by_mid(m, folder, n, tag="fx"):
    mt = {epoch(i): mid_of(i, tag) for i in range(n)}
    return {mt[int(os.stat(p).st_mtime)]: p for p in messages(m.acct, folder)}


def server_mids(d, folder):
    with d.client() as c:
        return sorted(c.message_ids(folder).values())


def server_flags_by_mid(d, folder):
    with d.client() as c:
        ids = c.message_ids(folder)
        fl = c.all_flags(folder) if ids else {}
    return {mid: imap_to_letters(fl[u]) for u, mid in ids.items()}


def wait_count(m, folder, n, timeout=MOUNT_WAIT):
    wait_until(lambda: count(m.acct, folder) == n, timeout, interval=0.1,
               msg="%s to show %d message(s)" % (folder, n))


def rename_flags(path, letters):
    new = os.path.join(os.path.dirname(os.path.dirname(path)), "cur",
                       with_flags(os.path.basename(path), letters))
    os.rename(path, new)
    return new


def wait_sent(p, needle, timeout=20):
    """Wait until the daemon sent needle (p.watch(needle) called before)."""
    wait_until(lambda: p.sent(needle), timeout, interval=0.01,
               msg="%r sent by the daemon" % needle)


# --------------------------------------------------------------------------
# 2. network faults


FAULTS = ["drop", "refuse", "blackhole", "stall", "truncate-literal", "delay"]


def _apply_fault(p, fault):
    if fault == "drop":
        p.drop_connections()
    elif fault == "refuse":
        p.stop()
    elif fault == "blackhole":
        p.blackhole()
    elif fault == "stall":
        p.stall()
    elif fault == "truncate-literal":
        # the body literal is cut 40 bytes in, on every connection
        p.truncate(on=b"BODY[] {", keep=40)
        p.drop_connections()
    elif fault == "delay":
        p.delay(1.5)


def _end_fault(p, fault):
    if fault == "refuse":
        p.start()
    p.forward()


def test_network_faults_never_block_and_converge(dovecot, mailfs, proxy):
    N = 24
    seed_inbox(dovecot, N)
    dovecot.create("Moved")
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p, prefetch="none")
    m.expect_log(NETWORK_LOG)
    wait_count(m, "INBOX", N)
    paths = by_mid(m, "INBOX", N)
    with dovecot.client() as c:
        bodies = {mid: c.fetch("INBOX", u) for u, mid in c.message_ids("INBOX").items()}
    order = [mid_of(i, "fx") for i in range(N)]
    intended = {mid: ("INBOX", "S") for mid in order}
    uncached = list(order)
    inbox_cur = os.path.join(m.folder("INBOX"), "cur")
    report = []

    for round_ in range(2):
        for k, fault in enumerate(FAULTS):
            _apply_fault(p, fault)
            # (a) listings never block
            for d in (m.acct, inbox_cur, os.path.join(m.folder("Moved"), "cur")):
                st, val = run_with_timeout(os.listdir, 5, d)
                assert st == "ok", "listing %s during %s: %s %r" % (d, fault, st, val)
            # an uncached body: the data or EIO, within fetch_timeout + slack
            mid = uncached.pop()
            path = paths[mid]
            t0 = time.monotonic()
            st, val = run_with_timeout(read, FETCH_TIMEOUT + 15, path)
            took = time.monotonic() - t0
            assert st != "timeout", "read of an uncached body hung during %s" % fault
            if st == "ok":
                assert val == bodies[mid], "wrong bytes read during %s" % fault
            else:
                assert isinstance(val, OSError) and val.errno in (errno.EIO, errno.EINTR), \
                    "read during %s failed with %r" % (fault, val)
            report.append("%s: read %s in %.1fs" % (fault, "ok" if st == "ok" else
                                                   errno.errorcode[val.errno], took))
            # changes made during the fault return at once and converge later
            a, b = order[4 * k], order[4 * k + 1]
            if round_ == 0:
                st, val = run_with_timeout(rename_flags, 5, paths[a], "FS")
                assert st == "ok", (fault, st, val)
                paths[a] = val
                intended[a] = ("INBOX", "FS")
                newp = os.path.join(m.folder("Moved"), "cur", os.path.basename(paths[b]))
                st, val = run_with_timeout(os.rename, 5, paths[b], newp)
                assert st == "ok", (fault, st, val)
                paths[b] = newp
                intended[b] = ("Moved", "S")
            else:
                c_ = order[4 * k + 2]
                st, val = run_with_timeout(rename_flags, 5, paths[c_], "RS")
                assert st == "ok", (fault, st, val)
                paths[c_] = val
                intended[c_] = ("INBOX", "RS")
            time.sleep(1.0)
            _end_fault(p, fault)
            time.sleep(0.5)
    print("\n".join(report))

    # (b) reconnects: an uncached body reads correctly again
    mid = uncached.pop()
    wait_until(lambda: read(paths[mid]) == bodies[mid], 40, interval=0.5,
               msg="a body read after the faults")
    # (c) converges
    want = {"INBOX": {k: f for k, (fo, f) in intended.items() if fo == "INBOX"},
            "Moved": {k: f for k, (fo, f) in intended.items() if fo == "Moved"}}

    def converged():
        return {"INBOX": server_flags_by_mid(dovecot, "INBOX"),
                "Moved": server_flags_by_mid(dovecot, "Moved")} == want
    wait_until(converged, 60, interval=1.0, msg="server == intended after the faults")
    for mid, path in paths.items():
        assert os.path.exists(path), "%s lost its name %s" % (mid, path)


def test_truncated_literal_then_read_succeeds(dovecot, mailfs, proxy):
    """A body whose literal is cut mid-way is never served short or
    corrupted; once the network is whole the same read returns every byte."""
    big = corpus.message("big", "0123456789abcdef" * 20000, msgid=mid_of(1, "tl"),
                         date=corpus.date_at(1))
    dovecot.append("INBOX", big, flags=("\\Seen",), date=corpus.date_at(1))
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p, prefetch="none")
    m.expect_log(NETWORK_LOG)
    wait_count(m, "INBOX", 1)
    path = messages(m.acct, "INBOX")[0]
    p.truncate(on=b"BODY[] {", keep=100000)
    st, val = run_with_timeout(read, FETCH_TIMEOUT + 15, path)
    assert st != "timeout"
    if st == "ok":
        assert val == big, "a truncated fetch was served as the body (%d of %d bytes)" % (
            len(val), len(big))
    p.forward()
    wait_until(lambda: read(path) == big, 40, interval=0.5, msg="full body after the cut")
    assert os.stat(path).st_size == len(big)


# --------------------------------------------------------------------------
# 3. concurrent edits


def test_flags_changed_on_both_sides_merge_per_flag(dovecot, mailfs, proxy):
    """Base \\Seen.  Locally: +F -S.  On the server meanwhile: +R +D.  Each
    flag keeps the side that changed it: F, R, D set, S cleared."""
    seed_inbox(dovecot, 1, tag="bs")
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p)
    m.expect_log(NETWORK_LOG)
    wait_count(m, "INBOX", 1)
    path = messages(m.acct, "INBOX")[0]
    p.stop()
    path = rename_flags(path, "F")
    with dovecot.client() as c:
        uid = c.uids("INBOX")[0]
        c.store("INBOX", uid, "+FLAGS", ["\\Answered", "\\Draft"])
    p.start()
    with dovecot.client() as c:
        wait_until(lambda: c.flags("INBOX", uid) == {"\\Flagged", "\\Answered", "\\Draft"},
                   SYNC_WAIT, interval=0.5, msg="server flags D F R")
    wait_until(lambda: [parse_name(os.path.basename(x))[1] for x in messages(m.acct, "INBOX")]
               == ["DFR"], POLL_WAIT, interval=0.3, msg="mount name :2,DFR")
    time.sleep(POLL + 1)
    with dovecot.client() as c:
        assert c.flags("INBOX", uid) == {"\\Flagged", "\\Answered", "\\Draft"}


def test_flag_changed_both_ways_server_wins(dovecot, mailfs, proxy):
    """Both sides change the same flags since the base: the server's value
    stands (for \\Seen both removed it; for \\Flagged the server set and
    cleared it again after the mount had seen it set)."""
    seed_inbox(dovecot, 1, tag="sw")
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p)
    m.expect_log(NETWORK_LOG)
    wait_count(m, "INBOX", 1)
    path = messages(m.acct, "INBOX")[0]
    p.stop()
    path = rename_flags(path, "")         # local: -S
    with dovecot.client() as c:
        uid = c.uids("INBOX")[0]
        c.store("INBOX", uid, "-FLAGS", ["\\Seen"])     # server: -S as well
    p.start()
    with dovecot.client() as c:
        wait_until(lambda: c.flags("INBOX", uid) == set(), SYNC_WAIT, interval=0.5)
    time.sleep(POLL + 1)
    with dovecot.client() as c:
        assert c.flags("INBOX", uid) == set()
    assert parse_name(os.path.basename(messages(m.acct, "INBOX")[0]))[1] in ("", None)


def test_server_expunge_beats_local_rename(dovecot, mailfs, proxy):
    seed_inbox(dovecot, 3, tag="ex")
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p)
    m.expect_log(NETWORK_LOG)
    m.expect_log(r"(gone|expunged|no longer|vanished|not found|NONEXISTENT)")
    wait_count(m, "INBOX", 3)
    paths = by_mid(m, "INBOX", 3, "ex")
    victim = mid_of(0, "ex")
    p.stop()
    rename_flags(paths[victim], "FS")
    with dovecot.client() as c:
        uid = [u for u, mi in c.message_ids("INBOX").items() if mi == victim][0]
        c.expunge("INBOX", uid)
    p.start()
    wait_count(m, "INBOX", 2, SYNC_WAIT)
    time.sleep(2 * POLL + 1)
    assert count(m.acct, "INBOX") == 2
    assert victim not in server_mids(dovecot, "INBOX"), "expunged message resurrected"
    with dovecot.client() as c:
        for f in c.folders():
            assert victim not in c.message_ids(f).values(), "resurrected in %s" % f


def test_folder_deleted_on_server_while_file_open(dovecot, mailfs):
    dovecot.create("Doomed")
    body = corpus.message("doomed", "x" * 3000, msgid=mid_of(1, "dd"), date=corpus.date_at(1))
    dovecot.append("Doomed", body, flags=("\\Seen",), date=corpus.date_at(1))
    m = mailfs(dovecot)
    m.expect_log(r"(gone|deleted|no longer|vanished|nonexistent|doesn't exist)")
    wait_count(m, "Doomed", 1)
    path = messages(m.acct, "Doomed")[0]
    with open(path, "rb") as f:
        head = f.read(100)
        with dovecot.client() as c:
            c.delete("Doomed")
        wait_until(lambda: "Doomed" not in folders(m.acct), POLL_WAIT, interval=0.3,
                   msg="the folder disappears from the mount")
        rest = f.read()
    assert head + rest == body
    assert not os.path.exists(os.path.dirname(os.path.dirname(path)))


def test_server_restart_mid_append_one_copy(dovecot, mailfs, proxy):
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p)
    m.expect_log(NETWORK_LOG)
    big = corpus.message("big delivery", "abcdefghij" * 600000, msgid=mid_of(1, "ra"),
                         date=corpus.date_at(1))          # ~6 MB
    p.delay(0.05)                      # slow the upload so the restart lands inside it
    p.watch(b"APPEND")
    threading.Thread(target=deliver, args=(m.folder("INBOX"), "ra.1.test", big),
                     kwargs={"mtime": epoch(1)}, daemon=True).start()
    wait_sent(p, b"APPEND")
    dovecot.restart()
    p.forward()
    wait_until(lambda: server_mids(dovecot, "INBOX") == [mid_of(1, "ra")], 90, interval=1.0,
               msg="exactly one copy on the server")
    time.sleep(2 * POLL + 1)
    assert server_mids(dovecot, "INBOX") == [mid_of(1, "ra")]
    with dovecot.client() as c:
        assert c.fetch("INBOX", c.uids("INBOX")[0]) == big
    wait_count(m, "INBOX", 1)


def test_append_reply_lost_one_copy(dovecot, mailfs, proxy):
    """The server stores the message but the connection dies before its
    [APPENDUID] reply reaches the daemon (the same as a crash right after
    APPEND): safety rule 2 says look for it before sending it again."""
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p)
    m.expect_log(NETWORK_LOG)
    p.truncate(on=b"[APPENDUID", keep=-len(b"[APPENDUID"))
    deliver(m.folder("INBOX"), "lost.1.test", msg(1, "lr"), mtime=epoch(1))
    wait_until(lambda: p.cuts >= 1, 20, interval=0.1, msg="the APPEND reply cut")
    p.forward()
    wait_until(lambda: len(server_mids(dovecot, "INBOX")) >= 1, SYNC_WAIT, interval=0.5)
    time.sleep(3 * POLL)
    assert server_mids(dovecot, "INBOX") == [mid_of(1, "lr")], "duplicated"
    wait_count(m, "INBOX", 1)
    time.sleep(POLL + 1)
    assert count(m.acct, "INBOX") == 1


@pytest.mark.parametrize("then", [
    "nothing",
    "unlink",
    "flags"])
def test_move_reply_lost(dovecot, mailfs, proxy, then):
    """The server moves the message but the reply ([COPYUID]) is lost with
    the connection -- the same as a crash right after MOVE.  Then, with the
    server unreachable, the message is left alone, unlinked, or flagged.
    The end state: one copy where intended (or none), nothing resurrected."""
    seed_inbox(dovecot, 2, tag="mr")
    dovecot.create("Dest")
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p, delete="expunge")
    m.expect_log(NETWORK_LOG)
    m.expect_log(r"(gone|match)")
    wait_count(m, "INBOX", 2)
    wait_until(lambda: "Dest" in folders(m.acct), MOUNT_WAIT)
    paths = by_mid(m, "INBOX", 2, "mr")
    x = mid_of(0, "mr")
    p.truncate(on=b"[COPYUID", keep=-len(b"[COPYUID"))
    dest = os.path.join(m.folder("Dest"), "cur", os.path.basename(paths[x]))
    os.rename(paths[x], dest)
    wait_until(lambda: p.cuts >= 1, 20, interval=0.05, msg="the MOVE reply cut")
    p.stop()
    p.forward()
    with dovecot.client() as c:
        assert sorted(c.message_ids("Dest").values()) == [x], "the MOVE did not happen"
    want_dest, want_flags = [x], "S"
    if then == "unlink":
        os.unlink(dest)
        want_dest = []
    elif then == "flags":
        dest = rename_flags(dest, "FS")
        want_flags = "FS"
    p.start()
    last = {}

    def settled():
        last["v"] = (server_flags_by_mid(dovecot, "Dest"), server_mids(dovecot, "INBOX"))
        return last["v"] == ({k: want_flags for k in want_dest}, [mid_of(1, "mr")])
    try:
        wait_until(settled, SYNC_WAIT, interval=0.5, msg="server settled")
    except AssertionError:
        pytest.fail("server (Dest flags, INBOX) = %r, want Dest %r; mount Dest %r" % (
            last.get("v"), want_dest, os.listdir(os.path.dirname(dest))))
    time.sleep(2 * POLL + 1)
    assert settled(), "changed later: %r" % (last.get("v"),)
    assert count(m.acct, "Dest") == len(want_dest), os.listdir(os.path.dirname(dest))
    assert count(m.acct, "INBOX") == 1


def test_queue_move_into_folder_created_later(dovecot, mailfs, proxy):
    """mv INBOX/x A/; mkdir New; mv A/x New/ -- all before the queue runs.
    The MOVE (entry 1) takes the message's current folder (New) as its
    target, and New's CREATE (entry 2) is behind it in the queue."""
    seed_inbox(dovecot, 2, tag="dl")
    dovecot.create("A")
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p)
    m.expect_log(NETWORK_LOG)
    wait_count(m, "INBOX", 2)
    paths = by_mid(m, "INBOX", 2, "dl")
    x, y = mid_of(0, "dl"), mid_of(1, "dl")
    p.stop()
    a = os.path.join(m.folder("A"), "cur", os.path.basename(paths[x]))
    os.rename(paths[x], a)
    os.mkdir(m.folder("New"))
    os.rename(a, os.path.join(m.folder("New"), "cur", os.path.basename(a)))
    rename_flags(paths[y], "FS")          # queued behind: must not be blocked
    p.start()
    wait_until(lambda: server_mids(dovecot, "New") == [x], SYNC_WAIT, interval=1.0,
               msg="the message in New on the server")
    assert server_flags_by_mid(dovecot, "INBOX") == {y: "FS"}


def test_flag_change_during_upload_is_kept(dovecot, mailfs, proxy):
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p)
    m.expect_log(NETWORK_LOG)
    p.delay(1.0)
    p.watch(b"APPEND")
    path = os.path.join(m.folder("INBOX"), "new", "fc.1.test")
    threading.Thread(target=deliver, args=(m.folder("INBOX"), "fc.1.test", msg(1, "fc")),
                     kwargs={"mtime": epoch(1)}, daemon=True).start()
    wait_sent(p, b"APPEND")
    new = rename_flags(path, "FS")        # the APPEND (without flags) is on the wire
    p.forward()
    wait_until(lambda: server_flags_by_mid(dovecot, "INBOX") == {mid_of(1, "fc"): "FS"},
               SYNC_WAIT, interval=0.5, msg="server flags F S")
    time.sleep(2 * POLL)
    assert os.path.exists(new), "the local flags were reverted: %s" % os.listdir(
        os.path.dirname(new))


def test_move_during_upload_lands_in_the_new_folder(dovecot, mailfs, proxy):
    dovecot.create("Other")
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p)
    m.expect_log(NETWORK_LOG)
    wait_until(lambda: "Other" in folders(m.acct), MOUNT_WAIT)
    p.delay(1.0)
    p.watch(b"APPEND")
    path = os.path.join(m.folder("INBOX"), "new", "mu.1.test")
    threading.Thread(target=deliver, args=(m.folder("INBOX"), "mu.1.test", msg(1, "mu")),
                     kwargs={"mtime": epoch(1)}, daemon=True).start()
    wait_sent(p, b"APPEND")
    dest = os.path.join(m.folder("Other"), "new", "mu.1.test")
    os.rename(path, dest)
    p.forward()
    last = {}

    def placed():
        last["v"] = (server_mids(dovecot, "Other"), server_mids(dovecot, "INBOX"))
        return last["v"] == ([mid_of(1, "mu")], [])
    try:
        wait_until(placed, SYNC_WAIT, interval=0.5, msg="the message in Other only")
    except AssertionError:
        pytest.fail("server (Other, INBOX) = %r; mount Other %r INBOX %r" % (
            last.get("v"), os.listdir(os.path.dirname(dest)), count(m.acct, "INBOX")))
    time.sleep(2 * POLL)
    assert os.path.exists(dest)
    assert count(m.acct, "INBOX") == 0 and count(m.acct, "Other") == 1


# --------------------------------------------------------------------------
# 7. hostile or careless local programs


def test_writes_to_committed_messages_refused(dovecot, mailfs):
    seed_inbox(dovecot, 1, tag="wr")
    m = mailfs(dovecot)
    wait_count(m, "INBOX", 1)
    path = messages(m.acct, "INBOX")[0]
    before = read(path)
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_APPEND, os.O_WRONLY | os.O_TRUNC):
        with pytest.raises(PermissionError):
            fd = os.open(path, flags)
            os.close(fd)
    with pytest.raises(PermissionError):
        os.truncate(path, 1)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            os.ftruncate(fd, 0)
        assert e.value.errno in (errno.EPERM, errno.EBADF, errno.EINVAL)
    finally:
        os.close(fd)
    assert read(path) == before


def test_cached_body_cut_short_is_fetched_again(dovecot, mailfs):
    """Bodies fetched from the server are cached without fsync (they can be
    fetched again), so a power cut can leave a cache file short or empty
    while the store names it.  Such a file is never served: the read gets
    the server's bytes again."""
    seed_inbox(dovecot, 1, tag="short")
    m = mailfs(dovecot)
    wait_count(m, "INBOX", 1)
    path = messages(m.acct, "INBOX")[0]
    want = read(path)
    blobs = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(m.cache_dir, "blobs"))
             for f in fs]
    blobs = [b for b in blobs if os.path.getsize(b) == len(want)]
    assert len(blobs) == 1, blobs
    m.stop()
    with open(blobs[0], "r+b") as f:         # what a crash may leave
        f.truncate(len(want) // 3)
    m.start()
    path = messages(m.acct, "INBOX")[0]
    assert read(path) == want
    assert os.path.getsize(blobs[0]) == len(want)   # the cache healed
    assert re.search(r"has \d+ bytes, not %d: fetching it again" % len(want), m.log())
    m.expect_log(r"fetching it again")


def test_chmod_chown_on_messages(dovecot, mailfs):
    """README: chmod is accepted and ignored (every message stays 0600, as
    on vfat with "quiet"); chown to another owner fails with EPERM. The
    content and the server copy are intact either way."""
    seed_inbox(dovecot, 1, tag="cm")
    m = mailfs(dovecot)
    wait_count(m, "INBOX", 1)
    path = messages(m.acct, "INBOX")[0]
    before = read(path)
    os.chmod(path, 0)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read(path) == before
    os.chmod(path, 0o777)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    os.chown(path, os.getuid(), os.getgid())     # to the owner it has: fine
    with pytest.raises(OSError) as e:
        os.chown(path, 65534, 65534)
    assert e.value.errno == errno.EPERM
    assert os.stat(path).st_uid == os.getuid()
    assert read(path) == before
    with dovecot.client() as c:
        assert c.fetch("INBOX", c.uids("INBOX")[0]) == before
    assert m.running


def test_utime_on_committed_message_keeps_internaldate(dovecot, mailfs):
    """README: st_mtime is the INTERNALDATE and never changes; utime() sets
    it only for a message not yet uploaded.  On a committed message utime()
    must fail (EPERM) or leave st_mtime alone."""
    seed_inbox(dovecot, 1, tag="ut")
    m = mailfs(dovecot)
    wait_count(m, "INBOX", 1)
    path = messages(m.acct, "INBOX")[0]
    try:
        os.utime(path, (1, 1))
    except OSError as e:
        assert e.errno in (errno.EPERM, errno.EACCES, errno.EROFS), e
    assert os.stat(path).st_mtime == epoch(0), "st_mtime changed by utime()"
    m.remount()
    path = messages(m.acct, "INBOX")[0]
    assert os.stat(path).st_mtime == epoch(0), "st_mtime changed by utime() (after remount)"
    with dovecot.client() as c:
        assert c.internaldates("INBOX")[c.uids("INBOX")[0]] == epoch(0)


def test_huge_tmp_file_written_and_deleted(dovecot, mailfs):
    m = mailfs(dovecot)
    tmp = os.path.join(m.folder("INBOX"), "tmp", "huge.1.test")
    staging = os.path.join(m.state_dir, "staging")
    sv0 = os.statvfs(m.state_dir)
    free0 = sv0.f_bavail * sv0.f_frsize
    if free0 < 600 * 2 ** 20:
        pytest.skip("less than 600 MB free for the 200 MB tmp file")
    chunk = b"x" * (1 << 20)
    with open(tmp, "wb") as f:
        for _ in range(200):
            f.write(chunk)
    assert os.stat(tmp).st_size == 200 * (1 << 20)
    os.unlink(tmp)
    assert m.running
    assert not os.path.exists(tmp)

    def staged_bytes():
        return sum(os.path.getsize(os.path.join(dp, f))
                   for dp, _, fs in os.walk(staging) for f in fs) if os.path.isdir(staging) else 0
    wait_until(lambda: staged_bytes() < (1 << 20), 10, msg="the staging space reclaimed")
    # and the mount still works
    deliver(m.folder("INBOX"), "after.1.test", msg(1, "hg"), mtime=epoch(1))
    wait_until(lambda: server_mids(dovecot, "INBOX") == [mid_of(1, "hg")], SYNC_WAIT,
               interval=0.5)


def test_names_without_info_and_odd_letters(dovecot, mailfs):
    seed_inbox(dovecot, 3, tag="nm")
    m = mailfs(dovecot)
    wait_count(m, "INBOX", 3)
    paths = by_mid(m, "INBOX", 3, "nm")
    cur = os.path.join(m.folder("INBOX"), "cur")
    # a name without ":2," renamed into cur/: accepted (no flags)
    p0 = paths[mid_of(0, "nm")]
    bare = os.path.join(cur, parse_name(os.path.basename(p0))[0])
    os.rename(p0, bare)
    # keyword letters kept locally, only known flags sent
    p1 = paths[mid_of(1, "nm")]
    kw = os.path.join(cur, parse_name(os.path.basename(p1))[0] + ":2,Sab")
    os.rename(p1, kw)
    # non-letters after ":2,": report what happens
    p2 = paths[mid_of(2, "nm")]
    odd = os.path.join(cur, parse_name(os.path.basename(p2))[0] + ":2,S!1 ")
    try:
        os.rename(p2, odd)
        odd_result = "accepted"
    except OSError as e:
        odd_result = errno.errorcode[e.errno]
        odd = p2
    print("rename to ':2,S!1 ' ->", odd_result)
    want = {mid_of(0, "nm"): "", mid_of(1, "nm"): "S", mid_of(2, "nm"): "S"}
    wait_until(lambda: server_flags_by_mid(dovecot, "INBOX") == want, SYNC_WAIT, interval=0.5,
               msg="server flags %r" % want)
    time.sleep(POLL + 1)
    assert os.path.exists(bare) and os.path.exists(kw) and os.path.exists(odd)


def test_non_mail_deliveries(dovecot, mailfs):
    """Files that are not mail: binary junk, an empty file, a file with no
    header.  Report what happens; the queue must not stall behind them and
    the daemon must live."""
    seed_inbox(dovecot, 1, tag="nmd")
    m = mailfs(dovecot)
    m.expect_log(r"(refused|rejected|failed for good|giving up|invalid|empty|zero|"
                 r"can't save|NO |BAD )")
    wait_count(m, "INBOX", 1)
    first = messages(m.acct, "INBOX")[0]
    inbox = m.folder("INBOX")
    results = {}
    for name, data in (("junk.bin", bytes(range(256)) * 64),
                       ("empty.txt", b""),
                       ("noheader.txt", b"just some words\n")):
        try:
            deliver(inbox, name, data, mtime=epoch(5))
            results[name] = "delivered"
        except OSError as e:
            results[name] = errno.errorcode[e.errno]
    # a change queued after them still reaches the server
    rename_flags(first, "FS")
    wait_until(lambda: server_flags_by_mid(dovecot, "INBOX").get(mid_of(0, "nmd")) == "FS",
               SYNC_WAIT, interval=0.5, msg="a later flag change is not blocked")
    time.sleep(2)
    with dovecot.client() as c:
        on_server = sorted(len(b) for b in c.messages("INBOX").values())
    print("non-mail deliveries:", results, "server message sizes:", on_server,
          "mount:", sorted(os.path.basename(x) for x in messages(m.acct, "INBOX")))
    assert m.running


def test_links_and_symlinks_refused(dovecot, mailfs):
    seed_inbox(dovecot, 1, tag="ln")
    dovecot.create("Other")
    m = mailfs(dovecot)
    wait_count(m, "INBOX", 1)
    wait_until(lambda: "Other" in folders(m.acct), MOUNT_WAIT)
    p = messages(m.acct, "INBOX")[0]
    other_cur = os.path.join(m.folder("Other"), "cur")
    with pytest.raises(PermissionError):
        os.link(p, os.path.join(other_cur, os.path.basename(p)))
    with pytest.raises(PermissionError):
        os.link(p, os.path.join(m.folder("INBOX"), "cur", "second:2,S"))
    tmp = os.path.join(m.folder("INBOX"), "tmp", "x.1.test")
    with open(tmp, "wb") as f:
        f.write(msg(1, "ln"))
    with pytest.raises(PermissionError):
        os.link(tmp, os.path.join(m.folder("Other"), "new", "x.1.test"))
    for where in (m.folder("INBOX"), os.path.join(m.folder("INBOX"), "cur"),
                  os.path.join(m.folder("INBOX"), "tmp")):
        with pytest.raises(PermissionError):
            os.symlink(p, os.path.join(where, "sym"))
    os.unlink(tmp)
    assert count(m.acct, "Other") == 0 and count(m.acct, "INBOX") == 1


@pytest.fixture
def small_tmpfs(tmp_path):
    d = str(tmp_path / "smallcache")
    os.makedirs(d)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", d],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode:
        pytest.skip("cannot mount a tmpfs: %s" % r.stdout.decode())
    yield d
    subprocess.run(["umount", "-l", d])


def test_full_cache_disk(dovecot, mailfs, small_tmpfs):
    """cache_dir on a 2 MB tmpfs; read 4 x 700 kB bodies and deliver more:
    clear errors (EIO/ENOSPC), nothing lost, the queue intact, the daemon
    alive."""
    bodies = {}
    with dovecot.client() as c:
        for i in range(4):
            b = corpus.message("big %d" % i, ("%d" % i) * 700000, msgid=mid_of(i, "fc"),
                               date=corpus.date_at(i))
            c.append("INBOX", b, flags=("\\Seen",), date=corpus.date_at(i))
            bodies[mid_of(i, "fc")] = b
    m = mailfs(dovecot, general={"cache_dir": small_tmpfs}, prefetch="none")
    m.expect_log(r"(no space|ENOSPC|cache|could not|full|EIO|input/output)")
    wait_count(m, "INBOX", 4)
    paths = by_mid(m, "INBOX", 4, "fc")
    outcome = {}
    for mid, p in sorted(paths.items()):
        st, val = run_with_timeout(read, FETCH_TIMEOUT + 20, p)
        assert st != "timeout", "read hung with the cache full"
        if st == "ok":
            assert val == bodies[mid], "short or wrong bytes with the cache full"
            outcome[mid] = "ok"
        else:
            assert isinstance(val, OSError) and val.errno in (errno.EIO, errno.ENOSPC), val
            outcome[mid] = errno.errorcode[val.errno]
    print("reads with a 2 MB cache:", outcome)
    assert m.running
    # deliveries and flag changes still go to the server
    for j in range(3):
        deliver(m.folder("INBOX"), "fc.new.%d" % j,
                corpus.message("new %d" % j, "y" * 400000, msgid=mid_of(10 + j, "fc"),
                               date=corpus.date_at(10 + j)), mtime=epoch(10 + j))
    paths[mid_of(0, "fc")] = rename_flags(paths[mid_of(0, "fc")], "FS")
    want = sorted(list(bodies) + [mid_of(10 + j, "fc") for j in range(3)])
    wait_until(lambda: server_mids(dovecot, "INBOX") == want, SYNC_WAIT, interval=0.5,
               msg="every message on the server")
    wait_until(lambda: server_flags_by_mid(dovecot, "INBOX")[mid_of(0, "fc")] == "FS",
               SYNC_WAIT, interval=0.5)
    assert count(m.acct, "INBOX") == 7
    assert m.running
    # space comes back (cache is "safe to delete"): reads work again
    for dp, _, fs in os.walk(small_tmpfs):
        for f in fs:
            os.unlink(os.path.join(dp, f))
    for mid, p in sorted(paths.items()):
        st, val = run_with_timeout(read, FETCH_TIMEOUT + 20, p)
        assert st == "ok" and val == bodies[mid], (mid, st, val if st != "ok" else len(val))
        break


# --------------------------------------------------------------------------
# 8. valgrind


def test_daemon_under_valgrind(dovecot, mailfs, monkeypatch):
    vg = shutil.which("valgrind")
    if not vg:
        pytest.skip("valgrind is not installed (apt-get install valgrind)")
    from util import mailfs_binary
    ldd = subprocess.run(["ldd", mailfs_binary()], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT).stdout
    if b"libasan" in ldd or b"libubsan" in ldd:
        pytest.skip("the daemon is built with sanitizers; valgrind needs a plain build")
    seed_inbox(dovecot, 3, tag="vg")
    monkeypatch.setenv("MAILFS_WRAPPER", "%s --error-exitcode=99 --leak-check=full "
                       "--errors-for-leak-kinds=definite -q" % vg)
    m = mailfs(dovecot)
    m.expect_log(r"^==\d+== ?$")        # nothing: a line that is only the pid prefix
    wait_count(m, "INBOX", 3, 60)
    paths = by_mid(m, "INBOX", 3, "vg")
    with dovecot.client() as c:
        want = c.fetch("INBOX", c.uids("INBOX")[0])
    assert read(sorted(paths.values(), key=lambda x: os.stat(x).st_mtime)[0]) == want
    rename_flags(paths[mid_of(1, "vg")], "FS")
    deliver(m.folder("INBOX"), "vg.new.1", msg(9, "vg"), mtime=epoch(9))
    wait_until(lambda: len(server_mids(dovecot, "INBOX")) == 4, 60, interval=0.5)
    rc = m.stop(timeout=60, check=False)
    vg_lines = [ln for ln in m.log().splitlines() if re.match(r"==\d+==", ln)]
    assert rc == 0, "exit code %s under valgrind:\n%s" % (rc, "\n".join(vg_lines[:60]))
    assert not vg_lines, "valgrind reported:\n%s" % "\n".join(vg_lines[:80])


# --------------------------------------------------------------------------
# 9. security


def _modes(root):
    out = {}
    for dp, dns, fns in os.walk(root):
        for n in dns + fns:
            p = os.path.join(dp, n)
            out[p] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


def test_state_and_cache_modes(dovecot, mailfs):
    seed_inbox(dovecot, 2, tag="md")
    os.umask(0o022)
    m = mailfs(dovecot)
    wait_count(m, "INBOX", 2)
    for p in messages(m.acct, "INBOX"):
        read(p)
    deliver(m.folder("INBOX"), "md.new.1", msg(5, "md"), mtime=epoch(5))
    wait_until(lambda: len(server_mids(dovecot, "INBOX")) == 3, SYNC_WAIT, interval=0.5)
    assert stat.S_IMODE(os.stat(m.state_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(m.cache_dir).st_mode) == 0o700
    bad = []
    for root in (m.state_dir, m.cache_dir):
        for p, mode in _modes(root).items():
            if os.path.isdir(p):
                if mode & 0o077:
                    bad.append("%s dir %o" % (p, mode))
            elif mode & 0o077:
                bad.append("%s %o" % (p, mode))
    assert not bad, "group/other can read state or cache:\n%s" % "\n".join(bad)
    blobs = [p for p in _modes(m.cache_dir) if os.path.isfile(p)]
    assert blobs, "no cached bodies found under %s" % m.cache_dir


PW = "Zx7-unique-pw-3141"


def _grep_tree(root, needle):
    hits = []
    for dp, _, fns in os.walk(root):
        for n in fns:
            p = os.path.join(dp, n)
            try:
                with open(p, "rb") as f:
                    if needle in f.read():
                        hits.append(p)
            except OSError:
                pass
    return hits


@pytest.mark.parametrize("how", ["password", "password_command"])
def test_password_never_disclosed(dovecot, mailfs, tmp_path, how):
    dovecot.password = PW
    dovecot.restart()
    seed_inbox(dovecot, 2, tag="pw")
    if how == "password":
        m = mailfs(dovecot)
    else:
        pwfile = tmp_path / "pw"
        pwfile.write_text(PW + "\n")
        os.chmod(str(pwfile), 0o600)
        m = mailfs(dovecot, password_command="cat %s" % pwfile)
    wait_count(m, "INBOX", 2)
    for p in messages(m.acct, "INBOX"):
        read(p)
    rename_flags(messages(m.acct, "INBOX")[0], "FS")
    with open("/proc/%d/cmdline" % m.proc.pid, "rb") as f:
        cmdline = f.read()
    with open("/proc/%d/environ" % m.proc.pid, "rb") as f:
        environ = f.read()
    # No core dump can carry the password out (RLIMIT_CORE 0, undumpable).
    with open("/proc/%d/limits" % m.proc.pid) as f:
        core = [ln for ln in f if ln.startswith("Max core file size")]
    assert core and core[0].split()[4:6] == ["0", "0"], core
    time.sleep(1)
    m.stop()
    needle = PW.encode()
    assert needle not in cmdline
    assert needle not in environ
    assert needle not in m.log().encode(), "the password is in the daemon log (-d)"
    hits = _grep_tree(m.state_dir, needle) + _grep_tree(m.cache_dir, needle)
    assert not hits, "the password is stored in %s" % hits


def test_password_command_output_not_executed(dovecot, mailfs, tmp_path):
    """A password full of shell metacharacters, printed by password_command:
    used verbatim for LOGIN (the mount works), never run."""
    marks = [str(tmp_path / ("pwned%d" % i)) for i in range(4)]
    pw = "a$(touch %s)b`touch %s`c;touch %s|d&e\"f'g\\h>%s" % tuple(marks)
    dovecot.password = pw
    dovecot.restart()
    seed_inbox(dovecot, 1, tag="sh")
    with dovecot.client() as c:          # the server takes it
        assert c.count("INBOX") == 1
    pwfile = tmp_path / "pw"
    pwfile.write_bytes(pw.encode() + b"\n")
    m = mailfs(dovecot, password_command="cat '%s'" % pwfile)
    m.expect_log(r"(auth|login|password)")
    wait_count(m, "INBOX", 1)
    assert read(messages(m.acct, "INBOX")[0]).startswith(b"From:")
    for p in marks:
        assert not os.path.exists(p), "the password was executed: %s exists" % p


def _as_nobody(fn_src, path):
    """Run a tiny python snippet as uid/gid 65534; returns (rc, output)."""
    code = ("import os,sys,errno\n"
            "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
            "p=sys.argv[1]\n" + fn_src)
    r = subprocess.run(["/usr/bin/python3", "-c", code, path], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=20)
    return r.returncode, r.stdout.decode()


PROBE = ("try:\n"
         "    print(sorted(os.listdir(p)))\n"
         "except OSError as e:\n"
         "    print(errno.errorcode[e.errno]); sys.exit(3)\n")


@pytest.fixture
def traversable(tmp_path):
    """Make tmp_path's ancestors o+x for the test (so that only the FUSE
    mount's own check can refuse uid 65534), and restore them."""
    changed = []
    p = str(tmp_path)
    while p not in ("/", "/tmp"):
        st = os.stat(p)
        if not st.st_mode & 0o001:
            os.chmod(p, stat.S_IMODE(st.st_mode) | 0o001)
            changed.append((p, stat.S_IMODE(st.st_mode)))
        p = os.path.dirname(p)
    yield
    for p, mode in changed:
        os.chmod(p, mode)


def test_mount_private_to_its_user(dovecot, mailfs, tmp_path, traversable):
    seed_inbox(dovecot, 1, tag="pv")
    m = mailfs(dovecot)
    wait_count(m, "INBOX", 1)
    os.chmod(m.workdir, 0o711)
    rc, out = _as_nobody(PROBE, m.mnt)
    assert rc == 3 and "EACCES" in out, "uid 65534 could list the mount: %s" % out
    rc, out = _as_nobody(PROBE, os.path.join(m.folder("INBOX"), "cur"))
    assert rc == 3 and "EACCES" in out, out
    m.stop()
    # with allow_other, the other user gets in
    m2 = mailfs(dovecot, extra_args=("-o", "allow_other"))
    wait_count(m2, "INBOX", 1)
    os.chmod(m2.workdir, 0o711)
    rc, out = _as_nobody(PROBE, m2.mnt)
    assert rc == 0 and "test" in out, "allow_other did not let uid 65534 in: %s" % out
