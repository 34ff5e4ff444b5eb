"""Component ``register``: MLflow run + registry version; ``champion`` moves by compare-and-set on a
certificate checked against the model."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from tru.kfp.components.images import IMAGE_CPU


@dsl.component(base_image=IMAGE_CPU, install_kfp_package=False)
def register(
    unlearned: Input[Model],
    certificate: Input[Artifact],
    data: Input[Dataset],
    target_requests: Input[Dataset],
    sensitivity: Input[Artifact],
    dataset_name: str,
    backbone: str,
    data_version: str,
    tracking_uri: str,
    summary: Output[Markdown],
) -> str:
    """Check the certificate against the model it certifies (signature, weights, requests); log the model,
    its certificate and heatmap as one MLflow run at ``tracking_uri`` with the servable pyfunc model (the
    final representations and each user's retained items, built on ``data``); register that model as a
    version of ``tru-<dataset>-<backbone>`` and move ``champion`` to it only if it passed and forgot at
    least what the champion forgot (compare-and-set). A failed certificate: the version is tagged rejected
    and the compliance-fallback retrain is promoted instead. Outputs a Markdown summary; returns the
    outcome (JSON, request ids and counts only)."""
    import json
    from pathlib import Path

    from tru.steps.register import register as run

    res = run(
        Path(unlearned.path), Path(certificate.path), Path(data.path), Path(target_requests.path),
        dataset_name=dataset_name, backbone=backbone,
        data_version=json.loads(data_version), tracking_uri=tracking_uri,
        sensitivity_dir=Path(sensitivity.path),
    )  # fmt: skip
    verdict = "now **champion**" if res.get("promoted") else "champion unchanged"
    lines = [
        f"# {res['model_name']} version {res.get('version') or '—'}",
        f"{verdict}; champion: {res.get('champion')}; evidence: {res.get('evidence', '')}.",
        f"New requests forgotten: {len(res['new_request_ids'])}; in all: {len(res['request_ids'])}.",
        *[f"- {r}" for r in res.get("reasons") or []],
    ]
    Path(summary.path).write_text("\n\n".join(lines) + "\n")
    return json.dumps(res, sort_keys=True, default=str)
