"""The issue's "must work" list, through the mount, against a real Dovecot.

Server-side truth comes from an independent IMAP client (dovecot.client()),
mount-side truth from plain os calls.  Written from the contract:

    mount.mailfs -f -d -o config=FILE MNT
    MNT/<account>/<folder>/{cur,new,tmp}, '/' hierarchy, UTF-8 names, INBOX
    cur/UNIQUE:2,FLAGS (D F P R S T, ASCII order); unseen server mail in new/

Timeouts: IDLE changes within 5 s (we allow IDLE_WAIT), poll_interval = 2
elsewhere (we allow POLL_WAIT); queued write-back is waited for with
wait_until(..., SYNC_WAIT).  No timed performance assertions.
"""

import collections
import errno
import mailbox
import os
import re
import time

import pytest

import corpus
from util import (wait_until, run_with_timeout, messages, count, folders, read, deliver,
                  parse_name, with_flags, letters_to_imap, imap_to_letters, folder_dir,
                  fuse_skip_reason)

if fuse_skip_reason():
    pytest.skip(fuse_skip_reason(), allow_module_level=True)

POLL = 2            # poll_interval the fixture configures
FETCH_TIMEOUT = 5   # fetch_timeout the fixture configures
IDLE_WAIT = 5 + 3   # contract: 5 s on INBOX through IDLE
POLL_WAIT = POLL + 10
SYNC_WAIT = 20      # write-back queue drained
MOUNT_WAIT = 20     # initial listing complete

# Log lines a test that takes the server away may legitimately produce.
NETWORK_LOG = (r"(connect|connection|refused|reset|broken pipe|timed? ?out|unreachable|"
               r"offline|reconnect|EIO|input/output|backoff|retry|retrying|eof|closed|"
               r"disconnect|hang ?up|network|socket|unavailable)")
TLS_LOG = r"(certificate|verif|x509|\btls\b|\bssl\b|handshake|issuer|\bCA\b)"


# --------------------------------------------------------------------------
# helpers

def server_view(c, folder):
    """[(size, internaldate, letters, uid)] for every message of folder."""
    sizes = c.sizes(folder)
    dates = c.internaldates(folder)
    flags = c.all_flags(folder)
    return [(sizes[u], dates[u], imap_to_letters(flags[u]), u) for u in sorted(sizes)]


def mount_view(acct, folder):
    """[(size, mtime, letters or None (new/ without info), path, st_ino)] without reading."""
    out = []
    for p in messages(acct, folder):
        st = os.stat(p)
        _, letters = parse_name(os.path.basename(p))
        out.append((st.st_size, int(st.st_mtime), letters, p, st.st_ino))
    return out


def match_views(sv, mv):
    """Pair server and mount entries by (size, date); assert flags agree.

    Returns {uid: path}.  Server messages without \\Seen may be in new/;
    cur/ names carry exactly the server's flags.
    """
    assert len(mv) == len(sv), "mount shows %d messages, server has %d" % (len(mv), len(sv))
    by_key = collections.defaultdict(list)
    for size, date, letters, uid in sv:
        by_key[(size, date)].append((letters, uid))
    out = {}
    for size, mtime, letters, path, _ in mv:
        cands = by_key.get((size, mtime))
        assert cands, "%s (size %d, mtime %d) matches no server message (size, INTERNALDATE)" % (
            path, size, mtime)
        in_new = os.path.basename(os.path.dirname(path)) == "new"
        pick = None
        for i, (sletters, uid) in enumerate(cands):
            if in_new:
                ok = "S" not in sletters and (letters is None or letters == sletters)
            else:
                ok = letters == sletters
            if ok:
                pick = i
                break
        assert pick is not None, "%s: flags %r match no server message with %r" % (
            path, letters, [c[0] for c in cands])
        sletters, uid = cands.pop(pick)
        out[uid] = path
    return out


def wait_counts(m, c, folder_list, timeout=MOUNT_WAIT):
    """Wait until every folder shows as many files as the server has."""
    def ok():
        for f in folder_list:
            if count(m.acct, f) != c.count(f):
                return False
        return True
    wait_until(ok, timeout, interval=0.2, msg="mount listing == server counts for %s" % folder_list)


def wait_count(m, folder, n, timeout=MOUNT_WAIT):
    wait_until(lambda: count(m.acct, folder) == n, timeout, interval=0.1,
               msg="%s to show %d message(s)" % (folder, n))


def dir_mtime_ns(path):
    return os.stat(path).st_mtime_ns


def only_file(m, folder, timeout=MOUNT_WAIT):
    wait_count(m, folder, 1, timeout)
    return messages(m.acct, folder)[0]


def mid_of(i, tag="mw"):
    return "%s-%d@mailfs.test" % (tag, i)


def msg(i, tag="mw", body=None, **kw):
    """A small message with a deterministic, unique Message-ID and date."""
    return corpus.message("%s message %d" % (tag, i), body or ("body %d\n" % i) * (1 + i % 7),
                          msgid=mid_of(i, tag), date=corpus.date_at(i), **kw)


