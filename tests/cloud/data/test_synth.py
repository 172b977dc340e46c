"""Synthetic LOGS generator: determinism, format, heterogeneity, cold sources, click model, drift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cloud.cli import build_parser
from cloud.data.logs import read_logs
from cloud.data.synth import SOURCES, SynthConfig, click_probability, dataset_spec, generate, write_logs

FILES = ("dataset.toml", "items.csv", "events.csv", "users.csv")


@pytest.fixture(scope="module")
def tables():
    return generate(SynthConfig(seed=7, users=800))


@pytest.fixture(scope="module")
def shown(tables):
    """Logged impressions with their source name and the user's cold source."""
    events = tables.events.assign(source=_source_of(tables, tables.events["item_id"]))
    events = events.merge(tables.users, on="user_id", how="left")
    return events[events["list_id"] != ""]


def _source_of(tables, item_ids: pd.Series) -> np.ndarray:
    return tables.items.set_index("item_id").loc[item_ids, "source"].to_numpy()


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    ranks = pd.Series(scores).rank().to_numpy()
    pos = labels.sum()
    return float((ranks[labels == 1].sum() - pos * (pos + 1) / 2) / (pos * (len(labels) - pos)))


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_logs(generate(SynthConfig(seed=seed, users=150)), tmp_path / name)
    for f in FILES:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    for f in ("items.csv", "events.csv", "users.csv"):
        assert (tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes(), f


def test_cli_writes_atomically_and_refuses_a_nonempty_out(tmp_path, capsys):
    parser = build_parser({"synth": "cloud.commands.synth"})
    out = tmp_path / "logs"
    args = parser.parse_args(["synth", "--out", str(out), "--seed", "1", "--users", "60"])
    assert args._run(args) == 0
    assert "events" in capsys.readouterr().out
    before = (out / "events.csv").read_bytes()
    with pytest.raises(FileExistsError, match="--force"):
        args._run(args)
    assert (out / "events.csv").read_bytes() == before
    again = parser.parse_args(["synth", "--out", str(out), "--seed", "2", "--users", "60", "--force"])
    assert again._run(again) == 0
    assert (out / "events.csv").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]  # no temp or backup folder left
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)


def test_bad_config_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="lists-per-user"):
        SynthConfig(requests_per_user=6, warmup=4, lists_per_user=3)


def test_the_logs_reader_accepts_the_output(tmp_path, tables):
    write_logs(tables, tmp_path / "logs")
    logs = read_logs(tmp_path / "logs")
    assert logs.spec.source_names == [s.name for s in SOURCES]
    assert logs.spec.list_mode == "logged" and (logs.spec.n, logs.spec.t, logs.spec.K, logs.spec.lag) == (10, 20, 5, 3)
    assert logs.events.has_click_prob
    assert len(logs.events) == len(tables.events) and len(logs.users) == 800
    for s in SOURCES:
        assert len(logs.items[s.name]) == s.items
        assert logs.items[s.name].dense.shape[1] == s.dense[1]
        assert (logs.items[s.name].categorical > 0).all()  # every categorical value present


def test_sources_are_heterogeneous(tables):
    spec = tables.spec
    assert spec.m >= 3 and sum(spec.target_shares) == pytest.approx(1.0)
    fields = [tuple(f.name for f in s.categorical + s.dense) for s in spec.sources]
    assert len(set(fields)) == spec.m
    assert len({s.dense_dim() for s in spec.sources}) == spec.m
    assert len({len(s.categorical) for s in spec.sources}) > 1
    items = tables.items
    for s in spec.sources:
        own = [f.name for f in s.categorical] + [c for f in s.dense for c in f.columns()]
        rows = items[items["source"] == s.name]
        assert rows[own].notna().all().all()
        assert rows.drop(columns=["item_id", "source", *own]).isna().all().all()


def test_logged_lists_are_well_formed(tables, shown):
    per_list = shown.groupby("list_id")
    assert (per_list["user_id"].nunique() == 1).all()
    assert (per_list["timestamp"].nunique() == 1).all()
    positions = per_list["position"].agg(lambda p: sorted(p) == list(range(len(p))))
    assert positions.all()
    assert not shown.duplicated(["list_id", "item_id"]).any()
    assert shown.groupby(["list_id", "source"]).size().max() <= dataset_spec().n
    assert shown["click_prob"].between(0, 1, inclusive="right").all()
    history = tables.events[tables.events["list_id"] == ""]
    assert (history["label"] == 1).all() and history["click_prob"].isna().all()


