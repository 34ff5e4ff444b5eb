"""The servable champion: exported arrays reproduce each backbone's scores; a deleted user gets the
non-personalised D_r popularity list (never their old one); seen items never come back; bad requests are
refused naming the field; the model registers, loads by ``@champion`` in a fresh process without torch,
tru or the dataset, and answers over HTTP from a real ``mlflow models serve``; the KServe manifest parses.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tru.config import load_config
from tru.data.dataset import Pairs, load_dataset, write_dataset
from tru.models import build_backbone
from tru.serving import ServableArrays, ServingExportError, build_servable, log_servable, storage_uri
from tru.serving.pyfunc import DEFAULT_K, MAX_K, ServingInputError, TruRecommender
from tru.train.trainer import Trainer

from .conftest import make_tiny_frame
from .fixtures_services import HOST, MlflowStore, free_port

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "deploy" / "kserve" / "inferenceservice.yaml"
MODEL_NAME = "tru-tiny-mgcn"


def _config(backbone: str, epochs: int) -> dict[str, Any]:
    return load_config(
        backbone,
        overrides={
            "epochs": epochs,
            "seed": 3,
            "train_batch_size": 256,
            "learning_rate": 0.01,
            "stopping_step": 1000,
            "eval_step": 1000,
            "device": "cpu",
        },
    )


def _fit(backbone: str, ds: Any, train: Pairs, epochs: int) -> Any:
    cfg = _config(backbone, epochs)
    model = build_backbone(backbone, ds, cfg)
    if epochs:
        Trainer(model, ds, cfg, train=train, log=lambda _s: None).fit()
    return model


def _popularity_list(retain: Pairs, n_items: int) -> np.ndarray:
    """Items by D_r count descending, ties by id: computed here independently of the export."""
    keys = np.unique(retain.keys(n_items))
    counts = np.bincount(keys % n_items, minlength=n_items)
    return np.array(sorted(range(n_items), key=lambda i: (-counts[i], i)))


@pytest.fixture(scope="module", autouse=True)
def _migrate_mlflow_early(mlflow_db_template_launch: Any) -> None:
    """Start the MLflow sqlite migration (a subprocess, ~6 s idle) at module start, so that it overlaps
    the training and export tests instead of delaying the first registry test."""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny data, an MGCN trained on it for a few epochs, and user 7's deletion (all its pairs)."""
    root = tmp_path_factory.mktemp("serving")
    df, feats = make_tiny_frame()
    write_dataset(root / "data", "tiny", df, feats, source={"kind": "test"})
    ds = load_dataset(root / "data", validate=False)
    model = _fit("mgcn", ds, ds.train, epochs=8)
    deleted = 7
    retain = ds.train.subset(ds.train.users != deleted)
    original = build_servable(model, ds.train, dataset_name="tiny", code_version="test")
    unlearned = copy.deepcopy(model)
    unlearned.rebuild(retain)  # the graph of an unlearned model stands on D_r
    arrays = build_servable(
        unlearned, retain, dataset_name="tiny", code_version="test", request_commitment="sha256:abc"
    )
    npz = arrays.save(root / "servable.npz")
    return {
        "root": root,
        "ds": ds,
        "model": model,
        "retain": retain,
        "deleted": deleted,
        "original": original,
        "arrays": arrays,
        "npz": npz,
    }


# ---------------------------------------------------------------- export == the backbone's scoring
@pytest.mark.parametrize("backbone", ["vbpr", "mgcn", "miggt"])
def test_export_reproduces_full_sort_predict(tiny: Any, backbone: str, tmp_path: Path) -> None:
    model = _fit(backbone, tiny, tiny.train, epochs=1)  # one epoch: trained weights, BN statistics
    model.train()  # build_servable must switch to eval mode itself (dropout, BN, MIG-GT's sampling)
    arrays = build_servable(model, tiny.train, dataset_name="tiny", code_version="test")
    assert model.training, "build_servable must restore the model's mode"
    users = np.arange(tiny.n_users)
    with model.eval_cache():
        ref = model.full_sort_predict(torch.as_tensor(users)).numpy()
    assert arrays.user_emb.dtype == np.float32 and arrays.item_emb.dtype == np.float32
    np.testing.assert_allclose(arrays.scores(users), ref, atol=1e-4, rtol=0)
    assert arrays.meta.backbone == backbone and arrays.meta.dim == arrays.user_emb.shape[1]
    assert arrays.meta.n_personalised == tiny.n_users  # every tiny user has train items
    # deterministic (MIG-GT draws its evaluation samples with a fixed seed) and a lossless .npz round trip
    again = build_servable(model, tiny.train, dataset_name="tiny", code_version="test")
    np.testing.assert_array_equal(again.user_emb, arrays.user_emb)
    loaded = ServableArrays.load(arrays.save(tmp_path / "s.npz"))
    for key in ("user_emb", "item_emb", "seen_indptr", "seen_indices", "popularity", "excluded"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(arrays, key))
    assert loaded.meta == arrays.meta
    with np.load(tmp_path / "s.npz", allow_pickle=False) as npz:  # plain arrays only
        assert all(npz[k].dtype != object for k in npz.files)


