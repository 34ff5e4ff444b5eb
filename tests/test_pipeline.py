"""The unlearning pipeline as a platform team sees it: the compiled IR YAML (tasks, edges, requests and
limits, GPU placement, secrets, retries, caching, images tagged with the code version), and the cluster
path up to the server: a stand-in KFP API receives the pipeline version named after the code, the run
with the MLflow tracking URI and the repository URL, and reports its end state."""

from __future__ import annotations

import itertools
import json
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from tru.cli import main
from tru.kfp import pipeline as unlearning
from tru.kfp import runner
from tru.mlops import images

from . import fake_kfp

CHAIN = ("resolve_revision", "ingest", "train", "sensitivity", "unlearn", "certify", "register")
CLUSTER_PARAMS = {
    "dataset": "lfm2k",
    "repo": "https://git.example.org/data/tru-data.git",
    "tracking_uri": "https://mlflow.example.org",
}


def _load(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = list(yaml.safe_load_all(path.read_text()))
    return docs[0], (docs[1] if len(docs) > 1 else {})


@pytest.fixture
def kfp_api() -> Any:
    url, rec, server = fake_kfp.start()
    try:
        yield url, rec
    finally:
        server.shutdown()


def test_compiled_yaml_structure(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.yaml"
    assert main(["pipeline", "compile", "--out", str(out), "--image-pull-secret", "regcred"]) == 0
    spec, platform = _load(out)
    tasks = {k.replace("-", "_"): v for k, v in spec["root"]["dag"]["tasks"].items()}
    assert set(tasks) == set(CHAIN)
    for before, after in itertools.pairwise(CHAIN):
        assert before.replace("_", "-") in tasks[after].get("dependentTasks", []), f"{before} → {after}"
    execs = spec["deploymentSpec"]["executors"]
    params = spec["root"]["inputDefinitions"]["parameters"]
    code = images.code_version()
    assert params["image"]["defaultValue"] == images.image("gpu") == f"ghcr.io/tru-ml/tru:{code}-gpu"
    assert params["cpu_image"]["defaultValue"] == images.image("cpu")
    assert (
        params["data_rev"]["defaultValue"] == "HEAD" and params["tracking_uri"]["parameterType"] == "STRING"
    )
    assert {"repo", "generate_requests", "deadline_days", "confirm", "retrain"} <= set(params)
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, task in tasks.items():
        ex = task["componentRef"]["name"].replace("comp-", "exec-")
        container = execs[ex]["container"]
        res = container["resources"]
        assert res["cpuRequest"] > 0 and res["memoryRequest"] > 0, name
        assert res["cpuLimit"] >= res["cpuRequest"] and res["memoryLimit"] >= res["memoryRequest"], name
        image = "image" if name in unlearning.GPU_TASKS else "cpu_image"
        assert container["image"] == f"{{{{$.inputs.parameters['pipelinechannel--{image}']}}}}"
        assert "pip install" not in json.dumps(container)
        cached = task["cachingOptions"].get("enableCache", False)
        assert cached is (name not in ("resolve_revision", "train", "register")), name
        assert ("retryPolicy" in task) is (name in unlearning.RETRY_TASKS), name
        plat = k8s.get(ex, {})
        secrets: dict[str, list[dict[str, Any]]] = {}
        for s in plat.get("secretAsEnv", []):
            secrets.setdefault(s["secretName"], []).append(s)
        if name in unlearning.GPU_TASKS:
            acc = res["accelerator"]
            assert acc["resourceType"] == "nvidia.com/gpu" and acc["resourceCount"] == "1"
            assert plat["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
            assert plat["tolerations"] == [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ]
        else:
            assert "accelerator" not in res and "nodeSelector" not in plat
        if name in unlearning.S3_TASKS:  # keys required, the endpoint optional (AWS needs none)
            by_optional = {
                bool(s.get("optional")): {m["envVar"] for m in s["keyToEnv"]}
                for s in secrets["tru-s3-credentials"]
            }
            assert by_optional == {False: {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
                                   True: {"AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"}}  # fmt: skip
        if name in unlearning.KEY_TASKS:  # one commitment / signing key for every task, required
            (key,) = secrets["tru-commitment-key"]
            assert not key.get("optional") and key["keyToEnv"][0]["envVar"] == "TRU_COMMITMENT_KEY"
        if name in unlearning.GIT_TASKS:
            assert secrets["tru-git-credentials"][0]["optional"] is True
        if name in unlearning.MLFLOW_TASKS:
            assert secrets["tru-mlflow-credentials"][0]["optional"] is True
        assert [s["secretName"] for s in plat["imagePullSecret"]] == ["regcred"], name
    # the tracking URI reaches every task that talks to MLflow, the repository and revision the data tasks
    for name, wanted in (("train", "tracking_uri"), ("register", "tracking_uri"), ("ingest", "repo")):
        assert tasks[name]["inputs"]["parameters"][wanted] == {"componentInputParameter": wanted}, name
    assert (
        tasks["ingest"]["inputs"]["parameters"]["rev"]["taskOutputParameter"]["producerTask"]
        == "resolve-revision"
    )


def test_local_compile_leaves_out_cluster_settings(tmp_path: Path) -> None:
    out = tmp_path / "local.yaml"
    assert main(["pipeline", "compile", "--local", "--out", str(out)]) == 0
    spec, platform = _load(out)
    assert not platform
    assert "accelerator" not in json.dumps(spec["deploymentSpec"]) and "retryPolicy" not in json.dumps(spec)


def test_submit_uploads_this_codes_version_and_follows_the_run(kfp_api: Any, monkeypatch) -> None:
    url, rec = kfp_api
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "t0ken")
    out = runner.submit(url, {**CLUSTER_PARAMS, "data_rev": "abc123"}, namespace="team-a", wait=True)
    assert out["state"] == "SUCCEEDED"
    ((pid, versions),) = rec.versions.items()
    assert rec.pipelines[pid]["display_name"] == unlearning.PIPELINE_NAME
    assert versions[-1]["display_name"] == images.code_version()
    package = rec.packages[out["pipeline_version_id"]].decode()
    assert images.image("gpu") in package and "tru-commitment-key" in package
    (run,) = rec.runs.values()
    params = run["runtime_config"]["parameters"]
    assert (
        params["tracking_uri"] == CLUSTER_PARAMS["tracking_uri"] and params["repo"] == CLUSTER_PARAMS["repo"]
    )
    assert run["pipeline_version_reference"]["pipeline_version_id"] == out["pipeline_version_id"]
    assert rec.experiments[run["experiment_id"]]["namespace"] == "team-a"
    assert "Bearer t0ken" in rec.auth
    # the same code again: the version is reused, not uploaded twice
    runner.submit(url, CLUSTER_PARAMS)
    assert len(rec.versions[pid]) == len(versions) and len(rec.runs) == 2
    rec.final_state = "FAILED"
    with pytest.raises(runner.PipelineError, match="ended FAILED"):
        runner.submit(url, CLUSTER_PARAMS, wait=True)


def test_cluster_runs_need_a_tracking_server_and_a_repository_url(kfp_api: Any, capsys) -> None:
    url, rec = kfp_api
    with pytest.raises(runner.PipelineError, match="needs --tracking-uri http"):
        runner.submit(url, {**CLUSTER_PARAMS, "tracking_uri": ""})
    with pytest.raises(runner.PipelineError, match="pod-local store"):
        runner.schedule(url, "0 3 * * *", {**CLUSTER_PARAMS, "tracking_uri": "sqlite:///x.db"})
    with pytest.raises(runner.PipelineError, match="needs --repo <git URL"):
        runner.submit(url, {**CLUSTER_PARAMS, "repo": "/home/me/checkout"})
    argv = ["pipeline", "submit", "--host", url, "--dataset", "lfm2k", "--repo", CLUSTER_PARAMS["repo"]]
    assert main(argv) == 2 and "needs --tracking-uri" in capsys.readouterr().err
    assert not rec.runs and not rec.pipelines  # refused before anything reached the server


def test_schedule_resolves_the_revision_at_run_time(kfp_api: Any) -> None:
    url, rec = kfp_api
    out = runner.schedule(url, "0 3 * * *", CLUSTER_PARAMS)
    (job,) = rec.recurring.values()
    assert out["cron"] == "0 0 3 * * *" and job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert job["max_concurrency"] == "1" or job["max_concurrency"] == 1
    params = job["runtime_config"]["parameters"]
    assert "data_rev" not in params  # the default HEAD: resolve_revision turns it into a sha at each run
    spec, _ = next(iter(yaml.safe_load_all(next(iter(rec.packages.values())).decode()))), None
    assert spec["root"]["dag"]["tasks"]["resolve-revision"]["cachingOptions"] == {}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_submit_and_schedule_report_a_server_that_is_down(capsys: pytest.CaptureFixture[str]) -> None:
    host = f"http://127.0.0.1:{_closed_port()}"
    base = ["--dataset", "lfm2k", "--repo", CLUSTER_PARAMS["repo"], "--tracking-uri", "http://m"]
    assert main(["pipeline", "submit", "--host", host, *base]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach the Kubeflow Pipelines API at {host}" in err and "nothing was submitted" in err
    assert main(["pipeline", "schedule", "--host", host, "--cron", "0 3 * * *", *base]) == 2
    assert "cannot reach" in capsys.readouterr().err
    assert main(["pipeline", "schedule", "--host", host, "--cron", "3 * *", *base]) == 2
    assert "expected 5 fields" in capsys.readouterr().err
    with pytest.raises(runner.PipelineError, match="unknown pipeline parameter"):
        runner.check_params({"datset": "x"})


def test_bad_parameter_values_are_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A value the pipeline cannot run with is refused when the run is asked for, each parameter named
    (a cluster run would otherwise fail in a pod, after ingest and training): a local run starts no task
    (no pipeline root is written), a submission contacts no server."""
    root = tmp_path / "root"
    argv = ["pipeline", "run", "--local", "--dataset", "lfm2k", "--ratio", "1.5", "--seed", "-1",
            "--method", "tru-fast", "--audit-seeds", "0,x", "--deadline-days", "0",
            "--pipeline-root", str(root)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    for part in ("ratio 1.5: expected a fraction within (0, 1)", "seed -1: expected an integer >= 0",
                 "method 'tru-fast': expected one of", "audit_seeds '0,x'", "deadline_days 0"):  # fmt: skip
        assert part in err, err
    assert not root.exists()
    host = f"http://127.0.0.1:{_closed_port()}"
    base = ["--dataset", "lfm2k", "--repo", CLUSTER_PARAMS["repo"], "--tracking-uri", "http://m"]
    assert main(["pipeline", "submit", "--host", host, *base, "--regime", "users"]) == 2
    err = capsys.readouterr().err
    assert "regime 'users': expected one of ['user', 'item', 'interaction']" in err
    assert "cannot reach" not in err
    from tru.steps.params import PipelineParams

    with pytest.raises(ValueError, match=r"max_steps 2\.5: expected an integer >= 0"):
        PipelineParams.of({"max_steps": 2.5})
    assert PipelineParams.of({"ratio": 0.2, "audit_seeds": "3, 4"}).seeds == (3, 4)


def test_a_cluster_run_gets_a_policy_and_a_calibration_its_pods_can_read(
    kfp_api: Any, tmp_path: Path
) -> None:
    """A policy file of the submitting machine is sent as its YAML text (the pods have no such file); a
    calibration folder of this machine is refused (the pods could not download it), a URI is sent as is;
    a policy path that does not exist is refused before anything is uploaded."""
    url, rec = kfp_api
    policy = tmp_path / "lenient.yaml"
    policy.write_text("max_time_ratio: 0.5\nmin_retain_ratio: 0.9\n")
    runner.submit(url, {**CLUSTER_PARAMS, "policy": str(policy), "calibration": "runs:/abc/calibration"})
    (run,) = rec.runs.values()
    sent = run["runtime_config"]["parameters"]
    assert sent["policy"] == policy.read_text() and sent["calibration"] == "runs:/abc/calibration"
    with pytest.raises(runner.PipelineError, match="needs --calibration as a URI"):
        runner.submit(url, {**CLUSTER_PARAMS, "calibration": str(tmp_path)})
    with pytest.raises(runner.PipelineError, match="no such file"):
        runner.submit(url, {**CLUSTER_PARAMS, "policy": str(tmp_path / "missing.yaml")})
    assert len(rec.runs) == 1


def test_parameter_values_are_read_as_the_steps_read_them() -> None:
    """Switches must be true or false (the string 'false' is true to Python); integers must be integers
    (kfp refuses 3.0 for an integer parameter); audit seeds are read as certify reads them (empty entries
    skipped; none at all only for a retrain, which certifies itself); a deadline has an upper bound (a due
    date past year 9999 overflows)."""
    from tru.steps.params import PipelineParams

    def wrong(**kw: Any) -> str:
        return "; ".join(PipelineParams(**kw).problems())

    assert "retrain 'false': expected true or false" in wrong(retrain="false")
    assert "epochs 3.0: expected an integer >= 0" in wrong(epochs=3.0)
    assert "audit_seeds '0,²'" in wrong(audit_seeds="0,²")
    assert "audit_seeds ''" in wrong(audit_seeds="")
    assert "deadline_days 10000000.0" in wrong(deadline_days=1e7)
    assert wrong(audit_seeds="0, 1,") == "" and PipelineParams(audit_seeds=" 0, 1,").seeds == (0, 1)
    assert wrong(audit_seeds="", method="retrain") == "" and wrong(deadline_days=36_500) == ""
