#!/usr/bin/python3
"""Write the seed corpora in tests/fuzz/corpus/<target>/ (run from anywhere;
idempotent: files are named by content hash).  Real-world inputs: IMAP
server responses as Dovecot, Gmail, Exchange and Cyrus send them, Maildir
names as mutt, Dovecot, notmuch and mailfs write them, folder names from
servers, modified UTF-7 names, and mailfs.conf files."""

import hashlib
import os

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- IMAP
BODY = (b"Return-Path: <a@example.org>\r\nMessage-ID: <x1@example.org>\r\n"
        b"Subject: hi\r\nFrom: A <a@example.org>\r\n\r\nbody line\r\n")
IMAP = [
    b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN] Dovecot (Debian) ready.\r\n",
    b"* CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES "
    b"MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 "
    b"CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE "
    b"SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE\r\n"
    b"a1 OK Pre-login capabilities listed, post-login capabilities have more.\r\n",
    b"a2 OK [CAPABILITY IMAP4rev1 IDLE MOVE UIDPLUS CONDSTORE QRESYNC] Logged in\r\n",
    b"a3 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
    b'* LIST (\\HasNoChildren) "/" INBOX\r\n* LIST (\\HasNoChildren \\Trash) "/" Trash\r\n'
    b'* LIST (\\HasChildren \\Noselect) "/" Archive\r\n* LIST (\\HasNoChildren) "/" "Archive/2024"\r\n'
    b'* LIST (\\HasNoChildren) "/" "Entw&APw-rfe"\r\n* LIST (\\HasNoChildren) "/" "&ZeVnLIqe-"\r\n'
    b'a4 OK List completed (0.001 + 0.000 secs).\r\n',
    b'* LIST (\\HasNoChildren) "." {11}\r\nweird"name\\\r\n* LIST () NIL "flat"\r\na5 OK done\r\n',
    b'* LIST (\\Marked \\HasNoChildren) "/" INBOX\r\n* STATUS INBOX (MESSAGES 231 UIDNEXT 44292 UIDVALIDITY 1700000000 UNSEEN 3 HIGHESTMODSEQ 90060)\r\na6 OK done\r\n',
    b"* STATUS \"Sent\" (MESSAGES 0 UIDNEXT 1 UIDVALIDITY 3857529045 SIZE 0)\r\na7 OK Status completed.\r\n",
    b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded)\r\n"
    b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded \\*)] Flags permitted.\r\n"
    b"* 172 EXISTS\r\n* 1 RECENT\r\n* OK [UNSEEN 12] First unseen.\r\n* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"
    b"* OK [UIDNEXT 4392] Predicted next UID\r\n* OK [HIGHESTMODSEQ 715194045007] Highest\r\n"
    b"a8 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n",
    b"* OK [CLOSED] Previous mailbox closed.\r\n* VANISHED (EARLIER) 41,43:116,118,120:211,214:540\r\n"
    b"* 49 FETCH (UID 117 FLAGS (\\Seen \\Answered) MODSEQ (90060115194045001))\r\n"
    b"a9 OK [READ-WRITE] Select completed.\r\n",
    b"* 1 FETCH (UID 1 FLAGS (\\Seen) RFC822.SIZE 1234 INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" MODSEQ (12121231000))\r\n"
    b"* 2 FETCH (UID 2 FLAGS () RFC822.SIZE 99 INTERNALDATE \" 1-Mar-2024 09:00:00 +0000\")\r\n"
    b"b1 OK Fetch completed (0.001 + 0.000 secs).\r\n",
    b"* 1 FETCH (UID 5 BODY[] {%d}\r\n%s)\r\nb2 OK Fetch completed.\r\n" % (len(BODY), BODY),
    b"* 3 FETCH (UID 7 BODY[HEADER.FIELDS (MESSAGE-ID)] {35}\r\nMessage-ID: <x1@example.org>\r\n\r\n)\r\nb3 OK done\r\n",
    b"* 1 FETCH (UID 9 BINARY[] ~{5}\r\nab\x00cd FLAGS (\\Seen))\r\nb4 OK done\r\n",
    b"* 1 FETCH (BODY[]<0> {0}\r\n UID 3)\r\n* 2 FETCH (BODY[] NIL UID 4)\r\nb5 OK\r\n",
    b"* 1 FETCH (UID 5 BODY[] {10}\r\n0123456789 BODY[HEADER] {3}\r\nabc)\r\nb6 OK\r\n",
    b"b7 OK [APPENDUID 3857529045 4392] Append completed.\r\n",
    b"+ OK\r\nb8 OK [APPENDUID 1 2] done\r\n",
    b"+ idling\r\n* 173 EXISTS\r\n* 5 EXPUNGE\r\n* 7 FETCH (FLAGS (\\Seen) UID 99)\r\nDONE\r\nb9 OK Idle completed.\r\n",
    b"* OK [COPYUID 38505 304,319:320 3956:3958] Moved UIDs.\r\n* 2 EXPUNGE\r\n* 2 EXPUNGE\r\nc1 OK Move completed.\r\n",
    b"c2 NO [TRYCREATE] Mailbox doesn't exist: Dest\r\n",
    b"c3 BAD Error in IMAP command UID: Invalid arguments.\r\n",
    b"* BYE Server shutting down.\r\n",
    b"* BYE Disconnected for inactivity.\r\n",
    b"* ESEARCH (TAG \"c4\") UID ALL 1:3,5,7:9 COUNT 7\r\nc4 OK Search completed.\r\n",
    b"* SEARCH 2 84 882\r\nc5 OK SEARCH completed\r\n",
    b"* SEARCH\r\nc6 OK SEARCH completed\r\n",
    b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\nc7 OK Namespace completed.\r\n",
    b"* ENABLED CONDSTORE QRESYNC\r\nc8 OK Enabled.\r\n",
    b"* ID (\"name\" \"Dovecot\")\r\nc9 OK ID completed.\r\n",
    b"* PREAUTH [CAPABILITY IMAP4rev1] logged in as test\r\n",
    b"* OK [ALERT] System shutdown in 10 minutes\r\n",
    b"* OK Gimap ready for requests from 192.0.2.1 a1mb123456\r\n",
    b"* 12 FETCH (X-GM-MSGID 1278455344230334865 X-GM-THRID 1266894439832287888 X-GM-LABELS (\\Inbox \\Sent Important \"Muy Importante\") UID 4)\r\n",
    b"* OK The Microsoft Exchange IMAP4 service is ready. [TQBXAFAAMgA4ADQAQwBBADAAMAAwADIALgBlAHUAcgBwAHIAZAAwADIALgBwAHIAbwBkAC4AbwB1AHQAbABvAG8AawAuAGMAbwBtAA==]\r\n",
    b"* 1 FETCH (UID 1 ENVELOPE (\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \"IMAP4rev1 WG mtg summary\" ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) NIL NIL ((NIL NIL \"imap\" \"cac.washington.edu\")) NIL NIL NIL \"<B27397-0100000@cac.washington.edu>\"))\r\n",
    b"* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 3028 92))\r\n",
    b"* 1 FETCH (FLAGS (\\Seen) UID 1)\n* 2 FETCH (FLAGS () UID 2)\nd1 OK bare LF\n",
    b"* 1 FETCH (UID 1 FLAGS (((((((((((((((((((((((((((((((((x)))))))))))))))))))))))))))))))))\r\n",
    b"* 1 FETCH (UID 1 BODY[] {99999999999999999999}\r\n",
    b"* 1 FETCH (UID 1 BODY[] {18446744073709551615}\r\n",
    b"* 1 FETCH (UID 1 BODY[] {5+}\r\nhello)\r\n",
    b"* 1 FETCH (UID 1 BODY[] {-1}\r\n",
    b"d2 OK [UIDNEXT 4294967296] overflow\r\n* 4294967296 EXISTS\r\n",
    b"* OK [HIGHESTMODSEQ 18446744073709551616] too big\r\n",
    b'* LIST (\\HasNoChildren) "/" "a\\"b\\\\c"\r\n',
    b"* 1 FETCH (UID 1 FLAGS (\\Seen)\r\n",
    b"+\r\n",
    b"+ \r\n",
    b"+ YGgGCSqGSIb3EgECAgIBAAD/////6jcyG4GE3KkTzBeBiVHeceP2CWY0SR0fAQAgAAQEBAQ=\r\n",
    b"* STATUS {5}\r\nINBOX (MESSAGES 3)\r\n",
    b"* 1 FETCH (UID 1 BODY[] {3}\r\nabc BODY[1] {3}\r\ndef BODY[2] {3}\r\nghi)\r\nd3 OK\r\n",
    b"*\r\n",
    b"* \r\n",
    b"d4\r\n",
    b"d5 OK\r\n",
    b"* OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE] hi\r\n",
    b"* OK [PERMANENTFLAGS ()] No permanent flags permitted\r\n",
    b"* NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n",
    b"* OK [UNAVAILABLE] Temporary failure\r\n",
]
for i, data in enumerate(IMAP):
    for opt in (0x00, 0x01, 0x21, 0x11, 0x51, 0x81, 0xb1):
        put("fuzz_imap_parser", bytes([opt, (i * 37 + opt) & 0xff, (i + opt) & 7]) + data)

