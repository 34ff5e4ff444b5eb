"""DVC data versioning against real services: git + DVC repositories whose remote is the session's moto
S3 server; deletion requests as DVC commits (safe under concurrency); the trigger deciding what is
pending from the registry; a repository read from its URL at a revision resolved at run time. Every test
that changes a repository works on its own copy, so the tests do not depend on their order."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tru.data.dataset import DataError
from tru.mlops import registry, tracking
from tru.mlops import trigger as T
from tru.mlops import versioning as V

from .conftest import TinyWorld, dvc_test_env

SECRET = "moto-secret-not-for-git"


def _git(repo: Path, *args: str, **kw: Any) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, **kw
    ).stdout


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    mp = pytest.MonkeyPatch()
    for k, v in dvc_test_env(tmp_path_factory.mktemp("dvc-site")).items():
        mp.setenv(k, v)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        mp.delenv(k, raising=False)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, moto_server: Any, env: None) -> dict[str, Any]:
    """c0: the remote config; c1: a tiny synthetic dataset under data/ (dvc add + push); c2: two requests.
    Read it, never change it: tests that change a repository take :func:`copy_of` it."""
    from dvc.repo import Repo

    from tru.data.dataset import load_dataset
    from tru.data.prepare import prepare_dataset

    bucket = moto_server.make_bucket()
    root = tmp_path_factory.mktemp("repo") / "work"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    Repo.init(str(root)).close()
    V.configure_remote(
        root, f"s3://{bucket}/store", endpoint_url=moto_server.endpoint_url, region="us-east-1",
        access_key_id="testing", secret_access_key=SECRET,
    )  # fmt: skip
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
    return {"root": root, "c1": c1, "c2": c2, "added": [user, pair], "dataset": ds, "bucket": bucket}


def copy_of(base: dict[str, Any], dest: Path) -> Path:
    """A private copy of the base repository (work tree, .git, DVC cache and local config)."""
    shutil.copytree(base["root"], dest, symlinks=True)
    return dest


def test_credentials_stay_out_of_git(base: dict) -> None:
    committed = _git(base["root"], "show", f"{base['c2']}:.dvc/config")
    assert "endpointurl" in committed and SECRET not in committed
    assert SECRET in (base["root"] / ".dvc" / "config.local").read_text()
    assert ".dvc/config.local" not in _git(base["root"], "ls-files")


def test_new_requests_are_exactly_the_added_rows(base: dict) -> None:
    root = base["root"]
    assert V.read_requests_at(root, base["c1"]) == [] and not V.has_requests_at(root, base["c1"])
    assert V.new_requests(root, base["c1"], base["c2"]) == base["added"]
    assert [r.kind for r in base["added"]] == ["user", "interaction"]


def test_data_version_changes_with_the_commit(base: dict) -> None:
    root = base["root"]
    v1, v2 = V.data_version(root, base["c1"]), V.data_version(root, base["c2"])
    assert v1["git_commit"] == base["c1"] and v2["git_commit"] == base["c2"]
    assert v1["dvc_md5"] != v2["dvc_md5"] and v2["dvc_md5"].endswith(".dir")
    work = V.data_version(root)
    assert work["dvc_md5"] == v2["dvc_md5"] and work["dirty"] is False


def test_requests_add_refusals_leave_everything_unchanged(base: dict, tmp_path: Path) -> None:
    root = copy_of(base, tmp_path / "repo")
    files = [root / V.REQUESTS_PATH, root / V.DVC_FILE]
    before = [f.read_bytes() for f in files]
    with pytest.raises(DataError, match="already in the manifest"):
        V.requests_add(root, item=1, reason="dup", request_id="r-pair", push=False)
    with pytest.raises(DataError, match="unknown user_id 100000"):
        V.requests_add(root, user=100000, reason="x", dataset_dir=base["dataset"].root, push=False)
    with pytest.raises(V.VersioningError, match="exactly one of user, item, pair"):
        V.requests_add(root, user=1, item=2, reason="x")
    with pytest.MonkeyPatch.context() as mp:  # tmp_path may lie inside a git checkout (CI's scratch)
        mp.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
        (tmp_path / "plain").mkdir()
        with pytest.raises(V.VersioningError, match="not a git repository"):
            V.requests_add(tmp_path / "plain", user=1, reason="x")
    assert [f.read_bytes() for f in files] == before
    assert _git(root, "status", "--porcelain") == ""


@pytest.mark.slow
def test_parallel_requests_add_with_a_failing_hook_lose_nothing(base: dict, tmp_path: Path) -> None:
    """Six `tru requests add --commit` at once; the git hook refuses the commit of one of them. That one
    is rolled back (its row only); every other request is in the manifest and in a commit."""
    root = copy_of(base, tmp_path / "repo")
    hooks = root / ".git" / "hooks"
    (hooks / "commit-msg").write_text(
        '#!/bin/sh\nif grep -q r-fail "$1"; then echo "refused" >&2; exit 1; fi\n'
    )
    (hooks / "commit-msg").chmod(0o755)
    ids = ["r-a", "r-b", "r-fail", "r-c", "r-d", "r-e"]
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path)}
    procs = {
        rid: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tru",
                "requests",
                "add",
                "--item",
                str(10 + k),
                "--reason",
                "parallel",
                "--id",
                rid,
                "--repo",
                str(root),
                "--commit",
                "--no-push",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for k, rid in enumerate(ids)
    }
    codes = {rid: p.wait(300) for rid, p in procs.items()}
    assert codes.pop("r-fail") != 0 and set(codes.values()) == {0}, {
        r: p.stderr.read() for r, p in procs.items()
    }
    on_disk = [r.request_id for r in V.read_requests_at(root, "HEAD")]
    assert sorted(on_disk) == sorted(["r-user-5", "r-pair", *codes])  # nothing lost, r-fail gone
    assert "r-fail" not in (root / V.REQUESTS_PATH).read_text()
    log = _git(root, "log", "--format=%s")
    assert all(f"deletion request {rid}" in log for rid in codes) and "r-fail" not in log
    assert _git(root, "status", "--porcelain") == ""


def _fake_registry_runner(world: TinyWorld, promote: bool) -> tuple[list[dict[str, Any]], Any]:
    """A runner that records its calls and (with ``promote``) registers a version that forgot them."""
    calls: list[dict[str, Any]] = []

    def run(**kw: Any) -> dict[str, Any]:
        calls.append(kw)
        if not promote:
            return {"promoted": False, "champion": None}
        name = tracking.model_name(kw["dataset"], kw["backbone"])
        run_id = tracking.log_run(world.unlearned, kind="unlearn", params={}, data_version={})
        v = registry.register_version(name, run_id, world.unlearned, tags={})
        ids = [r.request_id for r in kw["requests"]] + sorted(registry.forgotten_requests(name))
        return registry.promote(name, v, forgotten=ids, new_requests=ids, evidence="test", based_on=None)

    return calls, run


def test_the_registry_decides_what_is_pending(base: dict, tiny_world: TinyWorld, mlflow_store: Any) -> None:
    root, c2 = base["root"], base["c2"]
    calls, failing = _fake_registry_runner(tiny_world, promote=False)
    with pytest.raises(T.TriggerFailed, match=r"2 of 2 request\(s\) are still pending") as info:
        T.trigger(root, c2, runner=failing, backbone="vbpr")
    assert info.value.entry["still_pending"] == ["r-user-5", "r-pair"]
    assert [r.request_id for r in calls[0]["requests"]] == ["r-user-5", "r-pair"] and calls[0]["rev"] == c2
    # the failed requests were not marked done anywhere: the next trigger retries them
    calls, works = _fake_registry_runner(tiny_world, promote=True)
    entry = T.trigger(root, c2, runner=works, backbone="vbpr")
    assert entry["status"] == "done" and entry["pending"] == ["r-user-5", "r-pair"] and len(calls) == 1
    again = T.trigger(root, c2, runner=works, backbone="vbpr")
    assert again["status"] == "nothing-pending" and len(calls) == 1
    assert _git(root, "status", "--porcelain") == ""  # .tru/ (the trigger's lock) ignores itself


def test_trigger_refusals_run_nothing(base: dict, mlflow_store: Any) -> None:
    root = base["root"]

    def must_not_run(**_: object) -> dict:
        raise AssertionError("runner called")

    with pytest.raises(V.VersioningError, match="unknown revision 'no-such-rev'"):
        T.trigger(root, "no-such-rev", runner=must_not_run)
    with pytest.raises(V.VersioningError, match="unknown mode"):
        T.trigger(root, "HEAD", mode="moon", runner=must_not_run)
    with pytest.raises(V.VersioningError, match="no deletion-request manifest"):
        T.trigger(root, base["c1"], runner=must_not_run)
    with pytest.raises(RuntimeError, match="service down"):  # a failing runner: the error propagates
        T.trigger(root, base["c2"], runner=lambda **_: (_ for _ in ()).throw(RuntimeError("service down")))
    assert registry.champion_version(tracking.model_name("synthetic", "mgcn")) is None


def test_fresh_clone_reads_a_revision_from_s3(base: dict, tmp_path: Path, monkeypatch) -> None:
    """No cache, no config.local: the manifest and the dataset at a revision come from the S3 remote as
    configured in that revision, with credentials from the environment."""
    from tru.data.dataset import load_dataset

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(base["root"]), str(clone)], check=True)
    assert not (clone / ".dvc" / "cache").exists() and not (clone / "data").exists()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    assert V.read_requests_at(clone, base["c2"]) == base["added"]
    dest = V.open_dataset_at(clone, base["c1"], "synthetic", tmp_path / "ds")
    assert load_dataset(dest).fingerprint == base["dataset"].fingerprint
    with pytest.raises(V.VersioningError, match="no dataset data/nope/"):
        V.open_dataset_at(clone, base["c1"], "nope", tmp_path / "x")


def test_a_scheduled_run_sees_each_new_commit(base: dict, tmp_path: Path, monkeypatch) -> None:
    """The cluster path: ingest clones the repository from its URL (no local checkout) at the commit the
    uncached resolve_revision task turns ``main`` into at run time, so two scheduled runs around a new
    deletion commit see different data."""
    from kfp import dsl

    from tru.kfp.components import ingest, resolve_revision

    origin = copy_of(base, tmp_path / "origin")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    url = origin.as_uri()  # file://…: a URL, read the way a pod reads https://…

    def scheduled_run(k: int) -> tuple[str, list[str]]:
        sha = resolve_revision.python_func(repo=url, rev="main")
        out = tmp_path / f"run{k}"
        data, reqs = (dsl.Dataset(uri=str(out / n)) for n in ("data", "requests"))
        res = ingest.python_func(
            repo=url, rev=sha, dataset="synthetic", requests="", generate_requests=False, regime="user",
            ratio=0.05, seed=0, data=data, deletion_requests=reqs,
            info=dsl.Artifact(uri=str(out / "info.json")),
        )  # fmt: skip
        version = json.loads(res.data_version)
        assert version["git_commit"] == sha and (out / "data" / "dataset.yaml").is_file()
        return sha, [line.split(",")[0] for line in (out / "requests").read_text().splitlines()[1:]]

    sha1, ids1 = scheduled_run(1)
    assert sha1 == base["c2"] and ids1 == ["r-user-5", "r-pair"]
    V.requests_add(origin, item=3, reason="licence", request_id="r-item-3", commit=True)
    sha2, ids2 = scheduled_run(2)
    assert sha2 == _git(origin, "rev-parse", "HEAD").strip() != sha1 and ids2[-1] == "r-item-3"


def test_cli_requests_add_prints_no_ids_and_status_lists_them(
    base: dict, tmp_path: Path, capsys, mlflow_store
) -> None:
    from tru.cli import main

    root = copy_of(base, tmp_path / "repo")
    ds = base["dataset"]
    u, i = int(ds.train.users[10]), int(ds.train.items[10])
    argv = ["requests", "add", "--pair", str(u), str(i), "--reason", "x", "--id", "r-p", "--repo", str(root)]
    assert main([*argv, "--data", str(ds.root), "--commit", "--no-push"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.splitlines()[0]) == {
        "request_id": "r-p",
        "kind": "interaction",
        "manifest": V.REQUESTS_PATH,
    }
    assert "user_id" not in out and "item_id" not in out  # a request's ids never reach a log
    assert main(["requests", "status", "--repo", str(root), "--rev", "HEAD", "--json"]) == 0
    rows = {r["request_id"]: r for r in json.loads(capsys.readouterr().out)["requests"]}
    assert set(rows) == {"r-user-5", "r-pair", "r-p"} and {r["state"] for r in rows.values()} <= {
        "pending",
        "overdue",
    }


def test_invalid_manifest_at_the_new_revision(base: dict, tmp_path: Path, mlflow_store: Any) -> None:
    root = copy_of(base, tmp_path / "repo")
    manifest = root / V.REQUESTS_PATH
    manifest.write_text(manifest.read_text() + "r-bad,user,-3,,2025-01-01,oops\n")
    with V._dvc(root) as r:
        r.add(str(root / "data"))
    _git(root, "commit", "-q", "-am", "a bad row")
    with pytest.raises(DataError, match=r"requests.csv@[0-9a-f]{12}:4: field 'user_id': negative id '-3'"):
        T.trigger(root, "HEAD", runner=lambda **_: {})


def test_not_a_dvc_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    _git(tmp_path, "init", "-q")
    with pytest.raises(V.VersioningError, match=r"not a DVC repository \(no \.dvc/ folder\)"):
        V.data_version(tmp_path)
    shutil.rmtree(tmp_path / ".git")
    os.makedirs(tmp_path / "x")
    with pytest.raises(V.VersioningError, match="not a git repository"):
        T.trigger(tmp_path / "x", "HEAD", runner=lambda **_: {})


def test_cli_trigger_pipeline_errors_are_messages(base: dict, capsys, mlflow_store: Any) -> None:
    """A pipeline that cannot run as asked (cluster mode without --host) is exit 2 with the pipeline's own
    message, not a traceback; nothing is recorded (the registry is the record)."""
    from tru.cli import main

    argv = ["trigger", "--rev", base["c2"], "--repo", str(base["root"]), "--mode", "cluster"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cluster mode needs the KFP endpoint" in err and "Traceback" not in err
