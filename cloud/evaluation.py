"""Score every list of a split and compute the metrics of cloud.metrics.

    scores = predict(model, batcher)                     # [L, m, n] logits, every list
    evaluate_model(model, batcher, target_shares, K=5)   # {"auc": ..., "ndcg@5": ..., ...}
    evaluate_scores(scores, batcher, target_shares, K=5) # the same, from scores computed elsewhere
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cloud.batches import ListBatcher
from cloud.metrics import evaluate_lists


@torch.no_grad()
def predict(model: torch.nn.Module, batcher: ListBatcher, batch_size: int = 2048) -> np.ndarray:
    """Scores of every list of the batcher's split, in order (no list is dropped)."""
    was_training = model.training
    model.eval()
    parts = [model(batch).cpu().numpy() for batch in batcher.batches(batch_size)]
    model.train(was_training)
    return np.concatenate(parts, axis=0)


def evaluate_model(model: torch.nn.Module, batcher: ListBatcher, target_shares: Sequence[float],
                   K: int = 5, batch_size: int = 2048) -> dict[str, float]:
    return evaluate_scores(predict(model, batcher, batch_size), batcher, target_shares, K)


def evaluate_scores(scores: np.ndarray, batcher: ListBatcher, target_shares: Sequence[float],
                    K: int = 5) -> dict[str, float]:
    """Metrics of scores [L, m, n] given for every list of the batcher's split, in order."""
    return evaluate_lists(scores, np.asarray(batcher.label), _mask(batcher), np.asarray(target_shares), K)


def evaluate_oracle(batcher: ListBatcher, click_prob: np.ndarray, target_shares: Sequence[float],
                    K: int = 5) -> dict[str, float]:
    """The ceiling: rank by the true click probabilities (synthetic data only)."""
    scores = np.nan_to_num(np.asarray(click_prob, dtype=np.float64), nan=0.0)
    return evaluate_scores(scores, batcher, target_shares, K)


def _mask(batcher: ListBatcher) -> np.ndarray:
    return (np.asarray(batcher.cand_item) >= 0).astype(np.float32)
