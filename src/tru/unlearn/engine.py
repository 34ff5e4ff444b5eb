"""The reverse-update engine shared by finetune, gradient ascent, MMRecUn and TRU (tru-method.md §3–7).

Per step: a D_f batch and a D_r batch (separate seeded streams), the forget loss L_f (reverse BPR, the
RFG loss, or ascent) and the retain loss L_r (the backbone's own loss on D_r), then one Adam step on

    g = λ_f · α_b · M ⊙ ∇L_f + λ_r · M_r ⊙ ∇L_r

with α_b the BMS branch scales (1 when off) and M the CLI masks (all ones when off). With BMS off and the
retain update confined to the same units, one backward of λ_f·L_f + λ_r·L_r gives g exactly, which is
what MMRecUn does; so TRU with every component off *is* MMRecUn, bit for bit, and λ_f = 0 is fine-tuning.
Stopping (checked every ``check_every`` steps): the forget target is met (per-pair HR@20 of D_f at or
below the retrain-free target), the mean RFG gate falls below ``gate_stop``, valid Recall@20 of retained
users falls under ``min_retain_ratio`` of the original's (the last good state is restored), or
``max_steps``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tru.data.dataset import RecDataset
from tru.eval.evaluator import evaluate_pairs, per_pair_hit_rate
from tru.forget.spec import ForgetSpec
from tru.models.base import Recommender
from tru.train.sampler import NegativeSampler
from tru.unlearn.bms import BranchScaler
from tru.unlearn.isolation import build_masks, probe, sensitivity_report
from tru.unlearn.losses import FORGET_LOSSES, PairStream, pair_scores
from tru.unlearn.rfg import RankingFusionGate
from tru.utils import LOG


@dataclass
class EngineOptions:
    forget_loss: str = "reverse_bpr"
    lambda_f: float = 1.0
    lambda_r: float = 1.0
    rfg: bool = False
    bms: bool = False
    cli: bool = False


@dataclass
class EngineResult:
    steps: int
    seconds: float
    stop_reason: str
    history: list[dict[str, Any]] = field(default_factory=list)
    alpha_history: list[dict[str, Any]] = field(default_factory=list)
    sensitivity: dict[str, Any] | None = None
    forget_target: float | None = None


def count_changed(before: dict[str, Tensor], model: Recommender) -> int:
    """Number of parameter elements whose value differs from ``before``."""
    return int(sum(int((p.detach() != before[n]).sum()) for n, p in model.named_parameters() if n in before))


def snapshot(model: Recommender) -> dict[str, Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def make_streams(
    model: Recommender, spec: ForgetSpec, n_users: int, n_items: int, cfg: dict[str, Any]
) -> tuple[PairStream, PairStream]:
    """Seeded D_f and D_r batch streams (independent generators, so λ_f = 0 leaves the D_r stream as
    fine-tuning draws it). Forget negatives avoid u's D_r and D_f items and the target items T."""
    seed = int(cfg.get("seed", 0))
    rng_f, rng_r = (np.random.default_rng([seed, k]) for k in (1, 2))
    retain_sampler = NegativeSampler(spec.retain, n_users, n_items)
    forget_sampler = NegativeSampler(
        spec.retain, n_users, n_items, extra_excluded=spec.forget, excluded_items=spec.items
    )
    bs_f, bs_r = int(cfg.get("forget_batch_size", 2048)), int(cfg.get("retain_batch_size", 2048))
    return (
        PairStream(spec.forget, forget_sampler, bs_f, rng_f, model.device),
        PairStream(spec.retain, retain_sampler, bs_r, rng_r, model.device),
    )


