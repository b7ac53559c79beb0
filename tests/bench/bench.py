#!/usr/bin/python3
"""The mailfs benchmark (issue #7).  Run through scripts/bench.

    /usr/bin/python3 tests/bench/bench.py [--messages N] [--folders M] [--runs R]
        [--only first,download,resync,latency,local,scale] [--scale 10000,100000]
        [--no-peers] [--out DIR] [--write-md] [--keep]

Seeds a throwaway Dovecot on 127.0.0.1 with a deterministic corpus
(tests/bench/corpus_gen.py), puts a byte-counting proxy (tests/bench/proxy.py)
in front of it, and measures mailfs and its peers (mbsync, OfflineIMAP,
InterIMAP; tests/bench/peers.py) phase by phase.  Every figure is the median
of --runs runs and is reported next to its peer measured in the same run.
Writes OUT/table.txt, OUT/results.json, OUT/resync.png (gnuplot) and, with
--write-md, BENCHMARKS.md at the repository root.  No figure is asserted.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
REPO = os.path.dirname(TESTS)
sys.path[:0] = [HERE, TESTS, os.path.join(TESTS, "integration")]

import corpus_gen  # noqa: E402
import dovecot as dovecot_mod  # noqa: E402
import peers  # noqa: E402
from proxy import CountingProxy  # noqa: E402
from util import MailfsMount, mailfs_binary, fuse_skip_reason, FUSERMOUNT  # noqa: E402

PHASES = ["first", "download", "resync", "latency", "local", "scale"]
ACCOUNT = "bench"
MAIL_UID = dovecot_mod.MAIL_UID

# Dovecot for the bench: COMPRESS=DEFLATE offered (imap_zlib), and the IDLE
# keepalive ("* OK Still here") back at Dovecot's default of 2 minutes (the
# test harness sets 1 s, which would be counted as resync traffic).
DOVECOT_EXTRA = """protocol imap {
  mail_plugins = $mail_plugins imap_zlib
}
imap_idle_notify_interval = 2 mins
"""


class BenchError(RuntimeError):
    pass


def log(msg):
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_s(s):
    if s is None:
        return "-"
    if s < 0.01:
        return "%.1f ms" % (s * 1000)
    if s < 1:
        return "%.0f ms" % (s * 1000)
    if s < 100:
        return "%.2f s" % s
    return "%.0f s" % s


def fmt_b(b):
    if b is None:
        return "-"
    if b < 10000:
        return "%d B" % b
    if b < 10 * 1024 * 1024:
        return "%.1f KiB" % (b / 1024)
    return "%.1f MiB" % (b / 1024 / 1024)


def fmt_ratio(r):
    if r is None:
        return "-"
    if r >= 100:
        return "%.0fx" % r
    if r >= 10:
        return "%.1fx" % r
    return "%.2fx" % r


def dir_size(path):
    total = 0
    for dp, dn, fn in os.walk(path):
        for f in fn:
            try:
                total += os.lstat(os.path.join(dp, f)).st_size
            except OSError:
                pass
    return total


def vm_hwm(pid):
    """Peak RSS (VmHWM) of pid in bytes, or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------
# results

class Results:
    def __init__(self):
        self.rows = []
        self.targets = []
        self.notes = []
        self.problems = []
        self.info = {}
        self.plot = {}

    def row(self, phase, measure, tool, seconds=None, nbytes=None, mbps=None, ratio=None,
            ratio_text="", note="", samples=None, **extra):
        r = {"phase": phase, "measure": measure, "tool": tool, "seconds": seconds,
             "bytes": nbytes, "mbps": mbps, "ratio": ratio, "ratio_text": ratio_text,
             "note": note, "samples": samples or {}}
        r.update(extra)
        self.rows.append(r)
        log("%-8s %-38s %-26s %10s %12s %s %s" % (phase, measure, tool, fmt_s(seconds),
                                                  fmt_b(nbytes), ratio_text, note))
        return r

    def find(self, phase, measure, tool):
        for r in self.rows:
            if r["phase"] == phase and r["measure"] == measure and r["tool"] == tool:
                return r
        return None

    def target(self, name, goal, measured, met, detail=""):
        self.targets.append({"target": name, "goal": goal, "measured": measured,
                             "met": met, "detail": detail})

    def problem(self, text):
        log("PROBLEM: " + text)
        self.problems.append(text)

    def table(self):
        head = ["phase", "measure", "tool", "seconds", "bytes", "MB/s", "ratio", "note"]
        lines = []
        for r in self.rows:
            lines.append([r["phase"], r["measure"], r["tool"], fmt_s(r["seconds"]),
                          fmt_b(r["bytes"]),
                          "-" if r["mbps"] is None else "%.1f" % r["mbps"],
                          r["ratio_text"] or "-", r["note"]])
        widths = [max(len(head[i]), *(len(x[i]) for x in lines)) if lines else len(head[i])
                  for i in range(len(head))]
        out = []

        def fmt(cells):
            return "  ".join(c.ljust(widths[i]) if i in (0, 1, 2, 6, 7) else c.rjust(widths[i])
                             for i, c in enumerate(cells)).rstrip()

        out.append(fmt(head))
        out.append("  ".join("-" * w for w in widths))
        last = None
        for cells in lines:
            if last is not None and cells[0] != last:
                out.append("")
            last = cells[0]
            out.append(fmt(cells))
        if self.targets:
            out.append("")
            out.append("Targets:")
            for t in self.targets:
                mark = {True: "MET   ", False: "MISSED", None: "n/a   "}[t["met"]]
                out.append("  [%s] %s: %s (measured %s)%s" % (
                    mark, t["target"], t["goal"], t["measured"],
                    ("; " + t["detail"]) if t["detail"] else ""))
        if self.problems:
            out.append("")
            out.append("Problems seen:")
            for p in self.problems:
                out.append("  - " + p.replace("\n", "\n    "))
        return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# the bench

