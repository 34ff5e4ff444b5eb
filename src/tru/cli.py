"""The ``tru`` command line.

    tru data prepare --source {synthetic,lfm2k,ml100k,mmrec} [--path SRC] --out DIR
    tru data validate DIR
    tru train --data DIR --backbone {mgcn,miggt,vbpr} [--epochs N] [--seed S] --out RUN_DIR
    tru evaluate --data DIR --model RUN_DIR

Exit codes: 0 success; 1 invalid data (validation failed); 2 bad input / usage / other error.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tru import __version__
from tru.utils import LOG, setup_logging

EXIT_INVALID = 1
EXIT_ERROR = 2


class CLIError(Exception):
    """A user-facing error: printed as ``error: <message>``, exit code 2."""


# ---------------------------------------------------------------------------------------------- data
def cmd_data_prepare(args: argparse.Namespace) -> int:
    from tru.data.prepare import prepare_dataset

    options: dict[str, Any] = {}
    for item in args.option or []:
        from tru.config import parse_override

        key, val = parse_override(item)
        options[key] = val
    if args.preset:
        options["preset"] = args.preset
    if args.seed is not None:
        options["seed"] = args.seed
    manifest = prepare_dataset(
        args.source,
        Path(args.out),
        path=Path(args.path) if args.path else None,
        overwrite=args.overwrite,
        **options,
    )
    print(json.dumps({"out": str(args.out), **manifest.to_dict()}, indent=2))
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    from tru.data.validate import validate_dataset

    report = validate_dataset(Path(args.dir))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(report.render())
    return 0 if report.success else EXIT_INVALID


# ---------------------------------------------------------------------------------------------- train
def _config(args: argparse.Namespace, dataset_name: str | None) -> dict[str, Any]:
    from tru.config import load_config, parse_override

    overrides: dict[str, Any] = dict(parse_override(s) for s in (args.set or []))
    for key in ("epochs", "seed", "device", "threads"):
        val = getattr(args, key, None)
        if val is not None:
            overrides[key] = val
    files = [Path(f) for f in (args.config or [])]
    return load_config(args.backbone, dataset_name, files, overrides)


def _prepare_out(out: Path, overwrite: bool) -> Path:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CLIError(f"{out}: exists and is not empty (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))


def _commit_out(tmp: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def cmd_train(args: argparse.Namespace) -> int:
    from tru.checkpoint import save_run
    from tru.data.dataset import load_dataset
    from tru.models import build_backbone
    from tru.train.trainer import Trainer

    dataset = load_dataset(Path(args.data))
    config = _config(args, dataset.manifest.source.get("kind") or dataset.name)
    out = Path(args.out)
    tmp = _prepare_out(out, args.overwrite)
    try:
        model = build_backbone(args.backbone, dataset, config)
        LOG.info(
            "training %s on %s (%d users, %d items, %d train pairs) on %s",
            args.backbone,
            dataset.name,
            dataset.n_users,
            dataset.n_items,
            len(dataset.train),
            config.get("device", "auto"),
        )
        result = Trainer(model, dataset, config).fit()
        metrics = {"valid": result.best_valid, "test": result.test}
        save_run(tmp, model, config, dataset, metrics=metrics, extra={"training": result.to_dict()})
        _commit_out(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _print_metrics(metrics, out)
    return 0


def _print_metrics(metrics: dict[str, dict[str, float]], where: Path) -> None:
    ks = sorted({int(k.split("@")[1]) for k in metrics["test"]})
    print(
        f"{'split':<6} {'K':>3} " + " ".join(f"{m:>9}" for m in ("recall", "ndcg", "precision", "map", "hr"))
    )
    for split, vals in metrics.items():
        for k in ks:
            print(
                f"{split:<6} {k:>3} "
                + " ".join(
                    f"{vals.get(f'{m}@{k}', float('nan')):9.4f}"
                    for m in ("recall", "ndcg", "precision", "map", "hr")
                )
            )
    print(f"metrics written to {where / 'metrics.json'}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tru.checkpoint import load_run
    from tru.data.dataset import load_dataset
    from tru.eval.evaluator import evaluate
    from tru.utils import resolve_device

    dataset = load_dataset(Path(args.data))
    run = load_run(Path(args.model), dataset, device=resolve_device(args.device))
    ks = [int(k) for k in run.config.get("topk", [5, 10, 20, 50])]
    metrics = {
        split: evaluate(run.model, dataset, split, ks, history=run.train) for split in ("valid", "test")
    }
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        _print_metrics(metrics, Path(args.model))
    return 0


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from tru.data.prepare import SOURCES
    from tru.models import BACKBONES

    p = argparse.ArgumentParser(
        prog="tru", description="Targeted Reverse Update: certified unlearning for multimodal recommenders."
    )
    p.add_argument("--version", action="version", version=f"tru {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="prepare and validate datasets (MMRec format)")
    dsub = data.add_subparsers(dest="data_command", required=True)
    prep = dsub.add_parser("prepare", help="write a dataset folder in MMRec format from a source")
    prep.add_argument("--source", required=True, choices=sorted(SOURCES))
    prep.add_argument("--path", help="source folder (lfm2k: default ../shared/data/lfm2k; mmrec: required)")
    prep.add_argument("--out", required=True, help="output dataset folder")
    prep.add_argument("--preset", help="synthetic size preset (tiny, small, clothing)")
    prep.add_argument("--seed", type=int, help="seed for generated data and random splits")
    prep.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="source-specific option")
    prep.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    prep.set_defaults(func=cmd_data_prepare)
    val = dsub.add_parser("validate", help="validate a dataset folder with Great Expectations")
    val.add_argument("dir", help="dataset folder (with dataset.yaml)")
    val.add_argument("--json", action="store_true", help="print the report as JSON")
    val.set_defaults(func=cmd_data_validate)

    tr = sub.add_parser("train", help="train a backbone (BPR, early stopping on valid Recall@20)")
    tr.add_argument("--data", required=True, help="dataset folder")
    tr.add_argument("--backbone", required=True, choices=sorted(BACKBONES))
    tr.add_argument("--epochs", type=int, help="maximum epochs (default from config: 1000)")
    tr.add_argument("--seed", type=int, help="seed (default 999)")
    tr.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    tr.add_argument("--threads", type=int, help="torch CPU threads")
    tr.add_argument("--config", action="append", metavar="YAML", help="extra config file (layered last)")
    tr.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="config override, e.g. learning_rate=5e-4"
    )
    tr.add_argument("--out", required=True, help="run folder to write (model.pt, run.json, metrics.json)")
    tr.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="full-ranking evaluation of a trained model")
    ev.add_argument("--data", required=True, help="dataset folder the model was trained on")
    ev.add_argument("--model", required=True, help="run folder written by `tru train`")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--json", action="store_true", help="print metrics as JSON")
    ev.set_defaults(func=cmd_evaluate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    from tru.checkpoint import CheckpointError
    from tru.config import ConfigError
    from tru.data.dataset import DataError
    from tru.train.trainer import TrainingError

    try:
        return int(args.func(args))
    except DataError as exc:
        print(f"error: invalid data:\n{exc}", file=sys.stderr)
        return EXIT_INVALID
    except (CLIError, CheckpointError, ConfigError, TrainingError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
