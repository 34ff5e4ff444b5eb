"""Calibration of the certificate (certification.md §1): the null distribution of every statistic between
two models that are certified by definition, two retrains with different seeds.

For a dataset, a model (backbone + training recipe), a regime and a forget set, K ≥ 3 retrains R_1..R_K
on the same D_r with seeds s_1..s_K give

* the **retrain null**: T_b(R_j, R_k) for every ordered pair j ≠ k and every user-clustered bootstrap
  row b = 0..B (:mod:`tru.certify.statistics`: Poisson(1) weights per user, b = 0 the point estimate):
  seed-to-seed variation × forget-set sampling variation, K(K−1)(B+1) draws per statistic;
* the **retrain-free null**: T_b(R_k, F) against the retrain-free reference F (tru-method.md §7: the
  original's test-pair ranks, the re-initialised proxy), K(B+1) draws: how far a genuine retrain sits
  from the proxy targets, which is what a retrain-free certificate must allow;
* the original's distance to each retrain (and to F): whether the audit can tell the original from
  retrain at all on this forget set.

Tolerance of statistic s (:func:`tolerances`): t_s = max(floor_s, Q_s(q)) on the excess e = |v| (two
sided), v (W₁) or 1 − v (ratios), with q = the policy's quantile (0.95) raised, when ``joint_level``,
to the smallest q' ≥ q at which a fraction q of the null draws is within tolerance on every statistic at
once (a second retrain must pass all of them, not each one 95 % of the time).

The artifact (``calibration.json``, signed like a certificate; ``null.png``) is reusable for later
certificates of the same model (backbone + recipe) on the same data version, in the same regime, for
forget sets whose size lies in its coverage [n / f, n · f] (pairs, and deleted users / items, f = 2 by
default). Anything else is refused with a message that says what differs.

Artifact (``calibration.json``, format ``tru-calibration/1``, signed)::

    format, created_at, code_version, calibrate_seconds, signature
    dataset      {name, fingerprint, n_users, n_items}                         (the data version)
    model        {backbone, recipe, recipe_sha256, original_weights_sha256, original_seed}
    regime, forget_set {n_forget_pairs, n_units, unit, n_affected_users, forget_commitment,
                        requests_commitment}
    coverage     {factor, n_forget_pairs: [lo, hi], n_units: [lo, hi]}
    k, seeds, retrains [{seed, weights_sha256, seconds, folder}]
    bootstrap    {kind, n_boot, seed};  audit {seeds, max_pairs, max_users, design, notes}
    statistics   {name: {label, sided, kind, formula}}
    levels       {original, retrains: [...], retrain-free}: forget HR, AUCs, retain Recall / NDCG
    null         {retrain | retrain-free: {samples: {name: [excess draws]},
                                           seed_values: {name: [signed b = 0 values]},
                                           original: {name: [signed values vs each reference]}}}
    agreement    {rows, agree, candidate_rows, candidate_agree, rate, retrain_free_pass_retrain_not,
                  retrain_pass_retrain_free_not, policy, models: {name: {rows, agree}},
                  table: [{model, reference, retrain, retrain_free}]}
    tolerances   {policy, retrain | retrain-free: {level, statistics: {name: {quantiles, quantile_plain,
                  null_median, null_max, floor, tolerance, floored, original_excess}}}}
    seed_noise   {attack, aucs: [per retrain], auc (median; null without interaction pairs),
                  n_forget_pairs, n_held_out_pairs}: the difference attack's AUC on the change of z from
                  the original to each retrain (D_f's interaction pairs against valid pairs), what
                  ``tru unlearn --calibration`` gives the start of a later deletion
                  (:mod:`tru.unlearn.seed_noise`)

The **agreement** (certification.md §5) decides whether a retrain-free pass may promote a model: every
model the calibration holds (the original, each retrain, and the candidates, unlearning methods such as
TRU run on this forget set) is judged twice with the calibrating policy, against each retrain but its own
(the retrain verdict) and against the retrain-free reference (the retrain-free verdict). ``rate`` is
measured on the candidates' rows only: the retrains' rows are in-sample (the null holds those very
pairs) and the original's fail both ways whenever the audit has power, so they would agree by
construction. A certificate without a retrain counts a pass only when ``rate`` reaches the policy's
``min_retrain_free_agreement`` and the calibration was measured under the same tolerance settings
(otherwise: inconclusive, and the pipeline falls back to the retrain)."""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tru.certify import statistics as stx
from tru.certify.binding import canonical_json, sign, signature_valid
from tru.certify.output import CertifyError, clean_json
from tru.certify.policy import Policy
from tru.checkpoint import pairs_fingerprint, weights_sha256
from tru.data.dataset import RecDataset
from tru.forget.spec import ForgetSpec
from tru.unlearn.seed_noise import RetrainAttack
from tru.utils import git_commit

