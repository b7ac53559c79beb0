"""pytest fixtures for the mailfs integration tests.

Run with Debian's pytest:  /usr/bin/pytest-3 -v tests/integration

Fixtures
    dovecot_factory(**kw) -> started Dovecot (tests/dovecot.py), destroyed at teardown
    dovecot               a fresh, empty Dovecot for this test
    seeded                a fresh Dovecot seeded with corpus.sample_mailbox(big=False)
    dovecot_module        a module-scoped Dovecot seeded with the full sample mailbox
                          (5 MB message included): for read-only tests
    proxy(dovecot)        a TcpProxy in front of dovecot's plain port
    mailfs(dovecot, **account_opts) -> MailfsMount, mounted
    imap                  (no fixture: use dovecot.client())

Environment
    MAILFS_BIN            the daemon (default <repo>/$MAILFS_BUILD_DIR/fs/mount.mailfs,
                          MAILFS_BUILD_DIR defaults to build)
    MAILFS_DEBUG=0        run the daemon without -d
    MAILFS_WRAPPER        command prefix, e.g. "valgrind -q --error-exitcode=99"
    MAILFS_REQUIRE_DAEMON=1  a missing daemon fails instead of skipping
"""

import os
import shutil
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # tests/: dovecot.py, corpus.py

import corpus  # noqa: E402
import dovecot as dovecot_mod  # noqa: E402
from util import MailfsMount, TcpProxy, mailfs_binary, fuse_skip_reason  # noqa: E402

HAVE_DOVECOT = os.path.exists(dovecot_mod.DOVECOT_BIN)


def pytest_collection_modifyitems(config, items):
    reason = fuse_skip_reason()
    for item in items:
        names = getattr(item, "fixturenames", ())
        if reason and "mailfs" in names:
            item.add_marker(pytest.mark.skip(reason=reason))
        if not HAVE_DOVECOT and any(n.startswith(("dovecot", "seeded")) for n in names):
            item.add_marker(pytest.mark.skip(reason="dovecot is not installed "
                                                    "(apt-get install dovecot-imapd)"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for m in getattr(item, "_mailfs_mounts", []):
            rep.sections.append(("mount.mailfs log (%s, tail)" % m.workdir, m.log_tail(80)))
        for d in getattr(item, "_dovecots", []):
            rep.sections.append(("dovecot log (%s, tail)" % d.root_dir, d.log_tail(30)))


@pytest.fixture
def dovecot_factory(request, tmp_path):
    servers = []
    request.node._dovecots = servers

    def make(**kw):
        root = tmp_path / ("dovecot%d" % len(servers) if servers else "dovecot")
        d = dovecot_mod.Dovecot(str(root), **kw)
        servers.append(d)
        d.start()
        return d

    yield make
    # Stop every server even if one of them fails to stop cleanly: a
    # leaked Dovecot would hold its ports and temp dir past the run.
    errors = []
    for d in servers:
        try:
            d.destroy()
        except Exception as e:      # noqa: BLE001 - reported below
            errors.append("%s: %r" % (d.root_dir, e))
    if errors:
        pytest.fail("stopping Dovecot failed: " + "; ".join(errors))


@pytest.fixture
def dovecot(dovecot_factory):
    return dovecot_factory()


@pytest.fixture
def seeded(dovecot_factory):
    d = dovecot_factory()
    d.seeded_uids = d.seed(corpus.sample_mailbox(big=False))
    d.corpus = corpus.sample_mailbox(big=False)
    return d


@pytest.fixture(scope="module")
def dovecot_module(request):
    if not HAVE_DOVECOT:
        pytest.skip("dovecot is not installed")
    root = tempfile.mkdtemp(prefix="mailfs-dovecot-module-")
    d = dovecot_mod.Dovecot(root)
    d.start()
    d.corpus = corpus.sample_mailbox(big=True)
    d.seeded_uids = d.seed(d.corpus)
    try:
        yield d
    finally:
        d.destroy()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def proxy(request):
    proxies = []

    def make(server, port=None):
        p = TcpProxy(server.host, port or server.port).start()
        proxies.append(p)
        return p

    yield make
    for p in proxies:
        p.stop()


def _require_daemon():
    b = mailfs_binary()
    if not os.path.exists(b):
        msg = "mount.mailfs not built (%s); run scripts/build" % b
        if os.environ.get("MAILFS_REQUIRE_DAEMON") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return b


@pytest.fixture
def mailfs(request, tmp_path, dovecot_factory, proxy):
    """Factory: mailfs(server, **account_opts) -> mounted MailfsMount.

    account_opts override the [account test] keys (None removes a key);
    special keyword arguments:
        general={...}     overrides for [general]
        account="test"    the account's name
        start=False       write the config but do not mount
        proxy=TcpProxy    connect through this proxy (host/port)
        debug=None        pass -d (default: yes unless MAILFS_DEBUG=0)
    Defaults: tls none (or implicit/starttls with ca_file when given),
    poll_interval 2, timeout 5, fetch_timeout 5.
    """
    binary = _require_daemon()
    mounts = []
    request.node._mailfs_mounts = mounts

    def make(server, general=None, account="test", start=True, proxy=None, debug=None,
             extra_args=(), **account_opts):
        workdir = str(tmp_path / ("mailfs%d" % len(mounts) if mounts else "mailfs"))
        os.makedirs(workdir, exist_ok=True)
        gen = {
            "cache_dir": os.path.join(workdir, "cache"),
            "state_dir": os.path.join(workdir, "state"),
            "fetch_timeout": 5,
        }
        gen.update(general or {})
        tls = account_opts.get("tls", "none")
        host, port = server.host, server.port
        if tls == "implicit":
            port = server.imaps_port
        if proxy is not None:
            host, port = proxy.listen_host, proxy.port
        acct = {
            "type": "imap",
            "host": host,
            "port": port,
            "tls": tls,
            "user": server.user,
            "password": server.password,
            "poll_interval": 2,
            "timeout": 5,
        }
        if tls != "none" and getattr(server, "ca_file", None):
            acct["ca_file"] = server.ca_file
        if "password_command" in account_opts:
            acct.pop("password")
        acct.update(account_opts)
        m = MailfsMount(workdir, gen, {account: acct}, account=account, binary=binary,
                        debug=debug, extra_args=extra_args)
        mounts.append(m)
        if start:
            m.start()
        return m

    yield make

    errors = []
    for m in mounts:
        try:
            if m.running:
                m.stop(check=False)
                if m.exit_codes and m.exit_codes[-1] != 0:
                    errors.append("mount.mailfs (%s) exited with %s at unmount"
                                  % (m.workdir, m.exit_codes[-1]))
        except Exception as e:  # noqa: BLE001
            errors.append("unmount of %s failed: %s" % (m.mnt, e))
        finally:
            m.cleanup()
        bad = m.bad_log_lines()
        if bad:
            errors.append("mount.mailfs log (%s) has %d unexpected line(s) "
                          "(register with mount.expect_log(regex)):\n%s"
                          % (m.workdir, len(bad), "\n".join(bad[:40])))
    if errors:
        tail = "\n\n".join("--- %s log tail ---\n%s" % (m.workdir, m.log_tail(40)) for m in mounts)
        pytest.fail("\n".join(errors) + "\n\n" + tail, pytrace=False)
