"""Component ``train``: the original model (the registry's champion for this data, or trained anew)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components._common import IMAGE_GPU


@dsl.component(base_image=IMAGE_GPU, install_kfp_package=False)
def train(
    data: Input[Dataset],
    dataset_name: str,
    data_version: str,
    backbone: str,
    tracking_uri: str,
    epochs: int,
    reuse_champion: bool,
    model: Output[Model],
    metrics: Output[Metrics],
) -> str:
    """Output the original model's run folder (model.pt, run.json, metrics.json): the MLflow registry's
    ``champion`` of ``tru-<dataset>-<backbone>`` when it was trained on exactly this data (same dataset
    fingerprint), else ``backbone`` trained with BPR and early stopping (``epochs`` > 0 caps the epochs)
    and logged to MLflow with its per-epoch history and the data version. Returns the step summary (JSON)."""
    import json
    from pathlib import Path

    from tru.mlops import steps

    res = steps.train(
        Path(data.path), backbone, Path(model.path),
        dataset_name=dataset_name, data_version=json.loads(data_version), tracking_uri=tracking_uri,
        epochs=epochs, reuse_champion=reuse_champion,
    )  # fmt: skip
    model.metadata.update({"backbone": backbone, **{k: str(v) for k, v in res.items()}})
    mpath = Path(model.path) / "metrics.json"
    if mpath.is_file():
        for name, val in steps.flat_metrics(json.loads(mpath.read_text())).items():
            metrics.log_metric(name, val)
    return json.dumps(res, sort_keys=True)
