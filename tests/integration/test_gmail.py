"""The Gmail backend (issue 4) through the mount, against tests/fakes/gmail.py.

The fake is a stateful Gmail API on 127.0.0.1 (labels, messages, history,
batch, quota units, fault injection). mailfs mounts it with
token_command = echo TOKEN and api_url pointing at the fake. Server truth
comes from the fake's state, mount truth from plain os calls. Waits use
wait_until with generous timeouts; nothing is timed.
"""

import os
import subprocess
import sys
import time

import pytest

import corpus
from util import wait_until, messages, count, folders, read, deliver, parse_name, \
    fuse_skip_reason, mailfs_binary

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "fakes"))
from gmail import FakeGmail  # noqa: E402

if fuse_skip_reason():
    pytest.skip(fuse_skip_reason(), allow_module_level=True)

POLL = 2
WAIT = 30


@pytest.fixture
def fake():
    g = FakeGmail().start()
    yield g
    g.stop()


@pytest.fixture
def gmount(mailfs):
    def make(g, **opts):
        acct = dict(type="gmail", host=None, port=None, tls=None, password=None,
                    user=g.user, api_url=g.url, token_command="echo TOKEN",
                    poll_interval=POLL, timeout=10, quota_units=1000000)
        acct.update(opts)
        return mailfs(g, **acct)
    return make


def msg(i, subject=None, size_pad=0):
    body = "Body %d.\n" % i + "x" * size_pad + "\n"
    return corpus.message(subject or "Gmail message %d" % i, body,
                          date=corpus.date_at(i), msgid="gm%d@example.org" % i)


def names(acct, folder):
    return sorted(os.path.basename(p) for p in messages(acct, folder))


def uniq(path):
    return parse_name(os.path.basename(path))[0]


def by_msgid(acct, folder):
    out = {}
    for p in messages(acct, folder):
        mid = corpus.message_id(read(p))
        out[mid] = p
    return out


# --------------------------------------------------------------------------
# 1, 2, 4: labels as folders, one name part and one body per message, sizes

