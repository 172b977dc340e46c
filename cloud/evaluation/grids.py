"""Grids of training runs (model x history x seed), each reused only when its config hash is unchanged.

    run_grid("out/data", ["dir", "dir-js"], ["device", "cloud"], 3, "out/bench")   # markdown tables
    run_grid(..., tuned="tuned", settings={"hidden": 64, "beta": 1.0})    # the tuned config, two values changed
    train_or_reuse(config, "out/data", "out/bench/runs/dir-device-s0")   # reused only with the same config hash

A run's identity is its TrainConfig less IGNORED_FIELDS plus the data folder; config_hash names it in
results.csv and in the folder a replaced run is moved to. The tables are cloud.evaluation.results'.
The process CPU seconds a grid spent on a run (training, scoring its pages) add up in RUN/cpu.json.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cloud.data.batches import ListBatcher
from cloud.data.prepared import PreparedData
from cloud.evaluation.scoring import evaluate_oracle, evaluate_references

IGNORED_FIELDS = ("threads", "device", "eval_batch_size")
"""TrainConfig fields that do not change what a run computes; the config hash leaves them out."""


class ReuseRefused(ValueError):
    """`--reuse-only` met a run that is missing or was trained with another config."""


def run_identity(config, data_dir: str | Path) -> dict:
    """What determines a run's result: its TrainConfig (less IGNORED_FIELDS, K and target shares resolved
    from the data as the trainer saves them) and the data folder."""
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


def tuned_study(model: str) -> str:
    """The model whose tuned parameters `model` trains with: its own, except that a DIR ablation (DIR with
    one component removed, cloud/models/__init__.py) keeps DIR's, so that only the component differs. An
    extension of DIR (dir-ca) adds parameters and is tuned as a model of its own."""
    from cloud.models import DIR_ABLATIONS

    return "dir" if model in DIR_ABLATIONS else model


def load_tuned(tuned_dir: str | Path, model: str) -> dict:
    """TrainConfig overrides `dir-cloud tune --out TUNED_DIR --model M` found best (TUNED_DIR/M.json, M =
    `tuned_study(model)`)."""
    study = tuned_study(model)
    path = Path(tuned_dir) / f"{study}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"--tuned {tuned_dir}: no {path.name} for model {model!r}; run `dir-cloud tune --data "
            f"DATA --model {study} --out {tuned_dir}` first, or leave the model out of --models"
        )
    return json.loads(path.read_text())["config"]


FIXED_BY_GRID = ("model", "history", "seed")
"""TrainConfig fields a grid sets per run; `settings` cannot override them."""


def apply_settings(overrides: dict, settings: dict, model: str) -> dict:
    """`overrides` (TrainConfig fields, e.g. a tuned config) with `settings` on top: each key a TrainConfig
    field or an option of `model`'s constructor (into model_options). ValueError naming --set otherwise."""
    from cloud.models import model_options
    from cloud.training.config import TrainConfig

    fields = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in FIXED_BY_GRID + ("model_options",)]
    options = model_options(model)
    unknown = sorted(k for k in settings if k not in fields and k not in options)
    if unknown:
        raise ValueError(
            f"--set: {', '.join(unknown)} is neither a training field nor an option of model {model!r}; "
            f"training fields: {', '.join(fields)}; {model}'s options: {', '.join(options)}"
        )
    merged = {**overrides, **{k: v for k, v in settings.items() if k in fields}}
    chosen = {k: v for k, v in settings.items() if k not in fields}
    if chosen:
        merged["model_options"] = {**overrides.get("model_options", {}), **chosen}
    return merged


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
    settings: dict | None = None,
    page_merge: str = "score",
    page_block: int = 0,
) -> str:
    """Train (or reuse) every (model, history, seed) into OUT/runs/MODEL-HISTORY-sSEED (`seeds`: a count, or
    the seed numbers; a model that reads no history trains on the first history only: that run serves both
    views), `settings` ({field or model option: value}) applied on top of the tuned parameters and the config
    file (apply_settings), score the pages of each run (`page_users` > 0, synthetic data:
    cloud.evaluation.page_clicks, on the `page_block`-th set of fresh users; a model whose decoder is the merge
    builds them with `page_merge`), and write
    OUT/results.csv and the tables (cloud.evaluation.results) over every finished run in OUT/runs.
    Interrupted, the same call continues where it stopped."""
    from cloud.evaluation.page_clicks import check_page_merge
    from cloud.models import MODELS, model_class, reads_history
    from cloud.training.config import TrainConfig

    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"--models: unknown model(s) {unknown}; known: {', '.join(sorted(MODELS))}")
    for model in models if page_users else []:
        check_page_merge(page_merge, model, model_class(model).device_decoder)
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    plan = []
    for model in models:  # every config is built and checked before the first run starts
        extra = apply_settings(load_tuned(tuned, model) if tuned else {}, settings or {}, model)
        if not reads_history(model) and len(histories) > 1:
            print(f"{model} reads no history: its {histories[0]} runs serve every history view", flush=True)
        for history in histories if reads_history(model) else histories[:1]:
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
        train_charged(config, data_dir, run_dir, reuse_only, f"{config.model} {config.history} seed {config.seed}")
        if page_users:
            pages_charged(run_dir, data_dir, page_users, world_seed, page_merge, page_block)
    if page_users:
        from cloud.evaluation.page_clicks import reference_pages_of

        reference_pages_of(out, data_dir, page_users, world_seed, page_block)
    from cloud.evaluation.results import write_results

    return write_results(out, references=reference_rows(data_dir))


