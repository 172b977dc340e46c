"""One run's evaluation: its selected model's metrics on a split beside the reference orders, as a table.

    metrics = evaluate_run("out/run", "test")      # dict: the metrics, the reference orders', warnings
    print(format_metrics(metrics))                 # `dir-cloud evaluate`'s table

METRIC_COLUMNS names the label metrics every table reports, in order; `cutoff(row)` reads K from a row.
"""

from __future__ import annotations

from pathlib import Path

from cloud.data.batches import ListBatcher
from cloud.data.prepared import PreparedData
from cloud.evaluation.scoring import REFERENCES, evaluate_model, evaluate_references, not_beaten

METRIC_COLUMNS = ("auc", "ndcg@{K}", "map@{K}", "utility@{K}", "js@{K}")


def cutoff(row: dict) -> str:
    """The K of a row of metrics, read from its ndcg@K key."""
    return next(key for key in row if key.startswith("ndcg@")).split("@")[1]


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    data_dir: str | Path | None = None,
    history: str | None = None,
    cross_view: bool = False,
) -> dict:
    """Metrics of a run's selected model on every list of `split`."""
    from cloud.training.runs import load_run

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
    return {
        "run": str(run_dir),
        "model": run.config["model"],
        "history": history,
        "split": split,
        **metrics,
        "references": references,
        "warnings": not_beaten(metrics, references, run.config["K"]),
    }


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
