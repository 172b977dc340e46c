"""The benchmark tables of a grid folder: label metrics, the page's true clicks, stopping epochs, 95% CIs
and paired marks against DIR (or another reference model).

    dir-cloud results --grid GRID [--out GRID/tables.md]     # or write_results("GRID") after run_grid
    write_results("GRID", variants={"dir-w64": "exp/w64"}, reference="pear")   # an experiment's runs beside

Reads every finished run under GRID/runs (config.json + metrics.json, and pages.json when the grid
scored pages) and GRID/pages-references.json. Writes GRID/results.csv (one row per run, with its config
hash), GRID/table.csv (per model and history: mean and 95% CI over seeds) and GRID/table.md. Each cell
is "mean ± half-width of the 95% Student-t interval over seeds". A mark after a cell compares the row
with DIR trained on the same history, paired by seed (cloud.evaluation.statistics.paired_test on the seed numbers both
have): ▲ significantly above DIR, ▼ significantly below (p < 0.05); no mark, no claim. `variants` adds
the finished runs of other grid folders (e.g. `dir-cloud benchmark --set hidden=64 --out exp/w64`) as rows
of a model of that name; `reference` compares every row with that model instead of DIR.
"""

from __future__ import annotations

import csv
import functools
import json
import math
from collections.abc import Mapping
from pathlib import Path

from cloud.evaluation.csv_rows import write_csv_rows
from cloud.evaluation.report import METRIC_COLUMNS, cutoff
from cloud.evaluation.statistics import mean_ci, paired_test
from cloud.models import MODELS, reads_history

PAGE_METRICS = ("clicks_per_page", "clicks_top{K}_per_page", "js@{K}")
REFERENCE = "dir"
"""The model every row is compared with, unless write_results is given another."""
MARKS = {"+": " ▲", "-": " ▼", "": ""}


def grid_rows(grid: str | Path) -> list[dict]:
    """One row per finished run: model, history, seed, config hash, stopping, test metrics, page metrics."""
    from cloud.evaluation.grids import config_hash, saved_identity

    rows = []
    for run_dir in sorted(Path(grid, "runs").iterdir()):
        metrics_path = run_dir / "metrics.json"
        if not metrics_path.exists():
            continue
        metrics = json.loads(metrics_path.read_text())
        identity = saved_identity(run_dir)
        if identity is None:
            raise ValueError(
                f"{run_dir}: metrics.json without config.json, so the run's model and seed are unknown; "
                f"move the folder out of {grid}/runs or train it again"
            )
        row = {
            "run": run_dir.name,
            "model": identity["model"],
            "history": identity["history"],
            "seed": identity["seed"],
            "config_hash": config_hash(identity),
            "best_epoch": metrics["best_epoch"],
            "stopped_epoch": metrics.get("stopped_epoch"),
            "stop_reason": metrics.get("stop_reason"),
            **metrics["test"],
        }
        pages = run_dir / "pages.json"
        if pages.exists():
            row.update({f"page_{k}": v for k, v in json.loads(pages.read_text()).items()})
        cpu = run_dir / "cpu.json"
        if cpu.exists():
            row.update({f"cpu_{k}": v for k, v in json.loads(cpu.read_text()).items()})
        else:
            row["epochs_train_s"] = logged_train_seconds(run_dir, identity)
        rows.append(row)
    return rows


def same_page_users(paged: list[dict], refs: dict | None) -> tuple[int, int]:
    """The (users, block) every run's pages and the references were shown to; ValueError naming two runs (or
    the references) scored on different users, since their clicks would not be comparable."""
    from cloud.evaluation.page_clicks import saved_setting

    def users_of(setting: Mapping) -> tuple:
        return tuple(saved_setting(setting, ("users", "world_seed", "block")).values())

    found = {users_of({k.removeprefix("page_"): v for k, v in r.items()}): r["run"] for r in paged}
    if refs:
        found.setdefault(users_of(refs["setting"]), "pages-references.json")
    if len(found) > 1:
        (a, run_a), (b, run_b) = list(found.items())[:2]
        raise ValueError(
            f"{run_a} and {run_b} were scored on different simulated users (users, world seed, block {a} vs "
            f"{b}): score them again with the same `dir-cloud benchmark --pages USERS --page-block B`"
        )
    users, _, block = next(iter(found))
    return users, block


