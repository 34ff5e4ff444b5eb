"""The deletion guarantee end to end, on real services, as a data team drives it: a git + DVC repository
whose remote is a (versioned) bucket on a moto S3 server, a real ``mlflow server`` (sqlite backend,
artifacts proxied to S3) and the Kubeflow pipeline run by ``kfp.local``.

Three deletion commits in a row (a user, an item, a pair): each `tru trigger` forgets what is pending;
the second runs with an impossible certification policy, so the compliance fallback promotes the retrain.
At the end every request is forgotten by the champion (`tru requests status` says so), the champion is
served from the registry as a pyfunc model that gives the deleted user a non-personalised list, `tru
erase` has removed the rows from the data, the DVC cache and remote, the pipeline outputs and MLflow, and
`tru erasure audit` is clean."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tru import cli
from tru.mlops import versioning as V

from .conftest import IMPOSSIBLE_POLICY, LENIENT_POLICY, dvc_test_env


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module", autouse=True)
def _early_services(mlflow_server_launch: Any) -> None:
    """The MLflow server boots while the repository is built."""


def _tru(*argv: str, capsys: pytest.CaptureFixture[str], rc: int = 0) -> dict[str, Any]:
    """``tru <argv>`` in process; the last JSON object it printed at the start of a line."""
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert code == rc, f"tru {' '.join(argv)} → {code}\n{err[-3000:]}"
    lines = out.splitlines(keepends=True)
    for start in reversed([i for i, line in enumerate(lines) if line.startswith("{")]):
        try:
            return json.JSONDecoder().raw_decode("".join(lines[start:]))[0]
        except json.JSONDecodeError:
            continue
    raise AssertionError(f"no JSON in the output of tru {' '.join(argv)}:\n{out[-2000:]}")


@pytest.mark.slow
def test_three_deletions_to_a_served_champion_then_erasure_and_a_clean_audit(
    tmp_path: Path, moto_server: Any, mlflow_server: Any, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import mlflow
    import pandas as pd
    from dvc.repo import Repo
    from mlflow import MlflowClient

    from tru.data.dataset import load_dataset
    from tru.data.prepare import prepare_dataset
    from tru.forget.requests import write_requests

    t0 = time.perf_counter()
    for k, v in {**dvc_test_env(tmp_path / "dvc-site"), "GIT_CEILING_DIRECTORIES": str(tmp_path)}.items():
        monkeypatch.setenv(k, v)
    for k, v in moto_server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.delenv("TRU_MLFLOW_ARTIFACTS", raising=False)
    bucket = moto_server.make_bucket()
    moto_server.client().put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    Repo.init(str(root)).close()
    V.configure_remote(root, f"s3://{bucket}/dvc", endpoint_url=moto_server.endpoint_url, region="us-east-1")
    prepare_dataset("synthetic", root / "data" / "synthetic", preset="tiny")
    (root / "data" / "deletions").mkdir()
    write_requests(root / "data" / "deletions" / "requests.csv", [])  # an empty manifest: nothing pending
    with V._dvc(root) as r:
        r.add(str(root / "data"))
        r.push()
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "dataset")
    ds = load_dataset(root / "data" / "synthetic", validate=False)
    user, item = 5, int(ds.train.items[ds.train.users != 5][0])
    keep = (ds.train.users != user) & (ds.train.items != item)
    pu, pi = int(ds.train.users[keep][0]), int(ds.train.items[keep][0])
    lenient, impossible = tmp_path / "lenient.yaml", tmp_path / "impossible.yaml"
    lenient.write_text(LENIENT_POLICY)
    impossible.write_text(IMPOSSIBLE_POLICY)
    uri = mlflow_server.url
    common = ("--repo", str(root), "--backbone", "vbpr", "--epochs", "3", "--max-steps", "20",
              "--tracking-uri", uri, "--audit-seeds", "0")  # fmt: skip
    name = "tru-synthetic-vbpr"
    assert _tru("trigger", *common, capsys=capsys)["status"] == "nothing-pending"

    # 1. a user's deletion: committed with DVC, then forgotten by a certified champion
    _tru("requests", "add", "--user", str(user), "--reason", "GDPR art. 17", "--id", "r-user",
         "--repo", str(root), "--commit", capsys=capsys)  # fmt: skip
    first = _tru("trigger", *common, "--policy", str(lenient), capsys=capsys)
    assert first["status"] == "done" and first["pending"] == ["r-user"]
    assert first["result"]["promoted"] and first["result"]["role"] == "unlearned"
    # 2. an item's removal certified against an impossible policy: the fallback retrain becomes champion
    _tru("requests", "add", "--item", str(item), "--reason", "licence withdrawn", "--id", "r-item",
         "--repo", str(root), "--commit", capsys=capsys)  # fmt: skip
    second = _tru("trigger", *common, "--policy", str(impossible), capsys=capsys)
    assert second["status"] == "done" and second["pending"] == ["r-item"]
    assert second["result"]["fallback"] and second["result"]["evidence"].startswith("retrain (compliance")
    # 3. one interaction
    _tru("requests", "add", "--pair", str(pu), str(pi), "--reason", "mistaken play", "--id", "r-pair",
         "--repo", str(root), "--commit", capsys=capsys)  # fmt: skip
    third = _tru("trigger", *common, "--policy", str(lenient), capsys=capsys)
    assert third["status"] == "done" and third["pending"] == ["r-pair"]
    assert sorted(third["result"]["request_ids"]) == ["r-item", "r-pair", "r-user"]
    assert _tru("trigger", *common, capsys=capsys)["status"] == "nothing-pending"
    runs_done = time.perf_counter() - t0

    # every request forgotten by the champion, with its evidence
    status = _tru("requests", "status", "--repo", str(root), "--backbone", "vbpr", "--tracking-uri", uri,
                  "--json", capsys=capsys)  # fmt: skip
    rows = {r["request_id"]: r for r in status["requests"]}
    assert {r["state"] for r in rows.values()} == {"forgotten"} and set(rows) == {
        "r-user",
        "r-item",
        "r-pair",
    }
    assert rows["r-item"]["evidence"].startswith("retrain (compliance fallback")
    client = MlflowClient(uri, uri)
    champion = client.get_model_version_by_alias(name, "champion")
    assert set(champion.tags["forgotten_requests_all"].split(",")) == {"r-user", "r-item", "r-pair"}
    # the champion is servable as it is: the deleted user gets the non-personalised list
    served = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(
        pd.DataFrame({"user_id": [user, 0]})
    )
    assert (
        not served[served.user_id == user].personalised.any()
        and served[served.user_id == 0].personalised.all()
    )

    # erasure everywhere, then the audit: clean
    auditor = tmp_path / "auditor-requests.csv"  # the data-protection officer's own copy of the requests
    auditor.write_bytes((root / V.REQUESTS_PATH).read_bytes())
    erase = _tru("erase", "--repo", str(root), "--name", name, "--tracking-uri", uri,
                 "--backend-store-uri", f"sqlite:///{mlflow_server.db}",
                 "--mlflow-artifacts-destination", f"s3://{mlflow_server.bucket}/{mlflow_server.prefix}",
                 capsys=capsys)  # fmt: skip
    assert sorted(erase["erased"]) == ["r-item", "r-pair", "r-user"] and erase["pending"] == []
    assert {s["status"] for s in erase["steps"]} <= {"done", "nothing-to-do"}, erase["steps"]
    audit = _tru("erasure", "audit", "--repo", str(root), "--requests", str(auditor), "--tracking-uri", uri,
                 "--model", name, "--json", capsys=capsys)  # fmt: skip
    assert audit["clean"], json.dumps(audit["findings"], indent=1)[:3000]
    status = _tru("requests", "status", "--repo", str(root), "--backbone", "vbpr", "--tracking-uri", uri,
                  "--json", capsys=capsys)  # fmt: skip
    assert {r["state"] for r in status["requests"]} == {"erased"}
    # the champion still loads on the erased data (its rows were the ones removed) and keeps serving;
    # a fourth deletion after the erasure: the champion's erased requests stay forgotten
    assert _tru("trigger", *common, capsys=capsys)["status"] == "nothing-pending"
    later = int(ds.train.users[(ds.train.users != user) & (ds.train.users != pu)][0])
    _tru("requests", "add", "--user", str(later), "--reason", "GDPR art. 17", "--id", "r-later",
         "--repo", str(root), "--commit", capsys=capsys)  # fmt: skip
    fourth = _tru("trigger", *common, "--policy", str(lenient), capsys=capsys)
    assert fourth["status"] == "done" and fourth["pending"] == ["r-later"]
    assert sorted(fourth["result"]["request_ids"]) == ["r-item", "r-later", "r-pair", "r-user"]
    status = _tru("requests", "status", "--repo", str(root), "--backbone", "vbpr", "--tracking-uri", uri,
                  "--json", capsys=capsys)  # fmt: skip
    states = {r["request_id"]: r["state"] for r in status["requests"]}
    assert states == {"r-user": "erased", "r-item": "erased", "r-pair": "erased", "r-later": "forgotten"}
    assert (
        mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(pd.DataFrame({"user_id": [1]})).shape[0]
        == 20
    )
    print(f"three deletions {runs_done:.0f} s; whole test {time.perf_counter() - t0:.0f} s")
