"""Rank percentiles of held-out or deleted pairs and distances between their distributions.

The rank percentile of a pair (u, i) in u's full ranking, each pair ranked alone among the items u never
interacted with (``history`` masked, and u's other pairs of the same set masked):

    p_ui = #{ j ∈ C_u : s_uj > s_ui } / |C_u|,     C_u = items \\ (history_u ∪ pairs_u)

0 is the top of the ranking, 1 the bottom; ties count in the pair's favour (as per-pair HR@K does:
hit@K ⟺ p_ui · |C_u| < K). Two sets of percentiles (the deleted pairs under a candidate model, and a
reference: the same pairs under retrain, or the retrain-free reference of tru-method.md §7a) are compared
by

* the Wasserstein-1 distance W₁(P, Q) = ∫ |F_P(x) − F_Q(x)| dx (the mean absolute quantile difference),
* the two-sample Kolmogorov–Smirnov statistic KS(P, Q) = sup_x |F_P(x) − F_Q(x)|,
* the signed mean shift Δ = mean(Q) − mean(P) for candidate P and reference Q: Δ > 0 when the candidate
  ranks the pairs higher than the reference (under-forgetting), Δ < 0 lower (over-forgetting).

Everything is batched over users (one B × n_items score block at a time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tru.data.dataset import Pairs
from tru.eval.evaluator import iter_ranked
from tru.models.base import Recommender


def argsort_rows_descending(scores: Tensor) -> Tensor:
    """Each row's column indices from the highest score to the lowest (ties in no particular order;
    -inf last). On CPU this is NumPy's SIMD sort (x86-simd-sort, NumPy ≥ 2), 4× torch.sort at the shapes
    the unlearning step sorts (600 × 1682: 9.4 ms vs 41.4 ms at one thread, ``benchmarks/bench_sort.py``);
    other devices use torch.sort."""
    scores = _sortable(scores)
    if scores.device.type != "cpu":
        return torch.sort(scores, dim=1, descending=True).indices
    return torch.from_numpy(np.argsort(-scores.numpy(), axis=1))


def sort_rows(scores: Tensor) -> Tensor:
    """Each row sorted ascending (the values); NumPy's SIMD sort on CPU as :func:`argsort_rows_descending`."""
    scores = _sortable(scores)
    if scores.device.type != "cpu":
        return torch.sort(scores, dim=1).values
    return torch.from_numpy(np.sort(scores.numpy(), axis=1))


