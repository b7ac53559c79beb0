"""Deterministic benchmark corpus for scripts/bench.

Everything is a pure function of (n, folders, seed): the same call writes the
same bytes, names and mtimes on every machine.

    folder_names(m)                       -> ["INBOX", "Archive", "Archive/2019", ...]
    generate(n, m, seed=1, kind="mixed")  -> iterator of Msg(folder, data, flags, date, uid_hint)
    write_maildir(maildir_root, n, m, seed=1, kind="mixed", layout="fs") -> Manifest
    prewarm(client_factory, folders)      -> let Dovecot index every folder once

kind="mixed" is the realistic corpus: log-normal sizes (median ~8 KB, a few
over 1 MB, clamped to 6 MB), threads (Re: with In-Reply-To/References),
base64 attachments, and ~1% malformed real-world messages (no Message-ID,
raw 8-bit headers, a 2,000-character unfolded line, no Date, a multipart
whose closing boundary is missing).  kind="small" is for the scale points
(metadata only): 600 B - 3 KB text messages, same headers and threads.

Messages are written straight into Dovecot's Maildir (LAYOUT=fs: INBOX is
the Maildir root, folder "a/b" is Maildir/a/b) with CRLF line endings and
Maildir names ``TIME.M<i>P<seed>.bench,S=<size>,W=<size>:2,<flags>`` (W= is
the RFC822.SIZE; the files are CRLF so both are the file size), mtime =
INTERNALDATE.  Dovecot indexes them on first access; prewarm() makes that
happen once, outside any timed section.
"""

import base64
import collections
import math
import os
import random
import re

CRLF = b"\r\n"
BASE_TIME = 1577836800          # 2020-01-01T00:00:00Z
MIN_SIZE = 1024
MAX_SIZE = 6 * 1024 * 1024

Msg = collections.namedtuple("Msg", "folder data flags date index")


