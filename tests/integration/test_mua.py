"""Mail programs on the mount, each against a mounted Dovecot account, with
the server's state checked afterwards over IMAP (dovecot.client()):

    neomutt (driven in tmux): read, flag, delete, save to a folder,
        postpone a draft, sync, quit
    notmuch: notmuch new over the mount; tags synchronised to Maildir flags
        rename the files and reach the server
    Python's mailbox.Maildir: add, remove, rewrite with new flags, folders
"""

import mailbox
import os
import shutil
import subprocess
import time

import pytest

from util import wait_until, messages, folders, read, parse_name, fuse_skip_reason

if fuse_skip_reason():
    pytest.skip(fuse_skip_reason(), allow_module_level=True)

SYNC_WAIT = 30
LIST_WAIT = 20


def msg(i, tag="mua", body=None):
    """A message with a distinct Date (so that date order is i order)."""
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000",
                         time.gmtime(1700000000 + 3600 * i))
    body = body or ("Body of %s message %d.\r\n" % (tag, i)) * 3
    return ("From: Sender %d <s%d@example.org>\r\nTo: t@example.org\r\n"
            "Subject: %s message %d\r\nDate: %s\r\n"
            "Message-ID: <%s-%d@mailfs.test>\r\n\r\n%s"
            % (i, i, tag, i, date, tag, i, body)).encode()


def seed(dovecot, tag, n, flags=()):
    for i in range(1, n + 1):
        dovecot.append("INBOX", msg(i, tag), flags=flags, date=1700000000 + 3600 * i)


def server_state(dovecot, folder):
    """{Message-ID: set of flags} of folder, and the raw bodies by id."""
    with dovecot.client() as c:
        bodies = c.messages(folder)
        flags = c.all_flags(folder)
    out, raw = {}, {}
    for uid, data in bodies.items():
        mid = None
        for line in data.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                mid = line.split(b":", 1)[1].strip().decode()
                break
            if not line:
                break
        out[mid] = set(flags[uid]) - {"\\Recent"}
        raw[mid] = data
    return out, raw


def server_folders(dovecot):
    with dovecot.client() as c:
        return set(c.folders())


# --------------------------------------------------------------------------
# Python's mailbox.Maildir