def logged_train_seconds(run_dir: Path, identity: Mapping) -> float | None:
    """The seconds a run's training epochs took, from the lists/s of RUN/epochs.csv and the training lists of
    its data (DATA/dataset.json); None when either is gone. Validation and page scoring are not included."""
    dataset, epochs = Path(identity.get("data") or "") / "dataset.json", run_dir / "epochs.csv"
    if not (dataset.is_file() and epochs.is_file()):
        return None
    lists = _train_lists(str(dataset.resolve()))
    with epochs.open(newline="") as f:
        return sum(lists / float(r["lists_per_s"]) for r in csv.DictReader(f))


@functools.lru_cache(maxsize=8)
def _train_lists(dataset_json: str) -> int:
    """The training lists of a prepared data folder (its dataset.json, read once for all of a grid's runs)."""
    return json.loads(Path(dataset_json).read_text())["stats"]["lists"]["train"]


def summary(rows: list[dict], keys: list[str], reference: str = REFERENCE) -> list[dict]:
    """Per (model, history), in registry order (DIR, its ablations, dir-ca, the baselines, then other names;
    device history first): seeds, mean stopping epochs, runs stopped by the cap, and per key mean, CI, and
    the paired comparison with the `reference` model on the same history."""
    groups: dict[tuple[str, str], dict[int, dict]] = {}
    for row in sorted(rows, key=_table_order):
        groups.setdefault((row["model"], row["history"]), {})[row["seed"]] = row
    out = []
    for (model, history), by_seed in groups.items():
        runs = list(by_seed.values())
        entry = {
            "model": model,
            "history": history,
            "seeds": len(runs),
            "best_epoch": sum(r["best_epoch"] for r in runs) / len(runs),
            "stopped_epoch": sum(r["stopped_epoch"] or 0 for r in runs) / len(runs),
            "capped": sum(r["stop_reason"] == "cap" for r in runs),
        }
        against = groups.get((reference, history), {})
        shared = sorted(set(by_seed) & set(against))
        for key in keys:
            mean, low, high = mean_ci([r[key] for r in runs])
            entry.update({f"{key}_mean": mean, f"{key}_low": low, f"{key}_high": high, f"{key}_mark": ""})
            if model != reference and shared:
                test = paired_test([by_seed[s][key] for s in shared], [against[s][key] for s in shared])
                entry.update(
                    {
                        f"{key}_vs_ref": test.diff,
                        f"{key}_vs_ref_low": test.low,
                        f"{key}_vs_ref_high": test.high,
                        f"{key}_pairs": test.pairs,
                        f"{key}_p": test.p_value,
                        f"{key}_mark": test.mark,
                    }
                )
        out.append(entry)
    return out


def _table_order(row: dict) -> tuple[int, str, int, str]:
    """Registry position of the row's model (unknown models last, by name), then device before cloud."""
    names = list(MODELS)
    model, history = row["model"], row["history"]
    position = names.index(model) if model in names else len(names)
    return position, model, ("device", "cloud").index(history) if history in ("device", "cloud") else 2, history


