"""The Graph backend (issue 3), through the mount, against the fake Graph
server of tests/fakes/graph.py.

Server-side truth comes from the fake's control API (graph.state()), mount
side truth from plain os calls.  The fake records every protocol
violation (a request without Prefer: IdType="ImmutableId", a delta page
without odata.maxpagesize, more than 4 requests in flight); each test ends
by checking there were none.
"""

import os
import re
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fakes"))

from graph_fixture import graph, graph_mailfs  # noqa: E402,F401
from util import (wait_until, messages, folders, read, deliver, parse_name,  # noqa: E402
                  fuse_skip_reason)

if fuse_skip_reason():
    pytest.skip(fuse_skip_reason(), allow_module_level=True)

POLL_WAIT = 2 + 20   # poll_interval 2, generous
SYNC_WAIT = 30


def no_violations(graph):
    st = graph.stats()
    assert st["violations"] == [], st["violations"][:10]
    assert st["max_inflight"] <= 4


def letters(path):
    u, f = parse_name(os.path.basename(path))
    return f or ""


def by_msgid(graph):
    return {m["internetMessageId"]: m for m in graph.messages()}


def mount_names(m, folder):
    return [os.path.basename(p) for p in messages(m.acct, folder)]


def find_file(m, folder, data_marker):
    for p in messages(m.acct, folder):
        if data_marker in read(p):
            return p
    return None


# --------------------------------------------------------------------------
# 1. folders

def test_folders_tree_pages_and_names(graph, graph_mailfs):
    # More than a page (the default is 10) at the top and under a child.
    for i in range(12):
        graph.control("mkfolder", name="Top %02d" % i)
    graph.control("mkfolder", name="Projects")
    graph.control("mkfolder", parent="Projects", name="2024")
    graph.control("mkfolder", parent="Projects/2024", name="Q1")
    graph.control("mkfolder", parent="INBOX", name="Lists")
    graph.control("mkfolder", name="a/b: .odd")
    graph.control("mkfolder", name="Hidden", hidden=True)
    for i in range(11):
        graph.control("mkfolder", parent="Projects", name="Sub %02d" % i)
    m = graph_mailfs(graph)
    want = {"INBOX", "INBOX/Lists", "Drafts", "Sent Items", "Deleted Items", "Junk Email",
            "Archive", "Projects", "Projects/2024", "Projects/2024/Q1", "a%2Fb: .odd"}
    want |= {"Top %02d" % i for i in range(12)}
    want |= {"Projects/Sub %02d" % i for i in range(11)}
    wait_until(lambda: set(folders(m.acct)) >= want, timeout=SYNC_WAIT)
    got = set(folders(m.acct))
    assert got == want, got ^ want   # no search folder, no hidden folder
    # The sanitised name is one directory, not a/b.
    assert os.path.isdir(os.path.join(m.acct, "a%2Fb: .odd", "cur"))
    no_violations(graph)
    m.check_log()


# --------------------------------------------------------------------------
# 2, 3. listing, delta, bodies, sizes

def test_listing_bodies_and_exact_sizes(graph, graph_mailfs):
    ids = graph.seed("INBOX", messages=[{"subject": "one", "isRead": True},
                                        {"subject": "two"},
                                        {"subject": "three", "flag": "flagged",
                                         "isRead": True, "verb": 102},
                                        {"subject": "four", "verb": 104, "isRead": True}])
    assert len(ids) == 4
    m = graph_mailfs(graph)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 4, timeout=SYNC_WAIT)
    srv = {x["mime"].split("Subject: ")[1].split("\r\n")[0]: x for x in graph.messages("INBOX")}
    files = {}
    for p in messages(m.acct, "INBOX"):
        files[p] = os.stat(p)
    # Flags from isRead, flag and the verb; unseen mail in new/.
    by_letters = sorted(letters(p) for p in files)
    assert by_letters == sorted(["S", "", "FRS", "PS"]), by_letters
    assert len([p for p in files if "/new/" in p]) == 1
    for p, st in files.items():
        # The estimate (PidTagMessageSize) is not the size: no S= in the
        # name, and stat() before the read shows the estimate.
        assert ",S=" not in os.path.basename(p)
        data = read(p)
        subject = data.split(b"Subject: ")[1].split(b"\r\n")[0].decode()
        assert data == srv[subject]["mime"].encode()
        assert os.stat(p).st_size == len(data)
        with open(p, "rb") as f:
            assert os.fstat(f.fileno()).st_size == len(data)
            assert f.read() == data
    # Reading does not mark read.
    assert sorted(x["isRead"] for x in graph.messages("INBOX")) == [False, True, True, True]
    no_violations(graph)
    m.check_log()


