"""Run an unlearning method on a trained model and write the result as a run folder.

The unlearned model is saved in the same format as a trained one (``model.pt`` + ``run.json`` +
``metrics.json``, so ``tru evaluate`` reads it; the forget set is stored inside the checkpoint so a reload
rebuilds the graphs from D_r) plus ``unlearn.json``: method, wall time, optimiser steps, parameters
changed, stop reason, the per-check history, α_b over time (TRU) and the sensitivity probe (TRU)."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tru.checkpoint import save_run
from tru.config import ConfigError
from tru.data.dataset import RecDataset
from tru.eval.evaluator import evaluate_pairs
from tru.forget.spec import ForgetSpec
from tru.models import build_backbone
from tru.models.base import Recommender
from tru.train.trainer import Trainer, configure_determinism
from tru.unlearn.engine import count_changed, run_engine, snapshot
from tru.unlearn.methods import METHODS
from tru.unlearn.targets import forget_target
from tru.utils import LOG, write_json


def unlearn_config(model_config: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Packaged unlearn defaults ← the model config's ``unlearn`` section ← overrides; seed from the model."""
    defaults = yaml.safe_load((resources.files("tru") / "configs" / "unlearn.yaml").read_text()) or {}
    cfg = dict(defaults)
    cfg.update(model_config.get("unlearn") or {})
    cfg.update({k: v for k, v in (overrides or {}).items() if v is not None})
    cfg.setdefault("seed", model_config.get("seed", 999))
    return _checked(cfg, defaults)


CHOICES = {"retain_scope": ("selected", "all")}


def _checked(cfg: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Every option the packaged defaults know must have the default's type: true / false for switches, a
    number for numbers (YAML reads ``1e-3`` as a string: numeric strings are converted), one of
    :data:`CHOICES` for enumerations. Raises ConfigError naming the option, the value and what was
    expected; other keys pass through."""
    for key, default in defaults.items():
        value = cfg[key]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"unlearning option '{key}': expected true or false, got {value!r}")
        elif isinstance(default, int | float):
            try:
                number = float(value) if not isinstance(value, bool) else None
            except (TypeError, ValueError):
                number = None
            if number is None or (isinstance(default, int) and not number.is_integer()):
                kind = "an integer" if isinstance(default, int) else "a number"
                raise ConfigError(f"unlearning option '{key}': expected {kind}, got {value!r}")
            cfg[key] = int(number) if isinstance(default, int) else number
        elif key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(
                f"unlearning option '{key}': expected one of {list(CHOICES[key])}, got {value!r}"
            )
    return cfg


@dataclass
class UnlearnOutcome:
    method: str
    model: Recommender
    report: dict[str, Any]
    metrics: dict[str, dict[str, float]]


def run_unlearning(
    method: str,
    original: Recommender,
    dataset: RecDataset,
    spec: ForgetSpec,
    model_config: dict[str, Any],
    cfg: dict[str, Any],
) -> UnlearnOutcome:
    """Apply ``method`` to a copy of ``original`` (left untouched) and return the unlearned model."""
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}': expected one of {sorted(METHODS)}")
    mod = METHODS[method]
    _warm_up_optimiser()
    t0 = time.perf_counter()
    before = snapshot(original)
    n_total = sum(p.numel() for p in original.parameters())
    retained = spec.retained_dataset(dataset)
    ks = [int(k) for k in model_config.get("topk", [5, 10, 20, 50])]
    if not mod.ITERATIVE:
        model = build_backbone(original.name, retained, model_config)
        result = Trainer(model, retained, model_config).fit()
        report: dict[str, Any] = {
            "steps": sum(1 for _ in result.history),
            "stop_reason": "early stopping",
            "training": result.to_dict(),
        }
        changed = n_total
    else:
        configure_determinism(original.device, bool(model_config.get("deterministic", True)))
        target = forget_target(original, dataset, spec)
        # same protocol as the checks during unlearning: D_r history masked
        original_valid = evaluate_pairs(
            original, dataset.n_users, dataset.n_items, spec.valid, spec.retain, [20]
        )["recall@20"]
        model = copy.deepcopy(original)
        model.rebuild(spec.retain)
        res = run_engine(model, dataset, spec, cfg, mod.options(cfg), target, original_valid)
        changed = count_changed(before, model)
        report = {
            "steps": res.steps,
            "stop_reason": res.stop_reason,
            "forget_target": target,
            "original_valid_recall@20": original_valid,
            "history": res.history,
            "alpha_history": res.alpha_history,
            "sensitivity": res.sensitivity,
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
        "params_total": n_total,
        **report,
        "config": cfg,
        "spec": spec.summary(dataset.n_items),
    }
    LOG.info(
        "%s: %.2fs, %s steps, %d/%d parameters changed, stop: %s",
        method,
        seconds,
        report["steps"],
        changed,
        n_total,
        report["stop_reason"],
    )
    return UnlearnOutcome(method, model, report, metrics)


def _warm_up_optimiser() -> None:
    """Construct one throw-away Adam before the clock starts: the first optimiser in a process pays a
    one-off lazy import of ``torch._dynamo`` (~4 s on this machine), which is process start-up, not
    unlearning work, and would otherwise be billed to whichever method runs first."""
    import torch

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def save_unlearned(
    out: Path,
    outcome: UnlearnOutcome,
    model_config: dict[str, Any],
    dataset: RecDataset,
    spec: ForgetSpec,
    sensitivity_png: bool = True,
) -> Path:
    """Write the unlearned run folder (checkpoint + unlearn.json + sensitivity heatmap when present)."""
    save_run(
        out,
        outcome.model,
        model_config,
        dataset,
        train=spec.retain,
        metrics=outcome.metrics,
        forget=spec.forget,
        extra={"unlearn": {k: outcome.report[k] for k in ("method", "seconds", "steps", "params_changed")}},
    )
    report = dict(outcome.report)
    if sensitivity_png and report.get("sensitivity"):
        from tru.unlearn.sensitivity import plot_sensitivity

        plot_sensitivity(report["sensitivity"], out / "sensitivity.png")
        report["sensitivity_png"] = "sensitivity.png"
    write_json(out / "unlearn.json", report)
    return out
