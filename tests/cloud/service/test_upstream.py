"""The upstream ranker against a plain restatement of its rule, on a synthetic catalog of thousands of items
where most share a popularity, so the tie rule (lower item row first) decides much of each list."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cloud.data.prepare import prepare
from cloud.data.prepared import SPLITS, PreparedData
from cloud.data.synth import SynthConfig, generate, write_logs
from cloud.service.upstream import UpstreamRanker


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> PreparedData:
    folder = tmp_path_factory.mktemp("upstream")
    write_logs(generate(SynthConfig(users=12)), folder / "logs")
    prepare(folder / "logs", folder / "data")
    return PreparedData(folder / "data")


def expected(data: PreparedData, user: int, source: int, n: int, weight: float) -> list[tuple[int, float]]:
    """The module docstring's rule, item by item."""
    items = data.items(data.spec.source_names[source])
    count = len(items.ids)
    clicks, seen, liked = [0] * count, set(), []
    for split in SPLITS:
        arrays = data.split(split)
        for row in range(len(arrays["user"])):
            cand, label = arrays["cand_item"][row, source], arrays["label"][row, source]
            history = [int(i) for i in arrays["hist_device"][row, source] if i >= 0]
            clicked = [int(i) for i, y in zip(cand, label) if i >= 0 and y > 0]
            if split == "train":
                for i in clicked:
                    clicks[i] += 1
            if int(arrays["user"][row]) == user:
                seen.update(clicked + history)
                if split == "train":
                    liked += clicked + history
    liked = sorted(set(liked))
    top = math.log1p(max(clicks)) if max(clicks) > 0 else 1.0
    category = [int(c) for c in items.categorical[:, 0]] if items.categorical.shape[1] else None
    scores = []
    for i in range(count):
        score = (1.0 - weight) * (math.log1p(clicks[i]) / top)
        if category is not None and liked and weight > 0:
            score += weight * sum(category[j] == category[i] for j in liked) / len(liked)
        if i not in seen:
            scores.append((-score, i))
    return [(i, -negative) for negative, i in sorted(scores)[:n]]


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_candidates_follow_the_rule_with_ties_to_the_lower_row(data, weight):
    ranker = UpstreamRanker(data, affinity_weight=weight)
    ties = 0
    for user in range(data.num_users):
        wanted = [expected(data, user, source, 50, weight) for source in range(data.spec.m)]
        for n in (1, 10, 50):
            for want, (rows, scores) in zip(wanted, ranker.candidates(user, n)):
                assert rows.tolist() == [i for i, _ in want[:n]]
                np.testing.assert_allclose(scores, [s for _, s in want[:n]], rtol=1e-12)
                ties += int(len(set(scores.tolist())) < len(scores))
    assert ties > 0  # the lists did hold equal scores


def test_clicked_items_per_user(data):
    ranker = UpstreamRanker(data)
    train = data.split("train")
    user = int(train["user"][0])
    clicked = ranker.clicked(user, train_only=True)[0].tolist()
    assert clicked == sorted(set(clicked)) and all(i >= 0 for i in clicked)
    rows = np.flatnonzero(np.asarray(train["user"]) == user)
    history = {int(i) for i in np.asarray(train["hist_device"])[rows, 0].ravel() if i >= 0}
    assert history <= set(clicked) <= set(ranker.clicked(user)[0].tolist())
