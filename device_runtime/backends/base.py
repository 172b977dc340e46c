"""What every backend shares: input checking against the manifest and the `run` entry points.

scores = backend.run({"cand_0": array, "cand_mask_0": array, ...})   # -> float32 [1, m, n]
scores, *extra = backend.run_all(inputs)     # every manifest output, in manifest order (scores first)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from shared_schema import TensorSpec


class BackendError(RuntimeError):
    """No backend/delegate could run the bundle; the message lists every attempt and its error."""


class Backend:
    """A loaded model file. Subclasses implement `_invoke(arrays in manifest input order)` returning every
    output in manifest order (`outputs`; the first is `scores`)."""

    name = ""

    def __init__(self, path: Path, delegate: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]):
        self.path = path
        self.delegate = delegate
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.attempts: list[tuple[str, str, str]] = []

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run one batch and return `scores`; `inputs` maps every manifest input name to an array of its
        dtype and shape."""
        return self._invoke(self._arrays(inputs))[0]

    def run_all(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch and return every output the manifest lists, in its order (`scores` first)."""
        return self._invoke(self._arrays(inputs))

    def invoke_in_order(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """`run_all` on arrays already of the manifest inputs' dtypes and shapes, in their order (as
        `TensorLayout.assemble` makes them): no check per call."""
        return self._invoke(arrays)

    def warm_up(self) -> None:
        """Run zeros once: proves the delegate executes the model and checks the output shapes."""
        zeros = {s.name: np.zeros(s.shape, np.dtype(s.dtype)) for s in self.inputs}
        for spec, out in zip(self.outputs, self.run_all(zeros)):
            if tuple(out.shape) != tuple(spec.shape):
                raise ValueError(
                    f"{self.path.name}: output {spec.name!r} has shape {list(out.shape)}, "
                    f"the manifest says {list(spec.shape)}"
                )

    def _arrays(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        arrays = []
        for spec in self.inputs:
            if spec.name not in inputs:
                raise ValueError(f"input {spec.name!r} is missing; the bundle expects {[s.name for s in self.inputs]}")
            array = inputs[spec.name]
            if array.dtype != np.dtype(spec.dtype) or tuple(array.shape) != tuple(spec.shape):
                raise ValueError(
                    f"input {spec.name!r}: got {array.dtype}{list(array.shape)}, "
                    f"the bundle expects {spec.dtype}{list(spec.shape)}"
                )
            arrays.append(np.ascontiguousarray(array))
        extra = set(inputs) - {s.name for s in self.inputs}
        if extra:
            raise ValueError(f"unknown inputs {sorted(extra)}; the bundle expects {[s.name for s in self.inputs]}")
        return arrays

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path.name!r}, delegate={self.delegate!r})"
