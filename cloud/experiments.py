"""Evaluation of runs, grids of runs with a paper-style table, and the utility-fairness trade-off.

    evaluate_run("out/run", "test")                                  # metrics dict
    run_grid("out/data", ["dir", "dir-js"], ["device", "cloud"], 3, "out/bench")   # markdown table
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from cloud.batches import ListBatcher
from cloud.data.prepared import PreparedData
from cloud.evaluation import REFERENCES, evaluate_model, evaluate_oracle, evaluate_references, not_beaten

METRIC_COLUMNS = ("auc", "ndcg@{K}", "map@{K}", "utility@{K}", "js@{K}")


def evaluate_run(run_dir: str | Path, split: str = "test", data_dir: str | Path | None = None,
                 history: str | None = None, cross_view: bool = False) -> dict:
    """Metrics of a run's selected model on every list of `split`."""
    from cloud.runs import load_run

    run = load_run(run_dir)
    trained_on = run.config["history"]
    history = history or trained_on
    if history != trained_on and not cross_view:
        raise ValueError(
            f"run {run_dir} was trained on {trained_on} history; evaluating on {history} history mixes two "
            f"setups. Use --history {trained_on}, or pass --cross-view if that is what you want"
        )
    data = PreparedData(data_dir or run.config["data"])
    if data.spec.source_names != run.spec.source_names:
        raise ValueError(f"data sources {data.spec.source_names} differ from the run's {run.spec.source_names}")
    batcher = ListBatcher(data.item_tables(), data.split(split), history)
    metrics = evaluate_model(run.model, batcher, run.config["target_shares"], run.config["K"])
    references = evaluate_references(data, split, run.config["target_shares"], run.config["K"])
    return {"run": str(run_dir), "model": run.config["model"], "history": history, "split": split, **metrics,
            "references": references, "warnings": not_beaten(metrics, references, run.config["K"])}


def format_metrics(metrics: dict) -> str:
    """The model's metrics and the reference orders' in one table, then any warning."""
    keys = [k for k, v in metrics.items() if isinstance(v, float)]
    head = [f"{k}: {v}" for k, v in metrics.items() if k not in (*keys, "references", "warnings", "lists")]
    rows = [(f"{metrics['model']} (this run)", metrics)]
    rows += [(f"{name} order (reference)", metrics["references"][name]) for name in REFERENCES]
    width = max(len(name) for name, _ in rows) + 2
    lines = ["  ".join(head), "", f"{'':<{width}}" + "".join(f"{k:>13}" for k in keys)]
    lines += [f"{name:<{width}}" + "".join(f"{values[k]:>13.4f}" for k in keys) for name, values in rows]
    return "\n".join(lines)


def run_grid(data_dir: str | Path, models: list[str], histories: list[str], seeds: int, out: str | Path,
             config_file: str | None = None, epochs: int | None = None) -> str:
    """Train every (model, history, seed), evaluate on test, write results and the summary table."""
    from cloud.training import TrainConfig, train

    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    rows = []
    for model in models:
        for history in histories:
            for seed in range(seeds):
                overrides = {"model": model, "history": history, "seed": seed, "epochs": epochs}
                config = (TrainConfig.from_file(config_file, **overrides) if config_file
                          else TrainConfig(**{k: v for k, v in overrides.items() if v is not None}))
                run_dir = out / "runs" / f"{model}-{history}-s{seed}"
                metrics_path = run_dir / "metrics.json"
                if metrics_path.exists():  # a finished run of an interrupted grid is reused
                    metrics = json.loads(metrics_path.read_text())
                else:
                    metrics = train(config, data_dir, run_dir, resume=run_dir.exists(),
                                    label=f"{model} {history} seed {seed}")
                rows.append({"model": model, "history": history, "seed": seed, **metrics["test"]})
    oracle = _oracle_row(data_dir)
    _write_csv(out / "results.csv", rows)
    table = summary_table(rows, oracle)
    (out / "table.md").write_text(table + "\n")
    _write_csv(out / "table.csv", summary_rows(rows))
    return table


def _oracle_row(data_dir: str | Path) -> dict | None:
    data = PreparedData(data_dir)
    test = data.split("test")
    if not data.has_click_prob:
        return None
    batcher = ListBatcher(data.item_tables(), test, "device")
    return evaluate_oracle(batcher, np.asarray(test["click_prob"]), data.spec.target_shares, data.spec.K)


