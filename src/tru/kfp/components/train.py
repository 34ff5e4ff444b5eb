"""Component ``train``: the start model (the champion when it fits the data, else a new original) and the
run's plan: which requests to forget."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from tru.kfp.components.images import IMAGE_GPU


@dsl.component(base_image=IMAGE_GPU, install_kfp_package=False)
def train(
    data: Input[Dataset],
    deletion_requests: Input[Dataset],
    dataset_name: str,
    data_version: str,
    backbone: str,
    tracking_uri: str,
    epochs: int,
    reuse_champion: bool,
    deadline_days: float,
    confirm: bool,
    model: Output[Model],
    target_requests: Output[Dataset],
    metrics: Output[Metrics],
) -> str:
    """Output the start model's run folder (model.pt, run.json, metrics.json, plan.json): the MLflow
    registry's ``champion`` of ``tru-<dataset>-<backbone>`` when it loads on this data once the rows of
    the requests it forgot are removed, else ``backbone`` trained with BPR and early stopping (``epochs``
    > 0 caps it) and logged to MLflow. ``target_requests``: what this run forgets (everything the start
    model forgot plus the pending requests). Returns the step summary (JSON)."""
    import json
    from pathlib import Path

    from tru.runfolder import METRICS_FILE
    from tru.steps.common import flat_metrics
    from tru.steps.train import train as run

    res = run(
        Path(data.path), Path(deletion_requests.path), backbone, Path(model.path), Path(target_requests.path),
        dataset_name=dataset_name, data_version=json.loads(data_version), tracking_uri=tracking_uri,
        epochs=epochs, reuse_champion=reuse_champion, deadline_days=deadline_days, confirm=confirm,
    )  # fmt: skip
    model.metadata.update({"backbone": backbone, **{k: str(v) for k, v in res.items()}})
    mpath = Path(model.path) / METRICS_FILE
    if mpath.is_file():
        for name, val in flat_metrics(json.loads(mpath.read_text())).items():
            metrics.log_metric(name, val)
    return json.dumps(res, sort_keys=True)
