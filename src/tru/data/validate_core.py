"""The validation machinery shared by :mod:`tru.data.validate` and :mod:`tru.data.validate_features`:
the report types (:class:`Failure`, :class:`ValidationReport`), a named check (``_Check``) and one
validation run (``_Run``) over the process's ephemeral Great Expectations context."""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

N_EXAMPLES = 5


@dataclass
class Failure:
    """One failed expectation: its name, the file, what went wrong, and up to 5 offending examples."""

    expectation: str
    file: str
    message: str
    examples: list = field(default_factory=list)


@dataclass
class ValidationReport:
    success: bool
    failures: list[Failure]
    checked: int
    folder: Path
    skipped: list[str] = field(default_factory=list)

    def render(self) -> str:
        """Human-readable report: one block per failed expectation with its examples."""
        head = "PASSED" if self.success else f"FAILED ({len(self.failures)} failed)"
        lines = [f"Dataset validation of {self.folder}: {head}, {self.checked} expectations checked"]
        for f in self.failures:
            lines.append(f"  FAIL {f.expectation} [{f.file}]: {f.message}")
            lines.extend(f"      {_fmt_example(ex)}" for ex in f.examples)
        lines.extend(f"  skipped: {s}" for s in self.skipped)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "folder": str(self.folder),
            "checked": self.checked,
            "failures": [
                {
                    "expectation": f.expectation,
                    "file": f.file,
                    "message": f.message,
                    "examples": _py(f.examples),
                }
                for f in self.failures
            ],
            "skipped": list(self.skipped),
        }


def _py(v: Any) -> Any:
    """numpy scalars / NaN / tuples → plain JSON-able Python values."""
    if isinstance(v, dict):
        return {str(k): _py(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_py(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else str(v)
    return v


def _fmt_example(ex: Any) -> str:
    if not isinstance(ex, dict):
        return str(ex)
    ex = dict(ex)
    key = next((k for k in ("line", "row", "userID", "modality", "stat") if k in ex), None)
    lead = f"{key} {ex.pop(key)}: " if key else ""
    return lead + " ".join(f"{k}={v}" for k, v in ex.items())


@dataclass
class _Check:
    name: str
    file: str
    what: str
    expectation: Any  # a gxe.Expectation
    example: Any = None  # callable(locator, value) -> dict


@functools.cache
def _batch_definition() -> Any:
    """One ephemeral GX context per process (progress bars off) with a whole-dataframe batch
    definition; every frame is validated through it as a batch parameter. Suites are never stored."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)  # GX sets INFO
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = ctx.data_sources.add_pandas("tru").add_dataframe_asset("frame")
    return asset.add_batch_definition_whole_dataframe("whole")


class _Run:
    """One validation: the GX context, the failures and the counters."""

    def __init__(self, folder: Path) -> None:
        import great_expectations as gx

        self.gx = gx
        self.folder = folder
        self.batch_def = _batch_definition()
        self.failures: list[Failure] = []
        self.skipped: list[str] = []
        self.checked = 0

    def fail(self, name: str, file: str, message: str, examples: list | None = None) -> None:
        self.checked += 1
        self.failures.append(Failure(name, file, message, _py(examples or [])))

    def validate(self, df: pd.DataFrame, checks: list[_Check]) -> dict[str, bool]:
        """Run ``checks`` on ``df`` as one GX suite; record failures; return success per check name."""
        if not checks:
            return {}
        suite = self.gx.ExpectationSuite(name=f"tru-{self.checked}")
        for i, c in enumerate(checks):
            c.expectation.meta = {"tru_check": i}
            suite.add_expectation(c.expectation)
        batch = self.batch_def.get_batch(batch_parameters={"dataframe": df})
        res = batch.validate(
            suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": N_EXAMPLES}
        )
        ok: dict[str, bool] = {}
        for r in sorted(res.results, key=lambda r: r.expectation_config.meta["tru_check"]):
            c = checks[r.expectation_config.meta["tru_check"]]
            self.checked += 1
            ok[c.name] = ok.get(c.name, True) and bool(r.success)
            if r.success:
                continue
            gx_type = r.expectation_config.type
            exc = r.exception_info or {}
            if exc.get("raised_exception"):
                self.failures.append(
                    Failure(
                        c.name, c.file, f"{c.what} ({gx_type} raised: {exc.get('exception_message')})", []
                    )
                )
                continue
            res_d = r.result or {}
            if "unexpected_count" in res_d:
                msg = f"{c.what}: {res_d['unexpected_count']} of {res_d['element_count']} unexpected"
                locs = res_d.get("partial_unexpected_index_list") or []
                vals = res_d.get("partial_unexpected_list") or [None] * len(locs)
                examples = [
                    c.example(loc, val) if c.example else {"at": loc, "value": val}
                    for loc, val in zip(locs, vals)
                ]
            else:
                msg = f"{c.what}: observed {res_d.get('observed_value', 'nothing')}"
                examples = [c.example(None, res_d.get("observed_value"))] if c.example else []
            self.failures.append(Failure(c.name, c.file, f"{msg} ({gx_type})", _py(examples)))
        return ok

    def report(self) -> ValidationReport:
        return ValidationReport(not self.failures, self.failures, self.checked, self.folder, self.skipped)
