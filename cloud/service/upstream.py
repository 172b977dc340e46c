"""The demo upstream ranker: per-source candidates from the logs, before the device reranks them.

    ranker = UpstreamRanker(PreparedData("data"), affinity_weight=0.5)
    for rows, scores in ranker.candidates(user=3, n=10):      # one (rows, scores) per source, best first
        ...

Score of item i of source s for user u, both parts in [0, 1]:
    (1 - w) * log(1 + clicks_i) / log(1 + max_j clicks_j)   popularity: clicks on i in the train split
  + w * share of u's clicked items of s with i's category    affinity: first categorical field of s
                                                              (0 for a source without one), train split
Items the user is known to have clicked (history or clicked candidate of any of their lists, any split)
are left out. Ties go to the lower item row, so the order is deterministic.
"""

from __future__ import annotations

import numpy as np

from cloud.data.prepared import SPLITS, PreparedData


class UpstreamRanker:
    """Popularity blended with category affinity, per source, from a prepared DATA folder."""

    def __init__(self, data: PreparedData, affinity_weight: float = 0.5):
        if not 0.0 <= affinity_weight <= 1.0:
            raise ValueError(f"affinity_weight must lie in [0, 1], got {affinity_weight}")
        self.weight = affinity_weight
        self.sources = data.spec.source_names
        self._splits = {name: data.split(name) for name in SPLITS}
        self._by_user = {name: _group_rows(arrays["user"], data.num_users) for name, arrays in self._splits.items()}
        self._popularity, self._category, self._vocab = [], [], []
        train = self._splits["train"]
        for s, spec in enumerate(data.spec.sources):
            count = len(data.items(spec.name).ids)
            cand, label = np.asarray(train["cand_item"][:, s]), np.asarray(train["label"][:, s])
            clicks = np.bincount(cand[(label > 0) & (cand >= 0)], minlength=count).astype(np.float64)
            top = np.log1p(clicks.max()) if count and clicks.max() > 0 else 1.0
            self._popularity.append(np.log1p(clicks) / top)
            categorical = data.items(spec.name).categorical
            category = np.asarray(categorical[:, 0], dtype=np.int64) if categorical.shape[1] else None
            self._category.append(category)
            self._vocab.append(int(category.max(initial=0)) + 1 if category is not None else 0)

    def clicked(self, user: int, splits: tuple[str, ...] = SPLITS) -> list[np.ndarray]:
        """Per source, the sorted distinct item rows `user` clicked in the lists of `splits`."""
        out = []
        for s in range(len(self.sources)):
            parts = []
            for name in splits:
                arrays, rows = self._splits[name], self._by_user[name](user)
                if len(rows):
                    cand, label = np.asarray(arrays["cand_item"][rows, s]), np.asarray(arrays["label"][rows, s])
                    parts += [cand[label > 0], np.asarray(arrays["hist_device"][rows, s]).ravel()]
            items = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            out.append(np.unique(items[items >= 0]))
        return out

    def candidates(self, user: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per source, the top `n` item rows for `user` (clicked items excluded) and their scores."""
        out = []
        for s, (seen, liked) in enumerate(zip(self.clicked(user), self.clicked(user, ("train",)))):
            score = (1.0 - self.weight) * self._popularity[s]
            category = self._category[s]
            if category is not None and len(liked) and self.weight > 0:
                share = np.bincount(category[liked], minlength=self._vocab[s]) / len(liked)
                score = score + self.weight * share[category]
            score = score.copy()
            score[seen] = -np.inf
            order = np.lexsort((np.arange(len(score)), -score))[:n]
            order = order[np.isfinite(score[order])]
            out.append((order, score[order]))
        return out


def _group_rows(user: np.ndarray, num_users: int):
    """`rows(u)`: the row indices of user u in a split, in time order."""
    user = np.asarray(user)
    order = np.argsort(user, kind="stable")
    bounds = np.searchsorted(user[order], np.arange(num_users + 1))

    def rows(u: int) -> np.ndarray:
        return order[bounds[u] : bounds[u + 1]]

    return rows