def test_labels_are_folders(fake, gmount):
    work = fake.add_label("Work")
    fake.add_label("Work/Projects")
    proj = fake.label_id("Work/Projects")
    fake.seed([
        {"raw": msg(1), "labels": ["INBOX", "UNREAD"]},
        {"raw": msg(2), "labels": ["INBOX", work, "STARRED"]},
        {"raw": msg(3), "labels": [proj]},
        {"raw": msg(4), "labels": ["SENT"]},
        {"raw": msg(5), "labels": ["TRASH"]},
        {"raw": msg(6), "labels": ["SPAM", "UNREAD"]},
        {"raw": msg(7), "labels": ["CATEGORY_SOCIAL"]},
    ])
    m = gmount(fake)
    acct = m.acct
    wait_until(lambda: count(acct, "All Mail") == 5, timeout=WAIT)
    fl = folders(acct)
    for f in ("INBOX", "Work", "Work/Projects", "Sent", "Drafts", "Trash", "Spam", "All Mail"):
        assert f in fl, fl
    assert not any(f.startswith(("CATEGORY", "UNREAD", "STARRED", "IMPORTANT", "CHAT"))
                   for f in fl), fl
    assert count(acct, "INBOX") == 2
    assert count(acct, "Work") == 1
    assert count(acct, "Work/Projects") == 1
    assert count(acct, "Sent") == 1
    assert count(acct, "Trash") == 1
    assert count(acct, "Spam") == 1
    # All Mail: everything outside Trash and Spam (the category-only one too)
    assert sorted(by_msgid(acct, "All Mail")) == sorted(
        "gm%d@example.org" % i for i in (1, 2, 3, 4, 7))
    # flags: S <-> not UNREAD, F <-> STARRED; unseen in new/
    inbox = by_msgid(acct, "INBOX")
    p1, p2 = inbox["gm1@example.org"], inbox["gm2@example.org"]
    assert os.path.basename(os.path.dirname(p1)) == "new"
    assert parse_name(os.path.basename(p2))[1] == "FS"
    assert read(p2) == msg(2)
    r = subprocess.run([mailfs_binary(), "--status", m.mnt], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    out = r.stdout.decode()
    assert "account test (gmail alice@gmail.com)" in out, out
    m.check_log()


def test_one_message_several_labels_one_body(fake, gmount):
    a = fake.add_label("A")
    b = fake.add_label("B")
    raw = msg(1, size_pad=5000)
    [mid] = fake.seed([{"raw": raw, "labels": ["INBOX", a, b]}])
    m = gmount(fake)
    acct = m.acct
    wait_until(lambda: all(count(acct, f) == 1 for f in ("INBOX", "A", "B", "All Mail")),
               timeout=WAIT)
    paths = [messages(acct, f)[0] for f in ("INBOX", "A", "B", "All Mail")]
    assert len({uniq(p) for p in paths}) == 1, paths
    fake.reset_stats()
    # Size: before the first read stat shows the estimate; after open, exact.
    with open(paths[0], "rb") as f:
        data = f.read()
        assert os.fstat(f.fileno()).st_size == len(raw)
    assert data == raw
    for p in paths[1:]:
        assert read(p) == raw
        assert os.stat(p).st_size == len(raw)
    st = fake.stats()
    # format=raw once for the four folders
    assert st["calls"].get("messages.get", 0) == 1, st
    blobs = [f for _, _, fs in os.walk(m.cache_dir) for f in fs]
    assert sum(1 for f in blobs if not f.startswith(".")) >= 1
    m.check_log()


def test_system_labels_shown_when_configured(fake, gmount):
    fake.seed([{"raw": msg(1), "labels": ["CATEGORY_SOCIAL", "IMPORTANT"]}])
    m = gmount(fake, labels="CATEGORY_SOCIAL IMPORTANT")
    wait_until(lambda: count(m.acct, "All Mail") == 1, timeout=WAIT)
    fl = folders(m.acct)
    assert "CATEGORY_SOCIAL" in fl and "IMPORTANT" in fl and "CHAT" not in fl, fl
    assert count(m.acct, "CATEGORY_SOCIAL") == 1
    m.check_log()


def test_prefetch_fetches_each_message_once(fake, gmount):
    a = fake.add_label("A")
    raws = [msg(i, size_pad=100 * i) for i in range(4)]
    fake.seed([{"raw": r, "labels": ["INBOX", a]} for r in raws])
    m = gmount(fake, prefetch="all")
    acct = m.acct
    blobs = lambda: [f for _, _, fs in os.walk(m.cache_dir) for f in fs  # noqa: E731
                     if not f.startswith(".") and len(f) >= 32]
    wait_until(lambda: len(blobs()) == 4, timeout=WAIT)
    wait_until(lambda: fake.stats()["calls"].get("messages.get(raw)", 0) == 4, timeout=WAIT)
    fake.reset_stats()
    for f in ("INBOX", "A", "All Mail"):
        assert sorted(read(p) for p in messages(acct, f)) == sorted(raws)
    assert fake.stats()["calls"].get("messages.get(raw)", 0) == 0
    m.check_log()


def test_first_listing_uses_list_and_batch(fake, gmount):
    labels = [fake.add_label("L%d" % i) for i in range(3)]
    seed = []
    for i in range(450):
        seed.append({"raw": msg(i), "labels": ["INBOX", labels[i % 3]] +
                     (["UNREAD"] if i % 2 else [])})
    fake.seed(seed)
    m = gmount(fake)
    acct = m.acct
    wait_until(lambda: count(acct, "All Mail") == 450, timeout=60)
    wait_until(lambda: count(acct, "L2") == 150, timeout=60)
    st = fake.stats()
    # never one HTTP request per message: metadata went in batches of <= 100
    assert st["requests"] < 60, st
    assert st["batch_sizes"] and max(st["batch_sizes"]) <= 100, st
    assert sum(st["batch_sizes"]) == st["calls"]["messages.get"], st
    # each message's metadata read once although it stands in 3 folders
    assert st["calls"]["messages.get"] == 450, st
    m.check_log()


# --------------------------------------------------------------------------
# 3, 9: incremental sync by history; an expired historyId re-lists

def test_server_changes_appear_within_poll(fake, gmount):
    work = fake.add_label("Work")
    ids = fake.seed([{"raw": msg(i), "labels": ["INBOX", "UNREAD"]} for i in range(3)])
    m = gmount(fake)
    acct = m.acct
    wait_until(lambda: count(acct, "INBOX") == 3, timeout=WAIT)
    fake.reset_stats()
    # nothing to do: labels.list + getProfile, 2 units
    wait_until(lambda: fake.stats()["requests"] >= 4, timeout=WAIT)
    st = fake.stats()
    assert set(st["calls"]) <= {"labels.list", "getProfile"}, st
    # another client: reads one, labels one, trashes one, delivers one
    fake.modify(ids[0], remove=["UNREAD"], add=["STARRED"])
    fake.modify(ids[1], add=[work])
    fake.modify(ids[2], add=["TRASH"])
    [new] = fake.seed([{"raw": msg(10), "labels": ["INBOX", "UNREAD"]}])
    inbox = lambda: by_msgid(acct, "INBOX")  # noqa: E731
    wait_until(lambda: sorted(inbox()) == sorted(
        ["gm0@example.org", "gm1@example.org", "gm10@example.org"]), timeout=WAIT)
    wait_until(lambda: parse_name(os.path.basename(inbox()["gm0@example.org"]))[1] == "FS",
               timeout=WAIT)
    wait_until(lambda: count(acct, "Work") == 1 and count(acct, "Trash") == 1, timeout=WAIT)
    st = fake.stats()
    assert st["calls"].get("history.list", 0) >= 1, st
    assert st["calls"].get("messages.list", 0) == 0, st     # no full listing
    # a permanent delete
    fake.delete(ids[2])
    wait_until(lambda: count(acct, "Trash") == 0, timeout=WAIT)
    m.check_log()


def test_expired_history_relists_without_refetch(fake, gmount):
    ids = fake.seed([{"raw": msg(i), "labels": ["INBOX"]} for i in range(5)])
    m = gmount(fake)
    acct = m.acct
    wait_until(lambda: count(acct, "INBOX") == 5, timeout=WAIT)
    before = {}
    for p in messages(acct, "INBOX"):
        assert read(p) == msg(int(corpus.message_id(read(p))[2:].split("@")[0]))
        before[os.path.basename(p)] = os.stat(p).st_ino
    m.stop()
    fake.modify(ids[0], add=["UNREAD"])
    fake.expire_history()
    fake.reset_stats()
    m.start()
    wait_until(lambda: fake.stats()["calls"].get("messages.list", 0) >= 1, timeout=WAIT)
    wait_until(lambda: any(os.path.dirname(p).endswith("new") or
                           parse_name(os.path.basename(p))[1] == ""
                           for p in messages(acct, "INBOX")), timeout=WAIT)
    after = {os.path.basename(p): os.stat(p).st_ino for p in messages(acct, "INBOX")}
    assert len(after) == 5
    # same unique names and inodes; no body downloaded again
    assert sorted(parse_name(n)[0] for n in after) == sorted(parse_name(n)[0] for n in before)
    assert sorted(after.values()) == sorted(before.values())
    for p in messages(acct, "INBOX"):
        read(p)
    st = fake.stats()
    assert st["calls"].get("history.list", 0) >= 1, st
    assert "messages.get" not in st["calls"] or all(
        s <= 100 for s in st["batch_sizes"]), st
    assert st["calls"].get("messages.get", 0) == sum(st["batch_sizes"]), st   # metadata only
    m.expect_log(r"history of .* expired")
    m.check_log()


def test_server_side_moves_keep_name_and_body(fake, gmount):
    a = fake.add_label("A")
    b = fake.add_label("B")
    ids = fake.seed([{"raw": msg(1), "labels": ["INBOX", a]},
                     {"raw": msg(2), "labels": [a]}])
    m = gmount(fake)
    acct = m.acct
    wait_until(lambda: count(acct, "A") == 2 and count(acct, "All Mail") == 2, timeout=WAIT)
    for p in messages(acct, "A"):
        read(p)
    u1 = uniq(by_msgid(acct, "A")["gm1@example.org"])
    u2 = uniq(by_msgid(acct, "A")["gm2@example.org"])
    fake.reset_stats()
    fake.modify(ids[0], add=["TRASH"])          # another client trashes it
    fake.modify(ids[1], add=[b], remove=[a])    # and moves the other A -> B
    wait_until(lambda: count(acct, "Trash") == 1 and count(acct, "B") == 1, timeout=WAIT)
    wait_until(lambda: count(acct, "A") == 0 and count(acct, "INBOX") == 0, timeout=WAIT)
    assert uniq(messages(acct, "Trash")[0]) == u1
    assert uniq(messages(acct, "B")[0]) == u2
    assert read(messages(acct, "Trash")[0]) == msg(1)
    assert read(messages(acct, "B")[0]) == msg(2)
    assert fake.stats()["calls"].get("messages.get(raw)", 0) == 0
    # another client archives the whole inbox: not held as a mass deletion
    more = fake.seed([{"raw": msg(10 + i), "labels": ["INBOX"]} for i in range(6)])
    wait_until(lambda: count(acct, "INBOX") == 6, timeout=WAIT)
    for mid in more:
        fake.modify(mid, remove=["INBOX"])
    wait_until(lambda: count(acct, "INBOX") == 0, timeout=WAIT)
    assert count(acct, "All Mail") == 7
    m.check_log()


# --------------------------------------------------------------------------
# 5: flags

def test_flags_write_back_with_batch_modify(fake, gmount):
    n = 1000
    ids = fake.seed([{"raw": msg(i), "labels": ["INBOX", "UNREAD"]} for i in range(n)])
    m = gmount(fake)
    acct = m.acct
    wait_until(lambda: count(acct, "INBOX") == n, timeout=120)
    fake.reset_stats()
    new = os.path.join(m.folder("INBOX"), "new")
    cur = os.path.join(m.folder("INBOX"), "cur")
    for name in os.listdir(new):
        os.rename(os.path.join(new, name), os.path.join(cur, name + ":2,S"))
    wait_until(lambda: not fake.find(lambda x: "UNREAD" in x.labels), timeout=120)
    st = fake.stats()
    assert st["calls"].get("messages.batchModify", 0) <= 2, st
    assert st["calls"].get("messages.modify", 0) == 0, st
    # F <-> STARRED; R is kept locally and survives a resync
    p = messages(acct, "INBOX")[0]
    mid = ids[int(corpus.message_id(read(p))[2:].split("@")[0])]
    os.rename(p, os.path.join(cur, parse_name(os.path.basename(p))[0] + ":2,FRS"))
    wait_until(lambda: "STARRED" in fake.labels_of(mid), timeout=WAIT)
    fake.modify(mid, add=["UNREAD"])     # another client: unread again
    wait_until(lambda: any(parse_name(os.path.basename(q))[1] == "FR"
                           for q in messages(acct, "INBOX")), timeout=WAIT)
    m.check_log()


# --------------------------------------------------------------------------
# 6: rename, unlink, folders

def test_rename_between_labels_and_unlink(fake, gmount):
    a = fake.add_label("A")
    b = fake.add_label("B")
    ids = fake.seed([
        {"raw": msg(1), "labels": ["INBOX", a]},
        {"raw": msg(2), "labels": [a]},
        {"raw": msg(3), "labels": ["INBOX"]},
        {"raw": msg(4), "labels": [a, b]},
        {"raw": msg(5), "labels": []},
    ])
    m = gmount(fake)
    acct = m.acct
    wait_until(lambda: count(acct, "A") == 3 and count(acct, "All Mail") == 5, timeout=WAIT)
    # rename A -> B: label A removed, B added
    p1 = by_msgid(acct, "A")["gm1@example.org"]
    os.rename(p1, os.path.join(m.folder("B"), "cur", os.path.basename(p1)))
    wait_until(lambda: set(fake.labels_of(ids[0])) == {"INBOX", b}, timeout=WAIT)
    # unlink in a label's folder removes that label (it has another)
    os.unlink(by_msgid(acct, "A")["gm4@example.org"])
    wait_until(lambda: fake.labels_of(ids[3]) == [b], timeout=WAIT)
    # unlink of the last label moves to Trash
    os.unlink(by_msgid(acct, "A")["gm2@example.org"])
    wait_until(lambda: "TRASH" in fake.labels_of(ids[1]), timeout=WAIT)
    # unlink in INBOX archives
    os.unlink(by_msgid(acct, "INBOX")["gm3@example.org"])
    wait_until(lambda: fake.labels_of(ids[2]) == [], timeout=WAIT)
    # unlink in All Mail moves to Trash
    os.unlink(by_msgid(acct, "All Mail")["gm5@example.org"])
    wait_until(lambda: "TRASH" in fake.labels_of(ids[4]), timeout=WAIT)
    # the mount follows
    wait_until(lambda: count(acct, "Trash") == 2, timeout=WAIT)
    wait_until(lambda: sorted(by_msgid(acct, "B")) == ["gm1@example.org", "gm4@example.org"],
               timeout=WAIT)
    m.check_log()


def test_rename_into_a_label_it_has(fake, gmount):
    a = fake.add_label("A")
    b = fake.add_label("B")
    [mid] = fake.seed([{"raw": msg(1), "labels": [a, b]}])
    m = gmount(fake)
    acct = m.acct
    wait_until(lambda: count(acct, "A") == 1 and count(acct, "B") == 1, timeout=WAIT)
    p = messages(acct, "A")[0]
    os.rename(p, os.path.join(m.folder("B"), "cur", os.path.basename(p)))
    wait_until(lambda: fake.labels_of(mid) == [b], timeout=WAIT)
    # one message, one file in B
    wait_until(lambda: count(acct, "B") == 1 and count(acct, "A") == 0, timeout=WAIT)
    assert read(messages(acct, "B")[0]) == msg(1)
    m.check_log()


def test_inbox_unlink_trash(fake, gmount):
    [mid] = fake.seed([{"raw": msg(1), "labels": ["INBOX"]}])
    m = gmount(fake, inbox_unlink="trash")
    wait_until(lambda: count(m.acct, "INBOX") == 1, timeout=WAIT)
    os.unlink(messages(m.acct, "INBOX")[0])
    wait_until(lambda: "TRASH" in fake.labels_of(mid), timeout=WAIT)
    m.check_log()


def test_delete_from_trash_needs_full_scope(fake, gmount):
    ids = fake.seed([{"raw": msg(1), "labels": ["TRASH"]},
                     {"raw": msg(2), "labels": ["TRASH"]}])
    m = gmount(fake)
    acct = m.acct
    wait_until(lambda: count(acct, "Trash") == 2, timeout=WAIT)
    os.unlink(by_msgid(acct, "Trash")["gm1@example.org"])
    wait_until(lambda: fake.labels_of(ids[0]) is None, timeout=WAIT)    # deleted for good
    with fake.state.lock:
        fake.state.full_scope = False
    os.unlink(by_msgid(acct, "Trash")["gm2@example.org"])
    wait_until(lambda: "failed for good" in m.log(), timeout=WAIT)
    assert fake.labels_of(ids[1]) == ["TRASH"]
    # the message comes back on the mount; the account keeps working
    wait_until(lambda: count(acct, "Trash") == 1, timeout=WAIT)
    fake.seed([{"raw": msg(3), "labels": ["INBOX"]}])
    wait_until(lambda: count(acct, "INBOX") == 1, timeout=WAIT)
    m.expect_log(r"write-back of operation \d+ .* failed for good: .*HTTP 403")
    m.check_log()


def test_folder_ops_are_label_ops(fake, gmount):
    old = fake.add_label("Old")
    m = gmount(fake)
    acct = m.acct
    wait_until(lambda: "Old" in folders(acct), timeout=WAIT)
    os.mkdir(os.path.join(acct, "Projects"))
    wait_until(lambda: fake.label_id("Projects") is not None, timeout=WAIT)
    os.mkdir(os.path.join(acct, "Projects", "Alpha"))
    wait_until(lambda: fake.label_id("Projects/Alpha") is not None, timeout=WAIT)
    os.rename(os.path.join(acct, "Old"), os.path.join(acct, "New"))
    wait_until(lambda: fake.label_id("New") == old, timeout=WAIT)
    os.rmdir(os.path.join(acct, "Projects", "Alpha"))
    wait_until(lambda: fake.label_id("Projects/Alpha") is None, timeout=WAIT)
    # a parent's rename carries its children (Gmail nests by name only)
    child = fake.add_label("New/Child")
    wait_until(lambda: "New/Child" in folders(acct), timeout=WAIT)
    os.rename(os.path.join(acct, "New"), os.path.join(acct, "Renamed"))
    wait_until(lambda: fake.label_id("Renamed/Child") == child, timeout=WAIT)
    wait_until(lambda: fake.label_id("Renamed") == old, timeout=WAIT)
    time.sleep(2 * POLL + 1)
    assert "Renamed/Child" in folders(acct) and "New" not in folders(acct), folders(acct)
    m.check_log()


# --------------------------------------------------------------------------
# 7: delivery

def test_delivery_is_messages_insert(fake, gmount):
    work = fake.add_label("Work")
    m = gmount(fake)
    acct = m.acct
    wait_until(lambda: "Work" in folders(acct), timeout=WAIT)
    raw = msg(42, size_pad=3000)
    deliver(m.folder("Work"), "delivered.1", raw, dest="cur", flags="FS")
    wait_until(lambda: fake.find(lambda x: x.raw == raw), timeout=WAIT)
    [mid] = fake.find(lambda x: x.raw == raw)
    assert set(fake.labels_of(mid)) == {work, "STARRED"}
    raw2 = msg(43)
    deliver(m.folder("INBOX"), "delivered.2", raw2)
    wait_until(lambda: fake.find(lambda x: x.raw == raw2), timeout=WAIT)
    [mid2] = fake.find(lambda x: x.raw == raw2)
    assert set(fake.labels_of(mid2)) == {"INBOX", "UNREAD"}
    st = fake.stats()
    assert st["calls"].get("messages.insert") == 2, st
    # it is in All Mail too, under the same unique name, and not duplicated
    wait_until(lambda: count(acct, "All Mail") == 2, timeout=WAIT)
    wait_until(lambda: count(acct, "Work") == 1 and count(acct, "INBOX") == 1, timeout=WAIT)
    assert read(messages(acct, "Work")[0]) == raw
    m.check_log()


@pytest.mark.parametrize("silent", [False, True], ids=["half-answer", "no-answer"])
def test_upload_whose_answer_was_lost_is_not_duplicated(fake, gmount, silent):
    # no-answer: the server took the upload and closed the connection
    # before answering. On a reused connection libcurl would resend the
    # request by itself (a second copy no retry logic could see); an
    # upload goes on a fresh connection, so the engine's retry finds it.
    m = gmount(fake)
    acct = m.acct
    wait_until(lambda: "INBOX" in folders(acct), timeout=WAIT)
    fake.inject(path="/upload/", after=True, silent=silent, count=1)
    raw = msg(7, size_pad=2000)
    deliver(m.folder("INBOX"), "lost.1", raw, dest="cur", flags="S")
    wait_until(lambda: fake.stats()["faults_left"] == 0, timeout=WAIT)
    wait_until(lambda: count(acct, "All Mail") == 1, timeout=WAIT)
    # the queue retried: it found the upload instead of sending it again
    wait_until(lambda: "M" in uniq(messages(acct, "INBOX")[0]) or
               os.path.basename(messages(acct, "INBOX")[0]).startswith("lost.1"), timeout=WAIT)
    time.sleep(2 * POLL + 1)
    assert len(fake.find(lambda x: x.raw == raw)) == 1
    assert fake.stats()["calls"]["messages.insert"] == 1
    assert "sync: matched" in m.log()
    assert count(acct, "INBOX") == 1
    assert read(messages(acct, "INBOX")[0]) == raw
    m.expect_log(r"(retry|lost|Server returned nothing|Empty reply|upload)")
    m.check_log()


# --------------------------------------------------------------------------
# 8, 10: quota and faults

def test_rate_limits_and_faults_are_retried(fake, gmount):
    ids = fake.seed([{"raw": msg(i), "labels": ["INBOX"]} for i in range(20)])
    fake.inject(status=429, count=2, path="/messages")           # no Retry-After
    fake.inject(status=403, count=1, path="/labels")              # userRateLimitExceeded
    fake.inject(status=503, count=1, path="/batch")
    fake.inject(drop=True, count=1, path="/profile")
    fake.inject(status=401, count=1, path="/messages", method="GET")  # token refreshed
    fake.inject(status=429, count=3, inner=True, path="/messages/")  # inside a batch
    m = gmount(fake)
    acct = m.acct
    wait_until(lambda: count(acct, "INBOX") == 20, timeout=90)
    assert fake.stats()["faults_left"] == 0
    fake.inject(status=500, count=1, path="/messages/" + ids[0])
    p = by_msgid(acct, "INBOX")["gm0@example.org"]
    assert read(p) == msg(0)
    m.expect_log(r"(cannot fetch|retry|HTTP 5\d\d|throttled)")
    m.check_log()


def test_client_4xx_is_not_retried(fake, gmount):
    fake.seed([{"raw": msg(1), "labels": ["INBOX"]}])
    m = gmount(fake)
    wait_until(lambda: count(m.acct, "INBOX") == 1, timeout=WAIT)
    fake.inject(status=400, count=5, path="/labels", method="POST",
                body={"error": {"code": 400, "message": "Invalid label name", "errors": [
                    {"reason": "invalidArgument", "domain": "global",
                     "message": "Invalid label name"}]}})
    os.mkdir(os.path.join(m.acct, "X"))
    wait_until(lambda: "failed for good" in m.log(), timeout=WAIT)
    # one request, no retry loop on a 400; the folder goes away again
    assert fake.stats()["faults_left"] == 4
    assert fake.label_id("X") is None
    m.expect_log(r"write-back of operation \d+ .* failed for good: .*HTTP 400")
    m.check_log()


def test_quota_budget_paces_requests(fake, gmount):
    fake.seed([{"raw": msg(i), "labels": ["INBOX"]} for i in range(150)])
    with fake.state.lock:
        fake.state.quota_per_minute = 600       # the fake refuses above this
    m = gmount(fake, quota_units=600)
    wait_until(lambda: count(m.acct, "INBOX") == 150, timeout=180)
    st = fake.stats()
    # paced by the client: the fake never had to refuse
    assert st["calls"].get("messages.get") == 150, st
    m.check_log()
