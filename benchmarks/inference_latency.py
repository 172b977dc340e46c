"""Per-list inference latency of the exported device model on each runtime, batch 1, one thread.

    python benchmarks/inference_latency.py                        # exports an untrained DIR bundle first
    python benchmarks/inference_latency.py --run RUN              # exports the run's model
    python benchmarks/inference_latency.py --bundle BUNDLE [--run RUN]   # existing files (eager needs --run)

Rows: eager PyTorch, ExecuTorch portable, ExecuTorch XNNPACK (fp32 and int8-dynamic), TFLite builtin
CPU kernels, TFLite XNNPACK, and the TFLite int8 variants, all in one process on the same request (a
partially padded list). Each row times `--calls` calls after `--warmup` calls (inputs prepared once in the
runtime's own format, so the figure is the runtime's call: set inputs, run, read scores) and prints p50 /
p99 in ms and the ratio to eager. Default model: DIR for m=3 sources of widths 40, 16 and 17, n=10, t=20.
Targets: TFLite p50 <= 0.08 ms, ExecuTorch p50 <= 0.2 ms per list.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def default_spec():
    from shared_schema import CategoricalField, DatasetSpec, DenseField, SourceSpec

    return DatasetSpec(
        name="latency",
        n=10,
        t=20,
        K=5,
        sources=(
            SourceSpec(
                name="video",
                target_share=0.5,
                categorical=(CategoricalField(name="genre", vocab=50), CategoricalField(name="creator", vocab=1000)),
                dense=(DenseField(name="emb", dim=8),),
            ),
            SourceSpec(name="article", target_share=0.3, categorical=(CategoricalField(name="topic", vocab=30),)),
            SourceSpec(
                name="ad",
                target_share=0.2,
                categorical=(CategoricalField(name="advertiser", vocab=200),),
                dense=(DenseField(name="bid", dim=1),),
            ),
        ),
    )


def eager_call(device_model, layout, request):
    import torch

    args = [torch.from_numpy(request[name]) for name in layout.input_names()]

    def call():
        with torch.inference_mode():
            return device_model(*args)

    return call


def executorch_call(path: Path, layout, request):
    import torch
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(path).load_method("forward")
    args = [torch.tensor(request[name]) for name in layout.input_names()]
    return lambda: method.execute(args)


def tflite_call(path: Path, request, xnnpack: bool):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_path=str(path), num_threads=1, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    runner = interpreter.get_signature_runner()
    feed = []
    for name, detail in runner.get_input_details().items():
        values = request[name]
        if np.dtype(detail["dtype"]) != np.float32:  # int8 I/O: quantize once, outside the timing
            scale, zero = detail["quantization"]
            values = np.clip(np.round(values / scale) + zero, -128, 127).astype(detail["dtype"])
        feed.append((detail["index"], np.ascontiguousarray(values)))
    output = runner.get_output_details()["scores"]["index"]

    def call():
        for index, values in feed:
            interpreter.set_tensor(index, values)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    return call


def time_call(call, calls: int, warmup: int) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    times.sort()
    return statistics.median(times) * 1e3, times[min(len(times) - 1, int(0.99 * len(times)))] * 1e3


def rows(bundle: Path, manifest, device_model, request):
    """(label, file, callable factory) for every row whose file is in the bundle."""
    have = {f.path for f in manifest.files}
    layout = manifest.layout()
    plan = [
        ("eager PyTorch", None, lambda: eager_call(device_model, layout, request)),
        (
            "ExecuTorch portable",
            "model_portable.pte",
            lambda: executorch_call(bundle / "model_portable.pte", layout, request),
        ),
        ("ExecuTorch XNNPACK", "model.pte", lambda: executorch_call(bundle / "model.pte", layout, request)),
        (
            "ExecuTorch int8-dynamic XNNPACK",
            "model_int8_dynamic.pte",
            lambda: executorch_call(bundle / "model_int8_dynamic.pte", layout, request),
        ),
        ("TFLite builtin CPU", "model.tflite", lambda: tflite_call(bundle / "model.tflite", request, False)),
        ("TFLite XNNPACK", "model.tflite", lambda: tflite_call(bundle / "model.tflite", request, True)),
        (
            "TFLite int8 builtin CPU",
            "model_int8.tflite",
            lambda: tflite_call(bundle / "model_int8.tflite", request, False),
        ),
        ("TFLite int8 XNNPACK", "model_int8.tflite", lambda: tflite_call(bundle / "model_int8.tflite", request, True)),
        (
            "TFLite int8-dynamic XNNPACK",
            "model_int8_dynamic.tflite",
            lambda: tflite_call(bundle / "model_int8_dynamic.tflite", request, True),
        ),
    ]
    return [(label, f, make) for label, f, make in plan if (f is None and device_model is not None) or f in have]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="existing bundle folder (default: export one)")
    parser.add_argument("--run", type=Path, help="run folder: its model is exported / timed eagerly")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args(argv)

    import torch
    from executorch.extension.pybindings import portable_lib

    from shared_schema.manifest import MANIFEST_NAME, BundleManifest

    torch.set_num_threads(1)
    portable_lib._unsafe_reset_threadpool(1)
    model = spec = None
    if args.run:
        from cloud.training.runs import load_run

        loaded = load_run(args.run)
        model, spec = loaded.model, loaded.spec
    elif not args.bundle:
        from cloud.models import build_model

        torch.manual_seed(0)
        spec = default_spec()
        model = build_model("dir", spec).eval()
    bundle = args.bundle
    if bundle is None:
        from cloud.export import write_bundle

        bundle = Path(tempfile.mkdtemp(prefix="latency-")) / "bundle"
        write_bundle(model, spec, bundle, quantize="int8,int8-dynamic", model_version="latency-bench")
    manifest = BundleManifest.model_validate_json((bundle / MANIFEST_NAME).read_text())
    from cloud.export.parity import random_inputs

    request = random_inputs(manifest.layout(), np.random.default_rng(0))
    device_model = model.device_model.eval() if model is not None else None
    params = sum(p.numel() for p in device_model.parameters()) if device_model is not None else None
    print(
        f"\n{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, torch "
        f"{torch.__version__}, 1 thread, batch 1, {args.calls} calls after {args.warmup} warm-up; "
        f"m={len(manifest.sources)} n={manifest.n} t={manifest.t} dims={manifest.vector_dims}"
        + (f", {params:,} device parameters" if params else "")
    )
    print(f"{'runtime':<33}{'file':<28}{'p50 ms':>9}{'p99 ms':>9}{'p50 / eager':>13}")
    eager = None
    for label, name, make in rows(bundle, manifest, device_model, request):
        p50, p99 = time_call(make(), args.calls, args.warmup)
        eager = eager or p50
        print(f"{label:<33}{name or '-':<28}{p50:>9.4f}{p99:>9.4f}{p50 / eager:>13.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
