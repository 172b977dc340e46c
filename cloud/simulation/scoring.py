"""The run's device model as a batched scorer for the simulation (torch eager, no gradients).

    scorer = torch_scorer(run.model)
    scores = scorer(model_inputs(world, j, view.items))     # float32 [B, m, n]

Both paths use this same scorer; they differ only in the history they pass and in their timing.
The exported bundle computes the same function (checked in the device-latency replay).
"""

from __future__ import annotations

import numpy as np


def torch_scorer(model, batch: int = 1024):
    """A Scorer running `model.device_model` in eval mode on the layout inputs, `batch` rows at a time."""
    import torch

    names = model.layout.input_names()
    device_model = model.device_model.eval()

    @torch.no_grad()
    def score(inputs: dict[str, np.ndarray]) -> np.ndarray:
        rows = len(inputs[names[0]])
        parts = []
        for start in range(0, rows, batch):
            tensors = [
                torch.from_numpy(np.ascontiguousarray(inputs[name][start : start + batch], np.float32))
                for name in names
            ]
            parts.append(device_model(*tensors).numpy())
        return np.concatenate(parts)

    return score