def run_engine(
    model: Recommender,
    dataset: RecDataset,
    spec: ForgetSpec,
    cfg: dict[str, Any],
    opts: EngineOptions,
    forget_target: float | None,
    original_valid: float | None,
) -> EngineResult:
    """Run the reverse update in place on ``model`` (already rebuilt on D_r)."""
    dev = model.device
    n_users, n_items = dataset.n_users, dataset.n_items
    fstream, rstream = make_streams(model, spec, n_users, n_items, cfg)
    rng_g = np.random.default_rng([int(cfg.get("seed", 0)), 3])
    bs_r = rstream.batch_size
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    names = list(named)
    lr = float(cfg.get("learning_rate", 1e-3))
    retain_scope = str(cfg.get("retain_scope", "selected"))
    split_grads = opts.bms or (opts.cli and retain_scope == "all")
    optimizer = torch.optim.Adam(list(named.values()), lr=lr)
    outside_opt = (
        torch.optim.Adam(list(named.values()), lr=lr * float(cfg.get("retain_lr_scale", 0.1)))
        if opts.cli and retain_scope == "all"
        else None
    )
    loss_fn = FORGET_LOSSES[opts.forget_loss]
    gate = RankingFusionGate(spec, n_users, n_items, cfg, rng_g) if opts.rfg else None
    scaler = BranchScaler(model.parameter_branches(), cfg) if opts.bms else None
    masks: dict[str, Tensor | None] | None = None
    sensitivity = None
    max_steps = int(cfg.get("max_steps", 300))
    check_every = max(1, int(cfg.get("check_every", 25)))
    refresh_every = int(cfg.get("gate_refresh", 50))
    batches_per_epoch = max(1, -(-len(spec.retain) // bs_r))
    reprobe_steps = max(
        int(cfg.get("reprobe_epochs", 2)) * batches_per_epoch, int(cfg.get("reprobe_min_steps", 100))
    )
    history: list[dict[str, Any]] = []
    alpha_history: list[dict[str, Any]] = []
    good_state = copy.deepcopy(model.state_dict())
    stop_reason = "max_steps"
    t0 = time.perf_counter()
    step = 0
    if len(spec.forget) == 0:
        return EngineResult(0, 0.0, "empty forget set")
    while step < max_steps:
        if opts.cli and (masks is None or (reprobe_steps and step % reprobe_steps == 0 and step)):
            parts = probe(model, spec, fstream, rstream, cfg)
            masks = build_masks(model, parts, spec)
            sensitivity = sensitivity_report(parts, cfg)
        if gate is not None and step % refresh_every == 0:
            gate.refresh(model)
        model.unlearning_mode(bool(cfg.get("dropout", False)))
        bf, br = fstream.next(), rstream.next()
        state = model.training_state()  # one forward pass serves both losses
        if opts.lambda_f > 0:
            u_all, i_all = model.state_embeddings(state)
            pos, neg = pair_scores(u_all, i_all, bf)
            l_f = gate.loss(bf, pos, neg, u_all, i_all) if gate is not None else loss_fn(pos, neg)
        else:
            l_f = torch.zeros((), device=dev)
        l_r = model.loss_from_state(state, br)
        optimizer.zero_grad(set_to_none=True)
        if not split_grads:
            (opts.lambda_f * l_f + opts.lambda_r * l_r).backward()
            if masks is not None:
                _apply_masks(named, masks)
        else:
            params = [named[n] for n in names]
            g_f = dict(
                zip(
                    names,
                    torch.autograd.grad(l_f, params, allow_unused=True, retain_graph=True)
                    if l_f.requires_grad
                    else [None] * len(names),
                )
            )
            g_r = dict(zip(names, torch.autograd.grad(l_r, params, allow_unused=True)))
            if scaler is not None:
                alpha = scaler.update(g_f, g_r, named)
                g_f = scaler.scale(g_f)
                if step % check_every == 0:
                    alpha_history.append({"step": step, "alpha": dict(alpha)})
            _set_grads(named, g_f, g_r, opts, masks, retain_scope, outside_opt)
        optimizer.step()
        if outside_opt is not None:
            outside_opt.step()
        step += 1
        if step % check_every == 0 or step == max_steps:
            row, reason = _check(model, dataset, spec, step, gate, forget_target, original_valid, cfg)
            row["loss_f"], row["loss_r"] = float(l_f.detach()), float(l_r.detach())
            history.append(row)
            LOG.info(
                "unlearn step %d: %s",
                step,
                ", ".join(f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float)),
            )
            if reason == "retain utility":
                model.load_state_dict(good_state)
                stop_reason = reason
                break
            good_state = copy.deepcopy(model.state_dict())
            if reason:
                stop_reason = reason
                break
    if scaler is not None:
        alpha_history.append({"step": step, "alpha": dict(scaler.alpha)})
    return EngineResult(
        step, time.perf_counter() - t0, stop_reason, history, alpha_history, sensitivity, forget_target
    )


def _apply_masks(named: dict[str, Tensor], masks: dict[str, Tensor | None]) -> None:
    for n, p in named.items():
        if n not in masks:
            p.grad = None
        elif masks[n] is not None and p.grad is not None:
            p.grad.mul_(masks[n])


def _set_grads(
    named: dict[str, Tensor],
    g_f: dict[str, Tensor | None],
    g_r: dict[str, Tensor | None],
    opts: EngineOptions,
    masks: dict[str, Tensor | None] | None,
    retain_scope: str,
    outside_opt: torch.optim.Optimizer | None,
) -> None:
    """p.grad = λ_f·M⊙g_f + λ_r·M⊙g_r (retain inside the selection); with retain_scope ``all`` the
    retain gradient outside the selection goes to a second optimiser at a reduced learning rate."""
    outside: dict[str, Tensor] = {}
    for n, p in named.items():
        gf, gr = g_f.get(n), g_r.get(n)
        total = None
        if masks is None or n in masks:
            m = None if masks is None else masks[n]
            parts = [
                opts.lambda_f * gf if gf is not None else None,
                opts.lambda_r * gr if gr is not None else None,
            ]
            parts = [x for x in parts if x is not None]
            if parts:
                total = sum(parts[1:], parts[0])
                if m is not None:
                    total = total * m
            if m is not None and gr is not None and outside_opt is not None:
                outside[n] = opts.lambda_r * gr * (1 - m)
        elif gr is not None and outside_opt is not None:
            outside[n] = opts.lambda_r * gr
        p.grad = total
    if outside_opt is not None:  # same parameter order as ``named``
        for name, p in zip(named, outside_opt.param_groups[0]["params"]):
            p.grad = outside.get(name)


def _check(
    model: Recommender,
    dataset: RecDataset,
    spec: ForgetSpec,
    step: int,
    gate: RankingFusionGate | None,
    forget_target: float | None,
    original_valid: float | None,
    cfg: dict[str, Any],
) -> tuple[dict[str, Any], str]:
    n_users, n_items = dataset.n_users, dataset.n_items
    hr, _ = per_pair_hit_rate(model, n_users, n_items, spec.forget, spec.retain, 20)
    row: dict[str, Any] = {"step": step, "forget_hr@20": hr}
    reason = ""
    if original_valid is not None:
        valid = evaluate_pairs(model, n_users, n_items, spec.valid, spec.retain, [20])["recall@20"]
        row["valid_recall@20"] = valid
        if valid < float(cfg.get("min_retain_ratio", 0.97)) * original_valid:
            return row, "retain utility"
    if gate is not None:
        row["mean_gate"] = gate.mean_gate
        if gate.mean_gate < float(cfg.get("gate_stop", 0.05)):
            reason = "gate closed"
    if cfg.get("stop_on_target", True) and forget_target is not None and hr <= forget_target:
        reason = "forget target met"
    return row, reason
