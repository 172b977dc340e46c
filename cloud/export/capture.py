"""Capture a device model as one fixed-shape graph (torch.export), or say which part cannot be one.

    program = capture(device_model, layout)       # torch.export.ExportedProgram, batch 1
    program = capture(model.export_module(), layout, outputs=("scores", "matching", "encodings"))
    specs = output_specs(program, layout, ("scores", "matching", "encodings"))   # manifest `outputs`
    # raises ExportError("device model part 'ranker' (mypkg.Ranker) cannot ... run it outside the graph")

Sorting into an order, beam search, data-dependent control flow or outputs whose shape depends on the
values cannot be a fixed-shape graph; such parts belong outside the device model (numpy in the device
runtime, or the cloud; docs/architecture.md, the device boundary). The first output is `scores` [1, m, n];
a list decoder's extra outputs follow it, each [1, m*n, k] (one row per flat candidate s*n + j).
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from cloud.export.parity import random_inputs
from shared_schema.layout import TensorLayout, TensorSpec

OUTSIDE = (
    "must run outside the exported graph: move it out of the device model "
    "(numpy in the device runtime, or cloud-side), see docs/architecture.md"
)


class ExportError(ValueError):
    """The device model (or one of its parts) cannot be exported, or an exported file fails parity."""


def sample_args(layout: TensorLayout, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Batch-1 example inputs in layout order (partially padded), for tracing."""
    inputs = random_inputs(layout, np.random.default_rng(seed))
    return tuple(torch.from_numpy(inputs[name]) for name in layout.input_names())


def capture(
    device_model: nn.Module, layout: TensorLayout, outputs: Sequence[str] = ("scores",)
) -> torch.export.ExportedProgram:
    """torch.export the model at batch 1; every tensor in the graph must have a static shape, and the
    model returns the tensors named `outputs` (see `output_specs`)."""
    args = sample_args(layout)
    try:
        program = torch.export.export(device_model, args, strict=False)
    except Exception as exc:
        part = _failing_part(device_model, exc)
        raise ExportError(
            f"{part} cannot be exported as a fixed-shape graph ({type(exc).__name__}: {_first_line(exc)}); it {OUTSIDE}"
        ) from exc
    _check_static(program, device_model)
    output_specs(program, layout, outputs)
    return program


def _describe(name: str, module: nn.Module) -> str:
    kind = f"{type(module).__module__}.{type(module).__qualname__}"
    return f"device model part {name!r} ({kind})" if name else f"the device model ({kind})"


def _failing_part(root: nn.Module, exc: BaseException) -> str:
    """The innermost submodule whose forward was on the stack where `exc` (or its original cause) was raised."""
    names = {id(module): name for name, module in root.named_modules()}
    found = ""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # from the raised error back to its original cause
        seen.add(id(current))
        owners = [frame.f_locals.get("self") for frame, _ in traceback.walk_tb(current.__traceback__)]
        inner = [names[id(owner)] for owner in owners if id(owner) in names]
        found = inner[-1] if inner else found
        current = current.__cause__ or current.__context__
    return _describe(found, root.get_submodule(found))


def _check_static(program: torch.export.ExportedProgram, root: nn.Module) -> None:
    for node in program.graph.nodes:
        value = node.meta.get("val")
        shapes = [
            v.shape for v in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(v, torch.Tensor)
        ]
        if any(not isinstance(dim, int) for shape in shapes for dim in shape):
            stack = node.meta.get("nn_module_stack") or {}
            path = list(stack.values())[-1][0] if stack else ""
            part = _describe(path, root.get_submodule(path)) if _has(root, path) else f"device model part {path!r}"
            raise ExportError(
                f"{part} produces a tensor whose shape depends on the input values "
                f"({node.target}, shape {list(shapes[0])}); it {OUTSIDE}"
            )


def _has(root: nn.Module, path: str) -> bool:
    try:
        root.get_submodule(path)
        return True
    except AttributeError:
        return False


def output_specs(
    program: torch.export.ExportedProgram, layout: TensorLayout, names: Sequence[str] = ("scores",)
) -> list[TensorSpec]:
    """The program's outputs as manifest TensorSpecs named `names`: `scores` [1, m, n] first, then one
    [1, m*n, k] tensor per further name; ExportError when the program returns anything else."""
    outputs = [node for node in program.graph.nodes if node.op == "output"][0].args[0]
    shapes = [tuple(o.meta["val"].shape) if hasattr(o, "meta") and "val" in o.meta else None for o in outputs]
    m, n = layout.m, layout.n
    if (
        len(shapes) != len(names)
        or shapes[0] != (1, m, n)
        or any(shape is None or len(shape) != 3 or shape[:2] != (1, m * n) for shape in shapes[1:])
    ):
        extra = "".join(f", then `{name}` of shape [1, {m * n}, k]" for name in names[1:])
        raise ExportError(
            f"the device model must return `scores` of shape {[1, m, n]} ([B, m, n]){extra}; "
            f"it returns shapes {[list(s) if s else s for s in shapes]}"
        )
    return [TensorSpec(name=name, shape=shape) for name, shape in zip(names, shapes)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else "no message"
