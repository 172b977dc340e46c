"""Load test of the cloud service's slate endpoint on loopback: latency, throughput and where time goes.

    python benchmarks/service_load.py                            # builds a synthetic run first (~1 min)
    python benchmarks/service_load.py --run RUN --data DATA --requests 1000 --concurrency 32

Starts `dir-cloud serve` in a subprocess on a free loopback port (one uvicorn worker, torch 1 thread),
sends `--requests` GET /v1/users/{user}/slate (users in turn) from `--concurrency` threads with urllib,
one connection per request like the device client, after 20 warm-up requests, and stops submitting after
`--max-seconds`. Prints client latency p50/p99/mean, requests/s and errors, and the server's own split
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

from device_runtime.client import CloudClient, CloudUnavailable  # noqa: E402


def build_run(folder: Path, users: int) -> tuple[Path, Path]:
    """Synthetic logs of `users` users (full catalog: 4,000 videos, 2,500 articles, 800 ads) -> DATA ->
    default-size DIR trained one epoch (the weights only matter for realism, not for timing)."""
    from cloud.data.prepare import prepare
    from cloud.data.synth import SynthConfig, generate, write_logs
    from cloud.training import TrainConfig, train

    write_logs(generate(SynthConfig(users=users)), folder / "logs")
    prepare(folder / "logs", folder / "data")
    train(TrainConfig(epochs=1), folder / "data", folder / "run", progress=False)
    return folder / "run", folder / "data"


def start_server(run: Path, data: Path, bundles: Path, log: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "cloud.cli", "serve", "--run", str(run), "--data", str(data), "--bundles",
         str(bundles), "--port", str(port), "--log-level", "warning"],
        cwd=REPO, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
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


def one_request(url: str) -> tuple[float, int, dict[str, float], str]:
    """(client latency ms, status, Server-Timing entries in ms, error); status 0 for a transport error."""
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
            status, timing = response.status, response.headers.get("server-timing", "")
    except OSError as exc:
        return (time.perf_counter() - start) * 1e3, getattr(exc, "code", 0), {}, f"{type(exc).__name__}: {exc}"
    elapsed = (time.perf_counter() - start) * 1e3
    entries = dict(e.strip().split(";dur=") for e in timing.split(",") if ";dur=" in e)
    return elapsed, status, {k: float(v) for k, v in entries.items()}, ""


def load(url: str, users: list[str], requests: int, concurrency: int, max_seconds: float) -> tuple[list, float]:
    urls = [f"{url}/v1/users/{users[i % len(users)]}/slate" for i in range(requests)]
    for u in urls[:20]:
        one_request(u)
    deadline = time.monotonic() + max_seconds
    start = time.perf_counter()

    def bounded(u: str):
        return one_request(u) if time.monotonic() < deadline else None

    with ThreadPoolExecutor(concurrency) as pool:
        results = [r for r in pool.map(bounded, urls) if r is not None]
    return results, time.perf_counter() - start


def report(results: list, wall: float, concurrency: int) -> str:
    ok = [r for r in results if r[1] == 200]
    errors = len(results) - len(ok)
    rows = [("client latency (urllib, new connection)", [r[0] for r in ok])]
    app, upstream, encode, handler = (np.array([r[2].get(k, np.nan) for r in ok])
                                      for k in ("app", "upstream", "encode", "handler"))
    rows += [("  server app total (Server-Timing app)", app), ("    handler (slate built)", handler),
             ("      upstream ranking", upstream), ("      ItemEncoder encoding", encode),
             ("    app - handler (routing, validation, JSON)", app - handler),
             ("  connection, queueing, HTTP (client - app)", np.array([r[0] for r in ok]) - app)]
    lines = [f"{len(results)} requests at concurrency {concurrency}: {len(ok)} ok, {errors} errors, "
             f"{wall:.1f} s, {len(results) / wall:.0f} requests/s",
             *sorted({f"  error: {r[3] or r[1]}" for r in results if r[1] != 200}),
             f"{'':48}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}"]
    for name, values in rows:
        values = np.asarray(values, dtype=float)
        lines.append(f"{name:<48}{np.percentile(values, 50):>9.2f}{np.percentile(values, 99):>9.2f}"
                     f"{values.mean():>9.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="trained run folder (default: build a synthetic one)")
    parser.add_argument("--data", help="its prepared data (default: the run's)")
    parser.add_argument("--users", type=int, default=200, help="users of the synthetic run to build")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop submitting after this long")
    args = parser.parse_args(argv)
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
        process, url = start_server(run, data, tmp / "bundles", tmp / "serve.log")
        try:
            info = CloudClient(url).version()
            users = CloudClient(url).users(limit=1000)
            results, wall = load(url, users, args.requests, args.concurrency, args.max_seconds)
        finally:
            process.terminate()
            process.wait(10)
    print(f"service load on {platform.machine()} ({os.cpu_count()} cores, shared), Python {platform.python_version()}: "
          f"model {info.model_name}, sources {info.sources}, n={info.n}, vector dims {info.vector_dims}, "
          f"{len(users)} users; 1 uvicorn worker, loopback")
    print(report(results, wall, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
