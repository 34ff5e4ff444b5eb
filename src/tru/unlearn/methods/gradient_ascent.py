"""Gradient ascent: ascend BPR on D_f (minimise −BPR) with a retain term λ_r·L_r on D_r."""

from __future__ import annotations

from typing import Any

from tru.unlearn.engine import EngineOptions

NAME = "gradient_ascent"
ITERATIVE = True


def options(cfg: dict[str, Any]) -> EngineOptions:
    return EngineOptions("ascent", float(cfg.get("lambda_f", 1.0)), float(cfg.get("lambda_r", 1.0)))
