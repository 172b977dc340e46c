"""'Did it learn?' signals: reference orders beside the model's metrics, the warning when the model does
not beat them, progress lines with the dataset's K and the run's label, and TensorBoard scalars."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cloud.cli import main as cloud_main
from cloud.data.prepared import PreparedData
from cloud.evaluation.metrics import evaluate_lists
from cloud.evaluation.scoring import evaluate_references, not_beaten, reference_scores
from cloud.training.config import TrainConfig
from cloud.training.trainer import train

SMALL = {"embedding_dim": 4, "hidden": 8, "mlp_dims": [8, 8]}


def _lists(cand, label, position):
    return {
        "cand_item": np.asarray(cand),
        "label": np.asarray(label, dtype=np.float32),
        "position": np.asarray(position),
    }


def test_logged_and_popularity_orders_follow_their_definitions():
    # 2 lists, 2 sources, 2 slots; item 1 of source 0 is clicked twice in training.
    train = _lists(
        [[[1, 0], [0, -1]], [[1, 2], [0, 1]]],
        [[[1, 0], [0, 0]], [[1, 0], [0, 0]]],
        [[[0, 1], [2, -1]], [[0, 1], [2, 3]]],
    )
    split = _lists([[[0, 1], [1, 0]]], [[[0, 1], [0, 0]]], [[[3, 1], [0, 2]]])
    scores = reference_scores(split, train)
    logged = scores["logged"][0]
    order = sorted(((s, j) for s in range(2) for j in range(2)), key=lambda sj: -logged[sj])
    assert order == [(1, 0), (0, 1), (1, 1), (0, 0)]  # by logged position 0, 1, 2, 3
    assert scores["popularity"][0, 0, 1] > scores["popularity"][0, 0, 0]  # item 1 was clicked in training
    unknown = reference_scores(_lists([[[0, 1], [0, 1]]], [[[0, 0], [0, 0]]], [[[-1, -1], [-1, -1]]]), train)
    assert unknown["logged"][0, 0, 0] > unknown["logged"][0, 0, 1]  # stored order when positions are unknown
    again = reference_scores(split, train)
    assert np.array_equal(again["random"], scores["random"])  # seeded


def test_references_on_prepared_data_and_the_warning(tiny_data):
    data = PreparedData(tiny_data)
    refs = evaluate_references(data, "test", data.spec.target_shares, data.spec.K)
    assert set(refs) == {"random", "logged", "popularity"}
    assert all(f"ndcg@{data.spec.K}" in m and 0.0 <= m["auc"] <= 1.0 for m in refs.values())
    arrays = data.split("test")
    label, mask = arrays["label"], (arrays["cand_item"] >= 0).astype(np.float32)
    perfect = evaluate_lists(label.astype(np.float64), label, mask, np.asarray(data.spec.target_shares), data.spec.K)
    assert not_beaten(perfect, refs, data.spec.K) == [] or perfect["auc"] == max(r["auc"] for r in refs.values())
    chance = {"auc": 0.0, f"ndcg@{data.spec.K}": 0.0}
    notes = not_beaten(chance, refs, data.spec.K)
    assert len(notes) == 2 and notes[0].startswith("auc 0.0000 <= ")


def test_train_logs_k_label_and_tensorboard(tiny_data, tmp_path, capsys):
    pytest.importorskip("tensorboard", reason="tensorboard not installed: pip install -e '.[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    K = PreparedData(tiny_data).spec.K
    assert K != 5  # the per-epoch line must use the dataset's K
    train(
        TrainConfig(epochs=2, batch_size=4, patience=5, model_options=SMALL),
        tiny_data,
        tmp_path / "run",
        progress=False,
        label="dir device seed 0",
        tensorboard=tmp_path / "tb",
    )
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("[dir device seed 0] valid reference orders: random auc=")
    assert "logged auc=" in err[0] and "popularity auc=" in err[0]
    assert err[1].startswith("[dir device seed 0] epoch 1: train_loss=") and f"valid_ndcg@{K}=" in err[1]
    assert "@5" not in "".join(err)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "valid/auc", f"valid/ndcg@{K}", f"valid/js@{K}"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert events.Scalars("train/lr")[0].value == pytest.approx(TrainConfig().lr)


def test_evaluate_prints_references_in_the_same_table(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"epochs": 1, "batch_size": 4, "model_options": SMALL}))
    assert cloud_main(["train", "--data", str(tiny_data), "--out", str(run), "--config", str(config)]) == 0
    capsys.readouterr()
    assert cloud_main(["evaluate", "--run", str(run)]) == 0
    captured = capsys.readouterr()
    rows = [line.split()[0] for line in captured.out.splitlines()[3:]]
    assert rows == ["dir", "random", "logged", "popularity"]
    assert "auc" in captured.out.splitlines()[2]
    assert cloud_main(["evaluate", "--run", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["references"]) == {"random", "logged", "popularity"}
    for note in result["warnings"]:
        assert f"warning: the model does not beat a reference order: {note}" in captured.err


def test_train_warns_when_the_selected_model_is_at_chance(tiny_data, tmp_path, capsys):
    """lr 0 leaves the model at its random initialisation: it must not look like it learned."""
    metrics = train(
        TrainConfig(epochs=1, batch_size=4, lr=0.0, model_options=SMALL), tiny_data, tmp_path / "run", progress=False
    )
    err = capsys.readouterr().err
    refs = evaluate_references(
        PreparedData(tiny_data), "valid", PreparedData(tiny_data).spec.target_shares, PreparedData(tiny_data).spec.K
    )
    notes = not_beaten(metrics["valid"], refs, PreparedData(tiny_data).spec.K)
    assert notes, "an untrained model beat every reference order: the check cannot fail here"
    for note in notes:
        assert note in err