CAL_FILE = "calibration.json"
NULL_PNG = "null.png"
RETRAINS_DIR = "retrains"
FORMAT = "tru-calibration/1"
LEVELS = ("retrain", "retrain-free")
#: config keys that do not change what training produces (besides the seed, which the K retrains vary)
RECIPE_IGNORE = ("seed", "device", "threads", "eval_batch_size", "unlearn", "deterministic")
DEFAULT_COVERAGE = 2.0
ROUND = 6


def recipe_of(config: dict[str, Any]) -> dict[str, Any]:
    """The training recipe of a model config: every key but :data:`RECIPE_IGNORE`."""
    return {k: v for k, v in sorted(config.items()) if k not in RECIPE_IGNORE}


def recipe_sha256(config: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(clean_json(recipe_of(config)))).hexdigest()


def forget_units(spec: ForgetSpec) -> int:
    """The size of a forget set in its regime's unit: deleted users (user), target items (item), affected
    users (interaction)."""
    if spec.regime == "user":
        return len(spec.users)
    if spec.regime == "item":
        return len(spec.items)
    return len(spec.affected_users)


def coverage_of(n_pairs: int, n_units: int, factor: float) -> dict[str, Any]:
    return {
        "factor": factor,
        "n_forget_pairs": [math.ceil(n_pairs / factor), math.floor(n_pairs * factor)],
        "n_units": [math.ceil(n_units / factor), math.floor(n_units * factor)],
    }


def tolerances(
    samples: dict[str, np.ndarray], policy: Policy, names: Sequence[str] | None = None
) -> tuple[dict[str, float], float, dict[str, float]]:
    """(tolerance per statistic, the quantile level used, the plain ``null_quantile`` quantile per
    statistic) from null excess draws (module docstring). A NaN draw counts as within tolerance."""
    names = [n for n in (names or samples) if n in samples and np.isfinite(samples[n]).any()]
    q0 = policy.null_quantile
    plain = {n: float(np.nanquantile(samples[n], q0)) for n in names}
    if not names:
        return {}, q0, plain
    x = np.column_stack([samples[n] for n in names])

    def at(q: float) -> dict[str, float]:
        return {n: max(policy.floor(n), float(np.nanquantile(x[:, j], q))) for j, n in enumerate(names)}

    if not policy.joint_level:
        return at(q0), q0, plain
    for q in np.linspace(q0, 1.0, 401):
        tol = at(float(q))
        ok = np.all(np.isnan(x) | (x <= np.array([tol[n] for n in names]) + 1e-12), axis=1)
        if ok.mean() >= q0:
            return tol, float(q), plain
    return at(1.0), 1.0, plain


@dataclass
class NullSet:
    """One evidence level's null: excess draws per statistic, the signed point values (b = 0) per model
    pair, and the original's signed distance to each reference."""

    samples: dict[str, np.ndarray]
    seed_values: dict[str, list[float]]
    original: dict[str, list[float]]

    def typical_seed_value(self, name: str) -> tuple[float | None, list[float] | None]:
        """Where a second retrain sits, from the calibration's K(K−1) retrain pairs (point estimates): the
        median distance d = |v − c| (c = 0, or 1 for ratios) put on the failing side (c + d; c − d for
        ratios, whose failing side is below 1), and the range [c ± min d, c ± max d]. The signed values
        themselves are symmetric over ordered pairs (median ≈ c), which would hide the spread."""
        v = [x for x in self.seed_values.get(name, []) if x is not None and np.isfinite(x)]
        if not v:
            return None, None
        lower = stx.STAT_BY_NAME[name].sided == "lower"
        c, sign = (1.0, -1.0) if lower else (0.0, 1.0)
        d = np.abs(np.asarray(v) - c)
        return float(c + sign * np.median(d)), sorted([float(c + sign * d.min()), float(c + sign * d.max())])


# the policy keys a calibrated verdict depends on: an agreement measured under others does not carry over
TOLERANCE_KEYS = ("null_quantile", "joint_level", "min_forget_pairs", *(f"floor_{n}" for n in stx.STAT_NAMES))


