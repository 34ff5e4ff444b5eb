"""Retrain-free forget targets (tru-method.md §7): the per-pair HR@20 deleted pairs would get if the
model had never seen them. The definition lives with the certification
(:func:`tru.certify.forgetting.retrain_free_forget_target`): interaction pairs take the original
model's per-pair HR@20 on the same users' valid pairs; pairs of deleted users / target items take the
HR@20 of a proxy whose ID rows for them are re-drawn (graphs rebuilt on D_r); mixed manifests weight the
two by their pair counts."""

from __future__ import annotations

import numpy as np

from tru.certify.forgetting import entity_mask, reinit_proxy, retrain_free_forget_target
from tru.data.dataset import RecDataset
from tru.forget.spec import ForgetSpec
from tru.models.base import Recommender


def forget_target(model: Recommender, dataset: RecDataset, spec: ForgetSpec, seed: int = 0) -> float:
    proxy = reinit_proxy(model, spec, seed)[0] if entity_mask(spec).any() else None
    out = retrain_free_forget_target(model, dataset.train, spec, dataset.n_users, dataset.n_items, proxy)
    value = out["forget_hr@20"]
    return float(value) if np.isfinite(value) else 0.0
