"""dir-cloud tune: Optuna studies in SQLite shared by worker processes, the best trial, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest

from cloud.cli import main as cloud_main
from cloud.data.prepare import prepare
from cloud.data.synth import SynthConfig, generate, write_logs


def make_data(root, seed):
    write_logs(generate(SynthConfig(users=80, seed=seed)), root / "logs")
    prepare(root / "logs", root / "data")
    return root / "data"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("a"), 0), make_data(tmp_path_factory.mktemp("b"), 1)


def tune_args(data, out, *extra):
    return [
        "tune",
        "--data",
        str(data),
        "--model",
        "dir",
        "--out",
        str(out),
        "--epochs",
        "2",
        "--patience",
        "1",
        "--params",
        "lr,hidden",
        *extra,
    ]


def test_two_workers_share_one_sqlite_study(datasets, tmp_path):
    data, _ = datasets
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    commands = [
        [sys.executable, "-m", "cloud.cli", *tune_args(data, tmp_path / f"w{i}", "--trials", "6", "--storage", storage)]
        for i in range(2)
    ]
    workers = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in commands]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err.decode()[-2000:]
    study = optuna.load_study(study_name="dir-device", storage=storage)
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    finished = [t for t in study.trials if t.state in done]
    assert 6 <= len(finished) <= 7 and len({t.number for t in study.trials}) == len(study.trials)
    ran = [len(list((tmp_path / f"w{i}" / "trials").iterdir())) for i in range(2)]
    assert min(ran) >= 1 and sum(ran) == len(study.trials)  # both workers ran trials of the one study
    # each worker writes the best trial it saw when it stopped; the one that stopped last saw them all
    best = max(
        (json.loads((tmp_path / f"w{i}" / "dir.json").read_text()) for i in range(2)),
        key=lambda found: found["best_valid_auc"],
    )
    assert best["best_valid_auc"] == study.best_value and set(best["params"]) == {"lr", "hidden"}
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials]
    hours = max(json.loads((tmp_path / f"w{i}" / "dir.json").read_text())["trial_hours"] for i in range(2))
    assert hours == pytest.approx(sum(durations) / 3600) and hours > 0  # the worker that stopped last saw all
    assert best["config"]["model_options"] == {"hidden": best["params"]["hidden"]}
    assert best["config"]["lr"] == best["params"]["lr"]


def test_a_worker_waits_for_the_keys_another_is_still_recording(tmp_path):
    import threading

    from cloud.training.tuning import _check_study

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    expected = {"data": "abc", "model": "dir", "history": "device", "space": ["lr"], "pruner": {"from_epoch": 4}}
    first = optuna.create_study(study_name="s", storage=storage)
    first.set_user_attr("data", "abc")  # the creating worker has written its first key only
    second = optuna.load_study(study_name="s", storage=storage)

    def finish_recording():
        for key in list(expected)[1:]:
            first.set_user_attr(key, expected[key])

    late = threading.Timer(0.5, finish_recording)
    late.start()
    _check_study(second, expected, storage)  # raised "created for other history, model, ..." before
    late.join()
    first.set_user_attr("pruner", {"from_epoch": 1})
    with pytest.raises(ValueError, match="created for other pruner"):
        _check_study(second, expected, storage)


def test_study_keeps_finished_trials_and_refuses_other_data(datasets, tmp_path, capsys):
    data, other = datasets
    assert cloud_main(tune_args(data, tmp_path, "--trials", "2")) == 0
    first = optuna.load_study(study_name="dir-device", storage=f"sqlite:///{tmp_path / 'study.db'}").trials
    assert len(first) == 2
    assert cloud_main(tune_args(data, tmp_path, "--trials", "3")) == 0  # continues: one more trial
    again = optuna.load_study(study_name="dir-device", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.params for t in again.trials[:2]] == [t.params for t in first] and len(again.trials) == 3
    assert again.trials[2].params not in [t.params for t in first]  # the resumed sampler draws anew
    assert again.user_attrs["pruner"] == {"startup_trials": 3, "from_epoch": 4}
    assert again.user_attrs["sampler"] == {"startup_trials": 4}
    again.set_user_attr("pruner", {"startup_trials": 3, "from_epoch": 1})  # as an older study recorded it
    capsys.readouterr()
    assert cloud_main(tune_args(data, tmp_path, "--trials", "4")) == 2
    assert "created for other pruner" in capsys.readouterr().err
    assert cloud_main(tune_args(other, tmp_path, "--trials", "4")) == 2
    err = capsys.readouterr().err
    assert "created for other data" in err and "--study-name" in err


def test_bad_input_names_the_option(datasets, tmp_path, capsys):
    data, _ = datasets
    cases = [
        (
            ["tune", "--data", str(data), "--model", "nope", "--trials", "1", "--out", str(tmp_path)],
            "--model: unknown model",
        ),
        (tune_args(data, tmp_path, "--trials", "1", "--params", ","), "search space of dir is empty"),
        (tune_args(data, tmp_path, "--trials", "1", "--params", "dropout"), "--params: ['dropout']"),
        (
            tune_args(data, tmp_path, "--trials", "1", "--storage", "nosuchdb://x/y"),
            "--storage 'nosuchdb://x/y' cannot",
        ),
        (
            tune_args(data, tmp_path, "--trials", "1", "--storage", f"sqlite:///{tmp_path}/no/such/dir/s.db"),
            "cannot be opened",
        ),
    ]
    for argv, message in cases:
        assert cloud_main(argv) == 2, argv
        assert message in capsys.readouterr().err, message


def test_every_models_search_space_builds_at_its_bounds():
    from cloud.models import MODELS, build_model
    from cloud.training.tuning import TRAIN_FIELDS, search_space
    from tests.cloud.models.helpers import make_batch, make_spec

    spec = make_spec()
    batch = make_batch(spec)
    for name in MODELS:
        space = search_space(name, spec)
        assert {"lr", "l2"} <= set(space)
        for end in (1, 2):  # every option at its lowest, then at its highest value
            options = {k: v[end] for k, v in space.items() if k not in TRAIN_FIELDS}
            assert build_model(name, spec, **options)(batch).shape == (4, spec.m, spec.n), (name, options)