def test_click_rate_is_realistic_and_matches_the_true_probabilities(shown):
    rate = shown["label"].mean()
    assert 0.05 <= rate <= 0.20
    assert abs(rate - shown["click_prob"].mean()) < 0.01
    by_source = shown.groupby("source")["label"].mean()
    assert (by_source > 0.03).all()


def test_position_bias_is_visible(shown):
    rate = shown.groupby(shown["position"].clip(upper=12))["label"].mean()
    assert rate.loc[0] > rate.loc[1] > rate.loc[3]
    assert rate.loc[0:2].mean() > 2 * rate.loc[8:].mean()


def test_cold_source_users_have_no_early_history_there_but_still_click_it(tables, shown):
    users = tables.users
    cold = users[users["cold_source"] != ""]
    assert 0.2 < len(cold) / len(users) < 0.4
    events = tables.events.assign(source=_source_of(tables, tables.events["item_id"]))
    events = events.merge(cold, on="user_id")
    in_cold = events[events["source"] == events["cold_source"]]
    assert (in_cold["timestamp"] >= in_cold["cold_until"]).all()
    assert in_cold["user_id"].nunique() > 0.9 * len(cold)  # later lists include it
    late = shown[(shown["source"] == shown["cold_source"]) & (shown["timestamp"] >= shown["cold_until"])]
    assert len(late) > 500
    assert late["label"].mean() > 0.7 * shown["label"].mean()  # the interest applies to it


def test_clicks_follow_the_current_interest_more_than_an_old_one(tables):
    truth, events = tables.truth, tables.events
    latent = truth.item_latent[pd.Index(tables.items["item_id"]).get_indexer(events["item_id"])]
    logged = (events["list_id"] != "").to_numpy()
    labels = events["label"].to_numpy()[logged]
    user, request = truth.event_user[logged], truth.event_request[logged]
    now = np.einsum("ik,ik->i", truth.interest[user, request], latent[logged])
    old = np.einsum("ik,ik->i", truth.interest[user, np.maximum(request - 6, 0)], latent[logged])
    assert _auc(labels, now) > _auc(labels, old) + 0.05


def test_newest_three_clicks_carry_signal_the_cloud_view_lacks(tables):
    """A recency-weighted history scorer loses AUC when the user's 3 newest clicks are removed."""
    events, truth = tables.events, tables.truth
    latent = truth.item_latent[pd.Index(tables.items["item_id"]).get_indexer(events["item_id"])]
    ts, labels, user = events["timestamp"].to_numpy(), events["label"].to_numpy(), truth.event_user
    clicks = np.flatnonzero(labels == 1)
    clicks = clicks[np.lexsort((-ts[clicks], user[clicks]))]  # per user, newest first
    first = np.searchsorted(user[clicks], np.arange(tables.config.users))
    scores = {"device": [], "cloud": []}
    rows = []
    lists = events.groupby("list_id").indices  # row positions in `events`
    lists.pop("")  # unlogged clicks
    for idx in lists.values():
        u = user[idx[0]]
        mine = clicks[first[u] : first[u + 1] if u + 1 < len(first) else len(clicks)]
        history = mine[ts[mine] < ts[idx[0]]]
        for view, hist in (("device", history[:20]), ("cloud", history[3:23])):
            weights = 0.7 ** np.arange(len(hist))
            pref = weights @ latent[hist] / max(weights.sum(), 1e-9)
            scores[view].append(latent[idx] @ pref)
        rows.append(idx)
    y = labels[np.concatenate(rows)]
    device, cloud = (_auc(y, np.concatenate(scores[v])) for v in ("device", "cloud"))
    assert device > cloud + 0.015, (device, cloud)


def test_click_model_has_listwise_context_and_position_effects():
    cfg = SynthConfig()
    unit = np.eye(cfg.latent_dim)  # orthogonal items: no redundancy unless repeated
    interest = np.zeros((1, cfg.latent_dim))
    pref = np.full((1, len(SOURCES)), 1 / len(SOURCES))

    def prob(items, sources):
        valid = np.ones((1, len(items)), bool)
        return click_probability(cfg, unit[items][None], np.array([sources]), valid, interest, pref)[0]

    assert prob([0, 0], [0, 1])[1] < prob([0, 1], [0, 1])[1]  # the same item again right above
    assert prob([0, 1, 2, 3], [0, 1, 1, 0])[3] < prob([0, 1, 2, 3], [1, 1, 1, 0])[3]  # same source above
    at_0, at_1 = prob([0, 1], [0, 1])[0], prob([1, 0], [1, 0])[1]
    assert at_1 / at_0 == pytest.approx(1 / np.log2(3))  # examination 1/log2(pos + 2)
