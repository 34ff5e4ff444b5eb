"""``tru pipeline compile | run --local | submit | schedule``: the Kubeflow unlearning pipeline.

The pipeline definitions live in the checkout's ``pipelines/`` and ``components/`` (next to ``src/``);
they are put on ``sys.path`` when tru runs from a checkout."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from tru.commands.common import CLIError

PARAM_FLAGS = (  # (flag, pipeline parameter, type)
    ("--dataset", "dataset", str),
    ("--backbone", "backbone", str),
    ("--method", "method", str),
    ("--policy", "policy", str),
    ("--data-rev", "data_rev", str),
    ("--repo", "repo", str),
    ("--tracking-uri", "tracking_uri", str),
    ("--image", "image", str),
    ("--cpu-image", "cpu_image", str),
    ("--requests", "requests", str),
    ("--regime", "regime", str),
    ("--ratio", "ratio", float),
    ("--seed", "seed", int),
    ("--epochs", "epochs", int),
    ("--max-steps", "max_steps", int),
    ("--audit-seeds", "audit_seeds", str),
)


def load_runner() -> ModuleType:
    """``pipelines.runner``, importing it from the checkout that holds this tru when needed."""
    try:
        from pipelines import runner
    except ModuleNotFoundError:
        root = Path(__file__).resolve().parents[3]
        if not (root / "pipelines" / "runner.py").is_file():
            raise CLIError(
                "the pipeline definitions (pipelines/, components/) are not next to this tru installation; "
                "run `tru pipeline` from a tru checkout (pip install -e .)"
            ) from None
        sys.path.insert(0, str(root))
        from pipelines import runner
    return runner


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {dest: getattr(args, dest) for _flag, dest, _t in PARAM_FLAGS}
    if args.no_retrain:
        params["retrain"] = False
    if args.no_reuse_champion:
        params["reuse_champion"] = False
    return {k: v for k, v in params.items() if v is not None}


def _call(fn: Any, *a: Any, **kw: Any) -> Any:
    runner = load_runner()
    try:
        return fn(runner)(*a, **kw)
    except runner.PipelineError as exc:
        raise CLIError(str(exc)) from exc


def cmd_compile(args: argparse.Namespace) -> int:
    def compile_(r: ModuleType) -> Any:
        from pipelines.unlearning import CLUSTER, LOCAL

        return lambda: r.compile_pipeline(Path(args.out), LOCAL if args.local else CLUSTER)

    out = _call(compile_)
    print(f"pipeline written to {out}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if not args.local:
        raise CLIError(
            "only local runs start here (--local); use `tru pipeline submit --host URL` for a cluster"
        )
    res = _call(lambda r: r.run_local, _params(args), root=args.pipeline_root)
    verdict = "promoted to champion" if res.get("promoted") else "rejected: champion unchanged"
    print(json.dumps({k: v for k, v in res.items() if k != "request_ids"}, indent=2, default=str))
    print(
        f"{res.get('model_name')} version {res.get('version')}: {verdict} "
        f"({len(res.get('request_ids', []))} requests; {res.get('seconds')} s)"
    )
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    res = _call(
        lambda r: r.submit, args.host, _params(args), experiment=args.experiment, run_name=args.run_name
    )
    print(json.dumps(res, indent=2))
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    res = _call(
        lambda r: r.schedule, args.host, args.cron, _params(args), experiment=args.experiment, name=args.name
    )
    print(json.dumps(res, indent=2))
    return 0


def _param_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pipeline parameters (default: the pipeline's)")
    for flag, dest, typ in PARAM_FLAGS:
        g.add_argument(flag, dest=dest, type=typ)
    g.add_argument("--no-retrain", action="store_true", help="certify retrain-free (weaker evidence)")
    g.add_argument("--no-reuse-champion", action="store_true", help="always train the backbone anew")


def register(sub: argparse._SubParsersAction) -> None:
    pl = sub.add_parser(
        "pipeline", help="the Kubeflow unlearning pipeline: compile, run locally, submit, schedule"
    )
    psub = pl.add_subparsers(dest="pipeline_command", required=True)
    c = psub.add_parser("compile", help="write the pipeline's IR YAML")
    c.add_argument("--out", required=True, help="YAML file to write")
    c.add_argument("--local", action="store_true", help="without GPU / Kubernetes settings (kfp.local)")
    c.set_defaults(func=cmd_compile)

    r = psub.add_parser("run", help="run the pipeline end to end here (kfp.local, this Python environment)")
    r.add_argument("--local", action="store_true", help="run with kfp.local.SubprocessRunner (required)")
    r.add_argument("--pipeline-root", help="scratch folder for task outputs (default: scratch/kfp)")
    _param_flags(r)
    r.set_defaults(func=cmd_run)

    s = psub.add_parser("submit", help="start a run on a Kubeflow Pipelines endpoint")
    s.add_argument("--host", required=True, help="KFP API URL, e.g. http://localhost:8080")
    s.add_argument("--experiment", default="tru")
    s.add_argument("--run-name")
    _param_flags(s)
    s.set_defaults(func=cmd_submit)

    sc = psub.add_parser("schedule", help="create a recurring (cron) run on a Kubeflow Pipelines endpoint")
    sc.add_argument("--host", required=True, help="KFP API URL, e.g. http://localhost:8080")
    sc.add_argument("--cron", required=True, help='cron, 5 fields ("0 3 * * *") or 6 with seconds first')
    sc.add_argument("--experiment", default="tru")
    sc.add_argument("--name", default="tru-unlearning-schedule", help="recurring run name")
    _param_flags(sc)
    sc.set_defaults(func=cmd_schedule)
