"""Component ``unlearn``: the start model forgets the run's requests (TRU by default)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from tru.kfp.components.images import IMAGE_GPU


@dsl.component(base_image=IMAGE_GPU, install_kfp_package=False)
def unlearn(
    data: Input[Dataset],
    model: Input[Model],
    target_requests: Input[Dataset],
    sensitivity: Input[Artifact],
    method: str,
    max_steps: int,
    unlearned: Output[Model],
    metrics: Output[Metrics],
    calibration: str = "",
) -> str:
    """Make a copy of the start model forget the run's requests with ``method`` (``tru``: ranking fusion
    gate, branch-wise modality scaling and capacity-aware layer isolation on the sensitivity task's
    selection; or ``retrain``, ``finetune``, ``gradient_ascent``, ``mmrecun``; a full retrain whatever the
    method when a request is past its deadline); ``max_steps`` > 0 caps iterative methods; ``calibration``
    (a stored `tru calibrate` folder or URI, or empty) gives the start a retrain's seed noise. Outputs the
    unlearned run folder and its wall time, steps and parameters changed. Returns the stop reason."""
    from pathlib import Path

    from tru.steps.common import flat_metrics
    from tru.steps.unlearn import unlearn as run

    res = run(
        Path(data.path), Path(model.path), Path(target_requests.path), Path(unlearned.path),
        method=method, max_steps=max_steps, sensitivity_dir=Path(sensitivity.path), calibration=calibration,
    )  # fmt: skip
    unlearned.metadata.update({"method": res["method"], "stop_reason": res["stop_reason"]})
    for key in ("seconds", "steps", "params_changed"):
        metrics.log_metric(key, float(res[key]))
    for name, val in flat_metrics(res.get("metrics") or {}).items():
        metrics.log_metric(name, val)
    return str(res["stop_reason"])
