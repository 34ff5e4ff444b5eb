"""Run an unlearning method on a trained model and write the result as a run folder.

The unlearned model is saved in the same format as a trained one (``model.pt`` + ``run.json`` +
``metrics.json``, so ``tru evaluate`` reads it; the forget set is stored inside the checkpoint so a reload
rebuilds the graphs from D_r) plus ``unlearn.json``: method, wall time, optimiser steps, parameters
changed, stop reason, the per-check history, α_b over time (TRU) and the sensitivity probe (TRU)."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tru.checkpoint import Forgotten, Lineage, save_run
from tru.data.dataset import RecDataset
from tru.eval.evaluator import evaluate_pairs
from tru.forget.spec import ForgetSpec
from tru.models import build_backbone
from tru.models.base import Recommender
from tru.runfolder import UNLEARN_FILE
from tru.train.trainer import Trainer, configure_determinism
from tru.unlearn.config import UnlearnConfig
from tru.unlearn.emulate import emulate_deleted_items, shared_emulation
from tru.unlearn.engine import count_changed, run_engine, snapshot
from tru.unlearn.methods import METHODS
from tru.unlearn.seed_noise import SeedNoise, add_seed_noise, attack_pairs
from tru.unlearn.targets import forget_target
from tru.utils import LOG, write_json


def unlearn_config(model_config: dict[str, Any], overrides: dict[str, Any] | None = None) -> UnlearnConfig:
    """The typed unlearning options: ``unlearn.yaml`` ← its ``per_backbone`` section ← the model config's
    ``unlearn`` section ← ``overrides`` (see :class:`tru.unlearn.config.UnlearnConfig`); a bad or unknown
    option is a ConfigError naming it. ``seed`` defaults to the model's."""
    return UnlearnConfig.resolve(model_config, overrides)


@dataclass
class UnlearnOutcome:
    method: str
    model: Recommender
    report: dict[str, Any]
    metrics: dict[str, dict[str, float]]


def prepare_start(model: Recommender, spec: ForgetSpec, cfg: UnlearnConfig) -> dict[str, np.ndarray]:
    """The starting point of every iterative method, in place: the graphs rebuilt from D_r and, with
    ``exact`` (tru-method.md §7a), the rows that retraining never trains set to what retraining with
    ``cfg.rows_seed`` leaves them (:meth:`~tru.models.base.Recommender.reset_untrained_rows`), and the
    rows of the items D_f leaves without a retained interaction set to what retraining's negative-only
    updates make of them (:func:`tru.unlearn.emulate.emulate_deleted_items`, where the backbone allows it).
    Returns parameter name -> the rows set (the engine keeps them frozen)."""
    model.rebuild(spec.retain)
    if not cfg.exact:
        return {}
    rows = model.reset_untrained_rows(spec.retain, cfg.rows_seed)
    # every item D_f leaves without a retained interaction: the target items, and in the user and
    # interaction regimes the items only deleted pairs held
    rows |= emulate_deleted_items(model, spec.retain, np.unique(spec.forget.items), cfg.rows_seed)
    return rows


def apply_seed_noise(
    model: Recommender,
    original: Recommender,
    spec: ForgetSpec,
    cfg: UnlearnConfig,
    exact: dict[str, np.ndarray],
) -> SeedNoise | None:
    """With ``seed_noise`` on and a target known, give the start the difference-attack AUC a retrain
    shows (:func:`tru.unlearn.seed_noise.add_seed_noise`, on seeded samples of D_f's interaction pairs and
    of the retained users' valid pairs, :func:`~tru.unlearn.seed_noise.attack_pairs`; the exact part's rows
    keep their value). None when off, without a target, or without such pairs (a deletion of users or
    items only)."""
    if not cfg.seed_noise or cfg.seed_noise_auc <= 0:
        return None
    forget, held_out = attack_pairs(spec, cfg.seed)
    if len(forget) == 0 or len(held_out) == 0:
        return None
    return add_seed_noise(model, original, forget, held_out, cfg.seed_noise_auc, exact, cfg.seed)