def items_at_ranks(scores: Tensor, rows: Tensor, ranks: Tensor, block: int = 1 << 22) -> Tensor:
    """The column at 0-based descending rank ``ranks_k`` of row ``rows_k`` of ``scores``, for every k:
    the r-th highest value v_k = sort(row)[n − 1 − r] (:func:`sort_rows`, the values only: NumPy's SIMD sort
    is about 6× its argsort on CPU at the unlearning step's shapes), then the first column of the row
    holding v_k. The same item as ``argsort_rows_descending(scores)[rows, ranks]`` wherever that row's
    scores are distinct (a tie may name another of the tied items: a ranking orders ties arbitrarily).
    NaN counts as −inf. Rows are compared ``block`` elements at a time (the gathered rows are never
    materialised at once). A rank outside [0, n) is a ValueError."""
    n = scores.shape[1]
    if len(ranks) and (int(ranks.min()) < 0 or int(ranks.max()) >= n):
        lo, hi = int(ranks.min()), int(ranks.max())
        raise ValueError(f"items_at_ranks: ranks must lie in [0, {n}), got {lo}..{hi}")
    values = _sortable(scores)
    ascending = sort_rows(values).to(values.device)
    rows = rows.to(values.device).long()
    threshold = ascending[rows, values.shape[1] - 1 - ranks.to(values.device).long()]
    out = torch.empty(len(rows), dtype=torch.long, device=values.device)
    step = max(1, block // max(values.shape[1], 1))
    for a in range(0, len(rows), step):
        sl = slice(a, a + step)
        out[sl] = (values[rows[sl]] == threshold[sl, None]).to(torch.uint8).argmax(1)
    return out


def counts_above(scores: Tensor, rows: np.ndarray, values: Tensor) -> Tensor:
    """#{j : scores[rows_k, j] > values_k} for every k (``rows`` sorted ascending): each row sorted once
    (:func:`sort_rows`) and each value found in it by binary search, the values of a row padded into a
    (B × m) matrix. NaN scores count as −inf (never above) and a NaN value as +inf (nothing above it), as a
    comparison counts them."""
    dev = scores.device
    slot = np.arange(len(rows)) - np.searchsorted(rows, rows, "left")
    rows_t, slot_t = torch.as_tensor(rows, device=dev), torch.as_tensor(slot, device=dev)
    ranked = sort_rows(scores).to(dev)
    width = int(slot.max()) + 1 if len(slot) else 1
    padded = torch.full((scores.shape[0], width), torch.inf, device=dev, dtype=ranked.dtype)
    padded[rows_t, slot_t] = values.to(ranked.dtype).nan_to_num(
        nan=torch.inf, posinf=torch.inf, neginf=-torch.inf
    )
    return scores.shape[1] - torch.searchsorted(ranked, padded, right=True)[rows_t, slot_t]


def _sortable(scores: Tensor) -> Tensor:
    """Detached, NaN as −inf (a NaN score is never above anything, as in a comparison; ±inf kept), and a
    dtype NumPy sorts (bfloat16 / float16 as float32)."""
    scores = scores.detach()
    if scores.dtype in (torch.bfloat16, torch.float16):
        scores = scores.float()
    return scores.nan_to_num(nan=-torch.inf, posinf=torch.inf, neginf=-torch.inf)


def rank_counts(
    model: Recommender,
    pairs: Pairs,
    history: Pairs,
    n_users: int,
    n_items: int,
    batch_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(above, candidates) per pair, in ``pairs`` order: above = #{j ∈ C_u : s_uj > s_ui} and
    candidates = |C_u| (see the module docstring). p_ui = above / candidates, and the per-pair hit at K
    is above < K (:func:`tru.eval.evaluator.per_pair_hit_rate`'s s_ui ≥ τ_u). One score block per user
    batch, each row sorted once (:func:`sort_rows`) and each pair found in it by binary search:
    O(users × n_items log n_items + pairs log n_items), where comparing every pair with its row cost
    O(pairs × n_items)."""
    above_out = np.zeros(len(pairs), dtype=np.int64)
    cand_out = np.zeros(len(pairs), dtype=np.int64)
    if len(pairs) == 0:
        return above_out, cand_out
    csr = history.csr(n_users, n_items)
    order = np.argsort(pairs.users, kind="stable")
    su, si = pairs.users[order], pairs.items[order]
    users = np.unique(su)
    for rb in iter_ranked(model, users, csr, 1, batch_size, keep_scores=True):
        scores = rb.scores
        assert scores is not None
        lo, hi = np.searchsorted(su, rb.users[0], "left"), np.searchsorted(su, rb.users[-1], "right")
        dev = scores.device
        rows_t = torch.as_tensor(np.searchsorted(rb.users, su[lo:hi]), device=dev)
        items_t = torch.as_tensor(si[lo:hi], device=dev)
        s = scores[rows_t, items_t].clone()
        scores[rows_t, items_t] = -torch.inf  # each pair ranked alone: u's pairs leave the candidates
        n_cand = torch.isfinite(scores).sum(1)
        rows_np = np.searchsorted(rb.users, su[lo:hi])
        above = counts_above(scores, rows_np, s)  # masked items are −inf: never above
        above_out[order[lo:hi]] = above.cpu().numpy()
        cand_out[order[lo:hi]] = n_cand[rows_t].cpu().numpy()
    return above_out, cand_out


def rank_percentiles(
    model: Recommender,
    pairs: Pairs,
    history: Pairs,
    n_users: int,
    n_items: int,
    batch_size: int | None = None,
) -> np.ndarray:
    """p_ui = above / candidates for every pair (in ``pairs`` order); see the module docstring."""
    above, cand = rank_counts(model, pairs, history, n_users, n_items, batch_size)
    return above / np.maximum(cand, 1)


def wasserstein1(a: np.ndarray, b: np.ndarray) -> float:
    """W₁ between the empirical distributions of ``a`` and ``b`` (NaN when either is empty)."""
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    xs = np.concatenate([a, b])
    xs.sort()
    fa = np.searchsorted(a, xs[:-1], "right") / len(a)
    fb = np.searchsorted(b, xs[:-1], "right") / len(b)
    return float(np.sum(np.abs(fa - fb) * np.diff(xs)))


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """sup_x |F_a(x) − F_b(x)| (two-sample KS statistic; NaN when either is empty)."""
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    xs = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), xs, "right") / len(a)
    fb = np.searchsorted(np.sort(b), xs, "right") / len(b)
    return float(np.abs(fa - fb).max())


@dataclass(frozen=True)
class RankDistance:
    """Distance of a candidate's percentiles P to a reference Q: W₁, KS and the signed shift
    Δ = mean(Q) − mean(P) (> 0: the candidate ranks the pairs higher than the reference)."""

    w1: float
    ks: float
    shift: float

    def as_dict(self) -> dict[str, float]:
        return {"rank_w1": self.w1, "rank_ks": self.ks, "rank_shift": self.shift}


def rank_distance(candidate: np.ndarray, reference: np.ndarray) -> RankDistance:
    """:class:`RankDistance` of ``candidate`` percentiles to ``reference`` percentiles."""
    if len(candidate) == 0 or len(reference) == 0:
        nan = float("nan")
        return RankDistance(nan, nan, nan)
    return RankDistance(
        wasserstein1(candidate, reference),
        ks_statistic(candidate, reference),
        float(np.mean(reference) - np.mean(candidate)),
    )
