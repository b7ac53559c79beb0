"""Helpers for the mailfs integration tests (no pytest fixtures here).

    wait_until(pred, timeout=15, interval=0.05, msg=None)
    TcpProxy(target_host, target_port)       fault-injecting TCP proxy
    MailfsMount(...)                         one mount.mailfs process
    maildir helpers: messages(), parse_name(), letters_to_imap(), ...
"""

import errno
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
REPO = os.path.dirname(TESTS)

FUSERMOUNT = shutil.which("fusermount3") or "/usr/bin/fusermount3"


def fuse_skip_reason():
    """Why FUSE tests cannot run here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if not os.path.exists(FUSERMOUNT):
        return "fusermount3 is missing (apt-get install fuse3)"
    return None


# --------------------------------------------------------------------------
# waiting


class Timeout(AssertionError):
    pass


def wait_until(predicate, timeout=15, interval=0.05, msg=None):
    """Call predicate() until it returns a truthy value; return that value.

    Exceptions from predicate (e.g. FileNotFoundError, or an IMAP error while
    a server is down) count as "not yet".  On timeout raise an AssertionError
    with msg, the last value and the last exception.
    """
    deadline = time.monotonic() + timeout
    last, last_exc = None, None
    while True:
        try:
            last = predicate()
            last_exc = None
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - anything means "not yet"
            last_exc = e
        if time.monotonic() >= deadline:
            what = msg or getattr(predicate, "__name__", "condition")
            raise Timeout("timed out after %.1fs waiting for %s (last value %r%s)" % (
                timeout, what, last,
                ", last exception %r" % (last_exc,) if last_exc else ""))
        time.sleep(interval)


def run_with_timeout(fn, timeout, *args, **kwargs):
    """Run fn in a daemon thread; return ('ok', value) or ('error', exc), or
    ('timeout', None) if it did not finish in time (the thread is abandoned;
    the test itself never hangs)."""
    box = {}

    def target():
        try:
            box["value"] = fn(*args, **kwargs)
            box["state"] = "ok"
        except BaseException as e:  # noqa: BLE001
            box["value"] = e
            box["state"] = "error"

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return "timeout", None
    return box["state"], box["value"]


# --------------------------------------------------------------------------
# fault-injecting TCP proxy


class TcpProxy:
    """A tiny TCP proxy on 127.0.0.1 in front of a server.

    mode "forward" (default): pass bytes both ways.
    stop():      close the listening socket and every open connection: new
                 connections are refused ("server gone").
    start():     listen again on the same port.
    blackhole(): keep accepting connections but forward nothing and answer
                 nothing (a hung server); existing connections are dropped.
    forward():   back to normal for new connections (and ends stall,
                 truncate and delay).
    drop_connections(): reset every open connection, keep listening.

    More faults (test_faults.py):
    stall():     keep every connection open, old and new, but stop
                 forwarding in both directions (a server or network that
                 hangs mid-session); forward() resumes and delivers what
                 was held back.
    truncate(after=N, on=b"BODY[", keep=K): close a connection after it
                 forwarded N bytes downstream (server -> client) since
                 truncate() was called, or, with on=, K bytes after the
                 first occurrence of that pattern in the server's data
                 (e.g. the middle of a literal); one cut per connection.
    delay(seconds): hold every chunk for that long before forwarding.
    cuts:        how many connections truncate() cut.
    seen_up:     the last 256 KiB the client sent (received, even if held).
    watch(b"APPEND"), sent(b"APPEND"): count a pattern the client sends.
    connections: how many proxied connections are open.
    """

    def __init__(self, target_host, target_port, listen_host="127.0.0.1", port=0):
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = port
        self.mode = "forward"
        self.accepted = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.cuts = 0
        self.seen_up = bytearray()      # the last 256 KiB the client sent
        self._watch = {}                # needle -> times seen upstream
        self.delay_s = 0.0
        self.truncate_after = None
        self.truncate_on = None
        self.truncate_keep = 0
        self._trunc_gen = 0
        self._lsock = None
        self._conns = set()
        self._lock = threading.Lock()
        self._thread = None

    @property
    def address(self):
        return (self.listen_host, self.port)

    def start(self):
        if self._lsock:
            return self
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 10
        while True:
            try:
                s.bind((self.listen_host, self.port))
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    s.close()
                    raise
                time.sleep(0.1)
        s.listen(64)
        self.port = s.getsockname()[1]
        self._lsock = s
        self._thread = threading.Thread(target=self._accept_loop, args=(s,), daemon=True,
                                        name="proxy-accept-%d" % self.port)
        self._thread.start()
        return self

    def _accept_loop(self, lsock):
        while True:
            try:
                client, _ = lsock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.mode == "blackhole":
                with self._lock:
                    self._conns.add(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.add(client)
                self._conns.add(upstream)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a, b):
        """a: the client (the daemon), b: the server."""
        socks = [a, b]
        down_since = 0          # bytes sent downstream since the last truncate()
        gen = self._trunc_gen
        tail = b""              # last bytes seen downstream (pattern across chunks)
        try:
            while True:
                if self.mode == "stall":
                    if a.fileno() < 0 or b.fileno() < 0:
                        break
                    time.sleep(0.05)
                    continue
                r, _, _ = select.select(socks, [], [], 0.5)
                if a.fileno() < 0 or b.fileno() < 0:
                    break
                done = False
                for s in r:
                    try:
                        data = s.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        done = True
                        break
                    other = b if s is a else a
                    if s is a:
                        prev = bytes(self.seen_up[-64:])
                        self.seen_up += data
                        if len(self.seen_up) > 262144:
                            del self.seen_up[:-262144]
                        for needle in list(self._watch):
                            self._watch[needle] += (prev + data).count(needle) - \
                                prev.count(needle)
                    if self.delay_s:
                        time.sleep(self.delay_s)
                    cut = False
                    if s is b and self.mode == "truncate":
                        if gen != self._trunc_gen:
                            gen, down_since, tail = self._trunc_gen, 0, b""
                        keep = None
                        if self.truncate_on is not None:
                            hay = tail + data
                            i = hay.find(self.truncate_on)
                            if i >= 0:
                                keep = max(0, i - len(tail)) + len(self.truncate_on) \
                                    + self.truncate_keep
                            tail = hay[-len(self.truncate_on):]
                        elif self.truncate_after is not None:
                            if down_since + len(data) > self.truncate_after:
                                keep = max(0, self.truncate_after - down_since)
                        if keep is not None and keep < len(data):
                            data = data[:keep]
                            cut = True
                        down_since += len(data)
                    if s is a:
                        self.bytes_up += len(data)
                    else:
                        self.bytes_down += len(data)
                    try:
                        if data:
                            other.sendall(data)
                    except OSError:
                        done = True
                        break
                    if cut:
                        self.cuts += 1
                        done = True
                        break
                if done:
                    break
        except (OSError, ValueError):
            pass
        finally:
            self._close(a)
            self._close(b)

    def _close(self, s):
        with self._lock:
            self._conns.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass

    def drop_connections(self):
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass
            self._close(c)

    def stop(self):
        """Server gone: refuse new connections and close open ones."""
        if self._lsock:
            try:
                self._lsock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._lsock.close()
            self._lsock = None
        if self._thread:
            self._thread.join(5)
            self._thread = None
        self.drop_connections()

    def blackhole(self):
        self.mode = "blackhole"
        self.drop_connections()

    def forward(self):
        self.mode = "forward"
        self.delay_s = 0.0
        self.truncate_after = None
        self.truncate_on = None

    def stall(self):
        """Hang: connections stay open (new ones are accepted and connected
        upstream) but nothing is forwarded until forward()."""
        self.mode = "stall"

    def truncate(self, after=None, on=None, keep=0):
        """Cut each connection after `after` more bytes from the server, or
        `keep` bytes after the first `on` pattern in the server's data."""
        if (after is None) == (on is None):
            raise ValueError("give exactly one of after= and on=")
        self.truncate_after = after
        self.truncate_on = on
        self.truncate_keep = keep
        self._trunc_gen += 1
        self.mode = "truncate"

    def delay(self, seconds):
        """Forward every chunk after `seconds` (both directions)."""
        self.delay_s = float(seconds)
        if self.mode not in ("forward", "truncate"):
            self.mode = "forward"

    def watch(self, needle):
        """Count from now on how often the client sends needle (bytes,
        at most 64 long); see sent()."""
        self._watch[needle] = 0

    def sent(self, needle):
        return self._watch.get(needle, 0)

    @property
    def connections(self):
        with self._lock:
            return len(self._conns) // 2

    close = stop

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------
# maildir helpers (mount side)

