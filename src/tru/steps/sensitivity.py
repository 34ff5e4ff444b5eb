"""Step ``sensitivity``: the layer-sensitivity probe for the planned requests (tru-method.md §6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tru.runfolder import SENSITIVITY_FILE, SENSITIVITY_PNG
from tru.steps.common import load_inputs, unlearn_cfg
from tru.steps.train import read_plan
from tru.utils import write_json


def sensitivity(
    data_dir: Path,
    model_dir: Path,
    target_csv: Path,
    out_dir: Path,
    *,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``sensitivity.json`` and ``sensitivity.png`` (per-unit scores S_l = (‖g_f‖/√n) ÷ (‖g_r‖/√n))
    to ``out_dir`` for the start model and the run's target requests; the unlearn step uses this
    selection (it does not probe again). Skipped when the plan adds no request."""
    from tru.checkpoint import load_run
    from tru.unlearn.sensitivity import plot_sensitivity, run_sensitivity
    from tru.utils import resolve_device

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = read_plan(model_dir)
    dataset, requests, spec = load_inputs(data_dir, target_csv)
    if not plan.has_new or len(spec.forget) == 0:
        report: dict[str, Any] = {"skipped": "no new deletion requests: nothing to probe", "units": []}
        write_json(out_dir / SENSITIVITY_FILE, report)
        return {"selected": [], "skipped": True}
    run = load_run(Path(model_dir), dataset, device=resolve_device("auto"), requests=requests)
    report = run_sensitivity(run.model, dataset, spec, unlearn_cfg(run.config, overrides))
    report["spec"] = spec.summary(dataset.n_items)
    write_json(out_dir / SENSITIVITY_FILE, report)
    if report.get("units"):  # none when the exact part already set every row D_f touches
        plot_sensitivity(report, out_dir / SENSITIVITY_PNG)
    selected = [u["label"] for u in report["units"] if u["selected"]]
    return {"selected": selected, "params_selected": report.get("params_selected"), "skipped": False}
