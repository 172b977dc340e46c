"""`dir-device` run for real in a subprocess: install, rerank, record, history, info, rollback, errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from device_runtime.cli import COMMANDS
from shared_schema import BehaviorEvent
from tests.helpers.device import copy_bundle, make_slate, read_manifest

REPO = Path(__file__).resolve().parents[2]


def dir_device(*args: str, home: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if home is not None:
        env["DIR_DEVICE_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "device_runtime.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=120,
    )


def ok(*args: str, **kw) -> dict:
    proc = dir_device(*args, "--json", **kw)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_help_explains_every_subcommand():
    proc = dir_device("--help")
    assert proc.returncode == 0
    for name in COMMANDS:
        assert name in proc.stdout
    sub = dir_device("rerank", "--help")
    assert sub.returncode == 0
    for option in ("--slate", "--merge", "--backend", "--delegate", "--threads", "--root", "--db"):
        assert option in sub.stdout
    assert "DIR_DEVICE_HOME" in dir_device("install", "--help").stdout


def test_install_rerank_record_history_info_rollback(device_bundle, tmp_path):
    home = tmp_path / "home"
    manifest = read_manifest(device_bundle)
    ok("trust", "--allow-unsigned", home=home)  # an unsigned test bundle (signed: test_signed_updates.py)
    first = ok("install", str(device_bundle), home=home)
    assert first["model_version"] == manifest.model_version and first["previous"] == []
    assert (home / "current").is_file()

    slate = tmp_path / "slate.json"
    slate.write_text(make_slate(manifest).model_dump_json())
    result = ok(
        "rerank", "--slate", str(slate), "--merge", "quota", "--backend", "tflite", "--delegate", "cpu", home=home
    )
    assert len(result["items"]) == manifest.n * len(manifest.sources)
    assert (result["backend"], result["delegate"], result["merge"]) == ("tflite", "cpu", "quota")
    assert result["bundle_version"] == first["active"] and "inference" in result["timings_ms"]
    from_stdin = ok("rerank", "--slate", "-", "--db", str(tmp_path / "other.db"), home=home, stdin=slate.read_text())
    assert [i["item_id"] for i in from_stdin["items"]] == [
        i["item_id"]
        for i in ok("rerank", "--slate", str(slate), "--db", str(tmp_path / "third.db"), home=home)["items"]
    ]

    source = manifest.source_names[0]
    recorded = ok("record", "--item", f"{source}3", "--source", source, "--action", "click", "--ts", "123.5", home=home)
    assert recorded["ts"] == 123.5 and recorded["recorded"] == 1 and isinstance(recorded["id"], int)
    ok("record", "--item", "later", "--source", manifest.source_names[1], home=home)
    history = ok("history", "--source", source, "--limit", "5", home=home)["behaviors"]
    assert history == [{"ts": 123.5, "item_id": f"{source}3", "source": source, "action": "click"}]
    assert len(ok("history", home=home)["behaviors"]) == 2

    info = ok("info", home=home)
    assert info["bundle"]["version"] == first["active"] and info["attempts"][-1]["result"] == "ok"
    assert info["store"]["behaviors"][source]["click"] == 1 and info["root"] == str(home)

    second = ok("install", str(copy_bundle(device_bundle, tmp_path / "v2", model_version="cli-2")), home=home)
    assert second["previous"] == [first["active"]]
    assert ok("rollback", home=home)["active"] == first["active"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["install", "nowhere"], "dir-device install: error: nowhere: no such bundle"),
        (["rerank", "--slate", "missing.json"], "dir-device rerank: error: missing.json: no such slate file"),
        (["rollback"], "dir-device rollback: error: .*no previous bundle"),
        (["info"], "dir-device info: error: .*run `dir-device install BUNDLE"),
        (["history"], "dir-device history: error: .*no bundle installed"),
        (["trust"], "dir-device trust: error: give ROOT.json .* or --allow-unsigned"),
        (["trust", "missing-root.json"], "dir-device trust: error: .*missing-root.json"),
    ],
)
def test_errors_exit_2_with_the_command_name(tmp_path, args, message):
    proc = dir_device(*args, "--root", str(tmp_path / "empty"))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert re.search(message, proc.stderr), proc.stderr


def test_bad_input_with_a_bundle_installed(device_bundle, tmp_path):
    home = tmp_path / "home"
    ok("trust", "--allow-unsigned", home=home)
    ok("install", str(device_bundle), home=home)
    manifest = read_manifest(device_bundle)
    slate = tmp_path / "slate.json"
    slate.write_text(make_slate(manifest, embedding_version="stale").model_dump_json())
    proc = dir_device("rerank", "--slate", str(slate), home=home)
    assert proc.returncode == 2 and "slate.embedding_version 'stale' differs" in proc.stderr
    slate.write_text("{}")
    proc = dir_device("rerank", "--slate", str(slate), home=home)
    assert proc.returncode == 2 and "not a valid candidate slate" in proc.stderr
    proc = dir_device("record", "--item", "x", "--source", "ads", home=home)
    assert proc.returncode == 2 and "event.source: unknown source 'ads'; the sources are" in proc.stderr
    proc = dir_device("info", "--backend", "tflite", "--delegate", "edgetpu", home=home)
    assert proc.returncode == 2 and "tflite:edgetpu ->" in proc.stderr


def test_record_events_file_seeds_the_history(device_bundle, tmp_path):
    home = tmp_path / "home"
    manifest = read_manifest(device_bundle)
    ok("trust", "--allow-unsigned", home=home)
    ok("install", str(device_bundle), home=home)
    slate = make_slate(manifest)
    events = [
        {"item_id": item.item_id, "source": source.source, "action": "click", "ts": 100.0 + i, "vector": item.vector}
        for i, (source, item) in enumerate((s, s.items[0]) for s in slate.sources if s.items)
    ]
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    assert ok("record", "--events", str(path), home=home)["recorded"] == len(events)
    newest = ok("history", "--limit", "1", home=home)["behaviors"][0]
    assert (newest["item_id"], newest["source"]) == (events[-1]["item_id"], events[-1]["source"])
    path.write_text(path.read_text() + "{not json}\n")
    proc = dir_device("record", "--events", str(path), home=home)
    assert proc.returncode == 2 and f"line {len(events) + 1}" in proc.stderr
    assert len(ok("history", home=home)["behaviors"]) == len(events)  # the bad file stored nothing


def test_install_without_a_trust_policy_is_refused_and_allow_unsigned_is_loud(device_bundle, tmp_path):
    home = tmp_path / "home"
    proc = dir_device("install", str(device_bundle), home=home)
    assert proc.returncode == 2 and "trusts no signing root" in proc.stderr and "dir-device trust" in proc.stderr
    proc = dir_device("trust", "--allow-unsigned", home=home)
    assert proc.returncode == 0 and "WARNING: unsigned bundles are now accepted" in proc.stderr


def test_default_view_is_for_people_and_merge_defaults_to_controller(device_bundle, tmp_path):
    home = tmp_path / "home"
    manifest = read_manifest(device_bundle)
    ok("trust", "--allow-unsigned", home=home)
    installed = dir_device("install", str(device_bundle), home=home)
    assert installed.returncode == 0 and f"active: {manifest.model_version}" in installed.stdout
    slate = tmp_path / "slate.json"
    slate.write_text(make_slate(manifest).model_dump_json())
    proc = dir_device("rerank", "--slate", str(slate), home=home)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "merge: controller" in lines and "items:" in lines
    header = lines[lines.index("items:") + 1].split()
    assert header[:3] == ["item_id", "source", "score"]
    assert not proc.stdout.lstrip().startswith("{")
    many = tmp_path / "events.jsonl"
    many.write_text(
        "".join(
            BehaviorEvent(
                item_id=f"x{i}", source=manifest.source_names[0], action="impression", ts=float(i)
            ).model_dump_json()
            + "\n"
            for i in range(3)
        )
    )
    assert ok("record", "--events", str(many), home=home)["recorded"] == 3
    one = ok("record", "--item", "y", "--source", manifest.source_names[0], home=home)
    assert one["recorded"] == 1 and one["id"] > 3  # a count and an id, never the same key
