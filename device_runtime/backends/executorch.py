"""ExecuTorch backend: runs a `.pte` program with `executorch.runtime.Runtime`.

    backend = open_executorch(Path("bundle/model.pte"), manifest.inputs, manifest.outputs, "xnnpack")

The delegate is fixed when the program is lowered, so the bundle carries one `.pte` per delegate
(`xnnpack` -> model.pte, `portable` -> model_portable.pte). Outputs come in the order the PyTorch
model returns them, which is the manifest's order (`scores` first). ExecuTorch's Python runtime needs torch:
it is imported here, lazily, and nowhere else in the device runtime.

Threads: `threads` sizes every pool a program can use. ExecuTorch's own pthreadpool (XNNPACK) is reset
to it; the optimized portable kernels (mm, bmm) call MKL inside libtorch_cpu, which runs on torch's OpenMP
pool. That pool defaults to one thread per core and its workers spin-wait between calls, so beside a busy
core a call could wait tens of milliseconds for a worker (seen with perf: 85% of the process's samples in
libgomp). `torch.set_num_threads` sets the OpenMP and MKL counts, and OpenMP's count is per calling thread,
so the backend sets it again the first time each thread runs the program.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from device_runtime.backends.base import Backend
from shared_schema import TensorSpec

_DTYPES = {6: "float32", 3: "int32", 4: "int64", 11: "bool"}  # ExecuTorch ScalarType codes


class _TensorInfo(Protocol):
    """What `_check` reads of ExecuTorch's tensor metadata."""

    def sizes(self) -> Sequence[int]: ...

    def dtype(self) -> int: ...


class ExecuTorchBackend(Backend):
    """One loaded `forward` method; numpy in, numpy out (zero-copy through torch.from_numpy)."""

    name = "executorch"

    def __init__(
        self,
        path: Path,
        delegate: str,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        method: Any,  # executorch.runtime.Method (the package ships no type information)
        torch: ModuleType,
        threads: int,
    ) -> None:
        super().__init__(path, delegate, inputs, outputs)
        self._method = method
        self._torch = torch
        self.threads = threads
        self._this_thread = threading.local()  # `sized` once the calling thread's pools are set

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if not getattr(self._this_thread, "sized", False):
            self._torch.set_num_threads(self.threads)  # OpenMP (per calling thread) and MKL
            self._this_thread.sized = True
        from_numpy = self._torch.from_numpy
        return [out.numpy() for out in self._method.execute([from_numpy(a) for a in arrays])]


def open_executorch(
    path: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], delegate: str = "xnnpack", threads: int = 1
) -> ExecuTorchBackend:
    """Load the program at `path` (already lowered for `delegate`) and check its signature."""
    try:
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime
    except ImportError as exc:
        raise ImportError(
            f"ExecuTorch runtime not installed ({exc}); `pip install dir-rerank[device-executorch]`"
        ) from exc
    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)
    program = Runtime.get().load_program(path)
    method = program.load_method("forward")
    meta = method.metadata
    if meta.num_inputs() != len(inputs) or meta.num_outputs() != len(outputs):
        raise ValueError(
            f"{path.name}: program takes {meta.num_inputs()} inputs and returns {meta.num_outputs()} outputs, "
            f"the manifest says {len(inputs)} inputs and {len(outputs)} outputs {[o.name for o in outputs]}"
        )
    for i, spec in enumerate(inputs):
        _check(path, spec, meta.input_tensor_meta(i))
    for i, spec in enumerate(outputs):
        _check(path, spec, meta.output_tensor_meta(i))
    return ExecuTorchBackend(path, delegate, inputs, outputs, method, torch, threads)


def _check(path: Path, spec: TensorSpec, info: _TensorInfo) -> None:
    shape = tuple(info.sizes())
    dtype = _DTYPES.get(int(info.dtype()), f"scalar type {int(info.dtype())}")
    if shape != tuple(spec.shape) or dtype != spec.dtype:
        raise ValueError(
            f"{path.name}: tensor for {spec.name!r} is {dtype}{list(shape)}, "
            f"the manifest says {spec.dtype}{list(spec.shape)}"
        )
