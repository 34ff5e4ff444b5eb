"""Fine-tuning: continue training on D_r only (the retain loss; λ_f = 0), every parameter updated."""

from __future__ import annotations

from tru.unlearn.config import UnlearnConfig
from tru.unlearn.engine import EngineOptions

NAME = "finetune"
ITERATIVE = True


def options(cfg: UnlearnConfig) -> EngineOptions:
    return EngineOptions("reverse_bpr", 0.0, cfg.lambda_r)
