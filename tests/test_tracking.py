"""MLflow tracking and registry on real stores: a sqlite store with file artifacts, S3 artifacts on a moto
server, and a real ``mlflow server`` proxying S3; run folders are real (tiny VBPR, TRU unlearning, tru
certificates)."""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient

from tru.certify import AuditOptions, Policy, certify, open_run
from tru.certify.report import render_html
from tru.checkpoint import load_run, save_run
from tru.config import load_config
from tru.data.dataset import load_dataset, write_dataset
from tru.forget.requests import DeletionRequest, resolve_requests
from tru.mlops import registry, tracking
from tru.mlops.tracking import TrackingError
from tru.models import build_backbone
from tru.train.trainer import Trainer
from tru.unlearn.api import run_unlearning, save_unlearned, unlearn_config

from .conftest import make_tiny_frame
from .fixtures_services import S3Server, free_port

DATA_VERSION = {"git_commit": "a" * 40, "dvc_md5": "0123456789abcdef0123456789abcdef", "rev": "HEAD"}
NAME = tracking.model_name("tiny", "vbpr")


@pytest.fixture(scope="module", autouse=True)
def _services_start_early(request: pytest.FixtureRequest) -> None:
    """The sqlite migration and (when a selected test needs it) the server run in their own processes
    while the world below is built."""
    request.getfixturevalue("mlflow_db_template_launch")
    if any("mlflow_server" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("mlflow_server_launch")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """original (trained), unlearned (TRU on 3 requests) and two real certificates: lenient / impossible."""
    root = tmp_path_factory.mktemp("tracking-world")
    df, feats = make_tiny_frame()
    write_dataset(root / "data", "tiny", df, feats, source={"kind": "test"})
    ds = load_dataset(root / "data", validate=False)
    cfg = load_config("vbpr", overrides={"epochs": 3, "seed": 3, "train_batch_size": 512, "device": "cpu"})
    model = build_backbone("vbpr", ds, cfg)
    result = Trainer(model, ds, cfg, log=lambda _s: None).fit()
    metrics = {"valid": result.best_valid, "test": result.test}
    save_run(root / "original", model, cfg, ds, metrics=metrics, extra={"training": result.to_dict()})
    users = np.unique(ds.train.users)[:3]
    reqs = [DeletionRequest(f"req-{u}", "user", int(u), None, "2026-01-01", "test") for u in users]
    spec = resolve_requests(ds, reqs)
    ucfg = unlearn_config(cfg, {"max_steps": 20, "check_every": 10, "stop_on_target": False})
    outcome = run_unlearning("tru", model, ds, spec, cfg, ucfg)
    save_unlearned(root / "unlearned", outcome, cfg, ds, spec)
    orig, unl = open_run(root / "original", ds), open_run(root / "unlearned", ds)
    fast = AuditOptions(n_boot=10, max_users=50)
    lenient = Policy(
        mia_auc_tolerance=1.0,
        user_mia_auc_tolerance=1.0,
        retain_recall_min_ratio=0.0,
        forget_hr_max_excess=1.0,
        forget_hr_max_deficit=1.0,
    )
    impossible = Policy(retain_recall_min_ratio=1.5, max_time_ratio=0.0)
    passing = certify(ds, spec, orig, unl, None, lenient, (0,), None, fast)
    failing = certify(ds, spec, orig, unl, None, impossible, (0,), None, fast)
    for folder, cert in (("cert-pass", passing), ("cert-fail", failing)):  # the files `tru certify` writes,
        (root / folder).mkdir()  # without its plots (matplotlib is the slow part)
        (root / folder / "certificate.json").write_text(json.dumps(cert))
        (root / folder / "report.html").write_text(render_html(cert, {}))
    assert passing["passed"] is True and failing["passed"] is False
    return {"root": root, "ds": ds, "ids": [r.request_id for r in reqs], "pass": passing, "fail": failing}


def _log(world: dict[str, Any], which: str, cert: str | None = None) -> str:
    root = world["root"]
    extra = sorted((root / cert).glob("*.*")) if cert else []
    kind = "train" if which == "original" else "unlearn"
    return tracking.log_run(
        root / which, kind=kind, params={"method": "tru"}, data_version=DATA_VERSION, artifacts=extra
    )


def _aliases(client: MlflowClient, name: str = NAME) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


def _promote_initial(world: dict[str, Any]) -> str:
    run_id = _log(world, "original")
    v1 = registry.register_version(NAME, run_id, world["root"] / "original", tags={})
    assert registry.promote(NAME, v1, {"passed": True, "reasons": []}, [])["champion"] == v1
    return v1


def test_log_train_run(world, mlflow_store) -> None:
    run_id = _log(world, "original")
    run = MlflowClient(tracking_uri=mlflow_store.uri).get_run(run_id)
    meta = json.loads((world["root"] / "original" / "run.json").read_text())
    assert run.info.status == "FINISHED"
    assert run.data.params["learning_rate"] == str(meta["config"]["learning_rate"])
    assert run.data.params["method"] == "tru"
    assert run.data.tags["kind"] == "train" and run.data.tags["code_version"] == meta["code_version"]
    assert run.data.tags["data_version.git_commit"] == DATA_VERSION["git_commit"]
    assert run.data.tags["data_version.dvc_md5"] == DATA_VERSION["dvc_md5"]
    metrics = json.loads((world["root"] / "original" / "metrics.json").read_text())
    assert run.data.metrics["test_recall_at_20"] == pytest.approx(metrics["test"]["recall@20"])
    history = MlflowClient(tracking_uri=mlflow_store.uri).get_metric_history(run_id, "epoch_loss")
    assert [m.step for m in history] == [0, 1, 2]
    files = {f.path for f in MlflowClient(tracking_uri=mlflow_store.uri).list_artifacts(run_id, "model")}
    assert {"model/model.pt", "model/run.json", "model/metrics.json"} <= files


def test_log_unlearn_run_with_certificate(world, mlflow_store) -> None:
    run_id = _log(world, "unlearned", cert="cert-pass")
    client = MlflowClient(tracking_uri=mlflow_store.uri)
    run = client.get_run(run_id)
    unl = json.loads((world["root"] / "unlearned" / "unlearn.json").read_text())
    assert run.data.tags["kind"] == "unlearn" and run.data.tags["certificate.passed"] == "true"
    assert run.data.metrics["cert_passed"] == 1.0 and "cert_unlearned_forget_hr_at_20" in run.data.metrics
    assert run.data.params["unlearn.max_steps"] == "20"
    branches = set(unl["alpha_history"][-1]["alpha"])
    assert branches and all(f"alpha_{b}" in run.data.metrics for b in branches)
    steps = [m.step for m in client.get_metric_history(run_id, "unlearn_loss_f")]
    assert steps == [row["step"] for row in unl["history"]]
    top = {f.path for f in client.list_artifacts(run_id)}
    assert {"model", "certificate.json", "report.html"} <= top
    assert "model/sensitivity.png" in {f.path for f in client.list_artifacts(run_id, "model")}


def test_promotion_rejection_champion_and_purge(world, mlflow_store) -> None:
    root, ids = world["root"], world["ids"]
    client = MlflowClient(tracking_uri=mlflow_store.uri, registry_uri=mlflow_store.uri)
    assert registry.champion(NAME) is None  # no registered model yet
    v1 = _promote_initial(world)
    # a failing certificate: champion untouched, version rejected with reasons, candidate alias
    run2 = _log(world, "unlearned", cert="cert-fail")
    v2 = registry.register_version(NAME, run2, root / "unlearned", tags={"method": "tru"})
    out = registry.promote(NAME, v2, world["fail"], ids)
    assert out == {"promoted": False, "version": v2, "champion": v1}
    t2 = client.get_model_version(NAME, v2).tags
    assert t2["verdict"] == "rejected" and t2["reasons"] == "; ".join(world["fail"]["reasons"])
    assert _aliases(client) == {"champion": v1, "candidate": v2}
    # a passing certificate: champion moves; the old ones are tagged as holding the deleted requests
    run3 = _log(world, "unlearned", cert="cert-pass")
    v3 = registry.register_version(NAME, run3, root / "unlearned", tags={})
    assert registry.promote(NAME, v3, world["pass"], ids) == {"promoted": True, "version": v3, "champion": v3}
    t1, t2, t3 = (client.get_model_version(NAME, v).tags for v in (v1, v2, v3))
    assert t3["verdict"] == "certified" and t3["forgotten_requests"] == ",".join(sorted(ids))
    assert t3["data_version.dvc_md5"] == DATA_VERSION["dvc_md5"]
    assert t1["superseded_by"] == v3 and t1["contains_deleted_data"] == "true" == t2["contains_deleted_data"]
    assert t1["deleted_requests"] == ",".join(sorted(ids)) and "contains_deleted_data" not in t3
    # champion() round trip: the downloaded folder loads with tru's checkpoint loader
    version, folder = registry.champion(NAME)
    assert version == v3 and str(folder).startswith(str(mlflow_store.db.parent / "tmp"))
    assert load_run(folder, world["ds"]).meta["n_forget_pairs"] > 0
    assert (folder / "model.pt").read_bytes() == (root / "unlearned" / "model.pt").read_bytes()
    # purge: dry run lists v1 and v2 and deletes nothing; apply deletes their model artifacts only
    art = Path(client.get_run(client.get_model_version(NAME, v1).run_id).info.artifact_uri[7:]) / "model"
    dry = registry.purge(NAME)
    assert [r["version"] for r in dry] == [v1, v2] and {r["action"] for r in dry} == {"would delete"}
    assert (art / "model.pt").is_file()
    done = registry.purge(NAME, dry_run=False)
    assert [r["version"] for r in done] == [v1, v2] and not art.exists()
    assert client.get_model_version(NAME, v1).tags["purged"] == "true"
    assert _aliases(client) == {"champion": v3}
    assert registry.purge(NAME, dry_run=False) == []
    assert registry.champion(NAME)[0] == v3  # the champion's artifacts are intact
    versions = registry.list_versions(NAME)
    assert [(v["version"], v["aliases"]) for v in versions] == [(v1, []), (v2, []), (v3, ["champion"])]


def test_failure_midway_leaves_champion(world, mlflow_store) -> None:
    """The database refuses the alias write (the last step): the promotion fails after its tags were
    written, the tags are restored, the champion stays."""
    v1 = _promote_initial(world)
    run2 = _log(world, "unlearned", cert="cert-pass")
    v2 = registry.register_version(NAME, run2, world["root"] / "unlearned", tags={})
    with pytest.raises(TrackingError, match=r"version 99: not in the registry"):
        registry.promote(NAME, "99", world["pass"], world["ids"])
    client = MlflowClient(registry_uri=mlflow_store.uri)
    before = {v: dict(client.get_model_version(NAME, v).tags) for v in (v1, v2)}
    db = sqlite3.connect(mlflow_store.db)
    for event in ("INSERT", "UPDATE"):
        db.execute(
            f"CREATE TRIGGER refuse_{event.lower()} BEFORE {event} ON registered_model_aliases "
            "BEGIN SELECT RAISE(ABORT, 'alias writes refused'); END"
        )
    db.commit()
    try:
        with pytest.raises(TrackingError, match=f"(?s)alias writes refused.*champion is still {v1}$"):
            registry.promote(NAME, v2, world["pass"], world["ids"])
    finally:
        db.executescript("DROP TRIGGER refuse_insert; DROP TRIGGER refuse_update;")
        db.close()
    assert _aliases(client) == {"champion": v1}
    assert {v: dict(client.get_model_version(NAME, v).tags) for v in (v1, v2)} == before
    assert before[v2]["verdict"] == "pending"


def test_s3_artifact_store(world, mlflow_s3_store, moto_server: S3Server) -> None:
    bucket = mlflow_s3_store.artifacts.split("/")[2]
    v1 = _promote_initial(world)
    run1 = MlflowClient(registry_uri=mlflow_s3_store.uri).get_model_version(NAME, v1).run_id
    assert any(k.endswith(f"{run1}/artifacts/model/model.pt") for k in moto_server.keys(bucket))
    run2 = _log(world, "unlearned", cert="cert-pass")
    v2 = registry.register_version(NAME, run2, world["root"] / "unlearned", tags={})
    registry.promote(NAME, v2, world["pass"], world["ids"])
    version, folder = registry.champion(NAME)
    assert version == v2 and load_run(folder, world["ds"]).meta["n_forget_pairs"] > 0
    assert [r["version"] for r in registry.purge(NAME, dry_run=False)] == [v1]
    keys = moto_server.keys(bucket)
    assert not any(f"{run1}/artifacts/model/" in k for k in keys)
    assert any(f"{run2}/artifacts/model/model.pt" in k for k in keys)


def test_model_name_and_bad_input(world, mlflow_store, tmp_path: Path) -> None:
    assert tracking.model_name("LFM-2k", "MGCN") == "tru-lfm-2k-mgcn"
    with pytest.raises(ValueError, match="no letters"):
        tracking.model_name("--", "mgcn")
    with pytest.raises(ValueError, match="kind must be one of"):
        tracking.log_run(tmp_path, kind="deploy", params={}, data_version={})
    (tmp_path / "half").mkdir()
    with pytest.raises(TrackingError, match=r"half: a train run folder needs model.pt and run.json"):
        tracking.log_run(tmp_path / "half", kind="train", params={}, data_version={})


def test_registry_cli(world, mlflow_store, capsys, tmp_path: Path) -> None:
    from tru.commands import registry as registry_cmd

    parser = argparse.ArgumentParser(prog="tru")
    registry_cmd.register(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str) -> str:
        args = parser.parse_args(["registry", *argv])
        assert args.func(args) == 0
        return capsys.readouterr().out

    v1 = _promote_initial(world)
    assert "champion" in run("list", "--name", NAME)
    got = json.loads(run("champion", "--name", NAME, "--download", str(tmp_path / "dl")))
    assert got["version"] == v1 and (Path(got["path"]) / "model.pt").is_file()
    assert "nothing to purge" in run("purge", "--name", NAME)
    # the same run registered again and certified: v1 holds deleted data, but its files are the champion's
    run1 = MlflowClient(registry_uri=mlflow_store.uri).get_model_version(NAME, v1).run_id
    v2 = registry.register_version(NAME, run1, world["root"] / "original", tags={})
    registry.promote(NAME, v2, world["pass"], world["ids"])
    assert "nothing to purge" in run("purge", "--name", NAME, "--apply")
    assert (Path(registry.champion(NAME)[1]) / "model.pt").is_file()
    from tru.commands.common import CLIError

    with pytest.raises(CLIError, match="no registered model 'tru-none-vbpr'"):
        args = parser.parse_args(["registry", "list", "--name", "tru-none-vbpr"])
        args.func(args)


@pytest.mark.slow  # a real `mlflow server` (10-30 s start-up, overlapped with the set-up above)
def test_mlflow_server_with_s3_and_server_down(world, mlflow_server, monkeypatch, moto_server) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)  # proxied artifacts: the client has no S3 keys
    monkeypatch.setenv("TMPDIR", str(world["root"]))
    monkeypatch.delenv("TRU_MLFLOW_ARTIFACTS", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    assert tracking.configure() == mlflow_server.url
    name = tracking.model_name("tiny-server", "vbpr")
    run1 = _log(world, "original")
    v1 = registry.register_version(name, run1, world["root"] / "original", tags={})
    assert registry.promote(name, v1, {"passed": True}, [])["champion"] == v1
    version, folder = registry.champion(name)
    assert version == v1 and (folder / "model.pt").is_file()
    keys = moto_server.keys(mlflow_server.bucket, mlflow_server.prefix)
    assert any(k.endswith(f"{run1}/artifacts/model/model.pt") for k in keys)
    # the server goes away: a clear error before anything is written
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    with pytest.raises(TrackingError, match=r"not reachable.*nothing was logged or changed"):
        tracking.log_run(world["root"] / "unlearned", kind="unlearn", params={}, data_version=DATA_VERSION)
    with pytest.raises(TrackingError, match="not reachable"):
        registry.promote(name, v1, world["fail"], world["ids"])
    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    assert _aliases(client, name) == {"champion": v1}
    assert client.get_model_version(name, v1).tags["verdict"] == "certified"
    assert len(client.search_runs([client.get_experiment_by_name("tru").experiment_id])) == 1
