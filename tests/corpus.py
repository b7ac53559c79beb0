"""Deterministic sample mail for the mailfs tests and the demo.

Everything here is a pure function of its arguments: the same call gives the
same bytes on every machine, so tests can compare what the mount shows with
what was seeded.

Messages are built with CRLF line endings (the IMAP wire form), except the
deliberately LF-only sample.  A few facts about Dovecot 2.3 that matter for
byte-exact comparisons (see tests/integration/test_harness.py, which checks
them):

* APPEND of a message with bare LF line endings is stored and FETCHed back
  with CRLF: BODY[] and RFC822.SIZE are those of the CRLF form.  Use
  ``wire_form(msg)`` to get the bytes the server will return.
* NUL bytes are returned by FETCH BODY[] as 0x80 (Dovecot never sends NULs in
  a plain literal); RFC822.SIZE is unchanged.  ``wire_form`` applies this too.

Public API:
    message(...)              -> bytes   one RFC 5322 message
    plain_messages(n, ...)    -> [bytes]
    thread(n, ...)            -> [bytes]
    multipart_attachment(...) -> bytes
    big_message(size)         -> bytes   (default 5 MB)
    malformed_messages()      -> {name: bytes}
    wire_form(bytes)          -> bytes   what Dovecot FETCHes back
    sample_mailbox(big=True)  -> {folder: [(bytes, flags, date)]}
    message_id(bytes)         -> str | None
"""

import base64
import datetime
import hashlib
import random

CRLF = b"\r\n"
EPOCH = datetime.datetime(2024, 3, 1, 9, 0, 0, tzinfo=datetime.timezone.utc)

__all__ = [
    "message", "plain_messages", "thread", "multipart_attachment",
    "big_message", "malformed_messages", "wire_form", "sample_mailbox",
    "message_id", "date_at", "EPOCH",
]


def date_at(i, base=EPOCH, step_minutes=37):
    """The i-th deterministic date (aware datetime, whole seconds)."""
    return base + datetime.timedelta(minutes=step_minutes * i)


def _rfc2822_date(dt):
    days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug",
              "Sep", "Oct", "Nov", "Dec"]
    off = dt.utcoffset() or datetime.timedelta(0)
    mins = int(off.total_seconds() // 60)
    sign = "+" if mins >= 0 else "-"
    mins = abs(mins)
    return "%s, %02d %s %04d %02d:%02d:%02d %s%02d%02d" % (
        days[dt.weekday()], dt.day, months[dt.month - 1], dt.year,
        dt.hour, dt.minute, dt.second, sign, mins // 60, mins % 60)


def _b(x):
    return x if isinstance(x, bytes) else x.encode("utf-8")


def _lines(text):
    """Body text (str or bytes, any line ending) -> CRLF bytes."""
    data = _b(text).replace(b"\r\n", b"\n")
    return data.replace(b"\n", CRLF)


def message(subject, body="Hello.\n", *, sender="Alice Example <alice@example.org>",
            to="Test User <test@example.org>", date=None, msgid=None,
            headers=(), raw_headers=b""):
    """A simple text/plain message with CRLF line endings.

    ``msgid``: the Message-ID without brackets; ``False`` for none.
    ``headers``: extra (name, value) pairs; ``raw_headers``: bytes appended to
    the header block as they are (must end in CRLF if non-empty).
    """
    date = date or EPOCH
    h = [(b"From", _b(sender)), (b"To", _b(to)), (b"Subject", _b(subject)),
         (b"Date", _b(_rfc2822_date(date)))]
    if msgid is None:
        msgid = "%s@corpus.mailfs.test" % hashlib.sha1(
            _b(subject) + _b(body) + _b(_rfc2822_date(date))).hexdigest()[:16]
    if msgid is not False:
        h.append((b"Message-ID", b"<" + _b(msgid) + b">"))
    for k, v in headers:
        h.append((_b(k), _b(v)))
    h.append((b"MIME-Version", b"1.0"))
    if not any(k.lower() == b"content-type" for k, _ in h):
        h.append((b"Content-Type", b"text/plain; charset=utf-8"))
        h.append((b"Content-Transfer-Encoding", b"8bit"))
    head = b"".join(k + b": " + v + CRLF for k, v in h) + raw_headers
    return head + CRLF + _lines(body)


_WORDS = ("mail filesystem maildir fuse imap server client message folder "
          "flag seen replied draft trash sync queue cache inode rename "
          "delivery header body attachment thread reply forward archive "
          "project design review meeting notes lunch coffee").split()


def _text(rng, lines):
    out = []
    for _ in range(lines):
        out.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 12))))
    return "\n".join(out) + "\n"