def test_fstat_after_open_is_exact_before_any_read(graph, graph_mailfs):
    graph.seed("INBOX", messages=[{"subject": "big", "isRead": True}])
    graph.control("seed", folder="INBOX", generate=1, size=20000, isRead=True)
    m = graph_mailfs(graph)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 2, timeout=SYNC_WAIT)
    exact = sorted(x["size"] for x in graph.messages("INBOX"))
    before = sorted(os.stat(p).st_size for p in messages(m.acct, "INBOX"))
    assert before != exact   # estimates
    after = []
    for p in messages(m.acct, "INBOX"):
        fd = os.open(p, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            data = b""
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                data += chunk
            assert len(data) == size
            after.append(size)
        finally:
            os.close(fd)
    assert sorted(after) == exact


def test_incremental_delta_and_server_changes(graph, graph_mailfs):
    ids = graph.seed("INBOX", messages=[{"subject": "s%d" % i} for i in range(5)])
    graph.control("mkfolder", name="Archive 2")
    m = graph_mailfs(graph)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 5, timeout=SYNC_WAIT)
    inodes = {os.stat(p).st_ino for p in messages(m.acct, "INBOX")}
    graph.control("reset_stats")

    # Another client: read, flag, reply, move, delete, deliver.
    graph.control("replay", count=10)   # rounds that repeat their changes
    graph.control("mark", id=ids[0], isRead=True)
    graph.control("mark", id=ids[1], flag="flagged")
    graph.control("mark", id=ids[2], verb=103)
    graph.control("move", id=ids[3], to="Archive 2")
    graph.control("delete", id=ids[4])
    new_id = graph.control("deliver", folder="INBOX", subject="fresh")["id"]

    def synced():
        ls = sorted(letters(p) for p in messages(m.acct, "INBOX"))
        return (len(messages(m.acct, "Archive 2")) == 1 and ls == sorted(["S", "F", "R", ""]))
    wait_until(synced, timeout=POLL_WAIT)
    time.sleep(3)   # a poll later, replays and all: nothing doubled
    assert len(messages(m.acct, "INBOX")) == 4
    assert len(messages(m.acct, "Archive 2")) == 1
    # A move on the server keeps the message's file: same inode (the
    # immutable id finds its row).
    moved = messages(m.acct, "Archive 2")[0]
    assert os.stat(moved).st_ino in inodes
    assert new_id
    # Incremental: delta rounds, no full listing of the folder.
    st = graph.stats()
    assert not any("/messages?" in r or r.endswith("/messages") for r in st["by_route"]
                   if r.startswith("GET") and "delta" not in r), st["by_route"]
    no_violations(graph)
    m.check_log()


@pytest.mark.parametrize("how", ["expired", "reset"])
def test_expired_delta_token_relists_without_redownload(graph, graph_mailfs, how):
    graph.seed("INBOX", messages=[{"subject": "m%d" % i, "isRead": i % 2 == 0}
                                  for i in range(30)])
    m = graph_mailfs(graph)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 30, timeout=SYNC_WAIT)
    for p in messages(m.acct, "INBOX"):
        read(p)
    before = {os.path.basename(p): os.stat(p).st_ino for p in messages(m.acct, "INBOX")}
    graph.control("reset_stats")
    if how == "expired":
        graph.control("expire_delta")       # 410 SyncStateNotFound
    else:
        inbox = graph.state()["folders"]["INBOX"]["id"]
        graph.control("fault", path=re.escape(inbox) + r".*/messages/delta", kind="reset",
                      count=1)
    ids = graph.seed("INBOX", messages=[{"subject": "after expiry"}])
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 31, timeout=POLL_WAIT)
    time.sleep(3)   # another poll: nothing changes again
    after = {os.path.basename(p): os.stat(p).st_ino for p in messages(m.acct, "INBOX")}
    assert len(after) == 31
    for name, ino in before.items():
        assert after.get(name) == ino, name      # same names, same inodes
    st = graph.stats()
    assert not any("$value" in r for r in st["by_route"]), st["by_route"]  # no re-download
    assert ids
    assert "delta state of a folder expired" in m.log()
    m.expect_log(r"delta state of a folder expired")
    no_violations(graph)
    m.check_log()


