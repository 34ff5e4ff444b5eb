"""A small world for certificate revision 2 (shared by ``test_certify.py`` and ``test_calibration.py``):
tiny planted data, a VBPR original that memorises its train set (few epochs at a high learning rate, no
regularisation), two forget sets (20 deleted users; 4 pairs of each of 60 users), for each several
retrains with different seeds (``tru unlearn --method retrain --seed S``), a calibration from three of
them, and a few candidates: a weak fine-tune, the original's weights relabelled as unlearned, and the
rebuild-only model (the original after the rebuild from D_r and the exact part's reset)."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

CAL_SEEDS = (11, 12, 13)
REF_SEED = 14
SECOND_SEEDS = (15, 16)
FAST = {"n_boot": 60, "max_users": 200}


@dataclass
class Regime:
    spec: Any
    requests_csv: Path
    retrains: dict[int, Path]
    calibration: Any
    cal_dir: Path


@dataclass
class CertWorld:
    root: Path
    data: Path
    ds: Any
    config: dict[str, Any]
    original: Path
    user: Regime
    inter: Regime
    tuned: Path  # interaction regime: fine-tuned on D_r (weak)
    same: Path  # user regime: the original's weights, labelled unlearned
    rebuilt: Path  # user regime: rebuild from D_r + the exact part, no update

    @staticmethod
    def options(**kw: Any) -> Any:
        from tru.certify import AuditOptions

        return AuditOptions(**(FAST | kw))


def recipe(epochs: int = 15) -> dict[str, Any]:
    return {
        "epochs": epochs,
        "seed": 3,
        "train_batch_size": 256,
        "learning_rate": 0.02,
        "reg_weight": 0.0,
        "stopping_step": 1000,
        "eval_step": 1000,
        "device": "cpu",
    }


def _interaction_requests(ds: Any, rng: np.random.Generator) -> list[Any]:
    from tru.forget.requests import DeletionRequest

    tr = ds.train
    users = rng.choice(ds.n_users, 60, replace=False)
    order = np.lexsort((rng.random(len(tr)), tr.users))
    rank = np.arange(len(tr)) - np.searchsorted(tr.users[order], tr.users[order])
    pick = order[(rank < 4) & np.isin(tr.users[order], users)]
    return [
        DeletionRequest(f"i{k}", "interaction", int(tr.users[j]), int(tr.items[j]), "2026-01-31", "")
        for k, j in enumerate(pick)
    ]


def _save_candidate(folder: Path, model: Any, cfg: dict, ds: Any, spec: Any, parent: str, meta: dict) -> Path:
    from tru.checkpoint import Lineage, save_run

    lineage = Lineage(kind="unlearn", method=meta["method"], parent_weights_sha256=parent)
    save_run(folder, model, cfg, ds, train=spec.retain, forgotten=spec.forgotten(), lineage=lineage)
    (folder / "unlearn.json").write_text(json.dumps(meta))
    return folder


def build_world(root: Path) -> CertWorld:
    from tru.certify import calibrate, open_run
    from tru.certify.calibration import train_retrains
    from tru.checkpoint import load_run, save_run
    from tru.config import load_config
    from tru.data.dataset import load_dataset, write_dataset
    from tru.forget.requests import DeletionRequest, resolve_requests, write_requests
    from tru.models import build_backbone
    from tru.train.trainer import Trainer

    from .conftest import make_tiny_frame

    df, feats = make_tiny_frame()
    write_dataset(root / "data", "tiny", df, feats, source={"kind": "test"})
    ds = load_dataset(root / "data", validate=False)
    cfg = load_config("vbpr", overrides=recipe())
    model = build_backbone("vbpr", ds, cfg)
    res = Trainer(model, ds, cfg, log=lambda _s: None).fit()
    save_run(root / "original", model, cfg, ds, extra={"training": res.to_dict()})
    original = load_run(root / "original", ds)
    rng = np.random.default_rng(0)
    users = rng.choice(ds.n_users, 20, replace=False)
    reqs_u = [DeletionRequest(f"u{u}", "user", int(u), None, "2026-01-31", "") for u in users]
    reqs_i = _interaction_requests(ds, rng)
    regimes = {}
    for name, reqs, seeds in (
        ("user", reqs_u, (*CAL_SEEDS, REF_SEED, *SECOND_SEEDS)),
        ("inter", reqs_i, (*CAL_SEEDS, REF_SEED, SECOND_SEEDS[0])),
    ):
        csv = root / f"requests-{name}.csv"
        write_requests(csv, reqs)
        spec = resolve_requests(ds, reqs)
        orig = open_run(root / "original", ds, requests=spec.requests)
        runs = train_retrains(ds, spec, orig, seeds, root / f"retrains-{name}")
        cal = calibrate(ds, spec, orig, runs[: len(CAL_SEEDS)], seeds=(0, 1, 2), options=CertWorld.options())
        cal.write(root / f"cal-{name}")
        regimes[name] = Regime(
            spec, csv, {s: mr.folder for s, mr in zip(seeds, runs)}, cal, root / f"cal-{name}"
        )
    spec_i, spec_u = regimes["inter"].spec, regimes["user"].spec
    # a weak unlearner: 3 epochs of fine-tuning on D_r
    tcfg = load_config("vbpr", overrides=recipe(epochs=3))
    tuned = copy.deepcopy(original.model)
    t0 = time.perf_counter()
    Trainer(tuned, ds, tcfg, train=spec_i.retain, log=lambda _s: None).fit()
    n = sum(p.numel() for p in tuned.parameters())
    meta = {
        "method": "finetune",
        "seconds": time.perf_counter() - t0,
        "steps": 15,
        "params_changed": n,
        "params_total": n,
        "alpha_history": [{"step": s, "alpha": {"id": 1 - s / 40, "image": 0.5}} for s in (0, 5, 10)],
        "config": {"seed": 3},
    }
    _save_candidate(root / "tuned", tuned, cfg, ds, spec_i, original.weights_sha256, meta)
    # the original's weights relabelled as an unlearned model (nothing removed)
    meta0 = {"method": "none", "seconds": 0.01, "steps": 0, "params_changed": 0, "params_total": n}
    _save_candidate(root / "same", original.model, cfg, ds, spec_u, original.weights_sha256, meta0)
    # rebuild only: the rebuild from D_r and the exact part (deleted users' rows at their initial value)
    rebuilt = copy.deepcopy(original.model)
    rebuilt.rebuild(spec_u.retain)
    rebuilt.reset_untrained_rows(spec_u.retain, 3)
    meta_r = meta0 | {"method": "tru", "config": {"seed": 3}, "params_changed": 1}
    _save_candidate(root / "rebuilt", rebuilt, cfg, ds, spec_u, original.weights_sha256, meta_r)
    return CertWorld(
        root, root / "data", ds, cfg, root / "original", regimes["user"], regimes["inter"], root / "tuned",
        root / "same", root / "rebuilt",
    )  # fmt: skip


@pytest.fixture(scope="session", name="cert_world")
def cert_world_fixture(tmp_path_factory: pytest.TempPathFactory) -> CertWorld:
    """The session's :class:`CertWorld` (import this into a test module to use ``cert_world``). Built
    once per session: each module that imports the fixture holds its own definition, so the world is
    cached here."""
    if "world" not in _CACHE:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _CACHE["world"] = build_world(tmp_path_factory.mktemp("cert-world"))
        finally:
            torch.set_num_threads(threads)
    return _CACHE["world"]


_CACHE: dict[str, CertWorld] = {}
