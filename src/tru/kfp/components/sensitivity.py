"""Component ``sensitivity``: the layer-sensitivity probe (JSON scores and heatmap)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Model, Output

from tru.kfp.components.images import IMAGE_CPU


@dsl.component(base_image=IMAGE_CPU, install_kfp_package=False)
def sensitivity(
    data: Input[Dataset],
    model: Input[Model],
    target_requests: Input[Dataset],
    report: Output[Artifact],
    heatmap: Output[HTML],
) -> str:
    """Probe the start model for the run's requests: per unit, the forget and retain gradient norms and
    the score S_l (tru-method.md §6); output ``sensitivity.json`` + ``sensitivity.png`` (the unlearn task
    uses this selection) and the heatmap as an HTML page. Returns the selected units, comma-separated."""
    from pathlib import Path

    from tru.kfp.html import heatmap_html
    from tru.steps.sensitivity import sensitivity as run

    out = Path(report.path)
    res = run(Path(data.path), Path(model.path), Path(target_requests.path), out)
    Path(heatmap.path).write_text(heatmap_html(out / "sensitivity.png"))
    report.metadata["selected"] = ",".join(res["selected"])
    return ",".join(res["selected"])
