"""Print statistics of a prepared DATA folder: `dir-cloud stats --data DATA [--json]`.

Per source: target share and item count. Per split: lists, real candidates per list, click rate
(clicks / real candidates), cold-source share (share of lists where the user has no device history
in at least one source that has candidates), and per source the mean number of candidates and the
mean history length in the device and the cloud view.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared DATA folder (dir-cloud prepare)")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")


def run(args: argparse.Namespace) -> int:
    from cloud.data.prepared import PreparedData

    stats = dataset_stats(PreparedData(args.data))
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def dataset_stats(data) -> dict:
    """Statistics of a cloud.data.prepared.PreparedData as a JSON-ready dict."""
    spec = data.spec
    splits = {}
    for name in ("train", "valid", "test"):
        arrays = data.split(name)
        real = np.asarray(arrays["cand_item"]) >= 0  # [L, m, n]
        has_cand = np.asarray(real.any(axis=2))  # [L, m]
        device = (np.asarray(arrays["hist_device"]) >= 0).sum(axis=2)  # [L, m]
        cloud = (np.asarray(arrays["hist_cloud"]) >= 0).sum(axis=2)
        lists = len(arrays["ts"])
        splits[name] = {
            "lists": lists,
            "candidates_per_list": _mean(real.sum(axis=(1, 2))),
            "click_rate": float(np.asarray(arrays["label"])[real].sum() / max(real.sum(), 1)),
            "cold_source_share": _mean((has_cand & (device == 0)).any(axis=1)),
            "sources": {
                source: {
                    "candidates": _mean(real[:, s].sum(axis=1)),
                    "hist_device": _mean(device[:, s]),
                    "hist_cloud": _mean(cloud[:, s]),
                    "cold_share": _mean(device[has_cand[:, s], s] == 0),
                }
                for s, source in enumerate(spec.source_names)
            },
        }
    return {
        "name": spec.name,
        "list_mode": spec.list_mode,
        "n": spec.n,
        "t": spec.t,
        "K": spec.K,
        "lag": spec.lag,
        "users": data.num_users,
        "sources": {s.name: {"target_share": s.target_share, "items": data.num_items[s.name]} for s in spec.sources},
        "splits": splits,
    }


def format_stats(stats: dict) -> str:
    """The statistics as plain-text tables."""
    lines = [
        f"dataset {stats['name']}: list_mode {stats['list_mode']}, n={stats['n']} t={stats['t']} "
        f"K={stats['K']} lag={stats['lag']}, {stats['users']} users",
        "",
        f"{'source':<16}{'share':>8}{'items':>10}",
    ]
    lines += [f"{name:<16}{s['target_share']:>8.3f}{s['items']:>10}" for name, s in stats["sources"].items()]
    lines += ["", f"{'split':<8}{'lists':>10}{'cands/list':>12}{'click rate':>12}{'cold-source share':>19}"]
    lines += [
        f"{name:<8}{s['lists']:>10}{s['candidates_per_list']:>12.2f}{s['click_rate']:>12.4f}"
        f"{s['cold_source_share']:>19.4f}"
        for name, s in stats["splits"].items()
    ]
    lines += ["", f"{'split':<8}{'source':<16}{'cands':>8}{'hist device':>13}{'hist cloud':>12}{'cold share':>12}"]
    lines += [
        f"{name:<8}{source:<16}{v['candidates']:>8.2f}{v['hist_device']:>13.2f}{v['hist_cloud']:>12.2f}"
        f"{v['cold_share']:>12.4f}"
        for name, s in stats["splits"].items()
        for source, v in s["sources"].items()
    ]
    return "\n".join(lines)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else 0.0
