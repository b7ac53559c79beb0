#!/usr/bin/python3
"""A throwaway Dovecot IMAP server for the mailfs tests and the demo.

Importable module and CLI.

    from dovecot import Dovecot
    with Dovecot(tmpdir, tls=True) as d:
        d.append("INBOX", b"Subject: hi\\r\\n\\r\\nbody\\r\\n", flags=("\\\\Seen",))
        with d.client() as c:
            print(c.uids("INBOX"))

CLI (used by scripts/demo):

    /usr/bin/python3 tests/dovecot.py start DIR [--tls] [--ssl-required] [--seed] [--no-big]

runs in the foreground until SIGINT/SIGTERM, prints the ports and a mailfs
config snippet, and writes DIR/dovecot.json ({"pid", "host", "port",
"imaps_port", "user", "password", "ca_file"}) once the server is ready.

Runs /usr/sbin/dovecot -F -c CONF as a child of this process (as root; the
mail processes run as uid/gid 65534).  Everything lives under ``root_dir``
except the short-path runtime directory (base_dir and state_dir: UNIX socket
paths are limited to 108 bytes) which is a private /tmp/mfdc-XXXXXX.  When
``root_dir`` is not traversable by uid 65534 (pytest's tmp_path under
/tmp/pytest-of-root is 0700, and so is /root), the user's home is placed in
the runtime directory and ``root_dir/home`` is a symlink to it.
"""

import base64
import datetime
import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import imaplib

DOVECOT_BIN = os.environ.get("DOVECOT_BIN", "/usr/sbin/dovecot")
USER = "test"
PASSWORD = "secret"
MAIL_UID = 65534
MAIL_GID = 65534

__all__ = ["Dovecot", "ImapClient", "DovecotError", "imap_utf7_encode",
           "imap_utf7_decode", "USER", "PASSWORD"]


class DovecotError(RuntimeError):
    pass


# --------------------------------------------------------------------------
# Modified UTF-7 (RFC 3501 5.1.3)

def imap_utf7_encode(name):
    out = []
    buf = []

    def flush():
        if buf:
            b = "".join(buf).encode("utf-16-be")
            out.append("&" + base64.b64encode(b).decode().rstrip("=").replace("/", ",") + "-")
            buf.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7e:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            buf.append(ch)
    flush()
    return "".join(out)


def imap_utf7_decode(name):
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    out = []
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "&":
            j = name.index("-", i)
            chunk = name[i + 1:j]
            if chunk == "":
                out.append("&")
            else:
                b64 = chunk.replace(",", "/")
                b64 += "=" * (-len(b64) % 4)
                out.append(base64.b64decode(b64).decode("utf-16-be"))
            i = j + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mbox(name):
    return _quote(imap_utf7_encode(name))


def _unquote(s):
    s = s.strip()
    if s.startswith('"') and s.endswith('"'):
        return re.sub(r'\\(.)', r'\1', s[1:-1])
    return s


