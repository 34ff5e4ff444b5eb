"""Step ``certify``: the signed certificate of the unlearned model, and the compliance fallback.

Output folder::

    certificate.json, report.html, *.png   the unlearned model's certificate (tru.certify)
    retrained/                             the model retrained on D_r (when one was trained)
    fallback/certificate.json              that retrain's own certificate, when the unlearned model failed

Which certificate, by the run's plan and the unlearned model's method:

* nothing new (method ``none``): a pass-through certificate, or in a confirmation run (slow path) the
  champion compared with a retrain on D \\ rows(F) trained now;
* method ``retrain`` (forced by the deadline, or a retrain-every-time pipeline): certified by
  construction (it is the reference);
* otherwise the comparison with a retrain (``retrain=True``) or the retrain-free targets (fast path).
  When it fails and ``fallback``, the retrain (trained now if the fast path had none) is certified by
  construction and the register step promotes it instead: no request waits on TRU succeeding."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tru.data.dataset import DataError
from tru.runfolder import CERT_FILE, MODEL_FILE, PLAN_FILE, unlearn_meta
from tru.steps.common import EMPTY_METHOD, load_inputs, unlearn_cfg
from tru.steps.train import read_plan

RETRAINED_DIR = "retrained"
FALLBACK_DIR = "fallback"


def policy_file(policy: str, where: Path) -> Path | None:
    """``policy`` as a file: '' → None (built-in policy), an existing path → itself, else YAML text
    written to ``where`` (a YAML mapping is required; errors name the parameter)."""
    if not policy.strip():
        return None
    if "\n" not in policy and ":" not in policy:
        if Path(policy).is_file():
            return Path(policy)
        raise DataError(f"policy {policy!r}: no such file; expected a policy YAML path or YAML text")
    try:
        raw = yaml.safe_load(policy)
    except yaml.YAMLError as exc:
        raise DataError(f"policy parameter: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        if Path(policy).is_file():
            return Path(policy)
        raise DataError(f"policy parameter: expected a YAML mapping of policy keys, got {policy!r}")
    where.write_text(yaml.safe_dump(raw))
    return where


def _retrain(data_dir: Path, start_dir: Path, target_csv: Path, dest: Path) -> Path:
    """Train the reference: the start model's backbone and config, from scratch on D_r."""
    from tru.checkpoint import Lineage, load_run
    from tru.unlearn.api import run_unlearning, save_unlearned
    from tru.utils import resolve_device

    dataset, requests, spec = load_inputs(data_dir, target_csv)
    run = load_run(start_dir, dataset, device=resolve_device("auto"), requests=requests)
    outcome = run_unlearning("retrain", run.model, dataset, spec, run.config, unlearn_cfg(run.config, {}))
    lineage = Lineage(kind="retrain", method="retrain")
    forgotten = spec.forgotten().inherit(run.forgotten)  # the start model's erased requests stay forgotten
    return save_unlearned(dest, outcome, run.config, dataset, spec, lineage=lineage, forgotten=forgotten)


def certify(
    data_dir: Path,
    original_dir: Path,
    unlearned_dir: Path,
    target_csv: Path,
    out_dir: Path,
    *,
    policy: str = "",
    retrain: bool = True,
    seeds: tuple[int, ...] = (0, 1, 2),
    fallback: bool = True,
    calibration: str = "",
) -> Any:
    """Certify (module docstring); returns the unlearned model's certificate
    (:class:`tru.certify.binding.Certificate`). ``calibration``: a stored calibration, a folder or a URI
    (:func:`calibration_folder`). A failed or inconclusive verdict is data, not an error."""
    from tru.certify import run_certification
    from tru.certify.certificate import (
        EVIDENCE_FALLBACK,
        EVIDENCE_NOTHING,
        EVIDENCE_RETRAIN_SELF,
        open_run,
        self_certificate,
        write_self_certificate,
    )

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    plan = read_plan(original_dir)
    method = (unlearn_meta(unlearned_dir) or {}).get("method", "")
    dataset, requests, spec = load_inputs(data_dir, target_csv)
    with tempfile.TemporaryDirectory(prefix="tru-certify-", dir=out_dir.parent) as tmp:
        pol = policy_file(policy, Path(tmp) / "policy.yaml")
        if method == "retrain" or (method == EMPTY_METHOD and not (plan.confirm and len(spec.forget))):
            candidate, evidence = ("retrained", EVIDENCE_RETRAIN_SELF) if method == "retrain" else (
                "unlearned", EVIDENCE_NOTHING)  # fmt: skip
            model = open_run(unlearned_dir, dataset, requests=requests)
            cert = self_certificate(dataset, spec, model, candidate=candidate, evidence=evidence)
            write_self_certificate(out_dir, cert)
            return cert
        retrained = (
            _retrain(data_dir, original_dir, target_csv, Path(tmp) / RETRAINED_DIR) if retrain else None
        )
        cal = calibration_folder(calibration, Path(tmp) / "calibration") if calibration else None
        cert = run_certification(
            data_dir, original_dir, unlearned_dir, target_csv, out_dir, retrained_dir=retrained,
            policy_path=pol, seeds=seeds, validate=False, calibration=cal,
        )  # fmt: skip
        if cert["passed"] or not fallback:
            if retrained is not None:
                shutil.move(str(retrained), out_dir / RETRAINED_DIR)
            return cert
        if retrained is None:  # the fast path failed: retrain now so that the requests are still honoured
            retrained = _retrain(data_dir, original_dir, target_csv, Path(tmp) / RETRAINED_DIR)
        shutil.copy2(Path(original_dir) / PLAN_FILE, retrained / PLAN_FILE)
        fb = self_certificate(
            dataset, spec, open_run(retrained, dataset, requests=requests), candidate="retrained",
            evidence=EVIDENCE_FALLBACK,
        )  # fmt: skip
        shutil.move(str(retrained), out_dir / RETRAINED_DIR)
        write_self_certificate(out_dir / FALLBACK_DIR, fb)
    return cert


def calibration_folder(calibration: str, where: Path) -> Path:
    """A stored calibration as a local folder: a path as it is, a URI (``s3://…``, ``runs:/…``,
    ``mlflow-artifacts:/…``) downloaded into ``where`` through MLflow's artifact repositories."""
    if Path(calibration).is_dir():
        return Path(calibration)
    if "://" not in calibration and not calibration.startswith("runs:/"):
        raise DataError(
            f"calibration {calibration!r}: no such folder; expected a `tru calibrate` folder or a URI"
        )
    import mlflow

    where.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=calibration, dst_path=str(where)))


def fallback_paths(certificate_dir: Path) -> tuple[Path, Path] | None:
    """(fallback certificate folder, retrained model folder) when the certify step wrote a fallback."""
    fb, model = Path(certificate_dir) / FALLBACK_DIR, Path(certificate_dir) / RETRAINED_DIR
    return (fb, model) if (fb / CERT_FILE).is_file() and (model / MODEL_FILE).is_file() else None
