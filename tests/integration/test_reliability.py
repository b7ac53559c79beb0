"""Reliability under crashes and identity resets (issue #8, items 1, 4, 5).

    1. crash safety: >= 10,000 mixed operations through the mount while the
       daemon is SIGKILLed >= 20 times at random points; the server must end
       up exactly as an in-test model says; with delete = expunge an
       unlink removes the message from the server, with delete = trash
       it lands in Trash exactly once.
    4. identity resets: a folder recreated by Dovecot with a new UIDVALIDITY
       and the same messages is re-matched (same names, inodes, no
       duplicates, no re-download), and changes queued while the server was
       unreachable are kept and applied to the right messages.
    5. the mass-deletion guard: an empty or unmatched listing never deletes
       the local view, and the log says what was held back.

Server truth comes from an independent imaplib client (dovecot.client()).
Seeds are printed (pytest -s, or in the failure report); set
MAILFS_CRASH_SEED to replay one.  No timing assertions.
"""

import collections
import errno
import os
import random
import re
import signal
import threading
import time

import pytest

import corpus
from util import (wait_until, messages, count, folders, read, deliver, parse_name,
                  with_flags, letters_to_imap, imap_to_letters, fuse_skip_reason)

if fuse_skip_reason():
    pytest.skip(fuse_skip_reason(), allow_module_level=True)

POLL = 2
SYNC_WAIT = 30
MOUNT_WAIT = 20
NETWORK_LOG = (r"(connect|connection|refused|reset|broken pipe|timed? ?out|unreachable|"
               r"offline|reconnect|EIO|input/output|backoff|retry|retrying|eof|closed|"
               r"disconnect|hang ?up|network|socket|unavailable|BYE|shutting down)")
# What the guard says today (meta_sync.c): "...; nothing was removed" /
# "... none of N known messages matched; keeping them".
GUARD_LOG = r"(nothing was removed|keeping them|held back)"

# errnos a syscall in flight gets when the daemon dies under it
DEAD_ERRNOS = (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO, errno.ENOENT)


def mid_of(i, tag):
    return "%s-%d@mailfs.test" % (tag, i)


def small_msg(i, tag):
    return corpus.message("%s %d" % (tag, i), "b%d\n" % i, msgid=mid_of(i, tag),
                          date=corpus.date_at(i))


def epoch(i):
    return int(corpus.date_at(i).timestamp())


def letters_of(path):
    _, f = parse_name(os.path.basename(path))
    return f or ""


def server_state(c, folder_list):
    """{folder: {Message-ID: [letters, ...]}} (a list, to see duplicates)."""
    out = {}
    for f in folder_list:
        ids = c.message_ids(f)
        fl = c.all_flags(f) if ids else {}
        d = collections.defaultdict(list)
        for u, mid in ids.items():
            d[mid].append(imap_to_letters(fl.get(u, set())))
        out[f] = dict(d)
    return out


def server_folders(d):
    with d.client() as c:
        return c.folders()


def map_by_mtime(acct, folder, mtime_to_mid):
    out = {}
    for p in messages(acct, folder):
        out[mtime_to_mid[int(os.stat(p).st_mtime)]] = p
    return out


# --------------------------------------------------------------------------
# 1. crash safety


