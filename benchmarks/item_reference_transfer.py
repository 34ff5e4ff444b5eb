#!/usr/bin/env python
"""Item regime: does where retrain puts deleted items transfer from one forget set to another? And can the
deleted items' own rows be fitted onto such a transferred reference? (An experiment, not in the product.)

    python benchmarks/item_reference_transfer.py --bench scratch/bench2/run-lfm2k \\
        --data scratch/bench2/lfm2k --backbone mgcn --seeds 10 11 [--fit --steps 60 --lr 0.01]

Reads the benchmark's cached item cells (``tru bench`` output folder: originals, requests, K retrains per
seed; nothing is trained here). Per cell: the rank percentiles of the deleted pairs (0 = top) under the
starting point (rebuilt, exact part with the emulated item rows: :func:`tru.unlearn.api.prepare_start`) and
under each retrain. Then for every ordered pair of cells (source a, target c), the W₁ distance to c's
reference retrain (its first) of

* ``other retrain``: a's second retrain (another forget set, another original);
* ``mapped start``: c's start pushed through a's quantile map start → retrain (a monotone map, so each pair
  keeps its order; the map is what a calibration of a same-size deletion could store).

``--fit`` (MGCN: deleted items own rows): from c's start, Adam on the deleted items' ID and feature rows
only (every other parameter frozen) with the two-sided coupled loss mean |s_ui − s_uj*|, j* the item at the
pair's mapped target rank in u's current ranking (:mod:`tru.unlearn.coupling`); printed every 20 steps: mean
percentile, W₁ to c's reference retrain, forget HR@20 gap, interaction MIA AUC gap, valid Recall@20 ratio
(all against the reference retrain; the certificate's tolerances are in the benchmark's rows).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tru.bench import Bench, BenchConfig, Cell
from tru.certify.mia import interaction_mia
from tru.data.dataset import load_dataset
from tru.eval.evaluator import evaluate_pairs, per_pair_hit_rate
from tru.eval.rank import argsort_rows_descending, rank_percentiles, wasserstein1
from tru.unlearn.api import prepare_start, unlearn_config
from tru.unlearn.coupling import CoupledTargets

QUANTILES = np.linspace(0, 1, 201)


def percentiles(model: Any, spec: Any, n_users: int, n_items: int) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return rank_percentiles(model, spec.forget, spec.retain, n_users, n_items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", type=Path, required=True, help="tru bench output folder with the item cells")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--backbone", default="mgcn")
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    ap.add_argument("--fit", action="store_true", help="fit the deleted items' rows (MGCN)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=0.01)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.data)
    nu, ni = ds.n_users, ds.n_items
    bench = Bench(BenchConfig([str(args.data)], [args.backbone], ["item"], seeds=args.seeds), args.bench)
    cells: dict[int, dict[str, Any]] = {}
    for seed in args.seeds:
        cell = Cell(ds, args.backbone, "item", "0.05", seed, "random")
        orig, spec = bench.original(cell), bench.spec(cell)
        retrains = bench.retrains(cell, orig)
        start = copy.deepcopy(orig.run.model)
        prepare_start(start, spec, unlearn_config(orig.run.config, {"seed": seed}))
        rets = [percentiles(r.run.model, spec, nu, ni) for r in retrains]
        s = percentiles(start, spec, nu, ni)
        cells[seed] = {"orig": orig, "spec": spec, "retrains": retrains, "start": start, "s": s, "r": rets}
        spread = ", ".join(f"{wasserstein1(x, rets[0]):.4f}" for x in rets[1:])
        print(
            f"seed {seed}: mean percentile start {s.mean():.3f}, retrains "
            f"{', '.join(f'{x.mean():.3f}' for x in rets)}; W1 start→retrain {wasserstein1(s, rets[0]):.4f}, "
            f"retrain spread {spread}",
            flush=True,
        )
    print("\n| target seed | source seed | other retrain W1 | mapped start W1 |\n|---|---|---|---|")
    for c in args.seeds:
        for a in args.seeds:
            if a == c:
                continue
            mapped = _map(cells[a], cells[c]["s"])
            other = wasserstein1(cells[a]["r"][1], cells[c]["r"][0])
            print(f"| {c} | {a} | {other:.4f} | {wasserstein1(mapped, cells[c]['r'][0]):.4f} |", flush=True)
    if args.fit:
        for c in args.seeds:
            a = next(s for s in args.seeds if s != c)
            print(f"\nfit seed {c} onto seed {a}'s map", flush=True)
            _fit(ds, cells[c], cells[a], args.steps, args.lr)


def _map(source: dict[str, Any], start_pct: np.ndarray) -> np.ndarray:
    """start_pct through the source's quantile map start → its second retrain (not its reference)."""
    src, dst = np.quantile(source["s"], QUANTILES), np.quantile(source["r"][1], QUANTILES)
    return np.interp(start_pct, src, dst)


