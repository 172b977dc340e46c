"""Write a study to a folder: summary.md, CSV tables, PNG plots, config.json (atomically).

    write_report(study, "docs/simulation", context={"run": "out/run", ...}, device=measured, force=True)

Files: summary.md (the tables below in markdown), paths.csv (device, cloud, upstream), delay_sweep.csv,
rate_sweep.csv, device_latency.csv (the measured samples; `--device-latency` replays them),
latency_cdf.png (response time and staleness CDFs), utility_vs_delay.png, utility_vs_rate.png, config.json.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from cloud.data.logs_writer import check_out
from cloud.simulation.device_latency import DeviceMeasurement
from cloud.simulation.study import Study
from cloud.simulation.summary import paired_gain, path_summary
from shared_schema.files import replace_dir

PATH_COLUMNS = (
    "response_p50_ms",
    "response_p95_ms",
    "response_p99_ms",
    "staleness_p50_s",
    "staleness_p95_s",
    "unseen_clicks_mean",
    "fallback_share",
    "clicks_per_page",
    "drawn_clicks_per_page",
    "utility_at_k",
)


def write_report(
    study: Study,
    out: str | Path,
    context: dict,
    device: DeviceMeasurement | None = None,
    device_ms: Sequence[float] | None = None,
    force: bool = False,
) -> Path:
    """Write every file into a temporary sibling folder, then rename it to `out`."""
    out = check_out(out, force)
    with replace_dir(out, force) as tmp:
        rows = [{"path": name, **path_summary(result)} for name, result in study.paths.items()]
        _csv(tmp / "paths.csv", rows)
        _csv(tmp / "delay_sweep.csv", study.delay_rows)
        _csv(tmp / "rate_sweep.csv", study.rate_rows)
        if device_ms is not None:
            _csv(tmp / "device_latency.csv", [{"latency_ms": float(x)} for x in device_ms])
        (tmp / "config.json").write_text(
            json.dumps({"config": asdict(study.config), "K": study.K, **context}, indent=2, sort_keys=True) + "\n"
        )
        _plots(study, tmp)
        (tmp / "summary.md").write_text(summary_markdown(study, rows, context, device))
    return out


def summary_markdown(study: Study, rows: list[dict], context: dict, device: DeviceMeasurement | None) -> str:
    c, K = study.config, study.K
    gain = paired_gain(study.paths["device"], study.paths["cloud"])
    lines = [
        "# Cloud vs device reranking: simulated study",
        "",
        f"Written by `dir-cloud simulate` (model of the world and its limits: docs/simulation.md). "
        f"Run `{context.get('run', '?')}`, bundle `{context.get('bundle', '?')}`, seed {c.seed}, "
        f"{c.users} simulated users x {study.paths['device'].expected.shape[1]} requests.",
        "",
        "## Setup",
        "",
        "| parameter | value |",
        "|---|---|",
        f"| behaviour upload delay (cloud) | {c.upload_delay_s:g} s |",
        f"| network round trip | lognormal, median {c.rtt_median_ms:g} ms, sigma {c.rtt_sigma:g} |",
        f"| cloud queue | M/M/{c.servers}, mean service {c.service_ms:g} ms, {c.rate:g} req/s "
        f"(utilisation {c.rate / c.capacity:.2f}) |",
        f"| cloud timeout (then the upstream order is shown) | {c.timeout_ms:g} ms |",
        f"| device latency | {context.get('device_latency', 'measured')} |",
        f"| machine | {context.get('machine', '?')} |",
        f"| device fetches its slate per request | {'yes (+1 round trip)' if c.device_fetch else 'no (prefetched)'} |",
        "",
        "## Both paths",
        "",
        _table(rows, ("path", *PATH_COLUMNS)),
        "",
        f"Device - cloud true expected clicks per page: {gain['gain']:+.4f} "
        f"(95% CI {gain['ci_low']:+.4f} .. {gain['ci_high']:+.4f}, {gain['gain_pct']:+.2f}%). "
        f"clicks_per_page is the ground-truth expected number of clicks on the whole page, utility_at_k on "
        f"the top {K}; drawn_clicks_per_page counts the simulated clicks. Staleness = time between the "
        "history read and the newest behaviour the model saw (requests with no visible behaviour left out); "
        "unseen_clicks = behaviours already made but not yet visible to the model.",
    ]
    if device is not None:
        stages = ", ".join(f"{k} {v:.3f}" for k, v in device.stage_ms.items())
        lines += [
            "",
            "## Device runtime measurement",
            "",
            f"{len(device.samples_ms)} `Reranker.rerank` calls ({c.device_users} replayed users, fresh SQLite "
            f"store each) on `{device.backend}` / `{device.delegate}`: p50 "
            f"{np.percentile(device.samples_ms, 50):.2f} ms, p95 {np.percentile(device.samples_ms, 95):.2f} ms, "
            f"p99 {np.percentile(device.samples_ms, 99):.2f} ms. Mean per stage (ms): {stages}.",
            f"Runtime vs the simulation's eager scorer on the same inputs: max |score diff| "
            f"{device.max_score_diff:.2e}, same full order on {device.same_order} of {len(device.samples_ms)} "
            "requests.",
        ]
    lines += [
        "",
        "## Utility vs upload delay",
        "",
        f"Cloud path at {c.rate:g} req/s; device_gain = device - cloud expected clicks per page (95% CI).",
        "",
        _table(
            study.delay_rows,
            (
                "upload_delay_s",
                "staleness_p50_s",
                "unseen_clicks_mean",
                "clicks_per_page",
                "utility_at_k",
                "device_gain",
                "device_gain_ci_low",
                "device_gain_ci_high",
            ),
        ),
        "",
        "## Utility vs request rate",
        "",
        f"Cloud path with {c.upload_delay_s:g} s upload delay; queue wait simulated vs the Erlang-C mean.",
        "",
        _table(
            study.rate_rows,
            (
                "rate_per_s",
                "utilisation",
                "queue_wait_mean_ms",
                "erlang_c_wait_mean_ms",
                "response_p50_ms",
                "response_p95_ms",
                "response_p99_ms",
                "fallback_share",
                "clicks_per_page",
                "device_gain",
            ),
        ),
        "",
        f"Model evaluations: {study.scored_rows} (histories repeated across paths and sweep points are scored once).",
    ]
    if "runtime_s" in context:
        lines.append(f"Wall time of the command: {context['runtime_s']:.1f} s.")
    return "\n".join(lines) + "\n"


def _table(rows: list[dict], columns: tuple[str, ...]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)
    body = ["| " + " | ".join(_fmt(row[col]) for col in columns) + " |" for row in rows]
    return "\n".join([head, *body])


def _fmt(value) -> str:
    if isinstance(value, str):
        return value
    if not np.isfinite(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()} for row in rows)


def _plots(study: Study, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [(name, study.paths[name]) for name in ("cloud", "device")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, result in paths:
        left.plot(*_cdf(result.timing.response_ms), label=name)
        stale = result.staleness_s[np.isfinite(result.staleness_s)]
        right.plot(*_cdf(np.maximum(stale, 1e-3)), label=name)
    left.set(xscale="log", xlabel="response time (ms)", ylabel="share of requests", title="Response time CDF")
    right.set(
        xscale="log",
        xlabel="age of the newest behaviour seen (s)",
        ylabel="share of requests",
        title="History staleness CDF",
    )
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency_cdf.png", dpi=110)
    plt.close(fig)

    plot_sweeps(
        study.delay_rows,
        study.rate_rows,
        float(study.paths["device"].expected.mean()),
        float(study.paths["upstream"].expected.mean()),
        out,
    )


def replot_sweeps(folder: str | Path) -> None:
    """Redraw utility_vs_delay.png and utility_vs_rate.png from the CSVs a `simulate` run wrote in `folder`."""
    folder = Path(folder)

    def read(name: str) -> list[dict[str, float | str]]:
        """The rows of one CSV, every column but `path` as a float."""
        with open(folder / name, newline="") as fh:
            return [{k: float(v) if k != "path" else v for k, v in row.items()} for row in csv.DictReader(fh)]

    paths = {row["path"]: row for row in read("paths.csv")}
    plot_sweeps(
        read("delay_sweep.csv"),
        read("rate_sweep.csv"),
        float(paths["device"]["clicks_per_page"]),
        float(paths["upstream"]["clicks_per_page"]),
        folder,
    )


def plot_sweeps(delay_rows: list[dict], rate_rows: list[dict], device: float, upstream: float, out: Path) -> None:
    """Utility vs upload delay and vs request rate. Each shows the device, the cloud with the 95% CI of the
    paired device - cloud difference as a band, and the upstream order, so the y axis spans the whole
    effect of reranking and a small gap does not look large."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    delays = [max(r["upload_delay_s"], 1.0) for r in delay_rows]
    _utility(ax, delays, delay_rows, device, upstream)
    ax.set(
        xscale="log",
        xlabel="behaviour upload delay (s; 0 drawn at 1)",
        ylabel="true expected clicks per page",
        title="Utility vs upload delay",
    )
    fig.tight_layout()
    fig.savefig(out / "utility_vs_delay.png", dpi=110)
    plt.close(fig)

    rates = [r["rate_per_s"] for r in rate_rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(rates, [r["queue_wait_mean_ms"] for r in rate_rows], "o", label="simulated mean wait")
    left.plot(rates, [r["erlang_c_wait_mean_ms"] for r in rate_rows], "-", label="Erlang-C mean wait")
    left.plot(rates, [r["response_p95_ms"] for r in rate_rows], "s-", label="cloud response p95")
    left.set(
        yscale="log", xlabel="requests/s at the cloud service", ylabel="time (ms, log scale)", title="Cloud queueing"
    )
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    _utility(right, rates, rate_rows, device, upstream)
    right.set(
        xlabel="requests/s at the cloud service",
        ylabel="true expected clicks per page",
        title="Utility vs request rate",
    )
    fig.tight_layout()
    fig.savefig(out / "utility_vs_rate.png", dpi=110)
    plt.close(fig)


def _utility(ax, x: list[float], rows: list[dict], device: float, upstream: float) -> None:
    ax.plot(x, [r["clicks_per_page"] for r in rows], "o-", label="cloud")
    ax.fill_between(
        x,
        [device - r["device_gain_ci_high"] for r in rows],
        [device - r["device_gain_ci_low"] for r in rows],
        alpha=0.2,
        label="95% CI of the paired difference",
    )
    ax.axhline(device, color="C1", label="device (real-time history)")
    ax.axhline(upstream, color="gray", ls="--", label="upstream order (no reranking)")
    low, high = upstream, device
    ax.set_ylim(low - 0.1 * (high - low), high + 0.1 * (high - low))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")


def _cdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.sort(np.asarray(values).ravel())
    return x, np.arange(1, x.size + 1) / x.size