class CrashModel:
    """The intended state: Message-ID -> (folder, path on the mount).

    Flags are the letters of the file name (new/ without ':2,' = none);
    the server must hold exactly these flags (D F P R S; no T).
    """

    LETTERS = "DFPRS"

    def __init__(self, rng, m, folder_list):
        self.rng = rng
        self.m = m
        self.folders = list(folder_list)
        self.where = {}         # mid -> path
        self.deleted = set()
        self.next_new = 0
        self.made_folders = 0
        self.counts = collections.Counter()
        # Delivered messages whose APPEND may not have happened yet: left
        # alone until the daemon logs "uploaded NAME" (a flag change or a
        # move racing an APPEND in flight is lost today: see
        # test_faults.py::test_flag_change_during_upload_is_kept and
        # ::test_move_during_upload_lands_in_the_new_folder).
        self.pending = {}       # delivered name -> mid
        self._log_pos = 0

    def refresh_uploaded(self):
        try:
            with open(self.m.log_path, "rb") as f:
                f.seek(self._log_pos)
                chunk = f.read()
        except FileNotFoundError:
            return
        # only whole lines
        cut = chunk.rfind(b"\n") + 1
        self._log_pos += cut
        for mo in re.finditer(rb"uploaded (\S+)", chunk[:cut]):
            self.pending.pop(mo.group(1).decode("utf-8", "replace"), None)

    def folder_of(self, path):
        rel = os.path.relpath(os.path.dirname(os.path.dirname(path)), self.m.acct)
        return rel.replace(os.sep, "/")

    def random_flags(self):
        return "".join(c for c in self.LETTERS if self.rng.random() < 0.4)

    # Each op returns (kind, apply_fn, resolve_fn): apply_fn does the
    # syscall(s) and, when they return, the model update; resolve_fn (after
    # a crash in the middle) looks at the remounted tree to decide whether
    # it happened, and updates the model.
    def pick(self):
        r = self.rng.random()
        live = len(self.where) - len(self.pending)
        if r < 0.10 or live < 15:
            return self.op_deliver()
        if r < 0.16 and live > 30:
            return self.op_unlink()
        if r < 0.38:
            return self.op_move()
        return self.op_flags()

    def _any(self):
        busy = set(self.pending.values())
        mid = self.rng.choice(sorted(set(self.where) - busy))
        return mid, self.where[mid]

    def op_flags(self):
        mid, old = self._any()
        fl = self.random_flags()
        name = with_flags(os.path.basename(old), fl)
        folder = os.path.dirname(os.path.dirname(old))
        new = os.path.join(folder, "cur", name)
        if new == old:
            fl = fl + "F" if "F" not in fl else fl.replace("F", "")
            new = os.path.join(folder, "cur", with_flags(name, fl))

        def apply():
            os.rename(old, new)
            self.where[mid] = new
            self.counts["flags"] += 1

        def resolve():
            if os.path.exists(new):
                self.where[mid] = new
            elif not os.path.exists(old):
                raise AssertionError("LOST after a crash mid-rename: %s (%s -> %s)"
                                     % (mid, old, new))
        return "flags", apply, resolve

    def op_move(self):
        mid, old = self._any()
        src = self.folder_of(old)
        dest = self.rng.choice([f for f in self.folders if f != src])
        sub = os.path.basename(os.path.dirname(old))
        if self.rng.random() < 0.3:      # move and change flags in one rename
            name = with_flags(os.path.basename(old), self.random_flags())
            sub = "cur"
        else:
            name = os.path.basename(old)
        new = os.path.join(self.m.folder(dest), sub, name)

        def apply():
            os.rename(old, new)
            self.where[mid] = new
            self.counts["moves"] += 1

        def resolve():
            if os.path.exists(new):
                self.where[mid] = new
            elif not os.path.exists(old):
                raise AssertionError("LOST after a crash mid-move: %s (%s -> %s)"
                                     % (mid, old, new))
        return "move", apply, resolve

    def op_unlink(self):
        mid, old = self._any()

        def apply():
            os.unlink(old)
            del self.where[mid]
            self.deleted.add(mid)
            self.counts["unlinks"] += 1

        def resolve():
            if not os.path.exists(old):
                del self.where[mid]
                self.deleted.add(mid)
        return "unlink", apply, resolve

    def op_deliver(self):
        i = self.next_new
        self.next_new += 1
        mid = mid_of(i, "cs-new")
        folder = self.rng.choice(self.folders)
        name = "cs.%d.%d.test" % (i, self.rng.randrange(10 ** 6))
        data = small_msg(i, "cs-new")
        if self.rng.random() < 0.5:
            dest, fl = "new", None
        else:
            dest, fl = "cur", self.random_flags()
        final = os.path.join(self.m.folder(folder), dest,
                             name if fl is None else with_flags(name, fl))

        def apply():
            self.pending[os.path.basename(final)] = mid
            deliver(self.m.folder(folder), name, data, mtime=epoch(1000 + i), dest=dest,
                    flags=fl)
            self.where[mid] = final
            self.counts["deliveries"] += 1

        def resolve():
            if os.path.exists(final):
                self.where[mid] = final
            else:
                self.pending.pop(os.path.basename(final), None)
        return "deliver", apply, resolve

    def op_mkdir(self):
        self.made_folders += 1
        name = "Made%d" % self.made_folders
        path = self.m.folder(name)

        def apply():
            os.mkdir(path)
            self.folders.append(name)
            self.counts["mkdirs"] += 1

        def resolve():
            if os.path.isdir(os.path.join(path, "cur")):
                self.folders.append(name)
        return "mkdir", apply, resolve

    def expected_server(self):
        out = {f: {} for f in self.folders}
        for mid, p in self.where.items():
            out[self.folder_of(p)][mid] = [letters_of(p)]
        return out