# --------------------------------------------------------------------------
# 4. flags

def test_flags_written_back(graph, graph_mailfs):
    ids = graph.seed("INBOX", messages=[{"subject": "f%d" % i} for i in range(4)])
    m = graph_mailfs(graph)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 4, timeout=SYNC_WAIT)
    paths = sorted(messages(m.acct, "INBOX"))
    cur = os.path.join(m.acct, "INBOX", "cur")
    for p, fl in zip(paths, ["S", "FS", "RS", "PS"]):
        u, _ = parse_name(os.path.basename(p))
        os.rename(p, os.path.join(cur, "%s:2,%s" % (u, fl)))

    def server_ok():
        ms = graph.messages("INBOX")
        return (all(x["isRead"] for x in ms) and
                sorted(x["flagStatus"] for x in ms).count("flagged") == 1 and
                sorted(x["verb"] for x in ms) == [0, 0, 102, 104])
    wait_until(server_ok, timeout=SYNC_WAIT)
    icons = sorted(x["icon"] for x in graph.messages("INBOX"))
    assert icons == [-1, -1, 261, 262]
    # And back: unflag, unread, unreply.
    for p in messages(m.acct, "INBOX"):
        u, f = parse_name(os.path.basename(p))
        os.rename(p, os.path.join(cur, "%s:2," % u))
    wait_until(lambda: all(not x["isRead"] and x["flagStatus"] == "notFlagged" and
                           x["verb"] == 0 for x in graph.messages("INBOX")), timeout=SYNC_WAIT)
    assert len(ids) == 4
    no_violations(graph)
    m.check_log()


# --------------------------------------------------------------------------
# 5. move, delete, folders

def test_move_unlink_trash_and_expunge(graph, graph_mailfs):
    graph.control("mkfolder", name="Work")
    ids = graph.seed("INBOX", messages=[{"subject": "mv%d" % i, "isRead": True}
                                        for i in range(3)])
    m = graph_mailfs(graph)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 3, timeout=SYNC_WAIT)
    p0, p1, p2 = sorted(messages(m.acct, "INBOX"), key=lambda p: read(p))
    ino0 = os.stat(p0).st_ino
    os.rename(p0, os.path.join(m.acct, "Work", "cur", os.path.basename(p0)))
    os.unlink(p1)
    wait_until(lambda: sorted(x["folder"] for x in graph.messages()) ==
               ["Deleted Items", "INBOX", "Work"], timeout=SYNC_WAIT)
    by_folder = {x["folder"]: x for x in graph.messages()}
    assert by_folder["Work"]["id"] == ids[0]          # immutable id: the same message
    assert os.stat(messages(m.acct, "Work")[0]).st_ino == ino0
    # Unlink inside Deleted Items removes it for good.
    wait_until(lambda: len(messages(m.acct, "Deleted Items")) == 1, timeout=SYNC_WAIT)
    os.unlink(messages(m.acct, "Deleted Items")[0])
    wait_until(lambda: sorted(x["folder"] for x in graph.messages()) == ["INBOX", "Work"],
               timeout=SYNC_WAIT)
    assert p2
    no_violations(graph)
    m.check_log()


def test_delete_expunge_policy(graph, graph_mailfs):
    graph.seed("INBOX", messages=[{"subject": "gone", "isRead": True},
                                  {"subject": "stays", "isRead": True}])
    m = graph_mailfs(graph, delete="expunge")
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 2, timeout=SYNC_WAIT)
    p = [p for p in messages(m.acct, "INBOX") if b"Subject: gone" in read(p)][0]
    os.unlink(p)
    wait_until(lambda: len(graph.messages()) == 1, timeout=SYNC_WAIT)
    assert graph.messages()[0]["folder"] == "INBOX"
    assert "POST /me/messages/{id}/permanentDelete" in graph.stats()["by_route"]
    no_violations(graph)
    m.check_log()


