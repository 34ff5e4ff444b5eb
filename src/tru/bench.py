"""The unlearning benchmark, revision 2 (issue 9 §4; ``shared/docs/certification.md``): every method certified
by the calibrated certificate against a retrain, over dataset × backbone × regime × size × seed.

**Protocol.** Per (dataset, backbone, seed) the original is trained once with the production recipe (the
packaged config: early stopping on valid Recall@20, patience ``stopping_step`` = 20, an epoch cap per
backbone) and cached (``OUT/models/original/…``). Per (dataset, backbone, regime, size, seed):

* the requests: :func:`tru.forget.generate.generate_requests` (random selection, seeded with the cell's
  seed; a size is a ratio such as ``0.05`` or a count of units such as ``10`` users), written under
  ``OUT/requests``;
* K retrains on D_r (``run_unlearning("retrain")``: the original's recipe from scratch) with seeds
  s, s + 1000, s + 2000, …, cached (``OUT/models/retrain/…``); retrain 0 (the original's own seed, as the
  pipeline's retrain) is the **reference** whose wall seconds are the time reference, retrain 1 is the
  **second retrain** candidate; :func:`tru.certify.calibration.calibrate` refuses identical weights;
* the calibration from the K retrains (:func:`tru.certify.calibration.calibrate`, signed, cached under
  ``OUT/calibrations``);
* every method started from the original (``run_unlearning``; run folders cached under ``OUT/runs``),
  the **rebuild-only** model (the original rebuilt on D_r with the exact part, no update:
  :func:`tru.unlearn.api.prepare_start`), the **original** itself and the **second retrain**;
* one audit (:func:`tru.certify.certificate.run_audit`: one design, every model's evidence, the
  retrain-free reference) and, per candidate, the verdict exactly as ``certify(…, retrained=reference,
  calibration=…)`` decides it (:func:`~tru.certify.certificate.assess` + :func:`~tru.certify.certificate.
  decide`, the same functions and checks; the audit of a candidate does not depend on the other models
  audited with it), and the **retrain-free verdict** as :func:`~tru.certify.certificate.verdict_agreement`
  decides it: the same statistics against the retrain-free reference, with the retrain-free tolerances of
  a calibration measured on **another forget set** of the same cell (the next seed's; the honest
  measurement the lifecycle's fast path would make) and, for comparison, of this forget set's own.

The original is audited as a candidate on its statistics alone (the binding checks refuse it outright,
since it has not forgotten the requests); with the original trained on D, a statistics-only "passed" is
impossible by construction (it would make the audit powerless: ``inconclusive``).

**Timing.** ``seconds``: ``run_unlearning``'s own wall clock (to the returned model: the forget target,
the rebuild, the exact part, the seed noise, the probe, the updates and checks; not process start-up,
loading, the final metrics or the audit; a retrain's clock starts after a throw-away ``torch.optim.Adam``
has paid its one-off ``torch._dynamo`` import); for a retrain the same clock around model
construction + training with early stopping (every epoch's validation and the final test evaluation
included); rebuild-only: the rebuild and the exact part. ``cpu_seconds``: process CPU time around the same
call (one thread: ``OMP_NUM_THREADS=1``; less sensitive to other load on a shared machine than wall time).
``time_ratio`` = seconds / the reference retrain's seconds; ``cpu_ratio`` likewise.

**Resumable.** One row per finished (dataset, backbone, regime, strategy, size, seed, method) is appended
to ``results.csv`` (after the audit of its (cell, seed)); a rerun skips the keys there. Trained models,
unlearned run folders and calibrations are cached, so a killed run redoes at most the audit of the
(cell, seed) in progress and the one method or retrain being trained. ``training.csv`` records every
trained model's epochs (the cap check), ``progress.log`` the time of every phase.
:func:`summarise` writes ``results.md`` and ``results.png``."""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tru.bench_methods import ALL_METHODS, METHODS, ONLY_IN, ORIGINAL, REBUILD_ONLY, SECOND
from tru.certify import statistics as stx
from tru.certify.calibration import Calibration, MemoCalibration, calibrate
from tru.certify.certificate import (
    AuditOptions,
    ModelRun,
    assess,
    check_models,
    decide,
    open_run,
    run_audit,
    update_label,
)
from tru.certify.output import CertifyError
from tru.certify.policy import Policy
from tru.checkpoint import Lineage, pairs_fingerprint, save_run
from tru.config import load_config
from tru.data.dataset import RecDataset, load_dataset
from tru.forget.generate import generate_requests
from tru.forget.requests import resolve_requests, write_requests
from tru.forget.spec import ForgetSpec
from tru.models import build_backbone
from tru.runfolder import UNLEARN_FILE
from tru.train.trainer import Trainer
from tru.unlearn.api import (
    UnlearnOutcome,
    apply_seed_noise,
    prepare_start,
    run_unlearning,
    save_unlearned,
    unlearn_config,
)
from tru.unlearn.engine import count_changed, snapshot
from tru.unlearn.seed_noise import RetrainAttack, aims_at, noise_target
from tru.utils import LOG, write_json

VERDICTS = ("passed", "failed", "inconclusive")
RETRAIN_SEED_STEP = 1000
AUDIT_SEEDS = (0, 1, 2)  # the pipeline's audit seeds (tru.steps.params: audit_seeds "0,1,2")

KEY = ("dataset", "backbone", "regime", "strategy", "size", "seed", "method")
COLUMNS = (
    *KEY,
    "n_forget_pairs",
    "n_units",
    "verdict",
    "failing",
    "update",
    "no_update",
    "seconds",
    "cpu_seconds",
    "time_ratio",
    "cpu_ratio",
    "ref_seconds",
    "ref_cpu_seconds",
    "ref_epochs",
    "steps",
    "stop_reason",
    "params_changed",
    "params_updated",
    "params_total",
    "rf_verdict",
    "rf_failing",
    "rf_calibration_seed",
    "agree",
    "rf_verdict_same",
    "agree_same",
    *(f"stat_{n}" for n in stx.STAT_NAMES),
    *(f"tol_{n}" for n in stx.STAT_NAMES),
    "forget_hr",
    "mia_auc",
    "retain_recall@20",
    "original_outside",
    "code_version",
)
TRAINING_COLUMNS = (
    "dataset",
    "backbone",
    "regime",
    "size",
    "seed",
    "role",
    "train_seed",
    "epochs_cap",
    "epochs_run",
    "best_epoch",
    "stopped_early",
    "hit_cap",
    "seconds",
    "cpu_seconds",
)


