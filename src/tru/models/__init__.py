"""Backbones: one module each behind :class:`tru.models.base.Recommender`."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from tru.data.dataset import RecDataset
from tru.models.base import Batch, LayerUnit, Recommender
from tru.utils import seed_everything

BACKBONES = {
    "mgcn": "tru.models.mgcn:MGCN",
    "miggt": "tru.models.miggt:MIGGT",
    "vbpr": "tru.models.vbpr:VBPR",
}


def get_backbone_class(name: str) -> type[Recommender]:
    try:
        module, cls = BACKBONES[name.lower()].split(":")
    except KeyError:
        raise ValueError(f"unknown backbone '{name}': expected one of {sorted(BACKBONES)}") from None
    return getattr(import_module(module), cls)


def build_backbone(name: str, dataset: RecDataset, config: dict[str, Any]) -> Recommender:
    """Seed, then instantiate a backbone (its constructor builds the interaction-derived structures from
    ``dataset.train``), so that the same seed gives the same initial weights."""
    cls = get_backbone_class(name)
    seed_everything(int(config.get("seed", 999)))
    return cls(dataset, config)


__all__ = ["BACKBONES", "Batch", "LayerUnit", "Recommender", "build_backbone", "get_backbone_class"]