LETTER_TO_IMAP = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded",
                  "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
IMAP_TO_LETTER = {v.lower(): k for k, v in LETTER_TO_IMAP.items()}


def letters_to_imap(letters):
    return {LETTER_TO_IMAP[c] for c in letters if c in LETTER_TO_IMAP}


def imap_to_letters(flags):
    return "".join(sorted(IMAP_TO_LETTER[f.lower()] for f in flags
                          if f.lower() in IMAP_TO_LETTER))


def parse_name(name):
    """'UNIQUE:2,FS' -> ('UNIQUE', 'FS'); 'UNIQUE' -> ('UNIQUE', None)."""
    if ":2," in name:
        u, f = name.rsplit(":2,", 1)
        return u, f
    return name, None


def with_flags(name, letters):
    u, _ = parse_name(name)
    return "%s:2,%s" % (u, "".join(sorted(set(letters))))


def folder_dir(acct, folder):
    return os.path.join(acct, *folder.split("/"))


def messages(acct, folder):
    """Paths of the message files in folder's cur/ and new/ (no dotfiles)."""
    d = folder_dir(acct, folder)
    out = []
    for sub in ("cur", "new"):
        p = os.path.join(d, sub)
        for n in sorted(os.listdir(p)):
            if not n.startswith("."):
                out.append(os.path.join(p, n))
    return out


