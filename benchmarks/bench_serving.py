#!/usr/bin/env python
"""Predict latency of the servable champion, p50 / p99 for 1 and 100 users per request.

    python benchmarks/bench_serving.py                                   # synthetic preset, MGCN at init
    python benchmarks/bench_serving.py --data data/lfm2k --model runs/lfm2k-mgcn [--reps 200] [--k 20] \\
        [--http] [--json out.json]

The model (a run folder written by ``tru train`` / ``tru unlearn``, or a freshly initialised MGCN on a
synthetic dataset) is exported with :func:`tru.serving.build_servable` over its train set (D_r for an
unlearned run), logged with :func:`tru.serving.log_servable` into a throw-away sqlite MLflow store,
registered as ``tru-<dataset>-<backbone>`` with alias ``champion`` and loaded back with
``mlflow.pyfunc.load_model("models:/…@champion")``. Timed, per batch size, ``reps`` requests of distinct
random users each (after ``warmup`` untimed ones), in one process:

* ``pyfunc``: ``loaded.predict(DataFrame, params={"k": k})``, what an in-process caller pays (MLflow's
  schema enforcement included);
* ``core``: ``TruRecommender.recommend`` alone (matmul, masking, top-K, output frame);
* ``http`` (``--http``): a POST of ``dataframe_split`` to a real ``mlflow models serve`` on the champion
  (``--env-manager local``, one worker), client and server on this machine.

BLAS threads: ``--blas-threads`` (default 1) limits them in this process (threadpoolctl) and in the server
(``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS``). A request is a (users × d) by (d × items) product, far
too small to share among threads: measured here on a busy 2-core machine, 100 users × 1425 items took
0.2 ms with one OpenBLAS thread and 4.2 ms with the default two.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

BATCHES = (1, 100)


def synthetic(folder: Path, n_users: int, n_items: int, per_user: int, seed: int) -> Path:
    """A dataset with latent structure (users pick items by affinity + Gumbel noise), two modalities."""
    from tru.data.dataset import mmrec_split, write_dataset

    rng = np.random.default_rng(seed)
    uf, vf = rng.normal(size=(n_users, 8)), rng.normal(size=(n_items, 8))
    scores = uf @ vf.T + rng.gumbel(size=(n_users, n_items))
    items = np.argsort(-scores, axis=1)[:, :per_user].reshape(-1)
    users = np.repeat(np.arange(n_users), per_user)
    df = pd.DataFrame({"userID": users, "itemID": items, "rating": 1, "x_label": mmrec_split(users, rng)})
    feats = {
        m: (np.tanh(vf @ rng.normal(size=(8, d))) + 0.5 * rng.normal(size=(n_items, d))).astype(np.float32)
        for m, d in (("image", 64), ("text", 32))
    }
    write_dataset(folder, "synthetic", df, feats, source={"kind": "benchmark"})
    return folder


def load_model(args: argparse.Namespace, tmp: Path) -> tuple[Any, Any, str, str | None]:
    """(model, retain pairs, dataset name, request commitment) from a run folder, or an initialised MGCN
    on synthetic data."""
    from tru.checkpoint import load_run
    from tru.config import load_config
    from tru.data.dataset import load_dataset
    from tru.models import build_backbone

    if args.model:
        ds = load_dataset(args.data)
        run = load_run(args.model, ds, device="cpu")
        forgotten = getattr(run, "forgotten", None)
        return run.model, run.train, ds.name, getattr(forgotten, "commitment", "") or None
    data = synthetic(tmp / "data", args.users, args.items, args.per_user, seed=0)
    ds = load_dataset(data, validate=False)
    model = build_backbone("mgcn", ds, load_config("mgcn", overrides={"device": "cpu"}))
    return model, ds.train, ds.name, None


def percentiles(
    fn: Callable[[np.ndarray], Any], pool: np.ndarray, batch: int, reps: int, warmup: int
) -> dict[str, float]:
    rng = np.random.default_rng(batch)
    for _ in range(warmup):
        fn(rng.choice(pool, batch, replace=False))
    times = []
    for _ in range(reps):
        users = rng.choice(pool, batch, replace=False)
        t = time.perf_counter()
        fn(users)
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": reps}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(
    model_uri: str, tracking_uri: str, log: Path, blas_threads: int
) -> tuple[subprocess.Popen[bytes], str]:
    """``mlflow models serve`` on ``model_uri``; returns the process and its URL once /ping answers."""
    port = free_port()
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(exe), "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1"]
    cmd += ["-p", str(port), "-w", "1"]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # it execs uvicorn
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": path}
    env |= {v: str(blas_threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/ping", timeout=2) as resp:
                if resp.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.3)
    stop(proc)
    raise RuntimeError(f"mlflow models serve did not answer /ping:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def post(url: str, users: np.ndarray, k: int) -> None:
    body = {
        "dataframe_split": {"columns": ["user_id"], "data": [[int(u)] for u in users]},
        "params": {"k": k},
    }
    req = urllib.request.Request(
        url + "/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
        resp.read()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="dataset folder (with --model)")
    ap.add_argument("--model", type=Path, help="run folder (model.pt + run.json)")
    ap.add_argument("--users", type=int, default=2000, help="synthetic preset: users")
    ap.add_argument("--items", type=int, default=1500, help="synthetic preset: items")
    ap.add_argument("--per-user", type=int, default=30, help="synthetic preset: interactions per user")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--http", action="store_true", help="also time POST /invocations on mlflow models serve")
    ap.add_argument("--blas-threads", type=int, default=1, help="BLAS threads, here and in the server")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    if bool(args.model) != bool(args.data):
        ap.error("--model and --data go together (or neither, for the synthetic preset)")

    import mlflow
    from threadpoolctl import threadpool_limits

    from tru.serving import build_servable, log_servable
    from tru.serving.pyfunc import TruRecommender

    threadpool_limits(limits=args.blas_threads, user_api="blas")
    with tempfile.TemporaryDirectory(prefix="tru-bench-serving-") as tmp_s:
        tmp = Path(tmp_s)
        model, retain, dataset, commitment = load_model(args, tmp)
        t = time.perf_counter()
        arrays = build_servable(model, retain, dataset_name=dataset, request_commitment=commitment)
        export_s = time.perf_counter() - t
        tracking = f"sqlite:///{tmp / 'mlflow.db'}"
        mlflow.set_tracking_uri(tracking)
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("bench", (tmp / "art").as_uri()))
        name = f"tru-{dataset}-{arrays.meta.backbone}"
        with mlflow.start_run():
            uri = log_servable(arrays)
        version = mlflow.register_model(uri, name).version
        mlflow.MlflowClient().set_registered_model_alias(name, "champion", version)
        t = time.perf_counter()
        loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
        load_s = time.perf_counter() - t
        core = TruRecommender.from_npz(str(arrays.save(tmp / "servable.npz")))
        pool = np.flatnonzero(arrays.personalised)
        ks = lambda n: np.full(n, args.k, dtype=np.int64)  # noqa: E731
        arms: dict[str, Callable[[np.ndarray], Any]] = {
            "pyfunc": lambda u: loaded.predict(pd.DataFrame({"user_id": u}), params={"k": args.k}),
            "core": lambda u: core.recommend(u, ks(len(u))),
        }
        rows = []
        proc = None
        try:
            if args.http:
                proc, url = serve(f"models:/{name}@champion", tracking, tmp / "serve.log", args.blas_threads)
                arms["http"] = lambda u: post(url, u, args.k)
            for arm, fn in arms.items():
                for batch in BATCHES:
                    rows.append(
                        {"arm": arm, "users": batch, **percentiles(fn, pool, batch, args.reps, args.warmup)}
                    )
        finally:
            if proc is not None:
                stop(proc)
    result = {
        "dataset": dataset,
        "backbone": arrays.meta.backbone,
        "n_users": arrays.meta.n_users,
        "n_items": arrays.meta.n_items,
        "dim": arrays.meta.dim,
        "k": args.k,
        "blas_threads": args.blas_threads,
        "export_s": export_s,
        "load_s": load_s,
        "rows": rows,
    }
    meta = arrays.meta
    print(
        f"{dataset} / {meta.backbone}: {meta.n_users} users × {meta.n_items} items, d = {meta.dim}, "
        f"k = {args.k}, BLAS threads {args.blas_threads}; export {export_s:.2f} s, "
        f"pyfunc.load_model {load_s:.2f} s"
    )
    print("\n| arm | users / request | p50 ms | p99 ms | requests |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arm']} | {r['users']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['n']} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