def plain_messages(n, *, seed=1, prefix="Message", start=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.append(message("%s %d: %s" % (prefix, start + i, rng.choice(_WORDS)),
                           _text(rng, rng.randint(1, 20)),
                           date=date_at(start + i),
                           msgid="plain-%d-%d@corpus.mailfs.test" % (seed, start + i)))
    return out


def thread(n=4, *, topic="Design of the write-back queue", seed=2):
    rng = random.Random(seed)
    ids = []
    out = []
    people = ["Alice Example <alice@example.org>", "Bob Example <bob@example.org>",
              "Carol Example <carol@example.org>"]
    for i in range(n):
        mid = "thread-%d-%d@corpus.mailfs.test" % (seed, i)
        hdrs = []
        if ids:
            hdrs.append(("In-Reply-To", "<%s>" % ids[-1]))
            hdrs.append(("References", " ".join("<%s>" % x for x in ids)))
        subj = topic if i == 0 else "Re: " + topic
        body = _text(rng, 5)
        if ids:
            body += "\n" + "".join("> " + line + "\n" for line in _text(rng, 3).splitlines())
        out.append(message(subj, body, sender=people[i % len(people)],
                           date=date_at(100 + i), msgid=mid, headers=hdrs))
        ids.append(mid)
    return out


def multipart_attachment(*, seed=3, attach_size=30000):
    rng = random.Random(seed)
    payload = bytes(rng.getrandbits(8) for _ in range(attach_size))
    b64 = base64.encodebytes(payload).replace(b"\n", CRLF)
    boundary = b"=-=mailfs-corpus-boundary-%d=-=" % seed
    body = (b"This is a multi-part message in MIME format." + CRLF + CRLF +
            b"--" + boundary + CRLF +
            b"Content-Type: text/plain; charset=utf-8" + CRLF + CRLF +
            b"Please find the report attached." + CRLF + CRLF +
            b"--" + boundary + CRLF +
            b"Content-Type: application/octet-stream; name=\"report.bin\"" + CRLF +
            b"Content-Transfer-Encoding: base64" + CRLF +
            b"Content-Disposition: attachment; filename=\"report.bin\"" + CRLF + CRLF +
            b64 + CRLF +
            b"--" + boundary + b"--" + CRLF)
    return message("Report with attachment", b"", date=date_at(200),
                   msgid="multipart-%d@corpus.mailfs.test" % seed,
                   headers=[("Content-Type",
                             b"multipart/mixed; boundary=\"" + boundary + b"\"")]
                   ) + body


def utf8_subject():
    return message("=?UTF-8?B?%s?=" % base64.b64encode(
        "Grüße aus Köln — 日本語の件名".encode()).decode(),
        "Grüße, ünïcödé body — 日本語\n", date=date_at(210),
        msgid="utf8-subject@corpus.mailfs.test")


def latin1_subject():
    return message("=?ISO-8859-1?Q?Caf=E9_cr=E8me_br=FBl=E9e?=",
                   "Caf\xe9 cr\xe8me\n".encode("latin-1"), date=date_at(211),
                   msgid="latin1-subject@corpus.mailfs.test",
                   headers=[("Content-Type", "text/plain; charset=iso-8859-1")])


def big_message(size=5 * 1024 * 1024, *, seed=4):
    """A message of exactly ``size`` bytes (CRLF, 76-char base64 lines)."""
    head = message("Big message (%d bytes)" % size, b"", date=date_at(220),
                   msgid="big-%d-%d@corpus.mailfs.test" % (size, seed),
                   headers=[("Content-Type", "application/octet-stream"),
                            ("Content-Transfer-Encoding", "base64")])
    rng = random.Random(seed)
    need = size - len(head)
    line = 78  # 76 chars + CRLF
    nlines = need // line
    raw = bytes(rng.getrandbits(8) for _ in range(nlines * 57))
    b64 = base64.b64encode(raw)
    body = CRLF.join(b64[i:i + 76] for i in range(0, len(b64), 76)) + CRLF
    rest = need - len(body)
    if rest > 0:
        # pad with a final short line of '=' free filler ending in CRLF
        if rest >= 2:
            body += b"A" * (rest - 2) + CRLF
        else:
            body += b"A" * rest
    msg = head + body
    assert len(msg) == size, (len(msg), size)
    return msg


def malformed_messages():
    """Real-world broken mail.  name -> bytes.  Deterministic."""
    m = {}
    m["no-message-id"] = message("No Message-ID here", "Body without an id.\n",
                                 msgid=False, date=date_at(300))
    m["broken-header"] = (
        b"From: Broken <broken@example.org>" + CRLF +
        b"To: test@example.org" + CRLF +
        b"Subject: broken header block" + CRLF +
        b"Date: " + _b(_rfc2822_date(date_at(301))) + CRLF +
        b"Message-ID: <broken-header@corpus.mailfs.test>" + CRLF +
        b"This line has no colon at all" + CRLF +
        b"X-Folded: first part" + CRLF +
        b"  \t  folded garbage ::: <<<>>> \"unbalanced" + CRLF +
        b"\t" + CRLF +
        b"X-Empty:" + CRLF +
        CRLF +
        b"The header block above is broken." + CRLF)
    m["8bit-header"] = (
        b"From: J\xc3\xbcrgen M\xfcller <juergen@example.org>" + CRLF +
        b"To: test@example.org" + CRLF +
        b"Subject: Raw 8-bit: \xc3\xa4\xc3\xb6\xc3\xbc and latin1 \xe4\xf6\xfc \xff\xfe" + CRLF +
        b"Date: " + _b(_rfc2822_date(date_at(302))) + CRLF +
        b"Message-ID: <8bit-header@corpus.mailfs.test>" + CRLF +
        CRLF +
        b"Body \xe9\xe8 with 8-bit bytes and no MIME headers." + CRLF)
    rng = random.Random(5)
    long_line = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789 ")
                      for _ in range(200 * 1024))
    m["long-line"] = message("A 200 KB single line", b"", date=date_at(303),
                             msgid="long-line@corpus.mailfs.test") + long_line + CRLF
    m["nul-bytes"] = message("NUL bytes in body", b"", date=date_at(304),
                             msgid="nul-bytes@corpus.mailfs.test") + (
        b"before NUL\x00after NUL" + CRLF + b"\x00\x00\x00" + CRLF + b"end" + CRLF)
    m["lf-only"] = message("LF-only line endings", "line one\nline two\n",
                           date=date_at(305),
                           msgid="lf-only@corpus.mailfs.test").replace(CRLF, b"\n")
    m["empty-body"] = message("Empty body", b"", date=date_at(306),
                              msgid="empty-body@corpus.mailfs.test")
    m["duplicate-id-1"] = message("Duplicate Message-ID (first)", "first copy\n",
                                  date=date_at(307),
                                  msgid="duplicate@corpus.mailfs.test")
    m["duplicate-id-2"] = message("Duplicate Message-ID (second)", "second copy\n",
                                  date=date_at(308),
                                  msgid="duplicate@corpus.mailfs.test")
    return m


