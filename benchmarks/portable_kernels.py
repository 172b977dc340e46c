"""ExecuTorch portable kernels (the no-delegate .pte): the default lowering against the project's.

    python benchmarks/portable_kernels.py [--runs 3000]

Lowers the rerank-latency DIR model (benchmarks/rerank_latency.py) to a portable-kernel .pte twice:
`default` is plain `to_edge_transform_and_lower`, `cloud.export` is `lower_executorch(xnnpack=False)`
(addmm as mm + add, weight transposes folded). Also one nn.Linear (30 rows, 96 -> 64, DIR's first MLP
layer) both ways. Prints op counts and `Method.execute` p50/p99 per program (batch 1, one thread, the
programs timed in alternating blocks so that both see the same machine load) and the speed-up ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3000, help="timed executions per program (default: %(default)s)")
    args = parser.parse_args()

    import torch
    from executorch.exir import to_edge_transform_and_lower
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime
    from rerank_latency import latency_model

    from cloud.export import capture, lower_executorch
    from cloud.export.capture import sample_args
    from cloud.export.executorch import program_operators

    torch.set_num_threads(1)
    portable_lib._unsafe_reset_threadpool(1)
    model, _ = latency_model()
    dir_program = capture(model.device_model, model.layout)
    linear = torch.export.export(torch.nn.Linear(96, 64).eval(), (torch.randn(30, 96),))
    cases = {
        "DIR (m=3, n=10, t=20)": (dir_program, list(sample_args(model.layout))),
        "nn.Linear 30x96 -> 64": (linear, [torch.randn(30, 96)]),
    }
    print(
        f"# ExecuTorch portable kernels, batch 1, 1 thread, {args.runs} runs each; "
        f"{platform.machine()} python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| program | lowering | ops | p50 ms | p99 ms | p50 speed-up |")
    print("|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (program, inputs) in cases.items():
            buffers = {
                "default": bytes(to_edge_transform_and_lower(program).to_executorch().buffer),
                "cloud.export": lower_executorch(program, xnnpack=False).buffer,
            }
            methods, ops = {}, {}
            for lowering, buffer in buffers.items():
                path = Path(tmp) / f"{lowering}.pte"
                path.write_bytes(buffer)
                methods[lowering] = Runtime.get().load_program(path).load_method("forward")
                ops[lowering] = sum(program_operators(buffer).values())
            times = alternate_timings(methods, inputs, args.runs)
            for lowering in buffers:
                p50, p99 = (1e3 * float(np.percentile(times[lowering], q)) for q in (50, 99))
                ratio = np.median(times["default"]) / np.median(times[lowering])
                print(f"| {name} | {lowering} | {ops[lowering]} | {p50:.3f} | {p99:.3f} | {ratio:.2f}x |", flush=True)


def alternate_timings(methods: dict, inputs: list, runs: int, block: int = 100) -> dict[str, list[float]]:
    """Seconds per `execute`, each method timed `runs` times in alternating blocks after a warm-up."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for method in methods.values():
        for _ in range(block):
            method.execute(inputs)
    for _ in range(max(1, runs // block)):
        for name, method in methods.items():
            for _ in range(block):
                start = time.perf_counter()
                method.execute(inputs)
                times[name].append(time.perf_counter() - start)
    return times


if __name__ == "__main__":
    main()
