"""Certification of unlearning (tru-method.md §8; certificate revision 2, shared/docs/certification.md):
retain utility, forget efficacy, membership-inference and difference audits, tolerances calibrated on
retrain's own seed-to-seed spread, a typed signed certificate with a passed / failed / inconclusive
verdict, and an HTML report.

The names below are imported on first use (PEP 562): the audits pull in scikit-learn, SciPy and
matplotlib (1.7 s of start-up here), which a process that only reads a certificate
(:mod:`tru.certify.binding`: the register step) or only names :class:`CertifyError` does not need."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the submodule that defines it
_EXPORTS = {
    "Certificate": "binding",
    "StatisticResult": "binding",
    "read_certificate": "binding",
    "Calibration": "calibration",
    "calibrate": "calibration",
    "run_calibration": "calibration",
    "DEFAULT_SEEDS": "certificate",
    "AuditOptions": "certificate",
    "ModelRun": "certificate",
    "certify": "certificate",
    "open_run": "certificate",
    "run_certification": "certificate",
    "verdict_agreement": "certificate",
    "CertifyError": "output",
    "Policy": "policy",
    "load_policy": "policy",
}

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

if TYPE_CHECKING:
    from tru.certify.binding import Certificate, StatisticResult, read_certificate
    from tru.certify.calibration import Calibration, calibrate, run_calibration
    from tru.certify.certificate import (
        DEFAULT_SEEDS,
        AuditOptions,
        ModelRun,
        certify,
        open_run,
        run_certification,
        verdict_agreement,
    )
    from tru.certify.output import CertifyError
    from tru.certify.policy import Policy, load_policy


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
