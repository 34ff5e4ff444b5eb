"""Retrain-free forget targets (tru-method.md §7): the per-pair HR@20 deleted pairs would get if the
model had never seen them.

* interaction regime: the original model's per-pair HR@20 on the same users' valid pairs (pairs it never
  trained on, ranked with its train history masked);
* user regime: per-pair HR@20 of D_f after re-initialising the deleted users' rows of the ID tables and
  rebuilding the graphs on D_r;
* item regime: the same for the target items' ID rows.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from tru.data.dataset import RecDataset
from tru.eval.evaluator import per_pair_hit_rate
from tru.forget.spec import ForgetSpec
from tru.models.base import ID_BRANCH, Recommender


def reinit_rows(model: Recommender, axis: str, rows: np.ndarray, seed: int = 0) -> Recommender:
    """A copy whose ID-table rows on ``axis`` are redrawn from N(0, std of the table)."""
    clone = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    named = dict(clone.named_parameters())
    with torch.no_grad():
        for unit in clone.layer_units():
            if unit.kind != "table" or unit.axis != axis or unit.branch != ID_BRANCH:
                continue
            for pname in unit.params:
                w = named[pname]
                idx = torch.as_tensor(rows, device=w.device)
                fresh = torch.randn((len(rows), *w.shape[1:]), generator=gen) * float(w.std())
                w[idx] = fresh.to(w.device, w.dtype)
    return clone


def forget_target(model: Recommender, dataset: RecDataset, spec: ForgetSpec, k: int = 20) -> float:
    n_users, n_items = dataset.n_users, dataset.n_items
    if spec.regime in ("user", "item") and len(spec.users if spec.regime == "user" else spec.items):
        rows = spec.users if spec.regime == "user" else spec.items
        clone = reinit_rows(model, spec.regime, np.asarray(rows))
        clone.rebuild(spec.retain)
        return per_pair_hit_rate(clone, n_users, n_items, spec.forget, spec.retain, k)[0]
    affected = spec.affected_users
    v = dataset.valid
    pairs = v.subset(np.isin(v.users, affected))
    if len(pairs) == 0:
        return 0.0
    return per_pair_hit_rate(model, n_users, n_items, pairs, dataset.train, k)[0]
