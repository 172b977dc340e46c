"""Equal-budget hyperparameter tuning with Optuna: TPE, median pruning, studies in an RDB.

    best = tune("data", "din", "device", trials=16, out="tuned")        # tuned/din.json, tuned/study.db
    tune(..., storage="postgresql://user@host/studies")                  # workers on several machines

The objective is the best validation AUC of a real training run (cloud.training.trainer.train, patience rule),
reported after every epoch so the pruner stops trials that trail the others' median at the same epoch
(from epoch 4, `PRUNER`; TPE models the trials after 4 random ones, `SAMPLER`); the test split is never
read. The search space is the learning rate and L2 of every model, beta for a model trained with the
exposure loss, and the widths each model declares next to its code
(`search_space` of its class in cloud/models/; no model has dropout). Studies live in Optuna's RDB
storage, a SQLite file OUT/study.db by default: every finished trial is committed, so an interrupted
study loses none, and several `tune` processes given the same --storage and study name share the
trials (`trials` counts finished and pruned trials over all workers). A study remembers the data it
was created for and refuses other data. OUT/MODEL.json holds the best trial as TrainConfig fields,
which `dir-cloud benchmark --tuned OUT` reads.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

SAMPLER = {"startup_trials": 4}
"""TPE draws the first 4 trials at random, then models the finished ones (Optuna's default of 10 random
trials would leave a 12-trial study 2 modelled ones). Recorded in the study like `PRUNER`."""
PRUNER = {"startup_trials": 3, "from_epoch": 4}
"""Median pruning: once 3 trials have finished, a trial whose validation AUC at epoch e >= 4 is below the
median of the earlier trials' at epoch e stops. Not before epoch 4: the first epochs' AUC mostly tells
how fast a learning rate starts, not where a run ends (pruning from epoch 1 stopped 9 of DIR's 12 trials
after one epoch). Recorded in the study, which refuses workers with other settings."""
TRAINING_SPACE = {"lr": ("log", 3e-4, 1e-2), "l2": ("log", 1e-7, 1e-3)}
EXPOSURE_SPACE = {"beta": ("float", 0.1, 1.0)}
TRAIN_FIELDS = ("lr", "l2", "beta")


def search_space(model_name: str, spec) -> dict[str, tuple]:
    """Every parameter tuned for `model_name`: TrainConfig fields, then the model's own options."""
    from cloud.models import build_model

    model = build_model(model_name, spec)
    exposure = EXPOSURE_SPACE if model.uses_exposure_loss else {}
    return {**TRAINING_SPACE, **exposure, **type(model).search_space}


