"""The utility-fairness trade-off: runs per (beta, seed) and per (target distribution, seed), summarised over
seeds as CSVs, plots and a table.

    result = run_tradeoff("out/data", [0.0, 0.5, 1.0], [[0.5, 0.3, 0.2]], "out/tradeoff", seeds=3)
    print(format_summary(result))                   # mean ± 95% CI half-width per beta and per target
    run_tradeoff(..., page_users=1000)              # also the page's true clicks of every run (synthetic)
    replot_tradeoff("out/tradeoff")                 # redraw the PNGs from the CSVs

Runs go to OUT/runs/beta-B-sS and OUT/runs/target-SHARES-sS through cloud.evaluation.grids.train_or_reuse,
so an interrupted study continues and a finished run is reused only with the same config hash. A run of
the single-seed layout (OUT/runs/beta-B, OUT/runs/target-SHARES) moves to the name of its saved seed.
tradeoff.csv and targets.csv hold one row per run; tradeoff-summary.csv and targets-summary.csv hold, per
beta (per target), the seed count, the runs the epoch cap ended, and per test metric the mean (METRIC_mean) and
the half-width of its 95% Student-t interval over seeds (METRIC_ci95; empty with one seed). With `page_users`,
each run's device pages are also shown to that many fresh users of the synthetic world
(cloud.evaluation.page_clicks, kept in RUN/pages.json), adding PAGE_COLUMNS to its row: the beta that gives
the best label metrics need not give the pages with the most true clicks.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from cloud.evaluation.csv_rows import read_csv_rows, write_csv_rows
from cloud.evaluation.grids import load_tuned, pages_charged, train_charged
from cloud.evaluation.report import METRIC_COLUMNS, cutoff
from cloud.evaluation.statistics import mean_ci

PAGE_COLUMNS = ("clicks_per_page", "page_js@{K}")
"""The page's true clicks per page and JS@K of the shown pages' sources (runs scored with page_users)."""

RUN_FIELDS = ("beta", "target", "seed", "best_epoch", "stopped_epoch", "stop_reason", "lists")
"""Columns of a per-run row that are not test metrics."""

NO_INTERVAL = "1 seed, no interval"


def run_tradeoff(
    data_dir: str | Path,
    betas: list[float],
    targets: list[list[float]],
    out: str | Path,
    model: str = "dir",
    seeds: int | list[int] = 3,
    epochs: int | None = None,
    tuned: str | Path | None = None,
    page_users: int = 0,
) -> dict:
    """Train (or reuse) a run per (beta, seed) and per (target, seed), `seeds` a count or the seed numbers;
    write the CSVs and PNG plots; return the per-run rows and summaries (keys betas, targets, beta_summary,
    target_summary) and how many runs the epoch cap ended (epoch_cap, capped_runs). `tuned`: a
    `dir-cloud tune --out` folder whose parameters every run trains with, the swept beta replacing a tuned
    beta (target runs keep the tuned beta). `epochs`: a cap (default: the trainer's); runs end by patience
    on validation. `page_users` > 0: score each run's device pages on that many fresh simulated users
    (synthetic data only), adding PAGE_COLUMNS to its row. The process CPU seconds of each step add up in
    RUN/cpu.json."""
    from cloud.models import MODELS
    from cloud.training.config import TrainConfig

    if model not in MODELS:
        raise ValueError(f"--model: unknown model {model!r}; known: {', '.join(sorted(MODELS))}")
    out = Path(out)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    overrides = {**(load_tuned(tuned, model) if tuned else {}), "model": model}
    if epochs is not None:
        overrides["epochs"] = epochs
    base = TrainConfig(**overrides)
    plan: list[
        tuple[dict, str, TrainConfig]
    ] = []  # (row fields, run label, config): every config is built and checked before the first run starts
    for beta in betas:
        plan += [({"beta": beta}, f"beta {beta:g}", dataclasses.replace(base, beta=beta, seed=s)) for s in seed_list]
    for shares in targets:
        target = "/".join(f"{x:g}" for x in shares)
        plan += [
            (
                {"target": target, "beta": base.beta},
                f"target {target}",
                dataclasses.replace(base, target_shares=shares, seed=s),
            )
            for s in seed_list
        ]
    for _, _, config in plan:
        config.check()
    (out / "runs").mkdir(parents=True, exist_ok=True)
    beta_rows: list[dict] = []
    target_rows: list[dict] = []
    for fields, label, config in plan:
        name = label.replace(" ", "-").replace("/", "-")
        run_dir = _run_dir(out / "runs", name, config.seed)
        metrics = train_charged(config, data_dir, run_dir, label=f"{model} {label} seed {config.seed}")
        stopping = {k: metrics.get(k) for k in ("best_epoch", "stopped_epoch", "stop_reason")}
        row = {**fields, "seed": config.seed, **stopping, **metrics["test"]}
        if page_users:
            pages, k = pages_charged(run_dir, data_dir, page_users), cutoff(metrics["test"])
            row.update({"clicks_per_page": pages["clicks_per_page"], f"page_js@{k}": pages[f"js@{k}"]})
        (target_rows if "target" in fields else beta_rows).append(row)
    beta_summary, target_summary = summarize(beta_rows, ("beta",)), summarize(target_rows, ("target", "beta"))
    write_csv_rows(out / "tradeoff.csv", beta_rows)
    write_csv_rows(out / "tradeoff-summary.csv", beta_summary)
    if target_rows:
        write_csv_rows(out / "targets.csv", target_rows)
        write_csv_rows(out / "targets-summary.csv", target_summary)
    _plot_tradeoff(beta_rows, target_rows, out)
    return {
        "betas": beta_rows,
        "targets": target_rows,
        "beta_summary": beta_summary,
        "target_summary": target_summary,
        "epoch_cap": base.epochs,
        "capped_runs": sum(r["stop_reason"] == "cap" for r in beta_rows + target_rows),
    }


def _run_dir(runs: Path, name: str, seed: int) -> Path:
    """RUNS/NAME-sSEED; a run of the single-seed layout (RUNS/NAME) saved with this seed is moved there."""
    run_dir, single = runs / f"{name}-s{seed}", runs / name
    config = single / "config.json"
    if not run_dir.exists() and config.exists() and json.loads(config.read_text()).get("seed") == seed:
        single.rename(run_dir)
    return run_dir


def summarize(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Per value of `keys` (in first-seen order): seeds, runs the epoch cap ended, mean stopping epoch, and
    per test metric the mean and the 95% Student-t half-width over seeds (None with one seed). Rows without
    a seed column (the single-seed CSVs) count as one seed each."""
    keys = tuple(k for k in keys if rows and k in rows[0])
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    entries = []
    for value, runs in groups.items():
        entry: dict = {**dict(zip(keys, value)), "seeds": len(runs)}
        if "stop_reason" in runs[0]:
            entry["capped"] = sum(r["stop_reason"] == "cap" for r in runs)
            entry["stopped_epoch_mean"] = sum(r["stopped_epoch"] for r in runs) / len(runs)
        for metric in (k for k in runs[0] if k not in RUN_FIELDS):
            mean, low, high = mean_ci([r[metric] for r in runs])
            entry[f"{metric}_mean"] = mean
            entry[f"{metric}_ci95"] = (high - low) / 2 if len(runs) > 1 else None
        entries.append(entry)
    return entries


def format_summary(result: dict) -> str:
    """The summaries as markdown tables: mean ± 95% CI half-width per beta and per target, and how the
    runs ended (patience or the epoch cap)."""
    runs, capped = result["betas"] + result["targets"], result["capped_runs"]
    k = cutoff(runs[0])
    single = any(e["seeds"] == 1 for e in result["beta_summary"] + result["target_summary"])
    lines = [
        f"{len(runs)} runs, seeds {sorted({r['seed'] for r in runs})}; mean ± half-width of the 95% Student-t "
        "interval over seeds" + (f' ("{NO_INTERVAL}" where a row has one run)' if single else "") + ".",
        f"{capped} of {len(runs)} runs ended by the epoch cap ({result['epoch_cap']}), {len(runs) - capped} by "
        "patience on validation" + ("; a capped run may not have converged: raise --epochs." if capped else "."),
        "",
        _markdown(result["beta_summary"], ("beta",), k),
    ]
    if result["target_summary"]:
        lines += ["", _markdown(result["target_summary"], ("target", "beta"), k)]
    return "\n".join(lines)


def _markdown(entries: list[dict], keys: tuple[str, ...], k: str) -> str:
    metrics = [c.format(K=k) for c in METRIC_COLUMNS]
    metrics += [c.format(K=k) for c in PAGE_COLUMNS if f"{c.format(K=k)}_mean" in entries[0]]
    head = [*keys, "seeds", "capped", "stopped epoch", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        cells = [f"{e[key]:g}" if key == "beta" else str(e[key]) for key in keys]
        cells += [str(e["seeds"]), str(e["capped"]), f"{e['stopped_epoch_mean']:.1f}"]
        cells += [_cell(e[f"{m}_mean"], e[f"{m}_ci95"]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(mean: float, half: float | None) -> str:
    return f"{mean:.4f}" + (f" ± {half:.4f}" if half is not None else f" ({NO_INTERVAL})")


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
    """Mean utility@K against mean JS@K over seeds, one labelled point per beta with 95% CI error bars in
    both axes (labels placed apart, inside padded axes); with the page columns (runs scored with
    page_users), a second panel: true clicks per page against the pages' JS@K. `beta_rows`: one row per run."""
    plt = _pyplot()
    entries = summarize(beta_rows, ("beta",))
    k = cutoff(beta_rows[0])
    panels = [(f"js@{k}", f"utility@{k}", f"utility@{k} (test)")]
    if f"page_js@{k}_mean" in entries[0]:
        panels.append((f"page_js@{k}", "clicks_per_page", "true clicks per page (simulated users)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    points = []
    for ax, (js, utility, ylabel) in zip(axes[0], panels):
        x, y = [e[f"{js}_mean"] for e in entries], [e[f"{utility}_mean"] for e in entries]
        ax.errorbar(x, y, xerr=_half_widths(entries, js), yerr=_half_widths(entries, utility), fmt="o-", capsize=3)
        ax.margins(x=0.15, y=0.15)
        ax.set_xlabel(f"JS@{k} divergence from the target exposure (lower is fairer)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        points.append(list(zip(x, y)))
    fig.suptitle(f"Utility-fairness trade-off per β: {_seeds_note(entries)}", fontsize=10)
    fig.tight_layout()  # before the labels: their overlap is checked where the axes finally are
    for ax, xy in zip(axes[0], points):
        _label_apart(fig, ax, xy, [f"β={e['beta']:g}" for e in entries])
    return fig


LABEL_OFFSETS = ((6, -12), (6, 6), (-34, 6), (-34, -12), (6, -24), (6, 18), (-34, -24), (-34, 18))
"""Offsets in points tried in turn for a point's label, the first that overlaps no label placed before."""


def _label_apart(fig, ax, points: list[tuple[float, float]], labels: list[str]) -> None:
    """Annotate each point with its label at the first LABEL_OFFSETS position clear of earlier labels."""
    renderer = fig.canvas.get_renderer()
    placed: list = []  # the window extents (Bbox) of the labels placed so far
    for (x, y), label in zip(points, labels):
        for offset in LABEL_OFFSETS:
            text = ax.annotate(label, (x, y), xytext=offset, textcoords="offset points", fontsize=9)
            box = text.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed) or offset == LABEL_OFFSETS[-1]:
                placed.append(box)
                break
            text.remove()


def targets_figure(target_rows: list[dict]):
    """Mean JS@K per alternative target distribution, as bars with 95% CI error bars; one row per run."""
    plt = _pyplot()
    entries = summarize(target_rows, ("target",))
    k = cutoff(target_rows[0])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.bar(
        [e["target"] for e in entries],
        [e[f"js@{k}_mean"] for e in entries],
        yerr=_half_widths(entries, f"js@{k}"),
        capsize=4,
    )
    ax.set_xlabel("target exposure shares per source")
    ax.set_ylabel(f"JS@{k} divergence from the target (test)")
    ax.set_title(f"Target exposure distribution: {_seeds_note(entries)}", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def _half_widths(entries: list[dict], metric: str) -> list[float] | None:
    """Error bar lengths (0 for a one-seed point); None when no point has an interval."""
    halves = [e[f"{metric}_ci95"] for e in entries]
    return None if all(h is None for h in halves) else [h or 0.0 for h in halves]


def _seeds_note(entries: list[dict]) -> str:
    counts = sorted({e["seeds"] for e in entries})
    if counts == [1]:
        return NO_INTERVAL
    seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"mean ± 95% CI over {seeds} seeds"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
