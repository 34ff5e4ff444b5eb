"""Component ``ingest``: the dataset and the deletion manifest at a data revision, validated, as artifacts."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Output

from tru.kfp.components.images import IMAGE_CPU


@dsl.component(base_image=IMAGE_CPU, install_kfp_package=False)
def ingest(
    repo: str,
    rev: str,
    dataset: str,
    requests: str,
    generate_requests: bool,
    regime: str,
    ratio: float,
    seed: int,
    data: Output[Dataset],
    deletion_requests: Output[Dataset],
    info: Output[Artifact],
) -> NamedTuple("IngestOutputs", [("data_version", str), ("dataset_name", str), ("n_requests", int)]):
    """Read ``data/<dataset>`` and ``data/deletions/requests.csv`` at commit ``rev`` of the git + DVC
    repository ``repo`` (a URL on the cluster; the data from its DVC remote), or a plain dataset folder
    for a local run; validate both (Great Expectations; strict request parsing and resolution). A missing
    manifest fails the task unless ``generate_requests`` (demos: random requests by ``regime`` / ``ratio``
    / ``seed``). Outputs the dataset folder, the manifest, a JSON summary and the data version."""
    import json
    from collections import namedtuple
    from pathlib import Path

    from tru.steps.ingest import ingest as run

    res = run(
        repo, rev, dataset, Path(data.path), Path(deletion_requests.path), requests=requests,
        generate_requests=generate_requests, regime=regime, ratio=ratio, seed=seed,
    )  # fmt: skip
    Path(info.path).write_text(json.dumps(res, indent=2, default=str))
    spec = res["spec"]
    data.metadata.update({"name": res["dataset_name"], **res["dataset"], **res["data_version"]})
    deletion_requests.metadata.update({k: spec[k] for k in ("regime", "n_requests", "n_forget_pairs")})
    outputs = namedtuple("IngestOutputs", ["data_version", "dataset_name", "n_requests"])
    return outputs(
        json.dumps(res["data_version"], sort_keys=True), str(res["dataset_name"]), int(spec["n_requests"])
    )
