"""The committed plots can be redrawn from the committed CSVs alone (no experiment is rerun)."""

from __future__ import annotations

import shutil
from pathlib import Path

from cloud.experiments import replot_tradeoff
from cloud.simulation.report import replot_sweeps

DOCS = Path(__file__).resolve().parents[1] / "docs"
PNG = b"\x89PNG\r\n\x1a\n"


def test_tradeoff_and_simulation_plots_redraw_from_their_csvs(tmp_path):
    shutil.copytree(DOCS / "tradeoff", tmp_path / "tradeoff", ignore=shutil.ignore_patterns("*.png"))
    shutil.copytree(DOCS / "simulation", tmp_path / "simulation", ignore=shutil.ignore_patterns("*.png"))
    replot_tradeoff(tmp_path / "tradeoff")
    replot_sweeps(tmp_path / "simulation")
    for path in ("tradeoff/tradeoff.png", "tradeoff/targets.png", "simulation/utility_vs_delay.png",
                 "simulation/utility_vs_rate.png"):
        assert (tmp_path / path).read_bytes()[:8] == PNG, path
