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
        self,
        positives: Pairs,
        n_users: int,
        n_items: int,
        extra_excluded: Pairs | None = None,
        excluded_items: np.ndarray | None = None,
    ) -> None:
        self.n_users = n_users
        self.n_items = n_items
        excl = positives if extra_excluded is None else positives.concat(extra_excluded)
        self.keys = np.unique(excl.keys(n_items))
        self.item_excluded = np.zeros(n_items, dtype=bool)
        if excluded_items is not None and len(excluded_items):
            self.item_excluded[np.asarray(excluded_items, dtype=np.int64)] = True
        n_allowed = n_items - int(self.item_excluded.sum())
        allowed_keys = self.keys[~self.item_excluded[self.keys % n_items]]
        deg = np.bincount(allowed_keys // n_items, minlength=n_users)
        full = np.flatnonzero(deg >= n_allowed)
        if full.size:
            raise DataError(f"users {full[:5].tolist()} interacted with every item: no negative exists")

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        k = users.astype(np.int64) * np.int64(self.n_items) + items
        idx = np.searchsorted(self.keys, k)
        idx[idx >= len(self.keys)] = 0
        hit = self.keys[idx] == k if len(self.keys) else np.zeros(len(k), dtype=bool)
        return hit | self.item_excluded[items]

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        neg = rng.integers(0, self.n_items, size=len(users), dtype=np.int64)
        bad = np.flatnonzero(self.is_positive(users, neg))
        while bad.size:
            neg[bad] = rng.integers(0, self.n_items, size=bad.size, dtype=np.int64)
            bad = bad[self.is_positive(users[bad], neg[bad])]
        return neg
