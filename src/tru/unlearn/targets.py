"""Retrain-free forget targets (tru-method.md §7, §7a): where the deleted pairs would rank if the model had
never seen them, as a per-pair HR@20 and as a distribution of rank percentiles (:mod:`tru.eval.rank`).

* Interaction pairs: the original model on the same users' **test** pairs (history: the original train
  set; each pair ranked alone). The trainer keeps the best-on-valid state, so valid pairs rank higher
  than pairs the model never selected on: a valid-based target is biased upwards (measured: see the
  report). Test pairs were never used to select anything.
* Pairs of deleted users / target items: a proxy that never saw them as far as its own rows go
  (:func:`tru.unlearn.proxy.reinit_proxy`: graphs rebuilt on D_r, deleted users' rows at what
  retraining leaves them, target items' ID rows re-drawn), on the deleted pairs themselves (history D_r
  and u's other deleted pairs masked). The proxy gives the HR@20 target of both, and the percentile
  reference of deleted users' pairs only: retraining trains target items as negatives of every user and
  sinks them to the bottom of every ranking (Last.fm-2K × MIG-GT: mean percentile 0.93 under retrain;
  a re-drawn row, or the rebuilt content encoding, puts them near 0.5; even the least popular retained
  items sit near 0.6), so for target items the engine's rank rule stops on the convergence of that sink.
* Mixed manifests: the pair-weighted mixture (HR: weighted mean; percentiles: the union).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tru.data.dataset import Pairs, RecDataset
from tru.eval.evaluator import per_pair_hit_rate
from tru.eval.rank import rank_percentiles
from tru.forget.spec import ForgetSpec
from tru.models.base import Recommender
from tru.unlearn.proxy import entity_mask, reinit_proxy

K = 20


@dataclass
class ForgetTarget:
    """The retrain-free reference: per-pair HR@20 and the reference rank percentiles."""

    hr: float
    percentiles: np.ndarray
    detail: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        p = self.percentiles
        return {
            "forget_hr@20": self.hr,
            "n_reference_pairs": len(p),
            "reference_pct_mean": float(p.mean()) if len(p) else math.nan,
            **self.detail,
        }


def interaction_reference(
    original: Recommender, dataset: RecDataset, spec: ForgetSpec, users: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(hits@20, percentiles) of the original model on the test pairs of ``users`` (history: its train
    set)."""
    test = dataset.test.subset(np.isin(dataset.test.users, users))
    if len(test) == 0:
        return np.zeros(0), np.zeros(0)
    n_u, n_i = dataset.n_users, dataset.n_items
    hits = per_pair_hit_rate(original, n_u, n_i, test, dataset.train, K)[1]
    return hits, rank_percentiles(original, test, dataset.train, n_u, n_i)


def forget_target(original: Recommender, dataset: RecDataset, spec: ForgetSpec, seed: int) -> ForgetTarget:
    """The retrain-free reference for ``spec`` (see the module docstring)."""
    n_u, n_i = dataset.n_users, dataset.n_items
    ent = entity_mask(spec)
    detail: dict[str, float] = {"n_interaction_pairs": int((~ent).sum()), "n_entity_pairs": int(ent.sum())}
    hr_parts: list[tuple[float, int]] = []
    pct_parts: list[np.ndarray] = []
    if (~ent).any():
        hits, pct = interaction_reference(original, dataset, spec, np.unique(spec.forget.users[~ent]))
        detail["test_pairs_hr@20"] = float(hits.mean()) if len(hits) else math.nan
        detail["n_test_pairs"] = len(hits)
        if len(hits):
            hr_parts.append((float(hits.mean()), int((~ent).sum())))
            pct_parts.append(pct)
    if ent.any():
        proxy, n_reinit = reinit_proxy(original, spec, seed)
        targets: Pairs = spec.forget.subset(ent)
        history = spec.retain.concat(spec.forget.subset(~ent))
        hits = per_pair_hit_rate(proxy, n_u, n_i, targets, history, K)[1]
        detail["proxy_entity_hr@20"] = float(hits.mean())
        detail["proxy_reinit_params"] = n_reinit
        hr_parts.append((float(hits.mean()), int(ent.sum())))
        # target items' pairs have no percentile reference (retraining sinks them as negatives: the
        # engine stops on the convergence of that sink); deleted users' pairs take the proxy's
        user_pairs = ~np.isin(targets.items, spec.items)
        detail["n_sink_pairs"] = int((~user_pairs).sum())
        if user_pairs.any():
            pct_parts.append(rank_percentiles(proxy, targets.subset(user_pairs), history, n_u, n_i))
    total = sum(n for _, n in hr_parts)
    hr = sum(v * n for v, n in hr_parts) / total if total else 0.0
    pct = np.concatenate(pct_parts) if pct_parts else np.zeros(0)
    return ForgetTarget(float(hr), pct, detail)
