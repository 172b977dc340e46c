"""Sources, their (heterogeneous) item features, and the shape of a multi-source dataset."""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

SCHEMA_VERSION = 1
"""Version of the data contract: prepared data, tensor layout, wire messages, bundle manifest."""

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

MAX_CANDIDATES = 1000
"""Upper bound of n (candidates per source) and of `negatives`: keeps a list's arrays small."""
MAX_HISTORY = 1000
"""Upper bound of t (history length per source)."""
MAX_DENSE_DIM = 4096
"""Upper bound of a dense field's width."""
MAX_VOCAB = 2**31 - 1
"""Upper bound of a categorical field's vocabulary (ids fit int32)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{what} {value!r} must start with a letter and use only letters, digits and '_'")
    return value


class CategoricalField(_Strict):
    """A categorical item feature; ids are 0..vocab-1 after preparation (0 is kept for unknown)."""

    name: str
    vocab: int = Field(0, ge=0, le=MAX_VOCAB, description="vocabulary size incl. the unknown id 0; 0 = infer from data")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "categorical field name")


class DenseField(_Strict):
    """A dense item feature of `dim` floats, stored as columns NAME_0 .. NAME_{dim-1}.

    `mean` and `std` (one per column) are filled in by `dir-cloud prepare` from the training split; the
    item encoder feeds (x - mean) / std to the model. Unset (a spec not prepared yet): no scaling.
    """

    name: str
    dim: int = Field(1, ge=1, le=MAX_DENSE_DIM)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "dense field name")

    mean: tuple[float, ...] | None = None  # standardisation, filled in by prepare
    std: tuple[float, ...] | None = None

    @model_validator(mode="after")
    def _scaling(self) -> DenseField:
        for what, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) != self.dim:
                raise ValueError(f"dense field {self.name!r}: {what} has {len(values)} values, dim is {self.dim}")
        if self.std is not None and not all(v > 0 for v in self.std):
            raise ValueError(f"dense field {self.name!r}: std must be positive, got {self.std}")
        return self

    @model_serializer(mode="wrap")
    def _without_unset_scaling(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        """A field not standardised serialises as before the scaling existed (older readers accept it)."""
        data: dict[str, object] = handler(self)
        for key in ("mean", "std"):
            if data.get(key) is None:
                data.pop(key, None)
        return data

    def columns(self) -> list[str]:
        return [self.name] if self.dim == 1 else [f"{self.name}_{i}" for i in range(self.dim)]


class SourceSpec(_Strict):
    """One candidate source (videos, articles, ads...) with its own item features."""

    name: str
    target_share: float = Field(ge=0.0, le=1.0)
    categorical: tuple[CategoricalField, ...] = ()
    dense: tuple[DenseField, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "source name")

    @model_validator(mode="after")
    def _has_features(self) -> SourceSpec:
        if not self.categorical and not self.dense:
            raise ValueError(f"source {self.name!r} needs at least one categorical or dense field")
        names = [f.name for f in self.categorical] + [f.name for f in self.dense]
        if len(set(names)) != len(names):
            raise ValueError(f"source {self.name!r} repeats a field name: {names}")
        return self

    def dense_dim(self) -> int:
        return sum(f.dim for f in self.dense)

    def dense_scaling(self) -> tuple[list[float], list[float]]:
        """(mean, std) per dense column, in column order; 0 and 1 for a field not standardised."""
        mean = [v for f in self.dense for v in (f.mean or (0.0,) * f.dim)]
        std = [v for f in self.dense for v in (f.std or (1.0,) * f.dim)]
        return mean, std

    def vector_dim(self, embedding_dim: int) -> int:
        """Width of this source's item vector: one embedding per categorical field + dense floats."""
        return embedding_dim * len(self.categorical) + self.dense_dim()


class DatasetSpec(_Strict):
    """Everything that fixes a dataset's shape: sources, n, t, K, cloud lag, list mode, split."""

    schema_version: int = SCHEMA_VERSION
    name: str = "dataset"
    sources: tuple[SourceSpec, ...]
    n: int = Field(10, ge=1, le=MAX_CANDIDATES, description="candidates per source")
    t: int = Field(20, ge=1, le=MAX_HISTORY, description="history length per source")
    K: int = Field(5, ge=1, description="exposed slots, at most m * n")
    lag: int = Field(3, ge=0, le=1_000_000, description="newest behaviours the cloud has not seen yet")
    list_mode: Literal["logged", "sampled"] = "logged"
    negatives: int = Field(9, ge=1, le=MAX_CANDIDATES, description="negatives per positive in 'sampled' mode")
    valid_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0.0, lt=0.5)

    @model_validator(mode="after")
    def _check(self) -> DatasetSpec:
        if len(self.sources) < 1:
            raise ValueError("sources: give at least one source")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"sources: names must be unique, got {names}")
        total = sum(s.target_share for s in self.sources)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            shares = {s.name: s.target_share for s in self.sources}
            raise ValueError(f"target_share: must sum to 1 over sources, got {total:.6g} from {shares}")
        if self.K > len(self.sources) * self.n:
            raise ValueError(
                f"K: {self.K} exposed slots but a list has only m * n = {len(self.sources)} * {self.n} "
                f"candidates; lower K or raise n"
            )
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is not supported (this code reads {SCHEMA_VERSION})"
            )
        return self

    @property
    def m(self) -> int:
        return len(self.sources)

    @property
    def source_names(self) -> list[str]:
        return [s.name for s in self.sources]

    @property
    def target_shares(self) -> list[float]:
        return [s.target_share for s in self.sources]

    def source(self, name: str) -> SourceSpec:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(f"unknown source {name!r}; known sources: {self.source_names}")
