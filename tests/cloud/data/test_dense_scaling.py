"""Dense features are standardised with training-split statistics stored in the spec."""

from __future__ import annotations

import numpy as np


def test_dense_features_are_standardised_with_train_split_statistics(tiny_data):
    """prepare stores mean/std of the items shown in training; the item encoder applies them."""
    import torch

    from cloud.data.prepared import PreparedData
    from cloud.models.base import ItemEncoder

    data = PreparedData(tiny_data)
    s = data.spec.source_names.index("article")
    source = data.spec.sources[s]
    train = data.split("train")["cand_item"][:, s]
    shown = np.unique(train[train >= 0])
    raw = data.items("article").dense
    mean, std = source.dense_scaling()
    assert np.allclose(mean, raw[shown].mean(axis=0)) and np.allclose(std, raw[shown].std(axis=0))
    assert data.spec == type(data.spec).model_validate_json(data.spec.model_dump_json())  # stored and read back
    encoder = ItemEncoder(data.spec, embedding_dim=2)
    cat = torch.zeros(len(shown), len(source.categorical), dtype=torch.long)
    vectors = encoder(s, cat, torch.as_tensor(raw[shown]))[:, -source.dense_dim() :]
    assert torch.allclose(vectors.mean(dim=0), torch.zeros(source.dense_dim()), atol=1e-5)
    assert torch.allclose(vectors.std(dim=0, unbiased=False), torch.ones(source.dense_dim()), atol=1e-4)
    assert "mean" not in source.dense[0].model_copy(update={"mean": None, "std": None}).model_dump()
