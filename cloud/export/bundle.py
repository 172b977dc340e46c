"""Write a model bundle (docs/export.md): the device model exported for each runtime + manifest.json.

    manifest = write_bundle(model, spec, "out/bundle", backends=("executorch", "tflite"), quantize="int8",
                            embedding_version=run.embedding_version, metrics=run.metrics)
    print(summary(manifest))

Only `model.export_module()` is exported (the device model: the embedding split); the item encoder's tables
stay in the cloud. The manifest's `decoder` is the model's `device_decoder` (how the device builds the list,
shared_schema.manifest.DECODERS), its options filled in with the defaults; a decoder that reads outputs
after `scores` (NAR4Rec's `contrastive`: `matching`, `encodings`) gets them exported, parity-checked and
listed in `outputs` after `scores`. A `merge` bundle's manifest leaves the two fields out, so runtimes
older than them still read it.
Files: model.pte (ExecuTorch, XNNPACK), model_portable.pte (ExecuTorch portable kernels), model.tflite
(LiteRT, fp32, batch 1); quantize="int8" adds model_int8.tflite (full int8, for NPUs) and
quantize="int8-dynamic" model_int8_dynamic.tflite and model_int8_dynamic.pte (int8 weights, float
activations; the .pte via PT2E, XNNPACK-delegated), each for the backends asked for. Each file is loaded back
with its real runtime and compared with eager PyTorch on the parity cases (cloud/export/parity.py); an
fp32 file above `parity_tolerance` fails the export. The same measure for item vectors rounded to float16
(the float16 wire form), on the parity cases and on requests of the item encoder's own vectors, goes in the
manifest's metrics (`float16_vectors_max_abs_diff`). Everything is written to a temporary folder that
replaces `out_dir` at the end (shared_schema.files.replace_dir), so a failed export leaves nothing behind.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from cloud.export.capture import ExportError, capture, output_specs
from cloud.export.executorch import lower_executorch
from cloud.export.parity import eager_runner, float16_vectors, max_abs_diff, open_runner, parity_cases
from cloud.export.pt2e import quantize_program
from cloud.export.quantize import as_requests, encoder_calibration, quantize_tflite
from cloud.export.tflite import convert_tflite
from cloud.models.base import count_parameters
from cloud.training import runs
from shared_schema.files import file_sha256, replace_dir
from shared_schema.manifest import (
    DECODERS,
    FLOAT16_METRIC,
    MANIFEST_NAME,
    BundleFile,
    BundleManifest,
    decoder_settings,
)
from shared_schema.specs import DatasetSpec

BACKENDS = ("executorch", "tflite")
QUANTIZE = ("int8", "int8-dynamic")
QUANTIZED_FILES = {  # (backend, mode): (file, note)
    ("tflite", "int8"): (
        "model_int8.tflite",
        "full int8 (weights and activations; ai-edge-quantizer "
        "static_wi8_ai8) for NPUs; its inputs and output are int8: (de)quantize with each "
        "tensor's scale and zero point",
    ),
    ("tflite", "int8-dynamic"): (
        "model_int8_dynamic.tflite",
        "int8 weights, float32 activations and I/O (ai-edge-quantizer dynamic_wi8_afp32) for CPUs",
    ),
    ("executorch", "int8-dynamic"): (
        "model_int8_dynamic.pte",
        "int8 weights per channel, activations "
        "quantized per call, float32 I/O (PT2E XNNPACKQuantizer, dynamic), "
        "XNNPACK-delegated",
    ),
}
"""Static int8 has no .pte: XNNPACK's partitioner rejects the statically quantized DIR graph
("Invalid partition, found dependency cycles"; ExecuTorch 1.4.1)."""
PARITY_TOLERANCE = 1e-5
FLOAT16_REQUESTS = 256
"""Requests of the model's own item vectors (random items) on which the float16 effect is measured too."""
EXPORTERS = ("torch", "executorch", "litert-torch", "ai-edge-quantizer")


@dataclass
class _File:
    """One file to make: `make(program, folder)` returns its bytes and the ops left outside its delegate."""

    path: str
    runtime: str
    delegate: str
    quantization: str
    stage: str
    make: Callable[[torch.export.ExportedProgram, Path], tuple[bytes, dict[str, int]]]
    parity: float | None = None


