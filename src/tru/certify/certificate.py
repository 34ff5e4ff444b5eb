"""``tru certify``: audit an unlearned model against the original and a reference, decide a verdict, and
write ``certificate.json``, ``report.html`` and the plots atomically (certificate revision 2,
``shared/docs/certification.md``).

**Reference** (evidence level): with a retrained model every statistic compares with Retrain
("retrain comparison"); without one the retrain-free references of tru-method.md §7 stand in
("retrain-free (weaker than retrain comparison)"): D_f ranks against the original's test-pair ranks
(interaction pairs) or the re-initialised proxy's (deleted users / items), the MIA AUC against ½ or
the proxy's, retain utility against the original's.

**Statistics** (:mod:`tru.certify.statistics`): forget HR@20 gap, W₁ of the D_f rank percentiles,
interaction-level MIA AUC gap, user-level MIA AUC gap (never-seen users as non-members), the difference
attack (original → candidate against original → retrain), retain Recall@20 / NDCG@20 ratios; every
interval from a user-clustered bootstrap.

**Tolerances.** With a calibration (:mod:`tru.certify.calibration`, ``tru certify --calibration DIR``):
t = max(floor, upper quantile of retrain's own null) per statistic, for the evidence level used
("tolerances: calibrated"). Without one the fixed revision-1 policy keys decide (forget HR band, MIA
tolerances, retain Recall@20 ratio; the other statistics are reported, not checked), labelled "fixed
(revision 1 policy; no calibration)".

**Verdict.** ``failed`` when a checked statistic (or consistency / time / policy check) is out of
bounds, each one named; ``inconclusive`` (calibrated only) when D_f has fewer than the policy's
``min_forget_pairs`` pairs, or when the audit cannot tell the original from the reference (the original
is itself within tolerance on every forgetting statistic); else ``passed``. ``passed`` (the boolean) is
true only for the verdict ``passed``. A candidate whose parameters equal the original's, or the original
after only the rebuild from D_r (graphs, and the exact part's row reset), is labelled "rebuild only".

Document (``certificate.json``, format ``tru-certificate/2``; typed by
:class:`tru.certify.binding.Certificate`)::

    format, passed, verdict, candidate, models, reasons, evidence, regime, requests   (the lifecycle's)
    tolerances      "calibrated (revision 2)" | "fixed (revision 1 policy; no calibration)"
    statistics      [{name, label, kind, sided, formula, candidate, candidate_ci95, candidate_level,
                      reference_level, original, second_retrain, second_retrain_source,
                      second_retrain_range, bounds [lo, hi], bound_text, tolerance, floor, null_quantile,
                      tolerance_source, checked, passed, original_passed, second_retrain_passed,
                      normalised {candidate, original, second_retrain}, message}]
    inconclusive    {min_forget_pairs, n_forget_pairs, too_small, original_is_pre_deletion, level,
                     quantile_level, original_within_tolerance, original_outside, ...}
    calibration     {sha256, folder, k, seeds, regime, forget_set, coverage, n_boot, same_forget_set,
                     level} | null
    update          {label: updated | rebuild only | unchanged, rebuild_only, params_changed_measured,
                     params_changed_vs_rebuilt, seed_noise_sigma (0: none), why}
    checks, policy, dataset, original, unlearned, retrained, second_retrained, reference, closeness,
    efficiency, mia, user_mia, audit, notes, code_version, created_at, certify_seconds, signature

The certificate holds counts, request ids and keyed commitments of D_f, never the deleted interactions;
it is signed last (:func:`tru.certify.binding.sign`)."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_curve

from tru.certify import forgetting as fg
from tru.certify import mia
from tru.certify import statistics as stx
from tru.certify.binding import Certificate, ModelBinding, sign
from tru.certify.calibration import Calibration, as_calibration
from tru.certify.output import CertifyError, check_out, clean_json, write_outputs
from tru.certify.policy import (
    Bounds,
    Policy,
    bounds_from_tolerance,
    load_policy,
    revision1_bounds,
)
from tru.certify.report import build_images, render_html
from tru.checkpoint import LoadedRun, load_run, pairs_fingerprint, weights_sha256
from tru.data.dataset import DataError, RecDataset
from tru.forget.spec import ForgetSpec
from tru.runfolder import CERT_FILE, REPORT_FILE, UNLEARN_FILE, unlearn_meta
from tru.utils import git_commit

DEFAULT_SEEDS = (0, 1, 2, 3, 4)
FORMAT = "tru-certificate/2"
EVIDENCE_RETRAIN = "retrain comparison"
EVIDENCE_FREE = "retrain-free (weaker than retrain comparison)"
TOL_CALIBRATED = "calibrated (revision 2)"
TOL_FIXED = "fixed (revision 1 policy; no calibration)"
REBUILD_ONLY = "rebuild only"


@dataclass
class ModelRun:
    """A loaded model with its run folder and, for unlearned runs, the parsed ``unlearn.json``."""

    run: LoadedRun
    folder: Path | None = None
    unlearn: dict[str, Any] | None = None


@dataclass
class AuditOptions:
    max_pairs: int = 20000  # cap per pool (retain sample, held-out, D_f) of the audits
    max_users: int = 2000  # never-seen users drawn at most for the user-level audit
    n_boot: int = 200  # user-clustered bootstrap rows (intervals; the calibration's null)
    batch_size: int | None = None  # users per score block (default: a 32 MiB block)
    seed: int = 0  # pools, the never-seen users, the proxy's re-initialisation and the bootstrap


def open_run(
    folder: Path | str,
    dataset: RecDataset,
    device: str | torch.device | None = None,
    requests: Sequence[Any] | None = None,
) -> ModelRun:
    """Load a run folder (``model.pt`` + ``run.json``, plus ``unlearn.json`` when present);
    ``requests``: the deletion manifest, for models that forgot rows ``dataset`` still holds."""
    folder = Path(folder)
    run = load_run(folder, dataset, device=device, requests=requests)
    return ModelRun(run, folder, unlearn_meta(folder))


def _as_run(run: ModelRun | Path | str, dataset: RecDataset, spec: ForgetSpec) -> ModelRun:
    return run if isinstance(run, ModelRun) else open_run(run, dataset, requests=spec.requests)


def training_seed(mr: ModelRun) -> int:
    """The seed that made a model: a retrain's ``unlearn.json`` seed (``tru unlearn --method retrain
    --seed S`` saves the original's config), else the unlearning config's seed, else the run config's."""
    meta = mr.unlearn or {}
    for raw in (meta.get("seed"), (meta.get("config") or {}).get("seed")):
        if isinstance(raw, int) and not isinstance(raw, bool):
            return int(raw)
    return int(mr.run.config.get("seed", 0) or 0)


