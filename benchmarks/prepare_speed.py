"""Time `prepare` on generated logs and print a table (events, lists, seconds, events/s).

    .venv/bin/python benchmarks/prepare_speed.py --events 1000000 --modes logged,sampled

The logs come from a quick vectorised generator (not a click model, only realistic sizes): 3 sources
of 5,000 items (one categorical field, 8 dense floats), 10,000 users, 80% of the events are
impressions in lists of 24 items (10% clicked), 20% are plain clicks. `sampled` makes one list per
click from the same events. Timing covers reading, validation, lists, histories and writing DATA.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cloud.data.prepare import prepare  # noqa: E402

SOURCES = ("video", "article", "ad")
ITEMS, USERS, LIST_SIZE, DENSE = 5_000, 10_000, 24, 8


def write_logs(folder: Path, events: int, mode: str, seed: int = 0) -> None:
    """Write a LOGS folder with about `events` rows of events.csv."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sources = "".join(
        f'\n[[sources]]\nname = "{s}"\ntarget_share = {share}\ncategorical = [{{name = "cat", vocab = 0}}]\n'
        f'dense = [{{name = "emb", dim = {DENSE}}}]\n' for s, share in zip(SOURCES, (0.5, 0.3, 0.2)))
    (folder / "dataset.toml").write_text(f'name = "bench"\nlist_mode = "{mode}"\n{sources}')
    items = pd.DataFrame({"item_id": [f"{s}-{i}" for s in SOURCES for i in range(ITEMS)],
                          "source": np.repeat(SOURCES, ITEMS),
                          "cat": rng.integers(0, 50, len(SOURCES) * ITEMS)})
    dense = rng.normal(size=(len(items), DENSE)).round(4)
    for d in range(DENSE):
        items[f"emb_{d}"] = dense[:, d]
    items.to_csv(folder / "items.csv", index=False)

    lists = int(events * 0.8) // LIST_SIZE
    plain = events - lists * LIST_SIZE
    list_user = rng.integers(0, USERS, lists)
    list_ts = np.sort(rng.uniform(0, 90 * 86400, lists)).round()
    # LIST_SIZE distinct items per list: a window of a random permutation of the items at a random start
    start = rng.integers(0, len(items), lists)
    shown = rng.permutation(len(items))[(start[:, None] + np.arange(LIST_SIZE)) % len(items)]
    impressions = pd.DataFrame({
        "user_id": np.repeat(list_user, LIST_SIZE),
        "item_id": items["item_id"].to_numpy()[shown.ravel()],
        "timestamp": np.repeat(list_ts, LIST_SIZE),
        "label": (rng.random(lists * LIST_SIZE) < 0.1).astype(int),
        "list_id": np.repeat(np.arange(lists), LIST_SIZE),
        "position": np.tile(np.arange(LIST_SIZE), lists),
    })
    behaviours = pd.DataFrame({
        "user_id": rng.integers(0, USERS, plain),
        "item_id": items["item_id"].to_numpy()[rng.integers(0, len(items), plain)],
        "timestamp": rng.uniform(0, 90 * 86400, plain).round(), "label": 1, "list_id": "", "position": "",
    })
    frame = pd.concat([impressions, behaviours]).sort_values("timestamp", kind="stable")
    frame["user_id"] = "u" + frame["user_id"].astype(str)
    frame.to_csv(folder / "events.csv", index=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--modes", default="logged,sampled")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            logs = Path(tmp) / f"logs-{mode}"
            write_logs(logs, args.events, mode)
            start = time.perf_counter()
            stats = prepare(logs, Path(tmp) / f"data-{mode}", force=True)
            seconds = time.perf_counter() - start
            rows.append((mode, stats["events"], sum(stats["lists"].values()), seconds))
    print(f"{'mode':<9}{'events':>10}{'lists':>10}{'seconds':>10}{'events/s':>12}")
    for mode, events, lists, seconds in rows:
        print(f"{mode:<9}{events:>10}{lists:>10}{seconds:>10.2f}{events / seconds:>12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