def _fit(ds: Any, cell: dict[str, Any], source: dict[str, Any], steps: int, lr: float) -> None:
    nu, ni = ds.n_users, ds.n_items
    spec, model = cell["spec"], copy.deepcopy(cell["start"])
    ref = cell["retrains"][0].run.model
    ref.eval()
    rp = cell["r"][0]
    with torch.no_grad():
        r_hr = float(per_pair_hit_rate(ref, nu, ni, spec.forget, spec.retain, 20)[1].mean())
        r_valid = evaluate_pairs(ref, nu, ni, spec.valid, spec.retain, [20])["recall@20"]
    r_mia = interaction_mia(ref, ds, spec)["auc"]
    model.eval()
    targets = CoupledTargets.build(model, spec.forget, spec.retain, cell["r"][0], nu, ni)
    targets.target_pct = _map(source, targets.start_pct)
    _, target_pct = targets.lookup(spec.forget.users, spec.forget.items)
    rows = {
        n: p for n, p in model.named_parameters() if n == "item_id_embedding.weight" or n.startswith("feat_")
    }
    for p in model.parameters():
        p.requires_grad_(False)
    for p in rows.values():
        p.requires_grad_(True)
    deleted = torch.zeros(ni, 1)
    deleted[torch.as_tensor(np.asarray(spec.items, np.int64))] = 1.0
    opt = torch.optim.Adam(list(rows.values()), lr=lr)
    users, items = torch.as_tensor(spec.forget.users), torch.as_tensor(spec.forget.items)
    pct_t = torch.as_tensor(target_pct, dtype=torch.float32)
    fit_cpu = 0.0
    for step in range(1, steps + 1):
        t0 = time.process_time()
        u_all, i_all = model.forward()
        uniq, row = torch.unique(users, return_inverse=True)
        with torch.no_grad():
            seen = torch.as_tensor(targets.seen[uniq.numpy()].toarray() > 0)
            scores = (u_all[uniq] @ i_all.T).masked_fill(seen, -torch.inf)
            n_cand = (~seen).sum(1)[row]
            rank = torch.minimum(torch.floor(pct_t * n_cand).long(), n_cand - 1)
            j_star = argsort_rows_descending(scores)[row, rank]
        u_rows = u_all[users]
        loss = ((u_rows * i_all[items]).sum(-1) - (u_rows * i_all[j_star]).sum(-1)).abs().mean()
        opt.zero_grad()
        loss.backward()
        for p in rows.values():
            p.grad.mul_(deleted)
        opt.step()
        fit_cpu += time.process_time() - t0
        if step % 20 == 0 or step == steps:
            p = percentiles(model, spec, nu, ni)
            with torch.no_grad():
                hr = float(per_pair_hit_rate(model, nu, ni, spec.forget, spec.retain, 20)[1].mean())
                valid = evaluate_pairs(model, nu, ni, spec.valid, spec.retain, [20])["recall@20"]
            mia = interaction_mia(model, ds, spec)["auc"]
            print(
                f"step {step}: mean {p.mean():.3f}, W1 {wasserstein1(p, rp):.4f}, HR gap {hr - r_hr:+.4f}, "
                f"MIA gap {mia - r_mia:+.4f}, valid ratio {valid / r_valid:.3f}, fit CPU {fit_cpu:.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
