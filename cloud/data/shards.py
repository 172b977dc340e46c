"""Out-of-core step two and three: build each user shard's lists, then merge the shards into DATA.

    result = build_shard(ShardJob(events_path, work, shard=3, spec=spec, seed=0), items)    # one task, bounded memory
    merge_shards(plan, results, spec, data_tmp)                                 # time order, split, write

A shard holds every event of its users, so the in-memory list builder and history code run on it
unchanged (their rules are per user and per list). Lists come back in (timestamp, first events line)
order; merging the shards by that key gives exactly the in-memory path's order. The merge streams:
each output chunk takes a contiguous run of lists from every shard, read from disk by offset.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cloud.data.history import histories
from cloud.data.lists import Lists, logged_lists, no_clicks_message, sampled_lists
from cloud.data.logs import ItemTable, events_from_frame
from cloud.data.partition import Partition, shard_events, shard_users
from cloud.data.prepare import time_split
from cloud.data.prepared import ARRAYS
from shared_schema.specs import DatasetSpec

MERGE_CHUNK = 1 << 16  # lists per output write


@dataclass(frozen=True)
class ShardJob:
    """What one shard task needs (all small; the item tables travel separately)."""

    events_path: Path
    work: Path
    shard: int
    spec: DatasetSpec
    seed: int

    @property
    def out(self) -> Path:
        return shard_lists(self.work, self.shard)


def shard_lists(work: Path, shard: int) -> Path:
    """The folder of a shard's lists and histories (.npy, in the shard's time order)."""
    return work / f"lists-{shard}"


def build_shard(job: ShardJob, items: dict[str, ItemTable]) -> dict:
    """Validate the shard's events, build its lists and histories, save them; returns its counters."""
    import pyarrow.parquet as pq

    spec = job.spec
    job.out.mkdir(parents=True, exist_ok=True)
    folder = shard_events(job.work, job.shard)
    frame = pq.read_table(folder).to_pandas() if folder.is_dir() else None
    result = {"shard": job.shard, "events": 0, "clicks": 0, "lists": 0, "has_click_prob": False, "stats": {}}
    if frame is None or len(frame) == 0:
        empty = {
            f"hist_{view}{age}": np.zeros((0, spec.m, spec.t), np.int64 if not age else np.float32)
            for view in ("device", "cloud")
            for age in ("", "_age")
        }
        _save(job.out, _no_lists(spec), empty)
        return result
    frame = frame.sort_values("line", kind="stable", ignore_index=True)
    lines = frame.pop("line").to_numpy(np.int64)
    frame = frame.drop(columns=[c for c in ("shard",) if c in frame])
    users = np.load(shard_users(job.work, job.shard))
    events, _ = events_from_frame(job.events_path, frame, items, users["ids"], lines)
    events = replace(events, user=users["index"][events.user])
    if spec.list_mode == "logged":
        has_rows = (events.list_id >= 0).any()
        lists = logged_lists(events, spec.m, spec.n) if has_rows else _no_lists(spec)
    else:
        counts = [len(items[name]) for name in spec.source_names]
        has_rows = (events.label == 1).any()
        lists = (
            sampled_lists(events, counts, spec.n, spec.negatives, job.seed, job.events_path)
            if has_rows
            else _no_lists(spec)
        )
    views = histories(events, lists.user, lists.ts, spec.m, spec.t, spec.lag)
    _save(job.out, lists, views)
    result.update(
        events=len(events),
        clicks=int(events.label.sum()),
        lists=len(lists),
        has_click_prob=events.has_click_prob,
        stats=lists.stats if has_rows else {},
    )
    return result


def merge_shards(plan: Partition, results: list[dict], spec: DatasetSpec, out: Path) -> tuple[np.ndarray, dict]:
    """Write DATA/<split>/<array>.npy in global time order; returns the sorted list timestamps and bounds."""
    if spec.list_mode == "sampled" and not sum(r["clicks"] for r in results):
        raise ValueError(no_clicks_message(plan.events_path))
    parts = [shard_lists(plan.work, r["shard"]) for r in results]
    ts = np.concatenate([np.load(p / "ts.npy") for p in parts])
    line = np.concatenate([np.load(p / "line.npy") for p in parts])
    shard = np.repeat(np.arange(len(parts)), [r["lists"] for r in results])
    order = np.lexsort((line, ts))
    del line
    ts = ts[order]
    bounds = time_split(ts, spec, plan.events_path)
    local = np.empty(len(order), np.int64)  # each list's row within its shard's files
    for s in range(len(parts)):
        local[shard == s] = np.arange(int((shard == s).sum()))
    shard, local = shard[order], local[order]
    for name, (a, b) in bounds.items():
        (out / name).mkdir()
        for key in ARRAYS:
            _merge_array(parts, key, shard[a:b], local[a:b], out / name / f"{key}.npy")
    return ts, bounds


def _merge_array(parts: list[Path], key: str, shard: np.ndarray, local: np.ndarray, target: Path) -> None:
    """Gather rows (shard, local) of `key` into one .npy, chunk by chunk, without mapping whole files."""
    readers = [_NpyRows(p / f"{key}.npy") for p in parts]
    dtype, row_shape = readers[0].dtype, readers[0].row_shape
    with target.open("wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh,
            {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (len(shard), *row_shape)},
        )
        for start in range(0, len(shard), MERGE_CHUNK):
            s, i = shard[start : start + MERGE_CHUNK], local[start : start + MERGE_CHUNK]
            chunk = np.empty((len(s), *row_shape), dtype)
            for part in np.unique(s):
                mine = s == part
                lo, hi = int(i[mine].min()), int(i[mine].max()) + 1  # contiguous: shards are merged in order
                chunk[mine] = readers[part].rows(lo, hi)[i[mine] - lo]
            fh.write(chunk.tobytes())


class _NpyRows:
    """Rows [lo, hi) of a C-ordered .npy file, read with a seek."""

    def __init__(self, path: Path):
        self.path = path
        with path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _, self.dtype = read_header(fh)
            self.offset = fh.tell()
        self.row_shape = tuple(shape[1:])
        self.row_items = int(np.prod(self.row_shape, dtype=np.int64))

    def rows(self, lo: int, hi: int) -> np.ndarray:
        with self.path.open("rb") as fh:
            fh.seek(self.offset + lo * self.row_items * self.dtype.itemsize)
            flat = np.fromfile(fh, self.dtype, (hi - lo) * self.row_items)
        return flat.reshape((hi - lo, *self.row_shape))


def _save(folder: Path, lists: Lists, views: dict[str, np.ndarray]) -> None:
    arrays = {
        "user": lists.user,
        "ts": lists.ts,
        "line": lists.line,
        "cand_item": lists.cand_item,
        "label": lists.label,
        "click_prob": lists.click_prob,
        "position": lists.position,
    }
    for key, value in {**arrays, **views}.items():
        np.save(folder / f"{key}.npy", value)


def _no_lists(spec: DatasetSpec) -> Lists:
    m, n = spec.m, spec.n
    return Lists(
        user=np.zeros(0, np.int64),
        ts=np.zeros(0),
        cand_item=np.full((0, m, n), -1, np.int64),
        label=np.zeros((0, m, n), np.float32),
        click_prob=np.zeros((0, m, n), np.float32),
        position=np.full((0, m, n), -1, np.int64),
        line=np.zeros(0, np.int64),
    )
