"""The fixed padded tensor layout that every exported device model consumes.

Per source `s` (0-based index in the dataset's source order), in this order:

- `cand_{s}`      float32 [B, n, d_s]  candidate item vectors (zeros where padded)
- `cand_mask_{s}` float32 [B, n]       1 for a real candidate, 0 for padding
- `hist_{s}`      float32 [B, t, d_s]  history item vectors, index 0 = newest behaviour
- `hist_mask_{s}` float32 [B, t]       1 for a real behaviour, 0 for padding (padding at the tail)

Output: `scores` float32 [B, m, n]; scores at padded candidate slots are meaningless and ignored.
Static shapes with masks export cleanly to ExecuTorch and LiteRT; dynamic shapes do not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class TensorSpec(BaseModel):
    """Name, dtype and shape of one model input or output (batch dimension included)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dtype: str = "float32"
    shape: tuple[int, ...]


class TensorLayout(BaseModel):
    """Shapes of the device model's inputs for `m` sources with vector widths `vector_dims`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vector_dims: tuple[int, ...] = Field(min_length=1)
    n: int = Field(ge=1)
    t: int = Field(ge=1)

    @property
    def m(self) -> int:
        return len(self.vector_dims)

    def input_specs(self, batch: int = 1) -> list[TensorSpec]:
        specs: list[TensorSpec] = []
        for s, d in enumerate(self.vector_dims):
            specs += [
                TensorSpec(name=f"cand_{s}", shape=(batch, self.n, d)),
                TensorSpec(name=f"cand_mask_{s}", shape=(batch, self.n)),
                TensorSpec(name=f"hist_{s}", shape=(batch, self.t, d)),
                TensorSpec(name=f"hist_mask_{s}", shape=(batch, self.t)),
            ]
        return specs

    def input_names(self) -> list[str]:
        return [spec.name for spec in self.input_specs()]

    def output_specs(self, batch: int = 1) -> list[TensorSpec]:
        return [TensorSpec(name="scores", shape=(batch, self.m, self.n))]

    def assemble(
        self,
        candidates: Sequence[np.ndarray],
        histories: Sequence[np.ndarray],
    ) -> dict[str, np.ndarray]:
        """Pad one request into new batch-1 input arrays (`InputBuffers` refills its own in place).

        `candidates[s]` is `[k_s, d_s]` with `k_s <= n`; `histories[s]` is `[h_s, d_s]`, newest first
        (rows past `t` are dropped). Returns `{input name: array}` in `input_names()` order.
        """
        if len(candidates) != self.m or len(histories) != self.m:
            raise ValueError(
                f"expected {self.m} candidate and history arrays (one per source), "
                f"got {len(candidates)} and {len(histories)}"
            )
        cands = [_rows(c, d, f"candidates of source {s}") for s, (c, d) in enumerate(zip(candidates, self.vector_dims))]
        hists = [_rows(h, d, f"history of source {s}") for s, (h, d) in enumerate(zip(histories, self.vector_dims))]
        for s, cand in enumerate(cands):
            if cand.shape[0] > self.n:
                raise ValueError(f"candidates of source {s}: {cand.shape[0]} items, at most n={self.n} fit")
        return InputBuffers(self).fill(cands, hists)


def _rows(values: np.ndarray, dim: int, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float32)
    if array.size == 0:
        return np.zeros((0, dim), np.float32)
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"{what}: expected shape [k, {dim}], got {list(array.shape)}")
    return array


class InputBuffers:
    """One request's input arrays, allocated once and refilled in place for every request.

        buffers = InputBuffers(layout)
        inputs = buffers.fill(candidates, histories)   # the same dict and arrays every call

    `fill` takes what `TensorLayout.assemble` takes, as float32 [k, d] arrays with k <= n, and gives
    what it returns; only rows whose content or padding changed are written. The arrays are valid
    until the next `fill`.
    """

    def __init__(self, layout: TensorLayout):
        m = layout.m
        self.layout = layout
        self.arrays = {spec.name: np.zeros(spec.shape, np.float32) for spec in layout.input_specs()}
        names = list(self.arrays)
        # per source: (cand values, cand mask, n), (hist values, hist mask, t)
        self._slots = [
            (self.arrays[names[4 * s + 2 * j]], self.arrays[names[4 * s + 2 * j + 1]], (layout.n, layout.t)[j])
            for s in range(m)
            for j in range(2)
        ]
        self._filled = [0] * (2 * m)  # real rows in each slot now

    def fill(self, candidates: Sequence[np.ndarray], histories: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """The input arrays holding this request (see `TensorLayout.assemble`); histories past t are cut."""
        if len(candidates) != self.layout.m or len(histories) != self.layout.m:
            raise ValueError(
                f"expected {self.layout.m} candidate and history arrays (one per source), "
                f"got {len(candidates)} and {len(histories)}"
            )
        filled, slots = self._filled, self._slots
        for j, rows in enumerate(x for pair in zip(candidates, histories) for x in pair):
            values, mask, length = slots[j]
            rows = rows[:length] if j % 2 else rows
            k, before = rows.shape[0], filled[j]
            if k > length or rows.shape[1:] != values.shape[2:]:
                raise ValueError(
                    f"{('candidates', 'history')[j % 2]} of source {j // 2}: expected shape [k <= {length}, "
                    f"{values.shape[2]}], got {list(rows.shape)}"
                )
            values[0, :k] = rows
            if k != before:
                if k < before:
                    values[0, k:before] = 0.0
                mask[0, :k] = 1.0
                mask[0, k:] = 0.0
                filled[j] = k
        return self.arrays
