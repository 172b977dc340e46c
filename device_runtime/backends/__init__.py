"""Inference backends (TFLite, ExecuTorch) with delegate choice and an `auto` fallback order.

    backend = load_backend("bundle/", manifest)                        # auto: first that runs
    backend = load_backend("bundle/", manifest, "tflite", "edgetpu")   # exactly this, or BackendError
    scores = backend.run(inputs)            # float32 [1, m, n]
    scores, *extra = backend.run_all(inputs)   # every output of manifest.outputs, in that order
    backend.name, backend.delegate          # what actually ran
    backend.attempts                        # [(backend, delegate, "ok" or the loader's error), ...]
    load_backend("bundle/", manifest, "tflite", "edgetpu", quantization="int8")  # an int8 file only

Each attempt loads the bundle file made for that runtime/delegate and runs it once on zeros, so a
delegate that loads but cannot execute the model falls through to the next one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from device_runtime.backends.base import Backend, BackendError
from shared_schema import BundleFile, BundleManifest

BACKENDS = ("tflite", "executorch")
DEFAULT_ORDER = (
    "tflite:edgetpu",
    "tflite:gpu",
    "tflite:xnnpack",
    "executorch:xnnpack",
    "tflite:cpu",
    "executorch:portable",
)
"""What `auto` tries, first to last: NPU/GPU delegates, then XNNPACK, then plain CPU kernels."""

_GENERIC_TFLITE = ("cpu", "xnnpack", "any")

__all__ = ["BACKENDS", "DEFAULT_ORDER", "Backend", "BackendError", "load_backend", "plan", "pick_file"]


def plan(backend: str = "auto", delegate: str = "auto", order: Sequence[str] = DEFAULT_ORDER) -> list[tuple[str, str]]:
    """The (backend, delegate) pairs to try for a request, in order."""
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"backend {backend!r}: use one of {['auto', *BACKENDS]}")
    if backend != "auto" and delegate != "auto":
        return [(backend, delegate)]
    pairs = []
    for entry in order:
        name, sep, deleg = entry.partition(":")
        if name not in BACKENDS or not sep or not deleg:
            raise ValueError(f"order entry {entry!r}: write BACKEND:DELEGATE with BACKEND in {list(BACKENDS)}")
        pairs.append((name, deleg))
    if delegate != "auto":
        return [(name, delegate) for name in BACKENDS if backend in ("auto", name)]
    return [p for p in pairs if backend in ("auto", p[0])]


def pick_file(manifest: BundleManifest, backend: str, delegate: str, quantization: str | None = None) -> BundleFile:
    """The bundle file for `backend` and `delegate` (and `quantization`, e.g. "int8"; default: fp32 first).

    ExecuTorch programs are lowered per delegate (`cpu` means `portable`); a TFLite model takes any
    delegate at load time, so a generic (cpu/xnnpack) file serves when none is made for it.
    """
    files = [f for f in manifest.files if f.runtime == backend and quantization in (None, f.quantization)]
    if backend == "executorch":
        wanted = {"cpu", "portable"} if delegate in ("cpu", "portable") else {delegate}
        matches = [f for f in files if f.delegate in wanted]
    else:
        matches = [f for f in files if f.delegate == delegate] or [f for f in files if f.delegate in _GENERIC_TFLITE]
    if not matches:
        have = [f"{f.path} [{f.runtime}/{f.delegate}/{f.quantization}]" for f in manifest.files]
        quant = f" and quantization {quantization!r}" if quantization else ""
        raise ValueError(f"the bundle carries no {backend} file for delegate {delegate!r}{quant} (it has {have})")
    return sorted(matches, key=lambda f: f.quantization != "fp32")[0]


def load_backend(
    bundle_dir: str | os.PathLike[str],
    manifest: BundleManifest,
    backend: str = "auto",
    delegate: str = "auto",
    threads: int = 1,
    order: Sequence[str] = DEFAULT_ORDER,
    delegate_options: Mapping[str, str] | None = None,
    quantization: str | None = None,
) -> Backend:
    """Load the first (backend, delegate) of the plan that loads and runs; BackendError if none does."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    attempts: list[tuple[str, str, str]] = []
    for name, deleg in plan(backend, delegate, order):
        try:
            path = Path(bundle_dir) / pick_file(manifest, name, deleg, quantization).path
            loaded = _open(path, manifest, name, deleg, threads, delegate_options)
            loaded.warm_up()
        except Exception as exc:  # native loaders raise OSError, ValueError, RuntimeError...: record, go on
            attempts.append((name, deleg, f"{type(exc).__name__}: {exc}".strip()))
            continue
        attempts.append((name, deleg, "ok"))
        loaded.attempts = attempts
        return loaded
    tried = "; ".join(f"{b}:{d} -> {err}" for b, d, err in attempts)
    raise BackendError(f"no backend could run the bundle in {bundle_dir}: {tried}")


def _open(
    path: Path,
    manifest: BundleManifest,
    backend: str,
    delegate: str,
    threads: int,
    delegate_options: Mapping[str, str] | None,
) -> Backend:
    inputs, outputs = manifest.inputs, manifest.outputs
    if backend == "tflite":
        from device_runtime.backends.tflite import open_tflite

        return open_tflite(path, inputs, outputs, delegate, threads, delegate_options)
    from device_runtime.backends.executorch import open_executorch

    return open_executorch(path, inputs, outputs, delegate, threads)
