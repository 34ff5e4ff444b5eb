"""The pipeline's release steps (:mod:`tru.mlops.steps` has the others): :func:`certify` the unlearned
model, :func:`register` it in MLflow (``champion`` moves only on a passed certificate), and
:func:`heatmap_html`, the sensitivity heatmap as a page for the Kubeflow UI."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tru.data.dataset import DataError
from tru.mlops.steps import _load_spec, _unlearn_cfg, flat_metrics
from tru.utils import LOG, write_json


# ------------------------------------------------------------------------------------------- heatmap
def heatmap_html(png: Path, title: str = "Layer sensitivity") -> str:
    """A self-contained HTML page showing ``png`` (inline, base64) for the Kubeflow UI's HTML viewer."""
    import base64

    if Path(png).is_file():
        body = (
            f'<img alt="{title}" src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}">'
        )
    else:
        body = "<p>No deletion requests: nothing to probe.</p>"
    head = "<!doctype html><html><head><meta charset='utf-8'></head><body>"
    return f"{head}<h2>{title}</h2>{body}</body></html>\n"


# ------------------------------------------------------------------------------------------- certify
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


def _trivial_certificate(spec: Any, dataset: Any, out_dir: Path) -> dict[str, Any]:
    cert = {
        "format": "tru-certificate/1",
        "passed": True,
        "reasons": [],
        "evidence": "nothing to forget (no deletion requests)",
        "regime": spec.regime,
        "checks": [],
        "requests": spec.summary(dataset.n_items),
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint},
    }
    write_json(out_dir / "certificate.json", cert)
    (out_dir / "report.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>tru certificate</title></head><body>"
        f"<h1>Certificate: passed</h1><p>Dataset {dataset.name}: no deletion requests, nothing to forget; "
        "the model passes through unchanged.</p></body></html>\n"
    )
    return cert


def certify(
    data_dir: Path,
    original_dir: Path,
    unlearned_dir: Path,
    requests_csv: Path,
    out_dir: Path,
    *,
    policy: str = "",
    retrain: bool = True,
    seeds: tuple[int, ...] = (0, 1, 2),
) -> dict[str, Any]:
    """Certify the unlearned model (tru-method.md §8): with ``retrain`` a model retrained on D_r (the
    ``retrain`` method, same config) is the reference, else the retrain-free targets. Writes
    ``certificate.json``, ``report.html`` and the plots to ``out_dir``; returns the certificate. A
    failed verdict is data, not an error."""
    from tru.certify import run_certification
    from tru.checkpoint import load_run
    from tru.unlearn.api import run_unlearning, save_unlearned
    from tru.utils import resolve_device

    dataset, spec = _load_spec(data_dir, requests_csv)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tru-certify-") as tmp:
        pol = policy_file(policy, Path(tmp) / "policy.yaml")
        if len(spec.forget) == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            return _trivial_certificate(spec, dataset, out_dir)
        retrained = None
        if retrain:
            run = load_run(Path(original_dir), dataset, device=resolve_device("auto"))
            outcome = run_unlearning(
                "retrain", run.model, dataset, spec, run.config, _unlearn_cfg(run.config, {})
            )
            retrained = save_unlearned(Path(tmp) / "retrained", outcome, run.config, dataset, spec)
        return run_certification(
            data_dir,
            original_dir,
            unlearned_dir,
            requests_csv,
            out_dir,
            retrained_dir=retrained,
            policy_path=pol,
            seeds=seeds,
            overwrite=True,
            validate=False,
        )


# ------------------------------------------------------------------------------------------ register
def register(
    model_dir: Path,
    certificate_dir: Path,
    *,
    dataset_name: str,
    backbone: str,
    data_version: dict[str, Any],
    tracking_uri: str = "",
    sensitivity_dir: Path | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Log the unlearned model with its certificate, report and heatmap as one MLflow run, register it as
    a version of ``tru-<dataset>-<backbone>`` and move ``champion`` to it only if the certificate
    passed (else it is tagged ``rejected`` and the champion stays). Returns the promotion result."""
    from tru.mlops import registry, tracking

    cert_path = Path(certificate_dir) / "certificate.json"
    if not cert_path.is_file():
        raise DataError(f"{cert_path}: no certificate; expected the certify step's output folder")
    cert = json.loads(cert_path.read_text())
    tracking.configure(tracking_uri or None)
    name = tracking.model_name(dataset_name, backbone)
    request_ids = [str(r) for r in (cert.get("requests") or {}).get("request_ids", [])]
    with tempfile.TemporaryDirectory(prefix="tru-register-") as tmp:
        stage = Path(tmp) / "run"
        shutil.copytree(Path(model_dir), stage)
        for f in Path(certificate_dir).iterdir():
            if f.is_file():
                shutil.copy2(f, stage / f.name)
        heat = Path(sensitivity_dir) / "sensitivity.png" if sensitivity_dir else None
        if heat is not None and heat.is_file() and not (stage / "sensitivity.png").exists():
            shutil.copy2(heat, stage / "sensitivity.png")
        unlearn_meta = (
            json.loads((stage / "unlearn.json").read_text()) if (stage / "unlearn.json").is_file() else {}
        )
        method = str(unlearn_meta.get("method", ""))
        run_params = {"dataset": dataset_name, "backbone": backbone, "method": method, **(params or {})}
        metrics = flat_metrics({k: cert.get(k) for k in ("closeness", "efficiency", "unlearned")})
        metrics["certificate.passed"] = float(bool(cert.get("passed")))
        run_id = tracking.log_run(
            stage, kind="unlearn", params=run_params, data_version=data_version, metrics=metrics
        )
        tags = {
            "method": method,
            "evidence": str(cert.get("evidence", "")),
            "regime": str(cert.get("regime", "")),
            "n_requests": str(len(request_ids)),
            **{f"data_version.{k}": str(v) for k, v in data_version.items()},
        }
        version = str(registry.register_version(name, str(run_id), stage, tags=tags))
    result = dict(registry.promote(name, version, cert, request_ids))
    result.update(
        {
            "model_name": name,
            "version": version,
            "run_id": str(run_id),
            "passed": bool(cert.get("passed")),
            "reasons": list(cert.get("reasons") or []),
            "request_ids": request_ids,
        }
    )
    LOG.info(
        "register: %s v%s %s", name, version, "promoted to champion" if result.get("promoted") else "rejected"
    )
    return result
