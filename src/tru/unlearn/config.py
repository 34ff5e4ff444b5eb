"""The unlearning options, typed: one source of defaults (the packaged ``configs/unlearn.yaml``).

:class:`UnlearnConfig` declares every option with its type and no default value: the values come only
from ``unlearn.yaml``, so the engine, the methods and the probe read one set of numbers (before this
class the engine's ``cfg.get(key, fallback)`` calls carried a second, different set). Layering, last
wins:

    unlearn.yaml  ←  unlearn.yaml's ``per_backbone[<backbone>]``  ←  the model config's ``unlearn:``
    section  ←  explicit overrides (``--config``, ``--set``, pipeline parameters)

``seed: null`` means the model's seed. Every value is checked against the declared type (a switch must be
true / false, a number a finite number: numeric YAML strings such as ``1e-3`` are converted, an integer
must be integral; an enumeration one of its choices); an unknown option is an error naming the closest
known one (a typo is never silently ignored); a number must lie in its option's :class:`Range` (a
learning rate above 0, a ratio within [0, 1], a batch size of at least 1), so a bad value is refused when
the options are read (``tru unlearn`` and ``tru bench`` read them before loading or training anything).
:class:`UnlearnConfig` also reads as a mapping (``cfg["seed"]``,
``dict(cfg)``), for callers that only pass it on.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import numpy as np
import yaml

from tru.config import ConfigError

PER_BACKBONE = "per_backbone"
#: the exact part's independent seed: SeedSequence([seed, EXACT_SEED_STREAM])
EXACT_SEED_STREAM = 7


@dataclass(frozen=True)
class Range:
    """The values a numeric option may take: ``low`` ≤ x ≤ ``high`` (``None``: unbounded on that side;
    ``low_open`` / ``high_open``: the bound itself excluded), or exactly ``off`` (the value that switches
    the option off) where one is given."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    off: float | None = None

    def admits(self, x: float) -> bool:
        if self.off is not None and x == self.off:
            return True
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        return self.high is None or (x < self.high if self.high_open else x <= self.high)

    def __str__(self) -> str:
        if self.low is None and self.high is None:
            within = "a finite number"
        elif self.low is None:
            within = f"a value {'<' if self.high_open else '<='} {self.high:g}"
        elif self.high is None:
            within = f"a value {'>' if self.low_open else '>='} {self.low:g}"
        else:
            within = (
                f"a value in {'(' if self.low_open else '['}{self.low:g}, "
                f"{self.high:g}{')' if self.high_open else ']'}"
            )
        return within if self.off is None else f"{self.off:g} (off) or {within}"


Positive = Range(0.0, low_open=True)
NonNegative = Range(0.0)
AtLeastOne = Range(1.0)
Fraction = Range(0.0, 1.0)
#: a target AUC of the difference attack (tru.unlearn.seed_noise); 0: no target
AttackAuc = Range(0.5, 1.0, high_open=True, off=0.0)


