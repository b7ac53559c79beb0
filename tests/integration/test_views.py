"""Client-side views ([view NAME] in mailfs.conf), through the mount, against Dovecot.

A view is a read-mostly Maildir at MNT/@NAME/{cur,new,tmp} that lists the
messages of every account whose header lines match one of its rules, with
the same names and the same inode numbers as in their folders.  Server-side
truth comes from an independent IMAP client (dovecot.client()).
"""

import errno
import os

import pytest

import corpus
from util import (wait_until, read, deliver, parse_name, with_flags, imap_to_letters,
                  fuse_skip_reason)

if fuse_skip_reason():
    pytest.skip(fuse_skip_reason(), allow_module_level=True)

POLL_WAIT = 2 + 15     # poll_interval 2 (fixture) plus slack
IDLE_WAIT = 5 + 15
SYNC_WAIT = 30

VIEW_CONF = """
[view lists]
# the kernel list and anything from example.net
match = List-Id: *linux-kernel*
match = From: *@example.net
"""


def list_msg(subject):
    return corpus.message(subject, "A list message.\n",
                          sender="Some Hacker <hacker@kernel.example.com>",
                          headers=[("List-Id", "Linux Kernel <linux-kernel.vger.kernel.org>")])


def net_msg(subject):
    return corpus.message(subject, "From example.net.\n",
                          sender="Bob <bob@Example.NET>")


def plain_msg(subject):
    # From alice@example.org, no List-Id: matches no rule.
    return corpus.message(subject, "Not for the view.\n")


def mount_with_view(mailfs, server, view_conf=VIEW_CONF, **opts):
    m = mailfs(server, start=False, **opts)
    with open(m.config_path, "a") as f:
        f.write(view_conf)
    m.start()
    return m


def entries(d):
    """{name: (sub, st_ino)} of a Maildir's cur/ and new/."""
    out = {}
    for sub in ("cur", "new"):
        for n in os.listdir(os.path.join(d, sub)):
            out[n] = (sub, os.stat(os.path.join(d, sub, n)).st_ino)
    return out


def subject_of(path):
    for line in read(path).split(b"\r\n"):
        if line.startswith(b"Subject: "):
            return line[9:].decode()
    return None


def by_subject(d):
    """{subject: (sub, name, st_ino)} of a Maildir, reading each message."""
    out = {}
    for sub in ("cur", "new"):
        for n in os.listdir(os.path.join(d, sub)):
            p = os.path.join(d, sub, n)
            out[subject_of(p)] = (sub, n, os.stat(p).st_ino)
    return out


def test_view_lists_matching_messages_with_same_inodes(dovecot, mailfs):
    dovecot.create("Archive")
    dovecot.append("INBOX", list_msg("kernel 1"), flags=("\\Seen",))
    dovecot.append("INBOX", list_msg("kernel 2"))
    dovecot.append("INBOX", net_msg("from net"), flags=("\\Seen",))
    dovecot.append("INBOX", plain_msg("plain 1"))
    dovecot.append("Archive", list_msg("kernel archived"), flags=("\\Seen",))
    dovecot.append("Archive", plain_msg("plain archived"))
    m = mount_with_view(mailfs, dovecot)
    view = os.path.join(m.mnt, "@lists")

    assert "@lists" in os.listdir(m.mnt)
    assert sorted(os.listdir(view)) == ["cur", "new", "tmp"]
    inbox = by_subject(m.folder("INBOX"))
    archive = by_subject(m.folder("Archive"))
    shown = by_subject(view)
    assert set(shown) == {"kernel 1", "kernel 2", "from net", "kernel archived"}
    # Same name, same subdir, same inode as in the message's own folder.
    for subj in ("kernel 1", "kernel 2", "from net"):
        assert shown[subj] == inbox[subj], subj
    assert shown["kernel archived"] == archive["kernel archived"]
    assert shown["kernel 2"][0] == "new"    # unseen stays in new/
    # The bytes are the message's.
    sub, name, _ = shown["kernel 1"]
    isub, iname, _ = inbox["kernel 1"]
    assert read(os.path.join(view, sub, name)) == read(os.path.join(m.folder("INBOX"), isub, iname))
    assert not os.path.exists(os.path.join(view, "cur", "no-such-name:2,S"))

    # The headers are kept in the store: after a remount (no new listing
    # of those messages) the view shows the same.
    m.remount()
    assert by_subject(view) == shown
    m.check_log()


