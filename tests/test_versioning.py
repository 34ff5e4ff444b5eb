"""DVC data versioning against real services: a git + DVC repository in a temporary folder whose remote is
a moto S3 server on 127.0.0.1; deletion requests as DVC commits; the idempotent trigger; a fresh clone
with an empty cache reading a revision back from S3."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tru.data.dataset import DataError
from tru.mlops import trigger as T
from tru.mlops import versioning as V

from .conftest import dvc_test_env

BUCKET = "tru-dvc"
SECRET = "moto-secret-not-for-git"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """A real S3 server (moto, in process) on a free loopback port, with the bucket created."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    ).create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[None]:
    mp = pytest.MonkeyPatch()
    site = tmp_path_factory.mktemp("dvc-site")
    for k, v in dvc_test_env(site).items():
        mp.setenv(k, v)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        mp.delenv(k, raising=False)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def repo(tmp_path_factory, s3: str, env: None) -> dict:
    """c0: the remote config; c1: a tiny synthetic dataset under data/ (dvc add + push); c2: two requests."""
    from dvc.repo import Repo

    from tru.data.dataset import load_dataset
    from tru.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("repo") / "work"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    Repo.init(str(root)).close()
    V.configure_remote(
        root,
        f"s3://{BUCKET}/store",
        endpoint_url=s3,
        region="us-east-1",
        access_key_id="testing",
        secret_access_key=SECRET,
    )
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "dvc remote")
    prepare_dataset("synthetic", root / "data" / "synthetic", preset="tiny")
    with V._dvc(root) as r:
        r.add(str(root / "data"))
        r.push()
    _git(root, "add", "data.dvc", ".gitignore")
    _git(root, "commit", "-q", "-m", "dataset")
    c1 = _git(root, "rev-parse", "HEAD").strip()
    ds = load_dataset(root / "data" / "synthetic", validate=False)
    u, i = int(ds.train.users[0]), int(ds.train.items[0])
    user = V.requests_add(root, user=5, reason="GDPR art. 17", request_id="r-user-5", dataset_dir=ds.root)
    pair = V.requests_add(root, pair=(u, i), reason="mistaken play", request_id="r-pair")
    _git(root, "commit", "-q", "-am", "two deletion requests")
    c2 = _git(root, "rev-parse", "HEAD").strip()
    return {"root": root, "c1": c1, "c2": c2, "added": [user, pair], "dataset": ds}


def test_credentials_stay_out_of_git(repo: dict) -> None:
    committed = _git(repo["root"], "show", f"{repo['c2']}:.dvc/config")
    assert "endpointurl" in committed and SECRET not in committed
    assert SECRET in (repo["root"] / ".dvc" / "config.local").read_text()
    assert ".dvc/config.local" not in _git(repo["root"], "ls-files")


def test_new_requests_are_exactly_the_added_rows(repo: dict) -> None:
    root = repo["root"]
    assert V.read_requests_at(root, repo["c1"]) == []
    assert V.new_requests(root, "HEAD~1", "HEAD") == repo["added"]
    assert [r.kind for r in repo["added"]] == ["user", "interaction"]
    assert V.new_requests(root, repo["c2"], repo["c2"]) == []


def test_data_version_changes_with_the_commit(repo: dict) -> None:
    root = repo["root"]
    v1, v2 = V.data_version(root, repo["c1"]), V.data_version(root, repo["c2"])
    assert v1["git_commit"] == repo["c1"] and v2["git_commit"] == repo["c2"]
    assert v1["dvc_md5"] != v2["dvc_md5"] and v2["dvc_md5"].endswith(".dir")
    work = V.data_version(root)
    assert work["dvc_md5"] == v2["dvc_md5"] and work["dirty"] is False


def test_requests_add_refusals_leave_everything_unchanged(repo: dict, tmp_path: Path) -> None:
    root = repo["root"]
    files = [root / V.REQUESTS_PATH, root / V.DVC_FILE]
    before = [f.read_bytes() for f in files]
    with pytest.raises(DataError, match="already in the manifest"):
        V.requests_add(root, item=1, reason="dup", request_id="r-pair", push=False)
    with pytest.raises(DataError, match="unknown user_id 100000"):
        V.requests_add(root, user=100000, reason="x", dataset_dir=repo["dataset"].root, push=False)
    with pytest.raises(V.VersioningError, match="exactly one of user, item, pair"):
        V.requests_add(root, user=1, item=2, reason="x")
    with pytest.MonkeyPatch.context() as mp:  # tmp_path may lie inside a git checkout (CI's scratch)
        mp.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
        with pytest.raises(V.VersioningError, match="not a git repository"):
            V.requests_add(tmp_path, user=1, reason="x")
    assert [f.read_bytes() for f in files] == before
    assert _git(root, "status", "--porcelain") == ""


def test_trigger_runs_once_then_reports_already_processed(repo: dict, tmp_path: Path) -> None:
    from tru.commands.mlops_data import run_steps

    root = repo["root"]
    entry = T.trigger(
        root,
        repo["c1"],
        repo["c2"],
        runner=run_steps,
        backbone="vbpr",
        epochs=2,
        seeds="0",
        train_args=("--set", "train_batch_size=512"),
        work_dir=tmp_path / "run",
    )
    assert entry["status"] == "processed" and entry["requests"] == ["r-user-5", "r-pair"]
    assert entry["data_version"]["git_commit"] == repo["c2"]
    cert = json.loads(Path(entry["result"]["certificate"]).read_text())
    assert cert["passed"] == entry["result"]["passed"]
    ledger = (root / T.LEDGER_PATH).read_bytes()
    again = T.trigger(root, "HEAD~1", "HEAD", runner=run_steps)
    assert again["status"] == "already-processed" and again["requests"] == ["r-user-5", "r-pair"]
    assert (root / T.LEDGER_PATH).read_bytes() == ledger
    assert _git(root, "status", "--porcelain") == ""  # .tru/ ignores itself


