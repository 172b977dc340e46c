"""The cloud reranking service as an M/M/c FCFS queue: event simulation and the Erlang-C closed form.

    waits, services = simulate_mmc(unit_gaps, unit_services, start_u, servers=8, rate=160.0, service_s=0.04)
    mean_wait(8, 160.0, 0.04)          # Erlang-C E[W] in seconds, to check the simulation against

Draws are passed in as unit exponentials (and one uniform for the start state) so that every rate of a
sweep reuses them (common random numbers): arrival gaps are unit_gaps / rate, services unit_services
* service_s. The queue starts in its stationary state (number in system drawn from the M/M/c
stationary law, residual services exponential by memorylessness), so there is no warm-up bias.
"""

from __future__ import annotations

import heapq
import math

import numpy as np


def erlang_c(servers: int, rate: float, service_s: float) -> float:
    """P(an arrival waits) in a stable M/M/c queue (Erlang's C formula, via the Erlang-B recursion)."""
    load = rate * service_s  # offered load a = lambda / mu
    rho = load / servers
    if not 0 <= rho < 1:
        raise ValueError(f"utilisation {rho:.3f} must be in [0, 1) for a steady state")
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = load * blocking / (k + load * blocking)
    return blocking / (1 - rho * (1 - blocking))


def mean_wait(servers: int, rate: float, service_s: float) -> float:
    """Mean time in queue E[W] = C(c, a) / (c mu - lambda) in seconds."""
    if service_s == 0:
        return 0.0
    return erlang_c(servers, rate, service_s) / (servers / service_s - rate)


def stationary_count(servers: int, rate: float, service_s: float, u: float) -> int:
    """Number in system at a random time: the stationary law's inverse CDF at `u` (monotone in u and rate)."""
    if service_s == 0:
        return 0
    load, rho = rate * service_s, rate * service_s / servers
    waiting = erlang_c(servers, rate, service_s)
    terms = np.array(
        [math.exp(k * math.log(load) - math.lgamma(k + 1)) if load else float(k == 0) for k in range(servers)]
    )
    below = np.cumsum(terms / terms.sum() * (1 - waiting))
    if u < below[-1]:
        return int(np.searchsorted(below, u, side="right"))
    tail = (u - below[-1]) / waiting  # N - c is geometric: P(N - c >= j) = rho^j
    return servers + (int(math.log1p(-tail) / math.log(rho)) if rho > 0 and tail < 1 else 0)


def simulate_mmc(
    unit_gaps: np.ndarray, unit_services: np.ndarray, start_u: float, servers: int, rate: float, service_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Waiting and service times (seconds) of len(unit_gaps) successive arrivals, first come first served.

    The event list is a heap of the servers' next departure times; an arrival takes the earliest one.
    `unit_services` holds one draw per arrival followed by the start state's customers' (at least
    len(unit_gaps) + the largest start count used; extra draws are ignored).
    """
    count = len(unit_gaps)
    arrivals = np.cumsum(np.asarray(unit_gaps, dtype=np.float64) / rate)
    services = np.asarray(unit_services, dtype=np.float64) * service_s
    departures = [0.0] * servers
    start = stationary_count(servers, rate, service_s, start_u)
    if count + start > len(services):
        raise ValueError(f"need {count + start} service draws for this start state, got {len(services)}")
    for extra in services[count : count + start]:  # customers present at time 0, in queue order
        heapq.heappush(departures, heapq.heappop(departures) + extra)
    waits = np.empty(count)
    for i in range(count):
        free = heapq.heappop(departures)
        begin = max(arrivals[i], free)
        waits[i] = begin - arrivals[i]
        heapq.heappush(departures, begin + services[i])
    return waits, services[:count].copy()
