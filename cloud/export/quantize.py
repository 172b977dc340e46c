"""int8 variants of the LiteRT model, made with ai-edge-quantizer from the float .tflite.

    int8 = quantize_tflite(tflite_bytes, "int8", requests)      # full int8 (weights + activations): NPUs
    dyn = quantize_tflite(tflite_bytes, "int8-dynamic")         # int8 weights, float activations: CPUs
    requests = as_requests([model.device_inputs(batch)], layout)   # real inputs, or:
    requests = encoder_calibration(model, count=64)                # vectors from the real embedding tables

"int8" (recipe static_wi8_ai8) has int8 inputs and output: the device's TFLite backend
(device_runtime/backends/tflite.py, which export parity runs through too) (de)quantizes them with each
tensor's scale and zero point, so callers still feed and get float32.
Two departures from the stock recipe, each needed for a trained DIR to keep its test AUC in int8
(benchmarks/int8_quality.py measures it; BENCHMARKS.md has the figures):
- activation ranges are the min and max over all calibration requests (ai-edge-quantizer's default, a
  moving average over batch-1 requests, fits a typical request and clips the rest);
- constant operands of BATCH_MATMUL (DIR's grouped GRU weights) get one scale per tensor: per-channel
  ones came out of LiteRT 2.3 as an all-zero product.
The requests are used as they are, padding included: the ranges must cover the padded attention keys'
offset (cloud.models.dir.MASKED = 30), or int8 clips it and padded keys leak into the attention. DIR
keeps its padding constants small for this (padded slots score 0, not a large negative constant that
would stretch the output range).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from shared_schema.layout import TensorLayout

SIGNATURE = "serving_default"
MODES = {"int8": "static_wi8_ai8", "int8-dynamic": "dynamic_wi8_afp32"}


def quantize_tflite(tflite: bytes, mode: str = "int8", calibration: Sequence[Mapping[str, np.ndarray]] = ()) -> bytes:
    """Quantize a float .tflite; mode "int8" needs batch-1 calibration requests {input name: array}."""
    from ai_edge_quantizer import qtyping, quantizer, recipe

    if mode not in MODES:
        raise ValueError(f"quantization mode {mode!r}: choose from {sorted(MODES)}")
    q = quantizer.Quantizer(bytearray(tflite), getattr(recipe, MODES[mode])())
    ranges = None
    if q.need_calibration:
        if not calibration:
            raise ValueError(f"{mode}: give at least one calibration request to measure the int8 ranges on")
        q.add_static_config(".*", "BATCH_MATMUL", 8, 8, weight_granularity=qtyping.QuantGranularity.TENSORWISE)
        ranges = _min_max_ranges(tflite, q.get_quantization_recipe(), calibration)
    return bytes(q.quantize(ranges, enable_progress_report=False).quantized_model)


def _min_max_ranges(tflite: bytes, quant_recipe, calibration: Sequence[Mapping[str, np.ndarray]]) -> dict:
    """{tensor name: {"min", "max"}} over all requests (not the library's moving average)."""
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(quant_recipe)
    calib = calibrator.Calibrator(tflite, num_threads=1, qsv_update_func=qsv_utils.min_max_update)
    calib.calibrate({SIGNATURE: [dict(r) for r in calibration]}, manager)
    return calib.get_model_qsvs()


def as_requests(samples: Iterable, layout: TensorLayout) -> list[dict[str, np.ndarray]]:
    """Split inputs into batch-1 requests; each sample is {name: array [B, ...]} or tensors in layout order."""
    names = layout.input_names()
    requests = []
    for i, sample in enumerate(samples):
        arrays = dict(sample) if isinstance(sample, Mapping) else dict(zip(names, sample))
        missing = [n for n in names if n not in arrays]
        if missing:
            raise ValueError(f"calibration sample {i}: missing inputs {missing} (expected {names})")
        arrays = {n: np.asarray(_numpy(arrays[n]), np.float32) for n in names}
        for b in range(arrays[names[0]].shape[0]):
            requests.append({n: np.array(arrays[n][b : b + 1]) for n in names})
    return requests


def encoder_calibration(model, count: int = 64, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Requests whose vectors come from the model's item encoder on random item ids (dense parts N(0, 1)).

    Use when no real lists are at hand: the embedding ranges are real, the list composition is random.
    """
    import torch

    from cloud.export.parity import random_inputs

    layout, encoder = model.layout, model.item_encoder
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    requests = []
    for _ in range(count):
        request = random_inputs(layout, rng)
        for s in range(layout.m):
            tables, dense_dim = encoder.tables[s], encoder.dense_dims[s]
            for part, length in (("cand", layout.n), ("hist", layout.t)):
                ids = [torch.randint(0, table.num_embeddings, (1, length), generator=generator) for table in tables]
                cat = torch.stack(ids, -1) if ids else torch.zeros(1, length, 0, dtype=torch.long)
                dense = torch.randn(1, length, dense_dim, generator=generator)
                with torch.no_grad():
                    vectors = encoder(s, cat, dense).numpy()
                request[f"{part}_{s}"] = vectors * request[f"{part}_mask_{s}"][..., None]
        requests.append(request)
    return requests


def _numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
