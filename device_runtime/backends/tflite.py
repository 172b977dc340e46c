"""LiteRT / TFLite backend: `ai_edge_litert` (or `tflite_runtime` when that is what is installed).

    backend = open_tflite(Path("bundle/model.tflite"), manifest.inputs, manifest.outputs, "xnnpack")

Delegates: `cpu` (builtin kernels, no default delegate), `xnnpack` (the interpreter's default XNNPACK
delegate), or an external delegate by name (`edgetpu`, `armnn`, `qnn`, `gpu`) or by library path,
loaded with `load_delegate`.

Outputs are bound to the manifest's output names through the signature (whose outputs LiteRT lists by
name, not in the order the PyTorch model returned them); a file without matching names has its outputs
bound by shape, each manifest output to the one output of its shape.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from device_runtime.backends.base import Backend
from shared_schema import TensorSpec

EXTERNAL_DELEGATES = {
    "edgetpu": "libedgetpu.so.1",
    "armnn": "libarmnnDelegate.so",
    "qnn": "libQnnTFLiteDelegate.so",
    "gpu": "libtensorflowlite_gpu_delegate.so",
}
"""Delegate names and the shared library each one loads (any other path works too)."""

_POSITIONAL = re.compile(r"^args_(\d+)$")

Detail = dict[str, Any]
"""One tensor's details as the interpreter reports them (name, index, shape, dtype, quantization...)."""


def interpreter_module() -> ModuleType:
    """The installed interpreter module: ai_edge_litert first, then tflite_runtime."""
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        try:
            from tflite_runtime import interpreter
        except ImportError as exc:
            raise ImportError(
                "no TFLite interpreter installed; `pip install dir-rerank[device-tflite]` (ai-edge-litert)"
            ) from exc
    module: ModuleType = interpreter
    return module


def delegate_library(delegate: str) -> str | None:
    """Shared library for an external delegate name or path; None for `cpu` and `xnnpack`."""
    if delegate in ("cpu", "xnnpack"):
        return None
    if delegate in EXTERNAL_DELEGATES:
        return EXTERNAL_DELEGATES[delegate]
    if "/" in delegate or delegate.endswith((".so", ".dylib", ".dll")) or ".so." in delegate:
        return delegate
    known = ["cpu", "xnnpack", *EXTERNAL_DELEGATES]
    raise ValueError(f"unknown TFLite delegate {delegate!r}; use one of {known} or a delegate library path")


class TFLiteBackend(Backend):
    """A TFLite interpreter whose inputs are bound to the manifest's input names.

    A quantized model's integer inputs/outputs are (de)quantized with each tensor's scale and zero
    point, so callers always feed and receive float32 as the manifest says.
    """

    name = "tflite"

    def __init__(
        self,
        path: Path,
        delegate: str,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        interpreter: Any,  # the LiteRT Interpreter (the package ships no type information)
        input_details: list[Detail],
        output_details: list[Detail],
    ) -> None:
        super().__init__(path, delegate, inputs, outputs)
        self._interpreter = interpreter
        self._inputs = [(d["index"], _quantizer(d)) for d in input_details]
        self._outputs = [(d["index"], _quantizer(d)) for d in output_details]
        self._keep_alive: object = None

    def op_names(self) -> list[str]:
        """Ops of the interpreter's execution plan; a `DELEGATE` op is a subgraph a delegate runs."""
        return [op["op_name"] for op in self._interpreter._get_ops_details()]

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        for (index, quant), array in zip(self._inputs, arrays):
            self._interpreter.set_tensor(index, array if quant is None else _quantize(array, *quant))
        self._interpreter.invoke()
        return [_dequantize(self._interpreter.get_tensor(index), quant) for index, quant in self._outputs]


def open_tflite(
    path: Path,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    delegate: str = "xnnpack",
    threads: int = 1,
    delegate_options: Mapping[str, str] | None = None,
) -> TFLiteBackend:
    """Load `path` with `delegate`; raises the loader's own error when the delegate is not available."""
    module = interpreter_module()
    library = delegate_library(delegate)
    kwargs: dict[str, object] = {"model_path": str(path), "num_threads": threads}
    loaded = None
    if library is not None:
        ctypes.CDLL(library)  # the same dlopen as load_delegate; fails cleanly with the loader's OSError
        loaded = module.load_delegate(library, dict(delegate_options or {}))
        kwargs["experimental_delegates"] = [loaded]
    elif delegate == "cpu":
        kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = module.Interpreter(**kwargs)
    interpreter.allocate_tensors()
    input_details, output_details = _bind(interpreter, inputs, outputs, path)
    backend = TFLiteBackend(path, delegate, inputs, outputs, interpreter, input_details, output_details)
    backend._keep_alive = loaded  # the delegate must outlive the interpreter
    return backend