# ---------------------------------------------------------------- Maildir names
NAMES = [
    "1700000000.M42.mailfs,S=1234:2,S", "1700000000.M42.mailfs,S=1234:2,FS",
    "1700000000.M42.mailfs,S=1234", "1700000000.M42.mailfs,S=1234:2,",
    "1234567890.M20046P2137Q1.host,S=2170,W=2219:2,RS",
    "1234567890.M20046P2137Q1.host,S=2170,W=2219:2,Sa",
    "1708000000.123_4.host:2,SRFTDP", "1708000000.123_4.host:2,TSRPFD",
    "1708000000.123_4.host:2,SSSS", "1708000000.123_4.host:2,Sabc",
    "1708000000.123_4.host:2,zyxSA", "1708000000.123_4.host:2,S,foo",
    "1708000000.123_4.host:1,experimental", "1708000000.123_4.host:3,x",
    "1708000000.123_4.host:2", "1708000000.123_4.host:", "a:2,S:2,F",
    "x", ".hidden:2,S", "a/b:2,S", ":2,S", "neomutt-host-1000-123-456",
    "1400000000.R3a2b1c0d.host:2,", "1400000000.V801I2004e1M123.host:2,S",
    "msg.%2F:2,S", "\xc3\xa9t\xc3\xa9:2,S", "tab\there:2,S", "sp ace:2,F",
    "1.2.3,S=5:2,ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "k9.0.test", "k9.1.test:2,S", "u" * 250 + ":2,S", "u" * 255,
    "1700000000.M1.mailfs,S=1:2,S\x01",
]
for n in NAMES:
    put("fuzz_maildir_names", n)

