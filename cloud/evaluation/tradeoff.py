"""The utility-fairness trade-off: one DIR run per beta and per target distribution, as CSVs and plots.

    run_tradeoff("out/data", [0.0, 0.5, 1.0], [[0.5, 0.3, 0.2]], "out/tradeoff")   # tradeoff.csv, tradeoff.png
    replot_tradeoff("out/tradeoff")                 # redraw the PNGs from the CSVs

Runs go to OUT/runs/beta-B and OUT/runs/target-SHARES through cloud.evaluation.grids.train_or_reuse, so
an interrupted study continues and a finished run with the same config is reused.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cloud.evaluation.csv_rows import read_csv_rows, write_csv_rows
from cloud.evaluation.grids import train_or_reuse
from cloud.evaluation.report import cutoff


def run_tradeoff(
    data_dir: str | Path,
    betas: list[float],
    targets: list[list[float]],
    out: str | Path,
    model: str = "dir",
    seed: int = 0,
    epochs: int | None = None,
) -> str:
    """Train per beta (and per target distribution); write CSVs and PNG plots; return a summary."""
    from cloud.training.config import TrainConfig

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = TrainConfig(model=model, seed=seed)
    if epochs:
        base.epochs = epochs
    beta_rows = []
    for beta in betas:
        metrics = train_or_reuse(
            dataclasses.replace(base, beta=beta),
            data_dir,
            out / "runs" / f"beta-{beta:g}",
            label=f"{model} beta {beta:g}",
        )
        beta_rows.append({"beta": beta, **metrics["test"]})
    write_csv_rows(out / "tradeoff.csv", beta_rows)
    target_rows = []
    for shares in targets:
        name = "-".join(f"{x:g}" for x in shares)
        metrics = train_or_reuse(
            dataclasses.replace(base, target_shares=shares),
            data_dir,
            out / "runs" / f"target-{name}",
            label=f"{model} target {name.replace('-', '/')}",
        )
        target_rows.append({"target": "/".join(f"{x:g}" for x in shares), **metrics["test"]})
    if target_rows:
        write_csv_rows(out / "targets.csv", target_rows)
    _plot_tradeoff(beta_rows, target_rows, out)
    return (out / "tradeoff.csv").read_text()


def replot_tradeoff(folder: str | Path) -> None:
    """Redraw tradeoff.png (and targets.png) from the tradeoff.csv (targets.csv) a `tradeoff` run wrote."""
    folder = Path(folder)
    targets = folder / "targets.csv"
    _plot_tradeoff(read_csv_rows(folder / "tradeoff.csv"), read_csv_rows(targets) if targets.exists() else [], folder)


def _plot_tradeoff(beta_rows: list[dict], target_rows: list[dict], out: Path) -> None:
    import matplotlib.pyplot as plt

    for name, fig in (
        ("tradeoff.png", tradeoff_figure(beta_rows)),
        ("targets.png", targets_figure(target_rows) if target_rows else None),
    ):
        if fig is not None:
            fig.savefig(out / name, dpi=120)
            plt.close(fig)


def tradeoff_figure(beta_rows: list[dict]):
    """Utility@K against JS@K, one labelled point per beta (labels offset below-right, inside padded axes)."""
    plt = _pyplot()
    k = cutoff(beta_rows[0])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    x, y = [r[f"js@{k}"] for r in beta_rows], [r[f"utility@{k}"] for r in beta_rows]
    ax.plot(x, y, "o-")
    for r, xi, yi in zip(beta_rows, x, y):
        ax.annotate(f"β={r['beta']:g}", (xi, yi), xytext=(6, -12), textcoords="offset points", fontsize=9)
    ax.margins(x=0.12, y=0.12)
    ax.set_xlabel(f"JS@{k} divergence from the target exposure (lower is fairer)")
    ax.set_ylabel(f"utility@{k} (test)")
    ax.set_title("DIR utility-fairness trade-off (one run per β)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def targets_figure(target_rows: list[dict]):
    """JS@K per alternative target distribution, as bars."""
    plt = _pyplot()
    k = cutoff(target_rows[0])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.bar([r["target"] for r in target_rows], [r[f"js@{k}"] for r in target_rows])
    ax.set_xlabel("target exposure shares per source (one run each)")
    ax.set_ylabel(f"JS@{k} divergence from the target (test)")
    ax.set_title("Effect of the target exposure distribution")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
