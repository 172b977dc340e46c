"""Shared fixtures: `tiny_logs` (a small hand-made LOGS folder, tests/helpers/logs.py) and `tiny_data` (it,
prepared).

    def test_something(tiny_logs, tiny_data):
        spec = read_spec(tiny_logs / "dataset.toml")
        data = PreparedData(tiny_data)
"""

from pathlib import Path

import pytest

from tests.helpers.logs import write_logs


@pytest.fixture
def tiny_logs(tmp_path: Path) -> Path:
    """A small hand-made LOGS folder (described in tests/helpers/logs.py)."""
    return write_logs(tmp_path / "logs")


@pytest.fixture
def tiny_data(tiny_logs: Path) -> Path:
    """tiny_logs prepared into a DATA folder."""
    from cloud.data.prepare import prepare

    out = tiny_logs.parent / "data"
    prepare(tiny_logs, out)
    return out