def test_view_waits_for_a_first_listing(dovecot, mailfs, proxy):
    # A first mount against a slow server: listing the view straight away
    # waits for the account's first listing, as listing a folder does,
    # instead of showing an empty view.
    dovecot.append("INBOX", list_msg("kernel slow"), flags=("\\Seen",))
    dovecot.append("INBOX", plain_msg("plain slow"))
    p = proxy(dovecot)
    p.delay(0.1)
    m = mount_with_view(mailfs, dovecot, proxy=p)
    view = os.path.join(m.mnt, "@lists")
    assert set(by_subject(view)) == {"kernel slow"}
    m.check_log()


def test_flag_rename_in_view_reaches_server(dovecot, mailfs):
    seen_uid = dovecot.append("INBOX", list_msg("kernel seen"), flags=("\\Seen",))
    new_uid = dovecot.append("INBOX", net_msg("net unseen"))
    m = mount_with_view(mailfs, dovecot)
    view = os.path.join(m.mnt, "@lists")
    shown = by_subject(view)

    # cur/X:2,S -> cur/X:2,FS in the view: \Flagged on the server.
    sub, name, ino = shown["kernel seen"]
    assert sub == "cur" and parse_name(name)[1] == "S"
    flagged = with_flags(name, "FS")
    os.rename(os.path.join(view, "cur", name), os.path.join(view, "cur", flagged))
    assert os.stat(os.path.join(view, "cur", flagged)).st_ino == ino
    # The folder shows the new name at once, and not the old one.
    inbox_cur = os.path.join(m.folder("INBOX"), "cur")
    assert os.path.exists(os.path.join(inbox_cur, flagged))
    assert not os.path.exists(os.path.join(inbox_cur, name))
    assert os.stat(os.path.join(inbox_cur, flagged)).st_ino == ino

    # new/X -> cur/X:2,S in the view: \Seen on the server.
    sub, name2, ino2 = shown["net unseen"]
    assert sub == "new"
    seen_name = with_flags(name2, "S")
    os.rename(os.path.join(view, "new", name2), os.path.join(view, "cur", seen_name))
    assert os.stat(os.path.join(inbox_cur, seen_name)).st_ino == ino2

    with dovecot.client() as c:
        wait_until(lambda: imap_to_letters(c.flags("INBOX", seen_uid)) == "FS" and
                   imap_to_letters(c.flags("INBOX", new_uid)) == "S", SYNC_WAIT,
                   msg="flags changed in the view reach the server")
    # And a flag change in the folder shows in the view under the new name.
    unflagged = with_flags(flagged, "S")
    os.rename(os.path.join(inbox_cur, flagged), os.path.join(inbox_cur, unflagged))
    wait_until(lambda: os.path.exists(os.path.join(view, "cur", unflagged)) and
               not os.path.exists(os.path.join(view, "cur", flagged)), 10,
               msg="the view follows a rename in the folder")
    with dovecot.client() as c:
        wait_until(lambda: imap_to_letters(c.flags("INBOX", seen_uid)) == "S", SYNC_WAIT)
    m.check_log()


def test_new_server_mail_appears_in_view(dovecot, mailfs):
    dovecot.create("Lists")
    dovecot.append("INBOX", plain_msg("before"))
    m = mount_with_view(mailfs, dovecot)
    view = os.path.join(m.mnt, "@lists")
    assert by_subject(view) == {}
    mtime_before = os.stat(os.path.join(view, "new")).st_mtime_ns

    dovecot.append("INBOX", list_msg("kernel new"))
    dovecot.append("INBOX", plain_msg("plain new"))
    dovecot.append("Lists", net_msg("net in Lists"))
    wait_until(lambda: set(by_subject(view)) == {"kernel new", "net in Lists"}, POLL_WAIT,
               msg="new matching mail shows in the view")
    # The non-matching message did arrive in INBOX, but not in the view.
    wait_until(lambda: "plain new" in by_subject(m.folder("INBOX")), POLL_WAIT)
    assert "plain new" not in by_subject(view)
    assert os.stat(os.path.join(view, "new")).st_mtime_ns > mtime_before
    shown = by_subject(view)
    assert shown["kernel new"] == by_subject(m.folder("INBOX"))["kernel new"]
    assert shown["net in Lists"] == by_subject(m.folder("Lists"))["net in Lists"]

    # Expunged on the server: gone from the view too.
    with dovecot.client() as c:
        (uid,) = [u for u in c.uids("Lists")]
        c.expunge("Lists", uid)
    wait_until(lambda: set(by_subject(view)) == {"kernel new"}, POLL_WAIT,
               msg="expunged mail leaves the view")
    m.check_log()