@dataclass
class Calibration:
    """A loaded (or freshly measured) calibration artifact; ``document`` is the signed JSON."""

    document: dict[str, Any]
    folder: Path | None = None

    # -------------------------------------------------------------------------------- accessors
    @property
    def regime(self) -> str:
        return str(self.document["regime"])

    @property
    def k(self) -> int:
        return int(self.document["k"])

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in self.document["seeds"]]

    @property
    def seed_noise_auc(self) -> float | None:
        """The retrains' difference-attack AUC on the change of z (the seed-noise target of a later
        deletion); None for an artifact measured before it was recorded."""
        block = self.document.get("seed_noise")
        return float(block["auc"]) if block and block.get("auc") is not None else None

    @property
    def digest(self) -> str:
        """sha256 of the signed document (the certificate records it)."""
        return hashlib.sha256(canonical_json(self.document)).hexdigest()

    def null(self, level: str) -> NullSet:
        raw = self.document["null"][level]
        return NullSet(
            {
                n: np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
                for n, vals in raw["samples"].items()
            },
            {n: list(v) for n, v in raw["seed_values"].items()},
            {n: list(v) for n, v in raw["original"].items()},
        )

    def tolerances(
        self, policy: Policy, level: str, names: Sequence[str] | None = None
    ) -> tuple[dict[str, float], float, dict[str, float]]:
        return tolerances(self.null(level).samples, policy, names)

    def retrain_free_trusted(self, policy: Policy) -> tuple[bool, str]:
        """Whether a retrain-free pass may count (module docstring, the agreement): (ok, why)."""
        if policy.min_retrain_free_agreement <= 0:
            return True, "retrain-free / retrain agreement not required (policy min_retrain_free_agreement 0)"
        a = self.document.get("agreement")
        if not a or not a.get("candidate_rows"):
            return False, (
                "the calibration holds no measurement of how often an unlearned model's retrain-free "
                "verdict agrees with its retrain verdict (calibrate again, with --candidates)"
            )
        measured = a.get("policy") or {}
        differs = [k for k in TOLERANCE_KEYS if measured.get(k) != getattr(policy, k)]
        if differs:
            return False, (
                "the calibration measured the agreement under other tolerance settings ("
                + ", ".join(f"{k}: {measured.get(k)} → {getattr(policy, k)}" for k in differs[:4])
                + "): calibrate again with this policy"
            )
        rate, need = float(a["rate"]), policy.min_retrain_free_agreement
        what = (
            f"agreed with retrain's in {a['candidate_agree']} of {a['candidate_rows']} calibration rows of "
            f"unlearned models ({rate:.0%})"
        )
        if rate < need:
            return False, (
                f"retrain-free verdicts {what}; the policy needs {need:.0%} (min_retrain_free_agreement)"
            )
        return True, f"retrain-free verdicts {what}"

    def summary(self) -> dict[str, Any]:
        """What a certificate records of the calibration it used."""
        d = self.document
        return {
            "sha256": self.digest,
            "folder": str(self.folder) if self.folder else None,
            "created_at": d.get("created_at"),
            "k": self.k,
            "seeds": self.seeds,
            "regime": self.regime,
            "forget_set": d["forget_set"],
            "coverage": d["coverage"],
            "n_boot": d["bootstrap"]["n_boot"],
            "agreement": {k: v for k, v in (d.get("agreement") or {}).items() if k != "table"} or None,
            "same_forget_set": None,
        }

    # ---------------------------------------------------------------------------------- checks
    def check_applies(
        self, dataset: RecDataset, spec: ForgetSpec, config: dict[str, Any], backbone: str, policy: Policy
    ) -> None:
        """Refuse (:class:`CertifyError`) a certificate this calibration does not cover: another data
        version, another model (backbone or training recipe), another regime, a forget set outside its
        size coverage, or fewer retrains than the policy requires."""
        d, where = self.document, f"calibration {self.folder or ''}".rstrip()
        if self.k < policy.min_calibration_retrains:
            raise CertifyError(
                f"{where}: built from {self.k} retrain(s); the policy requires at least "
                f"{policy.min_calibration_retrains} (min_calibration_retrains)"
            )
        data = d["dataset"]
        if data["fingerprint"] != dataset.fingerprint or (data["n_users"], data["n_items"]) != (
            dataset.n_users,
            dataset.n_items,
        ):
            raise CertifyError(
                f"{where}: measured on data version {data['name']!r} (fingerprint "
                f"{data['fingerprint'][:12]}…, {data['n_users']} × {data['n_items']}), not on this data "
                f"({dataset.name!r}, fingerprint {dataset.fingerprint[:12]}…, {dataset.n_users} × "
                f"{dataset.n_items}): calibrate again on this data version"
            )
        model = d["model"]
        if model["backbone"] != backbone or model["recipe_sha256"] != recipe_sha256(config):
            mine = clean_json(recipe_of(config))
            diff = sorted(
                k for k in set(mine) | set(model["recipe"]) if mine.get(k) != model["recipe"].get(k)
            )
            what = ", ".join(f"{k}: {model['recipe'].get(k)!r} → {mine.get(k)!r}" for k in diff[:6])
            raise CertifyError(
                f"{where}: made for model {model['backbone']} with training recipe "
                f"{model['recipe_sha256'][:12]}…, not for this {backbone} model"
                + (f" (recipe differs in {what})" if what else "")
                + ": calibrate with this model"
            )
        if spec.regime != self.regime:
            raise CertifyError(
                f"{where}: calibrated for the {self.regime} regime; these requests are in the {spec.regime} "
                "regime: calibrate for it"
            )
        cov = d["coverage"]
        n_pairs, n_units = len(spec.forget), forget_units(spec)
        lo_p, hi_p = cov["n_forget_pairs"]
        lo_u, hi_u = cov["n_units"]
        if not (lo_p <= n_pairs <= hi_p and lo_u <= n_units <= hi_u):
            fs = d["forget_set"]
            raise CertifyError(
                f"{where}: covers forget sets of {lo_p}–{hi_p} pairs and {lo_u}–{hi_u} {fs['unit']} "
                f"(measured on {fs['n_forget_pairs']} pairs, {fs['n_units']} {fs['unit']}); these requests "
                f"delete {n_pairs} pairs, {n_units} {fs['unit']}: calibrate for this size"
            )

    # -------------------------------------------------------------------------------------- I/O
    @classmethod
    def load(cls, folder: Path | str) -> Calibration:
        """Read ``calibration.json`` from a folder (or the file); refuse one that is not signed by this
        installation or was edited."""
        path = Path(folder)
        path = path / CAL_FILE if path.is_dir() else path
        if not path.is_file():
            raise CertifyError(f"{path}: no calibration; expected the folder `tru calibrate` wrote")
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CertifyError(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            got = doc.get("format") if isinstance(doc, dict) else None
            raise CertifyError(f"{path}: format {got!r}; expected {FORMAT!r}")
        if not signature_valid(doc):
            raise CertifyError(
                f"{path}: signature missing or invalid: not written by this installation's `tru calibrate`, "
                "or edited afterwards; a calibration sets the tolerances, so it is refused"
            )
        return cls(doc, path.parent)

    def files(self) -> dict[str, bytes]:
        """The artifact's files: ``calibration.json`` and the null plot."""
        from tru.certify.report import plot_null

        return {
            CAL_FILE: (json.dumps(self.document, indent=1, allow_nan=False) + "\n").encode(),
            NULL_PNG: plot_null(self.document),
        }

    def write(self, folder: Path | str) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.files().items():
            (folder / name).write_bytes(data)
        self.folder = folder
        return folder


def as_calibration(cal: Calibration | Path | str | None) -> Calibration | None:
    if cal is None or isinstance(cal, Calibration):
        return cal
    return Calibration.load(cal)


# ---------------------------------------------------------------------------------------- measuring
def _r(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), ROUND)


