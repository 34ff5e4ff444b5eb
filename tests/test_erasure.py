"""Erasure everywhere, with an audit (issue 8 §4), against real services: a git + DVC repository whose remote
is a *versioned* bucket on a moto S3 server, the real ``mlflow server`` (sqlite backend, artifacts proxied to
S3) and an MLflow sqlite store.

A champion that has forgotten three requests (a user, an item, a pair) and a fourth, pending request; a
superseded version, a rejected candidate and train runs on the old data; pipeline outputs (``.tru/kfp``,
``.tru/runs``, an S3 pipeline root). The audit sees the traces everywhere; ``tru erase`` removes them (the
dry run changes nothing, the second run nothing new, the pending request stays, ``dvc pull`` of the new
revision from an empty cache works); the audit ends clean. A failure mid-way (the remote refusing
deletes) leaves the data commit, and a re-run completes the rest."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from tru.data.dataset import DataError
from tru.forget.erased import ERASED_PATH, ErasedRequest, append_erased, read_erased, write_erased
from tru.forget.requests import DeletionRequest, read_requests
from tru.mlops import erasure as E
from tru.mlops import erasure_audit as A
from tru.mlops import versioning as V

from .conftest import dvc_test_env, make_tiny_frame

KEY = "5e" * 32
USER, ITEM, PENDING_USER = 3, 7, 10
IDS = ["r-user", "r-item", "r-pair"]


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRU_COMMITMENT_KEY", KEY)


@pytest.fixture(scope="module", autouse=True)
def _early_services(mlflow_server_launch: Any, mlflow_db_template_launch: Any) -> None:
    """Start the MLflow server and the sqlite template migration first: they boot while the unit tests run."""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _req(rid: str, kind: str, u: int | None, i: int | None) -> DeletionRequest:
    return DeletionRequest(rid, kind, u, i, "2026-01-31T12:00:00Z", "test")


# ------------------------------------------------------------------------------------------ the ledger
def test_erased_ledger_is_redacted_strict_and_atomic(tmp_path: Path) -> None:
    reqs = [_req("r-u", "user", 48213, None), _req("r-p", "interaction", 48213, 90517)]
    rows = [ErasedRequest.from_request(r, "2026-02-01T00:00:00Z") for r in reqs]
    path = write_erased(tmp_path / "erased.csv", rows)
    text = path.read_text()
    assert text.splitlines()[0] == "request_id,kind,requested_at,erased_at,commitment"
    assert "48213" not in text and "90517" not in text
    assert read_erased(path) == rows
    assert rows[1].matches(reqs[1]) and not rows[1].matches(_req("r-p", "interaction", 48213, 90518))
    assert rows[0].commitment != ErasedRequest.from_request(reqs[0], key=b"k" * 32).commitment
    added = append_erased(path, [rows[0], ErasedRequest.from_request(_req("r-i", "item", None, 5))])
    assert [r.request_id for r in added] == ["r-i"] and len(read_erased(path)) == 3

    bad = tmp_path / "bad.csv"
    bad.write_text(
        "request_id,kind,requested_at,erased_at,commitment\n"
        "a,user,2026-01-01,2026-01-02,hmac-sha256:" + "0" * 64 + "\n"
        "b,pair,2026-01-01,yesterday,sha256:abc\n"
        "a,user,2026-01-01,2026-01-02,hmac-sha256:" + "0" * 64 + "\n"
    )
    with pytest.raises(DataError) as err:
        read_erased(bad)
    msg = str(err.value)
    assert f"{bad}:3: field 'kind'" in msg and f"{bad}:3: field 'erased_at'" in msg
    assert f"{bad}:3: field 'commitment'" in msg and f"{bad}:4: field 'request_id'" in msg
    bad.write_text("request_id,kind,user_id,item_id,requested_at,reason\n")
    with pytest.raises(DataError, match="bad header"):
        read_erased(bad)
    before = path.read_bytes()
    with pytest.raises(DataError, match="refusing to write"):
        write_erased(path, [rows[0], rows[0]])
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


# ------------------------------------------------------------------------------ the audit's detectors
def _plain_repo(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from dvc.repo import Repo

    for k, v in {
        **dvc_test_env(root.parent / "dvc-site"),
        "GIT_CEILING_DIRECTORIES": str(root.parent),
    }.items():
        monkeypatch.setenv(k, v)
    root.mkdir(parents=True)
    _git(root, "init", "-q", "-b", "main")
    Repo.init(str(root)).close()
    return root


def _old_forget_hash(keys: list[int]) -> str:
    return hashlib.sha256(np.unique(np.array(keys, dtype=np.int64)).astype("<i8").tobytes()).hexdigest()


def test_audit_reports_each_planted_trace_and_a_clean_store_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One trace of each kind, each found with its kind and request id; the report never holds an id."""
    repo = _plain_repo(tmp_path / "repo", monkeypatch)
    u, i, pu, pi, n_items = 1001, 2002, 3003, 4004, 5000
    requests = tmp_path / "auditor.csv"
    requests.write_text(
        "request_id,kind,user_id,item_id,requested_at,reason\n"
        f"r-u,user,{u},,2026-01-01,x\nr-i,item,,{i},2026-01-01,x\nr-p,interaction,{pu},{pi},2026-01-01,x\n"
    )
    data = repo / "data" / "tiny"
    data.mkdir(parents=True)
    (data / "dataset.yaml").write_text(
        yaml.safe_dump({"name": "tiny", "interactions": "tiny.inter", "stats": {"n_items": n_items}})
    )
    (data / "tiny.inter").write_text("userID\titemID\trating\tx_label\n5\t6\t1\t0\n7\t8\t1\t1\n")
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "old.inter").write_text(f"userID\titemID\trating\tx_label\n5\t6\t1\t0\n{u}\t6\t1\t2\n")
    (planted / "manifest-copy.csv").write_text(f"request_id,kind,user_id,item_id\nq,item,,{i}\n")
    (planted / "noops.json").write_text(json.dumps({"noops": [f"request 'r-p': pair ({pu}, {pi}) covered"]}))
    (planted / "fields.jsonl").write_text(json.dumps({"user_id": str(u), "score": 1}) + "\n{}\n")
    (planted / "pairs.json").write_text(json.dumps({"forget_pairs": [[5, 6], [pu, pi]]}))
    torch.save({"forget_pairs": torch.tensor([[5, pu], [6, pi]])}, planted / "model.pt")
    (planted / "unlearn.json").write_text(
        json.dumps({"spec": {"forget_sha256": _old_forget_hash([pu * n_items + pi])}})
    )
    (planted / "other.json").write_text(json.dumps({"spec": {"forget_sha256": "ab" * 32}}))
    np.save(planted / "image_feat.npy", np.full((3, 2), float(u)))
    logs = repo / ".tru" / "logs"
    logs.mkdir(parents=True)
    (logs / "tru.log").write_text(f"12:00:01 I tru: user_id={u} item_id=6 dropped\n")
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "ok.inter").write_text("userID\titemID\trating\tx_label\n5\t6\t1\t0\n")
    (clean / "ok.json").write_text(json.dumps({"user_id": 5, "item_id": 6, "pair": [pu, 6], "v": "(3, 11)"}))
    (clean / "ok.log").write_text(f"trained {u} steps; sha {'cd' * 32}\n")
    torch.save(
        {"forget_pairs": torch.zeros((2, 0), dtype=torch.int64), "w": torch.ones(2, 2)}, clean / "ok.pt"
    )

    report = A.audit(repo, requests, scan=[str(planted)], mlflow=False)
    found = {(Path(f.location).name, f.kind): f for f in report.findings}
    expect = {
        ("old.inter", "row"): ("r-u",),
        ("manifest-copy.csv", "row"): ("r-i",),
        ("noops.json", "pair"): ("r-p",),
        ("fields.jsonl", "id-field"): ("r-u",),
        ("pairs.json", "pair"): ("r-p",),
        ("model.pt", "checkpoint-pairs"): ("r-p",),
        ("unlearn.json", "hash"): ("r-p",),
        ("other.json", "hash-field"): (),
        ("tru.log", "id-field"): ("r-u",),
    }
    for key, ids in expect.items():
        assert key in found, f"{key} not reported; findings: {sorted(found)}"
        assert found[key].request_ids == ids, (key, found[key])
    assert len(report.findings) == len(expect), sorted(found)
    assert found[("tru.log", "id-field")].store == "tru" and found[("old.inter", "row")].store == "extra"
    assert report.skipped.get("extra") == 1  # the .npy feature matrix
    text = json.dumps(report.to_dict()) + report.render()
    assert not any(str(x) in text for x in (u, i, pu, pi))
    assert report.requests[0].status == "unknown" and not report.clean

    (logs / "tru.log").unlink()
    again = A.audit(repo, requests, scan=[str(clean)], mlflow=False)
    assert again.clean and again.findings == [] and again.scanned["extra"] == 4, again.render()


