"""Evaluation of runs, grids of runs with a paper-style table, and the utility-fairness trade-off.

evaluate_run("out/run", "test")                                  # metrics dict
run_grid("out/data", ["dir", "dir-js"], ["device", "cloud"], 3, "out/bench")   # markdown tables
train_or_reuse(config, "out/data", "out/bench/runs/dir-device-s0")   # reused only with the same config hash
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from cloud.data.batches import ListBatcher
from cloud.data.prepared import PreparedData
from cloud.evaluation.scoring import REFERENCES, evaluate_model, evaluate_oracle, evaluate_references, not_beaten

METRIC_COLUMNS = ("auc", "ndcg@{K}", "map@{K}", "utility@{K}", "js@{K}")


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


IGNORED_FIELDS = ("threads", "device", "eval_batch_size")
"""TrainConfig fields that do not change what a run computes; the config hash leaves them out."""


class ReuseRefused(ValueError):
    """`--reuse-only` met a run that is missing or was trained with another config."""


def run_identity(config, data_dir: str | Path) -> dict:
    """What determines a run's result: its TrainConfig (less IGNORED_FIELDS, K and target shares resolved
    from the data as the trainer saves them) and the data folder."""
    import dataclasses

    spec = PreparedData(data_dir).spec
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in IGNORED_FIELDS}
    fields.update(K=config.K or spec.K, target_shares=config.target_shares or spec.target_shares)
    return json.loads(json.dumps({**fields, "data": str(Path(data_dir).resolve())}))  # tuples -> lists


def saved_identity(run_dir: Path) -> dict | None:
    """run_identity of the run saved in run_dir (from its config.json), None when there is none."""
    from cloud.training.config import TrainConfig

    path = run_dir / "config.json"
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    names = [f for f in TrainConfig.__dataclass_fields__ if f not in IGNORED_FIELDS]
    return {**{k: saved.get(k) for k in names}, "data": saved.get("data")}


def config_hash(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def train_or_reuse(
    config, data_dir: str | Path, run_dir: str | Path, reuse_only: bool = False, label: str = ""
) -> dict:
    """metrics.json of the run in run_dir: reused when it finished with this very config (same hash),
    resumed when it was interrupted with it, otherwise trained afresh (a run of another config is moved
    to run_dir/../../replaced/NAME-HASH, never deleted). `reuse_only` raises ReuseRefused instead of training;
    `label` starts the run's progress lines."""
    from cloud.training.trainer import train

    run_dir = Path(run_dir)
    wanted = run_identity(config, data_dir)
    saved = saved_identity(run_dir)
    finished = (run_dir / "metrics.json").exists()
    if saved == wanted and finished:
        return json.loads((run_dir / "metrics.json").read_text())
    if reuse_only:
        if saved is None:
            raise ReuseRefused(
                f"--reuse-only: run {run_dir} does not exist; run the command without --reuse-only to train it"
            )
        differ = sorted(k for k in wanted if saved.get(k) != wanted[k])
        what = (
            f"was trained with other {', '.join(f'{k} ({saved.get(k)!r} != {wanted[k]!r})' for k in differ)}"
            if differ
            else "did not finish"
        )
        raise ReuseRefused(f"--reuse-only: run {run_dir} {what}; drop --reuse-only to retrain it")
    if saved is not None and saved != wanted:
        aside = run_dir.parent.parent / "replaced" / f"{run_dir.name}-{config_hash(saved)}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(aside, ignore_errors=True)
        run_dir.rename(aside)
    return train(config, data_dir, run_dir, resume=run_dir.exists(), progress=False, label=label)


def load_tuned(tuned_dir: str | Path, model: str) -> dict:
    """TrainConfig overrides `dir-cloud tune --out TUNED_DIR --model MODEL` found best (TUNED_DIR/MODEL.json)."""
    path = Path(tuned_dir) / f"{model}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"--tuned {tuned_dir}: no {path.name} for model {model!r}; run `dir-cloud tune --data "
            f"DATA --model {model} --out {tuned_dir}` first, or leave the model out of --models"
        )
    return json.loads(path.read_text())["config"]


def run_grid(
    data_dir: str | Path,
    models: list[str],
    histories: list[str],
    seeds: int | list[int],
    out: str | Path,
    config_file: str | None = None,
    epochs: int | None = None,
    reuse_only: bool = False,
    tuned: str | Path | None = None,
    page_users: int = 0,
    world_seed: int = 0,
) -> str:
    """Train (or reuse) every (model, history, seed) into OUT/runs/MODEL-HISTORY-sSEED (`seeds`: a count, or
    the seed numbers), score the pages of each run (`page_users` > 0, synthetic data: cloud.evaluation.page_clicks),
    and write OUT/results.csv and the tables (cloud.evaluation.results) over every finished run in OUT/runs.
    Interrupted, the same call continues where it stopped."""
    from cloud.models import MODELS
    from cloud.training.config import TrainConfig

    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"--models: unknown model(s) {unknown}; known: {', '.join(sorted(MODELS))}")
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    plan = []
    for model in models:  # every config is built and checked before the first run starts
        extra = load_tuned(tuned, model) if tuned else {}
        for history in histories:
            for seed in range(seeds) if isinstance(seeds, int) else seeds:
                overrides = {**extra, "model": model, "history": history, "seed": seed, "epochs": epochs}
                config = (
                    TrainConfig.from_file(config_file, **overrides)
                    if config_file
                    else TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
                )
                config.check()
                plan.append((config, out / "runs" / f"{model}-{history}-s{seed}"))
    for config, run_dir in plan:
        train_or_reuse(
            config, data_dir, run_dir, reuse_only, label=f"{config.model} {config.history} seed {config.seed}"
        )
        if page_users:
            from cloud.evaluation.page_clicks import run_pages_of

            run_pages_of(run_dir, data_dir, page_users, world_seed)
    if page_users:
        from cloud.evaluation.page_clicks import reference_pages_of

        reference_pages_of(out, data_dir, page_users, world_seed)
    from cloud.evaluation.results import write_results

    return write_results(out, oracle=oracle_row(data_dir))


def oracle_row(data_dir: str | Path) -> dict | None:
    data = PreparedData(data_dir)
    test = data.split("test")
    if not data.has_click_prob:
        return None
    batcher = ListBatcher(data.item_tables(), test, "device")
    return evaluate_oracle(batcher, np.asarray(test["click_prob"]), data.spec.target_shares, data.spec.K)


def _metric_keys(rows: list[dict]) -> list[str]:
    k = next(key for key in rows[0] if key.startswith("ndcg@")).split("@")[1]
    return [c.format(K=k) for c in METRIC_COLUMNS]


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
    base = {"model": model, "seed": seed, **({"epochs": epochs} if epochs else {})}
    beta_rows = []
    for beta in betas:
        metrics = train_or_reuse(
            TrainConfig(beta=beta, **base), data_dir, out / "runs" / f"beta-{beta:g}", label=f"{model} beta {beta:g}"
        )
        beta_rows.append({"beta": beta, **metrics["test"]})
    _write_csv(out / "tradeoff.csv", beta_rows)
    target_rows = []
    for shares in targets:
        name = "-".join(f"{x:g}" for x in shares)
        metrics = train_or_reuse(
            TrainConfig(target_shares=shares, **base),
            data_dir,
            out / "runs" / f"target-{name}",
            label=f"{model} target {name.replace('-', '/')}",
        )
        target_rows.append({"target": "/".join(f"{x:g}" for x in shares), **metrics["test"]})
    if target_rows:
        _write_csv(out / "targets.csv", target_rows)
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