def test_export_refuses_a_backbone_that_scores_otherwise(tiny: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _fit("vbpr", tiny, tiny.train, epochs=0)
    plain = model.full_sort_predict
    monkeypatch.setattr(model, "full_sort_predict", lambda users: plain(users) + 0.01 * torch.arange(80))
    with pytest.raises(ServingExportError, match="does not score s_ui = e_u·e_i"):
        build_servable(model, tiny.train, dataset_name="tiny", code_version="test")


def test_export_input_errors_name_the_field(tiny: Any) -> None:
    model = _fit("vbpr", tiny, tiny.train, epochs=0)
    bad = Pairs(np.array([0, tiny.n_users]), np.array([1, 2]))
    with pytest.raises(ServingExportError, match=r"retain\.users"):
        build_servable(model, bad, dataset_name="tiny", code_version="test")
    with pytest.raises(ServingExportError, match="exclude_items"):
        build_servable(model, tiny.train, dataset_name="tiny", code_version="test", exclude_items=[-1])


# ---------------------------------------------------------------- deleted users, seen items, ranking
def test_deleted_user_gets_the_unknown_users_popularity_list(world: dict[str, Any]) -> None:
    arrays, retain, u = world["arrays"], world["retain"], world["deleted"]
    n_users, n_items = arrays.meta.n_users, arrays.meta.n_items
    rec = TruRecommender.from_npz(str(world["npz"]))
    out = rec.predict(None, pd.DataFrame({"user_id": [u, n_users + 5, 10**9]}), {"k": 10})
    lists = {uid: g for uid, g in out.groupby("user_id", sort=False)}
    expected = _popularity_list(retain, n_items)[:10]
    counts = np.bincount(retain.items, minlength=n_items)
    for uid in (u, n_users + 5, 10**9):
        g = lists[uid]
        assert not g["personalised"].any()
        np.testing.assert_array_equal(g["item_id"].to_numpy(), expected)
        np.testing.assert_array_equal(g["score"].to_numpy(), counts[expected].astype(np.float32))
        np.testing.assert_array_equal(g["rank"].to_numpy(), np.arange(1, 11))
    # their old representation is not shipped; their old list (the original model's) is not served
    assert not arrays.user_emb[u].any() and arrays.user_emb[u + 1].any()
    assert arrays.meta.n_personalised == n_users - 1 and arrays.meta.request_commitment == "sha256:abc"
    old = TruRecommender.from_npz(str(world["original"].save(world["root"] / "original.npz")))
    old_list = old.predict(None, pd.DataFrame({"user_id": [u]}), {"k": 10})
    assert old_list["personalised"].all()
    assert not np.array_equal(old_list["item_id"].to_numpy(), lists[u]["item_id"].to_numpy())
    # the popularity counts come from D_r: the deleted user's pairs no longer count
    np.testing.assert_array_equal(arrays.popularity, counts)
    assert arrays.popularity.sum() == len(world["ds"].train) - int((world["ds"].train.users == u).sum())


def test_seen_items_never_served_and_ranking_is_exact(world: dict[str, Any]) -> None:
    arrays, retain = world["arrays"], world["retain"]
    n_users, n_items = arrays.meta.n_users, arrays.meta.n_items
    rec = TruRecommender.from_npz(str(world["npz"]))
    users = np.arange(n_users)
    out = rec.predict(None, pd.DataFrame({"user_id": users, "k": np.full(n_users, MAX_K)}))
    served = set(zip(out["user_id"].tolist(), out["item_id"].tolist(), strict=True))
    assert not served & set(zip(retain.users.tolist(), retain.items.tolist(), strict=True))
    # with k ≥ n_items every unseen item comes back exactly once
    per_user = out.groupby("user_id").size().reindex(users, fill_value=0).to_numpy()
    seen_counts = np.diff(arrays.seen_indptr)
    expected = np.where(seen_counts > 0, n_items - seen_counts, n_items)
    np.testing.assert_array_equal(per_user, expected)
    assert not out.duplicated(["user_id", "item_id"]).any()
    # personalised top-10 = the exported model's top-10 over unseen items, scores descending
    top = rec.predict(None, pd.DataFrame({"user_id": users}), {"k": 10})
    scores = arrays.scores(users)
    scores[retain.users, retain.items] = -np.inf
    for uid, g in top[top["personalised"]].groupby("user_id"):
        ref = np.sort(scores[uid])[::-1][:10]
        np.testing.assert_allclose(g["score"].to_numpy(), ref, rtol=1e-6)
        np.testing.assert_allclose(scores[uid, g["item_id"].to_numpy()], g["score"].to_numpy(), rtol=1e-6)
    assert top["personalised"].sum() == 10 * (n_users - 1)


def test_excluded_items_are_never_recommended(world: dict[str, Any], tmp_path: Path) -> None:
    unlearned = copy.deepcopy(world["model"])
    unlearned.rebuild(world["retain"])
    blocked = world["arrays"].popularity.argsort()[-3:]  # the three most popular items
    arrays = build_servable(
        unlearned, world["retain"], dataset_name="tiny", code_version="test", exclude_items=blocked
    )
    rec = TruRecommender.from_npz(str(arrays.save(tmp_path / "s.npz")))
    out = rec.predict(None, pd.DataFrame({"user_id": np.arange(arrays.meta.n_users + 1)}), {"k": 50})
    assert not out["item_id"].isin(blocked).any()
    assert (~out["personalised"]).sum() == 2 * 50  # the deleted user and the unknown id


# ---------------------------------------------------------------- k handling and bad input
def test_k_handling_and_bad_input(world: dict[str, Any]) -> None:
    rec = TruRecommender.from_npz(str(world["npz"]))
    sizes = lambda out: out.groupby("user_id", sort=False).size().tolist()  # noqa: E731
    assert sizes(rec.predict(None, pd.DataFrame({"user_id": [1, 2]}))) == [DEFAULT_K, DEFAULT_K]
    assert sizes(rec.predict(None, pd.DataFrame({"user_id": [1, 2]}), {"k": 3})) == [3, 3]
    per_row = pd.DataFrame({"user_id": [1, 2, 3], "k": [1, 4, None]})  # a missing k takes params / default
    assert sizes(rec.predict(None, per_row, {"k": 2})) == [1, 4, 2]
    n_unseen = world["arrays"].meta.n_items - len(world["arrays"].seen(1))
    assert sizes(rec.predict(None, pd.DataFrame({"user_id": [1]}), {"k": MAX_K})) == [n_unseen]
    same = rec.predict(None, pd.DataFrame({"user_id": [1, 1]}), {"k": 5})  # duplicates: answered per row
    np.testing.assert_array_equal(same["item_id"].to_numpy()[:5], same["item_id"].to_numpy()[5:])
    empty = rec.predict(None, pd.DataFrame({"user_id": np.zeros(0, dtype=np.int64)}))
    assert list(empty.columns) == ["user_id", "rank", "item_id", "score", "personalised"] and empty.empty
    out = rec.predict(None, pd.DataFrame({"user_id": [1]}), {"k": 3})
    assert out.dtypes.to_dict() == {
        "user_id": np.int64,
        "rank": np.int64,
        "item_id": np.int64,
        "score": np.float32,
        "personalised": np.bool_,
    }
    bad = [
        (pd.DataFrame({"user": [1]}), None, r"missing column 'user_id'"),
        (pd.DataFrame({"user_id": [1, -4]}), None, r"'user_id' row 1: -4 is negative"),
        (pd.DataFrame({"user_id": [1.5]}), None, r"'user_id' row 0: 1\.5 is not an integer"),
        (pd.DataFrame({"user_id": [1, None]}), None, r"'user_id' row 1: .* is not an integer"),
        (pd.DataFrame({"user_id": ["a"]}), None, r"'user_id' row 0: 'a' is not an integer"),
        (pd.DataFrame({"user_id": [True]}), None, r"'user_id' must hold integers"),
        (pd.DataFrame({"user_id": [1], "score": [2]}), None, r"unexpected column\(s\) \['score'\]"),
        (pd.DataFrame({"user_id": [1]}), {"k": 0}, r"'params\.k' for row 0: 0 is outside 1\.\.1000"),
        (pd.DataFrame({"user_id": [1]}), {"k": MAX_K + 1}, r"'params\.k' for row 0: 1001 is outside"),
        (pd.DataFrame({"user_id": [1, 2], "k": [3, 0]}), None, r"'k' row 1: 0 is outside 1\.\.1000"),
        (pd.DataFrame({"user_id": [1]}), {"k": 2.5}, r"'params\.k': 2\.5 is not an integer"),
        (pd.DataFrame({"user_id": [1], "k": [2.5]}), None, r"'k' row 0: 2\.5 is not an integer"),
        (pd.DataFrame({"user_id": [1, 2], "k": [None, 2.5]}), None, r"'k' row 1: 2\.5 is not an integer"),
        (pd.DataFrame({"user_id": [1, 2], "k": ["3", 3]}), None, r"'k' row 0: '3' is not an integer"),
        (pd.DataFrame({"user_id": [1], "k": ["x"]}), None, r"'k' row 0: 'x' is not an integer"),
        (pd.DataFrame({"user_id": [1]}), {"k": "many"}, r"'params\.k': 'many' is not an integer"),
    ]
    for frame, params, message in bad:
        with pytest.raises(ServingInputError, match=message):
            rec.predict(None, frame, params)


# ---------------------------------------------------------------- MLflow: register, fresh process, HTTP
_FRESH = r"""
import json, sys
src = sys.argv[2]
sys.path[:] = [p for p in sys.path if not p.startswith(src)]
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tru", "torch"):
            raise ModuleNotFoundError(f"blocked in this test: {name}")
sys.meta_path.insert(0, _Block())
try:
    import tru
    sys.exit("tru is importable: the check is void")
except ImportError:
    pass
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(pd.DataFrame({"user_id": [0, 7, 1000]}), params={"k": 5})
bad = None
try:
    model.predict(pd.DataFrame({"user_id": [-1]}))
except Exception as exc:
    bad = str(exc)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("tru", "torch"))
print(json.dumps({"out": out.to_dict(orient="list"), "bad": bad, "leaked": leaked,
                  "meta": model.metadata.metadata}))
"""


def _use_experiment(store: MlflowStore) -> str:
    """The test store's experiment id. The store is chosen by ``$MLFLOW_TRACKING_URI`` (set by the
    fixture), never by ``mlflow.set_tracking_uri`` / ``set_experiment``: those globals would outlive the
    test and send later tests' runs to this store."""
    assert mlflow.get_tracking_uri() == store.uri
    exp = mlflow.get_experiment_by_name("serving")
    if exp is not None:
        return exp.experiment_id
    return mlflow.create_experiment("serving", artifact_location=store.artifacts)


def test_register_champion_and_load_in_a_fresh_process(
    world: dict[str, Any], mlflow_store: MlflowStore, tmp_path: Path
) -> None:
    _use_experiment(mlflow_store)
    client = mlflow.MlflowClient()
    # the register step's shape: a run created and finished by the tracking code, then the servable
    run_id = client.create_run(mlflow.get_experiment_by_name("serving").experiment_id).info.run_id
    client.set_terminated(run_id, "FINISHED")
    uri = log_servable(world["arrays"], run_id=run_id)
    assert uri.startswith("models:/m-") and mlflow.active_run() is None
    assert client.get_run(run_id).info.status == "FINISHED"
    client.create_registered_model(MODEL_NAME)
    mv = client.create_model_version(
        MODEL_NAME, source=uri, run_id=run_id, model_id=uri.removeprefix("models:/")
    )
    client.set_registered_model_alias(MODEL_NAME, "champion", mv.version)
    folder = Path(urlparse(storage_uri(MODEL_NAME)).path)
    assert (folder / "MLmodel").is_file() and (folder / "artifacts" / "servable.npz").is_file()
    reqs = (folder / "requirements.txt").read_text().split()
    assert f"mlflow=={mlflow.__version__}" in reqs and not any(r.startswith(("torch", "tru")) for r in reqs)
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    assert mlmodel["signature"]["inputs"] and mlmodel["saved_input_example_info"]
    # logged from code: MLflow runs the copied source of tru.serving.pyfunc, nothing is pickled
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert (folder / "pyfunc.py").read_text() == (ROOT / "src" / "tru" / "serving" / "pyfunc.py").read_text()
    assert not list(folder.rglob("*.pkl"))
    # a fresh interpreter: no src/ on the path, tru and torch unimportable, cwd without any dataset
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _FRESH, f"models:/{MODEL_NAME}@champion", str(ROOT / "src")],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_store.uri},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["leaked"] == []
    assert "user_id" in got["bad"] and "negative" in got["bad"]
    assert got["meta"]["tru_servable"]["n_users"] == world["arrays"].meta.n_users
    assert got["meta"]["tru_servable"]["request_commitment"] == "sha256:abc"
    ref = TruRecommender.from_npz(str(world["npz"])).predict(
        None, pd.DataFrame({"user_id": [0, 7, 1000]}), {"k": 5}
    )
    out = pd.DataFrame(got["out"])
    np.testing.assert_array_equal(out["item_id"].to_numpy(), ref["item_id"].to_numpy())
    np.testing.assert_allclose(out["score"].to_numpy(), ref["score"].to_numpy(), rtol=1e-6)
    assert out["personalised"].tolist() == [True] * 5 + [False] * 10


