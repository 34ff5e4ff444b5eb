"""Fine-tuning: continue training on D_r only (the retain loss; λ_f = 0), every parameter updated."""

from __future__ import annotations

from typing import Any

from tru.unlearn.engine import EngineOptions

NAME = "finetune"
ITERATIVE = True


def options(cfg: dict[str, Any]) -> EngineOptions:
    return EngineOptions("reverse_bpr", 0.0, float(cfg.get("lambda_r", 1.0)))
