#!/usr/bin/env python
"""The item regime's exact part against retrain: how closely the emulated start ranks the deleted items.

    python benchmarks/bench_item_emulation.py --bench scratch/bench2/run-ml100k \\
        --data scratch/bench2/ml100k --seeds 10 11 [--backbone mgcn] [--size 0.05] [--out results.csv]

Reads the cached cells of a ``tru bench`` output folder (the original, the requests, the K retrains; nothing
is trained) and, per seed, measures the rank percentiles of the deleted pairs D_f (:mod:`tru.eval.rank`)
under the reference retrain and under four models, each as its W₁ distance to the reference:

* ``retrain-k``: the other retrains (seeds s + 1000·k): retrain's own spread, the scale of the tolerance;
* ``rebuilt``: the original rebuilt on D_r (its item rows still hold what D_f taught them);
* ``reset``: the deleted items' rows at their seeded initial values (what retraining starts from);
* ``emulated``: the exact part (:func:`tru.unlearn.emulate.emulate_deleted_items`: the reset rows, then
  retraining's negative-only updates emulated against the frozen rest), what TRU starts from.

Also the mean percentile of each (0 = top), and the emulation's CPU seconds against the reference retrain's
(``bench.json``) in the same folder. One thread.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tru.bench import Bench, BenchConfig, Cell
from tru.data.dataset import load_dataset
from tru.eval.rank import rank_percentiles, wasserstein1
from tru.forget.spec import ForgetSpec
from tru.models.base import Recommender
from tru.unlearn.api import unlearn_config
from tru.unlearn.emulate import emulate_deleted_items


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--bench", type=Path, required=True, help="a tru bench output folder with the cached cells"
    )
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    ap.add_argument("--backbone", default="mgcn")
    ap.add_argument("--size", default="0.05")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ds = load_dataset(args.data)
    cfg = BenchConfig(
        datasets=[str(args.data)], backbones=[args.backbone], regimes=["item"], seeds=args.seeds
    )
    bench = Bench(cfg, args.bench)
    rows = []
    for seed in args.seeds:
        cell = Cell(ds, args.backbone, "item", args.size, seed, "random")
        if not (bench.out / "models" / "retrain" / cell.name).is_dir():
            print(f"{cell.name}: no cached retrains in {args.bench}", file=sys.stderr)
            return 2
        original = bench.original(cell)
        spec = bench.spec(cell)
        retrains = bench.retrains(cell, original)

        def pct(model: Recommender, spec: ForgetSpec = spec) -> np.ndarray:
            with torch.no_grad():
                return rank_percentiles(model, spec.forget, spec.retain, ds.n_users, ds.n_items)

        ref = pct(retrains[0].run.model)
        models: dict[str, tuple[np.ndarray, float]] = {}
        for k, mr in enumerate(retrains[1:], 1):
            models[f"retrain-{k}"] = (pct(mr.run.model), float("nan"))
        rebuilt = copy.deepcopy(original.run.model)
        rebuilt.rebuild(spec.retain)
        models["rebuilt"] = (pct(rebuilt), float("nan"))
        reset = copy.deepcopy(rebuilt)
        reset.reset_item_rows(np.asarray(spec.items), seed)
        models["reset"] = (pct(reset), float("nan"))
        emulated = copy.deepcopy(rebuilt)
        seed_used = unlearn_config(original.run.config, {"seed": seed}).seed
        c0 = time.process_time()
        emulate_deleted_items(emulated, spec.retain, np.asarray(spec.items), seed_used)
        models["emulated"] = (pct(emulated), time.process_time() - c0)
        ref_cpu = json.loads((retrains[0].folder / "bench.json").read_text())["cpu_seconds"]
        for name, (p, cpu) in models.items():
            row = {
                "dataset": ds.name, "backbone": args.backbone, "seed": seed, "model": name,
                "n_items": len(spec.items), "n_pairs": len(spec.forget),
                "w1_to_retrain": round(wasserstein1(p, ref), 4), "mean_pct": round(float(p.mean()), 3),
                "retrain_mean_pct": round(float(ref.mean()), 3),
                "cpu_seconds": round(cpu, 2) if cpu == cpu else "",
                "cpu_ratio": round(cpu / ref_cpu, 4) if cpu == cpu else "",
            }  # fmt: skip
            rows.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if args.out:
        with open(args.out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
