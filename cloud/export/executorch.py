"""Lower a captured device model to an ExecuTorch program (.pte): XNNPACK-delegated or portable kernels.

    program = capture(device_model, layout)
    lowered = lower_executorch(program, xnnpack=True)
    Path("model.pte").write_bytes(lowered.buffer)
    lowered.non_delegated        # {"aten::select_copy.int @ gru": 20, ...} ops left to portable kernels
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

SKIPPED = ("getitem", "executorch_call_delegate")


@dataclass
class Lowered:
    """The serialized program and the ops left outside XNNPACK ('op @ module path': count)."""

    buffer: bytes
    non_delegated: dict[str, int] = field(default_factory=dict)


def lower_executorch(program: torch.export.ExportedProgram, xnnpack: bool = True) -> Lowered:
    """to_edge_transform_and_lower(+ XnnpackPartitioner) -> to_executorch(); count ops left outside XNNPACK."""
    from executorch.exir import to_edge_transform_and_lower

    partitioner = []
    if xnnpack:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        partitioner = [XnnpackPartitioner()]
    edge = to_edge_transform_and_lower(program, partitioner=partitioner)
    left = non_delegated_ops(edge.exported_program().graph_module) if xnnpack else {}
    return Lowered(bytes(edge.to_executorch().buffer), left)


def non_delegated_ops(graph_module: torch.fx.GraphModule) -> dict[str, int]:
    """Count call_function ops outside any delegate, keyed 'op @ module path', most frequent first."""
    counts: Counter[str] = Counter()
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or any(s in str(node.target) for s in SKIPPED):
            continue
        name = node.target.name() if hasattr(node.target, "name") else str(node.target)
        stack = node.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        counts[f"{name} @ {path or 'top'}"] += 1
    return dict(counts.most_common())
