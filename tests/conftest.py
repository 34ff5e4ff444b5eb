"""Shared fixtures. Everything a test writes lives under pytest's tmp_path (under $TRU_SCRATCH in CI)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("ITERATIVE_DO_NOT_TRACK", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# one commitment / certificate-signing key for the session (never the user's ~/.config/tru key)
os.environ["TRU_COMMITMENT_KEY"] = "5e" * 32
# the session's own validation stamps (never the user's ~/.cache/tru/validated): a pass is remembered
# within the session only, and a test's first load of its data always runs the suite
os.environ["TRU_VALIDATION_CACHE"] = tempfile.mkdtemp(
    prefix="tru-validated-", dir=os.environ.get("TRU_SCRATCH")
)
# small test data: one thread avoids OpenMP barrier overhead (and spin-waits on a busy machine)
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

pytest_plugins = ["tests.fixtures_services"]

LFM2K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lfm2k"


def dvc_test_env(site_cache: Path) -> dict[str, str]:
    """Environment for a throw-away git + DVC repository: no analytics, a private DVC site cache, a git
    identity for commits."""
    return {
        "DVC_NO_ANALYTICS": "1",
        "ITERATIVE_DO_NOT_TRACK": "1",
        "DVC_SITE_CACHE_DIR": str(site_cache),
        "GIT_AUTHOR_NAME": "tru test",
        "GIT_AUTHOR_EMAIL": "test@tru.invalid",
        "GIT_COMMITTER_NAME": "tru test",
        "GIT_COMMITTER_EMAIL": "test@tru.invalid",
    }


def make_tiny_frame(
    n_users: int = 120,
    n_items: int = 80,
    per_user: int = 12,
    seed: int = 0,
    dims: dict[str, int] | None = None,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """A small dataset with planted structure: users pick items by latent affinity plus Gumbel noise."""
    from tru.data.dataset import mmrec_split

    rng = np.random.default_rng(seed)
    uf = rng.normal(size=(n_users, 6))
    vf = rng.normal(size=(n_items, 6))
    scores = uf @ vf.T + rng.gumbel(size=(n_users, n_items))
    items = np.argsort(-scores, axis=1)[:, :per_user].reshape(-1)
    users = np.repeat(np.arange(n_users), per_user)
    labels = mmrec_split(users, rng)
    df = pd.DataFrame({"userID": users, "itemID": items, "rating": 1, "x_label": labels})
    dims = dims or {"image": 24, "text": 12}
    feats = {}
    for j, (mod, d) in enumerate(dims.items()):
        w = rng.normal(size=(6, d))
        feats[mod] = (np.tanh(vf @ w) + (0.3 + 0.5 * j) * rng.normal(size=(n_items, d))).astype(np.float32)
    return df, feats


def train_tiny(
    folder: Path, backbone: str, *, epochs: int, seed: int, frame: dict[str, Any] | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """(dataset, trained model, config): a tiny dataset (:func:`make_tiny_frame` with ``frame``) written
    to ``folder``, loaded, and ``backbone`` trained on it for ``epochs`` (batch 256, CPU)."""
    from tru.config import load_config
    from tru.data.dataset import load_dataset, write_dataset
    from tru.models import build_backbone
    from tru.train.trainer import Trainer

    df, feats = make_tiny_frame(**(frame or {}))
    write_dataset(folder, "tiny", df, feats)
    ds = load_dataset(folder, validate=False)
    overrides = {"epochs": epochs, "seed": seed, "train_batch_size": 256, "device": "cpu"}
    cfg = load_config(backbone, overrides=overrides)
    model = build_backbone(backbone, ds, cfg)
    Trainer(model, ds, cfg, log=lambda _s: None).fit()
    return ds, model, cfg


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    from tru.data.dataset import write_dataset

    df, feats = make_tiny_frame()
    folder = tmp_path / "tiny"
    write_dataset(folder, "tiny", df, feats, source={"kind": "test"})
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    """The tiny dataset, written and loaded once per test module (the unlearning tests' world)."""
    from tru.data.dataset import load_dataset, write_dataset

    df, feats = make_tiny_frame()
    folder = tmp_path_factory.mktemp("tiny-data") / "tiny"
    write_dataset(folder, "tiny", df, feats)
    return load_dataset(folder, validate=False)


@pytest.fixture
def tiny(tiny_dir: Path):
    from tru.data.dataset import load_dataset

    return load_dataset(tiny_dir, validate=False)


LENIENT_POLICY = (
    "mia_auc_tolerance: 1\nuser_mia_auc_tolerance: null\nretain_recall_min_ratio: 0\n"
    "forget_hr_max_excess: 1\nforget_hr_max_deficit: 1\n"
)
IMPOSSIBLE_POLICY = "retain_recall_min_ratio: 1000\n"


def recent(days: float = 1.0) -> str:
    """A request time ``days`` before now (ISO, UTC): within any deadline the pipeline applies, whatever
    the date the suite runs on (a fixed date turns overdue, and the pipeline then retrains instead of
    unlearning: the components' test failed from 2026-12-01 on, 30 days after its fixed date)."""
    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class TinyWorld:
    """One small world for the modules that need trained models (read it, never write into it):
    a dataset, an original VBPR, three user deletion requests, the TRU-unlearned and the retrained model,
    and two signed certificates of the unlearned model (a lenient policy: passed; an impossible one:
    failed), each as the folder ``tru certify`` writes."""

    root: Path
    data: Path
    dataset: Any
    requests_csv: Path
    requests: list[Any]
    spec: Any
    original: Path
    unlearned: Path
    retrained: Path
    cert_pass: Path
    cert_fail: Path

    @property
    def ids(self) -> list[str]:
        return [r.request_id for r in self.requests]


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> TinyWorld:
    from tru.certify import AuditOptions, certify
    from tru.certify.policy import policy_from_dict
    from tru.checkpoint import Lineage, load_run, save_run
    from tru.config import load_config
    from tru.data.dataset import load_dataset, write_dataset
    from tru.forget.requests import DeletionRequest, resolve_requests, write_requests
    from tru.models import build_backbone
    from tru.train.trainer import Trainer
    from tru.unlearn.api import run_unlearning, save_unlearned, unlearn_config

    root = tmp_path_factory.mktemp("tiny-world")
    df, feats = make_tiny_frame()
    write_dataset(root / "data", "tiny", df, feats, source={"kind": "test"})
    ds = load_dataset(root / "data", validate=False)
    cfg = load_config("vbpr", overrides={"epochs": 3, "seed": 3, "train_batch_size": 512, "device": "cpu"})
    model = build_backbone("vbpr", ds, cfg)
    result = Trainer(model, ds, cfg, log=lambda _s: None).fit()
    metrics = {"valid": result.best_valid, "test": result.test}
    save_run(root / "original", model, cfg, ds, metrics=metrics, extra={"training": result.to_dict()})
    original = load_run(root / "original", ds)
    users = np.unique(ds.train.users)[:3]
    reqs = [DeletionRequest(f"req-{u}", "user", int(u), None, recent(), "test") for u in users]
    write_requests(root / "requests.csv", reqs)
    spec = resolve_requests(ds, reqs)
    ucfg = unlearn_config(cfg, {"max_steps": 20, "check_every": 10, "stop_on_target": False})
    tru = run_unlearning("tru", original.model, ds, spec, cfg, ucfg)
    parent = Lineage(kind="unlearn", method="tru", parent_weights_sha256=original.weights_sha256)
    save_unlearned(root / "unlearned", tru, cfg, ds, spec, lineage=parent)
    ret = run_unlearning("retrain", original.model, ds, spec, cfg, ucfg)
    save_unlearned(root / "retrained", ret, cfg, ds, spec, lineage=Lineage(kind="retrain", method="retrain"))
    fast = AuditOptions(n_boot=10, max_users=50)
    lenient, impossible = (policy_from_dict(yaml.safe_load(p)) for p in (LENIENT_POLICY, IMPOSSIBLE_POLICY))
    for folder, policy in (("cert-pass", lenient), ("cert-fail", impossible)):
        certify(
            ds,
            spec,
            root / "original",
            root / "unlearned",
            root / "retrained",
            policy,
            (0,),
            root / folder,
            fast,
        )
    return TinyWorld(
        root, root / "data", ds, root / "requests.csv", reqs, spec, root / "original", root / "unlearned",
        root / "retrained", root / "cert-pass", root / "cert-fail",
    )  # fmt: skip