def date_of(i):
    return corpus.date_at(i)


# --------------------------------------------------------------------------
# smoke

def test_mount_and_unmount_empty_account(dovecot, mailfs):
    m = mailfs(dovecot)
    assert os.path.isdir(m.acct)
    for sub in ("cur", "new", "tmp"):
        assert os.path.isdir(os.path.join(m.acct, "INBOX", sub))
    assert "Trash" in folders(m.acct)
    m.stop()   # exit code 0 is asserted


def test_password_command(dovecot, mailfs):
    dovecot.append("INBOX", msg(1), flags=("\\Seen",), date=date_of(1))
    m = mailfs(dovecot, password_command="echo %s; echo not-this-line" % dovecot.password)
    wait_count(m, "INBOX", 1)


# --------------------------------------------------------------------------
# 1. every folder, every message, exactly once

def test_every_folder_appears(seeded, mailfs):
    m = mailfs(seeded)
    with seeded.client() as c:
        expected = set(c.folders())
    assert "Entwürfe" in expected and "日本語" in expected and "Projects/mailfs/design" in expected
    wait_until(lambda: expected <= set(folders(m.acct)), MOUNT_WAIT,
               msg="all server folders on the mount")
    assert set(folders(m.acct)) == expected
    for f in expected:
        for sub in ("cur", "new", "tmp"):
            assert os.path.isdir(os.path.join(folder_dir(m.acct, f), sub)), (f, sub)
    # nested, not flattened; UTF-8 names
    assert os.path.isdir(os.path.join(m.acct, "Projects", "mailfs", "design", "cur"))
    assert "Entwürfe" in os.listdir(m.acct)
    assert "日本語" in os.listdir(m.acct)


def test_every_message_exactly_once(seeded, mailfs):
    """Counts per folder, (size, INTERNALDATE, flags) per message, malformed
    mail included, all without reading a single body."""
    m = mailfs(seeded, prefetch="none")
    with seeded.client() as c:
        fl = [f for f in c.folders()]
        wait_counts(m, c, fl)
        for f in fl:
            match_views(server_view(c, f), mount_view(m.acct, f))
            for p in messages(m.acct, f):
                name = os.path.basename(p)
                assert not name.startswith(".")
                assert "/" not in parse_name(name)[0]
                _, letters = parse_name(name)
                if os.path.basename(os.path.dirname(p)) == "cur":
                    assert letters is not None, p
                if letters:
                    assert list(letters) == sorted(set(letters)), "flags not in ASCII order: %s" % p
    # unseen server mail is in new/
    inbox = m.folder("INBOX")
    with seeded.client() as c:
        unseen = sum(1 for f in c.all_flags("INBOX").values() if "\\Seen" not in f)
    assert len(os.listdir(os.path.join(inbox, "new"))) == unseen


def test_duplicate_message_ids_both_shown(dovecot, mailfs):
    a, b = (corpus.malformed_messages()["duplicate-id-1"],
            corpus.malformed_messages()["duplicate-id-2"])
    dovecot.append("INBOX", a, flags=("\\Seen",), date=date_of(1))
    dovecot.append("INBOX", b, flags=("\\Seen",), date=date_of(2))
    dovecot.append("INBOX", a, flags=("\\Seen",), date=date_of(3))   # byte-identical copy
    m = mailfs(dovecot)
    wait_count(m, "INBOX", 3)
    time.sleep(POLL + 1)
    assert count(m.acct, "INBOX") == 3


# --------------------------------------------------------------------------
# 2. listing and stat from the store; stable names and inodes

def test_stat_exact_before_read(dovecot_module, mailfs):
    d = dovecot_module
    m = mailfs(d, prefetch="none")
    with d.client() as c:
        for f in ("INBOX", "Archive/2024", "Malformed"):
            wait_counts(m, c, [f])
            match_views(server_view(c, f), mount_view(m.acct, f))
    sizes = [os.stat(p).st_size for p in messages(m.acct, "Archive/2024")]
    assert 5 * 1024 * 1024 in sizes
    # nothing was downloaded to answer stat: the cache holds far less than 5 MB
    total = 0
    for dirpath, _, files in os.walk(m.cache_dir):
        total += sum(os.path.getsize(os.path.join(dirpath, x)) for x in files)
    assert total < 1024 * 1024, "cache_dir holds %d bytes after only listing" % total


def _snapshot(m):
    out = {}
    for f in folders(m.acct):
        for p in messages(m.acct, f):
            st = os.stat(p)
            out[os.path.relpath(p, m.acct)] = (st.st_ino, st.st_size, int(st.st_mtime))
    return out