def check_mount(m, model, want_paths, when):
    bad = []
    for f in model.folders:
        got = set(messages(m.acct, f))
        want = set(want_paths[f])
        for p in sorted(got - want):
            bad.append("%s: unexpected %s" % (f, os.path.relpath(p, m.acct)))
        for p in sorted(want - got):
            mid = [k for k, v in model.where.items() if v == p]
            bad.append("%s: missing %s (%s)" % (f, os.path.relpath(p, m.acct), mid))
    assert not bad, "mount view %s differs from the model:\n%s" % (when, "\n".join(bad[:40]))


def test_crash_safety_10k_ops_20_kills(dovecot, mailfs):
    run_crash_safety(dovecot, mailfs, "expunge",
                     int(os.environ.get("MAILFS_CRASH_OPS", 10000)),
                     int(os.environ.get("MAILFS_CRASH_KILLS", 22)))


def test_crash_safety_with_trash(dovecot, mailfs):
    """The same with delete = trash: every unlink is a MOVE to Trash (created
    by mailfs on first use), so a kill can land between COPY and EXPUNGE or
    before the Trash CREATE."""
    run_crash_safety(dovecot, mailfs, "trash",
                     int(os.environ.get("MAILFS_CRASH_TRASH_OPS", 10000)),
                     int(os.environ.get("MAILFS_CRASH_TRASH_KILLS", 20)))