def test_folder_create_rename_delete(graph, graph_mailfs):
    m = graph_mailfs(graph)
    wait_until(lambda: "INBOX" in folders(m.acct), timeout=SYNC_WAIT)
    os.mkdir(os.path.join(m.acct, "Clients"))
    os.mkdir(os.path.join(m.acct, "Clients", "ACME"))
    os.mkdir(os.path.join(m.acct, "INBOX", "Sub"))
    wait_until(lambda: {"Clients", "Clients/ACME", "INBOX/Sub"} <=
               set(graph.state()["folders"]), timeout=SYNC_WAIT)
    os.rename(os.path.join(m.acct, "Clients"), os.path.join(m.acct, "Customers"))
    wait_until(lambda: {"Customers", "Customers/ACME"} <= set(graph.state()["folders"]) and
               "Clients" not in graph.state()["folders"], timeout=SYNC_WAIT)
    os.rename(os.path.join(m.acct, "INBOX", "Sub"), os.path.join(m.acct, "Customers", "Sub"))
    wait_until(lambda: "Customers/Sub" in graph.state()["folders"], timeout=SYNC_WAIT)
    os.rmdir(os.path.join(m.acct, "Customers", "ACME"))
    wait_until(lambda: "Customers/ACME" not in graph.state()["folders"], timeout=SYNC_WAIT)
    no_violations(graph)
    m.check_log()


# --------------------------------------------------------------------------
# 6. delivery

def test_delivery_creates_a_message_not_a_draft(graph, graph_mailfs):
    graph.control("mkfolder", name="Work")
    m = graph_mailfs(graph)
    wait_until(lambda: "Work" in folders(m.acct), timeout=SYNC_WAIT)
    data = (b"From: bob@example.org\r\nTo: alice@contoso.com\r\nSubject: delivered\r\n"
            b"Message-ID: <delivered-1@example.org>\r\n\r\nbody\r\n")
    deliver(os.path.join(m.acct, "Work"), "123.local", data, dest="cur", flags="FS")
    data2 = data.replace(b"delivered-1", b"delivered-2").replace(b"Subject: delivered",
                                                                  b"Subject: unread one")
    deliver(os.path.join(m.acct, "INBOX"), "124.local", data2, dest="new")

    def arrived():   # created, out of the draft state, moved
        ids = by_msgid(graph)
        return all(k in ids and ids[k]["folder"] != "Drafts"
                   for k in ("<delivered-1@example.org>", "<delivered-2@example.org>"))
    wait_until(arrived, timeout=SYNC_WAIT)
    ids = by_msgid(graph)
    one, two = ids["<delivered-1@example.org>"], ids["<delivered-2@example.org>"]
    assert (one["folder"], one["isDraft"], one["isRead"], one["flagStatus"]) == \
        ("Work", False, True, "flagged")
    assert (two["folder"], two["isDraft"], two["isRead"]) == ("INBOX", False, False)
    assert one["mime"].encode() == data
    assert [x for x in graph.messages() if x["folder"] == "Drafts"] == []
    # After the next poll: still one file each, readable, not a draft (no D).
    time.sleep(4)
    work = messages(m.acct, "Work")
    assert len(work) == 1 and read(work[0]) == data and "D" not in letters(work[0])
    assert len(messages(m.acct, "INBOX")) == 1
    no_violations(graph)
    m.check_log()


# --------------------------------------------------------------------------
# 8. faults

