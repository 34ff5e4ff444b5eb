"""The six steps chained in process (``tru.steps.chain``, what ``tru trigger --runner steps`` runs) on
tiny data with a real MLflow sqlite registry: each rule of the lifecycle, as a data team would hit it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient

from tru.checkpoint import load_run
from tru.data.dataset import DataError
from tru.eval.evaluator import per_pair_hit_rate
from tru.forget.requests import DeletionRequest, resolve_requests, write_requests
from tru.mlops import registry, tracking
from tru.steps.chain import run_chain
from tru.steps.params import PipelineParams

from .conftest import IMPOSSIBLE_POLICY, LENIENT_POLICY, TinyWorld, recent

NAME = tracking.model_name("tiny", "vbpr")


@pytest.fixture
def repo(tiny_world: TinyWorld, tmp_path: Path, mlflow_store: Any) -> Path:
    """A plain folder with data/tiny and an empty manifest, and a registry whose champion is an original."""
    root = tmp_path / "repo"
    shutil.copytree(tiny_world.data, root / "data" / "tiny")
    (root / "data" / "deletions").mkdir(parents=True)
    write_requests(root / "data" / "deletions" / "requests.csv", [])
    first = chain(root, "w0")
    assert first["promoted"] and first["version"] == "1" and first["evidence"].startswith("nothing new")
    return root


def chain(root: Path, work: str, policy: str = LENIENT_POLICY, **kw: Any) -> dict[str, Any]:
    opts = dict(dataset="tiny", backbone="vbpr", epochs=3, max_steps=20, audit_seeds="0", policy=policy)
    return run_chain(PipelineParams(repo=str(root), data_rev="", **(opts | kw)), root.parent / work)


def add(root: Path, *reqs: DeletionRequest) -> None:
    path = root / "data" / "deletions" / "requests.csv"
    from tru.forget.requests import read_requests

    write_requests(path, [*read_requests(path), *reqs])


def user_req(rid: str, user: int, when: str | None = None) -> DeletionRequest:
    return DeletionRequest(rid, "user", user, None, when or recent(), "test")


def test_a_second_deletion_never_undoes_the_first(repo: Path, tiny_world: TinyWorld) -> None:
    ds = tiny_world.dataset
    a_user, b_user = (int(u) for u in np.unique(ds.train.users)[[5, 9]])
    add(repo, user_req("A", a_user))
    r1 = chain(repo, "w1")
    assert r1["promoted"] and r1["request_ids"] == ["A"] and r1["new_request_ids"] == ["A"]
    add(repo, user_req("B", b_user))
    r2 = chain(repo, "w2")
    assert r2["promoted"] and r2["request_ids"] == ["A", "B"] and r2["new_request_ids"] == ["B"]
    assert registry.forgotten_requests(NAME) == {"A", "B"}
    manifest = [user_req("A", a_user), user_req("B", b_user)]
    a_pairs = resolve_requests(ds, manifest[:1]).forget
    scores = {}
    for version, work in (("2", "w1"), ("3", "w2")):
        run = load_run(repo.parent / work / "unlearn", ds, requests=manifest[: int(version) - 1])
        assert not np.isin(run.train.users, [a_user]).any()  # A's rows are out of the graph for good
        scores[version] = per_pair_hit_rate(run.model, ds.n_users, ds.n_items, a_pairs, run.train, 20)[0]
    assert scores["3"] <= scores["2"] + 1e-9  # A's forget HR@20 unchanged or better after B


def test_a_failed_certificate_falls_back_to_the_retrain(
    repo: Path, tiny_world: TinyWorld, mlflow_store
) -> None:
    add(repo, user_req("C", int(np.unique(tiny_world.dataset.train.users)[2])))
    res = chain(repo, "w1", policy=IMPOSSIBLE_POLICY)
    assert res["fallback"] and res["promoted"] and res["role"] == "fallback-retrain"
    assert res["evidence"].startswith("retrain (compliance fallback")
    client = MlflowClient(registry_uri=mlflow_store.uri)
    rejected = client.get_model_version(NAME, "2").tags
    assert (
        rejected["verdict"] == "rejected"
        and "Recall@20" in rejected["reasons"]
        and rejected["role"] == "unlearned"
    )
    champion = client.get_model_version(NAME, "3").tags
    assert champion["verdict"] == "certified" and champion["role"] == "fallback-retrain"
    assert champion["lineage"] == "retrain" and champion["confirmed"] == "true"
    assert registry.forgotten_requests(NAME) == {"C"}


def test_nothing_pending_registers_nothing(repo: Path) -> None:
    res = chain(repo, "w1")
    assert res["unchanged"] and not res["promoted"] and res["champion"] == "1"


def test_an_overdue_request_forces_a_full_retrain(repo: Path, tiny_world: TinyWorld) -> None:
    add(repo, user_req("old", int(np.unique(tiny_world.dataset.train.users)[4]), "2026-01-01T00:00:00Z"))
    res = chain(repo, "w1", deadline_days=30)
    assert res["promoted"] and res["evidence"].startswith("retrain (a model retrained on D_r from scratch")
    old = [user_req("old", int(np.unique(tiny_world.dataset.train.users)[4]), "2026-01-01T00:00:00Z")]
    run = load_run(repo.parent / "w1" / "unlearn", tiny_world.dataset, requests=old)
    assert run.lineage.kind == "retrain"
    unl = (repo.parent / "w1" / "unlearn" / "unlearn.json").read_text()
    assert '"method": "retrain"' in unl


def test_a_confirmation_run_confirms_or_replaces_the_champion(
    repo: Path, tiny_world: TinyWorld, mlflow_store
) -> None:
    add(repo, user_req("D", int(np.unique(tiny_world.dataset.train.users)[6])))
    fast = chain(repo, "w1", retrain=False, policy=LENIENT_POLICY + "min_retrain_free_agreement: 0\n")
    assert fast["promoted"] and fast["evidence"].startswith("retrain-free")  # the fast path
    client = MlflowClient(registry_uri=mlflow_store.uri)
    assert client.get_model_version(NAME, fast["version"]).tags["confirmed"] == "false"
    slow = chain(repo, "w2", confirm=True)  # the slow path: one retrain, the champion compared with it
    assert slow.get("confirmed") and slow["champion"] == fast["version"]
    assert client.get_model_version(NAME, fast["version"]).tags["confirmed"] == "true"
    replaced = chain(repo, "w3", confirm=True, policy=IMPOSSIBLE_POLICY)  # the comparison fails: replaced
    assert replaced["promoted"] and replaced["fallback"] and replaced["champion"] != fast["version"]


def test_a_missing_manifest_is_an_error_unless_generating(
    tiny_world: TinyWorld, tmp_path: Path, mlflow_store
) -> None:
    root = tmp_path / "bare"
    shutil.copytree(tiny_world.data, root / "data" / "tiny")
    with pytest.raises(DataError, match=r"no deletion-request manifest.*--generate-requests"):
        chain(root, "w0")
    assert MlflowClient(registry_uri=mlflow_store.uri).search_registered_models() == []
    res = chain(root, "w1", generate_requests=True, regime="user", ratio=0.05)
    assert res["promoted"] and len(res["request_ids"]) == 6
