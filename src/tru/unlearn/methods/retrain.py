"""Retrain (the gold standard): train from scratch on D_r with the same config, seed and early stopping;
valid / test follow the regime (deleted users' or items' rows leave evaluation)."""

from __future__ import annotations

NAME = "retrain"
ITERATIVE = False
