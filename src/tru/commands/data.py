"""``tru data prepare`` and ``tru data validate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

EXIT_INVALID = 1


def cmd_prepare(args: argparse.Namespace) -> int:
    from tru.config import parse_override
    from tru.data.prepare import prepare_dataset

    options: dict[str, Any] = dict(parse_override(s) for s in (args.option or []))
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


def cmd_validate(args: argparse.Namespace) -> int:
    from tru.data.dataset import validate_and_remember

    report = validate_and_remember(Path(args.dir))  # always runs the suite; a pass leaves the stamp
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else report.render())
    return 0 if report.success else EXIT_INVALID


def register(sub: argparse._SubParsersAction) -> None:
    from tru.data.prepare import SOURCES

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
    prep.set_defaults(func=cmd_prepare)
    val = dsub.add_parser("validate", help="validate a dataset folder with Great Expectations")
    val.add_argument("dir", help="dataset folder (with dataset.yaml)")
    val.add_argument("--json", action="store_true", help="print the report as JSON")
    val.set_defaults(func=cmd_validate)
