"""A cloud-vs-device study: both paths at the configured point, then the upload-delay and rate sweeps.

    study = run_study(world, scorer, measured_ms, SimConfig(), K=5)
    study.paths["device"], study.paths["cloud"], study.paths["upstream"]   # PathResults
    study.delay_rows, study.rate_rows                                      # one dict per sweep point

All paths and sweep points share the common random numbers of `Draws` (clicks, round trips, queue,
device latency picks), so their differences come from the paths, not from the draws. "upstream" is
the reference without reranking (the generator's order, no model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cloud.simulation.config import SimConfig
from cloud.simulation.engine import PathResult, PathTiming, ScoreCache, Scorer, simulate_path
from cloud.simulation.queueing import mean_wait
from cloud.simulation.streams import Draws
from cloud.simulation.summary import paired_gain, path_summary
from cloud.simulation.timing import cloud_timing, device_timing, queue_delays
from cloud.simulation.world import World


@dataclass
class Study:
    config: SimConfig
    K: int
    paths: dict[str, PathResult]
    delay_rows: list[dict] = field(default_factory=list)
    rate_rows: list[dict] = field(default_factory=list)
    scored_rows: int = 0  # model evaluations (the score cache skips repeated histories)


def run_study(
    world: World, scorer: Scorer, device_ms: Sequence[float] | np.ndarray, config: SimConfig, K: int
) -> Study:
    draws = Draws.make(config.seed, world.users, world.requests, world.slot_item.shape[2], config.queue_arrivals)
    cache = ScoreCache(scorer)
    queues: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    clouds: dict[tuple[float, float], PathResult] = {}

    def cloud(delay: float, rate: float) -> PathResult:
        if rate not in queues:
            queues[rate] = queue_delays(world, draws, config, rate)
        if (delay, rate) not in clouds:
            clouds[delay, rate] = simulate_path(
                world, cache, cloud_timing(world, draws, config, queues[rate], delay), draws.click_u, K
            )
        return clouds[delay, rate]

    device = simulate_path(world, cache, device_timing(world, draws, device_ms, config), draws.click_u, K)
    upstream = PathTiming(
        name="upstream",
        read_at=world.request_ts,
        response_ms=np.zeros(world.request_ts.shape),
        upload_delay_s=0.0,
        fallback=np.ones(world.request_ts.shape, bool),
    )
    study = Study(
        config,
        K,
        {
            "device": device,
            "cloud": cloud(config.upload_delay_s, config.rate),
            "upstream": simulate_path(world, cache, upstream, draws.click_u, K),
        },
    )
    for delay in config.delays_s:
        result = cloud(float(delay), config.rate)
        study.delay_rows.append({"upload_delay_s": float(delay), **_sweep_row(result, device)})
    for rate in config.sweep_rates():
        result = cloud(config.upload_delay_s, float(rate))
        study.rate_rows.append(
            {
                "rate_per_s": float(rate),
                "utilisation": rate / config.capacity,
                "erlang_c_wait_mean_ms": 1e3 * mean_wait(config.servers, rate, config.service_ms / 1e3),
                **_sweep_row(result, device),
            }
        )
    study.scored_rows = cache.calls
    return study


def _sweep_row(cloud: PathResult, device: PathResult) -> dict:
    row = path_summary(cloud)
    gain = paired_gain(device, cloud)
    return {
        **row,
        "device_gain": gain["gain"],
        "device_gain_ci_low": gain["ci_low"],
        "device_gain_ci_high": gain["ci_high"],
    }
