"""Component ``unlearn``: the unlearning method (TRU by default) applied to the original model."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components._common import IMAGE_GPU


@dsl.component(base_image=IMAGE_GPU, install_kfp_package=False)
def unlearn(
    data: Input[Dataset],
    model: Input[Model],
    deletion_requests: Input[Dataset],
    method: str,
    max_steps: int,
    unlearned: Output[Model],
    metrics: Output[Metrics],
) -> str:
    """Make a copy of the original model forget D_f with ``method`` (``tru``: ranking fusion gate,
    branch-wise modality scaling and capacity-aware layer isolation; or a baseline such as ``retrain``,
    ``finetune``, ``gradient_ascent``, ``mmrecun``); ``max_steps`` > 0 caps iterative methods. Outputs the
    unlearned run folder (model.pt, run.json, metrics.json, unlearn.json) and the wall time, steps and
    parameters changed as metrics. Returns the method's stop reason."""
    from pathlib import Path

    from tru.mlops import steps

    res = steps.unlearn(
        Path(data.path), Path(model.path), Path(deletion_requests.path), Path(unlearned.path),
        method=method, max_steps=max_steps,
    )  # fmt: skip
    unlearned.metadata.update({"method": res["method"], "stop_reason": res["stop_reason"]})
    for key in ("seconds", "steps", "params_changed"):
        metrics.log_metric(key, float(res[key]))
    for name, val in steps.flat_metrics(res.get("metrics") or {}).items():
        metrics.log_metric(name, val)
    return str(res["stop_reason"])