def _training_seconds(mr: ModelRun) -> float | None:
    """Wall time that produced the run: ``tru train``'s training seconds, or for a model retrained by
    ``tru unlearn --method retrain`` (the pipeline's certify step) the unlearning report's seconds."""
    sec = (mr.run.meta.get("training") or {}).get("seconds")
    if not isinstance(sec, int | float) and (mr.unlearn or {}).get("method") == "retrain":
        sec = mr.unlearn.get("seconds")  # type: ignore[union-attr]
    return float(sec) if isinstance(sec, int | float) else None


def _n_trainable(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def _changed_params(a: torch.nn.Module, b: torch.nn.Module) -> int | None:
    """Number of parameter entries that differ between two models of one architecture."""
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    if pa.keys() != pb.keys() or any(pa[k].shape != pb[k].shape for k in pa):
        return None
    return int(sum(int((pa[k].detach().cpu() != pb[k].detach().cpu()).sum()) for k in pa))


def _model_block(mr: ModelRun, dataset: RecDataset, spec: ForgetSpec, opts: AuditOptions) -> dict[str, Any]:
    """One model's numbers: forget efficacy on all of D_f, retain utility, what it was trained on."""
    nu, ni, bs = dataset.n_users, dataset.n_items, opts.batch_size
    model = mr.run.model
    block: dict[str, Any] = {
        "run": str(mr.folder) if mr.folder else None,
        "backbone": model.name,
        "seed": training_seed(mr),
        "train_fingerprint": pairs_fingerprint(mr.run.train, ni),
        "n_train_pairs": len(mr.run.train),
    }
    block.update(fg.forget_efficacy(model, spec, nu, ni, bs))
    block.update(fg.retain_utility(model, spec, nu, ni, bs))
    return block


def _consistency(name: str, mr: ModelRun, expected: str, what: str, n_items: int) -> dict[str, Any] | None:
    got = pairs_fingerprint(mr.run.train, n_items)
    if got == expected:
        return None
    return {
        "name": f"consistency_{name}",
        "passed": False,
        "value": None,
        "bound": what,
        "message": f"the {name} model was trained on {len(mr.run.train)} pairs (fingerprint {got[:12]}…), "
        f"not on {what}: its comparison does not certify these requests",
    }


def binding_of(mr: ModelRun, n_items: int) -> ModelBinding:
    """The certificate's record of one model: weights hash (recomputed from the loaded weights), train
    fingerprint, lineage and forgotten-request commitment."""
    run = mr.run
    return ModelBinding(
        weights_sha256=weights_sha256(run.model.state_dict()),
        train_fingerprint=pairs_fingerprint(run.train, n_items),
        lineage_kind=run.lineage.kind,
        parent_weights_sha256=run.lineage.parent_weights_sha256,
        forgotten_commitment=run.forgotten.commitment,
    )


def check_models(
    dataset: RecDataset,
    spec: ForgetSpec,
    original: ModelRun,
    unlearned: ModelRun,
    retrained: ModelRun | None,
) -> dict[str, dict[str, str]]:
    """Refuse a comparison that would not certify these requests (:class:`CertifyError`, nothing
    written), and return each model's binding.

    * the unlearned model must have forgotten exactly the requests of ``spec`` (commitment);
    * the original must have been trained on a superset of D_r (the train split, or the split without
      requests an earlier unlearning already forgot), and when the unlearned model records its parent's
      weights, be that parent;
    * a retrained model must be a genuine retrain on D_r: trained from scratch (lineage ``retrain`` or
      ``train``, never ``unlearn``), on exactly D_r, with weights that differ from the unlearned model's."""
    ni = dataset.n_items
    models = {"original": original, "unlearned": unlearned} | ({"retrained": retrained} if retrained else {})
    binds = {name: binding_of(mr, ni) for name, mr in models.items()}
    if not unlearned.run.forgotten.covers(spec.forgotten()):
        raise CertifyError(
            f"unlearned model {unlearned.folder}: it has forgotten "
            f"{len(unlearned.run.forgotten.request_ids)} request(s), not the {len(spec.requests)} of this "
            "manifest: certify it with the requests it was unlearned for"
        )
    retain_keys = spec.retain.keys(ni)
    if not np.isin(retain_keys, original.run.train.keys(ni)).all():
        raise CertifyError(
            f"original model {original.folder}: its train set does not contain D_r; it is not the model "
            "these requests were unlearned from"
        )
    parent = binds["unlearned"].parent_weights_sha256
    same = binds["unlearned"].weights_sha256 == binds["original"].weights_sha256  # a confirmation run
    if parent and not same and parent != binds["original"].weights_sha256:
        raise CertifyError(
            f"unlearned model {unlearned.folder} was derived from weights {parent[:12]}…, not from the "
            f"original given ({binds['original'].weights_sha256[:12]}…)"
        )
    if retrained is not None:
        rb = binds["retrained"]
        problems = []
        if rb.lineage_kind not in ("retrain", "train"):
            problems.append(f"it was made by '{rb.lineage_kind}', not trained from scratch")
        if rb.train_fingerprint != pairs_fingerprint(spec.retain, ni):
            problems.append("it was not trained on exactly D_r = D \\ D_f")
        if rb.weights_sha256 == binds["unlearned"].weights_sha256:
            problems.append("its weights are the unlearned model's")
        if problems:
            raise CertifyError(
                f"--retrained {retrained.folder} is not a genuine retrain on D_r: {'; '.join(problems)}"
            )
    return {name: b.to_dict() for name, b in binds.items()}


def check_second_retrain(dataset: RecDataset, spec: ForgetSpec, second: ModelRun, bindings: dict) -> None:
    """A second retrain (shown on the report's axis) must be a genuine retrain on D_r that differs from
    the reference retrain."""
    bind = binding_of(second, dataset.n_items)
    if bind.lineage_kind not in ("retrain", "train") or bind.train_fingerprint != pairs_fingerprint(
        spec.retain, dataset.n_items
    ):
        raise CertifyError(f"--second-retrained {second.folder}: not a from-scratch retrain on D_r")
    if "retrained" in bindings and bind.weights_sha256 == bindings["retrained"]["weights_sha256"]:
        raise CertifyError(
            f"--second-retrained {second.folder}: same weights as the reference retrain (same seed?)"
        )


def update_label(original: ModelRun, unlearned: ModelRun, spec: ForgetSpec, n_items: int) -> dict[str, Any]:
    """What the unlearning did to the parameters: ``unchanged`` (the original itself, already trained on
    D_r), ``rebuild only`` (the original's parameters, or the original after the rebuild from D_r and the
    exact part's reset of the rows retrain never trains, with no update on top; or ``unlearn.json``
    reports ``no_update``), or ``updated``; ``why`` says so, and names the seed noise the start carries
    (``unlearn.json``'s ``seed_noise``), which the label does not count as an update."""
    measured = _changed_params(original.run.model, unlearned.run.model)
    meta = unlearned.unlearn or {}
    sigma = float((meta.get("seed_noise") or {}).get("sigma") or 0.0)
    out: dict[str, Any] = {
        "params_changed_measured": measured,
        "params_changed_vs_rebuilt": None,
        "seed_noise_sigma": sigma,
    }
    already = pairs_fingerprint(original.run.train, n_items) == pairs_fingerprint(spec.retain, n_items)
    if measured == 0:
        label = "unchanged" if already else REBUILD_ONLY
        why = "the original model itself" if already else "the original's parameters; only the graphs rebuilt"
    else:
        rebuilt = copy.deepcopy(original.run.model)
        rebuilt.rebuild(spec.retain)
        rebuilt.reset_untrained_rows(spec.retain, training_seed(unlearned))
        vs = _changed_params(rebuilt, unlearned.run.model)
        out["params_changed_vs_rebuilt"] = vs
        del rebuilt
        if vs == 0:
            label, why = REBUILD_ONLY, "the rebuild from D_r and the exact part's row reset, no update"
        elif meta.get("no_update") is True:
            label, why = REBUILD_ONLY, "unlearn.json reports no_update (every update rolled back)"
        else:
            label, why = "updated", "parameters moved beyond the rebuild"
    if sigma > 0:
        why += f"; the start carries seed noise (σ {sigma:.3g} × the tensors' spread, tru.unlearn.seed_noise)"
    return out | {"label": label, "rebuild_only": label == REBUILD_ONLY, "why": why}


@dataclass
class Audit:
    """One audit of a forget set: the design, each model's evidence and its levels under the
    user-clustered bootstrap weights (row 0: the point estimate)."""

    design: stx.AuditDesign
    weights: np.ndarray
    evidence: dict[str, stx.Evidence]
    levels: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def user_auc(self, name: str, ref: str) -> np.ndarray:
        """The user-level AUC of model ``name`` under the attack trained on ``ref`` (per weight row)."""
        return stx.user_mia_aucs(self.evidence[name], self.evidence[ref], self.design, self.weights)[0]

    def compare(self, cand: str, ref: str, rows: int | None = None) -> dict[str, np.ndarray]:
        w = self.weights if rows is None else self.weights[:rows]
        lc = {k: v[: len(w)] for k, v in self.levels[cand].items()}
        lr = {k: v[: len(w)] for k, v in self.levels[ref].items()}
        return stx.compare(self.evidence[cand], self.evidence[ref], self.design, w, lc, lr)


def run_audit(
    dataset: RecDataset,
    spec: ForgetSpec,
    runs: dict[str, ModelRun],
    opts: AuditOptions,
    seeds: Sequence[int],
    retrain_free: bool,
) -> Audit:
    """Evidence of every model in ``runs`` (``original`` first) and, with ``retrain_free``, of the
    retrain-free reference (``retrain-free``; its proxy as ``proxy``)."""
    nu, ni, bs = dataset.n_users, dataset.n_items, opts.batch_size
    design = stx.build_design(spec, nu, ni, seeds, opts.max_pairs, opts.max_users, opts.seed)
    o = runs["original"]
    ev: dict[str, stx.Evidence] = {}
    ev["original"] = stx.model_evidence("original", o.run.model, design, None, bs, keep_pair_stats=True)
    ev["original"].diff = [np.full(len(stx.diff_eval_set(design)[0]), 0.5) for _ in design.diff_folds]
    for name, mr in runs.items():
        if name != "original":
            ev[name] = stx.model_evidence(name, mr.run.model, design, ev["original"], bs)
    audit = Audit(design, stx.poisson_weights(nu, opts.n_boot, opts.seed + 1), ev, notes=list(design.notes))
    if retrain_free:
        ent = fg.entity_mask(spec)
        pool_ent = np.isin(design.forget.users, spec.users) | np.isin(design.forget.items, spec.items)
        proxy = None
        if ent.any():
            proxy, n_reinit = fg.reinit_proxy(o.run.model, spec, opts.seed)
            audit.notes.append(
                f"retrain-free proxy: the original model, graphs rebuilt from D_r, {n_reinit} ID-table "
                "entries set to what retraining leaves them"
            )
        ev["retrain-free"] = stx.retrain_free_evidence(
            o.run.model, o.run.train, ev["original"], proxy, spec, design, pool_ent, bs
        )
    for name, e in ev.items():
        audit.levels[name] = stx.levels(e, design, audit.weights)
    return audit


def _f(x: Any) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _message(
    name: str, ok: bool, v: float | None, bounds: Bounds, lc: float | None, lr: float | None, ref_name: str
) -> str:
    verdict = "ok" if ok else "FAILED"
    fmt = lambda x: "n/a" if x is None else f"{x:.4f}"  # noqa: E731
    what = {
        "forget_hr_gap": f"forget HR@20 against {ref_name}'s: {fmt(lc)} vs {fmt(lr)}, gap",
        "rank_w1": f"D_f rank percentiles against {ref_name}'s: W₁",
        "mia_auc_gap": f"MIA AUC − {ref_name}'s = {fmt(lc)} − {fmt(lr)}",
        "user_mia_auc_gap": f"user-level MIA AUC − {ref_name}'s = {fmt(lc)} − {fmt(lr)}",
        "diff_auc_gap": f"difference-attack AUC (from the original) − {ref_name}'s = {fmt(lc)} − {fmt(lr)}",
        "retain_recall_ratio": f"retain Recall@20 against {ref_name}'s: {fmt(lc)} / {fmt(lr)}, ratio",
        "retain_ndcg_ratio": f"retain NDCG@20 against {ref_name}'s: {fmt(lc)} / {fmt(lr)}, ratio",
    }[name]
    val = "n/a" if v is None else (f"{v:+.4f}" if stx.STAT_BY_NAME[name].sided == "two-sided" else f"{v:.4f}")
    return f"{what} {val}: {verdict} ({bounds.text()})"


LEVEL_KEY = {
    "forget_hr_gap": "forget_hr",
    "rank_w1": None,
    "mia_auc_gap": "mia_auc",
    "user_mia_auc_gap": "user_mia_auc",
    "diff_auc_gap": "diff_auc",
    "retain_recall_ratio": "retain_recall",
    "retain_ndcg_ratio": "retain_ndcg",
}


def assess(
    audit: Audit,
    ref: str,
    policy: Policy,
    calibration: Calibration | None,
    candidate: str = "unlearned",
    second: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every statistic of ``candidate`` (and the original, and ``second``) against ``ref`` with its
    bounds (calibrated, or revision 1), and the power of the audit. Returns (rows, power)."""
    level = "retrain" if ref != "retrain-free" else "retrain-free"
    ref_name = "Retrain" if level == "retrain" else "the retrain-free reference"
    vc = audit.compare(candidate, ref)
    vo = audit.compare("original", ref, rows=1)
    vs = audit.compare(second, ref, rows=1) if second else None
    tol: dict[str, float] = {}
    q_level, plain, null = None, {}, None
    if calibration is not None:
        avail = [n for n in stx.STAT_NAMES if _f(vc[n][0]) is not None]
        tol, q_level, plain = calibration.tolerances(policy, level, avail)
        null = calibration.null(level)
    rows = []
    for st in stx.STATS:
        n = st.name
        v = _f(vc[n][0])
        centre = 1.0 if st.sided == "lower" else 0.0
        b1 = None
        if calibration is not None:
            bounds = bounds_from_tolerance(st.sided, tol[n]) if n in tol else Bounds(None, None)
            source = (
                ("floor" if tol[n] <= policy.floor(n) + 1e-12 else "calibrated")
                if n in tol
                else "not available"
            )
        else:
            b1 = revision1_bounds(policy, n)
            bounds = b1 or Bounds(None, None)
            source = "revision 1 policy" if b1 else "not checked (no calibration)"
        checked = (bounds.lo is not None or bounds.hi is not None) and v is not None
        if calibration is None and b1 is not None and v is None and n != "user_mia_auc_gap":
            checked = True  # revision 1: a value needed by a check but missing fails it
        if v is None and n == "user_mia_auc_gap":  # as with a calibration: too few users for the audit
            source = "not available (fewer deleted or held-out users than the user-level audit needs)"
        ok = bounds.contains(v) if v is not None else (False if checked else None)
        o, sv = _f(vo[n][0]), _f(vs[n][0]) if vs is not None else None
        sv_src = "model" if vs is not None else None
        sv_range = None
        if sv is None and null is not None:
            sv, sv_range = null.typical_seed_value(n)
            sv_src = "calibration (median distance over its retrain pairs)" if sv is not None else None
        lk = LEVEL_KEY[n]
        if n == "user_mia_auc_gap":
            lc, lr = _f(audit.user_auc(candidate, ref)[0]), _f(audit.user_auc(ref, ref)[0])
        else:
            lc = _f(audit.levels[candidate][lk][0]) if lk else None
            lr = _f(audit.levels[ref][lk][0]) if lk else None
        t = tol.get(n)
        if calibration is None and bounds.hi is not None:
            t = bounds.hi - centre if st.sided != "lower" else None
        if calibration is None and st.sided == "lower" and bounds.lo is not None:
            t = 1.0 - bounds.lo
        rows.append(
            {
                "name": n,
                "label": st.label,
                "kind": st.kind,
                "sided": st.sided,
                "formula": st.formula,
                "candidate": v,
                "candidate_ci95": stx.interval(vc[n][1:]),
                "candidate_level": lc,
                "reference_level": lr,
                "original": o,
                "second_retrain": sv,
                "second_retrain_source": sv_src,
                "second_retrain_range": sv_range,
                "bounds": bounds.to_list(),
                "bound_text": bounds.text(),
                "tolerance": t,
                "floor": policy.floor(n) if calibration is not None else None,
                "null_quantile": plain.get(n),
                "tolerance_source": source,
                "checked": bool(checked),
                "passed": ok,
                "original_passed": bounds.contains(o) if checked else None,
                "second_retrain_passed": bounds.contains(sv) if checked else None,
                "normalised": {
                    "candidate": bounds.normalised(v, centre),
                    "original": bounds.normalised(o, centre),
                    "second_retrain": bounds.normalised(sv, centre),
                },
                "message": _message(n, bool(ok), v, bounds, lc, lr, ref_name) if checked else "",
            }
        )
    forgetting = [r for r in rows if r["kind"] == "forgetting" and r["checked"]]
    power: dict[str, Any] = {
        "level": level,
        "quantile_level": q_level,
        "original_within_tolerance": bool(forgetting) and all(r["original_passed"] for r in forgetting),
        "original_outside": [r["name"] for r in forgetting if r["original_passed"] is False],
    }
    if null is not None:
        outside = []
        for r in forgetting:
            b = Bounds(*r["bounds"])
            if any(b.contains(x) is False for x in null.original.get(r["name"], []) if x is not None):
                outside.append(r["name"])
        power["calibration_original_outside"] = outside
    return rows, power


def calibrated_verdict(
    audit: Audit,
    ref: str,
    policy: Policy,
    calibration: Calibration,
    candidate: str,
    n_forget: int,
    pre_deletion: bool,
) -> tuple[str, list[str], list[dict[str, Any]], dict[str, Any]]:
    """The calibrated verdict of ``candidate`` against ``ref`` in one audit, from its statistics alone
    (:func:`assess` then :func:`decide`; none of :func:`certify`'s time or consistency checks): (verdict,
    reasons, rows, power)."""
    rows, power = assess(audit, ref, policy, calibration, candidate)
    failed = [r["message"] for r in rows if r["checked"] and not r["passed"]]
    label = "the retrain-free reference" if ref == "retrain-free" else "Retrain"
    verdict, reasons, _ = decide(rows, power, failed, n_forget, policy, True, pre_deletion, label)
    return verdict, reasons, rows, power


def decide(
    rows: list[dict[str, Any]],
    power: dict[str, Any],
    failed: list[str],
    n_forget: int,
    policy: Policy,
    calibrated: bool,
    pre_deletion: bool,
    ref_label: str,
) -> tuple[str, list[str], dict[str, Any]]:
    """The verdict (module docstring) from the statistics' rows, the audit's power and the failed checks'
    messages. Returns (verdict, reasons, the ``inconclusive`` block)."""
    info: dict[str, Any] = {
        "min_forget_pairs": policy.min_forget_pairs,
        "n_forget_pairs": n_forget,
        "too_small": calibrated and n_forget < policy.min_forget_pairs,
        "original_is_pre_deletion": pre_deletion,
        **power,
    }
    if not calibrated:
        return ("failed", failed, info) if failed else ("passed", [], info)
    if n_forget < policy.min_forget_pairs:
        msg = (
            f"inconclusive: D_f has {n_forget} pairs; the calibrated statistics need at least "
            f"{policy.min_forget_pairs} (policy min_forget_pairs) to have power"
        )
        return "inconclusive", [msg, *failed], info
    if failed:
        return "failed", failed, info
    if pre_deletion:
        powerless, basis = bool(power["original_within_tolerance"]), "the original model given"
    else:
        powerless = not power.get("calibration_original_outside")
        basis = "the calibration's original (the original given already forgot D_f)"
    info |= {"powerless": powerless, "power_basis": basis}
    if not powerless:
        return "passed", [], info
    within = ", ".join(
        f"{r['name']} {r['original']:.4f} ({r['bound_text']})"
        for r in rows
        if r["kind"] == "forgetting" and r["checked"] and r["original"] is not None
    )
    msg = (
        f"inconclusive: the audit cannot tell the original model from {ref_label}: {basis} is itself within "
        f"tolerance on every forgetting statistic ({within})"
    )
    return "inconclusive", [msg], info


def certify(
    dataset: RecDataset,
    spec: ForgetSpec,
    original: ModelRun | Path | str,
    unlearned: ModelRun | Path | str,
    retrained: ModelRun | Path | str | None = None,
    policy: Policy | None = None,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    out_dir: Path | str | None = None,
    options: AuditOptions | None = None,
    overwrite: bool = False,
    *,
    calibration: Calibration | Path | str | None = None,
    second_retrained: ModelRun | Path | str | None = None,
) -> Certificate:
    """Audit ``unlearned`` for the deletion ``spec`` and return the signed :class:`Certificate` (typed;
    it also reads as the JSON document, ``cert["passed"]``); with ``out_dir`` also write it, the HTML
    report and the plots there atomically. Models are :class:`ModelRun` (see :func:`open_run`) or run
    folders, loaded on ``dataset``. ``calibration``: a :class:`~tru.certify.calibration.Calibration` or
    its folder (revision-2 tolerances; refused when it does not cover this data, model, regime or
    size); ``second_retrained``: another retrain on D_r, shown (and checked) as the second retrain."""
    t0 = time.perf_counter()
    policy = policy or Policy()
    opts = options or AuditOptions()
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise CertifyError("certify: give at least one seed for the membership audits")
    if len(spec.forget) == 0:
        raise DataError(f"deletion requests for dataset {dataset.name!r}: D_f is empty, nothing to certify")
    if out_dir is not None:
        check_out(Path(out_dir), overwrite)
    original, unlearned = _as_run(original, dataset, spec), _as_run(unlearned, dataset, spec)
    retrained = _as_run(retrained, dataset, spec) if retrained is not None else None
    bindings = check_models(dataset, spec, original, unlearned, retrained)
    second = _as_run(second_retrained, dataset, spec) if second_retrained is not None else None
    if second is not None:
        check_second_retrain(dataset, spec, second, bindings)
    cal = as_calibration(calibration)
    if cal is not None:
        cal.check_applies(dataset, spec, original.run.config, original.run.model.name, policy)
    nu, ni, bs = dataset.n_users, dataset.n_items, opts.batch_size
    runs = {"original": original, "unlearned": unlearned} | ({"retrained": retrained} if retrained else {})
    if second is not None:
        runs["second_retrained"] = second
    audit = run_audit(dataset, spec, runs, opts, seeds, retrain_free=retrained is None)
    notes: list[str] = list(audit.notes)
    ref = "retrained" if retrained is not None else "retrain-free"
    rows, power = assess(audit, ref, policy, cal, "unlearned", "second_retrained" if second else None)

    # per-model blocks (the numbers MLflow and the tables read)
    blocks: dict[str, dict[str, Any]] = {}
    for name, mr in runs.items():
        block = _model_block(mr, dataset, spec, opts)
        lv = dict(audit.levels[name])
        if audit.design.user is not None:
            lv["user_mia_auc"] = audit.user_auc(name, ref)
        for key in ("mia_auc", "user_mia_auc", "diff_auc"):
            if key in lv and _f(lv[key][0]) is not None:
                block[key] = _f(lv[key][0])
                block[f"{key}_ci95"] = stx.interval(lv[key][1:])
        ev = audit.evidence[name]
        block["forget_rank_pct_mean"] = float(np.mean(ev.forget_pct)) if len(ev.forget_pct) else None
        blocks[name] = block

    # membership audits: per-seed AUCs and the first seed's ROC (the plots)
    mia_audits: dict[str, dict[str, Any]] = {}
    user_audits: dict[str, dict[str, Any]] = {}
    sets = stx.mia_eval_sets(audit.design)
    for name, ev in audit.evidence.items():
        lv = audit.levels[name]
        if ev.mia is not None:
            mia_audits[name] = _roc_block(ev.mia, sets, lv["mia_auc"])
        elif ev.mia_const is not None:
            mia_audits[name] = {"auc": ev.mia_const, "ci95": [ev.mia_const, ev.mia_const], "constant": True}
        if ev.user_feats is not None and audit.design.user is not None:
            ua = audit.user_auc(name, ref)
            user_audits[name] = {"auc": _f(ua[0]), "ci95": stx.interval(ua[1:]), "attack_trained_on": ref}

    # efficiency
    u_meta = unlearned.unlearn or {}
    if unlearned.unlearn is None:
        notes.append(f"{UNLEARN_FILE} missing in the unlearned run: method, time and parameters unknown")
    blocks["unlearned"]["method"] = u_meta.get("method")
    blocks["unlearned"]["steps"] = u_meta.get("steps")
    blocks["original"]["seconds"] = _training_seconds(original)
    blocks["unlearned"]["seconds"] = u_meta.get("seconds")
    for name, mr in runs.items():
        total = _n_trainable(mr.run.model)
        blocks[name]["params_total"] = total
        blocks[name]["params_changed"] = total  # trained from scratch
    blocks["unlearned"]["params_changed"] = u_meta.get("params_changed")
    blocks["unlearned"]["params_total"] = u_meta.get("params_total", blocks["unlearned"]["params_total"])
    update = update_label(original, unlearned, spec, ni)
    measured = update["params_changed_measured"]
    blocks["unlearned"]["params_changed_measured"] = measured
    blocks["unlearned"]["update"] = update["label"]
    if update["rebuild_only"] or update["seed_noise_sigma"] > 0:
        notes.append(f"the candidate is labelled '{update['label']}': {update['why']}")
    if retrained is not None:
        blocks["retrained"]["seconds"] = _training_seconds(retrained)
        ref_sec, ref_src = blocks["retrained"]["seconds"], "retrained"
    else:
        ref_sec, ref_src = blocks["original"]["seconds"], "original training (retrain-free stand-in)"
    u_sec, p_changed = blocks["unlearned"]["seconds"], blocks["unlearned"]["params_changed"]
    p_changed = measured if p_changed is None else p_changed
    ok_time = (
        isinstance(u_sec, int | float) and isinstance(ref_sec, int | float) and ref_sec > 0 and u_sec > 0
    )
    efficiency = {
        "unlearned_seconds": u_sec,
        "reference_seconds": ref_sec,
        "reference_seconds_from": ref_src,
        "time_ratio": u_sec / ref_sec if ok_time else None,
        "speedup": ref_sec / u_sec if ok_time else None,
        "params_changed": p_changed,
        "params_changed_measured": measured,
        "params_total": blocks["unlearned"]["params_total"],
        "params_changed_fraction": (p_changed / blocks["unlearned"]["params_total"])
        if p_changed is not None and blocks["unlearned"]["params_total"]
        else None,
        "update": update["label"],
    }
    for name in ("original", "unlearned", "retrained"):
        if name in blocks and blocks[name].get("seconds") is None:
            notes.append(
                f"{name}: no wall time recorded (run.json training.seconds / {UNLEARN_FILE} seconds)"
            )

    # closeness and the reference
    closeness: dict[str, dict[str, float]] = {}
    lr = audit.levels[ref]
    reference: dict[str, Any] = {
        "kind": "retrain" if retrained is not None else "retrain-free",
        "forget_hr@20": _f(lr["forget_hr"][0]),
        "mia_auc": _f(lr["mia_auc"][0]),
        "retain_recall@20": _f(lr["retain_recall"][0]),
        "retain_ndcg@20": _f(lr["retain_ndcg"][0]),
    }
    if _f(lr["diff_auc"][0]) is not None:
        reference["diff_auc"] = _f(lr["diff_auc"][0])
    if audit.design.user is not None:
        reference["user_mia_auc"] = _f(audit.user_auc(ref, ref)[0])
    if retrained is not None:
        for name in ("unlearned", "original"):
            closeness[name] = fg.closeness(
                runs[name].run.model, retrained.run.model, spec.affected_users, spec.retain, nu, ni, fg.K, bs
            )
            blocks[name]["closeness_to_retrain"] = closeness[name]
    else:
        ent = fg.entity_mask(spec)
        reference["mia_reference"] = (
            "AUC of the re-initialised proxy (deleted users / items present)"
            if ent.any()
            else "0.5: deleted and held-out pairs are exchangeable when never seen"
        )

    # checks and the verdict
    checks: list[dict[str, Any]] = [
        {
            "name": r["name"],
            "passed": bool(r["passed"]),
            "value": r["candidate"],
            "bound": r["bound_text"],
            "message": r["message"],
        }
        for r in rows
        if r["checked"]
    ]
    if retrained is None and not policy.allow_retrain_free:
        checks.append(
            _check(
                "retrain_required",
                False,
                None,
                "a retrained model",
                "policy requires a retrain comparison: FAILED",
            )
        )
    if policy.max_time_ratio is not None:
        ratio = efficiency.get("time_ratio")
        ok = ratio is not None and ratio <= policy.max_time_ratio
        checks.append(
            _check(
                "time_ratio",
                ok,
                ratio,
                f"≤ {policy.max_time_ratio:g}",
                f"unlearning seconds / retrain seconds: {'ok' if ok else 'FAILED'} "
                f"({'n/a' if ratio is None else f'{ratio:.4f}'} vs ≤ {policy.max_time_ratio:g})",
            )
        )
    fp_r = pairs_fingerprint(spec.retain, ni)
    for name, mr in (("unlearned", unlearned), ("retrained", retrained)):
        what = "the retain set D_r = D \\ D_f of these requests"
        bad = _consistency(name, mr, fp_r, what, ni) if mr is not None else None
        if bad:
            checks.append(bad)
    failed = [c["message"] for c in checks if not c["passed"]]
    for r in rows:
        if cal is not None and r["candidate"] is not None and not r["checked"]:
            notes.append(
                f"{r['name']} measured ({r['candidate']:.4f}) but not checked: the calibration has no null "
                "for it (its forget set could not measure it)"
            )
    pre_deletion = pairs_fingerprint(original.run.train, ni) != fp_r
    ref_label = "Retrain" if retrained is not None else "the retrain-free reference"
    verdict, reasons, inconclusive = decide(
        rows, power, failed, len(spec.forget), policy, cal is not None, pre_deletion, ref_label
    )
    if retrained is None:
        # the fast path's gate (certification.md §5): a retrain-free pass counts only where the calibration
        # measured retrain-free verdicts agreeing with retrain's often enough
        if cal is not None:
            trusted, why = cal.retrain_free_trusted(policy)
        else:
            trusted = policy.min_retrain_free_agreement <= 0
            why = "no calibration measured how often retrain-free verdicts agree with retrain's" + (
                " (the policy's min_retrain_free_agreement is 0: not required)" if trusted else ""
            )
        notes.append(why)
        if verdict == "passed" and not trusted:
            verdict, reasons = "inconclusive", [f"inconclusive: {why}"]
            inconclusive["retrain_free_untrusted"] = why
    if cal is not None and not pre_deletion:
        notes.append(
            "the original given was trained without D_f (a confirmation run): the audit's power is judged on "
            "the calibration's original"
        )
    if cal is None and pre_deletion and power["original_within_tolerance"]:
        notes.append(
            "the original model is itself within the fixed revision-1 tolerances on every checked forgetting "
            "statistic: without a calibration this certificate cannot tell it from the reference"
        )
    if cal is None:
        notes.append(
            "tolerances: fixed revision-1 policy (no calibration); give --calibration DIR for revision 2"
        )
    cal_summary = None
    if cal is not None:
        cal_summary = cal.summary() | {
            "same_forget_set": cal.document["forget_set"]["forget_commitment"] == spec.forget_commitment(ni),
            "level": power["level"],
        }
        if retrained is None and cal_summary["same_forget_set"]:
            notes.append(
                "the calibration was measured on this very forget set: its retrains are this forget set's, "
                "so this retrain-free verdict had retrain evidence behind its tolerances"
            )
    summary = spec.summary(ni)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "passed": verdict == "passed",
        "verdict": verdict,
        "candidate": "unlearned",
        "models": bindings,
        "reasons": reasons,
        "evidence": EVIDENCE_RETRAIN if retrained is not None else EVIDENCE_FREE,
        "regime": spec.regime,
        "tolerances": TOL_CALIBRATED if cal is not None else TOL_FIXED,
        "statistics": rows,
        "inconclusive": inconclusive,
        "calibration": cal_summary,
        "update": update,
        "checks": checks,
        "policy": policy.to_dict(),
        "requests": summary,
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint, "n_users": nu, "n_items": ni},
        "original": blocks["original"],
        "unlearned": blocks["unlearned"],
        "retrained": blocks.get("retrained"),
        "second_retrained": blocks.get("second_retrained"),
        "reference": reference,
        "closeness": closeness,
        "efficiency": efficiency,
        "mia": mia_audits,
        "user_mia": user_audits,
        "audit": {
            "seeds": seeds,
            "pair_features": list(mia.PAIR_FEATURES),
            "user_features": list(mia.USER_FEATURES),
            "diff_features": list(stx.DIFF_FEATURES),
            "attack": "logistic regression on standardised features (scikit-learn)",
            "user_attack": "trained on the reference (its deleted users are never-seen non-members) vs "
            "retained member users, cross-fitted over user folds",
            "intervals": f"user-clustered Poisson bootstrap, {opts.n_boot} rows",
            "pools": audit.design.counts(),
        },
        "notes": notes,
        "code_version": git_commit(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    doc["certify_seconds"] = round(time.perf_counter() - t0, 3)
    doc = clean_json(doc)
    images = build_images(doc, unlearned.unlearn, unlearned.folder, doc["notes"]) if out_dir else {}
    doc = sign(clean_json(doc))  # last: the plots may add notes
    if out_dir is not None:
        files = dict(images)
        files[REPORT_FILE] = render_html(doc, images).encode()
        files[CERT_FILE] = (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode()
        write_outputs(Path(out_dir), files, overwrite)
    return Certificate.from_dict(doc)


def _check(name: str, ok: bool, value: float | None, bound: str, message: str) -> dict[str, Any]:
    return {"name": name, "passed": bool(ok), "value": value, "bound": bound, "message": message}


def _roc_block(
    scores: list[np.ndarray], sets: Sequence[tuple[np.ndarray, np.ndarray]], lv: np.ndarray
) -> dict[str, Any]:
    """AUC (user-weighted point estimate), its user-clustered interval, per-seed AUCs and seed 0's ROC."""
    ones = [stx.weighted_auc(s, lab, np.ones((1, len(s))))[0] for s, (_, lab) in zip(scores, sets)]
    fpr, tpr, _ = roc_curve(sets[0][1], scores[0])
    return {
        "auc": _f(lv[0]),
        "ci95": stx.interval(lv[1:]),
        "auc_seeds": [float(a) for a in ones],
        "roc": {"fpr": mia.ROC_GRID.tolist(), "tpr": np.interp(mia.ROC_GRID, fpr, tpr).tolist()},
        "n_eval_members": int(sets[0][1].sum()),
        "n_eval_nonmembers": int((~sets[0][1]).sum()),
    }


def verdict_agreement(
    dataset: RecDataset,
    spec: ForgetSpec,
    original: ModelRun | Path | str,
    candidate: ModelRun | Path | str,
    retrained: ModelRun | Path | str,
    calibration: Calibration | Path | str,
    policy: Policy | None = None,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    options: AuditOptions | None = None,
) -> dict[str, Any]:
    """The retrain verdict and the retrain-free verdict of one candidate from one audit (the same
    statistics; references: ``retrained`` vs tru-method.md §7's retrain-free reference; tolerances from
    ``calibration``'s retrain and retrain-free nulls), for the benchmark's agreement rate (issue 9, goal
    4). Nothing is written or signed. Returns ``{"retrain": {...}, "retrain_free": {...}, "agree": bool,
    "same_forget_set": bool}``; each side holds verdict, reasons and per-statistic value / bounds / pass.
    For an honest retrain-free measurement the calibration should come from another forget set of the
    same size and regime (``same_forget_set`` false)."""
    policy = policy or Policy()
    opts = options or AuditOptions()
    original, candidate = _as_run(original, dataset, spec), _as_run(candidate, dataset, spec)
    retrained = _as_run(retrained, dataset, spec)
    check_models(dataset, spec, original, candidate, retrained)
    cal = as_calibration(calibration)
    assert cal is not None
    cal.check_applies(dataset, spec, original.run.config, original.run.model.name, policy)
    runs = {"original": original, "unlearned": candidate, "retrained": retrained}
    audit = run_audit(dataset, spec, runs, opts, [int(s) for s in seeds], retrain_free=True)
    pre = pairs_fingerprint(original.run.train, dataset.n_items) != pairs_fingerprint(
        spec.retain, dataset.n_items
    )
    out: dict[str, Any] = {}
    for key, ref in (("retrain", "retrained"), ("retrain_free", "retrain-free")):
        verdict, reasons, rows, power = calibrated_verdict(
            audit, ref, policy, cal, "unlearned", len(spec.forget), pre
        )
        out[key] = {
            "verdict": verdict,
            "reasons": reasons,
            "statistics": {
                r["name"]: {k: r[k] for k in ("candidate", "original", "bounds", "passed")} for r in rows
            },
            "power": power,
        }
    out["agree"] = out["retrain"]["verdict"] == out["retrain_free"]["verdict"]
    out["same_forget_set"] = cal.document["forget_set"]["forget_commitment"] == spec.forget_commitment(
        dataset.n_items
    )
    return clean_json(out)


EVIDENCE_RETRAIN_SELF = "retrain (a model retrained on D_r from scratch: the reference itself)"
EVIDENCE_FALLBACK = "retrain (compliance fallback: the certification's retrain replaces a failed unlearning)"
EVIDENCE_NOTHING = "nothing new to forget (the start model passes through)"


def self_certificate(
    dataset: RecDataset, spec: ForgetSpec, model: ModelRun, *, candidate: str, evidence: str
) -> Certificate:
    """A signed certificate (typed; reads as its document) that needs no audit, for one of two models:

    * ``candidate="retrained"``: a model trained from scratch on exactly D_r is what every comparison
      compares with, so it forgets these requests by construction (the compliance fallback, a run forced
      to retrain by the deadline, a retrain-every-time pipeline). Refused unless its lineage is a
      from-scratch training and its train fingerprint is D_r's.
    * ``candidate="unlearned"`` with :data:`EVIDENCE_NOTHING`: the start model passed through because
      the run adds no request; it must already have forgotten exactly the requests of ``spec``."""
    ni = dataset.n_items
    bind = binding_of(model, ni)
    if candidate == "retrained":
        scratch = bind.lineage_kind in ("retrain", "train")
        if not scratch or bind.train_fingerprint != pairs_fingerprint(spec.retain, ni):
            raise CertifyError(
                f"{model.folder}: not a from-scratch retrain on D_r of these requests; it cannot be "
                "certified as the reference"
            )
    elif not model.run.forgotten.covers(spec.forgotten()):
        raise CertifyError(
            f"{model.folder}: has not forgotten exactly these requests; nothing to pass through"
        )
    cert = {
        "format": FORMAT,
        "passed": True,
        "verdict": "passed",
        "candidate": candidate,
        "models": {candidate: bind.to_dict()},
        "reasons": [],
        "evidence": evidence,
        "regime": spec.regime,
        "tolerances": "by construction (no audit)",
        "statistics": [],
        "checks": [],
        "requests": spec.summary(ni),
        "dataset": {"name": dataset.name, "n_users": dataset.n_users, "n_items": ni},
        "notes": [evidence],
        "code_version": git_commit(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return Certificate.from_dict(sign(clean_json(cert)))


def write_self_certificate(
    out_dir: Path | str, cert: Certificate | dict[str, Any], overwrite: bool = False
) -> Path:
    """Write a :func:`self_certificate` as ``certificate.json`` + a one-page ``report.html``."""
    import html

    cert = cert.document if isinstance(cert, Certificate) else cert

    n = (cert.get("requests") or {}).get("n_requests", 0)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>tru certificate</title></head><body>"
        f"<h1>Certificate: {html.escape(cert['verdict'])}</h1><p>{html.escape(cert['evidence'])}</p>"
        f"<p>{n} request(s); regime {html.escape(str(cert.get('regime')))}.</p></body></html>\n"
    )
    files = {
        CERT_FILE: (json.dumps(cert, indent=2, allow_nan=False) + "\n").encode(),
        REPORT_FILE: page.encode(),
    }
    return write_outputs(Path(out_dir), files, overwrite)


def run_certification(
    data_dir: Path | str,
    original_dir: Path | str,
    unlearned_dir: Path | str,
    requests_csv: Path | str,
    out_dir: Path | str,
    retrained_dir: Path | str | None = None,
    policy_path: Path | str | None = None,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    validate: bool = True,
    options: AuditOptions | None = None,
    calibration: Path | str | Calibration | None = None,
    second_retrained_dir: Path | str | None = None,
) -> Certificate:
    """What ``tru certify`` runs: load the dataset, the requests (resolved into a ForgetSpec), the policy,
    the calibration (``calibration``: the folder ``tru calibrate`` wrote) and the runs; certify; write
    ``out_dir``. Every input is checked before anything is written."""
    from tru.data.dataset import load_dataset
    from tru.forget.requests import read_requests, resolve_requests
    from tru.utils import resolve_device

    if isinstance(device, str) or device is None:
        device = resolve_device(device or "auto")

    check_out(Path(out_dir), overwrite)
    policy = load_policy(policy_path)
    cal = as_calibration(calibration)
    dataset = load_dataset(Path(data_dir), validate=validate)
    spec = resolve_requests(dataset, read_requests(requests_csv))
    original = open_run(original_dir, dataset, device, spec.requests)
    unlearned = open_run(unlearned_dir, dataset, device, spec.requests)
    retrained = open_run(retrained_dir, dataset, device, spec.requests) if retrained_dir is not None else None
    second = (
        open_run(second_retrained_dir, dataset, device, spec.requests)
        if second_retrained_dir is not None
        else None
    )
    return certify(
        dataset,
        spec,
        original,
        unlearned,
        retrained,
        policy,
        seeds,
        out_dir,
        options,
        overwrite,
        calibration=cal,
        second_retrained=second,
    )
