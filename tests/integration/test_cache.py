"""The body cache's size limit (cache_max_size, least recently used bodies
evicted) and the prefetch limits (prefetch_max_size, prefetch_max_age),
all through the mount.
"""

import hashlib
import os
import time

import pytest

import subprocess

from util import (wait_until, run_with_timeout, messages, read, deliver,
                  fuse_skip_reason, mailfs_binary)

if fuse_skip_reason():
    pytest.skip(fuse_skip_reason(), allow_module_level=True)

NETWORK_LOG = (r"(connect|connection|refused|reset|timed? ?out|EIO|closed|eof|"
               r"cannot fetch|no answer|could not)")

KB = 1024


def body(i, size, tag="cache"):
    """A message of exactly `size` bytes, unique per (tag, i)."""
    head = ("From: c%d@example.org\r\nTo: t@example.org\r\nSubject: %s %d\r\n"
            "Message-ID: <%s-%d@mailfs.test>\r\n\r\n" % (i, tag, i, tag, i)).encode()
    line = ("%s %d " % (tag, i)).encode()
    fill = (line * (size // len(line) + 1))[:size - len(head) - 2]
    return head + fill + b"\r\n"


def blob_path(m, data):
    h = hashlib.sha256(data).hexdigest()
    return os.path.join(m.cache_dir, "blobs", h[:2], h[2:])


def cache_bytes(m):
    total = 0
    for dirpath, _, files in os.walk(m.cache_dir):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except FileNotFoundError:
                pass
    return total


def status(m):
    return subprocess.run([mailfs_binary(), "--status", m.mnt], capture_output=True,
                          text=True, timeout=20).stdout


def read_ok(path):
    state, data = run_with_timeout(read, 20, path)
    assert state == "ok", (path, state, data)
    return data


def test_lru_eviction_keeps_the_cache_under_the_limit(dovecot, mailfs):
    limit = 200 * KB
    n = 21
    bodies = [body(i, 20 * KB) for i in range(n)]
    for b in bodies:
        dovecot.append("INBOX", b)
    m = mailfs(dovecot, general={"cache_max_size": "200K"})
    wait_until(lambda: len(messages(m.acct, "INBOX")) == n, 20, msg="listing")
    paths = messages(m.acct, "INBOX")

    # Read 15 bodies (300K, past the limit), then, a clock second later,
    # 6 more: those 6 are the most recently used.
    first = {p: read_ok(p) for p in paths[:15]}
    time.sleep(2)
    last = {p: read_ok(p) for p in paths[15:]}
    assert sorted(list(first.values()) + list(last.values())) == sorted(bodies)

    # 420K down to at most 90% of 200K: 12 bodies of 20K go.
    wait_until(lambda: "of %d bytes (cache_max_size), 12 bodies evicted" % limit
               in status(m), 90, msg="eviction down to cache_max_size")
    assert cache_bytes(m) <= limit
    assert "cache: evicted" in m.log()
    # Least recently used first: every recent body is still cached, and
    # only 3 of the older ones fit beside them (below 90% of the limit).
    for data in last.values():
        assert os.path.exists(blob_path(m, data))
    kept = sum(os.path.exists(blob_path(m, d)) for d in first.values())
    assert kept <= 3, kept

    # Evicted bodies come back from the server, byte for byte.
    for p in paths:
        assert read_ok(p) == first.get(p, last.get(p))
    wait_until(lambda: cache_bytes(m) <= limit, 90, msg="eviction after re-reads")

    # The limit and the access times hold across a remount.
    m.remount()
    wait_until(lambda: len(messages(m.acct, "INBOX")) == n, 20)
    for p in messages(m.acct, "INBOX")[:3]:
        assert read_ok(p) in bodies
    wait_until(lambda: cache_bytes(m) <= limit, 90)


def test_a_queued_upload_is_never_evicted(dovecot, mailfs, proxy):
    limit = 100 * KB
    bodies = [body(i, 20 * KB) for i in range(10)]
    for b in bodies:
        dovecot.append("INBOX", b)
    p = proxy(dovecot)
    m = mailfs(dovecot, proxy=p, general={"cache_max_size": "100K"})
    m.expect_log(NETWORK_LOG)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 10, 20, msg="listing")
    for path in messages(m.acct, "INBOX"):
        read_ok(path)

    # Offline: a delivery waits in the queue while eviction runs.
    p.stop()
    queued = body(99, 30 * KB, tag="queued")
    target = deliver(m.folder("INBOX"), "1700000000.queued.host", queued)
    # 200K down to 90K: six bodies go.
    wait_until(lambda: "6 bodies evicted" in status(m), 90, msg="eviction while offline")
    assert cache_bytes(m) <= limit
    assert read_ok(target) == queued
    st = os.stat(target)
    assert st.st_size == len(queued)

    # Back online: it reaches the server unchanged, and it is cached.
    p.start()

    def on_server():
        with dovecot.client() as c:
            return [x for x in c.messages("INBOX").values() if b"queued 99" in x]

    wait_until(lambda: on_server(), 60, msg="the queued upload")
    assert on_server() == [queued]
    assert os.path.exists(blob_path(m, queued))
    assert read_ok(target) == queued


def test_prefetch_fills_the_cache_but_never_evicts(dovecot, mailfs):
    bodies = [body(i, 20 * KB, tag="fill") for i in range(10)]
    for b in bodies:
        dovecot.append("INBOX", b)
    m = mailfs(dovecot, prefetch="all", general={"cache_max_size": "100K"})
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 10, 20, msg="listing")
    # 90K may be filled: four bodies of 20K.
    wait_until(lambda: "prefetch done (4 bodies)" in m.log(), 60,
               msg="prefetch up to the limit")
    assert sum(os.path.exists(blob_path(m, b)) for b in bodies) == 4
    assert "cache: evicted" not in m.log()
    # Reads still work for the rest (and may evict).
    for path in messages(m.acct, "INBOX"):
        assert read_ok(path) in bodies
    wait_until(lambda: cache_bytes(m) <= 100 * KB, 90)


