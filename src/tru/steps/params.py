"""The pipeline's parameters, one typed source: the in-process chain takes them as they are, and the
Kubeflow pipeline (:mod:`tru.kfp.pipeline`) takes its parameters' defaults from here (KFP needs them
spelled out in the pipeline function's signature)."""

from __future__ import annotations

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
        return cls(**{k: v for k, v in options.items() if v is not None})

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.audit_seeds.split(",") if s.strip())


DEFAULTS = PipelineParams()
