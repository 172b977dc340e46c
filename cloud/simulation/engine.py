"""One path (cloud or device) of the simulation: requests in time order, reranked, shown, clicked.

    result = simulate_path(world, ScoreCache(scorer), timing, draws.click_u, K=5)
    result.expected.mean()       # true expected clicks per page (cloud.data.synth.click_probability)

For each user the events are: request sent (world.request_ts) -> history read at `timing.read_at`
(clicks visible after the path's upload delay) -> model scores -> page shown after the response time
(or the upstream order when the path timed out) -> each item clicked iff its common uniform is below
its true click probability at its shown position -> the click is recorded at shown + 1 + position
seconds (as in the generator). Users share nothing but the cloud queue, whose waits do not depend on
what is shown, so the j-th requests of all users are processed together as one batch: the outcome is
the same as popping the events one by one from a global time-ordered queue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cloud.data.synth import click_probability
from cloud.simulation.history import ClickLog
from cloud.simulation.world import World

Scorer = Callable[[dict[str, np.ndarray]], np.ndarray]
"""Batched device-model call: layout inputs with batch B (shared_schema/layout.py names) -> scores [B, m, n]."""


@dataclass(frozen=True)
class PathTiming:
    """When each request of a path reads its history and how long its page takes ([U, R] arrays)."""

    name: str
    read_at: np.ndarray  # seconds (same clock as world.request_ts)
    response_ms: np.ndarray  # request sent -> page shown
    upload_delay_s: float  # a click becomes visible to this path's model after this delay
    fallback: np.ndarray  # bool: the page shows the upstream order (cloud answer too late)
    wait_ms: np.ndarray | None = None  # cloud queueing delay, for the report


@dataclass(frozen=True)
class PathResult:
    timing: PathTiming
    staleness_s: np.ndarray  # f64 [U, R] read_at - newest visible click (NaN: no visible click)
    unseen: np.ndarray  # int64 [U, R] clicks made but not yet visible to the model
    expected: np.ndarray  # f64 [U, R] true expected clicks on the page
    expected_top: np.ndarray  # f64 [U, R] ... in the top K positions (utility@K)
    clicks: np.ndarray  # int64 [U, R] drawn clicks
    order: np.ndarray  # int64 [U, R, M] logged slot shown at each position, -1 = empty


class ScoreCache:
    """Scores by (request, user, history seen): paths and sweep points that show a user the same history
    reuse them, so a sweep costs model calls only where histories differ (the model is deterministic)."""

    def __init__(self, scorer: Scorer):
        self.scorer = scorer
        self.memo: dict[tuple[int, int, bytes], np.ndarray] = {}
        self.calls = 0  # rows actually scored

    def scores(self, world: World, j: int, hist_items: np.ndarray, users: np.ndarray) -> np.ndarray:
        """Scores [len(users), m, n] of request j for `users` given their history items [U, m, t]."""
        keys = [(j, int(u), hist_items[u].tobytes()) for u in users]
        missing = np.array([i for i, key in enumerate(keys) if key not in self.memo], np.int64)
        if len(missing):
            fresh = self.scorer(model_inputs(world, j, hist_items, users[missing]))
            self.calls += len(missing)
            for i, row in zip(missing, fresh):
                self.memo[keys[i]] = row
        return np.stack([self.memo[key] for key in keys]) if keys else np.zeros((0, 0, 0), np.float32)

    def orders(self, world: World, j: int, hist_items: np.ndarray, users: np.ndarray) -> np.ndarray:
        """Logged slots [len(users), M] of the page by descending score (the device's "score" merge)."""
        return score_order(self.scores(world, j, hist_items, users), world.cand_slot[users, j])


def simulate_path(world: World, cache: ScoreCache, timing: PathTiming, click_u: np.ndarray, K: int) -> PathResult:
    """Run every simulated request of `world` through one path.

    `cache` builds the pages: anything with ScoreCache's `orders(world, j, hist_items, users)` (e.g. a
    model with its own list decoder, cloud/evaluation/page_clicks.py)."""
    U, R, M = world.slot_item.shape
    log = ClickLog(
        U, len(world.source_names), world.warm_user, world.warm_ts, world.warm_item, world.item_source[world.warm_item]
    )
    out = {key: np.zeros((U, R)) for key in ("staleness_s", "expected", "expected_top")}
    unseen, clicks, orders = np.zeros((U, R), np.int64), np.zeros((U, R), np.int64), np.full((U, R, M), -1, np.int64)
    users = np.arange(U)
    for j in range(R):
        view = log.view(timing.read_at[:, j], timing.upload_delay_s, world.t)
        order = upstream_order(world.slot_item[:, j])
        model = np.flatnonzero(~timing.fallback[:, j])
        if len(model):
            order[model] = cache.orders(world, j, view.items, model)
        item = np.where(order >= 0, np.take_along_axis(world.slot_item[:, j], order.clip(0), axis=1), -1)
        shown = item >= 0
        prob = click_probability(
            world.synth,
            world.latent[item.clip(0)],
            world.item_source[item.clip(0)],
            shown,
            world.interest[:, j],
            world.pref,
        )
        click = shown & (np.take_along_axis(click_u[:, j], order.clip(0), axis=1) < prob)
        out["staleness_s"][:, j] = timing.read_at[:, j] - view.newest_ts
        out["expected"][:, j], out["expected_top"][:, j] = prob.sum(axis=1), prob[:, :K].sum(axis=1)
        unseen[:, j], clicks[:, j], orders[:, j] = view.unseen, click.sum(axis=1), order
        u, pos = np.nonzero(click)
        shown_at = world.request_ts[:, j] + timing.response_ms[:, j] / 1e3
        log.add(users[u], shown_at[u] + 1.0 + pos, item[u, pos], world.item_source[item[u, pos]])
    return PathResult(timing=timing, unseen=unseen, clicks=clicks, order=orders, **out)


def model_inputs(world: World, j: int, hist_items: np.ndarray, rows: np.ndarray) -> dict:
    """Batched layout inputs (cand_s, cand_mask_s, hist_s, hist_mask_s) of request j for users `rows`."""
    slots = world.cand_slot[rows, j]
    B = slots.shape[0]
    cand_item = np.take_along_axis(world.slot_item[rows, j], slots.reshape(B, -1).clip(0), axis=1)
    cand_item = np.where(slots >= 0, cand_item.reshape(slots.shape), -1)
    inputs = {}
    hist = hist_items[rows]
    for s in range(len(world.source_names)):
        inputs[f"cand_{s}"] = world.vectors(s, cand_item[:, s])
        inputs[f"cand_mask_{s}"] = (cand_item[:, s] >= 0).astype(np.float32)
        inputs[f"hist_{s}"] = world.vectors(s, hist[:, s])
        inputs[f"hist_mask_{s}"] = (hist[:, s] >= 0).astype(np.float32)
    return inputs


def score_order(scores: np.ndarray, cand_slot: np.ndarray) -> np.ndarray:
    """Logged slots by descending score, ties to the lower (source, item): device_runtime.merge's "score" mode."""
    B = cand_slot.shape[0]
    slot = cand_slot.reshape(B, -1)
    flat = np.where(slot >= 0, np.asarray(scores, np.float64).reshape(B, -1), -np.inf)
    return np.take_along_axis(slot, np.argsort(-flat, axis=1, kind="stable"), axis=1)


def upstream_order(slot_item: np.ndarray) -> np.ndarray:
    """The generator's logged order (real items come first): slot j at position j, -1 where empty."""
    return np.where(slot_item >= 0, np.arange(slot_item.shape[1]), -1)
