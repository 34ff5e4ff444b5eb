"""The reverse-update engine shared by finetune, gradient ascent, MMRecUn and TRU (tru-method.md §3–7a).

The model arrives rebuilt on D_r (and, with ``exact``, with the rows retraining never trains already set:
:meth:`~tru.models.base.Recommender.reset_untrained_rows`). Per step: a D_f batch and a D_r batch
(separate seeded streams), the forget loss L_f (reverse BPR, the RFG loss, or ascent; TRU in the item
regime adds the item-sink term L_sink), the retain loss L_r (the backbone's own loss on D_r), then one Adam
step on

    g = λ_f · α_b · M ⊙ ∇(L_f + w_s·L_sink) + λ_r · M_r ⊙ ∇L_r

with α_b the BMS branch scales (1 when off) and M the CLI masks (all ones when off). With BMS off and the
retain update confined to the same units, one backward of λ_f·L_f + λ_r·L_r gives g exactly, which is
what MMRecUn does; so TRU with every component off *is* MMRecUn, bit for bit, and λ_f = 0 is fine-tuning.
The rows the exact part set are frozen (their gradient zeroed at every step: they already hold what
retraining leaves them), and D_f pairs of those users leave L_f (scored through a row that no longer
carries anything learnt, a reverse update would only move their items along a random direction).

Item sink (item regime, §7a): retrain samples the target items T as negatives for every user, so they sink
in every ranking. For a batch of random retained pairs (v, i) ∈ D_r and t drawn uniformly from T:

    L_sink = mean softplus(s_vt − s_vi)      (BPR with a target item as the negative; no floor)

Coupled targets (TRU, ``rfg_target: coupled``; :mod:`tru.unlearn.coupling`): D_f's interaction pairs
leave the gated term; each is pushed, by L_target, below the item at its own target rank (the monotone
coupling of its start percentile onto the reference), no further. Deleted users' and items' pairs of a
mixed manifest keep the gated term; each part is weighted by its share of the batch.

Checks (every ``check_every`` steps and once at the start, one evaluation-mode forward each; users
sampled, ``check_users``, with a fixed sample): valid Recall@20 of retained users, and the rank
percentiles of D_f pairs (:mod:`tru.eval.rank`) with their per-pair HR@20. With coupled targets the
interaction pairs' reference is re-read at each check from the current model (its test pairs of the
sampled users, history the train set) and the coupling re-targeted onto it: retraining leaves D_f level
with the pairs *its* model never trained on, and the audit compares them with the audited model's.
Stopping:

* ``stop_rule: rank``: the forget target is met when W₁(D_f percentiles, reference) ≤ ``rank_tolerance``,
  or when the signed shift Δ = mean(ref) − mean(D_f) is ≤ 0 (the deleted pairs already rank at or below
  the retrain-free reference: pushing further only over-forgets); with coupled targets when Δ ≤ 0 or W₁
  has risen since the previous check (every pair has its own target: W₁ falls until they are met), or at
  the start when W₁ ≤ ``rank_tolerance`` already; for
  target items' pairs (item regime, no retrain-free reference: see :class:`Checker`) when their
  percentiles stop moving (W₁ between two checks ≤ ``rank_plateau`` × the fastest move); ``hr``: per-pair
  HR@20 ≤ target.
* Guard: valid Recall@20 below ``min_retain_ratio`` × the starting point's (after the rebuild) stops.
* ``hr`` rule only: the mean RFG gate below ``gate_stop`` stops (under the rank rule a closed gate only
  ends the gated push: pairs out of the top-K can still rank far above the reference); ``max_steps``.

Whatever stops it, the engine returns the **best state so far** among the checks that passed the guard
(rank rule: the smallest W₁; hr rule: the latest), the start included. When that is the start, the
result is **no update** (``no_update``): the parameters are those of the starting point.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.functional import softplus

from tru.data.dataset import Pairs, RecDataset
from tru.eval.evaluator import evaluate_pairs
from tru.eval.rank import rank_counts, rank_distance, rank_percentiles, wasserstein1
from tru.forget.spec import ForgetSpec
from tru.models.base import Recommender
from tru.train.sampler import NegativeSampler
from tru.train.trainer import flushed_denormals
from tru.unlearn.adam import Adam
from tru.unlearn.bms import BranchScaler
from tru.unlearn.config import UnlearnConfig
from tru.unlearn.coupling import CoupledTargets, split_batch
from tru.unlearn.isolation import build_masks, probe, selection_from_report, sensitivity_report
from tru.unlearn.losses import FORGET_LOSSES, PairStream, pair_scores
from tru.unlearn.proxy import entity_mask
from tru.unlearn.rfg import RankingFusionGate
from tru.unlearn.targets import ForgetTarget, reference_pairs

K = 20


@dataclass
class EngineOptions:
    """Which terms and components a method uses (the numbers come from :class:`UnlearnConfig`)."""

    forget_loss: str = "reverse_bpr"
    lambda_f: float = 1.0
    lambda_r: float = 1.0
    rfg: bool = False
    #: interaction pairs pushed to their coupled target ranks (:mod:`tru.unlearn.coupling`) instead of
    #: the gated / pairwise term
    coupled: bool = False
    bms: bool = False
    cli: bool = False
    item_sink: bool = False


@dataclass
class EngineResult:
    steps: int
    seconds: float
    stop_reason: str
    history: list[dict[str, Any]] = field(default_factory=list)
    alpha_history: list[dict[str, Any]] = field(default_factory=list)
    sensitivity: dict[str, Any] | None = None
    best_step: int = 0
    no_update: bool = False
    check_seconds: float = 0.0


def count_changed(before: dict[str, Tensor], model: Recommender) -> int:
    """Number of parameter elements whose value differs from ``before``."""
    return int(sum(int((p.detach() != before[n]).sum()) for n, p in model.named_parameters() if n in before))


def snapshot(model: Recommender) -> dict[str, Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def make_streams(
    model: Recommender,
    spec: ForgetSpec,
    n_users: int,
    n_items: int,
    cfg: UnlearnConfig,
    skip_users: np.ndarray | None = None,
) -> tuple[PairStream, PairStream | None]:
    """Seeded D_f and D_r batch streams (independent generators, so λ_f = 0 leaves the D_r stream as
    fine-tuning draws it). Forget negatives avoid u's D_r and D_f items and the target items T. D_f pairs
    of ``skip_users`` (boolean mask over users) are left out; the forget stream is None when none is
    left."""
    rng_f, rng_r = (np.random.default_rng([cfg.seed, k]) for k in (1, 2))
    retain_sampler = NegativeSampler(spec.retain, n_users, n_items)
    forget_sampler = NegativeSampler(
        spec.retain, n_users, n_items, extra_excluded=spec.forget, excluded_items=spec.items
    )
    forget = spec.forget if skip_users is None else spec.forget.subset(~skip_users[spec.forget.users])
    return (
        PairStream(forget, forget_sampler, cfg.forget_batch_size, rng_f, model.device)
        if len(forget)
        else None,
        PairStream(spec.retain, retain_sampler, cfg.retain_batch_size, rng_r, model.device),
    )


def _exact_users(model: Recommender, exact_rows: dict[str, np.ndarray]) -> np.ndarray | None:
    """Boolean mask of the users whose rows the exact part set (None when none)."""
    user_params = {n for u in model.layer_units() if u.axis == "user" for n in u.params}
    picked = [rows for name, rows in exact_rows.items() if name in user_params and len(rows)]
    if not picked:
        return None
    mask = np.zeros(model.n_users, dtype=bool)
    for rows in picked:
        mask[rows] = True
    return mask


def _row_masks(model: Recommender, rows: dict[str, np.ndarray]) -> dict[str, Tensor]:
    """Parameter name -> a (n_rows, 1, ...) mask that is 0 on the given rows and 1 elsewhere."""
    params = dict(model.named_parameters())
    out = {}
    for name, idx in rows.items():
        p = params[name]
        m = torch.ones(p.shape[0], *([1] * (p.dim() - 1)), dtype=p.dtype, device=p.device)
        m[torch.as_tensor(idx, device=p.device)] = 0
        out[name] = m
    return out


class ItemSinkStream:
    """Batches (v, i, t): (v, i) uniform from D_r, t uniform from the target items T (the item-sink term)."""

    def __init__(self, spec: ForgetSpec, batch_size: int, seed: int, device: torch.device) -> None:
        self.retain = spec.retain
        self.targets = np.asarray(spec.items, dtype=np.int64)
        self.batch_size = batch_size
        self.rng = np.random.default_rng([seed, 4])
        self.device = device

    def next(self) -> tuple[Tensor, Tensor, Tensor]:
        idx = self.rng.integers(0, len(self.retain), self.batch_size)
        t = self.targets[self.rng.integers(0, len(self.targets), self.batch_size)]
        to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device)  # noqa: E731
        return to(self.retain.users[idx]), to(self.retain.items[idx]), to(t)


def item_sink_loss(u_all: Tensor, i_all: Tensor, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """L_sink = mean softplus(s_vt − s_vi): the target item t below the retained positive i for user v."""
    v, i, t = batch
    ue = u_all[v]
    return softplus((ue * i_all[t]).sum(-1) - (ue * i_all[i]).sum(-1)).mean()


class Checker:
    """The checks of one run: fixed user samples, one evaluation-mode forward per check.

    Valid Recall@20 on up to ``check_users`` retained valid users (D_r history masked); rank counts of the
    D_f pairs of up to ``check_users`` affected users (D_r history and u's other deleted pairs masked),
    from which the per-pair HR@20 follows, and, per kind of pair:

    * pairs with a retrain-free reference (interaction pairs, deleted users' pairs): the rank distance to
      the reference (``rank_w1``, ``rank_ks``, ``rank_shift``);
    * pairs of target items (item regime): retraining trains them only as negatives and sinks them
      towards the bottom of every ranking, where BPR with them as negatives converges; no retrain-free
      model tells how far, so the target is that convergence: ``sink_move`` = W₁ between the target
      pairs' percentiles at this check and at the previous one, met when it has slowed to
      ``rank_plateau`` × its fastest so far (relative, so that it does not depend on the learning rate)."""

    def __init__(
        self,
        dataset: RecDataset,
        spec: ForgetSpec,
        cfg: UnlearnConfig,
        target: ForgetTarget | None,
        coupled: bool = False,
    ) -> None:
        self.spec, self.cfg, self.target = spec, cfg, target
        self.coupled = coupled
        self._previous_w1 = math.inf
        self.dataset = dataset
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        rng = np.random.default_rng([cfg.seed, 5])
        self.valid = _user_sample(spec.valid, cfg.check_users, rng)
        self.forget = _user_sample(spec.forget, cfg.check_users, rng)
        # coupled targets: the interaction pairs' reference is re-read from the current model at every
        # check (its test pairs of the sampled users, history the train set), so that D_f ends level with
        # what the *updated* model does with pairs it never trained on (the audit's comparison)
        self.current_reference: np.ndarray | None = None
        self._reference_pairs: Pairs | None = None
        self._entity_reference = np.zeros(0)
        if coupled and target is not None and len(target.interaction_percentiles):
            users = np.unique(self.forget.users[~entity_mask(spec, self.forget)])
            self._reference_pairs = reference_pairs(dataset, users)
            self._entity_reference = target.entity_percentiles
        sink = target is not None and target.sink
        self.sink = np.isin(self.forget.items, np.asarray(spec.items, np.int64)) & sink
        self.has_ref = target is not None and len(target.percentiles) > 0 and bool((~self.sink).any())
        self.has_sink = bool(self.sink.any())
        self._previous_sink: np.ndarray | None = None
        self._fastest = 0.0
        self.seconds = 0.0

    def __call__(self, model: Recommender, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        row: dict[str, Any] = {"step": step}
        with model.eval_cache():
            if len(self.valid):
                row["valid_recall@20"] = evaluate_pairs(
                    model, self.n_users, self.n_items, self.valid, self.spec.retain, [K]
                )["recall@20"]
            above, cand = rank_counts(model, self.forget, self.spec.retain, self.n_users, self.n_items)
            reference = self.target.percentiles if self.target is not None else np.zeros(0)
            if self._reference_pairs is not None and len(self._reference_pairs):
                self.current_reference = rank_percentiles(
                    model, self._reference_pairs, self.dataset.train, self.n_users, self.n_items
                )
                reference = np.concatenate([self.current_reference, self._entity_reference])
                row["reference_pct_mean"] = float(self.current_reference.mean())
        row["forget_hr@20"] = float((above < K).mean()) if len(above) else math.nan
        pct = above / np.maximum(cand, 1)
        if self.has_ref:
            sel = ~self.sink if self.has_sink else slice(None)
            row.update(rank_distance(pct[sel], reference).as_dict())
        if self.has_sink:
            now = pct[self.sink]
            row["sink_pct_mean"] = float(now.mean())
            if self._previous_sink is not None:
                row["sink_move"] = wasserstein1(now, self._previous_sink)
                self._fastest = max(self._fastest, row["sink_move"])
            self._previous_sink = now
        self.seconds += time.perf_counter() - t0
        return row

    def met(self, row: dict[str, Any]) -> bool:
        """Is the forget target met at this check (see the module docstring)?"""
        if self.target is None or not self.cfg.stop_on_target:
            return False
        if self.cfg.stop_rule == "hr":
            return bool(row["forget_hr@20"] <= self.target.hr)
        if not (self.has_ref or self.has_sink):
            return False
        ok = True
        if self.has_ref and self.coupled:
            # coupled targets: every pair has its own target rank, W₁ falls until they are met; stop once
            # the set is level with the reference or W₁ has passed its minimum (the best state is kept). A
            # start already within rank_tolerance needs no update (MIG-GT's rebuilt start: W₁ 0.003, and
            # 200 steps crept to 0.002 at 0.48 x retrain's time, changing no verdict)
            w1, previous = row["rank_w1"], self._previous_w1
            self._previous_w1 = w1
            at_start = row["step"] == 0 and w1 <= self.cfg.rank_tolerance
            ok &= bool(row["rank_shift"] <= 0 or w1 > previous or at_start)
        elif self.has_ref:
            ok &= bool(row["rank_w1"] <= self.cfg.rank_tolerance or row["rank_shift"] <= 0)
        if self.has_sink:
            move = row.get("sink_move", math.inf)
            ok &= bool(move < self._fastest and move <= self.cfg.rank_plateau * self._fastest)
        return ok

    def score(self, row: dict[str, Any]) -> float:
        """Lower is better: W₁ to the reference (rank rule, stopping on the target, pairs with a reference);
        otherwise the latest state that passed the guard."""
        rank = self.cfg.stop_rule == "rank" and self.cfg.stop_on_target
        if rank and self.has_ref and "rank_w1" in row:
            return float(row["rank_w1"])
        return -float(row["step"])


def _user_sample(pairs: Pairs, n_users: int, rng: np.random.Generator) -> Pairs:
    """The pairs of at most ``n_users`` users drawn without replacement (all when 0 or fewer)."""
    users = np.unique(pairs.users)
    if n_users <= 0 or len(users) <= n_users:
        return pairs
    keep = np.sort(rng.choice(users, n_users, replace=False))
    return pairs.subset(np.isin(pairs.users, keep))


def run_engine(
    model: Recommender,
    dataset: RecDataset,
    spec: ForgetSpec,
    cfg: UnlearnConfig,
    opts: EngineOptions,
    target: ForgetTarget | None,
    sensitivity: dict[str, Any] | None = None,
    exact_rows: dict[str, np.ndarray] | None = None,
) -> EngineResult:
    """Run the reverse update in place on ``model`` (see :func:`_run_engine`), with denormal floats
    flushed to zero on CPU (``flush_denormal``): the ascent term's σ(s_uj − s_ui) and Adam's moments
    underflow into denormals, whose CPU arithmetic made a step 1.5x slower
    (:func:`tru.train.trainer.flushed_denormals`)."""
    with flushed_denormals(cfg.flush_denormal):
        return _run_engine(model, dataset, spec, cfg, opts, target, sensitivity, exact_rows)


def _run_engine(
    model: Recommender,
    dataset: RecDataset,
    spec: ForgetSpec,
    cfg: UnlearnConfig,
    opts: EngineOptions,
    target: ForgetTarget | None,
    sensitivity: dict[str, Any] | None = None,
    exact_rows: dict[str, np.ndarray] | None = None,
) -> EngineResult:
    """Run the reverse update in place on ``model`` (rebuilt on D_r, exact part applied). ``sensitivity``:
    a report of the sensitivity step (:func:`tru.unlearn.sensitivity.run_sensitivity`) whose selection
    CLI uses instead of probing again (re-probes after ``reprobe_epochs`` still probe). ``exact_rows``:
    parameter name -> rows the exact part set; their gradient is zeroed at every step (they hold what
    retraining leaves them), and D_f pairs of those users leave the forget loss (their scores come from a
    row that no longer carries anything learnt: a reverse update through them only moves the items along
    a random direction)."""
    t0 = time.perf_counter()
    dev = model.device
    n_users, n_items = dataset.n_users, dataset.n_items
    if len(spec.forget) == 0:
        return EngineResult(0, 0.0, "empty forget set", no_update=True)
    exact_rows = {k: v for k, v in (exact_rows or {}).items() if len(v)}
    fstream, rstream = make_streams(model, spec, n_users, n_items, cfg, _exact_users(model, exact_rows))
    frozen = _row_masks(model, exact_rows)
    sink = (
        ItemSinkStream(spec, cfg.item_sink_batch_size, cfg.seed, dev)
        if opts.item_sink and len(spec.items) and target is not None and target.sink
        else None
    )
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    names = list(named)
    split_grads = opts.bms or (opts.cli and cfg.retain_scope == "all")
    optimizer = Adam(list(named.values()), lr=cfg.learning_rate)
    outside_opt = (
        Adam(list(named.values()), lr=cfg.learning_rate * cfg.retain_lr_scale)
        if opts.cli and cfg.retain_scope == "all"
        else None
    )
    loss_fn = FORGET_LOSSES[opts.forget_loss]
    gate = (
        RankingFusionGate(spec, n_users, n_items, cfg, np.random.default_rng([cfg.seed, 3]))
        if opts.rfg and fstream is not None
        else None
    )
    scaler = BranchScaler(model.parameter_branches(), cfg) if opts.bms else None
    masks: dict[str, Tensor | None] | None = None
    report = None
    batches_per_epoch = max(1, -(-len(spec.retain) // rstream.batch_size))
    reprobe_steps = max(cfg.reprobe_epochs * batches_per_epoch, cfg.reprobe_min_steps)
    coupled = None
    interaction = ~entity_mask(spec)
    if opts.coupled and target is not None and len(target.interaction_percentiles) and interaction.any():
        coupled = CoupledTargets.build(
            model,
            spec.forget.subset(interaction),
            spec.retain,
            target.interaction_percentiles,
            n_users,
            n_items,
        )
    # the coupled stop rule and the re-read reference only where there are coupled pairs (a user or item
    # deletion keeps the rank_tolerance rule against its proxy reference)
    check = Checker(dataset, spec, cfg, target, coupled=coupled is not None)
    history: list[dict[str, Any]] = []
    alpha_history: list[dict[str, Any]] = []

    with model.eval_cache():  # one evaluation-mode forward serves the start check and the first gate
        start = check(model, 0)
        if gate is not None:
            gate.refresh(model)
    history.append(start)
    start_valid = start.get("valid_recall@20", math.nan)
    best_state, best_step, best_score = copy.deepcopy(model.state_dict()), 0, check.score(start)
    stop_reason = "max_steps"
    step = 0
    if check.met(start):
        stop_reason = "forget target met at the start"
    while step < cfg.max_steps and stop_reason == "max_steps":
        if opts.cli and (masks is None or (reprobe_steps and step % reprobe_steps == 0 and step)):
            parts = None
            if masks is None and sensitivity is not None:
                parts = selection_from_report(model, spec, sensitivity)
            elif fstream is not None:
                parts = probe(model, spec, fstream, rstream, cfg)
            if parts is not None:
                masks = build_masks(model, parts, spec)
                report = sensitivity_report(parts, cfg)
        model.unlearning_mode(cfg.dropout)
        br = rstream.next()
        state = model.training_state()  # one forward pass serves every loss of the step
        u_all, i_all = model.state_embeddings(state)
        l_f = torch.zeros((), device=dev)
        if opts.lambda_f > 0 and fstream is not None:
            bf = fstream.next()
            pos, neg = pair_scores(u_all, i_all, bf)
            if coupled is None:
                l_f = gate.loss(bf, pos, neg, u_all, i_all) if gate is not None else loss_fn(pos, neg)
            else:
                l_f = _coupled_loss(coupled, bf, pos, neg, u_all, i_all, gate, loss_fn)
        if opts.lambda_f > 0 and sink is not None:
            l_f = l_f + cfg.item_sink_weight * item_sink_loss(u_all, i_all, sink.next())
        l_r = model.loss_from_state(state, br)
        optimizer.zero_grad(set_to_none=True)
        outside: dict[str, Tensor] = {}
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
                if step % cfg.check_every == 0:
                    alpha_history.append({"step": step, "alpha": dict(alpha)})
            outside = _set_grads(named, g_f, g_r, opts, masks, outside_opt is not None)
        _zero_rows(named, frozen)
        optimizer.step()
        if outside_opt is not None:
            for name, p in named.items():  # the same tensors: the main step has read its gradients
                p.grad = outside.get(name)
            _zero_rows(named, frozen)
            outside_opt.step()
        step += 1
        need_check = step % cfg.check_every == 0 or step == cfg.max_steps
        need_refresh = gate is not None and step % cfg.gate_refresh == 0 and step < cfg.max_steps
        if not (need_check or need_refresh):
            continue
        with model.eval_cache():  # one evaluation-mode forward serves the check and the gate refresh
            row = check(model, step) if need_check else None
            if need_refresh:
                assert gate is not None
                gate.refresh(model)
        if row is None:
            continue
        if coupled is not None and check.current_reference is not None:
            coupled.retarget(check.current_reference)  # (an empty reference leaves the targets as they are)
        row["loss_f"], row["loss_r"] = float(l_f.detach()), float(l_r.detach())
        if gate is not None:
            row["mean_gate"] = gate.mean_gate
        history.append(row)
        if row.get("valid_recall@20", math.inf) < cfg.min_retain_ratio * start_valid:
            stop_reason = "retain utility"
            break
        score = check.score(row)
        if score <= best_score:
            best_state, best_step, best_score = copy.deepcopy(model.state_dict()), step, score
        if check.met(row):
            stop_reason = "forget target met"
        elif gate is not None and cfg.stop_rule == "hr" and gate.mean_gate < cfg.gate_stop:
            stop_reason = "gate closed"
    if scaler is not None:
        alpha_history.append({"step": step, "alpha": dict(scaler.alpha)})
    if best_step != step:
        model.load_state_dict(best_state)
    for p in model.parameters():
        p.grad = None
    no_update = best_step == 0
    if no_update and step > 0:
        stop_reason = f"no update ({stop_reason}: rolled back to the start)"
    elif no_update:
        stop_reason = f"no update ({stop_reason})"
    return EngineResult(
        step,
        time.perf_counter() - t0,
        stop_reason,
        history,
        alpha_history,
        report,
        best_step,
        no_update,
        check.seconds,
    )


def _coupled_loss(
    coupled: CoupledTargets,
    bf: Any,
    pos: Tensor,
    neg: Tensor,
    u_all: Tensor,
    i_all: Tensor,
    gate: RankingFusionGate | None,
    loss_fn: Any,
) -> Tensor:
    """The forget term of a batch with coupled targets: L_target on its coupled pairs, the gated (or
    pairwise) term on the rest (deleted users' and items' pairs of a mixed manifest), each weighted by
    its share of the batch."""
    hit, target_pct = coupled.lookup(bf.users.cpu().numpy(), bf.pos.cpu().numpy())
    n = len(hit)
    loss = torch.zeros((), device=pos.device)
    if hit.any():
        sub = split_batch(bf, hit)
        loss = loss + hit.sum() / n * coupled.loss(sub.users, sub.pos, target_pct[hit], u_all, i_all)
    rest = ~hit
    if rest.any():
        sub = split_batch(bf, rest)
        idx = torch.as_tensor(np.flatnonzero(rest), device=pos.device)
        term = (
            gate.loss(sub, pos[idx], neg[idx], u_all, i_all)
            if gate is not None
            else loss_fn(pos[idx], neg[idx])
        )
        loss = loss + rest.sum() / n * term
    return loss


def _zero_rows(named: dict[str, Tensor], frozen: dict[str, Tensor]) -> None:
    """Zero the gradient of the frozen rows (the exact part's)."""
    for n, m in frozen.items():
        g = named[n].grad if n in named else None
        if g is not None:
            g.mul_(m)


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
    with_outside: bool,
) -> dict[str, Tensor]:
    """p.grad = λ_f·M⊙g_f + λ_r·M⊙g_r (retain inside the selection); with retain_scope ``all``
    (``with_outside``) the retain gradient outside the selection is returned, for a second optimiser at
    a reduced learning rate."""
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
            if m is not None and gr is not None and with_outside:
                outside[n] = opts.lambda_r * gr * (1 - m)
        elif gr is not None and with_outside:
            outside[n] = opts.lambda_r * gr
        p.grad = total
    return outside
