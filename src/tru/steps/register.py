"""Step ``register``: log the run in MLflow, register a version, and move ``champion`` by compare-and-set.

Before anything is written the certificate is checked against the model it is about to promote
(:func:`tru.certify.binding.check_certificate`: signature, weights hash, train fingerprint, forgotten
requests). Then, by the verdict:

* passed: the unlearned model is registered and promoted (a confirmation run instead tags the champion
  ``confirmed=true``);
* failed with a fallback: the unlearned model is registered and tagged ``rejected`` with the reasons,
  then the retrain the certify step trained is registered and promoted, tagged
  ``evidence=retrain (compliance fallback)``;
* failed without a fallback: registered, ``rejected``; the champion stays and the requests stay pending.

A run that starts from the champion and adds nothing (no new request, not a confirmation) registers
nothing; one that trained a new original (the first run, or a champion that does not fit the data any
more) registers it and offers it for promotion."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tru.certify.binding import Certificate, check_certificate, read_certificate
from tru.runfolder import CERT_FILE, PLAN_FILE, SENSITIVITY_PNG, read_json, unlearn_meta
from tru.steps.certify import fallback_paths
from tru.steps.common import flat_metrics
from tru.utils import LOG


def servable_uri(model_dir: Path, run_id: str, data_dir: Path, target_csv: Path, dataset_name: str) -> str:
    """Log the model as the servable MLflow pyfunc (final representations, each user's retained items,
    never a deleted pair; :mod:`tru.serving`) in run ``run_id``; return its URI for the registry."""
    from tru.checkpoint import load_run
    from tru.serving import build_servable, log_servable
    from tru.steps.common import load_inputs

    dataset, requests, _spec = load_inputs(data_dir, target_csv)
    run = load_run(model_dir, dataset, requests=requests)
    arrays = build_servable(
        run.model, run.train, dataset_name=dataset_name, request_commitment=run.forgotten.commitment or None
    )
    return log_servable(arrays, run_id=run_id)


def _log_and_register(
    model_dir: Path,
    cert_dir: Path,
    *,
    data_dir: Path,
    target_csv: Path,
    name: str,
    dataset_name: str,
    backbone: str,
    data_version: dict[str, Any],
    sensitivity_dir: Path | None,
    params: dict[str, Any] | None,
    role: str,
) -> tuple[str, str]:
    """One MLflow run holding the model folder + its certificate (+ heatmap) and a registry version of
    ``name`` pointing at it. Returns (run id, version)."""
    from tru.mlops import registry, tracking

    cert_doc = read_json(Path(cert_dir) / CERT_FILE, required=True)
    with tempfile.TemporaryDirectory(prefix="tru-register-") as tmp:
        stage = Path(tmp) / "run"
        shutil.copytree(Path(model_dir), stage)
        for f in Path(cert_dir).iterdir():
            if f.is_file():
                shutil.copy2(f, stage / f.name)
        heat = Path(sensitivity_dir) / SENSITIVITY_PNG if sensitivity_dir else None
        if heat is not None and heat.is_file() and not (stage / SENSITIVITY_PNG).exists():
            shutil.copy2(heat, stage / SENSITIVITY_PNG)
        method = str((unlearn_meta(stage) or {}).get("method", ""))
        run_params = {"dataset": dataset_name, "backbone": backbone, "method": method, "role": role}
        metrics = flat_metrics({k: cert_doc.get(k) for k in ("closeness", "efficiency", "unlearned")})
        metrics["certificate.passed"] = float(bool(cert_doc.get("passed")))
        run_id = tracking.log_run(
            stage,
            kind="unlearn",
            params={**run_params, **(params or {})},
            data_version=data_version,
            metrics=metrics,
        )
        tags = {
            "method": method,
            "role": role,
            "certificate_evidence": str(cert_doc.get("evidence", "")),
            "regime": str(cert_doc.get("regime", "")),
            **{f"data_version.{k}": str(v) for k, v in data_version.items()},
        }
        source = servable_uri(stage, str(run_id), data_dir, target_csv, dataset_name)
        version = registry.register_version(name, str(run_id), stage, tags=tags, source=source)
    return str(run_id), str(version)


@dataclass(frozen=True)
class Candidate:
    """The model a run offers for promotion, with the certificate that certifies it."""

    model_dir: Path
    cert_dir: Path
    cert: Certificate
    role: str  # "unlearned" | "fallback-retrain"


def choose_candidate(model_dir: Path, certificate_dir: Path) -> tuple[Certificate, Candidate | None]:
    """(the unlearned model's certificate, the candidate to promote): the unlearned model when its
    certificate passed, else the compliance-fallback retrain when the certify step made one, else None.
    The chosen certificate is checked against its model first."""
    cert = read_certificate(certificate_dir)
    if cert.passed:
        check_certificate(cert, model_dir, str(certificate_dir))
        return cert, Candidate(model_dir, certificate_dir, cert, "unlearned")
    fb = fallback_paths(certificate_dir)
    if fb is None:
        return cert, None
    fb_dir, retrained = fb
    fb_cert = read_certificate(fb_dir)
    check_certificate(fb_cert, retrained, str(fb_dir))
    return cert, Candidate(retrained, fb_dir, fb_cert, "fallback-retrain")


def register(
    model_dir: Path,
    certificate_dir: Path,
    data_dir: Path,
    target_csv: Path,
    *,
    dataset_name: str,
    backbone: str,
    data_version: dict[str, Any],
    tracking_uri: str = "",
    sensitivity_dir: Path | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Register and promote (module docstring). Returns the outcome: promoted, version, champion,
    evidence, the request ids the champion now forgot and the ones this run added. Raises
    :class:`tru.mlops.registry.PromotionConflict` when the champion moved meanwhile (the version stays,
    tagged rejected; the next trigger retries its requests)."""
    from tru.checkpoint import checkpoint_forgotten
    from tru.lifecycle import RunPlan, confirmed_by
    from tru.mlops import registry, tracking

    tracking.configure(tracking_uri or None)
    name = tracking.model_name(dataset_name, backbone)
    model_dir, certificate_dir = Path(model_dir), Path(certificate_dir)
    plan = RunPlan.from_dict(read_json(model_dir / PLAN_FILE, required=True))
    champion_before = registry.champion_version(name)
    out: dict[str, Any] = {
        "model_name": name,
        "new_request_ids": list(plan.pending),
        "champion_before": champion_before,
        "request_ids": list(plan.forgotten),
        "reasons": [],
    }
    if not plan.has_work and plan.start == "champion" and champion_before is not None:
        LOG.info("register: nothing new to forget; champion %s v%s stays", name, champion_before)
        return {**out, "promoted": False, "unchanged": True, "version": "", "champion": champion_before}
    cert, chosen = choose_candidate(model_dir, certificate_dir)
    common = {
        "data_dir": Path(data_dir),
        "target_csv": Path(target_csv),
        "name": name,
        "dataset_name": dataset_name,
        "backbone": backbone,
        "data_version": data_version,
        "sensitivity_dir": sensitivity_dir,
        "params": params,
    }
    out |= {"evidence": cert.evidence, "reasons": list(cert.reasons)}
    if not cert.passed:  # the unlearned model stays on record, rejected with the reasons
        run_id, version = _log_and_register(model_dir, certificate_dir, role="unlearned", **common)
        out |= registry.reject(name, version, list(cert.reasons), plan.pending) | {"run_id": run_id}
        if chosen is None:
            LOG.info("register: %s v%s rejected; champion unchanged", name, version)
            return out
    assert chosen is not None
    run_id, version = _log_and_register(chosen.model_dir, chosen.cert_dir, role=chosen.role, **common)
    forgotten = checkpoint_forgotten(chosen.model_dir)
    if plan.confirm and not plan.has_new and chosen.role == "unlearned":
        result = registry.confirm(name, str(champion_before), evidence=chosen.cert.evidence)
        registry.reject(name, version, ["confirmation record of the champion (not a new model)"], ())
        result |= {"promoted": False, "champion": champion_before}
    else:
        try:
            result = registry.promote(
                name,
                version,
                forgotten=forgotten.ids,
                new_requests=plan.pending,
                evidence=chosen.cert.evidence,
                based_on=plan.start_version or None,
                commitment=forgotten.commitment,
                confirmed=confirmed_by(chosen.cert.evidence),
            )
        except registry.PromotionConflict as exc:
            registry.reject(name, version, [str(exc)], plan.pending)
            raise
    LOG.info(
        "register: %s v%s %s (%s)",
        name,
        version,
        "promoted" if result.get("promoted") else "kept",
        chosen.role,
    )
    return {
        **out,
        **result,
        "version": version,
        "run_id": run_id,
        "role": chosen.role,
        "evidence": chosen.cert.evidence,
        "request_ids": sorted(forgotten.ids),
        "fallback": chosen.role == "fallback-retrain",
    }
