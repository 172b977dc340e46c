"""Per-source click histories of each list, in the device and the cloud view.

    views = histories(events, list_user, list_ts, m=2, t=20, lag=3)
    views["hist_device"][l, s]     # item indices of source s, newest first, -1 = padding
    views["hist_cloud_age"][l, s]  # list ts - click ts in seconds, 0 at padding

A behaviour is a click (label 1). The user's clicks are ordered by (timestamp, events.csv row), so
equal timestamps are broken by file order. Device view: every click with timestamp strictly before
the list's. Cloud view: the device view minus its newest `lag` clicks counted across all sources.
Each view then keeps the newest t clicks per source.
"""

from __future__ import annotations

import numpy as np

from cloud.data.logs import Events


def histories(
    events: Events, list_user: np.ndarray, list_ts: np.ndarray, m: int, t: int, lag: int
) -> dict[str, np.ndarray]:
    """hist_device, hist_cloud (int64 [L, m, t]) and their ages (float32 [L, m, t])."""
    clicks = np.flatnonzero(events.label == 1)
    clicks = clicks[np.lexsort((clicks, events.ts[clicks], events.user[clicks]))]
    c_user, c_ts, c_src, c_item = (a[clicks] for a in (events.user, events.ts, events.source, events.item))

    # Global click range [start, end) of each list's user with timestamp < list ts (device view).
    uniq = np.unique(c_ts)
    width = len(uniq) + 1
    click_key = c_user * width + np.searchsorted(uniq, c_ts)
    list_key = list_user * width + np.searchsorted(uniq, list_ts, side="left")
    start = np.searchsorted(c_user, list_user, side="left")
    end = {"device": np.searchsorted(click_key, list_key, side="left")}
    end["cloud"] = np.maximum(end["device"] - lag, start)

    shape = (len(list_ts), m, t)
    out = {}
    for view in end:
        out[f"hist_{view}"] = np.full(shape, -1, np.int64)
        out[f"hist_{view}_age"] = np.zeros(shape, np.float32)
    back = np.arange(t)
    for s in range(m):
        mine = c_src == s
        if not mine.any():
            continue
        before = np.r_[0, np.cumsum(mine)]  # clicks of source s among the first i global clicks
        s_item, s_ts = c_item[mine], c_ts[mine]
        first = before[start]
        for view, stop in end.items():
            idx = before[stop][:, None] - 1 - back  # newest first
            real = idx >= first[:, None]
            idx = np.where(real, idx, 0)
            out[f"hist_{view}"][:, s] = np.where(real, s_item[idx], -1)
            out[f"hist_{view}_age"][:, s] = np.where(real, list_ts[:, None] - s_ts[idx], 0.0)
    return out
