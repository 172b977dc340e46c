"""Standardisation of dense item features: statistics from the training split, stored in the spec.

    spec = standardised(spec, logs.items, train_cand_item)   # DenseField.mean / .std filled in

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
        shown = np.unique(train_cand[:, s][train_cand[:, s] >= 0])
        rows = dense[shown] if len(shown) else dense
        fields, column = [], 0
        for field in source.dense:
            part = rows[:, column:column + field.dim].astype(np.float64)
            column += field.dim
            mean = part.mean(axis=0) if len(part) else np.zeros(field.dim)
            std = part.std(axis=0) if len(part) else np.ones(field.dim)
            std = np.where(std > 1e-12, std, 1.0)
            fields.append(field.model_copy(update={"mean": tuple(map(float, mean)), "std": tuple(map(float, std))}))
        sources.append(source.model_copy(update={"dense": tuple(fields)}))
    return spec.model_copy(update={"sources": tuple(sources)})
