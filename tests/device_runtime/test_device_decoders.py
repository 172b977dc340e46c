"""List decoders on the device (issue #10): SVR's beam search, HRL's per-slot policy calls and NAR4Rec's
contrastive decoding run by the Reranker around real exported bundles (TFLite, ExecuTorch), giving the
order the decoders of device_runtime/decoding.py give on the eager PyTorch outputs of the same request.

One untrained bundle per model for the small export spec (tests/helpers/export.py: m=3, n=4, t=3, K=2),
exported once per module: SVR and HRL to TFLite, NAR4Rec (three outputs) to TFLite and ExecuTorch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cloud.export import ExportError, capture, eager_runner, max_abs_diff, parity_cases, summary, write_bundle
from cloud.models import build_model
from device_runtime import cli
from device_runtime.backends import load_backend
from device_runtime.backends.tflite import match_outputs
from device_runtime.bundle import BundleRegistry, verify
from device_runtime.decoding import beam_search, contrastive_decode, decode_request, slot_decode
from device_runtime.reranker import Reranker
from shared_schema import BehaviorEvent, TensorSpec
from shared_schema.manifest import MANIFEST_NAME
from tests.helpers.device import copy_bundle, make_slate, read_manifest
from tests.helpers.export import SPEC, quiet, shared_bundle

EXPORTS = {"svr": ("tflite",), "hrl": ("tflite",), "nar4rec": ("executorch", "tflite")}
DECODER = {"svr": "beam_search", "hrl": "slot_policy", "nar4rec": "contrastive"}
STAGES = {"validate_cache", "history_read", "assembly", "inference", "merge", "record_exposures", "total"}
RUNS = [
    ("svr", "tflite", "cpu"),
    ("hrl", "tflite", "xnnpack"),
    ("nar4rec", "tflite", "cpu"),
    ("nar4rec", "executorch", "xnnpack"),
    ("nar4rec", "executorch", "portable"),
]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """bundles(name) -> (bundle folder, eager model); each model is exported on first use (one torch thread:
    the tensors are tiny and the machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    built = {}

    def get(name: str):
        if name not in built:
            torch.manual_seed(0)
            model = build_model(name, SPEC, embedding_dim=4).eval()
            out = tmp_path_factory.mktemp(name) / "bundle"
            write_bundle(
                model,
                SPEC,
                out,
                backends=EXPORTS[name],
                embedding_version="emb-1",
                model_version=f"{name}-1",
                progress=quiet,
            )
            built[name] = (out, model)
        return built[name]

    yield get
    torch.set_num_threads(threads)


def _eager_order(name: str, model, inputs: dict, K: int) -> list[tuple[int, int]]:
    """The list the decoder gives on eager PyTorch outputs (no exported file, no decode_request)."""
    args = [torch.from_numpy(inputs[n]) for n in model.layout.input_names()]
    masks = [inputs[f"cand_mask_{s}"][0] > 0 for s in range(SPEC.m)]
    with torch.no_grad():
        if name == "svr":
            scores = model.device_model(*args).numpy()[0]
            probs = [1.0 / (1.0 + np.exp(-scores[s][mask].astype(np.float64))) for s, mask in enumerate(masks)]
            return beam_search(probs, K, beam_width=4, target_shares=SPEC.target_shares, diversity=1.0)
        if name == "hrl":
            return slot_decode(eager_runner(model.device_model, model.layout), inputs, K)
        _, probs, x, _, _ = model.device_model.encode(*args)
        unit = F.normalize(x[0], dim=-1)
    flat = contrastive_decode(probs[0].numpy(), (unit @ unit.T).numpy(), np.concatenate(masks), alpha=0.2)
    return [(i // SPEC.n, i % SPEC.n) for i in flat]


@pytest.mark.parametrize("name,backend,delegate", RUNS)
def test_reranker_builds_the_list_with_the_bundle_decoder_as_on_eager_outputs(
    bundles, tmp_path, name, backend, delegate
):
    bundle, model = bundles(name)
    root = tmp_path / "root"
    BundleRegistry(root).install(bundle)
    with Reranker.open(root, tmp_path / "h.db", backend=backend, delegate=delegate) as reranker:
        m = reranker.manifest
        assert (m.decoder, reranker.backend.name, reranker.backend.delegate) == (DECODER[name], backend, delegate)
        rng = np.random.default_rng(1)
        for i in range(2):  # a history in two sources, so the request is not a cold one
            for s in (0, 2):
                reranker.record(
                    BehaviorEvent(
                        item_id=f"h{s}-{i}",
                        source=m.source_names[s],
                        action="click",
                        ts=10.0 + i,
                        vector=rng.standard_normal(m.vector_dims[s]).tolist(),
                    )
                )
        by_score = []  # whether the list is also the plain score order
        for seed, counts in ((0, [4, 2, 3]), (1, [1, 0, 4]), (2, [4, 4, 4])):
            slate = make_slate(m, seed=seed, counts=counts)
            clicks = reranker.store.last_clicks(m.source_names, m.t)
            result = reranker.rerank(slate)

            ids = [item.item_id for item in result.items]
            assert sorted(ids) == sorted(i.item_id for s in slate.sources for i in s.items)  # each exactly once
            assert len(set(ids[: m.K])) == min(m.K, len(ids))
            assert result.merge == DECODER[name] and set(result.timings_ms) == STAGES

            cands = [
                np.array([i.vector for i in source.items]).reshape(-1, d)
                for source, d in zip(slate.sources, m.vector_dims)
            ]
            hists = [np.array([v for _, v in c]).reshape(-1, d) for c, d in zip(clicks, m.vector_dims)]
            inputs = m.layout().assemble(cands, hists)
            expected = [slate.sources[s].items[i].item_id for s, i in _eager_order(name, model, inputs, m.K)]
            assert ids == expected, (seed, ids, expected)
            with torch.no_grad():
                scores = model.device_model(*(torch.from_numpy(inputs[n]) for n in m.layout().input_names()))[0]
            for item in result.items:
                s = m.source_names.index(item.source)
                i = next(j for j, c in enumerate(slate.sources[s].items) if c.item_id == item.item_id)
                assert item.score == pytest.approx(float(scores[s, i]), abs=1e-4)
            by_score.append([r.score for r in result.items] == sorted((r.score for r in result.items), reverse=True))
        assert not all(by_score)  # the decoder, not a sort by score, made at least one of the lists


def test_nar4rec_exports_its_matching_matrix_and_encodings_and_every_file_matches_eager(bundles):
    bundle, model = bundles("nar4rec")
    manifest = verify(bundle)
    N = SPEC.m * SPEC.n
    assert [(o.name, o.shape) for o in manifest.outputs] == [
        ("scores", (1, SPEC.m, SPEC.n)),
        ("matching", (1, N, SPEC.K)),
        ("encodings", (1, N, 32)),
    ]
    assert manifest.decoder_options == {"alpha": 0.2}
    assert all(f.parity_max_abs_diff <= 1e-5 for f in manifest.files)
    assert (
        "device decoder: contrastive {'alpha': 0.2}; outputs after scores: matching [1, 12, 2], encodings [1, 12, 32]"
    ) in summary(manifest)
    layout = manifest.layout()
    cases = parity_cases(layout, seed=5)
    reference = eager_runner(model.export_module(), layout)
    for backend, delegate in (
        ("tflite", "cpu"),
        ("tflite", "xnnpack"),
        ("executorch", "xnnpack"),
        ("executorch", "portable"),
    ):
        loaded = load_backend(bundle, manifest, backend, delegate)
        assert max_abs_diff(reference, loaded.run_all, cases, layout) <= 1e-5, (backend, delegate)
        outputs = loaded.run_all(cases[0][1])
        assert [o.shape for o in outputs] == [o.shape for o in manifest.outputs]
        np.testing.assert_array_equal(loaded.run(cases[0][1]), outputs[0])  # run = scores
        norms = np.linalg.norm(outputs[2][0], axis=-1)
        np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_the_export_checks_the_outputs_and_the_decoder_options(bundles, tmp_path):
    _, model = bundles("nar4rec")
    with pytest.raises(
        ExportError,
        match=r"must return `scores` of shape \[1, 3, 4\] \(\[B, m, n\]\); it returns "
        r"shapes \[\[1, 3, 4\], \[1, 12, 2\], \[1, 12, 32\]\]",
    ):
        capture(model.export_module(), model.layout)  # three outputs where one is declared
    with pytest.raises(ValueError, match=r"decoder_options.alpha: expected a number in \[0.0, 1.0\], got 3"):
        write_bundle(model, SPEC, tmp_path / "b", backends="tflite", decoder_options={"alpha": 3}, progress=quiet)
    assert not (tmp_path / "b").exists()


def test_tflite_outputs_are_bound_by_name_else_by_shape(bundles):
    from ai_edge_litert.interpreter import Interpreter

    bundle, _ = bundles("nar4rec")
    manifest = read_manifest(bundle)
    path = bundle / "model.tflite"
    interpreter = Interpreter(model_path=str(path))
    signature = interpreter.get_signature_runner().get_output_details()
    wanted = [signature[o.name]["index"] for o in manifest.outputs]
    assert [d["index"] for d in match_outputs(signature, manifest.outputs, path)] == wanted
    raw = {d["name"]: d for d in reversed(interpreter.get_output_details())}  # tensor names, no signature
    assert set(raw).isdisjoint(o.name for o in manifest.outputs)
    assert [d["index"] for d in match_outputs(raw, manifest.outputs, path)] == wanted
    clash = [manifest.outputs[0], manifest.outputs[1], TensorSpec(name="encodings", shape=manifest.outputs[1].shape)]
    with pytest.raises(ValueError, match="cannot tell which model output is 'matching'"):
        match_outputs(raw, clash, path)
    with pytest.raises(ValueError, match=r"the model has 3 outputs .* the manifest lists 1 \['scores'\]"):
        match_outputs(raw, manifest.outputs[:1], path)


def test_a_manifest_without_decoder_is_a_merge_bundle(bundles, tmp_path, tmp_path_factory):
    plain = shared_bundle(tmp_path_factory, backends=("tflite",), quantize=())  # DIR: the writer leaves it out
    assert "decoder" not in json.loads((plain.path / MANIFEST_NAME).read_text())
    assert read_manifest(plain.path).decoder == "merge"

    old = copy_bundle(bundles("svr")[0], tmp_path / "old")
    raw = json.loads((old / MANIFEST_NAME).read_text())
    del raw["decoder"], raw["decoder_options"]
    (old / MANIFEST_NAME).write_text(json.dumps(raw))
    assert (verify(old).decoder, verify(old).decoder_options) == ("merge", {})
    with Reranker.open(old, tmp_path / "h.db", backend="tflite", delegate="cpu", merge="quota") as reranker:
        assert reranker.rerank(make_slate(reranker.manifest)).merge == "quota"


@pytest.mark.parametrize(
    "change,message",
    [
        (
            {"decoder": "sampling"},
            r"decoder 'sampling' is not known to this runtime; known decoders: \['merge', "
            r"'beam_search', 'slot_policy', 'contrastive'\]",
        ),
        ({"decoder_options": {"beam_width": 0}}, r"decoder_options.beam_width: expected an integer in \[1, inf\]"),
        ({"decoder_options": {"alpha": 0.5}}, r"decoder_options \['alpha'\] do not apply to decoder 'beam_search'"),
        (
            {"decoder": "contrastive", "decoder_options": {}},
            r"outputs after 'scores' are \[\], decoder 'contrastive' reads \['matching', ",
        ),
    ],
)
def test_a_bad_decoder_is_refused_and_the_active_bundle_keeps_serving(bundles, tmp_path, change, message):
    bundle, _ = bundles("svr")
    registry = BundleRegistry(tmp_path / "root")
    active = registry.install(bundle)
    bad = copy_bundle(bundle, tmp_path / "bad", model_version="svr-2", **change)
    with pytest.raises(ValueError, match=message):
        registry.install(bad)
    assert registry.active().version == active.version
    with Reranker.open(registry.root, tmp_path / "h.db", backend="tflite") as reranker:
        assert reranker.rerank(make_slate(reranker.manifest)).merge == "beam_search"


@pytest.mark.parametrize("merge", ["quota", "controller"])
def test_a_merge_mode_other_than_score_is_refused_for_a_decoder_bundle(bundles, tmp_path, merge):
    with pytest.raises(
        ValueError,
        match=rf"merge '{merge}': .* decoder 'slot_policy', the decoder decides the "
        r"list; use merge='score'",
    ):
        Reranker.open(bundles("hrl")[0], tmp_path / "h.db", merge=merge)
    assert not (tmp_path / "h.db").exists()
    with pytest.raises(ValueError, match="merge.py builds the list of a `merge` bundle"):
        decode_request("merge", {}, [np.zeros((1, 1, 1), np.float32)], {"cand_mask_0": np.ones((1, 1))}, 1, [1.0])


def test_cli_reranks_with_the_decoder_and_info_shows_it(bundles, tmp_path, capsys):
    root, slate = tmp_path / "root", tmp_path / "slate.json"
    common = ["--root", str(root), "--db", str(tmp_path / "h.db")]
    assert cli.main(["trust", "--allow-unsigned", *common]) == 0  # an unsigned test bundle
    assert cli.main(["install", str(bundles("nar4rec")[0]), *common]) == 0
    slate.write_text(make_slate(read_manifest(bundles("nar4rec")[0]), counts=[3, 4, 2]).model_dump_json())
    capsys.readouterr()
    assert cli.main(["rerank", "--slate", str(slate), "--backend", "executorch", "--json", *common]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["merge"] == "contrastive" and len(result["items"]) == 9
    assert cli.main(["info", "--json", *common]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["decoder"], info["decoder_options"]) == ("contrastive", {"alpha": 0.2})
    assert cli.main(["rerank", "--slate", str(slate), "--merge", "quota", *common]) == 2
    assert "use merge='score'" in capsys.readouterr().err
