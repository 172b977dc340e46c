"""Standardisation of dense item features: statistics from the training split, stored in the spec.

    spec = standardised(spec, logs.items, train_cand_item)   # DenseField.mean / .std filled in
    spec = standardised(spec, items, np.load("DATA/train/cand_item.npy", mmap_mode="r"))  # out of core

The item encoder (cloud.models.base.ItemEncoder) applies (x - mean) / std, so every path that makes
item vectors with the run's encoder (training, slates, the service, bundles' inputs) scales identically.
"""

from __future__ import annotations

import numpy as np

from shared_schema.specs import DatasetSpec


def standardised(spec: DatasetSpec, items: dict, train_cand: np.ndarray) -> DatasetSpec:
    """The spec with each dense field's mean and std over the items shown in the training lists (all
    items of a source none of whose items are shown there); a constant column gets std 1."""
    sources = []
    for s, source in enumerate(spec.sources):
        dense = items[source.name].dense
        shown = shown_items(train_cand, s, len(dense))
        rows = dense[shown] if len(shown) else dense
        fields, column = [], 0
        for field in source.dense:
            part = rows[:, column : column + field.dim].astype(np.float64)
            column += field.dim
            mean = part.mean(axis=0) if len(part) else np.zeros(field.dim)
            std = part.std(axis=0) if len(part) else np.ones(field.dim)
            std = np.where(std > 1e-12, std, 1.0)
            fields.append(field.model_copy(update={"mean": tuple(map(float, mean)), "std": tuple(map(float, std))}))
        sources.append(source.model_copy(update={"dense": tuple(fields)}))
    return spec.model_copy(update={"sources": tuple(sources)})


def shown_items(cand: np.ndarray, source: int, count: int, chunk: int = 1 << 16) -> np.ndarray:
    """Sorted distinct item indices of `source` in cand_item [L, m, n], read `chunk` lists at a time (so a
    memory-mapped array is never loaded whole)."""
    seen = np.zeros(count, bool)
    for start in range(0, len(cand), chunk):
        part = np.asarray(cand[start : start + chunk, source])
        seen[part[part >= 0]] = True
    return np.flatnonzero(seen)
