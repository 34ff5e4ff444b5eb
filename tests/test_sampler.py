from __future__ import annotations

import numpy as np
import pytest

from tru.data.dataset import DataError, Pairs
from tru.train.sampler import NegativeSampler


def test_sampler_never_returns_a_train_positive() -> None:
    rng = np.random.default_rng(1)
    n_users, n_items = 50, 30
    dense = rng.random((n_users, n_items)) < 0.8  # dense: many rejections
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = False
    u, i = np.nonzero(dense)
    pos = Pairs(u, i)
    s = NegativeSampler(pos, n_users, n_items)
    users = np.repeat(u, 20)
    neg = s.sample(users, rng)
    assert not dense[users, neg].any()
    assert neg.min() >= 0 and neg.max() < n_items


def test_sampler_is_uniform_over_non_positives() -> None:
    rng = np.random.default_rng(2)
    pos = Pairs(np.zeros(3, dtype=int), np.array([0, 1, 2]))
    neg = NegativeSampler(pos, 1, 10).sample(np.zeros(70000, dtype=int), rng)
    counts = np.bincount(neg, minlength=10)
    assert counts[:3].sum() == 0
    assert np.allclose(counts[3:] / 70000, 1 / 7, atol=0.01)


def test_sampler_seeded() -> None:
    pos = Pairs(np.arange(5), np.arange(5))
    s = NegativeSampler(pos, 5, 9)
    a = s.sample(np.arange(5).repeat(4), np.random.default_rng(3))
    b = s.sample(np.arange(5).repeat(4), np.random.default_rng(3))
    assert (a == b).all()


def test_user_with_every_item_is_an_error() -> None:
    with pytest.raises(DataError, match="every item"):
        NegativeSampler(Pairs(np.zeros(4, dtype=int), np.arange(4)), 1, 4)