@dataclass
class BenchConfig:
    """What :func:`run_bench` runs. ``epochs``: the epoch cap per backbone (``"*"``: any backbone; none:
    the packaged config's); ``sizes``: deletion sizes (a fraction of the regime's units, or a count when
    ≥ 1); ``unlearn``: unlearning option overrides for every method; ``k``: retrains per forget set."""

    datasets: list[str]
    backbones: list[str] = field(default_factory=lambda: ["mgcn", "miggt"])
    regimes: list[str] = field(default_factory=lambda: ["user", "item", "interaction"])
    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS))
    seeds: list[int] = field(default_factory=lambda: [10, 11, 12])
    sizes: list[str] = field(default_factory=lambda: ["0.05"])
    strategy: str = "random"
    epochs: dict[str, int] = field(default_factory=dict)
    k: int = 3
    unlearn: dict[str, Any] = field(default_factory=dict)
    audit_seeds: tuple[int, ...] = AUDIT_SEEDS
    n_boot: int = 200
    policy: Policy = field(default_factory=Policy)
    threads: int | None = None
    keep_models: bool = False  # keep the unlearned run folders' weights once their rows are written
    recipe: dict[str, Any] = field(default_factory=dict)  # training-config overrides (tests: a tiny recipe)
    validate: bool = True  # validate each dataset when loading it

    def cap(self, backbone: str) -> int | None:
        return self.epochs.get(backbone, self.epochs.get("*"))

    def methods_for(self, regime: str) -> list[str]:
        return [m for m in self.methods if regime in ONLY_IN.get(m, (regime,))]


# ------------------------------------------------------------------------------------------ files
def _done(path: Path) -> set[tuple[str, ...]]:
    if not path.is_file():
        return set()
    with open(path, newline="") as fh:
        return {tuple(str(row[k]) for k in KEY) for row in csv.DictReader(fh)}


def _append(path: Path, row: dict[str, Any], columns: Sequence[str] = COLUMNS) -> None:
    """Append one row (header first when the file is new), flushed to disk before returning."""
    new = not path.is_file()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)
        fh.flush()
        os.fsync(fh.fileno())


def _progress(out: Path, message: str) -> None:
    LOG.info("bench: %s", message)
    with open(out / "progress.log", "a") as fh:
        fh.write(f"{datetime.now(UTC).isoformat(timespec='seconds')} {message}\n")


def _complete(folder: Path) -> bool:
    """A cached run folder is complete when its last file (``bench.json``) is there."""
    return (folder / "bench.json").is_file()


def _publish(tmp: Path, folder: Path) -> None:
    """Move a finished temporary folder into place (a folder is never half-written)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(folder)


def _tmp(folder: Path) -> Path:
    tmp = folder.parent / f".{folder.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return tmp


def size_ratio(ds: RecDataset, regime: str, size: str) -> float:
    """The ``generate_requests`` ratio of a size: a fraction as given, or ``n`` units (users, items or
    train pairs) as n / the regime's number of units (``n_selected`` then picks exactly n)."""
    val = float(size)
    if val < 1:
        return val
    units = {
        "user": len(np.unique(ds.train.users)),
        "item": len(np.unique(ds.train.items)),
        "interaction": len(ds.train),
    }[regime]
    if val > units:
        raise ValueError(f"size {size}: more than the {units} units of the {regime} regime")
    return min(1.0, val / units)


def size_label(size: str) -> str:
    val = float(size)
    return f"{val * 100:g} %" if val < 1 else f"{int(val)}"


def retrain_seeds(seed: int, k: int) -> list[int]:
    """The K retrain seeds of a cell: the original's seed first (the reference), then seed + 1000·j."""
    return [seed + RETRAIN_SEED_STEP * j for j in range(k)]


# ------------------------------------------------------------------------------------------ models
@dataclass
class Cell:
    """One (dataset, backbone, regime, size, seed) of the matrix and its cached artefacts."""

    ds: RecDataset
    backbone: str
    regime: str
    size: str
    seed: int
    strategy: str

    @property
    def base(self) -> dict[str, Any]:
        return {
            "dataset": self.ds.name,
            "backbone": self.backbone,
            "regime": self.regime,
            "strategy": self.strategy,
            "size": self.size,
            "seed": self.seed,
        }

    @property
    def name(self) -> str:
        return f"{self.ds.name}-{self.backbone}-{self.regime}-{self.strategy}-{self.size}-s{self.seed}"

    def key(self, method: str) -> tuple[str, ...]:
        return (*(str(self.base[k]) for k in KEY[:-1]), method)


