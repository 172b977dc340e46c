"""dir-ca (DIR with candidate-aware history attention, an extension): registry, the attention over each
source's own history, padding, empty histories, gradients, plain DIR untouched, runtime export parity."""

import functools

import pytest
import torch

from cloud.evaluation.grids import tuned_study
from cloud.models import DIR_ABLATIONS, MODELS, count_parameters
from cloud.models.dir import DIR, PAD_LOGIT, HistoryAttention
from tests.cloud.models.helpers import (
    SPEC,
    build,
    check_empty_history,
    check_padding_invariance,
    check_torch_export,
    make_batch,
)

pytestmark = pytest.mark.usefixtures("single_thread")
HIDDEN = 32  # DIR's default width


def test_dir_ca_is_an_extension_not_an_ablation():
    """Every other DIR variant of the registry turns one component off and trains with DIR's tuned
    parameters; dir-ca adds a component and parameters, so it is tuned as a study of its own."""
    variants = {name for name, entry in MODELS.items() if isinstance(entry, functools.partial) and entry.func is DIR}
    assert variants == {*DIR_ABLATIONS, "dir-ca"}
    assert all(not any(MODELS[name].keywords.values()) for name in DIR_ABLATIONS)
    assert MODELS["dir-ca"].keywords == {"history_attention": True}
    assert tuned_study("dir-ca") == "dir-ca"
    assert [tuned_study(name) for name in DIR_ABLATIONS] == ["dir"] * len(DIR_ABLATIONS)


def test_scores_shape_and_padded_logit():
    model = build("dir-ca")
    batch = make_batch(SPEC)
    scores = model(batch)
    assert scores.shape == (4, SPEC.m, SPEC.n)
    assert torch.isfinite(scores).all()
    assert (scores[batch["mask"] == 0] == PAD_LOGIT).all()
    assert model.uses_exposure_loss is True and model.name == "dir-ca"
    assert torch.equal(model.device_model(*model.device_inputs(batch)), scores)  # the embedding split


def _attention_inputs(seed: int = 0):
    """cand [m, B, n, h], hist [m, B, t, h], hist_mask [m, B, t] with lengths 3, 5, 0 / 1, 2, 4."""
    g = torch.Generator().manual_seed(seed)
    m, batch, n, t, h = 3, 2, 4, 5, 8
    lengths = torch.tensor([[3, 1], [5, 2], [0, 4]])
    mask = (torch.arange(t) < lengths.unsqueeze(-1)).float()
    return torch.randn(m, batch, n, h, generator=g), torch.randn(m, batch, t, h, generator=g), mask


def test_attention_is_softmax_over_the_real_history_steps_of_the_own_source():
    torch.manual_seed(0)
    attention = HistoryAttention(8)
    cand, hist, mask = _attention_inputs()
    with torch.no_grad():
        out = attention(cand, hist, mask)
        for s in range(3):
            for b in range(2):
                real = hist[s, b, mask[s, b] == 1]  # [k, h]
                if len(real) == 0:
                    assert torch.equal(out[s, b], torch.zeros(4, 8))  # an empty history gives a = 0
                    continue
                weights = torch.softmax(attention.query(cand[s, b]) @ real.T / 8**0.5, dim=-1)
                assert torch.allclose(out[s, b], weights @ real, atol=1e-5)


def test_attention_reads_only_the_history_of_its_own_source():
    torch.manual_seed(1)
    attention = HistoryAttention(8)
    cand, hist, mask = _attention_inputs(seed=1)
    changed = hist.clone()
    changed[1, :, :2] += 2.0  # real steps of source 1 in both lists
    with torch.no_grad():
        base, out = attention(cand, hist, mask), attention(cand, changed, mask)
    assert (out[1] - base[1]).abs().max() > 1e-3
    assert torch.equal(out[0], base[0]) and torch.equal(out[2], base[2])


def test_attention_ignores_garbage_in_padded_history_steps():
    torch.manual_seed(2)
    attention = HistoryAttention(8)
    cand, hist, mask = _attention_inputs(seed=2)
    noisy = hist + (1.0 - mask).unsqueeze(-1) * 50.0 * torch.randn(hist.shape)
    with torch.no_grad():
        assert torch.allclose(attention(cand, noisy, mask), attention(cand, hist, mask), atol=1e-6, rtol=0)