def test_python_mailbox_maildir(dovecot, mailfs):
    seed(dovecot, "py", 3)
    dovecot.create("Archive")
    m = mailfs(dovecot, delete="expunge")
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 3, LIST_WAIT, msg="listing")
    wait_until(lambda: "Archive" in folders(m.acct), LIST_WAIT)

    box = mailbox.Maildir(m.folder("INBOX"), factory=None, create=False)
    keys = {box[k]["Message-ID"]: k for k in box.keys()}
    assert sorted(keys) == ["<py-%d@mailfs.test>" % i for i in (1, 2, 3)]
    assert box.get_bytes(keys["<py-2@mailfs.test>"]) == msg(2, "py")

    # add: a new message, in cur/ with flags, reaches the server.
    new = mailbox.MaildirMessage(msg(10, "py"))
    new.set_subdir("cur")
    new.set_flags("F")
    added = box.add(new)
    # remove
    box.remove(keys["<py-1@mailfs.test>"])
    # set flags the mailbox way: MaildirMessage.set_flags + __setitem__
    # (Python writes a new copy and removes the old one).
    m2 = box[keys["<py-2@mailfs.test>"]]
    m2.set_subdir("cur")
    m2.set_flags("RS")
    box[keys["<py-2@mailfs.test>"]] = m2

    def inbox_done():
        state, _ = server_state(dovecot, "INBOX")
        return state == {
            "<py-2@mailfs.test>": {"\\Answered", "\\Seen"},
            "<py-3@mailfs.test>": set(),
            "<py-10@mailfs.test>": {"\\Flagged"},
        }
    wait_until(inbox_done, SYNC_WAIT, msg="INBOX on the server")
    _, raw = server_state(dovecot, "INBOX")
    assert raw["<py-10@mailfs.test>"] == msg(10, "py")
    assert raw["<py-2@mailfs.test>"].replace(b"\r\n", b"\n") == \
        msg(2, "py").replace(b"\r\n", b"\n")

    # A fresh Maildir object sees the same, flags included.
    box = mailbox.Maildir(m.folder("INBOX"), factory=None, create=False)
    flags = {box[k]["Message-ID"]: box[k].get_flags() for k in box.keys()}
    assert flags == {"<py-2@mailfs.test>": "RS", "<py-3@mailfs.test>": "",
                     "<py-10@mailfs.test>": "F"}
    assert added in box.keys()

    # Folders are plain nested directories, not Maildir++ ".Name" ones:
    # list_folders() finds none; mkdir makes a Maildir at once, which a
    # Maildir(create=False) opens; rmdir of an empty one deletes it.
    archive = mailbox.Maildir(m.folder("Archive"), factory=None, create=False)
    assert archive.list_folders() == []
    os.mkdir(os.path.join(m.folder("Archive"), "Python"))
    sub = mailbox.Maildir(m.folder("Archive/Python"), factory=None, create=False)
    sub.add(mailbox.MaildirMessage(msg(20, "py")))
    wait_until(lambda: "Archive/Python" in server_folders(dovecot), SYNC_WAIT)
    wait_until(lambda: list(server_state(dovecot, "Archive/Python")[0]) ==
               ["<py-20@mailfs.test>"], SYNC_WAIT, msg="delivery into the new folder")
    sub.clear()
    os.rmdir(m.folder("Archive/Python"))
    wait_until(lambda: "Archive/Python" not in server_folders(dovecot), SYNC_WAIT,
               msg="folder deleted on the server")
    assert "Archive/Python" not in folders(m.acct)


# --------------------------------------------------------------------------
# notmuch


def notmuch(cfg, *args, check=True):
    env = dict(os.environ, NOTMUCH_CONFIG=cfg)
    r = subprocess.run(["notmuch"] + list(args), env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError("notmuch %s: %s" % (" ".join(args), r.stdout.decode()))
    return r.stdout.decode()


@pytest.mark.skipif(not shutil.which("notmuch"), reason="notmuch is not installed")
def test_notmuch_tags_become_flags_on_the_server(dovecot, mailfs, tmp_path):
    seed(dovecot, "nm", 4)
    dovecot.create("Archive")
    dovecot.append("Archive", msg(9, "nm"), flags=("\\Seen",))
    m = mailfs(dovecot)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 4, LIST_WAIT, msg="listing")
    wait_until(lambda: len(messages(m.acct, "Archive")) == 1, LIST_WAIT)

    # The database lives outside the mount (database.path), the mail on it.
    cfg = str(tmp_path / "notmuch-config")
    os.makedirs(str(tmp_path / "notmuch-db"))
    with open(cfg, "w") as f:
        f.write("[database]\npath=%s\nmail_root=%s\n[new]\ntags=unread;inbox;\n"
                "[user]\nname=Test\nprimary_email=t@example.org\n"
                % (tmp_path / "notmuch-db", m.acct))
    notmuch(cfg, "config", "set", "maildir.synchronize_flags", "true")
    assert notmuch(cfg, "config", "get", "maildir.synchronize_flags").strip() == "true"
    out = notmuch(cfg, "new")
    assert "5 total" in out or "Added 5" in out, out
    assert notmuch(cfg, "count", "tag:unread").strip() == "4"
    assert notmuch(cfg, "count", "folder:Archive").strip() == "1"
    assert notmuch(cfg, "search", "--output=files", "id:nm-2@mailfs.test") \
        .strip().startswith(m.acct)

    notmuch(cfg, "tag", "+flagged", "--", "id:nm-1@mailfs.test")
    notmuch(cfg, "tag", "-unread", "--", "id:nm-2@mailfs.test")
    notmuch(cfg, "tag", "+replied", "-unread", "--", "id:nm-3@mailfs.test")

    # The files were renamed (flags in the name) on the mount ...
    def letters(mid):
        path = notmuch(cfg, "search", "--output=files", "id:" + mid).strip()
        assert path and os.path.exists(path), (mid, path)
        return parse_name(os.path.basename(path))[1] or ""
    assert letters("nm-1@mailfs.test") == "F"
    assert letters("nm-2@mailfs.test") == "S"
    assert letters("nm-3@mailfs.test") == "RS"

    # ... and the server has the flags.
    def server_has():
        state, _ = server_state(dovecot, "INBOX")
        return state == {
            "<nm-1@mailfs.test>": {"\\Flagged"},
            "<nm-2@mailfs.test>": {"\\Seen"},
            "<nm-3@mailfs.test>": {"\\Answered", "\\Seen"},
            "<nm-4@mailfs.test>": set(),
        }
    wait_until(server_has, SYNC_WAIT, msg="flags on the server")

    # A flag set on the server comes back through notmuch new.
    with dovecot.client() as c:
        uid = [u for u, d in c.messages("INBOX").items() if b"<nm-4@mailfs.test>" in d][0]
        c.store("INBOX", uid, "+FLAGS", ["\\Seen"])

    def notmuch_sees_it():
        notmuch(cfg, "new")
        return notmuch(cfg, "count", "tag:unread").strip() == "1"
    wait_until(notmuch_sees_it, SYNC_WAIT, interval=1, msg="server flag through notmuch new")
    # Every message was read once over the mount, bytes as on the server.
    path = notmuch(cfg, "search", "--output=files", "id:nm-4@mailfs.test").strip()
    assert read(path) == msg(4, "nm")


