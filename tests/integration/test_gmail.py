"""The Gmail backend (issue 4) through the mount, against tests/fakes/gmail.py.

The fake is a stateful Gmail API on 127.0.0.1 (labels, messages, history,
batch, quota units, fault injection). mailfs mounts it with
token_command = echo TOKEN and api_url pointing at the fake. Server truth
comes from the fake's state, mount truth from plain os calls. Waits use
wait_until with generous timeouts; nothing is timed.
"""

import os
import sys

import pytest

import corpus
from util import wait_until, messages, count, folders, read, deliver, parse_name, \
    fuse_skip_reason

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
    ids = fake.seed([
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