def run_crash_safety(dovecot, mailfs, delete, TOTAL_OPS, KILLS):
    seed = int(os.environ.get("MAILFS_CRASH_SEED", random.randrange(1 << 30)))
    print("crash-safety (delete=%s) seed: MAILFS_CRASH_SEED=%d" % (delete, seed))
    rng = random.Random(seed)
    base = ["INBOX", "A", "B", "C"]
    N = 40
    with dovecot.client() as c:
        for f in base[1:]:
            c.create(f)
        for i in range(N):
            flags = ("\\Seen",) if i % 2 else ()
            c.append(base[i % 4], small_msg(i, "cs"), flags=flags, date=corpus.date_at(i))
    # The -d trace of 10k operations is large and slow: debug only sync/queue.
    m = mailfs(dovecot, delete=delete, debug=False, extra_args=("-o", r"debug=sync\,queue"))
    m.expect_log(NETWORK_LOG)
    with dovecot.client() as c:
        for f in base:
            wait_until(lambda f=f: count(m.acct, f) == c.count(f), MOUNT_WAIT,
                       msg="listing of %s" % f)
    model = CrashModel(rng, m, base)
    mtime_to_mid = {epoch(i): mid_of(i, "cs") for i in range(N)}
    for f in base:
        model.where.update(map_by_mtime(m.acct, f, mtime_to_mid))
    assert len(model.where) == N

    done_ops = 0
    kills = 0
    rate = 300.0                    # ops/s, re-estimated each round
    t_start = time.monotonic()
    while kills < KILLS or done_ops < TOTAL_OPS:
        if kills < KILLS:
            left_ops = max(TOTAL_OPS - done_ops, 50 * (KILLS - kills))
            per_round = left_ops / (KILLS - kills)
            kill_at = rng.uniform(0.3, 1.7) * per_round / rate
        else:
            kill_at = None
        pid = m.proc.pid
        killed = threading.Event()

        def killer():
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            killed.set()

        timer = threading.Timer(kill_at, killer) if kill_at is not None else None
        if kills in (1, 5, 9, 13):
            # A new folder, used by the operations from now on.  Its CREATE
            # is let through before anything can move into it: a MOVE or
            # APPEND queued before a folder's CREATE and retargeted into
            # that folder deadlocks the queue (see
            # test_queue_move_into_folder_created_later), and that bug
            # would hide everything else this test can find.
            kind, apply, resolve = model.op_mkdir()
            apply()
            done_ops += 1
            name = model.folders[-1]
            wait_until(lambda: name in server_folders(dovecot), 90, interval=0.5,
                       msg="CREATE %s on the server" % name)
        t0 = time.monotonic()
        n0 = done_ops
        if timer:
            timer.start()
        in_flight = None
        while True:
            if kill_at is None and done_ops >= TOTAL_OPS:
                break
            if killed.is_set():
                break
            if done_ops % 25 == 0:
                model.refresh_uploaded()
            kind, apply, resolve = model.pick()
            try:
                apply()
                done_ops += 1
            except OSError as e:
                # Only a dying daemon excuses a failed syscall.
                if killed.is_set() or not m.running:
                    in_flight = (kind, resolve, e)
                    break
                raise AssertionError("%s failed with the daemon alive: %r (seed %d)"
                                     % (kind, e, seed))
        if timer:
            timer.join()
            kills += 1
            m.kill()
            if time.monotonic() - t0 > 0.05 and done_ops > n0:
                rate = max(50.0, (done_ops - n0) / (time.monotonic() - t0))
            m.start()
            if in_flight:
                in_flight[1]()          # did it happen?  (LOST raises)
    elapsed = time.monotonic() - t_start
    print("crash-safety: %d ops (%s) with %d kills in %.1fs; %d messages live, %d deleted"
          % (done_ops, dict(model.counts), kills, elapsed, len(model.where),
             len(model.deleted)))
    assert done_ops >= TOTAL_OPS and kills >= KILLS

    # The mount shows exactly the model (local truth survived every kill).
    want_paths = {f: sorted(p for p in model.where.values() if model.folder_of(p) == f)
                  for f in model.folders}
    check_mount(m, model, want_paths, "after the last operation")

    # The server converges on the model: nothing lost, duplicated or resurrected.
    want = model.expected_server()
    last = {}

    def converged():
        with dovecot.client() as c:
            st = server_state(c, model.folders)
        last["state"] = st
        return st == want

    try:
        wait_until(converged, 150, interval=1.0, msg="server == model")
    except AssertionError:
        st = last.get("state", {})
        diffs = []
        for f in model.folders:
            got, exp = st.get(f, {}), want[f]
            for mid in sorted(set(got) | set(exp)):
                if got.get(mid) != exp.get(mid):
                    diffs.append("%s %s: server %s, intended %s" % (f, mid, got.get(mid),
                                                                    exp.get(mid)))
        pytest.fail("server != model after %d ops / %d kills (seed %d); %d difference(s):\n%s"
                    % (done_ops, kills, seed, len(diffs), "\n".join(diffs[:60])))
    time.sleep(2 * POLL)
    assert converged(), "the server moved away from the model later (replayed ops?)"
    with dovecot.client() as c:
        trashed = []
        if "Trash" in c.folders():
            trashed = list(c.message_ids("Trash").values())
        everything = []
        for f in c.folders():
            if f != "Trash":
                everything += [x for x in c.message_ids(f).values()]
    if delete == "expunge":
        assert not trashed, "delete=expunge put mail in Trash: %s" % trashed[:20]
    else:
        # Every unlinked message is in Trash exactly once, and nothing else.
        dup = [k for k, v in collections.Counter(trashed).items() if v > 1]
        assert not dup, "duplicated in Trash: %s" % dup[:20]
        assert set(trashed) == model.deleted, (
            "Trash differs from the unlinked messages: missing %s, extra %s"
            % (sorted(model.deleted - set(trashed))[:20],
               sorted(set(trashed) - model.deleted)[:20]))
    dup = [k for k, v in collections.Counter(everything).items() if v > 1]
    assert not dup, "duplicated on the server: %s" % dup[:20]
    resurrected = model.deleted & set(everything)
    assert not resurrected, "deleted but back on the server: %s" % sorted(resurrected)[:20]
    # and the mount still shows the model once the server's view came back
    time.sleep(POLL + 1)
    check_mount(m, model, want_paths, "after the server converged")


