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

Each user's clicked items are gathered once, at start-up, so a request reads a slice of them and makes
n passes over each source's scores, one per candidate taken (argmax), cheaper than sorting them for
the few candidates of a slate.
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
        splits = {name: data.split(name) for name in SPLITS}
        items = [len(data.items(name).ids) for name in self.sources]
        self._clicked = [_PerUser(splits.values(), s, data.num_users, items[s]) for s in range(len(items))]
        self._liked = [_PerUser([splits["train"]], s, data.num_users, items[s]) for s in range(len(items))]
        self._popularity, self._category, self._vocab = [], [], []
        train = splits["train"]
        for s, (spec, count) in enumerate(zip(data.spec.sources, items)):
            cand, label = np.asarray(train["cand_item"][:, s]), np.asarray(train["label"][:, s])
            clicks = np.bincount(cand[(label > 0) & (cand >= 0)], minlength=count).astype(np.float64)
            top = np.log1p(clicks.max()) if count and clicks.max() > 0 else 1.0
            self._popularity.append(np.log1p(clicks) / top)
            categorical = data.items(spec.name).categorical
            category = np.asarray(categorical[:, 0], dtype=np.int64) if categorical.shape[1] else None
            self._category.append(category)
            self._vocab.append(int(category.max(initial=0)) + 1 if category is not None else 0)

    def clicked(self, user: int, train_only: bool = False) -> list[np.ndarray]:
        """Per source, the sorted distinct item rows `user` clicked or has in device history, in the lists of
        every split (or of the train split only)."""
        return [found(user) for found in (self._liked if train_only else self._clicked)]

    def candidates(self, user: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per source, the top `n` item rows for `user` (clicked items excluded) and their scores."""
        out = []
        for s, (seen, liked) in enumerate(zip(self.clicked(user), self.clicked(user, train_only=True))):
            score = (1.0 - self.weight) * self._popularity[s]
            category = self._category[s]
            if category is not None and len(liked) and self.weight > 0:
                share = np.bincount(category[liked], minlength=self._vocab[s]) / len(liked)
                score += self.weight * share[category]
            score[seen] = -np.inf
            out.append(_top(score, n))
        return out


class _PerUser:
    """Per user, the sorted distinct item rows of one source that the user clicked (a candidate with a
    positive label) or has in device history, over the given splits; a user's rows are one slice."""

    def __init__(self, splits, source: int, num_users: int, num_items: int):
        users, items = [], []
        for arrays in splits:
            user = np.asarray(arrays["user"], dtype=np.int64)
            cand, label = np.asarray(arrays["cand_item"][:, source]), np.asarray(arrays["label"][:, source])
            history = np.asarray(arrays["hist_device"][:, source])
            clicked = label > 0
            users += [np.broadcast_to(user[:, None], cand.shape)[clicked], np.repeat(user, history.shape[1])]
            items += [cand[clicked], history.ravel()]
        user, item = np.concatenate(users), np.concatenate(items).astype(np.int64)
        keys = np.unique(user[item >= 0] * max(num_items, 1) + item[item >= 0])  # -1 pads lists and histories
        self._items = keys % max(num_items, 1)
        self._starts = np.searchsorted(keys // max(num_items, 1), np.arange(num_users + 1))

    def __call__(self, user: int) -> np.ndarray:
        return self._items[self._starts[user] : self._starts[user + 1]]


def _top(score: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and scores of the `n` highest finite scores, best first, ties to the lower row (argmax gives the
    first maximum). Overwrites the rows it takes in `score`."""
    rows, values = [], []
    for _ in range(min(n, len(score))):
        row = int(score.argmax())
        if score[row] == -np.inf:
            break
        rows.append(row)
        values.append(score[row])
        score[row] = -np.inf
    return np.array(rows, dtype=np.int64), np.array(values, dtype=np.float64)