def _levels_b0(ev: stx.Evidence, design: stx.AuditDesign) -> dict[str, float | None]:
    return {k: _r(v[0]) for k, v in stx.levels(ev, design, np.ones((1, design.n_users))).items()}


def check_retrains(
    dataset: RecDataset, spec: ForgetSpec, original: Any, retrains: Sequence[Any], min_k: int
) -> list[str]:
    """Refuse retrains that cannot make a null: fewer than ``min_k``, not from-scratch trainings on
    exactly D_r, another backbone or recipe than the original's, or **identical weights** (two seeds that
    gave the same model: the seed did not reach training, and a null built on them would have zero
    width). Returns the weights hashes."""
    if len(retrains) < min_k:
        raise CertifyError(f"calibration needs K ≥ {min_k} retrains (different seeds); got {len(retrains)}")
    fp_r = pairs_fingerprint(spec.retain, dataset.n_items)
    want = recipe_sha256(original.run.config)
    hashes = []
    for mr in retrains:
        run = mr.run
        if (
            run.lineage.kind not in ("retrain", "train")
            or pairs_fingerprint(run.train, dataset.n_items) != fp_r
        ):
            raise CertifyError(f"{mr.folder}: not a from-scratch retrain on D_r of these requests")
        if run.model.name != original.run.model.name or recipe_sha256(run.config) != want:
            raise CertifyError(
                f"{mr.folder}: trained with another backbone or recipe than the original "
                f"({run.model.name} vs {original.run.model.name}): the null must vary only the seed"
            )
        hashes.append(weights_sha256(run.model.state_dict()))
    seen: dict[str, Any] = {}
    for mr, h in zip(retrains, hashes):
        if h in seen:
            from tru.certify.certificate import training_seed

            s1, s2 = training_seed(seen[h]), training_seed(mr)
            raise CertifyError(
                f"retrains {seen[h].folder} (seed {s1}) and {mr.folder} (seed {s2}) have identical weights: "
                "the retrain seed does not reach training (or the same seed was given twice); a null built "
                "on them would have zero width"
            )
        seen[h] = mr
    return hashes


