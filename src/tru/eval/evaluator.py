"""Full-ranking evaluation, batched over users (MMRec's protocol).

Every item is scored for every evaluated user; the user's train items (or any given history) are masked
to −∞; the top max(K) are compared with the split's held-out items. Users without held-out items in
the split are not evaluated (MMRec's rule). Memory is bounded by the user batch: a (B × n_items) score
block at a time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from tru.data.dataset import Pairs, RecDataset
from tru.eval.metrics import topk_metric_sums
from tru.models.base import Recommender

DEFAULT_KS = (5, 10, 20, 50)
SCORE_BLOCK_BYTES = 256 * 2**20


def _batch_size(n_items: int, requested: int | None) -> int:
    cap = max(1, SCORE_BLOCK_BYTES // (4 * max(n_items, 1)))
    return max(1, min(requested or cap, cap))


@dataclass
class RankedBatch:
    users: np.ndarray
    topk: Tensor
    scores: Tensor | None = None


def csr_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row position within ``rows``, column) of the non-zeros of the given CSR rows, vectorised."""
    starts = matrix.indptr[rows]
    counts = matrix.indptr[rows + 1] - starts
    pos = np.repeat(np.arange(len(rows)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    cols = matrix.indices[np.repeat(starts, counts) + offsets]
    return pos, cols


def sorted_membership(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Boolean array: which ``keys`` occur in the sorted 1-d ``sorted_keys`` (binary search)."""
    if len(sorted_keys) == 0:
        return np.zeros(keys.shape, dtype=bool)
    idx = np.searchsorted(sorted_keys, keys)
    idx[idx >= len(sorted_keys)] = 0
    return sorted_keys[idx] == keys


def iter_ranked(
    model: Recommender,
    users: np.ndarray,
    history: sp.csr_matrix,
    k: int,
    batch_size: int | None = None,
    keep_scores: bool = False,
) -> Iterator[RankedBatch]:
    """Yield top-k item indices per user batch, with ``history`` (CSR user × item) masked to −∞.

    Grad mode is disabled only around each batch's computation, never across a ``yield``: a
    generator suspended inside ``torch.no_grad()`` would leak the disabled mode into its consumer (and,
    if never exhausted, into whatever runs next)."""
    device = model.device
    n_items = history.shape[1]
    bs = _batch_size(n_items, batch_size)
    k = min(k, n_items)
    with model.eval_cache():
        for start in range(0, len(users), bs):
            ub = users[start : start + bs]
            with torch.no_grad():
                scores = model.full_sort_predict(torch.as_tensor(ub, device=device)).float()
                pos, cols = csr_rows(history, ub)
                if len(pos):
                    rows_t, cols_t = torch.as_tensor(pos, device=device), torch.as_tensor(cols, device=device)
                    scores[rows_t, cols_t] = -torch.inf
                top = torch.topk(scores, k, dim=1).indices
            yield RankedBatch(ub, top, scores if keep_scores else None)


def evaluate_pairs(
    model: Recommender,
    n_users: int,
    n_items: int,
    targets: Pairs,
    history: Pairs,
    ks: tuple[int, ...] | list[int] = DEFAULT_KS,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Mean top-K metrics over the users of ``targets``, ranking all items with ``history`` masked."""
    ks = sorted(int(k) for k in ks)
    gt = targets.csr(n_users, n_items)
    users = np.flatnonzero(np.diff(gt.indptr) > 0)
    if len(users) == 0:
        return {f"{m}@{k}": float("nan") for k in ks for m in ("recall", "ndcg", "precision", "map", "hr")}
    hist = history.csr(n_users, n_items)
    totals: dict[str, float] = {}
    n_gt_all = np.diff(gt.indptr)
    gt_keys = np.unique(targets.keys(n_items))
    hist_keys = np.unique(history.keys(n_items))
    for rb in iter_ranked(model, users, hist, max(ks), batch_size):
        keys = rb.users[:, None] * np.int64(n_items) + rb.topk.cpu().numpy()
        # a masked (history) item can reach the top-K only when K exceeds the unmasked items: never a hit
        hits = sorted_membership(gt_keys, keys) & ~sorted_membership(hist_keys, keys)
        sums = topk_metric_sums(torch.from_numpy(hits), torch.from_numpy(n_gt_all[rb.users]), ks)
        for key, val in sums.items():
            totals[key] = totals.get(key, 0.0) + val
    return {key: val / len(users) for key, val in totals.items()}


def evaluate(
    model: Recommender,
    dataset: RecDataset,
    split: str = "test",
    ks: tuple[int, ...] | list[int] = DEFAULT_KS,
    batch_size: int | None = None,
    history: Pairs | None = None,
) -> dict[str, float]:
    """MMRec full-ranking metrics on ``split`` (valid or test), masking the train items."""
    targets = {"valid": dataset.valid, "test": dataset.test, "train": dataset.train}[split]
    return evaluate_pairs(
        model,
        dataset.n_users,
        dataset.n_items,
        targets,
        dataset.train if history is None else history,
        ks,
        batch_size,
    )


def kth_scores(
    model: Recommender, users: np.ndarray, masked: sp.csr_matrix, k: int, batch_size: int | None = None
) -> np.ndarray:
    """τ_u: the k-th best score of each user with ``masked`` items at −∞ (−∞ if fewer remain)."""
    out = np.empty(len(users), dtype=np.float64)
    k = min(k, masked.shape[1])
    start = 0
    for rb in iter_ranked(model, users, masked, k, batch_size, keep_scores=True):
        top_vals = torch.gather(rb.scores, 1, rb.topk[:, -1:]).squeeze(1)
        out[start : start + len(rb.users)] = top_vals.double().cpu().numpy()
        start += len(rb.users)
    return out


def per_pair_hit_rate(
    model: Recommender,
    n_users: int,
    n_items: int,
    pairs: Pairs,
    history: Pairs,
    k: int = 20,
    batch_size: int | None = None,
) -> tuple[float, np.ndarray]:
    """Per-pair HR@k: each pair (u, i) ranked alone among the items not in u's ``history`` and not
    among u's other ``pairs``: hit iff s_ui ≥ τ_u, the k-th best score with history ∪ pairs masked
    (ties count as hits). Returns (mean, per-pair 0/1 array aligned with ``pairs``)."""
    if len(pairs) == 0:
        return float("nan"), np.zeros(0)
    masked = history.concat(pairs).csr(n_users, n_items)
    users, inverse = np.unique(pairs.users, return_inverse=True)
    tau = kth_scores(model, users, masked, k, batch_size)
    with model.eval_cache():
        s = (
            model.score_pairs(
                torch.as_tensor(pairs.users, device=model.device),
                torch.as_tensor(pairs.items, device=model.device),
            )
            .double()
            .cpu()
            .numpy()
        )
    hits = (s >= tau[inverse]).astype(np.float64)
    return float(hits.mean()), hits