def markdown_table(
    entries: list[dict], keys: list[str], references: Mapping[str, dict] | None = None, stopping: bool = True
) -> str:
    head = ["model", "history", "seeds", *(["best / stopped epoch", "capped"] if stopping else []), *keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        cells = [e["model"], e["history"], str(e["seeds"])]
        if stopping:
            cells += [f"{e['best_epoch']:.1f} / {e['stopped_epoch']:.1f}", str(e["capped"])]
        for key in keys:
            half = (e[f"{key}_high"] - e[f"{key}_low"]) / 2
            cells.append(f"{e[f'{key}_mean']:.4f} ± {half:.4f}{MARKS[e[f'{key}_mark']]}")
        lines.append("| " + " | ".join(cells) + " |")
    for name, ref in (references or {}).items():
        cells = [name, "-", "-", *(["-", "-"] if stopping else []), *(f"{ref[k]:.4f}" for k in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(columns: list[tuple[str, list[dict], str]], reference: str = REFERENCE) -> str:
    """Markdown: per model and history, the paired difference from the `reference` model on the same history
    for each (title, summary entries, key): the mean over the seed numbers both runs have, its 95% interval
    and the p value."""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    pairs: dict[tuple[str, str], int] = {}
    for title, entries, key in columns:
        for e in entries:
            if f"{key}_vs_ref" in e:
                low, high, p = e[f"{key}_vs_ref_low"], e[f"{key}_vs_ref_high"], e[f"{key}_p"]
                row = (e["model"], e["history"])
                pvalue = "-" if math.isnan(p) else f"{p:.3f}"
                interval = f" [{low:+.4f}, {high:+.4f}]" if e[f"{key}_pairs"] > 1 else " [one pair: no interval]"
                diff = f"{e[f'{key}_vs_ref']:+.4f}{interval}{MARKS[e[f'{key}_mark']]}"
                cells.setdefault(row, {})[title] = f"{diff} | {pvalue}"
                pairs[row] = max(pairs.get(row, 0), e[f"{key}_pairs"])
    head = ["model", "history", "paired seeds"]
    for title, _, _ in columns:
        head += [f"{title} - {reference} [95% CI]", "p"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (model, history), by_title in cells.items():
        values = [by_title.get(title, "- | -") for title, _, _ in columns]
        lines.append(f"| {model} | {history} | {pairs[model, history]} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def cpu_table(rows: list[dict]) -> str:
    """Markdown: the process CPU hours the grid spent per model (training, scoring pages), from RUN/cpu.json
    (`cloud.evaluation.grids.charge_cpu`), how many runs finished before it was recorded, and how many were
    resumed after an interruption (counted without the interrupted part)."""
    lines = ["| model | runs | training CPU h | pages CPU h |", "|---|---|---|---|"]
    totals = [0, 0.0, 0.0]
    for model in dict.fromkeys(r["model"] for r in sorted(rows, key=_table_order)):
        timed = [r for r in rows if r["model"] == model and "cpu_train_s" in r]
        if timed:
            train, pages = (sum(r.get(f"cpu_{k}_s", 0.0) for r in timed) / 3600 for k in ("train", "pages"))
            lines.append(f"| {model} | {len(timed)} | {train:.2f} | {pages:.2f} |")
            totals = [totals[0] + len(timed), totals[1] + train, totals[2] + pages]
    lines.append(f"| **all** | {totals[0]} | {totals[1]:.2f} | {totals[2]:.2f} |")
    untimed = len(rows) - totals[0]
    resumed = sum(1 for r in rows if r.get("cpu_resumed"))
    notes = [f"{untimed} runs finished before their CPU time was recorded and are not counted."] if untimed else []
    logged = [r["epochs_train_s"] for r in rows if r.get("epochs_train_s") is not None]
    if logged:
        notes.append(
            f"The training epochs of {len(logged)} of them took {sum(logged) / 3600:.2f} h by the lists/s they "
            "logged (validation and page scoring not included)."
        )
    if resumed:
        notes.append(
            f"{resumed} counted runs were resumed after an interruption: the CPU time before it is not counted, "
            "so their figures are low."
        )
    return "\n".join(lines + (["", " ".join(notes)] if notes else []))


def tuning_table(tuned: str | Path) -> str:
    """Markdown: per tuned model, its trials (finished / pruned) and their wall hours, best trial, best
    validation AUC and parameters, from the TUNED/MODEL.json files `dir-cloud tune --out TUNED` writes."""
    lines = [
        "| model | trials finished / pruned | trial hours | best trial | best valid auc | parameters |",
        "|---|---|---|---|---|---|",
    ]
    for path in sorted(Path(tuned).glob("*.json")):
        try:
            study = json.loads(path.read_text())
            hours = f"{study['trial_hours']:.2f}" if "trial_hours" in study else "-"
            params = ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in study["params"].items()
            )
            lines.append(
                f"| {study['model']} | {study['trials']['complete']} / {study['trials']['pruned']} | "
                f"{hours} | {study['best_trial']} | {study['best_valid_auc']:.4f} | {params} |"
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path}: not a study summary of `dir-cloud tune` ({type(exc).__name__}: {exc}); "
                "remove it from --tuned or write it again with `dir-cloud tune --out`"
            ) from exc
    if len(lines) == 2:
        raise ValueError(f"--tuned {tuned}: no MODEL.json of `dir-cloud tune --out {tuned}` in it")
    return "\n".join(lines)


def write_results(
    grid: str | Path,
    references: Mapping[str, dict] | None = None,
    out: str | Path | None = None,
    tuned: str | Path | None = None,
    variants: Mapping[str, str | Path] | None = None,
    reference: str = REFERENCE,
) -> str:
    """results.csv, table.csv and the markdown tables (GRID/table.md or `out`) of a grid folder; with
    `tuned`, the tuning table too; `variants` ({name: grid folder}) add those folders' runs under that name
    (`out` required; the CSVs then go beside it as OUT_STEM-results.csv and OUT_STEM-table.csv); every paired
    comparison is against `reference`."""
    grid = Path(grid)
    csv_dir, csv_stem = grid, ""  # with variants the CSVs go beside `out`: the grid's own stay the grid's
    if variants:
        if out is None:
            raise ValueError(
                "--variant: give --out too, so that the grid's own tables are not rewritten with the variants"
            )
        csv_dir, csv_stem = Path(out).parent, f"{Path(out).stem}-"
    rows = grid_rows(grid)
    if not rows:
        raise ValueError(f"{grid}/runs holds no finished run (metrics.json); run `dir-cloud benchmark --out {grid}`")
    for name, folder in (variants or {}).items():
        if name in MODELS or name in {r["model"] for r in rows}:
            raise ValueError(f"--variant {name}={folder}: {name} already names a model; choose another name")
        if not Path(folder, "runs").is_dir():
            raise ValueError(f"--variant {name}={folder}: no runs/ folder; give a `dir-cloud benchmark --out` folder")
        found = grid_rows(folder)
        models = {r["model"] for r in found}
        if len(models) != 1 or len({(r["history"], r["seed"]) for r in found}) != len(found):
            raise ValueError(
                f"--variant {name}={folder}: expected one model's runs, one per history and seed (a `dir-cloud "
                f"benchmark --out` folder of one model); found {len(found)} runs of {sorted(models)}"
            )
        rows += [{**r, "run": f"{name}:{r['run']}", "model": name} for r in found]
    if reference != REFERENCE and reference not in {r["model"] for r in rows}:  # without dir: no pairs, no marks
        raise ValueError(
            f"--reference {reference}: no finished run of it; models: {sorted({r['model'] for r in rows})}"
        )
    k = cutoff(rows[0])
    label_keys = [c.format(K=k) for c in METRIC_COLUMNS]
    label = summary(rows, label_keys, reference)
    write_csv_rows(csv_dir / f"{csv_stem}results.csv", rows)
    write_csv_rows(csv_dir / f"{csv_stem}table.csv", label)
    seeds = sorted({r["seed"] for r in rows})
    text = [
        f"Test split, {len(rows)} runs (seeds {seeds}); mean ± 95% CI half-width over seeds; ▲/▼: paired "
        f"by seed against {reference} on the same history, p < 0.05.",
        "",
        markdown_table(label, label_keys, references),
    ]
    free = sorted({r["model"] for r in rows if r["model"] in MODELS and not reads_history(r["model"])})
    if free:
        text += ["", f"{', '.join(free)} read no history: each run serves both history views."]
    paged = [r for r in rows if "page_clicks_per_page" in r]
    if paged:
        page_keys = [c.format(K=k) for c in PAGE_METRICS]
        pages = summary(paged, [f"page_{key}" for key in page_keys], reference)
        for entry in pages:  # shorter column names in the table
            for key in page_keys:
                for part in ("mean", "low", "high", "mark"):
                    entry[f"{key}_{part}"] = entry[f"page_{key}_{part}"]
        refs_path = grid / "pages-references.json"
        refs = json.loads(refs_path.read_text()) if refs_path.exists() else None
        users, block = same_page_users(paged, refs)
        which = f" (set {block} of them: disjoint from set 0's users)" if block else ""
        text += [
            "",
            f"The page's true clicks: {users} fresh simulated users per run{which}, every arm on the same users, "
            "candidates and random numbers (cloud/evaluation/page_clicks.py).",
            "",
            markdown_table(pages, page_keys, refs["arms"] if refs else None, stopping=False),
        ]
    columns = [("test AUC", label, "auc")]
    if paged:
        columns.append(("clicks per page", pages, "page_clicks_per_page"))
    paired = f"Paired by seed against {reference} on the same history (the seed numbers both runs have):"
    text += ["", paired, "", paired_table(columns, reference)]
    text += ["", "Process CPU time of the runs (`dir-cloud benchmark`):", "", cpu_table(rows)]
    if tuned:
        text += [
            "",
            "Tuned parameters (`dir-cloud tune`, validation split; a DIR ablation trains with dir's):",
            "",
            tuning_table(tuned),
        ]
    table = "\n".join(text)
    (Path(out) if out else grid / "table.md").write_text(table + "\n")
    return table