# --------------------------------------------------------------------------
# neomutt, driven through tmux


class Tmux:
    """One program in a detached tmux session on a private socket."""

    def __init__(self, workdir, env):
        self.sock = os.path.join(workdir, "tmux.sock")
        self.env = env

    def _run(self, *args, check=True):
        return subprocess.run(["tmux", "-S", self.sock] + list(args), env=self.env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=30, check=check)

    def start(self, command):
        self._run("new-session", "-d", "-x", "160", "-y", "48", command)

    def screen(self):
        r = self._run("capture-pane", "-p", "-t", "0", check=False)
        return r.stdout.decode("utf-8", "replace")

    def alive(self):
        return self._run("has-session", check=False).returncode == 0

    def keys(self, *keys):
        """tmux key names (Enter, Escape, C-u) or literal text."""
        for k in keys:
            if k in ("Enter", "Escape") or k.startswith("C-"):
                self._run("send-keys", "-t", "0", k)
            else:
                self._run("send-keys", "-t", "0", "-l", k)

    def wait(self, text, timeout=30):
        wait_until(lambda: text in self.screen(), timeout, interval=0.2,
                   msg="%r on the screen:\n%s" % (text, self.screen()))

    def kill(self):
        if os.path.exists(self.sock):
            self._run("kill-server", check=False)


MUTTRC = """\
set mbox_type = Maildir
set folder = "{acct}"
set spoolfile = "+INBOX"
set postponed = "+Drafts"
set record = ""
set trash = ""
set move = no
set confirmappend = no
set confirmcreate = no
set delete = yes
set quit = yes
set mark_old = no
set header_cache = ""
set sort = date
set editor = "true"
set abort_unmodified = no
set abort_nosubject = no
set askcc = no
set edit_headers = no
set autoedit = no
set recall = no
set postpone = yes
set from = "t@example.org"
set use_from = yes
set hostname = "mailfs.test"
set wait_key = no
set help = no
set beep = no
set sleep_time = 0
set timeout = 1
set mail_check = 1
set pager_stop = yes
set maildir_trash = no
set index_format = "%4C %Z %s"
"""


