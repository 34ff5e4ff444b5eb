"""Certification of unlearning (tru-method.md §8): retain utility, forget efficacy, closeness to
Retrain, membership-inference audits, efficiency, a policy verdict and an HTML report."""

from tru.certify.certificate import (
    DEFAULT_SEEDS,
    AuditOptions,
    CertifyError,
    ModelRun,
    certify,
    open_run,
    run_certification,
)
from tru.certify.policy import Policy, load_policy

__all__ = [
    "DEFAULT_SEEDS",
    "AuditOptions",
    "CertifyError",
    "ModelRun",
    "Policy",
    "certify",
    "load_policy",
    "open_run",
    "run_certification",
]
