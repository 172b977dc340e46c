"""Statistics of simulated paths: response-time percentiles, history staleness, clicks per page.

row = path_summary(result)            # {"response_p50_ms": ..., "staleness_p50_s": ..., "clicks_per_page": ...}
gain = paired_gain(device, cloud)     # device - cloud expected clicks per page, 95% CI over users
"""

from __future__ import annotations

import numpy as np

from cloud.simulation.engine import PathResult


def path_summary(result: PathResult) -> dict[str, float]:
    """One row of figures for a path (NaN staleness = no visible history yet, left out of its percentiles)."""
    response = result.timing.response_ms
    stale = result.staleness_s[np.isfinite(result.staleness_s)]
    wait = result.timing.wait_ms
    row = {
        "requests": float(response.size),
        "response_mean_ms": float(response.mean()),
        **{f"response_p{q}_ms": float(np.percentile(response, q)) for q in (50, 95, 99)},
        "queue_wait_mean_ms": float(wait.mean()) if wait is not None else 0.0,
        "fallback_share": float(result.timing.fallback.mean()),
        "staleness_p50_s": _percentile(stale, 50),
        "staleness_p95_s": _percentile(stale, 95),
        "no_history_share": float(1 - stale.size / response.size),
        "unseen_clicks_mean": float(result.unseen.mean()),
        "clicks_per_page": float(result.expected.mean()),
        "drawn_clicks_per_page": float(result.clicks.mean()),
        "utility_at_k": float(result.expected_top.mean()),
    }
    return row


def paired_gain(a: PathResult, b: PathResult) -> dict[str, float]:
    """a - b in true expected clicks per page: mean, 95% CI (users as independent clusters), relative %."""
    per_user = (a.expected - b.expected).mean(axis=1)
    mean = float(per_user.mean())
    half = 1.96 * float(per_user.std(ddof=1)) / np.sqrt(len(per_user)) if len(per_user) > 1 else float("nan")
    return {
        "gain": mean,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "gain_pct": 100 * mean / float(b.expected.mean()),
    }


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")
