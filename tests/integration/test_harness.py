"""Tests of the test harness itself: Dovecot, the corpus, the proxy.

These need Dovecot but neither FUSE nor the daemon.
"""

import imaplib
import os
import socket
import ssl
import subprocess
import sys
import time

import pytest

import corpus
import dovecot as dovecot_mod
from util import TcpProxy, wait_until, run_with_timeout, parse_name, with_flags, \
    letters_to_imap, imap_to_letters

REQUIRED_CAPS = {"IDLE", "CONDSTORE", "QRESYNC", "MOVE", "UIDPLUS", "SPECIAL-USE"}


def test_start_stop_restart_kill(dovecot):
    assert dovecot.running
    port = dovecot.port
    with dovecot.client() as c:
        assert c.folders() == ["INBOX", "Trash"]
    uid = dovecot.append("INBOX", corpus.message("survives restart"))
    dovecot.restart()
    assert dovecot.port == port
    with dovecot.client() as c:
        assert c.uids("INBOX") == [uid]
    dovecot.kill()
    assert not dovecot.running
    with pytest.raises(OSError):
        socket.create_connection((dovecot.host, port), timeout=2).close()
    dovecot.start()
    with dovecot.client() as c:
        assert c.uids("INBOX") == [uid]
    dovecot.stop()
    assert not dovecot.running
    # nothing of ours is left running
    out = subprocess.run(["pgrep", "-f", dovecot.config_path], stdout=subprocess.PIPE).stdout
    assert out.strip() == b""


