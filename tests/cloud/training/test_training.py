"""Training CLI and run folder: train, evaluate, resume, bad input (real synth data, a few epochs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cloud.cli import main as cloud_main
from cloud.data.prepare import prepare
from cloud.data.prepared import PreparedData
from cloud.data.synth import SynthConfig, generate, write_logs
from cloud.models import build_model
from cloud.training.config import TrainConfig
from cloud.training.objective import BatchSums, step_objective
from cloud.training.runs import load_run
from cloud.training.trainer import NonFiniteLoss, train


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_logs(generate(SynthConfig(users=300, seed=1)), root / "logs")
    prepare(root / "logs", root / "data")
    return root / "data"


def test_train_writes_a_reproducible_run(synth_data, tmp_path):
    metrics = train(TrainConfig(epochs=2, batch_size=128), synth_data, tmp_path / "run", progress=False)
    for name in ("config.json", "model.pt", "checkpoint.pt", "epochs.csv", "metrics.json"):
        assert (tmp_path / "run" / name).exists(), name
    assert metrics["test"]["lists"] == len(np.load(synth_data / "test" / "user.npy"))  # every test list counted
    assert 0.0 <= metrics["test"]["auc"] <= 1.0
    run = load_run(tmp_path / "run")
    assert run.config["model"] == "dir" and run.embedding_version == metrics["embedding_version"]
    again = train(TrainConfig(epochs=2, batch_size=128), synth_data, tmp_path / "run2", progress=False)
    assert again["test"] == metrics["test"]  # same seed, same data -> same model


def test_resume_continues_from_the_checkpoint(synth_data, tmp_path):
    straight = train(TrainConfig(epochs=3, patience=10, batch_size=128), synth_data, tmp_path / "a", progress=False)
    train(TrainConfig(epochs=1, patience=10, batch_size=128), synth_data, tmp_path / "b", progress=False)
    resumed = train(
        TrainConfig(epochs=3, patience=10, batch_size=128), synth_data, tmp_path / "b", resume=True, progress=False
    )
    assert len((tmp_path / "b" / "epochs.csv").read_text().strip().splitlines()) == 4  # header + 3 epochs
    assert resumed["test"]["auc"] == pytest.approx(straight["test"]["auc"], abs=1e-6)


class _RunsCode:
    """A pickle payload: unpickling it calls Path.touch(marker)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_reads_the_checkpoint_with_weights_only(synth_data, tmp_path):
    run = tmp_path / "run"
    train(TrainConfig(epochs=1, batch_size=128), synth_data, run, progress=False)
    state = torch.load(run / "checkpoint.pt", weights_only=True)  # RNG state and all: tensors and plain values
    assert state["rng"].dtype == torch.uint8 and state["epoch"] == 0
    marker = tmp_path / "ran"
    torch.save({**state, "extra": _RunsCode(marker)}, run / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"checkpoint\.pt: holds objects other than tensors .*start a new run"):
        train(TrainConfig(epochs=2, batch_size=128), synth_data, run, resume=True, progress=False)
    assert not marker.exists()  # refused without running the payload
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert cloud_main(["train", "--data", str(synth_data), "--out", str(run), "--epochs", "2", "--resume"]) == 2


def test_staged_model_freezes_its_evaluator_after_stage_one(synth_data, tmp_path):
    """CRUM through the real trainer (begin_epoch each epoch, no utility BCE): with one evaluator epoch, runs
    of 2 and 3 epochs end with the same evaluator and embeddings (frozen after epoch 1) and different
    rerankers (trained in epochs 2 and 3)."""
    config = dict(model="crum", batch_size=256, patience=10, model_options={"width": 8, "lstm_hidden": 4, "pairs": 2})
    train(TrainConfig(epochs=2, **config), synth_data, tmp_path / "two", progress=False)
    train(TrainConfig(epochs=3, **config), synth_data, tmp_path / "three", progress=False)
    two, three = (
        torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["model"] for name in ("two", "three")
    )
    initial = build_model("crum", PreparedData(synth_data).spec, **config["model_options"]).state_dict()

    def same(a, b, prefix):
        return all(torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))

    assert not same(initial, two, "evaluator.") and not same(initial, two, "item_encoder.")
    assert same(two, three, "evaluator.") and same(two, three, "item_encoder.")
    assert not same(initial, two, "device_model.") and not same(two, three, "device_model.")
    with pytest.raises(ValueError, match="evaluator_epochs=1"):
        train(TrainConfig(epochs=1, **config), synth_data, tmp_path / "short", progress=False)


