"""Certificates bound to the models they certify, and signed.

A certificate names, for every model it compared, the model's weights hash, train fingerprint, lineage
and forgotten-request commitment (:class:`ModelBinding`), the requests it certifies (ids + keyed
commitment) and which model it certifies for promotion (``candidate``: ``unlearned``, or ``retrained``
for a compliance-fallback certificate). It is signed:

    signature = "hmac-sha256:" + HMAC-SHA256(K_sign, canonical_json(certificate without "signature")),
    K_sign    = HMAC-SHA256(K, "tru certificate signature v1")

with K the installation's secret key (:mod:`tru.forget.commitment`), so a hand-edited ``passed: true``
or a certificate moved next to another model is refused by :func:`check_certificate` (the register step
and ``tru registry promote`` call it before anything is written)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tru.certify.output import CertifyError
from tru.runfolder import CERT_FILE, read_json

SIGNATURE_KEY = "signature"
SCHEME = "hmac-sha256"
VERDICTS = ("passed", "failed", "inconclusive")
CANDIDATES = ("unlearned", "retrained")


class CertificateMismatch(CertifyError):
    """The certificate does not certify this model (or was altered): nothing is registered or promoted."""


def _signing_key() -> bytes:
    from tru.forget.commitment import commitment_key

    return hmac.new(commitment_key(), b"tru certificate signature v1", hashlib.sha256).digest()


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def sign(cert: Mapping[str, Any]) -> dict[str, Any]:
    """``cert`` with its ``signature`` (over every other field) set."""
    body = {k: v for k, v in cert.items() if k != SIGNATURE_KEY}
    mac = hmac.new(_signing_key(), canonical_json(body), hashlib.sha256).hexdigest()
    return {**body, SIGNATURE_KEY: f"{SCHEME}:{mac}"}


def signature_valid(cert: Mapping[str, Any]) -> bool:
    body = {k: v for k, v in cert.items() if k != SIGNATURE_KEY}
    want = f"{SCHEME}:{hmac.new(_signing_key(), canonical_json(body), hashlib.sha256).hexdigest()}"
    return hmac.compare_digest(str(cert.get(SIGNATURE_KEY, "")), want)


@dataclass(frozen=True)
class ModelBinding:
    """What identifies one model inside a certificate."""

    weights_sha256: str
    train_fingerprint: str
    lineage_kind: str = ""
    parent_weights_sha256: str = ""
    forgotten_commitment: str = ""

    @classmethod
    def from_dict(cls, raw: Any) -> ModelBinding:
        raw = raw or {}
        return cls(
            str(raw.get("weights_sha256", "")),
            str(raw.get("train_fingerprint", "")),
            str(raw.get("lineage_kind", "")),
            str(raw.get("parent_weights_sha256", "")),
            str(raw.get("forgotten_commitment", "")),
        )

    def to_dict(self) -> dict[str, str]:
        return {
            "weights_sha256": self.weights_sha256,
            "train_fingerprint": self.train_fingerprint,
            "lineage_kind": self.lineage_kind,
            "parent_weights_sha256": self.parent_weights_sha256,
            "forgotten_commitment": self.forgotten_commitment,
        }


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _opt_bool(x: Any) -> bool | None:
    return x if isinstance(x, bool) else None


@dataclass(frozen=True)
class StatisticResult:
    """One statistic of a revision-2 certificate: the signed values of the candidate, the original and a
    second retrain against the reference, the accepted bounds [lo, hi] (from the tolerance), and whether
    each is inside. ``checked`` false: reported only (no calibration and no revision-1 key, or not
    available)."""

    name: str
    label: str
    kind: str  # "forgetting" | "utility"
    sided: str  # "two-sided" | "upper" | "lower"
    candidate: float | None
    original: float | None
    second_retrain: float | None
    tolerance: float | None
    bounds: tuple[float | None, float | None]
    tolerance_source: str
    checked: bool
    passed: bool | None
    original_passed: bool | None
    second_retrain_passed: bool | None
    candidate_ci95: tuple[float | None, float | None] = (None, None)
    message: str = ""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StatisticResult:
        lo, hi = [*list(raw.get("bounds") or []), None, None][:2]
        ci = [*list(raw.get("candidate_ci95") or []), None, None][:2]
        return cls(
            name=str(raw.get("name", "")),
            label=str(raw.get("label", "")),
            kind=str(raw.get("kind", "")),
            sided=str(raw.get("sided", "")),
            candidate=_num(raw.get("candidate")),
            original=_num(raw.get("original")),
            second_retrain=_num(raw.get("second_retrain")),
            tolerance=_num(raw.get("tolerance")),
            bounds=(_num(lo), _num(hi)),
            tolerance_source=str(raw.get("tolerance_source", "")),
            checked=bool(raw.get("checked")),
            passed=_opt_bool(raw.get("passed")),
            original_passed=_opt_bool(raw.get("original_passed")),
            second_retrain_passed=_opt_bool(raw.get("second_retrain_passed")),
            candidate_ci95=(_num(ci[0]), _num(ci[1])),
            message=str(raw.get("message", "")),
        )


@dataclass(frozen=True, eq=False)
class Certificate(Mapping[str, Any]):
    """The typed certificate: what the lifecycle acts on (verdict, candidate, bindings, requests), the
    revision-2 statistics and calibration, and the full signed document in ``document``. It also reads
    as that document (``cert["efficiency"]``, ``cert.get("evidence")``, ``dict(cert)``) for code that
    still indexes certificates by key; equality is the document's."""

    verdict: str
    evidence: str
    regime: str
    candidate: str
    reasons: tuple[str, ...]
    request_ids: tuple[str, ...]
    requests_commitment: str
    models: dict[str, ModelBinding]
    signed: bool
    document: dict[str, Any] = field(repr=False, default_factory=dict)
    format: str = ""
    tolerances: str = ""
    statistics: tuple[StatisticResult, ...] = ()
    calibration: dict[str, Any] | None = None
    update: str = ""

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"

    @property
    def inconclusive(self) -> bool:
        return self.verdict == "inconclusive"

    @property
    def rebuild_only(self) -> bool:
        """The candidate changed nothing beyond the rebuild from D_r (labelled "rebuild only")."""
        return self.update == "rebuild only"

    @property
    def candidate_binding(self) -> ModelBinding:
        return self.models[self.candidate]

    def statistic(self, name: str) -> StatisticResult | None:
        return next((s for s in self.statistics if s.name == name), None)

    @property
    def failed_statistics(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.statistics if s.checked and s.passed is False)

    def to_dict(self) -> dict[str, Any]:
        """The signed JSON document."""
        return self.document

    def __getitem__(self, key: str) -> Any:
        return self.document[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.document)

    def __len__(self) -> int:
        return len(self.document)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = CERT_FILE) -> Certificate:
        verdict = raw.get("verdict") or ("passed" if raw.get("passed") is True else "failed")
        if verdict not in VERDICTS:
            raise CertificateMismatch(f"{where}: verdict {verdict!r}; expected one of {VERDICTS}")
        if (verdict == "passed") != (raw.get("passed") is True):
            raise CertificateMismatch(
                f"{where}: 'passed' and 'verdict' disagree: the certificate was altered"
            )
        candidate = str(raw.get("candidate") or "unlearned")
        if candidate not in CANDIDATES:
            raise CertificateMismatch(f"{where}: candidate {candidate!r}; expected one of {CANDIDATES}")
        models = {k: ModelBinding.from_dict(v) for k, v in (raw.get("models") or {}).items()}
        req = raw.get("requests") or {}
        stats = raw.get("statistics") or []
        if not isinstance(stats, list) or not all(isinstance(x, dict) for x in stats):
            raise CertificateMismatch(f"{where}: 'statistics' must be a list of objects")
        cal = raw.get("calibration")
        return cls(
            verdict=str(verdict),
            evidence=str(raw.get("evidence", "")),
            regime=str(raw.get("regime", "")),
            candidate=candidate,
            reasons=tuple(str(r) for r in raw.get("reasons") or ()),
            request_ids=tuple(str(r) for r in req.get("request_ids") or ()),
            requests_commitment=str(req.get("requests_commitment", "")),
            models=models,
            signed=bool(raw.get(SIGNATURE_KEY)) and signature_valid(raw),
            document=raw,
            format=str(raw.get("format", "")),
            tolerances=str(raw.get("tolerances", "")),
            statistics=tuple(StatisticResult.from_dict(x) for x in stats),
            calibration=cal if isinstance(cal, dict) else None,
            update=str((raw.get("update") or {}).get("label", ""))
            if isinstance(raw.get("update"), dict)
            else "",
        )


