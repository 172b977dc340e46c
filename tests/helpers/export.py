"""Shared pieces of the export tests: a small three-source spec and a seeded, untrained DIR for it.

    from tests.helpers.export import SPEC, small_dir, quiet, shared_bundle
    model = small_dir()
    write_bundle(model, SPEC, tmp / "bundle", progress=quiet)
    bundle = shared_bundle(tmp_path_factory)    # all backends and int8 variants, once per session

Three sources with different vector widths (d = 8, 7, 12), n = 4, t = 3: small enough that a full
export takes seconds, with padding and per-source dims like the real layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared_schema import CategoricalField, DatasetSpec, DenseField, SourceSpec

SPEC = DatasetSpec(
    name="export-test",
    sources=(
        SourceSpec(
            name="video",
            target_share=0.5,
            categorical=(CategoricalField(name="item", vocab=50), CategoricalField(name="genre", vocab=6)),
        ),
        SourceSpec(
            name="news",
            target_share=0.3,
            categorical=(CategoricalField(name="item", vocab=40),),
            dense=(DenseField(name="emb", dim=3),),
        ),
        SourceSpec(
            name="ads",
            target_share=0.2,
            categorical=(
                CategoricalField(name="item", vocab=30),
                CategoricalField(name="brand", vocab=5),
                CategoricalField(name="cat", vocab=4),
            ),
        ),
    ),
    n=4,
    t=3,
    K=2,
)


def small_dir(seed: int = 0, name: str = "dir"):
    """A seeded, untrained registry model `name` for SPEC (embedding 4, hidden 8), in eval mode."""
    import torch

    from cloud.models import build_model

    torch.manual_seed(seed)
    return build_model(name, SPEC, embedding_dim=4, hidden=8, mlp_dims=(8, 8)).eval()


def quiet(*args, **kwargs) -> None:
    """A `progress` callback that prints nothing."""


@dataclass
class Exported:
    """A bundle of `small_dir()`: its folder, manifest, model, printed progress lines and what it holds."""

    path: Path
    manifest: object
    model: object
    progress: list[str]
    backends: tuple[str, ...]
    quantize: tuple[str, ...]


_BUILT: list[Exported] = []
RUN_METRICS = {"test": {"auc": 0.71, "ndcg@2": 0.5}, "epochs": 3}
ALL_BACKENDS = ("executorch", "tflite")
ALL_QUANTIZE = ("int8", "int8-dynamic")


def shared_bundle(tmp_path_factory, backends=ALL_BACKENDS, quantize=ALL_QUANTIZE) -> Exported:
    """A bundle of small_dir() with at least `backends` and `quantize`: one already exported in this
    session when one has them (the full one when test files run together), else a fresh export."""
    for built in _BUILT:
        if set(backends) <= set(built.backends) and set(quantize) <= set(built.quantize):
            return built
    from cloud.export import write_bundle

    model = small_dir()
    out = tmp_path_factory.mktemp("export") / "bundle"
    lines: list[str] = []
    manifest = write_bundle(
        model,
        SPEC,
        out,
        backends=backends,
        quantize=quantize,
        metrics=RUN_METRICS,
        model_version="test-1",
        progress=lambda text, end="\n": lines.append(text + end),
    )
    _BUILT.append(Exported(out, manifest, model, "".join(lines).splitlines(), tuple(backends), tuple(quantize)))
    return _BUILT[-1]
