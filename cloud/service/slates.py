"""Candidate slates (cloud -> device) built from prepared lists with the cloud's ItemEncoder.

    vectors = encode_items(model, data, "video", np.array([3, 7]))      # float32 [2, d_video]
    slate, history = slate_for_list(model, data, "test", row=0, embedding_version="ab12...")

`history` holds the list's device-view behaviours as BehaviorEvents with vectors, so a device store
can be seeded with exactly the history the model saw offline.
"""

from __future__ import annotations

import numpy as np
import torch

from cloud.data.prepared import PreparedData
from cloud.models.base import RerankModel
from shared_schema import BehaviorEvent, CandidateItem, CandidateSlate, SourceCandidates


@torch.no_grad()
def encode_items(model: RerankModel, data: PreparedData, source: str, rows: np.ndarray) -> np.ndarray:
    """Dense vectors of items (row indices of that source's item table) from the model's ItemEncoder."""
    s = data.spec.source_names.index(source)
    table = data.items(source)
    rows = np.asarray(rows, dtype=np.int64)
    cat = torch.as_tensor(np.asarray(table.categorical[rows], dtype=np.int64))
    dense = torch.as_tensor(np.asarray(table.dense[rows], dtype=np.float32))
    return model.item_encoder(s, cat, dense).numpy().astype(np.float32)


def slate_for_list(
    model: RerankModel, data: PreparedData, split: str, row: int, embedding_version: str
) -> tuple[CandidateSlate, list[BehaviorEvent]]:
    """The slate of one prepared list and its device-view history as events."""
    arrays = data.split(split)
    if not 0 <= row < len(arrays["user"]):
        raise ValueError(f"row {row} is outside split {split!r} (0..{len(arrays['user']) - 1})")
    user = str(data.users()[int(arrays["user"][row])])
    list_ts = float(arrays["ts"][row])
    sources, history = [], []
    for s, name in enumerate(data.spec.source_names):
        ids = data.items(name).ids
        cand = np.asarray(arrays["cand_item"][row, s])
        cand = cand[cand >= 0]
        vectors = encode_items(model, data, name, cand) if len(cand) else np.zeros((0, 0), np.float32)
        sources.append(
            SourceCandidates(
                source=name,
                items=[CandidateItem(item_id=str(ids[i]), vector=v.tolist()) for i, v in zip(cand, vectors)],
            )
        )
        hist = np.asarray(arrays["hist_device"][row, s])
        ages = np.asarray(arrays["hist_device_age"][row, s])
        real = hist >= 0
        if real.any():
            vectors = encode_items(model, data, name, hist[real])
            for i, age, v in zip(hist[real], ages[real], vectors):
                history.append(
                    BehaviorEvent(
                        item_id=str(ids[i]), source=name, action="click", ts=list_ts - float(age), vector=v.tolist()
                    )
                )
    history.sort(key=lambda e: e.ts)
    slate = CandidateSlate(
        user_id=user, request_id=f"{split}-{row}", embedding_version=embedding_version, sources=sources
    )
    return slate, history