# ---------------------------------------------------------------- folder names
FOLDERS = [
    ("/", "INBOX"), ("/", "inbox/sub"), ("/", "Archive/2024"), ("/", "Entwürfe"),
    ("/", "日本語"), ("/", "Projects/mailfs/design"), (".", "INBOX.Sent"),
    (".", "INBOX.Archive.2024"), ("/", ".hidden"), ("/", ".."), ("/", "a/../b"),
    ("/", "cur"), ("/", "a/new/tmp"), ("/", "100%"), ("/", "%25"), ("/", "a//b"),
    ("/", "/leading"), ("/", "trailing/"), ("/", "tab\there"), ("/", "nl\nname"),
    ("/", "del\x7f"), ("\x00", "flat/with/slashes"), (".", "dot.sep/slash"),
    ("\\", "back\\slash"), ("/", "%"), ("/", "%2F"), ("/", "%00"), ("/", "%zz"),
    ("/", "[Gmail]/All Mail"), ("/", "[Gmail]/Sent Mail"), ("/", "Gel&APY-schte"),
    ("/", " spaced "), ("/", "~user"), ("/", "a" * 300),
]
for d, n in FOLDERS:
    put("fuzz_folder_names", d.encode() + n.encode("utf-8"))

# ---------------------------------------------------------------- modified UTF-7
MUTF7 = [
    "INBOX", "Entw&APw-rfe", "&ZeVnLIqe-", "Gel&APY-schte Elemente", "&-", "a&-b",
    "&AGEAYgBj-", "&2D3eAA-", "&2D3eAA-x", "&2D0-", "&3gA-", "&AAA-", "&", "&abc",
    "&A-", "&AG-", "&AGE=-", "&AGE/-", "\xe9", "~peter/mail/&U,BTFw-/&ZeVnLIqe-",
    "&U,BTF2XlZyyKng-", "Sent", "[Gmail]", "&AMk-t&AOk-", "&2DjcAA-",
    "Entwürfe", "日本語", "😀", "a&b", "\xed\xa0\x80", "\xc0\x80", "\xf4\x90\x80\x80",
    "\xe2\x82", "&-&-&-", "&AP8A,w-",
]
for s in MUTF7:
    put("fuzz_mutf7", s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s)