def test_throttling_busy_servers_and_dropped_connections(graph, graph_mailfs):
    ids = graph.seed("INBOX", messages=[{"subject": "t%d" % i, "isRead": True}
                                        for i in range(6)])
    graph.control("fault", path=r"/messages/delta", kind=429, retry_after=1, count=2)
    graph.control("fault", path=r"/mailFolders$", kind=503, count=1)
    graph.control("fault", path=r"/\$value", kind="drop", count=1)
    graph.control("fault", path=r"/\$value", kind="cut", count=1)
    graph.control("fault", path=r"/\$value", kind=504, retry_after=1, count=1)
    runs = os.path.join(graph.logdir, "token-runs")
    m = graph_mailfs(graph, token_command="echo run >> %s; echo TOKEN" % runs)
    m.expect_log(r"(retry|busy|failed|HTTP 50|HTTP 429)")
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 6, timeout=SYNC_WAIT)
    srv = {x["mime"]: x for x in graph.messages("INBOX")}
    for p in messages(m.acct, "INBOX"):
        data = read(p)
        assert data.decode() in srv
    assert graph.stats()["faults_fired"] == 6
    # One token command for all the sessions of the account.
    with open(runs) as f:
        assert f.read().count("run") == 1
    # 401: the token source runs again and the request goes through.
    graph.control("reject_token")
    os.rename(messages(m.acct, "INBOX")[0],
              os.path.join(m.acct, "INBOX", "cur",
                           parse_name(os.path.basename(messages(m.acct, "INBOX")[0]))[0] +
                           ":2,FS"))
    wait_until(lambda: any(x["flagStatus"] == "flagged" for x in graph.messages()),
               timeout=SYNC_WAIT)
    assert graph.stats()["unauthorized"] == 1
    with open(runs) as f:
        assert f.read().count("run") == 2
    assert ids
    no_violations(graph)
    m.check_log()


def test_concurrency_never_over_four(graph, graph_mailfs):
    import concurrent.futures
    graph.control("seed", folder="INBOX", generate=40, size=3000, isRead=True)
    # Slow bodies keep every fetch session busy at once.
    graph.control("fault", path=r"/\$value", kind="delay", delay=0.3, count=1000)
    m = graph_mailfs(graph, max_connections=8)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 40, timeout=SYNC_WAIT)
    paths = messages(m.acct, "INBOX")
    # Twelve readers at once, and flag changes meanwhile.
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        reads = [pool.submit(read, p) for p in paths[20:]]
        cur = os.path.join(m.acct, "INBOX", "cur")
        for p in paths[:20]:
            u, f = parse_name(os.path.basename(p))
            os.rename(p, os.path.join(cur, u + ":2,FS"))
        bodies = [r.result(timeout=120) for r in reads]
    assert all(b.startswith(b"From:") for b in bodies)
    wait_until(lambda: sum(x["flagStatus"] == "flagged" for x in graph.messages()) == 20,
               timeout=60)
    st = graph.stats()
    assert st["throttled"] == 0 and st["max_inflight"] <= 4, st
    assert st["max_inflight"] >= 3, st   # the sessions did run side by side
    no_violations(graph)
    m.check_log()


def test_flag_changes_go_in_batches_of_twenty(graph, graph_mailfs):
    graph.control("seed", folder="INBOX", generate=45, isRead=False)
    m = graph_mailfs(graph)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 45, timeout=SYNC_WAIT)
    graph.control("reset_stats")
    # Throttled items inside a batch (429 + Retry-After per item) go again.
    graph.control("fault", method="PATCH", kind=429, retry_after=1, count=3)
    # A server 0.3 s away: changes made meanwhile wait in the queue.
    graph.control("fault", method="PATCH", kind="delay", delay=0.3, count=100)
    graph.control("fault", path=r"/\$batch", kind="delay", delay=0.3, count=100)
    cur = os.path.join(m.acct, "INBOX", "cur")
    for p in messages(m.acct, "INBOX"):
        u, _ = parse_name(os.path.basename(p))
        os.rename(p, os.path.join(cur, u + ":2,S"))
    wait_until(lambda: all(x["isRead"] for x in graph.messages()), timeout=SYNC_WAIT)
    st = graph.stats()
    singles = st["by_route"].get("PATCH /me/messages/{id}", 0)
    batches = [b for b in st["batch_sizes"]]
    assert batches and max(batches) <= 20, batches
    assert singles + len(batches) <= 14, (singles, batches)   # not 45 requests
    assert st["faults_fired"] >= 3
    no_violations(graph)
    m.check_log()


# --------------------------------------------------------------------------
# performance figures (printed; run with -s to see them)

def _in_sync_count(m):
    return len(re.findall(r"o365: (connected, in sync|synced INBOX)", m.log()))


