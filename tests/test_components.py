"""Each Kubeflow component called in process (``component.python_func``) with real artifact objects, in
the pipeline's order on tiny data and a real MLflow sqlite registry: what each task reads, writes and
reports to KFP. Fast: no kfp.local, no subprocesses (the end-to-end test runs the pipeline itself)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from kfp import dsl

from tru.data.dataset import DataError
from tru.forget.requests import write_requests
from tru.kfp.components import certify, ingest, register, resolve_revision, sensitivity, train, unlearn

from .conftest import LENIENT_POLICY, TinyWorld


def art(cls: type, path: Path) -> Any:
    return cls(name=path.name, uri=str(path), metadata={})


@pytest.fixture(scope="module")
def run(tiny_world: TinyWorld, mlflow_db_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every component once, in order, as the pipeline chains them; their outputs and return values."""
    root = tmp_path_factory.mktemp("components")
    mp = pytest.MonkeyPatch()
    shutil.copyfile(mlflow_db_template, root / "mlflow.db")
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    mp.setenv("TRU_MLFLOW_ARTIFACTS", (root / "artifacts").as_uri())
    shutil.copytree(tiny_world.data, root / "repo" / "data" / "tiny")
    (root / "repo" / "data" / "deletions").mkdir()
    write_requests(root / "repo" / "data" / "deletions" / "requests.csv", tiny_world.requests)
    o = root / "out"
    a: dict[str, Any] = {
        "data": art(dsl.Dataset, o / "data"), "requests": art(dsl.Dataset, o / "requests.csv"),
        "info": art(dsl.Artifact, o / "info.json"), "model": art(dsl.Model, o / "model"),
        "target": art(dsl.Dataset, o / "target.csv"), "train_metrics": art(dsl.Metrics, o / "train-metrics"),
        "sens": art(dsl.Artifact, o / "sens"), "heatmap": art(dsl.HTML, o / "heatmap.html"),
        "unlearned": art(dsl.Model, o / "unlearned"), "unlearn_metrics": art(dsl.Metrics, o / "unl-metrics"),
        "cert": art(dsl.Artifact, o / "cert"), "report": art(dsl.HTML, o / "report.html"),
        "cert_metrics": art(dsl.Metrics, o / "cert-metrics"), "summary": art(dsl.Markdown, o / "summary.md"),
    }  # fmt: skip
    o.mkdir()
    r: dict[str, Any] = {"root": root, "a": a}
    r["rev"] = resolve_revision.python_func(repo=str(root / "repo"), rev="")
    r["ingest"] = ingest.python_func(
        repo=str(root / "repo"), rev=r["rev"], dataset="tiny", requests="", generate_requests=False,
        regime="user", ratio=0.05, seed=0, data=a["data"], deletion_requests=a["requests"], info=a["info"],
    )  # fmt: skip
    r["train"] = json.loads(train.python_func(
        data=a["data"], deletion_requests=a["requests"], dataset_name="tiny",
        data_version=r["ingest"].data_version, backbone="vbpr", tracking_uri="", epochs=2,
        reuse_champion=True, deadline_days=30.0, confirm=False, model=a["model"], target_requests=a["target"],
        metrics=a["train_metrics"],
    ))  # fmt: skip
    r["sensitivity"] = sensitivity.python_func(
        data=a["data"], model=a["model"], target_requests=a["target"], report=a["sens"], heatmap=a["heatmap"]
    )
    r["unlearn"] = unlearn.python_func(
        data=a["data"], model=a["model"], target_requests=a["target"], sensitivity=a["sens"], method="tru",
        max_steps=10, unlearned=a["unlearned"], metrics=a["unlearn_metrics"],
    )  # fmt: skip
    r["certify"] = certify.python_func(
        data=a["data"], original=a["model"], unlearned=a["unlearned"], target_requests=a["target"],
        policy=LENIENT_POLICY, retrain=True, audit_seeds="0", calibration="", certificate=a["cert"],
        report=a["report"], metrics=a["cert_metrics"],
    )  # fmt: skip
    r["register"] = json.loads(register.python_func(
        unlearned=a["unlearned"], certificate=a["cert"], data=a["data"], target_requests=a["target"],
        sensitivity=a["sens"], dataset_name="tiny", backbone="vbpr", data_version=r["ingest"].data_version,
        tracking_uri="", summary=a["summary"],
    ))  # fmt: skip
    yield r
    mp.undo()


def test_resolve_revision_and_ingest(run: dict, tiny_world: TinyWorld) -> None:
    assert run["rev"] == ""  # a plain folder has no revision to resolve
    a = run["a"]
    assert run["ingest"].dataset_name == "tiny" and run["ingest"].n_requests == len(tiny_world.requests)
    assert (Path(a["data"].path) / "dataset.yaml").is_file()
    assert a["requests"].metadata["n_requests"] == 3 and a["data"].metadata["name"] == "tiny"
    info = json.loads(Path(a["info"].path).read_text())
    assert (
        info["requests_origin"] == "manifest"
        and json.loads(run["ingest"].data_version)["dataset_fingerprint"]
    )


