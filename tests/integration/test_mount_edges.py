"""Edges of the contract, through the mount: what is refused and how, the
directory mtimes MUAs watch, hostile folder names from the server, and a
move into a folder the server no longer has.
"""

import ctypes
import errno
import os
import time

import pytest

from util import wait_until, messages, count, folders, read, deliver, fuse_skip_reason

if fuse_skip_reason():
    pytest.skip(fuse_skip_reason(), allow_module_level=True)

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
AT_FDCWD = -100


def msg(i):
    return ("From: e%d@example.org\r\nSubject: edge %d\r\nMessage-ID: <edge-%d@mailfs.test>"
            "\r\n\r\nbody %d\r\n" % (i, i, i, i)).encode()


def renameat2(old, new, flags):
    libc = ctypes.CDLL(None, use_errno=True)
    r = libc.renameat2(AT_FDCWD, old.encode(), AT_FDCWD, new.encode(), flags)
    return 0 if r == 0 else ctypes.get_errno()


def one_message(dovecot, mailfs, n=1, **opts):
    for i in range(n):
        dovecot.append("INBOX", msg(i), flags=("\\Seen",))
    m = mailfs(dovecot, **opts)
    wait_until(lambda: count(m.acct, "INBOX") == n, 20, msg="listing")
    return m, sorted(messages(m.acct, "INBOX"))


def test_refused_operations(dovecot, mailfs):
    m, paths = one_message(dovecot, mailfs, n=2)
    p, q = paths
    inbox = m.folder("INBOX")
    # Delivered mail is immutable.
    with pytest.raises(PermissionError):
        open(p, "r+b")
    with pytest.raises(PermissionError):
        os.truncate(p, 0)
    # Files are made in tmp/ only.
    with pytest.raises(PermissionError):
        open(os.path.join(inbox, "cur", "made-here:2,S"), "xb")
    with pytest.raises(PermissionError):
        open(os.path.join(m.acct, "stray-file"), "xb")
    with pytest.raises(PermissionError):
        os.symlink(p, os.path.join(inbox, "tmp", "link"))
    # RENAME_EXCHANGE: EINVAL, never ENOSYS (which the kernel would
    # remember for the whole mount); NOREPLACE onto an existing name.
    assert renameat2(p, q, RENAME_EXCHANGE) == errno.EINVAL
    assert renameat2(p, q, RENAME_NOREPLACE) == errno.EEXIST
    assert renameat2(p, p + "X", RENAME_NOREPLACE) == 0
    # Not a Maildir name in cur/.
    with pytest.raises(OSError) as e:
        os.rename(p + "X", os.path.join(inbox, "cur", ".hidden"))
    assert e.value.errno == errno.EINVAL
    # A message cannot go back into tmp/.
    with pytest.raises(PermissionError):
        os.rename(p + "X", os.path.join(inbox, "tmp", "back"))
    # Folders: cur/new/tmp cannot be renamed; an account cannot be removed.
    with pytest.raises(PermissionError):
        os.rename(os.path.join(inbox, "cur"), os.path.join(inbox, "cur2"))
    with pytest.raises(PermissionError):
        os.rmdir(m.acct)
    with pytest.raises(OSError) as e:
        os.rmdir(os.path.join(inbox, "cur"))
    assert e.value.errno == errno.ENOTEMPTY
    # renameat2 still works after all that (no ENOSYS latch).
    assert renameat2(p + "X", p, RENAME_NOREPLACE) == 0
    with dovecot.client() as c:
        assert c.count("INBOX") == 2


def test_directory_mtimes_move_forward(dovecot, mailfs):
    m, (p,) = one_message(dovecot, mailfs)
    cur = os.path.join(m.folder("INBOX"), "cur")
    new = os.path.join(m.folder("INBOX"), "new")
    t0 = os.stat(cur).st_mtime_ns
    os.rename(p, p.replace(":2,S", ":2,FS"))
    t1 = os.stat(cur).st_mtime_ns
    assert t1 > t0
    n0 = os.stat(new).st_mtime_ns
    deliver(m.folder("INBOX"), "edge.1.host", msg(50))
    n1 = os.stat(new).st_mtime_ns
    assert n1 > n0
    # A server-side arrival moves new/'s mtime too (IDLE).
    dovecot.append("INBOX", msg(51))
    wait_until(lambda: os.stat(new).st_mtime_ns > n1, 10, msg="new/ mtime after arrival")
    # notmuch skips a directory with st_nlink == 2 and an unchanged mtime:
    # leaf directories say 2, folders 2 + subdirectories.
    assert os.stat(cur).st_nlink == 2
    assert os.stat(m.folder("INBOX")).st_nlink == 5


def test_hostile_folder_names(dovecot, mailfs):
    # Dovecot refuses "cur", "new", "tmp", ".." and "~x" itself; the unit
    # tests cover their escaping. These it accepts.
    with dovecot.client() as c:
        for name in (".dot", "a%b", "a&b", "back\\slash"):
            c.create(name)
    m = mailfs(dovecot)
    wait_until(lambda: "%2Edot" in os.listdir(m.acct), 20, msg="escaped folder names")
    names = set(os.listdir(m.acct))
    assert {"%2Edot", "a%25b", "a&b", "back\\slash"} <= names
    for n in ("%2Edot", "a%25b", "a&b"):
        assert os.path.isdir(os.path.join(m.acct, n, "cur"))
    # Names made through the mount are unescaped on the way back.
    os.mkdir(os.path.join(m.acct, "50%25 off"))
    os.mkdir(os.path.join(m.acct, "Tom & Jerry"))
    with dovecot.client() as c:
        wait_until(lambda: {"50% off", "Tom & Jerry"} <= set(c.folders()), 20,
                   msg="CREATE of escaped and &-names")
    # Names no server could give back unchanged are refused.
    for bad in (".hidden", "bad%zz", "new"):
        with pytest.raises(OSError) as e:
            os.mkdir(os.path.join(m.acct, bad))
        assert e.value.errno in (errno.EINVAL, errno.EEXIST, errno.EPERM), bad


def test_move_into_folder_the_server_lost(dovecot, mailfs):
    with dovecot.client() as c:
        c.create("Gone")
    m, (p,) = one_message(dovecot, mailfs, poll_interval=300)
    wait_until(lambda: os.path.isdir(os.path.join(m.acct, "Gone", "cur")), 10)
    with dovecot.client() as c:
        c.delete("Gone")
    os.rename(p, os.path.join(m.acct, "Gone", "cur", os.path.basename(p)))
    m.expect_log(r"(failed for good|TRYCREATE|doesn't exist|no such|Gone)")
    # The MOVE fails for good: the message comes back where it is.
    wait_until(lambda: count(m.acct, "INBOX") == 1, 20, msg="message back in INBOX")
    with dovecot.client() as c:
        assert c.count("INBOX") == 1
    assert read(messages(m.acct, "INBOX")[0]) == msg(0)


def test_new_mail_readable_as_soon_as_listed(dovecot, mailfs):
    # The fetch connection has INBOX selected already (a first read); mail
    # another client adds afterwards must read at once, not "not found".
    m, (p,) = one_message(dovecot, mailfs)
    assert read(p) == msg(0)
    for i in range(1, 6):
        dovecot.append("INBOX", msg(100 + i))
        wait_until(lambda: count(m.acct, "INBOX") == 1 + i, 10, interval=0.01,
                   msg="the new message listed")
        newest = max(messages(m.acct, "INBOX"), key=lambda x: os.stat(x).st_ino)
        assert read(newest) == msg(100 + i)