def read_certificate(folder_or_file: Path | str) -> Certificate:
    """Read a certificate (a folder holding ``certificate.json``, or the file)."""
    path = Path(folder_or_file)
    path = path / CERT_FILE if path.is_dir() else path
    if not path.is_file():
        raise CertifyError(f"{path}: no certificate; expected the certify step's output folder")
    return Certificate.from_dict(read_json(path), str(path))


def check_certificate(cert: Certificate, model_dir: Path | str, where: str = "certificate") -> str:
    """Refuse to act on ``cert`` for the model in ``model_dir`` unless the certificate is signed by this
    installation, certifies exactly that model (weights hash recomputed from the checkpoint, train
    fingerprint) and the requests the model has forgotten (commitment). Returns the weights hash."""
    from tru.checkpoint import Forgotten, read_checkpoint, verify_weights

    if not cert.signed:
        raise CertificateMismatch(
            f"{where}: signature missing or invalid: the certificate was not written by this installation's "
            "tru certify, or was edited afterwards; nothing was registered"
        )
    if cert.candidate not in cert.models:
        raise CertificateMismatch(f"{where}: names no binding for its candidate '{cert.candidate}'")
    bound = cert.candidate_binding
    digest = verify_weights(model_dir)
    if digest != bound.weights_sha256:
        raise CertificateMismatch(
            f"{where}: certifies the {cert.candidate} model with weights {bound.weights_sha256[:12]}…, but "
            f"{model_dir} holds weights {digest[:12]}…: a certificate only promotes the model it certified"
        )
    payload = read_checkpoint(model_dir)
    if payload.get("train_fingerprint") != bound.train_fingerprint:
        raise CertificateMismatch(f"{where}: {model_dir} was trained on other data than the certified model")
    forgotten = Forgotten.from_dict(payload.get("forgotten"))
    covered = forgotten.restricted(cert.request_ids)
    if covered is None or covered.commitment != cert.requests_commitment:
        raise CertificateMismatch(
            f"{where}: {model_dir} has not forgotten the {len(cert.request_ids)} request(s) the certificate "
            f"covers (it records {len(forgotten.request_ids)}, with other commitments)"
        )
    return digest