_MONTHS = {m: i + 1 for i, m in enumerate(
    "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())}


def parse_internaldate(s):
    """'01-Mar-2024 09:00:00 +0000' -> epoch seconds (int)."""
    if isinstance(s, bytes):
        s = s.decode()
    m = re.match(r'\s*"?\s*(\d{1,2})-(\w{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)', s)
    if not m:
        raise ValueError("bad INTERNALDATE %r" % s)
    day, mon, year, hh, mm, ss, sign, oh, om = m.groups()
    dt = datetime.datetime(int(year), _MONTHS[mon], int(day), int(hh), int(mm), int(ss),
                           tzinfo=datetime.timezone.utc)
    off = (int(oh) * 60 + int(om)) * 60
    if sign == "+":
        off = -off
    return int(dt.timestamp()) + off


def format_internaldate(date):
    """datetime (aware or naive=UTC) or epoch number -> '"DD-Mon-YYYY HH:MM:SS +0000"'."""
    if isinstance(date, (int, float)):
        date = datetime.datetime.fromtimestamp(date, datetime.timezone.utc)
    if date.tzinfo is None:
        date = date.replace(tzinfo=datetime.timezone.utc)
    date = date.astimezone(datetime.timezone.utc)
    mon = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()[date.month - 1]
    return '"%02d-%s-%04d %02d:%02d:%02d +0000"' % (
        date.day, mon, date.year, date.hour, date.minute, date.second)


def _flags_arg(flags):
    if isinstance(flags, str):
        flags = flags.split()
    return "(" + " ".join(flags) + ")"


def _parse_flags(b):
    m = re.search(rb"FLAGS \(([^)]*)\)", b)
    if not m:
        return None
    return set(x.decode() for x in m.group(1).split()) - {"\\Recent"}


def _uid_of(b):
    m = re.search(rb"UID (\d+)", b)
    return int(m.group(1)) if m else None


class ImapClient:
    """A small logged-in IMAP client for checking server-side truth.

    Every method that takes a folder (re)selects it first, read-only
    (EXAMINE) unless it changes something, so the view is always fresh and no
    unsolicited responses leak between calls.  Folder names are UTF-8 with
    '/' as the separator; they are encoded to modified UTF-7 here.
    """

    def __init__(self, host, port, user=USER, password=PASSWORD, *, tls=None,
                 ca_file=None, starttls=False, timeout=30):
        ctx = None
        if tls or starttls:
            ctx = ssl.create_default_context(cafile=ca_file)
        if tls:
            self.imap = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=timeout)
        else:
            self.imap = imaplib.IMAP4(host, port, timeout=timeout)
            if starttls:
                self.imap.starttls(ssl_context=ctx)
        self.imap.login(user, password)
        self._selected = None

    # -- plumbing
    def close(self):
        try:
            self.imap.logout()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _ok(self, res, what):
        typ, data = res
        if typ != "OK":
            raise DovecotError("%s failed: %s %r" % (what, typ, data))
        return data

    def cmd(self, name, *args):
        """Run a raw command; returns (typ, data)."""
        return self.imap._simple_command(name, *args)

    def select(self, folder, readonly=True):
        typ, data = self.imap._simple_command("EXAMINE" if readonly else "SELECT", _mbox(folder))
        if typ != "OK":
            raise DovecotError("select %s failed: %r" % (folder, data))
        self.imap.state = "SELECTED"
        self.imap.is_readonly = readonly
        self._selected = folder
        return data

    def _fresh(self, folder, readonly=True):
        self.imap.untagged_responses = {}
        self.select(folder, readonly)

    def capabilities(self):
        data = self._ok(self.imap.capability(), "CAPABILITY")
        return data[0].decode().split()

    # -- folders
    def list(self, pattern="*"):
        """[(attrs set, delimiter, name)] with decoded names."""
        data = self._ok(self.imap.list('""', _quote(pattern)), "LIST")
        out = []
        for item in data:
            if item is None:
                continue
            if isinstance(item, tuple):
                head, lit = item
                m = re.match(rb'\(([^)]*)\) ("[^"]*"|NIL) ', head)
                name = lit.decode("utf-8", "replace")
            else:
                m = re.match(rb'\(([^)]*)\) ("(?:[^"\\]|\\.)*"|NIL) (.*)$', item)
                name = _unquote(m.group(3).decode())
            attrs = set(m.group(1).decode().split())
            delim = None if m.group(2) == b"NIL" else _unquote(m.group(2).decode())
            out.append((attrs, delim, imap_utf7_decode(name)))
        return out

    def folders(self, selectable_only=True):
        """Sorted decoded folder names (selectable ones by default)."""
        return sorted(n for a, _, n in self.list()
                      if not (selectable_only and ("\\Noselect" in a or "\\NonExistent" in a)))

    def special_use(self):
        """{'\\Trash': 'Trash', ...}"""
        out = {}
        data = self._ok(self.imap._simple_command("LIST", '(SPECIAL-USE)', '""', '"*"'), "LIST")
        data = self.imap._untagged_response("OK", data, "LIST")[1]
        for item in data:
            if not isinstance(item, bytes):
                continue
            m = re.match(rb'\(([^)]*)\) ("(?:[^"\\]|\\.)*"|NIL) (.*)$', item)
            for a in m.group(1).decode().split():
                if a in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"):
                    out[a] = imap_utf7_decode(_unquote(m.group(3).decode()))
        return out

    def create(self, folder):
        return self._ok(self.imap.create(_mbox(folder)), "CREATE %s" % folder)

    def delete(self, folder):
        return self._ok(self.imap.delete(_mbox(folder)), "DELETE %s" % folder)

    def rename(self, old, new):
        return self._ok(self.imap.rename(_mbox(old), _mbox(new)), "RENAME")

    def subscribe(self, folder):
        return self._ok(self.imap.subscribe(_mbox(folder)), "SUBSCRIBE")

    def status(self, folder, items=("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ")):
        data = self._ok(self.imap.status(_mbox(folder), "(" + " ".join(items) + ")"), "STATUS")
        raw = data[0] if isinstance(data[0], bytes) else data[0][0]
        inner = raw[raw.rindex(b"(") + 1:raw.rindex(b")")].decode().split()
        return {inner[i]: int(inner[i + 1]) for i in range(0, len(inner), 2)}

    def uidvalidity(self, folder):
        return self.status(folder, ("UIDVALIDITY",))["UIDVALIDITY"]

    def count(self, folder):
        return self.status(folder, ("MESSAGES",))["MESSAGES"]

    # -- messages
    def uids(self, folder):
        self._fresh(folder)
        data = self._ok(self.imap.uid("SEARCH", "ALL"), "SEARCH")
        return sorted(int(x) for x in (data[0] or b"").split())

    def _fetch_simple(self, folder, uidset, item):
        """UID FETCH of a non-literal item: {uid: raw response bytes}."""
        self._fresh(folder)
        data = self._ok(self.imap.uid("FETCH", uidset, "(UID %s)" % item), "FETCH")
        out = {}
        for d in data:
            if d is None:
                continue
            if isinstance(d, tuple):
                d = d[0]
            uid = _uid_of(d)
            if uid is not None:
                out[uid] = d
        return out

    def all_flags(self, folder):
        """{uid: set of flags}"""
        if not self.count(folder):
            return {}
        return {u: _parse_flags(d) for u, d in self._fetch_simple(folder, "1:*", "FLAGS").items()}

    def flags(self, folder, uid):
        d = self._fetch_simple(folder, str(uid), "FLAGS")
        if uid not in d:
            raise KeyError("UID %d not in %s" % (uid, folder))
        return _parse_flags(d[uid])

    def internaldate(self, folder, uid):
        """INTERNALDATE as epoch seconds."""
        d = self._fetch_simple(folder, str(uid), "INTERNALDATE")
        m = re.search(rb'INTERNALDATE "([^"]+)"', d[uid])
        return parse_internaldate(m.group(1))

    def internaldates(self, folder):
        if not self.count(folder):
            return {}
        out = {}
        for u, d in self._fetch_simple(folder, "1:*", "INTERNALDATE").items():
            out[u] = parse_internaldate(re.search(rb'INTERNALDATE "([^"]+)"', d).group(1))
        return out

    def size(self, folder, uid):
        d = self._fetch_simple(folder, str(uid), "RFC822.SIZE")
        return int(re.search(rb"RFC822.SIZE (\d+)", d[uid]).group(1))

    def sizes(self, folder):
        if not self.count(folder):
            return {}
        return {u: int(re.search(rb"RFC822.SIZE (\d+)", d).group(1))
                for u, d in self._fetch_simple(folder, "1:*", "RFC822.SIZE").items()}

    def _fetch_literal(self, folder, uidset, item):
        self._fresh(folder)
        data = self._ok(self.imap.uid("FETCH", uidset, "(UID %s)" % item), "FETCH")
        out = {}
        for d in data:
            if isinstance(d, tuple):
                uid = _uid_of(d[0])
                if uid is not None:
                    out[uid] = d[1]
        return out

    def fetch(self, folder, uid):
        """The message bytes (BODY.PEEK[]: does not set \\Seen)."""
        d = self._fetch_literal(folder, str(uid), "BODY.PEEK[]")
        if uid not in d:
            raise KeyError("UID %d not in %s" % (uid, folder))
        return d[uid]

    def messages(self, folder):
        """{uid: bytes} of every message (BODY.PEEK[])."""
        if not self.count(folder):
            return {}
        return self._fetch_literal(folder, "1:*", "BODY.PEEK[]")

    def message_ids(self, folder):
        """{uid: Message-ID without brackets, or None}."""
        if not self.count(folder):
            return {}
        heads = self._fetch_literal(folder, "1:*", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]")
        out = {}
        for u, h in heads.items():
            m = re.search(rb"(?im)^message-id:\s*<?([^>\r\n]*)>?", h or b"")
            out[u] = m.group(1).decode("ascii", "replace").strip() if m else None
        return out

    def search_header(self, folder, header, value):
        self._fresh(folder)
        data = self._ok(self.imap.uid("SEARCH", "HEADER", _quote(header), _quote(value)), "SEARCH")
        return sorted(int(x) for x in (data[0] or b"").split())

    def store(self, folder, uid, op, flags):
        """op: '+FLAGS', '-FLAGS' or 'FLAGS'; flags: iterable or str."""
        self._fresh(folder, readonly=False)
        self._ok(self.imap.uid("STORE", str(uid), op, _flags_arg(flags)), "STORE")

    def expunge(self, folder, uid=None):
        """Expunge one UID (\\Deleted + UID EXPUNGE) or, with uid=None, all \\Deleted."""
        self._fresh(folder, readonly=False)
        if uid is None:
            self._ok(self.imap.expunge(), "EXPUNGE")
        else:
            self._ok(self.imap.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)"), "STORE")
            self._ok(self.imap.uid("EXPUNGE", str(uid)), "UID EXPUNGE")

    def move(self, folder, uid, dest):
        self._fresh(folder, readonly=False)
        self._ok(self.imap.uid("MOVE", str(uid), _mbox(dest)), "MOVE")

    def copy(self, folder, uid, dest):
        self._fresh(folder, readonly=False)
        self._ok(self.imap.uid("COPY", str(uid), _mbox(dest)), "COPY")

    def append(self, folder, msg, flags=(), date=None):
        """APPEND the exact bytes (imaplib's append would rewrite line endings).

        Returns the new UID (from APPENDUID) or None.
        """
        args = [_mbox(folder)]
        if flags:
            args.append(_flags_arg(flags))
        if date is not None:
            args.append(format_internaldate(date))
        self.imap.untagged_responses = {}
        self.imap.literal = bytes(msg)
        typ, data = self.imap._simple_command("APPEND", *args)
        if typ != "OK":
            raise DovecotError("APPEND to %s failed: %r" % (folder, data))
        m = re.search(rb"APPENDUID \d+ (\d+)", b" ".join(x for x in data if isinstance(x, bytes)))
        return int(m.group(1)) if m else None


# --------------------------------------------------------------------------

def _free_port(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _group_alive(pgid):
    """True if a non-zombie process is in process group pgid."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _traversable_by_others(path):
    """True if every ancestor of path (and path) is o+x."""
    path = os.path.abspath(path)
    while True:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            pass
        else:
            if not st.st_mode & 0o001:
                return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def make_tls_certs(d, names=("localhost",), ips=("127.0.0.1",)):
    """Make ca.pem/ca.key and server.pem/server.key in d with the openssl CLI."""
    os.makedirs(d, exist_ok=True)
    ca_key, ca = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
    key, csr, crt = (os.path.join(d, x) for x in ("server.key", "server.csr", "server.pem"))
    ext = os.path.join(d, "server.ext")

    def run(*args):
        r = subprocess.run(["openssl"] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if r.returncode:
            raise DovecotError("openssl %s failed:\n%s" % (args[0], r.stdout.decode()))

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", ca_key, "-out", ca, "-days", "3650",
        "-subj", "/O=mailfs test suite/CN=mailfs test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/O=mailfs test suite/CN=localhost")
    san = ",".join(["DNS:" + n for n in names] + ["IP:" + i for i in ips])
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectKeyIdentifier=hash\n"
                "authorityKeyIdentifier=keyid,issuer\n"
                "subjectAltName=%s\n" % san)
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", crt, "-days", "3650", "-extfile", ext)
    os.chmod(key, 0o600)
    return ca


class Dovecot:
    """A private Dovecot on 127.0.0.1 with one user, ``test``/``secret``.

    Attributes after start(): host, port (plain IMAP; STARTTLS-capable when
    tls), imaps_port (when tls, else None), ca_file (when tls), user,
    password, maildir_path, home, config_path, log_path, pid.
    """

    def __init__(self, root_dir, tls=False, ssl_required=False, capabilities=None,
                 drop_capabilities=(), layout="fs", extra_config="",
                 mail_debug=False, host=None, oauth2_introspection_url=None):
        if layout not in ("fs", "maildir++"):
            raise ValueError("layout must be 'fs' or 'maildir++'")
        self.root_dir = os.path.abspath(root_dir)
        self.tls = bool(tls or ssl_required)
        self.ssl_required = bool(ssl_required)
        self.capabilities = capabilities
        self.drop_capabilities = tuple(drop_capabilities)
        self.layout = layout
        self.extra_config = extra_config
        self.mail_debug = mail_debug
        # With an introspection URL, Dovecot also accepts AUTHENTICATE
        # XOAUTH2 / OAUTHBEARER and checks the bearer token there (RFC 7662,
        # POST token=...), e.g. at tests/fakes/oauth.py.
        self.oauth2_introspection_url = oauth2_introspection_url
        # Dovecot treats a connection whose remote IP equals its local IP as
        # "secured" and then allows plaintext LOGIN even with ssl = required.
        # Connecting to 127.0.0.2 comes from 127.0.0.1, so it is not.
        self.host = host or ("127.0.0.2" if self.ssl_required else "127.0.0.1")
        self.user = USER
        self.password = PASSWORD
        self.port = None
        self.imaps_port = None
        self.ca_file = None
        self.proc = None
        self.run_dir = None
        os.makedirs(self.root_dir, exist_ok=True)
        self.config_path = os.path.join(self.root_dir, "dovecot.conf")
        self.log_path = os.path.join(self.root_dir, "dovecot.log")

    # -- paths
    @property
    def home(self):
        return os.path.join(self.root_dir, "home", self.user)

    @property
    def maildir_path(self):
        return os.path.join(self.home, "Maildir")

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def _setup_dirs(self):
        if self.run_dir is None or not os.path.isdir(self.run_dir):
            self.run_dir = tempfile.mkdtemp(prefix="mfdc-", dir="/tmp")
            os.chmod(self.run_dir, 0o755)
        for sub in ("base", "state"):
            os.makedirs(os.path.join(self.run_dir, sub), exist_ok=True)
        home_root = os.path.join(self.root_dir, "home")
        if not os.path.lexists(home_root):
            if _traversable_by_others(self.root_dir):
                os.makedirs(home_root)
                os.chmod(home_root, 0o755)
            else:
                real = os.path.join(self.run_dir, "home")
                os.makedirs(real, exist_ok=True)
                os.symlink(real, home_root)
        real_home_root = os.path.realpath(home_root)
        self._home_root = real_home_root
        os.makedirs(os.path.join(real_home_root, self.user, "Maildir"), exist_ok=True)
        for dirpath, dirnames, filenames in os.walk(os.path.join(real_home_root, self.user)):
            os.chown(dirpath, MAIL_UID, MAIL_GID)
            for fn in filenames:
                os.chown(os.path.join(dirpath, fn), MAIL_UID, MAIL_GID)
        with open(os.path.join(self.run_dir, "passwd"), "w") as f:
            f.write("%s:{PLAIN}%s:%d:%d::%s/%s::\n" % (
                self.user, self.password, MAIL_UID, MAIL_GID, real_home_root, self.user))
        os.chmod(os.path.join(self.run_dir, "passwd"), 0o644)

    def chown_maildir(self):
        """chown everything under the user's home to the mail uid (after direct seeding)."""
        for dirpath, dirnames, filenames in os.walk(self.home + "/"):
            os.chown(dirpath, MAIL_UID, MAIL_GID)
            for fn in filenames:
                os.lchown(os.path.join(dirpath, fn), MAIL_UID, MAIL_GID)

    def _capability_setting(self):
        caps = self.capabilities
        if caps is None and not self.drop_capabilities:
            return ""
        if caps is None:
            caps = DEFAULT_CAPABILITIES
        if isinstance(caps, str):
            caps = caps.split()
        drop = set(c.upper() for c in self.drop_capabilities)
        caps = [c for c in caps if c.upper() not in drop]
        return "imap_capability = %s\n" % " ".join(caps)

    def _oauth2_passdb(self):
        if not self.oauth2_introspection_url:
            return ""
        path = os.path.join(self.run_dir, "dovecot-oauth2.conf.ext")
        with open(path, "w") as f:
            f.write("introspection_mode = post\n"
                    "introspection_url = %s\n"
                    "force_introspection = yes\n"
                    "username_attribute = username\n"
                    "active_attribute = active\n"
                    "active_value = true\n" % self.oauth2_introspection_url)
        os.chmod(path, 0o644)
        return ("passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                "  args = %s\n}\n" % path)

    def write_config(self):
        login_user = "dovenull" if _user_exists("dovenull") else "nobody"
        internal_user = "dovecot" if _user_exists("dovecot") else "nobody"
        layout = ":LAYOUT=fs" if self.layout == "fs" else ""
        if self.ssl_required:
            ssl_mode = "required"
        elif self.tls:
            ssl_mode = "yes"
        else:
            ssl_mode = "no"
        tls_conf = ""
        if self.tls:
            tls_conf = ("ssl_cert = <%s/server.pem\nssl_key = <%s/server.key\n"
                        % (self.root_dir, self.root_dir))
            if os.path.exists("/usr/share/dovecot/dh.pem"):
                tls_conf += "ssl_dh = </usr/share/dovecot/dh.pem\n"
        imaps = ""
        if self.tls:
            imaps = ("  inet_listener imaps {\n    address = %s\n    port = %d\n    ssl = yes\n  }\n"
                     % (self.host, self.imaps_port))
        else:
            imaps = "  inet_listener imaps {\n    port = 0\n  }\n"
        conf = f"""# generated by tests/dovecot.py -- a throwaway test server
instance_name = mailfs-test-{os.path.basename(self.run_dir)}
base_dir = {self.run_dir}/base
state_dir = {self.run_dir}/state
log_path = {self.log_path}
info_log_path = {self.log_path}
debug_log_path = {self.log_path}
listen = {self.host}
protocols = imap
default_login_user = {login_user}
default_internal_user = {internal_user}
first_valid_uid = 1
first_valid_gid = 1
ssl = {ssl_mode}
ssl_min_protocol = TLSv1.2
{tls_conf}auth_mechanisms = plain login{" xoauth2 oauthbearer" if self.oauth2_introspection_url else ""}
disable_plaintext_auth = {"yes" if self.ssl_required else "no"}
auth_verbose = yes
auth_failure_delay = 0
mail_debug = {"yes" if self.mail_debug else "no"}
mail_location = maildir:~/Maildir{layout}
mailbox_idle_check_interval = 1 secs
imap_idle_notify_interval = 1 secs
{self._capability_setting()}{self._oauth2_passdb()}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.run_dir}/passwd
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_GID} home={self._home_root}/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
  mailbox Sent {{
    special_use = \\Sent
  }}
  mailbox Drafts {{
    special_use = \\Drafts
  }}
  mailbox Junk {{
    special_use = \\Junk
  }}
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
{imaps}}}
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
{self.extra_config}
"""
        with open(self.config_path, "w") as f:
            f.write(conf)
        return self.config_path

    # -- lifecycle
    def start(self, timeout=20):
        if self.proc and self.proc.poll() is None:
            return self
        if self.port is None:
            self.port = _free_port(self.host)
            if self.tls:
                self.imaps_port = _free_port(self.host)
        if self.tls and not os.path.exists(os.path.join(self.root_dir, "server.pem")):
            make_tls_certs(self.root_dir, ips=("127.0.0.1", "127.0.0.2"))
        if self.tls:
            self.ca_file = os.path.join(self.root_dir, "ca.pem")
        self._setup_dirs()
        self.write_config()
        self._log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        self._stdout = open(os.path.join(self.root_dir, "dovecot.stdout"), "ab")
        self.proc = subprocess.Popen([DOVECOT_BIN, "-F", "-c", self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=self._stdout,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(timeout)
        except Exception:
            self.kill()
            raise
        return self

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        ports = [(self.port, False)]
        if self.imaps_port:
            ports.append((self.imaps_port, True))
        last = None
        for port, use_tls in ports:
            while True:
                if self.proc.poll() is not None:
                    raise DovecotError("dovecot exited with %s:\n%s" % (
                        self.proc.returncode, self.log_tail()))
                try:
                    s = socket.create_connection((self.host, port), timeout=2)
                    try:
                        if use_tls:
                            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                            ctx.check_hostname = False
                            ctx.verify_mode = ssl.CERT_NONE
                            s = ctx.wrap_socket(s)
                        s.settimeout(2)
                        greeting = s.recv(4096)
                    finally:
                        s.close()
                    if greeting.startswith(b"* OK"):
                        break
                    last = greeting
                except OSError as e:
                    last = e
                if time.monotonic() > deadline:
                    raise DovecotError("dovecot not ready on port %d after %ss (%r):\n%s" % (
                        port, timeout, last, self.log_tail()))
                time.sleep(0.05)

    def stop(self, timeout=10):
        """Graceful stop (SIGTERM); SIGKILL after timeout; reaps all children."""
        if not self.proc:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group()

    def kill(self):
        """SIGKILL the master and every process of its group (a crash)."""
        if not self.proc:
            return
        self._kill_group()

    def _kill_group(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        # children whose parent died were reparented but stay in the group
        for _ in range(100):
            if not _group_alive(self.proc.pid):
                break
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            time.sleep(0.02)
        if getattr(self, "_stdout", None):
            self._stdout.close()
            self._stdout = None

    def restart(self, timeout=20):
        self.stop()
        return self.start(timeout)

    @property
    def running(self):
        return bool(self.proc and self.proc.poll() is None)

    def destroy(self):
        """Kill (no need to be graceful: the data goes) and remove the private
        runtime directory (and a home placed there)."""
        self.kill()
        if self.run_dir and os.path.isdir(self.run_dir):
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.destroy()

    # -- logs
    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=40):
        text = self.log()
        try:
            with open(os.path.join(self.root_dir, "dovecot.stdout"), "rb") as f:
                out = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            out = ""
        return "\n".join((text + out).splitlines()[-n:])

    # -- clients and data
    def client(self, tls=None, starttls=None, ca_file=None, user=None, password=None):
        """A logged-in ImapClient.  Defaults: STARTTLS with ca_file when
        ssl_required, plain otherwise.  tls=True uses the imaps port."""
        if tls:
            return ImapClient(self.host, self.imaps_port, user or self.user,
                              password or self.password, tls=True,
                              ca_file=ca_file or self.ca_file)
        if starttls is None:
            starttls = self.ssl_required
        return ImapClient(self.host, self.port, user or self.user, password or self.password,
                          starttls=starttls, ca_file=ca_file or self.ca_file)

    def append(self, folder, msg, flags=(), date=None):
        """APPEND one message; returns its UID."""
        with self.client() as c:
            return c.append(folder, msg, flags, date)

    def create(self, folder):
        with self.client() as c:
            c.create(folder)

    def seed(self, corpus):
        """Create folders and APPEND every message of corpus (folder ->
        [(bytes, flags, date)]), all on one connection.  Returns
        {folder: [uid, ...]} in corpus order."""
        uids = {}
        with self.client() as c:
            existing = set(c.folders(selectable_only=False))
            for folder in sorted(corpus, key=lambda f: f.count("/")):
                if folder.upper() == "INBOX" or folder in existing:
                    continue
                c.create(folder)
                existing.add(folder)
            for folder, msgs in corpus.items():
                uids[folder] = [c.append(folder, m, flags, date) for m, flags, date in msgs]
        return uids

    # -- behind the server's back (tests of identity resets and guards)
    def folder_maildir(self, folder):
        """The Maildir directory of folder on disk (LAYOUT=fs: INBOX is the
        root, others are modified-UTF-7 paths below it)."""
        if folder.upper() == "INBOX":
            return self.maildir_path
        if self.layout == "fs":
            return os.path.join(self.maildir_path, *imap_utf7_encode(folder).split("/"))
        return os.path.join(self.maildir_path, "." + imap_utf7_encode(folder).replace("/", "."))

    def _index_files(self, folder):
        d = self.folder_maildir(folder)
        return [os.path.join(d, n) for n in os.listdir(d)
                if n == "dovecot-uidlist" or n.startswith("dovecot.index")]

    def reset_uidvalidity(self, folder, restart=True, attempts=5):
        """Recreate folder's identity: stop Dovecot, remove its
        dovecot-uidlist and dovecot.index* (the messages stay, with their
        flags in the file names), start again.  Dovecot assigns a new
        UIDVALIDITY and renumbers the messages from 1.  Returns
        (old, new) UIDVALIDITY; raises if it did not change."""
        with self.client() as c:
            old = c.uidvalidity(folder)
        new = old
        for _ in range(attempts):
            self.stop()
            for f in self._index_files(folder):
                os.unlink(f)
            if not restart:
                return old, None
            self.start()
            with self.client() as c:
                new = c.uidvalidity(folder)
            if new != old:
                return old, new
            time.sleep(1.1)     # Dovecot derives UIDVALIDITY from the clock
        raise DovecotError("UIDVALIDITY of %s stayed %d" % (folder, old))

    def hide_messages(self, folder, reset=False):
        """Empty folder behind Dovecot's back: move its cur/ and new/ aside
        (restore_messages() brings them back) and restart.  With reset,
        also drop the index so the folder gets a new UIDVALIDITY."""
        d = self.folder_maildir(folder)
        self.stop()
        for sub in ("cur", "new"):
            aside = self._aside(folder, sub)
            if os.path.exists(aside):
                raise DovecotError("%s already hidden" % folder)
            os.makedirs(os.path.dirname(aside), exist_ok=True)
            os.rename(os.path.join(d, sub), aside)
            os.mkdir(os.path.join(d, sub), 0o700)
        if reset:
            for f in self._index_files(folder):
                os.unlink(f)
        self.chown_maildir()
        self.start()

    def _aside(self, folder, sub):
        # outside the Maildir, so Dovecot never lists it as a mailbox
        return os.path.join(self.home, "mailfs-aside",
                            imap_utf7_encode(folder).replace("/", "%2F"), sub)

    def restore_messages(self, folder, restart=True):
        """Undo hide_messages(): put the files back (Dovecot rescans)."""
        d = self.folder_maildir(folder)
        if restart:
            self.stop()
        for sub in ("cur", "new"):
            aside = self._aside(folder, sub)
            for n in os.listdir(aside):
                os.rename(os.path.join(aside, n), os.path.join(d, sub, n))
            os.rmdir(aside)
        self.chown_maildir()
        if restart:
            self.start()

    def account_config(self, name="test", tls=None, **extra):
        """A mailfs [account NAME] section for this server (text)."""
        if tls is None:
            tls = "none"
        port = {"implicit": self.imaps_port}.get(tls, self.port)
        lines = ["[account %s]" % name, "type = imap", "host = %s" % self.host,
                 "port = %d" % port, "tls = %s" % tls, "user = %s" % self.user,
                 "password = %s" % self.password]
        if tls != "none" and self.ca_file and "ca_file" not in extra:
            lines.append("ca_file = %s" % self.ca_file)
        for k, v in extra.items():
            lines.append("%s = %s" % (k, v))
        return "\n".join(lines) + "\n"


# Dovecot 2.3.19's post-login CAPABILITY (default settings); used as the base
# when drop_capabilities is given.  test_harness.py checks it is still right.
DEFAULT_CAPABILITIES = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY "
    "THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL "
    "CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 "
    "CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS "
    "BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE "
    "LITERAL+ NOTIFY SPECIAL-USE").split()


# --------------------------------------------------------------------------
# CLI

def _main(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="dovecot.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("start", help="run a throwaway Dovecot in the foreground")
    st.add_argument("dir")
    st.add_argument("--tls", action="store_true", help="also listen on imaps, with a suite CA")
    st.add_argument("--ssl-required", action="store_true")
    st.add_argument("--seed", action="store_true", help="seed the sample mailbox (tests/corpus.py)")
    st.add_argument("--no-big", action="store_true", help="leave out the 5 MB message when seeding")
    st.add_argument("--layout", default="fs", choices=("fs", "maildir++"))
    st.add_argument("--account", default="test", help="account name in the printed config")
    args = ap.parse_args(argv)

    d = Dovecot(args.dir, tls=args.tls, ssl_required=args.ssl_required, layout=args.layout)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    d.start()
    try:
        if args.seed:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import corpus
            d.seed(corpus.sample_mailbox(big=not args.no_big))
        info = {"pid": os.getpid(), "dovecot_pid": d.pid, "host": d.host, "port": d.port,
                "imaps_port": d.imaps_port, "user": d.user, "password": d.password,
                "ca_file": d.ca_file, "maildir": d.maildir_path, "log": d.log_path}
        tmp = os.path.join(args.dir, "dovecot.json.tmp")
        with open(tmp, "w") as f:
            json.dump(info, f, indent=1)
        os.rename(tmp, os.path.join(args.dir, "dovecot.json"))
        print("dovecot %s listening on %s port %d%s (user %s, password %s)" % (
            d.pid, d.host, d.port,
            " and imaps port %d" % d.imaps_port if d.imaps_port else "", d.user, d.password))
        print("log: %s" % d.log_path)
        print("\n# mailfs config snippet:")
        print(d.account_config(args.account, tls="starttls" if args.ssl_required else "none"))
        sys.stdout.flush()
        while not stop.is_set():
            if not d.running:
                print("dovecot exited:\n" + d.log_tail(), file=sys.stderr)
                return 1
            stop.wait(0.5)
    finally:
        d.destroy()
        try:
            os.unlink(os.path.join(args.dir, "dovecot.json"))
        except FileNotFoundError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