class MemoCalibration(Calibration):
    """A :class:`Calibration` whose nulls and tolerances are computed once per (level, statistics): a
    cell's verdicts ask for the same tolerances once per candidate, and the joint level's search over
    quantiles costs about a second each time (:meth:`Calibration.tolerances` recomputes it on
    every call)."""

    def __init__(self, document: dict[str, Any], folder: Path | None = None) -> None:
        super().__init__(document, folder)
        self._nulls: dict[str, Any] = {}
        self._tols: dict[tuple[Any, ...], Any] = {}

    def null(self, level: str) -> Any:
        if level not in self._nulls:
            self._nulls[level] = super().null(level)
        return self._nulls[level]

    def tolerances(
        self, policy: Policy, level: str, names: Sequence[str] | None = None
    ) -> tuple[dict[str, float], float, dict[str, float]]:
        key = (policy, level, tuple(names) if names is not None else None)
        if key not in self._tols:
            self._tols[key] = super().tolerances(policy, level, names)
        tol, q, plain = self._tols[key]
        return dict(tol), q, dict(plain)


def calibrate(
    dataset: RecDataset,
    spec: ForgetSpec,
    original: Any,
    retrains: Sequence[Any],
    *,
    seeds: Sequence[int] = (0, 1, 2),
    options: Any = None,
    policy: Policy | None = None,
    coverage_factor: float = DEFAULT_COVERAGE,
    retrain_folders: Sequence[str | None] | None = None,
    candidates: dict[str, Any] | None = None,
) -> Calibration:
    """Measure the null of every statistic from K ≥ 3 retrains of ``spec`` (module docstring) and return
    the signed artifact. ``original``, ``retrains``, ``candidates`` (name → unlearned model of this
    forget set, judged for the agreement only): :class:`tru.certify.certificate.ModelRun`;
    ``seeds``: audit seeds (attack splits); ``options``: :class:`~tru.certify.certificate.AuditOptions`
    (pool sizes, ``n_boot`` bootstrap rows, ``seed``); ``retrain_folders``: how the artifact names each
    retrain's folder (default: its path)."""
    from tru.certify import forgetting as fg
    from tru.certify.certificate import AuditOptions, training_seed

    t0 = time.perf_counter()
    policy = policy or Policy()
    opts = options or AuditOptions()
    if spec.regime not in ("user", "item", "interaction"):
        raise CertifyError(f"calibration needs one regime (user, item or interaction), not {spec.regime!r}")
    if len(spec.forget) == 0:
        raise CertifyError("calibration: D_f is empty")
    hashes = check_retrains(dataset, spec, original, retrains, policy.min_calibration_retrains)
    folders = list(retrain_folders or [str(mr.folder) if mr.folder else None for mr in retrains])
    nu, ni, bs = dataset.n_users, dataset.n_items, opts.batch_size
    design = stx.build_design(spec, nu, ni, seeds, opts.max_pairs, opts.max_users, opts.seed)
    o_run = original.run
    o_seed = training_seed(original)
    ev_o = stx.model_evidence("original", o_run.model, design, None, bs, keep_pair_stats=True)
    evs = [
        stx.model_evidence(f"retrain-{i}", mr.run.model, design, ev_o, bs) for i, mr in enumerate(retrains)
    ]
    ev_o.diff = [np.full(len(stx.diff_eval_set(design)[0]), 0.5) for _ in design.diff_folds]
    ent = fg.entity_mask(spec)
    pool_ent = np.isin(design.forget.users, spec.users) | np.isin(design.forget.items, spec.items)
    proxy = fg.reinit_proxy(o_run.model, spec, o_seed)[0] if ent.any() else None
    ev_f = stx.retrain_free_evidence(o_run.model, o_run.train, ev_o, proxy, spec, design, pool_ent, bs)
    weights = stx.poisson_weights(nu, opts.n_boot, opts.seed + 1)
    lv = [stx.levels(ev, design, weights) for ev in evs]
    lv_f = stx.levels(ev_f, design, weights)
    lv_o = stx.levels(ev_o, design, weights[:1])
    w0 = weights[:1]

    def null_block(pairs: list[tuple[int, int | None]]) -> dict[str, Any]:
        samples: dict[str, list[np.ndarray]] = {n: [] for n in stx.STAT_NAMES}
        seed_values: dict[str, list[float | None]] = {n: [] for n in stx.STAT_NAMES}
        for j, k in pairs:
            ref, ref_l = (evs[k], lv[k]) if k is not None else (ev_f, lv_f)
            vals = stx.compare(evs[j], ref, design, weights, lv[j], ref_l)
            for n in stx.STAT_NAMES:
                samples[n].append(np.asarray(stx.excess(n, vals[n])))
                seed_values[n].append(_r(vals[n][0]))
        refs = sorted({k for _, k in pairs}, key=lambda x: -1 if x is None else x)
        original_vals: dict[str, list[float | None]] = {n: [] for n in stx.STAT_NAMES}
        for k in refs:
            ref, ref_l = (evs[k], lv[k]) if k is not None else (ev_f, lv_f)
            vals = stx.compare(ev_o, ref, design, w0, lv_o, {a: b[:1] for a, b in ref_l.items()})
            for n in stx.STAT_NAMES:
                original_vals[n].append(_r(vals[n][0]))
        return {
            "samples": {n: [_r(x) for x in np.concatenate(v)] for n, v in samples.items()},
            "seed_values": seed_values,
            "original": original_vals,
        }

    kk = len(evs)
    null = {
        "retrain": null_block([(j, k) for j in range(kk) for k in range(kk) if j != k]),
        "retrain-free": null_block([(j, None) for j in range(kk)]),
    }
    doc: dict[str, Any] = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "code_version": git_commit(),
        "dataset": {
            "name": dataset.name,
            "fingerprint": dataset.fingerprint,
            "n_users": nu,
            "n_items": ni,
        },
        "model": {
            "backbone": o_run.model.name,
            "recipe": clean_json(recipe_of(o_run.config)),
            "recipe_sha256": recipe_sha256(o_run.config),
            "original_weights_sha256": weights_sha256(o_run.model.state_dict()),
            "original_seed": o_seed,
        },
        "regime": spec.regime,
        "forget_set": {
            "n_forget_pairs": len(spec.forget),
            "n_units": forget_units(spec),
            "unit": {"user": "users", "item": "items"}.get(spec.regime, "affected users"),
            "n_affected_users": len(spec.affected_users),
            "forget_commitment": spec.forget_commitment(ni),
            "requests_commitment": spec.forgotten().commitment,
        },
        "coverage": coverage_of(len(spec.forget), forget_units(spec), coverage_factor),
        "k": kk,
        "seeds": [training_seed(mr) for mr in retrains],
        "retrains": [
            {
                "seed": training_seed(mr),
                "weights_sha256": h,
                "seconds": (mr.unlearn or {}).get("seconds"),
                "folder": folder,
            }
            for mr, h, folder in zip(retrains, hashes, folders)
        ],
        "bootstrap": {
            "kind": "user-clustered Poisson(1) weights, row 0 = point estimate",
            "n_boot": opts.n_boot,
            "seed": opts.seed + 1,
        },
        "audit": {
            "seeds": [int(s) for s in seeds],
            "max_pairs": opts.max_pairs,
            "max_users": opts.max_users,
            "design": design.counts(),
            "notes": design.notes,
        },
        "statistics": {
            s.name: {"label": s.label, "sided": s.sided, "kind": s.kind, "formula": s.formula}
            for s in stx.STATS
        },
        "levels": {
            "original": _levels_b0(ev_o, design),
            "retrains": [_levels_b0(ev, design) for ev in evs],
            "retrain-free": _levels_b0(ev_f, design),
        },
        "null": null,
    }
    attack = RetrainAttack.measure(o_run.model, [mr.run.model for mr in retrains], spec, opts.seed)
    doc["seed_noise"] = {
        "attack": "AUC of the change of z from the original, D_f's interaction pairs against valid pairs",
        "aucs": [_r(a) for a in attack.aucs],
        "auc": _r(attack.auc) if attack.auc is not None else None,
        "n_forget_pairs": attack.n_forget_pairs,
        "n_held_out_pairs": attack.n_held_out_pairs,
    }
    cal = MemoCalibration(clean_json(doc))  # its tolerances serve the summary and the agreement below
    # what the default policy makes of it (a certificate recomputes with its own policy)
    summary: dict[str, Any] = {}
    for level in LEVELS:
        tol, q, plain = cal.tolerances(policy, level)
        ns = cal.null(level)
        summary[level] = {
            "level": q,
            "statistics": {
                n: {
                    "quantile_plain": _r(plain.get(n, math.nan)),
                    "tolerance": _r(tol[n]),
                    "floor": policy.floor(n),
                    "floored": tol[n] <= policy.floor(n) + 1e-12,
                    "quantiles": {
                        str(qq): _r(float(np.nanquantile(ns.samples[n], qq))) for qq in (0.5, 0.9, 0.95, 0.99)
                    },
                    "null_median": _r(float(np.nanmedian(ns.samples[n]))),
                    "null_max": _r(float(np.nanmax(ns.samples[n]))),
                    "original_excess": [
                        _r(stx.excess(n, v)) if v is not None else None for v in ns.original[n]
                    ],
                }
                for n in tol
            },
        }
    doc["tolerances"] = {"policy": policy.to_dict(), **summary}
    cand_ev = {
        f"candidate:{name}": stx.model_evidence(f"candidate:{name}", mr.run.model, design, ev_o, bs)
        for name, mr in (candidates or {}).items()
    }
    evidence = {"original": ev_o, **{f"retrain-{i}": ev for i, ev in enumerate(evs)}, **cand_ev}
    known = {**{f"retrain-{i}": lv_i for i, lv_i in enumerate(lv)}, "retrain-free": lv_f}
    doc["agreement"] = measure_agreement(
        cal, design, weights, {**evidence, "retrain-free": ev_f}, kk, policy,
        pre_deletion=pairs_fingerprint(o_run.train, ni) != pairs_fingerprint(spec.retain, ni),
        n_forget=len(spec.forget), levels=known,
    )  # fmt: skip
    doc["calibrate_seconds"] = round(time.perf_counter() - t0, 3)
    return Calibration(sign(clean_json(doc)))