for b in (b"\xed\xa0\x80", b"\xc0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\xff", b"a\x80b"):
    put("fuzz_mutf7", b)

# ---------------------------------------------------------------- config
REPO = os.path.dirname(os.path.dirname(HERE))
try:
    with open(os.path.join(REPO, "mailfs.conf"), "rb") as f:
        put("fuzz_config", f.read())
except OSError:
    pass
CONFIGS = [
    "[general]\ncache_dir = ~/.cache/mailfs\nstate_dir = ~/.local/state/mailfs\n\n"
    "[account work]\ntype = imap\nhost = imap.example.org\nuser = alice\npassword_command = pass show mail/work\n",
    "[general]\nfetch_timeout = 5\n[account test]\ntype = imap\nhost = 127.0.0.1\nport = 1143\ntls = none\n"
    "user = test\npassword = secret\npoll_interval = 2\ntimeout = 5\ndelete = expunge\nprefetch = all\n",
    "[account a]\ntype = imap\nhost = h\nuser = u\npassword = \"p#ss ; word\"  # comment\nfolders = * !Junk !Trash\n",
    "[account a]\ntype=imap\nhost=::1\nuser=u\npassword=x\ntls=starttls\nca_file=~/ca.pem\nallow_plaintext=yes\n",
    "; comment\n# comment\n[general]\n[account x]\ntype = imap\nhost = 10.0.0.1\nuser = u\npassword = p\ntls = none\n",
    "[account x]\ntype = imap\nhost = h\nuser = u\npassword = p\nport = 99999\n",
    "[account x]\ntype = imap\nhost = h\nuser = u\npassword = p\nport = -1\n",
    "[account x]\ntype = imap\nhost = h\nuser = u\npassword = p\ntimeout = 18446744073709551616\n",
    "[account x]\ntype = graph\nuser = u@example.org\noauth = yes\nclient_id = abc\n",
    "[account ../etc]\ntype = imap\nhost = h\nuser = u\npassword = p\n",
    "[account .hidden]\ntype = imap\n",
    "[account]\ntype = imap\n", "[general\ncache_dir = x\n", "key without section = 1\n",
    "[general]\ncache_dir\n", "[general]\n= value\n", "[general]\ncache_dir = \"unterminated\n",
    "[account a]\n[account a]\n", "[account a]\ntype = imap\ntype = imap\n",
    "[account a]\r\ntype = imap\r\nhost = h\r\nuser = u\r\npassword = p\r\n",
    "[account a]\ntype = imap\nhost = h\nuser = u\npassword = p\nfolders = \"INBOX\" \"Archive/*\" !\"Archive/Old*\"\n",
    "[account a]\ntype = imap\nhost = h\nuser = u\npassword = p\nmax_connections = 0\ncompress = yes\ntunnel = ssh host dovecot --exec-mail imap\n",
    "[account ü]\ntype = imap\nhost = h\nuser = u\npassword = p\n",
    "[general]\nstate_dir = relative/path\n",
    "\ufeff[general]\ncache_dir = /tmp/x\n",
    "[account a]\ntype = imap\nhost = h\nuser = u\npassword = \"a\\\"b\\\\c\"\n",
]
for c in CONFIGS:
    put("fuzz_config", c)
print("corpus written to", CORPUS)
