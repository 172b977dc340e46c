"""The simulated world: fresh users of the synthetic world a run was trained on, with their requests.

    world = build_world(run.model, PreparedData(run.config["data"]), users=1000, world_seed=0)
    world.slot_item[u, j]      # global item rows of user u's j-th simulated request, upstream order, -1 = empty
    world.interest[u, j]       # the user's true interest at that request (cloud/data/synth.py)
    world.vectors(s, rows)     # the run's item-encoder vectors of global item rows of source s

The users are drawn by `cloud.data.synth.generate` with the logs' seed, so they share the catalog the
model was trained on; they are the users after the training population (index >= DATA's num_users),
never seen in training. Their first `warmup` requests only leave clicks (the starting history); every
later request is simulated: its candidates are the generator's, its order and clicks are the paths'.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cloud.data.prepared import PreparedData
from cloud.data.synth import BASE_TS, SynthConfig, generate


@dataclass(frozen=True)
class World:
    synth: SynthConfig  # click-model parameters for cloud.data.synth.click_probability
    source_names: list[str]
    n: int
    t: int
    request_ts: np.ndarray  # f64 [U, R] seconds since BASE_TS of the simulated requests
    slot_item: np.ndarray  # int64 [U, R, M] global item rows in the upstream (logged) order, -1 = empty
    slot_logged_click: np.ndarray  # bool [U, R, M] the generator's own click on its logged order
    cand_slot: np.ndarray  # int64 [U, R, m, n] slot of the i-th candidate of source s, -1 = padding
    interest: np.ndarray  # f32 [U, R, k]
    pref: np.ndarray  # f32 [U, m]
    warm_user: np.ndarray  # int64 [W] starting history: user, click time, item row (time order)
    warm_ts: np.ndarray
    warm_item: np.ndarray
    latent: np.ndarray  # f32 [N, k] item latents
    item_source: np.ndarray  # int64 [N]
    item_local: np.ndarray  # int64 [N] row within its source's vector table
    item_ids: np.ndarray  # str [N]
    source_vectors: list[np.ndarray]  # per source f32 [N_s, d_s]

    @property
    def users(self) -> int:
        return self.slot_item.shape[0]

    @property
    def requests(self) -> int:
        return self.slot_item.shape[1]

    def vectors(self, s: int, rows: np.ndarray) -> np.ndarray:
        """f32 [..., d_s] vectors of global item rows of source s; zeros where a row is -1 (padding)."""
        table = self.source_vectors[s]
        out = table[self.item_local[rows.clip(0)]]
        out[rows < 0] = 0.0
        return out

    def subset(self, users: np.ndarray) -> World:
        """The same world restricted to some users (their starting history included)."""
        users = np.asarray(users)
        keep = np.isin(self.warm_user, users)
        remap = np.full(self.users, -1)
        remap[users] = np.arange(len(users))
        return replace(
            self,
            request_ts=self.request_ts[users],
            slot_item=self.slot_item[users],
            slot_logged_click=self.slot_logged_click[users],
            cand_slot=self.cand_slot[users],
            interest=self.interest[users],
            pref=self.pref[users],
            warm_user=remap[self.warm_user[keep]],
            warm_ts=self.warm_ts[keep],
            warm_item=self.warm_item[keep],
        )


def build_world(model, data: PreparedData, users: int, world_seed: int = 0, skip: int = 0) -> World:
    """Draw `users` fresh users of the synthetic world behind `data` and encode its items with `model`; with
    `skip`, the users after the first `skip` fresh ones (a disjoint set of users for the same world)."""
    spec = data.spec
    base = SynthConfig(seed=world_seed)
    first = data.num_users + skip
    config = replace(base, users=first + users, lists_per_user=base.requests_per_user - base.warmup)
    tables = generate(config)
    catalog = tables.items
    names = list(spec.source_names)
    if sorted(names) != sorted(catalog["source"].unique()):
        raise ValueError(
            f"the run's sources {names} are not the synthetic world's "
            f"{sorted(catalog['source'].unique())}: `simulate` needs a run trained on `dir-cloud synth` logs"
        )
    item_source = catalog["source"].map({name: s for s, name in enumerate(names)}).to_numpy(np.int64)
    item_local, vectors = _encode_catalog(model, data, catalog, item_source, world_seed)

    truth, events = tables.truth, tables.events
    R, W = config.requests_per_user, config.warmup
    rows = _item_rows(catalog, events["item_id"])
    mine = truth.event_user >= first
    logged = mine & (events["list_id"].to_numpy() != "")
    M = spec.m * spec.n
    slot_item = np.full((users, R - W, M), -1, np.int64)
    clicked = np.zeros((users, R - W, M), bool)
    u, j = truth.event_user[logged] - first, truth.event_request[logged] - W
    pos = events["position"].to_numpy()[logged].astype(np.int64)
    slot_item[u, j, pos] = rows[logged]
    clicked[u, j, pos] = events["label"].to_numpy()[logged] == 1
    warm = mine & ~logged  # unlogged requests leave only clicks: the first `warmup` ones here
    return World(
        synth=config,
        source_names=names,
        n=spec.n,
        t=spec.t,
        request_ts=(truth.request_ts[first:, W:] - BASE_TS).astype(np.float64),
        slot_item=slot_item,
        slot_logged_click=clicked,
        cand_slot=_candidate_slots(slot_item, item_source, spec.m, spec.n),
        interest=truth.interest[first:, W:],
        pref=truth.source_pref[first:],
        warm_user=truth.event_user[warm] - first,
        warm_ts=events["timestamp"].to_numpy()[warm].astype(np.float64) - BASE_TS,
        warm_item=rows[warm],
        latent=truth.item_latent,
        item_source=item_source,
        item_local=item_local,
        item_ids=catalog["item_id"].to_numpy(),
        source_vectors=vectors,
    )


def _item_rows(catalog, item_ids) -> np.ndarray:
    return np.asarray(catalog.set_index("item_id").index.get_indexer(item_ids), dtype=np.int64)


def _candidate_slots(slot_item: np.ndarray, item_source: np.ndarray, m: int, n: int) -> np.ndarray:
    """cand_slot[u, j, s, i]: the logged slot of source s's i-th candidate (upstream order), -1 = none."""
    source = np.where(slot_item >= 0, item_source[slot_item.clip(0)], -1)
    out = np.full(slot_item.shape[:2] + (m, n), -1, np.int64)
    for s in range(m):
        mine = source == s
        rank = np.cumsum(mine, axis=-1) - 1
        u, j, slot = np.nonzero(mine & (rank < n))
        out[u, j, s, rank[u, j, slot]] = slot
    return out


