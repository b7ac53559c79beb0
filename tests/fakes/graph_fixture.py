"""pytest fixtures for the fake Graph server (tests/fakes/graph.py).

    graph                 a fresh fake Graph server (its own process) for the test
    graph_mailfs(graph, **account_opts) -> MailfsMount of [account o365] against it

The fake runs as /usr/bin/python3 tests/fakes/graph.py on 127.0.0.1 and is
driven through its control API (FakeGraph.control / state / stats).
"""

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(TESTS, "integration"))

from util import MailfsMount, mailfs_binary  # noqa: E402

TOKEN = "TOKEN"


class FakeGraph:
    def __init__(self, logdir, introspect=None):
        self.logdir = logdir
        self.introspect = introspect
        self.proc = None
        self.port = None

    def start(self):
        self.log_path = os.path.join(self.logdir, "fake-graph.log")
        self.log = open(self.log_path, "ab")
        extra = ["--introspect", self.introspect] if self.introspect else []
        self.proc = subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "graph.py"),
                                      "--token", TOKEN] + extra,
                                     stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise RuntimeError("fake graph did not start: %r" % line)
        self.port = int(line.split()[1])
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()

    @property
    def api_url(self):
        return "http://127.0.0.1:%d/v1.0" % self.port

    def control(self, what, **args):
        req = urllib.request.Request("http://127.0.0.1:%d/_control/%s" % (self.port, what),
                                     data=json.dumps(args).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def state(self):
        return self.control("state")

    def stats(self):
        return self.control("stats")

    def messages(self, folder=None):
        ms = self.state()["messages"]
        return [m for m in ms if folder is None or m["folder"] == folder]

    def seed(self, folder="INBOX", **kw):
        return self.control("seed", folder=folder, **kw)["ids"]


@pytest.fixture
def graph(tmp_path):
    g = FakeGraph(str(tmp_path)).start()
    yield g
    g.stop()


@pytest.fixture
def graph_mailfs(request, tmp_path):
    """Factory: graph_mailfs(graph, general=None, start=True, **account_opts)."""
    binary = mailfs_binary()
    if not os.path.exists(binary):
        pytest.skip("mount.mailfs not built (%s); run scripts/build" % binary)
    mounts = []
    request.node._mailfs_mounts = mounts

    def make(server, general=None, start=True, **account_opts):
        workdir = str(tmp_path / ("mailfs%d" % len(mounts) if mounts else "mailfs"))
        os.makedirs(workdir, exist_ok=True)
        gen = {"cache_dir": os.path.join(workdir, "cache"),
               "state_dir": os.path.join(workdir, "state"),
               "fetch_timeout": 10}
        gen.update(general or {})
        acct = {"type": "graph", "user": "alice@contoso.com", "api_url": server.api_url,
                "token_command": "echo " + TOKEN, "poll_interval": 2, "timeout": 10}
        acct.update(account_opts)
        m = MailfsMount(workdir, gen, {"o365": acct}, account="o365", binary=binary)
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
                errors.append("mount.mailfs (%s) exited with %s at unmount:\n%s"
                              % (m.workdir, m.exit_codes[-1], m.log_tail(40)))
        finally:
            m.cleanup()
    if errors:
        pytest.fail("\n".join(errors))


def wait_stat(predicate, timeout=30, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(interval)
