"""Time `prepare` on generated logs: events/s per list mode, and per path (in memory, DuckDB, Ray) at scale.

    .venv/bin/python benchmarks/prepare_speed.py --events 1000000 --modes logged,sampled
    .venv/bin/python benchmarks/prepare_speed.py --sizes 2000000,10000000,100000000 --paths memory,duckdb \\
        --memory-limit 4GB --work /tmp/prepare-bench

The logs come from a quick vectorised generator (not a click model, only realistic sizes): 3 sources
of 5,000 items (one categorical field, 8 dense floats), 10,000 users, 80% of the events are
impressions in lists of 24 items (10% clicked), 20% are plain clicks. `sampled` makes one list per
click from the same events. Timing covers reading, validation, lists, histories and writing DATA.

With --sizes, events.csv is written in time windows of at most 2M events (bounded memory; a run that
is stopped resumes from the last finished window in --work) and each path runs in its own process,
so its peak RSS (ru_maxrss of that process: DuckDB included, Ray workers not) is measured alone. The
in-memory path runs only where its estimated peak (8 bytes per byte of events.csv) fits --fit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cloud.data.prepare import prepare  # noqa: E402  (after the sys.path line: runs from a source tree)
from cloud.data.prepare_scale import MEMORY_PER_FILE_BYTE, parse_size  # noqa: E402

SOURCES = ("video", "article", "ad")
ITEMS, USERS, LIST_SIZE, DENSE = 5_000, 10_000, 24, 8
DAYS = 90
WINDOW_EVENTS = 2_000_000


def write_logs(folder: Path, events: int, mode: str, seed: int = 0) -> None:
    """Write a LOGS folder with about `events` rows of events.csv, window by window (resumable)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sources = "".join(
        f'\n[[sources]]\nname = "{s}"\ntarget_share = {share}\ncategorical = [{{name = "cat", vocab = 0}}]\n'
        f'dense = [{{name = "emb", dim = {DENSE}}}]\n'
        for s, share in zip(SOURCES, (0.5, 0.3, 0.2))
    )
    (folder / "dataset.toml").write_text(f'name = "bench"\nlist_mode = "{mode}"\n{sources}')
    items = pd.DataFrame(
        {
            "item_id": [f"{s}-{i}" for s in SOURCES for i in range(ITEMS)],
            "source": np.repeat(SOURCES, ITEMS),
            "cat": rng.integers(0, 50, len(SOURCES) * ITEMS),
        }
    )
    dense = rng.normal(size=(len(items), DENSE)).round(4)
    for d in range(DENSE):
        items[f"emb_{d}"] = dense[:, d]
    items.to_csv(folder / "items.csv", index=False)

    windows = -(-events // WINDOW_EVENTS)
    progress = folder / "events.progress.json"
    done = json.loads(progress.read_text()) if progress.exists() else {"windows": 0, "bytes": 0, "lists": 0}
    progress.write_text(json.dumps(done))  # present until the last window is written
    with (folder / "events.csv").open("ab") as fh:
        fh.truncate(done["bytes"])
        fh.seek(done["bytes"])
        for w in range(done["windows"], windows):
            size = min(WINDOW_EVENTS, events - w * WINDOW_EVENTS)
            frame, lists = _window(np.random.default_rng([seed, w]), size, w, windows, done["lists"])
            frame.to_csv(fh, index=False, header=(w == 0))
            done = {"windows": w + 1, "bytes": fh.tell(), "lists": done["lists"] + lists}
            progress.write_text(json.dumps(done))
    progress.unlink()


def _window(rng: np.random.Generator, events: int, w: int, windows: int, first_list: int) -> tuple[pd.DataFrame, int]:
    """The events of time window w (of `windows` over DAYS days), sorted by timestamp."""
    span = DAYS * 86400 / windows
    lists = int(events * 0.8) // LIST_SIZE
    plain = events - lists * LIST_SIZE
    item_ids = np.array([f"{s}-{i}" for s in SOURCES for i in range(ITEMS)], dtype=object)
    list_user = rng.integers(0, USERS, lists)
    list_ts = np.sort(rng.uniform(w * span, (w + 1) * span, lists)).round()
    # LIST_SIZE distinct items per list: a window of a random permutation of the items at a random start
    start = rng.integers(0, len(item_ids), lists)
    shown = rng.permutation(len(item_ids))[(start[:, None] + np.arange(LIST_SIZE)) % len(item_ids)]
    impressions = pd.DataFrame(
        {
            "user_id": np.repeat(list_user, LIST_SIZE),
            "item_id": item_ids[shown.ravel()],
            "timestamp": np.repeat(list_ts, LIST_SIZE),
            "label": (rng.random(lists * LIST_SIZE) < 0.1).astype(int),
            "list_id": np.repeat(np.arange(first_list, first_list + lists), LIST_SIZE),
            "position": np.tile(np.arange(LIST_SIZE), lists),
        }
    )
    behaviours = pd.DataFrame(
        {
            "user_id": rng.integers(0, USERS, plain),
            "item_id": item_ids[rng.integers(0, len(item_ids), plain)],
            "timestamp": rng.uniform(w * span, (w + 1) * span, plain).round(),
            "label": 1,
            "list_id": "",
            "position": "",
        }
    )
    frame = pd.concat([impressions, behaviours]).sort_values("timestamp", kind="stable")
    frame["user_id"] = "u" + frame["user_id"].astype(str)
    return frame, lists


def modes_table(events: int, modes: list[str]) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            logs = Path(tmp) / f"logs-{mode}"
            write_logs(logs, events, mode)
            start = time.perf_counter()
            stats = prepare(logs, Path(tmp) / f"data-{mode}", force=True)
            seconds = time.perf_counter() - start
            rows.append((mode, stats["events"], sum(stats["lists"].values()), seconds))
    print(f"{'mode':<9}{'events':>10}{'lists':>10}{'seconds':>10}{'events/s':>12}")
    for mode, count, lists, seconds in rows:
        print(f"{mode:<9}{count:>10}{lists:>10}{seconds:>10.2f}{count / seconds:>12.0f}")


RUN = """
import json, sys, time
from cloud.data.prepare_scale import prepare_logs
start = time.perf_counter()
stats, how = prepare_logs(sys.argv[1], sys.argv[2], force=True, engine=sys.argv[3], memory_limit=int(sys.argv[4]),
                          ray=sys.argv[5] or None)
print(json.dumps({"seconds": time.perf_counter() - start, "events": stats["events"], "how": how}))
"""


def run_path(logs: Path, out: Path, path: str, memory_limit: int) -> dict:
    """One prepare in a fresh process: wall seconds, events and that process's peak RSS."""
    engine, ray = ("duckdb", "local") if path == "ray" else (path, "")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN, str(logs), str(out), engine, str(memory_limit), ray],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise RuntimeError(f"prepare ({path}) failed with status {status}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {**result, "peak_rss": usage.ru_maxrss * 1024}


def sizes_table(sizes: list[int], paths: list[str], memory_limit: int, fit: int, ray_max: int, work: Path) -> None:
    print(f"load before: {os.getloadavg()}")
    rows = []
    for size in sizes:
        logs = work / f"logs-{size}"
        if not (logs / "events.csv").is_file() or (logs / "events.progress.json").exists():
            start = time.perf_counter()
            write_logs(logs, size, "logged")
            print(f"generated {size} events in {time.perf_counter() - start:.0f} s", flush=True)
        for path in paths:
            need = (logs / "events.csv").stat().st_size * MEMORY_PER_FILE_BYTE[".csv"]
            if (path == "memory" and need > fit) or (path == "ray" and size > ray_max):
                rows.append((size, path, None))
                continue
            limit = fit if path == "memory" else memory_limit  # in memory, --memory-limit caps the lists
            result = run_path(logs, work / f"data-{size}-{path}", path, limit)
            shutil.rmtree(work / f"data-{size}-{path}")
            rows.append((size, path, result))
            print(size, path, result, os.getloadavg(), flush=True)
    base = next((r["events"] / r["seconds"] for s, p, r in rows if p == "memory" and r), None)
    print(f"load after: {os.getloadavg()}")
    print("| events | path | wall s | events/s | peak RSS | vs in-memory at the smallest size |")
    print("|---|---|---|---|---|---|")
    for size, path, r in rows:
        if r is None:
            why = "estimated peak over --fit" if path == "memory" else "over --ray-max"
            print(f"| {size:,} | {path} | - | - | - | not run: {why} |")
            continue
        rate = r["events"] / r["seconds"]
        ratio = f"{rate / base:.2f}" if base else "-"
        print(
            f"| {r['events']:,} | {path} | {r['seconds']:.1f} | {rate:,.0f} | {r['peak_rss'] / 1e9:.2f} GB | {ratio} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--modes", default="logged,sampled")
    parser.add_argument("--sizes", default=None, help="comma-separated event counts: the per-path scale table")
    parser.add_argument("--paths", default="memory,duckdb", help="memory, duckdb, ray (a local Ray)")
    parser.add_argument("--memory-limit", default="4GB", help="prepare --memory-limit for duckdb and ray")
    parser.add_argument(
        "--fit", default="16GB", help="run the in-memory path only where its estimate fits this (its --memory-limit)"
    )
    parser.add_argument("--ray-max", type=int, default=10_000_000, help="largest size run on the local Ray")
    parser.add_argument("--work", default=None, help="folder for the generated logs (kept, resumable)")
    args = parser.parse_args()
    if args.sizes is None:
        modes_table(args.events, args.modes.split(","))
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="prepare-bench-"))
    sizes_table(
        [int(s) for s in args.sizes.split(",")],
        args.paths.split(","),
        parse_size(args.memory_limit),
        parse_size(args.fit),
        args.ray_max,
        work,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
