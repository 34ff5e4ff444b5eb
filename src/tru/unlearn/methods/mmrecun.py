"""MMRecUn (Sinha et al., 2024): minimise λ_f·reverse-BPR(D_f) + λ_r·L_r(D_r), every parameter alike."""

from __future__ import annotations

from typing import Any

from tru.unlearn.engine import EngineOptions

NAME = "mmrecun"
ITERATIVE = True


def options(cfg: dict[str, Any]) -> EngineOptions:
    return EngineOptions("reverse_bpr", float(cfg.get("lambda_f", 1.0)), float(cfg.get("lambda_r", 1.0)))
