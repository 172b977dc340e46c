"""`reads_history` says the truth: a model declared history-free scores the same whatever the history holds,
and every other model's scores change with it (the grid trains a history-free model for one view only)."""

from __future__ import annotations

import pytest
import torch

from cloud.models import MODELS, build_model, reads_history
from tests.cloud.models.helpers import SPEC

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_reads_history_matches_what_the_scores_depend_on(name):
    torch.manual_seed(0)
    model = build_model(name, SPEC).eval()
    inputs = list(model.example_inputs(batch=3, seed=1))
    changed = list(inputs)
    for s in range(model.layout.m):  # every source's history vectors, each slot real
        changed[4 * s + 2] = torch.randn_like(inputs[4 * s + 2])
        changed[4 * s + 3] = torch.ones_like(inputs[4 * s + 3])
    with torch.no_grad():
        before, after = model.device_model(*inputs), model.device_model(*changed)
    same = torch.allclose(before, after, atol=1e-6)
    assert same == (not reads_history(name)), f"{name}: reads_history={reads_history(name)}, scores same={same}"
