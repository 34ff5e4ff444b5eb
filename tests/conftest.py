"""Shared fixtures. Everything a test writes lives under pytest's tmp_path (under $TRU_SCRATCH in CI)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("ITERATIVE_DO_NOT_TRACK", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
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


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    from tru.data.dataset import write_dataset

    df, feats = make_tiny_frame()
    folder = tmp_path / "tiny"
    write_dataset(folder, "tiny", df, feats, source={"kind": "test"})
    return folder


@pytest.fixture
def tiny(tiny_dir: Path):
    from tru.data.dataset import load_dataset

    return load_dataset(tiny_dir, validate=False)
