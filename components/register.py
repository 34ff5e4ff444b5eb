"""Component ``register``: MLflow run + registry version; ``champion`` moves only on a passed certificate."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Model, Output

from components._common import IMAGE_CPU


@dsl.component(base_image=IMAGE_CPU, install_kfp_package=False)
def register(
    unlearned: Input[Model],
    certificate: Input[Artifact],
    sensitivity: Input[Artifact],
    dataset_name: str,
    backbone: str,
    data_version: str,
    tracking_uri: str,
    summary: Output[Markdown],
) -> str:
    """Log the unlearned model, its certificate, HTML report and sensitivity heatmap as one MLflow run
    (parameters, per-step metrics, data version tags), register it as a new version of
    ``tru-<dataset>-<backbone>`` and move the ``champion`` alias to it only when the certificate passed;
    otherwise the champion stays and the version is tagged ``rejected`` with the reasons. Outputs a
    Markdown summary; returns the promotion result (JSON)."""
    import json
    from pathlib import Path

    from tru.mlops import release_steps

    res = release_steps.register(
        Path(unlearned.path), Path(certificate.path),
        dataset_name=dataset_name, backbone=backbone, data_version=json.loads(data_version),
        tracking_uri=tracking_uri, sensitivity_dir=Path(sensitivity.path),
    )  # fmt: skip
    verdict = "certified, now **champion**" if res.get("promoted") else "**rejected** (champion unchanged)"
    lines = [
        f"# {res['model_name']} version {res['version']}",
        f"Verdict: {verdict}. Champion: {res.get('champion')}.",
        f"Requests forgotten: {len(res['request_ids'])}. MLflow run: `{res['run_id']}`.",
        *[f"- {r}" for r in res["reasons"]],
    ]
    Path(summary.path).write_text("\n\n".join(lines) + "\n")
    return json.dumps(res, sort_keys=True, default=str)
