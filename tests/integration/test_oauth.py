"""OAuth2 sign-in: mailfs-auth against the fake authorization server
(tests/fakes/oauth.py), the encrypted token store, and the daemon signing
in to a real Dovecot with AUTHENTICATE XOAUTH2 / OAUTHBEARER, whose oauth2
passdb checks every token at the fake's introspection endpoint.
"""

import base64
import os
import re
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from fakes.oauth import FakeOAuth
from fakes.graph_fixture import FakeGraph
from util import (MailfsMount, count, fuse_skip_reason, mailfs_binary, messages, read,
                  wait_until, write_config)

CLIENT = "mailfs-test-client"
RUN_LOGIN = re.compile(r"run `mailfs-auth login (\w+)`")


def auth_binary():
    return os.path.join(os.path.dirname(os.path.dirname(mailfs_binary())), "fs", "mailfs-auth")


@pytest.fixture
def fake():
    f = FakeOAuth().start()
    yield f
    f.stop()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """XDG dirs of our own: the key goes to config, the store to state."""
    cfg = tmp_path / "xdg-config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cfg))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    return {"key": str(cfg / "mailfs" / "token.key")}


def need_auth_binary():
    if not os.path.exists(auth_binary()):
        pytest.skip("mailfs-auth not built (%s)" % auth_binary())


def acct_opts(fake, provider="generic", **extra):
    o = {"oauth": provider, "client_id": CLIENT, "auth_url": fake.auth_url,
         "token_url": fake.token_url, "device_url": fake.device_url}
    o.update(extra)
    return o


def make_config(tmp_path, fake, name="a", type_="imap", general=None, **extra):
    state = str(tmp_path / "state")
    acct = {"type": type_, "user": "test"}
    if type_ == "imap":
        acct.update(host="127.0.0.1", auth="xoauth2")
    acct.update(acct_opts(fake, **extra))
    path = str(tmp_path / "mailfs.conf")
    gen = {"state_dir": state, "cache_dir": str(tmp_path / "cache")}
    gen.update(general or {})
    write_config(path, gen, {name: acct})
    return path, state


def auth(config, *args, timeout=60):
    return subprocess.run([auth_binary(), "-c", config] + list(args), capture_output=True,
                          text=True, timeout=timeout)


class Login:
    """mailfs-auth login running in the background; .url once printed."""

    def __init__(self, config, account, *args):
        self.proc = subprocess.Popen([auth_binary(), "-c", config, "login", account,
                                      "--no-browser"] + list(args),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.url = None
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"(https?://\S+\?\S+)", line)
            if m and not self.url:
                self.url = m.group(1)
            if line.startswith("Waiting"):
                break
        assert self.url, "".join(self.lines)

    def params(self):
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.url).query))

    def browse(self):
        """What a browser does: GET the URL, follow the redirect to 127.0.0.1."""
        with urllib.request.urlopen(self.url, timeout=30) as r:
            return r.status, r.read().decode()

    def finish(self, timeout=60):
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, "".join(self.lines) + out, err

    def kill(self):
        self.proc.kill()
        self.proc.communicate()


def login(config, account="a"):
    lg = Login(config, account)
    lg.browse()
    rc, out, err = lg.finish()
    assert rc == 0, (out, err)
    return out, err


def all_files(*dirs):
    for d in dirs:
        for root, _, files in os.walk(d):
            for f in files:
                yield os.path.join(root, f)


def assert_no_secrets(fake, texts=(), dirs=(), allow=()):
    """No token, code or device code the fake issued is in texts or files."""
    secrets = [s for s in fake.secrets() if s not in allow]
    assert secrets
    for t in texts:
        for s in secrets:
            assert s not in t, "a secret leaked into output/log"
    for path in all_files(*dirs):
        if path.endswith(".tok"):
            continue
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        for s in secrets:
            assert s.encode() not in data, "a secret is in %s" % path


# --------------------------------------------------------------------------
# mailfs-auth login: authorization code + PKCE over a loopback redirect


