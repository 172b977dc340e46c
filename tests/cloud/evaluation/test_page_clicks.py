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
from cloud.simulation.engine import ScoreCache, score_order
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
