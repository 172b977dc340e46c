"""Cloud-vs-device simulation: queue vs Erlang C, delayed history views, paths, sweeps, device replay, CLI.

The world is a tiny synthetic one (40 training users) prepared and trained for one epoch in a module
fixture. The core tests score with a small numpy scorer (history-aware, so histories matter) since
the model is not what they test; the device-replay and CLI tests use the trained run and its real
TFLite bundle (exported once and kept in pytest's cache under a hash of the weights and export code).
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from cloud.simulation.config import SimConfig
from cloud.simulation.engine import score_order
from cloud.simulation.history import ClickLog
from cloud.simulation.queueing import erlang_c, mean_wait, simulate_mmc, stationary_count
from cloud.simulation.study import run_study

REPO = Path(__file__).resolve().parents[3]
FAST = SimConfig(users=24, delays_s=(0.0, 60.0, 600.0), rates=(100.0, 190.0), queue_arrivals=20_000)


def history_scorer(inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Candidate vector . mean vector of the same source's history (0 without history)."""
    scores = []
    s = 0
    while f"cand_{s}" in inputs:
        hist, mask = inputs[f"hist_{s}"], inputs[f"hist_mask_{s}"]
        mean = (hist * mask[..., None]).sum(1) / np.maximum(mask.sum(1), 1)[:, None]
        scores.append(np.einsum("bnd,bd->bn", inputs[f"cand_{s}"], mean))
        s += 1
    return np.stack(scores, axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """Synthetic logs (40 users) -> DATA -> a 1-epoch DIR run, and a 24-user simulated world."""
    from cloud.data.prepare import prepare
    from cloud.data.prepared import PreparedData
    from cloud.data.synth import SynthConfig, generate, write_logs
    from cloud.simulation.world import build_world
    from cloud.training.config import TrainConfig
    from cloud.training.runs import load_run
    from cloud.training.trainer import train

    root = tmp_path_factory.mktemp("simulation")
    write_logs(generate(SynthConfig(seed=0, users=40)), root / "logs")
    prepare(root / "logs", root / "data")
    train(TrainConfig(epochs=1, threads=1, batch_size=64), root / "data", root / "run", progress=False)
    run = load_run(root / "run")
    world = build_world(run.model, PreparedData(root / "data"), users=FAST.users, world_seed=0)
    return {"root": root, "run": run, "world": world}


@pytest.fixture(scope="module")
def tiny_bundle(tiny, request) -> Path:
    """The tiny run exported to TFLite; cached by the weights, the export code and the runtime versions."""
    from cloud.export import write_bundle
    from device_runtime.bundle import verify

    run = tiny["run"]
    digest = hashlib.sha256((run.run_dir / "model.pt").read_bytes())
    for path in sorted((REPO / "cloud" / "export").glob("*.py")) + sorted((REPO / "shared_schema").glob("*.py")):
        digest.update(path.read_bytes())
    for dist in ("torch", "litert-torch", "ai-edge-litert"):
        digest.update(metadata.version(dist).encode())
    cache = getattr(request.config, "cache", None)
    root = cache.mkdir("simulation-bundle") if cache is not None else tiny["root"] / "bundles"
    bundle = root / digest.hexdigest()[:16]
    try:
        verify(bundle)
    except (FileNotFoundError, ValueError):
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        write_bundle(
            run.model,
            run.spec,
            bundle,
            backends=("tflite",),
            embedding_version=run.embedding_version,
            progress=lambda *a, **k: None,
        )
    return bundle


# --- queueing -------------------------------------------------------------------------------------


def test_erlang_c_single_server_is_mm1():
    # M/M/1: P(wait) = rho, E[W] = rho / (mu - lambda)
    assert erlang_c(1, 0.7, 1.0) == pytest.approx(0.7)
    assert mean_wait(1, 0.7, 1.0) == pytest.approx(0.7 / 0.3)
    assert erlang_c(2, 1.0, 1.0) == pytest.approx(1 / 3)  # textbook M/M/2 at a = 1
    with pytest.raises(ValueError, match="utilisation"):
        erlang_c(4, 5.0, 1.0)


def test_simulated_queue_wait_matches_erlang_c():
    rng = np.random.default_rng(3)  # 200k arrivals: the sample mean's sd is 2-4% at these loads
    gaps, services = rng.exponential(size=200_000), rng.exponential(size=220_000)
    start = float(rng.random())
    servers, service_s = 4, 0.05
    previous = -1.0
    for load in (0.5, 0.7, 0.85):
        rate = load * servers / service_s
        waits, served = simulate_mmc(gaps, services, start, servers, rate, service_s)
        assert waits.mean() == pytest.approx(mean_wait(servers, rate, service_s), rel=0.10)
        assert (waits > 0).mean() == pytest.approx(erlang_c(servers, rate, service_s), abs=0.02)
        assert served.mean() == pytest.approx(service_s, rel=0.02)
        assert waits.mean() > previous  # queueing delay grows with the request rate
        previous = waits.mean()


def test_stationary_start_has_the_stationary_mean():
    servers, rate, service_s = 3, 50.0, 0.05  # a = 2.5, rho = 0.83
    counts = np.array([stationary_count(servers, rate, service_s, u) for u in np.linspace(0, 1, 20_001)[:-1]])
    a, rho, c = rate * service_s, rate * service_s / servers, erlang_c(servers, rate, service_s)
    weights = np.array([a**k / np.prod(np.arange(1, k + 1)) for k in range(servers)])
    below = weights / weights.sum() * (1 - c)
    expected = (np.arange(servers) * below).sum() + c * (servers + rho / (1 - rho))
    assert counts.mean() == pytest.approx(expected, rel=0.01)
    assert (counts < servers).mean() == pytest.approx(1 - c, abs=1e-3)


# --- history views --------------------------------------------------------------------------------


def test_history_view_delay_order_and_ties():
    log = ClickLog(
        2,
        2,
        user=np.array([0, 0, 0, 0, 1]),
        ts=np.array([10.0, 20.0, 20.0, 30.0, 5.0]),
        item=np.array([1, 2, 3, 4, 9]),
        source=np.array([0, 0, 0, 1, 1]),
    )
    view = log.view(np.array([31.0, 31.0]), delay=0.0, t=2)
    assert view.items[0, 0].tolist() == [3, 2]  # newest first; the tie goes to the later recorded click
    assert view.items[0, 1].tolist() == [4, -1] and view.items[1, 1].tolist() == [9, -1]
    assert view.newest_ts.tolist() == [30.0, 5.0] and view.unseen.tolist() == [0, 0]
    late = log.view(np.array([31.0, 31.0]), delay=12.0, t=2)
    assert late.items[0, 0].tolist() == [1, -1] and late.items[0, 1].tolist() == [-1, -1]
    assert late.newest_ts[0] == 10.0 and late.unseen.tolist() == [3, 0]
    early = log.view(np.array([20.0, 1.0]), delay=0.0, t=2)  # a click at the read time is not yet seen
    assert early.items[0, 0].tolist() == [1, -1] and np.isnan(early.newest_ts[1])


def test_more_delay_never_gives_a_fresher_view():
    rng = np.random.default_rng(0)
    for _ in range(30):
        count = int(rng.integers(1, 60))
        log = ClickLog(
            5,
            3,
            user=rng.integers(5, size=count),
            ts=rng.integers(0, 400, count).astype(float),
            item=rng.integers(100, size=count),
            source=rng.integers(3, size=count),
        )
        read_at = rng.uniform(0, 500, 5)
        newest = [np.nan_to_num(log.view(read_at, delay, 20).newest_ts, nan=-np.inf) for delay in (0, 5, 60, 300)]
        unseen = [log.view(read_at, delay, 20).unseen for delay in (0, 5, 60, 300)]
        for fresh, stale in zip(newest, newest[1:]):
            assert (stale <= fresh).all()
        for few, more in zip(unseen, unseen[1:]):
            assert (more >= few).all()


def test_score_order_is_the_device_merge_score_mode():
    from device_runtime.merge import merge

    rng = np.random.default_rng(1)
    for _ in range(50):
        counts = rng.integers(0, 4, size=3)
        scores = np.round(rng.normal(size=(1, 3, 4)), 1).astype(np.float32)  # rounding makes ties
        cand_slot = np.full((1, 3, 4), -1)
        slots = iter(rng.permutation(12))
        for s, k in enumerate(counts):
            cand_slot[0, s, :k] = [next(slots) for _ in range(k)]
        if not counts.sum():
            continue
        order = score_order(scores, cand_slot)[0]
        expected = merge([scores[0, s, :k] for s, k in enumerate(counts)], [0.5, 0.3, 0.2], K=2, mode="score")
        assert order[: counts.sum()].tolist() == [cand_slot[0, s, i] for s, i in expected]
        assert (order[counts.sum() :] == -1).all()


# --- the study with an injected scorer -------------------------------------------------------------


def test_same_seed_same_output(tiny):
    world = tiny["world"]
    first = run_study(world, history_scorer, np.array([2.0, 4.0]), FAST, K=5)
    again = run_study(world, history_scorer, np.array([2.0, 4.0]), FAST, K=5)
    other = run_study(world, history_scorer, np.array([2.0, 4.0]), replace(FAST, seed=1), K=5)
    for name in ("device", "cloud", "upstream"):
        for field in ("expected", "clicks", "order", "staleness_s"):
            np.testing.assert_array_equal(getattr(first.paths[name], field), getattr(again.paths[name], field))
        np.testing.assert_array_equal(first.paths[name].timing.response_ms, again.paths[name].timing.response_ms)
    assert first.delay_rows == again.delay_rows and first.rate_rows == again.rate_rows
    assert not np.array_equal(first.paths["cloud"].clicks, other.paths["cloud"].clicks)


def test_zero_delay_and_network_give_the_device_history_and_clicks(tiny):
    world = tiny["world"]
    config = replace(FAST, upload_delay_s=0.0, rtt_median_ms=0.0, delays_s=(0.0,), rates=(FAST.rate,))
    study = run_study(world, history_scorer, np.array([3.0]), config, K=5)
    device, cloud = study.paths["device"], study.paths["cloud"]
    assert not cloud.timing.fallback.any()
    np.testing.assert_array_equal(cloud.order, device.order)
    np.testing.assert_array_equal(cloud.clicks, device.clicks)
    np.testing.assert_array_equal(cloud.unseen, device.unseen)
    assert cloud.unseen.sum() == 0
    np.testing.assert_allclose(cloud.staleness_s, device.staleness_s, atol=1.0)  # read later by the queue wait
    # the default delay hides behaviours and changes what is shown: the comparison is not vacuous
    delayed = run_study(world, history_scorer, np.array([3.0]), replace(config, upload_delay_s=300.0), K=5)
    assert delayed.paths["cloud"].unseen.sum() > 0
    assert (delayed.paths["cloud"].order != device.order).any()


def test_upload_delay_bounds_staleness_and_hides_more_behaviour(tiny):
    study = run_study(tiny["world"], history_scorer, np.array([2.0]), FAST, K=5)
    rows = study.delay_rows
    assert [r["upload_delay_s"] for r in rows] == list(FAST.delays_s)
    for low, high in zip(rows, rows[1:]):
        assert high["staleness_p50_s"] >= low["staleness_p50_s"]
        assert high["unseen_clicks_mean"] >= low["unseen_clicks_mean"]
    cloud = study.paths["cloud"]
    seen = np.isfinite(cloud.staleness_s)
    assert (cloud.staleness_s[seen] > FAST.upload_delay_s).all()  # nothing younger than the delay is visible
    device = study.paths["device"]
    assert (device.staleness_s[np.isfinite(device.staleness_s)] > 0).all() and device.unseen.sum() == 0


def test_queueing_delay_grows_with_rate_and_timeouts_fall_back(tiny):
    study = run_study(tiny["world"], history_scorer, np.array([2.0]), replace(FAST, rates=(60.0, 120.0, 180.0)), K=5)
    waits = [r["queue_wait_mean_ms"] for r in study.rate_rows]
    assert waits == sorted(waits) and waits[0] < waits[-1]
    for row in study.rate_rows:  # 20k arrivals: the users' requests sample the Erlang-C mean
        assert row["queue_wait_mean_ms"] == pytest.approx(row["erlang_c_wait_mean_ms"], rel=0.35, abs=0.5)
    hurried = run_study(
        tiny["world"], history_scorer, np.array([2.0]), replace(FAST, timeout_ms=1.0, delays_s=(), rates=(100.0,)), K=5
    )
    cloud, upstream = hurried.paths["cloud"], hurried.paths["upstream"]
    assert cloud.timing.fallback.all() and (cloud.timing.response_ms == 1.0).all()
    np.testing.assert_array_equal(cloud.clicks, upstream.clicks)


def test_config_errors_name_the_fix():
    with pytest.raises(ValueError, match="capacity"):
        SimConfig(rate=500.0)  # 8 servers x 25/s = 200 req/s
    with pytest.raises(ValueError, match="timeout_ms"):
        SimConfig(timeout_ms=0)
    assert SimConfig().sweep_rates()[-1] == pytest.approx(0.999 * SimConfig().capacity)


# --- the real model and device runtime -------------------------------------------------------------


def test_device_replay_times_the_runtime_and_matches_the_scorer(tiny, tiny_bundle):
    from cloud.simulation.device_latency import measure_device
    from cloud.simulation.scoring import torch_scorer

    run, world = tiny["run"], tiny["world"]
    measured = measure_device(world, tiny_bundle, torch_scorer(run.model), run.embedding_version, users=2)
    assert len(measured.samples_ms) == 2 * world.requests
    assert (measured.samples_ms > 0).all() and measured.backend == "tflite"
    assert measured.max_score_diff < 1e-4
    assert measured.same_order >= 0.9 * len(measured.samples_ms)
    assert {"history_read", "inference", "merge", "total"} <= set(measured.stage_ms)
    with pytest.raises(ValueError, match="embedding version"):
        measure_device(world, tiny_bundle, torch_scorer(run.model), "other-version", users=1)


def test_simulate_command_writes_the_report_and_replays_exactly(tiny, tiny_bundle, tmp_path, capsys):
    from cloud.cli import main

    run = str(tiny["run"].run_dir)
    small = ["--users", "12", "--delays", "0,300", "--rates", "100,180", "--device-users", "1"]
    assert main(["simulate", "--run", run, "--bundle", str(tiny_bundle), "--out", str(tmp_path / "a"), *small]) == 0
    out = capsys.readouterr().out
    assert "device - cloud" in out and "wrote" in out
    names = {p.name for p in (tmp_path / "a").iterdir()}
    assert {
        "summary.md",
        "paths.csv",
        "delay_sweep.csv",
        "rate_sweep.csv",
        "device_latency.csv",
        "config.json",
        "latency_cdf.png",
        "utility_vs_delay.png",
        "utility_vs_rate.png",
    } <= names
    summary = (tmp_path / "a" / "summary.md").read_text()
    assert "## Device runtime measurement" in summary and "Erlang-C" in summary
    assert len((tmp_path / "a" / "paths.csv").read_text().splitlines()) == 4

    replay = ["--device-latency", str(tmp_path / "a" / "device_latency.csv")]
    for name in ("b", "c"):
        assert main(["simulate", "--run", run, "--out", str(tmp_path / name), *small, *replay]) == 0
    for name in ("paths.csv", "delay_sweep.csv", "rate_sweep.csv"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()

    assert main(["simulate", "--run", run, "--out", str(tmp_path / "d"), *small]) == 2
    assert "--bundle" in capsys.readouterr().err
    assert main(["simulate", "--run", run, "--out", str(tmp_path / "e"), "--world-seed", "1", *small, *replay]) == 2
    assert "--world-seed" in capsys.readouterr().err
    assert main(["simulate", "--run", run, "--out", str(tmp_path / "b"), *small, *replay]) == 2
    assert "--force" in capsys.readouterr().err
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()
