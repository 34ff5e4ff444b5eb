"""Component ``certify``: retrain comparison and membership-inference audits, with the HTML report."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components._common import IMAGE_GPU


@dsl.component(base_image=IMAGE_GPU, install_kfp_package=False)
def certify(
    data: Input[Dataset],
    original: Input[Model],
    unlearned: Input[Model],
    deletion_requests: Input[Dataset],
    policy: str,
    retrain: bool,
    audit_seeds: str,
    certificate: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
) -> bool:
    """Certify the unlearned model (tru-method.md §8): retain utility, forget efficacy, closeness to a
    model retrained on D_r (``retrain``; else the retrain-free targets), membership-inference audits over
    ``audit_seeds`` (comma-separated), checked against ``policy`` (YAML text or a path; '' = built-in).
    Outputs ``certificate.json`` with its plots (folder), the HTML report (shown in the Kubeflow UI) and the
    certificate's metrics. Returns the verdict: a failed certificate is data, not a task failure."""
    import shutil
    from pathlib import Path

    from tru.mlops import release_steps, steps

    seeds = tuple(int(s) for s in audit_seeds.split(",") if s.strip())
    cert = release_steps.certify(
        Path(data.path), Path(original.path), Path(unlearned.path), Path(deletion_requests.path),
        Path(certificate.path), policy=policy, retrain=retrain, seeds=seeds,
    )  # fmt: skip
    shutil.copyfile(Path(certificate.path) / "report.html", report.path)
    certificate.metadata.update({"passed": bool(cert["passed"]), "evidence": str(cert.get("evidence", ""))})
    metrics.log_metric("passed", float(bool(cert["passed"])))
    for name, val in steps.flat_metrics({k: cert.get(k) for k in ("closeness", "efficiency")}).items():
        metrics.log_metric(name, val)
    return bool(cert["passed"])