def test_step_objective_leaves_out_the_utility_loss_when_asked():
    sums = BatchSums(*(torch.tensor(v) for v in (2.0, 6.0, 3.0, 1.5, 0.0)), torch.zeros(3))
    target = torch.tensor([0.5, 0.3, 0.2])
    with_util, value = step_objective(sums, sums, target, 0.5, False, 1)
    without, value_without = step_objective(sums, sums, target, 0.5, False, 1, utility=False)
    assert value == pytest.approx(6.0 / 3 + 1.5 / 3) and value_without == pytest.approx(1.5 / 3)
    assert float(with_util) == pytest.approx(value) and float(without) == pytest.approx(value_without)


def test_existing_run_is_not_overwritten(synth_data, tmp_path):
    train(TrainConfig(epochs=1, batch_size=128), synth_data, tmp_path / "run", progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(TrainConfig(epochs=1, batch_size=128), synth_data, tmp_path / "run", progress=False)


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(synth_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    train(TrainConfig(epochs=1, batch_size=128), data, tmp_path / "run", progress=False)
    dense = np.load(data / "items" / "video" / "dense.npy")
    dense[:] = np.inf  # corrupted features reach the model
    np.save(data / "items" / "video" / "dense.npy", dense)
    with pytest.raises(NonFiniteLoss, match="lower --lr"):
        train(TrainConfig(epochs=2, batch_size=128), data, tmp_path / "run", resume=True, progress=False)
    assert load_run(tmp_path / "run").model is not None  # last good checkpoint still loads


def test_cli_train_evaluate_and_bad_input(synth_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        cloud_main(
            [
                "train",
                "--data",
                str(synth_data),
                "--out",
                str(run),
                "--epochs",
                "1",
                "--history",
                "cloud",
                "--model",
                "dir-isi",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert cloud_main(["evaluate", "--run", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["history"] == "cloud" and result["model"] == "dir-isi" and result["lists"] > 0
    assert cloud_main(["evaluate", "--run", str(run), "--history", "device"]) == 2
    assert "trained on cloud history" in capsys.readouterr().err
    assert cloud_main(["train", "--data", str(synth_data), "--out", str(tmp_path / "x"), "--model", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert cloud_main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "y")]) == 2
    assert "dir-cloud prepare" in capsys.readouterr().err


def test_benchmark_grid_writes_the_table(synth_data, tmp_path, capsys):
    assert (
        cloud_main(
            [
                "benchmark",
                "--data",
                str(synth_data),
                "--models",
                "dir,dir-js",
                "--histories",
                "device",
                "--seeds",
                "2",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "bench"),
                "--json",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "[dir-js device seed 1] epoch 1: train_loss=" in captured.err  # progress names its run
    result = json.loads(captured.out)
    assert len(result["results"]) == 4 and {r["model"] for r in result["summary"]} == {"dir", "dir-js"}
    table = (tmp_path / "bench" / "table.md").read_text()
    assert "| dir | device | 2 |" in table and "| dir-js | device | 2 |" in table and "oracle" in table
    assert len((tmp_path / "bench" / "results.csv").read_text().strip().splitlines()) == 5


def test_runs_end_by_patience_and_say_why(synth_data, tmp_path):
    """A run stops `patience` epochs after its best one and says so; a run cut by the cap says "cap"."""
    config = dict(batch_size=128, lr=0.05, model_options={"hidden": 8, "mlp_dims": [8]})
    stopped = train(TrainConfig(epochs=30, patience=1, **config), synth_data, tmp_path / "p", progress=False)
    assert stopped["stop_reason"] == "patience"
    assert stopped["stopped_epoch"] == stopped["best_epoch"] + 1 < 30
    capped = train(TrainConfig(epochs=1, patience=5, **config), synth_data, tmp_path / "c", progress=False)
    assert (capped["stop_reason"], capped["stopped_epoch"], capped["best_epoch"]) == ("cap", 1, 1)
    saved = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert saved["stop_reason"] == "patience" and saved["stopped_epoch"] == stopped["stopped_epoch"]


def test_plateau_schedule_lowers_the_learning_rate(synth_data, tmp_path):
    config = TrainConfig(
        epochs=4,
        patience=4,
        lr_schedule="plateau",
        lr_factor=0.5,
        lr_patience=0,
        batch_size=128,
        lr=0.05,
        model_options={"hidden": 8, "mlp_dims": [8]},
    )
    train(config, synth_data, tmp_path / "run", progress=False)
    import csv

    rows = list(csv.DictReader(open(tmp_path / "run" / "epochs.csv")))
    rates = [float(r["lr"]) for r in rows]
    aucs = [float(r["valid_auc"]) for r in rows]
    assert rates[0] == 0.05
    for k in range(1, len(rows)):  # halved exactly after each epoch that did not beat every earlier one
        improved = aucs[k - 1] > max(aucs[: k - 1], default=-1.0)
        assert rates[k] == pytest.approx(rates[k - 1] * (1.0 if improved else 0.5))
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="cosine").check()
