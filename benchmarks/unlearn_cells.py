#!/usr/bin/env python
"""Focused unlearning cells against retrain: TRU, its ablations and the baselines, one row per method.

    python benchmarks/unlearn_cells.py --data data/lfm2k --backbone mgcn --regime user item interaction \\
        --seeds 10 --cache scratch/models --out scratch/cells.csv [--methods tru mmrecun ...] [--threads 1]

Per (dataset, backbone, seed) the original is trained once with the production recipe (the packaged
config: early stopping on valid Recall@20, patience 20; its epochs are recorded) and cached; per regime
the requests are the seeded 5 % random ones (``tru.forget.generate``, seed = the cell's seed) and the
retrained model (from scratch on D_r, same config and seed) is trained once and cached. Every method then
starts from the original and is compared with that retrain:

    forget_hr_gap = HR@20(D_f) − retrain's          rank_w1 = W₁(D_f rank percentiles, retrain's)
    mia_gap       = |AUC − retrain's AUC|           (interaction-level audit, tru.certify.mia, 3 seeds)
    retain_ratio  = test Recall@20 / retrain's      time_ratio = seconds / retrain's seconds (wall)
    cpu_ratio     = CPU seconds / retrain's CPU seconds (its epochs × one epoch + evaluation, measured now)

``rebuild`` is the original with the graphs rebuilt from D_r (no exact part, no update); ``exact`` adds the
exact part (tru-method.md §7a). ``no_update`` marks a method that returned its starting point (target met
there, or every update rolled back by the guard): such a row is "no update" in every table. Wall-clock
seconds on a shared machine are noisy: compare ratios measured under the same load.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tru.bench import METHODS as BENCH_METHODS
from tru.config import load_config
from tru.data.dataset import RecDataset, load_dataset
from tru.eval.evaluator import evaluate_pairs
from tru.eval.rank import rank_counts, rank_distance
from tru.forget.generate import generate_requests
from tru.forget.requests import resolve_requests
from tru.models import build_backbone
from tru.models.base import Recommender
from tru.train.trainer import Trainer, flushed_denormals
from tru.unlearn.api import run_unlearning, unlearn_config

#: method label -> (engine method, option overrides)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "rebuild": ("mmrecun", {"exact": False, "max_steps": 0}),
    "exact": ("mmrecun", {"max_steps": 0}),
    **BENCH_METHODS,  # the benchmark's methods and ablations, one table
}
COLUMNS = (
    "dataset", "backbone", "regime", "seed", "method", "seconds", "time_ratio", "cpu_seconds", "cpu_ratio",
    "steps", "no_update",
    "params_updated", "stop_reason", "forget_hr", "forget_hr_gap", "rank_w1", "rank_shift", "mia_auc",
    "mia_gap", "retain_recall@20", "retain_ratio",
)  # fmt: skip


def _save(folder: Path, model: Recommender, cfg: dict[str, Any], meta: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {"state_dict": model.state_dict(), "config": cfg, "backbone": model.name}
    torch.save(state, folder / "weights.pt")
    (folder / "meta.json").write_text(json.dumps(meta, default=str))


def _load(folder: Path, ds: RecDataset, train: Any = None) -> tuple[Recommender, dict, dict]:
    p = torch.load(folder / "weights.pt", weights_only=True)
    model = build_backbone(p["backbone"], ds, p["config"])
    if train is not None:
        model.rebuild(train)
    model.load_state_dict(p["state_dict"])
    return model, p["config"], json.loads((folder / "meta.json").read_text())


def trained(ds: RecDataset, backbone: str, seed: int, cache: Path) -> tuple[Recommender, dict, dict]:
    """The original (cached): the packaged production recipe with ``seed``."""
    folder = cache / f"{ds.name}-{backbone}-s{seed}"
    if (folder / "weights.pt").is_file():
        return _load(folder, ds)
    cfg = load_config(backbone, ds.name, overrides={"seed": seed})
    model = build_backbone(backbone, ds, cfg)
    t0 = time.perf_counter()
    res = Trainer(model, ds, cfg).fit()
    meta = {"training": res.to_dict(), "seconds": time.perf_counter() - t0}
    _save(folder, model, cfg, meta)
    return model, cfg, meta


def retrained(ds: RecDataset, spec: Any, backbone: str, cfg: dict, seed: int, cache: Path) -> tuple:
    """The retrained model of a cell (cached): from scratch on D_r, same config and seed (what
    ``run_unlearning("retrain", ...)`` does)."""
    folder = cache / f"{ds.name}-{backbone}-{spec.regime}-s{seed}-retrain"
    retained = spec.retained_dataset(ds)
    if (folder / "weights.pt").is_file():
        return _load(folder, retained)
    c = {**cfg, "seed": seed}
    t0, c0 = time.perf_counter(), time.process_time()
    model = build_backbone(backbone, retained, c)
    res = Trainer(model, retained, c).fit()
    meta = {
        "training": res.to_dict(),
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
    }
    _save(folder, model, c, meta)
    return model, c, meta


_EPOCH_CPU: dict[tuple[str, str], float] = {}


def epoch_cpu(ds: RecDataset, model: Recommender, cfg: dict) -> float:
    """CPU seconds of one training epoch plus one valid evaluation (measured once per dataset and
    backbone, on a copy of ``model``): × the retrain's epochs, the retrain's CPU cost on this machine now."""
    import copy

    key = (ds.name, model.name)
    if key not in _EPOCH_CPU:
        trainer = Trainer(copy.deepcopy(model), ds, {**cfg, "learning_rate": 0.0}, log=lambda _s: None)
        with flushed_denormals(bool(cfg.get("flush_denormal", True))):  # as Trainer.fit runs it
            c0 = time.process_time()
            trainer.train_epoch(0)
            trainer.evaluate("valid")
            _EPOCH_CPU[key] = time.process_time() - c0
    return _EPOCH_CPU[key]


def measure(model: Recommender, ds: RecDataset, spec: Any) -> tuple[dict[str, float], np.ndarray]:
    from tru.certify.mia import interaction_mia

    nu, ni = ds.n_users, ds.n_items
    above, cand = rank_counts(model, spec.forget, spec.retain, nu, ni)
    out = {
        "forget_hr": float((above < 20).mean()),
        "retain_recall@20": evaluate_pairs(model, nu, ni, spec.test, spec.retain, [20])["recall@20"],
        "mia_auc": float(interaction_mia(model, ds, spec, (0, 1, 2))["auc"]),
    }
    return out, above / np.maximum(cand, 1)


def run_cell(args: argparse.Namespace, ds: RecDataset, backbone: str, regime: str, seed: int) -> list[dict]:
    original, cfg, _ = trained(ds, backbone, seed, args.cache)
    spec = resolve_requests(ds, generate_requests(ds, regime, "random", args.ratio, seed))
    ret, _, rmeta = retrained(ds, spec, backbone, cfg, seed, args.cache)
    ref, ref_pct = measure(ret, ds, spec)
    base = {"dataset": ds.name, "backbone": backbone, "regime": regime, "seed": seed}
    retrain_cpu = rmeta.get("cpu_seconds") or epoch_cpu(ds, original, cfg) * rmeta["training"]["epochs_run"]
    rows = [{**base, "method": "retrain", "seconds": rmeta["seconds"], "cpu_seconds": retrain_cpu, **ref}]
    orig_m, orig_pct = measure(original, ds, spec)
    rows.append({**base, "method": "original", **orig_m, **_gaps(orig_m, orig_pct, ref, ref_pct)})
    for label in args.methods:
        name, over = METHODS[label]
        ucfg = unlearn_config(cfg, {"seed": seed, **over})
        c0 = time.process_time()
        out = run_unlearning(name, original, ds, spec, cfg, ucfg)
        cpu = time.process_time() - c0
        rep = out.report
        m, pct = measure(out.model, ds, spec)
        rows.append(
            {
                **base,
                "method": label,
                "seconds": rep["seconds"],
                "time_ratio": rep["seconds"] / rmeta["seconds"],
                "cpu_seconds": cpu,
                "cpu_ratio": cpu / retrain_cpu,
                "steps": rep["steps"],
                "no_update": rep.get("no_update", False),
                "params_updated": rep.get("params_updated"),
                "stop_reason": rep["stop_reason"],
                **m,
                **_gaps(m, pct, ref, ref_pct),
            }
        )
        print(_line(rows[-1]), flush=True)
    return rows


def _gaps(m: dict, pct: np.ndarray, ref: dict, ref_pct: np.ndarray) -> dict[str, float]:
    d = rank_distance(pct, ref_pct)
    return {
        "forget_hr_gap": m["forget_hr"] - ref["forget_hr"],
        "rank_w1": d.w1,
        "rank_shift": d.shift,
        "mia_gap": abs(m["mia_auc"] - ref["mia_auc"]),
        "retain_ratio": m["retain_recall@20"] / ref["retain_recall@20"],
    }


def _line(r: dict) -> str:
    return (
        f"{r['dataset']} {r['backbone']} {r['regime']} s{r['seed']} {r['method']:16s} "
        f"t {r.get('time_ratio', float('nan')):.3f} cpu {r.get('cpu_ratio', float('nan')):.3f} "
        f"hr_gap {r['forget_hr_gap']:+.3f} "
        f"W1 {r['rank_w1']:.3f} mia_gap {r['mia_gap']:.3f} retain {r['retain_ratio']:.3f} "
        f"{'NO UPDATE ' if r.get('no_update') else ''}{r.get('stop_reason', '')}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, nargs="+", required=True)
    ap.add_argument("--backbone", nargs="+", default=["mgcn", "miggt"])
    ap.add_argument("--regime", nargs="+", default=["user", "item", "interaction"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[10])
    ap.add_argument("--methods", nargs="+", default=["rebuild", "exact", "tru", "mmrecun"], choices=METHODS)
    ap.add_argument("--ratio", type=float, default=0.05)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="CSV (appended)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    new = not args.out.is_file()
    with open(args.out, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            w.writeheader()
        for data in args.data:
            ds = load_dataset(data, validate=False)
            for backbone in args.backbone:
                for seed in args.seeds:
                    for regime in args.regime:
                        for row in run_cell(args, ds, backbone, regime, seed):
                            w.writerow(row)
                        fh.flush()


if __name__ == "__main__":
    main()
