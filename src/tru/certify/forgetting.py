"""Retain utility, forget efficacy, closeness to Retrain and the retrain-free forget targets
(tru-method.md §7, §8), batched over users: one (B × n_items) score block at a time.

All score blocks come from :func:`tru.eval.evaluator.iter_ranked` (``model.eval_cache()`` and
``full_sort_predict``); no Python loop runs per interaction."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from tru.data.dataset import Pairs
from tru.eval.evaluator import RankedBatch, csr_rows, evaluate_pairs, iter_ranked, per_pair_hit_rate
from tru.forget.spec import ForgetSpec
from tru.models.base import Recommender
from tru.unlearn.proxy import entity_mask, reinit_proxy  # noqa: F401  (re-exported: the certificate uses them)

K = 20
RETAIN_KS = (10, 20)
RETAIN_METRICS = ("recall", "ndcg", "precision", "map")
BLOCK_BYTES = 32 * 2**20


def block_users(n_items: int, requested: int | None = None) -> int:
    """Users per score block: ``requested`` or as many as fit a 32 MiB float32 block."""
    return max(1, requested or BLOCK_BYTES // (4 * max(n_items, 1)))


def empty_history(n_users: int, n_items: int) -> sp.csr_matrix:
    return sp.csr_matrix((n_users, n_items), dtype=np.float32)


@dataclass
class PairBlock:
    """The pairs of one user block: ``index`` into the caller's pair arrays, ``rows`` (position of each
    pair's user in the block) and ``items``, both on the scores' device."""

    ranked: RankedBatch
    index: np.ndarray
    rows: Tensor
    items: Tensor


def pair_blocks(
    model: Recommender, pairs: Pairs, history: sp.csr_matrix, batch_size: int | None = None
) -> Iterator[PairBlock]:
    """Score the users of ``pairs`` block by block (``history`` masked to −∞) and yield each block with
    the pairs that belong to it."""
    order = np.argsort(pairs.users, kind="stable")
    su = pairs.users[order]
    users = np.unique(su)
    if len(users) == 0:
        return
    bs = block_users(history.shape[1], batch_size)
    for rb in iter_ranked(model, users, history, 1, bs, keep_scores=True):
        lo, hi = np.searchsorted(su, rb.users[0], "left"), np.searchsorted(su, rb.users[-1], "right")
        dev = rb.scores.device
        rows = torch.as_tensor(np.searchsorted(rb.users, su[lo:hi]), device=dev)
        items = torch.as_tensor(pairs.items[order[lo:hi]], device=dev)
        yield PairBlock(rb, order[lo:hi], rows, items)


def retain_utility(
    model: Recommender, spec: ForgetSpec, n_users: int, n_items: int, batch_size: int | None = None
) -> dict[str, float]:
    """Recall / NDCG / Precision / MAP @10, 20 on ``spec.test`` (regime-adjusted), ranking all items with
    the user's D_r train items masked (MMRec full ranking)."""
    res = evaluate_pairs(model, n_users, n_items, spec.test, spec.retain, RETAIN_KS, batch_size)
    return {f"retain_{m}@{k}": float(res[f"{m}@{k}"]) for m in RETAIN_METRICS for k in RETAIN_KS}


def per_pair_hits(
    model: Recommender,
    targets: Pairs,
    history: Pairs,
    n_users: int,
    n_items: int,
    k: int = K,
    batch_size: int | None = None,
) -> np.ndarray:
    """Per-pair hit at K, each target ranked alone (see :func:`tru.eval.evaluator.per_pair_hit_rate`:
    hit(u, i) = 1[s_ui ≥ τ_u], τ_u the K-th best score outside history_u ∪ targets_u). In ``targets``
    order."""
    if len(targets) == 0:
        return np.zeros(0, dtype=bool)
    return per_pair_hit_rate(model, n_users, n_items, targets, history, k, batch_size)[1].astype(bool)


def forget_efficacy(
    model: Recommender, spec: ForgetSpec, n_users: int, n_items: int, batch_size: int | None = None
) -> dict[str, float]:
    """Recall@20 / NDCG@20 with the D_f pairs as targets (only D_r history masked), and the per-pair
    HR@20 = mean over (u, i) ∈ D_f of hit(u, i), each pair ranked alone (u's other deleted items masked)."""
    res = evaluate_pairs(model, n_users, n_items, spec.forget, spec.retain, (K,), batch_size)
    hits = per_pair_hits(model, spec.forget, spec.retain, n_users, n_items, K, batch_size)
    return {
        f"forget_recall@{K}": float(res[f"recall@{K}"]),
        f"forget_ndcg@{K}": float(res[f"ndcg@{K}"]),
        f"forget_hr@{K}": float(hits.mean()) if len(hits) else float("nan"),
    }


