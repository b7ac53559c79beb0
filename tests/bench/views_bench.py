#!/usr/bin/python3
"""What client-side views cost ([view NAME], fs/views.c).

    /usr/bin/python3 tests/bench/views_bench.py [N]      (default N = 20000)

Writes N messages straight into a throwaway Dovecot's INBOX (a quarter of
them with a List-Id the view matches), warms Dovecot's index, then mounts
twice through a byte-counting proxy: without a view and with

    [view lists]
    match = List-Id: *linux-kernel*

and prints, for each (twice, alternating): the first listing (time until
INBOX/cur shows N names, bytes from the server), `ls -l` of INBOX/cur and
of @lists/cur, and 1,000 lstat() of view names.  No figure is asserted.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

import dovecot as dv  # noqa: E402
from proxy import CountingProxy  # noqa: E402
from util import MailfsMount, wait_until  # noqa: E402


def seed(d, n):
    cur = os.path.join(d.maildir_path, "cur")
    os.makedirs(cur, exist_ok=True)
    t0 = 1700000000
    for i in range(n):
        lst = b"List-Id: Linux Kernel <linux-kernel.vger.kernel.org>\r\n" if i % 4 == 0 else b""
        msg = (b"From: user%d@example.org\r\nTo: me@example.org\r\nSubject: msg %d\r\n" % (i, i)
               + lst + b"Message-ID: <m%d@bench>\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
               b"\r\nbody %d\r\n" % (i, i))
        with open(os.path.join(cur, "%d.M%d.bench:2,S" % (t0 + i, i)), "wb") as f:
            f.write(msg)
    d.chown_maildir()
    with d.client() as c:          # Dovecot indexes the new files once, here
        c.folders()
        assert len(c.uids("INBOX")) == n


def timed(fn):
    t = time.monotonic()
    r = fn()
    return time.monotonic() - t, r


def run(root, d, proxy, n, view):
    wd = tempfile.mkdtemp(prefix="mount-", dir=root)
    gen = {"cache_dir": wd + "/cache", "state_dir": wd + "/state", "fetch_timeout": 30}
    acct = {"type": "imap", "host": proxy.listen_host, "port": proxy.port, "tls": "none",
            "user": d.user, "password": d.password, "poll_interval": 600, "timeout": 60}
    m = MailfsMount(wd, gen, {"test": acct}, debug=False)
    if view:
        with open(m.config_path, "a") as f:
            f.write("\n[view lists]\nmatch = List-Id: *linux-kernel*\n")
    inbox = os.path.join(m.acct, "INBOX", "cur")
    proxy.reset()
    t = time.monotonic()
    m.start(timeout=600)
    wait_until(lambda: len(os.listdir(inbox)) == n, 600)
    res = [("first listing", "%.2f s, %d bytes down" % (time.monotonic() - t,
                                                          proxy.snapshot()["down"]))]
    res.append(("ls -l INBOX/cur", "%.2f s" % timed(
        lambda: subprocess.run(["ls", "-l", inbox], stdout=subprocess.DEVNULL, check=True))[0]))
    if view:
        vc = os.path.join(m.mnt, "@lists", "cur")
        dt, names = timed(lambda: os.listdir(vc))
        assert len(names) == n // 4, len(names)
        res.append(("listdir @lists/cur (%d names)" % len(names), "%.2f s" % dt))
        res.append(("ls -l @lists/cur", "%.2f s" % timed(
            lambda: subprocess.run(["ls", "-l", vc], stdout=subprocess.DEVNULL, check=True))[0]))
        time.sleep(1.5)            # let the kernel's cached view names expire
        res.append(("lstat 1000 view names, uncached", "%.2f s" % timed(
            lambda: [os.lstat(os.path.join(vc, x)) for x in names[:1000]])[0]))
    m.stop()
    shutil.rmtree(wd, ignore_errors=True)
    return res


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    root = tempfile.mkdtemp(prefix="mailfs-views-bench-")
    d = dv.Dovecot(os.path.join(root, "dovecot"))
    d.start()
    proxy = CountingProxy(d.host, d.port).start()
    try:
        seed(d, n)
        # Twice each, alternating: the first mount also warms Dovecot's
        # header cache, so compare the second pair.
        for rnd, view in ((1, False), (1, True), (2, False), (2, True)):
            for k, v in run(root, d, proxy, n, view):
                print("run %d %-9s %-36s %s" % (rnd, "view" if view else "no view", k, v))
    finally:
        proxy.stop()
        d.destroy()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
