"""The embedding split every model follows: cloud-only `ItemEncoder` + exportable device model.

    model = build_model("dir", spec)           # a RerankModel
    scores = model(batch)                      # [B, m, n] logits, batch from cloud/data/batches.py
    inputs = model.device_inputs(batch)        # dense tensors in TensorLayout order
    assert torch.equal(model.device_model(*inputs), scores)
    count_parameters(model)                    # {"cloud": ..., "device": ...}

`ItemEncoder` holds the embedding tables (they stay in the cloud); `device_model` takes only the
dense layout tensors (shared_schema/layout.py) and is what gets exported to ExecuTorch / TFLite.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from shared_schema.layout import TensorLayout
from shared_schema.specs import DatasetSpec


class ItemEncoder(nn.Module):
    """Per source, one `nn.Embedding(vocab, embedding_dim)` per categorical field, then the dense features
    standardised with the spec's training-split mean and std (DenseField.mean/std; none set: as given).

        enc = ItemEncoder(spec, embedding_dim=16)
        vectors = enc(0, cat[..., F_0], dense[..., D_0])   # [..., d_0]
    """

    def __init__(self, spec: DatasetSpec, embedding_dim: int = 16):
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self.embedding_dim = embedding_dim
        self.dense_dims = [source.dense_dim() for source in spec.sources]
        self.tables = nn.ModuleList()
        for source in spec.sources:
            for field in source.categorical:
                if field.vocab < 1:
                    raise ValueError(
                        f"source {source.name!r}, categorical field {field.name!r}: vocab is 0 (not inferred yet); "
                        "build the model from the spec in a prepared DATA/dataset.json"
                    )
            self.tables.append(nn.ModuleList(nn.Embedding(f.vocab, embedding_dim) for f in source.categorical))
        self._dims = [source.vector_dim(embedding_dim) for source in spec.sources]
        for s, source in enumerate(spec.sources):  # not in the state dict: they come from the spec
            mean, std = source.dense_scaling()
            self.register_buffer(f"dense_mean_{s}", torch.tensor(mean, dtype=torch.float32), persistent=False)
            self.register_buffer(f"dense_std_{s}", torch.tensor(std, dtype=torch.float32), persistent=False)

    def vector_dims(self) -> list[int]:
        """Width d_s of each source's item vector."""
        return list(self._dims)

    def forward(self, s: int, cat: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        tables = cast(nn.ModuleList, self.tables[s])  # one ModuleList of embeddings per source
        if cat.shape[-1] != len(tables) or dense.shape[-1] != self.dense_dims[s]:
            raise ValueError(
                f"source {s}: expected {len(tables)} categorical columns and {self.dense_dims[s]} dense floats, "
                f"got cat {list(cat.shape)} and dense {list(dense.shape)}"
            )
        parts = [table(cat[..., f]) for f, table in enumerate(tables)]
        if self.dense_dims[s]:
            mean, std = getattr(self, f"dense_mean_{s}"), getattr(self, f"dense_std_{s}")
            parts.append((dense.to(torch.float32) - mean) / std)
        return torch.cat(parts, dim=-1)


class RerankModel(nn.Module):
    """Base of every reranker: `item_encoder` (cloud) composed with `device_model` (exported).

    A subclass calls `super().__init__(spec, embedding_dim)` and then sets `self.device_model`, an
    `nn.Module` whose `forward(*inputs)` takes the tensors of `self.layout` in order and returns
    scores [B, m, n] (logits). Set `uses_exposure_loss = False` where the exposure loss is not used and
    `uses_utility_loss = False` where `auxiliary_loss` is the whole click objective (the trainer then
    leaves out its BCE on the scores); `begin_epoch` lets a model train in stages (CRUM).
    """

    uses_exposure_loss = True
    uses_utility_loss = True
    reads_history = True
    """False for a model whose scores ignore the history inputs: one run of it serves both history views."""
    device_decoder = "merge"
    """How the device builds the list (a key of shared_schema.manifest.DECODERS), with these options; a
    decoder that reads outputs after `scores` needs `export_module()` to return them."""
    device_decoder_options: dict[str, float | int] = {}
    device_model: nn.Module
    name: str
    """The registered name and constructor options (`build_model` sets them)."""
    options: dict[str, Any]
    search_space: dict[str, tuple] = {}
    """Constructor options `dir-cloud tune` searches, next to each model's code: name -> ("int", low, high,
    step); cloud/training/tuning.py adds the learning rate, L2 and (with the exposure loss) beta."""

    def __init__(self, spec: DatasetSpec, embedding_dim: int = 16):
        super().__init__()
        self.spec = spec
        self.item_encoder = ItemEncoder(spec, embedding_dim)
        self.layout = TensorLayout(vector_dims=tuple(self.item_encoder.vector_dims()), n=spec.n, t=spec.t)

    def device_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Encode a feature batch into the layout tensors (padded vectors zeroed), in layout order."""
        inputs: list[torch.Tensor] = []
        for s in range(self.layout.m):
            for part in ("cand", "hist"):
                cat, dense, mask = (_get(batch, f"{part}_{kind}_{s}") for kind in ("cat", "dense", "mask"))
                vectors = self.item_encoder(s, cat, dense) * mask.unsqueeze(-1)
                inputs += [vectors, mask]
        return tuple(inputs)

    def example_inputs(self, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Random layout tensors (some slots padded and zeroed) for tracing, export and tests."""
        generator = torch.Generator().manual_seed(seed)
        inputs: list[torch.Tensor] = []
        for spec in self.layout.input_specs(batch):
            if "mask" in spec.name:
                length = spec.shape[1]
                real = torch.randint(1, length + 1, (batch, 1), generator=generator)
                inputs.append((torch.arange(length).unsqueeze(0) < real).to(torch.float32))
            else:
                inputs.append(torch.randn(spec.shape, generator=generator))
        for i in range(0, len(inputs), 2):  # vectors come right before their mask
            inputs[i] = inputs[i] * inputs[i + 1].unsqueeze(-1)
        return tuple(inputs)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.device_model(*self.device_inputs(batch))

    def export_module(self) -> nn.Module:
        """What a bundle exports: `device_model` (returns scores), or a module over it that returns (scores,
        the extra outputs of `device_decoder`, each [B, m*n, k])."""
        return self.device_model

    def auxiliary_loss(self, batch: dict[str, torch.Tensor], scores: torch.Tensor) -> torch.Tensor | None:
        """A model-specific training loss to add to the utility loss (scores = self(batch)), or None.

        extra = model.auxiliary_loss(batch, scores)   # PEAR: alpha * list-level "any click" BCE
        """
        return None

    def begin_epoch(self, epoch: int, epochs: int) -> None:
        """Called by the trainer before epoch `epoch` (0-based) of `epochs`, also on resume; a no-op here."""


def count_parameters(model: RerankModel) -> dict[str, int]:
    """Trainable parameter counts: `cloud` (embedding tables) and `device` (the exported model)."""
    return {
        "cloud": sum(p.numel() for p in model.item_encoder.parameters()),
        "device": sum(p.numel() for p in model.device_model.parameters()),
    }


def _get(batch: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in batch:
        raise ValueError(
            f"feature batch has no {key!r}; batches come from cloud/data/batches.py (keys: {sorted(batch)})"
        )
    return batch[key]