def test_login_pkce_loopback_state_and_store(tmp_path, fake, env):
    need_auth_binary()
    config, state = make_config(tmp_path, fake)
    lg = Login(config, "a")
    p = lg.params()
    assert p["code_challenge_method"] == "S256" and len(p["code_challenge"]) == 43
    assert p["client_id"] == CLIENT and p["response_type"] == "code"
    redirect = p["redirect_uri"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", redirect)
    out = "".join(lg.lines)
    assert "ssh -L" in out                    # the headless hint (no DISPLAY)
    # A redirect with another state is refused; the login keeps waiting.
    bad = redirect + "?" + urllib.parse.urlencode({"code": "forged", "state": "not-ours"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(bad, timeout=10)
    assert e.value.code == 400
    status, body = lg.browse()
    assert status == 200 and "Signed in" in body
    rc, out, err = lg.finish()
    assert rc == 0, (out, err)
    assert "state does not match" in err
    # The token request carried the verifier of that challenge.
    codes = [p for g, p in fake.grants if g == "authorization_code"]
    assert len(codes) == 1 and codes[0]["code"] != "forged"
    assert len(codes[0]["code_verifier"]) >= 43
    assert codes[0]["redirect_uri"] == redirect
    # The store: 0700 dir, 0600 files, written atomically (no temp files
    # left), the key apart from the data, no plaintext refresh token.
    sdir = os.path.join(state, "oauth")
    assert stat.S_IMODE(os.stat(sdir).st_mode) == 0o700
    names = sorted(os.listdir(sdir))
    assert "a.tok" in names and not [n for n in names if ".tmp" in n]
    for n in names:
        assert stat.S_IMODE(os.stat(os.path.join(sdir, n)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(env["key"]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(env["key"])).st_mode) == 0o700
    assert not env["key"].startswith(state)
    rts = [s for s in fake.secrets() if s.startswith("rt-")]
    blob = open(os.path.join(sdir, "a.tok"), "rb").read()
    assert blob.startswith(b"MFTOK1")
    for rt in rts:
        assert rt.encode() not in blob
        assert base64.b64encode(rt.encode()) not in blob
    r = auth(config, "status", "a")
    assert r.returncode == 0 and "a: signed in with generic" in r.stdout, r.stdout
    # token: a fresh access token from the stored refresh token
    r = auth(config, "-d", "token", "a")
    assert r.returncode == 0, r.stderr
    assert "http: POST %s -> 200" % fake.token_url in r.stderr   # debug on
    tok = r.stdout.strip()
    assert tok in fake.access and fake.grant_types()[-1] == "refresh_token"
    assert_no_secrets(fake, [out, err, r.stderr], [state, os.path.dirname(env["key"])])
    # logout forgets it
    r = auth(config, "logout", "a")
    assert r.returncode == 0 and not os.path.exists(os.path.join(sdir, "a.tok"))
    r = auth(config, "token", "a")
    assert r.returncode == 1 and "run `mailfs-auth login a`" in r.stderr


def test_login_opens_the_browser_when_there_is_one(tmp_path, fake, env, monkeypatch):
    """With a display, login runs xdg-open URL; here a stand-in that
    records its argv and environment and then does what a browser does."""
    need_auth_binary()
    config, _ = make_config(tmp_path, fake)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    seen = tmp_path / "xdg-open.seen"
    script = bindir / "xdg-open"
    script.write_text("#!/usr/bin/python3\n"
                      "import os, sys, urllib.request\n"
                      "open(%r, 'w').write(repr((sys.argv, dict(os.environ))))\n"
                      "urllib.request.urlopen(sys.argv[1], timeout=30).read()\n" % str(seen))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (bindir, os.environ["PATH"]))
    monkeypatch.setenv("DISPLAY", ":99")
    r = subprocess.run([auth_binary(), "-c", config, "login", "a"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "Opening it in your browser" in r.stdout and "ssh -L" not in r.stdout
    argv_env = seen.read_text()
    assert fake.auth_url in argv_env
    assert_no_secrets(fake, [argv_env, r.stdout, r.stderr])


def test_login_fixed_port_and_denied(tmp_path, fake, env):
    need_auth_binary()
    config, _ = make_config(tmp_path, fake)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    fake.authorize_mode = "deny"
    lg = Login(config, "a", "--port", str(port))
    assert lg.params()["redirect_uri"] == "http://127.0.0.1:%d/" % port
    with pytest.raises(urllib.error.HTTPError):
        lg.browse()
    rc, out, err = lg.finish()
    assert rc == 1 and "access_denied" in err
    r = auth(config, "status", "a")
    assert r.returncode == 1 and "not signed in" in r.stdout


def test_token_xoauth2_string(tmp_path, fake, env):
    need_auth_binary()
    config, _ = make_config(tmp_path, fake)
    login(config)
    r = auth(config, "token", "a", "--xoauth2")
    assert r.returncode == 0, r.stderr
    raw = base64.b64decode(r.stdout.strip())
    m = re.fullmatch(rb"user=test\x01auth=Bearer (\S+)\x01\x01", raw)
    assert m and m.group(1).decode() in fake.access
    r = auth(config, "token", "a", "--scope", "pop")
    assert r.returncode == 2
    # A provider that does not rotate (Google): the stored token stays and
    # keeps working.
    fake.rotate_refresh = False
    blob = open(os.path.join(tmp_path, "state", "oauth", "a.tok"), "rb").read()
    for _ in range(2):
        r = auth(config, "token", "a")
        assert r.returncode == 0, r.stderr
    assert open(os.path.join(tmp_path, "state", "oauth", "a.tok"), "rb").read() == blob


# --------------------------------------------------------------------------
# --device: RFC 8628


def test_device_flow_polling_states(tmp_path, fake, env):
    need_auth_binary()
    config, state = make_config(tmp_path, fake)
    fake.device_plan = ["authorization_pending", "slow_down", "ok"]
    r = auth(config, "login", "a", "--device", timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "ABCD-EFGH" in r.stdout and fake.base + "/device" in r.stdout
    assert "slower" in r.stdout
    polls = fake.device_polls
    assert len(polls) == 3
    # after slow_down the client waits 5 s longer (interval 1 -> 6)
    assert polls[2] - polls[1] >= 5.5
    assert os.path.exists(os.path.join(state, "oauth", "a.tok"))

    fake.device_plan = ["authorization_pending", "expired_token"]
    r = auth(config, "login", "a", "--device", timeout=120)
    assert r.returncode == 1 and "expired" in r.stderr, r.stderr
    fake.device_plan = ["access_denied"]
    r = auth(config, "login", "a", "--device", timeout=120)
    assert r.returncode == 1 and "declined" in r.stderr, r.stderr


def test_device_flow_google_explains_gmail_refusal(tmp_path, fake, env):
    need_auth_binary()
    fake.refuse_device_scopes = ("mail.google.com", "gmail")
    config, _ = make_config(tmp_path, fake, provider="google", client_secret="desk-secret")
    r = auth(config, "login", "a", "--device")
    assert r.returncode == 2
    assert "Google refuses Gmail scopes" in r.stderr and "ssh -L" in r.stderr
    assert not fake.devices                 # explained before asking
    assert "desk-secret" not in r.stderr + r.stdout


# --------------------------------------------------------------------------
# Scopes per use


def login_scope(tmp_path, fake, **kw):
    config, _ = make_config(tmp_path, fake, **kw)
    lg = Login(config, "a")
    try:
        return lg.params()["scope"].split()
    finally:
        lg.kill()


def test_scopes_per_provider_and_use(tmp_path, fake, env):
    need_auth_binary()
    ms_imap = "https://outlook.office.com/IMAP.AccessAsUser.All"
    ms_smtp = "https://outlook.office.com/SMTP.Send"
    graph = "https://graph.microsoft.com/Mail.ReadWrite"
    gfull, gmodify = "https://mail.google.com/", "https://www.googleapis.com/auth/gmail.modify"
    assert set(login_scope(tmp_path, fake, provider="microsoft", type_="graph")) == \
        {"offline_access", graph, ms_smtp}
    assert login_scope(tmp_path, fake, provider="google", type_="gmail") == [gmodify]
    assert login_scope(tmp_path, fake, provider="google", type_="gmail",
                       delete="expunge") == [gfull]
    assert login_scope(tmp_path, fake, provider="google") == [gfull]     # IMAP

    # Microsoft: consent to IMAP and SMTP at once, then one resource per
    # token, all from the same refresh token.
    fake.single_resource = True
    config, _ = make_config(tmp_path, fake, provider="microsoft")
    lg = Login(config, "a")
    assert set(lg.params()["scope"].split()) == {"offline_access", ms_imap, ms_smtp}
    lg.browse()
    rc, out, err = lg.finish()
    assert rc == 0, (out, err)
    code = [p for g, p in fake.grants if g == "authorization_code"][0]
    assert set(code["scope"].split()) == {ms_imap, "offline_access"}
    for use, want in (("imap", ms_imap), ("smtp", ms_smtp), ("api", graph)):
        r = auth(config, "token", "a", "--scope", use)
        assert r.returncode == 0, r.stderr
        assert set(fake.refresh_scopes()[-1].split()) == {want, "offline_access"}
        assert fake.access[r.stdout.strip()]["scope"].split()[0] == want


# --------------------------------------------------------------------------
# The store refuses to work half-way


def test_store_failures_are_clear(tmp_path, fake, env):
    need_auth_binary()
    config, state = make_config(tmp_path, fake)
    r = auth(config, "token", "a")
    assert r.returncode == 1 and "run `mailfs-auth login a`" in r.stderr
    login(config)
    key = env["key"]
    # loose permissions on the key
    os.chmod(key, 0o644)
    r = auth(config, "token", "a")
    assert r.returncode == 1 and "readable by others" in r.stderr, r.stderr
    os.chmod(key, 0o600)
    # a wrong key: no silent re-login, a message
    good = open(key, "rb").read()
    with open(key, "wb") as fh:
        fh.write(os.urandom(32))
    r = auth(config, "token", "a")
    assert r.returncode == 1 and "cannot decrypt" in r.stderr, r.stderr
    # a missing key: tokens are not re-encrypted under a fresh key
    os.unlink(key)
    r = auth(config, "token", "a")
    assert r.returncode == 1 and "is missing" in r.stderr
    lg = Login(config, "a")
    lg.browse()
    rc, out, err = lg.finish()
    assert rc == 1 and "holds tokens encrypted with it" in err, err
    assert not os.path.exists(key)
    with open(key, "wb") as fh:
        fh.write(good)
    os.chmod(key, 0o600)
    # a directory others can read
    os.chmod(os.path.join(state, "oauth"), 0o755)
    r = auth(config, "token", "a")
    assert r.returncode == 1 and "chmod 700" in r.stderr, r.stderr
    os.chmod(os.path.join(state, "oauth"), 0o700)
    r = auth(config, "token", "a")
    assert r.returncode == 0, r.stderr


def test_key_from_a_command(tmp_path, fake, env):
    """token_key_command (secret-tool lookup, pass, ...) instead of a key
    file: no key file is made, and the store opens only with that key."""
    need_auth_binary()
    keyfile = tmp_path / "k.b64"
    keyfile.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    config, state = make_config(tmp_path, fake,
                                general={"token_key_command": "cat %s" % keyfile})
    login(config)
    assert not os.path.exists(env["key"])
    r = auth(config, "token", "a")
    assert r.returncode == 0, r.stderr
    r = auth(config, "status", "a")
    assert "key file:    (token_key_command)" in r.stdout
    keyfile.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    r = auth(config, "token", "a")
    assert r.returncode == 1 and "cannot decrypt" in r.stderr


# --------------------------------------------------------------------------
# The daemon: IMAP with XOAUTH2 / OAUTHBEARER against Dovecot's oauth2 passdb

if fuse_skip_reason():
    mount_skip = pytest.mark.skip(reason=fuse_skip_reason())
else:
    mount_skip = pytest.mark.usefixtures()


def msg(i):
    return ("From: o%d@example.org\r\nSubject: oauth %d\r\nMessage-ID: <oauth-%d@mailfs.test>"
            "\r\n\r\nbody %d\r\n" % (i, i, i, i)).encode()


def oauth_mount(tmp_path, fake, dovecot, mailfs, mech="xoauth2", proxy=None):
    """Sign in with mailfs-auth for account test, then mount it."""
    config, _ = make_config(tmp_path, fake, name="test")
    login(config, "test")
    m = mailfs(dovecot, start=False, proxy=proxy, password=None, auth=mech,
               general={"state_dir": str(tmp_path / "state")}, **acct_opts(fake))
    m.start()
    return m


def greeting(d):
    """The pre-login greeting (with its CAPABILITY code)."""
    with socket.create_connection((d.host, d.port), timeout=10) as s:
        return s.recv(4096).decode()


def status(m):
    return subprocess.run([mailfs_binary(), "--status", m.mnt], capture_output=True,
                          text=True, timeout=20).stdout


@mount_skip
@pytest.mark.parametrize("sasl_ir", [True, False], ids=["sasl-ir", "no-sasl-ir"])
@pytest.mark.parametrize("mech", ["xoauth2", "oauthbearer"])
def test_imap_sasl_against_dovecot(tmp_path, fake, env, dovecot_factory, mailfs, mech, sasl_ir):
    need_auth_binary()
    d = dovecot_factory(oauth2_introspection_url=fake.introspect_url,
                        drop_capabilities=() if sasl_ir else ("SASL-IR",))
    assert ("SASL-IR" in greeting(d)) == sasl_ir
    d.append("INBOX", msg(1), flags=("\\Seen",))
    m = oauth_mount(tmp_path, fake, d, mailfs, mech)
    wait_until(lambda: count(m.acct, "INBOX") == 1, 30, msg="INBOX over " + mech)
    d.append("INBOX", msg(2))
    wait_until(lambda: count(m.acct, "INBOX") == 2, 30)
    verdicts = [v for _, v in fake.introspections]
    assert verdicts and set(verdicts) == {"ok"}, verdicts
    assert "method=%s" % mech.upper() in d.log()
    m.stop()
    assert_no_secrets(fake, [m.log()], [str(tmp_path / "state"), m.cache_dir])


@mount_skip
@pytest.mark.parametrize("sasl_ir", [True, False], ids=["sasl-ir", "no-sasl-ir"])
@pytest.mark.parametrize("mech", ["xoauth2", "oauthbearer"])
def test_imap_refused_token_is_an_auth_failure(tmp_path, fake, env, dovecot_factory, mailfs,
                                               mech, sasl_ir):
    """Dovecot answers a bad token with an error challenge; the client
    answers it and reports the NO as a sign-in problem (not a protocol
    error), and asks for a new token next time."""
    need_auth_binary()
    fake.require_scope = "imap-only-scope"       # our tokens lack it
    d = dovecot_factory(oauth2_introspection_url=fake.introspect_url,
                        drop_capabilities=() if sasl_ir else ("SASL-IR",))
    m = oauth_mount(tmp_path, fake, d, mailfs, mech)
    m.expect_log(r"(AUTHENTICATE|authentication failed|cannot list folders|failed)")
    want = "AUTHENTICATE %s to 127.0.0.1 as test failed" % mech.upper()
    wait_until(lambda: want in status(m), 30, msg="the refusal in --status")
    assert "unexpected continuation" not in m.log()
    assert "wrong-scope" in [v for _, v in fake.introspections]
    # a refused token is not used again: the retry refreshes first
    wait_until(lambda: fake.grant_types().count("refresh_token") >= 2, 60,
               msg="a new token after the refusal")


@mount_skip
def test_daemon_refreshes_ahead_of_expiry(tmp_path, fake, env, dovecot_factory, mailfs, proxy):
    """Tokens live 40 s; the daemon renews them in the last quarter of
    their life (10 s ahead), before Dovecot could see an expired one."""
    need_auth_binary()
    fake.access_ttl = 40
    d = dovecot_factory(oauth2_introspection_url=fake.introspect_url)
    p = proxy(d)
    m = oauth_mount(tmp_path, fake, d, mailfs, proxy=p)
    m.expect_log(r"(connect|connection|refused|reset|closed|eof|retry|timed? ?out)")
    wait_until(lambda: count(m.acct, "INBOX") == 0 and status(m), 30)
    n = 0
    while fake.grant_types().count("refresh_token") < 2:    # the first, one renewal
        n += 1
        assert n < 12, fake.grant_types()
        time.sleep(6)
        p.drop_connections()                     # every reconnect logs in again
        d.append("INBOX", msg(n))
        wait_until(lambda: count(m.acct, "INBOX") == n, 60, msg="message %d" % n)
    verdicts = [v for _, v in fake.introspections]
    assert "expired" not in verdicts and "unknown" not in verdicts, verdicts
    assert len(verdicts) >= 3
    log = m.log()
    assert "renewing ahead" in log and "failed: AUTHENTICATE" not in log
    assert "AUTHENTICATE XOAUTH2 to" not in log           # never refused


@mount_skip
def test_invalid_grant_keeps_cache_and_queues(tmp_path, fake, env, dovecot_factory, mailfs, proxy):
    need_auth_binary()
    d = dovecot_factory(oauth2_introspection_url=fake.introspect_url)
    d.append("INBOX", msg(1), flags=("\\Seen",))
    p = proxy(d)
    m = oauth_mount(tmp_path, fake, d, mailfs, proxy=p)
    m.expect_log(r"(connect|connection|refused|reset|closed|eof|retry|timed? ?out|"
                 r"mailfs-auth login|AUTHENTICATE|invalid_grant|failed)")
    wait_until(lambda: count(m.acct, "INBOX") == 1, 30)
    with open(messages(m.acct, "INBOX")[0], "rb") as fh:   # now cached
        assert b"body 1" in fh.read()
    fake.revoke_all(access=True)
    p.drop_connections()
    wait_until(lambda: "run `mailfs-auth login test`" in status(m), 60,
               msg="the re-login hint in --status")
    assert "run `mailfs-auth login test`" in m.log()
    refreshes = fake.grant_types().count("refresh_token")
    # The cache still serves, and changes queue.
    path = messages(m.acct, "INBOX")[0]
    with open(path, "rb") as fh:
        assert b"body 1" in fh.read()
    os.rename(path, path.replace(":2,S", ":2,FS"))
    wait_until(lambda: "1 change waiting" in status(m), 30)
    # Retries (every few seconds here) do not hammer the provider with the
    # dead refresh token: the refusal stands until the store changes.
    time.sleep(5)
    assert fake.grant_types().count("refresh_token") == refreshes
    # Sign in again: the daemon picks the new token up and drains.
    config, _ = make_config(tmp_path, fake, name="test")
    login(config, "test")
    wait_until(lambda: "queue: empty" in status(m), 90, msg="queue drained after login")
    with d.client() as c:
        uid = c.uids("INBOX")[0]
        assert "\\Flagged" in c.flags("INBOX", uid)
    m.stop()
    assert_no_secrets(fake, [m.log()], [str(tmp_path / "state"), m.cache_dir])


@mount_skip
def test_graph_account_uses_the_oauth_tokens(tmp_path, fake, env):
    """A Graph account signed in with mailfs-auth: every Graph request carries
    an access token the authorization server issued (the fake Graph checks
    each at its introspection endpoint, as Graph trusts Entra ID), listing,
    reading and a flag change work through the mount, and no token reaches
    the log."""
    need_auth_binary()
    g = FakeGraph(str(tmp_path), introspect=fake.introspect_url).start()
    m = None
    try:
        config, state = make_config(tmp_path, fake, name="o365", type_="graph",
                                    api_url=g.api_url)
        login(config, "o365")
        g.seed("INBOX", generate=3)
        workdir = str(tmp_path / "mnt")
        os.makedirs(workdir)
        acct = {"type": "graph", "user": "test", "api_url": g.api_url,
                "poll_interval": 2, "timeout": 10}
        acct.update(acct_opts(fake))
        m = MailfsMount(workdir, {"state_dir": state, "cache_dir": str(tmp_path / "cache")},
                        {"o365": acct}, account="o365")
        m.start()
        wait_until(lambda: count(m.acct, "INBOX") == 3, 30)
        p = messages(m.acct, "INBOX")[0]
        assert b"Subject" in read(p)
        base, _, fl = os.path.basename(p).partition(":2,")
        os.rename(p, os.path.join(m.folder("INBOX"), "cur", base + ":2," + "".join(sorted(fl + "F"))))
        wait_until(lambda: any(x["flagStatus"] == "flagged" for x in g.messages("INBOX")), 30,
                   msg="flag via Graph")
        seen = g.control("bearers")["tokens"]
        assert seen, "no request carried an OAuth token"
        assert set(seen) <= set(fake.secrets()), "tokens the fake did not issue"
        m.stop()
        assert_no_secrets(fake, texts=[m.log()])
        m = None
    finally:
        if m is not None and m.running:
            m.stop(check=False)
        g.stop()
