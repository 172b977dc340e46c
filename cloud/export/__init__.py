"""Export the device model (the embedding split) to ExecuTorch and LiteRT, and write model bundles.

    from cloud.export import write_bundle, summary, open_runner
    manifest = write_bundle(model, spec, "out/bundle", quantize="int8", metrics=run.metrics)
    print(summary(manifest))
    run = open_runner("out/bundle/model_int8.tflite", manifest.layout())
    scores = run(manifest.layout().assemble(candidates, histories))   # [1, m, n]

Building blocks over (device_model, layout), independent of the model: `capture` (torch.export with a
clear error for parts that cannot be a fixed-shape graph), `lower_executorch`, `convert_tflite`,
`quantize_tflite`, `parity_cases` / `max_abs_diff`.
"""

from cloud.export.bundle import summary, write_bundle
from cloud.export.capture import ExportError, capture
from cloud.export.executorch import lower_executorch
from cloud.export.parity import eager_runner, max_abs_diff, open_runner, parity_cases
from cloud.export.quantize import as_requests, encoder_calibration, quantize_tflite
from cloud.export.tflite import convert_tflite

__all__ = [
    "ExportError",
    "as_requests",
    "capture",
    "convert_tflite",
    "eager_runner",
    "encoder_calibration",
    "lower_executorch",
    "max_abs_diff",
    "open_runner",
    "parity_cases",
    "quantize_tflite",
    "summary",
    "write_bundle",
]
