"""Shared pieces of the model tests: a three-source spec (n=6, t=5), random feature batches, padding
helpers, and the checks every single-source baseline carries (tests/cloud/models/test_din.py, test_setrank.py,
test_prm.py, test_mir.py, test_pear.py, ...): each test file calls these with its registry name and options.

    from tests.cloud.models.helpers import SPEC, check_shapes, make_batch, ...
    pytestmark = pytest.mark.usefixtures("single_thread")   # the fixture lives in conftest.py here
    def test_shapes(): check_shapes("din")

Runtime export parity uses the export tests' small spec (tests/helpers/export.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from cloud.models import build_model
from cloud.models.dir import PAD_LOGIT
from cloud.training.losses import utility_loss
from shared_schema.specs import CategoricalField, DatasetSpec, DenseField, SourceSpec


def make_spec(n: int = 6, t: int = 5) -> DatasetSpec:
    """Three heterogeneous sources: categoricals + dense, categoricals only, dense only."""
    return DatasetSpec(
        n=n,
        t=t,
        K=3,
        sources=(
            SourceSpec(
                name="video",
                target_share=0.5,
                categorical=(CategoricalField(name="item", vocab=40), CategoricalField(name="genre", vocab=7)),
                dense=(DenseField(name="emb", dim=3),),
            ),
            SourceSpec(name="article", target_share=0.4, categorical=(CategoricalField(name="item", vocab=30),)),
            SourceSpec(name="ad", target_share=0.1, dense=(DenseField(name="vec", dim=5), DenseField(name="bid"))),
        ),
    )


def make_batch(spec: DatasetSpec, batch: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A feature batch as cloud/data/batches.py builds it, with random lengths (including empty ones)."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for s, source in enumerate(spec.sources):
        for part, length in (("cand", spec.n), ("hist", spec.t)):
            real = torch.randint(0, length + 1, (batch, 1), generator=g)
            real[0] = length  # one full list/history
            out[f"{part}_mask_{s}"] = (torch.arange(length) < real).float()
            cats = [torch.randint(0, f.vocab, (batch, length, 1), generator=g) for f in source.categorical]
            out[f"{part}_cat_{s}"] = torch.cat(cats, -1) if cats else torch.zeros(batch, length, 0, dtype=torch.long)
            out[f"{part}_dense_{s}"] = torch.randn(batch, length, source.dense_dim(), generator=g)
    out["mask"] = torch.stack([out[f"cand_mask_{s}"] for s in range(spec.m)], 1)
    out["label"] = (torch.rand(out["mask"].shape, generator=g) < 0.3).float() * out["mask"]
    return out


def garbage_padding(inputs: tuple[torch.Tensor, ...], seed: int = 1) -> tuple[torch.Tensor, ...]:
    """Fill every padded candidate and history vector with large random values."""
    g = torch.Generator().manual_seed(seed)
    out = list(inputs)
    for i in range(0, len(out), 2):
        pad = (1.0 - out[i + 1]).unsqueeze(-1)
        out[i] = out[i] + pad * 50.0 * torch.randn(out[i].shape, generator=g)
    return tuple(out)


def pad_longer(inputs: tuple[torch.Tensor, ...], extra_n: int, extra_t: int) -> tuple[torch.Tensor, ...]:
    """Append padded candidate slots and history steps (nonzero garbage vectors, mask 0)."""
    out = []
    for i, x in enumerate(inputs):
        extra = extra_n if i % 4 < 2 else extra_t
        shape = (x.shape[0], extra, *x.shape[2:])
        out.append(torch.cat([x, torch.zeros(shape) if i % 2 else 7.0 * torch.ones(shape)], dim=1))
    return tuple(out)


SPEC = make_spec()
BANNED = ("split", "chunk", "one_hot", "gru", "lstm", "nonzero", "masked_select", "index_put")


def build(name: str, seed: int = 0, spec=SPEC, **options):
    torch.manual_seed(seed)
    return build_model(name, spec, **options).eval()


def check_shapes(name: str, **options) -> None:
    """Scores [B, m, n], finite, PAD_LOGIT exactly at padded slots; the model trains without exposure loss."""
    model = build(name, **options)
    batch = make_batch(SPEC)
    scores = model(batch)
    assert scores.shape == (4, SPEC.m, SPEC.n)
    assert torch.isfinite(scores).all()
    assert (scores[batch["mask"] == 0] == PAD_LOGIT).all()
    assert (scores[batch["mask"] == 1] != PAD_LOGIT).all()
    assert model.uses_exposure_loss is False
    assert build(name, exposure_loss=True, **options).uses_exposure_loss is True
    assert model.name == name and model.options == options
    assert torch.equal(model.device_model(*model.device_inputs(batch)), scores)  # the embedding split


def check_padding_invariance(name: str, longer: bool = True, **options) -> None:
    """Garbage in padded slots (and, if `longer`, extra padded candidates / history steps) leaves real
    scores unchanged."""
    model = build(name, seed=1, **options)
    inputs = model.device_inputs(make_batch(SPEC, seed=5))
    mask = torch.stack(inputs[1::4], 1).bool()
    with torch.no_grad():
        base = model.device_model(*inputs)
        garbage = model.device_model(*garbage_padding(inputs))
        assert torch.allclose(garbage[mask], base[mask], atol=1e-5, rtol=0)
        if longer:
            extended = model.device_model(*pad_longer(garbage_padding(inputs), extra_n=3, extra_t=4))
            assert torch.allclose(extended[:, :, : SPEC.n][mask], base[mask], atol=1e-5, rtol=0)
            assert (extended[:, :, SPEC.n :] == PAD_LOGIT).all()


def permuted_scores(name: str, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores after reordering each source's n slots, the original scores reordered the same way).

    Slots of different sources cannot be exchanged in the layout (each source has its own width), so
    each source gets its own permutation of its slots, real and padded alike, masks moved along.
    """
    model = build(name, seed=2, **options)
    inputs = list(model.device_inputs(make_batch(SPEC, seed=7)))
    g = torch.Generator().manual_seed(0)
    perms = [torch.randperm(SPEC.n, generator=g) for _ in range(SPEC.m)]
    permuted = list(inputs)
    for s, perm in enumerate(perms):
        permuted[4 * s], permuted[4 * s + 1] = inputs[4 * s][:, perm], inputs[4 * s + 1][:, perm]
    with torch.no_grad():
        base, out = model.device_model(*inputs), model.device_model(*permuted)
    real = torch.stack(permuted[1::4], 1).bool()
    expected = torch.stack([base[:, s, perm] for s, perm in enumerate(perms)], 1)
    return out[real], expected[real]


