"""The run folder: one place for the names of the files tru writes into a model's folder and a step's
output folder, and for reading them back.

A *run folder* holds one model::

    model.pt          weights + what the model was trained on and what it has forgotten (tru.checkpoint)
    run.json          the same provenance as JSON, plus training / unlearning metadata
    metrics.json      {"valid": {...}, "test": {...}}
    unlearn.json      unlearned models: method, seconds, steps, parameters changed, history
    plan.json         the pipeline's plan for this model (tru.lifecycle.RunPlan)
    step.json         what the pipeline step that wrote the folder reported

A *certificate folder* holds ``certificate.json``, ``report.html`` and the plots; a *sensitivity folder*
``sensitivity.json`` and ``sensitivity.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tru.data.dataset import DataError

MODEL_FILE = "model.pt"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
UNLEARN_FILE = "unlearn.json"
PLAN_FILE = "plan.json"
STEP_FILE = "step.json"
CERT_FILE = "certificate.json"
REPORT_FILE = "report.html"
SENSITIVITY_FILE = "sensitivity.json"
SENSITIVITY_PNG = "sensitivity.png"
#: the files that make a model: copied together whenever a model moves between steps
CHECKPOINT_FILES = (MODEL_FILE, RUN_FILE, METRICS_FILE)


def read_json(path: Path | str, *, required: bool = False) -> dict[str, Any]:
    """A JSON object from ``path``; ``{}`` when absent (unless ``required``). Errors name the file."""
    path = Path(path)
    if not path.is_file():
        if required:
            raise DataError(f"{path}: missing")
        return {}
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    return raw


def run_meta(folder: Path | str) -> dict[str, Any]:
    """``run.json`` of a run folder ({} when absent)."""
    return read_json(Path(folder) / RUN_FILE)


def step_info(folder: Path | str) -> dict[str, Any]:
    """``step.json`` of a step's output folder ({} when absent)."""
    return read_json(Path(folder) / STEP_FILE)


def unlearn_meta(folder: Path | str) -> dict[str, Any] | None:
    """``unlearn.json`` of an unlearned run folder (None when absent), with its numbers type-checked."""
    path = Path(folder) / UNLEARN_FILE
    if not path.is_file():
        return None
    raw = read_json(path)
    for key in ("seconds", "params_changed", "params_total", "steps"):
        if key in raw and raw[key] is not None and not isinstance(raw[key], int | float):
            raise DataError(f"{path}: field '{key}' must be a number, got {raw[key]!r}")
    return raw


def has_model(folder: Path | str) -> bool:
    return (Path(folder) / MODEL_FILE).is_file()