def _encode_catalog(model, data: PreparedData, catalog, item_source: np.ndarray, world_seed: int):
    """Per item its row in its source's vector table, and per source the item-encoder vectors (catalog order)."""
    from cloud.service.slates import encode_items

    item_local = np.zeros(len(catalog), np.int64)
    vectors = []
    for s, name in enumerate(data.spec.source_names):
        mine = np.flatnonzero(item_source == s)
        table = data.items(name)
        lookup = {str(item_id): i for i, item_id in enumerate(table.ids)}
        ids = catalog["item_id"].to_numpy()[mine]
        data_rows = np.array([lookup.get(str(i), -1) for i in ids])
        columns = [c for field in data.spec.source(name).dense for c in field.columns()]
        expected = catalog.iloc[mine][columns].to_numpy(np.float32).reshape(len(mine), -1)
        if (data_rows < 0).any() or not np.allclose(np.asarray(table.dense)[data_rows.clip(0)], expected, atol=1e-4):
            raise ValueError(
                f"the items of source {name!r} in {data.path} are not those of the synthetic world with seed "
                f"{world_seed}: pass --world-seed with the --seed given to `dir-cloud synth` for the run's logs"
            )
        item_local[mine] = np.arange(len(mine))
        vectors.append(encode_items(model, data, name, data_rows))
    return item_local, vectors
