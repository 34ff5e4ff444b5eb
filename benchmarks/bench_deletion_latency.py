#!/usr/bin/env python
"""Time from a committed deletion request to a champion that forgot it: the fast path against a pipeline
that retrains every time, side by side from the same starting champion, in one run.

    python benchmarks/bench_deletion_latency.py --data data/lfm2k [--backbone mgcn] [--epochs 50] \\
        [--runner kfp|steps] [--work scratch/latency] [--json out.json]

Set-up (not timed): a git + DVC repository holding the dataset and an empty manifest, a local MLflow
registry, a champion made by a first deletion (train + TRU + retrain comparison), and a calibration of
the certificate for a deletion of that size (``tru calibrate``: K = 3 retrains of the champion's recipe
on one same-sized user's deletion; a one-off per model and data version, reused by every later
certificate of a deletion of similar size). Then, for each arm,
from that same state (the registry and the repository are restored between arms): the clock starts,
``tru requests add --user U --commit`` records one user's deletion as a DVC commit, ``tru trigger`` runs
the pipeline (``kfp.local`` by default) and the clock stops when the registry's champion has forgotten
the request. Arms:

* ``fast path``: TRU, certified retrain-free (the proxy targets) with the stored calibration's
  tolerances, promoted with ``confirmed=false``;
* ``retrain every time``: the pipeline's unlearning step is a full retrain on D_r (certified by
  construction);
* ``TRU + retrain comparison``: TRU certified against a retrain trained in the same run (the default).

Reported: wall seconds per arm and the ratio to retrain-every-time (this machine is noisy: read ratios)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

ARMS = {
    "fast path (TRU, retrain-free certificate)": {"method": "tru", "retrain": False, "calibrated": True},
    "retrain every time": {"method": "retrain", "retrain": True, "calibrated": False},
    "TRU + retrain comparison": {"method": "tru", "retrain": True, "calibrated": True},
}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def build_repo(data: Path, work: Path) -> Path:
    from dvc.repo import Repo

    from tru.forget.requests import write_requests

    repo = work / "repo"
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    Repo.init(str(repo)).close()
    shutil.copytree(data, repo / "data" / data.name)
    (repo / "data" / "deletions").mkdir()
    write_requests(repo / "data" / "deletions" / "requests.csv", [])
    with Repo(str(repo)) as r:
        r.add(str(repo / "data"))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "dataset and an empty manifest")
    return repo


def one_deletion(repo: Path, user: int, rid: str, runner: Any, opts: dict[str, Any]) -> tuple[float, dict]:
    """Seconds from `requests add --commit` to the champion having forgotten ``rid``."""
    from tru.mlops import registry
    from tru.mlops.trigger import trigger
    from tru.mlops.versioning import requests_add

    t0 = time.perf_counter()
    requests_add(repo, user=user, reason="benchmark", request_id=rid, commit=True, push=False)
    entry = trigger(repo, "HEAD", runner=runner, **opts)
    seconds = time.perf_counter() - t0
    assert rid in registry.forgotten_requests(entry["model_name"]), entry
    return seconds, entry


def snapshot(work: Path, tag: str) -> Path:
    """The registry at this point: the sqlite file and the artifact folder."""
    dest = work / f"snapshot-{tag}"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    shutil.copy2(work / "mlruns.db", dest / "mlruns.db")
    shutil.copytree(work / "mlartifacts", dest / "mlartifacts")
    return dest


def restore(work: Path, snap: Path, repo: Path, sha: str, arm: int) -> None:
    """Back to the snapshot: the registry (a fresh copy of the database under a new name, so that no open
    connection sees the old one; the artifacts where the database expects them) and the repository."""
    from tru.mlops import tracking
    from tru.mlops.versioning import _dvc

    db = work / f"mlruns-{arm}.db"
    shutil.copy2(snap / "mlruns.db", db)
    shutil.rmtree(work / "mlartifacts")
    shutil.copytree(snap / "mlartifacts", work / "mlartifacts")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{db}"
    tracking.configure()
    _git(repo, "reset", "-q", "--hard", sha)
    with _dvc(repo) as r:
        r.checkout(force=True)
    shutil.rmtree(repo / ".tru" / "kfp", ignore_errors=True)
    shutil.rmtree(repo / ".tru" / "runs", ignore_errors=True)


def calibrate_for(repo: Path, ds: Any, user: int, backbone: str, work: Path) -> Path:
    """A calibration of the champion's certificate for the target a one-user deletion gives (what the
    champion forgot plus one user of the same size class): K = 3 retrains (``tru calibrate``)."""
    from tru.certify.calibration import run_calibration
    from tru.forget.requests import DeletionRequest, read_requests, write_requests
    from tru.mlops import registry, tracking

    name = tracking.model_name(ds.name, backbone)
    manifest = read_requests(repo / "data" / "deletions" / "requests.csv")
    forgotten = registry.forgotten_requests(name)
    probe = DeletionRequest("r-calibration", "user", user, None, "2026-11-30T00:00:00Z", "calibration")
    csv = write_requests(
        work / "calibration-requests.csv", [*[r for r in manifest if r.request_id in forgotten], probe]
    )
    _version, champion = registry.champion(name, work / "champion")
    out = work / "calibration"
    run_calibration(repo / "data" / ds.name, champion, csv, out, k=3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a prepared dataset folder (tru data prepare)")
    ap.add_argument("--backbone", default="mgcn")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--runner", choices=("kfp", "steps"), default="kfp")
    ap.add_argument("--work", type=Path, default=Path("scratch/latency"))
    ap.add_argument("--seed", type=int, default=0, help="picks the two deleted users")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from tru.data.dataset import load_dataset
    from tru.mlops import tracking

    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlruns.db'}"
    os.environ["TRU_MLFLOW_ARTIFACTS"] = (work / "mlartifacts").as_uri()
    tracking.configure()
    if args.runner == "kfp":
        from tru.kfp.runner import run_for_trigger as runner
    else:
        from tru.steps.chain import run_for_trigger as runner
    ds = load_dataset(args.data, validate=False)
    deg = np.bincount(ds.train.users, minlength=ds.n_users)
    band = np.flatnonzero((deg >= np.quantile(deg, 0.45)) & (deg <= np.quantile(deg, 0.55)))  # similar sizes
    users = np.random.default_rng(args.seed).choice(band, 3, replace=False)
    repo = build_repo(args.data.resolve(), work)
    opts = {"backbone": args.backbone, "epochs": args.epochs, "audit_seeds": "0,1,2"}
    t0 = time.perf_counter()
    boot, _ = one_deletion(repo, int(users[0]), "r-boot", runner, {**opts, "method": "tru", "retrain": True})
    print(f"set-up: the first champion (train + TRU + retrain comparison) in {boot:.1f} s", flush=True)
    t1 = time.perf_counter()
    calibration = calibrate_for(repo, ds, int(users[2]), args.backbone, work)
    print(f"set-up: the calibration (K = 3 retrains) in {time.perf_counter() - t1:.1f} s", flush=True)
    sha, snap = _git(repo, "rev-parse", "HEAD").strip(), snapshot(work, "champion")
    rows = []
    for k, (arm, extra) in enumerate(ARMS.items()):
        if k:
            restore(work, snap, repo, sha, k)
        calibrated = extra.pop("calibrated")
        extra = {**extra, "calibration": str(calibration) if calibrated else ""}
        seconds, entry = one_deletion(repo, int(users[1]), "r-user", runner, {**opts, **extra})
        res = entry["result"]
        rows.append({"arm": arm, "seconds": round(seconds, 1), "evidence": res.get("evidence"),
                     "version": res.get("version"), "pipeline_seconds": res.get("seconds")})  # fmt: skip
        print(f"{arm}: {seconds:.1f} s ({res.get('evidence')})", flush=True)
    ref = next(r["seconds"] for r in rows if r["arm"] == "retrain every time")
    print(f"\n{ds.name} × {args.backbone}, {args.epochs} epochs, runner {args.runner}, one user's deletion")
    print(f"{'arm':<44} {'seconds':>8} {'× retrain-every-time':>21}  evidence")
    for r in rows:
        print(f"{r['arm']:<44} {r['seconds']:>8.1f} {r['seconds'] / ref:>21.2f}  {r['evidence']}")
    print(f"(total {time.perf_counter() - t0:.0f} s)")
    if args.json:
        args.json.write_text(
            json.dumps({"dataset": ds.name, "backbone": args.backbone, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
