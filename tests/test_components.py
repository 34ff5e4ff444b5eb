"""Each KFP component in a one-step pipeline through kfp.local (standalone calls cannot take artifacts:
inputs come from ``dsl.importer``), on tiny planted data; the inputs are built in-process with
:mod:`tru.mlops.steps`, which this file also exercises. Failures leave nothing registered."""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from .conftest import make_tiny_frame

pytest.importorskip("kfp")

import components
from kfp import dsl, local
from kfp.dsl import Artifact, Dataset, Model
from pipelines.runner import _tmpdir

from tru.data.dataset import DataError, write_dataset
from tru.mlops import release_steps, steps

LENIENT = (
    "mia_auc_tolerance: 1\nuser_mia_auc_tolerance: null\nretain_recall_min_ratio: 0\n"
    "forget_hr_max_excess: 1\nforget_hr_max_deficit: 1\n"
)
IMPOSSIBLE = "retain_recall_min_ratio: 1000\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Dataset, requests, a trained model, its unlearned copy and a certificate, made by the steps."""
    root = tmp_path_factory.mktemp("components")
    df, feats = make_tiny_frame()
    write_dataset(root / "tiny", "tiny", df, feats, source={"kind": "test"})
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns.db'}")
    mp.setenv("TRU_MLFLOW_ARTIFACTS", (root / "mlartifacts").as_uri())
    mp.chdir(root)
    w: dict[str, Any] = {"root": root}
    info = steps.ingest(str(root), "", "tiny", root / "data", root / "requests.csv", ratio=0.05)
    w["info"] = info
    steps.train(
        root / "data", "vbpr", root / "model", dataset_name="tiny", data_version=info["data_version"],
        epochs=3, reuse_champion=False,
    )  # fmt: skip
    steps.sensitivity(root / "data", root / "model", root / "requests.csv", root / "sens")
    steps.unlearn(root / "data", root / "model", root / "requests.csv", root / "unlearned", max_steps=10)
    release_steps.certify(
        root / "data", root / "model", root / "unlearned", root / "requests.csv", root / "cert",
        policy=LENIENT, retrain=False, seeds=(0,),
    )  # fmt: skip
    yield w
    mp.undo()


def run_one(
    root: Path, comp: Any, artifacts: dict[str, tuple[Path, type]], **params: Any
) -> tuple[Any, Path]:
    """Run ``comp`` alone in a pipeline (artifact inputs imported from paths); return (its output, the
    task's output folder)."""
    key = "Output" if "Output" in comp.component_spec.outputs else "dataset_name"
    typ = {"String": str, "Boolean": bool}[comp.component_spec.outputs[key].type]

    def one() -> typ:
        kw = dict(params)
        for name, (path, cls) in artifacts.items():
            kw[name] = dsl.importer(artifact_uri=str(path), artifact_class=cls, reimport=False).output
        return comp(**kw).outputs[key]

    one.__annotations__["return"] = typ
    one = dsl.pipeline(name=f"one-{comp.name}")(one)

    outputs = root / f"kfp-{comp.name}"
    with _tmpdir(root / "tmp"):
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(outputs))
        result = one().output
    (run_dir,) = outputs.iterdir()
    return result, run_dir / comp.name


def executor_output(task_dir: Path) -> dict[str, Any]:
    """What the task reported to KFP: output parameters and artifact metadata (Metrics live there)."""
    return json.loads((task_dir / "executor_output.json").read_text())


def test_ingest_component_outputs_dataset_requests_and_version(world: dict[str, Any]) -> None:
    root = world["root"]
    name, out = run_one(
        root, components.ingest, {}, repo=str(root), rev="", dataset=str(root / "tiny"), requests="",
        regime="interaction", ratio=0.05, seed=0,
    )  # fmt: skip
    assert name == "tiny"
    assert (out / "data" / "dataset.yaml").is_file()
    assert (out / "deletion_requests").read_text().startswith("request_id,kind,")
    info = json.loads((out / "info").read_text())
    assert info["requests_origin"] == "generated" and info["spec"]["n_forget_pairs"] > 0
    assert info["data_version"]["dataset_fingerprint"] == info["dataset"]["fingerprint"]
    assert executor_output(out)["parameterValues"]["n_forget"] == info["spec"]["n_forget_pairs"]


