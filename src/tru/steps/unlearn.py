"""Step ``unlearn``: the start model forgets the run's target requests (TRU by default)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tru.runfolder import PLAN_FILE, SENSITIVITY_FILE, UNLEARN_FILE, read_json
from tru.steps.common import EMPTY_METHOD, copy_model, load_inputs, unlearn_cfg, with_calibration
from tru.steps.train import read_plan
from tru.utils import LOG, write_json


def unlearn(
    data_dir: Path,
    model_dir: Path,
    target_csv: Path,
    out_dir: Path,
    *,
    method: str = "tru",
    max_steps: int = 0,
    overrides: dict[str, Any] | None = None,
    sensitivity_dir: Path | None = None,
    calibration: str = "",
) -> dict[str, Any]:
    """Write the unlearned run folder (model.pt, run.json, metrics.json, unlearn.json, plan.json).

    The start model forgets every target request T = F ∪ pending (:mod:`tru.lifecycle`): the graph and
    every check use D_r = D \\ rows(T), so requests forgotten earlier stay forgotten. ``method`` is the
    pipeline's (``tru``), a full ``retrain`` when the plan says a request is overdue. With nothing new to
    forget the start model passes through (method ``none``). ``sensitivity_dir``: the sensitivity step's
    output, whose selection TRU uses instead of probing again. ``calibration``: the run's stored calibration
    (a folder or a URI, as the certify step's), whose seed-noise target the start takes
    (:func:`tru.steps.common.with_calibration`)."""
    from tru.checkpoint import Lineage, load_run
    from tru.unlearn.api import run_unlearning, save_unlearned
    from tru.utils import resolve_device

    out_dir = Path(out_dir)
    plan = read_plan(model_dir)
    dataset, requests, spec = load_inputs(data_dir, target_csv)
    if not plan.has_new:
        copy_model(Path(model_dir), out_dir)
        shutil.copy2(Path(model_dir) / PLAN_FILE, out_dir / PLAN_FILE)
        report = {
            "method": EMPTY_METHOD,
            "steps": 0,
            "seconds": 0.0,
            "params_changed": 0,
            "stop_reason": "no new deletion requests" + (" (confirmation run)" if plan.confirm else ""),
            "spec": spec.summary(dataset.n_items),
        }
        write_json(out_dir / UNLEARN_FILE, report)
        return {k: report[k] for k in ("method", "steps", "seconds", "params_changed", "stop_reason")}
    if plan.method and plan.method != method:
        LOG.warning(
            "%d request(s) past the %g-day deadline: %s instead of %s",
            len(plan.overdue),
            plan.deadline_days,
            plan.method,
            method,
        )
        method = plan.method
    run = load_run(Path(model_dir), dataset, device=resolve_device("auto"), requests=requests)
    cfg = unlearn_cfg(run.config, {**(overrides or {}), "max_steps": max_steps or None})
    if calibration and method != "retrain":
        import tempfile

        from tru.steps.certify import calibration_folder

        with tempfile.TemporaryDirectory(prefix="tru-cal-") as tmp:
            folder = calibration_folder(calibration, Path(tmp) / "cal")
            cfg = with_calibration(cfg, folder, dataset, spec, run)
    extra: dict[str, Any] = {}
    sens = read_json(Path(sensitivity_dir) / SENSITIVITY_FILE) if sensitivity_dir else {}
    if sens.get("units") and _accepts(run_unlearning, "sensitivity"):
        extra["sensitivity"] = sens
    outcome = run_unlearning(method, run.model, dataset, spec, run.config, cfg, **extra)
    lineage = Lineage(
        kind="retrain" if method == "retrain" else "unlearn",
        method=method,
        parent_weights_sha256="" if method == "retrain" else run.weights_sha256,
        parent_version=plan.start_version,
    )
    forgotten = spec.forgotten().inherit(run.forgotten)  # and what the start model forgot (erased since)
    save_unlearned(out_dir, outcome, run.config, dataset, spec, lineage=lineage, forgotten=forgotten)
    shutil.copy2(Path(model_dir) / PLAN_FILE, out_dir / PLAN_FILE)
    rep = outcome.report
    return {
        "method": method,
        "steps": int(rep["steps"]),
        "seconds": float(rep["seconds"]),
        "params_changed": int(rep["params_changed"]),
        "stop_reason": str(rep["stop_reason"]),
        "metrics": outcome.metrics,
    }


def _accepts(fn: Any, name: str) -> bool:
    import inspect

    return name in inspect.signature(fn).parameters
