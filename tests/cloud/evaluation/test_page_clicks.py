"""The page's true clicks: references, the closed loop, common random numbers, models with their decoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cloud.data.prepare import prepare
from cloud.data.prepared import PreparedData
from cloud.data.synth import SynthConfig, click_probability, generate, write_logs
from cloud.evaluation.page_clicks import (
    ModelPages,
    OraclePages,
    RandomPages,
    UpstreamPages,
    page_clicks,
    reference_pages,
    run_pages,
)
from cloud.models import build_model
from cloud.simulation.engine import ScoreCache, model_inputs, score_order
from cloud.simulation.scoring import torch_scorer
from cloud.simulation.world import build_world


@pytest.fixture(scope="module")
def world_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    write_logs(generate(SynthConfig(users=150)), root / "logs")
    prepare(root / "logs", root / "data")
    data = PreparedData(root / "data")
    torch.manual_seed(0)
    return build_world(build_model("dir", data.spec), data, users=40), data


class LoggedPositionPages:
    """Scores each candidate by minus its logged position: all a model reading the position can learn."""

    def orders(self, world, j, hist_items, users):
        slots = world.cand_slot[users, j]
        return score_order(-slots.astype(np.float64), slots)


def test_references_order_as_expected_and_position_reading_gains_nothing(world_and_data):
    world, data = world_and_data
    K, shares = data.spec.K, data.spec.target_shares
    refs = reference_pages(world, K, shares, seed=3)
    best = refs["oracle"]["clicks_per_page"]
    assert best > 1.1 * refs["upstream"]["clicks_per_page"] and best > 1.1 * refs["random"]["clicks_per_page"]
    assert refs["random"] != refs["upstream"]
    logged = page_clicks(world, LoggedPositionPages(), K, shares, seed=3)
    assert logged == refs["upstream"]  # the logged order, and nothing more, is the upstream page


def test_oracle_pages_are_greedy_under_the_true_model(world_and_data):
    world, _ = world_and_data
    users, j = np.arange(world.users), 0
    order = OraclePages().orders(world, j, None, users)
    items = np.where(order >= 0, np.take_along_axis(world.slot_item[:, j], order.clip(0), axis=1), -1)
    assert (
        np.sort(np.where(order >= 0, order, 99), axis=1)
        == np.sort(np.where(world.slot_item[:, j] >= 0, np.arange(order.shape[1]), 99), axis=1)
    ).all()

    def prob(item_rows):
        shown = item_rows >= 0
        return click_probability(
            world.synth,
            world.latent[item_rows.clip(0)],
            world.item_source[item_rows.clip(0)],
            shown,
            world.interest[:, j],
            world.pref,
        )

    chosen = prob(items)
    for p in range(3):  # no other unplaced candidate beats the chosen one at positions 0..2
        placed = items[:, :p]
        for u in users[:10]:
            rest = [x for x in world.slot_item[u, j] if x >= 0 and x not in placed[u] and x != items[u, p]]
            for x in rest:
                trial = items[u : u + 1].copy()
                trial[0, p], trial[0, p + 1 :] = x, -1
                mine = click_probability(
                    world.synth,
                    world.latent[trial.clip(0)],
                    world.item_source[trial.clip(0)],
                    trial >= 0,
                    world.interest[u : u + 1, j],
                    world.pref[u : u + 1],
                )
                assert mine[0, p] <= chosen[u, p] + 1e-12


def test_arms_share_random_numbers_and_are_deterministic(world_and_data):
    world, data = world_and_data
    K = data.spec.K
    first = run_pages(world, RandomPages(1), K, seed=5)
    again = run_pages(world, RandomPages(1), K, seed=5)
    assert np.array_equal(first.order, again.order) and np.array_equal(first.clicks, again.clicks)
    other = run_pages(world, RandomPages(1), K, seed=6)
    assert np.array_equal(first.order[:, 0], other.order[:, 0])  # same page, other click draws
    assert not np.array_equal(first.clicks, other.clicks)
    upstream = run_pages(world, UpstreamPages(), K, 5).order[:, 0]
    assert np.array_equal(upstream, np.where(world.slot_item[:, 0] >= 0, np.arange(world.slot_item.shape[2]), -1))


@pytest.mark.parametrize("name", ["dir", "svr", "nar4rec", "hrl"])
def test_model_pages_use_the_models_own_decoder(world_and_data, name):
    world, data = world_and_data
    K, shares = data.spec.K, data.spec.target_shares
    torch.manual_seed(0)
    model = build_model(name, data.spec)
    sub = world.subset(np.arange(8))
    row = page_clicks(sub, ModelPages(model, K, shares), K, shares, seed=0)
    assert row == page_clicks(sub, ModelPages(model, K, shares), K, shares, seed=0)
    assert 0 < row["clicks_per_page"] and 0 <= row[f"js@{K}"] <= np.log(2)
    if name == "dir":  # the "score" merge: the same pages as the simulation's scorer
        assert row == page_clicks(sub, ScoreCache(torch_scorer(model)), K, shares, seed=0)


def test_a_merge_model_can_be_judged_by_the_runtimes_other_merges(world_and_data):
    from device_runtime.decoding import beam_search
    from device_runtime.merge import merge_lists

    world, data = world_and_data
    K, shares = data.spec.K, data.spec.target_shares
    torch.manual_seed(0)
    model = build_model("dir", data.spec)
    users = np.arange(world.users)
    hist = np.full((world.users, len(world.source_names), world.t), -1)  # no history yet
    score = ModelPages(model, K, shares)
    network = score._run(score.network, model_inputs(world, 0, hist, users))[0]
    orders = {merge: ModelPages(model, K, shares, merge=merge) for merge in ("quota", "controller", "beam_search")}
    first = {merge: pages.orders(world, 0, hist, users) for merge, pages in orders.items()}
    for user in range(world.users):
        slots = world.cand_slot[user, 0]
        real = [np.flatnonzero(slots[s] >= 0) for s in range(slots.shape[0])]
        per_source = [network[user, s, real[s]].tolist() for s in range(slots.shape[0])]
        quota = [slots[s, real[s][i]] for s, i in merge_lists(per_source, shares, K, "quota")]
        assert first["quota"][user, : len(quota)].tolist() == quota
        probs = [1 / (1 + np.exp(-np.asarray(p, np.float64))) for p in per_source]
        beam = [slots[s, real[s][i]] for s, i in beam_search(probs, K, 4, shares, 1.0)]  # SVR's defaults
        assert first["beam_search"][user, : len(beam)].tolist() == beam
    assert np.array_equal(first["controller"], first["quota"])  # no exposures yet: the controller is the quota
    exposed = np.minimum((world.cand_slot[:, 0] >= 0).sum(axis=(1, 2)), K)  # each page's top K, for its user
    assert np.array_equal(orders["controller"].shown.sum(axis=1), exposed)
    shown = orders["controller"].shown.copy()
    second = orders["controller"].orders(world, 1, hist, users)  # the next page pays each user's exposure debt
    network = score._run(score.network, model_inputs(world, 1, hist, users))[0]
    for user in range(world.users):
        slots = world.cand_slot[user, 1]
        real = [np.flatnonzero(slots[s] >= 0) for s in range(slots.shape[0])]
        per_source = [network[user, s, real[s]].tolist() for s in range(slots.shape[0])]
        picked = merge_lists(per_source, shares, K, "controller", shown[user].tolist())
        assert second[user, : len(picked)].tolist() == [slots[s, real[s][i]] for s, i in picked]


def test_a_merge_applies_only_to_a_model_whose_decoder_is_the_merge(world_and_data):
    _, data = world_and_data
    with pytest.raises(ValueError, match="--page-merge quota: svr builds its page with its own decoder"):
        ModelPages(build_model("svr", data.spec), data.spec.K, data.spec.target_shares, merge="quota")
    with pytest.raises(ValueError, match="--page-merge: expected one of score, quota, controller, beam_search"):
        ModelPages(build_model("dir", data.spec), data.spec.K, data.spec.target_shares, merge="best")


def test_a_later_block_of_fresh_users_is_other_users_of_the_same_world(world_and_data):
    world, data = world_and_data
    model = build_model("dir", data.spec)
    both = build_world(model, data, users=40, skip=0)
    later = build_world(model, data, users=20, skip=20)
    expected = both.subset(np.arange(20, 40))
    for field in ("slot_item", "interest", "pref", "request_ts", "cand_slot", "warm_user", "warm_item", "latent"):
        assert np.array_equal(getattr(later, field), getattr(expected, field)), field
    assert not np.array_equal(later.interest, both.subset(np.arange(20)).interest)  # not the first users again
    assert np.array_equal(both.slot_item, world.slot_item)  # skip=0 is the default set
