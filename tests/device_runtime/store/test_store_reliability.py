"""HistoryStore under a process kill and under concurrent writers and readers (real processes, real SQLite)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from device_runtime.store import HistoryStore

REPO = Path(__file__).resolve().parents[3]

# argv: role ("writer" | "reader"), db path, writer index, retention. Prints "ready" once the store is
# open, then reads the deadline (unix time; 0 = run until killed) from stdin: all workers start together.
WORKER = r"""
import json, sys, time
from device_runtime.store import HistoryStore
from shared_schema.messages import BehaviorEvent

role, path, index, keep = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
source = ["video", "article"][index % 2]
ops, errors, bad_order, slowest = 0, [], 0, 0.0
with HistoryStore(path, retention_per_source=keep) as store:
    print("ready", flush=True)
    deadline = float(sys.stdin.readline())
    while not deadline or time.time() < deadline:
        began = time.perf_counter()
        try:
            if role == "writer":
                store.cache_items(source, [(f"{source}{ops}", [float(ops), 1.0])], "e1")
                event = BehaviorEvent(item_id=f"{source}{ops}", source=source, action="click", ts=float(ops))
                rid = store.record(event)
                if ops % 5 == 0:
                    store.record_exposures([(f"{source}{ops}", source)], ts=float(ops), request_id=str(rid))
                if not deadline:
                    print(rid, flush=True)
            else:
                for hist in store.last_clicks(["video", "article"], 20):
                    ts = [float(v[0]) for _, v in hist]
                    bad_order += ts != sorted(ts, reverse=True)
                store.exposure_counts(["video", "article"])
            ops += 1
            slowest = max(slowest, time.perf_counter() - began)
        except Exception as exc:  # reported to the test, which fails on any
            errors.append(f"{type(exc).__name__}: {exc}")
report = {"role": role, "ops": ops, "errors": errors[:5], "n_errors": len(errors), "bad_order": bad_order}
print(json.dumps({**report, "slowest_s": slowest}))
"""


def _spawn(role: str, path: Path, index: int = 0, keep: int = 200) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, role, str(path), str(index), str(keep)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )


def _start(workers: list[subprocess.Popen], seconds: float) -> None:
    """Wait until every worker has opened the store, then let them all run for `seconds` (0 = forever)."""
    for w in workers:
        line = w.stdout.readline()
        assert line == "ready\n", f"worker failed to start: {line!r} {w.stderr.read() if not line else ''}"
    deadline = time.time() + seconds if seconds else 0
    for w in workers:
        w.stdin.write(f"{deadline}\n")
        w.stdin.flush()


def test_every_returned_record_survives_sigkill(tmp_path):
    path = tmp_path / "history.db"
    HistoryStore(path).close()  # schema in place before the writer starts
    writer = _spawn("writer", path, keep=10**6)  # nothing pruned
    _start([writer], seconds=0)
    printed: list[int] = []
    start = time.time()
    while len(printed) < 400 and time.time() - start < 30:
        line = writer.stdout.readline()
        assert line, f"writer stopped early: {writer.stderr.read()}"
        printed.append(int(line))
    writer.send_signal(signal.SIGKILL)
    rest, _ = writer.communicate(timeout=10)
    assert writer.returncode == -signal.SIGKILL
    printed += [int(x) for x in rest.split("\n")[:-1]]  # the last piece may be a half-written line
    assert len(printed) >= 400

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    stored = {row[0] for row in conn.execute("SELECT id FROM behaviors")}
    conn.close()
    missing = set(printed) - stored
    assert not missing, f"{len(missing)} recorded behaviours lost, e.g. {sorted(missing)[:5]}"
    with HistoryStore(path) as store:  # and the store reopens and serves
        assert len(store.last_clicks(["video"], 20)[0]) == 20


def test_concurrent_writers_and_readers_never_see_database_is_locked(tmp_path):
    path = tmp_path / "history.db"  # not created yet: the workers race to create and migrate it
    workers = [_spawn("writer", path, i) for i in range(2)] + [_spawn("reader", path) for _ in range(2)]
    _start(workers, seconds=2.0)
    reports = []
    for w in workers:
        out, err = w.communicate(timeout=60)
        assert w.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    for r in reports:
        assert r["n_errors"] == 0, r
        assert r["ops"] > 10, r  # each one really ran
        assert r["bad_order"] == 0, r  # readers always saw newest-first history
    with HistoryStore(path) as store:
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        written = sum(r["ops"] for r in reports if r["role"] == "writer")
        assert store.exposure_counts(["video", "article"]).sum() == sum(
            (r["ops"] + 4) // 5 for r in reports if r["role"] == "writer"
        )
        assert 0 < store.stats()["rows"]["behaviors"] <= min(written, 2 * 200)  # 200 per source, exactly