class Manifest:
    """What write_maildir() wrote: per-folder counts and byte totals."""

    def __init__(self):
        self.count = collections.Counter()
        self.bytes = collections.Counter()
        self.sizes = collections.defaultdict(list)
        self.malformed = 0
        self.attachments = 0
        self.replies = 0
        self.max_size = 0

    @property
    def total(self):
        return sum(self.count.values())

    @property
    def total_bytes(self):
        return sum(self.bytes.values())

    def biggest_folder(self):
        return max(self.count, key=lambda f: (self.count[f], f == "INBOX"))

    def over(self, n):
        return sum(1 for v in self.sizes.values() for s in v if s > n)

    def as_dict(self):
        allsizes = sorted(s for v in self.sizes.values() for s in v)
        med = allsizes[len(allsizes) // 2] if allsizes else 0
        return {"messages": self.total, "bytes": self.total_bytes,
                "folders": len(self.count), "median_size": med,
                "max_size": self.max_size, "over_1MB": self.over(1 << 20),
                "malformed": self.malformed, "attachments": self.attachments,
                "replies": self.replies,
                "per_folder": {f: self.count[f] for f in sorted(self.count)}}


# --------------------------------------------------------------------------
# folders

_TOPS = ["Archive", "Lists", "Projects", "Work", "Family", "Receipts", "Travel",
         "Notes", "Sent", "Drafts", "Newsletters", "Friends"]


def folder_names(m):
    """m folder names: INBOX first, then top-level folders, each followed by
    a few children (nesting up to two levels below the top)."""
    names = ["INBOX"]
    t = 0
    while len(names) < m:
        top = _TOPS[t % len(_TOPS)] + ("" if t < len(_TOPS) else str(t // len(_TOPS)))
        names.append(top)
        k = 0
        while len(names) < m and k < (t % 4) + 1:
            child = "%s/%s" % (top, _child_name(top, k))
            names.append(child)
            if len(names) < m and k == 1:
                names.append(child + "/old")
            k += 1
        t += 1
    return names[:m]


def _child_name(top, k):
    if top.startswith("Archive"):
        return str(2019 + k)
    if top.startswith("Lists"):
        return ["debian-devel", "linux-kernel", "notmuch", "dovecot", "fuse-devel"][k % 5]
    return "%s-%d" % (top.lower(), k + 1)


def _folder_weights(names):
    """INBOX gets ~30%; the rest follow a Zipf-like law."""
    w = [0.0] * len(names)
    if len(names) == 1:
        return [1.0]
    w[0] = 0.30
    rest = [1.0 / (i + 1) ** 0.8 for i in range(len(names) - 1)]
    s = sum(rest)
    for i, r in enumerate(rest):
        w[i + 1] = 0.70 * r / s
    return w


# --------------------------------------------------------------------------
# content pools (built once per seed: slicing them is what makes 100k fast)

_WORDS = ("the of and to in is that for it as was with be by on not he this are or "
          "his from at which but have an they you were her she there been one all "
          "mail folder server sync mount kernel patch review merge release build "
          "test cache queue flag message thread reply meeting invoice travel "
          "schedule report draft question answer update status budget deadline").split()


class _Pools:
    def __init__(self, seed):
        rng = random.Random(seed * 7919 + 13)
        # ~256 KB of text lines, wrapped at 72
        words = [rng.choice(_WORDS) for _ in range(48000)]
        lines, cur = [], []
        n = 0
        for w in words:
            if n + len(w) + 1 > 72:
                lines.append(" ".join(cur).encode())
                cur, n = [], 0
            cur.append(w)
            n += len(w) + 1
        self.text_lines = lines
        self.text = CRLF.join(lines) + CRLF
        # ~8 MB of base64 (76-column lines) of random bytes
        raw = rng.getrandbits(8 * 6 * 1024 * 1024).to_bytes(6 * 1024 * 1024, "little")
        b64 = base64.b64encode(raw)
        self.b64 = CRLF.join(b64[i:i + 76] for i in range(0, len(b64), 76)) + CRLF
        self.line_len_text = 0


_POOL_CACHE = {}


def _pools(seed):
    p = _POOL_CACHE.get(seed)
    if p is None:
        p = _POOL_CACHE[seed] = _Pools(seed)
    return p


def _slice_lines(pool, start, size):
    """About size bytes of whole CRLF lines of pool starting near start."""
    if size <= 0:
        return b""
    out = []
    got = 0
    L = len(pool)
    pos = start % L
    pos = pool.find(CRLF, pos)
    pos = 0 if pos < 0 else pos + 2
    while got < size:
        end = min(L, pos + (size - got))
        nl = pool.find(CRLF, end)
        if nl < 0:
            chunk = pool[pos:]
            pos = 0
        else:
            chunk = pool[pos:nl + 2]
            pos = nl + 2
            if pos >= L:
                pos = 0
        out.append(chunk)
        got += len(chunk)
    return b"".join(out)


# --------------------------------------------------------------------------
# messages

def _rfc2822(t):
    days = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]  # 1970-01-01 was a Thursday
    import time as _time
    tm = _time.gmtime(t)
    mon = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()[tm.tm_mon - 1]
    return "%s, %02d %s %04d %02d:%02d:%02d +0000" % (
        days[(t // 86400) % 7], tm.tm_mday, mon, tm.tm_year, tm.tm_hour, tm.tm_min, tm.tm_sec)


_PEOPLE = ["Alice Example <alice@example.org>", "Bob Builder <bob@example.net>",
           "Carol Chen <carol@example.com>", "Dmitri Ivanov <dmitri@example.ru>",
           "Eve Martin <eve@example.fr>", "Farid Haddad <farid@example.de>",
           "Grace Ho <grace@lists.example.org>", "mailing-list <list@lists.example.org>"]


def _size_for(rng, kind, i, n):
    if kind == "small":
        return int(rng.uniform(600, 3000))
    # a few big ones, spread deterministically: ~1 in 400, at least 2 if n >= 200
    if n >= 50 and (i % 397 == 131 or (n < 800 and i in (n // 3, (2 * n) // 3))):
        return int(rng.uniform(1.1, 5.5) * 1024 * 1024)
    s = int(rng.lognormvariate(math.log(8192), 1.15))
    return max(MIN_SIZE, min(MAX_SIZE, s))


def generate(n, m, seed=1, kind="mixed"):
    """Yield n Msg tuples over folder_names(m), deterministically."""
    names = folder_names(m)
    weights = _folder_weights(names)
    rng = random.Random(seed)
    pools = _pools(seed)
    cum = []
    acc = 0.0
    for w in weights:
        acc += w
        cum.append(acc)
    last_in_folder = {}       # folder -> (msgid, subject, refs) for threads
    t = BASE_TIME
    for i in range(n):
        r = rng.random() * acc
        fi = 0
        while fi < len(cum) - 1 and r > cum[fi]:
            fi += 1
        folder = names[fi]
        t += rng.randint(30, 3600)
        size = _size_for(rng, kind, i, n)
        malformed = kind == "mixed" and (i % 97 == 41)
        msgid = "bench.%d.%d@mailfs.example" % (seed, i)
        sender = _PEOPLE[rng.randrange(len(_PEOPLE))]
        to = "Test User <test@example.org>"
        subject = "Benchmark message %d: %s %s" % (
            i, rng.choice(_WORDS), rng.choice(_WORDS))
        hdr = []
        prev = last_in_folder.get(folder)
        reply = prev is not None and rng.random() < 0.35
        if reply:
            pid, psubj, prefs = prev
            subject = psubj if psubj.startswith("Re: ") else "Re: " + psubj
            refs = (prefs + " <%s>" % pid).strip()
            refs_list = refs.split()
            if len(refs_list) > 8:
                refs = " ".join(refs_list[-8:])
            hdr.append(b"In-Reply-To: <" + pid.encode() + b">")
            hdr.append(b"References: " + refs.encode())
        else:
            refs = ""
        head = [b"Return-Path: <" + sender.split("<")[1].rstrip(">").encode() + b">",
                b"Received: from mx.example.org by imap.example.org with LMTP; " + _rfc2822(t).encode(),
                b"From: " + sender.encode(), b"To: " + to.encode(),
                b"Subject: " + subject.encode(), b"Date: " + _rfc2822(t).encode(),
                b"Message-ID: <" + msgid.encode() + b">"] + hdr + [b"MIME-Version: 1.0"]
        variant = None
        if malformed:
            variant = ("no-msgid", "8bit", "longline", "no-date", "badmime")[(i // 97) % 5]
            if variant == "no-msgid":
                head = [h for h in head if not h.startswith(b"Message-ID:")]
            elif variant == "8bit":
                head = [h for h in head if not h.startswith((b"Subject:", b"From:"))]
                head.insert(2, "From: Jürgen Müller <jürgen@exämple.de>".encode("utf-8"))
                head.insert(3, b"Subject: caf\xe9 cr\xe8me \xa4 latin-1 raw " + str(i).encode())
            elif variant == "longline":
                head.append(b"X-Long: " + b"x" * 2000)
            elif variant == "no-date":
                head = [h for h in head if not h.startswith(b"Date:")]
        attach = kind == "mixed" and (size > 40000 or rng.random() < 0.15)
        head_bytes = CRLF.join(head) + CRLF
        if attach:
            boundary = b"=_bench_%d_%d" % (seed, i)
            text_part = _slice_lines(pools.text, rng.randrange(len(pools.text)),
                                     min(2000, max(200, size // 20)))
            remain = max(0, size - len(head_bytes) - len(text_part) - 400)
            att = _slice_lines(pools.b64, rng.randrange(len(pools.b64)), remain)
            ext = rng.choice(["pdf", "jpg", "png", "zip", "docx"])
            ctype = {"pdf": b"application/pdf", "jpg": b"image/jpeg", "png": b"image/png",
                     "zip": b"application/zip",
                     "docx": b"application/vnd.openxmlformats-officedocument.wordprocessingml.document"}[ext]
            body = (b"Content-Type: multipart/mixed; boundary=\"" + boundary + b"\"" + CRLF + CRLF +
                    b"This is a multi-part message in MIME format." + CRLF + CRLF +
                    b"--" + boundary + CRLF +
                    b"Content-Type: text/plain; charset=utf-8" + CRLF +
                    b"Content-Transfer-Encoding: 7bit" + CRLF + CRLF + text_part + CRLF +
                    b"--" + boundary + CRLF +
                    b"Content-Type: " + ctype + b"; name=\"file%d.%s\"" % (i, ext.encode()) + CRLF +
                    b"Content-Disposition: attachment; filename=\"file%d.%s\"" % (i, ext.encode()) + CRLF +
                    b"Content-Transfer-Encoding: base64" + CRLF + CRLF + att)
            if variant != "badmime":
                body += b"--" + boundary + b"--" + CRLF
            data = head_bytes + body
        else:
            text = _slice_lines(pools.text, rng.randrange(len(pools.text)),
                                max(60, size - len(head_bytes) - 80))
            if variant == "longline":
                text = b"y" * 1500 + b" end of long line" + CRLF + text
            if variant == "badmime":
                body = (b"Content-Type: multipart/alternative; boundary=\"missing\"" + CRLF + CRLF
                        + text)
            else:
                body = (b"Content-Type: text/plain; charset=utf-8" + CRLF +
                        b"Content-Transfer-Encoding: 8bit" + CRLF + CRLF + text)
            data = head_bytes + body
        fl = rng.random()
        flags = ""
        if fl < 0.70:
            flags = "S"
            if rng.random() < 0.12:
                flags = "RS"
            if rng.random() < 0.05:
                flags = "F" + flags
        elif fl < 0.72:
            flags = "F"
        last_in_folder[folder] = (msgid, subject, refs)
        yield Msg(folder, data, flags, t, (i, malformed, attach, reply))


# --------------------------------------------------------------------------
# writing straight into Dovecot's Maildir

def folder_path(maildir_root, folder, layout="fs"):
    if folder.upper() == "INBOX":
        return maildir_root
    if layout == "fs":
        return os.path.join(maildir_root, *folder.split("/"))
    return os.path.join(maildir_root, "." + folder.replace("/", "."))


def maildir_name(t, i, seed, size, flags):
    return "%d.M%dP%d.bench,S=%d,W=%d:2,%s" % (t, i, seed, size, size, flags)


def write_maildir(maildir_root, n, m, seed=1, kind="mixed", layout="fs", uid=None, gid=None):
    """Write n messages over m folders straight into a Dovecot Maildir.

    Seen messages go to cur/ (":2,S..."), unseen to new/ (Dovecot moves them
    to cur/ on first access).  uid/gid: chown every file and directory (the
    Dovecot mail user); None leaves the owner alone.  Returns a Manifest.
    """
    man = Manifest()
    made = set()

    def mkfolder(folder):
        if folder in made:
            return
        parts = folder.split("/")
        for k in range(1, len(parts)):
            mkfolder("/".join(parts[:k]))
        p = folder_path(maildir_root, folder, layout)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(p, sub), exist_ok=True)
            if uid is not None:
                os.chown(os.path.join(p, sub), uid, gid)
        if uid is not None:
            os.chown(p, uid, gid)
        made.add(folder)

    for folder in folder_names(m):
        mkfolder(folder)
        man.count[folder] += 0
    for msg in generate(n, m, seed, kind):
        i, malformed, attach, reply = msg.index
        size = len(msg.data)
        sub = "cur" if "S" in msg.flags else "new"
        name = maildir_name(msg.date, i, seed, size, msg.flags)
        if sub == "new":
            name = name.rsplit(":2,", 1)[0] if not msg.flags else name
        path = os.path.join(folder_path(maildir_root, msg.folder, layout), sub, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, msg.data)
            os.utime(fd, (msg.date, msg.date))
            if uid is not None:
                os.fchown(fd, uid, gid)
        finally:
            os.close(fd)
        man.count[msg.folder] += 1
        man.bytes[msg.folder] += size
        man.sizes[msg.folder].append(size)
        man.max_size = max(man.max_size, size)
        man.malformed += bool(malformed)
        man.attachments += bool(attach)
        man.replies += bool(reply)
    if uid is not None:
        os.chown(maildir_root, uid, gid)
    return man


def prewarm(client, folders):
    """Let Dovecot build its index and cache for every folder once, with the
    same FETCH items a first listing asks for (so no client pays for
    Dovecot's first indexing of files written behind its back)."""
    for f in folders:
        c = client.count(f)
        if not c:
            continue
        client.select(f, readonly=True)
        typ, _ = client.imap.uid(
            "FETCH", "1:*",
            "(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        client.imap.untagged_responses = {}
        if typ != "OK":
            raise RuntimeError("prewarm FETCH on %s failed" % f)


if __name__ == "__main__":
    import sys
    import tempfile
    import time
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    m = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    kind = sys.argv[3] if len(sys.argv) > 3 else "mixed"
    d = tempfile.mkdtemp(prefix="corpus-")
    t0 = time.monotonic()
    man = write_maildir(d, n, m, kind=kind)
    print("%d messages, %.1f MB in %.2fs -> %s" % (man.total, man.total_bytes / 1e6,
                                                   time.monotonic() - t0, d))
    print(man.as_dict())
