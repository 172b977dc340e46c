"""`dir-cloud synth --format parquet`: streamed in chunks of users, the same tables as `generate` whatever the
chunking."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cloud.cli import build_parser
from cloud.data.logs import read_logs
from cloud.data.synth import SynthConfig, generate, stream_parquet_logs

pytest.importorskip("duckdb")
CONFIG = SynthConfig(seed=5, users=1100)


def read(folder, name: str) -> pd.DataFrame:
    return pd.read_parquet(folder / f"{name}.parquet", dtype_backend="numpy_nullable").convert_dtypes()


@pytest.mark.slow
def test_same_tables_whatever_the_chunking(tmp_path):
    stream_parquet_logs(CONFIG, tmp_path / "a", chunk_users=512)
    stream_parquet_logs(CONFIG, tmp_path / "b", chunk_users=1024)
    tables = generate(CONFIG)
    for name, frame in (("events", tables.events), ("users", tables.users), ("items", tables.items)):
        pd.testing.assert_frame_equal(read(tmp_path / "a", name), read(tmp_path / "b", name))
        pd.testing.assert_frame_equal(read(tmp_path / "a", name), frame.convert_dtypes())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # the parts are gone
    logs = read_logs(tmp_path / "a")  # Parquet LOGS pass the same validation as CSV
    assert len(logs.events) == len(tables.events) and list(logs.users) == list(tables.users["user_id"])


@pytest.mark.slow
def test_resumes_from_the_parts_of_an_interrupted_run(tmp_path):
    """Kill a run after its first parts, run it again: the parts are reused and the tables are still right."""
    config = SynthConfig(seed=2, users=2048)
    cmd = [
        sys.executable,
        "-m",
        "cloud.cli",
        "synth",
        "--out",
        str(tmp_path / "out"),
        "--seed",
        "2",
        "--users",
        "2048",
        "--format",
        "parquet",
        "--chunk-users",
        "512",
    ]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    parts = tmp_path / ".out.parts"
    deadline = time.monotonic() + 120
    while not (parts / "events-00000001.parquet").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    if not parts.is_dir():
        pytest.skip("the run finished before it could be interrupted")
    done = sorted(p.name for p in parts.glob("events-*.parquet"))
    assert done and not (tmp_path / "out").exists()
    stream_parquet_logs(config, tmp_path / "out", chunk_users=512)
    pd.testing.assert_frame_equal(read(tmp_path / "out", "events"), generate(config).events.convert_dtypes())
    assert not parts.exists()


def test_cli_parquet_and_bad_chunk(tmp_path, capsys):
    parser = build_parser({"synth": "cloud.commands.synth"})
    args = parser.parse_args(
        ["synth", "--out", str(tmp_path / "logs"), "--users", "600", "--format", "parquet", "--chunk-users", "512"]
    )
    assert args._run(args) == 0
    assert "users" in capsys.readouterr().out and (tmp_path / "logs" / "events.parquet").is_file()
    with pytest.raises(ValueError, match="multiple of 512"):
        stream_parquet_logs(CONFIG, tmp_path / "other", chunk_users=100)