def test_ingest_component_refuses_bad_data(world: dict[str, Any]) -> None:
    root = world["root"]
    bad = root / "bad"
    shutil.copytree(root / "tiny", bad)
    inter = next(bad.glob("*.inter"))
    inter.write_text(inter.read_text() + "oops\t-3\t1\t0\n")
    with pytest.raises(RuntimeError, match="ingest"):
        run_one(
            root, components.ingest, {}, repo=str(root), rev="", dataset=str(bad), requests="",
            regime="interaction", ratio=0.05, seed=0,
        )  # fmt: skip
    with pytest.raises(DataError, match=r"\.inter"):
        steps.ingest(str(root), "", str(bad), root / "bad-out", root / "bad.csv")


def test_train_component_trains_and_logs(world: dict[str, Any]) -> None:
    root = world["root"]
    res, out = run_one(
        root, components.train, {"data": (root / "data", Dataset)}, dataset_name="tiny",
        data_version=json.dumps(world["info"]["data_version"]), backbone="vbpr", tracking_uri="", epochs=2,
        reuse_champion=True,
    )  # fmt: skip
    res = json.loads(res)
    assert res["reused"] is False and res["run_id"]
    assert (out / "model" / "model.pt").is_file() and (out / "model" / "metrics.json").is_file()


def test_sensitivity_component_writes_scores_and_heatmap(world: dict[str, Any]) -> None:
    root = world["root"]
    arts = {"data": (root / "data", Dataset), "model": (root / "model", Model),
            "deletion_requests": (root / "requests.csv", Dataset)}  # fmt: skip
    selected, out = run_one(root, components.sensitivity, arts)
    report = json.loads((out / "report" / "sensitivity.json").read_text())
    assert selected == ",".join(u["label"] for u in report["units"] if u["selected"])
    assert "data:image/png;base64," in (out / "heatmap").read_text()


def test_unlearn_component_any_method(world: dict[str, Any]) -> None:
    root = world["root"]
    arts = {"data": (root / "data", Dataset), "model": (root / "model", Model),
            "deletion_requests": (root / "requests.csv", Dataset)}  # fmt: skip
    stop, out = run_one(root, components.unlearn, arts, method="gradient_ascent", max_steps=5)
    meta = json.loads((out / "unlearned" / "unlearn.json").read_text())
    assert meta["method"] == "gradient_ascent" and meta["steps"] <= 5 and stop == meta["stop_reason"]


def test_certify_component_verdict_report_and_metrics(world: dict[str, Any]) -> None:
    root = world["root"]
    arts = {
        "data": (root / "data", Dataset),
        "original": (root / "model", Model),
        "unlearned": (root / "unlearned", Model),
        "deletion_requests": (root / "requests.csv", Dataset),
    }
    passed, out = run_one(root, components.certify, arts, policy=IMPOSSIBLE, retrain=False, audit_seeds="0")
    assert passed is False
    cert = json.loads((out / "certificate" / "certificate.json").read_text())
    assert cert["passed"] is False and any("retain Recall@20" in r for r in cert["reasons"])
    assert (out / "report").read_text().lstrip().lower().startswith("<!doctype html")
    metrics = executor_output(out)["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert metrics["passed"] == 0.0 and "efficiency.params_changed" in metrics


def test_register_component_promotes_only_certified(world: dict[str, Any]) -> None:
    from tru.mlops import registry, tracking

    root = world["root"]
    arts = {"unlearned": (root / "unlearned", Model), "certificate": (root / "cert", Artifact),
            "sensitivity": (root / "sens", Artifact)}  # fmt: skip
    version = json.dumps(world["info"]["data_version"])
    res, out = run_one(root, components.register, arts, dataset_name="tiny", backbone="vbpr",
                       data_version=version, tracking_uri="")  # fmt: skip
    res = json.loads(res)
    assert res["promoted"] is True and res["champion"] == res["version"]
    assert "champion" in (out / "summary").read_text()
    tracking.configure(None)
    assert registry.champion(res["model_name"], root / "champ")[0] == res["version"]