def test_names_and_inodes_stable_across_remount(seeded, mailfs):
    m = mailfs(seeded)
    with seeded.client() as c:
        wait_counts(m, c, c.folders())
    before = _snapshot(m)
    assert len(before) == sum(len(v) for v in seeded.corpus.values())
    dir_ino = os.stat(m.folder("Archive/2024")).st_ino
    m.remount()
    with seeded.client() as c:
        wait_counts(m, c, c.folders())
    assert _snapshot(m) == before
    assert os.stat(m.folder("Archive/2024")).st_ino == dir_ino
    # and after a crash
    m.remount(kill=True)
    assert _snapshot(m) == before


# --------------------------------------------------------------------------
# 3. read() is the server's bytes, BODY.PEEK, cached

def test_read_exact_bytes_never_sets_seen(dovecot_module, mailfs):
    d = dovecot_module
    m = mailfs(d, prefetch="none")
    with d.client() as c:
        for f in ("INBOX", "Malformed", "Archive/2024"):
            wait_counts(m, c, [f])
            flags_before = c.all_flags(f)
            paths = match_views(server_view(c, f), mount_view(m.acct, f))
            bodies = c.messages(f)
            for uid, p in paths.items():
                data = read(p)
                assert data == bodies[uid], "%s: %d bytes read, server has %d" % (
                    p, len(data), len(bodies[uid]))
                assert os.stat(p).st_size == len(data)
            assert c.all_flags(f) == flags_before, "reading changed server flags in %s" % f
    # partial reads of the 5 MB message
    big = max(messages(m.acct, "Archive/2024"), key=lambda p: os.stat(p).st_size)
    whole = read(big)
    fd = os.open(big, os.O_RDONLY)
    try:
        for off, n in ((0, 1), (4095, 2), (1 << 20, 65536), (len(whole) - 10, 100),
                       (len(whole), 10)):
            assert os.pread(fd, n, off) == whole[off:off + n]
    finally:
        os.close(fd)


def test_reads_after_first_need_no_network(dovecot, mailfs, proxy):
    uids = [dovecot.append("INBOX", msg(i), flags=("\\Seen",), date=date_of(i)) for i in range(3)]
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p, prefetch="none")
    m.expect_log(NETWORK_LOG)
    wait_count(m, "INBOX", 3)
    with dovecot.client() as c:
        paths = match_views(server_view(c, "INBOX"), mount_view(m.acct, "INBOX"))
        bodies = c.messages("INBOX")
    first = paths[uids[0]]
    assert read(first) == bodies[uids[0]]
    p.stop()
    assert read(first) == bodies[uids[0]]
    # a remount while the server is still gone: listing and cached body from the store
    m.remount()
    assert os.path.exists(first)
    state, val = run_with_timeout(read, FETCH_TIMEOUT + 10, first)
    assert state == "ok", (state, val)
    assert val == bodies[uids[0]]
    assert count(m.acct, "INBOX") == 3


# --------------------------------------------------------------------------
# 4. renames, moves, unlink, folders

FLAG_STEPS = ["S", "FS", "FRS", "DFRST", "", "T", "RS", "PS"]


def test_flag_renames_become_store(dovecot, mailfs):
    uid = dovecot.append("INBOX", msg(1), flags=("\\Seen",), date=date_of(1))
    m = mailfs(dovecot)
    path = only_file(m, "INBOX")
    assert path.endswith(":2,S") and "/cur/" in path
    ino = os.stat(path).st_ino
    with dovecot.client() as c:
        for letters in FLAG_STEPS:
            new = os.path.join(os.path.dirname(path), with_flags(os.path.basename(path), letters))
            if new != path:
                os.rename(path, new)
            assert not os.path.exists(path) or new == path
            assert os.stat(new).st_ino == ino
            path = new
            want = letters_to_imap(letters)
            wait_until(lambda: c.flags("INBOX", uid) == want, SYNC_WAIT,
                       msg="server flags %s after rename to :2,%s" % (want, letters))
    # and nothing else appeared
    time.sleep(POLL + 1)
    assert messages(m.acct, "INBOX") == [path]
    assert os.path.basename(path).endswith(":2,PS")


def test_a_burst_of_flag_renames_goes_in_few_stores(dovecot, mailfs, proxy):
    # A reader marking a whole folder read renames every file: the queued
    # changes that make the same change go up together, as UID sets.
    n = 300
    with dovecot.client() as c:
        for i in range(n):
            c.append("INBOX", msg(1000 + i), flags=())
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p)
    wait_until(lambda: count(m.acct, "INBOX") == n, SYNC_WAIT, msg="listing")
    # A server 0.2 s away, as over a real network: the renames made while
    # one STORE is out wait in the queue (on loopback the engine may keep
    # up with them one by one, which costs nothing there).
    p.delay(0.2)
    start = len(m.log())
    paths = messages(m.acct, "INBOX")
    cur = os.path.join(m.folder("INBOX"), "cur")
    for p in paths:
        os.rename(p, os.path.join(cur, with_flags(os.path.basename(p), "S")))
    # then a second, different change on a few of them
    starred = sorted(messages(m.acct, "INBOX"))[:10]
    for p in starred:
        os.rename(p, os.path.join(cur, with_flags(os.path.basename(p), "FS")))
    with dovecot.client() as c:
        def server_done():
            flags = c.all_flags("INBOX")
            return (len(flags) == n and
                    all("\\Seen" in f for f in flags.values()) and
                    sum("\\Flagged" in f for f in flags.values()) == 10)
        wait_until(server_done, SYNC_WAIT * 2, msg="every change on the server")
    stores = [ln for ln in m.log()[start:].splitlines()
              if re.search(r"C: a\d+ UID STORE", ln)]
    assert 2 <= len(stores) <= 30, len(stores)
    assert any(":" in ln.split("UID STORE ")[1].split(" ")[0] or
               "," in ln.split("UID STORE ")[1].split(" ")[0] for ln in stores), stores[:5]
    # the mount agrees with the server, names and all
    time.sleep(POLL + 1)
    names = [os.path.basename(p) for p in messages(m.acct, "INBOX")]
    assert len(names) == n
    assert sum(x.endswith(":2,FS") for x in names) == 10
    assert sum(x.endswith(":2,S") for x in names) == n - 10
    m.check_log()


