"""``tru unlearn``, ``tru sensitivity`` and ``tru requests generate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tru.commands.common import add_config_flags, atomic_dir, config_files, overrides_from, print_metrics
from tru.runfolder import SENSITIVITY_FILE
from tru.utils import write_json


def _load(args: argparse.Namespace) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Dataset, original run, resolved requests and the unlearning config, from the common flags."""
    from tru.checkpoint import load_run
    from tru.config import read_yaml_file
    from tru.data.dataset import load_dataset
    from tru.forget.requests import read_requests, resolve_requests
    from tru.unlearn.api import unlearn_config
    from tru.utils import LOG, resolve_device

    over = overrides_from(args, ("seed",))
    for flag in ("rfg", "bms", "cli", "exact", "item_sink"):
        if getattr(args, f"no_{flag}", False):
            over[flag] = False
    files: dict[str, Any] = {}
    for f in config_files(args):
        files.update(read_yaml_file(f))
    unlearn_config({}, {**files, **over})  # a bad option is refused before anything is loaded
    dataset = load_dataset(Path(args.data))
    requests = read_requests(Path(args.requests))
    device = resolve_device(getattr(args, "device", None))
    run = load_run(Path(args.model), dataset, device=device, requests=requests)
    spec = resolve_requests(dataset, requests, strict=not getattr(args, "lenient", False))
    for msg in spec.noops:
        LOG.warning("no-op: %s", msg)
    cfg = unlearn_config(run.config, {**files, **over})
    if getattr(args, "calibration", None) and getattr(args, "method", "tru") != "retrain":  # as the pipeline
        from tru.steps.common import with_calibration

        cfg = with_calibration(cfg, Path(args.calibration), dataset, spec, run)
    return dataset, run, spec, cfg


def cmd_unlearn(args: argparse.Namespace) -> int:
    from tru.checkpoint import Lineage
    from tru.unlearn.api import run_unlearning, save_unlearned

    dataset, run, spec, cfg = _load(args)
    if len(spec.forget) == 0:
        print(
            f"nothing to forget: {args.requests} holds no request that changes the train set "
            f"({len(spec.noops)} no-op(s)); no model written"
        )
        return 0
    sensitivity = None
    if getattr(args, "sensitivity", None):
        from tru.config import ConfigError

        path = Path(args.sensitivity)
        path = path / SENSITIVITY_FILE if path.is_dir() else path
        if not path.is_file():
            raise ConfigError(f"--sensitivity {args.sensitivity}: no sensitivity.json there")
        sensitivity = json.loads(path.read_text())
    outcome = run_unlearning(args.method, run.model, dataset, spec, run.config, cfg, sensitivity=sensitivity)
    with atomic_dir(Path(args.out), args.overwrite) as tmp:
        lineage = Lineage(
            kind="retrain" if args.method == "retrain" else "unlearn",
            method=args.method,
            parent_weights_sha256="" if args.method == "retrain" else run.weights_sha256,
        )
        forgotten = spec.forgotten().inherit(run.forgotten)  # what the start model forgot stays forgotten
        save_unlearned(tmp, outcome, run.config, dataset, spec, lineage=lineage, forgotten=forgotten)
    rep = outcome.report
    print(
        f"{args.method}: {rep['seconds']:.2f}s, {rep['steps']} steps, {rep['params_changed']:,} of "
        f"{rep['params_total']:,} parameters changed, stop: {rep['stop_reason']}"
    )
    print_metrics(outcome.metrics, Path(args.out))
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from tru.unlearn.sensitivity import plot_sensitivity, run_sensitivity

    dataset, run, spec, cfg = _load(args)
    report = run_sensitivity(run.model, dataset, spec, cfg)
    report["spec"] = spec.summary(dataset.n_items)
    with atomic_dir(Path(args.out), args.overwrite) as tmp:
        write_json(tmp / SENSITIVITY_FILE, report)
        plot_sensitivity(report, tmp / "sensitivity.png")
    sel = [u["label"] for u in report["units"] if u["selected"]]
    print(
        f"selected {report['params_selected']:,} of {report['params_total']:,} parameters: {', '.join(sel)}"
    )
    print(f"written to {Path(args.out) / 'sensitivity.json'} and sensitivity.png")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from tru.data.dataset import load_dataset
    from tru.forget.generate import generate_requests
    from tru.forget.requests import write_requests

    dataset = load_dataset(Path(args.data))
    reqs = generate_requests(dataset, args.regime, args.strategy, args.ratio, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_requests(Path(args.out), reqs)
    print(
        json.dumps({"out": args.out, "requests": len(reqs), "regime": args.regime, "strategy": args.strategy})
    )
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--model", required=True, help="run folder of the original (trained) model")
    p.add_argument("--requests", required=True, help="deletion-request manifest (CSV)")
    p.add_argument("--seed", type=int, help="seed (default: the model's)")
    p.add_argument(
        "--lenient", action="store_true", help="report non-train pairs as no-ops instead of errors"
    )
    add_config_flags(p)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")


def register(sub: argparse._SubParsersAction) -> None:
    from tru.forget.generate import STRATEGIES
    from tru.forget.spec import REGIMES
    from tru.unlearn.methods import METHODS

    un = sub.add_parser("unlearn", help="make a trained model forget the requested data")
    _common(un)
    un.add_argument("--method", default="tru", choices=sorted(METHODS))
    un.add_argument("--no-rfg", action="store_true", help="TRU without the ranking fusion gate")
    un.add_argument("--no-bms", action="store_true", help="TRU without branch-wise modality scaling")
    un.add_argument("--no-cli", action="store_true", help="TRU without capacity-aware layer isolation")
    un.add_argument(
        "--no-exact",
        action="store_true",
        help="start without the exact part (rows retraining never trains keep the original's values)",
    )
    un.add_argument("--no-item-sink", action="store_true", help="TRU without the item-regime sink term")
    un.add_argument(
        "--sensitivity",
        metavar="JSON|DIR",
        help="reuse the selection of a `tru sensitivity` run (its sensitivity.json) instead of probing",
    )
    un.add_argument(
        "--calibration",
        metavar="CAL_DIR",
        help="a `tru calibrate` folder of this model and data: the start gets the seed noise a retrain "
        "shows the difference attack (backbones with seed_noise on: MIG-GT)",
    )
    un.add_argument("--out", required=True, help="run folder for the unlearned model (+ unlearn.json)")
    un.set_defaults(func=cmd_unlearn)

    se = sub.add_parser(
        "sensitivity", help="layer-sensitivity probe: per-unit scores (JSON) and heatmap (PNG)"
    )
    _common(se)
    se.add_argument("--out", required=True, help="folder for sensitivity.json and sensitivity.png")
    se.set_defaults(func=cmd_sensitivity)

    rq = sub.add_parser("requests", help="deletion-request manifests")
    rsub = rq.add_subparsers(dest="requests_command", required=True)
    gen = rsub.add_parser("generate", help="generate benchmark requests (regime × strategy × ratio, seeded)")
    gen.add_argument("--data", required=True)
    gen.add_argument("--regime", required=True, choices=REGIMES)
    gen.add_argument("--strategy", default="random", choices=STRATEGIES)
    gen.add_argument("--ratio", type=float, default=0.05)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", required=True, help="CSV to write")
    gen.set_defaults(func=cmd_generate)
    from tru.commands.mlops_data import add_requests_parsers

    add_requests_parsers(rsub)