def train_charged(config, data_dir: str | Path, run_dir: Path, reuse_only: bool = False, label: str = "") -> dict:
    """train_or_reuse, its CPU seconds charged to RUN/cpu.json["train_s"] (charge_cpu); the run's metrics."""
    resumed = (run_dir / "checkpoint.pt").exists() and not (run_dir / "metrics.json").exists()
    train = (train_or_reuse, config, data_dir, run_dir, reuse_only, label)
    return charge_cpu(run_dir, "train_s", "metrics.json", *train, resumed=resumed)


def pages_charged(
    run_dir: Path, data_dir: str | Path, users: int, world_seed: int = 0, merge: str = "score", block: int = 0
) -> dict:
    """cloud.evaluation.page_clicks.run_pages_of, its CPU seconds charged to RUN/cpu.json["pages_s"]; its row."""
    from cloud.evaluation.page_clicks import PAGES_FILE, run_pages_of

    scored = (run_dir, data_dir, users, world_seed, merge, block)
    return charge_cpu(run_dir, "pages_s", PAGES_FILE, run_pages_of, *scored)


def charge_cpu(
    run_dir: Path, key: str, output: str, step: Callable[..., Any], *args: object, resumed: bool = False
) -> Any:
    """Run `step(*args)` and return what it returns; when it wrote RUN/`output` (it did the work rather than
    reuse it), add its process CPU seconds to RUN/cpu.json[`key`], and `"resumed": true` when the step
    continued work an interrupted process began (`resumed`), whose CPU seconds are lost."""
    from cloud.training.runs import atomic_write_json

    def written() -> int | None:
        path = run_dir / output
        return path.stat().st_mtime_ns if path.exists() else None

    before, start = written(), time.process_time()
    result = step(*args)
    if written() != before:
        path = run_dir / "cpu.json"
        spent = json.loads(path.read_text()) if path.exists() else {}
        spent[key] = spent.get(key, 0.0) + time.process_time() - start
        if resumed:
            spent["resumed"] = True
        atomic_write_json(path, spent)
    return result


def reference_rows(data_dir: str | Path) -> dict[str, dict]:
    """The label metrics of the test split's reference orders (random, logged, popularity:
    cloud.evaluation.scoring) and, on synthetic data, of the oracle that ranks by the true click probability."""
    data = PreparedData(data_dir)
    shares, K = data.spec.target_shares, data.spec.K
    rows = {f"{name} order": row for name, row in evaluate_references(data, "test", shares, K).items()}
    if data.has_click_prob:
        test = data.split("test")
        batcher = ListBatcher(data.item_tables(), test, "device")
        rows["oracle (true click prob.)"] = evaluate_oracle(batcher, np.asarray(test["click_prob"]), shares, K)
    return rows
