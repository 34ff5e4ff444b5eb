"""The unlearning pipeline: the compiled IR YAML (tasks, edges, GPU resources, Kubernetes platform config,
retries, caching, images), the CLI against a KFP server that is down, and one local end-to-end run on tiny
data with a sqlite MLflow store, followed by a failed certificate that leaves the champion untouched."""

import itertools
import json
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import make_tiny_frame

pytest.importorskip("kfp")

from pipelines import runner, unlearning

from tru import cli
from tru.commands import pipeline as pipeline_cmd
from tru.mlops import images

CHAIN = ("ingest", "train", "sensitivity", "unlearn", "certify", "register")
LENIENT = (
    "mia_auc_tolerance: 1\nuser_mia_auc_tolerance: null\nretain_recall_min_ratio: 0\n"
    "forget_hr_max_excess: 1\nforget_hr_max_deficit: 1\n"
)


@pytest.fixture
def tru_main(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``tru.cli.main`` with the pipeline group registered."""
    if pipeline_cmd not in cli.GROUPS:
        monkeypatch.setattr(cli, "GROUPS", (*cli.GROUPS, pipeline_cmd))
    return cli.main


def _load(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = list(yaml.safe_load_all(path.read_text()))
    return docs[0], (docs[1] if len(docs) > 1 else {})


def test_compiled_yaml_structure(tmp_path: Path, tru_main: Any) -> None:
    out = tmp_path / "pipeline.yaml"
    assert tru_main(["pipeline", "compile", "--out", str(out)]) == 0
    spec, platform = _load(out)
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == set(CHAIN)
    for before, after in itertools.pairwise(CHAIN):
        assert before in tasks[after].get("dependentTasks", []), f"{before} → {after}"
    execs = spec["deploymentSpec"]["executors"]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["image"]["defaultValue"] == images.IMAGE_GPU
    assert params["cpu_image"]["defaultValue"] == images.IMAGE_CPU
    assert {"dataset", "backbone", "method", "policy", "data_rev", "epochs", "max_steps"} <= set(params)
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, task in tasks.items():
        ex = task["componentRef"]["name"].replace("comp-", "exec-")
        container = execs[ex]["container"]
        res = container["resources"]
        assert res["cpuRequest"] > 0 and res["memoryRequest"] > 0, name
        image = "image" if name in unlearning.GPU_TASKS else "cpu_image"
        assert container["image"] == f"{{{{$.inputs.parameters['pipelinechannel--{image}']}}}}"
        assert task["inputs"]["parameters"][f"pipelinechannel--{image}"]["componentInputParameter"] == image
        assert "install_kfp_package" not in json.dumps(container) and "pip install" not in json.dumps(
            container
        )
        assert task["cachingOptions"].get("enableCache", False) is (name != "register"), name
        assert ("retryPolicy" in task) is (name in ("ingest", "train", "register")), name
        plat = k8s.get(ex, {})
        secrets = {s["secretName"]: s for s in plat.get("secretAsEnv", [])}
        if name in unlearning.GPU_TASKS:
            acc = res["accelerator"]
            assert acc["resourceType"] == "nvidia.com/gpu" and acc["resourceCount"] == "1"
            assert plat["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
            assert plat["tolerations"] == [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ]
        else:
            assert "accelerator" not in res and "nodeSelector" not in plat
        if name in ("ingest", "train", "register"):
            keys = {m["envVar"] for m in secrets["tru-s3-credentials"]["keyToEnv"]}
            assert keys == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"}
        if name in ("train", "register"):
            assert secrets["tru-mlflow-credentials"]["optional"] is True
        if name in ("sensitivity", "unlearn", "certify"):
            assert not secrets
    assert tasks["train"]["retryPolicy"]["maxRetryCount"] == 2


def test_local_compile_leaves_out_cluster_settings(tmp_path: Path, tru_main: Any) -> None:
    out = tmp_path / "local.yaml"
    assert tru_main(["pipeline", "compile", "--local", "--out", str(out)]) == 0
    spec, platform = _load(out)
    assert not platform
    assert "accelerator" not in json.dumps(spec["deploymentSpec"]) and "retryPolicy" not in json.dumps(spec)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_submit_and_schedule_report_a_server_that_is_down(
    tru_main: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    host = f"http://127.0.0.1:{_closed_port()}"
    assert tru_main(["pipeline", "submit", "--host", host, "--dataset", "lfm2k"]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach the Kubeflow Pipelines API at {host}" in err and "nothing was submitted" in err
    assert tru_main(["pipeline", "schedule", "--host", host, "--cron", "0 3 * * *"]) == 2
    assert "cannot reach" in capsys.readouterr().err
    assert tru_main(["pipeline", "schedule", "--host", host, "--cron", "3 * *"]) == 2
    assert "expected 5 fields" in capsys.readouterr().err
    assert runner.normalise_cron("0 3 * * *") == "0 0 3 * * *"
    with pytest.raises(runner.PipelineError, match="unknown pipeline parameter"):
        runner.check_params({"datset": "x"})


@pytest.mark.slow
def test_local_run_end_to_end_then_failed_certificate_keeps_champion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from tru.data.dataset import write_dataset
    from tru.mlops import release_steps, tracking

    df, feats = make_tiny_frame()
    write_dataset(tmp_path / "tiny", "tiny", df, feats, source={"kind": "test"})
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("TRU_MLFLOW_ARTIFACTS", (tmp_path / "mlartifacts").as_uri())
    monkeypatch.chdir(tmp_path)
    params = dict(dataset="tiny", repo=str(tmp_path), backbone="vbpr", epochs=3, max_steps=20, policy=LENIENT,
                  audit_seeds="0")  # fmt: skip
    res = runner.run_local(params, root=tmp_path / "kfp")
    assert res["promoted"] is True and res["champion"] == res["version"] == "1"
    assert res["request_ids"] and all(r.startswith("gen-interaction-random-0-") for r in res["request_ids"])
    client = MlflowClient(uri)
    name = res["model_name"]
    assert name == "tru-tiny-vbpr"
    assert client.get_model_version(name, "1").tags["verdict"] == "certified"
    run = client.get_run(res["run_id"])
    assert run.data.tags["data_version.dataset_fingerprint"]
    assert {"model/certificate.json", "model/report.html"} <= {
        f.path for f in client.list_artifacts(res["run_id"], "model")
    }
    cert = json.loads(
        Path(client.download_artifacts(res["run_id"], "model/certificate.json", str(tmp_path))).read_text()
    )
    eff = cert["efficiency"]  # the retrain made inside certify is the time reference
    assert eff["reference_seconds_from"] == "retrained" and eff["reference_seconds"] > 0
    assert 0 < eff["time_ratio"] == pytest.approx(eff["unlearned_seconds"] / eff["reference_seconds"])

    # a failed certificate (impossible policy) on the same artifacts: registered, rejected, champion kept
    (run_dir,) = Path(res["pipeline_root"]).iterdir()
    data, reqs = run_dir / "ingest" / "data", run_dir / "ingest" / "deletion_requests"
    cert = release_steps.certify(
        data, run_dir / "train" / "model", run_dir / "unlearn" / "unlearned", reqs, tmp_path / "cert",
        policy="retain_recall_min_ratio: 1000\n", retrain=False, seeds=(0,),
    )  # fmt: skip
    assert cert["passed"] is False
    version = json.loads((run_dir / "ingest" / "info").read_text())["data_version"]
    out = release_steps.register(run_dir / "unlearn" / "unlearned", tmp_path / "cert", dataset_name="tiny",
                         backbone="vbpr", data_version=version)  # fmt: skip
    assert out["promoted"] is False and out["version"] == "2" and out["champion"] == "1"
    tracking.configure(uri)
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    tags = client.get_model_version(name, "2").tags
    assert tags["verdict"] == "rejected" and "retain Recall@20" in tags["reasons"]
