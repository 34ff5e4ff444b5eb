"""Hand-computed values for every metric, the evaluator's masking, and its batching invariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tru.data.dataset import Pairs
from tru.eval.evaluator import evaluate_pairs
from tru.eval.metrics import metrics_from_ranks


def test_metrics_hand_computed() -> None:
    ranked = np.array([[1, 2, 3, 4, 5], [7, 8, 9, 10, 11]])
    gt = [{2, 5, 9}, {7}]
    m = metrics_from_ranks(ranked, gt, [2, 5])
    l2 = math.log2
    # user 0 at K=5: hits at ranks 2 and 5
    r0 = 2 / 3
    n0 = (1 / l2(3) + 1 / l2(6)) / (1 + 1 / l2(3) + 1 / l2(4))
    ap0 = (1 / 2 + 2 / 5) / 3
    assert m["recall@5"] == pytest.approx((r0 + 1.0) / 2)
    assert m["precision@5"] == pytest.approx((2 / 5 + 1 / 5) / 2)
    assert m["hr@5"] == pytest.approx(1.0)
    assert m["ndcg@5"] == pytest.approx((n0 + 1.0) / 2)
    assert m["map@5"] == pytest.approx((ap0 + 1.0) / 2)
    # K=2: user 0 has one hit at rank 2; IDCG over min(3, 2) = 2 positions
    assert m["recall@2"] == pytest.approx((1 / 3 + 1) / 2)
    assert m["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert m["ndcg@2"] == pytest.approx(((1 / l2(3)) / (1 + 1 / l2(3)) + 1) / 2)
    assert m["map@2"] == pytest.approx((0.5 / 2 + 1) / 2)


def test_no_hits_is_zero() -> None:
    m = metrics_from_ranks(np.array([[1, 2, 3]]), [{9}], [3])
    assert all(v == 0.0 for v in m.values())


class FixedScores(torch.nn.Module):
    """A stand-in model with given scores (exercises the evaluator's masking and batching)."""

    def __init__(self, scores: np.ndarray) -> None:
        super().__init__()
        self.s = torch.nn.Parameter(torch.as_tensor(scores, dtype=torch.float32))

    @property
    def device(self) -> torch.device:
        return self.s.device

    def full_sort_predict(self, users: torch.Tensor) -> torch.Tensor:
        return self.s[users]

    from contextlib import nullcontext as _nc

    def eval_cache(self):
        return self._nc()


def test_evaluator_masks_history_and_is_batch_invariant() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 37, 23
    scores = rng.normal(size=(n_users, n_items))
    model = FixedScores(scores)
    hist = Pairs(np.array([0, 0, 1]), np.array([int(np.argmax(scores[0])), 3, 4]))
    tu = rng.integers(0, n_users, 60)
    ti = rng.integers(0, n_items, 60)
    targets = Pairs(tu, ti).subset(~Pairs(tu, ti).isin(hist, n_items))
    a = evaluate_pairs(model, n_users, n_items, targets, hist, [5, 10], batch_size=4)
    b = evaluate_pairs(model, n_users, n_items, targets, hist, [5, 10], batch_size=1000)
    assert a == pytest.approx(b)
    # user 0's best item is masked: it must never be counted even if it were a target
    t0 = Pairs(np.array([0]), np.array([int(np.argmax(scores[0]))]))
    assert (
        evaluate_pairs(model, n_users, n_items, t0, Pairs(np.array([1]), np.array([1])), [1])["hr@1"] == 1.0
    )
    masked = evaluate_pairs(model, n_users, n_items, Pairs(np.array([0]), np.array([3])), hist, [50])
    assert masked["hr@50"] == 0.0  # item 3 is in user 0's history, masked to −inf