def write_bundle(
    model,
    spec: DatasetSpec,
    out_dir: str | Path,
    backends: Sequence[str] | str = BACKENDS,
    quantize: Sequence[str] | str | None = None,
    embedding_version: str | None = None,
    model_version: str | None = None,
    metrics: Mapping | None = None,
    calibration_inputs: Iterable | None = None,
    model_name: str | None = None,
    decoder_options: Mapping[str, float | int] | None = None,
    overwrite: bool = False,
    parity_tolerance: float = PARITY_TOLERANCE,
    progress: Callable[..., None] = functools.partial(print, flush=True),
) -> BundleManifest:
    """Export `model.export_module()` into the bundle folder `out_dir` and return its manifest.

    `model` is a RerankModel (item_encoder + device_model + layout; its device model is put in eval
    mode); `backends` any of "executorch",
    "tflite"; `quantize` any of "int8", "int8-dynamic". `embedding_version` defaults to a hash of the
    item encoder's tables, `model_version` to a hash of the device model's weights; `metrics` are the
    run's quality metrics (nested dicts flattened with '.'). `calibration_inputs` ("int8" only): real
    inputs, dicts or tuples in layout order of any batch size (default: item-encoder vectors of random
    items). `decoder_options` override the model's `device_decoder_options` (e.g. {"beam_width": 8} for
    SVR). `progress` is print-like: called with end="" as a stage starts ("[2/6] lowering to
    ExecuTorch (XNNPACK)...") and again as it ends (" 12.3 s").
    """
    backends = _names(backends, BACKENDS, "backends")
    quantize = _names(quantize or (), QUANTIZE, "quantize", allow_empty=True)
    for mode in quantize:
        makers = [b for b in BACKENDS if (b, mode) in QUANTIZED_FILES]
        if not set(makers) & set(backends):
            raise ValueError(
                f"quantize={mode!r} makes files for {makers} only: add {' or '.join(map(repr, makers))} to backends"
            )
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; choose another --out or pass overwrite=True (--force)")
    layout = _check_layout(model, spec)
    decoder = model.device_decoder
    settings = decoder_settings(decoder, {**model.device_decoder_options, **(decoder_options or {})})
    names = ("scores", *DECODERS[decoder].outputs)
    model.device_model.eval()
    exported = model.export_module().eval()
    calibration = []
    if "int8" in quantize:
        calibration = (
            as_requests(calibration_inputs, layout) if calibration_inputs is not None else encoder_calibration(model)
        )
    files = _plan(backends, quantize, exported, layout, calibration, names)
    cases = parity_cases(layout)
    reference = eager_runner(exported, layout)
    notes: dict[str, str] = {}
    total = len(files) + 3
    with replace_dir(out_dir, overwrite) as tmp:
        with _stage(progress, 1, total, "capturing the device model (torch.export)"):
            program = capture(exported, layout, names)
            outputs = output_specs(program, layout, names)
        for i, f in enumerate(files, start=2):
            with _stage(progress, i, total, f.stage):
                data, left = f.make(program, tmp)
                (tmp / f.path).write_bytes(data)
            if left:
                notes[f"non_delegated_ops.{f.path}"] = "; ".join(f"{op} x{count}" for op, count in left.items())
        with _stage(progress, total - 1, total, f"parity vs eager PyTorch ({len(cases)} cases per file)"):
            for f in files:
                f.parity = _parity(tmp / f.path, f.runtime, reference, cases, layout, outputs)
                if f.quantization == "fp32" and not f.parity <= parity_tolerance:
                    raise ExportError(
                        f"{f.path}: max abs diff {f.parity:.3g} vs eager PyTorch exceeds "
                        f"{parity_tolerance:g} on the parity cases; the export is not trusted"
                    )
            encoded = [(f"encoder_{i}", r) for i, r in enumerate(encoder_calibration(model, FLOAT16_REQUESTS))]
            float16_effect = max_abs_diff(reference, float16_vectors(reference, layout), cases + encoded, layout)
        with _stage(progress, total, total, f"writing {MANIFEST_NAME}"):
            notes.update(
                {
                    f"quantization.{f.path}": QUANTIZED_FILES[f.runtime, f.quantization][1]
                    for f in files
                    if f.quantization != "fp32"
                }
            )
            if calibration:
                notes["int8_calibration"] = (
                    f"{len(calibration)} requests from "
                    + (
                        "the given calibration inputs"
                        if calibration_inputs is not None
                        else "item-encoder vectors of random items"
                    )
                    + ", padded slots as given"
                )
            manifest = _manifest(
                model,
                spec,
                layout,
                files,
                tmp,
                embedding_version,
                model_version,
                metrics,
                model_name,
                notes,
                len(cases),
                outputs,
                settings,
                float16_effect,
            )
            plain = manifest.decoder == "merge" and not manifest.decoder_options
            (tmp / MANIFEST_NAME).write_text(
                manifest.model_dump_json(indent=2, exclude={"decoder", "decoder_options"} if plain else None)
            )
    return manifest