def _shared_weights_pair():
    """(dir-ca, dir) with the same weights in every part they share; dir's alignment layer is the first
    3*hidden input columns of dir-ca's."""
    ca, plain = build("dir-ca", seed=5), build("dir", seed=6)
    state = ca.state_dict()
    shared = {k: v for k, v in state.items() if not k.startswith("device_model.history_attention.")}
    shared["device_model.mlp.0.weight"] = state["device_model.mlp.0.weight"][:, : 3 * HIDDEN]
    plain.load_state_dict(shared)
    return ca, plain


def test_the_attended_vector_is_the_only_difference_from_dir():
    """On the same shared weights dir-ca scores every real candidate of a source with history differently
    from dir, a source with an empty history (a = 0) alike, and zeroing the columns that read a gives dir."""
    ca, plain = _shared_weights_pair()
    batch = make_batch(SPEC, seed=4)
    real = batch["mask"] == 1
    has_history = torch.stack([batch[f"hist_mask_{s}"].amax(-1) for s in range(SPEC.m)], 1).unsqueeze(-1) == 1
    assert (real & has_history).any() and (real & ~has_history).any()
    with torch.no_grad():
        reference = plain(batch)
        delta = (ca(batch) - reference).abs()
        ca.device_model.mlp[0].weight[:, 3 * HIDDEN :] = 0.0  # the columns that read a_(s,j)
        assert torch.allclose(ca(batch), reference, atol=1e-6, rtol=0)
    assert delta[real & has_history].min() > 0 and delta[real & has_history].max() > 1e-3
    assert delta[real & ~has_history].max() <= 1e-6


def test_padding_never_changes_real_scores():
    check_padding_invariance("dir-ca")


def test_empty_histories_give_finite_scores_and_gradients():
    check_empty_history("dir-ca")


def test_plain_dir_builds_no_extra_parameters():
    """dir-ca adds the query layer and hidden input columns of the first MLP layer; dir builds neither."""
    plain, ca = build("dir"), build("dir-ca")
    assert plain.device_model.history_attention is None
    extra = {k for k in ca.state_dict() if k.startswith("device_model.history_attention.")}
    assert set(plain.state_dict()) == set(ca.state_dict()) - extra
    first_width = 64  # mlp_dims[0]
    added = (HIDDEN * HIDDEN + HIDDEN) + HIDDEN * first_width
    assert count_parameters(ca)["device"] - count_parameters(plain)["device"] == added
    assert plain.device_model.mlp[0].in_features == 3 * HIDDEN


def test_torch_export_at_batch_one_matches_eager():
    check_torch_export("dir-ca")


@pytest.mark.slow
def test_executorch_and_tflite_runtimes_match_eager(tmp_path):
    """The project's exporter writes dir-ca with every op delegated to XNNPACK; the XNNPACK and portable
    .pte and the .tflite (XNNPACK and builtin kernels), run by the real runtimes, match eager within the
    DIR export tests' tolerance on fresh random, padded and cold-source cases."""
    pytest.importorskip("executorch.runtime", reason="executorch not installed: pip install -e '.[export]'")
    pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert not installed: pip install -e '.[export]'")
    from cloud.export import eager_runner, max_abs_diff, open_runner, parity_cases, write_bundle
    from tests.helpers.export import SPEC as SMALL
    from tests.helpers.export import quiet, small_dir

    model = small_dir(name="dir-ca")
    manifest = write_bundle(model, SMALL, tmp_path / "bundle", backends=("executorch", "tflite"), progress=quiet)
    assert [key for key in manifest.notes if key.startswith("non_delegated_ops.")] == []
    layout = manifest.layout()
    cases = parity_cases(layout, seed=99, random_cases=20)  # not the export-time cases
    reference = eager_runner(model.device_model, layout)
    runs = (("model.pte", True), ("model_portable.pte", True), ("model.tflite", True), ("model.tflite", False))
    for file, xnnpack in runs:  # a .pte is lowered already: `xnnpack` picks the .tflite delegate only
        run = open_runner(tmp_path / "bundle" / file, layout, xnnpack=xnnpack)
        assert max_abs_diff(reference, run, cases, layout) <= 1e-5, (file, xnnpack)