def test_trigger_failures_leave_the_ledger_untouched(repo: dict) -> None:
    root = repo["root"]
    path = root / T.LEDGER_PATH
    before = path.read_bytes() if path.is_file() else None

    def must_not_run(**_: object) -> dict:
        raise AssertionError("runner called")

    with pytest.raises(V.VersioningError, match="unknown revision 'no-such-rev'"):
        T.trigger(root, "no-such-rev", "HEAD", runner=must_not_run)
    with pytest.raises(V.VersioningError, match="unknown mode"):
        T.trigger(root, "HEAD~1", "HEAD", mode="moon", runner=must_not_run)
    # a runner that fails (a service down, a crashed step): nothing recorded, the error propagates
    with pytest.raises(RuntimeError, match="service down"):
        T.trigger(
            root,
            repo["c1"],
            repo["c2"],
            force=True,
            runner=lambda **_: (_ for _ in ()).throw(RuntimeError("service down")),
        )
    assert (path.read_bytes() if path.is_file() else None) == before


def test_fresh_clone_reads_a_revision_from_s3(repo: dict, tmp_path: Path, monkeypatch) -> None:
    """No cache, no config.local: the manifest and the dataset at a revision come from the S3 remote as
    configured in that revision, with credentials from the environment."""
    from tru.data.dataset import load_dataset

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo["root"]), str(clone)], check=True)
    assert not (clone / ".dvc" / "cache").exists() and not (clone / "data").exists()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    assert V.read_requests_at(clone, repo["c2"]) == repo["added"]
    assert V.new_requests(clone, repo["c1"], repo["c2"]) == repo["added"]
    dest = V.open_dataset_at(clone, repo["c1"], "synthetic", tmp_path / "ds")
    assert load_dataset(dest).fingerprint == repo["dataset"].fingerprint
    with pytest.raises(V.VersioningError, match="no dataset data/nope/"):
        V.open_dataset_at(clone, repo["c1"], "nope", tmp_path / "x")


def test_cli_requests_add_and_trigger(repo: dict, capsys) -> None:
    from tru.commands import mlops_data

    parser = argparse.ArgumentParser(prog="tru")
    sub = parser.add_subparsers(dest="command", required=True)
    mlops_data.register(sub)
    rsub = sub.add_parser("requests").add_subparsers(dest="requests_command", required=True)
    mlops_data.add_requests_add_parser(rsub)
    root = str(repo["root"])
    args = parser.parse_args(
        [
            "requests",
            "add",
            "--item",
            "7",
            "--reason",
            "takedown",
            "--id",
            "r-item-7",
            "--repo",
            root,
            "--commit",
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert json.loads(out.splitlines()[0])["request"]["kind"] == "item"
    assert V.new_requests(root, "HEAD~1", "HEAD")[0].request_id == "r-item-7"
    assert V.read_requests_at(root, "HEAD")[-1].item_id == 7
    # the push went to S3: the new manifest version is readable from a clone (checked above for c2)
    args = parser.parse_args(["trigger", "--from", repo["c1"], "--to", repo["c2"], "--repo", root])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "already-processed"


def test_invalid_manifest_at_the_new_revision(repo: dict) -> None:
    root = repo["root"]
    path = root / T.LEDGER_PATH
    before = path.read_bytes()
    manifest = root / V.REQUESTS_PATH
    manifest.write_text(manifest.read_text() + "r-bad,user,-3,,2025-01-01,oops\n")
    with V._dvc(root) as r:
        r.add(str(root / "data"))
    _git(root, "commit", "-q", "-am", "a bad row")
    with pytest.raises(DataError, match=r"requests.csv@[0-9a-f]{12}:5: field 'user_id': negative id '-3'"):
        T.trigger(root, "HEAD~1", "HEAD")
    assert path.read_bytes() == before


def test_not_a_dvc_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the test folder may itself lie inside a git checkout (CI's scratch): stop git's discovery there
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    _git(tmp_path, "init", "-q")
    with pytest.raises(V.VersioningError, match=r"not a DVC repository \(no \.dvc/ folder\)"):
        V.data_version(tmp_path)
    shutil.rmtree(tmp_path / ".git")
    os.makedirs(tmp_path / "x")
    with pytest.raises(V.VersioningError, match="not a git repository"):
        T.trigger(tmp_path / "x", "HEAD~1", "HEAD")


def test_cli_trigger_pipeline_errors_are_messages(repo: dict, capsys) -> None:
    """A pipeline that cannot run as asked (cluster mode without --host) is exit 2 with the pipeline's own
    message, not a traceback, and the ledger is untouched."""
    pytest.importorskip("kfp")
    from tru.cli import main

    root = repo["root"]
    before = (root / T.LEDGER_PATH).read_bytes()
    argv = ["trigger", "--from", repo["c1"], "--to", repo["c2"], "--repo", str(root), "--mode", "cluster"]
    assert main([*argv, "--force"]) == 2
    assert "cluster mode needs the KFP endpoint" in capsys.readouterr().err
    assert (root / T.LEDGER_PATH).read_bytes() == before
