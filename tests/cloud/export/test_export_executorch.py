"""ExecuTorch export: the bundle's .pte files, run with executorch.runtime, match eager PyTorch on random,
padded and cold-source lists; every DIR op is delegated to XNNPACK (ops left outside are named); the
int8-dynamic program is delegated, close to fp32 and picked by the device runtime by quantization;
parts that cannot be a fixed-shape graph fail with an error naming them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("executorch.runtime", reason="executorch not installed: pip install -e '.[export]'")
from executorch.exir import to_edge_transform_and_lower  # noqa: E402
from executorch.runtime import Runtime  # noqa: E402

from cloud.export import ExportError, capture, eager_runner, lower_executorch, max_abs_diff, open_runner, parity_cases
from cloud.export.executorch import program_operators
from cloud.export.parity import random_inputs, real_slots
from shared_schema.layout import TensorLayout
from tests.helpers.export import shared_bundle, small_dir

TINY = TensorLayout(vector_dims=(4, 3), n=3, t=2)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory, backends=("executorch",), quantize=("int8-dynamic",))


def _file(bundle, name):
    return next(f for f in bundle.manifest.files if f.path == name)


@pytest.mark.parametrize("name", ["model.pte", "model_portable.pte"])
def test_pte_matches_eager_on_fresh_random_padded_and_cold_cases(bundle, name):
    layout = bundle.manifest.layout()
    cases = parity_cases(layout, seed=123, random_cases=30)  # not the export-time cases
    diff = max_abs_diff(
        eager_runner(bundle.model.device_model, layout), open_runner(bundle.path / name, layout), cases, layout
    )
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


def test_xnnpack_takes_every_op_of_dir_and_of_its_pooling_variant(bundle):
    """docs/export.md's lowering rules: nothing of DIR runs on portable kernels in model.pte or the int8
    program; dir-isi (average pooling instead of the GRU) is the variant with its own code path."""
    assert [key for key in bundle.manifest.notes if key.startswith("non_delegated_ops.")] == []
    isi = small_dir(name="dir-isi")
    assert lower_executorch(capture(isi.device_model, isi.layout)).non_delegated == {}


def test_portable_program_runs_linear_as_mm_plus_add_with_the_weight_transposed_at_export(tmp_path):
    """ExecuTorch's portable addmm kernel is far slower than mm (BENCHMARKS.md, portable kernels)."""
    torch.manual_seed(0)
    layer = nn.Linear(6, 4).eval()
    x = torch.randn(5, 6)
    portable = lower_executorch(torch.export.export(layer, (x,)), xnnpack=False).buffer
    assert program_operators(portable) == {"aten::mm": 1, "aten::add": 1}
    plain = to_edge_transform_and_lower(torch.export.export(layer, (x,))).to_executorch().buffer
    assert program_operators(plain) == {"aten::permute_copy": 1, "aten::addmm": 1}  # what it replaces
    (tmp_path / "linear.pte").write_bytes(portable)
    out = Runtime.get().load_program(tmp_path / "linear.pte").load_method("forward").execute([x])[0]
    torch.testing.assert_close(out, layer(x), rtol=0, atol=1e-6)


def test_dynamic_int8_program_is_delegated_and_close_to_fp32(bundle):
    stored = _file(bundle, "model_int8_dynamic.pte")
    assert (stored.runtime, stored.delegate, stored.quantization) == ("executorch", "xnnpack", "int8-dynamic")
    assert b"XnnpackBackend" in (bundle.path / stored.path).read_bytes()
    assert "PT2E" in bundle.manifest.notes["quantization.model_int8_dynamic.pte"]
    layout = bundle.manifest.layout()
    rng = np.random.default_rng(11)
    requests = [random_inputs(layout, rng) for _ in range(60)]
    run, reference = open_runner(bundle.path / stored.path, layout), eager_runner(bundle.model.device_model, layout)
    fp32 = np.concatenate([reference(r)[real_slots(r, layout)] for r in requests])
    int8 = np.concatenate([run(r)[real_slots(r, layout)] for r in requests])
    assert np.corrcoef(fp32, int8)[0, 1] > 0.99
    assert np.abs(fp32 - int8).max() < 0.05 * (fp32.max() - fp32.min())
    assert 0 < stored.parity_max_abs_diff < 0.05 * (fp32.max() - fp32.min())


def test_the_device_runtime_picks_the_executorch_file_by_quantization(bundle):
    from device_runtime.backends import load_backend

    request = parity_cases(bundle.manifest.layout(), seed=5)[0][1]
    fp32 = load_backend(bundle.path, bundle.manifest, "executorch", "xnnpack")
    int8 = load_backend(bundle.path, bundle.manifest, "executorch", "xnnpack", quantization="int8-dynamic")
    assert (fp32.path.name, int8.path.name) == ("model.pte", "model_int8_dynamic.pte")
    layout = bundle.manifest.layout()
    direct = open_runner(bundle.path / "model_int8_dynamic.pte", layout)
    np.testing.assert_array_equal(int8.run(request), direct(request))
    np.testing.assert_allclose(fp32.run(request), eager_runner(bundle.model.device_model, layout)(request), atol=1e-5)


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


@pytest.mark.parametrize(
    "ranker,why",
    [
        (_DataDependentBranch(), "cannot be exported as a fixed-shape graph"),
        (_SelectPositive(), "shape depends on the input values"),
    ],
)
def test_part_that_is_not_a_fixed_shape_graph_is_named(ranker, why):
    with pytest.raises(ExportError, match=why) as caught:
        capture(_Tiny(ranker), TINY)
    message = str(caught.value)
    assert f"'ranker' ({type(ranker).__module__}.{type(ranker).__qualname__})" in message
    assert "outside the exported graph" in message


def test_wrong_output_shape_is_rejected():
    with pytest.raises(ExportError, match=r"scores` of shape \[1, 2, 3\]"):
        capture(_Tiny(nn.Flatten()), TINY)
