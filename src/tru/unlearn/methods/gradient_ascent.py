"""Gradient ascent: ascend BPR on D_f (minimise −BPR) with a retain term λ_r·L_r on D_r."""

from __future__ import annotations

from tru.unlearn.config import UnlearnConfig
from tru.unlearn.engine import EngineOptions

NAME = "gradient_ascent"
ITERATIVE = True


def options(cfg: UnlearnConfig) -> EngineOptions:
    return EngineOptions("ascent", cfg.lambda_f, cfg.lambda_r)