def wire_form(msg):
    """The bytes Dovecot returns for FETCH BODY[] of an APPENDed ``msg``.

    Bare LF becomes CRLF; NUL becomes 0x80.  For well-formed CRLF messages
    without NULs this is the identity.
    """
    out = msg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return out.replace(b"\x00", b"\x80")


def message_id(msg):
    """The Message-ID (without brackets) of a message, or None."""
    head = msg.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    for line in head.replace(b"\r\n", b"\n").split(b"\n"):
        if line[:11].lower() == b"message-id:":
            v = line[11:].strip()
            return v.strip(b"<>").decode("ascii", "replace")
    return None


def sample_mailbox(big=True):
    """folder -> [(bytes, flags tuple, date)], deterministic.

    Folder names use '/' as the hierarchy separator and plain UTF-8; the IMAP
    helpers in tests/dovecot.py encode them to modified UTF-7.  ``big``
    includes the 5 MB message (in Archive/2024).
    """
    def d(i):
        return date_at(i)

    inbox = []
    plains = plain_messages(20, seed=11, prefix="Inbox note")
    for i, msg in enumerate(plains):
        flags = ()
        if i % 3 == 0:
            flags = ("\\Seen",)
        if i % 5 == 0:
            flags = flags + ("\\Flagged",)
        if i % 7 == 0:
            flags = ("\\Seen", "\\Answered")
        inbox.append((msg, flags, d(i)))
    for j, msg in enumerate(thread(4)):
        inbox.append((msg, ("\\Seen",) if j < 3 else (), d(100 + j)))
    inbox.append((multipart_attachment(), ("\\Seen",), d(200)))
    inbox.append((utf8_subject(), (), d(210)))
    inbox.append((latin1_subject(), ("\\Seen",), d(211)))
    mal = malformed_messages()
    for k in ("no-message-id", "8bit-header", "duplicate-id-1"):
        inbox.append((mal[k], (), d(300)))

    archive_2024 = [(m, ("\\Seen",), d(400 + i))
                    for i, m in enumerate(plain_messages(5, seed=12, prefix="Archived 2024"))]
    if big:
        archive_2024.append((big_message(), ("\\Seen",), d(220)))
    archive = [(m, ("\\Seen",), d(450 + i))
               for i, m in enumerate(plain_messages(2, seed=13, prefix="Archived"))]
    design = [(m, ("\\Seen", "\\Answered") if i == 0 else (), d(100 + i))
              for i, m in enumerate(thread(3, topic="mailfs design", seed=14))]
    projects = [(m, (), d(500)) for m in plain_messages(1, seed=15, prefix="Project")]
    malformed = [(mal[k], (), d(301 + i)) for i, k in enumerate(
        ("broken-header", "long-line", "nul-bytes", "lf-only", "empty-body",
         "duplicate-id-2"))]
    drafts = [(message("Unfinished draft", "Dear ...\n", date=d(600),
                       msgid="draft-1@corpus.mailfs.test"), ("\\Draft",), d(600))]
    japanese = [(message("=?UTF-8?B?%s?=" % base64.b64encode("こんにちは".encode()).decode(),
                         "日本語の本文\n", date=d(610),
                         msgid="ja-1@corpus.mailfs.test"), (), d(610))]
    sent = [(m, ("\\Seen",), d(700 + i))
            for i, m in enumerate(plain_messages(3, seed=16, prefix="Sent"))]
    return {
        "INBOX": inbox,
        "Archive": archive,
        "Archive/2024": archive_2024,
        "Projects": projects,
        "Projects/mailfs": [],
        "Projects/mailfs/design": design,
        "Malformed": malformed,
        "Entwürfe": drafts,
        "日本語": japanese,
        "Sent": sent,
        "Trash": [],
        "Junk": [],
        "Drafts": [],
    }


if __name__ == "__main__":
    box = sample_mailbox()
    for folder, msgs in box.items():
        print("%-28s %3d messages %9d bytes" % (
            folder, len(msgs), sum(len(m) for m, _, _ in msgs)))
