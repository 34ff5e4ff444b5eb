"""Certification policy: the thresholds a certificate is checked against, read from YAML, and the checks.

Policy file (YAML mapping; every key optional; unknown keys are an error)::

    # revision 2 (a calibration is given: tolerances from retrain's own spread, certification.md)
    null_quantile: 0.95            # tolerance = max(floor, upper quantile of the retrain-vs-retrain null)
    joint_level: true              # raise the quantile until 95 % of null draws pass every statistic at once
    floor_forget_hr_gap: 0.02      # floors: no tolerance below these (the smallest difference that matters)
    floor_rank_w1: 0.02
    floor_mia_auc_gap: 0.02
    floor_user_mia_auc_gap: 0.03
    floor_diff_auc_gap: 0.02
    floor_retain_recall_ratio: 0.02  # i.e. ratio ≥ 0.98 at least allowed
    floor_retain_ndcg_ratio: 0.02
    min_forget_pairs: 20           # below: inconclusive (the statistics have no power)
    min_calibration_retrains: 3    # K: a calibration from fewer retrains is refused
    min_retrain_free_agreement: 0.9  # a retrain-free pass counts only when the calibration measured its
                                   # verdicts agreeing with retrain's at least this often (else inconclusive)

    # revision 1 (no calibration: fixed tolerances, kept for pipelines that have none yet)
    mia_auc_tolerance: 0.05        # |AUC_unlearned − AUC_reference| ≤ tol (interaction-level audit)
    user_mia_auc_tolerance: 0.05   # the same for the user-level audit (user regime); null: not checked
    retain_recall_min_ratio: 0.97  # retain Recall@20 ≥ ratio · reference's
    forget_hr_max_excess: 0.02     # forget HR@20 ≤ reference + excess   (under-forgetting)
    forget_hr_max_deficit: 0.05    # forget HR@20 ≥ reference − deficit  (over-forgetting is a leak too)

    # both
    max_time_ratio: null           # unlearning seconds ≤ ratio · retrain seconds; null: not checked
    allow_retrain_free: true       # false: a certificate without a retrained model fails

The reference is the retrained model (retrain comparison) or, without one, the retrain-free targets of
tru-method.md §7 (forget HR@20 target; MIA AUC 0.5 or the re-initialised proxy's; the original model's
retain Recall@20), which is weaker evidence.

Bounds on a statistic's signed value v (:class:`Bounds`), from a tolerance t: two-sided −t ≤ v ≤ t,
upper v ≤ t, lower (ratios) v ≥ 1 − t. Revision 1 maps its keys onto the same statistics: forget HR gap
in [−deficit, +excess], MIA gaps within ±tol, retain Recall@20 ratio ≥ retain_recall_min_ratio; the
statistics it has no key for are reported, not checked."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from tru.data.dataset import DataError


@dataclass(frozen=True)
class Policy:
    mia_auc_tolerance: float = 0.05
    user_mia_auc_tolerance: float | None = 0.05
    retain_recall_min_ratio: float = 0.97
    forget_hr_max_excess: float = 0.02
    forget_hr_max_deficit: float = 0.05
    max_time_ratio: float | None = None
    allow_retrain_free: bool = True
    null_quantile: float = 0.95
    joint_level: bool = True
    floor_forget_hr_gap: float = 0.02
    floor_rank_w1: float = 0.02
    floor_mia_auc_gap: float = 0.02
    floor_user_mia_auc_gap: float = 0.03
    floor_diff_auc_gap: float = 0.02
    floor_retain_recall_ratio: float = 0.02
    floor_retain_ndcg_ratio: float = 0.02
    min_forget_pairs: int = 20
    min_calibration_retrains: int = 3
    min_retrain_free_agreement: float = 0.9

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def floor(self, statistic: str) -> float:
        """The floor of a statistic's calibrated tolerance (0 for a statistic without one)."""
        return float(getattr(self, f"floor_{statistic}", 0.0))

    def floors(self) -> dict[str, float]:
        return {
            f.name.removeprefix("floor_"): float(getattr(self, f.name))
            for f in fields(self)
            if f.name.startswith("floor_")
        }


_OPTIONAL = {"user_mia_auc_tolerance", "max_time_ratio"}
_BOOLS = {"allow_retrain_free", "joint_level"}
_INTS = {"min_forget_pairs", "min_calibration_retrains"}