def test_prefetch_max_size_and_max_age(dovecot, mailfs):
    now = time.time()
    small = [body(i, 2 * KB, tag="small") for i in range(4)]
    large = [body(i, 60 * KB, tag="large") for i in range(3)]
    old = [body(i, 2 * KB, tag="old") for i in range(3)]
    for b in small + large:
        dovecot.append("INBOX", b, date=now - 86400)
    for b in old:
        dovecot.append("INBOX", b, date=now - 400 * 86400)
    m = mailfs(dovecot, prefetch="all", prefetch_max_size="10K",
               prefetch_max_age=365)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 10, 20, msg="listing")
    wait_until(lambda: "prefetch done (4 bodies)" in m.log(), 60,
               msg="prefetch of the small recent bodies")
    for b in small:
        assert os.path.exists(blob_path(m, b))
    for b in large + old:
        assert not os.path.exists(blob_path(m, b))
    # What prefetch skipped is fetched on its first read.
    got = {read_ok(p) for p in messages(m.acct, "INBOX")}
    assert got == set(small + large + old)


def test_a_store_from_before_the_limit_is_migrated_and_walked(dovecot, mailfs):
    import sqlite3

    bodies = [body(i, 20 * KB, tag="walk") for i in range(10)]
    for b in bodies:
        dovecot.append("INBOX", b)
    m = mailfs(dovecot)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 10, 20, msg="listing")
    for path in messages(m.acct, "INBOX"):
        read_ok(path)
    m.stop()
    assert cache_bytes(m) >= 200 * KB
    # Make it a schema 2 store, as mailfs wrote it before cache_max_size.
    db = sqlite3.connect(os.path.join(m.state_dir, "mailfs.db"))
    db.executescript("DROP TABLE blob_cache; DROP INDEX message_blob;"
                     "PRAGMA user_version = 2;")
    db.close()

    m.general["cache_max_size"] = "100K"
    m.write_config()
    m.start()
    # 200K down to 90K: six bodies go.
    wait_until(lambda: "6 bodies evicted" in status(m), 90,
               msg="eviction of bodies cached before the limit")
    assert cache_bytes(m) <= 100 * KB

    def store(query):
        db = sqlite3.connect(os.path.join(m.state_dir, "mailfs.db"))
        try:
            return db.execute(query).fetchone()[0]
        finally:
            db.close()

    assert store("PRAGMA user_version") == 5
    # Every cached body has its row, evicted ones none.
    wait_until(lambda: store("SELECT count(*) FROM blob_cache") ==
               sum(os.path.exists(blob_path(m, b)) for b in bodies), 30,
               msg="blob_cache rows match the cached bodies")
    for path in messages(m.acct, "INBOX"):
        assert read_ok(path) in bodies


def test_an_open_body_is_never_evicted(dovecot, mailfs):
    limit = 200 * KB
    bodies = [body(i, 20 * KB, tag="open") for i in range(16)]
    for b in bodies:
        dovecot.append("INBOX", b)
    m = mailfs(dovecot, general={"cache_max_size": "200K"})
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 16, 20, msg="listing")
    paths = messages(m.acct, "INBOX")

    # The least recently used body, held open while the cache overflows.
    fd = os.open(paths[0], os.O_RDONLY)
    try:
        first = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            first += chunk
        assert first in bodies
        time.sleep(2)   # access times are in seconds: make it the oldest
        for p in paths[1:13]:
            read_ok(p)
        # 260K down to 180K: four bodies go, none of them the open one.
        wait_until(lambda: "4 bodies evicted" in status(m), 90, msg="eviction")
        assert os.path.exists(blob_path(m, first))
        assert os.pread(fd, 100, 0) == first[:100]
    finally:
        os.close(fd)
    # Closed, it is the first to go when the cache overflows again.
    for p in paths[13:]:
        read_ok(p)
    wait_until(lambda: not os.path.exists(blob_path(m, first)), 90,
               msg="the closed body evicted")
    assert read_ok(paths[0]) == first