class Bench:
    """The benchmark's caches and steps under one output folder (see the module docstring)."""

    def __init__(self, cfg: BenchConfig, out: Path) -> None:
        self.cfg = cfg
        self.out = out
        self.results = out / "results.csv"
        self.training = out / "training.csv"
        self.opts = AuditOptions(n_boot=cfg.n_boot)
        self._specs: dict[str, ForgetSpec] = {}
        self._cals: dict[str, MemoCalibration] = {}
        self._noise: dict[str, float] = {}
        self.code_version = code_version()

    # -------------------------------------------------------------------------------- training
    def _train_record(self, cell: Cell, role: str, train_seed: int, folder: Path, size: str = "") -> None:
        meta = json.loads((folder / "bench.json").read_text())
        tr = meta.get("training") or {}
        cap = meta.get("epochs_cap")
        _append(
            self.training,
            {
                **cell.base,
                "size": size,
                "regime": cell.regime if role != "original" else "",
                "role": role,
                "train_seed": train_seed,
                "epochs_cap": cap,
                "epochs_run": tr.get("epochs_run"),
                "best_epoch": (tr.get("best_epoch", -2) + 1) if tr else None,
                "stopped_early": tr.get("stopped_early"),
                "hit_cap": bool(cap is not None and tr.get("epochs_run", 0) >= int(cap)),
                "seconds": round(float(meta["seconds"]), 3),
                "cpu_seconds": round(float(meta["cpu_seconds"]), 3),
            },
            TRAINING_COLUMNS,
        )

    def model_config(self, cell: Cell) -> dict[str, Any]:
        """The production recipe of the cell's original: the packaged config with the cell's seed and the
        backbone's epoch cap."""
        over: dict[str, Any] = {**self.cfg.recipe, "seed": cell.seed, "threads": self.cfg.threads}
        cap = self.cfg.cap(cell.backbone)
        if cap is not None:
            over["epochs"] = int(cap)
        return load_config(cell.backbone, cell.ds.name, overrides=over)

    def original(self, cell: Cell) -> ModelRun:
        """The cell's original model (trained once per dataset, backbone and seed; cached)."""
        folder = self.out / "models" / "original" / f"{cell.ds.name}-{cell.backbone}-s{cell.seed}"
        if not _complete(folder):
            cfg = self.model_config(cell)
            t0 = time.perf_counter()
            _progress(self.out, f"train original {folder.name} (epoch cap {cfg.get('epochs')})")
            tmp = _tmp(folder)
            w0, c0 = time.perf_counter(), time.process_time()
            model = build_backbone(cell.backbone, cell.ds, cfg)
            result = Trainer(model, cell.ds, cfg).fit()
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            save_run(
                tmp,
                model,
                cfg,
                cell.ds,
                metrics={"valid": result.best_valid, "test": result.test},
                extra={"training": result.to_dict()},
            )
            write_json(
                tmp / "bench.json",
                {"seconds": wall, "cpu_seconds": cpu, "epochs_cap": cfg.get("epochs"),
                 "training": {k: v for k, v in result.to_dict().items() if k != "history"}},
            )  # fmt: skip
            _publish(tmp, folder)
            self._train_record(cell, "original", cell.seed, folder)
            _progress(self.out, f"trained original {folder.name}: {result.epochs_run} epochs in "
                      f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
        return open_run(folder, cell.ds)

    def spec(self, cell: Cell) -> ForgetSpec:
        """The cell's deletion requests (seeded; written under ``OUT/requests``), resolved."""
        if cell.name not in self._specs:
            ratio = size_ratio(cell.ds, cell.regime, cell.size)
            reqs = generate_requests(cell.ds, cell.regime, cell.strategy, ratio, cell.seed)
            path = self.out / "requests" / f"{cell.name}.csv"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                write_requests(path, reqs)
            self._specs[cell.name] = resolve_requests(cell.ds, reqs)
        return self._specs[cell.name]

    def retrain_dir(self, cell: Cell, seed: int) -> Path:
        return self.out / "models" / "retrain" / cell.name / f"seed-{seed}"

    def retrains(self, cell: Cell, original: ModelRun) -> list[ModelRun]:
        """The K retrains of the cell (cached): reference first, then the second retrain, …"""
        spec = self.spec(cell)
        runs = []
        for s in retrain_seeds(cell.seed, self.cfg.k):
            folder = self.retrain_dir(cell, s)
            if not _complete(folder):
                _progress(self.out, f"retrain {cell.name} seed {s} ({len(spec.forget)} pairs deleted)")
                tmp = _tmp(folder)
                ucfg = unlearn_config(original.run.config, {"seed": s})
                c0 = time.process_time()
                outcome = run_unlearning(
                    "retrain", original.run.model, cell.ds, spec, original.run.config, ucfg
                )
                cpu = time.process_time() - c0
                save_unlearned(
                    tmp,
                    outcome,
                    original.run.config,
                    cell.ds,
                    spec,
                    lineage=Lineage(kind="retrain", method="retrain"),
                )
                tr = {k: v for k, v in outcome.report["training"].items() if k != "history"}
                write_json(
                    tmp / "bench.json",
                    {"seconds": outcome.report["seconds"], "cpu_seconds": cpu, "training": tr,
                     "epochs_cap": original.run.config.get("epochs")},
                )  # fmt: skip
                _publish(tmp, folder)
                self._train_record(cell, "retrain", s, folder, cell.size)
                _progress(self.out, f"retrained {cell.name} seed {s}: {tr['epochs_run']} epochs, "
                          f"{outcome.report['seconds']:.0f} s wall, {cpu:.0f} s CPU")  # fmt: skip
            runs.append(_forgotten_current(open_run(folder, cell.ds, requests=spec.requests), spec, cell.ds))
        return runs

    def calibration(self, cell: Cell) -> MemoCalibration:
        """The cell's calibration from its K retrains (cached, signed; recomputed from the cached retrains
        when the stored one cannot be loaded)."""
        if cell.name in self._cals:
            return self._cals[cell.name]
        folder = self.out / "calibrations" / cell.name
        cal = None
        if (folder / "calibration.json").is_file():
            try:
                cal = Calibration.load(folder)
            except CertifyError as exc:
                LOG.warning("bench: %s: %s; calibrating again", folder, exc)
        if cal is None:
            original = self.original(cell)
            retrains = self.retrains(cell, original)
            t0 = time.perf_counter()
            cal = calibrate(
                cell.ds,
                self.spec(cell),
                original,
                retrains,
                seeds=self.cfg.audit_seeds,
                options=self.opts,
                policy=self.cfg.policy,
                retrain_folders=[str(mr.folder) for mr in retrains],
            )
            tmp = _tmp(folder)
            cal.write(tmp)
            _publish(tmp, folder)
            cal.folder = folder
            _progress(self.out, f"calibrated {cell.name} in {time.perf_counter() - t0:.0f} s")
        memo = MemoCalibration(cal.document, cal.folder)
        self._cals[cell.name] = memo
        return memo

    def seed_noise_auc(self, cell: Cell) -> float:
        """The difference attack's AUC on the change of z from ``cell``'s original to its retrains (median
        over the K; :func:`tru.unlearn.seed_noise.seed_attack_auc`, clipped into the targets the noise
        takes, :func:`~tru.unlearn.seed_noise.noise_target`): the seed-noise target of the cell
        that takes ``cell`` as its partner (another forget set and original, as the retrain-free
        verdict's calibration: a cell never aims at its own retrains)."""
        if cell.name not in self._noise:
            original = self.original(cell)
            retrains = [mr.run.model for mr in self.retrains(cell, original)]
            auc = RetrainAttack.measure(original.run.model, retrains, self.spec(cell), cell.seed).auc
            self._noise[cell.name] = noise_target(auc)
        return self._noise[cell.name]

    # ------------------------------------------------------------------------------- candidates
    def run_dir(self, cell: Cell, method: str) -> Path:
        return self.out / "runs" / cell.name / method

    def candidate(self, cell: Cell, method: str, original: ModelRun, partner: Cell | None = None) -> ModelRun:
        """The unlearned run folder of ``method`` (cached): ``run_unlearning`` from the original, or the
        rebuild-only model. Where the backbone takes seed noise and ``--set seed_noise_auc`` was not
        given, the target is the partner cell's (:meth:`seed_noise_auc`; none without a partner)."""
        spec = self.spec(cell)
        folder = self.run_dir(cell, method)
        if not _complete(folder):
            cfg = original.run.config
            noise: dict[str, Any] = {}
            takes_noise = aims_at(spec) and unlearn_config(cfg, dict(self.cfg.unlearn)).seed_noise
            if partner is not None and takes_noise and "seed_noise_auc" not in self.cfg.unlearn:
                noise = {"seed_noise_auc": self.seed_noise_auc(partner)}
            tmp = _tmp(folder)
            if method == REBUILD_ONLY:
                ucfg = unlearn_config(cfg, {**self.cfg.unlearn, **noise, "seed": cell.seed, "exact": True})
                model = copy.deepcopy(original.run.model)
                before = snapshot(model)
                w0, c0 = time.perf_counter(), time.process_time()
                exact = prepare_start(model, spec, ucfg)
                noised = apply_seed_noise(model, original.run.model, spec, ucfg, exact)
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                report = {
                    "method": REBUILD_ONLY,
                    "seconds": wall,
                    "steps": 0,
                    "params_changed": count_changed(before, model),
                    "params_updated": 0,
                    "params_total": sum(p.numel() for p in model.parameters()),
                    "no_update": True,
                    "stop_reason": "no update (rebuild only)",
                    "exact_rows": {name: len(rows) for name, rows in exact.items()},
                    "seed_noise": noised.to_dict() if noised is not None else None,
                    "config": ucfg.to_dict(),
                    "spec": spec.summary(cell.ds.n_items),
                }
                outcome = UnlearnOutcome(REBUILD_ONLY, model, report, {})
            else:
                name, over = METHODS[method]
                ucfg = unlearn_config(cfg, {**self.cfg.unlearn, **over, **noise, "seed": cell.seed})
                c0 = time.process_time()
                outcome = run_unlearning(name, original.run.model, cell.ds, spec, cfg, ucfg)
                cpu = time.process_time() - c0
                outcome.report["method"] = method
            save_unlearned(tmp, outcome, cfg, cell.ds, spec, sensitivity_png=False,
                           lineage=Lineage(kind="unlearn", method=method))  # fmt: skip
            write_json(tmp / "bench.json", {"seconds": outcome.report["seconds"], "cpu_seconds": cpu})
            _publish(tmp, folder)
        return _forgotten_current(open_run(folder, cell.ds, requests=spec.requests), spec, cell.ds)

    # ------------------------------------------------------------------------------------ cells
    def prepare(self, cell: Cell) -> Calibration:
        """Everything the certificate of a cell needs before any method: original, requests, retrains,
        calibration."""
        return self.calibration(cell)

    def evaluate(self, cell: Cell, methods: list[str], partner: Cell | None) -> list[dict[str, Any]]:
        """Run, audit and certify ``methods`` of one cell; returns their rows (module docstring)."""
        t0 = time.perf_counter()
        spec = self.spec(cell)
        ds = cell.ds
        original = self.original(cell)
        retrains = self.retrains(cell, original)
        ref, second = retrains[0], retrains[1]
        cal = self.calibration(cell)
        cal_x = self.calibration(partner) if partner is not None else None
        if cal_x is not None:
            try:  # as verdict_agreement: the stored calibration must cover this data, model, regime, size
                cal_x.check_applies(ds, spec, original.run.config, original.run.model.name, self.cfg.policy)
            except CertifyError as exc:
                _progress(self.out, f"{cell.name}: no retrain-free verdict with {partner.name}: {exc}")
                cal_x = None
        ref_meta = json.loads((ref.folder / "bench.json").read_text())  # type: ignore[operator]
        cands: dict[str, ModelRun] = {}
        for m in methods:
            if m == ORIGINAL:
                continue
            if m == SECOND:
                cands[m] = second
                continue
            LOG.info("bench %s: %s", cell.name, m)
            cands[m] = self.candidate(cell, m, original, partner)
        t_methods = time.perf_counter() - t0
        refused: dict[str, str] = {}
        for m, mr in cands.items():
            try:  # a refusal is a broken benchmark cache, not a verdict: it is reported as failed and logged
                check_models(ds, spec, original, mr, ref)
            except CertifyError as exc:
                refused[m] = str(exc)
                _progress(self.out, f"{cell.name}: {m} REFUSED by the binding checks: {exc}")
        runs = {"original": original, "retrained": ref, **{f"cand:{m}": mr for m, mr in cands.items()}}
        with _shared_fits():
            rows = self._certify_all(
                cell, methods, spec, original, cands, refused, ref_meta, cal, cal_x, partner, runs
            )
        _progress(
            self.out,
            f"evaluated {cell.name}: {len(methods)} rows; methods {t_methods:.0f} s, audit "
            f"{time.perf_counter() - t0 - t_methods:.0f} s; "
            + ", ".join(f"{r['method']} {r['verdict']}" for r in rows),
        )
        return rows

    def _certify_all(
        self,
        cell: Cell,
        methods: list[str],
        spec: ForgetSpec,
        original: ModelRun,
        cands: dict[str, ModelRun],
        refused: dict[str, str],
        ref_meta: dict[str, Any],
        cal: Calibration,
        cal_x: Calibration | None,
        partner: Cell | None,
        runs: dict[str, ModelRun],
    ) -> list[dict[str, Any]]:
        """One audit of every model of the cell, then each candidate's verdicts (module docstring)."""
        ds, ni = cell.ds, cell.ds.n_items
        ref_sec, ref_cpu = float(ref_meta["seconds"]), float(ref_meta["cpu_seconds"])
        audit = run_audit(ds, spec, runs, self.opts, self.cfg.audit_seeds, retrain_free=True)
        pol = self.cfg.policy
        n_forget = len(spec.forget)
        fp_r = pairs_fingerprint(spec.retain, ni)
        rows = []
        for m in methods:
            aname = "original" if m == ORIGINAL else f"cand:{m}"
            extra = []
            if m != ORIGINAL:
                if pairs_fingerprint(cands[m].run.train, ni) != fp_r:
                    extra.append(f"consistency: {m} was not trained on D_r")
                if m in refused:
                    extra.append(f"refused: {refused[m]}")
            ver = _verdict(audit, "retrained", pol, cal, aname, n_forget, extra)
            rf = _verdict(audit, "retrain-free", pol, cal_x, aname, n_forget, extra) if cal_x else None
            rf_same = _verdict(audit, "retrain-free", pol, cal, aname, n_forget, extra)
            stats = {r["name"]: r for r in ver["rows"]}
            lv = audit.levels[aname]
            row: dict[str, Any] = {
                **cell.base,
                "method": m,
                "n_forget_pairs": n_forget,
                "n_units": {"user": len(spec.users), "item": len(spec.items)}.get(
                    cell.regime, len(spec.affected_users)
                ),
                "verdict": ver["verdict"],
                "failing": ";".join(ver["failing"]),
                "ref_seconds": round(ref_sec, 4),
                "ref_cpu_seconds": round(ref_cpu, 4),
                "ref_epochs": ref_meta["training"]["epochs_run"],
                "rf_verdict": rf["verdict"] if rf else "",
                "rf_failing": ";".join(rf["failing"]) if rf else "",
                "rf_calibration_seed": partner.seed if partner is not None and rf else "",
                "agree": (rf["verdict"] == ver["verdict"]) if rf else "",
                "rf_verdict_same": rf_same["verdict"],
                "agree_same": rf_same["verdict"] == ver["verdict"],
                **{f"stat_{n}": _r(stats[n]["candidate"]) for n in stx.STAT_NAMES},
                **{f"tol_{n}": _r(stats[n]["tolerance"]) for n in stx.STAT_NAMES},
                "forget_hr": _r(lv["forget_hr"][0]),
                "mia_auc": _r(lv["mia_auc"][0]),
                "retain_recall@20": _r(lv["retain_recall"][0]),
                "original_outside": ";".join(ver["power"].get("original_outside", [])),
                "code_version": self.code_version,
            }
            if m == ORIGINAL:
                row |= {"update": "original", "no_update": "", "seconds": 0.0, "cpu_seconds": 0.0,
                        "steps": 0, "params_changed": 0}  # fmt: skip
            else:
                mr = cands[m]
                meta = mr.unlearn or {}
                bm = json.loads((mr.folder / "bench.json").read_text())  # type: ignore[operator]
                sec, cpu = float(bm["seconds"]), float(bm["cpu_seconds"])
                label = update_label(original, mr, spec, ni)["label"]
                row |= {
                    "update": label,
                    "no_update": bool(meta.get("no_update", False)),
                    "seconds": round(sec, 4),
                    "cpu_seconds": round(cpu, 4),
                    "time_ratio": round(sec / ref_sec, 5) if ref_sec > 0 else "",
                    "cpu_ratio": round(cpu / ref_cpu, 5) if ref_cpu > 0 else "",
                    "steps": meta.get("steps", (meta.get("training") or {}).get("epochs_run")),
                    "stop_reason": meta.get("stop_reason", ""),
                    "params_changed": meta.get("params_changed"),
                    "params_updated": meta.get("params_updated"),
                    "params_total": meta.get("params_total"),
                }
            rows.append(row)
            detail = {
                "row": row,
                "retrain": {"verdict": ver["verdict"], "reasons": ver["reasons"], "statistics": ver["rows"]},
                "retrain_free": (
                    {
                        "verdict": rf["verdict"],
                        "reasons": rf["reasons"],
                        "statistics": rf["rows"],
                        "calibration": str(cal_x.folder) if cal_x else None,
                    }
                    if rf
                    else None
                ),
                "retrain_free_same_forget_set": {
                    "verdict": rf_same["verdict"],
                    "reasons": rf_same["reasons"],
                },
                "audit_notes": audit.notes,
            }
            cert_dir = self.out / "certificates" / cell.name
            cert_dir.mkdir(parents=True, exist_ok=True)
            write_json(cert_dir / f"{m}.json", detail)
        return rows

    def drop_weights(self, cell: Cell, methods: list[str]) -> None:
        """Remove the unlearned models' weights once their rows are written (``unlearn.json`` and
        ``bench.json`` stay); the retrains and originals are kept."""
        if self.cfg.keep_models:
            return
        for m in methods:
            folder = self.run_dir(cell, m)
            if folder.is_dir():
                for f in folder.iterdir():
                    if f.name not in (UNLEARN_FILE, "bench.json", "run.json"):
                        f.unlink()
                (folder / "bench.json").rename(folder / "bench.done.json")


def _forgotten_current(mr: ModelRun, spec: ForgetSpec, ds: RecDataset) -> ModelRun:
    """A cached run folder written before the checkpoint recorded per-request commitments (same requests,
    older record format) is re-saved with the current record, so the binding checks read it; the weights
    are unchanged (their digest is checked)."""
    want = spec.forgotten()
    covers = getattr(mr.run.forgotten, "covers", None)
    if covers is None or covers(want) or mr.folder is None:
        return mr
    if set(mr.run.forgotten.request_ids) != set(want.request_ids):
        raise CertifyError(f"{mr.folder}: cached for other requests than this cell's")
    before = mr.run.weights_sha256
    extra = {k: v for k, v in mr.run.meta.items() if k in ("unlearn", "training")}
    save_run(
        mr.folder, mr.run.model, mr.run.config, ds, train=spec.retain, forgotten=want, lineage=mr.run.lineage,
        extra=extra,
    )  # fmt: skip
    again = open_run(mr.folder, ds, requests=spec.requests)
    if before and again.run.weights_sha256 != before:
        raise CertifyError(f"{mr.folder}: weights changed while re-recording what it forgot")
    LOG.info("bench: %s: forgotten record upgraded to per-request commitments", mr.folder)
    return again


@contextmanager
def _shared_fits() -> Iterator[None]:
    """Within one cell's verdicts, compute each attack fit (:func:`tru.certify.statistics._fit_predict`,
    a pure function of its three arrays) once: the user-level attack is trained on the reference and
    refitted, with identical inputs, for every candidate compared with it and twice per comparison (the
    statistic and the reported level). A memo keyed by the arrays' bytes returns the identical result."""
    fit = stx._fit_predict
    memo: dict[tuple[str, ...], np.ndarray] = {}

    def digest(a: np.ndarray) -> str:
        a = np.ascontiguousarray(a)
        return hashlib.sha1(a.tobytes() + str((a.shape, a.dtype.str)).encode()).hexdigest()

    def memo_fit(x_tr: np.ndarray, y_tr: np.ndarray, x_ev: np.ndarray) -> np.ndarray:
        key = (digest(x_tr), digest(y_tr), digest(x_ev))
        if key not in memo:
            memo[key] = fit(x_tr, y_tr, x_ev)
        return memo[key].copy()

    stx._fit_predict = memo_fit  # type: ignore[assignment]
    try:
        yield
    finally:
        stx._fit_predict = fit  # type: ignore[assignment]


def code_version() -> str:
    """The git commit and a digest of the sources a row depends on (``tru/{unlearn,certify,models,train,
    forget,eval}``, as on disk when the run started): uncommitted edits show as another digest."""
    import tru
    from tru.utils import git_commit

    root = Path(tru.__file__).parent
    h = hashlib.sha256()
    for sub in ("unlearn", "certify", "models", "train", "forget", "eval"):
        for f in sorted((root / sub).rglob("*.py")):
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    h.update((root / "configs" / "unlearn.yaml").read_bytes())
    return f"{git_commit()[:12]}+{h.hexdigest()[:10]}"


def _r(x: Any, nd: int = 6) -> float | str:
    if x is None:
        return ""
    x = float(x)
    return "" if not math.isfinite(x) else round(x, nd)


def _verdict(
    audit: Any, ref: str, policy: Policy, cal: Calibration | None, cand: str, n_forget: int, extra: list[str]
) -> dict[str, Any]:
    """The verdict of ``cand`` against ``ref`` ("retrained" or "retrain-free") as ``certify`` decides it
    with the calibration ``cal``: :func:`assess`, the failing checks (statistics, then ``extra``: binding
    and consistency), :func:`decide` (the original given was trained on D: pre-deletion)."""
    rows, power = assess(audit, ref, policy, cal, cand)
    failing = [r["name"] for r in rows if r["checked"] and not r["passed"]]
    failed = [r["message"] for r in rows if r["checked"] and not r["passed"]] + list(extra)
    label = "Retrain" if ref == "retrained" else "the retrain-free reference"
    verdict, reasons, _ = decide(rows, power, failed, n_forget, policy, cal is not None, True, label)
    return {"verdict": verdict, "reasons": reasons, "failing": failing, "rows": rows, "power": power}


def run_bench(cfg: BenchConfig, out: Path) -> Path:
    """Run every missing row of the matrix (module docstring); returns the results CSV."""
    unknown = [m for m in cfg.methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {list(ALL_METHODS)}")
    if cfg.k < 2:
        raise ValueError("k: at least 2 retrains (a reference and a second retrain); the calibration needs 3")
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(cfg, out)
    with open(out / "invocations.jsonl", "a") as fh:  # what every (resumed) run was asked to do
        started = datetime.now(UTC).isoformat(timespec="seconds")
        doc = {**cfg.__dict__, "policy": cfg.policy.to_dict(), "started": started, "code": bench.code_version}
        fh.write(json.dumps(doc, default=str) + "\n")
    for data_dir in cfg.datasets:
        ds = load_dataset(Path(data_dir), validate=cfg.validate)
        for backbone in cfg.backbones:
            for regime in cfg.regimes:
                for size in cfg.sizes:
                    cells = [Cell(ds, backbone, regime, size, s, cfg.strategy) for s in cfg.seeds]
                    done = _done(bench.results)
                    todo = {
                        c.seed: [m for m in cfg.methods_for(regime) if c.key(m) not in done] for c in cells
                    }
                    if not any(todo.values()):
                        continue
                    t0 = time.perf_counter()
                    for c in cells:  # every seed's calibration first: each cell's partner needs its own
                        bench.prepare(c)
                    _progress(
                        out,
                        f"prepared {ds.name}/{backbone}/{regime}/{size}: {time.perf_counter() - t0:.0f} s",
                    )
                    for i, c in enumerate(cells):
                        if not todo[c.seed]:
                            continue
                        partner = cells[(i + 1) % len(cells)] if len(cells) > 1 else None
                        rows = bench.evaluate(c, todo[c.seed], partner)
                        for row in rows:
                            _append(bench.results, row)
                        bench.drop_weights(c, todo[c.seed])
    return bench.results


# ---------------------------------------------------------------------------------------- summary
ORDER = {m: i for i, m in enumerate(ALL_METHODS)}
CELL = ["dataset", "backbone", "regime", "size"]


def read_results(paths: Path | Sequence[Path]) -> pd.DataFrame:
    """One frame from one or more results CSVs (later files win on duplicate keys)."""
    paths = [paths] if isinstance(paths, Path) else list(paths)
    df = pd.concat([pd.read_csv(p, dtype={"size": str}) for p in paths], ignore_index=True)
    return df.drop_duplicates(list(KEY), keep="last").reset_index(drop=True)


def _bool(s: pd.Series) -> pd.Series:
    return s.astype(str).str.lower().isin(["true", "1", "1.0"])


def pass_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per cell and method: n seeds, passed / failed / inconclusive counts, no-update count, mean time and
    CPU ratios, and how often each statistic failed."""
    rows = []
    for keys, g in df.groupby([*CELL, "method"], sort=False):
        fails: dict[str, int] = {}
        for f in g["failing"].fillna(""):
            for name in [x for x in str(f).split(";") if x]:
                fails[name] = fails.get(name, 0) + 1
        tr = pd.to_numeric(g["time_ratio"], errors="coerce")
        cr = pd.to_numeric(g["cpu_ratio"], errors="coerce")
        rows.append(
            {
                **dict(zip([*CELL, "method"], keys)),
                "n": len(g),
                "passed": int((g["verdict"] == "passed").sum()),
                "failed": int((g["verdict"] == "failed").sum()),
                "inconclusive": int((g["verdict"] == "inconclusive").sum()),
                "no_update": int((g["update"] == "rebuild only").sum())
                if g["method"].iloc[0] != ORIGINAL
                else 0,
                "time_ratio": float(tr.mean()) if tr.notna().any() else math.nan,
                "time_ratio_max": float(tr.max()) if tr.notna().any() else math.nan,
                "cpu_ratio": float(cr.mean()) if cr.notna().any() else math.nan,
                "failing": ", ".join(f"{k} {v}" for k, v in sorted(fails.items(), key=lambda kv: -kv[1])),
            }
        )
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["_o"] = out["method"].map(lambda m: ORDER.get(m, 99))
    return out.sort_values([*CELL, "_o"]).drop(columns="_o").reset_index(drop=True)


def _pass_text(r: pd.Series) -> str:
    inc = f" ({int(r['inconclusive'])} inc.)" if r["inconclusive"] else ""
    return f"{int(r['passed'])}/{int(r['n'])}{inc}"


def _ratio(x: float) -> str:
    return "—" if not np.isfinite(x) else (f"{x:.3f}" if x >= 0.001 else f"{x:.1e}")


def agreement_table(df: pd.DataFrame, column: str = "rf_verdict") -> pd.DataFrame:
    """Per regime: how often the retrain-free verdict (``column``) equals the retrain verdict, over every
    row that has one; and the two kinds of disagreement (retrain-free passes what retrain fails: a wrong
    promotion; retrain-free fails what retrain passes: a needless retrain)."""
    d = df[df[column].fillna("").astype(str) != ""]
    rows = []
    for regime, g in d.groupby("regime", sort=True):
        rt, rf = g["verdict"], g[column]
        rows.append(
            {
                "regime": regime,
                "n": len(g),
                "agree": int((rt == rf).sum()),
                "rate": float((rt == rf).mean()),
                "rf_pass_rt_not": int(((rf == "passed") & (rt != "passed")).sum()),
                "rf_not_rt_pass": int(((rf != "passed") & (rt == "passed")).sum()),
                "both_passed": int(((rf == "passed") & (rt == "passed")).sum()),
            }
        )
    return pd.DataFrame(rows)


def summarise(results: Path | Sequence[Path], out: Path | None = None, training: Sequence[Path] = ()) -> Path:
    """``results.md`` (pass-rate matrix, per-method detail, the calibration's sanity checks, agreement per
    regime, user deletion sizes, epochs) and ``results.png``; returns the Markdown path. ``training``: the
    ``training.csv`` files (default: next to each results file)."""
    paths = [results] if isinstance(results, Path) else list(results)
    df = read_results(paths)
    out = out or paths[0].parent
    out.mkdir(parents=True, exist_ok=True)
    tab = pass_table(df)
    main_size = _main_size(df)
    lines = ["# Unlearning benchmark, revision 2: the calibrated certificate", ""]
    lines += _protocol_lines(df)
    lines += [
        "",
        f"## Pass rate per cell (deletion size {size_label(main_size)}; passed / seeds, mean time ratio)",
        "",
    ]
    lines += _matrix(tab[tab["size"] == main_size])
    lines += ["", "## Goal 1 and the sanity checks", ""]
    lines += _goal_lines(tab[tab["size"] == main_size], df[df["size"] == main_size])
    lines += ["", "## Agreement of retrain-free and retrain verdicts, per regime", ""]
    lines += _agreement_lines(df)
    sizes = sorted(df["size"].unique(), key=float)
    if len(sizes) > 1:
        lines += ["", "## Deletion sizes (user regime)", ""]
        lines += _size_lines(tab)
    lines += ["", "## Every cell and method", ""]
    lines += _detail(tab)
    tpaths = list(training) or [p.parent / "training.csv" for p in paths]
    tpaths = [p for p in tpaths if Path(p).is_file()]
    if tpaths:
        lines += ["", "## Epochs (early stopping on valid Recall@20, patience 20)", ""]
        lines += _epoch_lines(pd.concat([pd.read_csv(p, dtype={"size": str}) for p in tpaths]))
    md = out / "results.md"
    md.write_text("\n".join(lines) + "\n")
    plot_summary(tab[tab["size"] == main_size], out / "results.png")
    return md


def _main_size(df: pd.DataFrame) -> str:
    counts = df["size"].value_counts()
    return "0.05" if "0.05" in counts.index else str(counts.index[0])


def _protocol_lines(df: pd.DataFrame) -> list[str]:
    seeds = ", ".join(str(s) for s in sorted(df["seed"].unique()))
    return [
        f"Seeds {seeds}; {len(df)} rows. Every candidate is certified against the reference retrain (the "
        "original's recipe and seed, from scratch on D_r) with tolerances calibrated from K = 3 retrains of "
        "the same forget set (seeds s, s + 1000, s + 2000); the second retrain (seed s + 1000) is a "
        "candidate too. Verdicts: passed / failed / inconclusive (inconclusive is never counted as passed). "
        "`inc.` = inconclusive; `no upd.` = the method returned its starting point (rebuild only). Time "
        "ratio: the method's wall seconds inside `run_unlearning` (no process start-up, no loading, no "
        "audit) / the reference retrain's wall seconds (model construction + training with early "
        "stopping); CPU ratio likewise with process CPU seconds (one thread)."
    ]


def _matrix(tab: pd.DataFrame) -> list[str]:
    methods = [m for m in ALL_METHODS if m in set(tab["method"])]
    head = "| dataset | backbone | regime | " + " | ".join(methods) + " |"
    lines = [head, "|" + "---|" * (3 + len(methods))]
    for keys, g in tab.groupby(["dataset", "backbone", "regime"], sort=True):
        by = {r["method"]: r for _, r in g.iterrows()}
        cells = []
        for m in methods:
            if m not in by:
                cells.append("")
                continue
            r = by[m]
            t = "" if m == ORIGINAL else f" · {_ratio(r['time_ratio'])}"
            cells.append(_pass_text(r) + t)
        lines.append("| " + " | ".join(str(k) for k in keys) + " | " + " | ".join(cells) + " |")
    return lines


def _goal_lines(tab: pd.DataFrame, df: pd.DataFrame) -> list[str]:
    lines = []
    tru = tab[tab["method"] == "tru"]
    if not tru.empty:
        ok = tru[(tru["passed"] >= np.ceil(0.9 * tru["n"])) & (tru["time_ratio_max"] <= 0.05)]
        lines.append(
            f"- TRU certified in ≥ 90 % of seeds at ≤ 5 % of retrain's wall time (every seed) in {len(ok)} "
            f"of {len(tru)} cells: "
            + (", ".join("/".join(str(x) for x in r[:3]) for r in ok[CELL].values) or "none")
            + "."
        )
    for m in ("tru", "mmrecun", *[x for x in METHODS if x not in ("tru", "mmrecun")], REBUILD_ONLY):
        g = df[df["method"] == m]
        if len(g):
            lines.append(
                f"- {m}: {int((g['verdict'] == 'passed').sum())} passed, "
                f"{int((g['verdict'] == 'inconclusive').sum())} inconclusive of {len(g)} (all cells)."
            )
    for m, want in ((ORIGINAL, "must be 0"), (SECOND, "must be ≥ 90 %")):
        g = df[df["method"] == m]
        if len(g):
            p = int((g["verdict"] == "passed").sum())
            lines.append(
                f"- {m}: passed {p} / {len(g)} ({p / len(g):.0%}; {want}); inconclusive "
                f"{int((g['verdict'] == 'inconclusive').sum())}, "
                f"failed {int((g['verdict'] == 'failed').sum())}."
            )
    return lines


def _agreement_lines(df: pd.DataFrame) -> list[str]:
    lines = [
        "Retrain-free verdict: the same statistics against the retrain-free reference (tru-method.md §7), "
        "with the retrain-free tolerances of the calibration of *another* forget set of the same cell (the "
        "next seed's: the honest measurement); `same set`: with this forget set's own calibration. Over "
        "every row (methods, rebuild-only, original, second retrain). `rf pass, rt not`: the retrain-free "
        "verdict would have promoted a model retrain does not certify.",
        "",
        "| regime | rows | agree | rate | rf pass, rt not | rf not, rt pass | both passed "
        "| rate (same set) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    a = agreement_table(df, "rf_verdict")
    b = agreement_table(df, "rf_verdict_same").set_index("regime") if "rf_verdict_same" in df else None
    for _, r in a.iterrows():
        same = f"{b.loc[r['regime'], 'rate']:.0%}" if b is not None and r["regime"] in b.index else "—"
        lines.append(
            f"| {r['regime']} | {r['n']} | {r['agree']} | {r['rate']:.0%} | {r['rf_pass_rt_not']} | "
            f"{r['rf_not_rt_pass']} | {r['both_passed']} | {same} |"
        )
    for method in ("tru", "second-retrain", ORIGINAL):
        sub = df[df["method"] == method]
        at = agreement_table(sub, "rf_verdict")
        if len(at):
            lines.append("")
            lines.append(
                f"{method} only: "
                + "; ".join(f"{r['regime']} {r['agree']}/{r['n']}" for _, r in at.iterrows())
            )
    return lines


def _size_lines(tab: pd.DataFrame) -> list[str]:
    user = tab[tab["regime"] == "user"]
    sizes = sorted(user["size"].unique(), key=float)
    methods = [m for m in ALL_METHODS if m in set(user["method"])]
    lines = [
        "| dataset | backbone | size (users) | " + " | ".join(methods) + " |",
        "|" + "---|" * (3 + len(methods)),
    ]
    for (dset, bb), g in user.groupby(["dataset", "backbone"], sort=True):
        for s in sizes:
            gs = g[g["size"] == s]
            if gs.empty:
                continue
            by = {r["method"]: r for _, r in gs.iterrows()}
            cells = [
                (_pass_text(by[m]) + ("" if m == ORIGINAL else f" · {_ratio(by[m]['time_ratio'])}"))
                if m in by
                else ""
                for m in methods
            ]
            lines.append(f"| {dset} | {bb} | {size_label(s)} | " + " | ".join(cells) + " |")
    return lines


def _detail(tab: pd.DataFrame) -> list[str]:
    lines = [
        "| dataset | backbone | regime | size | method | n | passed | failed | inc. | no upd. | time ratio "
        "(mean / max) | CPU ratio | failing statistics (seeds) |",
        "|" + "---|" * 13,
    ]
    for _, r in tab.iterrows():
        lines.append(
            f"| {r['dataset']} | {r['backbone']} | {r['regime']} | {size_label(r['size'])} | {r['method']} | "
            f"{r['n']} | {r['passed']} | {r['failed']} | {r['inconclusive']} | {r['no_update']} | "
            f"{_ratio(r['time_ratio'])} / {_ratio(r['time_ratio_max'])} | {_ratio(r['cpu_ratio'])} | "
            f"{r['failing'] or '—'} |"
        )
    return lines


def _epoch_lines(tr: pd.DataFrame) -> list[str]:
    tr = tr.drop_duplicates(
        ["dataset", "backbone", "regime", "size", "seed", "role", "train_seed"], keep="last"
    )
    lines = [
        "| dataset | backbone | models | epoch cap | epochs run (min / median / max) | best epoch (median) | "
        "reached the cap | seconds per model (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (dset, bb), g in tr.groupby(["dataset", "backbone"], sort=True):
        e = pd.to_numeric(g["epochs_run"], errors="coerce")
        hit = _bool(g["hit_cap"]).sum()
        lines.append(
            f"| {dset} | {bb} | {len(g)} | {g['epochs_cap'].iloc[0]} | {int(e.min())} / {int(e.median())} / "
            f"{int(e.max())} | {int(pd.to_numeric(g['best_epoch']).median())} | {hit} ({hit / len(g):.0%}) | "
            f"{pd.to_numeric(g['seconds']).median():.0f} |"
        )
    return lines


def plot_summary(tab: pd.DataFrame, path: Path) -> None:
    """Left: pass rate per cell (rows) and method (columns), annotated passed/seeds; right: mean time
    ratio (log) against pass rate per cell and method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if tab.empty:
        return
    methods = [m for m in ALL_METHODS if m in set(tab["method"])]
    cells = sorted({tuple(x) for x in tab[["dataset", "backbone", "regime"]].values})
    grid = np.full((len(cells), len(methods)), np.nan)
    text = [["" for _ in methods] for _ in cells]
    for _, r in tab.iterrows():
        i, j = cells.index((r["dataset"], r["backbone"], r["regime"])), methods.index(r["method"])
        grid[i, j] = r["passed"] / r["n"]
        text[i][j] = f"{int(r['passed'])}/{int(r['n'])}" + ("*" if r["inconclusive"] else "")
    fig, axes = plt.subplots(
        1, 2, figsize=(16, 0.45 * len(cells) + 3.2), gridspec_kw={"width_ratios": [3, 2]}
    )
    ax = axes[0]
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for i in range(len(cells)):
        for j in range(len(methods)):
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(cells)), ["/".join(c) for c in cells], fontsize=8)
    ax.set_title("pass rate under the calibrated certificate (* some inconclusive)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    ax = axes[1]
    markers = dict(zip(methods, "o*sD^vPXph<>8"))
    for m in methods:
        g = tab[(tab["method"] == m) & tab["time_ratio"].notna() & (tab["time_ratio"] > 0)]
        if len(g):
            ax.scatter(g["time_ratio"], g["passed"] / g["n"], marker=markers[m], label=m, alpha=0.75)
    ax.set_xscale("log")
    for x in (0.02, 0.05):
        ax.axvline(x, color="grey", lw=0.8, ls="--")
    ax.axhline(0.9, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("time / reference retrain (wall, mean over seeds)")
    ax.set_ylabel("pass rate")
    ax.set_title("time ratio vs pass rate, per cell and method", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
