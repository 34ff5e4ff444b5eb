"""``tru bench``: the unlearning benchmark matrix (resumable), its table and trade-off plot."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_bench(args: argparse.Namespace) -> int:
    from tru.bench import BenchConfig, run_bench, summarise
    from tru.commands.common import CLIError
    from tru.config import parse_override

    out = Path(args.out)
    if args.from_results:
        missing = [p for p in args.from_results if not Path(p).is_file()]
        if missing:
            raise CLIError(f"--from-results: no such file(s): {', '.join(missing)}")
        md = summarise([Path(p) for p in args.from_results], out)
        print(md.read_text())
        print(f"table: {md}; plot: {out / 'tradeoff.png'}")
        return 0
    if not args.data:
        raise CLIError("tru bench: --data is required (or --from-results CSV ... to only tabulate)")

    cfg = BenchConfig(
        datasets=args.data,
        backbones=args.backbone,
        regimes=args.regime,
        seeds=args.seeds,
        strategy=args.strategy,
        ratio=args.ratio,
        epochs=args.epochs,
        unlearn=dict(parse_override(s) for s in (args.set or [])),
        mia_seeds=args.mia_seeds,
    )
    if args.method:
        cfg.methods = args.method
    results = run_bench(cfg, out)
    md = summarise(results, out)
    print(md.read_text())
    print(f"results: {results}; table: {md}; plot: {out / 'tradeoff.png'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from tru.bench import ABLATIONS, METHODS

    b = sub.add_parser("bench", help="benchmark TRU against its baselines (resumable)")
    b.add_argument("--data", nargs="+", help="dataset folders")
    b.add_argument("--backbone", nargs="+", default=["mgcn", "miggt"])
    b.add_argument("--regime", nargs="+", default=["user", "item", "interaction"])
    b.add_argument("--method", nargs="+", choices=[*METHODS, *ABLATIONS], help="default: all + ablations")
    b.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    b.add_argument("--strategy", default="random", choices=["random", "core", "edge"])
    b.add_argument("--ratio", type=float, default=0.05)
    b.add_argument("--epochs", type=int, help="epoch budget for original and retrained models")
    b.add_argument("--mia-seeds", type=int, default=3)
    b.add_argument("--set", action="append", metavar="KEY=VALUE", help="unlearning config override")
    b.add_argument(
        "--from-results",
        nargs="+",
        metavar="CSV",
        help="run nothing: tabulate and plot these results.csv files (e.g. one per dataset) into --out",
    )
    b.add_argument("--out", required=True, help="results folder (rerun to resume)")
    b.set_defaults(func=cmd_bench)
