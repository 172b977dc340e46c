"""Synthetic multi-source feed logs with a known click model (the world model: docs/synthetic.md).

    tables = generate(SynthConfig(seed=0, users=2000))
    write_logs(tables, "logs")          # dataset.toml, items.csv, events.csv, users.csv
    tables.truth.interest[u, r]         # user u's latent interest at request r (not written to LOGS)
    stream_parquet_logs(SynthConfig(users=2_000_000), "big")   # .parquet tables, bounded memory

Everything is drawn from numpy generators seeded by (seed, purpose, chunk): the same config gives
identical tables, and users are generated in fixed-size chunks so memory stays bounded at any scale.
stream_parquet_logs writes the tables of `generate` without holding them: users are generated a few
blocks at a time into Parquet parts (kept beside `out` so an interrupted run resumes), and DuckDB
sorts the parts into events.parquet within a memory limit.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cloud.data.logs_writer import write_logs_folder
from shared_schema.specs import CategoricalField, DatasetSpec, DenseField, SourceSpec

BASE_TS = 1_700_000_000
CHUNK_USERS = 512
LIST_N = 10  # candidates per source (dataset n)
POOL = 40  # items the upstream ranker of a source looks at per request
PROTOTYPES = 12  # global topics shared by all sources


@dataclass(frozen=True)
class SourceDef:
    """A synthetic source: categorical levels (name, vocab, latent offset scale), one dense field."""

    name: str
    share: float
    levels: tuple[tuple[str, int, float], ...]
    dense: tuple[str, int]
    items: int
    shown: tuple[int, int]  # candidates per request, inclusive range
    item_noise: float
    bias: float  # click logit intercept


SOURCES = (
    SourceDef("video", 0.5, (("category", 24, 0.5), ("creator", 600, 0.5)), ("content", 8), 4000, (3, 10), 0.25, -0.8),
    SourceDef("article", 0.3, (("topic", 16, 0.5),), ("text", 4), 2500, (1, 8), 0.45, -1.0),
    SourceDef("ad", 0.2, (("advertiser", 80, 0.5), ("campaign", 400, 0.5)), ("creative", 2), 800, (0, 4), 0.2, -1.5),
)


@dataclass(frozen=True)
class SynthConfig:
    """World and log size; defaults give 3,000 users and ~470k events (docs/synthetic.md)."""

    seed: int = 0
    users: int = 3000
    requests_per_user: int = 16
    lists_per_user: int = 12  # requests logged as full lists; the others leave only their clicks
    warmup: int = 4  # first requests of a user are never logged (they build history)
    requests_per_session: int = 4
    days: float = 28.0
    latent_dim: int = 8
    drift: float = 0.8  # AR(1) coefficient of the interest drift per request
    drift_scale: float = 2.0  # typical norm of the drift (the long-term interest has norm 1)
    jump: float = 0.2  # chance that the drift restarts at a session start
    cold_fraction: float = 0.3
    affinity: float = 2.5  # weight of interest . item latent in the click logit
    redundancy: float = 0.8  # penalty per unit of max similarity to an item shown above
    fatigue: float = 0.3  # penalty per same-source item among the 3 positions above
    name: str = "synth"

    def __post_init__(self) -> None:
        if self.users < 1 or self.requests_per_user < 1 or self.requests_per_session < 1:
            raise ValueError("users, requests_per_user and requests_per_session must be >= 1")
        if not 1 <= self.lists_per_user <= self.requests_per_user - self.warmup:
            raise ValueError(
                f"lists_per_user={self.lists_per_user} must be between 1 and requests_per_user - warmup "
                f"= {self.requests_per_user - self.warmup}; raise --requests-per-user or lower --lists-per-user"
            )
        if not (0 <= self.drift < 1 and 0 <= self.jump <= 1 and 0 <= self.cold_fraction <= 1):
            raise ValueError("drift must be in [0, 1), jump and cold_fraction in [0, 1]")

    @property
    def cold_until_request(self) -> int:
        """Cold-source users see no item of their cold source in requests before this index."""
        return self.requests_per_user // 2


@dataclass(frozen=True)
class Truth:
    """Latent quantities behind the logs (for tests, oracles and docs; never written to LOGS)."""

    item_latent: np.ndarray  # f32 [N_items, k], rows aligned with the items table
    long_term: np.ndarray  # f32 [U, k] stable part of the interest
    interest: np.ndarray  # f32 [U, R, k] interest at each request (long_term + drift)
    source_pref: np.ndarray  # f32 [U, m] Dirichlet source preference
    cold_source: np.ndarray  # int64 [U] source index, -1 = none
    request_ts: np.ndarray  # int64 [U, R]
    logged: np.ndarray  # bool [U, R]
    event_user: np.ndarray  # int64 per events row
    event_request: np.ndarray  # int64 per events row


@dataclass(frozen=True)
class SynthTables:
    spec: DatasetSpec
    items: pd.DataFrame
    events: pd.DataFrame
    users: pd.DataFrame
    truth: Truth
    config: SynthConfig


def dataset_spec(name: str = "synth") -> DatasetSpec:
    """The LOGS spec of the synthetic sources (n=10, t=20, K=5, lag=3, logged lists)."""
    return DatasetSpec(
        name=name,
        n=LIST_N,
        list_mode="logged",
        sources=tuple(
            SourceSpec(
                name=s.name,
                target_share=s.share,
                categorical=tuple(CategoricalField(name=f) for f, _, _ in s.levels),
                dense=(DenseField(name=s.dense[0], dim=s.dense[1]),),
            )
            for s in SOURCES
        ),
    )


def generate(config: SynthConfig = SynthConfig()) -> SynthTables:
    """Draw the catalog, the users and their logged lists; returns the LOGS tables and the truth."""
    catalog = _catalog(config, np.random.default_rng([config.seed, 0]))
    chunks = [
        _user_chunk(
            config,
            catalog,
            start,
            min(start + CHUNK_USERS, config.users),
            np.random.default_rng([config.seed, 1, start // CHUNK_USERS]),
        )
        for start in range(0, config.users, CHUNK_USERS)
    ]
    merged = {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}
    events, event_user, event_request = _events_table(config, catalog, merged)
    truth = Truth(
        item_latent=catalog["latent"],
        long_term=merged["long_term"],
        interest=merged["interest"],
        source_pref=merged["pref"],
        cold_source=merged["cold"],
        request_ts=merged["ts"],
        logged=merged["logged"],
        event_user=event_user,
        event_request=event_request,
    )
    return SynthTables(dataset_spec(config.name), catalog["table"], events, _users_table(config, merged), truth, config)


def write_logs(tables: SynthTables, out: str | Path, force: bool = False) -> Path:
    """Write `tables` as a LOGS folder at `out` (atomic; refuses a non-empty `out` unless `force`)."""
    settings = ", ".join(f"{k}={v}" for k, v in asdict(tables.config).items())
    return write_logs_folder(
        out,
        tables.spec,
        {"items.csv": tables.items, "events.csv": tables.events, "users.csv": tables.users},
        comments=[
            "Synthetic feed logs written by `dir-cloud synth` (world model: docs/synthetic.md).",
            f"config: {settings}",
        ],
        force=force,
    )


def stream_parquet_logs(
    config: SynthConfig,
    out: str | Path,
    force: bool = False,
    chunk_users: int = 8 * CHUNK_USERS,
    memory_limit: int = 2 << 30,
) -> dict[str, int]:
    """Write the LOGS folder of `generate(config)` as Parquet, `chunk_users` users at a time; returns counts.

    The same tables as `generate` for any `chunk_users` (a multiple of CHUNK_USERS), in the same order.
    """
    from cloud.data.logs_writer import check_out, dataset_toml
    from cloud.data.parquet import literal
    from cloud.data.partition import connect
    from shared_schema.files import replace_dir

    if chunk_users < 1 or chunk_users % CHUNK_USERS:
        raise ValueError(f"chunk_users must be a positive multiple of {CHUNK_USERS}, got {chunk_users}")
    out = check_out(out, force)
    parts = out.parent / f".{out.name}.parts"
    settings = json.dumps({**asdict(config), "chunk_users": chunk_users}, sort_keys=True)
    if parts.is_dir() and (parts / "config.json").read_text() != settings:
        shutil.rmtree(parts)  # parts of another config: start again
    parts.mkdir(parents=True, exist_ok=True)
    (parts / "config.json").write_text(settings)
    catalog = _catalog(config, np.random.default_rng([config.seed, 0]))
    for start in range(0, config.users, chunk_users):
        name = f"{start // chunk_users:08d}.parquet"
        if (parts / f"events-{name}").is_file():
            continue  # written by an interrupted run
        stop = min(start + chunk_users, config.users)
        blocks = [
            _user_chunk(
                config,
                catalog,
                b,
                min(b + CHUNK_USERS, stop),
                np.random.default_rng([config.seed, 1, b // CHUNK_USERS]),
            )
            for b in range(start, stop, CHUNK_USERS)
        ]
        merged = {key: np.concatenate([c[key] for c in blocks]) for key in blocks[0]}
        events, event_user, _ = _events_table(config, catalog, merged, start)
        _users_table(config, merged, start).assign(_user=np.arange(start, stop)).to_parquet(
            parts / f"users-{name}", index=False
        )
        events.assign(_user=event_user).to_parquet(parts / f"tmp-{name}", index=False)
        (parts / f"tmp-{name}").rename(parts / f"events-{name}")  # the marker of a finished part
    settings_line = ", ".join(f"{k}={v}" for k, v in asdict(config).items())
    with replace_dir(out, force) as tmp:
        (tmp / "dataset.toml").write_text(
            dataset_toml(
                dataset_spec(config.name),
                [
                    "Synthetic feed logs written by `dir-cloud synth` (world model: docs/synthetic.md).",
                    f"config: {settings_line}",
                ],
            ),
            encoding="utf-8",
        )
        catalog["table"].to_parquet(tmp / "items.parquet", index=False)
        con = connect(parts, memory_limit)
        try:
            # (timestamp, user) ties only within one shown list, ordered by position: generate's order
            for table, order in (("events", "timestamp, _user, position"), ("users", "_user")):
                con.execute(
                    f"COPY (SELECT * EXCLUDE (_user) FROM read_parquet({literal(parts / table)} || '-*.parquet') "
                    f"ORDER BY {order}) TO {literal(tmp / (table + '.parquet'))} (FORMAT PARQUET)"
                ).fetchall()
            counts = {
                "items": len(catalog["table"]),
                "users": config.users,
                "events": con.execute(
                    f"SELECT count(*) FROM read_parquet({literal(tmp / 'events.parquet')})"
                ).fetchall()[0][0],
            }
        finally:
            con.close()
    shutil.rmtree(parts)
    return counts


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _catalog(cfg: SynthConfig, rng: np.random.Generator) -> dict:
    """Items of every source: hierarchical categorical ids -> unit latent -> noisy dense projection."""
    k = cfg.latent_dim
    prototypes = _unit(rng.normal(size=(PROTOTYPES, k)))
    latents, frames = [], []
    for s in SOURCES:
        centers = prototypes[rng.integers(PROTOTYPES, size=s.levels[0][1])]
        parents = []
        for j, (_, vocab, scale) in enumerate(s.levels):
            if j:
                parents.append(rng.integers(len(centers), size=vocab))
                centers = centers[parents[-1]]
            centers = centers + scale * rng.normal(size=(vocab, k)) / np.sqrt(k)
        values = [rng.integers(s.levels[-1][1], size=s.items)]
        for parent in reversed(parents):
            values.insert(0, parent[values[0]])
        latent = _unit(centers[values[-1]] + s.item_noise * rng.normal(size=(s.items, k)) / np.sqrt(k))
        field, dim = s.dense
        projection = rng.normal(size=(k, dim))
        dense = latent @ projection + 0.3 * rng.normal(size=(s.items, dim))
        frame = pd.DataFrame({"item_id": [f"{s.name}{i:05d}" for i in range(s.items)], "source": s.name})
        for (name, _, _), v in zip(s.levels, values):
            frame[name] = [f"{name}{x}" for x in v]
        for d in range(dim):
            frame[f"{field}_{d}"] = dense[:, d].astype(np.float32)
        latents.append(latent.astype(np.float32))
        frames.append(frame)
    sizes = np.array([s.items for s in SOURCES])
    return {
        "latent": np.concatenate(latents),
        "offset": np.concatenate([[0], np.cumsum(sizes)[:-1]]),
        "table": pd.concat(frames, ignore_index=True),
    }


def _user_chunk(cfg: SynthConfig, catalog: dict, start: int, stop: int, rng: np.random.Generator) -> dict:
    """Users start..stop-1: preferences, drifting interest, request times and every shown list."""
    U, R, k, m = stop - start, cfg.requests_per_user, cfg.latent_dim, len(SOURCES)
    proto = _unit(rng.normal(size=(U, 2, k)))  # two random favourite directions, mixed
    long_term = _unit(proto[:, 0] + rng.uniform(0.3, 1.0, (U, 1)) * proto[:, 1])
    pref = rng.dirichlet(np.full(m, 2.0), size=U)
    cold = np.where(rng.random(U) < cfg.cold_fraction, rng.integers(m, size=U), -1)
    is_cold = cold >= 0
    pref[is_cold, cold[is_cold]] = np.maximum(pref[is_cold, cold[is_cold]], 1.0 / m)  # cold but liked
    pref /= pref.sum(axis=1, keepdims=True)
    interest = long_term[:, None, :] + _drift(cfg, rng, U)
    ts = _request_times(cfg, rng, U)
    logged = np.zeros((U, R), bool)
    keys = rng.random((U, R - cfg.warmup))
    chosen = np.argsort(keys, axis=1)[:, : cfg.lists_per_user] + cfg.warmup
    np.put_along_axis(logged, chosen, True, axis=1)

    lists = _shown_lists(cfg, catalog, rng, long_term, cold, U)
    q_user = np.repeat(np.arange(U), R)
    latent = catalog["latent"][lists["item"]]  # [Q, M, k]
    prob = click_probability(cfg, latent, lists["source"], lists["valid"], interest.reshape(U * R, k), pref[q_user])
    click = rng.random(prob.shape) < prob
    keep = lists["valid"] & (logged.reshape(-1, 1) | click)
    q, pos = np.nonzero(keep)
    return {
        "long_term": long_term.astype(np.float32),
        "interest": interest.astype(np.float32),
        "pref": pref.astype(np.float32),
        "cold": cold,
        "ts": ts,
        "logged": logged,
        "ev_user": start + q // R,
        "ev_request": q % R,
        "ev_pos": pos,
        "ev_item": lists["item"][q, pos],
        "ev_label": click[q, pos],
        "ev_prob": prob[q, pos],
    }


def _drift(cfg: SynthConfig, rng: np.random.Generator, U: int) -> np.ndarray:
    """AR(1) drift per request around the long-term interest, restarted at some session starts."""
    sd = cfg.drift_scale / np.sqrt(cfg.latent_dim)
    noise = rng.normal(scale=sd, size=(U, cfg.requests_per_user, cfg.latent_dim))
    restart = rng.random((U, cfg.requests_per_user)) < cfg.jump
    drift = np.empty_like(noise)
    drift[:, 0] = noise[:, 0]
    for r in range(1, cfg.requests_per_user):
        step = cfg.drift * drift[:, r - 1] + np.sqrt(1 - cfg.drift**2) * noise[:, r]
        jump = restart[:, r] & (r % cfg.requests_per_session == 0)
        drift[:, r] = np.where(jump[:, None], noise[:, r], step)
    return drift


def _request_times(cfg: SynthConfig, rng: np.random.Generator, U: int) -> np.ndarray:
    """Sessions spread over `days` (>= 10 min apart); requests 30-120 s apart within a session."""
    R, per = cfg.requests_per_user, cfg.requests_per_session
    sessions = -(-R // per)
    starts = np.sort(rng.uniform(0, cfg.days * 86400, (U, sessions)), axis=1) + 600 * np.arange(sessions)
    gaps = rng.integers(30, 121, (U, sessions, per))
    gaps[:, :, 0] = 0
    within = np.cumsum(gaps, axis=2).reshape(U, -1)[:, :R]
    return BASE_TS + starts[:, np.arange(R) // per].astype(np.int64) + within


def _shown_lists(
    cfg: SynthConfig, catalog: dict, rng: np.random.Generator, long_term: np.ndarray, cold: np.ndarray, U: int
) -> dict:
    """Per request: up to n candidates per source picked by a stale upstream ranker, then interleaved.

    Returns [Q, M] arrays (Q = U * R requests, M = m * n slots) in logged order: `item` (global item
    row), `source`, `valid` (a real candidate; real ones come first).
    """
    R, n = cfg.requests_per_user, LIST_N
    Q = U * R
    q_user = np.repeat(np.arange(U), R)
    early = np.tile(np.arange(R) < cfg.cold_until_request, U)
    items, sources, scores, valid = [], [], [], []
    for s, src in enumerate(SOURCES):
        count = rng.integers(src.shown[0], src.shown[1] + 1, Q)
        count[early & (cold[q_user] == s)] = 0
        pool = np.sort(rng.integers(src.items, size=(Q, POOL)), axis=1)
        rows = catalog["latent"][catalog["offset"][s] + pool]
        score = np.einsum("qk,qpk->qp", long_term[q_user], rows) + rng.gumbel(size=(Q, POOL))
        score[:, 1:][pool[:, 1:] == pool[:, :-1]] = -np.inf  # each item at most once per list
        top = np.argsort(-score, axis=1, kind="stable")[:, :n]
        items.append(catalog["offset"][s] + np.take_along_axis(pool, top, axis=1))
        scores.append(np.take_along_axis(score, top, axis=1))
        sources.append(np.full((Q, n), s))
        valid.append(np.arange(n) < count[:, None])
    item, source, score, ok = (np.concatenate(a, axis=1) for a in (items, sources, scores, valid))
    merge_key = np.where(ok, score + 2.0 * rng.gumbel(size=score.shape), -np.inf)
    order = np.argsort(-merge_key, axis=1, kind="stable")
    return {
        name: np.take_along_axis(a, order, axis=1) for name, a in (("item", item), ("source", source), ("valid", ok))
    }


def click_probability(
    cfg: SynthConfig, latent: np.ndarray, source: np.ndarray, valid: np.ndarray, interest: np.ndarray, pref: np.ndarray
) -> np.ndarray:
    """True click probability of each slot of Q shown lists (slot j = position j): the oracle.

    `latent` f32 [Q, M, k] item latents, `source` int [Q, M], `valid` bool [Q, M], `interest` [Q, k],
    `pref` [Q, m]. Returns examination(position) * sigmoid(relevance - context), 0 where not valid;
    call it on a reranked order to get that order's true expected clicks.
    """
    M = valid.shape[1]
    above = np.tril(np.ones((M, M), bool), k=-1)[None] & valid[:, None, :]
    similarity = np.einsum("qik,qjk->qij", latent, latent)
    redundancy = np.where(above, similarity, 0.0).max(axis=2).clip(min=0.0)
    fatigue = np.zeros(valid.shape)
    for lag in (1, 2, 3):
        fatigue[:, lag:] += (source[:, lag:] == source[:, :-lag]) & valid[:, :-lag]
    bias = np.array([s.bias for s in SOURCES])[source]
    logit = (
        bias
        + cfg.affinity * np.einsum("qk,qik->qi", interest, latent)
        + np.log(len(SOURCES) * np.take_along_axis(pref, source, axis=1))
        - cfg.redundancy * redundancy
        - cfg.fatigue * fatigue
    )
    examination = 1.0 / np.log2(np.arange(M) + 2.0)
    return np.where(valid, examination / (1.0 + np.exp(-logit)), 0.0)


def _events_table(
    cfg: SynthConfig, catalog: dict, merged: dict, start: int = 0
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """events.csv rows of users start.. (`merged` holds them): every slot of a logged list, plus the clicks
    of unlogged requests, ordered by (timestamp, user, position)."""
    user, request, pos = merged["ev_user"], merged["ev_request"], merged["ev_pos"]
    in_list = merged["logged"][user - start, request]
    ts = merged["ts"][user - start, request] + np.where(in_list, 0, 1 + pos)  # a click follows its impression
    order = np.lexsort((pos, user, ts))
    user, request, pos, in_list, ts = user[order], request[order], pos[order], in_list[order], ts[order]
    list_names = np.char.add(np.char.add("l", user.astype(str)), np.char.add("_", request.astype(str)))
    events = pd.DataFrame(
        {
            "user_id": _user_ids(user),
            "item_id": catalog["table"]["item_id"].to_numpy()[merged["ev_item"][order]],
            "timestamp": ts,
            "label": merged["ev_label"][order].astype(np.int8),
            "list_id": np.where(in_list, list_names, "").astype(object),
            "position": pd.array(pos, dtype="Int64"),
            "click_prob": np.where(in_list, merged["ev_prob"][order], np.nan).astype(np.float32),
        }
    )
    events.loc[~in_list, "position"] = pd.NA
    return events, user, request


def _users_table(cfg: SynthConfig, merged: dict, start: int = 0) -> pd.DataFrame:
    cold = merged["cold"]
    names = np.array([""] + [s.name for s in SOURCES], dtype=object)
    until = pd.array(merged["ts"][:, cfg.cold_until_request], dtype="Int64")
    until[cold < 0] = pd.NA
    return pd.DataFrame(
        {"user_id": _user_ids(np.arange(start, start + len(cold))), "cold_source": names[cold + 1], "cold_until": until}
    )


def _user_ids(index: np.ndarray) -> np.ndarray:
    """u000000, u000001, ... (at least six digits) for the given user indices."""
    return np.char.add("u", np.char.zfill(index.astype(str), 6)).astype(object)
