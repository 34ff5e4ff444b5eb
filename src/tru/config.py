"""Layered YAML configuration: overall -> dataset -> model -> explicit overrides (last wins)."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

#: a dataset or backbone name that selects a packaged config: a plain identifier, never a path
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(ValueError):
    """A configuration file or override is malformed; the message names the file and key."""


def _packaged_names(group: str) -> dict[str, Any]:
    """``{name: resource}`` for the packaged ``configs/<group>/<name>.yaml`` files (``group`` "" :
    ``configs/`` itself)."""
    folder = resources.files("tru") / "configs"
    folder = folder / group if group else folder
    if not folder.is_dir():
        return {}
    return {ref.name[: -len(".yaml")]: ref for ref in folder.iterdir() if ref.name.endswith(".yaml")}


def _read_packaged(rel: str) -> dict[str, Any]:
    """A packaged config by exact name: ``overall.yaml`` / ``unlearn.yaml``, or ``<group>/<name>.yaml``
    with ``name`` one of the files listed in that packaged folder (never a path built from the name, so
    a name such as ``../model/x`` or ``../../../tmp/evil`` reads nothing). Missing: ``{}``."""
    group, _, file = rel.rpartition("/")
    name = file[: -len(".yaml")] if file.endswith(".yaml") else file
    if not NAME_RE.fullmatch(name) or (group and "/" in group) or group in (".", ".."):
        return {}
    ref = _packaged_names(group).get(name)
    if ref is None or not ref.is_file():
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
    """Merge the packaged overall, dataset and model YAML, then user files, then overrides.

    ``dataset`` and ``model`` are names (``lfm2k``, ``mgcn``) that select packaged files by exact name; a
    name that is not a plain identifier is a :class:`ConfigError` (a dataset without a packaged config
    just gets none)."""
    for what, name in (("dataset", dataset), ("backbone", model)):
        if name and not NAME_RE.fullmatch(str(name)):
            raise ConfigError(
                f"{what} name {name!r}: expected a plain identifier (letters, digits, '_', '-', '.'; "
                "at most 64) that names a packaged config, not a path"
            )
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
