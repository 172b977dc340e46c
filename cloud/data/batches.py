"""Turn prepared list arrays into the feature batches that `RerankModel.forward` takes.

    batcher = ListBatcher(item_tables, split_arrays, history="device")   # device="cuda" puts batches there
    batch = batcher.batch(np.arange(256))    # dict of tensors: RerankModel.forward's feature batch
    for batch in batcher.batches(256, shuffle=True, generator=g, rank=1, world=2): ...  # rank 1's shards
    valid = batcher.split(data.split("valid"))       # same item tables, other lists (no copy)

Item indices of -1 (padding) gather row 0 and get mask 0; the model zeroes their vectors.

Memory: the list arrays (cand_item, label, hist_<view>) stay on disk. Each batch reads only its rows
from the memory-mapped .npy files (a .npy file is a header plus one C-ordered array, so row i sits at a
fixed offset), READ_GROUP rows at a time, and drops the mapped pages from this process's resident set
after each group (madvise DONTNEED; the pages stay in the kernel's page cache, shared and reclaimable).
Without that, every page a read faulted in, with the kernel's fault-around window of cached neighbours,
would stay resident until the whole split had been read. Resident memory is one batch, not one split.
The item tables (categorical ids and dense features per item) are copied into tensors: they grow with
the catalogue, not with the logs, and every batch gathers from all of them at random.
"""

from __future__ import annotations

import copy
import mmap
from collections.abc import Mapping, Sequence

import numpy as np
import torch

HISTORY_VIEWS = ("device", "cloud")
READ_GROUP = 64
"""Rows read from a mapping between two releases of its pages: bounds the resident file pages."""


class ListBatcher:
    """Gathers per-source item features for batches of lists of one split, read from disk per batch."""

    def __init__(
        self,
        item_tables: Sequence[tuple[np.ndarray, np.ndarray]],
        arrays: Mapping[str, np.ndarray],
        history: str = "device",
        device: str | torch.device | None = None,
    ) -> None:
        if history not in HISTORY_VIEWS:
            raise ValueError(f"history must be one of {HISTORY_VIEWS}, got {history!r}")
        self.history = history
        self.device = torch.device(device or "cpu")
        self.categorical = [
            torch.tensor(np.asarray(cat), dtype=torch.int64, device=self.device) for cat, _ in item_tables
        ]
        self.dense = [
            torch.tensor(np.asarray(dense), dtype=torch.float32, device=self.device) for _, dense in item_tables
        ]
        self._set_arrays(arrays)

    def _set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._cand = _RowReader.open(arrays["cand_item"])
        self._hist = _RowReader.open(arrays[f"hist_{self.history}"])
        self._label = _RowReader.open(arrays["label"])
        self.m = self._cand.array.shape[1]

    @property
    def cand_item(self) -> np.ndarray:
        """int64 [L, m, n] of the whole split, memory-mapped (reading all of it reads the split)."""
        return self._cand.array

    @property
    def label(self) -> np.ndarray:
        """float32 [L, m, n] of the whole split, memory-mapped."""
        return self._label.array

    def __len__(self) -> int:
        return self._cand.array.shape[0]

    def split(self, arrays: Mapping[str, np.ndarray]) -> ListBatcher:
        """A batcher over other list arrays (another split) sharing these item tables."""
        other = copy.copy(self)
        other._set_arrays(arrays)
        return other

    def subset(self, start: int, stop: int) -> ListBatcher:
        """The lists start..stop-1 of this split, in order (no copy)."""
        other = copy.copy(self)
        other._cand, other._hist, other._label = (
            r.rows_range(start, stop) for r in (self._cand, self._hist, self._label)
        )
        return other

    def batch(self, rows: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        rows = np.asarray(rows, dtype=np.int64)
        cand, hist, label = (
            torch.from_numpy(r.read(rows)).to(self.device) for r in (self._cand, self._hist, self._label)
        )
        out: dict[str, torch.Tensor] = {}
        for s in range(self.m):
            for kind, index in (("cand", cand[:, s]), ("hist", hist[:, s])):
                real = index >= 0
                safe = index.clamp(min=0)
                out[f"{kind}_cat_{s}"] = self.categorical[s][safe]
                out[f"{kind}_dense_{s}"] = self.dense[s][safe]
                out[f"{kind}_mask_{s}"] = real.to(torch.float32)
        out["mask"] = (cand >= 0).to(torch.float32)
        out["label"] = label
        return out

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        rank: int = 0,
        world: int = 1,
    ):
        """Yield batches covering every list once (the last one may be smaller).

        `batch_size` is the global batch: with `world` > 1 this yields rank `rank`'s share of each one
        (rows rank, rank + world, ... of it), so the ranks together see exactly the single-process
        batches, and every rank yields the same number of batches. A share is read in sorted row order.
        Each batch carries `weight` [B] (1.0); a rank whose share of the last batch is empty gets that
        batch's first list with weight 0.0 (it takes part in the step but counts for nothing).
        """
        order = (torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))).numpy()
        for start in range(0, len(self), batch_size):
            rows = order[start : start + batch_size]
            share = np.sort(rows[rank::world])
            weight = 1.0 if len(share) else 0.0
            batch = self.batch(share if len(share) else rows[:1])
            batch["weight"] = torch.full((len(batch["label"]),), weight, device=self.device)
            yield batch


class _RowReader:
    """Rows of one array; for a memory-mapped .npy, read through a private mapping released after each read."""

    def __init__(self, array: np.ndarray, mapping: mmap.mmap | None = None):
        self.array, self._mapping = array, mapping

    @classmethod
    def open(cls, array: np.ndarray) -> _RowReader:
        if not (isinstance(array, np.memmap) and array.filename and array.flags.c_contiguous):
            return cls(np.asarray(array))
        with open(array.filename, "rb") as handle:
            mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        return cls(np.ndarray(array.shape, array.dtype, buffer=mapping, offset=array.offset), mapping)

    def read(self, rows: np.ndarray) -> np.ndarray:
        if self._mapping is None or not hasattr(self._mapping, "madvise"):
            return self.array[rows]
        out = np.empty((len(rows), *self.array.shape[1:]), self.array.dtype)
        for start in range(0, len(rows), READ_GROUP):  # each fault may map a window of cached pages
            out[start : start + READ_GROUP] = self.array[rows[start : start + READ_GROUP]]
            self._mapping.madvise(mmap.MADV_DONTNEED)
        return out

    def rows_range(self, start: int, stop: int) -> _RowReader:
        return _RowReader(self.array[start:stop], self._mapping)
