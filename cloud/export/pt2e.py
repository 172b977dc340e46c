"""int8 ExecuTorch programs: PT2E quantization (torchao) with the XNNPACK quantizer, before lowering.

    program = capture(device_model, layout)
    quantized = quantize_program(program, layout, "int8-dynamic")          # int8 weights, float I/O
    quantized = quantize_program(program, layout, "int8", requests)        # int8 activations too
    lowered = lower_executorch(quantized, xnnpack=True)

Weights are int8 per output channel (symmetric). "int8-dynamic" quantizes each linear layer's input at
run time from its own range, so it needs no calibration; "int8" fixes the activation ranges on the
calibration requests (batch-1 {input name: array}, as cloud.export.as_requests makes them). Inputs and
output stay float32 either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from cloud.export.capture import ExportError, sample_args
from shared_schema.layout import TensorLayout

MODES = ("int8", "int8-dynamic")


def quantize_program(
    program: torch.export.ExportedProgram,
    layout: TensorLayout,
    mode: str = "int8-dynamic",
    calibration: Sequence[Mapping[str, np.ndarray]] = (),
) -> torch.export.ExportedProgram:
    """prepare_pt2e -> calibrate ("int8") -> convert_pt2e -> torch.export again, at batch 1."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if mode not in MODES:
        raise ValueError(f"quantization mode {mode!r}: choose from {list(MODES)}")
    if mode == "int8" and not calibration:
        raise ValueError("int8: give at least one calibration request to measure the activation ranges on")
    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=mode == "int8-dynamic")
    prepared = prepare_pt2e(program.module(), XNNPACKQuantizer().set_global(config))
    names = layout.input_names()
    samples = (
        [tuple(torch.from_numpy(np.asarray(r[name], np.float32)) for name in names) for r in calibration]
        if mode == "int8"
        else [sample_args(layout)]
    )  # dynamic: one pass sets the weight ranges
    with torch.no_grad():
        for args in samples:
            prepared(*args)
        converted = convert_pt2e(prepared)
        try:
            return torch.export.export(converted, sample_args(layout), strict=False)
        except Exception as exc:
            raise ExportError(
                f"the {mode} quantized device model could not be re-captured "
                f"({type(exc).__name__}: {str(exc).strip()[:300]})"
            ) from exc
