"""Shared pieces of the device-runtime tests: the bundle's spec, its export, slates and bundle copies.

    from tests.helpers.device import SPEC, copy_bundle, make_slate, read_manifest
    manifest = read_manifest(device_bundle)        # the session fixture in tests/device_runtime/conftest.py

`device_bundle` exports a small untrained DIR model with cloud.export.write_bundle (ExecuTorch
XNNPACK + portable .pte, fp32 and int8 .tflite). The export takes a minute, so the verified result is
kept in pytest's cache under a key hashed from the exporting code (cloud/models, cloud/export,
shared_schema, this file) and the runtime versions; any change there exports afresh. Set
DIR_DEVICE_TEST_BUNDLE to a bundle directory to test a prebuilt bundle instead (e.g. on a device
without torch).
"""

from __future__ import annotations

import hashlib
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np

from shared_schema import (
    BundleManifest,
    CandidateItem,
    CandidateSlate,
    CategoricalField,
    DatasetSpec,
    DenseField,
    SourceCandidates,
    SourceSpec,
)
from shared_schema.manifest import MANIFEST_NAME

SPEC = DatasetSpec(
    name="device-test",
    sources=(
        SourceSpec(
            name="video",
            target_share=0.6,
            categorical=(CategoricalField(name="genre", vocab=8),),
            dense=(DenseField(name="emb", dim=3),),
        ),
        SourceSpec(name="article", target_share=0.4, categorical=(CategoricalField(name="topic", vocab=6),)),
    ),
    n=10,
    t=20,
    K=5,
)
EMBEDDING_VERSION = "emb-test-1"
REPO = Path(__file__).resolve().parents[2]


def build_bundle(out: Path, model_version: str = "test-1") -> Path:
    """Export a seeded, untrained DIR model for SPEC into `out` (needs torch and the export extras)."""
    import torch

    from cloud.export import write_bundle
    from cloud.models import build_model

    torch.manual_seed(0)
    model = build_model("dir", SPEC).eval()
    write_bundle(
        model,
        SPEC,
        out,
        quantize="int8",
        embedding_version=EMBEDDING_VERSION,
        model_version=model_version,
        progress=lambda *a, **k: None,
    )
    return out


def export_key() -> str:
    digest = hashlib.sha256()
    for folder in ("cloud/models", "cloud/export", "shared_schema"):
        for path in sorted((REPO / folder).glob("*.py")):
            digest.update(path.name.encode() + path.read_bytes())
    digest.update(Path(__file__).read_bytes())
    for dist in ("torch", "executorch", "litert-torch", "ai-edge-litert", "ai-edge-quantizer"):
        digest.update(f"{dist}={metadata.version(dist)}".encode())
    return digest.hexdigest()[:16]


def read_manifest(bundle: Path) -> BundleManifest:
    return BundleManifest.model_validate_json((bundle / MANIFEST_NAME).read_text(encoding="utf-8"))


def copy_bundle(bundle: Path, out: Path, **manifest_changes) -> Path:
    """Copy a bundle to `out`, optionally rewriting manifest fields (e.g. model_version="v2")."""
    shutil.copytree(bundle, out)
    if manifest_changes:
        manifest = read_manifest(out).model_copy(update=manifest_changes)
        (out / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    return out


def make_slate(
    manifest: BundleManifest,
    seed: int = 0,
    counts: list[int] | None = None,
    embedding_version: str | None = None,
    prefix: str = "",
) -> CandidateSlate:
    """A slate with `counts[s]` random candidates per source (default n each), ids like `video3`."""
    rng = np.random.default_rng(seed)
    counts = counts if counts is not None else [manifest.n] * len(manifest.sources)
    sources = []
    for name, dim, k in zip(manifest.source_names, manifest.vector_dims, counts):
        items = [
            CandidateItem(item_id=f"{prefix}{name}{i}", vector=rng.standard_normal(dim).tolist(), title=f"{name} #{i}")
            for i in range(k)
        ]
        sources.append(SourceCandidates(source=name, items=items))
    return CandidateSlate(
        user_id="u1",
        request_id=f"req-{seed}",
        sources=sources,
        embedding_version=embedding_version or manifest.embedding_version,
    )
