"""Certification of unlearning (tru-method.md §8; certificate revision 2, shared/docs/certification.md):
retain utility, forget efficacy, membership-inference and difference audits, tolerances calibrated on
retrain's own seed-to-seed spread, a typed signed certificate with a passed / failed / inconclusive
verdict, and an HTML report."""

from tru.certify.binding import Certificate, StatisticResult, read_certificate
from tru.certify.calibration import Calibration, calibrate, run_calibration
from tru.certify.certificate import (
    DEFAULT_SEEDS,
    AuditOptions,
    CertifyError,
    ModelRun,
    certify,
    open_run,
    run_certification,
    verdict_agreement,
)
from tru.certify.policy import Policy, load_policy

__all__ = [
    "DEFAULT_SEEDS",
    "AuditOptions",
    "Calibration",
    "Certificate",
    "CertifyError",
    "ModelRun",
    "Policy",
    "StatisticResult",
    "calibrate",
    "certify",
    "load_policy",
    "open_run",
    "read_certificate",
    "run_calibration",
    "run_certification",
    "verdict_agreement",
]