def policy_from_dict(raw: Any, where: str = "policy") -> Policy:
    """Build a :class:`Policy`, refusing unknown keys and values of the wrong type or sign."""
    if raw is None:
        return Policy()
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected a YAML mapping of policy keys, got {type(raw).__name__}")
    known = {f.name: f for f in fields(Policy)}
    values: dict[str, Any] = {}
    for key, val in raw.items():
        if key not in known:
            raise DataError(
                f"{where}: unknown policy key '{key}'; expected one of {', '.join(sorted(known))}"
            )
        if key in _BOOLS:
            if not isinstance(val, bool):
                raise DataError(f"{where}: policy key '{key}' must be true or false, got {val!r}")
            values[key] = val
            continue
        if val is None and key in _OPTIONAL:
            values[key] = None
            continue
        if isinstance(val, bool) or not isinstance(val, int | float) or not math.isfinite(val) or val < 0:
            raise DataError(f"{where}: policy key '{key}' must be a non-negative number, got {val!r}")
        if key in _INTS:
            if val != int(val):
                raise DataError(f"{where}: policy key '{key}' must be a whole number, got {val!r}")
            values[key] = int(val)
            continue
        values[key] = float(val)
    if not 0 <= values.get("min_retrain_free_agreement", 0.9) <= 1:
        raise DataError(
            f"{where}: policy key 'min_retrain_free_agreement' must be in [0, 1], "
            f"got {values['min_retrain_free_agreement']}"
        )
    if not 0.5 <= values.get("null_quantile", 0.95) < 1:
        raise DataError(
            f"{where}: policy key 'null_quantile' must be in [0.5, 1), got {values['null_quantile']}"
        )
    return Policy(**values)


def load_policy(path: Path | str | None) -> Policy:
    """Read a policy YAML file (``None``: the defaults)."""
    if path is None:
        return Policy()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: policy file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML: {exc}") from exc
    return policy_from_dict(raw, str(path))


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


# ---------------------------------------------------------------------------------- revision 2 bounds
@dataclass(frozen=True)
class Bounds:
    """Accepted range of a statistic's signed value: lo ≤ v ≤ hi (None: open on that side)."""

    lo: float | None
    hi: float | None

    def contains(self, v: float | None) -> bool | None:
        if _missing(v):
            return None
        return (self.lo is None or v >= self.lo - 1e-12) and (self.hi is None or v <= self.hi + 1e-12)

    def normalised(self, v: float | None, centre: float) -> float | None:
        """|v − centre| as a multiple of the allowance on v's side (1 = on the bound; 0 = at the centre;
        the side without a bound gives 0)."""
        if _missing(v):
            return None
        if v >= centre:
            return 0.0 if self.hi is None else (v - centre) / max(self.hi - centre, 1e-12)
        return 0.0 if self.lo is None else (centre - v) / max(centre - self.lo, 1e-12)

    def text(self) -> str:
        if self.lo is not None and self.hi is not None:
            if abs(self.lo + self.hi) < 1e-12:
                return f"within ±{self.hi:.4g}"
            return f"in [{self.lo:.4g}, {self.hi:.4g}]"
        if self.hi is not None:
            return f"≤ {self.hi:.4g}"
        if self.lo is not None:
            return f"≥ {self.lo:.4g}"
        return "not checked"

    def to_list(self) -> list[float | None]:
        return [self.lo, self.hi]


def bounds_from_tolerance(sided: str, tolerance: float) -> Bounds:
    """Calibrated bounds: two-sided ±t, upper ≤ t, lower (ratios) ≥ 1 − t."""
    if sided == "two-sided":
        return Bounds(-tolerance, tolerance)
    if sided == "lower":
        return Bounds(1.0 - tolerance, None)
    return Bounds(None, tolerance)


def revision1_bounds(policy: Policy, statistic: str) -> Bounds | None:
    """The fixed revision-1 bound of a statistic, or None when revision 1 has no key for it."""
    if statistic == "forget_hr_gap":
        return Bounds(-policy.forget_hr_max_deficit, policy.forget_hr_max_excess)
    if statistic == "mia_auc_gap":
        return Bounds(-policy.mia_auc_tolerance, policy.mia_auc_tolerance)
    if statistic == "user_mia_auc_gap" and policy.user_mia_auc_tolerance is not None:
        return Bounds(-policy.user_mia_auc_tolerance, policy.user_mia_auc_tolerance)
    if statistic == "retain_recall_ratio":
        return Bounds(policy.retain_recall_min_ratio, None)
    return None
