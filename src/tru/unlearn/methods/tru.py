"""TRU, Targeted Reverse Update: MMRecUn's objective plus the ranking fusion gate (``rfg``), branch-wise
modality scaling (``bms``) and capacity-aware layer isolation (``cli``), each switchable, so that the
ablations are runs of the same code (all three off reproduces MMRecUn exactly)."""

from __future__ import annotations

from typing import Any

from tru.unlearn.engine import EngineOptions

NAME = "tru"
ITERATIVE = True


def options(cfg: dict[str, Any]) -> EngineOptions:
    return EngineOptions(
        "reverse_bpr",
        float(cfg.get("lambda_f", 1.0)),
        float(cfg.get("lambda_r", 1.0)),
        rfg=bool(cfg.get("rfg", True)),
        bms=bool(cfg.get("bms", True)),
        cli=bool(cfg.get("cli", True)),
    )
