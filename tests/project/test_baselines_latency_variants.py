"""`benchmarks/baselines_latency.py --variant`: a row per variant over the model's options, read as
`dir-cloud benchmark --set` reads them, and a malformed variant refused by name before anything is timed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "baselines_latency.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("baselines_latency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variant_rows_override_the_models_options(bench):
    rows = bench.rows_to_time(["dir"], None, ["dir-w64=dir:hidden=64,history_attention=true,note=wide"])
    assert [(label, model) for label, model, _ in rows] == [("dir", "dir"), ("dir-w64", "dir")]
    base, variant = rows[0][2], rows[1][2]
    assert variant == {**base, "hidden": 64, "history_attention": True, "note": "wide"}


@pytest.mark.parametrize("variant", ["dir-w64", "dir-w64=dir", "dir-w64=dir:hidden", "=dir:hidden=64"])
def test_a_malformed_variant_is_refused_naming_the_option(variant):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--models", "dir", "--variant", variant], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "--variant: expected" in done.stderr and "Traceback" not in done.stderr