def test_mail_delivered_through_mount_appears_in_view(dovecot, mailfs):
    m = mount_with_view(mailfs, dovecot)
    view = os.path.join(m.mnt, "@lists")
    deliver(m.folder("INBOX"), "1700000000.P1.host", list_msg("delivered list"), flags="S",
            dest="cur")
    deliver(m.folder("INBOX"), "1700000000.P2.host", plain_msg("delivered plain"), flags="S",
            dest="cur")
    # The header lines come with the listing that finds the upload.
    wait_until(lambda: set(by_subject(view)) == {"delivered list"}, SYNC_WAIT + POLL_WAIT,
               msg="a list message delivered through the mount shows in the view")
    inbox = by_subject(m.folder("INBOX"))
    assert by_subject(view)["delivered list"] == inbox["delivered list"]
    assert "delivered plain" in inbox
    m.check_log()


def test_rename_from_view_into_folder_moves(dovecot, mailfs):
    dovecot.create("Archive")
    uid = dovecot.append("INBOX", list_msg("kernel to archive"), flags=("\\Seen",))
    m = mount_with_view(mailfs, dovecot)
    view = os.path.join(m.mnt, "@lists")
    sub, name, ino = by_subject(view)["kernel to archive"]
    os.rename(os.path.join(view, sub, name), os.path.join(m.folder("Archive"), "cur", name))
    assert os.stat(os.path.join(m.folder("Archive"), "cur", name)).st_ino == ino
    assert not os.path.exists(os.path.join(m.folder("INBOX"), "cur", name))
    # Still a list message: the view shows it from Archive, same inode.
    assert by_subject(view)["kernel to archive"] == (sub, name, ino)
    with dovecot.client() as c:
        wait_until(lambda: c.count("Archive") == 1 and uid not in c.uids("INBOX"), SYNC_WAIT,
                   msg="the move reaches the server")
    m.check_log()


