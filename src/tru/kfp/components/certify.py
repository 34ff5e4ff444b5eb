"""Component ``certify``: the signed certificate (retrain comparison or retrain-free) and the fallback."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from tru.kfp.components.images import IMAGE_GPU


@dsl.component(base_image=IMAGE_GPU, install_kfp_package=False)
def certify(
    data: Input[Dataset],
    original: Input[Model],
    unlearned: Input[Model],
    target_requests: Input[Dataset],
    policy: str,
    retrain: bool,
    audit_seeds: str,
    calibration: str,
    certificate: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
) -> bool:
    """Certify the unlearned model (tru-method.md §8; certification.md): with ``retrain`` against a model
    retrained on D_r now, else retrain-free (the fast path); membership audits over ``audit_seeds``;
    ``policy`` YAML text or a path ('' = built-in); ``calibration`` a stored calibration (a folder or a
    URI MLflow downloads: its tolerances replace the fixed policy's). When the verdict fails (or is
    inconclusive), the retrain (trained now if there was none) and its own certificate go into the output
    for the register task to promote instead. Returns the verdict: a failed certificate is data, not a
    task failure."""
    import shutil
    from pathlib import Path

    from tru.runfolder import REPORT_FILE
    from tru.steps.certify import certify as run
    from tru.steps.common import flat_metrics

    seeds = tuple(int(s) for s in audit_seeds.split(",") if s.strip())
    cert = run(
        Path(data.path), Path(original.path), Path(unlearned.path), Path(target_requests.path),
        Path(certificate.path), policy=policy, retrain=retrain, seeds=seeds, calibration=calibration,
    )  # fmt: skip
    shutil.copyfile(Path(certificate.path) / REPORT_FILE, report.path)
    certificate.metadata.update({"passed": bool(cert["passed"]), "evidence": str(cert.get("evidence", ""))})
    metrics.log_metric("passed", float(bool(cert["passed"])))
    for name, val in flat_metrics({k: cert.get(k) for k in ("closeness", "efficiency")}).items():
        metrics.log_metric(name, val)
    return bool(cert["passed"])
