"""Vectorised BPR negative sampling: one uniform negative per positive, never a train positive of that
user."""

from __future__ import annotations

import numpy as np

from tru.data.dataset import DataError, Pairs


class NegativeSampler:
    """Uniform negatives by rejection, vectorised over the whole batch.

    Positives are kept as a sorted array of keys ``u·n_items + i``; membership of a candidate
    (u, j) is a binary search (``np.searchsorted``). Rejected candidates are redrawn together until none
    remains; the expected number of rounds is 1/(1 − max density)."""

    def __init__(
        self, positives: Pairs, n_users: int, n_items: int, extra_excluded: Pairs | None = None
    ) -> None:
        self.n_users = n_users
        self.n_items = n_items
        excl = positives if extra_excluded is None else positives.concat(extra_excluded)
        self.keys = np.unique(excl.keys(n_items))
        deg = np.bincount(self.keys // n_items, minlength=n_users)
        full = np.flatnonzero(deg >= n_items)
        if full.size:
            raise DataError(f"users {full[:5].tolist()} interacted with every item: no negative exists")

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        k = users.astype(np.int64) * np.int64(self.n_items) + items
        idx = np.searchsorted(self.keys, k)
        idx[idx >= len(self.keys)] = 0
        return self.keys[idx] == k if len(self.keys) else np.zeros(len(k), dtype=bool)

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        neg = rng.integers(0, self.n_items, size=len(users), dtype=np.int64)
        bad = np.flatnonzero(self.is_positive(users, neg))
        while bad.size:
            neg[bad] = rng.integers(0, self.n_items, size=bad.size, dtype=np.int64)
            bad = bad[self.is_positive(users[bad], neg[bad])]
        return neg
