"""Run exported files with the real runtimes, one batch-1 request at a time.

    run = open_runner("BUNDLE/model.pte", layout)                # ExecuTorch
    run = open_runner("BUNDLE/model_int8.tflite", layout, xnnpack=False, threads=1)
    scores = run(layout.assemble(candidates, histories))      # np.ndarray [1, m, n] float32
    run = open_runner("BUNDLE/model.tflite", layout, outputs=("scores", "matching", "encodings"))
    scores, matching, encodings = run(request)                # every output named, in that order

Quantized (int8) inputs and outputs are (de)quantized here with each tensor's scale and zero point,
so callers always feed and receive float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from shared_schema.layout import TensorLayout

Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


def open_runner(path: str | Path, layout: TensorLayout, xnnpack: bool = True, threads: int = 1,
                outputs: Sequence[str] | None = None) -> Runner:
    """A runner for a .pte or .tflite file; `xnnpack`/`threads` apply to .tflite (a .pte is lowered already).

    It returns `scores`, or with `outputs` (the names the model returns, in its order, `scores` first) a
    list of every output in that order.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    if path.suffix == ".pte":
        return executorch_runner(path, layout, outputs)
    if path.suffix == ".tflite":
        return tflite_runner(path, xnnpack=xnnpack, threads=threads, outputs=outputs)
    raise ValueError(f"{path}: unknown model file type {path.suffix!r}; expected .pte or .tflite")


def executorch_runner(path: Path, layout: TensorLayout, outputs: Sequence[str] | None = None) -> Runner:
    """Load `path` with executorch.runtime.Runtime; inputs are fed in layout order, outputs come in the
    model's return order."""
    import torch
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(path).load_method("forward")
    names = layout.input_names()

    def run(inputs: dict[str, np.ndarray]):
        result = method.execute([torch.tensor(inputs[name], dtype=torch.float32) for name in names])
        return result[0].numpy() if outputs is None else [out.numpy() for out in result]

    return run


def tflite_runner(path: Path, xnnpack: bool = True, threads: int = 1, outputs: Sequence[str] | None = None) -> Runner:
    """Load `path` with ai_edge_litert; without `xnnpack` only the builtin CPU kernels run. Outputs are
    read by signature name."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver)
    signature = interpreter.get_signature_runner()
    in_details = signature.get_input_details()
    names = ["scores"] if outputs is None else list(outputs)
    out_details = signature.get_output_details()
    missing = [name for name in names if name not in out_details]
    if missing:
        raise ValueError(f"{path}: the signature has no outputs {missing} (it has {sorted(out_details)})")

    def run(inputs: dict[str, np.ndarray]):
        feed = {name: _quantize(inputs[name], detail) for name, detail in in_details.items()}
        result = signature(**feed)
        values = [_dequantize(result[name], out_details[name]) for name in names]
        return values[0] if outputs is None else values

    return run


def _quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return np.ascontiguousarray(values, np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale) + zero_point, info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    if np.dtype(detail["dtype"]) == np.float32:
        return values
    scale, zero_point = detail["quantization"]
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)
