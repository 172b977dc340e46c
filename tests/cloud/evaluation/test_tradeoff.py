"""The trade-off study over seeds: runs per (beta, seed), summaries with 95% CIs, reuse, tuned parameters."""

from __future__ import annotations

import csv
import json

import pytest

from cloud.cli import main as cloud_main
from cloud.evaluation.csv_rows import read_csv_rows
from cloud.evaluation.statistics import mean_ci

PNG = b"\x89PNG\r\n\x1a\n"


def tradeoff(data, out, *extra):
    return cloud_main(["tradeoff", "--data", str(data), "--out", str(out), "--epochs", "1", *extra])


def test_two_seeds_give_two_runs_per_beta_and_a_summary_with_their_ci(synth_data, tmp_path, capsys):
    out = tmp_path / "tradeoff"
    assert tradeoff(synth_data, out, "--betas", "0.5,1.0", "--targets", "0.2/0.4/0.4", "--seeds", "2", "--json") == 0
    captured = capsys.readouterr()
    assert "[dir beta 0.5 seed 1] epoch 1:" in captured.err and "[dir target 0.2/0.4/0.4 seed 0]" in captured.err
    names = sorted(p.name for p in (out / "runs").iterdir())
    assert names == [
        "beta-0.5-s0",
        "beta-0.5-s1",
        "beta-1-s0",
        "beta-1-s1",
        "target-0.2-0.4-0.4-s0",
        "target-0.2-0.4-0.4-s1",
    ]
    config = json.loads((out / "runs" / "target-0.2-0.4-0.4-s1" / "config.json").read_text())
    assert (config["target_shares"], config["seed"], config["beta"]) == ([0.2, 0.4, 0.4], 1, 0.5)

    runs = read_csv_rows(out / "tradeoff.csv")
    assert [(r["beta"], r["seed"]) for r in runs] == [(0.5, 0), (0.5, 1), (1.0, 0), (1.0, 1)]
    assert {r["stop_reason"] for r in runs} == {"cap"}  # --epochs 1 ends every run
    summary = read_csv_rows(out / "tradeoff-summary.csv")
    assert [(s["beta"], s["seeds"], s["capped"]) for s in summary] == [(0.5, 2, 2), (1.0, 2, 2)]
    for entry in summary:
        pair = [r for r in runs if r["beta"] == entry["beta"]]
        for metric in ("auc", "utility@5", "js@5"):
            values = [r[metric] for r in pair]
            mean, low, high = mean_ci(values)
            assert entry[f"{metric}_mean"] == pytest.approx(sum(values) / 2) == pytest.approx(mean)
            assert entry[f"{metric}_ci95"] == pytest.approx((high - low) / 2)
    assert pair[0]["auc"] != pair[1]["auc"] and summary[1]["auc_ci95"] > 0  # two seeds, two different runs
    targets = read_csv_rows(out / "targets-summary.csv")
    assert [(t["target"], t["beta"], t["seeds"]) for t in targets] == [("0.2/0.4/0.4", 0.5, 2)]

    printed = json.loads(captured.out)
    assert [(r["beta"], r["seed"]) for r in printed["betas"]] == [(0.5, 0), (0.5, 1), (1.0, 0), (1.0, 1)]
    assert printed["beta_summary"][0]["auc_mean"] == pytest.approx(summary[0]["auc_mean"])
    assert printed["beta_summary"][0]["auc_ci95"] == pytest.approx(summary[0]["auc_ci95"])
    for plot in ("tradeoff.png", "targets.png"):
        assert (out / plot).read_bytes()[:8] == PNG

    stamps = {p.name: (p / "metrics.json").stat().st_mtime_ns for p in (out / "runs").iterdir()}
    assert tradeoff(synth_data, out, "--betas", "0.5,1.0", "--targets", "0.2/0.4/0.4", "--seeds", "2") == 0
    assert {p.name: (p / "metrics.json").stat().st_mtime_ns for p in (out / "runs").iterdir()} == stamps  # reused
    table = capsys.readouterr().out
    assert "6 of 6 runs ended by the epoch cap (1)" in table
    half = summary[0]["auc_ci95"]
    assert f"| 0.5 | 2 | 2 | 1.0 | {summary[0]['auc_mean']:.4f} ± {half:.4f} |" in table