def test_new_to_cur_sets_seen(dovecot, mailfs):
    uid = dovecot.append("INBOX", msg(2), date=date_of(2))
    m = mailfs(dovecot)
    path = only_file(m, "INBOX")
    assert "/new/" in path
    ino = os.stat(path).st_ino
    dest = os.path.join(m.folder("INBOX"), "cur", with_flags(os.path.basename(path), "S"))
    os.rename(path, dest)
    assert os.stat(dest).st_ino == ino
    with dovecot.client() as c:
        wait_until(lambda: c.flags("INBOX", uid) == {"\\Seen"}, SYNC_WAIT, msg="\\Seen on server")


def test_new_to_cur_without_flags_keeps_unseen(dovecot, mailfs):
    uid = dovecot.append("INBOX", msg(3), date=date_of(3))
    m = mailfs(dovecot)
    path = only_file(m, "INBOX")
    dest = os.path.join(m.folder("INBOX"), "cur", with_flags(os.path.basename(path), ""))
    os.rename(path, dest)
    time.sleep(POLL + 1)
    with dovecot.client() as c:
        assert c.flags("INBOX", uid) == set()
    assert messages(m.acct, "INBOX") == [dest]


def test_rename_into_other_folder_is_move(dovecot, mailfs):
    with dovecot.client() as c:
        c.create("Other")
        uid = c.append("INBOX", msg(4), flags=("\\Seen", "\\Flagged"), date=date_of(4))
        body = c.fetch("INBOX", uid)
    m = mailfs(dovecot)
    path = only_file(m, "INBOX")
    ino = os.stat(path).st_ino
    dest = os.path.join(m.folder("Other"), "cur", os.path.basename(path))
    os.rename(path, dest)
    assert not os.path.exists(path)
    assert os.stat(dest).st_ino == ino
    with dovecot.client() as c:
        wait_until(lambda: c.count("INBOX") == 0 and c.count("Other") == 1, SYNC_WAIT,
                   msg="message moved on the server")
        (ouid,) = c.uids("Other")
        assert c.fetch("Other", ouid) == body
        assert c.flags("Other", ouid) == {"\\Seen", "\\Flagged"}
        assert c.count("Trash") == 0
    time.sleep(POLL + 1)
    assert count(m.acct, "INBOX") == 0
    (moved,) = messages(m.acct, "Other")
    assert os.stat(moved).st_ino == ino
    assert read(moved) == body


def test_unlink_moves_to_trash_by_default(dovecot, mailfs):
    uid = dovecot.append("INBOX", msg(5), flags=("\\Seen",), date=date_of(5))
    keep = dovecot.append("INBOX", msg(6), flags=("\\Seen",), date=date_of(6))
    with dovecot.client() as c:
        body = c.fetch("INBOX", uid)
    m = mailfs(dovecot)
    wait_count(m, "INBOX", 2)
    with dovecot.client() as c:
        paths = match_views(server_view(c, "INBOX"), mount_view(m.acct, "INBOX"))
    os.unlink(paths[uid])
    assert not os.path.exists(paths[uid])
    assert count(m.acct, "INBOX") == 1
    with dovecot.client() as c:
        wait_until(lambda: c.uids("INBOX") == [keep] and c.count("Trash") == 1, SYNC_WAIT,
                   msg="message in Trash on the server")
        (tuid,) = c.uids("Trash")
        assert c.fetch("Trash", tuid) == body
    wait_count(m, "Trash", 1, POLL_WAIT)


