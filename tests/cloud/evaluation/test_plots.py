"""The committed plots can be redrawn from the committed CSVs alone (no experiment is rerun)."""

from __future__ import annotations

import shutil
from pathlib import Path

from cloud.evaluation.tradeoff import replot_tradeoff
from cloud.simulation.report import replot_sweeps

DOCS = Path(__file__).resolve().parents[3] / "docs"
PNG = b"\x89PNG\r\n\x1a\n"


def test_tradeoff_and_simulation_plots_redraw_from_their_csvs(tmp_path):
    shutil.copytree(DOCS / "tradeoff", tmp_path / "tradeoff", ignore=shutil.ignore_patterns("*.png"))
    shutil.copytree(DOCS / "simulation", tmp_path / "simulation", ignore=shutil.ignore_patterns("*.png"))
    replot_tradeoff(tmp_path / "tradeoff")
    replot_sweeps(tmp_path / "simulation")
    for path in (
        "tradeoff/tradeoff.png",
        "tradeoff/targets.png",
        "simulation/utility_vs_delay.png",
        "simulation/utility_vs_rate.png",
    ):
        assert (tmp_path / path).read_bytes()[:8] == PNG, path


def test_tradeoff_labels_stay_inside_the_figure_and_apart():
    from cloud.evaluation.csv_rows import read_csv_rows
    from cloud.evaluation.tradeoff import targets_figure, tradeoff_figure

    fig = tradeoff_figure(read_csv_rows(DOCS / "tradeoff" / "tradeoff.csv"))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert [ax.get_ylabel() for ax in fig.axes] == ["utility@5 (test)", "true clicks per page (simulated users)"]
    for ax in fig.axes:  # label metrics, then the page's true clicks (the runs were scored with --pages)
        boxes = [text.get_window_extent(renderer) for text in ax.texts]
        assert len(boxes) == 4
        inside = ax.get_window_extent(renderer)
        for i, box in enumerate(boxes):
            assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
            assert not any(box.overlaps(other) for other in boxes[i + 1 :])
    bars = targets_figure(read_csv_rows(DOCS / "tradeoff" / "targets.csv")).axes[0]
    assert bars.get_xlabel() and bars.get_ylabel()