def check_equivariant(name: str, **options) -> None:
    out, expected = permuted_scores(name, **options)
    assert torch.allclose(out, expected, atol=1e-5, rtol=0)


def check_training_reduces_loss(name: str, steps: int = 12, **options) -> None:
    """A few Adam steps on one small random batch lower its training loss (the utility loss unless the
    model turns it off, plus its auxiliary loss)."""
    model = build(name, seed=3, **options).train()
    batch = make_batch(SPEC, batch=16, seed=9)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_now() -> torch.Tensor:
        scores = model(batch)
        loss = utility_loss(scores, batch["label"], batch["mask"]) if model.uses_utility_loss else scores.new_zeros(())
        extra = model.auxiliary_loss(batch, scores)
        return loss if extra is None else loss + extra

    with torch.no_grad():
        before = loss_now().item()
    for _ in range(steps):
        optimizer.zero_grad()
        loss_now().backward()
        optimizer.step()
    with torch.no_grad():
        after = loss_now().item()
    assert after < 0.9 * before, (before, after)


def check_empty_history(name: str, **options) -> None:
    """Lists whose histories are all empty (garbage in the padded history vectors) give finite scores and
    finite gradients, and the scores do not depend on that garbage."""
    model = build(name, seed=4, **options)
    batch = make_batch(SPEC, batch=3, seed=11)
    for s in range(SPEC.m):
        batch[f"hist_mask_{s}"] = torch.zeros_like(batch[f"hist_mask_{s}"])
    inputs = model.device_inputs(batch)
    scores = model.device_model(*inputs)
    noisy = model.device_model(*garbage_padding(inputs, seed=3))
    assert torch.isfinite(scores).all()
    assert torch.allclose(noisy, scores, atol=1e-5, rtol=0)
    utility_loss(scores, batch["label"], batch["mask"]).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def check_torch_export(name: str, **options) -> None:
    """torch.export at batch 1: no banned ops, same scores as eager."""
    model = build(name, seed=7, **options)
    inputs = model.example_inputs(batch=1)
    exported = torch.export.export(model.device_model, inputs)
    ops = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert [op for op in ops if any(word in op for word in BANNED)] == []
    with torch.no_grad():
        assert torch.allclose(exported.module()(*inputs), model.device_model(*inputs), atol=1e-5)


def check_runtime_parity(name: str, tmp_path: Path, **options) -> None:
    """The device model lowered to ExecuTorch (XNNPACK) and converted to TFLite, run with the real
    runtimes, matches eager on random, padded and cold-source cases; the .tflite keeps every layout input."""
    from ai_edge_litert.interpreter import Interpreter

    from cloud.export import (
        capture,
        convert_tflite,
        eager_runner,
        lower_executorch,
        max_abs_diff,
        open_runner,
        parity_cases,
    )
    from tests.helpers.export import SPEC as SMALL

    model = build(name, spec=SMALL, embedding_dim=4, **options)
    layout = model.layout
    (tmp_path / "model.pte").write_bytes(lower_executorch(capture(model.device_model, layout)).buffer)
    (tmp_path / "model.tflite").write_bytes(convert_tflite(model.device_model, layout))
    runner = Interpreter(model_path=str(tmp_path / "model.tflite")).get_signature_runner()
    assert sorted(runner.get_input_details()) == sorted(layout.input_names())
    cases = parity_cases(layout, seed=17)
    reference = eager_runner(model.device_model, layout)
    for file in ("model.pte", "model.tflite"):
        assert max_abs_diff(reference, open_runner(tmp_path / file, layout), cases, layout) <= 1e-5, file
