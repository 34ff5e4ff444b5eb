"""Rank counts against their definition, on a ranker with many tied scores (the most-popular ranker:
s_ui = train count of i), and the row sorts against torch.sort."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tru.data.dataset import Pairs
from tru.eval.rank import argsort_rows_descending, rank_counts, sort_rows
from tru.models.pop import MostPopular


def _brute_force(scores: np.ndarray, pairs: Pairs, history: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """above = #{j ∈ C_u : s_uj > s_ui}, C_u = items \\ (history_u ∪ pairs_u): each pair ranked alone."""
    above, cand = np.zeros(len(pairs), np.int64), np.zeros(len(pairs), np.int64)
    for k, (u, i) in enumerate(zip(pairs.users, pairs.items, strict=True)):
        masked = np.zeros(scores.shape[1], bool)
        masked[history.items[history.users == u]] = True
        masked[pairs.items[pairs.users == u]] = True
        above[k] = int((scores[u][~masked] > scores[u, i]).sum())
        cand[k] = int((~masked).sum())
    return above, cand


@pytest.mark.parametrize("batch_size", [None, 3])
def test_rank_counts_match_the_definition_with_ties(tiny, batch_size) -> None:
    model = MostPopular(tiny)
    scores = model.full_sort_predict(torch.arange(tiny.n_users)).numpy()
    assert len(np.unique(scores[0])) < tiny.n_items / 2  # ties everywhere: a tie counts in the pair's favour
    for pairs, history in ((tiny.test, tiny.train), (tiny.valid, tiny.train), (tiny.train, tiny.valid)):
        above, cand = rank_counts(model, pairs, history, tiny.n_users, tiny.n_items, batch_size)
        want_above, want_cand = _brute_force(scores, pairs, history)
        np.testing.assert_array_equal(above, want_above)
        np.testing.assert_array_equal(cand, want_cand)


def test_a_nan_score_is_never_above_a_pair_and_a_nan_pair_has_nothing_above(tiny) -> None:
    """A diverged model's NaN scores rank as the comparison ranks them (NaN > x is false): the binary
    search over sorted rows used to skip real items past a NaN and miscount."""
    model = MostPopular(tiny)
    model.counts[3] = float("nan")
    model.counts[7] = float("inf")
    scores = model.full_sort_predict(torch.arange(tiny.n_users)).numpy()
    for pairs, history in ((tiny.test, tiny.train), (tiny.train, tiny.valid)):
        above, _ = rank_counts(model, pairs, history, tiny.n_users, tiny.n_items, 3)
        want_above, _ = _brute_force(scores, pairs, history)
        np.testing.assert_array_equal(above, want_above)
        assert (above[pairs.items == 3] == 0).all()


def test_row_sorts_agree_with_torch_sort() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 7, (40, 300), generator=gen).float()  # heavy ties
    x[:, :13] = -torch.inf
    x[5, 100] = torch.inf
    order = argsort_rows_descending(x)
    assert order.dtype == torch.long and order.shape == x.shape
    assert torch.equal(x.gather(1, order), torch.sort(x, dim=1, descending=True).values)
    assert torch.equal(sort_rows(x), torch.sort(x, dim=1).values)
    # a permutation of each row's columns
    assert torch.equal(order.sort(dim=1).values, torch.arange(300).expand(40, 300))


def test_items_at_ranks_is_the_argsort_at_those_ranks() -> None:
    """The column at a pair's target rank, found by sorting values only, is the argsort's column wherever the
    row's scores are distinct; masked (−inf) and NaN columns are never named while a candidate remains; the
    result does not depend on how many rows are compared at once."""
    from tru.eval.rank import items_at_ranks

    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(7, 50, generator=gen)
    scores[2, :45] = -torch.inf  # a row with 5 candidates
    scores[4, 10] = torch.nan
    rows = torch.tensor([0, 0, 0, 2, 2, 4, 4, 6, 3])
    ranks = torch.tensor([0, 17, 49, 0, 4, 0, 48, 25, 10])
    order = argsort_rows_descending(scores)
    want = order[rows, ranks]
    assert torch.equal(items_at_ranks(scores, rows, ranks), want)
    assert torch.equal(items_at_ranks(scores, rows, ranks, block=60), want)  # one row per block
    assert set(items_at_ranks(scores, torch.tensor([2] * 5), torch.arange(5)).tolist()) == set(range(45, 50))
    assert int(items_at_ranks(scores, torch.tensor([4]), torch.tensor([49]))) == 10  # NaN ranks last
    # a tie names one of the tied columns
    tied = torch.tensor([[1.0, 3.0, 2.0, 3.0]])
    assert int(items_at_ranks(tied, torch.tensor([0]), torch.tensor([0]))) in (1, 3)
    assert int(items_at_ranks(tied, torch.tensor([0]), torch.tensor([2]))) == 2
    for bad in (-1, 4):  # a rank outside the row is an error, not another item
        with pytest.raises(ValueError, match=r"ranks must lie in \[0, 4\)"):
            items_at_ranks(tied, torch.tensor([0]), torch.tensor([bad]))
