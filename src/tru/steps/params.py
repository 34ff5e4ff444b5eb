"""The pipeline's parameters, one typed source: the in-process chain takes them as they are, and the
Kubeflow pipeline (:mod:`tru.kfp.pipeline`) takes its parameters' defaults from here (KFP needs them
spelled out in the pipeline function's signature)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class PipelineParams:
    """``repo``: the data repository (a git + DVC checkout or URL; a plain folder for a local demo);
    ``data_rev``: a commit, branch or ``HEAD`` (resolved to a sha at run time); ``dataset``: a folder
    under its data/; ``tracking_uri``: the MLflow store every step writes to; ``retrain``: certify
    against a retrain (False: retrain-free, the fast path); ``confirm``: a slow-path run confirming the
    champion against one retrain; ``deadline_days``: requests older than this force a full retrain;
    ``policy``: certification policy YAML text or path ('' = built-in); ``epochs`` / ``max_steps``: 0 =
    the configs' values; ``generate_requests`` (demos, benchmarks): random requests by ``regime`` /
    ``ratio`` / ``seed`` when the data has no manifest; ``calibration``: a stored calibration (the folder
    ``tru calibrate`` writes, or a URI MLflow can download: ``s3://…``, ``runs:/…``) whose tolerances the
    certificate uses ('' = the fixed revision-1 policy)."""

    dataset: str = "lfm2k"
    backbone: str = "mgcn"
    method: str = "tru"
    policy: str = ""
    data_rev: str = "HEAD"
    repo: str = ""
    tracking_uri: str = ""
    requests: str = ""
    generate_requests: bool = False
    regime: str = "interaction"
    ratio: float = 0.05
    seed: int = 0
    epochs: int = 0
    max_steps: int = 0
    retrain: bool = True
    audit_seeds: str = "0,1,2"
    reuse_champion: bool = True
    deadline_days: float = 30.0
    confirm: bool = False
    calibration: str = ""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def of(cls, options: dict[str, Any]) -> PipelineParams:
        """From keyword options, refusing a name the pipeline does not have (ValueError naming it)."""
        unknown = sorted(set(options) - set(cls.names()))
        if unknown:
            raise ValueError(f"unknown pipeline parameter(s) {unknown}; expected some of {list(cls.names())}")
        params = cls(**{k: v for k, v in options.items() if v is not None})
        wrong = params.problems()
        if wrong:
            raise ValueError("bad pipeline parameter(s): " + "; ".join(wrong))
        return params

    @property
    def seeds(self) -> tuple[int, ...]:
        """The audit seeds: ``audit_seeds`` split at commas, empty entries skipped (ValueError on a
        non-integer), as the certify step reads them."""
        return tuple(int(s) for s in str(self.audit_seeds).split(",") if s.strip())

    def problems(self) -> list[str]:
        """What is wrong with the values, each naming its parameter (empty: nothing): a backbone, method
        and regime tru has; a ``ratio`` within (0, 1); ``seed`` / ``epochs`` / ``max_steps`` integers
        ≥ 0; ``deadline_days`` a number of days in (0, :data:`MAX_DEADLINE_DAYS`]; ``audit_seeds`` integers
        ≥ 0, comma separated, as certify reads them (at least one, except for a retrain, which certifies
        itself); the switches true or false. Checked before anything runs (a cluster run would otherwise
        fail in a pod, after the ingest and training steps)."""
        from tru.forget.spec import REGIMES
        from tru.models import BACKBONES
        from tru.unlearn.methods import METHODS

        out: list[str] = []
        for name, value, choices in (
            ("backbone", self.backbone, sorted(BACKBONES)),
            ("method", self.method, sorted(METHODS)),
            ("regime", self.regime, list(REGIMES)),
        ):
            if value not in choices:
                out.append(f"{name} {value!r}: expected one of {choices}")
        if not _number(self.ratio) or not 0 < float(self.ratio) < 1:
            out.append(f"ratio {self.ratio!r}: expected a fraction within (0, 1)")
        for name in ("seed", "epochs", "max_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                out.append(f"{name} {value!r}: expected an integer >= 0")
        if not _number(self.deadline_days) or not 0 < float(self.deadline_days) <= MAX_DEADLINE_DAYS:
            days = f"(0, {MAX_DEADLINE_DAYS}]"
            out.append(f"deadline_days {self.deadline_days!r}: expected a number of days in {days}")
        try:
            seeds = self.seeds
        except ValueError:
            seeds = None
        if seeds is None or any(s < 0 for s in seeds) or (not seeds and self.method != "retrain"):
            out.append(f"audit_seeds {self.audit_seeds!r}: expected integers >= 0, comma separated (0,1,2)")
        for name in ("generate_requests", "retrain", "reuse_champion", "confirm"):
            if not isinstance(getattr(self, name), bool):
                out.append(f"{name} {getattr(self, name)!r}: expected true or false")
        return out


#: the longest deadline a request may be given (a date past it is out of Python's range): 100 years
MAX_DEADLINE_DAYS = 36_500


def _number(value: Any) -> bool:
    """A finite int or float (not a bool, not a string)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


DEFAULTS = PipelineParams()
