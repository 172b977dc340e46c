"""Distributed data-parallel training: torchrun (gloo, loopback) against one process, a killed rank,
resume, the sharded loss, and batches read from the memory-mapped prepared data."""

from __future__ import annotations

import json
import mmap
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cloud.cli import main as cloud_main
from cloud.data.batches import ListBatcher
from cloud.data.prepare import prepare
from cloud.data.prepared import PreparedData
from cloud.data.synth import SynthConfig, generate, write_logs
from cloud.evaluation.scoring import predict
from cloud.models import MODELS, build_model
from cloud.training.config import TrainConfig
from cloud.training.objective import BatchSums, step_objective
from cloud.training.runs import load_run
from cloud.training.trainer import train

REPO = Path(__file__).resolve().parents[3]
# 576 train lists: 6 global batches of 115 per epoch, the last holds 1 list (rank 1's share is empty).
RUN = {"epochs": 4, "patience": 10, "batch_size": 115, "threads": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    write_logs(generate(SynthConfig(users=60, seed=1)), root / "logs")
    prepare(root / "logs", root / "data")
    return root / "data"


@pytest.fixture(scope="module")
def single_run(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("single") / "run"
    train(TrainConfig(**RUN), data, run, progress=False)
    return run


def torchrun(data: Path, run: Path, *extra: str) -> subprocess.Popen:
    """`torchrun --nproc-per-node 2 -m cloud.cli train ...` with the RUN settings, 1 thread per rank."""
    config = run.parent / "config.json"
    config.write_text(json.dumps(RUN))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_free_port()),
        "-m",
        "cloud.cli",
        "train",
        "--data",
        str(data),
        "--out",
        str(run),
        "--config",
        str(config),
        *extra,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_same_model(a: Path, b: Path, data: Path) -> None:
    """Same weights (model.pt and the last epoch's checkpoint) and the same test scores.

    The weights are compared at 1e-4: the attention's key bias has a gradient of exactly zero in exact
    arithmetic (softmax ignores a constant added to all of a query's logits), so its gradient is float noise
    that differs with the summation order of two ranks, and Adam turns that noise into lr-sized steps. What
    the models compute is then compared at 1e-5: their scores on every test list."""
    for name, pick in (("model.pt", lambda state: state), ("checkpoint.pt", lambda state: state["model"])):
        left, right = (pick(torch.load(run / name, weights_only=False)) for run in (a, b))
        assert left.keys() == right.keys()
        for key in left:
            torch.testing.assert_close(left[key], right[key], atol=1e-4, rtol=0, msg=f"{name}: {key}")
    prepared = PreparedData(data)
    batcher = ListBatcher(prepared.item_tables(), prepared.split("test"), "device", "cpu")
    scores = [torch.as_tensor(predict(load_run(run).model, batcher)) for run in (a, b)]
    torch.testing.assert_close(scores[0], scores[1], atol=1e-5, rtol=0, msg="test scores")


def test_two_processes_train_the_one_process_model(data, single_run, tmp_path):
    run = tmp_path / "run"
    job = torchrun(data, run)
    out, err = job.communicate(timeout=300)
    assert job.returncode == 0, err[-3000:]
    assert_same_model(single_run, run, data)
    assert err.count("epoch 4:") == 1  # only rank 0 logs
    metrics = [torch.load(r / "checkpoint.pt", weights_only=False)["history_rows"] for r in (single_run, run)]
    assert [row["valid_auc"] for row in metrics[0]] == pytest.approx([row["valid_auc"] for row in metrics[1]], abs=1e-6)
    assert '"run"' in out and out.count('"run"') == 1  # one JSON report, from rank 0
    assert cloud_main(["evaluate", "--run", str(run), "--json"]) == 0  # a normal run folder


def test_killed_rank_fails_cleanly_and_resume_continues(data, single_run, tmp_path):
    run = tmp_path / "run"
    job = torchrun(data, run)
    seen = []
    for line in job.stderr:  # wait for epoch 1 to be logged and checkpointed
        seen.append(line)
        if line.startswith("epoch 1:"):
            break
    while not (run / "checkpoint.pt").exists() and job.poll() is None:
        time.sleep(0.05)
    os.kill(_worker_pid(job.pid, rank=1), signal.SIGKILL)
    _, err = job.communicate(timeout=120)
    err = "".join(seen) + err
    assert job.returncode != 0
    assert "exitcode  : -9" in err  # torchrun names the killed rank
    assert "lost contact with another rank" in err or "stopped by SIGTERM" in err, err[-3000:]
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no half-written temp file
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert 0 <= state["epoch"] < RUN["epochs"] - 1 and not (run / "metrics.json").exists()

    job = torchrun(data, run, "--resume")
    _, err = job.communicate(timeout=300)
    assert job.returncode == 0, err[-3000:]
    assert len((run / "epochs.csv").read_text().strip().splitlines()) == 1 + RUN["epochs"]
    assert_same_model(single_run, run, data)


def test_sharded_objective_has_the_single_batch_gradient(data):
    """DDP averages the ranks' gradients: their mean must be the whole batch's gradient, exposure loss included."""
    prepared = PreparedData(data)
    batcher = ListBatcher(prepared.item_tables(), prepared.split("train"))
    target = torch.tensor(prepared.spec.target_shares)
    model = build_model("dir", prepared.spec)

    def gradients(world: int):
        shares = [next(batcher.batches(96, rank=rank, world=world)) for rank in range(world)]
        scored = [(share, model(share)) for share in shares]
        local = [BatchSums.of(model, share, scores, 5, "straight_through", True) for share, scores in scored]
        total = BatchSums.unpacked(sum(sums.packed() for sums in local))
        model.zero_grad()
        losses = []
        for sums in local:
            objective, loss = step_objective(sums, total, target, 0.5, True, world)
            (objective / world).backward()  # what DDP's all-reduce average does
            losses.append(loss)
        assert len(set(losses)) == 1  # every rank sees the global loss
        return losses[0], {name: p.grad.clone() for name, p in model.named_parameters()}

    loss1, grad1 = gradients(1)
    loss3, grad3 = gradients(3)
    assert loss1 == pytest.approx(loss3, rel=1e-6)
    for name in grad1:
        torch.testing.assert_close(grad1[name], grad3[name], atol=1e-6, rtol=1e-4, msg=name)


def test_every_model_uses_all_its_parameters(data):
    """DistributedDataParallel runs without find_unused_parameters: each parameter must get a gradient."""
    prepared = PreparedData(data)
    batch = next(ListBatcher(prepared.item_tables(), prepared.split("train")).batches(16))
    target = torch.tensor(prepared.spec.target_shares)
    for name in MODELS:
        model = build_model(name, prepared.spec)
        sums = BatchSums.of(model, batch, model(batch), 5, "straight_through", model.uses_exposure_loss)
        objective, _ = step_objective(sums, BatchSums.unpacked(sums.packed()), target, 0.5, model.uses_exposure_loss, 1)
        objective.backward()
        assert not [n for n, p in model.named_parameters() if p.grad is None], name


def test_shares_partition_each_global_batch():
    lists = 7
    arrays = {
        "cand_item": np.zeros((lists, 1, 2), np.int64),
        "hist_device": -np.ones((lists, 1, 3), np.int64),
        "label": np.arange(lists * 2, dtype=np.float32).reshape(lists, 1, 2) / 2,
    }  # label[i, 0, 0] = i
    batcher = ListBatcher([(np.zeros((1, 0), np.int64), np.zeros((1, 1), np.float32))], arrays)
    whole = [
        b["label"][:, 0, 0].tolist()
        for b in batcher.batches(3, shuffle=True, generator=torch.Generator().manual_seed(4))
    ]
    for world in (2, 4):
        shares = [
            list(batcher.batches(3, shuffle=True, generator=torch.Generator().manual_seed(4), rank=r, world=world))
            for r in range(world)
        ]
        assert {len(s) for s in shares} == {len(whole)}  # every rank takes the same number of steps
        for step, rows in enumerate(whole):
            real = [
                i for s in shares for i, w in zip(s[step]["label"][:, 0, 0].tolist(), s[step]["weight"].tolist()) if w
            ]
            assert sorted(real) == sorted(rows)
    last = [list(batcher.batches(3, rank=r, world=4))[-1] for r in range(4)]  # last global batch: list 6 only
    assert [b["weight"].tolist() for b in last] == [[1.0], [0.0], [0.0], [0.0]]


def test_batcher_reads_rows_from_the_memory_map(data):
    prepared = PreparedData(data)
    split = prepared.split("train")
    batcher = ListBatcher(prepared.item_tables(), split, history="cloud")
    assert isinstance(batcher.cand_item.base, mmap.mmap)  # mapped, not copied into memory
    rows = np.array([9, 2, 400, 2])
    batch = batcher.batch(rows)
    np.testing.assert_array_equal(batch["label"].numpy(), split["label"][rows])
    hist = split["hist_cloud"][rows, 1]
    np.testing.assert_array_equal(batch["hist_mask_1"].numpy(), (hist >= 0).astype(np.float32))
    cat, _ = prepared.item_tables()[1]
    np.testing.assert_array_equal(batch["hist_cat_1"].numpy(), np.asarray(cat)[np.maximum(hist, 0)])
    part = batcher.subset(100, 110)
    np.testing.assert_array_equal(next(part.batches(4))["label"].numpy(), split["label"][100:104])


def test_cli_device_and_distributed_errors(data, tmp_path, capsys):
    assert cloud_main(["train", "--data", str(data), "--out", str(tmp_path / "a"), "--distributed"]) == 2
    assert "torchrun --nproc-per-node" in capsys.readouterr().err
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU, so --device cuda is no error here")
    assert cloud_main(["train", "--data", str(data), "--out", str(tmp_path / "b"), "--device", "cuda"]) == 2
    assert "--device cpu" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker_pid(launcher: int, rank: int) -> int:
    """The pid of torchrun's worker whose environment says RANK=rank."""
    children = [
        int(pid)
        for task in os.listdir(f"/proc/{launcher}/task")
        for pid in Path(f"/proc/{launcher}/task/{task}/children").read_text().split()
    ]
    for pid in children:
        if f"RANK={rank}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            return pid
    raise AssertionError(f"no worker with RANK={rank} among {children}")
