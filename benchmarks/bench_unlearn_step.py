#!/usr/bin/env python
"""Seconds per reverse-update step and per sensitivity probe: one shared forward pass against one forward
pass per loss, side by side in the same process.

    python benchmarks/bench_unlearn_step.py --data data/lfm2k --backbone mgcn miggt --steps 20 \\
        [--threads 2] [--rounds 3] [--json out.json]

An unlearning step needs the D_f pair scores and the D_r training loss. The engine takes both from one
``model.training_state()`` (``loss_from_state``); the "separate" arm recomputes the forward for the retain
loss (``calculate_loss``), which is what a backbone without a ``training_state`` override costs (and what
MGCN and MIG-GT cost before they had one). The probe arm compares the shared-forward probe of
``tru.unlearn.isolation.probe`` with the literal per-batch recipe (2P forwards and backwards, P =
``probe_batches``). Arms alternate per round to even out load drift; reported are the mean seconds and
the ratio separate / shared. The model is freshly initialised (timing does not depend on its training);
the forget set is the benchmark's seeded 5 % random interaction requests (seed 0).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tru.config import load_config
from tru.data.dataset import load_dataset
from tru.forget.generate import generate_requests
from tru.forget.requests import resolve_requests
from tru.models import build_backbone
from tru.unlearn.api import unlearn_config
from tru.unlearn.engine import make_streams
from tru.unlearn.isolation import probe
from tru.unlearn.losses import pair_scores, reverse_bpr


def step_arm(model: Any, streams: tuple[Any, Any], shared: bool) -> Callable[[], None]:
    """One reverse-BPR + retain-loss backward and Adam step, with a shared or a recomputed forward."""
    fstream, rstream = streams
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)

    def run() -> None:
        bf, br = fstream.next(), rstream.next()
        state = model.training_state()
        l_f = reverse_bpr(*pair_scores(*model.state_embeddings(state), bf))
        l_r = model.loss_from_state(state, br) if shared else model.calculate_loss(br)
        opt.zero_grad(set_to_none=True)
        (l_f + l_r).backward()
        opt.step()

    return run


def per_batch_probe(model: Any, streams: tuple[Any, Any], batches: int) -> None:
    """The literal §6 recipe: every batch its own forward and backward, gradients summed."""
    fstream, rstream = streams
    params = [p for p in model.parameters() if p.requires_grad]
    acc = [torch.zeros_like(p) for p in params]
    for _ in range(batches):
        bf, br = fstream.next(), rstream.next()
        l_f = reverse_bpr(*pair_scores(*model.forward(), bf))
        for loss in (l_f, model.calculate_loss(br)):
            for a, g in zip(acc, torch.autograd.grad(loss, params, allow_unused=True)):
                if g is not None:
                    a += g


def timed(fn: Callable[[], None], repeat: int) -> float:
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def bench_backbone(data: Path, backbone: str, steps: int, rounds: int) -> dict[str, Any]:
    ds = load_dataset(data)
    cfg = load_config(backbone, overrides={"device": "cpu", "seed": 0})
    model = build_backbone(backbone, ds, cfg)
    spec = resolve_requests(ds, generate_requests(ds, "interaction", "random", 0.05, 0))
    model.rebuild(spec.retain)
    model.unlearning_mode()
    ucfg = unlearn_config(cfg, {})
    streams = lambda: make_streams(model, spec, ds.n_users, ds.n_items, ucfg)  # noqa: E731
    p = int(ucfg.get("probe_batches", 10))
    arms: dict[str, Callable[[], float]] = {
        "step_shared": lambda: timed(step_arm(model, streams(), True), steps),
        "step_separate": lambda: timed(step_arm(model, streams(), False), steps),
        "probe_shared": lambda: timed(lambda: probe(model, spec, *streams(), ucfg), 1),
        "probe_per_batch": lambda: timed(lambda: per_batch_probe(model, streams(), p), 1),
    }
    for fn in arms.values():  # warm-up: lazy imports, allocator, CSR caches
        fn()
    seconds: dict[str, list[float]] = {k: [] for k in arms}
    for _ in range(rounds):
        for k, fn in arms.items():
            seconds[k].append(fn())
    mean = {k: statistics.mean(v) for k, v in seconds.items()}
    return {
        "dataset": ds.name,
        "backbone": backbone,
        "probe_batches": p,
        "seconds": mean,
        "step_ratio": mean["step_separate"] / mean["step_shared"],
        "probe_ratio": mean["probe_per_batch"] / mean["probe_shared"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--backbone", nargs="+", default=["mgcn", "miggt"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = [bench_backbone(args.data, b, args.steps, args.rounds) for b in args.backbone]
    print(
        f"{'backbone':8s} {'step shared':>12s} {'separate':>9s} {'ratio':>6s}   "
        f"{'probe shared':>12s} {'per-batch':>9s} {'ratio':>6s}"
    )
    for r in rows:
        s = r["seconds"]
        print(
            f"{r['backbone']:8s} {s['step_shared']:11.3f}s {s['step_separate']:8.3f}s "
            f"{r['step_ratio']:5.2f}x   {s['probe_shared']:11.3f}s {s['probe_per_batch']:8.3f}s "
            f"{r['probe_ratio']:5.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
