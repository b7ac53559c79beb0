#!/usr/bin/python3
"""Gmail backend figures (issue 4): requests, quota units and seconds for

  1. the first listing of N messages over 5 labels (every message has an
     INBOX-or-not label plus one of 4 user labels, so each stands in 2-3
     folders plus All Mail), until every folder shows all its messages;
  2. a resync with nothing to do (the next poll after that).

    /usr/bin/python3 tests/bench/gmail_listing.py [--messages 10000]
        [--quota 15000]

The fake (tests/fakes/gmail.py) runs in this process on 127.0.0.1; mailfs
mounts it (MAILFS_BUILD_DIR, default build). --quota sets both the fake's
per-user budget and mailfs's quota_units: 15000 is Gmail's real budget,
which bounds the first listing to units / 15000 minutes. No figure is
asserted.
"""

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(TESTS, "integration"))
sys.path.insert(0, os.path.join(TESTS, "fakes"))
sys.path.insert(0, TESTS)

import corpus  # noqa: E402
from gmail import FakeGmail  # noqa: E402
from util import MailfsMount, count  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--quota", type=int, default=1000000)
    ap.add_argument("--poll", type=int, default=5)
    args = ap.parse_args()

    g = FakeGmail().start()
    g.state.quota_per_minute = args.quota
    labels = [g.add_label("Label%d" % i) for i in range(4)]
    seed = []
    for i in range(args.messages):
        ls = [labels[i % 4]]
        if i % 3 == 0:
            ls.append("INBOX")
        if i % 2:
            ls.append("UNREAD")
        raw = corpus.message("Bench %d" % i, "Body of message %d.\n" % i,
                             date=corpus.date_at(i), msgid="bench%d@example.org" % i)
        seed.append({"raw": raw, "labels": ls})
    g.seed(seed)
    expect = {"All Mail": args.messages,
              "INBOX": len(range(0, args.messages, 3))}
    for k in range(4):
        expect["Label%d" % k] = len(range(k, args.messages, 4))

    work = tempfile.mkdtemp(prefix="mailfs-gmail-bench-")
    gen = {"cache_dir": os.path.join(work, "cache"), "state_dir": os.path.join(work, "state"),
           "fetch_timeout": 30}
    acct = {"type": "gmail", "user": g.user, "api_url": g.url, "token_command": "echo TOKEN",
            "poll_interval": args.poll, "timeout": 30, "quota_units": args.quota}
    m = MailfsMount(work, gen, {"gmail": acct}, account="gmail", debug=False)
    g.reset_stats()
    t0 = time.monotonic()
    m.start(timeout=3600)
    while True:
        try:
            if all(count(m.acct, f) == n for f, n in expect.items()):
                break
        except OSError:
            pass
        time.sleep(0.1)
    t1 = time.monotonic()
    first = g.stats()
    # resync with nothing to do: the next poll
    g.reset_stats()
    while g.stats()["requests"] == 0:
        time.sleep(0.05)
    t2 = time.monotonic()
    time.sleep(1.0)
    resync = g.stats()
    m.stop()
    g.stop()

    print("first listing of %d messages over 5 labels (+ All Mail), quota %d units/min:"
          % (args.messages, args.quota))
    print("  %.1f s, %d HTTP requests, %d quota units" % (t1 - t0, first["requests"],
                                                          first["units"]))
    print("  calls: %s" % first["calls"])
    print("  batches: %d (max %d calls)" % (len(first["batch_sizes"]),
                                             max(first["batch_sizes"] or [0])))
    print("resync with nothing to do:")
    print("  %.3f s from its first to its last request, %d HTTP requests, %d quota units "
          "(calls %s)" % (resync["last_request"] - resync["first_request"], resync["requests"],
                          resync["units"], resync["calls"]))
    _ = t2


if __name__ == "__main__":
    main()
