"""Measure the real device runtime: replay simulated users through `device_runtime.Reranker`.

    measured = measure_device(world, "bundle/", torch_scorer(run.model), run.embedding_version, users=16)
    measured.samples_ms          # wall time of every Reranker.rerank call (the device path's latency law)
    measured.max_score_diff      # runtime scores vs the simulation's scorer on the same inputs

Each replayed user gets a fresh SQLite history store (as on a new phone) filled with the user's
starting history; then each request's slate (the world's candidates with the run's item vectors) goes
through `rerank` (validation, vector cache, history read, assembly, backend, merge, exposure logging)
and the generator's own clicks on that request are recorded afterwards, so later requests read a
growing history. The same histories are scored by the simulation's scorer to check the bundle
computes what the simulation assumes.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloud.data.synth import BASE_TS
from cloud.simulation.engine import Scorer, model_inputs, score_order
from cloud.simulation.history import ClickLog
from cloud.simulation.world import World
from shared_schema import BehaviorEvent, CandidateItem, CandidateSlate, SourceCandidates


@dataclass(frozen=True)
class DeviceMeasurement:
    samples_ms: np.ndarray  # one per rerank call, in call order
    stage_ms: dict[str, float]  # mean per stage of RerankResult.timings_ms
    backend: str
    delegate: str
    attempts: list[dict]
    same_order: int  # requests whose runtime order equals the scorer's order
    max_score_diff: float  # max |runtime score - scorer score| over real candidates


def measure_device(
    world: World,
    bundle: str | Path,
    scorer: Scorer,
    embedding_version: str,
    users: int = 16,
    backend: str = "auto",
    threads: int = 1,
) -> DeviceMeasurement:
    """Time `Reranker.rerank` on the first `users` users' requests and compare its scores with `scorer`."""
    from device_runtime.reranker import Reranker

    sub = world.subset(np.arange(min(users, world.users)))
    reference = _reference_scores(sub, scorer)
    samples: list[float] = []
    stages: dict[str, float] = {}
    same, diff = 0, 0.0
    with tempfile.TemporaryDirectory(prefix="dir-sim-device-") as tmp:
        for u in range(sub.users):
            # the score merge: the simulated device path sorts by score, and its orders are compared with it
            with Reranker.open(
                bundle, Path(tmp) / f"user{u}.db", backend=backend, threads=threads, merge="score"
            ) as reranker:
                if reranker.manifest.embedding_version != embedding_version:
                    raise ValueError(
                        f"bundle {bundle} has embedding version {reranker.manifest.embedding_version!r} but the "
                        f"run's is {embedding_version!r}: export the bundle from this run (`dir-cloud export`)"
                    )
                mine = sub.warm_user == u
                _record(reranker, sub, sub.warm_item[mine], sub.warm_ts[mine])
                for j in range(sub.requests):
                    slate = _slate(sub, u, j, embedding_version)
                    start = time.perf_counter()
                    result = reranker.rerank(slate)
                    samples.append((time.perf_counter() - start) * 1e3)
                    for name, ms in result.timings_ms.items():
                        stages[name] = stages.get(name, 0.0) + ms
                    got, order = _runtime_scores(sub, u, j, result)
                    want = reference[u, j]
                    real = sub.cand_slot[u, j] >= 0
                    diff = max(diff, float(np.abs(got[real] - want[real]).max()))
                    same += order == _reference_order(sub, u, j, want)
                    clicked = np.flatnonzero(sub.slot_logged_click[u, j])
                    _record(reranker, sub, sub.slot_item[u, j, clicked], np.full(len(clicked), sub.request_ts[u, j]))
                info = reranker.info()
    count = len(samples)
    return DeviceMeasurement(
        samples_ms=np.array(samples),
        stage_ms={k: v / count for k, v in stages.items()},
        backend=info["backend"],
        delegate=info["delegate"],
        attempts=info["attempts"],
        same_order=int(same),
        max_score_diff=diff,
    )


def _reference_scores(world: World, scorer: Scorer) -> np.ndarray:
    """Scorer output [U, R, m, n] on the histories the replay builds (starting history + logged clicks)."""
    log = ClickLog(
        world.users,
        len(world.source_names),
        world.warm_user,
        world.warm_ts,
        world.warm_item,
        world.item_source[world.warm_item],
    )
    users = np.arange(world.users)
    out = []
    for j in range(world.requests):
        view = log.view(world.request_ts[:, j], 0.0, world.t)
        out.append(scorer(model_inputs(world, j, view.items, users)))
        u, slot = np.nonzero(world.slot_logged_click[:, j])
        item = world.slot_item[u, j, slot]
        log.add(u, world.request_ts[u, j], item, world.item_source[item])
    return np.stack(out, axis=1)


def _record(reranker, world: World, items: np.ndarray, ts: np.ndarray) -> None:
    for item, when in zip(items, ts):
        s = int(world.item_source[item])
        reranker.record(
            BehaviorEvent(
                item_id=str(world.item_ids[item]),
                source=world.source_names[s],
                action="click",
                ts=BASE_TS + float(when),
                vector=world.vectors(s, np.array([item]))[0].tolist(),
            )
        )


def _slate(world: World, u: int, j: int, embedding_version: str) -> CandidateSlate:
    sources = []
    for s, name in enumerate(world.source_names):
        slots = world.cand_slot[u, j, s]
        items = world.slot_item[u, j, slots[slots >= 0]]
        vectors = world.vectors(s, items)
        sources.append(
            SourceCandidates(
                source=name,
                items=[
                    CandidateItem(item_id=str(world.item_ids[i]), vector=v.tolist()) for i, v in zip(items, vectors)
                ],
            )
        )
    return CandidateSlate(
        user_id=f"sim-user-{u}", request_id=f"sim-{u}-{j}", embedding_version=embedding_version, sources=sources
    )


def _runtime_scores(world: World, u: int, j: int, result) -> tuple[np.ndarray, list[str]]:
    """The runtime's scores laid out [m, n] like the scorer's, and its item order."""
    where = {}
    for s in range(len(world.source_names)):
        for i, slot in enumerate(world.cand_slot[u, j, s]):
            if slot >= 0:
                where[str(world.item_ids[world.slot_item[u, j, slot]])] = (s, i)
    scores = np.zeros(world.cand_slot.shape[2:], np.float64)
    for ranked in result.items:
        scores[where[ranked.item_id]] = ranked.score
    return scores, [ranked.item_id for ranked in result.items]


def _reference_order(world: World, u: int, j: int, scores: np.ndarray) -> list[str]:
    order = score_order(scores[None], world.cand_slot[u, j][None])[0]
    return [str(world.item_ids[world.slot_item[u, j, slot]]) for slot in order if slot >= 0]
