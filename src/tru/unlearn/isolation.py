"""Capacity-aware layer isolation (CLI) and the layer-sensitivity probe (tru-method.md §6).

Units are the backbone's ``layer_units()``: dense modules, and embedding / feature tables split into the
rows a request touches (forget users, target items, items of D_f, and their 1-hop neighbours in the
D_r graph) and all other rows. Over P probe batches the forget and retain gradients are accumulated per
unit and scored by

    S_l = (‖g_f,l‖ / √n_l) / (‖g_r,l‖ / √n_l + ε),   n_l = the unit's parameter count ("capacity").

Selection: always the touched rows of ID tables; then the best-scoring dense unit, even when it alone
exceeds the budget (``best_dense_first``: the spec's "at least one dense unit" read as the *best* one;
under the fit-only rule MIG-GT's top-scoring feature MLPs, 231k parameters each, never fit the 92k budget
and its 520-parameter transformer stood in); then the other units by S_l, greedily, while their
parameters fit a budget ρ_cap of the non-ID trainable parameters. Untouched
rows and raw feature tables are eligible only when their score ranks in the top ``top_free``.
Isolation zeroes the forget gradient outside the selected units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tru.forget.spec import ForgetSpec
from tru.models.base import ID_BRANCH, Recommender
from tru.unlearn.config import UnlearnConfig
from tru.unlearn.losses import PairStream, pair_scores, reverse_bpr

EPS = 1e-12


@dataclass
class UnitPart:
    """A scored part of a unit: a whole dense module, or the touched / other rows of a table."""

    unit: str
    part: str  # "all" | "touched" | "other"
    kind: str
    branch: str
    axis: str | None
    n_params: int
    forget_norm: float = 0.0
    retain_norm: float = 0.0
    score: float = 0.0
    rank: int = 0
    selected: bool = False
    reason: str = ""

    @property
    def label(self) -> str:
        return self.unit if self.part == "all" else f"{self.unit}[{self.part}]"


def touched_rows(spec: ForgetSpec, n_users: int, n_items: int) -> dict[str, np.ndarray]:
    """Boolean row masks for the ``user`` and ``item`` axes of the rows a request touches."""
    users = np.zeros(n_users, dtype=bool)
    items = np.zeros(n_items, dtype=bool)
    users[spec.users] = True
    users[spec.forget.users] = True
    items[spec.items] = True
    items[spec.forget.items] = True
    r = spec.retain
    # 1-hop neighbours in the D_r graph: items of touched users, users of touched items
    seed_users, seed_items = users.copy(), items.copy()
    items[r.items[seed_users[r.users]]] = True
    users[r.users[seed_items[r.items]]] = True
    return {"user": users, "item": items}


def _unit_parts(model: Recommender, touched: dict[str, np.ndarray]) -> list[tuple[UnitPart, list[str]]]:
    parts = []
    for unit in model.layer_units():
        if not unit.trainable:
            continue
        if unit.kind == "table" and unit.axis in touched:
            rows = touched[unit.axis]
            per_row = unit.n_params // max(len(rows), 1)
            n_t = int(rows.sum()) * per_row
            parts.append(
                (UnitPart(unit.name, "touched", "table", unit.branch, unit.axis, n_t), list(unit.params))
            )
            parts.append(
                (
                    UnitPart(unit.name, "other", "table", unit.branch, unit.axis, unit.n_params - n_t),
                    list(unit.params),
                )
            )
        else:
            parts.append(
                (UnitPart(unit.name, "all", "dense", unit.branch, None, unit.n_params), list(unit.params))
            )
    return parts


def _row_mask(param: Tensor, rows: np.ndarray, part: str) -> Tensor:
    m = torch.as_tensor(rows if part == "touched" else ~rows, device=param.device)
    return m.reshape(-1, *([1] * (param.dim() - 1))).to(param.dtype)


def probe(
    model: Recommender,
    spec: ForgetSpec,
    forget_stream: PairStream,
    retain_stream: PairStream,
    cfg: UnlearnConfig,
) -> list[UnitPart]:
    """Accumulate forget / retain gradients over ``probe_batches`` batches and score every unit part.

    g_f = ∇ Σ_k L_f(B_f,k) and g_r = ∇ Σ_k L_r(B_r,k) over P batch pairs, all scored from one shared
    training-mode forward pass (the same sharing as an unlearning step): one forward and two backward
    passes instead of 2P of each. The sum of per-batch gradients is the gradient of the summed loss, so
    this is the per-batch accumulation of §6 exactly when the forward is deterministic (MGCN), and with
    one dropout draw shared by the P batches otherwise."""
    touched = touched_rows(spec, model.n_users, model.n_items)
    parts = _unit_parts(model, touched)
    named = dict(model.named_parameters())
    names = [n for n, p in named.items() if p.requires_grad]
    params = [named[n] for n in names]
    model.unlearning_mode(cfg.dropout)
    state = model.training_state()
    u_all, i_all = model.state_embeddings(state)
    loss_f = loss_r = torch.zeros((), device=model.device)
    for _ in range(cfg.probe_batches):
        bf, br = forget_stream.next(), retain_stream.next()
        loss_f = loss_f + reverse_bpr(*pair_scores(u_all, i_all, bf))
        loss_r = loss_r + model.loss_from_state(state, br)
    gf = torch.autograd.grad(loss_f, params, allow_unused=True, retain_graph=True)
    gr = torch.autograd.grad(loss_r, params, allow_unused=True)
    acc_f = {n: torch.zeros_like(named[n]) if a is None else a for n, a in zip(names, gf)}
    acc_r = {n: torch.zeros_like(named[n]) if b is None else b for n, b in zip(names, gr)}
    for part, pnames in parts:
        fsq = rsq = 0.0
        for n in pnames:
            if n not in acc_f:
                continue
            gf_n, gr_n = acc_f[n], acc_r[n]
            if part.part != "all":
                mask = _row_mask(gf_n, touched[part.axis], part.part)  # type: ignore[index]
                gf_n, gr_n = gf_n * mask, gr_n * mask
            fsq += float(gf_n.pow(2).sum())
            rsq += float(gr_n.pow(2).sum())
        root_n = max(part.n_params, 1) ** 0.5
        part.forget_norm, part.retain_norm = fsq**0.5, rsq**0.5
        part.score = (part.forget_norm / root_n) / (part.retain_norm / root_n + EPS) if part.n_params else 0.0
    return select([p for p, _ in parts], cfg)


def select(parts: list[UnitPart], cfg: UnlearnConfig) -> list[UnitPart]:
    """Apply the selection rule (see module docstring); fills ``selected``, ``rank`` and ``reason``."""
    ratio = cfg.capacity_ratio
    top_free = cfg.top_free
    non_id = sum(p.n_params for p in parts if p.branch != ID_BRANCH)
    budget = ratio * non_id
    ranked = sorted(parts, key=lambda p: -p.score)
    for r, p in enumerate(ranked, 1):
        p.rank = r
    used = 0
    for p in ranked:
        if p.branch == ID_BRANCH and p.part == "touched":
            p.selected, p.reason = True, "touched rows of an ID table"
    dense = [p for p in ranked if p.kind == "dense" and p.n_params]
    if dense and dense[0].score > 0 and cfg.best_dense_first:
        dense[0].selected, dense[0].reason = True, f"best dense unit (score rank {dense[0].rank})"
        used += dense[0].n_params
    for p in ranked:
        if p.selected or p.n_params == 0 or p.score <= 0:
            continue
        restricted = p.part == "other" or (p.kind == "table" and p.branch != ID_BRANCH)
        if restricted and p.rank > top_free:
            continue
        if used + p.n_params <= budget:
            p.selected, p.reason = True, f"score rank {p.rank} within the {ratio:.0%} capacity budget"
            used += p.n_params
    if dense and not any(p.selected for p in dense):
        dense[0].selected, dense[0].reason = True, "best dense unit (at least one dense unit)"
    return parts


def build_masks(model: Recommender, parts: list[UnitPart], spec: ForgetSpec) -> dict[str, Tensor | None]:
    """Parameter name → gradient mask (None = the whole parameter). Parameters absent are frozen."""
    touched = touched_rows(spec, model.n_users, model.n_items)
    named = dict(model.named_parameters())
    units = {u.name: u for u in model.layer_units()}
    masks: dict[str, Tensor | None] = {}
    for p in parts:
        if not p.selected:
            continue
        for n in units[p.unit].params:
            if p.part == "all":
                masks[n] = None
                continue
            if n in masks and masks[n] is None:
                continue
            m = _row_mask(named[n], touched[p.axis], p.part)  # type: ignore[index]
            masks[n] = m if n not in masks else torch.clamp(masks[n] + m, max=1.0)  # type: ignore[operator]
    return masks


def sensitivity_report(parts: list[UnitPart], cfg: UnlearnConfig) -> dict[str, Any]:
    """The probe's report: per-unit norms, scores, ranks and the selection. ``selection`` is the list of
    selected (unit, part) pairs, which is all :func:`selection_from_report` needs (with the spec's
    ``forget_commitment``, added by the sensitivity step) to rebuild the masks."""
    total = sum(p.n_params for p in parts)
    non_id = sum(p.n_params for p in parts if p.branch != ID_BRANCH)
    ranked = sorted(parts, key=lambda p: p.rank)
    return {
        "capacity_ratio": cfg.capacity_ratio,
        "probe_batches": cfg.probe_batches,
        "params_total": total,
        "params_non_id": non_id,
        "params_selected": sum(p.n_params for p in parts if p.selected),
        "selection": [{"unit": p.unit, "part": p.part} for p in ranked if p.selected],
        "units": [asdict(p) | {"label": p.label} for p in ranked],
    }


class SelectionMismatch(ValueError):
    """A sensitivity report that does not belong to this model or this forget set."""


def selection_from_report(model: Recommender, spec: ForgetSpec, report: dict[str, Any]) -> list[UnitPart]:
    """The unit parts of ``model`` with the selection of a sensitivity step's ``report`` (its
    ``selection``: a list of {unit, part}), scores and ranks copied from its ``units`` for the record.
    The touched rows are recomputed from ``spec`` (deterministic), so the report must have been made for
    the same forget set: its ``spec.forget_commitment`` (or ``forget_commitment``) must equal ``spec``'s."""
    want = (report.get("spec") or {}).get("forget_commitment") or report.get("forget_commitment")
    have = spec.forget_commitment(model.n_items)
    if want is not None and want != have:
        raise SelectionMismatch(
            f"sensitivity report made for forget set {str(want)[:12]}…, not this one ({have[:12]}…)"
        )
    if "selection" not in report:
        raise SelectionMismatch("sensitivity report has no 'selection' (made by an older tru?)")
    chosen = {(str(s["unit"]), str(s["part"])) for s in report["selection"]}
    recorded = {(str(u["unit"]), str(u["part"])): u for u in report.get("units", [])}
    parts = [p for p, _ in _unit_parts(model, touched_rows(spec, model.n_users, model.n_items))]
    known = {(p.unit, p.part) for p in parts}
    unknown = chosen - known
    if unknown:
        raise SelectionMismatch(f"sensitivity report selects units this model lacks: {sorted(unknown)}")
    for p in parts:
        rec = recorded.get((p.unit, p.part), {})
        p.forget_norm = float(rec.get("forget_norm", 0.0))
        p.retain_norm = float(rec.get("retain_norm", 0.0))
        p.score = float(rec.get("score", 0.0))
        p.rank = int(rec.get("rank", 0))
        p.selected = (p.unit, p.part) in chosen
        p.reason = str(rec.get("reason", "")) + " (from the sensitivity step)" if p.selected else ""
    return parts