class Bench:
    def __init__(self, args):
        self.args = args
        self.res = Results()
        self.root = tempfile.mkdtemp(prefix="mailfs-bench-", dir=args.tmpdir)
        os.chmod(self.root, 0o755)
        self.binary = mailfs_binary()
        self.mounts = []
        self.dovecots = []
        self.proxies = []
        self.procs = []
        self.tmux_sock = "mailfs-bench-%d" % os.getpid()
        self.seq = 0
        self.server = None
        self.proxy = None
        self.manifest = None
        self.cache = {}
        self.peers_on = not args.no_peers

    # -- plumbing
    def path(self, *parts):
        self.seq += 1
        p = os.path.join(self.root, "%s-%d" % ("-".join(parts), self.seq))
        os.makedirs(p)
        return p

    def new_dovecot(self, name):
        d = dovecot_mod.Dovecot(os.path.join(self.root, name), extra_config=DOVECOT_EXTRA)
        self.dovecots.append(d)
        d.start()
        return d

    def new_proxy(self, d):
        p = CountingProxy(d.host, d.port).start()
        self.proxies.append(p)
        return p

    def seed(self, d, n, m, kind="mixed"):
        t0 = time.monotonic()
        man = corpus_gen.write_maildir(d.maildir_path, n, m, seed=self.args.seed, kind=kind,
                                       uid=MAIL_UID, gid=MAIL_UID)
        t1 = time.monotonic()
        with d.client() as c:
            corpus_gen.prewarm(c, corpus_gen.folder_names(m))
            counts = {f: c.count(f) for f in corpus_gen.folder_names(m)}
        t2 = time.monotonic()
        for f, k in man.count.items():
            if counts.get(f) != k:
                raise BenchError("Dovecot sees %s messages in %s, %d were written"
                                 % (counts.get(f), f, k))
        log("seeded %d messages (%.1f MB) in %d folders: write %.1fs, Dovecot indexing %.1fs"
            % (man.total, man.total_bytes / 1e6, m, t1 - t0, t2 - t1))
        return man, t1 - t0, t2 - t1

    def mount(self, tag, proxy, state=None, **acct):
        """A MailfsMount (not started) on a fresh work dir; state: reuse this
        (state_dir, cache_dir) pair."""
        w = self.path("mailfs", tag)
        if state is None:
            state = (os.path.join(w, "state"), os.path.join(w, "cache"))
        opts = {"type": "imap", "host": "127.0.0.1", "port": proxy.port, "tls": "none",
                "user": dovecot_mod.USER, "password": dovecot_mod.PASSWORD,
                "poll_interval": 60, "prefetch": "none"}
        opts.update(acct)
        m = MailfsMount(w, {"state_dir": state[0], "cache_dir": state[1]}, {ACCOUNT: opts},
                        account=ACCOUNT, binary=self.binary, debug=False,
                        extra_args=["-o", "debug=sync"])
        m.state = state
        self.mounts.append(m)
        return m

    def wait_log(self, m, regex, timeout, offset=0, what=None):
        """Poll m's log from byte offset for regex; return (monotonic time, match)."""
        rx = re.compile(regex)
        deadline = time.monotonic() + timeout
        pos = offset
        buf = ""
        while True:
            try:
                with open(m.log_path, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
            except FileNotFoundError:
                chunk = b""
            if chunk:
                pos += len(chunk)
                buf += chunk.decode("utf-8", "replace")
                mm = rx.search(buf)
                if mm:
                    return time.monotonic(), mm
                buf = buf[-4096:]
            if m.proc is None or m.proc.poll() is not None:
                raise BenchError("mount.mailfs exited (%s) while waiting for %s; log:\n%s" % (
                    m.proc and m.proc.returncode, what or regex, m.log_tail(30)))
            if time.monotonic() > deadline:
                raise BenchError("timed out after %ss waiting for %s; log tail:\n%s" % (
                    timeout, what or regex, m.log_tail(30)))
            time.sleep(0.01)

    def wait_cached(self, m, nbytes, timeout):
        """Wait until m's cache_dir holds nbytes (every body: the blobs are the
        exact message bytes)."""
        deadline = time.monotonic() + timeout
        while dir_size(m.state[1]) < nbytes:
            if time.monotonic() > deadline:
                raise BenchError("the cache holds %d of %d bytes after %ss"
                                 % (dir_size(m.state[1]), nbytes, timeout))
            if m.proc is None or m.proc.poll() is not None:
                raise BenchError("mount.mailfs exited while prefetching")
            time.sleep(0.02)

    def log_size(self, m):
        try:
            return os.path.getsize(m.log_path)
        except FileNotFoundError:
            return 0

    def start_until(self, m, regex, timeout, proxy=None):
        """Start m; return (seconds from exec to regex in the log, bytes)."""
        off = self.log_size(m)
        if proxy:
            proxy.reset()
        t0 = time.monotonic()
        m.start(timeout=min(timeout, 60), wait=True)
        t1, _ = self.wait_log(m, regex, timeout, off)
        snap = proxy.snapshot() if proxy else None
        return t1 - t0, snap

    def stop(self, m):
        try:
            m.stop(timeout=60, check=False)
        except AssertionError as e:
            self.res.problem("unmount: %s" % str(e).splitlines()[0])
            m.cleanup()
        if m.exit_codes and m.exit_codes[-1] not in (0, None):
            self.res.problem("mount.mailfs exited with %s at unmount (log %s)"
                             % (m.exit_codes[-1], m.log_path))

    def check_mailfs_log(self, m, label):
        bad = [ln for ln in m.log().splitlines()
               if re.search(r"mailfs (error|warning):", ln)]
        if bad:
            self.res.problem("%s: mount.mailfs logged %d error/warning line(s), e.g.: %s"
                             % (label, len(bad), bad[0]))

    def verify_listing(self, m, man):
        """Every message listed with its exact size?  Returns (ok, detail)."""
        problems = []
        for folder, count in man.count.items():
            d = m.folder(folder)
            sizes = []
            for sub in ("cur", "new"):
                try:
                    names = os.listdir(os.path.join(d, sub))
                except OSError as e:
                    problems.append("%s: %s" % (folder, e))
                    continue
                for n in names:
                    sizes.append(os.stat(os.path.join(d, sub, n)).st_size)
            if len(sizes) != count or sorted(sizes) != sorted(man.sizes[folder]):
                problems.append("%s: %d files (want %d), sizes %s" % (
                    folder, len(sizes), count,
                    "match" if sorted(sizes) == sorted(man.sizes[folder]) else "differ"))
        return (not problems), "; ".join(problems[:5])

    def runs(self):
        return max(1, self.args.runs)

    def peer_rows_ratio(self, phase, measure, base, rows):
        """Fill ratio = peer seconds / base seconds for rows."""
        for r in rows:
            if r is base or r is None or base is None:
                continue
            if base["seconds"] and r["seconds"]:
                r["ratio"] = r["seconds"] / base["seconds"]
                r["ratio_text"] = "%s mailfs time" % fmt_ratio(r["ratio"])

    # -- setup
    def main_server(self):
        if self.server is None:
            self.server = self.new_dovecot("dovecot-main")
            self.manifest, tw, ti = self.seed(self.server, self.args.messages, self.args.folders)
            self.proxy = self.new_proxy(self.server)
            self.res.info["corpus"] = self.manifest.as_dict()
            self.res.info["corpus"]["seed_seconds"] = round(tw, 2)
            self.res.info["corpus"]["dovecot_index_seconds"] = round(ti, 2)
        return self.server

    # ---------------------------------------------------------------- phase 1
    def phase_first(self):
        self.main_server()
        man, p = self.manifest, self.proxy
        N = man.total
        measure = "list every message (%d)" % N
        rows = []
        for compress in ("yes", "no"):
            ts, bs, ok_all, details = [], [], True, ""
            for r in range(self.runs()):
                m = self.mount("first-c%s" % compress, p, compress=compress)
                try:
                    dt, snap = self.start_until(m, r"connected, in sync", self.args.timeout, p)
                    ok, detail = self.verify_listing(m, man)
                    ok_all &= ok
                    details = details or detail
                finally:
                    self.stop(m)
                self.check_mailfs_log(m, "first listing")
                ts.append(dt)
                bs.append(snap["total"])
            if not ok_all:
                self.res.problem("first listing: the mount does not show every message with "
                                 "its exact size: " + details)
            rows.append(self.res.row("first", measure, "mailfs" + ("" if compress == "yes"
                                                                    else " (compress=no)"),
                                     median(ts), median(bs), samples={"s": ts, "bytes": bs},
                                     note="sizes exact" if ok_all else "LISTING WRONG",
                                     compress_used=snap["compress"]))
        self.res.info["mailfs_compress_negotiated"] = any(r.get("compress_used") for r in rows)
        base = rows[0]
        if self.peers_on and peers.have("mbsync"):
            for variant, maxsize in (("mbsync", None), ("mbsync MaxSize 1k", "1k")):
                ts, bs = [], []
                last = None
                for r in range(self.runs()):
                    mb = peers.Mbsync(self.path("mbsync"), "127.0.0.1", p.port, max_size=maxsize)
                    p.reset()
                    ts.append(mb.sync(self.args.timeout))
                    snap = p.snapshot()
                    bs.append(snap["total"])
                    if last and not self.args.keep:
                        shutil.rmtree(last.workdir, ignore_errors=True)
                    last = mb
                row = self.res.row("first", measure, variant + " (first sync)", median(ts),
                                   median(bs), samples={"s": ts, "bytes": bs},
                                   note="downloads bodies" if not maxsize else
                                   "bodies > 1 KB as placeholders",
                                   compress_used=snap["compress"])
                rows.append(row)
                if not maxsize:
                    self.cache["mbsync_first"] = (ts, bs, last)
        self.peer_rows_ratio("first", measure, base, rows)

    # ---------------------------------------------------------------- phase 2
    def phase_download(self):
        self.main_server()
        man, p = self.manifest, self.proxy
        MB = man.total_bytes / 1e6
        measure = "every body cached (%.0f MB)" % MB
        rows = []
        for compress in ("yes", "no"):
            ts, bs = [], []
            for r in range(self.runs()):
                m = self.mount("dl-c%s" % compress, p, prefetch="all", compress=compress)
                try:
                    t0 = time.monotonic()
                    dlog, snap = self.start_until(m, r"prefetch done \(\d+ bodies\)",
                                                  self.args.timeout, p)
                    _, mm = self.wait_log(m, r"prefetch done \((\d+) bodies\)", 1, 0)
                    cached = dir_size(m.state[1])
                    early = cached < man.total_bytes
                    self.wait_cached(m, man.total_bytes, self.args.timeout)
                    dt = time.monotonic() - t0
                    snap = p.snapshot()
                    if early and not self.cache.get("prefetch_early"):
                        self.cache["prefetch_early"] = True
                        self.res.problem(
                            "'prefetch done (%s bodies)' is logged before every body is cached: "
                            "%d messages, %d of %d bytes in the cache at that line; the rest "
                            "arrives %.2f s later (times here run to the full cache)"
                            % (mm.group(1), man.total, cached, man.total_bytes, dt - dlog))
                finally:
                    self.stop(m)
                self.check_mailfs_log(m, "prefetch")
                ts.append(dt)
                bs.append(snap["total"])
            rows.append(self.res.row("download", measure,
                                     "mailfs prefetch=all" + ("" if compress == "yes"
                                                              else " (compress=no)"),
                                     median(ts), median(bs), mbps=MB / median(ts),
                                     samples={"s": ts, "bytes": bs},
                                     note="mount to every body in the cache",
                                     compress_used=snap["compress"]))
        # reading every file through a mount without prefetch
        ts, bs = [], []
        for r in range(self.runs()):
            m = self.mount("readall", p)
            try:
                self.start_until(m, r"connected, in sync", self.args.timeout, p)
                p.reset()
                t0 = time.monotonic()
                sh(["bash", "-c", "find %s -type f -print0 | xargs -0 cat > /dev/null"
                    % shq(m.acct)], self.args.timeout)
                ts.append(time.monotonic() - t0)
                bs.append(p.snapshot()["total"])
            finally:
                self.stop(m)
        rows.append(self.res.row("download", measure, "mailfs read every file", median(ts),
                                 median(bs), mbps=MB / median(ts), samples={"s": ts, "bytes": bs},
                                 note="prefetch=none, cat each file, after listing"))
        base = rows[0]
        if self.peers_on and peers.have("mbsync"):
            if "mbsync_first" in self.cache:
                ts, bs, _ = self.cache["mbsync_first"]
                note = "same runs as 'first'"
            else:
                ts, bs = [], []
                for r in range(self.runs()):
                    mb = peers.Mbsync(self.path("mbsync"), "127.0.0.1", p.port)
                    p.reset()
                    ts.append(mb.sync(self.args.timeout))
                    bs.append(p.snapshot()["total"])
                    self.cache["mbsync_first"] = (ts, bs, mb)
                note = ""
            rows.append(self.res.row("download", measure, "mbsync (first sync)", median(ts),
                                     median(bs), mbps=MB / median(ts),
                                     samples={"s": ts, "bytes": bs}, note=note))
        if self.peers_on and peers.have("offlineimap"):
            ts, bs = [], []
            for r in range(self.runs()):
                oi = peers.OfflineImap(self.path("offlineimap"), "127.0.0.1", p.port)
                p.reset()
                ts.append(oi.sync(self.args.timeout))
                snap = p.snapshot()
                bs.append(snap["total"])
                self.cache["offlineimap"] = oi
            rows.append(self.res.row("download", measure, "offlineimap (first sync)", median(ts),
                                     median(bs), mbps=MB / median(ts),
                                     samples={"s": ts, "bytes": bs},
                                     compress_used=snap["compress"]))
        if self.peers_on and peers.have("interimap"):
            ts, bs = self.interimap_first()
            rows.append(self.res.row("download", measure, "interimap (first sync)", median(ts),
                                     median(bs), mbps=MB / median(ts),
                                     samples={"s": ts, "bytes": bs},
                                     note="IMAP to a local Dovecot"))
        self.peer_rows_ratio("download", measure, base, rows)

    def interimap_first(self, runs=None):
        ts, bs = [], []
        for r in range(runs or self.runs()):
            old = self.cache.get("interimap")
            if old:
                old[1].destroy()
            local = self.new_dovecot("dovecot-interimap-local-%d" % r)
            ii = peers.InterImap(self.path("interimap"), ("127.0.0.1", self.proxy.port),
                                 (local.host, local.port))
            self.proxy.reset()
            ts.append(ii.sync(self.args.timeout))
            bs.append(self.proxy.snapshot()["total"])
            self.cache["interimap"] = (ii, local)
        return ts, bs

    # ---------------------------------------------------------------- phase 3
    def poll_cycles(self, m, proxy, window, interval):
        """bytes and seconds per mailfs poll cycle over a window of polls."""
        off = self.log_size(m)
        proxy.reset()
        time.sleep(window)
        snap = proxy.snapshot()
        bursts = proxy.bursts(gap=min(0.25, interval / 3))
        with open(m.log_path, "rb") as f:
            f.seek(off)
            text = f.read().decode("utf-8", "replace")
        cycles = len(re.findall(r"folders unchanged by the listing", text))
        if cycles == 0:
            cycles = len(bursts)
        durs = [b[1] - b[0] for b in bursts]
        return snap, cycles, bursts, durs

    def watch_cycles(self, proc, proxy, window):
        proxy.reset()
        time.sleep(window)
        snap = proxy.snapshot()
        bursts = proxy.bursts(gap=0.25)
        if proc.poll() is not None:
            raise BenchError("interimap --watch exited with %s" % proc.returncode)
        return snap, bursts

    def resync_set(self, label, proxy, interimap_pair, oi=None, mb=None, big=True):
        """Resync rows for one server: mailfs poll cycle and remount; peers."""
        R = self.runs()
        K = self.args.resync_window
        rows = {}
        # mailfs, steady state: one poll cycle
        m = self.mount("resync-" + label.split()[0], proxy, poll_interval=1)
        per_bytes, per_s, remount_s, remount_b = [], [], [], []
        try:
            self.start_until(m, r"connected, in sync", self.args.timeout, proxy)
            time.sleep(1.5)
            for r in range(R):
                snap, cycles, bursts, durs = self.poll_cycles(m, proxy, K, 1)
                per_bytes.append(snap["total"] / max(1, cycles))
                per_s.append(median(durs))
            # restart with the same state: the cost of a resync from cold
            for r in range(R):
                self.stop(m)
                dt, snap = self.start_until(m, r"connected, in sync", self.args.timeout, proxy)
                remount_s.append(dt)
                remount_b.append(snap["total"])
        finally:
            self.stop(m)
        self.check_mailfs_log(m, "resync " + label)
        rows["mailfs"] = self.res.row(
            "resync", "no-op resync, " + label, "mailfs poll cycle", median(per_s),
            median(per_bytes), samples={"s": per_s, "bytes": per_bytes},
            note="per poll (poll_interval=1, %ds windows); s = network round trip" % K)
        rows["mailfs-remount"] = self.res.row(
            "resync", "no-op resync, " + label, "mailfs remount", median(remount_s),
            median(remount_b), samples={"s": remount_s, "bytes": remount_b},
            note="exec to 'in sync', same state")
        if not self.peers_on:
            return rows
        if mb is not None:
            ts, bs = [], []
            for r in range(R):
                proxy.reset()
                ts.append(mb.sync(self.args.timeout))
                bs.append(proxy.snapshot()["total"])
            rows["mbsync"] = self.res.row("resync", "no-op resync, " + label, "mbsync",
                                          median(ts), median(bs), samples={"s": ts, "bytes": bs})
        if oi is not None:
            for quick in (False, True):
                ts, bs = [], []
                for r in range(R):
                    proxy.reset()
                    ts.append(oi.sync(self.args.timeout, quick=quick))
                    bs.append(proxy.snapshot()["total"])
                key = "offlineimap -q" if quick else "offlineimap"
                rows[key] = self.res.row("resync", "no-op resync, " + label, key,
                                         median(ts), median(bs), samples={"s": ts, "bytes": bs})
        if interimap_pair is not None:
            ii = interimap_pair[0]
            ts, bs = [], []
            for r in range(R):
                proxy.reset()
                ts.append(ii.sync(self.args.timeout))
                bs.append(proxy.snapshot()["total"])
            rows["interimap"] = self.res.row("resync", "no-op resync, " + label, "interimap",
                                             median(ts), median(bs),
                                             samples={"s": ts, "bytes": bs},
                                             note="one-shot run, login included")
            proc = ii.watch(1)
            self.procs.append(proc)
            per_bytes, per_s = [], []
            try:
                time.sleep(3)
                for r in range(R):
                    snap, bursts = self.watch_cycles(proc, proxy, K)
                    per_bytes.append(snap["total"] / max(1, len(bursts)))
                    per_s.append(median([b[1] - b[0] for b in bursts]))
            finally:
                kill_proc(proc)
            rows["interimap-watch"] = self.res.row(
                "resync", "no-op resync, " + label, "interimap --watch=1 cycle", median(per_s),
                median(per_bytes), samples={"s": per_s, "bytes": per_bytes},
                note="per cycle; s = network round trip")
        # ratios: like with like
        pairs = [("mailfs", "interimap-watch"), ("mailfs-remount", "interimap"),
                 ("mailfs-remount", "mbsync"), ("mailfs-remount", "offlineimap"),
                 ("mailfs-remount", "offlineimap -q")]
        for a, b in pairs:
            if a in rows and b in rows and rows[a]["seconds"] and rows[b]["seconds"]:
                rb = rows[b]
                rb["ratio"] = rb["seconds"] / rows[a]["seconds"]
                rb["ratio_text"] = "%s %s time" % (fmt_ratio(rb["ratio"]), rows[a]["tool"])
        return rows

    def phase_resync(self):
        self.main_server()
        N = self.manifest.total
        mb = oi = ii = None
        if self.peers_on:
            if peers.have("mbsync"):
                if "mbsync_first" in self.cache:
                    mb = self.cache["mbsync_first"][2]
                else:
                    mb = peers.Mbsync(self.path("mbsync"), "127.0.0.1", self.proxy.port)
                    mb.sync(self.args.timeout)
            if peers.have("offlineimap"):
                oi = self.cache.get("offlineimap")
                if oi is None:
                    oi = peers.OfflineImap(self.path("offlineimap"), "127.0.0.1", self.proxy.port)
                    oi.sync(self.args.timeout)
            if peers.have("interimap"):
                if "interimap" not in self.cache:
                    self.interimap_first(runs=1)
                ii = self.cache["interimap"]
        label = "%d msgs, %d folders" % (N, self.args.folders)
        rows = self.resync_set(label, self.proxy, ii, oi=oi, mb=mb)
        self.res.plot.setdefault("points", []).append(
            {"messages": N, **{k: v["bytes"] for k, v in rows.items()}})
        self.cache["resync_main"] = rows
        # 75 folders, as in InterIMAP's published benchmark
        F = 75
        n75 = 20 * F
        d = self.new_dovecot("dovecot-75")
        self.seed(d, n75, F, kind="small")
        p75 = self.new_proxy(d)
        ii75 = None
        if self.peers_on and peers.have("interimap"):
            local = self.new_dovecot("dovecot-75-local")
            ii75 = (peers.InterImap(self.path("interimap75"), ("127.0.0.1", p75.port),
                                    (local.host, local.port)), local)
            ii75[0].sync(self.args.timeout)
        rows75 = self.resync_set("%d msgs, %d folders" % (n75, F), p75, ii75)
        self.cache["resync_75"] = rows75
        p75.stop()
        d.destroy()
        if ii75:
            ii75[1].destroy()
        # targets
        r = rows75["mailfs"]
        self.res.target("resync bytes, 75 folders", "under 3 KB per no-op resync",
                        fmt_b(r["bytes"]), r["bytes"] is not None and r["bytes"] < 3 * 1024,
                        "mailfs poll cycle")
        for rs, tag in ((rows75, "75 folders"), (rows, "%d folders" % self.args.folders)):
            a, b = rs.get("mailfs"), rs.get("interimap-watch")
            if a and b:
                self.res.target("resync bytes vs InterIMAP, %s" % tag,
                                "no more bytes than InterIMAP",
                                "%s vs %s (interimap --watch cycle)" % (fmt_b(a["bytes"]),
                                                                         fmt_b(b["bytes"])),
                                a["bytes"] <= b["bytes"])
                if a["seconds"] and b["seconds"]:
                    self.res.target("resync seconds vs InterIMAP, %s" % tag,
                                    "within 1.2x of InterIMAP",
                                    "%s vs %s (%.2fx)" % (fmt_s(a["seconds"]), fmt_s(b["seconds"]),
                                                          a["seconds"] / b["seconds"]),
                                    a["seconds"] <= 1.2 * b["seconds"],
                                    "poll cycle vs --watch cycle")
            a, b = rs.get("mailfs-remount"), rs.get("interimap")
            if a and b:
                self.res.target("resync from cold vs InterIMAP one-shot, %s" % tag,
                                "bytes <= InterIMAP, seconds within 1.2x",
                                "%s / %s vs %s / %s" % (fmt_s(a["seconds"]), fmt_b(a["bytes"]),
                                                        fmt_s(b["seconds"]), fmt_b(b["bytes"])),
                                a["bytes"] <= b["bytes"] and a["seconds"] <= 1.2 * b["seconds"],
                                "mailfs remount vs interimap one-shot (informative)")

    # ---------------------------------------------------------------- phase 4
    def phase_latency(self):
        srv = self.main_server()
        p = self.proxy
        R = max(3, self.runs())
        poll = self.args.latency_poll
        m = self.mount("latency", p, poll_interval=poll)
        flag_ts, inbox_ts, other_ts = [], [], []
        read_errors = []
        try:
            self.start_until(m, r"connected, in sync", self.args.timeout, p)
            with srv.client() as c:
                # flag rename -> server
                cur = os.path.join(m.folder("INBOX"), "cur")
                name = next(n for n in sorted(os.listdir(cur))
                            if re.search(r":2,[A-Z]*S", n) and "F" not in n.split(":2,")[1])
                path = os.path.join(cur, name)
                with open(path, "rb") as f:
                    head = f.read(65536)
                mid = re.search(rb"(?im)^message-id:\s*<([^>]+)>", head).group(1).decode()
                uids = c.search_header("INBOX", "Message-ID", mid)
                if len(uids) != 1:
                    raise BenchError("cannot find %s on the server: %r" % (mid, uids))
                uid = uids[0]
                for r in range(2 * R):
                    base, fl = name.split(":2,")
                    add = "F" not in fl
                    newfl = "".join(sorted(set(fl) | {"F"})) if add else fl.replace("F", "")
                    new = "%s:2,%s" % (base, newfl)
                    t0 = time.monotonic()
                    os.rename(os.path.join(cur, name), os.path.join(cur, new))
                    name = new

                    def shows():
                        return ("\\Flagged" in c.flags("INBOX", uid)) == add
                    wait_for(shows, 30, "the server to show the flag change", interval=0.005)
                    flag_ts.append(time.monotonic() - t0)
                    time.sleep(0.3)
                # server delivery -> readable in the mount
                for folder, out in (("INBOX", inbox_ts), (corpus_gen.folder_names(
                        max(2, self.args.folders))[1], other_ts)):
                    fdir = m.folder(folder)
                    for r in range(R):
                        before = set(listdir2(fdir))
                        msg = corpus_gen.CRLF.join([
                            b"From: Bench Sender <sender@example.org>",
                            b"To: test@example.org",
                            b"Subject: latency probe %d %s" % (r, folder.encode()),
                            b"Message-ID: <latency.%d.%d.%s@bench>" % (r, os.getpid(),
                                                                      folder.encode()),
                            b"", b"x" * 4000, b""])
                        t0 = time.monotonic()
                        c.append(folder, msg)

                        def arrived():
                            for n in listdir2(fdir):
                                if n not in before:
                                    try:
                                        with open(os.path.join(fdir, n), "rb") as f:
                                            data = f.read()
                                    except OSError as e:
                                        read_errors.append((folder, n, e.errno))
                                        raise
                                    if data == msg:
                                        return True
                            return False
                        wait_for(arrived, poll + 30, "delivery to %s in the mount" % folder,
                                 interval=0.005)
                        out.append(time.monotonic() - t0)
                # leave the server as seeded for the phases after this one
                for folder in ("INBOX", corpus_gen.folder_names(max(2, self.args.folders))[1]):
                    for u in c.search_header(folder, "Subject", "latency probe"):
                        c.expunge(folder, u)
        finally:
            self.stop(m)
        self.check_mailfs_log(m, "latency")
        r1 = self.res.row("latency", "flag rename on mount -> server", "mailfs", median(flag_ts),
                          samples={"s": flag_ts}, note="max %s" % fmt_s(max(flag_ts)))
        r2 = self.res.row("latency", "server APPEND -> readable, INBOX", "mailfs", median(inbox_ts),
                          samples={"s": inbox_ts}, note="max %s (IDLE)" % fmt_s(max(inbox_ts)))
        if read_errors:
            import errno as _errno
            self.res.problem(
                "latency: %d read(s) of a just-delivered message failed (%s) before one "
                "succeeded, in %s; the daemon logs 'cannot fetch ...: message N not found'"
                % (len(read_errors), ", ".join(sorted(set(_errno.errorcode.get(e[2], str(e[2]))
                                                         for e in read_errors))),
                   ", ".join(sorted(set(e[0] for e in read_errors)))))
        self.res.row("latency", "server APPEND -> readable, other folder", "mailfs",
                     median(other_ts), samples={"s": other_ts},
                     note="poll_interval=%d, max %s" % (poll, fmt_s(max(other_ts))))
        self.res.target("flag rename to server", "under 1 s", fmt_s(r1["seconds"]),
                        r1["seconds"] < 1.0, "max %s" % fmt_s(max(flag_ts)))
        self.res.target("server delivery to the mount, INBOX", "under 2 s", fmt_s(r2["seconds"]),
                        r2["seconds"] < 2.0, "max %s" % fmt_s(max(inbox_ts)))

    # ---------------------------------------------------------------- phase 5
    def phase_local(self):
        self.main_server()
        man, p = self.manifest, self.proxy
        m = self.mount("local", p, prefetch="all")
        disk = os.path.join(self.path("disk"), ACCOUNT)
        biggest = man.biggest_folder()
        rows = []
        try:
            self.start_until(m, r"prefetch done \(\d+ bodies\)", self.args.timeout, p)
            self.wait_cached(m, man.total_bytes, self.args.timeout)
            sh(["cp", "-a", m.acct, disk], self.args.timeout)
            nm = sh(["bash", "-c", "find %s -type f | wc -l" % shq(m.acct)], 60).strip()
            nd = sh(["bash", "-c", "find %s -type f | wc -l" % shq(disk)], 60).strip()
            if nm != nd or int(nm) != man.total:
                self.res.problem("local reads: the mount has %s files, the disk copy %s, the "
                                 "corpus %d" % (nm, nd, man.total))
            p.reset()
            ops = [
                ("find -type f | wc -l", lambda t: sh(["bash", "-c", "find %s -type f | wc -l"
                                                       % shq(t)], 120)),
                ("ls -l biggest folder (%s, %d)" % (biggest, man.count[biggest]),
                 lambda t: sh(["bash", "-c", "ls -l %s/cur %s/new > /dev/null" % (
                     shq(os.path.join(t, *biggest.split("/"))),
                     shq(os.path.join(t, *biggest.split("/"))))], 120)),
                ("read every file", lambda t: sh(["bash", "-c", "find %s -type f -print0 | "
                                                  "xargs -0 cat > /dev/null" % shq(t)], 300)),
            ]
            if peers.have("notmuch"):
                ops.append(("notmuch new (fresh database)", lambda t: self.notmuch_new(t)))
            if peers.have("neomutt") and peers.have("tmux"):
                ops.append(("neomutt opens %s" % biggest,
                            lambda t: self.neomutt_open(os.path.join(t, *biggest.split("/")))))
            for label, fn in ops:
                samples = {"mount": [], "disk": []}
                for target in (m.acct, disk):       # warm-up, not counted
                    fn(target)
                for r in range(self.runs()):
                    for key, target in (("mount", m.acct), ("disk", disk)):
                        t0 = time.monotonic()
                        v = fn(target)
                        samples[key].append(v if isinstance(v, float) else time.monotonic() - t0)
                a, b = median(samples["mount"]), median(samples["disk"])
                ratio = a / b if b else None
                rows.append(self.res.row("local", label, "mailfs mount (cached)", a,
                                         ratio=ratio, ratio_text="%s disk" % fmt_ratio(ratio),
                                         samples={"s": samples["mount"]}))
                self.res.row("local", label, "same Maildir on local disk", b,
                             samples={"s": samples["disk"]})
            snap = p.snapshot()
            if snap["total"] > 64 * 1024:
                self.res.problem("local reads on a fully cached mount moved %s through the proxy"
                                 % fmt_b(snap["total"]))
        finally:
            self.stop(m)
            kill_tmux(self.tmux_sock)
        self.check_mailfs_log(m, "local")
        worst = max((r for r in rows if r["ratio"]), key=lambda r: r["ratio"], default=None)
        if worst:
            self.res.target("local reads of cached mail", "within 1.5x of local disk",
                            "worst %s (%s)" % (fmt_ratio(worst["ratio"]), worst["measure"]),
                            all(r["ratio"] <= 1.5 for r in rows if r["ratio"]),
                            ", ".join("%s %s" % (r["measure"].split(" (")[0], fmt_ratio(r["ratio"]))
                                      for r in rows if r["ratio"]))

    def notmuch_new(self, tree):
        db = tempfile.mkdtemp(prefix="nm-", dir=self.root)
        conf = os.path.join(db, "config")
        with open(conf, "w") as f:
            f.write("[database]\npath=%s/db\nmail_root=%s\n[new]\ntags=unread;inbox;\n"
                    "ignore=\n[maildir]\nsynchronize_flags=false\n[user]\nname=Bench\n"
                    "primary_email=test@example.org\n" % (db, tree))
        os.makedirs(os.path.join(db, "db"))
        env = dict(os.environ, NOTMUCH_CONFIG=conf, HOME=db)
        t0 = time.monotonic()
        sh(["notmuch", "new", "--quiet"], 600, env=env)
        dt = time.monotonic() - t0
        out = sh(["notmuch", "count", "*"], 60, env=env).strip()
        shutil.rmtree(db, ignore_errors=True)
        if int(out or 0) < self.manifest.total * 0.95:
            self.res.problem("notmuch new on %s indexed %s messages of %d" % (
                tree, out, self.manifest.total))
        return dt

    def neomutt_open(self, folder):
        """Seconds from starting neomutt in tmux to its index on screen."""
        rc = os.path.join(self.root, "muttrc")
        if not os.path.exists(rc):
            with open(rc, "w") as f:
                f.write("set mbox_type=Maildir\nset header_cache=\"\"\nset quit=yes\n"
                        "set help=no\nset beep=no\nset mark_old=no\nset mail_check=0\n"
                        "set timeout=1\nset read_inc=0\nset sort=date\n"
                        "set folder=%s\nset spoolfile=\"\"\n" % self.root)
        sess = "nm%d" % self.seq
        self.seq += 1
        tm = ["tmux", "-L", self.tmux_sock]
        env = dict(os.environ, TERM="xterm-256color", HOME=self.root)
        cmd = "neomutt -n -F %s -f %s" % (shq(rc), shq(folder))
        t0 = time.monotonic()
        subprocess.run(tm + ["new-session", "-d", "-s", sess, "-x", "160", "-y", "50", cmd],
                       env=env, check=True, stdin=subprocess.DEVNULL, timeout=30)
        deadline = t0 + 120
        shown = None
        try:
            while time.monotonic() < deadline:
                r = subprocess.run(tm + ["capture-pane", "-p", "-t", sess], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   stdin=subprocess.DEVNULL, timeout=10)
                screen = r.stdout.decode("utf-8", "replace")
                if "Msgs:" in screen and re.search(r"(?m)^\s*\S*\s*\d+ ", screen):
                    shown = time.monotonic() - t0
                    break
                if r.returncode != 0:
                    raise BenchError("neomutt exited before showing its index")
                time.sleep(0.01)
            if shown is None:
                raise BenchError("neomutt did not show its index within 120 s:\n" + screen)
        finally:
            subprocess.run(tm + ["send-keys", "-t", sess, "q"], env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
            end = time.monotonic() + 10
            while time.monotonic() < end:
                r = subprocess.run(tm + ["has-session", "-t", sess], env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=10)
                if r.returncode != 0:
                    break
                time.sleep(0.05)
            subprocess.run(tm + ["kill-session", "-t", sess], env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
        return shown

    # ---------------------------------------------------------------- phase 6
    def phase_scale(self):
        R = self.runs()
        for S in self.args.scale:
            name = "dovecot-scale-%d" % S
            d = self.new_dovecot(name)
            man, tw, ti = self.seed(d, S, self.args.folders, kind="small")
            p = self.new_proxy(d)
            label = "%s msgs" % human_n(S)
            timeout = max(self.args.timeout, 120 + S // 1000 * 2)
            ts, rss, db, bs = [], [], [], []
            ok_all, detail = True, ""
            m = None
            for r in range(R):
                m = self.mount("scale%d" % S, p)
                try:
                    dt, snap = self.start_until(m, r"connected, in sync", timeout, p)
                    ts.append(dt)
                    bs.append(snap["total"])
                    rss.append(vm_hwm(m.proc.pid))
                    if r == R - 1:
                        ok, detail = self.verify_listing(m, man)
                        ok_all &= ok
                        rss[-1] = max(rss[-1] or 0, vm_hwm(m.proc.pid) or 0)
                finally:
                    if r < R - 1:
                        self.stop(m)
                sdb = sum(os.path.getsize(os.path.join(m.state[0], f))
                          for f in os.listdir(m.state[0]) if f.startswith("mailfs.db"))
                db.append(sdb)
            # keep the last mount for a no-op poll-cycle measurement
            remount = None
            try:
                snap, cycles, bursts, durs = (None, 0, [], [])
                self.stop(m)
                m2 = self.mount("scale%d-poll" % S, p, state=m.state, poll_interval=1)
                try:
                    rdt, rsnap = self.start_until(m2, r"connected, in sync", timeout, p)
                    remount = (rdt, rsnap["total"])
                    time.sleep(1.5)
                    snap, cycles, bursts, durs = self.poll_cycles(m2, p, self.args.resync_window, 1)
                    rss.append(vm_hwm(m2.proc.pid))
                finally:
                    self.stop(m2)
                poll_b = snap["total"] / max(1, cycles)
            except BenchError as e:
                self.res.problem("scale %s: poll-cycle measurement failed: %s" % (label, e))
                poll_b = None
            self.check_mailfs_log(m, "scale " + label)
            if not ok_all:
                self.res.problem("scale %s: listing wrong: %s" % (label, detail))
            row = self.res.row("scale", "first listing, " + label, "mailfs", median(ts),
                               median(bs), samples={"s": ts, "bytes": bs, "rss": rss, "db": db},
                               note="peak RSS %s, store %s" % (fmt_b(max(x for x in rss if x)),
                                                               fmt_b(median(db))),
                               rss=max(x for x in rss if x), store=median(db),
                               messages=S)
            point = {"messages": S, "mailfs": poll_b}
            if remount:
                point["mailfs-remount"] = remount[1]
            mrow = None
            if self.peers_on and peers.have("mbsync") and S <= self.args.peer_scale_max:
                mts, mbs = [], []
                mb = None
                for r in range(R):
                    if mb and not self.args.keep:
                        shutil.rmtree(mb.workdir, ignore_errors=True)
                    mb = peers.Mbsync(self.path("mbsync-scale"), "127.0.0.1", p.port)
                    p.reset()
                    mts.append(mb.sync(timeout * 10))
                    mbs.append(p.snapshot()["total"])
                mrow = self.res.row("scale", "first listing, " + label, "mbsync (first sync)",
                                    median(mts), median(mbs), samples={"s": mts, "bytes": mbs})
                self.peer_rows_ratio("scale", "", row, [mrow])
                nts, nbs = [], []
                for r in range(R):
                    p.reset()
                    nts.append(mb.sync(timeout))
                    nbs.append(p.snapshot()["total"])
                point["mbsync"] = median(nbs)
                self.res.row("scale", "no-op resync, " + label, "mbsync", median(nts),
                             median(nbs), samples={"s": nts, "bytes": nbs})
                if not self.args.keep:
                    shutil.rmtree(mb.workdir, ignore_errors=True)
            if poll_b is not None:
                self.res.row("scale", "no-op resync, " + label, "mailfs poll cycle", None, poll_b,
                             note="bytes per poll cycle")
            if remount:
                self.res.row("scale", "no-op resync, " + label, "mailfs remount", remount[0],
                             remount[1], note="1 run")
            if self.peers_on and peers.have("offlineimap") and S <= self.args.interimap_scale_max:
                oi = peers.OfflineImap(self.path("offlineimap-scale"), "127.0.0.1", p.port)
                oi.sync(timeout * 10)
                ots, obs = [], []
                for r in range(R):
                    p.reset()
                    ots.append(oi.sync(timeout))
                    obs.append(p.snapshot()["total"])
                point["offlineimap"] = median(obs)
                self.res.row("scale", "no-op resync, " + label, "offlineimap", median(ots),
                             median(obs), samples={"s": ots, "bytes": obs})
                if not self.args.keep:
                    shutil.rmtree(oi.workdir, ignore_errors=True)
            if self.peers_on and peers.have("interimap") and S <= self.args.interimap_scale_max:
                local = self.new_dovecot("dovecot-scale-%d-local" % S)
                ii = peers.InterImap(self.path("interimap-scale"), ("127.0.0.1", p.port),
                                     (local.host, local.port))
                ii.sync(timeout * 10)
                its, ibs = [], []
                for r in range(R):
                    p.reset()
                    its.append(ii.sync(timeout))
                    ibs.append(p.snapshot()["total"])
                point["interimap"] = median(ibs)
                self.res.row("scale", "no-op resync, " + label, "interimap", median(its),
                             median(ibs), samples={"s": its, "bytes": ibs})
                local.destroy()
            self.res.plot.setdefault("points", []).append(point)
            # targets
            if S == 100000:
                self.res.target("first listing of 100,000 messages", "under 10 s",
                                fmt_s(row["seconds"]), row["seconds"] < 10)
                if mrow:
                    self.res.target("first listing of 100,000 vs mbsync first sync",
                                    ">= 20x faster", fmt_ratio(mrow["ratio"]),
                                    mrow["ratio"] >= 20)
            if S == 1000000:
                self.res.target("1M messages: daemon peak RSS", "under 200 MB",
                                fmt_b(row["rss"]), row["rss"] < 200 * 1024 * 1024)
                self.res.target("1M messages: first listing", "under 2 minutes",
                                fmt_s(row["seconds"]), row["seconds"] < 120)
            p.stop()
            d.destroy()
            if not self.args.keep:
                shutil.rmtree(d.root_dir, ignore_errors=True)
                for w in list(self.mounts):
                    if w.workdir.startswith(os.path.join(self.root, "mailfs-scale%d" % S)):
                        shutil.rmtree(w.workdir, ignore_errors=True)

    # ---------------------------------------------------------------- all
    def run(self):
        only = self.args.only
        self.res.info.update(machine_info())
        self.res.info["load_start"] = os.getloadavg()
        self.res.info["started"] = datetime.datetime.now().isoformat(timespec="seconds")
        self.res.info["args"] = {k: v for k, v in vars(self.args).items()}
        self.res.info["mailfs_binary"] = self.binary
        t0 = time.monotonic()
        for ph in PHASES:
            if ph not in only:
                continue
            log("=== phase %s" % ph)
            ts = time.monotonic()
            try:
                getattr(self, "phase_" + ph)()
            except (BenchError, peers.PeerError, AssertionError, OSError,
                    dovecot_mod.DovecotError) as e:
                self.res.problem("phase %s failed: %s" % (ph, e))
                traceback.print_exc()
                self.cleanup_mounts()
            self.res.info.setdefault("phase_seconds", {})[ph] = round(time.monotonic() - ts, 1)
        self.res.info["load_end"] = os.getloadavg()
        self.res.info["total_seconds"] = round(time.monotonic() - t0, 1)
        self.compress_note()
        self.download_target()

    def compress_note(self):
        pairs = [("first", "mailfs", "mailfs (compress=no)"),
                 ("download", "mailfs prefetch=all", "mailfs prefetch=all (compress=no)")]
        for ph, a, b in pairs:
            ra = next((r for r in self.res.rows if r["phase"] == ph and r["tool"] == a), None)
            rb = next((r for r in self.res.rows if r["phase"] == ph and r["tool"] == b), None)
            if ra and rb:
                if not ra.get("compress_used"):
                    ra["note"] = (ra["note"] + "; " if ra["note"] else "") + \
                        "COMPRESS not negotiated"
                    if ph == "download":
                        self.res.notes.append(
                            "compress = yes: the daemon did not send COMPRESS DEFLATE (the "
                            "server offers it), so compress=yes and compress=no are the same "
                            "code path: bytes %s vs %s." % (fmt_b(ra["bytes"]), fmt_b(rb["bytes"])))
                if ra["bytes"] and rb["bytes"]:
                    rb["ratio"] = rb["bytes"] / ra["bytes"]
                    rb["ratio_text"] = "%s compress=yes bytes" % fmt_ratio(rb["ratio"])

    def download_target(self):
        a = next((r for r in self.res.rows if r["phase"] == "download"
                  and r["tool"] == "mailfs prefetch=all"), None)
        b = next((r for r in self.res.rows if r["phase"] == "download"
                  and r["tool"] == "mbsync (first sync)"), None)
        if a and b:
            self.res.target("full download", "at least as fast as mbsync",
                            "%s vs %s (%.1f vs %.1f MB/s)" % (fmt_s(a["seconds"]), fmt_s(b["seconds"]),
                                                             a["mbps"], b["mbps"]),
                            a["seconds"] <= b["seconds"])
        if "scale" in self.args.only and 1000000 not in self.args.scale:
            self.res.target("1M messages: RSS under 200 MB, first listing under 2 minutes",
                            "(opt-in: --scale ...,1000000)", "not run", None)

    def cleanup_mounts(self):
        for m in self.mounts:
            try:
                m.cleanup()
            except Exception:  # noqa: BLE001
                pass

    def cleanup(self):
        for p in self.procs:
            kill_proc(p)
        self.cleanup_mounts()
        kill_tmux(self.tmux_sock)
        for p in self.proxies:
            try:
                p.stop()
            except Exception:  # noqa: BLE001
                pass
        for d in self.dovecots:
            try:
                d.destroy()
            except Exception:  # noqa: BLE001
                pass
        for m in self.mounts:
            if os.path.ismount(m.mnt):
                subprocess.run([FUSERMOUNT, "-u", "-z", m.mnt], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not self.args.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            log("kept %s" % self.root)


# --------------------------------------------------------------------------
# helpers

def shq(s):
    return "'" + s.replace("'", "'\\''") + "'"


def sh(cmd, timeout, env=None):
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, env=env)
    if r.returncode != 0:
        raise BenchError("%s exited with %d: %s" % (" ".join(cmd)[:200], r.returncode,
                                                    r.stderr.decode("utf-8", "replace")[-1000:]))
    return r.stdout.decode("utf-8", "replace")


def wait_for(pred, timeout, what, interval=0.01):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            if pred():
                return
        except Exception as e:  # noqa: BLE001
            last = e
        if time.monotonic() > deadline:
            raise BenchError("timed out after %ss waiting for %s (%r)" % (timeout, what, last))
        time.sleep(interval)


def listdir2(fdir):
    out = []
    for sub in ("new", "cur"):
        try:
            out += [os.path.join(sub, n) for n in os.listdir(os.path.join(fdir, sub))]
        except OSError:
            pass
    return out


def kill_proc(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(10)


def kill_tmux(sock):
    if shutil.which("tmux"):
        subprocess.run(["tmux", "-L", sock, "kill-server"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)


def human_n(n):
    if n >= 1000000 and n % 1000000 == 0:
        return "%dM" % (n // 1000000)
    if n >= 1000 and n % 1000 == 0:
        return "%dk" % (n // 1000)
    return str(n)


def machine_info():
    info = {"nproc": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            info["cpu"] = m.group(1).strip() if m else None
    except OSError:
        pass
    try:
        with open("/etc/debian_version") as f:
            info["debian"] = f.read().strip()
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_kb"] = int(re.search(r"MemTotal:\s*(\d+)", f.read()).group(1))
    except OSError:
        pass
    info["versions"] = {t: peers.tool_version(t) for t in
                        ("dovecot", "mbsync", "offlineimap", "interimap", "notmuch", "neomutt",
                         "tmux", "gnuplot")}
    try:
        info["mailfs_commit"] = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=10).stdout.decode().strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "fs", "net",
                                "cache", "include"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                               timeout=10).stdout.decode().strip()
        if dirty:
            info["mailfs_commit"] += " (+ uncommitted C changes)"
    except Exception:  # noqa: BLE001
        pass
    return info


def make_plot(res, out_dir):
    """resync.png: bytes per no-op resync against mailbox size (log-log)."""
    pts = sorted(res.plot.get("points", []), key=lambda p: p["messages"])
    if not pts or not shutil.which("gnuplot"):
        return None
    series = [("mailfs", "mailfs poll cycle"), ("mailfs-remount", "mailfs remount"),
              ("mbsync", "mbsync"), ("offlineimap", "offlineimap"),
              ("offlineimap -q", "offlineimap -q"), ("interimap", "interimap (one-shot)"),
              ("interimap-watch", "interimap --watch cycle")]
    dat = os.path.join(out_dir, "resync.dat")
    plots = []
    with open(dat, "w") as f:
        idx = 0
        for key, title in series:
            rows = [(p["messages"], p[key]) for p in pts if p.get(key)]
            if not rows:
                continue
            f.write("# %s\n" % title)
            for x, y in rows:
                f.write("%d %d\n" % (x, y))
            f.write("\n\n")
            plots.append("'%s' index %d using 1:2 with linespoints lw 2 title '%s'"
                         % (dat, idx, title))
            idx += 1
    if not plots:
        return None
    png = os.path.join(out_dir, "resync.png")
    gp = os.path.join(out_dir, "resync.gp")
    with open(gp, "w") as f:
        f.write("set terminal pngcairo size 1000,560 font 'sans,10'\n"
                "set output '%s'\n"
                "set title 'No-op resync cost against mailbox size (bytes on the wire, "
                "both directions)'\n"
                "set xlabel 'messages on the server'\nset ylabel 'bytes per no-op resync'\n"
                "set logscale xy\nset grid\nset key outside right top\n"
                "plot %s\n" % (png, ", ".join(plots)))
    r = subprocess.run(["gnuplot", gp], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    if r.returncode != 0:
        res.problem("gnuplot failed: " + r.stdout.decode("utf-8", "replace")[-500:])
        return None
    return png


# --------------------------------------------------------------------------
# main

def parse_args(argv):
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=2000, help="corpus size (default 2000)")
    ap.add_argument("--folders", type=int, default=10, help="folders (default 10)")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure; medians (default 3)")
    ap.add_argument("--only", default=",".join(PHASES),
                    help="comma-separated phases: " + ",".join(PHASES))
    ap.add_argument("--scale", default="10000,100000",
                    help="scale points (messages), e.g. 10000,100000,1000000")
    ap.add_argument("--no-peers", action="store_true", help="measure mailfs only")
    ap.add_argument("--out", default=os.path.join(REPO, "bench-results"))
    ap.add_argument("--write-md", action="store_true", help="(re)write BENCHMARKS.md")
    ap.add_argument("--md-path", default=os.path.join(REPO, "BENCHMARKS.md"))
    ap.add_argument("--seed", type=int, default=1, help="corpus seed (default 1)")
    ap.add_argument("--timeout", type=int, default=600, help="bound on any single wait (s)")
    ap.add_argument("--resync-window", type=int, default=10,
                    help="seconds of polling per resync window (default 10)")
    ap.add_argument("--latency-poll", type=int, default=5,
                    help="poll_interval of the latency mount (default 5)")
    ap.add_argument("--peer-scale-max", type=int, default=100000,
                    help="largest scale point mbsync runs at (default 100000)")
    ap.add_argument("--interimap-scale-max", type=int, default=10000,
                    help="largest scale point InterIMAP runs at (default 10000)")
    ap.add_argument("--tmpdir", default="/var/tmp")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    bad = [x for x in args.only if x not in PHASES]
    if bad:
        ap.error("unknown phase(s): %s" % ", ".join(bad))
    args.scale = [int(x) for x in args.scale.split(",") if x.strip()] if args.scale else []
    args.out = os.path.abspath(args.out)
    if args.folders < 1 or args.messages < 1:
        ap.error("--messages and --folders must be positive")
    return args


def main(argv):
    args = parse_args(argv)
    reason = fuse_skip_reason()
    if reason:
        print("bench: cannot mount: %s" % reason, file=sys.stderr)
        return 2
    if not os.path.exists(dovecot_mod.DOVECOT_BIN):
        print("bench: dovecot is not installed", file=sys.stderr)
        return 2
    binary = mailfs_binary()
    if not os.access(binary, os.X_OK):
        print("bench: %s is missing (bash scripts/build)" % binary, file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    bench = Bench(args)

    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    log("work dir %s; mailfs %s" % (bench.root, binary))
    rc = 0
    try:
        bench.run()
    except KeyboardInterrupt:
        bench.res.problem("interrupted")
        rc = 130
    finally:
        bench.cleanup()
    res = bench.res
    png = make_plot(res, args.out)
    table = res.table()
    with open(os.path.join(args.out, "table.txt"), "w") as f:
        f.write(table)
    data = {"info": res.info, "rows": res.rows, "targets": res.targets, "notes": res.notes,
            "problems": res.problems, "plot": res.plot, "plot_png": png}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(data, f, indent=1, default=str)
    sys.stdout.write(table)
    if args.write_md:
        import report
        report.write_md(args.md_path, data, table, png)
        log("wrote %s" % args.md_path)
    if any(p.startswith("phase ") and " failed" in p for p in res.problems):
        rc = rc or 1
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