def _plan(backends, quantize, module, layout, calibration, names) -> list[_File]:
    files = []
    if "executorch" in backends:
        for xnnpack, path, what in ((True, "model.pte", "XNNPACK"), (False, "model_portable.pte", "portable kernels")):
            files.append(
                _File(
                    path,
                    "executorch",
                    "xnnpack" if xnnpack else "portable",
                    "fp32",
                    f"lowering to ExecuTorch ({what})",
                    functools.partial(_lower, xnnpack=xnnpack),
                )
            )
    if "tflite" in backends:
        files.append(
            _File(
                "model.tflite",
                "tflite",
                "any",
                "fp32",
                "converting to TFLite (litert-torch)",
                lambda program, folder: (convert_tflite(module, layout, names), {}),
            )
        )
    for mode in quantize:
        if ("tflite", mode) in QUANTIZED_FILES and "tflite" in backends:
            detail = f", {len(calibration)} calibration requests" if mode == "int8" else ""
            files.append(
                _File(
                    QUANTIZED_FILES["tflite", mode][0],
                    "tflite",
                    "any",
                    mode,
                    f"quantizing to {mode} (ai-edge-quantizer{detail})",
                    functools.partial(_quantize, mode=mode, calibration=calibration),
                )
            )
        if ("executorch", mode) in QUANTIZED_FILES and "executorch" in backends:
            files.append(
                _File(
                    QUANTIZED_FILES["executorch", mode][0],
                    "executorch",
                    "xnnpack",
                    mode,
                    f"quantizing to {mode} and lowering to ExecuTorch (PT2E, XNNPACK)",
                    functools.partial(_lower, xnnpack=True, mode=mode, layout=layout),
                )
            )
    return files


def _lower(program, folder: Path, xnnpack: bool, mode: str | None = None, layout=None) -> tuple[bytes, dict[str, int]]:
    if mode is not None:
        program = quantize_program(program, layout, mode)
    lowered = lower_executorch(program, xnnpack=xnnpack)
    return lowered.buffer, lowered.non_delegated


def _quantize(program, folder: Path, mode: str, calibration: list) -> tuple[bytes, dict[str, int]]:
    return quantize_tflite((folder / "model.tflite").read_bytes(), mode, calibration), {}


def summary(manifest: BundleManifest) -> str:
    """Human-readable table of a bundle: parameter split, files, sizes, parity, ops left outside XNNPACK."""
    mt = manifest.metrics
    lines = [
        f"bundle {manifest.model_name} {manifest.model_version} (embedding {manifest.embedding_version}): "
        f"m={len(manifest.sources)} n={manifest.n} t={manifest.t} vector_dims={manifest.vector_dims}"
    ]
    if "params_device" in mt:
        lines.append(
            f"parameters: device {int(mt['params_device']):,} exported | cloud {int(mt['params_cloud']):,} "
            f"(embedding tables) -> {mt['cloud_param_share']:.1%} of parameters stay in the cloud"
        )
    if manifest.decoder != "merge":
        extra = ", ".join(f"{o.name} {list(o.shape)}" for o in manifest.outputs[1:]) or "none"
        lines.append(f"device decoder: {manifest.decoder} {manifest.decoder_options}; outputs after scores: {extra}")
    lines.append(f"{'file':<27}{'runtime':<12}{'delegate':<10}{'quantization':<14}{'size':>11}  parity max|diff|")
    for f in manifest.files:
        parity = "-" if f.parity_max_abs_diff is None else f"{f.parity_max_abs_diff:.2e}"
        lines.append(
            f"{f.path:<27}{f.runtime:<12}{f.delegate:<10}{f.quantization:<14}{f.size / 1024:>8.1f} KB  {parity}"
        )
    for key, ops in manifest.notes.items():
        if key.startswith("non_delegated_ops."):
            lines.append(f"not delegated in {key.split('.', 1)[1]}: {ops}")
    return "\n".join(lines)


