"""Backends with delegate choice: real TFLite and ExecuTorch runtimes, real delegate loader failures."""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import pytest

from device_runtime.backends import BackendError, load_backend, pick_file, plan
from shared_schema import TensorSpec
from tests.helpers.device import read_manifest

COMBOS = [("tflite", "cpu"), ("tflite", "xnnpack"), ("executorch", "xnnpack"), ("executorch", "portable")]


def _library_present(name: str) -> bool:
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def _inputs(manifest, seed=0):
    rng = np.random.default_rng(seed)
    layout = manifest.layout()
    cands = [rng.standard_normal((manifest.n if s == 0 else 3, d)) for s, d in enumerate(manifest.vector_dims)]
    hists = [rng.standard_normal((4 if s == 0 else 0, d)) for s, d in enumerate(manifest.vector_dims)]
    return layout.assemble(cands, hists)


def test_auto_falls_back_past_missing_npu_delegates_and_records_why(device_bundle):
    if _library_present("libedgetpu.so.1") or _library_present("libtensorflowlite_gpu_delegate.so"):
        pytest.skip("this machine has an Edge TPU / GPU delegate library, so auto does not fall back")
    manifest = read_manifest(device_bundle)
    backend = load_backend(device_bundle, manifest)
    assert (backend.name, backend.delegate) == ("tflite", "xnnpack")
    failed = backend.attempts[:-1]
    assert [(b, d) for b, d, _ in failed] == [("tflite", "edgetpu"), ("tflite", "gpu")]
    assert "OSError" in failed[0][2] and "libedgetpu.so.1" in failed[0][2]
    assert "libtensorflowlite_gpu_delegate.so" in failed[1][2]
    assert backend.attempts[-1] == ("tflite", "xnnpack", "ok")


def test_named_missing_delegate_raises_with_the_loader_error(device_bundle):
    manifest = read_manifest(device_bundle)
    if _library_present("libedgetpu.so.1"):
        pytest.skip("libedgetpu.so.1 is installed here")
    with pytest.raises(BackendError, match=r"tflite:edgetpu -> OSError: libedgetpu\.so\.1: cannot open"):
        load_backend(device_bundle, manifest, backend="tflite", delegate="edgetpu")


# ai_edge_litert's Delegate.__del__ fails on a library without the plugin symbols; that is its noise.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_library_that_is_no_delegate_falls_back_to_cpu(device_bundle):
    libm = ctypes.util.find_library("m")
    if libm is None:
        pytest.skip("no libm found to stand in for a non-delegate shared library")
    manifest = read_manifest(device_bundle)
    backend = load_backend(device_bundle, manifest, order=[f"tflite:{libm}", "tflite:cpu"])
    assert (backend.name, backend.delegate) == ("tflite", "cpu")
    assert backend.attempts[0][0:2] == ("tflite", libm) and "tflite_plugin_create_delegate" in backend.attempts[0][2]


@pytest.mark.parametrize("backend,delegate", COMBOS)
def test_every_backend_and_delegate_gives_the_same_scores(device_bundle, backend, delegate):
    manifest = read_manifest(device_bundle)
    reference = load_backend(device_bundle, manifest, "tflite", "cpu").run(_inputs(manifest))
    loaded = load_backend(device_bundle, manifest, backend, delegate, threads=2)
    scores = loaded.run(_inputs(manifest))
    assert (loaded.name, loaded.delegate) == (backend, delegate)
    assert scores.shape == (1, len(manifest.sources), manifest.n) and scores.dtype == np.float32
    real = [scores[0, 0], scores[0, 1, :3]]
    expected = [reference[0, 0], reference[0, 1, :3]]
    for got, want in zip(real, expected):
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert not np.allclose(scores[0, 0], scores[0, 0, 0])  # a real model: candidates get different scores


def test_tflite_cpu_runs_builtin_kernels_and_xnnpack_delegates(device_bundle):
    manifest = read_manifest(device_bundle)
    cpu = load_backend(device_bundle, manifest, "tflite", "cpu")
    xnn = load_backend(device_bundle, manifest, "tflite", "xnnpack")
    assert "DELEGATE" not in cpu.op_names()
    assert "DELEGATE" in xnn.op_names()


def test_executorch_picks_the_program_lowered_for_the_delegate(device_bundle):
    manifest = read_manifest(device_bundle)
    assert pick_file(manifest, "executorch", "xnnpack").delegate == "xnnpack"
    assert pick_file(manifest, "executorch", "cpu").delegate in ("portable", "cpu")
    assert (
        load_backend(device_bundle, manifest, "executorch", "cpu").path.name
        == pick_file(manifest, "executorch", "portable").path
    )
    with pytest.raises(BackendError, match="no executorch file for delegate 'qnn'"):
        load_backend(device_bundle, manifest, "executorch", "qnn")