@pytest.mark.parametrize("latency", [0, 0.05])
def test_perf_first_listing_of_10000_and_idle_resync(graph, graph_mailfs, capsys, latency):
    n = 10000
    graph.control("seed", folder="INBOX", generate=n)
    if latency:
        # Every request answered latency seconds late (a server far away).
        graph.control("fault", path="", kind="delay", delay=latency, count=100000)
    graph.control("reset_stats")
    t0 = time.monotonic()
    m = graph_mailfs(graph, poll_interval=3600)
    wait_until(lambda: "connected, in sync" in m.log(), timeout=300, interval=0.05)
    first_s = time.monotonic() - t0
    first = graph.stats()
    assert len(os.listdir(os.path.join(m.acct, "INBOX", "new"))) + \
        len(os.listdir(os.path.join(m.acct, "INBOX", "cur"))) == n
    # A resync with nothing to do: remount (the store is kept).
    m.stop()
    m.accounts["o365"]["poll_interval"] = 2
    m.write_config()
    graph.control("reset_stats")
    t0 = time.monotonic()
    m.start()
    wait_until(lambda: m.log().count("connected, in sync") >= 2, timeout=300, interval=0.05)
    idle_s = time.monotonic() - t0
    idle = graph.stats()
    # And one poll of the running mount with nothing to do: between two
    # ends of a full sync.
    polls = lambda: m.log().count("folders unchanged by the listing")  # noqa: E731
    k = polls()
    wait_until(lambda: polls() > k, timeout=60, interval=0.02)
    graph.control("reset_stats")
    t0 = time.monotonic()
    wait_until(lambda: polls() > k + 1, timeout=60, interval=0.02)
    poll = graph.stats()
    with capsys.disabled():
        print("\ngraph perf (server latency %g s):" % latency)
        print("graph perf: first listing of %d messages: %d requests, %.2f s "
              "(delta pages %d, by route %s)" % (n, first["requests"], first_s,
                                                 first["delta_pages"], first["by_route"]))
        print("graph perf: resync with nothing to do (remount): %d requests, %.2f s "
              "(by route %s)" % (idle["requests"], idle_s, idle["by_route"]))
        print("graph perf: one poll with nothing to do: %d requests (by route %s)"
              % (poll["requests"], poll["by_route"]))
    assert poll["requests"] <= 10, poll["by_route"]
    # 100 messages marked read by another client: the poll fetches the
    # changed ones in $batch requests, not the whole folder's list.
    unread = [x["id"] for x in graph.messages("INBOX") if not x["isRead"]][:100]
    k = polls()
    wait_until(lambda: polls() > k, timeout=60, interval=0.02)
    graph.control("reset_stats")
    for mid in unread:
        graph.control("mark", id=mid, isRead=True)
    k = polls()
    wait_until(lambda: polls() > k + 1, timeout=60, interval=0.02)
    changed = graph.stats()
    with capsys.disabled():
        print("graph perf: polls with 100 messages marked read elsewhere: %d requests "
              "(by route %s)" % (changed["requests"], changed["by_route"]))
    assert changed["by_route"].get("GET /me/mailFolders/{id}/messages", 0) == 0
    assert changed["requests"] <= 2 * 7 + 6, changed["by_route"]
    # Pages of 500 and lists of 1000, not a request per message.
    assert first["requests"] <= 60, first["by_route"]
    assert not any("$value" in r for r in idle["by_route"])
    assert idle["requests"] <= 20, idle["by_route"]
    no_violations(graph)


# --------------------------------------------------------------------------
# crashes: the queue survives kill -9

def test_queue_survives_kill_during_flag_and_upload(graph, graph_mailfs):
    graph.seed("INBOX", messages=[{"subject": "k%d" % i} for i in range(3)])
    graph.control("mkfolder", name="Work")
    m = graph_mailfs(graph)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 3, timeout=SYNC_WAIT)
    # The server answers the upload's PATCH (its second step) 1.5 s late:
    # the daemon is killed while it waits, and the server does it anyway.
    graph.control("fault", method="PATCH", kind="delay", delay=1.5, count=1)
    data = (b"From: carol@example.org\r\nSubject: crash\r\n"
            b"Message-ID: <crash-1@example.org>\r\n\r\nsurvive\r\n")
    deliver(os.path.join(m.acct, "Work"), "1.crash", data, dest="cur", flags="S")
    p = messages(m.acct, "INBOX")[0]
    u, _ = parse_name(os.path.basename(p))
    os.rename(p, os.path.join(m.acct, "INBOX", "cur", u + ":2,FS"))
    wait_until(lambda: graph.stats()["faults_fired"] >= 1, timeout=SYNC_WAIT)
    time.sleep(0.3)
    m.kill()
    m.start()
    m.expect_log(r"(retry|failed|interrupted|HTTP)")
    wait_until(lambda: any(x["flagStatus"] == "flagged" and x["isRead"]
                           for x in graph.messages("INBOX")), timeout=SYNC_WAIT)
    wait_until(lambda: [x["folder"] for x in graph.messages()
                        if x["internetMessageId"] == "<crash-1@example.org>"] == ["Work"],
               timeout=SYNC_WAIT)
    time.sleep(4)   # a poll later: still one copy each side
    copies = [x for x in graph.messages() if x["internetMessageId"] == "<crash-1@example.org>"]
    assert len(copies) == 1 and not copies[0]["isDraft"], copies
    work = messages(m.acct, "Work")
    assert len(work) == 1 and read(work[0]) == data
    assert messages(m.acct, "Drafts") == []
    # The daemon died after the draft was made: the retry finished that
    # copy instead of making a second one.
    assert "left its copy in Drafts" in m.log()
    no_violations(graph)