def _post(url: str, payload: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_mlflow_models_serve_answers_over_http(
    world: dict[str, Any], mlflow_store: MlflowStore, tmp_path: Path
) -> None:
    _use_experiment(mlflow_store)
    with mlflow.start_run(experiment_id=_use_experiment(mlflow_store)):
        uri = log_servable(world["arrays"])
    mv = mlflow.register_model(uri, MODEL_NAME)
    mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", mv.version)
    port = free_port()
    log = tmp_path / "serve.log"
    cmd = [
        str(Path(sys.executable).with_name("mlflow")), "models", "serve",
        "-m", f"models:/{MODEL_NAME}@champion", "--env-manager", "local",
        "-h", HOST, "-p", str(port), "-w", "1",
    ]  # fmt: skip
    # the server execs `uvicorn` from PATH: the interpreter's bin folder must be on it
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store.uri, "PATH": path}
    url = f"http://{HOST}:{port}"
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"mlflow models serve exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no /ping answer:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(url + "/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        users = [0, 7, 1000]
        status, body = _post(
            url + "/invocations",
            {"dataframe_split": {"columns": ["user_id"], "data": [[u] for u in users]}, "params": {"k": 4}},
        )
        assert status == 200, body
        out = pd.DataFrame(body["predictions"])
        ref = TruRecommender.from_npz(str(world["npz"])).predict(
            None, pd.DataFrame({"user_id": users}), {"k": 4}
        )
        assert out["user_id"].tolist() == ref["user_id"].tolist()
        assert out["item_id"].tolist() == ref["item_id"].tolist()
        assert (
            out["rank"].tolist() == ref["rank"].tolist()
            and out["personalised"].tolist() == [True] * 4 + [False] * 8
        )
        np.testing.assert_allclose(out["score"].to_numpy(), ref["score"].to_numpy(), rtol=1e-6)
        # a per-row k column, and refusals that name the field
        status, body = _post(
            url + "/invocations", {"dataframe_split": {"columns": ["user_id", "k"], "data": [[1, 2], [2, 3]]}}
        )
        assert status == 200 and len(body["predictions"]) == 5
        status, body = _post(
            url + "/invocations", {"dataframe_split": {"columns": ["user_id"], "data": [[-3]]}}
        )
        assert status == 400 and "user_id" in body["message"] and "negative" in body["message"]
        status, body = _post(url + "/invocations", {"dataframe_split": {"columns": ["uid"], "data": [[3]]}})
        assert status == 400 and "user_id" in body["message"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def test_log_servable_needs_a_run(world: dict[str, Any], mlflow_store: MlflowStore) -> None:
    _use_experiment(mlflow_store)
    assert mlflow.active_run() is None
    with pytest.raises(ServingExportError, match="no active MLflow run"):
        log_servable(world["arrays"])


# ---------------------------------------------------------------- KServe
def test_kserve_manifest() -> None:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    isvc = [d for d in docs if d.get("kind") == "InferenceService"]
    assert len(isvc) == 1
    doc = isvc[0]
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert doc["metadata"]["name"]
    model = doc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "mlflow"
    assert model["protocolVersion"] == "v2"  # KServe's MLflow runtime is MLServer: Open Inference Protocol
    assert urlparse(model["storageUri"]).scheme in ("s3", "gs", "pvc", "https")
    limits, requests = model["resources"]["limits"], model["resources"]["requests"]
    assert {"cpu", "memory"} <= set(limits) and {"cpu", "memory"} <= set(requests)
    text = MANIFEST.read_text()
    assert "storage_uri" in text or "get_model_version_download_uri" in text  # how to fill storageUri
