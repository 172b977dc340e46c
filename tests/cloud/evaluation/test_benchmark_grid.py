"""The benchmark grid: reuse only by config hash, --reuse-only, resuming, tuned parameters, result tables."""

from __future__ import annotations

import csv
import json

from cloud.cli import main as cloud_main


def bench(data, out, *extra):
    return cloud_main(["benchmark", "--data", str(data), "--histories", "device", "--out", str(out), *extra])


def test_grid_reuses_only_runs_of_the_same_config(synth_data, tmp_path, capsys):
    out = tmp_path / "bench"
    assert bench(synth_data, out, "--models", "dir,din", "--seeds", "2", "--epochs", "2") == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 4 and len({r["config_hash"] for r in rows}) == 4
    assert {r["stop_reason"] for r in rows} <= {"patience", "cap"}
    table = (out / "table.md").read_text()
    assert "| dir | device | 2 |" in table and "best / stopped epoch" in table and "±" in table
    stamp = (out / "runs" / "dir-device-s0" / "metrics.json").stat().st_mtime_ns

    cpu = json.loads((out / "runs" / "dir-device-s0" / "cpu.json").read_text())
    assert set(cpu) == {"train_s"} and cpu["train_s"] > 0  # the process CPU seconds of its training

    assert bench(synth_data, out, "--models", "dir,din", "--seeds", "2", "--epochs", "2", "--reuse-only") == 0
    assert (out / "runs" / "dir-device-s0" / "metrics.json").stat().st_mtime_ns == stamp  # reused
    assert json.loads((out / "runs" / "dir-device-s0" / "cpu.json").read_text()) == cpu  # nothing charged

    capsys.readouterr()
    assert bench(synth_data, out, "--models", "dir", "--seeds", "1", "--epochs", "3", "--reuse-only") == 2
    err = capsys.readouterr().err
    assert "dir-device-s0" in err and "epochs (2 != 3)" in err and "drop --reuse-only" in err
    assert bench(synth_data, out, "--models", "dir", "--seeds", "3", "--epochs", "2", "--reuse-only") == 2
    assert "dir-device-s2 does not exist" in capsys.readouterr().err

    assert bench(synth_data, out, "--models", "dir", "--seeds", "1", "--epochs", "3") == 0  # retrained
    assert json.loads((out / "runs" / "dir-device-s0" / "config.json").read_text())["epochs"] == 3
    assert [p.name.startswith("dir-device-s0-") for p in (out / "replaced").iterdir()] == [True]  # kept aside


