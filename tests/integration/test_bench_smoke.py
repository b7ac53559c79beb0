"""scripts/bench must keep working: a tiny run of three phases, mailfs only.

Checks that the table and results.json are written and hold the expected
rows.  No figure is asserted (timings on a shared machine mean nothing in a
test).
"""

import json
import os
import subprocess

import pytest

from util import REPO, fuse_skip_reason, mailfs_binary

pytestmark = [
    pytest.mark.skipif(fuse_skip_reason() is not None, reason=str(fuse_skip_reason())),
    pytest.mark.skipif(not os.path.exists("/usr/sbin/dovecot"), reason="dovecot is not installed"),
]


def test_bench_smoke(tmp_path):
    if not os.access(mailfs_binary(), os.X_OK):
        pytest.skip("no mount.mailfs at %s" % mailfs_binary())
    out = tmp_path / "out"
    env = dict(os.environ, MAILFS_BIN=mailfs_binary())
    r = subprocess.run(
        ["/usr/bin/python3", os.path.join(REPO, "tests", "bench", "bench.py"),
         "--messages", "40", "--folders", "3", "--runs", "1",
         "--only", "first,resync,latency", "--no-peers", "--resync-window", "3",
         "--latency-poll", "2", "--out", str(out)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        timeout=240, env=env, cwd=REPO)
    log = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, log[-4000:]
    table = (out / "table.txt").read_text()
    data = json.loads((out / "results.json").read_text())

    rows = {(x["phase"], x["tool"], x["measure"]) for x in data["rows"]}
    phases = {x[0] for x in rows}
    assert phases == {"first", "resync", "latency"}, rows
    assert ("first", "mailfs", "list every message (40)") in rows
    assert ("first", "mailfs (compress=no)", "list every message (40)") in rows
    tools = {(x["phase"], x["tool"]) for x in data["rows"]}
    assert ("resync", "mailfs poll cycle") in tools
    assert ("resync", "mailfs remount") in tools
    measures = {x["measure"] for x in data["rows"] if x["phase"] == "latency"}
    assert "flag rename on mount -> server" in measures
    assert "server APPEND -> readable, INBOX" in measures
    for x in data["rows"]:
        if x["phase"] in ("first", "latency"):
            assert x["seconds"] is not None and x["seconds"] > 0, x
        if x["phase"] == "first":
            assert x["bytes"] and x["bytes"] > 0, x
    # the listing was complete and exact
    first = [x for x in data["rows"] if x["phase"] == "first"]
    assert all(x["note"].startswith("sizes exact") for x in first), first
    assert not [p for p in data["problems"] if p.startswith("phase ")], data["problems"]
    # targets are reported (met or not), and the table has the same rows
    names = {t["target"] for t in data["targets"]}
    assert "flag rename to server" in names
    assert "resync bytes, 75 folders" in names
    for x in data["rows"]:
        assert x["measure"] in table
    assert "Targets:" in table
    assert data["info"]["nproc"] >= 1
