"""Unlearning methods, one module each, all plug-and-play over any backbone."""

from __future__ import annotations

from tru.unlearn.methods import finetune, gradient_ascent, mmrecun, retrain, tru

METHODS = {m.NAME: m for m in (retrain, finetune, gradient_ascent, mmrecun, tru)}

__all__ = ["METHODS"]
