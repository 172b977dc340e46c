"""On-device latency of DIR and its on-device baselines (DIR paper, Table 3): batch 1, 1 thread, TFLite.

    python benchmarks/baselines_latency.py               # DIR, EdgeRec, SVR (beam 1 and 4), NAR4Rec, CRUM, HRL
    python benchmarks/baselines_latency.py --calls 500 --beam 2 8
    python benchmarks/baselines_latency.py --models dir,svr --tuned docs/results/tuned --variant dir-w64=dir:hidden=64

Each model is untrained (latency does not depend on the weights), converted with cloud.export to
TFLite as its bundle exports it (`model.export_module()`, with its decoder's extra outputs) and run with
the real LiteRT interpreter (XNNPACK, 1 thread) on one partially padded request of the spec in
benchmarks/inference_latency.py (m=3, n=10, t=20). Per row: p50 / p99 ms of the network call alone
(`scores` read back), and of network + the numpy decoding the device runs after it (the model's
`device_decoder`, as the Reranker runs it): merge.py's `score` mode for DIR / EdgeRec / CRUM; for SVR
`beam_search` (K=5, the target shares as the reward's target, diversity 1.0) for each beam width; for
NAR4Rec `contrastive` (alpha 0.2) on the exported matching matrix and encodings (all three outputs read
back); for HRL `slot_policy` (K network calls, each with the placed candidates masked). DIR, EdgeRec,
CRUM and SVR set the inputs once; NAR4Rec and HRL go through the device's TFLite backend (inputs set on
every call). Sizes: each model's defaults, or with `--tuned` the model options its study found
(`dir-cloud tune --out TUNED`); `--variant LABEL=MODEL:KEY=VALUE[,KEY=VALUE]` adds a row of MODEL with those
options changed (over the tuned ones).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from inference_latency import default_spec, tflite_call, time_call  # noqa: E402

MODELS = ("dir", "edgerec", "svr", "nar4rec", "crum", "hrl")


def decoder(model, request: dict, spec, beam: int, path: Path, names: tuple[str, ...]):
    """A call of network + the numpy step after it (the model's device decoder), returning the ordered list."""
    from cloud.export import capture, open_runner  # the device's TFLite backend: inputs set on every call
    from cloud.export.capture import output_specs
    from device_runtime.decoding import decode_request
    from device_runtime.merge import merge
    from shared_schema.manifest import decoder_settings

    masks = [request[f"cand_mask_{s}"][0] > 0 for s in range(len(spec.sources))]
    shares = [source.target_share for source in spec.sources]
    name = model.device_decoder
    options = decoder_settings(name, {"beam_width": beam, "diversity": 1.0} if name == "beam_search" else {})
    call = tflite_call(path, request, True) if name in ("merge", "beam_search") else None  # inputs set once
    runner = None
    if call is None:  # every output read back: the specs (shapes) of the extra outputs come from the program
        outputs = output_specs(capture(model.export_module(), model.layout, names), model.layout, names)
        runner = open_runner(path, model.layout, threads=1, outputs=outputs)
    run = open_runner(path, model.layout, threads=1) if name == "slot_policy" else None

    def decode():
        outputs = [call()] if call else runner(request)
        if name == "merge":
            return merge([outputs[0][0, s][mask] for s, mask in enumerate(masks)], shares, spec.K, mode="score")
        return decode_request(name, options, outputs, request, spec.K, shares, run)

    return decode


def rows_to_time(models: list[str], tuned: str | None, variants: list[str]) -> list[tuple[str, str, dict]]:
    """(label, model, constructor options) per row: each model at its default or tuned sizes, then each
    --variant LABEL=MODEL:KEY=VALUE[,KEY=VALUE] (VALUE read as `dir-cloud benchmark --set` reads it) over that
    model's options."""
    from cloud.commands.benchmark import parse_settings, split_pair
    from cloud.evaluation.grids import load_tuned

    def options(model: str) -> dict:
        return dict(load_tuned(tuned, model).get("model_options", {})) if tuned else {}

    rows = [(model, model, options(model)) for model in models]
    form = ("--variant", "LABEL=MODEL:KEY=VALUE[,KEY=VALUE]", "dir-w64=dir:hidden=64")
    for item in variants:
        label, rest = split_pair(item, *form)
        model, _, pairs = rest.partition(":")
        if not (model and pairs):
            raise ValueError(f"{form[0]}: expected {form[1]} (e.g. {form[2]}), got {item!r}")
        rows.append((label, model, {**options(model), **parse_settings(pairs.split(","), "--variant")}))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--beam", type=int, nargs="+", default=[1, 4], help="SVR beam widths")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: all six)")
    parser.add_argument("--tuned", help="folder of `dir-cloud tune --out`: the models' tuned sizes (default: none)")
    parser.add_argument(
        "--variant", action="append", default=[], help="LABEL=MODEL:KEY=VALUE[,KEY=VALUE]: one more row (repeatable)"
    )
    args = parser.parse_args(argv)
    try:
        rows = rows_to_time([m for m in args.models.split(",") if m], args.tuned, args.variant)
    except ValueError as error:
        parser.error(str(error))

    import torch

    from cloud.export import convert_tflite
    from cloud.export.parity import random_inputs
    from cloud.models import build_model
    from shared_schema.manifest import DECODERS

    torch.set_num_threads(1)
    spec = default_spec()
    print(
        f"\n{platform.machine()} {os.cpu_count()} cores, TFLite XNNPACK, 1 thread, batch 1, {args.calls} calls "
        f"after {args.warmup} warm-up; m={len(spec.sources)} n={spec.n} t={spec.t} K={spec.K}"
    )
    print(f"{'model':<16}{'device params':>14}{'net p50':>10}{'net p99':>10}{'+decode p50':>13}{'+decode p99':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, name, options in rows:
            if options:
                print(f"{label}: {name} with {options}")
            torch.manual_seed(0)
            model = build_model(name, spec, **options).eval()
            path = Path(tmp) / f"{label}.tflite"
            names = ("scores", *DECODERS[model.device_decoder].outputs)
            path.write_bytes(convert_tflite(model.export_module(), model.layout, names))
            request = random_inputs(model.layout, np.random.default_rng(0))
            call = tflite_call(path, request, True)  # inputs set once: the network call alone
            params = sum(p.numel() for p in model.device_model.parameters())
            net = time_call(call, args.calls, args.warmup)
            for beam in args.beam if name == "svr" else [0]:
                full = time_call(decoder(model, request, spec, beam, path, names), args.calls, args.warmup)
                row = f"{label} (beam {beam})" if name == "svr" else label
                print(f"{row:<16}{params:>14,}{net[0]:>10.4f}{net[1]:>10.4f}{full[0]:>13.4f}{full[1]:>13.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