def test_unlink_with_delete_expunge(dovecot, mailfs):
    uid = dovecot.append("INBOX", msg(7), flags=("\\Seen",), date=date_of(7))
    other = dovecot.append("INBOX", msg(8), flags=("\\Seen",), date=date_of(8))
    m = mailfs(dovecot, delete="expunge")
    wait_count(m, "INBOX", 2)
    with dovecot.client() as c:
        paths = match_views(server_view(c, "INBOX"), mount_view(m.acct, "INBOX"))
        # another client marks `other` \Deleted but does not expunge it
        c.store("INBOX", other, "+FLAGS", "\\Deleted")
    os.unlink(paths[uid])
    with dovecot.client() as c:
        wait_until(lambda: uid not in c.uids("INBOX"), SYNC_WAIT, msg="UID expunged")
        assert c.uids("INBOX") == [other]
        assert "\\Deleted" in c.flags("INBOX", other)
        assert c.count("Trash") == 0


def test_folder_mkdir_rename_rmdir(dovecot, mailfs):
    m = mailfs(dovecot)
    with dovecot.client() as c:
        os.mkdir(os.path.join(m.acct, "Projects"))
        for sub in ("cur", "new", "tmp"):
            assert os.path.isdir(os.path.join(m.acct, "Projects", sub))
        wait_until(lambda: "Projects" in c.folders(), SYNC_WAIT, msg="CREATE Projects")
        os.mkdir(os.path.join(m.acct, "Projects", "mailfs"))
        wait_until(lambda: "Projects/mailfs" in c.folders(), SYNC_WAIT,
                   msg="CREATE Projects/mailfs")
        os.mkdir(os.path.join(m.acct, "Entwürfe 日本語"))
        wait_until(lambda: "Entwürfe 日本語" in c.folders(), SYNC_WAIT,
                   msg="CREATE of a non-ASCII name")
        # a message in the folder to be renamed survives the rename
        c.append("Projects/mailfs", msg(9), flags=("\\Seen",), date=date_of(9))
        wait_count(m, "Projects/mailfs", 1, POLL_WAIT)
        os.rename(os.path.join(m.acct, "Projects", "mailfs"), os.path.join(m.acct, "Renamed"))
        wait_until(lambda: "Renamed" in c.folders() and "Projects/mailfs" not in c.folders(),
                   SYNC_WAIT, msg="RENAME Projects/mailfs -> Renamed")
        assert c.count("Renamed") == 1
        assert count(m.acct, "Renamed") == 1
        gone = os.path.join(m.acct, "Entwürfe 日本語")
        os.rmdir(gone)
        assert not os.path.exists(gone)
        wait_until(lambda: "Entwürfe 日本語" not in c.folders(), SYNC_WAIT, msg="DELETE")
        assert not os.path.exists(gone), "removed folder is back right after DELETE"
        time.sleep(POLL + 1)
        assert not os.path.exists(gone), "removed folder is back after a poll"
        assert "Entwürfe 日本語" not in c.folders()


# --------------------------------------------------------------------------
# 5. delivery

def _check_delivered(m, dovecot, folder, written, mtime, want_flags, before=0):
    wire = corpus.wire_form(written)
    with dovecot.client() as c:
        wait_until(lambda: c.count(folder) == before + 1, SYNC_WAIT, msg="APPEND on the server")
        uid = max(c.uids(folder))
        assert c.fetch(folder, uid) == wire
        assert c.flags(folder, uid) == want_flags
        if mtime is not None:
            assert c.internaldate(folder, uid) == int(mtime)
    # no duplicate once the next sync has run
    time.sleep(POLL + 1)
    with dovecot.client() as c:
        assert c.count(folder) == before + 1
    assert count(m.acct, folder) == before + 1
    return uid


@pytest.mark.parametrize("method", ["rename", "link"])
def test_delivery_tmp_to_new(dovecot, mailfs, method):
    m = mailfs(dovecot)
    inbox = m.folder("INBOX")
    data = msg(10, tag="deliver-" + method)
    mtime = int(date_of(10).timestamp())
    path = deliver(inbox, "1700000000.M1P1Q1.test", data, mtime=mtime, method=method)
    assert not os.path.exists(os.path.join(inbox, "tmp", "1700000000.M1P1Q1.test"))
    assert read(path) == data
    st = os.stat(path)
    assert st.st_size == len(data) and int(st.st_mtime) == mtime
    # utime on a freshly delivered file works; before the upload it sets
    # the INTERNALDATE (neomutt sets the received time so), hence the same
    # time here, as the upload may or may not have happened yet.
    os.utime(path, (mtime, mtime))
    _check_delivered(m, dovecot, "INBOX", data, mtime, set())
    (p,) = messages(m.acct, "INBOX")
    assert read(p) == corpus.wire_form(data)
    os.utime(p, (mtime, mtime))     # and after the upload
    assert int(os.stat(p).st_mtime) == mtime


def test_delivery_into_cur_with_flags(dovecot, mailfs):
    m = mailfs(dovecot)
    data = msg(11, tag="deliver-cur")
    mtime = int(date_of(11).timestamp())
    deliver(m.folder("INBOX"), "1700000001.M2P2Q2.test", data, mtime=mtime, dest="cur",
            flags="FS")
    _check_delivered(m, dovecot, "INBOX", data, mtime, {"\\Flagged", "\\Seen"})


