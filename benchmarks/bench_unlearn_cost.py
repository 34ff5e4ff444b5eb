#!/usr/bin/env python
"""Cost of an unlearning step against a training step, before and after, side by side in one run.

    python benchmarks/bench_unlearn_cost.py --data data/lfm2k --backbone mgcn --regime interaction user \\
        [--before 88a9f0f] [--steps 60] [--rounds 2] [--json out.json]

Each arm runs in its own interpreter (``--arm``, one thread): ``after`` is this working tree's package,
``before`` the package of the git revision ``--before`` (extracted with ``git archive`` into a temporary
folder, nothing in the working tree changes). Per arm, on the same model (``--weights``: trained weights,
else a fresh initialisation, seed 0) and the seeded 5 % random requests of the regime:

* a training step: one epoch of the BPR trainer on the full train set after one warm-up epoch, as
  ``Trainer.fit`` runs it in that arm's package, seconds per batch;
* an unlearning step: ``run_unlearning("tru", ...)`` for ``--steps`` steps (forget target and guard off,
  so every arm runs the same number of steps), everything included (retrain-free target, probe, gate
  refreshes, checks), seconds per step, after a one-step warm-up run (lazy imports);
* process start-up: a fresh interpreter importing what ``tru unlearn`` imports.

Reported per arm: CPU seconds (``time.process_time``: the work, robust to other load on a shared machine)
and wall seconds; the step / training-batch ratio; and after / before for each. Arms alternate per round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def arm(
    data: Path, backbone: str, regime: str, steps: int, extra: dict[str, Any], weights: Path | None
) -> dict[str, Any]:
    """Measure one arm in this interpreter (the package on sys.path is the arm's)."""
    import copy

    import torch

    from tru.config import load_config
    from tru.data.dataset import load_dataset
    from tru.forget.generate import generate_requests
    from tru.forget.requests import resolve_requests
    from tru.models import build_backbone
    from tru.train.trainer import Trainer
    from tru.unlearn.api import run_unlearning, unlearn_config

    torch.set_num_threads(1)
    ds = load_dataset(data, validate=False)
    cfg = load_config(backbone, ds.name, overrides={"seed": 0, "device": "cpu"})
    model = build_backbone(backbone, ds, cfg)
    if weights is not None:  # a trained model (its state dict under "state_dict", or the state dict)
        state = torch.load(weights, weights_only=True)
        model.load_state_dict(state.get("state_dict", state))
    spec = resolve_requests(ds, generate_requests(ds, regime, "random", 0.05, 0))
    trainer = Trainer(copy.deepcopy(model), ds, cfg, log=lambda _s: None)
    n_batches = -(-len(ds.train) // int(cfg["train_batch_size"]))
    try:  # as Trainer.fit runs an epoch in this arm's package (denormals flushed where it does so)
        from tru.train.trainer import flushed_denormals

        context = flushed_denormals(bool(cfg.get("flush_denormal", True)))
    except ImportError:
        import contextlib

        context = contextlib.nullcontext()
    with context:
        trainer.train_epoch(0)  # warm-up
        c0, t0 = time.process_time(), time.perf_counter()
        trainer.train_epoch(1)
        train_cpu, train_wall = time.process_time() - c0, time.perf_counter() - t0
    over = {"max_steps": steps, "stop_on_target": False, "min_retain_ratio": 0.0, **extra}
    # warm-up: a one-step run pays the lazy imports (torch._dynamo on the first optimiser, ...) outside the
    # clock, as a long-running worker would have paid them already (start-up is measured on its own)
    run_unlearning("tru", model, ds, spec, cfg, unlearn_config(cfg, {**over, "max_steps": 1}))
    ucfg = unlearn_config(cfg, over)
    c0, t0 = time.process_time(), time.perf_counter()
    out = run_unlearning("tru", model, ds, spec, cfg, ucfg)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    n = max(int(out.report["steps"]), 1)
    return {
        "train_cpu_per_batch": train_cpu / n_batches,
        "train_wall_per_batch": train_wall / n_batches,
        "step_cpu": cpu / n,
        "step_wall": wall / n,
        "steps": n,
    }


def startup(src: Path) -> float:
    """Wall seconds for a fresh interpreter to import what ``tru unlearn`` imports."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    code = "import tru.unlearn.api, tru.commands.unlearn"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.perf_counter() - t0


def run_arm(src: Path, args: argparse.Namespace, regime: str, extra: str = "") -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--arm", "--data", str(args.data), "--backbone", args.backbone]
    cmd += ["--regime", regime, "--steps", str(args.steps)] + (["--set", extra] if extra else [])
    cmd += ["--weights", str(args.weights)] if args.weights else []
    res = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--backbone", default="mgcn")
    ap.add_argument("--regime", nargs="+", default=["interaction"])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--before", default="88a9f0f", help="git revision of the 'before' arm")
    ap.add_argument("--arm", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="an extra 'after' arm with these options (e.g. bms=false)",
    )
    ap.add_argument("--set", default="", help=argparse.SUPPRESS)
    ap.add_argument("--weights", type=Path, help="start from these trained weights (default: fresh init)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.arm:
        import yaml

        extra = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set.split(",") if kv)}
        print(json.dumps(arm(args.data, args.backbone, args.regime[0], args.steps, extra, args.weights)))
        return
    with tempfile.TemporaryDirectory(prefix="tru-before-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", args.before, "src"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        srcs = {"before": Path(tmp) / "src", "after": REPO / "src"}
        arms = {"before": (srcs["before"], ""), "after": (srcs["after"], "")}
        arms.update({f"after[{v}]": (srcs["after"], v) for v in args.variant})
        results: dict[str, Any] = {}
        for regime in args.regime:
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in arms}
            for _ in range(args.rounds):
                for name, (src, extra) in arms.items():
                    runs[name].append(run_arm(src, args, regime, extra))
            results[regime] = {
                name: {k: statistics.mean(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()
            }
        boot = {name: statistics.mean(startup(src) for _ in range(args.rounds)) for name, src in srcs.items()}
    print(f"{args.data.name} × {args.backbone}, {args.steps} steps, {args.rounds} rounds (CPU s; wall s)")
    print(f"{'regime':12s} {'arm':16s} {'train/batch':>18s} {'step':>18s} {'step/batch':>10s}")
    for regime, cell in results.items():
        for name, r in cell.items():
            ratio = r["step_cpu"] / r["train_cpu_per_batch"]
            r["step_per_batch_cpu"] = ratio
            print(
                f"{regime:12s} {name:16s} {r['train_cpu_per_batch']:7.3f}; {r['train_wall_per_batch']:7.3f}  "
                f"{r['step_cpu']:7.3f}; {r['step_wall']:7.3f}  {ratio:9.2f}x"
            )
        b, a = cell["before"], cell["after"]
        print(f"{regime:12s} after/before: step CPU {a['step_cpu'] / b['step_cpu']:.2f}x")
    print(f"start-up (import for `tru unlearn`): before {boot['before']:.2f}s, after {boot['after']:.2f}s")
    if args.json:
        args.json.write_text(json.dumps({"cells": results, "startup": boot}, indent=2))


if __name__ == "__main__":
    main()
