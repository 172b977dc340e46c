"""Lower a captured device model to an ExecuTorch program (.pte): XNNPACK-delegated or portable kernels.

    program = capture(device_model, layout)
    lowered = lower_executorch(program, xnnpack=True)
    Path("model.pte").write_bytes(lowered.buffer)
    lowered.non_delegated        # {"aten::select_copy.int @ gru": 20, ...} ops left to portable kernels

The portable program computes every addmm (what nn.Linear lowers to) as mm + add: ExecuTorch's portable
addmm kernel is a plain loop, far slower than mm + add (benchmarks/portable_kernels.py; figures in
BENCHMARKS.md). The weight transposes nn.Linear lowers to are folded at export.
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

    if xnnpack:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    else:
        edge = to_edge_transform_and_lower(program, transform_passes=_portable_passes())
    left = non_delegated_ops(edge.exported_program().graph_module) if xnnpack else {}
    return Lowered(bytes(edge.to_executorch().buffer), left)


def _portable_passes():
    """Edge passes for portable kernels: addmm(bias, x, w) -> add(mm(x, w), bias) where alpha = beta = 1
    (nn.Linear's case), then constant folding (the weight transposes are done here, once)."""
    from executorch.exir.dialects._ops import ops as exir_ops
    from executorch.exir.pass_base import ExportedProgramPassBase, ExportedProgramPassResult, ExportPass
    from executorch.exir.pass_manager import ExportedProgramPassManager
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    addmm, mm, add = exir_ops.edge.aten.addmm.default, exir_ops.edge.aten.mm.default, exir_ops.edge.aten.add.Tensor

    class AddmmAsMmAdd(ExportPass):
        def call_operator(self, op, args, kwargs, meta):
            if op != addmm or kwargs.get("alpha", 1) != 1 or kwargs.get("beta", 1) != 1:
                return super().call_operator(op, args, kwargs, meta)
            bias, x, w = args
            return super().call_operator(add, (super().call_operator(mm, (x, w), {}, meta), bias), {}, meta)

    class FoldConstants(ExportedProgramPassBase):
        def call(self, exported_program):
            return ExportedProgramPassResult(constant_prop_pass(exported_program), True)

    return ExportedProgramPassManager([AddmmAsMmAdd(), FoldConstants()])


def program_operators(buffer: bytes) -> Counter[str]:
    """Kernel calls in a serialized program's forward plan, by operator name (a delegate call is not one)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(buffer)
    plan = getattr(program, "program", program).execution_plan[0]
    return Counter(
        plan.operators[instruction.instr_args.op_index].name
        for chain in plan.chains
        for instruction in chain.instructions
        if hasattr(instruction.instr_args, "op_index")
    )


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
