"""``tru train`` and ``tru evaluate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tru.commands.common import add_config_flags, atomic_dir, config_files, overrides_from, print_metrics
from tru.utils import LOG


def cmd_train(args: argparse.Namespace) -> int:
    from tru.checkpoint import save_run
    from tru.config import load_config
    from tru.data.dataset import load_dataset
    from tru.models import build_backbone
    from tru.train.trainer import Trainer

    dataset = load_dataset(Path(args.data))
    config = load_config(
        args.backbone,
        dataset.manifest.source.get("kind") or dataset.name,
        config_files(args),
        overrides_from(args),
    )
    with atomic_dir(Path(args.out), args.overwrite) as tmp:
        model = build_backbone(args.backbone, dataset, config)
        LOG.info(
            "training %s on %s (%d users, %d items, %d train pairs)",
            args.backbone,
            dataset.name,
            dataset.n_users,
            dataset.n_items,
            len(dataset.train),
        )
        result = Trainer(model, dataset, config).fit()
        metrics = {"valid": result.best_valid, "test": result.test}
        save_run(tmp, model, config, dataset, metrics=metrics, extra={"training": result.to_dict()})
    print_metrics(metrics, Path(args.out))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tru.checkpoint import load_run
    from tru.data.dataset import load_dataset
    from tru.eval.evaluator import evaluate
    from tru.utils import resolve_device

    dataset = load_dataset(Path(args.data))
    requests = None
    if args.requests:
        from tru.forget.requests import read_requests

        requests = read_requests(Path(args.requests))
    run = load_run(Path(args.model), dataset, device=resolve_device(args.device), requests=requests)
    ks = [int(k) for k in run.config.get("topk", [5, 10, 20, 50])]
    metrics = {
        split: evaluate(run.model, dataset, split, ks, history=run.train) for split in ("valid", "test")
    }
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print_metrics(metrics)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from tru.models import BACKBONES

    tr = sub.add_parser("train", help="train a backbone (BPR, early stopping on valid Recall@20)")
    tr.add_argument("--data", required=True, help="dataset folder")
    tr.add_argument("--backbone", required=True, choices=sorted(BACKBONES))
    tr.add_argument("--epochs", type=int, help="maximum epochs (default from config: 1000)")
    tr.add_argument("--seed", type=int, help="seed (default 999)")
    add_config_flags(tr)
    tr.add_argument("--out", required=True, help="run folder to write (model.pt, run.json, metrics.json)")
    tr.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="full-ranking evaluation of a trained or unlearned model")
    ev.add_argument("--data", required=True, help="dataset folder the model was trained on")
    ev.add_argument("--model", required=True, help="run folder written by `tru train` or `tru unlearn`")
    ev.add_argument(
        "--requests",
        help="deletion manifest (CSV): for a model that forgot requests whose rows the dataset still holds",
    )
    ev.add_argument("--device", default="auto")
    ev.add_argument("--json", action="store_true", help="print metrics as JSON")
    ev.set_defaults(func=cmd_evaluate)
