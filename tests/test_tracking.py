"""MLflow tracking and registry on real stores: a sqlite store with file artifacts, S3 artifacts on a moto
server, and a real ``mlflow server`` proxying S3; run folders are the session's tiny world (a VBPR, its
TRU-unlearned copy, signed certificates). Promotion is a compare-and-set under a registry lock."""

from __future__ import annotations

import argparse
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from tru.checkpoint import load_run
from tru.mlops import registry, tracking
from tru.mlops.registry import PromotionConflict
from tru.mlops.tracking import TrackingError

from .conftest import TinyWorld
from .fixtures_services import S3Server, free_port

DATA_VERSION = {"git_commit": "a" * 40, "dvc_md5": "0123456789abcdef0123456789abcdef", "rev": "HEAD"}
NAME = tracking.model_name("tiny", "vbpr")


@pytest.fixture(scope="module", autouse=True)
def _services_start_early(request: pytest.FixtureRequest) -> None:
    """The sqlite migration and (when a selected test needs it) the server run in their own processes
    while the world is built."""
    request.getfixturevalue("mlflow_db_template_launch")
    if any("mlflow_server" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("mlflow_server_launch")


def _log(world: TinyWorld, which: str, cert: Path | None = None) -> str:
    extra = sorted(p for p in cert.iterdir() if p.is_file()) if cert else []
    kind = "train" if which == "original" else "unlearn"
    folder = getattr(world, which)
    return tracking.log_run(
        folder, kind=kind, params={"method": "tru"}, data_version=DATA_VERSION, artifacts=extra
    )


def _version(world: TinyWorld, which: str, name: str = NAME, cert: Path | None = None) -> str:
    return registry.register_version(name, _log(world, which, cert), getattr(world, which), tags={})


def _aliases(client: MlflowClient, name: str = NAME) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


def _promote_original(world: TinyWorld, name: str = NAME) -> str:
    v1 = _version(world, "original", name)
    out = registry.promote(
        name, v1, forgotten=(), new_requests=(), evidence="nothing new to forget", based_on=None
    )
    assert out["champion"] == v1
    return v1


def _promote_unlearned(world: TinyWorld, based_on: str | None, name: str = NAME) -> dict[str, Any]:
    v = _version(world, "unlearned", name, world.cert_pass)
    return registry.promote(
        name, v, forgotten=world.ids, new_requests=world.ids, evidence="retrain comparison", based_on=based_on
    )


def test_log_train_run(tiny_world: TinyWorld, mlflow_store) -> None:
    run_id = _log(tiny_world, "original")
    client = MlflowClient(tracking_uri=mlflow_store.uri)
    run = client.get_run(run_id)
    meta = json.loads((tiny_world.original / "run.json").read_text())
    assert run.info.status == "FINISHED"
    assert run.data.params["learning_rate"] == str(meta["config"]["learning_rate"])
    assert run.data.tags["kind"] == "train" and run.data.tags["code_version"] == meta["code_version"]
    assert run.data.tags["data_version.git_commit"] == DATA_VERSION["git_commit"]
    metrics = json.loads((tiny_world.original / "metrics.json").read_text())
    assert run.data.metrics["test_recall_at_20"] == pytest.approx(metrics["test"]["recall@20"])
    assert [m.step for m in client.get_metric_history(run_id, "epoch_loss")] == [0, 1, 2]
    files = {f.path for f in client.list_artifacts(run_id, "model")}
    assert {"model/model.pt", "model/run.json", "model/metrics.json"} <= files


def test_log_unlearn_run_with_certificate(tiny_world: TinyWorld, mlflow_store) -> None:
    run_id = _log(tiny_world, "unlearned", tiny_world.cert_pass)
    client = MlflowClient(tracking_uri=mlflow_store.uri)
    run = client.get_run(run_id)
    unl = json.loads((tiny_world.unlearned / "unlearn.json").read_text())
    assert run.data.tags["kind"] == "unlearn" and run.data.tags["certificate.passed"] == "true"
    assert run.data.metrics["cert_passed"] == 1.0 and "cert_unlearned_forget_hr_at_20" in run.data.metrics
    assert run.data.params["unlearn.max_steps"] == "20"
    steps = [m.step for m in client.get_metric_history(run_id, "unlearn_loss_f")]
    assert steps == [row["step"] for row in unl["history"] if "loss_f" in row]
    assert {"model", "certificate.json", "report.html"} <= {f.path for f in client.list_artifacts(run_id)}
    # deleted data never reaches the run's records: no param, tag or metric names a deleted user
    users = {str(r.user_id) for r in tiny_world.requests}
    records = json.dumps([run.data.params, run.data.tags, sorted(run.data.metrics)])
    assert not any(f'"user_id": {u}' in records or f"({u}," in records for u in users)


def test_promotion_rejection_champion_and_purge(tiny_world: TinyWorld, mlflow_store) -> None:
    client = MlflowClient(tracking_uri=mlflow_store.uri, registry_uri=mlflow_store.uri)
    assert registry.champion(NAME) is None and registry.forgotten_requests(NAME) == set()
    v1 = _promote_original(tiny_world)
    # a rejected version: the champion stays, the version gets the candidate alias and the reasons
    v2 = _version(tiny_world, "unlearned", cert=tiny_world.cert_fail)
    out = registry.reject(NAME, v2, ["retain Recall@20 failed"], tiny_world.ids)
    assert out == {"promoted": False, "version": v2, "champion": v1}
    t2 = client.get_model_version(NAME, v2).tags
    assert t2["verdict"] == "rejected" and t2["reasons"] == "retain Recall@20 failed"
    assert _aliases(client) == {"champion": v1, "candidate": v2}
    # a certified version made from the champion: promoted; older versions hold the deleted requests
    out = _promote_unlearned(tiny_world, based_on=v1)
    v3 = out["version"]
    assert out["promoted"] and out["champion"] == v3 and out["previous"] == v1
    assert registry.forgotten_requests(NAME) == set(tiny_world.ids)
    t1, t2, t3 = (client.get_model_version(NAME, v).tags for v in (v1, v2, v3))
    assert t3["verdict"] == "certified" and t3["forgotten_requests_all"] == ",".join(sorted(tiny_world.ids))
    assert t3["based_on"] == v1 and t3["model_forgotten_commitment"].startswith("hmac-sha256:")
    assert t1["superseded_by"] == v3 and t1["contains_deleted_data"] == "true" == t2["contains_deleted_data"]
    assert "contains_deleted_data" not in t3
    # champion() round trip: the folder loads with the manifest (the dataset still holds the rows)
    version, folder = registry.champion(NAME)
    assert (
        version == v3
        and (folder / "model.pt").read_bytes() == (tiny_world.unlearned / "model.pt").read_bytes()
    )
    assert load_run(folder, tiny_world.dataset, requests=tiny_world.requests).forgotten.ids == set(
        tiny_world.ids
    )
    # purge: v1 and v2 lose their model artifacts, the champion keeps its own
    art = Path(client.get_run(client.get_model_version(NAME, v1).run_id).info.artifact_uri[7:]) / "model"
    assert [r["version"] for r in registry.purge(NAME)] == [v1, v2] and (art / "model.pt").is_file()
    assert [r["version"] for r in registry.purge(NAME, dry_run=False)] == [v1, v2] and not art.exists()
    assert registry.champion(NAME)[0] == v3 and _aliases(client) == {"champion": v3}


def test_a_promotion_never_unforgets(tiny_world: TinyWorld, mlflow_store) -> None:
    v1 = _promote_original(tiny_world)
    v2 = _promote_unlearned(tiny_world, based_on=v1)["version"]
    v3 = _version(tiny_world, "original")  # forgot nothing: promoting it would bring the data back
    with pytest.raises(PromotionConflict, match=r"has not forgotten 3 request\(s\)"):
        registry.promote(NAME, v3, forgotten=(), new_requests=(), evidence="x", based_on=v2)
    assert registry.champion_version(NAME) == v2


def test_racing_promotions_exactly_one_wins(tiny_world: TinyWorld, mlflow_store) -> None:
    """Four versions made from the same champion promote at once, twice: exactly one wins each round, the
    others fail with PromotionConflict; the champion never carries contains_deleted_data."""
    client = MlflowClient(registry_uri=mlflow_store.uri)
    champion = _promote_original(tiny_world)
    for _round in range(2):
        versions = [_version(tiny_world, "unlearned", cert=tiny_world.cert_pass) for _ in range(4)]
        results: dict[str, Any] = {}
        barrier = threading.Barrier(len(versions))

        def go(v: str, base: str, barrier: threading.Barrier, results: dict[str, Any]) -> None:
            barrier.wait()
            try:
                results[v] = registry.promote(
                    NAME,
                    v,
                    forgotten=tiny_world.ids,
                    new_requests=tiny_world.ids,
                    evidence="e",
                    based_on=base,
                )
            except Exception as exc:  # anything else is recorded too, and fails the assertions below
                results[v] = exc

        threads = [threading.Thread(target=go, args=(v, champion, barrier, results)) for v in versions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [v for v, r in results.items() if isinstance(r, dict) and r["promoted"]]
        assert len(won) == 1, results
        assert all(isinstance(results[v], PromotionConflict) for v in versions if v not in won), results
        assert registry.champion_version(NAME) == won[0]
        assert client.get_model_version(NAME, won[0]).tags.get("contains_deleted_data") is None
        champion = won[0]
    assert registry.champion(NAME)[0] == champion  # served: it holds no deleted data
    assert NAME + registry.LOCK_SUFFIX not in {m.name for m in client.search_registered_models()}


def test_a_champion_holding_deleted_data_is_never_served(tiny_world: TinyWorld, mlflow_store) -> None:
    v1 = _promote_original(tiny_world)
    MlflowClient(registry_uri=mlflow_store.uri).set_model_version_tag(
        NAME, v1, "contains_deleted_data", "true"
    )
    with pytest.raises(TrackingError, match="refusing to serve it"):
        registry.champion(NAME)


def test_registry_lock_waits_and_breaks_a_stale_holder(tiny_world: TinyWorld, mlflow_store) -> None:
    client = MlflowClient(registry_uri=mlflow_store.uri)
    lock = NAME + registry.LOCK_SUFFIX
    client.create_registered_model(lock, tags={"holder": "dead", "acquired_at": f"{time.time():.3f}"})
    with (
        pytest.raises(registry.RegistryBusy, match="held by another promotion"),
        registry.registry_lock(NAME, timeout=0.5),
    ):
        pass
    client.set_registered_model_tag(
        lock, "acquired_at", f"{time.time() - 2 * registry.LOCK_STALE_SECONDS:.3f}"
    )
    with registry.registry_lock(NAME, timeout=5):  # the holder died long ago: its lock is broken
        assert client.get_registered_model(lock).tags["holder"] != "dead"
    assert lock not in {m.name for m in client.search_registered_models()}


def test_failure_midway_leaves_champion(tiny_world: TinyWorld, mlflow_store) -> None:
    """The database refuses the alias write (the last step): the promotion fails after its tags were
    written, the tags are restored, the champion stays."""
    v1 = _promote_original(tiny_world)
    v2 = _version(tiny_world, "unlearned", cert=tiny_world.cert_pass)
    with pytest.raises(TrackingError, match=r"version 99: not in the registry"):
        registry.promote(NAME, "99", forgotten=tiny_world.ids, new_requests=(), evidence="e", based_on=v1)
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
            registry.promote(NAME, v2, forgotten=tiny_world.ids, new_requests=(), evidence="e", based_on=v1)
    finally:
        db.executescript("DROP TRIGGER refuse_insert; DROP TRIGGER refuse_update;")
        db.close()
    assert _aliases(client) == {"champion": v1}
    assert {v: dict(client.get_model_version(NAME, v).tags) for v in (v1, v2)} == before


def test_s3_artifact_store(tiny_world: TinyWorld, mlflow_s3_store, moto_server: S3Server) -> None:
    bucket = mlflow_s3_store.artifacts.split("/")[2]
    v1 = _promote_original(tiny_world)
    run1 = MlflowClient(registry_uri=mlflow_s3_store.uri).get_model_version(NAME, v1).run_id
    assert any(k.endswith(f"{run1}/artifacts/model/model.pt") for k in moto_server.keys(bucket))
    v2 = _promote_unlearned(tiny_world, based_on=v1)["version"]
    assert registry.champion(NAME)[0] == v2
    assert [r["version"] for r in registry.purge(NAME, dry_run=False)] == [v1]
    assert not any(f"{run1}/artifacts/model/" in k for k in moto_server.keys(bucket))


def test_model_name_and_bad_input(mlflow_store, tmp_path: Path) -> None:
    assert tracking.model_name("LFM-2k", "MGCN") == "tru-lfm-2k-mgcn"
    with pytest.raises(ValueError, match="no letters"):
        tracking.model_name("--", "mgcn")
    with pytest.raises(ValueError, match="kind must be one of"):
        tracking.log_run(tmp_path, kind="deploy", params={}, data_version={})
    (tmp_path / "half").mkdir()
    with pytest.raises(TrackingError, match=r"half: a train run folder needs model.pt and run.json"):
        tracking.log_run(tmp_path / "half", kind="train", params={}, data_version={})


def test_registry_cli(tiny_world: TinyWorld, mlflow_store, capsys, tmp_path: Path) -> None:
    from tru.commands import registry as registry_cmd
    from tru.commands.common import CLIError

    parser = argparse.ArgumentParser(prog="tru")
    registry_cmd.register(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str) -> str:
        args = parser.parse_args(["registry", *argv])
        assert args.func(args) == 0
        return capsys.readouterr().out

    v1 = _promote_original(tiny_world)
    assert "champion" in run("list", "--name", NAME)
    got = json.loads(run("champion", "--name", NAME, "--download", str(tmp_path / "dl")))
    assert got["version"] == v1 and (Path(got["path"]) / "model.pt").is_file()
    assert "nothing to purge" in run("purge", "--name", NAME)
    with pytest.raises(CLIError, match="no registered model 'tru-none-vbpr'"):
        args = parser.parse_args(["registry", "list", "--name", "tru-none-vbpr"])
        args.func(args)


@pytest.mark.slow  # a real `mlflow server` (10-30 s start-up, overlapped with the set-up above)
def test_mlflow_server_with_s3_and_server_down(
    tiny_world: TinyWorld, mlflow_server, monkeypatch, moto_server
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)  # proxied artifacts: the client has no S3 keys
    monkeypatch.setenv("TMPDIR", str(tiny_world.root))
    monkeypatch.delenv("TRU_MLFLOW_ARTIFACTS", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    assert tracking.configure() == mlflow_server.url
    name = tracking.model_name("tiny-server", "vbpr")
    v1 = _promote_original(tiny_world, name)
    run1 = MlflowClient(registry_uri=mlflow_server.url).get_model_version(name, v1).run_id
    version, folder = registry.champion(name)
    assert version == v1 and (folder / "model.pt").is_file()
    keys = moto_server.keys(mlflow_server.bucket, mlflow_server.prefix)
    assert any(k.endswith(f"{run1}/artifacts/model/model.pt") for k in keys)
    # the server goes away: a clear error before anything is written, credentials never echoed
    dead = f"http://user:s3cret@127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    with pytest.raises(TrackingError, match=r"not reachable.*nothing was logged or changed") as info:
        tracking.log_run(tiny_world.unlearned, kind="unlearn", params={}, data_version=DATA_VERSION)
    assert "s3cret" not in str(info.value)
    with pytest.raises(TrackingError, match="not reachable"):
        registry.reject(name, v1, ["x"], ())
    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    assert _aliases(client, name) == {"champion": v1}
    assert client.get_model_version(name, v1).tags["verdict"] == "certified"
