"""Load test of the cloud service's slate endpoint on loopback: requests/s, latency, CPU and where time goes.

    python benchmarks/service_load.py                            # builds a synthetic run first (~1 min)
    python benchmarks/service_load.py --run RUN --data DATA --requests 3000 --concurrency 32
    git worktree add --detach /tmp/svc-before 8f5b0d9            # older code to compare against
    python benchmarks/service_load.py --run RUN --data DATA --requests 3000 --rounds 3 --baseline /tmp/svc-before

Starts `dir-cloud serve` in a subprocess on a free loopback port (`--workers`, default 1 and 2 uvicorn
workers in turn, torch 1 thread each) and, per worker count and per vector encoding (`json`: JSON numbers,
what curl gets; `compact`: base64 float32, what the device client asks for; `float16`: base64 float16, what
it asks for when its bundle allows), sends `--requests`
GET /v1/users/{user}/slate (users in turn) after 2 warm-up requests per connection, stopping after
`--max-seconds`. `--baseline CHECKOUT` also serves another checkout of the code (one worker, JSON vectors,
as it shipped: `--baseline-http h11` hides httptools and uvloop from it, `httptools` lets uvicorn use them),
before this checkout's runs in every one of `--rounds` rounds, so the two alternate in one sitting.

The client is this process alone, kept cheap so that it takes little of the CPU the server needs: one
asyncio event loop (uvloop when installed) over `--concurrency` persistent HTTP/1.1 keep-alive
connections, one request in flight on each, every request prebuilt as bytes. Each response is read by its
Content-Length and checked for status 200, the content type asked for and a slate-shaped body (it begins
with `{"schema_version":`, ends with `}` and holds vectors in the encoding asked for); every
`--validate-every`-th body, and each connection's warm-up bodies, are kept and parsed in full as a
CandidateSlate of the requested user after the timed window. Anything else (a transport error, another
status, a closed connection, no answer by the deadline) counts as an error. The CPU seconds of the client
(this process) and of the server (its process and its workers, from /proc) over the timed window are
printed per request beside requests/s: on 2 shared cores at concurrency 32 the client took 0.06-0.17 ms
of CPU per request, about a fifth of what this server took (0.3-0.4 ms) and a tenth of the server of
commit 8f5b0d9 (1.3-1.8 ms; BENCHMARKS.md, "Round 3").

Prints a summary (bytes per slate, requests/s and its ratio to the round's first baseline run, latency,
errors, client and server CPU per request, 1-min load average per row), the medians over the rounds per
code, workers and encoding, then per run the client latency p50/p99/mean and the server's own split from
the Server-Timing header: `upstream` (candidate ranking), `encode` (the slate's JSON with its vectors; in
older code, the ItemEncoder), `handler` (both), `app` (all of the app: routing, validation, handler,
serialization); client minus app is the wait in uvicorn's queue and HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device_runtime.client import ACCEPT_VECTORS, CloudClient, CloudUnavailable  # noqa: E402
from shared_schema import CandidateSlate  # noqa: E402
from shared_schema.messages import WireForm, media_type, wire_context  # noqa: E402

FORMS: dict[str, WireForm] = {"json": "json", "compact": "float32", "float16": "float16"}
"""Vector encodings compared, by name, and the wire form each asks for."""
ENCODINGS = {"json": "application/json", "compact": ACCEPT_VECTORS["float32"], "float16": ACCEPT_VECTORS["float16"]}
"""The Accept header that asks for each encoding (the device client's, for the compact ones)."""
CONTENT_TYPES = {name: media_type(form).encode() for name, form in FORMS.items()}
"""The content type each encoding's answer must carry."""
VECTOR_MARKS = {"json": b'"vector":[', "compact": b'"vector":"', "float16": b'"vector":"'}
"""How a vector of each encoding begins in the body."""
HIDE_FAST_HTTP = "import sys; sys.modules.update(httptools=None, uvloop=None); import runpy; "
"""Server prelude that makes uvicorn fall back to h11 and asyncio, as before httptools joined the cloud extra."""
WARMUP_PER_CONNECTION = 2


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


@dataclass
class Server:
    """Which code to serve and how: a checkout, its worker count and whether uvicorn may use httptools."""

    label: str
    checkout: Path
    workers: int = 1
    h11: bool = False

    def command(self, run: Path, data: Path, bundles: Path, port: int) -> list[str]:
        args = ["serve", "--run", str(run), "--data", str(data), "--bundles", str(bundles)]
        args += ["--port", str(port), "--log-level", "warning"]
        args += ["--workers", str(self.workers)] if self.workers != 1 else []  # older checkouts lack --workers
        if self.h11:
            argv = ["dir-cloud", *args]
            return [
                sys.executable,
                "-c",
                f"{HIDE_FAST_HTTP}sys.argv = {argv!r}; runpy.run_module('cloud.cli', run_name='__main__')",
            ]
        return [sys.executable, "-m", "cloud.cli", *args]


def start_server(server: Server, run: Path, data: Path, bundles: Path, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        server.command(run, data, bundles, port),
        cwd=server.checkout,
        env={**os.environ, "PYTHONPATH": str(server.checkout)},
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


def process_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of process `pid` and of each of its descendants, by pid, from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # it ended meanwhile
            parents[int(entry)] = int(fields[1])
            times[int(entry)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    family, grown = {pid}, True
    while grown:
        children = {child for child, parent in parents.items() if parent in family}
        grown = not children <= family
        family |= children
    return {member: times[member] for member in family if member in times}


@dataclass
class Result:
    """One response as the client saw it."""

    latency_ms: float
    ok: bool
    size: int = 0
    timing: bytes = b""
    error: str = ""


@dataclass
class Load:
    """The outcome of one timed window."""

    results: list[Result]
    wall: float
    client_cpu: float
    server_cpu: dict[int, float]  # by process: the server and its workers

    @property
    def server_total(self) -> float:
        return sum(self.server_cpu.values())

    def cpu_per_request(self) -> str:
        """`client / server` CPU milliseconds per request."""
        count = max(len(self.results), 1)
        return f"{self.client_cpu / count * 1e3:.2f} / {self.server_total / count * 1e3:.2f}"

    kept: list[tuple[str, bytes]] = field(default_factory=list)  # (user, body) to validate in full


def _request(user: str, host: str, accept: str) -> bytes:
    return f"GET /v1/users/{quote(user, safe='')}/slate HTTP/1.1\r\nHost: {host}\r\nAccept: {accept}\r\n\r\n".encode()


def _header(head: bytes, lower: bytes, name: bytes) -> bytes | None:
    at = lower.find(b"\r\n" + name + b":")
    if at < 0:
        return None
    start = at + len(name) + 3
    return head[start : head.find(b"\r\n", start)].strip()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, encoding: str):
    """Send one prebuilt request and read its response: (Result, body, whether the connection stays usable)."""
    start = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    length = _header(head, lower, b"content-length")
    if length is None:
        return Result((time.perf_counter() - start) * 1e3, False, error="no Content-Length"), b"", False
    body = await reader.readexactly(int(length))
    latency = (time.perf_counter() - start) * 1e3
    reusable = b"\r\nconnection: close" not in lower
    status = head[9:12]
    if status != b"200":
        return Result(latency, False, error=f"status {status.decode()}: {body[:200]!r}"), body, reusable
    if _header(head, lower, b"content-type") != CONTENT_TYPES[encoding]:
        return Result(latency, False, error=f"content type {_header(head, lower, b'content-type')!r}"), body, reusable
    if not (body.startswith(b'{"schema_version":') and body.endswith(b"}") and VECTOR_MARKS[encoding] in body):
        return Result(latency, False, error=f"not a slate with {encoding} vectors: {body[:80]!r}"), body, reusable
    return Result(latency, True, len(body), _header(head, lower, b"server-timing") or b""), body, reusable


async def _load(
    url: str, users: list[str], requests: int, concurrency: int, max_seconds: float, encoding: str, keep_every: int
) -> tuple[list[Result], float, list[tuple[str, bytes]]]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    prebuilt = [_request(u, f"{host}:{port}", ENCODINGS[encoding]) for u in users]
    results: list[Result] = []
    kept: list[tuple[str, bytes]] = []
    taken = 0
    stop_at = 0.0

    async def connection(number: int, opening: asyncio.Lock, warmup: asyncio.Barrier) -> None:
        nonlocal taken
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

        async def ask(user: int) -> tuple[Result, bytes]:
            """One request on this connection, opened again if the last answer closed it."""
            nonlocal streams
            try:
                streams = streams or await asyncio.open_connection(host, int(port))
                result, body, reusable = await _exchange(*streams, prebuilt[user], encoding)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                result, body, reusable = Result(0.0, False, error=f"{type(exc).__name__}: {exc}"), b"", False
            if not reusable and streams:
                streams[1].close()
                streams = None
            return result, body

        try:
            for i in range(WARMUP_PER_CONNECTION):
                user = (number * WARMUP_PER_CONNECTION + i) % len(users)
                async with opening if i == 0 else contextlib.nullcontext():  # one connection opened at a time,
                    _, body = await ask(user)  # so that idle workers share them
                kept.append((users[user], body))
        finally:
            await warmup.wait()
        while taken < requests and time.perf_counter() < stop_at:
            index, taken = taken, taken + 1
            result, body = await ask(index % len(users))
            results.append(result)
            if keep_every and index % keep_every == 0:
                kept.append((users[index % len(users)], body))
        if streams:
            streams[1].close()

    opening, barrier = asyncio.Lock(), asyncio.Barrier(concurrency + 1)
    tasks = [asyncio.ensure_future(connection(number, opening, barrier)) for number in range(concurrency)]
    await barrier.wait()
    start = time.perf_counter()
    stop_at = start + max_seconds
    done, pending = await asyncio.wait(tasks, timeout=max_seconds + 30)
    wall = time.perf_counter() - start
    for task in pending:  # no answer by the deadline: each a request lost
        task.cancel()
        results.append(Result(0.0, False, error=f"no answer within {max_seconds + 30:.0f} s"))
    for task in done:
        if task.exception() is not None:
            results.append(Result(0.0, False, error=f"{type(task.exception()).__name__}: {task.exception()}"))
    return results, wall, kept


def load(
    url: str,
    users: list[str],
    requests: int,
    concurrency: int,
    max_seconds: float,
    encoding: str = "json",
    server_pid: int | None = None,
    keep_every: int = 100,
) -> Load:
    """Run one timed window; CPU seconds of this process and of the server are counted over it."""
    runner = _event_loop_runner()
    client_before, server_before = _own_cpu(), process_cpu(server_pid) if server_pid else {}
    with runner:
        results, wall, kept = runner.run(_load(url, users, requests, concurrency, max_seconds, encoding, keep_every))
    server_after = process_cpu(server_pid) if server_pid else {}
    server_cpu = {pid: seconds - server_before.get(pid, 0.0) for pid, seconds in server_after.items()}
    return Load(results, wall, _own_cpu() - client_before, server_cpu, kept)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _event_loop_runner() -> asyncio.Runner:
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def validate(run: Load, encoding: str) -> None:
    """Parse every kept body in full as a slate of its user; each that fails becomes an error."""
    for user, body in run.kept:
        try:
            slate = CandidateSlate.model_validate_json(body, context=wire_context(FORMS[encoding]))
            if slate.user_id != user:
                raise ValueError(f"slate of {slate.user_id!r} for user {user!r}")
            vector = json.loads(body)["sources"][0]["items"][0]["vector"]
            if isinstance(vector, str) != (encoding != "json"):
                raise ValueError(f"{encoding} vectors asked for, got {type(vector).__name__}")
        except ValueError as exc:
            run.results.append(Result(0.0, False, error=f"invalid slate: {str(exc)[:200]}"))


@dataclass
class Row:
    round: int
    server: Server
    encoding: str
    run: Load
    load_average: float


def _timings(run: Load) -> list[dict[str, float]]:
    out = []
    for r in run.results:
        if r.ok:
            entries = (e.split(";dur=") for e in r.timing.decode().split(",") if ";dur=" in e)
            out.append({k.strip(): float(v) for k, v in entries})
    return out


def summary(rows: list[Row]) -> str:
    """One markdown row per run, with requests/s as a multiple of the first baseline run of its round."""
    lines = [
        "| round | code | workers | vectors | bytes per slate | requests/s | x baseline | p50 / p99 ms | errors "
        "| CPU ms per request, client / server | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ok = [r for r in row.run.results if r.ok]
        latency = np.array([r.latency_ms for r in ok]) if ok else np.array([np.nan])
        size = np.mean([r.size for r in ok]) if ok else float("nan")
        rate = len(row.run.results) / row.run.wall
        base = next((b for b in rows if b.round == row.round and b.server.label != "this"), None)
        ratio = f"{rate / (len(base.run.results) / base.run.wall):.2f}" if base else "-"
        lines.append(
            f"| {row.round} | {row.server.label} | {row.server.workers} | {row.encoding} | {size:,.0f} | {rate:,.0f} "
            f"| {ratio} | {np.percentile(latency, 50):.1f} / {np.percentile(latency, 99):.1f} "
            f"| {len(row.run.results) - len(ok)} | {row.run.cpu_per_request()} "
            f"| {row.load_average:.2f} |"
        )
    return "\n".join(lines)


def medians(rows: list[Row]) -> str:
    """Per code, workers and encoding over all rounds: the median requests/s and server CPU per request, and
    the medians as multiples of the first baseline's (requests/s up, CPU per request down)."""
    groups: dict[tuple[str, int, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.server.label, row.server.workers, row.encoding), []).append(row)
    rate = {key: float(np.median([len(r.run.results) / r.run.wall for r in group])) for key, group in groups.items()}
    cpu = {
        key: float(np.median([r.run.server_total / len(r.run.results) for r in group])) for key, group in groups.items()
    }
    base = next(iter(groups)) if rows[0].server.label != "this" else None
    lines = [
        "| code | workers | vectors | rounds | median requests/s | x baseline | median server CPU ms per request "
        "| baseline's / this |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, group in groups.items():
        up = f"{rate[key] / rate[base]:.2f}" if base else "-"
        down = f"{cpu[base] / cpu[key]:.2f}" if base else "-"
        label, workers, encoding = key
        lines.append(
            f"| {label} | {workers} | {encoding} | {len(group)} | {rate[key]:,.0f} | {up} | {cpu[key] * 1e3:.2f} "
            f"| {down} |"
        )
    return "\n".join(lines)


def report(run: Load, concurrency: int) -> str:
    ok = [r for r in run.results if r.ok]
    errors = len(run.results) - len(ok)
    timings = _timings(run)
    app, upstream, encode, handler = (
        np.array([t.get(k, np.nan) for t in timings]) for k in ("app", "upstream", "encode", "handler")
    )
    client = np.array([r.latency_ms for r in ok])
    rows = [
        ("client latency (keep-alive connection)", client),
        ("  server app total (Server-Timing app)", app),
        ("    handler (slate built)", handler),
        ("      upstream ranking", upstream),
        ("      slate vectors", encode),
        ("    app - handler (routing, validation, JSON)", app - handler),
        ("  queueing, HTTP (client - app)", client - app),
    ]
    lines = [
        f"{len(run.results)} requests at concurrency {concurrency}: {len(ok)} ok, {errors} errors, "
        f"{run.wall:.1f} s, {len(run.results) / run.wall:.0f} requests/s; CPU ms per request (client / server) "
        f"{run.cpu_per_request()}; server CPU s per process {', '.join(f'{v:.2f}' for v in run.server_cpu.values())}",
        *sorted({f"  error: {r.error}" for r in run.results if not r.ok}),
        f"{'':48}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}",
    ]
    for name, values in rows:
        values = np.asarray(values, dtype=float) if len(values) else np.array([np.nan])
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
    parser.add_argument("--concurrency", type=int, default=32, help="keep-alive connections, one request on each")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop submitting after this long")
    parser.add_argument("--workers", default="1,2", help="uvicorn worker counts to compare (default: 1,2)")
    parser.add_argument(
        "--encodings", default="json,compact,float16", help="vector encodings: json, compact (float32), float16"
    )
    parser.add_argument("--baseline", help="another checkout of this repository to serve first in every round")
    parser.add_argument(
        "--baseline-http",
        default="h11",
        help="uvicorn HTTP for the baseline: h11 (httptools and uvloop hidden), httptools, or both (h11,httptools)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat baseline and this checkout's runs, alternating")
    parser.add_argument("--validate-every", type=int, default=100, help="parse every N-th body in full")
    args = parser.parse_args(argv)
    servers = [Server("this", REPO, int(w)) for w in args.workers.split(",")]
    if args.baseline:
        flavours = args.baseline_http.split(",")
        if not set(flavours) <= {"h11", "httptools"}:
            parser.error(f"--baseline-http: h11, httptools or both, got {args.baseline_http!r}")
        baseline = Path(args.baseline).resolve()
        servers[:0] = [Server(f"baseline, {f}", baseline, 1, h11=f == "h11") for f in flavours]
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="service-load-") as tmp:
        folder = Path(tmp)
        if args.run:
            run, data = Path(args.run).resolve(), Path(args.data).resolve() if args.data else None
        else:
            print(f"building a synthetic run ({args.users} users, DIR, 1 epoch)...", flush=True)
            run, data = build_run(folder, args.users)
        if data is None:
            data = Path(json.loads((run / "config.json").read_text())["data"]).resolve()
        (folder / "bundles").mkdir()
        rows: list[Row] = []
        for round_ in range(1, args.rounds + 1):
            for server in servers:
                process, url = start_server(server, run, data, folder / "bundles", folder / "serve.log")
                try:
                    info = CloudClient(url).version()
                    users = CloudClient(url).users(limit=1000)
                    for encoding in ["json"] if server.label != "this" else args.encodings.split(","):
                        average = os.getloadavg()[0]
                        measured = load(
                            url,
                            users,
                            args.requests,
                            args.concurrency,
                            args.max_seconds,
                            encoding,
                            process.pid,
                            args.validate_every,
                        )
                        validate(measured, encoding)
                        rows.append(Row(round_, server, encoding, measured, average))
                        print(summary(rows).splitlines()[-1], flush=True)
                finally:
                    process.terminate()
                    process.wait(10)
        loads.append(os.getloadavg()[0])
    print(
        f"\nservice load on {platform.machine()} ({os.cpu_count()} cores), Python {platform.python_version()}: "
        f"model {info.model_name}, sources {info.sources}, n={info.n}, vector dims {info.vector_dims}, "
        f"{len(users)} users; loopback, {args.concurrency} keep-alive connections, 1-min load average "
        f"{loads[0]:.2f} before, {loads[1]:.2f} after\n"
    )
    print(summary(rows))
    print()
    print(medians(rows))
    for row in rows:
        print(f"\n## round {row.round}, {row.server.label}, {row.server.workers} worker(s), {row.encoding} vectors")
        print(report(row.run, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
