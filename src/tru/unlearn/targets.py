"""Retrain-free forget targets (tru-method.md §7, §7a): where the deleted pairs would rank if the model had
never seen them, as a per-pair HR@20 and as a distribution of rank percentiles (:mod:`tru.eval.rank`).

* Interaction pairs: the original model on the same users' **test** pairs (history: the original train
  set; each pair ranked alone). The trainer keeps the best-on-valid state, so valid pairs rank higher
  than pairs the model never selected on: a valid-based target is biased upwards (measured: see the
  report). Test pairs were never used to select anything.
* Pairs of deleted users / target items: a proxy that never saw them as far as its own rows go
  (:func:`tru.unlearn.proxy.reinit_proxy`: graphs rebuilt on D_r, deleted users' rows at what
  retraining leaves them, target items' ID rows re-drawn), on the deleted pairs themselves (history D_r
  and u's other deleted pairs masked). The proxy gives the HR@20 target of both and the percentile
  reference of deleted users' pairs. Target items' pairs (``item_target``): retraining trains the target
  items as negatives of every user, and no retrain-free model tells where they end (mean percentile of
  D_f pairs, seed 0: Last.fm-2K × MGCN retrain 0.47, a proxy with the items' rows re-initialised 0.32,
  the rebuilt start 0.12; × MIG-GT retrain 0.43, rebuilt 0.52; MovieLens-100K × MIG-GT retrain 0.80,
  rebuilt 0.60). ``sink`` (default): the engine stops on the convergence of the item-sink term
  (:class:`tru.unlearn.engine.Checker`); ``proxy``: the proxy's percentiles; ``auto``: sink when the
  backbone owns per-item rows (MGCN), else proxy (MIG-GT, whose rebuilt target items are already the
  content encodings retraining's graph gives them: right on Last.fm-2K, MIA AUC 0.187 vs retrain's
  0.193, wrong on MovieLens-100K, 0.880 vs 0.649).
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
from tru.unlearn.emulate import can_emulate
from tru.unlearn.proxy import entity_mask, reinit_proxy

K = 20


@dataclass
class ForgetTarget:
    """The retrain-free reference: per-pair HR@20 and the reference rank percentiles."""

    hr: float
    percentiles: np.ndarray
    detail: dict[str, float] = field(default_factory=dict)
    #: target items' pairs have no percentile reference: their target is the convergence of the sink
    sink: bool = False
    #: the reference percentiles of the interaction pairs alone (the original's test pairs of their
    #: users), what :class:`tru.unlearn.coupling.CoupledTargets` couples them onto
    interaction_percentiles: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def entity_percentiles(self) -> np.ndarray:
        """The deleted users' / items' part of ``percentiles`` (which holds the interaction part first)."""
        return self.percentiles[len(self.interaction_percentiles) :]

    def summary(self) -> dict[str, float]:
        p = self.percentiles
        return {
            "forget_hr@20": self.hr,
            "n_reference_pairs": len(p),
            "reference_pct_mean": float(p.mean()) if len(p) else math.nan,
            **self.detail,
        }


def reference_pairs(dataset: RecDataset, users: np.ndarray) -> Pairs:
    """The held-out pairs that stand for never-trained interaction pairs of ``users``: their test pairs
    (ranked with the train set as history)."""
    return dataset.test.subset(np.isin(dataset.test.users, users))


def interaction_reference(
    original: Recommender, dataset: RecDataset, spec: ForgetSpec, users: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(hits@20, percentiles) of the original model on the test pairs of ``users`` (history: its train
    set)."""
    test = reference_pairs(dataset, users)
    if len(test) == 0:
        return np.zeros(0), np.zeros(0)
    n_u, n_i = dataset.n_users, dataset.n_items
    hits = per_pair_hit_rate(original, n_u, n_i, test, dataset.train, K)[1]
    return hits, rank_percentiles(original, test, dataset.train, n_u, n_i)


def forget_target(
    original: Recommender, dataset: RecDataset, spec: ForgetSpec, seed: int, item_target: str = "auto"
) -> ForgetTarget:
    """The retrain-free reference for ``spec`` (see the module docstring). ``item_target``: ``sink``
    (target items' pairs stop on the convergence of the sink), ``proxy`` (they take the proxy's
    percentiles), ``auto`` (sink when the backbone owns per-item rows that the proxy cannot emulate
    (:func:`tru.unlearn.emulate.can_emulate`), else proxy)."""
    n_u, n_i = dataset.n_users, dataset.n_items
    sink = len(spec.items) > 0 and (
        item_target == "sink"
        or (item_target == "auto" and has_item_rows(original) and not can_emulate(original))
    )
    ent = entity_mask(spec)
    detail: dict[str, float] = {"n_interaction_pairs": int((~ent).sum()), "n_entity_pairs": int(ent.sum())}
    hr_parts: list[tuple[float, int]] = []
    pct_parts: list[np.ndarray] = []
    interaction_pct = np.zeros(0)
    if (~ent).any():
        hits, pct = interaction_reference(original, dataset, spec, np.unique(spec.forget.users[~ent]))
        detail["test_pairs_hr@20"] = float(hits.mean()) if len(hits) else math.nan
        detail["n_test_pairs"] = len(hits)
        if len(hits):
            hr_parts.append((float(hits.mean()), int((~ent).sum())))
            pct_parts.append(pct)
            interaction_pct = pct
    if ent.any():
        proxy, n_reinit = reinit_proxy(original, spec, seed)
        targets: Pairs = spec.forget.subset(ent)
        history = spec.retain.concat(spec.forget.subset(~ent))
        hits = per_pair_hit_rate(proxy, n_u, n_i, targets, history, K)[1]
        detail["proxy_entity_hr@20"] = float(hits.mean())
        detail["proxy_reinit_params"] = n_reinit
        hr_parts.append((float(hits.mean()), int(ent.sum())))
        # target items' pairs of a backbone with item-owned rows have no percentile reference
        # (retraining trains those rows as negatives only: the engine stops on the convergence of that
        # sink); otherwise (deleted users' pairs; items without own rows, whose rebuilt representation
        # is already what retraining's graph gives them) the proxy's percentiles are the reference
        referenced = ~np.isin(targets.items, spec.items) if sink else np.ones(len(targets), bool)
        detail["n_sink_pairs"] = int((~referenced).sum())
        if referenced.any():
            pct_parts.append(rank_percentiles(proxy, targets.subset(referenced), history, n_u, n_i))
    total = sum(n for _, n in hr_parts)
    hr = sum(v * n for v, n in hr_parts) / total if total else 0.0
    pct = np.concatenate(pct_parts) if pct_parts else np.zeros(0)
    return ForgetTarget(float(hr), pct, detail, sink, interaction_pct)


def has_item_rows(model: Recommender) -> bool:
    """Does the backbone own trainable per-item rows (an item-axis table: MGCN's ID and raw feature
    tables, VBPR's item table; MIG-GT has none unless ``use_item_emb``)?"""
    return any(u.kind == "table" and u.axis == "item" and u.trainable for u in model.layer_units())