def test_writing_into_view_is_refused(dovecot, mailfs):
    dovecot.append("INBOX", list_msg("kernel"), flags=("\\Seen",))
    dovecot.append("INBOX", plain_msg("plain"), flags=("\\Seen",))
    m = mount_with_view(mailfs, dovecot)
    m.expect_log(r"read-mostly")
    view = os.path.join(m.mnt, "@lists")
    for sub in ("tmp", "new", "cur"):
        with pytest.raises(OSError) as ei:
            os.open(os.path.join(view, sub, "123.delivery.host"),
                    os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        assert ei.value.errno == errno.EROFS, sub
    with pytest.raises(OSError) as ei:
        os.mkdir(os.path.join(view, "sub"))
    assert ei.value.errno == errno.EROFS
    with pytest.raises(OSError) as ei:
        os.symlink("/etc/passwd", os.path.join(view, "new", "x"))
    assert ei.value.errno == errno.EROFS
    with pytest.raises(OSError) as ei:
        os.mknod(os.path.join(view, "tmp", "fifo"), 0o600 | 0o010000)
    assert ei.value.errno == errno.EROFS
    # Moving a message from a folder into the view: refused as well.
    inbox_cur = os.path.join(m.folder("INBOX"), "cur")
    (plain,) = [n for n in os.listdir(inbox_cur)
                if subject_of(os.path.join(inbox_cur, n)) == "plain"]
    with pytest.raises(OSError) as ei:
        os.rename(os.path.join(inbox_cur, plain), os.path.join(view, "cur", plain))
    assert ei.value.errno == errno.EROFS
    # Writing to a message through the view: as in its folder, immutable.
    (name,) = os.listdir(os.path.join(view, "cur"))
    with pytest.raises(OSError) as ei:
        os.open(os.path.join(view, "cur", name), os.O_WRONLY)
    assert ei.value.errno == errno.EPERM
    assert "refused (EROFS)" in m.log()
    assert sorted(os.listdir(os.path.join(view, "tmp"))) == []
    with dovecot.client() as c:
        assert c.count("INBOX") == 2
    m.check_log()


def test_unlink_in_view_follows_delete_policy(dovecot, mailfs):
    dovecot.append("INBOX", list_msg("kernel keep"), flags=("\\Seen",))
    dovecot.append("INBOX", list_msg("kernel drop"), flags=("\\Seen",))
    m = mount_with_view(mailfs, dovecot)   # delete = trash (default)
    view = os.path.join(m.mnt, "@lists")
    sub, name, _ = by_subject(view)["kernel drop"]
    os.unlink(os.path.join(view, sub, name))
    assert set(by_subject(view)) == {"kernel keep"}
    assert "kernel drop" not in by_subject(m.folder("INBOX"))
    with dovecot.client() as c:
        wait_until(lambda: c.count("INBOX") == 1 and "Trash" in c.folders() and
                   c.count("Trash") == 1, SYNC_WAIT, msg="unlink in the view moves to Trash")
    # Trash (and Junk) stay out of a view that has no "folders" key.
    wait_until(lambda: "kernel drop" in by_subject(m.folder("Trash")), POLL_WAIT)
    assert set(by_subject(view)) == {"kernel keep"}
    m.check_log()


def test_unlink_in_view_with_expunge_policy(dovecot, mailfs):
    dovecot.append("INBOX", list_msg("kernel keep"), flags=("\\Seen",))
    dovecot.append("INBOX", list_msg("kernel drop"), flags=("\\Seen",))
    m = mount_with_view(mailfs, dovecot, delete="expunge")
    view = os.path.join(m.mnt, "@lists")
    sub, name, _ = by_subject(view)["kernel drop"]
    os.unlink(os.path.join(view, sub, name))
    assert not os.path.exists(os.path.join(view, sub, name))
    with dovecot.client() as c:
        wait_until(lambda: c.count("INBOX") == 1, SYNC_WAIT, msg="expunged on the server")
        assert "Trash" not in c.folders() or c.count("Trash") == 0
    assert set(by_subject(m.folder("INBOX"))) == {"kernel keep"}
    m.check_log()


def test_view_account_and_folders_keys(dovecot, mailfs):
    dovecot.create("Archive")
    dovecot.append("INBOX", list_msg("kernel inbox"))
    dovecot.append("Archive", list_msg("kernel archive"))
    dovecot.append("Archive", plain_msg("plain archive"))
    conf = """
[view inbox-lists]
match = list-id: *LINUX-KERNEL*
account = test
folders = INBOX

[view archive]
match = folder: Archive
"""
    m = mount_with_view(mailfs, dovecot, view_conf=conf)
    assert {"@inbox-lists", "@archive", "test"} <= set(os.listdir(m.mnt))
    assert set(by_subject(os.path.join(m.mnt, "@inbox-lists"))) == {"kernel inbox"}
    assert set(by_subject(os.path.join(m.mnt, "@archive"))) == {"kernel archive", "plain archive"}
    m.check_log()


def test_view_added_to_an_existing_store(dovecot, mailfs):
    """Mail listed before the view was configured shows in it after a remount."""
    dovecot.append("INBOX", list_msg("kernel old"), flags=("\\Seen",))
    dovecot.append("INBOX", plain_msg("plain old"), flags=("\\Seen",))
    m = mailfs(dovecot)
    inbox = by_subject(m.folder("INBOX"))
    assert set(inbox) == {"kernel old", "plain old"}
    assert not os.path.exists(os.path.join(m.mnt, "@lists"))
    m.stop()
    with open(m.config_path, "a") as f:
        f.write(VIEW_CONF)
    m.start()
    view = os.path.join(m.mnt, "@lists")
    wait_until(lambda: set(by_subject(view)) == {"kernel old"}, POLL_WAIT,
               msg="the old message shows in the new view")
    assert by_subject(view)["kernel old"] == inbox["kernel old"]
    assert "listing every folder once more" in m.log()
    m.check_log()


def test_store_of_schema_2_is_upgraded(dovecot, mailfs):
    """A store written before views (schema 2) gains the header table."""
    import sqlite3
    dovecot.append("INBOX", list_msg("kernel before upgrade"), flags=("\\Seen",))
    m = mailfs(dovecot)
    inbox = by_subject(m.folder("INBOX"))
    m.stop()
    db = sqlite3.connect(os.path.join(m.state_dir, "mailfs.db"))
    db.executescript("DROP TABLE message_header; DROP TABLE view_fields; "
                     "PRAGMA user_version = 2;")
    db.close()
    with open(m.config_path, "a") as f:
        f.write(VIEW_CONF)
    m.start()
    view = os.path.join(m.mnt, "@lists")
    wait_until(lambda: set(by_subject(view)) == {"kernel before upgrade"}, POLL_WAIT)
    assert by_subject(view)["kernel before upgrade"] == inbox["kernel before upgrade"]
    db = sqlite3.connect(os.path.join(m.state_dir, "mailfs.db"))
    assert db.execute("PRAGMA user_version").fetchone()[0] == 5
    db.close()
    m.check_log()