def test_delivery_into_other_folder(dovecot, mailfs):
    dovecot.create("Archive")
    m = mailfs(dovecot)
    wait_until(lambda: "Archive" in folders(m.acct), POLL_WAIT)
    data = msg(12, tag="deliver-archive")
    deliver(m.folder("Archive"), "1700000002.M3P3Q3.test", data, mtime=1700000002, dest="cur",
            flags="S")
    _check_delivered(m, dovecot, "Archive", data, 1700000002, {"\\Seen"})


def test_delivery_python_mailbox(dovecot, mailfs):
    m = mailfs(dovecot)
    box = mailbox.Maildir(m.folder("INBOX"), factory=None, create=False)
    data = msg(13, tag="pymailbox")
    mm = mailbox.MaildirMessage(data)
    mm.set_date(int(date_of(13).timestamp()))
    key = box.add(mm)
    written = read(os.path.join(m.folder("INBOX"), box._lookup(key)))
    _check_delivered(m, dovecot, "INBOX", written, int(date_of(13).timestamp()), set())
    box2 = mailbox.Maildir(m.folder("INBOX"), factory=None, create=False)
    assert len(box2.keys()) == 1


def test_delivery_lf_only_and_big(dovecot, mailfs):
    m = mailfs(dovecot)
    lf = corpus.malformed_messages()["lf-only"]
    deliver(m.folder("INBOX"), "lf.test", lf, mtime=1700000100)
    _check_delivered(m, dovecot, "INBOX", lf, 1700000100, set())
    big = corpus.big_message(2 * 1024 * 1024, seed=21)
    deliver(m.folder("INBOX"), "big.test", big, mtime=1700000200, dest="cur", flags="S")
    _check_delivered(m, dovecot, "INBOX", big, 1700000200, {"\\Seen"}, before=1)


def test_tmp_o_excl(dovecot, mailfs):
    m = mailfs(dovecot)
    tmp = os.path.join(m.folder("INBOX"), "tmp", "x.test")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    with pytest.raises(FileExistsError):
        os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.unlink(tmp)
    time.sleep(POLL + 1)
    with dovecot.client() as c:
        assert c.count("INBOX") == 0


# --------------------------------------------------------------------------
# 6. server-side changes reach the mount

def test_server_changes_reach_inbox_through_idle(dovecot, mailfs):
    uid1 = dovecot.append("INBOX", msg(20), flags=("\\Seen",), date=date_of(20))
    m = mailfs(dovecot)
    wait_count(m, "INBOX", 1)
    new_dir = os.path.join(m.folder("INBOX"), "new")
    cur_dir = os.path.join(m.folder("INBOX"), "cur")
    time.sleep(1)  # let the IDLE connection settle

    # new mail
    t_new, t_cur = dir_mtime_ns(new_dir), dir_mtime_ns(cur_dir)
    uid2 = dovecot.append("INBOX", msg(21), date=date_of(21))
    wait_count(m, "INBOX", 2, IDLE_WAIT)
    assert len(os.listdir(new_dir)) == 1
    assert dir_mtime_ns(new_dir) > t_new

    # a flag change by another client renames the file
    with dovecot.client() as c:
        paths = match_views(server_view(c, "INBOX"), mount_view(m.acct, "INBOX"))
        old = paths[uid1]
        ino = os.stat(old).st_ino
        t_cur = dir_mtime_ns(cur_dir)
        c.store("INBOX", uid1, "+FLAGS", "\\Flagged")
    want = os.path.join(cur_dir, with_flags(os.path.basename(old), "FS"))
    wait_until(lambda: os.path.exists(want), IDLE_WAIT, msg="renamed to :2,FS")
    with pytest.raises(FileNotFoundError):
        os.stat(old)
    assert os.stat(want).st_ino == ino
    assert dir_mtime_ns(cur_dir) > t_cur

    # an expunge removes the file
    t_cur = dir_mtime_ns(cur_dir)
    with dovecot.client() as c:
        c.expunge("INBOX", uid1)
    wait_until(lambda: not os.path.exists(want), IDLE_WAIT, msg="expunged file gone")
    assert count(m.acct, "INBOX") == 1
    assert dir_mtime_ns(cur_dir) > t_cur

    # \Seen set elsewhere: the unseen message leaves new/
    with dovecot.client() as c:
        c.store("INBOX", uid2, "+FLAGS", "\\Seen")
    wait_until(lambda: not os.listdir(new_dir) and len(os.listdir(cur_dir)) == 1, IDLE_WAIT,
               msg="seen message moved to cur/")
    assert os.listdir(cur_dir)[0].endswith(":2,S")


def test_mail_arriving_right_after_mount(dovecot, mailfs):
    """No window between the initial sync and IDLE in which new mail is lost."""
    dovecot.append("INBOX", msg(22), flags=("\\Seen",), date=date_of(22))
    m = mailfs(dovecot)
    dovecot.append("INBOX", msg(23), date=date_of(23))
    wait_count(m, "INBOX", 2, MOUNT_WAIT)


