"""A training run folder: its config, its best model, its metrics.

RUN/config.json      TrainConfig + data path + dataset spec (enough to rebuild the model)
RUN/model.pt         state_dict of the checkpoint selected on the validation split
RUN/checkpoint.pt    last epoch's model + optimizer state, for --resume
RUN/epochs.csv       per-epoch loss and validation metrics
RUN/metrics.json     validation and test metrics of model.pt

run = load_run("out/run")      # -> LoadedRun(model in eval mode, spec, config, metrics, ...)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shared_schema import DatasetSpec
from shared_schema.files import atomic_write_bytes

CONFIG = "config.json"
MODEL = "model.pt"
CHECKPOINT = "checkpoint.pt"
EPOCHS = "epochs.csv"
METRICS = "metrics.json"


@dataclass
class LoadedRun:
    model: Any
    spec: DatasetSpec
    config: dict
    metrics: dict
    run_dir: Path
    embedding_version: str = field(default="")


def weights_digest(module: torch.nn.Module) -> str:
    """A short content hash of a module's weights (names and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def embedding_version(model: torch.nn.Module) -> str:
    """The item encoder's weights digest: devices compare it with the version of their cached vectors."""
    return weights_digest(model.get_submodule("item_encoder"))


def atomic_write_json(path: Path, payload: dict) -> None:
    atomic_write_bytes(path, json.dumps(payload, indent=2, sort_keys=True).encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_run(run_dir: str | Path) -> LoadedRun:
    """Rebuild the selected model of a finished run (eval mode, CPU)."""
    from cloud.models import build_model

    run_dir = Path(run_dir)
    config_path, model_path = run_dir / CONFIG, run_dir / MODEL
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path} not found: is {run_dir} a run folder written by `dir-cloud train`?")
    if not model_path.exists():
        raise FileNotFoundError(
            f"{model_path} not found: the run has no validated checkpoint yet; finish it with "
            f"`dir-cloud train ... --out {run_dir} --resume`"
        )
    config = json.loads(config_path.read_text())
    spec = DatasetSpec.model_validate(config["spec"])
    model = build_model(config["model"], spec, **config.get("model_options", {}))
    model.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
    model.eval()
    metrics_path = run_dir / METRICS
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return LoadedRun(model, spec, config, metrics, run_dir, embedding_version(model))