def _metric_keys(rows: list[dict]) -> list[str]:
    k = next(key for key in rows[0] if key.startswith("ndcg@")).split("@")[1]
    return [c.format(K=k) for c in METRIC_COLUMNS]


def summary_rows(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds per (model, history)."""
    keys = _metric_keys(rows)
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["history"]), []).append(row)
    out = []
    for (model, history), group in groups.items():
        summary = {"model": model, "history": history, "seeds": len(group)}
        for key in keys:
            values = np.array([r[key] for r in group], dtype=np.float64)
            summary[f"{key}_mean"] = float(values.mean())
            summary[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out.append(summary)
    return out


def summary_table(rows: list[dict], oracle: dict | None = None) -> str:
    """Markdown: rows = model-history, columns = metrics as mean ± std over seeds (test split)."""
    keys = _metric_keys(rows)
    lines = ["| model | history | seeds | " + " | ".join(keys) + " |", "|---|---|---|" + "---|" * len(keys)]
    for s in summary_rows(rows):
        cells = [f"{s[f'{k}_mean']:.4f} ± {s[f'{k}_std']:.4f}" for k in keys]
        lines.append(f"| {s['model']} | {s['history']} | {s['seeds']} | " + " | ".join(cells) + " |")
    if oracle:
        lines.append("| oracle (true click prob.) | - | - | " + " | ".join(f"{oracle[k]:.4f}" for k in keys) + " |")
    return "\n".join(lines)


def run_tradeoff(data_dir: str | Path, betas: list[float], targets: list[list[float]], out: str | Path,
                 model: str = "dir", seed: int = 0, epochs: int | None = None) -> str:
    """Train per beta (and per target distribution); write CSVs and PNG plots; return a summary."""
    from cloud.training import TrainConfig, train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = {"model": model, "seed": seed, **({"epochs": epochs} if epochs else {})}
    beta_rows = []
    for beta in betas:
        metrics = train(TrainConfig(beta=beta, **base), data_dir, out / "runs" / f"beta-{beta:g}",
                        label=f"{model} beta {beta:g}")
        beta_rows.append({"beta": beta, **metrics["test"]})
    _write_csv(out / "tradeoff.csv", beta_rows)
    target_rows = []
    for shares in targets:
        name = "-".join(f"{x:g}" for x in shares)
        metrics = train(TrainConfig(target_shares=shares, **base), data_dir, out / "runs" / f"target-{name}",
                        label=f"{model} target {name.replace('-', '/')}")
        target_rows.append({"target": "/".join(f"{x:g}" for x in shares), **metrics["test"]})
    if target_rows:
        _write_csv(out / "targets.csv", target_rows)
    _plot_tradeoff(beta_rows, target_rows, out)
    return (out / "tradeoff.csv").read_text()


def replot_tradeoff(folder: str | Path) -> None:
    """Redraw tradeoff.png (and targets.png) from the tradeoff.csv (targets.csv) a `tradeoff` run wrote."""
    folder = Path(folder)
    targets = folder / "targets.csv"
    _plot_tradeoff(read_csv_rows(folder / "tradeoff.csv"), read_csv_rows(targets) if targets.exists() else [],
                   folder)


def _plot_tradeoff(beta_rows: list[dict], target_rows: list[dict], out: Path) -> None:
    import matplotlib.pyplot as plt

    for name, fig in (("tradeoff.png", tradeoff_figure(beta_rows)),
                      ("targets.png", targets_figure(target_rows) if target_rows else None)):
        if fig is not None:
            fig.savefig(out / name, dpi=120)
            plt.close(fig)


def tradeoff_figure(beta_rows: list[dict]):
    """Utility@K against JS@K, one labelled point per beta (labels offset below-right, inside padded axes)."""
    plt = _pyplot()
    k = _metric_keys(beta_rows)[1].split("@")[1]
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
    k = _metric_keys(target_rows)[1].split("@")[1]
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


def read_csv_rows(path: str | Path) -> list[dict]:
    """Rows of a CSV written by this module, numbers as numbers."""
    with open(path, newline="") as handle:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
