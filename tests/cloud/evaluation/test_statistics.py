"""Confidence intervals over seeds and the paired comparison used by the benchmark tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cloud.evaluation.statistics import mean_ci, paired_test


def test_mean_ci_is_the_student_t_interval():
    mean, low, high = mean_ci([1.0, 2.0, 3.0])
    # t(0.975, 2) = 4.3027, std = 1, n = 3
    assert mean == 2.0 and high - mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert mean - low == pytest.approx(high - mean)
    assert mean_ci([0.5]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="no values"):
        mean_ci([])


def test_mean_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = sum(low <= 0.0 <= high for low, high in (mean_ci(rng.standard_normal(5))[1:] for _ in range(2000)))
    assert 0.93 < hits / 2000 < 0.97


def test_paired_test_uses_the_pairing():
    # large seed-to-seed spread, tiny but consistent difference: only a paired test sees it
    base = np.array([0.50, 0.60, 0.70, 0.55, 0.65])
    better = base + np.array([0.011, 0.009, 0.010, 0.012, 0.008])
    test = paired_test(better, base)
    assert test.pairs == 5 and test.diff == pytest.approx(0.01)
    assert test.low > 0 and test.p_value < 0.001 and test.mark == "+"
    assert paired_test(base, better).mark == "-"
    noisy = paired_test(base + np.array([0.02, -0.02, 0.01, -0.01, 0.0]), base)
    assert noisy.mark == "" and noisy.low < 0 < noisy.high
    assert paired_test([0.5], [0.4]).mark == ""  # one pair: no claim
    with pytest.raises(ValueError, match="paired"):
        paired_test([1.0, 2.0], [1.0])


def test_summary_rows_follow_the_registry_with_device_history_first():
    from cloud.evaluation.results import paired_table, summary

    def run(model, history, seed, auc):
        return {"model": model, "history": history, "seed": seed, "auc": auc, "best_epoch": 3, "stopped_epoch": 6}

    gain = {"din": [0.021, 0.019, 0.022]}  # din above dir by about 0.02 on every seed
    rows = [
        run(model, history, seed, 0.6 + 0.01 * seed + gain.get(model, [0.0] * 3)[seed])
        for model in ("din", "zz-custom", "dir-ca", "dir")
        for history in ("cloud", "device")
        for seed in range(3)
    ]
    for row in rows:
        row["stop_reason"] = "patience"
    table = summary(rows, ["auc"])
    assert [(e["model"], e["history"]) for e in table] == [
        (m, h) for m in ("dir", "dir-ca", "din", "zz-custom") for h in ("device", "cloud")
    ]
    din = table[4]
    assert din["auc_vs_ref"] == pytest.approx(0.02067, abs=1e-4) and din["auc_mark"] == "+"  # paired by seed
    lines = paired_table([("test AUC", table, "auc")]).splitlines()
    assert lines[0] == "| model | history | paired seeds | test AUC - dir [95% CI] | p |"
    assert lines[4].startswith("| din | device | 3 | +0.0207 [+0.0169, +0.0245] ▲ | 0.00")
    assert lines[2].startswith("| dir-ca | device | 3 | +0.0000") and len(lines) == 8  # dir itself: no row


def test_one_paired_seed_shows_its_difference_without_an_interval():
    from cloud.evaluation.results import paired_table, summary

    rows = [
        {
            "model": m,
            "history": "device",
            "seed": 0,
            "auc": auc,
            "best_epoch": 3,
            "stopped_epoch": 6,
            "stop_reason": "patience",
        }
        for m, auc in (("dir", 0.60), ("din", 0.61))
    ]
    lines = paired_table([("test AUC", summary(rows, ["auc"]), "auc")]).splitlines()
    assert lines[2] == "| din | device | 1 | +0.0100 [one pair: no interval] | - |"
