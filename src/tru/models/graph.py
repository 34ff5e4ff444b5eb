"""Sparse graph construction shared by the backbones (all vectorised, no per-interaction loops)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from tru.data.dataset import Pairs


def to_torch_sparse(
    rows: np.ndarray | Tensor,
    cols: np.ndarray | Tensor,
    vals: np.ndarray | Tensor,
    shape: tuple[int, int],
    device: torch.device | str = "cpu",
) -> Tensor:
    """A coalesced sparse COO tensor (float32) from triplets."""
    idx = torch.stack([torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)])
    val = torch.as_tensor(vals, dtype=torch.float32)
    return torch.sparse_coo_tensor(idx, val, shape, device=device, check_invariants=False).coalesce()


def _unique_pairs(train: Pairs, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    keys = np.unique(train.keys(n_items))
    return keys // n_items, keys % n_items


def degrees(train: Pairs, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    u, i = _unique_pairs(train, n_items)
    return np.bincount(u, minlength=n_users).astype(np.float64), np.bincount(i, minlength=n_items).astype(
        np.float64
    )


def _inv_sqrt(d: np.ndarray) -> np.ndarray:
    out = np.zeros_like(d, dtype=np.float64)
    nz = d > 0
    out[nz] = d[nz] ** -0.5
    return out


def sym_norm_bipartite(
    train: Pairs,
    n_users: int,
    n_items: int,
    self_loops: bool = False,
    device: torch.device | str = "cpu",
    isolated_self_loops: bool = True,
) -> Tensor:
    """Â = D^{-1/2} A D^{-1/2} over the (n_users + n_items) bipartite graph A = [[0, R], [Rᵀ, 0]]
    (LightGCN / MMRec's ``get_norm_adj_mat``); with ``self_loops`` A + I is normalised instead.

    ``isolated_self_loops=False`` (with ``self_loops``): a node without any edge keeps its diagonal entry
    in the sparsity pattern with the value 0 instead of 1, so Â h is 0 there (it has no neighbours to
    average) rather than the node's own input at full weight: with A + I a connected node of degree d
    keeps 1/(d+1) of itself, an isolated one all of it."""
    u, i = _unique_pairs(train, n_items)
    n = n_users + n_items
    rows = np.concatenate([u, i + n_users])
    cols = np.concatenate([i + n_users, u])
    isolated = np.zeros(0, dtype=np.int64)
    if self_loops:
        loops = np.arange(n)
        if not isolated_self_loops:
            connected = np.bincount(rows, minlength=n) > 0
            isolated, loops = loops[~connected], loops[connected]
        rows = np.concatenate([rows, loops])
        cols = np.concatenate([cols, loops])
    deg = np.bincount(rows, minlength=n).astype(np.float64)
    dis = _inv_sqrt(deg)
    vals = dis[rows] * dis[cols]
    if len(isolated):
        rows, cols = np.concatenate([rows, isolated]), np.concatenate([cols, isolated])
        vals = np.concatenate([vals, np.zeros(len(isolated))])
    return to_torch_sparse(rows, cols, vals, (n, n), device)


def sym_norm_user_item(
    train: Pairs, n_users: int, n_items: int, device: torch.device | str = "cpu"
) -> Tensor:
    """The user-item block of Â: R̂_ui = 1/√(d_u d_i) (MGCN's ``R``), shape (n_users, n_items)."""
    u, i = _unique_pairs(train, n_items)
    du, di = degrees(train, n_users, n_items)
    vals = _inv_sqrt(du)[u] * _inv_sqrt(di)[i]
    return to_torch_sparse(u, i, vals, (n_users, n_items), device)


def knn_graph(features: Tensor, k: int, chunk_rows: int = 2048, keep_mask: Tensor | None = None) -> Tensor:
    """Item-item kNN graph on cosine similarity, symmetrically normalised (MGCN / LATTICE / FREEDOM).

    S = X̂ X̂ᵀ with X̂ the row-L2-normalised features; each row keeps its top-k similarities (itself
    included) as weights w_ij; then w_ij ← w_ij / √(d_i d_j), with d_i = Σ_j w_ij the row sum.
    Similarities are computed in row chunks, so memory is O(chunk_rows × n_items), not O(n_items²).
    ``keep_mask`` (bool, n_items) excludes items (deleted items: no edges in or out)."""
    x = features.float()
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n = x.shape[0]
    k = min(k, n)
    rows_all, cols_all, vals_all = [], [], []
    for start in range(0, n, chunk_rows):
        block = x[start : start + chunk_rows] @ x.T
        if keep_mask is not None:
            block[:, ~keep_mask] = -torch.inf
        val, col = torch.topk(block, k, dim=1)
        row = torch.arange(start, start + block.shape[0], device=x.device).unsqueeze(1).expand_as(col)
        rows_all.append(row.reshape(-1))
        cols_all.append(col.reshape(-1))
        vals_all.append(val.reshape(-1))
    rows = torch.cat(rows_all)
    cols = torch.cat(cols_all)
    vals = torch.cat(vals_all)
    valid = torch.isfinite(vals)
    if keep_mask is not None:
        valid &= keep_mask[rows]
    rows, cols, vals = rows[valid], cols[valid], vals[valid]
    deg = torch.zeros(n, device=x.device).index_add_(0, rows, vals)
    dis = torch.where(deg > 0, deg.clamp_min(1e-12).pow(-0.5), torch.zeros_like(deg))
    vals = dis[rows] * vals * dis[cols]
    idx = torch.stack([rows, cols])
    return torch.sparse_coo_tensor(idx, vals, (n, n), device=x.device, check_invariants=False).coalesce()


def spmm(adj: Tensor, dense: Tensor) -> Tensor:
    """Sparse × dense product (differentiable in ``dense``)."""
    return torch.sparse.mm(adj, dense)
