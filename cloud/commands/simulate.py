"""Simulate cloud vs on-device reranking: response time, behaviour staleness and clicks per page.

    dir-cloud simulate --run RUN --bundle BUNDLE --out DIR [--seed 0] [--users 1000]
    dir-cloud simulate --run RUN --out DIR --device-latency DIR0/device_latency.csv   # replay a measurement

RUN must be trained on `dir-cloud synth` logs (the simulation draws fresh users of that world and
scores every shown list with its true click model); BUNDLE is RUN exported with `dir-cloud export`,
whose real runtime is timed on replayed requests. Both paths rerank with the run's model; the cloud
sees behaviours only after --upload-delay and answers after a lognormal network round trip, an M/M/c
queue and its service time; the device sees every behaviour at once and answers in its measured time.
Writes summary.md, CSV tables and PNG plots to DIR (see docs/simulation.md).
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cloud.simulation.config import SimConfig

    d = SimConfig()
    parser.add_argument("--run", required=True, help="run folder trained on synthetic logs (dir-cloud train)")
    parser.add_argument(
        "--bundle",
        help="the run exported by `dir-cloud export` (timed on the device runtime; default: none, "
        "then --device-latency is needed)",
    )
    parser.add_argument("--out", required=True, help="folder for summary.md, CSVs and PNGs")
    parser.add_argument("--data", help="prepared data folder (default: the one the run was trained on)")
    parser.add_argument("--seed", type=int, default=d.seed, help="simulation seed (default %(default)s)")
    parser.add_argument("--users", type=int, default=d.users, help="simulated users (default %(default)s)")
    parser.add_argument(
        "--world-seed",
        type=int,
        default=d.world_seed,
        help="the --seed given to `dir-cloud synth` for the run's logs (default %(default)s)",
    )
    parser.add_argument(
        "--upload-delay",
        type=float,
        default=d.upload_delay_s,
        help="seconds before a behaviour reaches the cloud (default %(default)s)",
    )
    parser.add_argument(
        "--rtt-median",
        type=float,
        default=d.rtt_median_ms,
        help="median network round trip in ms, lognormal (default %(default)s)",
    )
    parser.add_argument(
        "--rtt-sigma", type=float, default=d.rtt_sigma, help="lognormal shape of the round trip (default %(default)s)"
    )
    parser.add_argument("--servers", type=int, default=d.servers, help="cloud servers c (default %(default)s)")
    parser.add_argument(
        "--service-ms",
        type=float,
        default=d.service_ms,
        help="mean cloud inference time, exponential (default %(default)s)",
    )
    parser.add_argument(
        "--rate", type=float, default=d.rate, help="requests/s at the cloud service (default %(default)s)"
    )
    parser.add_argument(
        "--timeout-ms",
        type=float,
        default=d.timeout_ms,
        help="cloud answers later than this show the upstream order (default %(default)s)",
    )
    parser.add_argument(
        "--device-fetch", action="store_true", help="the device fetches its slate per request (adds one round trip)"
    )
    parser.add_argument(
        "--delays",
        help=f"comma-separated upload delays (s) of the sweep (default {','.join(f'{x:g}' for x in d.delays_s)})",
    )
    parser.add_argument(
        "--rates", help="comma-separated request rates of the sweep (default: utilisation 0.5..0.99 of the capacity)"
    )
    parser.add_argument(
        "--device-users",
        type=int,
        default=d.device_users,
        help="users replayed through the device runtime for its latency (default %(default)s)",
    )
    parser.add_argument(
        "--device-latency",
        help="device_latency.csv of an earlier run: replay its samples "
        "instead of measuring (makes the output reproducible byte for byte; default: measure --bundle)",
    )
    parser.add_argument("--backend", default="auto", help="device backend: auto, tflite, executorch")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads of the device runtime and of the eager model (default %(default)s)",
    )
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")


def run(args: argparse.Namespace) -> int:
    import torch

    from cloud.data.logs_writer import check_out
    from cloud.data.prepared import PreparedData
    from cloud.simulation.config import SimConfig
    from cloud.simulation.device_latency import measure_device
    from cloud.simulation.report import write_report
    from cloud.simulation.scoring import torch_scorer
    from cloud.simulation.study import run_study
    from cloud.simulation.summary import paired_gain, path_summary
    from cloud.simulation.world import build_world
    from cloud.training.runs import load_run

    start = time.perf_counter()
    check_out(args.out, args.force)
    torch.set_num_threads(args.threads)
    if not args.bundle and not args.device_latency:
        raise ValueError(
            "pass --bundle BUNDLE (the run exported by `dir-cloud export`) to measure the device "
            "runtime, or --device-latency CSV to replay an earlier measurement"
        )
    config = SimConfig(
        seed=args.seed,
        users=args.users,
        world_seed=args.world_seed,
        upload_delay_s=args.upload_delay,
        rtt_median_ms=args.rtt_median,
        rtt_sigma=args.rtt_sigma,
        servers=args.servers,
        service_ms=args.service_ms,
        rate=args.rate,
        timeout_ms=args.timeout_ms,
        device_fetch=args.device_fetch,
        delays_s=_floats(args.delays, "--delays", SimConfig.delays_s),
        rates=_floats(args.rates, "--rates", ()),
        device_users=args.device_users,
    )
    loaded = load_run(args.run)
    data = PreparedData(args.data or loaded.config["data"])
    world = build_world(loaded.model, data, config.users, config.world_seed)
    scorer = torch_scorer(loaded.model)
    device, load = None, os.getloadavg()[0]
    if args.device_latency:
        samples = read_latency_csv(args.device_latency)
        source = f"replayed from {args.device_latency} ({len(samples)} samples)"
    else:
        device = measure_device(
            world, args.bundle, scorer, loaded.embedding_version, config.device_users, args.backend, args.threads
        )
        samples = [round(float(x), 4) for x in device.samples_ms]  # as written to device_latency.csv
        source = f"measured: {len(samples)} real `Reranker.rerank` calls, {device.backend}/{device.delegate}"
    K = int(loaded.config.get("K") or loaded.spec.K)
    study = run_study(world, scorer, samples, config, K)
    context = {
        "run": str(args.run),
        "bundle": str(args.bundle or "-"),
        "device_latency": source,
        "machine": f"{os.cpu_count()} CPUs, 1-min load average {load:.1f} when the device was timed",
        "runtime_s": time.perf_counter() - start,
    }
    out = write_report(study, args.out, context, device, samples, force=args.force)
    for name, result in study.paths.items():
        row = path_summary(result)
        print(
            f"{name:8s} response p50/p95/p99 {row['response_p50_ms']:.1f}/{row['response_p95_ms']:.1f}/"
            f"{row['response_p99_ms']:.1f} ms  staleness p50 {row['staleness_p50_s']:.1f} s  "
            f"clicks/page {row['clicks_per_page']:.4f}"
        )
    gain = paired_gain(study.paths["device"], study.paths["cloud"])
    print(f"device - cloud: {gain['gain']:+.4f} clicks/page (95% CI {gain['ci_low']:+.4f} .. {gain['ci_high']:+.4f})")
    print(f"wrote {out} ({time.perf_counter() - start:.1f} s)")
    return 0


def read_latency_csv(path: str | Path) -> list[float]:
    """The latency_ms column of a device_latency.csv written by an earlier `simulate`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; pass the device_latency.csv of an earlier `dir-cloud simulate`")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if "latency_ms" not in (reader.fieldnames or []):
            raise ValueError(f"{path}: no latency_ms column; pass a device_latency.csv written by `dir-cloud simulate`")
        values = []
        for line, row in enumerate(reader, start=2):
            try:
                values.append(float(row["latency_ms"]))
            except ValueError:
                raise ValueError(f"{path}, line {line}: latency_ms {row['latency_ms']!r} is not a number") from None
    if not values:
        raise ValueError(f"{path}: no samples")
    return values


def _floats(text: str | None, option: str, default: tuple) -> tuple[float, ...]:
    if text is None:
        return tuple(default)
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{option} {text!r}: write comma-separated numbers, e.g. 0,60,300") from None
