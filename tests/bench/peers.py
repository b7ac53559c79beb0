"""The peers mailfs is measured against: mbsync (isync), OfflineIMAP and
InterIMAP, each run one-shot with a config written here, with its stdin
closed and a hard timeout.

    Mbsync(workdir, host, port, max_size=None).sync(timeout) -> seconds
    OfflineImap(workdir, host, port).sync(timeout, quick=False) -> seconds
    InterImap(workdir, remote=(host, port), local=(host, port)).sync(timeout) -> seconds

Every tool keeps its defaults except what is needed to reach a plain-text
loopback Dovecot (no TLS) and to write somewhere private; in particular the
compression, pipelining and connection settings are the tools' own.
"""

import os
import shutil
import subprocess
import time

USER = "test"
PASSWORD = "secret"


class PeerError(RuntimeError):
    pass


def have(tool):
    return shutil.which(tool) is not None


def tool_version(tool):
    cmds = {"mbsync": ["mbsync", "--version"], "offlineimap": ["offlineimap", "--version"],
            "interimap": ["interimap", "--version"], "notmuch": ["notmuch", "--version"],
            "neomutt": ["neomutt", "-v"], "dovecot": ["/usr/sbin/dovecot", "--version"],
            "gnuplot": ["gnuplot", "--version"], "tmux": ["tmux", "-V"]}
    try:
        r = subprocess.run(cmds[tool], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=20)
        line = r.stdout.decode("utf-8", "replace").strip().splitlines()[0]
        return line.replace("/usr/bin/", "")
    except Exception:  # noqa: BLE001
        return None


def _run(cmd, log_path, timeout, env=None, cwd=None):
    t0 = time.monotonic()
    with open(log_path, "ab") as log:
        log.write(("\n=== %s\n" % " ".join(cmd)).encode())
        log.flush()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             env=env, cwd=cwd, start_new_session=True)
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, 9)
            except ProcessLookupError:
                pass
            p.wait(10)
            raise PeerError("%s timed out after %ss (log: %s)" % (cmd[0], timeout, log_path))
    dt = time.monotonic() - t0
    if rc != 0:
        with open(log_path, "rb") as f:
            tail = f.read()[-2000:].decode("utf-8", "replace")
        raise PeerError("%s exited with %d:\n%s" % (cmd[0], rc, tail))
    return dt


class Mbsync:
    """mbsync with a Maildir near side (SubFolders Verbatim, INBOX under Path).

    max_size: None for a full copy, e.g. "1k" for the listing-only variant
    (bigger messages become placeholders)."""

    def __init__(self, workdir, host, port, max_size=None):
        self.workdir = workdir
        self.maildir = os.path.join(workdir, "Maildir")
        self.rc = os.path.join(workdir, "mbsyncrc")
        self.log = os.path.join(workdir, "mbsync.log")
        os.makedirs(self.maildir, exist_ok=True)
        lines = [
            "IMAPAccount bench",
            "Host %s" % host,
            "Port %d" % port,
            "User %s" % USER,
            "Pass %s" % PASSWORD,
            "SSLType None",
            "AuthMechs LOGIN",
            "",
            "IMAPStore bench-far",
            "Account bench",
            "",
            "MaildirStore bench-near",
            "Path %s/" % self.maildir,
            "Inbox %s/INBOX" % self.maildir,
            "SubFolders Verbatim",
            "",
            "Channel bench",
            "Far :bench-far:",
            "Near :bench-near:",
            "Patterns *",
            "Create Near",
            "SyncState *",
        ]
        if max_size:
            lines.append("MaxSize %s" % max_size)
        with open(self.rc, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.rc, 0o600)

    def sync(self, timeout=600):
        return _run(["mbsync", "-c", self.rc, "-a", "-q"], self.log, timeout)


class OfflineImap:
    def __init__(self, workdir, host, port):
        self.workdir = workdir
        self.maildir = os.path.join(workdir, "Maildir")
        self.meta = os.path.join(workdir, "meta")
        self.rc = os.path.join(workdir, "offlineimaprc")
        self.log = os.path.join(workdir, "offlineimap.log")
        os.makedirs(self.maildir, exist_ok=True)
        os.makedirs(self.meta, exist_ok=True)
        conf = """[general]
accounts = bench
metadata = {meta}
ui = quiet

[Account bench]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {maildir}
sep = /

[Repository remote]
type = IMAP
remotehost = {host}
remoteport = {port}
remoteuser = {user}
remotepass = {password}
ssl = no
starttls = no
""".format(meta=self.meta, maildir=self.maildir, host=host, port=port, user=USER,
           password=PASSWORD)
        with open(self.rc, "w") as f:
            f.write(conf)
        os.chmod(self.rc, 0o600)

    def sync(self, timeout=600, quick=False):
        cmd = ["offlineimap", "-c", self.rc, "-o", "-u", "quiet"]
        if quick:
            cmd.append("-q")
        env = dict(os.environ, HOME=self.workdir)
        return _run(cmd, self.log, timeout, env=env)


class InterImap:
    """interimap between the bench Dovecot (remote, through the proxy) and a
    second, local Dovecot (local, direct), as its man page describes."""

    def __init__(self, workdir, remote, local):
        self.workdir = workdir
        self.rc = os.path.join(workdir, "interimap.conf")
        self.db = os.path.join(workdir, "interimap.db")
        self.log = os.path.join(workdir, "interimap.log")
        os.makedirs(workdir, exist_ok=True)
        conf = """database = {db}

[local]
type = imap
host = {lhost}
port = {lport}
STARTTLS = NO
username = {user}
password = {password}

[remote]
type = imap
host = {rhost}
port = {rport}
STARTTLS = NO
username = {user}
password = {password}
""".format(db=self.db, lhost=local[0], lport=local[1], rhost=remote[0], rport=remote[1],
           user=USER, password=PASSWORD)
        with open(self.rc, "w") as f:
            f.write(conf)
        os.chmod(self.rc, 0o600)
        self.env = dict(os.environ, HOME=workdir, XDG_DATA_HOME=os.path.join(workdir, "data"),
                        XDG_CONFIG_HOME=os.path.join(workdir, "config"))

    def sync(self, timeout=600):
        return _run(["interimap", "--config=" + self.rc, "--quiet"], self.log, timeout,
                    env=self.env)

    def watch(self, interval=1):
        """Start `interimap --watch=interval` (the daemon mode); returns the Popen."""
        log = open(self.log, "ab")
        try:
            return subprocess.Popen(["interimap", "--config=" + self.rc, "--quiet",
                                     "--watch=%d" % interval],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=self.env, start_new_session=True)
        finally:
            log.close()