def measure_agreement(
    cal: Calibration,
    design: stx.AuditDesign,
    weights: np.ndarray,
    evidence: dict[str, stx.Evidence],
    k: int,
    policy: Policy,
    *,
    pre_deletion: bool,
    n_forget: int,
    levels: dict[str, dict[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """The agreement block (module docstring): each model of ``evidence`` (``original``,
    ``retrain-i`` for i < ``k``, ``candidate:*``; ``retrain-free`` is the reference) judged against every
    other retrain and against the retrain-free reference, with ``cal``'s tolerances under ``policy``.
    ``levels``: the models' levels under ``weights`` already computed (the others are computed here)."""
    from tru.certify.certificate import Audit, calibrated_verdict

    known = levels or {}
    audit = Audit(
        design,
        weights,
        evidence,
        {n: known[n] if n in known else stx.levels(e, design, weights) for n, e in evidence.items()},
    )

    def verdict(candidate: str, ref: str) -> str:
        return calibrated_verdict(audit, ref, policy, cal, candidate, n_forget, pre_deletion)[0]

    table: list[dict[str, Any]] = []
    models: dict[str, dict[str, int]] = {}
    for name in (n for n in evidence if n != "retrain-free"):
        rf = verdict(name, "retrain-free")
        for j in range(k):
            if name == f"retrain-{j}":
                continue
            rt = verdict(name, f"retrain-{j}")
            table.append({"model": name, "reference": f"retrain-{j}", "retrain": rt, "retrain_free": rf})
            m = models.setdefault(name, {"rows": 0, "agree": 0})
            m["rows"] += 1
            m["agree"] += int(rt == rf)
    agree = sum(r["retrain"] == r["retrain_free"] for r in table)
    cand = [r for r in table if r["model"].startswith("candidate:")]
    c_agree = sum(r["retrain"] == r["retrain_free"] for r in cand)
    return {
        "rows": len(table),
        "agree": agree,
        "candidate_rows": len(cand),
        "candidate_agree": c_agree,
        "rate": c_agree / len(cand) if cand else None,
        "policy": policy.to_dict(),
        "retrain_free_pass_retrain_not": sum(
            r["retrain_free"] == "passed" and r["retrain"] != "passed" for r in table
        ),
        "retrain_pass_retrain_free_not": sum(
            r["retrain"] == "passed" and r["retrain_free"] != "passed" for r in table
        ),
        "models": models,
        "table": table,
    }


def train_retrains(
    dataset: RecDataset,
    spec: ForgetSpec,
    original: Any,
    seeds: Sequence[int],
    folder: Path,
    device: str | torch.device | None = None,
) -> list[Any]:
    """Train one retrain on D_r per seed (``tru unlearn --method retrain --seed S``: the original's
    backbone and recipe, from scratch), save each under ``folder/seed-S`` and load it back."""
    from tru.certify.certificate import open_run
    from tru.checkpoint import Lineage
    from tru.unlearn.api import run_unlearning, save_unlearned, unlearn_config

    out = []
    for s in seeds:
        cfg = unlearn_config(original.run.config, {"seed": int(s)})
        outcome = run_unlearning("retrain", original.run.model, dataset, spec, original.run.config, cfg)
        dest = Path(folder) / f"seed-{int(s)}"
        save_unlearned(
            dest,
            outcome,
            original.run.config,
            dataset,
            spec,
            lineage=Lineage(kind="retrain", method="retrain"),
        )
        out.append(open_run(dest, dataset, device, spec.requests))
    return out


def unlearn_candidates(
    dataset: RecDataset,
    spec: ForgetSpec,
    original: Any,
    methods: Sequence[str],
    folder: Path,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Run each unlearning method (packaged defaults) from ``original`` on ``spec``, save it under
    ``folder/method`` and load it back: the candidates the agreement judges (module docstring)."""
    from tru.certify.certificate import open_run
    from tru.checkpoint import Lineage
    from tru.unlearn.api import run_unlearning, save_unlearned, unlearn_config

    out = {}
    for method in methods:
        cfg = unlearn_config(original.run.config, {})
        outcome = run_unlearning(method, original.run.model, dataset, spec, original.run.config, cfg)
        dest = Path(folder) / method
        lineage = Lineage(kind="unlearn", method=method)
        save_unlearned(dest, outcome, original.run.config, dataset, spec, lineage=lineage)
        out[method] = open_run(dest, dataset, device, spec.requests)
    return out


def run_calibration(
    data_dir: Path | str,
    model_dir: Path | str,
    requests_csv: Path | str,
    out_dir: Path | str,
    *,
    k: int = 3,
    seeds: Sequence[int] | None = None,
    retrained_dirs: Sequence[Path | str] = (),
    audit_seeds: Sequence[int] = (0, 1, 2),
    policy_path: Path | str | None = None,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    save_retrains: bool = False,
    validate: bool = True,
    options: Any = None,
    coverage_factor: float = DEFAULT_COVERAGE,
    candidate_methods: Sequence[str] = ("tru",),
) -> Calibration:
    """What ``tru calibrate`` runs: load the data, the original (``model_dir``) and the requests; train K
    retrains (seeds: ``seeds`` or the model's seed + 1..K; ``retrained_dirs``: existing retrain folders
    used first); check that they differ; run ``candidate_methods`` on the same forget set for the
    agreement; measure; write ``out_dir`` atomically (``calibration.json``, ``null.png``, and with
    ``save_retrains`` the retrains under ``retrains/seed-S``)."""
    from tru.certify.certificate import open_run
    from tru.certify.policy import load_policy
    from tru.data.dataset import load_dataset
    from tru.forget.requests import read_requests, resolve_requests
    from tru.outputs import atomic_dir
    from tru.unlearn.methods import METHODS
    from tru.utils import resolve_device

    allowed = sorted(m for m in METHODS if m != "retrain")
    unknown = [m for m in candidate_methods if m not in allowed]
    if unknown or not candidate_methods:
        raise CertifyError(
            f"calibration candidates: {', '.join(unknown) or 'none given'}; expected unlearning methods "
            f"among {', '.join(allowed)} (their verdicts measure the retrain-free agreement)"
        )
    if isinstance(device, str) or device is None:
        device = resolve_device(device or "auto")
    policy = load_policy(policy_path)
    dataset = load_dataset(Path(data_dir), validate=validate)
    spec = resolve_requests(dataset, read_requests(requests_csv))
    original = open_run(model_dir, dataset, device, spec.requests)
    given = [open_run(d, dataset, device, spec.requests) for d in retrained_dirs]
    base = int(original.run.config.get("seed", 0))
    want = max(int(k), len(given))
    if seeds is None:
        from tru.certify.certificate import training_seed

        used = {training_seed(mr) for mr in given}
        seeds = [s for s in range(base + 1, base + 1 + 4 * want) if s not in used][: want - len(given)]
    else:
        seeds = [int(s) for s in seeds][: max(0, want - len(given))]
    if len(given) + len(seeds) < policy.min_calibration_retrains:
        raise CertifyError(
            f"calibration needs K ≥ {policy.min_calibration_retrains} retrains; --k {k} with "
            f"{len(given)} given and {len(seeds)} seed(s)"
        )
    with atomic_dir(Path(out_dir), overwrite) as tmp:
        where = tmp / RETRAINS_DIR if save_retrains else Path(tempfile.mkdtemp(prefix="tru-calibrate-"))
        try:
            trained = train_retrains(dataset, spec, original, seeds, where, device)
            cand_dir = where / "candidates"
            cands = unlearn_candidates(dataset, spec, original, candidate_methods, cand_dir, device)
            names = [str(mr.folder) for mr in given]
            names += [f"{RETRAINS_DIR}/seed-{s}" if save_retrains else None for s in seeds]
            cal = calibrate(
                dataset,
                spec,
                original,
                [*given, *trained],
                seeds=audit_seeds,
                options=options,
                policy=policy,
                coverage_factor=coverage_factor,
                retrain_folders=names,
                candidates=cands,
            )
        finally:
            if not save_retrains:
                import shutil

                shutil.rmtree(where, ignore_errors=True)
        cal.write(tmp)
    cal.folder = Path(out_dir)
    return cal