def test_busy_mailbox_pauses_every_session(graph, graph_mailfs):
    import concurrent.futures
    graph.control("seed", folder="INBOX", generate=16, size=2000, isRead=True)
    m = graph_mailfs(graph, max_connections=3)
    m.expect_log(r"(retry|throttled|busy)")
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 16, timeout=SYNC_WAIT)
    graph.control("reset_stats")
    # The first body request is told to come back in 2 s; the others are
    # slow enough that the sessions overlap.
    graph.control("fault", path=r"/\$value", kind=429, retry_after=2, count=1)
    graph.control("fault", path=r"/\$value", kind="delay", delay=0.1, count=1000)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        bodies = list(pool.map(read, messages(m.acct, "INBOX")))
    assert all(b.startswith(b"From:") for b in bodies)
    log = graph.stats()["log"]
    busy = [e for e in log if e[3] == 429]
    assert len(busy) == 1, busy
    t = busy[0][1]
    # No session starts a request while the mailbox waits (margins for
    # requests on their way when the 429 went out, and for jitter).
    during = [e for e in log if t + 0.3 < e[0] < t + 1.7]
    assert during == [], during
    assert any(e[0] >= t + 1.9 for e in log)
    no_violations(graph)
    m.check_log()


@pytest.mark.parametrize("kind", ["cut", "lost"])
def test_upload_answer_lost_makes_one_copy(graph, graph_mailfs, kind):
    # The server creates the message, then the connection drops in the
    # middle of its answer (cut) or before any (lost: libcurl would resend
    # such a request by itself on a reused connection; uploads go on a
    # fresh one): the retry finds the copy instead of making a second one.
    graph.control("fault", method="POST", path=r"^/me/messages$", kind=kind, count=1)
    m = graph_mailfs(graph)
    m.expect_log(r"(retry|failed|HTTP|transfer|closed|partial|Drafts)")
    wait_until(lambda: "INBOX" in folders(m.acct), timeout=SYNC_WAIT)
    data = (b"From: dan@example.org\r\nSubject: lost answer\r\n"
            b"Message-ID: <lost-1@example.org>\r\n\r\nonce\r\n")
    deliver(os.path.join(m.acct, "INBOX"), "9.lost", data, dest="cur", flags="S")
    wait_until(lambda: [x["folder"] for x in graph.messages()
                        if x["internetMessageId"] == "<lost-1@example.org>"] == ["INBOX"],
               timeout=60)
    time.sleep(4)
    copies = [x for x in graph.messages() if x["internetMessageId"] == "<lost-1@example.org>"]
    assert len(copies) == 1 and copies[0]["isRead"] and not copies[0]["isDraft"], copies
    assert graph.stats()["faults_fired"] == 1
    assert len(messages(m.acct, "INBOX")) == 1
    assert "left its copy in Drafts" in m.log()
    no_violations(graph)