def closeness(
    model: Recommender,
    reference: Recommender,
    users: np.ndarray,
    history: Pairs,
    n_users: int,
    n_items: int,
    k: int = K,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Closeness of ``model`` to ``reference`` (Retrain) over ``users`` (the affected users), means over
    users of: top-K Jaccard |A∩B| / |A∪B| of the served lists (history masked); Spearman ρ = 1 −
    6 Σ d² / (n(n²−1)) of the rankings of all n items by raw score; KL(p_model ‖ p_reference) with
    p = softmax(raw scores) over all items."""
    if len(users) == 0:
        return {f"jaccard@{k}": math.nan, "spearman": math.nan, "kl": math.nan}
    users = np.unique(users)
    bs = block_users(n_items, batch_size)
    empty = empty_history(n_users, n_items)
    hist = history.csr(n_users, n_items)
    sums = np.zeros(3)
    n = float(n_items)
    for ra, rb in zip(
        iter_ranked(model, users, empty, 1, bs, keep_scores=True),
        iter_ranked(reference, users, empty, 1, bs, keep_scores=True),
    ):
        a, b = ra.scores, rb.scores.to(ra.scores.device)
        la, lb = torch.log_softmax(a.double(), 1), torch.log_softmax(b.double(), 1)
        sums[2] += float((la.exp() * (la - lb)).sum())
        d = (torch.argsort(torch.argsort(a, 1), 1) - torch.argsort(torch.argsort(b, 1), 1)).double()
        d2 = d.pow(2).sum(1)
        sums[1] += float((1 - 6 * d2 / (n * (n * n - 1))).sum()) if n > 1 else 0.0
        pos, cols = csr_rows(hist, ra.users)
        if len(pos):
            p_t, c_t = torch.as_tensor(pos, device=a.device), torch.as_tensor(cols, device=a.device)
            a[p_t, c_t] = -torch.inf
            b[p_t, c_t] = -torch.inf
        kk = min(k, n_items)
        ta, tb = torch.topk(a, kk, 1).indices, torch.topk(b, kk, 1).indices
        inter = (ta[:, :, None] == tb[:, None, :]).any(-1).sum(1).double()
        sums[0] += float((inter / (2 * kk - inter)).sum())
    means = sums / len(users)
    return {f"jaccard@{k}": float(means[0]), "spearman": float(means[1]), "kl": float(means[2])}


# ------------------------------------------------------------------------------------- retrain-free
def retrain_free_forget_target(
    original: Recommender,
    original_train: Pairs,
    spec: ForgetSpec,
    n_users: int,
    n_items: int,
    proxy: Recommender | None,
    batch_size: int | None = None,
) -> dict[str, float]:
    """The per-pair HR@20 that the deleted pairs would get if never seen (tru-method.md §7):

    * interaction pairs: the original model's per-pair HR@20 on the same users' test pairs (history:
      the original's train set; each test pair ranked alone). Test, not valid: the trainer keeps the
      best-on-valid state, which ranks valid pairs higher than pairs it never selected on;
    * pairs of deleted users / target items: the proxy's (:func:`reinit_proxy`) per-pair HR@20 on them
      (history D_r; u's other deleted items masked).

    target = pair-weighted mean of the two parts."""
    ent = entity_mask(spec)
    out: dict[str, float] = {"n_interaction_pairs": int((~ent).sum()), "n_entity_pairs": int(ent.sum())}
    parts: list[tuple[float, int]] = []
    if (~ent).any():
        users = np.unique(spec.forget.users[~ent])
        test = spec.test.subset(np.isin(spec.test.users, users))
        hits = per_pair_hits(original, test, original_train, n_users, n_items, K, batch_size)
        out["test_pairs_hr@20"] = float(hits.mean()) if len(hits) else math.nan
        out["n_test_pairs"] = len(test)
        if len(hits):
            parts.append((float(hits.mean()), int((~ent).sum())))
    if ent.any() and proxy is not None:
        targets = spec.forget.subset(ent)
        history = spec.retain.concat(spec.forget.subset(~ent))
        hits = per_pair_hits(proxy, targets, history, n_users, n_items, K, batch_size)
        out["proxy_entity_hr@20"] = float(hits.mean())
        parts.append((float(hits.mean()), int(ent.sum())))
    total = sum(n for _, n in parts)
    out[f"forget_hr@{K}"] = sum(v * n for v, n in parts) / total if total else math.nan
    return out
