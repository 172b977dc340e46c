"""DIR model package: registry, embedding split, padding invariance, equivariance, GRU, export."""

import pytest
import torch

from cloud.models import MODELS, build_model, count_parameters
from cloud.models.base import ItemEncoder
from cloud.models.dir import PAD_LOGIT, DIRDeviceModel, GroupedGRU
from shared_schema.specs import CategoricalField, DatasetSpec, SourceSpec
from tests.cloud.models.helpers import garbage_padding, make_batch, make_spec, pad_longer

NAMES = [
    name for name in sorted(MODELS) if name.startswith("dir")
]  # DIR and its ablations; baselines have their own files
DIR_NAMES = ["dir", "dir-isi", "dir-lrs", "dir-hrs", "dir-lcm", "dir-pg", "dir-js"]


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return make_spec()


def test_registry_has_dir_and_its_ablations():
    assert set(DIR_NAMES) <= set(MODELS)


@pytest.mark.parametrize("name", NAMES)
def test_scores_shape_and_padded_logit(spec, name):
    torch.manual_seed(0)
    model = build_model(name, spec)
    batch = make_batch(spec)
    scores = model(batch)
    assert scores.shape == (4, spec.m, spec.n)
    assert torch.isfinite(scores).all()
    assert (scores[batch["mask"] == 0] == PAD_LOGIT).all()
    assert model.uses_exposure_loss == (name != "dir-js")
    assert model.name == name


def test_build_model_rejects_unknown_names_and_options(spec):
    with pytest.raises(ValueError, match="known models: .*dir-isi"):
        build_model("dir-xyz", spec)
    with pytest.raises(ValueError, match="no option.*hiden"):
        build_model("dir", spec, hiden=8)
    with pytest.raises(ValueError, match="multiple of heads"):
        build_model("dir", spec, hidden=9, heads=2)


def test_options_reach_the_model(spec):
    model = build_model("dir-pg", spec, hidden=8, heads=4, embedding_dim=4, mlp_dims=(16,))
    assert model.options == {"hidden": 8, "heads": 4, "embedding_dim": 4, "mlp_dims": (16,)}
    assert model.layout.vector_dims == (8 + 3, 4, 6)
    assert model.device_model.generator is None
    assert model(make_batch(spec)).shape == (4, spec.m, spec.n)


@pytest.mark.parametrize("name", NAMES)
def test_eager_parity_of_the_embedding_split(spec, name):
    model = build_model(name, spec).eval()
    batch = make_batch(spec, seed=3)
    assert torch.equal(model.device_model(*model.device_inputs(batch)), model(batch))


def test_device_inputs_follow_the_layout_and_zero_padding(spec):
    model = build_model("dir", spec)
    batch = make_batch(spec)
    inputs = model.device_inputs(batch)
    assert [tuple(x.shape) for x in inputs] == [s.shape for s in model.layout.input_specs(batch=4)]
    for i in range(0, len(inputs), 2):
        assert (inputs[i][inputs[i + 1] == 0] == 0).all()
    with pytest.raises(ValueError, match="expected 12 inputs"):
        model.device_model(*inputs[:8])
    del batch["hist_dense_2"]
    with pytest.raises(ValueError, match="hist_dense_2"):
        model.device_inputs(batch)


def test_item_encoder_concatenates_fields_in_order(spec):
    enc = ItemEncoder(spec, embedding_dim=4)
    assert enc.vector_dims() == [s.vector_dim(4) for s in spec.sources] == [11, 4, 6]
    cat, dense = torch.tensor([[3, 5]]), torch.tensor([[0.5, -1.0, 2.0]])
    out = enc(0, cat, dense)
    expected = torch.cat([enc.tables[0][0].weight[3], enc.tables[0][1].weight[5], dense[0]])
    assert torch.equal(out[0], expected)
    with pytest.raises(ValueError, match="source 1: expected 1 categorical"):
        enc(1, cat, torch.zeros(1, 0))


def test_item_encoder_needs_vocab_sizes():
    spec = DatasetSpec(sources=(SourceSpec(name="a", target_share=1.0, categorical=(CategoricalField(name="item"),)),))
    with pytest.raises(ValueError, match="'item': vocab is 0"):
        ItemEncoder(spec)


