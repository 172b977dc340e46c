"""Model registry: every reranker by name, built from a DatasetSpec.

    from cloud.models import MODELS, build_model, count_parameters
    model = build_model("dir", spec, hidden=32)    # -> RerankModel
    model = build_model("dir-pg", spec)            # an ablation (DIR paper, section 5.3)
    model = build_model("dir-ca", spec)            # an extension: candidate-aware history attention

To add a model: one file per model with a RerankModel subclass, and one line in MODELS.
`build_model` records `model.name` and `model.options` so a run can rebuild the same model.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import cast

from cloud.models.base import ItemEncoder, RerankModel, count_parameters
from cloud.models.crum import CRUM
from cloud.models.din import DIN
from cloud.models.dir import DIR
from cloud.models.edgerec import EdgeRec
from cloud.models.hrl import HRL
from cloud.models.mir import MIR
from cloud.models.nar4rec import NAR4Rec
from cloud.models.pear import PEAR
from cloud.models.prm import PRM
from cloud.models.setrank import SetRank
from cloud.models.svr import SVR
from shared_schema.specs import DatasetSpec

MODELS: dict[str, Callable[..., RerankModel]] = {
    "dir": DIR,
    "dir-isi": functools.partial(DIR, gru=False),
    "dir-lrs": functools.partial(DIR, linear_sharing=False),
    "dir-hrs": functools.partial(DIR, high_order_sharing=False),
    "dir-lcm": functools.partial(DIR, listwise_context=False),
    "dir-pg": functools.partial(DIR, preference_generator=False),
    "dir-js": functools.partial(DIR, exposure_loss=False),
    "dir-ca": functools.partial(DIR, history_attention=True),
    "din": DIN,
    "setrank": SetRank,
    "prm": PRM,
    "mir": MIR,
    "pear": PEAR,
    "edgerec": EdgeRec,
    "svr": SVR,
    "nar4rec": NAR4Rec,
    "crum": CRUM,
    "hrl": HRL,
}

DIR_ABLATIONS = ("dir-isi", "dir-lrs", "dir-hrs", "dir-lcm", "dir-pg", "dir-js")
"""DIR with one component removed (DIR paper, section 5.3). dir-ca adds one instead: it is an extension."""


def model_class(name: str) -> type[RerankModel]:
    """The RerankModel subclass the registered model `name` builds."""
    factory = MODELS[name]
    return cast(type[RerankModel], factory.func if isinstance(factory, functools.partial) else factory)


def reads_history(name: str) -> bool:
    """Whether the registered model `name` reads the history inputs (RerankModel.reads_history)."""
    return model_class(name).reads_history


def model_options(name: str) -> list[str]:
    """The keyword options of the registered model `name` (its constructor's parameters but `spec`)."""
    return [p for p in inspect.signature(MODELS[name]).parameters if p != "spec"]


def build_model(name: str, spec: DatasetSpec, **options) -> RerankModel:
    """The registered model `name` for `spec`; `options` are its constructor's keyword arguments."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    factory = MODELS[name]
    accepted = model_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"model {name!r} has no option(s) {unknown}; its options: {accepted}")
    model = factory(spec, **options)
    model.name, model.options = name, dict(options)
    return model


__all__ = [
    "DIR_ABLATIONS",
    "MODELS",
    "ItemEncoder",
    "RerankModel",
    "build_model",
    "count_parameters",
    "model_class",
    "model_options",
    "reads_history",
]
