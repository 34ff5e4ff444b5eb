"""Ranking fusion gate (RFG, tru-method.md §4).

Every ``gate_refresh`` steps, for each user u of D_f (detached statistics):
  τ_u = the K_g-th best score with u's D_r items masked;  σ_u = std of u's scores on ``scale_items``
  random items;  floor_u = mean score of ``floor_items`` sampled items u never interacted with.
Per forget pair (u, i) with a sampled negative j:
  m_ui = (s_ui − τ_u)/σ_u,  g_ui = sigmoid(m_ui / T_g)  (detached)
  L_RFG = mean g_ui · [(1−β)·ℓ(s_ui, s_uj) + β·softplus((s_ui − τ_u)/σ_u + δ)]
with the pairwise ℓ of ``forget_loss``: reverse BPR softplus(s_ui − s_uj) (§4) or BPR ascent
−softplus(s_uj − s_ui) (the training gradient of the pair, undone: weighted σ(s_uj − s_ui), gentle on pairs
the model is sure of, where reverse BPR pushes every pair with weight σ(s_ui − s_uj) ≈ 1),
and pairs already below floor_u are dropped (no push past where a never-trained model would put them;
``rfg_floor: false`` keeps them).
Item regime: the listwise term is also applied to (v, t), t ∈ T, for users v who never interacted with t
but rank it in their top-K_g (at most ``item_neighbours`` per target per refresh): persistence through
neighbours.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn.functional import softplus

from tru.data.dataset import Pairs
from tru.eval.evaluator import iter_ranked, kth_scores
from tru.forget.spec import ForgetSpec
from tru.models.base import Batch, Recommender
from tru.unlearn.config import UnlearnConfig


def pair_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Sorted int64 keys u·n_items + i of a set of (user, item) pairs."""
    return np.sort(np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64))