def test_inputs_are_checked_by_name_dtype_and_shape(device_bundle):
    manifest = read_manifest(device_bundle)
    backend = load_backend(device_bundle, manifest, "tflite", "cpu")
    good = _inputs(manifest)
    missing = {k: v for k, v in good.items() if k != "hist_1"}
    with pytest.raises(ValueError, match="input 'hist_1' is missing"):
        backend.run(missing)
    with pytest.raises(ValueError, match=r"input 'cand_0': got float64"):
        backend.run({**good, "cand_0": good["cand_0"].astype(np.float64)})
    with pytest.raises(ValueError, match=r"input 'cand_mask_1': got float32\[1, 3\]"):
        backend.run({**good, "cand_mask_1": good["cand_mask_1"][:, :3]})
    with pytest.raises(ValueError, match=r"unknown inputs \['user'\]"):
        backend.run({**good, "user": np.zeros(1, np.float32)})


@pytest.mark.parametrize("backend", ["tflite", "executorch"])
def test_a_model_that_does_not_match_the_manifest_is_refused(device_bundle, backend):
    manifest = read_manifest(device_bundle)
    wrong = [TensorSpec(name=s.name, shape=(1, 7, *s.shape[2:])) if s.name == "cand_0" else s for s in manifest.inputs]
    with pytest.raises(BackendError, match=r"tensor for 'cand_0' is float32\[1, 10, .*the manifest says float32\[1, 7"):
        load_backend(device_bundle, manifest.model_copy(update={"inputs": wrong}), backend, "xnnpack")


def test_plan_follows_backend_delegate_and_order():
    assert plan("tflite", "gpu") == [("tflite", "gpu")]
    assert plan("auto", "xnnpack") == [("tflite", "xnnpack"), ("executorch", "xnnpack")]
    assert plan("executorch", "auto") == [("executorch", "xnnpack"), ("executorch", "portable")]
    assert plan(order=["executorch:portable", "tflite:cpu"]) == [("executorch", "portable"), ("tflite", "cpu")]
    with pytest.raises(ValueError, match="backend 'onnx'"):
        plan("onnx")
    with pytest.raises(ValueError, match="order entry 'tflite'"):
        plan(order=["tflite"])


def test_threads_must_be_positive(device_bundle):
    with pytest.raises(ValueError, match="threads must be >= 1"):
        load_backend(device_bundle, read_manifest(device_bundle), threads=0)


def test_unknown_delegate_name_says_what_exists(device_bundle):
    with pytest.raises(BackendError, match=r"unknown TFLite delegate 'npu'; use one of \['cpu', 'xnnpack', 'edgetpu'"):
        load_backend(device_bundle, read_manifest(device_bundle), "tflite", "npu")


@pytest.mark.parametrize("delegate", ["cpu", "xnnpack"])
def test_int8_tflite_takes_and_returns_float32(device_bundle, delegate):
    manifest = read_manifest(device_bundle)
    if not any(f.runtime == "tflite" and f.quantization == "int8" for f in manifest.files):
        pytest.skip("this bundle has no int8 TFLite file (export with quantize='int8')")
    fp32 = load_backend(device_bundle, manifest, "tflite", delegate).run(_inputs(manifest))
    int8 = load_backend(device_bundle, manifest, "tflite", delegate, quantization="int8")
    assert int8.path.name != load_backend(device_bundle, manifest, "tflite", delegate).path.name
    scores = int8.run(_inputs(manifest))
    assert scores.dtype == np.float32 and scores.shape == fp32.shape
    real = np.concatenate([scores[0, 0], scores[0, 1, :3]]), np.concatenate([fp32[0, 0], fp32[0, 1, :3]])
    assert np.abs(real[0] - real[1]).max() < 0.3  # dequantized: close to fp32, not raw int8 codes


def test_executorch_threads_size_the_openmp_pool_of_every_calling_thread(device_bundle):
    """The portable program's mm runs MKL on torch's OpenMP pool, whose size is per calling thread: the
    backend sets it to `threads` in each thread that runs the program, not only in the one that loaded it."""
    import threading

    torch = pytest.importorskip("torch")
    manifest = read_manifest(device_bundle)
    backend = load_backend(device_bundle, manifest, "executorch", "portable", threads=1)
    seen = {}

    def call() -> None:
        backend.run(_inputs(manifest))
        seen["threads"] = torch.get_num_threads()

    worker = threading.Thread(target=call)
    worker.start()
    worker.join()
    assert seen["threads"] == 1
