"""Score every list of a split and compute the metrics of cloud.evaluation.metrics.

    scores = predict(model, batcher)                     # [L, m, n] logits, every list
    evaluate_model(model, batcher, target_shares, K=5)   # {"auc": ..., "ndcg@5": ..., ...}
    evaluate_scores(scores, batcher, target_shares, K=5) # the same, from scores computed elsewhere
    evaluate_references(data, "test", target_shares, K=5) # {"random": {...}, "logged": {...}, "popularity": {...}}

The reference orders show whether a model learned anything: `random` (a seeded random order), `logged`
(the upstream order: logged positions, unknown ones after known ones in stored order) and `popularity`
(items by their clicks in the training split). A model at chance scores like `random`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cloud.data.batches import ListBatcher
from cloud.evaluation.metrics import evaluate_lists

REFERENCES = ("random", "logged", "popularity")


@torch.no_grad()
def predict(model: torch.nn.Module, batcher: ListBatcher, batch_size: int = 2048) -> np.ndarray:
    """Scores of every list of the batcher's split, in order (no list is dropped)."""
    was_training = model.training
    model.eval()
    parts = [model(batch).cpu().numpy() for batch in batcher.batches(batch_size)]
    model.train(was_training)
    return np.concatenate(parts, axis=0)


def evaluate_model(
    model: torch.nn.Module, batcher: ListBatcher, target_shares: Sequence[float], K: int = 5, batch_size: int = 2048
) -> dict[str, float]:
    return evaluate_scores(predict(model, batcher, batch_size), batcher, target_shares, K)


def evaluate_scores(
    scores: np.ndarray, batcher: ListBatcher, target_shares: Sequence[float], K: int = 5
) -> dict[str, float]:
    """Metrics of scores [L, m, n] given for every list of the batcher's split, in order."""
    return evaluate_lists(scores, np.asarray(batcher.label), _mask(batcher), np.asarray(target_shares), K)


def evaluate_oracle(
    batcher: ListBatcher, click_prob: np.ndarray, target_shares: Sequence[float], K: int = 5
) -> dict[str, float]:
    """The ceiling: rank by the true click probabilities (synthetic data only)."""
    scores = np.nan_to_num(np.asarray(click_prob, dtype=np.float64), nan=0.0)
    return evaluate_scores(scores, batcher, target_shares, K)


def reference_scores(split: dict, train: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Scores [L, m, n] of each reference order for the lists of `split` (arrays of PreparedData.split)."""
    cand = np.asarray(split["cand_item"])
    L, m, n = cand.shape
    position = np.asarray(split["position"]).astype(np.float64)
    slot = np.broadcast_to(np.arange(n, dtype=np.float64), cand.shape)
    logged = -np.where(position >= 0, position, m * n + slot) - np.arange(m)[None, :, None] / (m + 1)
    clicks = _train_clicks(train, [int(cand[:, s].max(initial=0)) + 1 for s in range(m)])
    popularity = np.stack([clicks[s][np.clip(cand[:, s], 0, None)] for s in range(m)], axis=1).astype(np.float64)
    random = np.random.default_rng(seed).random(cand.shape)
    return {"random": random, "logged": logged, "popularity": popularity + random * 1e-3}  # ties: at random


def evaluate_references(data, split: str, target_shares: Sequence[float], K: int = 5) -> dict[str, dict[str, float]]:
    """Metrics of every reference order on `split` of a cloud.data.prepared.PreparedData."""
    arrays = data.split(split)
    label = np.asarray(arrays["label"])
    mask = (np.asarray(arrays["cand_item"]) >= 0).astype(np.float32)
    return {
        name: evaluate_lists(scores, label, mask, np.asarray(target_shares), K)
        for name, scores in reference_scores(arrays, data.split("train")).items()
    }


def not_beaten(metrics: dict[str, float], references: dict[str, dict[str, float]], K: int) -> list[str]:
    """'auc 0.50 <= random 0.51'-style notes for the ranking metrics the model does not beat."""
    notes = []
    for key in ("auc", f"ndcg@{K}"):
        name, best = max(((name, ref[key]) for name, ref in references.items()), key=lambda item: item[1])
        if metrics[key] <= best:
            notes.append(f"{key} {metrics[key]:.4f} <= {name} order {best:.4f}")
    return notes


def _train_clicks(train: dict, sizes: list[int]) -> list[np.ndarray]:
    """Clicks per item of each source in the training lists (at least sizes[s] entries)."""
    cand, label = np.asarray(train["cand_item"]), np.asarray(train["label"])
    clicks = []
    for s, size in enumerate(sizes):
        items, hits = cand[:, s].ravel(), label[:, s].ravel()
        real = items >= 0
        counts = np.zeros(max(size, int(items.max(initial=0)) + 1), dtype=np.float64)
        np.add.at(counts, items[real], hits[real])
        clicks.append(counts)
    return clicks


def _mask(batcher: ListBatcher) -> np.ndarray:
    return (np.asarray(batcher.cand_item) >= 0).astype(np.float32)
