"""Response times and history-read instants of the two paths, from the network, queue and device models.

    device = device_timing(world, draws, measured_ms, config)
    queue = queue_delays(world, draws, config, rate=160.0)          # waits and services of the users' requests
    cloud = cloud_timing(world, draws, config, queue, upload_delay_s=300.0)

Cloud: the request travels half a round trip, waits in the M/M/c queue, is served (the model reads
the history the cloud has at the start of service), and the answer travels the other half; an answer
later than the timeout is replaced by the upstream order at the timeout. Device: the measured latency
of the real runtime (one measured sample drawn per request), plus one round trip when the device
fetches its slate per request (`device_fetch`); it reads its own store at once (delay 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cloud.simulation.config import SimConfig
from cloud.simulation.engine import PathTiming
from cloud.simulation.queueing import simulate_mmc
from cloud.simulation.streams import Draws
from cloud.simulation.world import World


def round_trip_ms(draws: Draws, config: SimConfig) -> np.ndarray:
    """Lognormal network round trip per request [U, R] in ms (all zero when the median is 0)."""
    return config.rtt_median_ms * np.exp(config.rtt_sigma * draws.rtt_z)


def device_timing(
    world: World, draws: Draws, measured_ms: Sequence[float] | np.ndarray, config: SimConfig
) -> PathTiming:
    measured = np.asarray(measured_ms, np.float64)
    if measured.ndim != 1 or not len(measured) or not np.isfinite(measured).all() or (measured < 0).any():
        raise ValueError("device latency samples must be a non-empty list of finite milliseconds >= 0")
    latency = measured[(draws.device_pick * len(measured)).astype(np.int64)]
    fetch = round_trip_ms(draws, config) if config.device_fetch else np.zeros_like(latency)
    return PathTiming(
        name="device",
        read_at=world.request_ts + fetch / 1e3,
        response_ms=fetch + latency,
        upload_delay_s=0.0,
        fallback=np.zeros(latency.shape, bool),
    )


def queue_delays(world: World, draws: Draws, config: SimConfig, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Queue wait and service (ms, [U, R]) of the users' requests at `rate` req/s of total traffic.

    The users' requests, in time order, are spread evenly over the simulated arrivals (the rest is
    other users' traffic), so their waits sample the whole simulated horizon.
    """
    config.check_rate(rate)
    waits, services = simulate_mmc(
        draws.queue_gaps, draws.queue_services, draws.queue_start, config.servers, rate, config.service_ms / 1e3
    )
    order = np.argsort(world.request_ts.ravel(), kind="stable")
    tagged = np.arange(order.size) * len(waits) // order.size
    wait, service = np.empty(order.size), np.empty(order.size)
    wait[order], service[order] = waits[tagged] * 1e3, services[tagged] * 1e3
    return wait.reshape(world.request_ts.shape), service.reshape(world.request_ts.shape)


def cloud_timing(
    world: World, draws: Draws, config: SimConfig, queue: tuple[np.ndarray, np.ndarray], upload_delay_s: float
) -> PathTiming:
    """The cloud path with `queue` = queue_delays(...) at the request rate and the given upload delay."""
    rtt = round_trip_ms(draws, config)
    wait, service = queue
    answer = rtt + wait + service
    late = answer > config.timeout_ms
    return PathTiming(
        name="cloud",
        read_at=world.request_ts + (rtt / 2 + wait) / 1e3,
        response_ms=np.where(late, config.timeout_ms, answer),
        upload_delay_s=float(upload_delay_s),
        fallback=late,
        wait_ms=wait,
    )