# ------------------------------------------------------------------------------------ the whole world
def _versioned_bucket(s3: Any, stem: str) -> str:
    bucket = s3.make_bucket(f"{stem}-{uuid.uuid4().hex[:8]}")
    s3.client().put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def _md5_key(prefix: str, payload: bytes) -> str:
    h = hashlib.md5(payload).hexdigest()
    return f"{prefix}/files/md5/{h[:2]}/{h[2:]}"


def _build_repo(tmp_path: Path, s3: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """c0: remote config; c1: the tiny dataset (dvc add + push); c2: four requests (each `tru requests add`:
    dvc add + push, so the intermediate manifests are orphans in the cache and the remote)."""
    from tru.data.dataset import load_dataset, write_dataset

    root = _plain_repo(tmp_path / "repo", monkeypatch)
    bucket = _versioned_bucket(s3, "tru-erase")
    V.configure_remote(
        root, f"s3://{bucket}/dvc", endpoint_url=s3.endpoint_url, region="us-east-1",
        access_key_id="testing", secret_access_key="testing",
    )  # fmt: skip
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "dvc remote")
    df, feats = make_tiny_frame(n_users=30, n_items=24, per_user=6)
    write_dataset(root / "data" / "tiny", "tiny", df, feats, source={"kind": "test"})
    manifest = yaml.safe_load((root / "data" / "tiny" / "dataset.yaml").read_text())
    manifest["id_space"] = {"n_users": 30, "n_items": 24}  # another engineer's field: must survive erasure
    (root / "data" / "tiny" / "dataset.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    with V._dvc(root) as r:
        r.add(str(root / "data"))
        r.push()
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "dataset")
    c1 = _git(root, "rev-parse", "HEAD").strip()
    ds = load_dataset(root / "data" / "tiny", validate=False)
    tr = ds.train
    ok = (tr.users != USER) & (tr.items != ITEM) & (tr.users != PENDING_USER)
    counts = np.bincount(tr.users, minlength=ds.n_users)
    j = int(np.flatnonzero(ok & (counts[tr.users] >= 3))[0])
    pair = (int(tr.users[j]), int(tr.items[j]))
    V.requests_add(root, user=USER, reason="GDPR art. 17", request_id="r-user")
    first_manifest = (root / V.REQUESTS_PATH).read_bytes()
    V.requests_add(root, item=ITEM, reason="licence withdrawn", request_id="r-item")
    V.requests_add(root, pair=pair, reason="mistaken play", request_id="r-pair")
    V.requests_add(root, user=PENDING_USER, reason="not yet forgotten", request_id="r-pending")
    _git(root, "commit", "-q", "-am", "deletion requests")
    c2 = _git(root, "rev-parse", "HEAD").strip()
    # someone once deleted an orphan manifest with a plain S3 delete: a delete marker hides the old version
    s3.client().delete_object(Bucket=bucket, Key=_md5_key("dvc", first_manifest))
    auditor = tmp_path / "auditor-requests.csv"
    shutil.copyfile(root / V.REQUESTS_PATH, auditor)
    return {"root": root, "bucket": bucket, "c1": c1, "c2": c2, "pair": pair, "auditor": auditor, "ds": ds}