def test_interrupted_grid_continues_and_results_command_rewrites_tables(synth_data, tmp_path, capsys):
    out = tmp_path / "bench"
    assert bench(synth_data, out, "--models", "dir", "--seeds", "2", "--epochs", "2") == 0
    (out / "runs" / "dir-device-s1" / "metrics.json").unlink()  # as if killed before the end
    other = (out / "runs" / "dir-device-s0" / "metrics.json").stat().st_mtime_ns
    assert bench(synth_data, out, "--models", "dir", "--seeds", "2", "--epochs", "2") == 0
    assert (out / "runs" / "dir-device-s1" / "metrics.json").exists()
    assert (out / "runs" / "dir-device-s0" / "metrics.json").stat().st_mtime_ns == other
    assert json.loads((out / "runs" / "dir-device-s1" / "cpu.json").read_text())["resumed"] is True
    assert "resumed" not in json.loads((out / "runs" / "dir-device-s0" / "cpu.json").read_text())
    (out / "table.md").unlink()
    (out / "runs" / "dir-device-s0" / "cpu.json").unlink()  # as for a run finished before CPU time was kept
    capsys.readouterr()
    assert cloud_main(["results", "--grid", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| dir | device | 2 |" in (out / "table.md").read_text() and "oracle" in printed
    assert "| logged order | - | - | - | - |" in printed and "| popularity order |" in printed
    assert (
        "| **all** | 1 |" in (out / "table.md").read_text()
        and "1 runs finished before" in (out / "table.md").read_text()
        and "The training epochs of 1 of them took 0.0" in (out / "table.md").read_text()
        and "1 counted runs were resumed after an interruption" in (out / "table.md").read_text()
    )


def test_tuned_parameters_reach_the_runs_and_missing_ones_are_named(synth_data, tmp_path, capsys):
    tuned = tmp_path / "tuned"
    tuned.mkdir()
    (tuned / "dir.json").write_text(
        json.dumps({"config": {"lr": 0.004, "l2": 1e-6, "beta": 0.7, "model_options": {"hidden": 16}}})
    )
    out = tmp_path / "bench"
    assert bench(synth_data, out, "--models", "dir", "--seeds", "1", "--epochs", "1", "--tuned", str(tuned)) == 0
    config = json.loads((out / "runs" / "dir-device-s0" / "config.json").read_text())
    assert (config["lr"], config["beta"], config["model_options"]) == (0.004, 0.7, {"hidden": 16})
    assert bench(synth_data, out, "--models", "dir-isi", "--seeds", "1", "--epochs", "1", "--tuned", str(tuned)) == 0
    config = json.loads((out / "runs" / "dir-isi-device-s0" / "config.json").read_text())
    assert (config["lr"], config["model_options"]) == (0.004, {"hidden": 16})  # an ablation keeps DIR's
    summary = {"model": "dir", "trials": {"complete": 3, "pruned": 9}, "best_trial": 2, "best_valid_auc": 0.6049}
    (tuned / "dir.json").write_text(json.dumps({**summary, "params": {"lr": 0.004, "hidden": 16}, "config": {}}))
    assert cloud_main(["results", "--grid", str(out), "--tuned", str(tuned)]) == 0
    assert "| dir | 3 / 9 | - | 2 | 0.6049 | lr=0.004, hidden=16 |" in (out / "table.md").read_text()
    summary["trial_hours"] = 0.4567  # written by tune since it records the trials' time
    (tuned / "dir.json").write_text(json.dumps({**summary, "params": {"lr": 0.004, "hidden": 16}, "config": {}}))
    assert cloud_main(["results", "--grid", str(out), "--tuned", str(tuned)]) == 0
    assert "| dir | 3 / 9 | 0.46 | 2 | 0.6049 | lr=0.004, hidden=16 |" in (out / "table.md").read_text()
    (tuned / "din.json").write_text("{}")
    capsys.readouterr()
    assert cloud_main(["results", "--grid", str(out), "--tuned", str(tuned)]) == 2
    assert "din.json: not a study summary" in capsys.readouterr().err
    (tuned / "din.json").unlink()
    assert bench(synth_data, out, "--models", "din", "--seeds", "1", "--tuned", str(tuned)) == 2
    assert "no din.json" in capsys.readouterr().err
    assert bench(synth_data, out, "--models", "dir-ca", "--seeds", "1", "--tuned", str(tuned)) == 2
    assert "no dir-ca.json" in capsys.readouterr().err  # an extension of DIR is tuned on its own
    assert bench(synth_data, out, "--models", "nope", "--seeds", "1") == 2
    assert "unknown model(s) ['nope']" in capsys.readouterr().err


def test_set_changes_a_field_or_model_option_over_the_tuned_config(synth_data, tmp_path, capsys):
    tuned = tmp_path / "tuned"
    tuned.mkdir()
    (tuned / "dir.json").write_text(
        json.dumps({"config": {"lr": 0.004, "beta": 0.7, "model_options": {"hidden": 16, "embedding_dim": 8}}})
    )
    out = tmp_path / "bench"
    changed = ("--set", "hidden=24", "--set", "beta=1.0", "--set", "lr_schedule=plateau")
    assert bench(synth_data, out, "--seeds", "1", "--epochs", "1", "--tuned", str(tuned), *changed) == 0
    config = json.loads((out / "runs" / "dir-device-s0" / "config.json").read_text())
    assert (config["lr"], config["beta"], config["lr_schedule"]) == (0.004, 1.0, "plateau")
    assert config["model_options"] == {"hidden": 24, "embedding_dim": 8}  # the other tuned option kept
    assert bench(synth_data, out, "--seeds", "1", "--epochs", "1", "--tuned", str(tuned), "--reuse-only", *changed) == 0
    assert bench(synth_data, out, "--seeds", "1", "--epochs", "1", "--tuned", str(tuned), "--reuse-only") == 2
    assert "beta (1.0 != 0.7)" in capsys.readouterr().err  # without --set it is another config

    for args, message in [
        (["--set", "hidden"], "--set: expected KEY=VALUE (e.g. hidden=64), got 'hidden'"),
        (["--set", "widht=3"], "--set: widht is neither a training field nor an option of model 'dir'"),
        (
            ["--models", "din", "--set", "hidden=8"],
            "nor an option of model 'din'; training fields: epochs, batch_size, lr,",
        ),
        (["--set", "seed=3"], "--set: seed is neither"),  # the grid sets model, history and seed itself
    ]:
        assert bench(synth_data, tmp_path / "bad", "--seeds", "1", *args) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad" / "runs").exists() or not any((tmp_path / "bad" / "runs").iterdir())


def test_results_add_a_variant_and_pair_against_another_reference(synth_data, tmp_path, capsys):
    grid, exp = tmp_path / "grid", tmp_path / "exp"
    assert bench(synth_data, grid, "--models", "dir,din", "--seeds", "2", "--epochs", "1") == 0
    assert bench(synth_data, exp, "--seeds", "2", "--epochs", "1", "--set", "hidden=24") == 0
    only_din = tmp_path / "din"
    assert bench(synth_data, only_din, "--models", "din", "--seeds", "1", "--epochs", "1") == 0  # no dir to pair with
    assert "| din | device | 1 |" in (only_din / "table.md").read_text()
    out = tmp_path / "table.md"
    args = ["results", "--grid", str(grid), "--out", str(out)]
    assert cloud_main([*args, "--variant", f"dir-h24={exp}", "--reference", "din"]) == 0
    table = out.read_text()
    assert "paired by seed against din on the same history" in table
    assert "| model | history | paired seeds | test AUC - din [95% CI] | p |" in table
    variant = next(line for line in table.splitlines() if line.startswith("| dir-h24 | device | 2 |"))
    rows = list(csv.DictReader(open(tmp_path / "table-results.csv")))
    din, h24 = [r for r in rows if r["model"] == "din"], [r for r in rows if r["model"] == "dir-h24"]
    assert "dir-h24" not in (grid / "results.csv").read_text()  # the grid's own CSVs keep its own runs
    assert "auc_vs_ref" in (tmp_path / "table-table.csv").read_text()
    assert [r["run"] for r in h24] == ["dir-h24:dir-device-s0", "dir-h24:dir-device-s1"]
    diff = sum(float(a["auc"]) - float(b["auc"]) for a, b in zip(h24, din, strict=True)) / 2
    assert f"{diff:+.4f}" in [line for line in table.splitlines() if line.startswith("| dir-h24 | device | 2 | ")][-1]
    assert variant.count("±") == 5 and "| din | device |" not in table.split("paired seeds")[1]  # no row vs itself

    capsys.readouterr()
    assert cloud_main(["results", "--grid", str(grid), "--variant", f"dir-h24={exp}"]) == 2
    assert "--variant: give --out too" in capsys.readouterr().err
    for extra, message in [
        (["--variant", f"din={exp}"], "--variant din="),
        (["--variant", f"dir-x={tmp_path}"], "no runs/ folder"),
        (["--variant", f"two={grid}"], "expected one model's runs, one per history and seed"),
        (["--variant", "dir-x"], "--variant: expected NAME=FOLDER"),
        (["--reference", "pear"], "--reference pear: no finished run of it; models: ['din', 'dir']"),
    ]:
        capsys.readouterr()
        assert cloud_main([*args, *extra]) == 2
        assert message in capsys.readouterr().err


def test_grid_scores_the_pages_with_references(synth_data, tmp_path):
    out = tmp_path / "bench"
    assert bench(synth_data, out, "--models", "dir", "--seeds", "1", "--epochs", "1", "--pages", "12") == 0
    pages = json.loads((out / "runs" / "dir-device-s0" / "pages.json").read_text())
    assert pages["users"] == 12 and pages["clicks_per_page"] > 0
    arms = json.loads((out / "pages-references.json").read_text())["arms"]
    assert arms["oracle"]["clicks_per_page"] > max(arms["upstream"]["clicks_per_page"], pages["clicks_per_page"])
    table = (out / "table.md").read_text()
    assert "The page's true clicks" in table and "| oracle | - | - |" in table
    cpu = json.loads((out / "runs" / "dir-device-s0" / "cpu.json").read_text())
    assert cpu["train_s"] > 0 and cpu["pages_s"] > 0
    hours = [cpu["train_s"] / 3600, cpu["pages_s"] / 3600]
    assert f"| dir | 1 | {hours[0]:.2f} | {hours[1]:.2f} |" in table and "| **all** | 1 |" in table

    page = ("--models", "dir", "--seeds", "1", "--epochs", "1", "--pages", "12")
    assert bench(synth_data, out, *page, "--page-merge", "quota") == 0  # the same run, its pages merged by quota
    quota = json.loads((out / "runs" / "dir-device-s0" / "pages.json").read_text())
    assert quota["merge"] == "quota" and quota["clicks_per_page"] != pages["clicks_per_page"]
    assert bench(synth_data, out, *page) == 0  # a pages.json of another merge is scored again
    again = json.loads((out / "runs" / "dir-device-s0" / "pages.json").read_text())
    assert again == {**pages, "merge": "score"}


def test_page_merge_needs_pages_and_a_model_that_merges(synth_data, tmp_path, capsys):
    for args, message in [
        (["--page-merge", "quota"], "--page-merge: it builds the pages --pages USERS scores; give --pages too"),
        (["--models", "svr", "--pages", "5", "--page-merge", "quota"], "--page-merge quota: svr builds its page"),
        (["--pages", "5", "--page-merge", "best"], "--page-merge: expected one of score, quota, controller"),
    ]:
        assert bench(synth_data, tmp_path / "out", "--seeds", "1", *args) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "runs").exists() or not any((tmp_path / "out" / "runs").iterdir())


def test_a_model_that_reads_no_history_trains_once_for_both_views(synth_data, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["benchmark", "--data", str(synth_data), "--histories", "device,cloud", "--out", str(out)]
    assert cloud_main([*argv, "--models", "setrank,dir", "--seeds", "1", "--epochs", "1"]) == 0
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["dir-cloud-s0", "dir-device-s0", "setrank-device-s0"]
    assert "setrank reads no history: its device runs serve every history view" in capsys.readouterr().out
    assert "setrank read no history: each run serves both history views." in (out / "table.md").read_text()


def test_page_block_shows_the_pages_to_other_users_and_results_refuse_mixed_users(synth_data, tmp_path, capsys):
    grid, exp = tmp_path / "grid", tmp_path / "exp"
    page = ("--seeds", "1", "--epochs", "1", "--pages", "12")
    assert bench(synth_data, grid, "--models", "dir", *page) == 0
    first = json.loads((grid / "runs" / "dir-device-s0" / "pages.json").read_text())
    first_refs = json.loads((grid / "pages-references.json").read_text())["arms"]
    assert bench(synth_data, grid, "--models", "dir", *page, "--page-block", "1") == 0  # same run, other users
    later = json.loads((grid / "runs" / "dir-device-s0" / "pages.json").read_text())
    refs = json.loads((grid / "pages-references.json").read_text())
    assert (first["block"], later["block"], refs["setting"]["block"]) == (0, 1, 1)
    assert later["clicks_per_page"] != first["clicks_per_page"] and refs["arms"] != first_refs
    assert "12 fresh simulated users per run (set 1 of them" in (grid / "table.md").read_text()

    assert bench(synth_data, exp, *page, "--set", "hidden=24") == 0  # scored on set 0
    capsys.readouterr()
    args = ["results", "--grid", str(grid), "--variant", f"dir-h24={exp}", "--out", str(tmp_path / "t.md")]
    assert cloud_main(args) == 2
    assert "were scored on different simulated users" in capsys.readouterr().err
    for extra, message in [
        (["--page-block", "1"], "--page-block: it picks the users --pages USERS shows pages to; give --pages too"),
        (["--pages", "5", "--page-block", "-1"], "--page-block: expected 0 or more, got -1"),
    ]:
        assert bench(synth_data, tmp_path / "out", "--seeds", "1", *extra) == 2
        assert message in capsys.readouterr().err
