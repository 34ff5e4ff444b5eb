"""Component ``sensitivity``: the layer-sensitivity probe (JSON scores and heatmap)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Model, Output

from components._common import IMAGE_CPU


@dsl.component(base_image=IMAGE_CPU, install_kfp_package=False)
def sensitivity(
    data: Input[Dataset],
    model: Input[Model],
    deletion_requests: Input[Dataset],
    report: Output[Artifact],
    heatmap: Output[HTML],
) -> str:
    """Probe the original model for the deletion requests: per unit, the forget and retain gradient norms
    and the score S_l (tru-method.md §6); output ``sensitivity.json`` + ``sensitivity.png`` (folder) and
    the heatmap as an HTML page for the Kubeflow UI. Returns the selected units, comma-separated."""
    from pathlib import Path

    from tru.mlops import release_steps, steps

    out = Path(report.path)
    res = steps.sensitivity(Path(data.path), Path(model.path), Path(deletion_requests.path), out)
    Path(heatmap.path).write_text(release_steps.heatmap_html(out / "sensitivity.png"))
    report.metadata["selected"] = ",".join(res["selected"])
    return ",".join(res["selected"])
