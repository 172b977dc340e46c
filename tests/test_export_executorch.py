"""ExecuTorch export: the bundle's .pte files, run with executorch.runtime, match eager PyTorch on random,
padded and cold-source lists; ops left outside XNNPACK are named; parts that cannot be a fixed-shape
graph fail with an error naming them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("executorch.runtime", reason="executorch not installed: pip install -e '.[export]'")

from cloud.export import ExportError, capture, eager_runner, lower_executorch, max_abs_diff, open_runner, parity_cases
from cloud.export.parity import real_slots
from shared_schema.layout import TensorLayout
from tests.export_fixtures import shared_bundle

TINY = TensorLayout(vector_dims=(4, 3), n=3, t=2)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory, backends=("executorch",), quantize=())


def _file(bundle, name):
    return next(f for f in bundle.manifest.files if f.path == name)


@pytest.mark.parametrize("name", ["model.pte", "model_portable.pte"])
def test_pte_matches_eager_on_fresh_random_padded_and_cold_cases(bundle, name):
    layout = bundle.manifest.layout()
    cases = parity_cases(layout, seed=123, random_cases=30)  # not the export-time cases
    diff = max_abs_diff(eager_runner(bundle.model.device_model, layout), open_runner(bundle.path / name, layout),
                        cases, layout)
    assert diff <= 1e-5
    assert 0 <= _file(bundle, name).parity_max_abs_diff <= 1e-5


def test_padded_slots_do_not_leak_into_real_scores_in_the_lowered_program(bundle):
    layout = bundle.manifest.layout()
    run = open_runner(bundle.path / "model.pte", layout)
    rng = np.random.default_rng(7)
    clean = dict(parity_cases(layout, seed=7)[3][1])  # a partially padded random case
    noisy = {}
    for name, value in clean.items():
        if name.startswith(("cand_", "hist_")) and "mask" not in name:
            mask = clean[name.replace("cand_", "cand_mask_").replace("hist_", "hist_mask_")]
            value = value + rng.standard_normal(value.shape).astype(np.float32) * (1 - mask)[..., None] * 5
        noisy[name] = value
    assert any((clean[f"cand_mask_{s}"] == 0).any() for s in range(layout.m))
    keep = real_slots(clean, layout)
    np.testing.assert_allclose(run(noisy)[keep], run(clean)[keep], atol=1e-5)


def test_xnnpack_file_is_delegated_and_portable_file_is_not(bundle):
    assert b"XnnpackBackend" in (bundle.path / "model.pte").read_bytes()
    assert b"XnnpackBackend" not in (bundle.path / "model_portable.pte").read_bytes()
    assert _file(bundle, "model.pte").delegate == "xnnpack"
    assert _file(bundle, "model_portable.pte").delegate == "portable"


class _Reverse(nn.Module):
    def forward(self, x):
        return x.flip(-1)


class _Tiny(nn.Module):
    """Scores [1, 2, 3] from a linear layer per source, then `ranker` on them."""

    def __init__(self, ranker: nn.Module):
        super().__init__()
        self.score = nn.ModuleList([nn.Linear(4, 1), nn.Linear(3, 1)])
        self.ranker = ranker

    def forward(self, *inputs):
        scores = torch.cat([self.score[0](inputs[0]), self.score[1](inputs[4])], dim=-1).transpose(1, 2)
        return self.ranker(scores)


def test_non_delegated_ops_are_listed_with_their_module():
    lowered = lower_executorch(capture(_Tiny(_Reverse()), TINY), xnnpack=True)
    assert lowered.non_delegated == {"aten::flip @ ranker": 1}
    assert b"XnnpackBackend" in lowered.buffer


class _DataDependentBranch(nn.Module):
    def forward(self, scores):
        return scores if scores.sum() > 0 else -scores


class _SelectPositive(nn.Module):
    def forward(self, scores):
        return scores[scores > 0]


@pytest.mark.parametrize("ranker,why", [(_DataDependentBranch(), "cannot be exported as a fixed-shape graph"),
                                        (_SelectPositive(), "shape depends on the input values")])
def test_part_that_is_not_a_fixed_shape_graph_is_named(ranker, why):
    with pytest.raises(ExportError, match=why) as caught:
        capture(_Tiny(ranker), TINY)
    message = str(caught.value)
    assert f"'ranker' ({type(ranker).__module__}.{type(ranker).__qualname__})" in message
    assert "outside the exported graph" in message


def test_wrong_output_shape_is_rejected():
    with pytest.raises(ExportError, match=r"scores` of shape \[1, 2, 3\]"):
        capture(_Tiny(nn.Flatten()), TINY)
