"""Convert a device model to a LiteRT flatbuffer (.tflite) with litert-torch, no TensorFlow, batch 1.

    data = convert_tflite(device_model, layout)
    data = convert_tflite(model.export_module(), layout, outputs=("scores", "matching", "encodings"))
    Path("model.tflite").write_bytes(data)

The file's signature `serving_default` takes the layout's input names (cand_0, cand_mask_0, ...) and
returns `outputs` by name (`scores` alone by default); input tensors are also in layout order, so
index-based feeding works too. LiteRT lists a signature's outputs by name, not in the order the model
returns them: read them by name.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import torch
from torch import nn

from cloud.export.capture import sample_args
from shared_schema.layout import TensorLayout


class NamedInputs(nn.Module):
    """Calls `device_model` with keyword inputs named as in the layout and returns {output name: tensor}."""

    def __init__(self, device_model: nn.Module, names: list[str], outputs: Sequence[str] = ("scores",)):
        super().__init__()
        self.device_model = device_model
        self.names = names
        self.outputs = tuple(outputs)

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        result = self.device_model(*(inputs[name] for name in self.names))
        return dict(zip(self.outputs, result if isinstance(result, tuple) else (result,), strict=True))


def convert_tflite(device_model: nn.Module, layout: TensorLayout, outputs: Sequence[str] = ("scores",)) -> bytes:
    """litert_torch.convert at batch 1 with named inputs and outputs; returns the flatbuffer bytes."""
    import litert_torch

    names = layout.input_names()
    kwargs = dict(zip(names, sample_args(layout)))
    with _quiet_litert(), torch.no_grad():
        model = litert_torch.convert(NamedInputs(device_model, names, outputs).eval(), sample_kwargs=kwargs)
        return bytes(model.model_content())


@contextlib.contextmanager
def _quiet_litert():
    """Hide litert-torch's per-stage progress lines (the bundle writer prints its own)."""
    old = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = old
