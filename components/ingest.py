"""Component ``ingest``: the dataset and deletion requests at a data revision, validated, as artifacts."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Output

from components._common import IMAGE_CPU


@dsl.component(base_image=IMAGE_CPU, install_kfp_package=False)
def ingest(
    repo: str,
    rev: str,
    dataset: str,
    requests: str,
    regime: str,
    ratio: float,
    seed: int,
    data: Output[Dataset],
    deletion_requests: Output[Dataset],
    info: Output[Artifact],
) -> NamedTuple("IngestOutputs", [("data_version", str), ("dataset_name", str), ("n_forget", int)]):
    """Read the dataset ``data/<dataset>`` and the manifest ``data/deletions/requests.csv`` at DVC revision
    ``rev`` of ``repo`` (or a plain dataset folder when ``repo`` is not a DVC repository; requests are then
    generated with ``regime`` / ``ratio`` / ``seed`` when no manifest exists), validate both (Great
    Expectations; strict request parsing and resolution into D_f / D_r) and output the dataset folder, the
    requests CSV, a JSON summary (data version, D_f / D_r counts) and the data version as JSON text."""
    import json
    from collections import namedtuple
    from pathlib import Path

    from tru.mlops import steps

    res = steps.ingest(
        repo, rev, dataset, Path(data.path), Path(deletion_requests.path),
        requests=requests, regime=regime, ratio=ratio, seed=seed,
    )  # fmt: skip
    Path(info.path).write_text(json.dumps(res, indent=2, default=str))
    spec = res["spec"]
    data.metadata.update({"name": res["dataset_name"], **res["dataset"], **res["data_version"]})
    deletion_requests.metadata.update(
        {k: spec[k] for k in ("regime", "n_requests", "n_forget_pairs", "n_retain_pairs")}
    )
    outputs = namedtuple("IngestOutputs", ["data_version", "dataset_name", "n_forget"])
    return outputs(
        json.dumps(res["data_version"], sort_keys=True), str(res["dataset_name"]), int(spec["n_forget_pairs"])
    )
