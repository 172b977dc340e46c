"""Parity inputs, the parity measure, and the two sides it compares for exported device models.

    cases = parity_cases(layout)                      # [(case name, {input name: array [1, ...]}), ...]
    diff = max_abs_diff(eager_runner(device_model, layout), open_runner(path, layout), cases, layout)
    diff = max_abs_diff(eager_runner(model.export_module(), layout), open_runner(path, layout, outputs=specs),
                        cases, layout)        # a model with extra outputs: every output compared
    effect = max_abs_diff(reference, float16_vectors(reference, layout), cases, layout)  # float16 on the wire
    run = open_runner("BUNDLE/model_int8.tflite", layout, xnnpack=False, threads=1)
    scores = run(layout.assemble(candidates, histories))      # np.ndarray [1, m, n] float32

`open_runner` loads the exported file with the device runtime's own backends (device_runtime.backends:
the same interpreter set-up, input binding and int8 (de)quantisation the device runs), so what the export
checks is what the device executes; callers always feed and receive float32.

The cases cover random lists and the padded / cold-start situations the device meets: a source with an
empty history (all-zero history mask), a source with no candidates, and partially padded lists. Scores
are compared on real candidate slots only: the layout says padded slots are meaningless; extra outputs
([1, m*n, k], one row per flat candidate s*n + j) on the rows of real candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from device_runtime.backends.base import Backend
from shared_schema.layout import TensorLayout, TensorSpec

Inputs = dict[str, np.ndarray]
Runner = Callable[[Inputs], np.ndarray | list[np.ndarray]]


def random_inputs(layout: TensorLayout, rng: np.random.Generator, cand_len=None, hist_len=None) -> Inputs:
    """One batch-1 request: N(0, 1) vectors, the first `cand_len[s]` / `hist_len[s]` slots real (default random)."""
    out: Inputs = {}
    for s, d in enumerate(layout.vector_dims):
        for part, length, real in (("cand", layout.n, cand_len), ("hist", layout.t, hist_len)):
            k = int(rng.integers(1, length + 1)) if real is None else int(real[s])
            mask = np.zeros((1, length), np.float32)
            mask[0, :k] = 1.0
            out[f"{part}_{s}"] = rng.standard_normal((1, length, d)).astype(np.float32) * mask[..., None]
            out[f"{part}_mask_{s}"] = mask
    return {name: out[name] for name in layout.input_names()}


def parity_cases(layout: TensorLayout, seed: int = 0, random_cases: int = 8) -> list[tuple[str, Inputs]]:
    """Named batch-1 cases: full lists, random lists, cold sources, empty sources, partial padding."""
    rng = np.random.default_rng(seed)
    m, n, t = layout.m, layout.n, layout.t
    cases = [("full", random_inputs(layout, rng, [n] * m, [t] * m))]
    cases += [(f"random_{i}", random_inputs(layout, rng)) for i in range(random_cases)]
    for s in range(m):
        cold = [0 if j == s else t for j in range(m)]
        cases.append((f"empty_history_{s}", random_inputs(layout, rng, [n] * m, cold)))
        if m > 1:  # a list needs at least one real candidate somewhere
            empty = [0 if j == s else n for j in range(m)]
            cases.append((f"no_candidates_{s}", random_inputs(layout, rng, empty, None)))
    cases.append(("all_histories_empty", random_inputs(layout, rng, [n] * m, [0] * m)))
    cases.append(("one_candidate_each", random_inputs(layout, rng, [1] * m, [1] * m)))
    return cases


def real_slots(inputs: Inputs, layout: TensorLayout) -> np.ndarray:
    """Boolean [1, m, n]: True where a candidate slot is real."""
    return np.stack([inputs[f"cand_mask_{s}"] for s in range(layout.m)], axis=1) > 0


def max_abs_diff(reference: Runner, candidate: Runner, cases: list[tuple[str, Inputs]], layout: TensorLayout) -> float:
    """Largest |reference - candidate| / max(1, |reference|) over the real candidate slots (rows) of every
    output of all cases (inf if not finite): the absolute difference, relative where the reference exceeds
    1 in size (a logit of 13.8 carries float32 noise of ~1e-6 x 13.8). Runners return `scores` or a list of
    outputs, `scores` first."""
    worst = 0.0
    for name, inputs in cases:
        ref, got = _outputs(reference(inputs)), _outputs(candidate(inputs))
        if len(got) != len(ref):
            raise ValueError(f"parity case {name!r}: {len(got)} outputs, the reference returns {len(ref)}")
        keep = real_slots(inputs, layout)
        for i, (a, b) in enumerate(zip(ref, got, strict=True)):
            if b.shape != a.shape:
                raise ValueError(
                    f"parity case {name!r}: output {i} has shape {list(b.shape)}, expected {list(a.shape)}"
                )
            rows = keep if i == 0 else keep.reshape(1, -1)  # extra outputs: one row per flat candidate
            ref_rows = a[rows].astype(np.float64)
            diff = np.abs(ref_rows - b[rows].astype(np.float64)) / np.maximum(1.0, np.abs(ref_rows))
            worst = max(worst, float(diff.max(initial=0.0)) if np.isfinite(diff).all() else float("inf"))
    return worst


def float16_vectors(runner: Runner, layout: TensorLayout) -> Runner:
    """`runner` fed item vectors rounded to float16, as the float16 wire form delivers them (masks as given)."""
    vectors = {f"{part}_{s}" for part in ("cand", "hist") for s in range(layout.m)}

    def run(inputs: Inputs):
        return runner(
            {name: a.astype(np.float16).astype(np.float32) if name in vectors else a for name, a in inputs.items()}
        )

    return run


def eager_runner(device_model, layout: TensorLayout) -> Runner:
    """Run the PyTorch model on one request (the parity reference): scores, or a list when it returns a tuple."""
    import torch

    def run(inputs: Inputs):
        with torch.no_grad():
            args = [torch.from_numpy(inputs[name]) for name in layout.input_names()]
            result = device_model(*args)
            return [r.numpy() for r in result] if isinstance(result, tuple) else result.numpy()

    return run


def open_runner(
    path: str | Path,
    layout: TensorLayout,
    xnnpack: bool = True,
    threads: int = 1,
    outputs: Sequence[TensorSpec] | None = None,
) -> Runner:
    """Run a .pte or .tflite file through the device backend for its runtime; `xnnpack` picks the .tflite
    delegate (XNNPACK, or the builtin CPU kernels; a .pte is lowered already). It returns `scores`, or with
    `outputs` (the file's output specs, `scores` first, as the manifest lists them) every output in that order.
    """
    from device_runtime.backends.executorch import open_executorch
    from device_runtime.backends.tflite import open_tflite

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    specs = list(outputs) if outputs is not None else layout.output_specs(1)
    backend: Backend
    if path.suffix == ".pte":
        backend = open_executorch(path, layout.input_specs(1), specs, "as-lowered", threads)
    elif path.suffix == ".tflite":
        backend = open_tflite(path, layout.input_specs(1), specs, "xnnpack" if xnnpack else "cpu", threads)
    else:
        raise ValueError(f"{path}: unknown model file type {path.suffix!r}; expected .pte or .tflite")
    backend.warm_up()
    return backend.run if outputs is None else backend.run_all


def _outputs(result) -> list[np.ndarray]:
    return [np.asarray(r) for r in result] if isinstance(result, (list, tuple)) else [np.asarray(result)]
