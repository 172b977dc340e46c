"""The page's true clicks: each model judged by the pages the device would show, in the synthetic world.

    world = build_world(run.model, data, users=500, world_seed=0)        # fresh users (cloud.simulation)
    row = page_clicks(world, ModelPages(run.model, K, shares), K, shares, seed=0)
    row["clicks_per_page"], row["js@5"]                                  # true expected clicks, exposure skew
    rows = reference_pages(world, K, shares, seed=0)                     # upstream, random, oracle
    run_pages_of("grid/runs/dir-device-s0", "data", users=500)           # the same, kept in RUN/pages.json
    run_pages_of("grid/runs/dir-device-s0", "data", users=500, block=1)  # 500 other users (a confirmation)
    ModelPages(run.model, K, shares, merge="quota")                      # the runtime's quota merge instead

A model's page is its final order on the device: `model.device_decoder` applied to its outputs (the "score"
merge, SVR's beam search, NAR4Rec's contrastive decoding, HRL's slot-by-slot policy: the code of
device_runtime.decoding). A model whose decoder is the merge can be judged under another `merge`
(PAGE_MERGES): the runtime's `quota` or `controller` mode (device_runtime.merge; the controller pays each
user's exposure debt over their pages), or `beam_search`, SVR's decoder (default options) on the model's own
scores, an experiment the runtime runs only for bundles that name that decoder. The pages are shown to fresh
users of the synthetic world in the closed loop of cloud.simulation (device path: fresh history, no upload
delay): each request's clicks are drawn from the true click model (cloud.data.synth.click_probability) and
enter that user's history for the next request. Every arm sees the same users, candidates and uniforms
(cloud.simulation.streams.Draws with `seed`), so arms differ only by their pages. The score is the true
expected clicks per page (the sum of the shown items' click probabilities), free of the logging policy: a
model that only re-reads the logged order shows the upstream page and scores exactly what the upstream
reference scores.

References: `upstream` (the generator's order), `random` (a uniformly random order of the real candidates, its
own stream), `oracle` (greedy page under the true model: position by position, the candidate with the highest
true click probability given the items placed above it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cloud.data.synth import SOURCES
from cloud.evaluation.metrics import js_divergence
from cloud.simulation.engine import PathResult, PathTiming, model_inputs, score_order, simulate_path, upstream_order
from cloud.simulation.streams import Draws
from cloud.simulation.world import World
from cloud.training.runs import atomic_write_json

RANDOM_STREAM = 104729  # seeds the random reference's own generator, apart from the Draws streams
PAGE_MERGES = ("score", "quota", "controller", "beam_search")
"""How a model whose device decoder is the merge may build its page (`score`: the runtime's default)."""


class ModelPages:
    """A trained model's pages: its network on the layout inputs, then its own device decoder, or for a
    model whose decoder is the merge, the merge `merge` (PAGE_MERGES)."""

    def __init__(self, model, K: int, target_shares: Sequence[float], batch: int = 1024, merge: str = "score"):
        import torch

        from shared_schema.manifest import decoder_settings

        check_page_merge(merge, model.name, model.device_decoder)
        self.torch = torch
        self.K, self.shares, self.batch, self.merge = K, list(target_shares), batch, merge
        self.names = model.layout.input_names()
        self.network = model.export_module().eval()
        self.device_model = model.device_model.eval()
        self.decoder = "beam_search" if merge == "beam_search" else model.device_decoder
        self.options = decoder_settings(self.decoder, {} if merge == "beam_search" else model.device_decoder_options)
        self.shown: np.ndarray | None = None  # [users, m] exposures so far per user (the controller's state)

    def orders(self, world: World, j: int, hist_items: np.ndarray, users: np.ndarray) -> np.ndarray:
        """Logged slots [len(users), M] of the pages shown to `users` at request j."""
        inputs = model_inputs(world, j, hist_items, users)
        chunks = [
            self._run(self.network, {k: v[start : start + self.batch] for k, v in inputs.items()})
            for start in range(0, len(users), self.batch)
        ]
        outputs = [np.concatenate(parts) for parts in zip(*chunks, strict=True)]
        cand_slot = world.cand_slot[users, j]
        if self.decoder == "merge" and self.merge == "score":
            return score_order(outputs[0], cand_slot)
        if self.decoder == "merge":
            return self._merged(world, outputs[0], inputs, cand_slot, users)
        from device_runtime.decoding import decode_request

        order = np.full((len(users), world.slot_item.shape[2]), -1, np.int64)
        for row in range(len(users)):
            request = {k: v[row : row + 1] for k, v in inputs.items()}
            picked = decode_request(
                self.decoder,
                self.options,
                [o[row : row + 1] for o in outputs],
                request,
                self.K,
                self.shares,
                run=lambda x: self._run(self.device_model, x)[0],
            )
            order[row, : len(picked)] = [cand_slot[row, s, i] for s, i in picked]
        return order

    def _merged(self, world: World, scores: np.ndarray, inputs: dict, cand_slot: np.ndarray, users: np.ndarray):
        """Logged slots of the runtime's quota or controller merge, each page's top-K added to its user's
        exposures (the controller's shown counts)."""
        from device_runtime.merge import merge_lists

        m = scores.shape[1]
        if self.shown is None:
            self.shown = np.zeros((world.users, m))
        order = np.full((len(users), world.slot_item.shape[2]), -1, np.int64)
        for row, user in enumerate(users):
            real = [np.flatnonzero(inputs[f"cand_mask_{s}"][row] > 0) for s in range(m)]
            shown = self.shown[user].tolist() if self.merge == "controller" else None
            per_source = [scores[row, s, real[s]].tolist() for s in range(m)]
            picked = merge_lists(per_source, self.shares, self.K, self.merge, shown)
            order[row, : len(picked)] = [cand_slot[row, s, real[s][i]] for s, i in picked]
            for s, _ in picked[: self.K]:
                self.shown[user, s] += 1
        return order

    def _run(self, module, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        tensors = [self.torch.from_numpy(np.ascontiguousarray(inputs[n], np.float32)) for n in self.names]
        with self.torch.no_grad():
            out = module(*tensors)
        return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


class UpstreamPages:
    """The generator's logged order."""

    def orders(self, world: World, j: int, hist_items: np.ndarray, users: np.ndarray) -> np.ndarray:
        return upstream_order(world.slot_item[users, j])


class RandomPages:
    """A uniformly random order of each request's real candidates (seeded; the same for every history)."""

    def __init__(self, seed: int):
        self.seed = seed

    def orders(self, world: World, j: int, hist_items: np.ndarray, users: np.ndarray) -> np.ndarray:
        keys = np.random.default_rng([self.seed, RANDOM_STREAM, j]).random(world.slot_item.shape[::2])[users]
        slots = world.slot_item[users, j]
        order = np.argsort(np.where(slots >= 0, keys, np.inf), axis=1, kind="stable")
        return np.where(np.take_along_axis(slots, order, axis=1) >= 0, order, -1)


class OraclePages:
    """Greedy page under the true click model: each position takes the unplaced candidate with the highest
    true click probability given the items above it (examination is the same for every candidate of a
    position, so it picks the highest sigmoid(relevance - redundancy - fatigue) of
    cloud.data.synth.click_probability)."""

    def orders(self, world: World, j: int, hist_items: np.ndarray, users: np.ndarray) -> np.ndarray:
        cfg = world.synth
        items = world.slot_item[users, j]
        left = items >= 0
        latent = world.latent[items.clip(0)]
        source = world.item_source[items.clip(0)]
        bias = np.array([s.bias for s in SOURCES])[source]
        relevance = (
            bias
            + cfg.affinity * np.einsum("qk,qik->qi", world.interest[users, j], latent)
            + np.log(len(SOURCES) * np.take_along_axis(world.pref[users], source, axis=1))
        )
        similarity = np.einsum("qik,qjk->qij", latent, latent)
        redundancy = np.zeros(items.shape)  # max(0, max similarity to a placed item)
        rows = np.arange(len(users))
        order = np.full(items.shape, -1, np.int64)
        placed_source = np.full(items.shape, -1, np.int64)
        for p in range(items.shape[1]):
            fatigue = sum((source == placed_source[:, [p - lag]]) for lag in (1, 2, 3) if p - lag >= 0)
            logit = np.where(left, relevance - cfg.redundancy * redundancy - cfg.fatigue * fatigue, -np.inf)
            pick = logit.argmax(axis=1)
            live = left[rows, pick]
            order[live, p] = pick[live]
            placed_source[live, p] = source[live, pick[live]]
            left[rows[live], pick[live]] = False
            redundancy[live] = np.maximum(redundancy[live], similarity[rows[live], pick[live]])
        return order


def device_path(world: World) -> PathTiming:
    """The device's timing: history read at the request, fresh (no upload delay), page shown at once."""
    shape = world.request_ts.shape
    return PathTiming(
        name="device",
        read_at=world.request_ts,
        response_ms=np.zeros(shape),
        upload_delay_s=0.0,
        fallback=np.zeros(shape, bool),
    )


def run_pages(world: World, pages, K: int, seed: int) -> PathResult:
    """The closed loop of every simulated request with `pages` building each page."""
    draws = Draws.make(seed, world.users, world.requests, world.slot_item.shape[2])
    return simulate_path(world, pages, device_path(world), draws.click_u, K)


def page_summary(world: World, result: PathResult, K: int, target_shares: Sequence[float]) -> dict[str, float]:
    """Expected clicks per page (all positions and top K), drawn clicks, and JS@K of the shown top-K sources."""
    top = result.order[..., :K]
    item = np.where(top >= 0, np.take_along_axis(world.slot_item, top.clip(0), axis=2), -1)
    counts = np.bincount(world.item_source[item[item >= 0]], minlength=len(world.source_names)).astype(np.float64)
    per_user = result.expected.mean(axis=1)
    half = 1.96 * per_user.std(ddof=1) / np.sqrt(len(per_user)) if len(per_user) > 1 else float("nan")
    return {
        "pages": float(result.expected.size),
        "clicks_per_page": float(result.expected.mean()),
        "clicks_per_page_ci": float(half),  # 95% half-width, users as independent clusters
        f"clicks_top{K}_per_page": float(result.expected_top.mean()),
        "drawn_clicks_per_page": float(result.clicks.mean()),
        f"js@{K}": js_divergence(counts / max(counts.sum(), 1.0), np.asarray(target_shares, np.float64)),
    }


def page_clicks(world: World, pages, K: int, target_shares: Sequence[float], seed: int = 0) -> dict[str, float]:
    """page_summary of one arm."""
    return page_summary(world, run_pages(world, pages, K, seed), K, target_shares)


def reference_pages(world: World, K: int, target_shares: Sequence[float], seed: int = 0) -> dict[str, dict]:
    """page_clicks of the references: upstream order, random order, greedy oracle."""
    arms = {"upstream": UpstreamPages(), "random": RandomPages(seed), "oracle": OraclePages()}
    return {name: page_clicks(world, arm, K, target_shares, seed) for name, arm in arms.items()}


PAGES_FILE = "pages.json"
REFERENCES_FILE = "pages-references.json"


def check_page_merge(merge: str, model: str, decoder: str) -> None:
    """ValueError naming --page-merge unless `merge` is in PAGE_MERGES and applies to the model's decoder."""
    if merge not in PAGE_MERGES:
        raise ValueError(f"--page-merge: expected one of {', '.join(PAGE_MERGES)}, got {merge!r}")
    if merge != "score" and decoder != "merge":
        raise ValueError(
            f"--page-merge {merge}: {model} builds its page with its own decoder ({decoder}); "
            "score it with --page-merge score (its decoder) or leave it out"
        )


SETTING_DEFAULTS = {"merge": "score", "block": 0}
"""What a pages file written before these settings existed was scored with."""


def saved_setting(saved: Mapping, keys: Sequence[str]) -> dict:
    """The `keys` of a saved pages setting, SETTING_DEFAULTS filled in for those an older file lacks."""
    return {k: saved.get(k, SETTING_DEFAULTS.get(k)) for k in keys}


def run_pages_of(
    run_dir: str | Path, data_dir: str | Path, users: int, world_seed: int = 0, merge: str = "score", block: int = 0
) -> dict:
    """page_clicks of a finished run with its pages built by `merge` (ModelPages), shown to the `block`-th set
    of `users` fresh users (0: the first; 1, 2, ...: disjoint later sets, e.g. to confirm a result found on
    set 0), kept in RUN/pages.json (recomputed when any of these settings differ)."""
    from cloud.data.prepared import PreparedData
    from cloud.simulation.world import build_world
    from cloud.training.runs import load_run

    path = Path(run_dir) / PAGES_FILE
    setting = {"users": users, "world_seed": world_seed, "merge": merge, "block": block}
    if path.exists():
        saved = json.loads(path.read_text())
        if saved_setting(saved, list(setting)) == setting:
            return saved
    run = load_run(run_dir)
    K, shares = int(run.config["K"]), run.config["target_shares"]
    world = build_world(run.model, PreparedData(data_dir), users, world_seed, skip=block * users)
    pages = ModelPages(run.model, K, shares, merge=merge)
    row = {**setting, **page_clicks(world, pages, K, shares, world_seed)}
    atomic_write_json(path, row)
    return row


def reference_pages_of(grid: str | Path, data_dir: str | Path, users: int, world_seed: int = 0, block: int = 0) -> dict:
    """reference_pages for a grid's users (run_pages_of's `block`), kept in GRID/pages-references.json."""
    from cloud.data.prepared import PreparedData
    from cloud.models import build_model
    from cloud.simulation.world import build_world

    path = Path(grid) / REFERENCES_FILE
    setting = {"users": users, "world_seed": world_seed, "block": block}
    if path.exists():
        saved = json.loads(path.read_text())
        if saved_setting(saved.get("setting", {}), list(setting)) == setting:
            return saved["arms"]
    data = PreparedData(data_dir)
    # the references read no vectors
    world = build_world(build_model("dir", data.spec), data, users, world_seed, skip=block * users)
    arms = reference_pages(world, data.spec.K, data.spec.target_shares, world_seed)
    atomic_write_json(path, {"setting": setting, "arms": arms})
    return arms
