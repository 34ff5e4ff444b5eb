"""MMRecUn (Sinha et al., 2024): minimise λ_f·reverse-BPR(D_f) + λ_r·L_r(D_r), every parameter alike."""

from __future__ import annotations

from tru.unlearn.config import UnlearnConfig
from tru.unlearn.engine import EngineOptions

NAME = "mmrecun"
ITERATIVE = True


def options(cfg: UnlearnConfig) -> EngineOptions:
    return EngineOptions("reverse_bpr", cfg.lambda_f, cfg.lambda_r)