@dataclass(frozen=True)
class UnlearnConfig(Mapping[str, Any]):
    """Every unlearning option (meanings and values: ``src/tru/configs/unlearn.yaml``)."""

    seed: Annotated[int, NonNegative]
    # optimisation
    learning_rate: Annotated[float, Positive]
    forget_loss: Literal["reverse_bpr", "ascent"]
    lambda_f: Annotated[float, NonNegative]
    lambda_r: Annotated[float, NonNegative]
    forget_batch_size: Annotated[int, AtLeastOne]
    retain_batch_size: Annotated[int, AtLeastOne]
    max_steps: Annotated[int, NonNegative]
    dropout: bool
    flush_denormal: bool
    # the exact part (tru-method.md §7a)
    exact: bool
    exact_seed: Literal["independent", "model"]
    # seed-scale noise on the start (tru.unlearn.seed_noise)
    seed_noise: bool
    seed_noise_auc: Annotated[float, AttackAuc]
    # item regime: what retrain does to the target items for every user
    item_sink: bool
    item_sink_weight: Annotated[float, NonNegative]
    item_sink_batch_size: Annotated[int, AtLeastOne]
    # stopping and the retain guard
    check_every: Annotated[int, AtLeastOne]
    check_users: Annotated[int, NonNegative]
    stop_on_target: bool
    stop_rule: Literal["rank", "hr"]
    rank_tolerance: Annotated[float, NonNegative]
    rank_plateau: Annotated[float, Fraction]
    item_target: Literal["auto", "sink", "proxy"]
    min_retain_ratio: Annotated[float, NonNegative]
    # ranking fusion gate (§4)
    rfg: bool
    rfg_target: Literal["coupled", "top_k"]
    rfg_floor: bool
    gate_refresh: Annotated[int, AtLeastOne]
    gate_k: Annotated[int, AtLeastOne]
    gate_temperature: Annotated[float, Positive]
    beta: Annotated[float, Fraction]
    delta: float
    scale_items: Annotated[int, AtLeastOne]
    floor_items: Annotated[int, AtLeastOne]
    item_neighbours: Annotated[int, NonNegative]
    gate_stop: Annotated[float, Fraction]
    # branch-wise modality scaling (§5)
    bms: bool
    bms_decay: Annotated[float, Fraction]
    gamma: Annotated[float, NonNegative]
    eta: Annotated[float, NonNegative]
    alpha_min: Annotated[float, Fraction]
    # capacity-aware layer isolation (§6)
    cli: bool
    probe_batches: Annotated[int, AtLeastOne]
    capacity_ratio: Annotated[float, Fraction]
    top_free: Annotated[int, NonNegative]
    best_dense_first: bool
    retain_scope: Literal["selected", "all"]
    retain_lr_scale: Annotated[float, NonNegative]
    reprobe_epochs: Annotated[int, NonNegative]
    reprobe_min_steps: Annotated[int, NonNegative]

    # ------------------------------------------------------------------ mapping view
    def __getitem__(self, key: str) -> Any:
        if key not in _field_names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_field_names())

    def __len__(self) -> int:
        return len(_field_names())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def rows_seed(self) -> int:
        """The seed of the rows the exact part sets: ``seed`` itself with ``exact_seed: model``; with
        ``independent`` a seed derived from it, SeedSequence([seed, 7]) → [0, 2³¹), that no training uses
        (a deleted user's row back at the original's own initial value leaks through the items, which
        co-adapted with it: ``benchmarks/results/issue9.md``)."""
        if self.exact_seed == "model":
            return self.seed
        return int(np.random.SeedSequence([self.seed, EXACT_SEED_STREAM]).generate_state(1)[0] >> 1)

    def replace(self, **changes: Any) -> UnlearnConfig:
        """A copy with ``changes`` applied (checked like any override)."""
        return UnlearnConfig.from_dict({**self.to_dict(), **changes})

    # ------------------------------------------------------------------ construction
    @staticmethod
    def packaged() -> dict[str, Any]:
        """The packaged ``unlearn.yaml`` as read (including its ``per_backbone`` section)."""
        return dict(_packaged_yaml())

    @classmethod
    def defaults(cls, backbone: str | None = None, seed: int = 999) -> UnlearnConfig:
        """The packaged defaults for ``backbone`` (its ``per_backbone`` section applied)."""
        return cls.resolve({"model": backbone, "seed": seed} if backbone else {"seed": seed})

    @classmethod
    def resolve(
        cls, model_config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
    ) -> UnlearnConfig:
        """unlearn.yaml ← its per_backbone section for ``model_config['model']`` ← the model config's
        ``unlearn`` section ← ``overrides`` (None values skipped); ``seed`` null → the model's seed."""
        packaged = _packaged_yaml()
        cfg = {k: v for k, v in packaged.items() if k != PER_BACKBONE}
        backbone = model_config.get("model")
        per = packaged.get(PER_BACKBONE) or {}
        if backbone and backbone in per:
            cfg.update(per[backbone])
        cfg.update(model_config.get("unlearn") or {})
        cfg.update({k: v for k, v in (overrides or {}).items() if v is not None})
        if cfg.get("seed") is None:
            cfg["seed"] = model_config.get("seed", 999)
        return cls.from_dict(cfg)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> UnlearnConfig:
        """Check every value against its declared type; every option must be present."""
        if isinstance(values, UnlearnConfig):
            return values
        known = _field_names()
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"unknown unlearning option '{key}'{hint}")
        missing = [k for k in known if k not in values]
        if missing:
            raise ConfigError(f"unlearning options missing: {', '.join(missing)}")
        hints = _hints()
        return cls(**{k: _coerce(k, values[k], hints[k]) for k in known})


@cache
def _packaged_yaml() -> dict[str, Any]:
    text = (resources.files("tru") / "configs" / "unlearn.yaml").read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError("tru/configs/unlearn.yaml: expected a mapping")
    return data


@cache
def _field_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(UnlearnConfig))


@cache
def _hints() -> dict[str, Any]:
    return get_type_hints(UnlearnConfig, include_extras=True)


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """``value`` as ``kind`` (bool, int, float, a Literal of strings, or a number ``Annotated`` with its
    :class:`Range`), or a ConfigError naming ``key``."""
    if get_origin(kind) is Annotated:
        base, *extras = get_args(kind)
        number = _coerce(key, value, base)
        for allowed in (e for e in extras if isinstance(e, Range)):
            if not allowed.admits(number):
                raise ConfigError(f"unlearning option '{key}': expected {allowed}, got {value!r}")
        return number
    if get_origin(kind) is Literal:
        choices = list(get_args(kind))
        if value not in choices:
            raise ConfigError(f"unlearning option '{key}': expected one of {choices}, got {value!r}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"unlearning option '{key}': expected true or false, got {value!r}")
        return value
    if kind in (int, float):
        number = None
        if not isinstance(value, bool):
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = None
        if number is None or not math.isfinite(number) or (kind is int and not number.is_integer()):
            what = "an integer" if kind is int else "a finite number"
            raise ConfigError(f"unlearning option '{key}': expected {what}, got {value!r}")
        return int(number) if kind is int else number
    raise TypeError(f"UnlearnConfig.{key}: unsupported type {kind!r}")  # pragma: no cover