def _names(value: Sequence[str] | str, known: Sequence[str], what: str, allow_empty: bool = False) -> tuple[str, ...]:
    """'a,b' or ['a', 'b'] -> ('a', 'b'), each one of `known`."""
    names = tuple(v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip())
    unknown = [v for v in names if v not in known]
    if unknown or not (names or allow_empty):
        raise ValueError(f"{what}: unknown {unknown or 'empty list'}; choose from {list(known)}")
    return tuple(dict.fromkeys(names))


def _check_layout(model, spec: DatasetSpec):
    layout = model.layout
    dims = tuple(model.item_encoder.vector_dims())
    if (layout.n, layout.t, layout.m) != (spec.n, spec.t, spec.m) or tuple(layout.vector_dims) != dims:
        raise ValueError(
            f"model layout (m={layout.m}, n={layout.n}, t={layout.t}, dims={list(layout.vector_dims)}) "
            f"does not match spec (m={spec.m}, n={spec.n}, t={spec.t}) / item encoder dims {list(dims)}: "
            "build the model from the same DatasetSpec"
        )
    return layout


def _parity(path: Path, runtime: str, reference, cases, layout, outputs) -> float:
    """Max abs diff of every output vs eager, through the device's backend; a .tflite runs with or without
    XNNPACK on the device: both."""
    modes = (True, False) if runtime == "tflite" else (True,)
    return max(
        max_abs_diff(reference, open_runner(path, layout, xnnpack=x, outputs=outputs), cases, layout) for x in modes
    )


def _manifest(
    model,
    spec,
    layout,
    files,
    folder,
    embedding_version,
    model_version,
    metrics,
    model_name,
    notes,
    n_cases,
    outputs,
    decoder_options,
    float16_effect,
) -> BundleManifest:
    counts = count_parameters(model)
    cloud, device = counts["cloud"], counts["device"]
    numbers = {
        **_flatten(metrics or {}),
        "params_device": float(device),
        "params_cloud": float(cloud),
        "cloud_param_share": cloud / max(cloud + device, 1),
        FLOAT16_METRIC: float16_effect,
    }
    notes = {
        "embedding_split": f"only the device model is exported ({device} parameters); the item encoder's "
        f"embedding tables ({cloud} parameters, {numbers['cloud_param_share']:.1%}) stay in the "
        "cloud",
        "parity": f"max abs diff (relative where |eager| > 1) vs eager PyTorch fp32 over real candidate slots of "
        f"{n_cases} batch-1 cases, "
        "every output (full, random, empty history per source, no candidates per source, all histories "
        "empty, one candidate per source); .tflite checked with and without XNNPACK",
        FLOAT16_METRIC: "the same measure for eager PyTorch fed item vectors rounded to float16 (the float16 "
        f"wire form) against float32, over the parity cases and {FLOAT16_REQUESTS} requests of item-encoder "
        "vectors of random items; a device client asks for float16 vectors when it is within its tolerance",
        "exporters": ", ".join(f"{name} {_version(name)}" for name in EXPORTERS),
        **notes,
    }
    return BundleManifest(
        model_name=model_name or getattr(model, "name", None) or type(model).__name__.lower(),
        model_version=model_version or runs.weights_digest(model.device_model),
        sources=list(spec.sources),
        vector_dims=list(layout.vector_dims),
        n=layout.n,
        t=layout.t,
        K=spec.K,
        target_shares=spec.target_shares,
        embedding_version=embedding_version or runs.embedding_version(model),
        inputs=layout.input_specs(1),
        outputs=outputs,
        decoder=model.device_decoder,
        decoder_options=decoder_options,
        files=[
            BundleFile(
                path=f.path,
                sha256=file_sha256(folder / f.path),
                size=(folder / f.path).stat().st_size,
                runtime=f.runtime,
                delegate=f.delegate,
                quantization=f.quantization,
                parity_max_abs_diff=f.parity,
            )
            for f in files
        ],
        metrics=numbers,
        notes=notes,
    )


def _flatten(metrics: Mapping, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


class _stage:
    """Prints `[i/n] what... 12.3 s` around one export stage."""

    def __init__(self, progress, index: int, total: int, what: str):
        self.progress, self.label = progress, f"[{index}/{total}] {what}..."

    def __enter__(self):
        self.start = time.perf_counter()
        self.progress(self.label, end="")

    def __exit__(self, kind, exc, tb):
        elapsed = time.perf_counter() - self.start
        self.progress(f" {elapsed:.1f} s" + (" FAILED" if kind else ""))
        return False
