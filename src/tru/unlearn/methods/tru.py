"""TRU, Targeted Reverse Update: MMRecUn's objective plus the ranking fusion gate (``rfg``; for deleted
interaction pairs, ``rfg_target: coupled``, each pair's own target rank: :mod:`tru.unlearn.coupling`),
branch-wise modality scaling (``bms``), capacity-aware layer isolation (``cli``) and, in the item regime,
the item-sink term (``item_sink``: the target items below retained positives for random retained users), each
switchable, so that the ablations are runs of the same code (all off reproduces MMRecUn exactly). The exact
part (``exact``) is the starting point of every iterative method, not a TRU component."""

from __future__ import annotations

from tru.unlearn.config import UnlearnConfig
from tru.unlearn.engine import EngineOptions

NAME = "tru"
ITERATIVE = True


def options(cfg: UnlearnConfig) -> EngineOptions:
    return EngineOptions(
        cfg.forget_loss,
        cfg.lambda_f,
        cfg.lambda_r,
        rfg=cfg.rfg,
        coupled=cfg.rfg and cfg.rfg_target == "coupled",
        bms=cfg.bms,
        cli=cfg.cli,
        item_sink=cfg.item_sink,
    )
