"""The retrain-free proxy (tru-method.md §7, §7a): the original model as far as its own rows go never saw
the deleted users and items. Lives here, not in :mod:`tru.certify`, so that unlearning does not import the
certificate's dependencies (scikit-learn, SciPy's statistics: ~2 s of process start-up);
:mod:`tru.certify.forgetting` re-exports it."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from tru.data.dataset import Pairs
from tru.forget.spec import ForgetSpec
from tru.models.base import ID_BRANCH, Recommender
from tru.unlearn.emulate import emulate_deleted_items


def entity_mask(spec: ForgetSpec, pairs: Pairs | None = None) -> np.ndarray:
    """Which D_f pairs (or which of ``pairs``) belong to a deleted user or a target item (the rest are
    interaction requests)."""
    pairs = spec.forget if pairs is None else pairs
    return np.isin(pairs.users, spec.users) | np.isin(pairs.items, spec.items)


def reinit_proxy(model: Recommender, spec: ForgetSpec, seed: int = 0) -> tuple[Recommender, int]:
    """A copy of ``model`` that never saw the deleted users / items as far as its own rows go: graphs
    rebuilt from D_r; the rows of users without a retained interaction set to what retraining with
    ``seed`` leaves them (:meth:`~tru.models.base.Recommender.untrained_row_values`, the exact part of
    tru-method.md §7a); the target items' rows of every item-axis table set to their initial values
    (:meth:`~tru.models.base.Recommender.initial_rows` with ``seed``: MGCN's ID rows and trainable raw
    feature rows), then retraining's negative-only updates emulated for every item D_f leaves without a
    retained interaction (:func:`tru.unlearn.emulate.emulate_deleted_items`, where the backbone allows
    it). A user / ID table without a known initial value is re-drawn Xavier-uniform U(−b, b),
    b = √(6 / (n_rows + d)). Returns the copy and the number of parameters set."""
    proxy = copy.deepcopy(model)
    proxy.rebuild(spec.retain)
    params = dict(proxy.named_parameters())
    gen = torch.Generator().manual_seed(int(seed))
    users = proxy.untrained_users(spec.retain)
    exact = proxy.untrained_row_values(users, int(seed)) if len(users) else {}
    init = proxy.initial_rows(int(seed)) if len(spec.items) else {}
    changed = 0
    for unit in proxy.layer_units():
        if unit.kind != "table" or unit.axis not in ("user", "item"):
            continue
        rows = users if unit.axis == "user" else np.asarray(spec.items, np.int64)
        if len(rows) == 0:
            continue
        for name in unit.params:
            p = params[name]
            if p.dim() != 2:
                continue
            if unit.axis == "user" and name in exact:
                fresh = exact[name]
            elif unit.axis == "item" and name in init:
                fresh = init[name][torch.as_tensor(rows)]
            elif unit.branch == ID_BRANCH:
                bound = math.sqrt(6.0 / (p.shape[0] + p.shape[1]))
                fresh = (torch.rand((len(rows), p.shape[1]), generator=gen) * 2 - 1) * bound
            else:
                continue
            with torch.no_grad():
                p[torch.as_tensor(rows, device=p.device)] = fresh.to(p.device, p.dtype)
            changed += fresh.numel()
    emulate_deleted_items(proxy, spec.retain, np.unique(spec.forget.items), int(seed))
    return proxy, changed
