"""One MGCN training epoch and one full evaluation at Amazon-Clothing scale on this machine.

Generates (or reuses) the synthetic ``clothing`` preset (39,387 users × 23,033 items × 278,677
interactions, 4,096-d image + 384-d text), then reports: dataset load, model build (kNN graphs), one
training epoch, one full-ranking evaluation of valid and test (all items scored, train masked), and the
peak resident memory of the process.

    python benchmarks/scale_clothing.py [--data DIR] [--threads N] [--backbone mgcn]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="scratch/clothing", help="dataset folder (created if absent)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backbone", default="mgcn")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from tru.config import load_config
    from tru.data.dataset import load_dataset
    from tru.data.prepare import prepare_dataset
    from tru.eval.evaluator import evaluate
    from tru.models import build_backbone
    from tru.train.trainer import Trainer

    fig: dict[str, float] = {}
    data = Path(args.data)
    if not (data / "dataset.yaml").is_file():
        t = time.perf_counter()
        prepare_dataset("synthetic", data, preset="clothing", overwrite=True)
        fig["generate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ds = load_dataset(data)
    fig["load_and_validate_s"] = time.perf_counter() - t
    cfg = load_config(args.backbone, "synthetic", overrides={"epochs": 1})
    t = time.perf_counter()
    model = build_backbone(args.backbone, ds, cfg)
    fig["build_s"] = time.perf_counter() - t
    trainer = Trainer(model, ds, cfg)
    t = time.perf_counter()
    loss = trainer.train_epoch(0)
    fig["epoch_s"] = time.perf_counter() - t
    fig["epoch_loss"] = loss
    t = time.perf_counter()
    valid = evaluate(model, ds, "valid")
    test = evaluate(model, ds, "test")
    fig["full_eval_valid_and_test_s"] = time.perf_counter() - t
    fig["valid_recall@20"] = valid["recall@20"]
    fig["test_recall@20"] = test["recall@20"]
    fig["peak_rss_gib"] = peak_rss_gib()
    fig.update(
        {"n_users": ds.n_users, "n_items": ds.n_items, "n_train": len(ds.train), "threads": args.threads}
    )
    print(json.dumps(fig, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2))


if __name__ == "__main__":
    main()