def count(acct, folder):
    return len(messages(acct, folder))


def folders(acct):
    """Folder paths (relative, '/'-separated) under the account dir that
    have cur/new/tmp."""
    out = []
    for dirpath, dirnames, _ in os.walk(acct):
        if {"cur", "new", "tmp"} <= set(dirnames):
            rel = os.path.relpath(dirpath, acct)
            if rel != ".":
                out.append(rel.replace(os.sep, "/"))
        dirnames[:] = [d for d in dirnames if d not in ("cur", "new", "tmp")]
    return sorted(out)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def deliver(folder_path, name, data, *, mtime=None, dest="new", flags=None,
            method="rename"):
    """Maildir delivery into folder_path (the folder dir on the mount).

    O_CREAT|O_EXCL tmp/NAME, write, fsync, close, optional utime, then
    rename (method="rename") or link + unlink (method="link") into dest/.
    flags (letters) turn the final name into NAME:2,FLAGS.  Returns the
    final path.
    """
    tmp = os.path.join(folder_path, "tmp", name)
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    final = name if flags is None else with_flags(name, flags)
    target = os.path.join(folder_path, dest, final)
    if method == "rename":
        os.rename(tmp, target)
    elif method == "link":
        os.link(tmp, target)
        os.unlink(tmp)
    else:
        raise ValueError(method)
    return target


# --------------------------------------------------------------------------
# the daemon

def mailfs_binary():
    if os.environ.get("MAILFS_BIN"):
        return os.environ["MAILFS_BIN"]
    build = os.environ.get("MAILFS_BUILD_DIR", os.path.join(REPO, "build"))
    if not os.path.isabs(build):
        build = os.path.join(REPO, build)
    return os.path.join(build, "fs", "mount.mailfs")


# Lines that a healthy daemon must not print.  Case-insensitive.
BAD_LOG = re.compile(r"(error|fatal|abort|sanitizer|runtime error|leak|assertion|segfault)",
                     re.IGNORECASE)
# Lines never counted as bad: libfuse's own -d request trace ("unique: 7,
# error: -2 (No such file or directory), outsize: 16") is normal traffic.
DEFAULT_LOG_ALLOW = [
    r"^\s*unique: \d+, (error|success)",
    r"^=== mailfs harness:",
]


def _fmt_ini_value(v):
    if v is True:
        return "yes"
    if v is False:
        return "no"
    return str(v)


def write_config(path, general, accounts):
    """general: dict; accounts: {name: dict}.  None values are left out."""
    lines = ["[general]"]
    for k, v in general.items():
        if v is not None:
            lines.append("%s = %s" % (k, _fmt_ini_value(v)))
    for name, opts in accounts.items():
        lines.append("")
        lines.append("[account %s]" % name)
        for k, v in opts.items():
            if v is not None:
                lines.append("%s = %s" % (k, _fmt_ini_value(v)))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)


