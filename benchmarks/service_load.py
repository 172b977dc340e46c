"""Load test of the cloud service's slate endpoint on loopback: latency, throughput and where time goes.

    python benchmarks/service_load.py                            # builds a synthetic run first (~1 min)
    python benchmarks/service_load.py --run RUN --data DATA --requests 1000 --concurrency 32

Starts `dir-cloud serve` in a subprocess on a free loopback port (`--workers`, default 1 and 2 uvicorn
workers in turn, torch 1 thread each) and, per worker count and per vector encoding (`json`: JSON numbers,
what curl gets; `compact`: base64 float32, what the device client asks for), sends `--requests`
GET /v1/users/{user}/slate (users in turn) from `--concurrency` threads with urllib, one connection per
request like the device client, after 20 warm-up requests, and stops submitting after `--max-seconds`.
Prints a summary (bytes per slate, requests/s, latency, errors per workers x encoding, with the load
average), then per run the client latency p50/p99/mean, requests/s and errors, and the server's own split
from the Server-Timing header: `upstream` (candidate ranking), `encode` (ItemEncoder), `handler` (both + building the
slate), `app` (all of the app: routing, validation, handler, serialization); client minus app is the connection,
the wait in uvicorn's queue and HTTP parsing.
The client threads share the machine with the server, so requests/s is a lower bound.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device_runtime.client import ACCEPT_VECTORS, CloudClient, CloudUnavailable  # noqa: E402

ENCODINGS = {"json": "application/json", "compact": ACCEPT_VECTORS}
"""Vector encodings compared, by the Accept header that asks for each."""


def build_run(folder: Path, users: int) -> tuple[Path, Path]:
    """Synthetic logs of `users` users (full catalog: 4,000 videos, 2,500 articles, 800 ads) -> DATA ->
    default-size DIR trained one epoch (the weights only matter for realism, not for timing)."""
    from cloud.data.prepare import prepare
    from cloud.data.synth import SynthConfig, generate, write_logs
    from cloud.training.config import TrainConfig
    from cloud.training.trainer import train

    write_logs(generate(SynthConfig(users=users)), folder / "logs")
    prepare(folder / "logs", folder / "data")
    train(TrainConfig(epochs=1), folder / "data", folder / "run", progress=False)
    return folder / "run", folder / "data"


def start_server(run: Path, data: Path, bundles: Path, log: Path, workers: int = 1) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloud.cli",
            "serve",
            "--run",
            str(run),
            "--data",
            str(data),
            "--bundles",
            str(bundles),
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--workers",
            str(workers),
        ],
        cwd=REPO,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while True:
        try:
            CloudClient(url).health()
            return process, url
        except CloudUnavailable:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"dir-cloud serve did not start:\n{log.read_text()[-2000:]}") from None
            time.sleep(0.25)


def one_request(url: str, accept: str) -> tuple[float, int, dict[str, float], str, int]:
    """(client latency ms, status, Server-Timing entries in ms, error, body bytes); status 0 for a
    transport error."""
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": accept}), timeout=30) as response:
            size = len(response.read())
            status, timing = response.status, response.headers.get("server-timing", "")
    except OSError as exc:
        return (time.perf_counter() - start) * 1e3, getattr(exc, "code", 0), {}, f"{type(exc).__name__}: {exc}", 0
    elapsed = (time.perf_counter() - start) * 1e3
    entries = dict(e.strip().split(";dur=") for e in timing.split(",") if ";dur=" in e)
    return elapsed, status, {k: float(v) for k, v in entries.items()}, "", size


def load(
    url: str, users: list[str], requests: int, concurrency: int, max_seconds: float, accept: str = "application/json"
) -> tuple[list, float]:
    urls = [f"{url}/v1/users/{users[i % len(users)]}/slate" for i in range(requests)]
    for u in urls[:20]:
        one_request(u, accept)
    deadline = time.monotonic() + max_seconds
    start = time.perf_counter()

    def bounded(u: str):
        return one_request(u, accept) if time.monotonic() < deadline else None

    with ThreadPoolExecutor(concurrency) as pool:
        results = [r for r in pool.map(bounded, urls) if r is not None]
    return results, time.perf_counter() - start


def summary(runs: list[tuple[int, str, list, float]]) -> str:
    """One markdown row per (workers, encoding): bytes per slate, requests/s, latency, errors."""
    lines = [
        "| workers | vectors | bytes per slate | requests/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for workers, encoding, results, wall in runs:
        ok = [r for r in results if r[1] == 200]
        latency = np.array([r[0] for r in ok]) if ok else np.array([np.nan])
        size = np.mean([r[4] for r in ok]) if ok else float("nan")
        lines.append(
            f"| {workers} | {encoding} | {size:.0f} | {len(results) / wall:.0f} | "
            f"{np.percentile(latency, 50):.1f} | {np.percentile(latency, 99):.1f} | "
            f"{len(results) - len(ok)} |"
        )
    return "\n".join(lines)


def report(results: list, wall: float, concurrency: int) -> str:
    ok = [r for r in results if r[1] == 200]
    errors = len(results) - len(ok)
    rows = [("client latency (urllib, new connection)", [r[0] for r in ok])]
    app, upstream, encode, handler = (
        np.array([r[2].get(k, np.nan) for r in ok]) for k in ("app", "upstream", "encode", "handler")
    )
    rows += [
        ("  server app total (Server-Timing app)", app),
        ("    handler (slate built)", handler),
        ("      upstream ranking", upstream),
        ("      ItemEncoder encoding", encode),
        ("    app - handler (routing, validation, JSON)", app - handler),
        ("  connection, queueing, HTTP (client - app)", np.array([r[0] for r in ok]) - app),
    ]
    lines = [
        f"{len(results)} requests at concurrency {concurrency}: {len(ok)} ok, {errors} errors, "
        f"{wall:.1f} s, {len(results) / wall:.0f} requests/s",
        *sorted({f"  error: {r[3] or r[1]}" for r in results if r[1] != 200}),
        f"{'':48}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}",
    ]
    for name, values in rows:
        values = np.asarray(values, dtype=float)
        lines.append(
            f"{name:<48}{np.percentile(values, 50):>9.2f}{np.percentile(values, 99):>9.2f}{values.mean():>9.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="trained run folder (default: build a synthetic one)")
    parser.add_argument("--data", help="its prepared data (default: the run's)")
    parser.add_argument("--users", type=int, default=200, help="users of the synthetic run to build")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop submitting after this long")
    parser.add_argument("--workers", default="1,2", help="uvicorn worker counts to compare (default: 1,2)")
    parser.add_argument("--encodings", default="json,compact", help="vector encodings: json, compact")
    args = parser.parse_args(argv)
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="service-load-") as tmp:
        tmp = Path(tmp)
        if args.run:
            run, data = Path(args.run), Path(args.data) if args.data else None
        else:
            print(f"building a synthetic run ({args.users} users, DIR, 1 epoch)...", flush=True)
            run, data = build_run(tmp, args.users)
        if data is None:
            import json

            data = Path(json.loads((run / "config.json").read_text())["data"])
        (tmp / "bundles").mkdir()
        runs = []
        for workers in [int(w) for w in args.workers.split(",")]:
            process, url = start_server(run, data, tmp / "bundles", tmp / "serve.log", workers)
            try:
                info = CloudClient(url).version()
                users = CloudClient(url).users(limit=1000)
                for encoding in args.encodings.split(","):
                    results, wall = load(
                        url, users, args.requests, args.concurrency, args.max_seconds, ENCODINGS[encoding]
                    )
                    runs.append((workers, encoding, results, wall))
            finally:
                process.terminate()
                process.wait(10)
        loads.append(os.getloadavg()[0])
    print(
        f"service load on {platform.machine()} ({os.cpu_count()} cores, shared), Python {platform.python_version()}: "
        f"model {info.model_name}, sources {info.sources}, n={info.n}, vector dims {info.vector_dims}, "
        f"{len(users)} users; loopback, concurrency {args.concurrency}, 1-min load average {loads[0]:.2f} before, "
        f"{loads[1]:.2f} after\n"
    )
    print(summary(runs))
    for workers, encoding, results, wall in runs:
        print(f"\n## {workers} worker(s), {encoding} vectors")
        print(report(results, wall, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
