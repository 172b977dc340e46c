"""Common random numbers of a study: every path and every sweep point reuses the same draws.

    draws = Draws.make(seed=0, users=1000, requests=12, slots=30, queue_arrivals=200_000)
    draws.click_u[u, j, slot]    # uniform per candidate (logged slot), shared by the paths: click iff u < p

Each stream has its own generator seeded by (seed, stream id), so adding a stream or changing one
size never shifts another stream's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

START_EXTRA = 20_000  # service draws kept for the customers of the queue's start state


@dataclass(frozen=True)
class Draws:
    click_u: np.ndarray  # [U, R, M] uniforms, indexed by the candidate's logged slot (not its position)
    rtt_z: np.ndarray  # [U, R] standard normals of the lognormal round trip
    queue_gaps: np.ndarray  # [A] unit exponential inter-arrival gaps, A = max(U * R, queue_arrivals)
    queue_services: np.ndarray  # [A + START_EXTRA] unit exponential service times
    queue_start: float  # uniform that picks the queue's start state
    device_pick: np.ndarray  # [U, R] uniforms that pick a measured device latency

    @classmethod
    def make(cls, seed: int, users: int, requests: int, slots: int, queue_arrivals: int = 0) -> Draws:
        def stream(k: int) -> np.random.Generator:
            return np.random.default_rng([seed, 7919, k])

        arrivals = max(users * requests, queue_arrivals)
        return cls(
            click_u=stream(0).random((users, requests, slots)),
            rtt_z=stream(1).standard_normal((users, requests)),
            queue_gaps=stream(2).exponential(size=arrivals),
            queue_services=stream(3).exponential(size=arrivals + START_EXTRA),
            queue_start=float(stream(4).random()),
            device_pick=stream(5).random((users, requests)),
        )