def test_server_changes_reach_other_folders_by_poll(dovecot, mailfs):
    dovecot.create("Lists")
    m = mailfs(dovecot)
    wait_until(lambda: "Lists" in folders(m.acct), MOUNT_WAIT)
    new_dir = os.path.join(m.folder("Lists"), "new")
    t_new = dir_mtime_ns(new_dir)
    dovecot.append("Lists", msg(30), date=date_of(30))
    wait_count(m, "Lists", 1, POLL_WAIT)
    assert dir_mtime_ns(new_dir) > t_new
    # a new folder
    dovecot.create("Brand new/Sub")
    wait_until(lambda: "Brand new/Sub" in folders(m.acct), POLL_WAIT,
               msg="folder created on the server appears")
    # a deleted folder disappears
    with dovecot.client() as c:
        c.delete("Lists")
    wait_until(lambda: "Lists" not in folders(m.acct), POLL_WAIT,
               msg="folder deleted on the server disappears")


def test_open_file_survives_server_expunge(dovecot, mailfs):
    uid = dovecot.append("INBOX", corpus.big_message(512 * 1024, seed=31), flags=("\\Seen",),
                         date=date_of(31))
    m = mailfs(dovecot)
    path = only_file(m, "INBOX")
    with open(path, "rb") as f:
        head = f.read(1000)
        with dovecot.client() as c:
            body = c.fetch("INBOX", uid)
            c.expunge("INBOX", uid)
        # the name may go at once or only after the last close; give the
        # daemon time to learn about the expunge either way
        try:
            wait_until(lambda: not os.path.exists(path), IDLE_WAIT)
        except AssertionError:
            pass
        rest = f.read()
    assert head + rest == body
    wait_until(lambda: not os.path.exists(path), IDLE_WAIT, msg="expunged name gone after close")


# --------------------------------------------------------------------------
# 7. the write-back queue survives kill -9

def test_kill9_mid_queue_loses_and_duplicates_nothing(dovecot, mailfs):
    N = 60
    with dovecot.client() as c:
        c.create("Dest")
        for i in range(N):
            c.append("INBOX", msg(i, tag="k9"), flags=("\\Seen",), date=date_of(i))
        mids = c.message_ids("INBOX")                       # uid -> Message-ID
        dates = c.internaldates("INBOX")
    mtime_to_mid = {dates[u]: mids[u] for u in mids}
    m = mailfs(dovecot)
    wait_count(m, "INBOX", N)
    by_mid = {}
    for p in messages(m.acct, "INBOX"):
        by_mid[mtime_to_mid[int(os.stat(p).st_mtime)]] = p
    order = [mid_of(i, "k9") for i in range(N)]
    flagged, moved = order[:50], order[50:55]
    inbox_cur = os.path.join(m.folder("INBOX"), "cur")
    dest_cur = os.path.join(m.folder("Dest"), "cur")

    for mid in flagged:
        p = by_mid[mid]
        os.rename(p, os.path.join(inbox_cur, with_flags(os.path.basename(p), "FS")))
    for mid in moved:
        p = by_mid[mid]
        os.rename(p, os.path.join(dest_cur, os.path.basename(p)))
    delivered = []
    for j in range(3):
        data = msg(100 + j, tag="k9-new")
        deliver(m.folder("INBOX"), "k9.%d.test" % j, data, mtime=int(date_of(100 + j).timestamp()))
        delivered.append(mid_of(100 + j, "k9-new"))
    m.kill()

    m.start()

    def server_state():
        with dovecot.client() as c:
            inbox_ids = c.message_ids("INBOX")
            dest_ids = c.message_ids("Dest")
            flags = c.all_flags("INBOX")
        return inbox_ids, dest_ids, flags

    def done():
        inbox_ids, dest_ids, flags = server_state()
        inbox_mids = sorted(inbox_ids.values())
        if inbox_mids != sorted(set(order) - set(moved) | set(delivered)):
            return False
        if sorted(dest_ids.values()) != sorted(moved):
            return False
        for u, mid in inbox_ids.items():
            want = {"\\Seen", "\\Flagged"} if mid in flagged else (
                set() if mid in delivered else {"\\Seen"})
            if flags[u] != want:
                return False
        return True

    wait_until(done, 30, interval=0.5, msg="server state == intended after kill -9 and remount")
    time.sleep(2 * POLL)           # nothing more arrives later (no duplicate replays)
    assert done()
    inbox_ids, dest_ids, _ = server_state()
    all_ids = list(inbox_ids.values()) + list(dest_ids.values())
    dup = [k for k, v in collections.Counter(all_ids).items() if v > 1]
    assert not dup, "duplicated on the server: %s" % dup
    with dovecot.client() as c:
        assert c.count("Trash") == 0
    # the mount converges on the same state and stays there
    wait_count(m, "INBOX", N - 5 + 3, POLL_WAIT)
    wait_count(m, "Dest", 5, POLL_WAIT)
    time.sleep(POLL + 1)
    assert count(m.acct, "INBOX") == N - 5 + 3
    assert count(m.acct, "Dest") == 5


