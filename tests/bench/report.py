"""BENCHMARKS.md from a bench run's results (scripts/bench --write-md)."""

import os
import shutil

METHOD = """\
## Method

Everything runs on 127.0.0.1 and is started and stopped by `scripts/bench`
in a fresh directory under /var/tmp (removed afterwards):

* **Server.** A throwaway Dovecot (`tests/dovecot.py`, Maildir with
  `LAYOUT=fs`) with `imap_zlib` loaded, so it offers `COMPRESS=DEFLATE`, and
  the IDLE keepalive at Dovecot's default of 2 minutes. The corpus
  (`tests/bench/corpus_gen.py`) is deterministic (seeded RNG): log-normal
  sizes (median ~8 KB, tail to several MB, a few over 1 MB), threads
  (`In-Reply-To`/`References`), base64 attachments, and ~1% malformed
  messages (no Message-ID, raw 8-bit headers, 2,000-character lines, no
  Date, an unterminated multipart), spread over `--folders` folders with
  nesting, INBOX the largest. It is written straight into Dovecot's Maildir
  (names `TIME.M<i>P<seed>.bench,S=<size>,W=<size>:2,<flags>`, mtime =
  INTERNALDATE). Dovecot then indexes every folder once, with the same
  FETCH items as a first listing, before anything is timed, so no client
  pays for Dovecot's first indexing.
* **Wire bytes.** Every client (mailfs, mbsync, OfflineIMAP, InterIMAP's
  remote side) connects through a byte-counting TCP proxy
  (`tests/bench/proxy.py`); "bytes" are both directions, counted from the
  moment the measured command starts, after a reset. The proxy also tells
  whether a client sent `COMPRESS DEFLATE`.
* **Runs.** Every figure is the median of `--runs` runs (default 3); the
  samples are in `results.json`. Each mailfs run starts from an empty
  `state_dir` and `cache_dir` unless said otherwise; each peer first sync
  starts from an empty directory. The "ratio" column compares with the
  peer measured in the same run, on the same server, minutes apart:
  absolute times on a shared 2-core machine are noisy, ratios less so.
* **Peers** use their defaults (compression, pipelining, connections)
  except what is needed to reach a plain-text loopback server: mbsync
  (`SSLType None`, `AuthMechs LOGIN`, `Patterns *`, `Create Near`,
  `SyncState *`, `SubFolders Verbatim`; a second channel with `MaxSize 1k`
  as its closest thing to "listing only"), OfflineIMAP (`ssl = no`,
  `starttls = no`, local `sep = /`), InterIMAP (remote = the bench
  Dovecot through the proxy, local = a second throwaway Dovecot, one-shot
  runs, and `--watch=1` for the steady state).

What each phase measures:

1. **first**: mailfs from exec of `mount.mailfs -f` to the log line
   "connected, in sync" (every folder listed; the listing is then checked:
   every message present with its exact `st_size`); against mbsync's first
   sync (downloads every body) and mbsync with `MaxSize 1k`.
2. **download**: mailfs with `prefetch = all` from exec to "prefetch done
   (N bodies)"; mailfs with `prefetch = none` reading every file with
   `find -type f -print0 | xargs -0 cat` after the listing; against the
   first syncs of mbsync, OfflineIMAP and InterIMAP. MB/s = corpus bytes /
   seconds.
3. **resync** (nothing changed on either side): mailfs's steady state is a
   poll cycle of an open connection. It is measured on a mount with
   `poll_interval = 1`: the proxy counts bytes over a window of
   `--resync-window` seconds and divides by the number of poll cycles the
   daemon logged in that window ("N of M folders unchanged by the
   listing", `-o debug=sync`); seconds = the median duration of the
   network exchange of one cycle (first request byte to last response
   byte, from the proxy's timestamps). The like-for-like peer is
   `interimap --watch=1`, measured the same way. A cold resync is also
   given: mailfs remounted on the same state (exec to "in sync", login
   included) against one-shot runs of mbsync, OfflineIMAP (full and `-q`)
   and InterIMAP. The same is repeated on a second server with 75 folders
   (InterIMAP's published benchmark used 75 mailboxes).
4. **latency**: a rename on the mount adding or removing `F` until a
   second IMAP client (direct, not through the proxy) sees `\\Flagged`
   change; an APPEND by that client until the new file is listed on the
   mount and reads back byte-exact, in INBOX (IDLE) and in another folder
   (bounded by `poll_interval`, 5 s here).
5. **local**: a mount with `prefetch = all` after "prefetch done", against
   a `cp -a` of the same tree on the local disk (same names, same files),
   warm page cache, one untimed warm-up each, then runs alternating mount
   and disk: `find -type f | wc -l`, `ls -l` of the biggest folder's
   `cur` and `new`, reading every file, `notmuch new` into a fresh
   database outside the tree (`database.path` elsewhere, `mail_root` the
   tree, `synchronize_flags=false`), and neomutt opening the biggest folder
   (`neomutt -n -F rc -f DIR` in tmux, no header cache, from start until
   the index with `Msgs:` is on the screen).
6. **scale**: small (0.6-3 KB) messages written straight into the Maildir
   over the same folders: daemon peak RSS (`VmHWM` of the mount.mailfs
   process), the store (`state_dir/mailfs.db*`) and first-listing time;
   mbsync's first sync and no-op resync at the same size (up to
   `--peer-scale-max`), InterIMAP's no-op resync up to
   `--interimap-scale-max`. 1M messages is opt-in (`--scale
   10000,100000,1000000`).
"""