def test_generated_config_is_valid(dovecot_factory):
    d = dovecot_factory(tls=True)
    r = subprocess.run(["doveconf", "-n", "-c", d.config_path], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    assert r.returncode == 0, r.stderr
    assert b"arning" not in r.stderr, r.stderr
    conf = r.stdout.decode()
    for setting in ("imap_idle_notify_interval = 1 secs",
                    "mailbox_idle_check_interval = 1 secs",
                    "mail_location = maildir:~/Maildir:LAYOUT=fs"):
        assert setting in conf
    # the default, so doveconf -n leaves it out; it is in our file all the same
    assert "ssl_min_protocol = TLSv1.2" in open(d.config_path).read()


def test_capabilities(dovecot):
    with dovecot.client() as c:
        caps = set(c.capabilities())
    assert REQUIRED_CAPS <= caps, caps
    # our DEFAULT_CAPABILITIES (the base for drop_capabilities) is still right
    assert caps == set(dovecot_mod.DEFAULT_CAPABILITIES)


def test_capability_override(dovecot_factory):
    drop = ("QRESYNC", "CONDSTORE", "MOVE", "UIDPLUS", "IDLE")
    d = dovecot_factory(drop_capabilities=drop)
    with d.client() as c:
        caps = set(c.capabilities())
    assert not caps & set(drop)
    assert "IMAP4rev1" in caps and "SPECIAL-USE" in caps
    d2 = dovecot_factory(capabilities="IMAP4rev1 LITERAL+")
    with d2.client() as c:
        assert set(c.capabilities()) == {"IMAP4rev1", "LITERAL+"}


def test_special_use_and_folders(dovecot):
    with dovecot.client() as c:
        assert c.special_use() == {"\\Trash": "Trash"}
        for f in ("Sent", "Drafts", "Junk", "Archive", "Archive/2024", "Entwürfe", "日本語"):
            c.create(f)
        assert c.special_use() == {"\\Trash": "Trash", "\\Sent": "Sent",
                                   "\\Drafts": "Drafts", "\\Junk": "Junk"}
        assert "Entwürfe" in c.folders() and "日本語" in c.folders()
        c.rename("Entwürfe", "Entwürfe alt")
        c.delete("日本語")
        assert "Entwürfe alt" in c.folders() and "日本語" not in c.folders()
    # fs layout: nested folders are nested directories, names in modified UTF-7
    md = dovecot.maildir_path
    assert os.path.isdir(os.path.join(md, "Archive", "2024", "cur"))
    assert os.path.isdir(os.path.join(md, dovecot_mod.imap_utf7_encode("Entwürfe alt")))


def test_maildirpp_layout(dovecot_factory):
    d = dovecot_factory(layout="maildir++")
    with d.client() as c:
        c.create("Archive/2024")
        assert "Archive/2024" in c.folders(selectable_only=False)
    assert os.path.isdir(os.path.join(d.maildir_path, ".Archive.2024", "cur"))


def test_utf7_roundtrip():
    for name in ("INBOX", "Entwürfe", "日本語", "a&b", "Ünïcödé/ß & more", "~peter/mail/台北/日本語"):
        enc = dovecot_mod.imap_utf7_encode(name)
        assert all(0x20 <= ord(ch) < 0x7f for ch in enc)
        assert dovecot_mod.imap_utf7_decode(enc) == name
    assert dovecot_mod.imap_utf7_encode("Entwürfe") == "Entw&APw-rfe"
    assert dovecot_mod.imap_utf7_encode("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"


def test_append_fetch_roundtrip_corpus(dovecot):
    """Every corpus message round-trips; Dovecot's transformations are the
    ones corpus.wire_form documents."""
    msgs = dict(corpus.malformed_messages())
    msgs["multipart"] = corpus.multipart_attachment()
    msgs["utf8"] = corpus.utf8_subject()
    msgs["latin1"] = corpus.latin1_subject()
    for i, m in enumerate(corpus.thread(3) + corpus.plain_messages(3)):
        msgs["plain%d" % i] = m
    date = corpus.date_at(5)
    uids = {}
    with dovecot.client() as c:
        for name, m in msgs.items():
            uids[name] = c.append("INBOX", m, flags=("\\Flagged",), date=date)
        bodies = c.messages("INBOX")
        sizes = c.sizes("INBOX")
        flags = c.all_flags("INBOX")
        dates = c.internaldates("INBOX")
    assert len(bodies) == len(msgs)
    for name, m in msgs.items():
        u = uids[name]
        wire = corpus.wire_form(m)
        assert bodies[u] == wire, name
        assert sizes[u] == len(wire), name
        assert flags[u] == {"\\Flagged"}, name
        assert dates[u] == int(date.timestamp()), name
        if b"\x00" not in m and b"\r\n" in m:
            assert bodies[u] == m, name           # byte-exact when well-formed
    # the documented Dovecot behaviour, spelled out
    lf = msgs["lf-only"]
    assert b"\r" not in lf
    assert sizes[uids["lf-only"]] == len(lf) + lf.count(b"\n")    # LF -> CRLF
    nul = msgs["nul-bytes"]
    assert sizes[uids["nul-bytes"]] == len(nul)                   # size unchanged
    assert bodies[uids["nul-bytes"]] == nul.replace(b"\x00", b"\x80")
    # reading with BODY.PEEK[] did not set \Seen
    with dovecot.client() as c:
        assert all("\\Seen" not in f for f in c.all_flags("INBOX").values())


def test_big_message_roundtrip(dovecot):
    big = corpus.big_message()
    assert len(big) == 5 * 1024 * 1024
    uid = dovecot.append("INBOX", big)
    with dovecot.client() as c:
        assert c.size("INBOX", uid) == len(big)
        assert c.fetch("INBOX", uid) == big


def test_seed_sample_mailbox(seeded):
    box = seeded.corpus
    assert len(box["INBOX"]) >= 30
    with seeded.client() as c:
        folders = set(c.folders())
        for f, msgs in box.items():
            assert f in folders
            assert c.count(f) == len(msgs), f
        # Message-IDs: the duplicate pair is there twice, one message has none
        ids = list(c.message_ids("INBOX").values()) + list(c.message_ids("Malformed").values())
        assert ids.count("duplicate@corpus.mailfs.test") == 2
        assert None in ids
        assert c.search_header("INBOX", "Message-ID", "thread-2-0@corpus.mailfs.test")
        f = c.all_flags("INBOX")
        uids = seeded.seeded_uids["INBOX"]
        for (m, fl, d), u in zip(box["INBOX"], uids):
            assert f[u] == set(fl)
            assert c.internaldate("INBOX", u) == int(d.timestamp()) if u == uids[0] else True


def test_corpus_is_deterministic():
    a = corpus.sample_mailbox(big=False)
    b = corpus.sample_mailbox(big=False)
    assert a == b
    assert corpus.big_message() == corpus.big_message()
    for name, m in corpus.malformed_messages().items():
        if name != "lf-only":
            assert b"\r\n" in m, name
    assert corpus.message_id(corpus.malformed_messages()["no-message-id"]) is None
    assert len(corpus.malformed_messages()["long-line"]) > 200 * 1024


def test_store_expunge_move_helpers(dovecot):
    with dovecot.client() as c:
        u1 = c.append("INBOX", corpus.message("one"))
        u2 = c.append("INBOX", corpus.message("two"))
        u3 = c.append("INBOX", corpus.message("three"))
        c.store("INBOX", u1, "+FLAGS", ("\\Seen", "\\Flagged"))
        assert c.flags("INBOX", u1) == {"\\Seen", "\\Flagged"}
        c.store("INBOX", u1, "-FLAGS", "\\Seen")
        assert c.flags("INBOX", u1) == {"\\Flagged"}
        # another \Deleted message must survive a UID EXPUNGE of u2
        c.store("INBOX", u3, "+FLAGS", "\\Deleted")
        c.expunge("INBOX", u2)
        assert c.uids("INBOX") == [u1, u3]
        c.move("INBOX", u1, "Trash")
        assert c.uids("INBOX") == [u3]
        assert len(c.uids("Trash")) == 1
        v = c.uidvalidity("INBOX")
        assert v > 0 and c.status("INBOX")["MESSAGES"] == 1


def test_tls_verifies_with_ca_file(dovecot_factory):
    d = dovecot_factory(tls=True)
    assert os.path.exists(d.ca_file)
    ctx = ssl.create_default_context(cafile=d.ca_file)
    for host in ("127.0.0.1", "localhost"):
        i = imaplib.IMAP4_SSL(host, d.imaps_port, ssl_context=ctx, timeout=10)
        i.login(d.user, d.password)
        i.logout()
    # STARTTLS on the plain port
    i = imaplib.IMAP4(d.host, d.port, timeout=10)
    assert "STARTTLS" in i.capabilities
    i.starttls(ssl_context=ctx)
    i.login(d.user, d.password)
    i.logout()
    # without the suite CA verification fails
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(d.host, d.imaps_port, ssl_context=ssl.create_default_context(),
                          timeout=10)
    i = imaplib.IMAP4(d.host, d.port, timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        i.starttls(ssl_context=ssl.create_default_context())
    # a wrong host name fails too
    ctx2 = ssl.create_default_context(cafile=d.ca_file)
    with pytest.raises(ssl.SSLCertVerificationError):
        ctx2.wrap_socket(socket.create_connection((d.host, d.imaps_port)),
                         server_hostname="imap.example.org")


def test_ssl_required_refuses_plaintext(dovecot_factory):
    d = dovecot_factory(ssl_required=True)
    i = imaplib.IMAP4(d.host, d.port, timeout=10)
    assert "LOGINDISABLED" in i.capabilities and "STARTTLS" in i.capabilities
    with pytest.raises(imaplib.IMAP4.error):
        i.login(d.user, d.password)
    i.shutdown()
    with d.client() as c:          # STARTTLS + ca_file
        assert c.folders() == ["INBOX", "Trash"]
    with d.client(tls=True) as c:  # implicit TLS
        assert c.uids("INBOX") == []


def test_wrong_password_refused(dovecot):
    with pytest.raises(imaplib.IMAP4.error):
        dovecot.client(password="wrong")


def test_proxy_stop_start(dovecot):
    p = TcpProxy(dovecot.host, dovecot.port).start()
    try:
        c = dovecot_mod.ImapClient(p.listen_host, p.port)
        assert c.folders() == ["INBOX", "Trash"]
        port = p.port
        p.stop()
        # open connections are closed, new ones refused
        with pytest.raises((OSError, imaplib.IMAP4.abort)):
            c.folders()
        with pytest.raises(OSError):
            socket.create_connection((p.listen_host, port), timeout=2).close()
        p.start()
        assert p.port == port
        c2 = dovecot_mod.ImapClient(p.listen_host, p.port)
        assert c2.uids("INBOX") == []
        c2.close()
        # blackhole: connection accepted, no greeting
        p.blackhole()
        s = socket.create_connection((p.listen_host, p.port), timeout=2)
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recv(100)
        s.close()
        p.forward()
        c3 = dovecot_mod.ImapClient(p.listen_host, p.port)
        c3.close()
    finally:
        p.stop()


def test_proxy_carries_big_message(dovecot):
    big = corpus.big_message(1024 * 1024, seed=9)
    uid = dovecot.append("INBOX", big)
    with TcpProxy(dovecot.host, dovecot.port) as p:
        with dovecot_mod.ImapClient(p.listen_host, p.port) as c:
            assert c.fetch("INBOX", uid) == big
        assert p.bytes_down > len(big)


def test_wait_until_and_run_with_timeout():
    t = time.monotonic()
    assert wait_until(lambda: time.monotonic() - t > 0.1, timeout=2) is True
    with pytest.raises(AssertionError, match="never"):
        wait_until(lambda: False, timeout=0.2, msg="never")
    assert run_with_timeout(lambda: 42, 1) == ("ok", 42)
    state, _ = run_with_timeout(time.sleep, 0.2, 5)
    assert state == "timeout"
    state, e = run_with_timeout(lambda: 1 / 0, 1)
    assert state == "error" and isinstance(e, ZeroDivisionError)


def test_name_helpers():
    assert parse_name("123.M4.mailfs,S=10:2,FS") == ("123.M4.mailfs,S=10", "FS")
    assert parse_name("123.M4") == ("123.M4", None)
    assert with_flags("x:2,S", "SF") == "x:2,FS"
    assert letters_to_imap("FS") == {"\\Flagged", "\\Seen"}
    assert imap_to_letters({"\\Seen", "\\Answered", "$Forwarded", "\\Draft"}) == "DPRS"


def test_cli_start(tmp_path):
    d = tmp_path / "demo"
    p = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(corpus.__file__),
                                                       "dovecot.py"),
                          "start", str(d), "--seed", "--no-big"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        info = wait_until(lambda: os.path.exists(d / "dovecot.json") and
                          __import__("json").load(open(d / "dovecot.json")), timeout=30)
        with dovecot_mod.ImapClient(info["host"], info["port"]) as c:
            assert c.count("INBOX") == len(corpus.sample_mailbox(big=False)["INBOX"])
    finally:
        p.terminate()
        out = p.communicate(timeout=30)[0].decode()
    assert p.returncode == 0, out
    assert "[account test]" in out and "port = %d" % info["port"] in out
    assert not os.path.exists(d / "dovecot.json")