def _bind(
    interpreter: Any, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], path: Path
) -> tuple[list[Detail], list[Detail]]:
    """Tensor details for the manifest inputs (by name, or by position for `args_<i>` names) and outputs."""
    signatures = interpreter.get_signature_list()
    if signatures:
        runner = interpreter.get_signature_runner(next(iter(signatures)))
        details = runner.get_input_details()
        out_details = runner.get_output_details()
    else:
        details = {d["name"]: d for d in interpreter.get_input_details()}
        out_details = {d["name"]: d for d in interpreter.get_output_details()}
    names = [spec.name for spec in inputs]
    if set(details) == set(names):
        ordered = [details[name] for name in names]
    elif len(details) == len(names) and all(_POSITIONAL.match(k) for k in details):
        ordered = [details[k] for k in sorted(details, key=_position)]
    else:
        raise ValueError(f"{path.name}: model inputs {sorted(details)} do not match the manifest's {names}")
    for spec, detail in zip(inputs, ordered):
        _check(path, spec, detail)
    bound = match_outputs(out_details, outputs, path)
    for spec, detail in zip(outputs, bound):
        _check(path, spec, detail)
    return ordered, bound


def _position(name: str) -> int:
    """i of an `args_<i>` input name."""
    match = _POSITIONAL.match(name)
    if match is None:
        raise ValueError(f"input {name!r} is not named args_<i>")
    return int(match.group(1))


def match_outputs(details: Mapping[str, Detail], outputs: Sequence[TensorSpec], path: Path) -> list[Detail]:
    """The model's output details (by tensor or signature name) in manifest order: by name when the names
    are the manifest's, the only one when there is one, else each manifest output to the one of its shape."""
    names = [spec.name for spec in outputs]
    if len(details) != len(outputs):
        raise ValueError(
            f"{path.name}: the model has {len(details)} outputs {sorted(details)}, "
            f"the manifest lists {len(outputs)} {names}"
        )
    if set(details) == set(names):
        return [details[name] for name in names]
    if len(outputs) == 1:
        return list(details.values())
    bound = []
    for spec in outputs:
        fits = [d for d in details.values() if tuple(int(x) for x in d["shape"]) == tuple(spec.shape)]
        twins = [o.name for o in outputs if tuple(o.shape) == tuple(spec.shape)]
        if len(fits) != 1 or len(twins) != 1:
            raise ValueError(
                f"{path.name}: cannot tell which model output is {spec.name!r}: the outputs are named "
                f"{sorted(details)} (not {names}), {len(fits)} of them and the manifest outputs {twins} "
                f"have the shape {list(spec.shape)}"
            )
        bound.append(fits[0])
    return bound


def _quantizer(detail: Detail) -> tuple[float, int, np.dtype] | None:
    """(scale, zero point, integer dtype) of a quantized float tensor; None for a float tensor."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return None
    scale, zero_point = detail["quantization"]
    return float(scale), int(zero_point), dtype


def _quantize(values: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale) + zero_point, info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, quant: tuple[float, int, np.dtype] | None) -> np.ndarray:
    if quant is None:
        return values
    return ((values.astype(np.float32) - quant[1]) * quant[0]).astype(np.float32)


def _check(path: Path, spec: TensorSpec, detail: Detail) -> None:
    shape = tuple(int(x) for x in detail["shape"])
    dtype = np.dtype(detail["dtype"])
    quantized_float = dtype.kind in "iu" and detail["quantization"][0] != 0 and spec.dtype == "float32"
    if shape != tuple(spec.shape) or (dtype != np.dtype(spec.dtype) and not quantized_float):
        raise ValueError(
            f"{path.name}: tensor for {spec.name!r} is {dtype}{list(shape)}, "
            f"the manifest says {spec.dtype}{list(spec.shape)}"
        )