def pairs_in(users: np.ndarray, items: np.ndarray, sorted_keys: np.ndarray, n_items: int) -> np.ndarray:
    """Boolean mask: (users[j], items[j]) is among the pairs behind ``sorted_keys`` (searchsorted; any
    length, including none)."""
    keys = np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64)
    if len(sorted_keys) == 0 or len(keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


class RankingFusionGate:
    def __init__(
        self, spec: ForgetSpec, n_users: int, n_items: int, cfg: UnlearnConfig, rng: np.random.Generator
    ) -> None:
        self.spec = spec
        self.n_users, self.n_items = n_users, n_items
        self.k = cfg.gate_k
        self.temperature = cfg.gate_temperature
        self.beta = cfg.beta
        self.delta = cfg.delta
        self.scale_items = cfg.scale_items
        self.floor_items = cfg.floor_items
        self.item_neighbours = cfg.item_neighbours
        self.use_floor = cfg.rfg_floor
        self.pairwise = cfg.forget_loss
        self.rng = rng
        self.users = spec.affected_users
        self.tau: Tensor | None = None
        self.sigma: Tensor | None = None
        self.floor: Tensor | None = None
        self.neighbour_pairs = Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64))
        self.mean_gate = 1.0
        self.all_history = spec.retain.concat(spec.forget)
        self.history_keys = pair_keys(self.all_history.users, self.all_history.items, self.n_items)
        self.retain_csr = spec.retain.csr(n_users, n_items)
        self.seen_csr = self.all_history.csr(n_users, n_items)
        self.candidates = np.setdiff1d(np.arange(n_users), spec.users)

    @torch.no_grad()
    def refresh(self, model: Recommender) -> None:
        """Recompute τ_u, σ_u, floor_u for the users of D_f, the mean gate over D_f, and (item regime)
        the neighbour pairs that still rank a target item in their top-K."""
        dev = model.device
        tau = kth_scores(model, self.users, self.retain_csr, self.k)
        n_scale = min(self.scale_items, self.n_items)
        n_floor = min(self.floor_items, self.n_items)
        scale_idx = torch.as_tensor(self.rng.choice(self.n_items, n_scale, replace=False), device=dev)
        floor_idx = self.rng.choice(self.n_items, n_floor, replace=False)
        seen = self.seen_csr
        self.tau = torch.zeros(self.n_users, device=dev)
        self.sigma = torch.ones(self.n_users, device=dev)
        self.floor = torch.full((self.n_users,), -torch.inf, device=dev)
        users_t = torch.as_tensor(self.users, device=dev)
        self.tau[users_t] = torch.as_tensor(tau, dtype=torch.float32, device=dev)
        with model.eval_cache():
            for start in range(0, len(self.users), 1024):
                ub = self.users[start : start + 1024]
                ub_t = torch.as_tensor(ub, device=dev)
                scores = model.full_sort_predict(ub_t)
                self.sigma[ub_t] = scores[:, scale_idx].std(dim=1).clamp_min(1e-6)
                unobserved = 1.0 - torch.as_tensor(seen[ub][:, floor_idx].toarray(), device=dev)
                fs = scores[:, torch.as_tensor(floor_idx, device=dev)]
                self.floor[ub_t] = (fs * unobserved).sum(1) / unobserved.sum(1).clamp_min(1.0)
            f = self.spec.forget
            s = model.score_pairs(torch.as_tensor(f.users, device=dev), torch.as_tensor(f.items, device=dev))
        gates = self.gate(torch.as_tensor(f.users, device=dev), s)
        self.mean_gate = float(gates.mean()) if len(f) else 0.0
        if self.spec.regime in ("item", "mixed") and len(self.spec.items):
            self.neighbour_pairs = self._neighbours(model)

    def _neighbours(self, model: Recommender) -> Pairs:
        """(v, t): users v with no interaction with target t who rank t in their top-K (D_r masked)."""
        targets = np.asarray(self.spec.items, dtype=np.int64)
        found_u, found_t = [], []
        for rb in iter_ranked(model, self.candidates, self.retain_csr, self.k):
            top = rb.topk.cpu().numpy()
            row, col = np.nonzero(np.isin(top, targets))
            users, items = rb.users[row], top[row, col]
            keep = ~pairs_in(users, items, self.history_keys, self.n_items)
            found_u.append(users[keep])
            found_t.append(items[keep])
        if not found_u:
            return Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64))
        u, t = np.concatenate(found_u), np.concatenate(found_t)
        order = self.rng.permutation(len(u))
        u, t = u[order], t[order]
        # at most item_neighbours users per target (vectorised rank within target)
        srt = np.argsort(t, kind="stable")
        t_sorted = t[srt]
        starts = np.r_[0, np.flatnonzero(np.diff(t_sorted)) + 1]
        counts = np.diff(np.r_[starts, len(t_sorted)])
        rank = np.arange(len(t_sorted)) - np.repeat(starts, counts)
        keep = srt[rank < self.item_neighbours]
        return Pairs(u[keep], t[keep])

    def margin(self, users: Tensor, scores: Tensor) -> Tensor:
        assert self.tau is not None and self.sigma is not None
        return (scores - self.tau[users]) / self.sigma[users]

    def gate(self, users: Tensor, scores: Tensor) -> Tensor:
        """g_ui = sigmoid(m_ui / T_g), detached."""
        return torch.sigmoid(self.margin(users, scores.detach()) / self.temperature)

    def loss(self, batch: Batch, pos: Tensor, neg: Tensor, user_emb: Tensor, item_emb: Tensor) -> Tensor:
        """L_RFG on a D_f batch (plus the item-regime neighbour term)."""
        assert self.floor is not None
        g = self.gate(batch.users, pos)
        keep = (pos.detach() >= self.floor[batch.users]).float() if self.use_floor else torch.ones_like(pos)
        listwise = softplus(self.margin(batch.users, pos) + self.delta)
        # pairwise: reverse BPR softplus(s_ui − s_uj), or BPR ascent −softplus(s_uj − s_ui)
        pair = softplus(pos - neg) if self.pairwise == "reverse_bpr" else -softplus(neg - pos)
        term = (1 - self.beta) * pair + self.beta * listwise
        loss = (g * keep * term).sum() / max(len(pos), 1)
        if len(self.neighbour_pairs):
            v = torch.as_tensor(self.neighbour_pairs.users, device=pos.device)
            t = torch.as_tensor(self.neighbour_pairs.items, device=pos.device)
            s = (user_emb[v] * item_emb[t]).sum(-1)
            loss = loss + (self.gate(v, s) * self.beta * softplus(self.margin(v, s) + self.delta)).mean()
        return loss