# --------------------------------------------------------------------------
# 4. identity resets


def _fetch_lines(log):
    return [ln for ln in log.splitlines()
            if re.search(r"FETCH.*BODY(\.PEEK)?\[\]", ln) and "HEADER" not in ln]


def test_uidvalidity_reset_rematches_and_keeps_pending_changes(dovecot, mailfs, proxy):
    N = 20
    with dovecot.client() as c:
        c.create("Keep")
        for i in range(N):
            c.append("INBOX", small_msg(i, "uv"), flags=("\\Seen",), date=corpus.date_at(i))
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p, delete="expunge", prefetch="none")
    m.expect_log(NETWORK_LOG)
    m.expect_log(GUARD_LOG)
    wait_until(lambda: count(m.acct, "INBOX") == N, MOUNT_WAIT, msg="listing")
    mtime_to_mid = {epoch(i): mid_of(i, "uv") for i in range(N)}
    by_mid = map_by_mtime(m.acct, "INBOX", mtime_to_mid)
    ino = {mid: os.stat(path).st_ino for mid, path in by_mid.items()}
    with dovecot.client() as c:
        bodies = {mid: c.fetch("INBOX", u) for u, mid in c.message_ids("INBOX").items()}
    for mid, path in by_mid.items():          # every body cached
        assert read(path) == bodies[mid]

    def blob_files():
        return sorted(os.path.join(dp, f) for dp, _, fs in os.walk(m.cache_dir) for f in fs)
    blobs_before = blob_files()

    # Server unreachable: queue changes against the old UIDs.
    p.stop()
    order = [mid_of(i, "uv") for i in range(N)]
    flagged, moved, gone = order[0:4], order[4:6], order[6]
    intended = {mid: "S" for mid in order}
    for mid in flagged:
        old = by_mid[mid]
        new = os.path.join(os.path.dirname(old), with_flags(os.path.basename(old), "FRS"))
        os.rename(old, new)
        by_mid[mid] = new
        intended[mid] = "FRS"
    for mid in moved:
        old = by_mid[mid]
        new = os.path.join(m.folder("Keep"), "cur", os.path.basename(old))
        os.rename(old, new)
        by_mid[mid] = new
    os.unlink(by_mid.pop(gone))
    del intended[gone]
    newmid = mid_of(99, "uv")
    newpath = deliver(m.folder("INBOX"), "uv.new.test", small_msg(99, "uv"),
                      mtime=epoch(99), dest="cur", flags="S")
    by_mid[newmid] = newpath
    intended[newmid] = "S"
    names_before = {mid: os.path.basename(p_) for mid, p_ in by_mid.items()}

    # Dovecot recreates INBOX's identity.
    old_uv, new_uv = dovecot.reset_uidvalidity("INBOX")
    print("UIDVALIDITY %d -> %d" % (old_uv, new_uv))
    with dovecot.client() as c:
        assert c.uidvalidity("INBOX") == new_uv != old_uv
    m._mark("server reset; reconnecting")
    log_mark = len(m.log())
    p.start()

    want_inbox = {mid: [fl] for mid, fl in intended.items() if mid not in moved}
    want_keep = {mid: ["S"] for mid in moved}
    last = {}

    def converged():
        with dovecot.client() as c:
            st = server_state(c, ["INBOX", "Keep"])
        last["st"] = st
        return st == {"INBOX": want_inbox, "Keep": want_keep}
    try:
        wait_until(converged, 60, interval=0.5, msg="server == intended after the reset")
    except AssertionError:
        pytest.fail("server after the reset: %r\nintended INBOX %r Keep %r"
                    % (last.get("st"), want_inbox, want_keep))
    time.sleep(2 * POLL)
    assert converged()
    # The mount: same names, same inodes, no duplicates.
    inbox = sorted(os.path.basename(x) for x in messages(m.acct, "INBOX"))
    keep = sorted(os.path.basename(x) for x in messages(m.acct, "Keep"))
    assert inbox == sorted(names_before[mid] for mid in want_inbox), "INBOX names changed"
    assert keep == sorted(names_before[mid] for mid in moved), "Keep names changed"
    for mid, path in by_mid.items():
        if mid in ino:
            assert os.stat(path).st_ino == ino[mid], "inode of %s changed" % mid
        assert read(path) == (bodies.get(mid) or small_msg(99, "uv"))
    # No re-download: no body FETCH after the reset, no new blob files.
    refetch = _fetch_lines(m.log()[log_mark:])
    assert not refetch, "bodies fetched again after the reset:\n%s" % "\n".join(refetch[:10])
    new_blobs = sorted(set(blob_files()) - set(blobs_before))
    assert len(new_blobs) <= 1, "new cache files after the reset: %s" % new_blobs


