"""The whole loop against real services, as a data team drives it: a git + DVC repository whose remote is a
moto S3 server on 127.0.0.1, an MLflow sqlite registry. The dataset is committed with DVC; the pipeline
trains the champion at that commit; deletion requests arrive as a new DVC commit; ``tru trigger`` runs the
Kubeflow pipeline (``kfp.local``) for them and the registry shows a new certified champion whose tags name
the requests; a second deletion commit certified against an impossible policy leaves the champion as it
was and its version tagged ``rejected`` with the reasons."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kfp")

from tru import cli
from tru.mlops import versioning as V

from .conftest import dvc_test_env

BUCKET_PREFIX = "tru-e2e"
LENIENT = (
    "mia_auc_tolerance: 1\nuser_mia_auc_tolerance: null\nretain_recall_min_ratio: 0\n"
    "forget_hr_max_excess: 1\nforget_hr_max_deficit: 1\n"
)
IMPOSSIBLE = "retain_recall_min_ratio: 1000\n"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def dvc_repo(tmp_path: Path, moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """c1: a tiny synthetic dataset under data/, tracked by data.dvc and pushed to S3."""
    from dvc.repo import Repo

    from tru.data.prepare import prepare_dataset

    for k, v in {**dvc_test_env(tmp_path / "dvc-site"), "GIT_CEILING_DIRECTORIES": str(tmp_path)}.items():
        monkeypatch.setenv(k, v)
    bucket = moto_server.make_bucket(f"{BUCKET_PREFIX}-{tmp_path.name[-8:].lower().replace('_', '-')}")
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    Repo.init(str(root)).close()
    V.configure_remote(
        root,
        f"s3://{bucket}/dvc",
        endpoint_url=moto_server.endpoint_url,
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
    )
    prepare_dataset("synthetic", root / "data" / "synthetic", preset="tiny")
    with V._dvc(root) as r:
        r.add(str(root / "data"))
        r.push()
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "dataset")
    return {"root": root, "c1": _git(root, "rev-parse", "HEAD").strip()}


def _tru(*argv: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """``tru <argv>`` in process; the first JSON object its output prints at the start of a line (task logs
    of a local pipeline run may come before it)."""
    capsys.readouterr()
    assert cli.main(list(argv)) == 0
    out = capsys.readouterr().out
    for start in (i for i, line in enumerate(out.splitlines(keepends=True)) if line.startswith("{")):
        text = "".join(out.splitlines(keepends=True)[start:])
        try:
            return json.JSONDecoder().raw_decode(text)[0]
        except json.JSONDecodeError:
            continue
    raise AssertionError(f"no JSON object in the output of tru {' '.join(argv)}:\n{out[-2000:]}")


@pytest.mark.slow
def test_deletion_commit_to_certified_champion(
    dvc_repo: dict[str, Any], mlflow_store: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow import MlflowClient

    from tru.data.dataset import load_dataset

    root, c1 = dvc_repo["root"], dvc_repo["c1"]
    uri = mlflow_store.uri
    common = ("--backbone", "vbpr", "--epochs", "3", "--max-steps", "20", "--tracking-uri", uri)
    lenient, impossible = tmp_path / "lenient.yaml", tmp_path / "impossible.yaml"
    lenient.write_text(LENIENT)
    impossible.write_text(IMPOSSIBLE)

    # the champion: the pipeline at the dataset commit (no manifest yet: nothing to forget, promoted)
    from pipelines import runner

    first = runner.run_local(
        {"dataset": "synthetic", "repo": str(root), "data_rev": c1, "backbone": "vbpr", "epochs": 3,
         "tracking_uri": uri, "audit_seeds": "0"},
        root=tmp_path / "kfp0",
    )  # fmt: skip
    name = first["model_name"]
    assert first["promoted"] is True and first["champion"] == "1"
    client = MlflowClient(uri)

    # deletion requests arrive as a DVC commit (tru requests add → dvc add + push; git commit)
    ds = load_dataset(root / "data" / "synthetic", validate=False)
    u, i = int(ds.train.users[0]), int(ds.train.items[0])
    _tru("requests", "add", "--user", "5", "--reason", "GDPR art. 17", "--id", "r-user-5",
         "--repo", str(root), "--data", str(ds.root), capsys=capsys)  # fmt: skip
    _tru("requests", "add", "--pair", str(u), str(i), "--reason", "mistaken play", "--id", "r-pair",
         "--repo", str(root), "--commit", capsys=capsys)  # fmt: skip
    c2 = _git(root, "rev-parse", "HEAD").strip()
    assert _git(root, "status", "--porcelain") == ""

    entry = _tru("trigger", "--from", c1, "--to", c2, "--repo", str(root), "--policy", str(lenient),
                 *common, capsys=capsys)  # fmt: skip
    assert entry["status"] == "processed" and entry["requests"] == ["r-user-5", "r-pair"]
    result = entry["result"]
    assert result["promoted"] is True and result["version"] == result["champion"] == "2"
    assert result["new_request_ids"] == ["r-user-5", "r-pair"] and result["data_rev"] == c2
    champion = client.get_model_version_by_alias(name, "champion")
    assert str(champion.version) == "2"
    assert champion.tags["verdict"] == "certified"
    assert set(champion.tags["forgotten_requests"].split(",")) == {"r-user-5", "r-pair"}
    old = client.get_model_version(name, "1").tags  # trained on the data these requests delete
    assert old["contains_deleted_data"] == "true" and old["superseded_by"] == "2"
    run = client.get_run(result["run_id"])
    assert run.data.tags["data_version.git_commit"] == c2
    assert run.data.tags["data_version.dvc_md5"] == V.data_version(root, c2)["dvc_md5"]

    # idempotent: the same revision again runs nothing and registers nothing
    again = _tru("trigger", "--from", c1, "--to", c2, "--repo", str(root), *common, capsys=capsys)
    assert again["status"] == "already-processed"
    assert len(client.search_model_versions(f"name='{name}'")) == 2

    # a deletion commit whose certificate fails: registered, rejected with reasons, champion untouched
    _tru("requests", "add", "--item", "7", "--reason", "licence withdrawn", "--id", "r-item-7",
         "--repo", str(root), "--commit", capsys=capsys)  # fmt: skip
    c3 = _git(root, "rev-parse", "HEAD").strip()
    entry = _tru("trigger", "--from", c2, "--to", c3, "--repo", str(root), "--policy", str(impossible),
                 *common, capsys=capsys)  # fmt: skip
    assert entry["status"] == "processed" and entry["requests"] == ["r-item-7"]
    assert entry["result"]["promoted"] is False and entry["result"]["version"] == "3"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    rejected = client.get_model_version(name, "3").tags
    assert rejected["verdict"] == "rejected" and "retain Recall@20" in rejected["reasons"]
    assert "r-item-7" in rejected["rejected_requests"].split(",")