def test_one_seed_has_no_interval_and_a_single_seed_run_folder_is_adopted(synth_data, tmp_path, capsys):
    out = tmp_path / "tradeoff"
    assert tradeoff(synth_data, out, "--betas", "0.5", "--seed", "3") == 0
    assert "(1 seed, no interval)" in capsys.readouterr().out
    assert list(csv.DictReader(open(out / "tradeoff-summary.csv")))[0]["auc_ci95"] == ""
    (out / "runs" / "beta-0.5-s3").rename(out / "runs" / "beta-0.5")  # the layout before --seeds
    stamp = (out / "runs" / "beta-0.5" / "metrics.json").stat().st_mtime_ns
    assert tradeoff(synth_data, out, "--betas", "0.5", "--seeds", "3,") == 0
    assert (out / "runs" / "beta-0.5-s3" / "metrics.json").stat().st_mtime_ns == stamp  # moved, not retrained


def test_pages_add_each_runs_true_clicks_to_its_row_and_the_table(synth_data, tmp_path, capsys):
    out = tmp_path / "tradeoff"
    assert tradeoff(synth_data, out, "--betas", "0.5,1.0", "--seeds", "1", "--pages", "6") == 0
    table = capsys.readouterr().out
    assert "| clicks_per_page | page_js@5 |" in table.splitlines()[3]
    rows = read_csv_rows(out / "tradeoff.csv")
    for row in rows:
        run = out / "runs" / f"beta-{row['beta']:g}-s0"
        pages = json.loads((run / "pages.json").read_text())
        assert pages["users"] == 6
        assert (row["clicks_per_page"], row["page_js@5"]) == (pages["clicks_per_page"], pages["js@5"])
        assert set(json.loads((run / "cpu.json").read_text())) == {"train_s", "pages_s"}
    assert rows[0]["clicks_per_page"] != rows[1]["clicks_per_page"]  # two betas, two different pages
    summary = read_csv_rows(out / "tradeoff-summary.csv")
    assert [s["clicks_per_page_mean"] for s in summary] == [r["clicks_per_page"] for r in rows]


def test_tuned_parameters_reach_the_runs_but_the_sweep_sets_beta(synth_data, tmp_path):
    tuned = tmp_path / "tuned"
    tuned.mkdir()
    (tuned / "dir.json").write_text(
        json.dumps({"config": {"lr": 0.004, "l2": 1e-6, "beta": 0.7, "model_options": {"hidden": 16}}})
    )
    out = tmp_path / "tradeoff"
    assert (
        tradeoff(synth_data, out, "--betas", "0.2", "--targets", "0.2/0.4/0.4", "--seeds", "1", "--tuned", str(tuned))
        == 0
    )
    swept = json.loads((out / "runs" / "beta-0.2-s0" / "config.json").read_text())
    assert (swept["lr"], swept["l2"], swept["model_options"], swept["beta"]) == (0.004, 1e-6, {"hidden": 16}, 0.2)
    target = json.loads((out / "runs" / "target-0.2-0.4-0.4-s0" / "config.json").read_text())
    assert (target["lr"], target["beta"]) == (0.004, 0.7)  # a target run keeps the tuned beta
    assert read_csv_rows(out / "targets.csv")[0]["beta"] == 0.7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "0"], "--seeds: expected a positive count"),
        (["--model", "nope"], "--model: unknown model 'nope'"),
        (["--tuned", "MISSING"], "no dir.json for model 'dir'"),
        (["--betas", "0.5,1.5"], "--betas: expected at least one beta, each in [0, 1]"),
        (["--targets", "0.5/x"], "--targets: expected"),
        (["--epochs", "0"], "--epochs: expected a positive epoch cap"),
        (["--pages", "-1"], "--pages: expected a number of simulated users >= 0"),
    ],
)
def test_bad_input_names_the_option(synth_data, tmp_path, capsys, args, message):
    args = [a.replace("MISSING", str(tmp_path / "none")) for a in args]
    assert cloud_main(["tradeoff", "--data", str(synth_data), "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "out" / "runs").exists()  # nothing trained
