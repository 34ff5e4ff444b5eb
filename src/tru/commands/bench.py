"""``tru bench``: the unlearning benchmark, revision 2 (every method certified by the calibrated certificate;
resumable), its table and plot."""

from __future__ import annotations

import argparse
from pathlib import Path


def _caps(values: list[str] | None) -> dict[str, int]:
    """``--epochs 400`` (every backbone) or ``--epochs mgcn=400 miggt=300``."""
    from tru.commands.common import CLIError

    caps: dict[str, int] = {}
    for v in values or []:
        name, _, num = v.rpartition("=")
        try:
            caps[name or "*"] = int(num)
        except ValueError as exc:
            raise CLIError(f"--epochs {v!r}: expected N or BACKBONE=N") from exc
        if caps[name or "*"] < 1:
            raise CLIError(f"--epochs {v!r}: the cap must be at least 1")
    return caps


def _sizes(values: list[str]) -> list[str]:
    from tru.commands.common import CLIError

    for v in values:
        try:
            ok = float(v) > 0 and (float(v) < 1 or float(v) == int(float(v)))
        except ValueError:
            ok = False
        if not ok:
            raise CLIError(
                f"--sizes {v!r}: a fraction in (0, 1) (e.g. 0.05) or a whole count of units (e.g. 10)"
            )
    return [str(int(float(v))) if float(v) >= 1 else v for v in values]


def cmd_bench(args: argparse.Namespace) -> int:
    from tru.bench import BenchConfig, run_bench, summarise
    from tru.certify.policy import load_policy
    from tru.commands.common import CLIError
    from tru.config import parse_override
    from tru.unlearn.api import unlearn_config

    out = Path(args.out)
    if args.from_results:
        missing = [p for p in args.from_results if not Path(p).is_file()]
        if missing:
            raise CLIError(f"--from-results: no such file(s): {', '.join(missing)}")
        md = summarise([Path(p) for p in args.from_results], out)
        print(md.read_text())
        print(f"table: {md}; plot: {out / 'results.png'}")
        return 0
    if not args.data:
        raise CLIError("tru bench: --data is required (or --from-results CSV ... to only tabulate)")
    if args.k < 3:
        raise CLIError("--k: the calibration needs at least 3 retrains")
    unlearn = dict(parse_override(s) for s in (args.set or []))
    unlearn_config({}, unlearn)  # a bad option is refused before hours of training, not after
    cfg = BenchConfig(
        datasets=args.data,
        backbones=args.backbone,
        regimes=args.regime,
        seeds=args.seeds,
        sizes=_sizes(args.sizes),
        strategy=args.strategy,
        epochs=_caps(args.epochs),
        k=args.k,
        unlearn=unlearn,
        audit_seeds=tuple(args.audit_seeds),
        n_boot=args.n_boot,
        policy=load_policy(args.policy),
        threads=args.threads,
        keep_models=args.keep_models,
    )
    if args.method:
        cfg.methods = args.method
    results = run_bench(cfg, out)
    md = summarise(results, out)
    print(md.read_text())
    print(f"results: {results}; table: {md}; plot: {out / 'results.png'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from tru.bench_methods import ALL_METHODS

    b = sub.add_parser(
        "bench",
        help="benchmark TRU against its baselines under the calibrated certificate (resumable)",
        description="Per dataset × backbone × regime × size × seed: the original (cached), the requests, K "
        "retrains and their calibration, then every method certified against the reference retrain; one "
        "results.csv row per finished key (a rerun resumes), results.md and results.png.",
    )
    b.add_argument("--data", nargs="+", help="dataset folders")
    b.add_argument("--backbone", nargs="+", default=["mgcn", "miggt"])
    b.add_argument("--regime", nargs="+", default=["user", "item", "interaction"])
    b.add_argument("--method", nargs="+", choices=list(ALL_METHODS), help="default: every method")
    b.add_argument("--seeds", nargs="+", type=int, default=[10, 11, 12])
    b.add_argument(
        "--sizes",
        nargs="+",
        default=["0.05"],
        help="deletion sizes: a fraction (0.05) or a count of units (10)",
    )
    b.add_argument("--strategy", default="random", choices=["random", "core", "edge"])
    b.add_argument(
        "--epochs",
        nargs="+",
        metavar="[BACKBONE=]N",
        help="epoch cap of the original and every retrain (early stopping stays on); default: the "
        "packaged config",
    )
    b.add_argument("--k", type=int, default=3, help="retrains per forget set (reference, second, ...)")
    b.add_argument("--audit-seeds", nargs="+", type=int, default=[0, 1, 2])
    b.add_argument("--n-boot", type=int, default=200, help="user-clustered bootstrap rows")
    b.add_argument("--policy", help="certification policy YAML (default: the packaged policy)")
    b.add_argument("--threads", type=int, help="torch CPU threads")
    b.add_argument("--keep-models", action="store_true", help="keep the unlearned models' weights")
    b.add_argument("--set", action="append", metavar="KEY=VALUE", help="unlearning option override")
    b.add_argument(
        "--from-results",
        nargs="+",
        metavar="CSV",
        help="run nothing: tabulate and plot these results.csv files (e.g. one per dataset) into --out",
    )
    b.add_argument("--out", required=True, help="results folder (rerun to resume)")
    b.set_defaults(func=cmd_bench)