def _log_run(client: Any, exp: str, kind: str, files: dict[str, Any], tags: dict[str, str], tmp: Path) -> str:
    run = client.create_run(exp, tags={"kind": kind, **tags})
    folder = tmp / run.info.run_id
    folder.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, dict) and any(isinstance(v, torch.Tensor) for v in content.values()):
            torch.save(content, folder / name)
        else:
            (folder / name).write_text(json.dumps(content))
    client.log_artifacts(run.info.run_id, str(folder), "model")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _mlflow_world(uri: str, world: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """v1: the original model (train run on c1), superseded; v2: a rejected candidate whose checkpoint
    and report hold the forget set; v3: the champion that forgot r-user, r-item, r-pair. Plus an
    unregistered train run on c1 and a train run of another dataset."""
    from mlflow import MlflowClient

    from tru.forget.requests import resolve_requests

    client = MlflowClient(uri, uri)
    tag = uuid.uuid4().hex[:8]
    exp_name, name = f"erase-{tag}", f"tru-erase{tag}-vbpr"
    exp = client.create_experiment(exp_name)
    root, (pu, pi), ds = world["root"], world["pair"], world["ds"]
    dv1 = V.data_version(root, world["c1"])
    dv2 = V.data_version(root, world["c2"])
    reqs = [r for r in read_requests(world["auditor"]) if r.request_id in IDS]
    spec = resolve_requests(ds, reqs)
    weights = {"w": torch.ones(3, 2), "forget_pairs": torch.zeros((2, 0), dtype=torch.int64)}
    leaky = {
        "w": torch.ones(3, 2),
        "forget_pairs": torch.from_numpy(np.stack([spec.forget.users, spec.forget.items])),
    }

    # what unlearn.json held before keyed commitments: the unsalted hash of D_f (reversible)
    legacy_report = {"spec": {"n_forget_pairs": len(spec.forget), "forget_sha256": _old_forget_hash(
        [int(k) for k in spec.forget.keys(ds.n_items)])}}  # fmt: skip

    def dv(v: dict[str, Any]) -> dict[str, str]:
        return {f"data_version.{k}": str(x) for k, x in v.items()} | {"dataset": "tiny"}

    r1 = _log_run(
        client, exp, "train", {"model.pt": weights, "run.json": {"n_forget_pairs": 0}}, dv(dv1), tmp
    )
    r2 = _log_run(
        client, exp, "unlearn",
        {"model.pt": leaky, "unlearn.json": legacy_report},
        dv(dv2) | {"tru.error": f"step failed: request 'r-pair': pair ({pu}, {pi}) is covered"}, tmp,
    )  # fmt: skip
    r3 = _log_run(
        client, exp, "unlearn", {"model.pt": weights, "run.json": {"n_forget_pairs": 0}}, dv(dv2), tmp
    )
    r4 = _log_run(client, exp, "train", {"model.pt": weights}, dv(dv1), tmp)
    r5 = _log_run(
        client, exp, "train", {"model.pt": weights}, {"dataset": "other", "data_version.dvc_md5": "x"}, tmp
    )
    client.create_registered_model(name)
    for rid in (r1, r2, r3):
        client.create_model_version(name, f"runs:/{rid}/model", run_id=rid, await_creation_for=0)
    for k, v in {"verdict": "certified", "contains_deleted_data": "true", "superseded_by": "3"}.items():
        client.set_model_version_tag(name, "1", k, v)
    for k, v in {
        "verdict": "rejected",
        "contains_deleted_data": "true",
        "deleted_requests": "r-pair",
    }.items():
        client.set_model_version_tag(name, "2", k, v)
    for k, v in {"verdict": "certified", "forgotten_requests_all": ",".join(sorted(IDS))}.items():
        client.set_model_version_tag(name, "3", k, v)
    client.set_registered_model_alias(name, "champion", "3")
    client.set_registered_model_alias(name, "candidate", "2")
    return {"client": client, "exp": exp, "exp_name": exp_name, "name": name, "runs": [r1, r2, r3, r4, r5]}


def _pipeline_outputs(root: Path, s3: Any) -> str:
    """What kfp.local and the steps runner leave: dataset copies in run folders, and an S3 pipeline root."""
    inter = root / "data" / "tiny" / "tiny.inter"
    ingest = root / ".tru" / "kfp" / "outputs" / "tru-unlearning-20260201" / "ingest" / "data"
    ingest.mkdir(parents=True)
    shutil.copyfile(inter, ingest / "tiny.inter")
    (root / ".tru" / "kfp" / "tmp").mkdir()
    run = root / ".tru" / "runs" / "c2-20260201T000000" / "data"
    run.mkdir(parents=True)
    shutil.copyfile(inter, run / "tiny.inter")
    shutil.copyfile(root / V.REQUESTS_PATH, run.parent / "requests.csv")
    (root / ".tru" / "processed.json").write_text(json.dumps({"revisions": {"c2": {"requests": IDS}}}))
    bucket = _versioned_bucket(s3, "tru-kfp")
    for _ in range(2):  # two versions of the same key
        s3.client().put_object(Bucket=bucket, Key="root/run-1/ingest/tiny.inter", Body=inter.read_bytes())
    return f"s3://{bucket}/root"


def _snapshot(root: Path, s3: Any, buckets: list[str]) -> dict[str, Any]:
    files = {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and ".git/" not in str(p)
        and "/tmp/" not in str(p.relative_to(root))
        and p.name != "lock"
    }
    versions = {
        b: sorted((v.key, v.version_id) for v in A.list_versions(s3.client(), b, "")) for b in buckets
    }
    return {"head": _git(root, "rev-parse", "HEAD"), "files": files, "versions": versions}


def test_a_failure_mid_way_keeps_the_data_commit_and_a_rerun_completes(
    tmp_path: Path, moto_server: Any, mlflow_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in moto_server.env().items():
        monkeypatch.setenv(k, v)
    world = _build_repo(tmp_path, moto_server, monkeypatch)
    root = world["root"]
    ml = _mlflow_world(mlflow_store.uri, world, tmp_path / "artifacts")

    calls = {"n": 0}
    real = A.delete_versions

    def unreachable(*args: Any, **kwargs: Any) -> int:
        calls["n"] += 1
        raise ConnectionError("Could not connect to the endpoint URL (remote unreachable)")

    monkeypatch.setattr(A, "delete_versions", unreachable)
    first = E.erase(root, ml["name"], tracking_uri=mlflow_store.uri)
    steps = {s.step: s.status for s in first.steps}
    assert not first.ok and steps["data"] == "done" and steps["dvc-gc"] == "failed", first.to_dict()
    assert calls["n"] == 1 and first.data_commit == _git(root, "rev-parse", "HEAD").strip()
    assert [r.request_id for r in read_requests(root / V.REQUESTS_PATH)] == ["r-pending"]
    assert A.audit(root, world["auditor"], erased_only=True, tracking_uri=mlflow_store.uri).findings

    monkeypatch.setattr(A, "delete_versions", real)
    second = E.erase(root, ml["name"], tracking_uri=mlflow_store.uri)
    steps = {s.step: s.status for s in second.steps}
    assert second.ok and steps["data"] == "nothing-to-do" and steps["dvc-gc"] == "done", second.to_dict()
    assert _git(root, "rev-parse", "HEAD").strip() == first.data_commit
    final = A.audit(root, world["auditor"], erased_only=True, tracking_uri=mlflow_store.uri)
    assert final.clean, final.render()


def test_requests_not_forgotten_by_the_champion_are_not_erased(
    tmp_path: Path, moto_server: Any, mlflow_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No champion, or one that forgot nothing of the manifest: nothing is erased, nothing changes."""
    for k, v in moto_server.env().items():
        monkeypatch.setenv(k, v)
    root = _plain_repo(tmp_path / "repo", monkeypatch)
    from tru.data.dataset import write_dataset

    df, feats = make_tiny_frame(n_users=12, n_items=10, per_user=4)
    write_dataset(root / "data" / "tiny", "tiny", df, feats)
    V.requests_add(root, user=1, reason="x", request_id="r-1", push=False, commit=False)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "data + request")
    report = E.erase(root, "tru-tiny-vbpr", tracking_uri=mlflow_store.uri)
    assert report.ok and not report.changed and report.erased == [] and report.pending == ["r-1"]
    assert report.champion is None
    assert [r.request_id for r in read_requests(root / V.REQUESTS_PATH)] == ["r-1"]
    assert not (root / ERASED_PATH).exists() and _git(root, "status", "--porcelain") == ""


def test_no_commit_leaves_the_commit_to_the_caller_and_collection_waits_for_it(
    tmp_path: Path, mlflow_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--no-commit: the new data version is written and `dvc add`ed, nothing is collected; after the
    caller's commit, a re-run finds the erased requests' raw rows (verified by their commitments) in the
    cache and collects them. No remote: the push step is skipped."""
    from mlflow import MlflowClient

    from tru.data.dataset import write_dataset

    root = _plain_repo(tmp_path / "repo", monkeypatch)
    df, feats = make_tiny_frame(n_users=12, n_items=10, per_user=4)
    write_dataset(root / "data" / "tiny", "tiny", df, feats)
    V.requests_add(root, user=1, reason="x", request_id="r-1", push=False)
    V.requests_add(root, item=2, reason="x", request_id="r-2", push=False)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "data + requests")
    client = MlflowClient(mlflow_store.uri, mlflow_store.uri)
    run = client.create_run(client.create_experiment("e"), tags={"kind": "unlearn"}).info.run_id
    client.create_registered_model("tru-tiny-vbpr")
    client.create_model_version("tru-tiny-vbpr", f"runs:/{run}/model", run_id=run)
    client.set_model_version_tag("tru-tiny-vbpr", "1", "forgotten_requests_all", "r-1")
    client.set_registered_model_alias("tru-tiny-vbpr", "champion", "1")

    first = E.erase(root, "tru-tiny-vbpr", tracking_uri=mlflow_store.uri, commit=False)
    steps = {s.step: s.status for s in first.steps}
    assert first.ok and first.erased == ["r-1"] and first.pending == ["r-2"], first.to_dict()
    assert steps == {
        "data": "done", "push": "skipped", "dvc-gc": "skipped", "pipeline-outputs": "nothing-to-do",
        "mlflow": "skipped",
    }  # fmt: skip
    assert first.data_commit is None and _git(root, "status", "--porcelain").strip() == "M data.dvc"
    _git(root, "commit", "-q", "-am", "erase r-1")
    second = E.erase(root, "tru-tiny-vbpr", tracking_uri=mlflow_store.uri)
    steps = {s.step: s for s in second.steps}
    assert second.ok and second.erased == [] and steps["dvc-gc"].status == "done", second.to_dict()
    assert steps["dvc-gc"].counts["cache_objects"] >= 3  # the old .inter, the old manifest(s), listings
    auditor = tmp_path / "auditor.csv"
    auditor.write_text("request_id,kind,user_id,item_id,requested_at,reason\nr-1,user,1,,2026-01-01,x\n")
    assert A.audit(root, auditor, mlflow=False).clean


@pytest.mark.slow
def test_erase_everywhere_then_the_audit_is_clean(
    tmp_path: Path, moto_server: Any, mlflow_server: Any, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from mlflow.exceptions import MlflowException

    from tru import cli

    for k, v in moto_server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    t0 = time.perf_counter()
    world = _build_repo(tmp_path, moto_server, monkeypatch)
    root, (pu, pi) = world["root"], world["pair"]
    ml = _mlflow_world(mlflow_server.url, world, tmp_path / "artifacts")
    s3_root = _pipeline_outputs(root, moto_server)
    proxied = f"s3://{mlflow_server.bucket}/{mlflow_server.prefix}"
    common = {"tracking_uri": mlflow_server.url, "pipeline_roots": [s3_root]}
    erase_args = {**common, "backend_store_uri": f"sqlite:///{mlflow_server.db}"}
    erase_args["mlflow_artifacts_destination"] = proxied
    audit_args = {**common, "scan": [f"{proxied}/{ml['exp']}"], "experiments": [ml["exp_name"]]}
    audit_args["model_names"] = [ml["name"]]
    print(f"world built in {time.perf_counter() - t0:.1f} s")

    # before: traces in every store
    before = A.audit(root, world["auditor"], **audit_args)
    stores = {f.store for f in before.findings}
    assert {
        "dataset",
        "dvc-cache",
        "dvc-remote",
        "pipeline",
        "mlflow-artifact",
        "mlflow-run",
        "extra",
    } <= stores
    assert any("non-current" in f.detail for f in before.findings if f.store == "dvc-remote")
    assert any(f.location.startswith(s3_root) for f in before.findings)
    r2 = ml["runs"][1]
    assert {f.kind for f in before.findings if r2 in f.location} >= {"checkpoint-pairs", "hash", "pair"}
    assert {s.status for s in before.requests} == {"pending"}

    # the dry run (through the CLI) changes nothing
    buckets = [world["bucket"], s3_root[5:].split("/")[0], mlflow_server.bucket]
    snap = _snapshot(root, moto_server, buckets)
    capsys.readouterr()
    argv = ["erase", "--repo", str(root), "--name", ml["name"], "--tracking-uri", mlflow_server.url,
            "--pipeline-root", s3_root, "--dry-run"]  # fmt: skip
    assert cli.main(argv) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] and dry["erased"] == IDS and dry["pending"] == ["r-pending"]
    assert {s["step"]: s["status"] for s in dry["steps"]} == {
        "data": "would-do", "push": "would-do", "dvc-gc": "would-do", "pipeline-outputs": "would-do",
        "mlflow": "would-do",
    }  # fmt: skip
    assert _snapshot(root, moto_server, buckets) == snap
    assert len(ml["client"].search_runs([ml["exp"]])) == 5

    # the erasure
    report = E.erase(root, ml["name"], **erase_args)
    out = json.dumps(report.to_dict())
    assert report.ok and report.changed, out
    assert report.erased == IDS and report.pending == ["r-pending"]
    assert f"({pu}, {pi})" not in out and "user_id" not in out
    steps = {s.step: s for s in report.steps}
    assert all(s.status == "done" for s in steps.values()), out
    assert steps["dvc-gc"].counts["remote_versions"] > steps["dvc-gc"].counts["remote_objects"]  # + marker
    assert report.data_commit == _git(root, "rev-parse", "HEAD").strip()
    assert world["c1"] in report.history_commits and world["c2"] in report.history_commits
    head_msg = _git(root, "log", "-1", "--format=%B")
    assert "r-user" in head_msg and f"{pu}" not in head_msg.split("rows removed")[0].replace("3 deletion", "")

    # the new data version: rows gone, pending request kept, redacted ledger, id space kept
    assert [r.request_id for r in read_requests(root / V.REQUESTS_PATH)] == ["r-pending"]
    ledger = read_erased(root / ERASED_PATH)
    assert [r.request_id for r in ledger] == IDS
    raw = {r.request_id: r for r in read_requests(world["auditor"])}
    assert all(row.matches(raw[row.request_id]) for row in ledger)
    inter = (root / "data" / "tiny" / "tiny.inter").read_text()
    rows = [line.split("\t") for line in inter.splitlines()[1:]]
    assert not any(int(r[0]) == USER or int(r[1]) == ITEM or (int(r[0]), int(r[1])) == (pu, pi) for r in rows)
    assert any(int(r[0]) == PENDING_USER for r in rows)
    new_yaml = yaml.safe_load((root / "data" / "tiny" / "dataset.yaml").read_text())
    assert new_yaml["id_space"] == {"n_users": 30, "n_items": 24}
    assert new_yaml["stats"]["n_interactions"] == len(rows) and new_yaml["stats"]["n_items"] == 24
    assert sum(report.rows_removed.values()) == 30 * 6 - len(rows)
    assert _git(root, "status", "--porcelain") == ""

    # MLflow: superseded / rejected / old train runs gone with their artifacts; champion and others kept
    client = ml["client"]
    r1, r2, r3, r4, r5 = ml["runs"]
    for rid in (r1, r2, r4):
        with pytest.raises(MlflowException):
            client.get_run(rid)
        assert not moto_server.keys(mlflow_server.bucket, f"{mlflow_server.prefix}/{ml['exp']}/{rid}/")
    assert client.get_run(r3).info.lifecycle_stage == "active" and client.get_run(r5)
    assert moto_server.keys(mlflow_server.bucket, f"{mlflow_server.prefix}/{ml['exp']}/{r3}/")
    for v in ("1", "2"):
        assert client.get_model_version(ml["name"], v).tags["purged"] == "true"
    model = client.get_registered_model(ml["name"])
    assert str(model.aliases["champion"]) == "3" and "candidate" not in model.aliases

    # the audit: clean for the erased requests (through the CLI: exit 0), only the pending one otherwise
    after = A.audit(root, world["auditor"], erased_only=True, **audit_args)
    assert after.clean, after.render()
    assert {s.request_id: s.status for s in after.requests} == {
        **dict.fromkeys(IDS, "erased"),
        "r-pending": "pending",
    }
    everything = A.audit(root, world["auditor"], **audit_args)
    assert everything.findings and {i for f in everything.findings for i in f.request_ids} == {"r-pending"}
    argv = ["erasure", "audit", "--repo", str(root), "--requests", str(world["auditor"]), "--erased-only",
            "--tracking-uri", mlflow_server.url, "--pipeline-root", s3_root, "--experiment", ml["exp_name"],
            "--model", ml["name"], "--json"]  # fmt: skip
    assert cli.main(argv) == 0, capsys.readouterr()
    assert cli.main([a for a in argv if a != "--erased-only"]) == 1
    capsys.readouterr()

    # retention: `dvc pull` of the new revision from an empty cache (a fresh clone) still works
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(root), str(clone))
    shutil.copyfile(root / ".dvc" / "config.local", clone / ".dvc" / "config.local")
    with V._dvc(clone) as r:
        r.pull()
    for rel in (
        "data/tiny/tiny.inter",
        "data/tiny/dataset.yaml",
        "data/tiny/image_feat.npy",
        V.REQUESTS_PATH,
    ):
        assert (clone / rel).read_bytes() == (root / rel).read_bytes(), rel

    # a second run changes nothing; a run output written after the erasure (clean) is kept
    later = root / ".tru" / "runs" / "after-erasure"
    later.mkdir(parents=True)
    (later / "metrics.json").write_text('{"recall@20": 0.1}')
    future = time.time() + 120
    os.utime(later / "metrics.json", (future, future))
    head = _git(root, "rev-parse", "HEAD")
    again = E.erase(root, ml["name"], **erase_args)
    assert again.ok and not again.changed and again.erased == [], json.dumps(again.to_dict())
    assert _git(root, "rev-parse", "HEAD") == head and later.is_dir()
    print(f"whole test {time.perf_counter() - t0:.1f} s")
