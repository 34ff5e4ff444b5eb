"""Layered YAML configuration: overall -> dataset -> model -> explicit overrides (last wins)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration file or override is malformed; the message names the file and key."""


def _read_packaged(rel: str) -> dict[str, Any]:
    ref = resources.files("tru") / "configs" / rel
    if not ref.is_file():
        return {}
    data = yaml.safe_load(ref.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"tru/configs/{rel}: expected a mapping, got {type(data).__name__}")
    return data


def read_yaml_file(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(data).__name__}")
    return data


def load_config(
    model: str,
    dataset: str | None = None,
    files: list[Path] | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge the packaged overall, dataset and model YAML, then user files, then overrides."""
    cfg: dict[str, Any] = {}
    cfg.update(_read_packaged("overall.yaml"))
    if dataset:
        cfg.update(_read_packaged(f"dataset/{dataset}.yaml"))
    model_cfg = _read_packaged(f"model/{model}.yaml")
    if not model_cfg and model:
        raise ConfigError(f"no packaged config for backbone '{model}' (tru/configs/model/{model}.yaml)")
    cfg.update(model_cfg)
    for f in files or []:
        cfg.update(read_yaml_file(f))
    cfg.update({k: v for k, v in (overrides or {}).items() if v is not None})
    cfg["model"] = model
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with a YAML-typed value (``lr=1e-3``, ``topk=[10,20]``)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key=value")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML: {exc}") from exc
