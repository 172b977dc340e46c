"""Turn prepared list arrays into the feature batches that `RerankModel.forward` takes.

    batcher = ListBatcher(item_tables, split_arrays, history="device")
    batch = batcher.batch(np.arange(256))   # dict of tensors, see the brief's "feature batch"

Item indices of -1 (padding) gather row 0 and get mask 0; the model zeroes their vectors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

HISTORY_VIEWS = ("device", "cloud")


class ListBatcher:
    """Gathers per-source item features for batches of lists of one split, held as tensors."""

    def __init__(
        self,
        item_tables: Sequence[tuple[np.ndarray, np.ndarray]],
        arrays: Mapping[str, np.ndarray],
        history: str = "device",
    ) -> None:
        if history not in HISTORY_VIEWS:
            raise ValueError(f"history must be one of {HISTORY_VIEWS}, got {history!r}")
        self.history = history
        self.categorical = [torch.from_numpy(np.array(cat, dtype=np.int64)) for cat, _ in item_tables]
        self.dense = [torch.from_numpy(np.array(dense, dtype=np.float32)) for _, dense in item_tables]
        self.cand_item = torch.from_numpy(np.array(arrays["cand_item"], dtype=np.int64))
        self.hist_item = torch.from_numpy(np.array(arrays[f"hist_{history}"], dtype=np.int64))
        self.label = torch.from_numpy(np.array(arrays["label"], dtype=np.float32))
        self.m = self.cand_item.shape[1]

    def __len__(self) -> int:
        return self.cand_item.shape[0]

    def batch(self, rows: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        rows = torch.as_tensor(rows, dtype=torch.int64)
        cand, hist = self.cand_item[rows], self.hist_item[rows]
        out: dict[str, torch.Tensor] = {}
        for s in range(self.m):
            for kind, index in (("cand", cand[:, s]), ("hist", hist[:, s])):
                real = index >= 0
                safe = index.clamp(min=0)
                out[f"{kind}_cat_{s}"] = self.categorical[s][safe]
                out[f"{kind}_dense_{s}"] = self.dense[s][safe]
                out[f"{kind}_mask_{s}"] = real.to(torch.float32)
        out["mask"] = (cand >= 0).to(torch.float32)
        out["label"] = self.label[rows]
        return out

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None):
        """Yield batches covering every list once (the last one may be smaller)."""
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            yield self.batch(order[start : start + batch_size])