@pytest.mark.skipif(not (shutil.which("neomutt") and shutil.which("tmux")),
                    reason="neomutt or tmux is not installed")
def test_neomutt_session_reaches_the_server(dovecot, mailfs, tmp_path):
    seed(dovecot, "mutt", 5)
    dovecot.create("Archive")
    dovecot.create("Drafts")
    m = mailfs(dovecot)
    wait_until(lambda: len(messages(m.acct, "INBOX")) == 5, LIST_WAIT, msg="listing")
    wait_until(lambda: {"Archive", "Drafts"} <= set(folders(m.acct)), LIST_WAIT)

    home = tmp_path / "home"
    home.mkdir()
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(MUTTRC.format(acct=m.acct))
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "TERM": "xterm", "LANG": "C.UTF-8", "TMPDIR": str(tmp_path)}
    t = Tmux(str(tmp_path), env)
    try:
        t.start("neomutt -n -F %s -f %s" % (muttrc, m.folder("INBOX")))
        t.wait("mutt message 5")
        # Read message 1 (the pager shows its body), back to the index.
        t.keys("1", "Enter", "Enter")
        t.wait("Body of mutt message 1.")
        t.keys("q")
        t.wait("mutt message 5")
        # Flag 2, delete 3, save 4 to Archive (a move: saved, then deleted).
        t.keys("2", "Enter", "F")
        t.keys("3", "Enter", "d")
        t.keys("4", "Enter", "s")
        t.wait("Save to mailbox")
        t.keys("C-u", "=Archive", "Enter")
        # A draft: compose, postpone (to +Drafts).
        t.keys("m")
        t.wait("To:")
        t.keys("x@example.org", "Enter")
        t.wait("Subject:")
        t.keys("mutt draft", "Enter")
        t.wait("NeoMutt: Compose")
        t.keys("P")
        t.wait("mutt message 5")
        # Sync, quit.
        t.keys("$")
        t.keys("q")
        wait_until(lambda: not t.alive(), 60, interval=0.2,
                   msg="neomutt quit:\n%s" % t.screen())
    finally:
        t.kill()

    def inbox_done():
        state, _ = server_state(dovecot, "INBOX")
        return state == {
            "<mutt-1@mailfs.test>": {"\\Seen"},
            "<mutt-2@mailfs.test>": {"\\Flagged"},
            "<mutt-5@mailfs.test>": set(),
        }
    wait_until(inbox_done, SYNC_WAIT, msg="INBOX on the server: %r"
               % (server_state(dovecot, "INBOX")[0],))
    wait_until(lambda: list(server_state(dovecot, "Archive")[0]) == ["<mutt-4@mailfs.test>"],
               SYNC_WAIT, msg="the saved message in Archive")
    _, raw = server_state(dovecot, "Archive")
    assert b"Body of mutt message 4." in raw["<mutt-4@mailfs.test>"]
    # Deleted and moved-away originals went to the Trash (delete = trash).
    wait_until(lambda: set(server_state(dovecot, "Trash")[0]) ==
               {"<mutt-3@mailfs.test>", "<mutt-4@mailfs.test>"}, SYNC_WAIT,
               msg="Trash on the server")

    # neomutt postpones into +Drafts/new/ without a D flag; the server
    # gets the message as it wrote it.
    def drafts():
        with dovecot.client() as c:
            return list(c.messages("Drafts").values())
    wait_until(lambda: len(drafts()) == 1, SYNC_WAIT, msg="the draft in Drafts")
    d = drafts()[0]
    assert b"Subject: mutt draft" in d and b"To: x@example.org" in d
    # The mount keeps the bytes neomutt wrote (LF); Dovecot serves CRLF.
    assert [read(p).replace(b"\n", b"\r\n") for p in messages(m.acct, "Drafts")] == [d]
