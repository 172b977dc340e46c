"""Shared fixtures of the evaluation tests."""

from __future__ import annotations

import pytest

from cloud.data.prepare import prepare
from cloud.data.synth import SynthConfig, generate, write_logs


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """Prepared lists of a small synthetic world (120 users), read-only for the tests."""
    root = tmp_path_factory.mktemp("evaluation")
    write_logs(generate(SynthConfig(users=120)), root / "logs")
    prepare(root / "logs", root / "data")
    return root / "data"