BEGIN = "<!-- analysis: hand-written, kept by scripts/bench --write-md -->"
END = "<!-- /analysis -->"


def _kept_block(path):
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i:
        return None
    return text[i + len(BEGIN):j].strip("\n")


def _targets_md(targets):
    out = ["| target | goal | measured | met |", "|---|---|---|---|"]
    for t in targets:
        met = {True: "**met**", False: "**missed**", None: "not run"}[t["met"]]
        detail = (" (%s)" % t["detail"]) if t["detail"] else ""
        out.append("| %s | %s | %s%s | %s |" % (t["target"], t["goal"], t["measured"], detail,
                                              met))
    return "\n".join(out)


def write_md(path, data, table, png):
    info = data["info"]
    v = info.get("versions", {})
    args = info.get("args", {})
    corpus = info.get("corpus", {})
    lines = ["# mailfs benchmarks", "",
             "Made by `scripts/bench` (issue #7); rerun with `scripts/bench --write-md`.",
             "The figures below are from one run on the machine described; they are",
             "medians of %s runs, and the ratios compare with peers measured in the same"
             % args.get("runs"),
             "run. No test asserts any of them.", ""]
    lines += ["## Machine and run", "",
              "* %s cores (%s), %s GiB RAM, kernel %s, Debian %s; shared with other"
              % (info.get("nproc"), info.get("cpu"),
                 round(info.get("mem_total_kb", 0) / 1024 / 1024),
                 info.get("kernel"), info.get("debian")),
              "  work while it ran: load average %s at the start, %s at the end."
              % (" ".join("%.2f" % x for x in info.get("load_start", [])),
                 " ".join("%.2f" % x for x in info.get("load_end", []))),
              "* mailfs %s (`%s`)." % (info.get("mailfs_commit"), _binpath(info, path)),
              "* %s; %s; offlineimap %s; %s; %s; %s; %s." % (
                  v.get("dovecot") and "Dovecot " + v["dovecot"], v.get("mbsync"),
                  v.get("offlineimap"), v.get("interimap"), v.get("notmuch"),
                  v.get("neomutt"), v.get("tmux")),
              "* Command: `scripts/bench %s` (%s s in all)." % (
                  " ".join(_cmdline(args)), info.get("total_seconds")),
              ""]
    if corpus:
        lines += ["* Corpus: %d messages, %.1f MB, %d folders, median %d B, largest %.1f MB,"
                  % (corpus["messages"], corpus["bytes"] / 1e6, corpus["folders"],
                     corpus["median_size"], corpus["max_size"] / 1e6),
                  "  %d over 1 MB, %d with attachments, %d replies, %d malformed."
                  % (corpus["over_1MB"], corpus["attachments"], corpus["replies"],
                     corpus["malformed"]), ""]
    lines += ["## Results", "", "```", table.rstrip("\n"), "```", ""]
    if png:
        dst = os.path.join(os.path.dirname(path), "bench-results", os.path.basename(png))
        rel = os.path.relpath(png, os.path.dirname(path))
        if not rel.startswith(".."):
            lines += ["![no-op resync cost against mailbox size](%s)" % rel, ""]
        else:
            lines += ["Plot of no-op resync bytes against mailbox size: `%s`." % png, ""]
        del dst
    pts = _plot_table(data.get("plot") or {})
    if pts:
        lines += ["Bytes per no-op resync against mailbox size (the data of the plot):", "",
                  pts, ""]
    lines += ["## Targets", "", _targets_md(data["targets"]), ""]
    if data.get("notes"):
        lines += ["## Notes", ""] + ["* " + n for n in data["notes"]] + [""]
    if data.get("problems"):
        lines += ["## Problems seen in this run", ""] + \
            ["* " + p.replace("\n", " ") for p in data["problems"]] + [""]
    # A hand-written reading of the figures, kept across rewrites.
    kept = _kept_block(path)
    lines += [BEGIN, kept or "## Reading the figures\n\n(No analysis written yet.)", END, ""]
    lines += [METHOD]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def _binpath(info, path):
    b = info.get("mailfs_binary", "?")
    rel = os.path.relpath(b, os.path.dirname(os.path.abspath(path)))
    return b if rel.startswith("..") else rel