# --------------------------------------------------------------------------
# 5. the mass-deletion guard


def _setup_guard(dovecot, mailfs, n=12):
    with dovecot.client() as c:
        for i in range(n):
            c.append("INBOX", small_msg(i, "mg"), flags=("\\Seen",), date=corpus.date_at(i))
    m = mailfs(dovecot, delete="expunge")
    m.expect_log(NETWORK_LOG)
    m.expect_log(GUARD_LOG)
    wait_until(lambda: count(m.acct, "INBOX") == n, MOUNT_WAIT, msg="listing")
    return m, sorted(messages(m.acct, "INBOX"))


def _still_there(m, paths, seconds):
    """The local view keeps every path for `seconds` (several syncs)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = sorted(messages(m.acct, "INBOX"))
        assert now == paths, "the local view lost %d message(s): %s" % (
            len(set(paths) - set(now)), sorted(set(paths) - set(now))[:5])
        time.sleep(0.5)


def _wait_guard_log(m, since):
    wait_until(lambda: re.search(GUARD_LOG, m.log()[since:], re.I), 30, interval=0.5,
               msg="the log saying what was held back")


def test_empty_listing_same_uidvalidity_keeps_local_view(dovecot, mailfs):
    """INBOX emptied behind Dovecot's back (cur/ and new/ moved aside, index
    kept): Dovecot reports every message expunged."""
    m, paths = _setup_guard(dovecot, mailfs)
    since = len(m.log())
    dovecot.hide_messages("INBOX")
    with dovecot.client() as c:
        assert c.count("INBOX") == 0
    _still_there(m, paths, 3 * POLL)
    _wait_guard_log(m, since)


def test_empty_listing_new_uidvalidity_keeps_local_view(dovecot, mailfs):
    """INBOX emptied and its index dropped: a new UIDVALIDITY and an empty
    listing."""
    m, paths = _setup_guard(dovecot, mailfs)
    since = len(m.log())
    dovecot.hide_messages("INBOX", reset=True)
    with dovecot.client() as c:
        assert c.count("INBOX") == 0
    _wait_guard_log(m, since)
    _still_there(m, paths, 3 * POLL)
    # the mail comes back (renumbered): the mount shows each message once
    dovecot.restore_messages("INBOX")
    time.sleep(3 * POLL)
    wait_until(lambda: count(m.acct, "INBOX") == 12, 20, msg="12 messages, no duplicates")
    time.sleep(POLL + 1)
    assert count(m.acct, "INBOX") == 12


def test_uidvalidity_change_without_matches_keeps_local_view(dovecot, mailfs):
    """A new UIDVALIDITY whose messages match none known (other Message-IDs)."""
    m, paths = _setup_guard(dovecot, mailfs)
    since = len(m.log())
    dovecot.hide_messages("INBOX", reset=True)
    with dovecot.client() as c:
        for i in range(3):
            c.append("INBOX", small_msg(50 + i, "other"), flags=("\\Seen",),
                     date=corpus.date_at(50 + i))
    _wait_guard_log(m, since)
    deadline = time.monotonic() + 3 * POLL
    while time.monotonic() < deadline:
        now = set(messages(m.acct, "INBOX"))
        assert set(paths) <= now, "the local view lost %s" % sorted(set(paths) - now)[:5]
        time.sleep(0.5)
