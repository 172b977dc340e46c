"""Peak memory of `dir-cloud train` against the size of the prepared data: training streams the splits.

    .venv/bin/python benchmarks/train_memory.py --work /tmp/trainmem --lists 100000,300000,1000000

For each size, writes a synthetic DATA folder directly in the prepared format (random item tables and
lists, 3 sources, n=10, t=20; train grows, valid and test stay at --eval-lists), trains one epoch with
`python -m cloud.cli train` in a child process (1 thread, a small dir-isi by default) and reads the
child's peak resident set (wait4 ru_maxrss, the kernel's VmHWM). Prints one markdown row per size.
DATA folders are kept under --work and reused; delete them afterwards (about 2.2 kB per list).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
N, T, LAG = 10, 20, 3
SOURCES = [  # name, target share, categorical vocabularies, dense dim, items
    ("video", 0.5, (25, 600), 8, 4000),
    ("article", 0.3, (17,), 4, 2500),
    ("ad", 0.2, (79, 347), 2, 800),
]
CHUNK = 50_000


def write_data(out: Path, train_lists: int, eval_lists: int, seed: int = 0) -> None:
    """A prepared DATA folder (docs/data.md) of random lists, written chunk by chunk (little memory)."""
    rng = np.random.default_rng(seed)
    tmp = out.with_name(out.name + ".tmp")
    for name, _, vocabs, dense, items in SOURCES:
        folder = tmp / "items" / name
        folder.mkdir(parents=True)
        np.save(folder / "ids.npy", np.array([f"{name}{i}" for i in range(items)]))
        np.save(folder / "categorical.npy", np.stack([rng.integers(1, v, items) for v in vocabs], axis=1))
        np.save(folder / "dense.npy", rng.normal(size=(items, dense)).astype(np.float32))
    users = 1000
    np.save(tmp / "users.npy", np.array([f"u{i}" for i in range(users)]))
    sizes = {"train": train_lists, "valid": eval_lists, "test": eval_lists}
    for split, lists in sizes.items():
        (tmp / split).mkdir()
        arrays = {
            key: np.lib.format.open_memmap(tmp / split / f"{key}.npy", "w+", dtype, (lists, *shape))
            for key, dtype, shape in _layout()
        }
        for start in range(0, lists, CHUNK):
            for key, values in _random_lists(rng, min(CHUNK, lists - start), users).items():
                arrays[key][start : start + len(values)] = values
        for array in arrays.values():
            array.flush()
    spec = {
        "schema_version": 1,
        "name": "stream-bench",
        "n": N,
        "t": T,
        "K": 5,
        "lag": LAG,
        "list_mode": "logged",
        "negatives": 9,
        "valid_fraction": 0.1,
        "test_fraction": 0.1,
        "sources": [
            {
                "name": name,
                "target_share": share,
                "categorical": [{"name": f"c{i}", "vocab": v} for i, v in enumerate(vocabs)],
                "dense": [{"name": "x", "dim": dense}],
            }
            for name, share, vocabs, dense, _ in SOURCES
        ],
    }
    meta = {
        "schema_version": 1,
        "spec": spec,
        "stats": {"lists": sizes},
        "num_items": {s[0]: s[4] for s in SOURCES},
        "num_users": users,
        "has_click_prob": False,
    }
    (tmp / "dataset.json").write_text(json.dumps(meta, indent=2))
    tmp.rename(out)


def _layout():
    m = len(SOURCES)
    return [
        ("user", np.int64, ()),
        ("ts", np.float64, ()),
        ("cand_item", np.int64, (m, N)),
        ("label", np.float32, (m, N)),
        ("click_prob", np.float32, (m, N)),
        ("position", np.int64, (m, N)),
        ("hist_device", np.int64, (m, T)),
        ("hist_cloud", np.int64, (m, T)),
        ("hist_device_age", np.float32, (m, T)),
        ("hist_cloud_age", np.float32, (m, T)),
    ]


def _random_lists(rng: np.random.Generator, lists: int, users: int) -> dict[str, np.ndarray]:
    items = np.array([s[4] for s in SOURCES])[None, :, None]
    m = len(SOURCES)
    real = np.arange(N)[None, None, :] < rng.integers(1, N + 1, (lists, m, 1))
    cand = np.where(real, rng.integers(0, items, (lists, m, N)), -1)
    label = (real & (rng.random((lists, m, N)) < 0.12)).astype(np.float32)
    held = np.arange(T)[None, None, :] < rng.integers(0, T + 1, (lists, m, 1))
    hist = np.where(held, rng.integers(0, items, (lists, m, T)), -1)
    hist_cloud = np.concatenate([hist[:, :, LAG:], np.full((lists, m, LAG), -1)], axis=2)
    age = np.where(held, rng.exponential(86400.0, (lists, m, T)), 0).astype(np.float32)
    return {
        "user": rng.integers(0, users, lists),
        "ts": np.sort(rng.random(lists)) * 1e6,
        "cand_item": cand,
        "label": label,
        "click_prob": np.full((lists, m, N), np.nan, np.float32),
        "position": np.where(real, np.arange(N), -1),
        "hist_device": hist,
        "hist_cloud": hist_cloud,
        "hist_device_age": age,
        "hist_cloud_age": np.concatenate([age[:, :, LAG:], np.zeros((lists, m, LAG), np.float32)], axis=2),
    }


def measure(data: Path, run: Path, config: dict) -> dict:
    """Train one run in a child process; its peak RSS, wall time and training throughput."""
    config_path = run.with_suffix(".json")
    config_path.write_text(json.dumps(config))
    command = [
        sys.executable,
        "-m",
        "cloud.cli",
        "train",
        "--data",
        str(data),
        "--out",
        str(run),
        "--config",
        str(config_path),
    ]
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"train failed on {data}:\n{child.stderr.read().decode()[-3000:]}")
    with open(run / "epochs.csv") as handle:
        rows = list(csv.DictReader(handle))
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "wall_s": wall, "lists_per_s": float(rows[-1]["lists_per_s"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the DATA folders and runs")
    parser.add_argument("--lists", default="100000,300000,1000000", help="train lists per size, comma-separated")
    parser.add_argument("--eval-lists", type=int, default=2000, help="lists in valid and in test")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--model", default="dir-isi", help="registry name (dir-isi: DIR with mean pooling, fast)")
    parser.add_argument(
        "--model-options",
        default='{"hidden": 8, "embedding_dim": 4, "mlp_dims": [8]}',
        help="model options as JSON (small by default: memory is about the data, not the model)",
    )
    args = parser.parse_args()
    config = {
        "model": args.model,
        "epochs": 1,
        "batch_size": args.batch_size,
        "threads": 1,
        "model_options": json.loads(args.model_options),
    }
    m = len(SOURCES)
    read_per_list = m * N * 8 + m * N * 4 + m * T * 8  # cand_item, label, hist_device
    print("| train lists | DATA on disk (GB) | read per epoch (GB) | peak RSS (MB) | train lists/s | wall (s) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for lists in (int(x) for x in args.lists.split(",")):
        data = args.work / f"data-{lists}"
        if not data.exists():
            write_data(data, lists, args.eval_lists)
        size = sum(f.stat().st_size for f in data.rglob("*") if f.is_file()) / 1e9
        run = args.work / f"run-{lists}-{time.strftime('%H%M%S')}"
        result = measure(data, run, config)
        print(
            f"| {lists:,} | {size:.2f} | {lists * read_per_list / 1e9:.2f} | {result['peak_rss_mb']:.0f} | "
            f"{result['lists_per_s']:.0f} | {result['wall_s']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