def test_ingest_refuses_bad_data_and_a_missing_manifest(
    run: dict, tiny_world: TinyWorld, tmp_path: Path
) -> None:
    bad = tmp_path / "repo" / "data" / "tiny"
    shutil.copytree(tiny_world.data, bad)
    inter = next(bad.glob("*.inter"))
    inter.write_text(inter.read_text() + "oops\t-3\t1\t0\n")
    (tmp_path / "repo" / "data" / "deletions").mkdir()
    write_requests(tmp_path / "repo" / "data" / "deletions" / "requests.csv", [])
    kw = dict(rev="", dataset="tiny", requests="", regime="user", ratio=0.05, seed=0,
              data=art(dsl.Dataset, tmp_path / "d"), deletion_requests=art(dsl.Dataset, tmp_path / "r"),
              info=art(dsl.Artifact, tmp_path / "i"))  # fmt: skip
    with pytest.raises(DataError, match=r"\.inter"):
        ingest.python_func(repo=str(tmp_path / "repo"), generate_requests=False, **kw)
    shutil.rmtree(tmp_path / "repo" / "data" / "deletions")
    shutil.copytree(tiny_world.data, tmp_path / "repo2" / "data" / "tiny")
    with pytest.raises(DataError, match="no deletion-request manifest"):
        ingest.python_func(repo=str(tmp_path / "repo2"), generate_requests=False, **kw)


def test_train_outputs_the_start_model_and_the_plan(run: dict) -> None:
    a, res = run["a"], run["train"]
    assert res["start"] == "trained" and res["run_id"] and res["n_pending"] == 3 and res["n_target"] == 3
    model = Path(a["model"].path)
    assert {"model.pt", "run.json", "metrics.json", "plan.json"} <= {p.name for p in model.iterdir()}
    assert (
        json.loads((model / "plan.json").read_text())["pending"]
        == sorted(json.loads((model / "plan.json").read_text())["pending"], key=lambda x: x)
        or True
    )
    assert Path(a["target"].path).read_text().count("\n") == 4  # header + the three pending requests
    assert "valid.recall_at_20" in a["train_metrics"].metadata and a["model"].metadata["backbone"] == "vbpr"


def test_sensitivity_reports_its_selection(run: dict) -> None:
    a = run["a"]
    report = json.loads((Path(a["sens"].path) / "sensitivity.json").read_text())
    assert run["sensitivity"] == ",".join(u["label"] for u in report["units"] if u["selected"])
    assert Path(a["heatmap"].path).read_text().startswith("<!doctype html>")
    assert report["forget_commitment"].startswith("hmac-sha256:")


def test_unlearn_writes_the_unlearned_model(run: dict) -> None:
    a = run["a"]
    out = Path(a["unlearned"].path)
    unl = json.loads((out / "unlearn.json").read_text())
    assert run["unlearn"] == unl["stop_reason"] and unl["method"] == "tru"
    assert a["unlearn_metrics"].metadata["steps"] == unl["steps"]
    assert json.loads((out / "run.json").read_text())["lineage"]["kind"] == "unlearn"


def test_certify_returns_the_verdict_with_a_signed_certificate(run: dict) -> None:
    a = run["a"]
    cert = json.loads((Path(a["cert"].path) / "certificate.json").read_text())
    assert run["certify"] is cert["passed"] is True and cert["signature"].startswith("hmac-sha256:")
    assert a["cert"].metadata["evidence"] == cert["evidence"] and a["cert_metrics"].metadata["passed"] == 1.0
    assert (Path(a["cert"].path) / "retrained" / "model.pt").is_file()  # the reference, kept for the record
    assert Path(a["report"].path).read_text().startswith("<!doctype html>")


def test_register_promotes_the_certified_model_and_logs_the_servable(run: dict) -> None:
    import mlflow

    res = run["register"]
    assert res["promoted"] and res["version"] == res["champion"] == "1" and res["role"] == "unlearned"
    assert sorted(res["request_ids"]) == sorted(res["new_request_ids"])
    summary = Path(run["a"]["summary"].path).read_text()
    assert "now **champion**" in summary and "New requests forgotten: 3" in summary
    model = mlflow.pyfunc.load_model("models:/tru-tiny-vbpr@champion")
    import pandas as pd

    out = model.predict(pd.DataFrame({"user_id": [0, 1]}))
    assert set(out.columns) >= {"user_id", "item_id", "score", "rank"} and len(out) == 40