class MailfsMount:
    """One mount.mailfs in the foreground: `mount.mailfs -f -d -o config=CONF MNT`.

    .mnt, .acct (mnt/<account>), .config_path, .state_dir, .cache_dir,
    .log_path, .proc; .start(), .stop(), .kill(), .remount(kill=False),
    .log(), .log_tail(n), .expect_log(regex), .check_log(), .folder(name).
    """

    def __init__(self, workdir, general, accounts, account="test", binary=None,
                 debug=None, extra_args=(), wrapper=None):
        self.workdir = workdir
        self.mnt = os.path.join(workdir, "mnt")
        self.account = account
        self.acct = os.path.join(self.mnt, account)
        self.config_path = os.path.join(workdir, "mailfs.conf")
        self.log_path = os.path.join(workdir, "mailfs.log")
        self.general = general
        self.accounts = accounts
        self.state_dir = general.get("state_dir")
        self.cache_dir = general.get("cache_dir")
        self.binary = binary or mailfs_binary()
        if debug is None:
            debug = os.environ.get("MAILFS_DEBUG", "1") != "0"
        self.debug = debug
        self.extra_args = list(extra_args)
        if wrapper is None:
            wrapper = os.environ.get("MAILFS_WRAPPER", "").split()
        self.wrapper = list(wrapper)
        self.proc = None
        self.starts = 0
        self.exit_codes = []
        self.expected_log = list(DEFAULT_LOG_ALLOW)
        os.makedirs(self.mnt, exist_ok=True)
        self.write_config()

    def write_config(self):
        write_config(self.config_path, self.general, self.accounts)

    def folder(self, name):
        """The folder's directory on the mount (name uses '/')."""
        return folder_dir(self.acct, name)

    # -- logs
    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=60):
        return "\n".join(self.log().splitlines()[-n:])

    def _mark(self, text):
        with open(self.log_path, "a") as f:
            f.write("=== mailfs harness: %s ===\n" % text)

    def expect_log(self, regex):
        """Declare log lines matching regex (search, case-insensitive) as expected."""
        self.expected_log.append(regex)

    def bad_log_lines(self):
        allow = [re.compile(r, re.IGNORECASE) for r in self.expected_log]
        bad = []
        for line in self.log().splitlines():
            if BAD_LOG.search(line) and not any(a.search(line) for a in allow):
                bad.append(line)
        return bad

    def check_log(self):
        bad = self.bad_log_lines()
        if bad:
            raise AssertionError("mount.mailfs log has %d unexpected line(s):\n%s" % (
                len(bad), "\n".join(bad[:40])))

    # -- lifecycle
    @property
    def running(self):
        return bool(self.proc and self.proc.poll() is None)

    def command(self):
        cmd = self.wrapper + [self.binary, "-f"]
        if self.debug:
            cmd.append("-d")
        cmd += ["-o", "config=" + self.config_path] + self.extra_args + [self.mnt]
        return cmd

    def start(self, timeout=30, wait=True):
        if self.running:
            raise RuntimeError("already running")
        if not os.path.exists(self.binary):
            raise FileNotFoundError("mount.mailfs not found at %s" % self.binary)
        self.starts += 1
        self._mark("start #%d: %s" % (self.starts, " ".join(self.command())))
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        finally:
            logf.close()
        if wait:
            self.wait_for_mount(timeout)
        return self

    def wait_for_mount(self, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            if os.path.ismount(self.mnt):
                return
            if self.proc.poll() is not None:
                raise AssertionError("mount.mailfs exited with %s before mounting; log:\n%s" % (
                    self.proc.returncode, self.log_tail()))
            if time.monotonic() > deadline:
                raise AssertionError("mount.mailfs did not mount within %ss; log:\n%s" % (
                    timeout, self.log_tail()))
            time.sleep(0.05)

    def _fusermount(self, lazy=False):
        args = [FUSERMOUNT, "-u"] + (["-z"] if lazy else []) + [self.mnt]
        return subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)

    def stop(self, timeout=30, check=True):
        """fusermount3 -u; the daemon must exit with 0 within timeout."""
        if not self.proc:
            return None
        if self.proc.poll() is None:
            deadline = time.monotonic() + 10
            while True:
                r = self._fusermount()
                if r.returncode == 0 or not os.path.ismount(self.mnt):
                    break
                if time.monotonic() > deadline:
                    raise AssertionError("fusermount3 -u failed: %s" % r.stdout.decode())
                time.sleep(0.2)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("mount.mailfs did not exit within %ss after unmount; log:\n%s"
                                     % (timeout, self.log_tail()))
        rc = self.proc.returncode
        self.exit_codes.append(rc)
        self._mark("stopped, exit code %s" % rc)
        self.proc = None
        if check and rc != 0:
            raise AssertionError("mount.mailfs exited with %s; log:\n%s" % (rc, self.log_tail()))
        return rc

    def kill(self):
        """SIGKILL the daemon (and its process group), then lazy-unmount."""
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            self._mark("killed with SIGKILL")
        self.proc = None
        if os.path.ismount(self.mnt) or self._is_stale_mount():
            self._fusermount(lazy=True)

    def _is_stale_mount(self):
        try:
            os.stat(self.mnt)
            return False
        except OSError as e:
            return e.errno in (errno.ENOTCONN, errno.EIO)

    def remount(self, kill=False, timeout=30):
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start(timeout)

    def cleanup(self):
        """Teardown: lazy unmount and kill whatever is left."""
        if self.proc and self.proc.poll() is None:
            self._fusermount(lazy=True)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if os.path.ismount(self.mnt) or self._is_stale_mount():
            self._fusermount(lazy=True)
