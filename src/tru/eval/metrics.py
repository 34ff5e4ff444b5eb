"""Top-K ranking metrics from a hit matrix.

``hits[b, r]`` is 1 when the item ranked at position r (0-based) for user b is a ground-truth item;
``n_gt[b]`` is the number of ground-truth items of user b. For a cut-off K (per user, then averaged):

* Recall@K    = Σ_{r<K} hits / n_gt
* Precision@K = Σ_{r<K} hits / K
* HR@K        = 1[Σ_{r<K} hits > 0]
* NDCG@K      = Σ_{r<K} hits_r / log2(r+2)  ÷  Σ_{r<min(n_gt,K)} 1 / log2(r+2)
* MAP@K       = Σ_{r<K} P@(r+1) · hits_r  ÷  min(n_gt, K)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

METRICS = ("recall", "ndcg", "precision", "map", "hr")


def topk_metric_sums(hits: Tensor, n_gt: Tensor, ks: list[int]) -> dict[str, float]:
    """Per-metric sums over the users of a batch (divide by the user count for means)."""
    hits = hits.float()
    n_gt = n_gt.float().clamp_min(1)
    max_k = hits.shape[1]
    pos = torch.arange(1, max_k + 1, device=hits.device, dtype=torch.float32)
    discount = 1.0 / torch.log2(pos + 1)
    cum_hits = hits.cumsum(1)
    dcg = (hits * discount).cumsum(1)
    idcg_table = discount.cumsum(0)
    prec_at = cum_hits / pos
    ap_cum = (prec_at * hits).cumsum(1)
    out: dict[str, float] = {}
    for k in ks:
        k_eff = min(k, max_k)
        h = cum_hits[:, k_eff - 1]
        ideal = torch.clamp(n_gt, max=k).long()
        out[f"recall@{k}"] = float((h / n_gt).sum())
        out[f"precision@{k}"] = float((h / k).sum())
        out[f"hr@{k}"] = float((h > 0).float().sum())
        out[f"ndcg@{k}"] = float((dcg[:, k_eff - 1] / idcg_table[ideal - 1]).sum())
        out[f"map@{k}"] = float((ap_cum[:, k_eff - 1] / ideal.float()).sum())
    return out


def metrics_from_ranks(
    ranked: np.ndarray, ground_truth: list[set[int]] | list[list[int]], ks: list[int]
) -> dict:
    """Reference implementation over explicit ranked lists (for tests and small audits)."""
    hits = np.array([[1.0 if it in set(gt) else 0.0 for it in row] for row, gt in zip(ranked, ground_truth)])
    n_gt = np.array([len(set(gt)) for gt in ground_truth], dtype=np.float64)
    sums = topk_metric_sums(torch.from_numpy(hits), torch.from_numpy(n_gt), ks)
    return {k: v / len(ranked) for k, v in sums.items()}