# --------------------------------------------------------------------------
# 8. server gone

def test_server_gone_cached_reads_and_queued_changes(dovecot, mailfs, proxy):
    u1 = dovecot.append("INBOX", msg(40), flags=("\\Seen",), date=date_of(40))
    u2 = dovecot.append("INBOX", msg(41), flags=("\\Seen",), date=date_of(41))
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p)
    m.expect_log(NETWORK_LOG)
    wait_count(m, "INBOX", 2)
    with dovecot.client() as c:
        paths = match_views(server_view(c, "INBOX"), mount_view(m.acct, "INBOX"))
        b1 = c.fetch("INBOX", u1)
    assert read(paths[u1]) == b1
    p.stop()
    # cached mail stays readable
    state, val = run_with_timeout(read, 10, paths[u1])
    assert (state, val) == ("ok", b1)
    # a flag rename returns (no network in the syscall) and shows at once
    old = paths[u2]
    new = os.path.join(os.path.dirname(old), with_flags(os.path.basename(old), "FS"))
    state, val = run_with_timeout(os.rename, 5, old, new)
    assert state == "ok", (state, val)
    assert os.path.exists(new) and not os.path.exists(old)
    # listing still works
    state, val = run_with_timeout(os.listdir, 5, os.path.dirname(new))
    assert state == "ok" and os.path.basename(new) in val
    with dovecot.client() as c:
        time.sleep(1)
        assert c.flags("INBOX", u2) == {"\\Seen"}     # not applied while gone
    p.start()
    with dovecot.client() as c:
        wait_until(lambda: c.flags("INBOX", u2) == {"\\Seen", "\\Flagged"}, 40, interval=0.5,
                   msg="queued STORE applied after the server came back")


@pytest.mark.parametrize("how", ["refused", "hung"])
def test_uncached_read_fails_with_eio(dovecot, mailfs, proxy, how):
    dovecot.append("INBOX", msg(50), flags=("\\Seen",), date=date_of(50))
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p, prefetch="none")
    m.expect_log(NETWORK_LOG)
    path = only_file(m, "INBOX")
    if how == "refused":
        p.stop()
    else:
        p.blackhole()

    def read_it():
        with open(path, "rb") as f:
            return f.read()

    t0 = time.monotonic()
    state, val = run_with_timeout(read_it, FETCH_TIMEOUT + 15)
    assert state != "timeout", "uncached read hung for more than %ds" % (FETCH_TIMEOUT + 15)
    assert state == "error", "uncached read succeeded with the server gone: %r" % (val,)
    assert isinstance(val, OSError) and val.errno == errno.EIO, val
    assert time.monotonic() - t0 < FETCH_TIMEOUT + 15
    # the mount still answers
    state, val = run_with_timeout(os.listdir, 5, m.acct)
    assert state == "ok" and "INBOX" in val
    # and the body arrives once the server is back
    if how == "refused":
        p.start()
    else:
        p.forward()
    with dovecot.client() as c:
        body = c.fetch("INBOX", c.uids("INBOX")[0])
    wait_until(lambda: read_it() == body, 40, interval=0.5, msg="read works again")


# --------------------------------------------------------------------------
# 9. TLS

def _tls_smoke(d, mailfs, **opts):
    uid = d.append("INBOX", msg(60), flags=("\\Seen",), date=date_of(60))
    m = mailfs(d, **opts)
    path = only_file(m, "INBOX")
    with d.client() as c:
        assert read(path) == c.fetch("INBOX", uid)
    return m


def test_tls_implicit_with_ca_file(dovecot_factory, mailfs):
    d = dovecot_factory(tls=True)
    _tls_smoke(d, mailfs, tls="implicit")


def test_tls_starttls_with_ssl_required(dovecot_factory, mailfs):
    d = dovecot_factory(ssl_required=True)
    _tls_smoke(d, mailfs, tls="starttls")


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_tls_untrusted_ca_is_refused(dovecot_factory, mailfs, tls):
    d = dovecot_factory(ssl_required=True)
    d.append("INBOX", msg(61), flags=("\\Seen",), date=date_of(61))
    m = mailfs(d, tls=tls, ca_file=None)
    m.expect_log(TLS_LOG)
    m.expect_log(NETWORK_LOG)
    wait_until(lambda: any(re.search(TLS_LOG, line, re.I)
                           and re.search(r"(error|fail|refus|invalid|untrusted)", line, re.I)
                           for line in m.log().splitlines()),
               20, interval=0.2, msg="a certificate error in the log")
    state, val = run_with_timeout(os.listdir, 10, m.mnt)
    assert state == "ok", (state, val)
    state, val = run_with_timeout(os.listdir, 10, m.acct)
    assert state != "timeout", "ls of the account dir hangs"
    # nothing was fetched over an unverified connection
    if state == "ok" and "INBOX" in val:
        assert count(m.acct, "INBOX") == 0