def test_count_parameters_splits_cloud_and_device(spec):
    model = build_model("dir", spec, embedding_dim=16)
    counts = count_parameters(model)
    assert counts["cloud"] == 16 * (40 + 7 + 30)
    assert counts["cloud"] + counts["device"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_padding_never_changes_real_scores(spec, name):
    """Garbage in padded slots, and extra padded candidates/history steps, leave real scores unchanged."""
    torch.manual_seed(1)
    model = build_model(name, spec).eval()
    inputs = model.device_inputs(make_batch(spec, seed=5))
    mask = torch.stack(inputs[1::4], 1).bool()
    with torch.no_grad():
        base = model.device_model(*inputs)
        garbage = model.device_model(*garbage_padding(inputs))
        longer = model.device_model(*pad_longer(garbage_padding(inputs), extra_n=3, extra_t=4))
    assert torch.allclose(garbage[mask], base[mask], atol=1e-6, rtol=0)
    assert torch.allclose(longer[:, :, : spec.n][mask], base[mask], atol=1e-6, rtol=0)
    assert (longer[:, :, spec.n :] == PAD_LOGIT).all()


@pytest.mark.parametrize("name", NAMES)
def test_permuting_candidates_within_each_source_permutes_scores(spec, name):
    """Equivariance that holds: reorder the n slots of each source (each source its own permutation,
    real and padded slots alike, masks moved along) and the scores are reordered the same way.

    Sources are not exchangeable (encoders, GRUs and sharing weights are per source), so permuting
    sources is not tested; the GRU is order-sensitive, so history order is not permuted either.
    """
    torch.manual_seed(2)
    model = build_model(name, spec).eval()
    inputs = list(model.device_inputs(make_batch(spec, seed=7)))
    g = torch.Generator().manual_seed(0)
    perms = [torch.randperm(spec.n, generator=g) for _ in range(spec.m)]
    permuted = list(inputs)
    for s, perm in enumerate(perms):
        permuted[4 * s] = inputs[4 * s][:, perm]
        permuted[4 * s + 1] = inputs[4 * s + 1][:, perm]
    with torch.no_grad():
        base, out = model.device_model(*inputs), model.device_model(*permuted)
    expected = torch.stack([base[:, s, perm] for s, perm in enumerate(perms)], 1)
    assert torch.allclose(out, expected, atol=1e-5, rtol=0)


def test_listwise_context_is_what_couples_candidates(spec):
    """Changing one real candidate moves the other candidates' scores in DIR, not in DIR-LCM."""
    for name, coupled in (("dir", True), ("dir-lcm", False)):
        torch.manual_seed(3)
        model = build_model(name, spec).eval()
        inputs = list(model.example_inputs(batch=1, seed=4))
        inputs[1] = torch.ones_like(inputs[1])
        changed = list(inputs)
        changed[0] = inputs[0].clone()
        changed[0][0, 0] += 3.0
        with torch.no_grad():
            delta = (model.device_model(*changed) - model.device_model(*inputs)).abs()
        assert (delta[0, :, 1:].max() > 1e-4) == coupled
        assert delta[0, 0, 0] > 1e-4


def test_a_warm_source_history_reaches_a_cold_source(spec):
    """Source 1 has no history; its candidates' scores still react to source 0's history."""
    torch.manual_seed(4)
    model = build_model("dir", spec).eval()
    inputs = list(model.example_inputs(batch=1, seed=5))
    inputs[7] = torch.zeros_like(inputs[7])
    inputs[6] = torch.zeros_like(inputs[6])
    changed = list(inputs)
    changed[2] = torch.randn(inputs[2].shape) * inputs[3].unsqueeze(-1)
    with torch.no_grad():
        delta = (model.device_model(*changed) - model.device_model(*inputs)).abs()
    assert delta[0, 1].max() > 1e-4


def test_grouped_gru_matches_torch_gru_over_real_steps_oldest_first():
    torch.manual_seed(5)
    m, batch, t, h = 3, 4, 6, 8
    gru = GroupedGRU(m, h)
    hist = torch.randn(m, batch, t, h)
    lengths = torch.tensor([[6, 3, 1, 0], [2, 6, 0, 4], [0, 0, 5, 1]])
    mask = (torch.arange(t) < lengths.unsqueeze(-1)).float()
    with torch.no_grad():
        out = gru(hist, mask)
    for s in range(m):
        ref = torch.nn.GRU(h, h, batch_first=True)
        with torch.no_grad():
            ref.weight_ih_l0.copy_(gru.w_input[s].T)
            ref.weight_hh_l0.copy_(gru.w_state[s].T)
            ref.bias_ih_l0.copy_(gru.b_input[s, 0])
            ref.bias_hh_l0.copy_(gru.b_state[s, 0])
        for b in range(batch):
            n_real = int(lengths[s, b])
            if n_real == 0:
                assert torch.equal(out[s, b], torch.zeros(h))  # empty history -> p_s = 0
                continue
            oldest_first = hist[s, b, :n_real].flip(0).unsqueeze(0)
            with torch.no_grad():
                expected = ref(oldest_first)[1][0, 0]
            assert torch.allclose(out[s, b], expected, atol=1e-5)


def test_isi_pools_the_real_history_by_average():
    """Without sharing, the preferences are the pooled histories themselves."""
    model = DIRDeviceModel([5, 5, 5], gru=False, linear_sharing=False, high_order_sharing=False)
    hist = torch.randn(3, 2, 4, 32)  # [m, B, t, h]
    mask = torch.tensor([[1.0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]).unsqueeze(1).expand(3, 2, 4)
    p = model._preferences(hist, mask)  # [B, m, h]
    assert torch.allclose(p[1, 0], hist[0, 1, :2].mean(0), atol=1e-6)
    assert torch.equal(p[0, 1], torch.zeros(32))
    assert torch.allclose(p[1, 2], hist[2, 1].mean(0), atol=1e-6)


def test_cross_stitch_starts_at_identity(spec):
    share = build_model("dir", spec).device_model.share
    assert torch.equal(share.detach(), torch.eye(spec.m))


@pytest.mark.parametrize("name", ["dir", "dir-ca"])
def test_every_parameter_gets_a_gradient(spec, name):
    from cloud.training.losses import exposure_loss, utility_loss

    torch.manual_seed(6)
    model = build_model(name, spec)
    batch = make_batch(spec, batch=8, seed=8)
    scores = model(batch)
    loss = utility_loss(scores, batch["label"], batch["mask"]) + exposure_loss(
        scores, batch["mask"], spec.target_shares, spec.K
    )
    loss.backward()
    silent = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert silent == []


@pytest.mark.parametrize("name", ["dir", "dir-isi"])
def test_torch_export_of_the_device_model_with_batch_one(spec, name):
    torch.manual_seed(7)
    model = build_model(name, spec).eval()
    inputs = model.example_inputs(batch=1)
    exported = torch.export.export(model.device_model, inputs)
    ops = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    banned = [op for op in ops if any(word in op for word in ("split", "chunk", "one_hot", "gru", "nonzero"))]
    assert banned == []
    with torch.no_grad():
        assert torch.allclose(exported.module()(*inputs), model.device_model(*inputs), atol=1e-6)
