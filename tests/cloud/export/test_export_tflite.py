"""TFLite export (litert-torch, no TensorFlow): the bundle's .tflite files, run with ai_edge_litert with
and without the XNNPACK delegate, match eager PyTorch; the int8 variants stay close and keep the order."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert not installed: pip install -e '.[export]'")

from ai_edge_litert.interpreter import Interpreter

from cloud.export import eager_runner, max_abs_diff, open_runner, parity_cases, quantize_tflite
from cloud.export.parity import random_inputs, real_slots
from tests.helpers.export import shared_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory, backends=("tflite",))


def _file(bundle, name):
    return next(f for f in bundle.manifest.files if f.path == name)


@pytest.mark.parametrize("xnnpack", [True, False], ids=["xnnpack", "builtin-cpu"])
def test_tflite_matches_eager_on_fresh_random_padded_and_cold_cases(bundle, xnnpack):
    layout = bundle.manifest.layout()
    cases = parity_cases(layout, seed=321, random_cases=30)
    run = open_runner(bundle.path / "model.tflite", layout, xnnpack=xnnpack)
    assert max_abs_diff(eager_runner(bundle.model.device_model, layout), run, cases, layout) <= 1e-5
    assert 0 <= _file(bundle, "model.tflite").parity_max_abs_diff <= 1e-5


def test_signature_uses_layout_names_batch_one(bundle):
    interpreter = Interpreter(model_path=str(bundle.path / "model.tflite"))
    runner = interpreter.get_signature_runner("serving_default")
    inputs = runner.get_input_details()
    assert {name: tuple(d["shape"]) for name, d in inputs.items()} == {
        s.name: tuple(s.shape) for s in bundle.manifest.inputs
    }
    assert [d["name"] for d in interpreter.get_input_details()] == [
        f"serving_default_{s.name}" for s in bundle.manifest.inputs
    ]  # layout order by index too
    assert {name: tuple(d["shape"]) for name, d in runner.get_output_details().items()} == {"scores": (1, 3, 4)}


def test_conversion_did_not_need_tensorflow(bundle):
    assert "tensorflow" not in sys.modules


def _scores(bundle, name, count=60):
    layout = bundle.manifest.layout()
    rng = np.random.default_rng(11)
    requests = [random_inputs(layout, rng) for _ in range(count)]
    run, reference = open_runner(bundle.path / name, layout), eager_runner(bundle.model.device_model, layout)
    fp32 = np.concatenate([reference(r)[real_slots(r, layout)] for r in requests])
    quantized = np.concatenate([run(r)[real_slots(r, layout)] for r in requests])
    return fp32, quantized


def test_full_int8_has_int8_io_and_keeps_the_score_order(bundle):
    details = Interpreter(model_path=str(bundle.path / "model_int8.tflite")).get_input_details()
    assert {np.dtype(d["dtype"]) for d in details} == {np.dtype(np.int8)}
    fp32, int8 = _scores(bundle, "model_int8.tflite")
    assert np.corrcoef(fp32, int8)[0, 1] > 0.8
    assert np.abs(fp32 - int8).max() < 0.5 * (fp32.max() - fp32.min())
    stored = _file(bundle, "model_int8.tflite")
    assert stored.quantization == "int8" and 0 < stored.parity_max_abs_diff < np.inf


def test_dynamic_int8_is_float_io_and_close_to_fp32(bundle):
    details = Interpreter(model_path=str(bundle.path / "model_int8_dynamic.tflite")).get_input_details()
    assert {np.dtype(d["dtype"]) for d in details} == {np.dtype(np.float32)}
    fp32, dynamic = _scores(bundle, "model_int8_dynamic.tflite")
    assert np.corrcoef(fp32, dynamic)[0, 1] > 0.99
    assert np.abs(fp32 - dynamic).max() < 0.05 * (fp32.max() - fp32.min())
    assert _file(bundle, "model_int8_dynamic.tflite").size < _file(bundle, "model.tflite").size


def test_full_int8_needs_calibration_requests(bundle):
    with pytest.raises(ValueError, match="calibration request"):
        quantize_tflite((bundle.path / "model.tflite").read_bytes(), "int8", [])
    with pytest.raises(ValueError, match="choose from"):
        quantize_tflite(b"", "int4")