def _plot_table(plot):
    pts = sorted(plot.get("points", []), key=lambda p: p["messages"])
    keys = [("mailfs", "mailfs poll cycle"), ("mailfs-remount", "mailfs remount"),
            ("interimap-watch", "interimap --watch"), ("interimap", "interimap"),
            ("mbsync", "mbsync"), ("offlineimap -q", "offlineimap -q"),
            ("offlineimap", "offlineimap")]
    keys = [(k, t) for k, t in keys if any(p.get(k) for p in pts)]
    if not pts or not keys:
        return None
    out = ["| messages | " + " | ".join(t for _, t in keys) + " |",
           "|---:|" + "---:|" * len(keys)]
    for p in pts:
        out.append("| %d | " % p["messages"] + " | ".join(
            ("%d B" % p[k]) if p.get(k) else "-" for k, _ in keys) + " |")
    return "\n".join(out)


def _cmdline(args):
    out = []
    defaults = {"messages": 2000, "folders": 10, "runs": 3, "scale": [10000, 100000]}
    for k in ("messages", "folders", "runs"):
        if args.get(k) is not None and args.get(k) != defaults[k]:
            out.append("--%s %s" % (k, args[k]))
    if args.get("scale") and args["scale"] != defaults["scale"]:
        out.append("--scale %s" % ",".join(str(x) for x in args["scale"]))
    if args.get("only") and len(args["only"]) < 6:
        out.append("--only %s" % ",".join(args["only"]))
    if args.get("no_peers"):
        out.append("--no-peers")
    out.append("--write-md")
    return out


if __name__ == "__main__":
    import json
    import sys
    d = json.load(open(sys.argv[1]))
    table = open(os.path.join(os.path.dirname(sys.argv[1]), "table.txt")).read()
    write_md(sys.argv[2], d, table, d.get("plot_png"))
    shutil.copy  # noqa: B018