def test_local_only_flags_survive_server_changes(graph, graph_mailfs):
    ids = graph.seed("INBOX", messages=[{"subject": "t-flag", "isRead": True},
                                        {"subject": "d-flag", "isRead": True}])
    m = graph_mailfs(graph)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 2, timeout=SYNC_WAIT)
    cur = os.path.join(m.acct, "INBOX", "cur")
    for p in messages(m.acct, "INBOX"):
        u, _ = parse_name(os.path.basename(p))
        letters_ = "ST" if b"t-flag" in read(p) else "DS"
        os.rename(p, os.path.join(cur, "%s:2,%s" % (u, letters_)))
    # T (no Graph property) and D (isDraft is read-only) stay local; a
    # change made elsewhere to the same messages keeps them.
    for mid in ids:
        graph.control("mark", id=mid, flag="flagged")
    wait_until(lambda: sorted(letters(p) for p in messages(m.acct, "INBOX")) ==
               ["DFS", "FST"], timeout=POLL_WAIT)
    # Even a full listing again (the delta state expired).
    graph.control("expire_delta")
    wait_until(lambda: "delta state of a folder expired" in m.log(), timeout=POLL_WAIT)
    time.sleep(3)
    assert sorted(letters(p) for p in messages(m.acct, "INBOX")) == ["DFS", "FST"]
    assert all(not x["isDraft"] for x in graph.messages())
    m.expect_log(r"delta state of a folder expired")
    no_violations(graph)
    m.check_log()


def test_server_side_moves_keep_file_and_body(graph, graph_mailfs):
    graph.control("mkfolder", name="Later")
    a, b = graph.seed("INBOX", messages=[{"subject": "move-a", "isRead": True},
                                         {"subject": "move-b", "isRead": True}])
    m = graph_mailfs(graph)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 2, timeout=SYNC_WAIT)
    ino = {}
    for p in messages(m.acct, "INBOX"):
        ino[b"move-a" in read(p)] = os.stat(p).st_ino    # bodies now cached
    graph.control("reset_stats")
    # One way (INBOX -> Later), then both ways at once: whichever folder
    # the engine lists first, the message keeps its row.
    graph.control("move", id=a, to="Later")
    wait_until(lambda: len(messages(m.acct, "Later")) == 1, timeout=POLL_WAIT)
    assert os.stat(messages(m.acct, "Later")[0]).st_ino == ino[True]
    graph.control("move", id=b, to="Later")
    graph.control("move", id=a, to="INBOX")
    wait_until(lambda: [os.stat(p).st_ino for p in messages(m.acct, "INBOX")] == [ino[True]] and
               [os.stat(p).st_ino for p in messages(m.acct, "Later")] == [ino[False]],
               timeout=POLL_WAIT)
    assert b"move-a" in read(messages(m.acct, "INBOX")[0])
    assert b"move-b" in read(messages(m.acct, "Later")[0])
    st = graph.stats()
    assert not any("$value" in r for r in st["by_route"]), st["by_route"]   # no re-download
    no_violations(graph)
    m.check_log()


def test_server_side_folder_changes_appear(graph, graph_mailfs):
    graph.control("mkfolder", name="Old name")
    graph.control("mkfolder", parent="Old name", name="Kid")
    graph.seed("Old name", messages=[{"subject": "in old", "isRead": True}])
    graph.seed("Old name/Kid", messages=[{"subject": "in kid", "isRead": True}])
    m = graph_mailfs(graph)
    wait_until(lambda: len(messages(m.acct, "Old name")) == 1 and
               len(messages(m.acct, "Old name/Kid")) == 1, timeout=SYNC_WAIT)
    ino = os.stat(messages(m.acct, "Old name")[0]).st_ino
    kid_ino = os.stat(messages(m.acct, "Old name/Kid")[0]).st_ino
    graph.control("mkfolder", name="Brand new")
    graph.control("deliver", folder="Brand new", subject="fresh in new")
    graph.control("rename_folder", path="Old name", name="New name")
    wait_until(lambda: "New name" in folders(m.acct) and "Old name" not in folders(m.acct)
               and len(messages(m.acct, "Brand new")) == 1, timeout=POLL_WAIT)
    wait_until(lambda: len(messages(m.acct, "New name")) == 1, timeout=POLL_WAIT)
    # The folder id is the same: its messages keep their files.
    assert os.stat(messages(m.acct, "New name")[0]).st_ino == ino
    assert os.stat(messages(m.acct, "New name/Kid")[0]).st_ino == kid_ino
    assert not os.path.exists(os.path.join(m.acct, "Old name"))
    no_violations(graph)
    m.check_log()