def run_unlearning(
    method: str,
    original: Recommender,
    dataset: RecDataset,
    spec: ForgetSpec,
    model_config: dict[str, Any],
    cfg: UnlearnConfig | dict[str, Any],
    *,
    sensitivity: dict[str, Any] | None = None,
) -> UnlearnOutcome:
    """Apply ``method`` to a copy of ``original`` (left untouched) and return the unlearned model.

    ``cfg``: the typed options (:func:`unlearn_config`; a complete mapping is converted and checked).
    Retrain trains from scratch on D_r with ``cfg.seed`` (the model's seed unless overridden), so two
    seeds give two genuinely different retrained models. ``sensitivity``: the report of the pipeline's
    sensitivity step (``sensitivity.json`` as written by :func:`tru.unlearn.sensitivity.run_sensitivity`),
    whose ``selection`` ([{unit, part}, ...], checked against the forget set's ``forget_commitment``)
    CLI then uses instead of probing again.

    The report says ``no_update`` when the method returned its starting point (the rebuilt model with the
    exact part): either the target was already met there, or every update was rolled back by the guard.
    ``params_changed`` counts elements that differ from ``original``; ``params_updated`` those the
    optimiser moved (from the starting point)."""
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}': expected one of {sorted(METHODS)}")
    cfg = UnlearnConfig.from_dict(cfg)
    mod = METHODS[method]
    if not mod.ITERATIVE:
        _warm_up_optimiser()
    t0 = time.perf_counter()
    before = snapshot(original)
    n_total = sum(p.numel() for p in original.parameters())
    retained = spec.retained_dataset(dataset)
    ks = [int(k) for k in model_config.get("topk", [5, 10, 20, 50])]
    if not mod.ITERATIVE:
        train_config = {**model_config, "seed": cfg.seed}
        model = build_backbone(original.name, retained, train_config)
        result = Trainer(model, retained, train_config).fit()
        report: dict[str, Any] = {
            "steps": sum(1 for _ in result.history),
            "stop_reason": "early stopping",
            "seed": cfg.seed,
            "training": result.to_dict(),
        }
        changed = updated = n_total
        no_update = False
    else:
        configure_determinism(original.device, bool(model_config.get("deterministic", True)))
        model = copy.deepcopy(original)
        with shared_emulation():  # the proxy and the start share the emulated item rows
            target = forget_target(original, dataset, spec, cfg.rows_seed, cfg.item_target)
            exact = prepare_start(model, spec, cfg)
        noise = apply_seed_noise(model, original, spec, cfg, exact)
        start = snapshot(model)
        res = run_engine(model, dataset, spec, cfg, mod.options(cfg), target, sensitivity, exact)
        changed = count_changed(before, model)
        updated = count_changed(start, model)
        no_update = res.no_update
        report = {
            "steps": res.steps,
            "best_step": res.best_step,
            "stop_reason": res.stop_reason,
            "exact_rows": {name: len(rows) for name, rows in exact.items()},
            "seed_noise": noise.to_dict() if noise is not None else None,
            "forget_target": target.summary(),
            "check_seconds": res.check_seconds,
            "history": res.history,
            "alpha_history": res.alpha_history,
            "sensitivity": res.sensitivity,
            "sensitivity_reused": sensitivity is not None and res.sensitivity is not None,
        }
    seconds = time.perf_counter() - t0
    metrics = {
        split: evaluate_pairs(
            model, dataset.n_users, dataset.n_items, getattr(retained, split), spec.retain, ks
        )
        for split in ("valid", "test")
    }
    report = {
        "method": method,
        "seconds": seconds,
        "params_changed": changed,
        "params_updated": updated,
        "params_total": n_total,
        "no_update": no_update,
        **report,
        "config": cfg.to_dict(),
        "spec": spec.summary(dataset.n_items),
    }
    LOG.info(
        "%s: %.2fs, %s steps, %d/%d parameters changed (%d by the update), stop: %s",
        method,
        seconds,
        report["steps"],
        changed,
        n_total,
        updated,
        report["stop_reason"],
    )
    return UnlearnOutcome(method, model, report, metrics)


def _warm_up_optimiser() -> None:
    """Construct one throw-away ``torch.optim.Adam`` before a retrain's clock starts: the first one in a
    process imports ``torch._dynamo`` (1.5 s here), process start-up that would otherwise be billed to the
    reference retrain and flatter every time ratio. (The iterative methods use
    :class:`tru.unlearn.adam.Adam`, which imports nothing.)"""
    import torch

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def save_unlearned(
    out: Path,
    outcome: UnlearnOutcome,
    model_config: dict[str, Any],
    dataset: RecDataset,
    spec: ForgetSpec,
    sensitivity_png: bool = True,
    lineage: Lineage | None = None,
    forgotten: Forgotten | None = None,
) -> Path:
    """Write the unlearned run folder (checkpoint + unlearn.json + sensitivity heatmap when present).

    The checkpoint records the requests of ``spec`` as forgotten (ids and a keyed commitment, never the
    pairs; ``forgotten`` overrides it, e.g. to inherit what the start model forgot) and ``lineage``
    (default: kind ``retrain`` for the retrain method, else ``unlearn``)."""
    kind = "retrain" if outcome.method == "retrain" else "unlearn"
    save_run(
        out,
        outcome.model,
        model_config,
        dataset,
        train=spec.retain,
        metrics=outcome.metrics,
        forgotten=forgotten or spec.forgotten(),
        lineage=lineage or Lineage(kind=kind, method=outcome.method),
        extra={"unlearn": {k: outcome.report[k] for k in ("method", "seconds", "steps", "params_changed")}},
    )
    report = dict(outcome.report)
    if sensitivity_png and report.get("sensitivity"):
        from tru.unlearn.sensitivity import plot_sensitivity

        plot_sensitivity(report["sensitivity"], out / "sensitivity.png")
        report["sensitivity_png"] = "sensitivity.png"
    write_json(out / UNLEARN_FILE, report)
    return out