def data_fingerprint(data) -> str:
    """Hash of the prepared data's spec and split sizes: a study is only valid for its own data."""
    sizes = {split: len(data.split(split)["user"]) for split in ("train", "valid", "test")}
    text = json.dumps({"spec": data.spec.model_dump(mode="json"), "sizes": sizes}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def open_storage(url: str):
    """Optuna's RDB storage at `url` (with heartbeats, so a killed worker's trial is marked failed)."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
        except Exception as exc:  # SQLAlchemy raises many kinds (bad scheme, no driver, no server, no file)
            # another worker created the tables of a new database at the same moment: a duplicate row
            # (IntegrityError) or "table ... already exists" (OperationalError); open it again
            if isinstance(exc, IntegrityError) or (isinstance(exc, OperationalError) and "already exists" in str(exc)):
                time.sleep(0.5 * (attempt + 1))
                continue
            raise ValueError(
                f"--storage {url!r} cannot be opened ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0]}); give a database URL Optuna can reach, e.g. "
                "sqlite:///tuned/study.db or postgresql://user:password@host/db"
            ) from exc
    raise ValueError(
        f"--storage {url!r}: its tables could not be created (other workers kept creating them); "
        "start the command again"
    )


def tune(
    data_dir: str | Path,
    model: str,
    history: str,
    trials: int,
    out: str | Path,
    storage: str | None = None,
    study_name: str | None = None,
    params: list[str] | None = None,
    seed: int = 0,
    epochs: int | None = None,
    patience: int | None = None,
) -> dict:
    """Run trials until the study holds `trials` finished or pruned ones; write OUT/MODEL.json; return it."""
    import optuna

    from cloud.data.prepared import PreparedData
    from cloud.models import MODELS
    from cloud.training.config import TrainConfig

    if model not in MODELS:
        raise ValueError(f"--model: unknown model {model!r}; known: {', '.join(sorted(MODELS))}")
    if trials < 1:
        raise ValueError(f"--trials must be >= 1, got {trials}")
    data = PreparedData(data_dir)
    space = search_space(model, data.spec)
    if params is not None:
        unknown = sorted(set(params) - set(space))
        if unknown:
            raise ValueError(f"--params: {unknown} are not in {model}'s search space {sorted(space)}")
        space = {name: space[name] for name in params}
    if not space:
        raise ValueError(
            f"--params: the search space of {model} is empty; name one or more of "
            f"{sorted(search_space(model, data.spec))}, or leave --params out to tune them all"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    name = study_name or f"{model}-{history}"
    fingerprint = data_fingerprint(data)
    study = optuna.create_study(
        study_name=name,
        storage=open_storage(url),
        direction="maximize",
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=PRUNER["startup_trials"], n_warmup_steps=PRUNER["from_epoch"]
        ),  # steps are epochs, from 1; Optuna prunes from step n_warmup_steps on
    )
    expected: dict[str, object] = {"data": fingerprint, "model": model, "history": history, "space": sorted(space)}
    expected |= {"sampler": SAMPLER, "pruner": PRUNER}
    _check_study(study, expected, url)
    # seeded by how many trials the study held when this worker joined: a resumed study, or a second
    # worker, does not draw the random start-up parameters of the first trials again
    joined_at = len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(seed=seed + joined_at, n_startup_trials=SAMPLER["startup_trials"])

    def objective(trial: optuna.Trial) -> float:
        values = {key: _suggest(trial, key, spec) for key, spec in space.items()}
        fields = {k: v for k, v in values.items() if k in TRAIN_FIELDS}
        options = {k: v for k, v in values.items() if k not in TRAIN_FIELDS}
        config = TrainConfig(model=model, history=history, seed=seed, model_options=options, **fields)
        if epochs is not None:
            config.epochs = epochs
        if patience is not None:
            config.patience = patience

        def report(row: dict) -> None:
            trial.report(row["valid_auc"], row["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation AUC {row['valid_auc']:.4f} at epoch {row['epoch']}")

        run_dir = out / "trials" / f"{name}-{trial.number}"
        metrics = train(config, data_dir, run_dir, on_epoch=report, progress=False)
        trial.set_user_attr("best_epoch", metrics["best_epoch"])
        return metrics["valid"]["auc"]

    from cloud.training.trainer import train

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(
        objective,
        callbacks=[optuna.study.MaxTrialsCallback(trials, states=done)],
        n_trials=max(0, trials - len(study.get_trials(deepcopy=False, states=done))),
    )
    best = study.best_trial
    fields = {k: v for k, v in best.params.items() if k in TRAIN_FIELDS}
    result = {
        "model": model,
        "history": history,
        "study": name,
        "storage": url,
        "data": fingerprint,
        "trials": {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in done},
        "trial_hours": sum(
            (t.datetime_complete - t.datetime_start).total_seconds()
            for t in study.get_trials(deepcopy=False, states=done)  # a failed trial's end is when it was found dead
            if t.datetime_start is not None and t.datetime_complete is not None
        )
        / 3600,
        "best_trial": best.number,
        "best_valid_auc": best.value,
        "params": best.params,
        "config": {**fields, "model_options": {k: v for k, v in best.params.items() if k not in TRAIN_FIELDS}},
    }
    (out / f"{model}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _suggest(trial, name: str, spec: tuple):
    kind = spec[0]
    if kind == "int":
        return trial.suggest_int(name, spec[1], spec[2], step=spec[3])
    if kind in ("log", "float"):
        return trial.suggest_float(name, spec[1], spec[2], log=kind == "log")
    raise ValueError(f"search space entry {name}: unknown kind {kind!r} (int, float or log)")


_ATTR_POLLS = 300  # 30 s


def _check_study(study, expected: dict, url: str) -> None:
    """Record what a new study tunes; refuse to add trials of other data, model or space to an old one."""
    saved = study.user_attrs
    for _ in range(_ATTR_POLLS):  # another worker is still recording a new study's keys, one write each
        if not saved or all(key in saved for key in expected):
            break
        time.sleep(0.1)
        saved = study.user_attrs
    if not saved:
        for key, value in expected.items():
            study.set_user_attr(key, value)
        return
    differ = sorted(k for k in expected if saved.get(k) != expected[k])
    if differ:
        raise ValueError(
            f"study {study.study_name!r} in {url} was created for other {', '.join(differ)} "
            f"(saved {[saved.get(k) for k in differ]}, now {[expected[k] for k in differ]}); "
            "pass another --study-name or --storage, or the data and options the study was made for"
        )
