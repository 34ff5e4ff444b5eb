"""``tru pipeline compile | run --local | submit | schedule``: the Kubeflow unlearning pipeline
(:mod:`tru.kfp`, installed with the package: no checkout needed)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
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
    ("--deadline-days", "deadline_days", float),
    ("--calibration", "calibration", str),
)


def params_from(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {dest: getattr(args, dest, None) for _flag, dest, _t in PARAM_FLAGS}
    for flag, key, value in (
        ("no_retrain", "retrain", False),
        ("no_reuse_champion", "reuse_champion", False),
        ("generate_requests", "generate_requests", True),
        ("confirm", "confirm", True),
    ):
        if getattr(args, flag, False):
            params[key] = value
    return {k: v for k, v in params.items() if v is not None}


def _call(fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
    from tru.kfp.runner import PipelineError

    try:
        return fn(*a, **kw)
    except PipelineError as exc:
        raise CLIError(str(exc)) from exc


def cmd_compile(args: argparse.Namespace) -> int:
    from tru.kfp.pipeline import CLUSTER, LOCAL, ClusterConfig
    from tru.kfp.runner import compile_pipeline

    cfg = LOCAL if args.local else CLUSTER
    if args.image_pull_secret:
        cfg = ClusterConfig(**{**cfg.__dict__, "image_pull_secret": args.image_pull_secret})
    out = _call(compile_pipeline, Path(args.out), cfg)
    print(f"pipeline written to {out}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from tru.kfp.runner import run_local

    if not args.local:
        raise CLIError(
            "only local runs start here (--local); use `tru pipeline submit --host URL` for a cluster"
        )
    res = _call(run_local, params_from(args), root=args.pipeline_root)
    verdict = "promoted to champion" if res.get("promoted") else "champion unchanged"
    shown = {k: v for k, v in res.items() if k not in ("request_ids", "new_request_ids")}
    shown["n_forgotten_requests"] = len(res.get("request_ids", []))
    shown["n_new_requests"] = len(res.get("new_request_ids", []))
    print(json.dumps(shown, indent=2, default=str))
    print(
        f"{res.get('model_name')} version {res.get('version') or '—'}: {verdict} ({res.get('evidence')}; "
        f"{len(res.get('new_request_ids', []))} new request(s); {res.get('seconds')} s)"
    )
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from tru.kfp.runner import submit

    res = _call(
        submit, args.host, params_from(args), experiment=args.experiment, run_name=args.run_name,
        namespace=args.namespace, wait=args.wait,
    )  # fmt: skip
    print(json.dumps(res, indent=2))
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from tru.kfp.runner import schedule

    res = _call(
        schedule, args.host, args.cron, params_from(args), experiment=args.experiment, name=args.name,
        namespace=args.namespace,
    )  # fmt: skip
    print(json.dumps(res, indent=2))
    return 0


def add_param_flags(p: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    g = p.add_argument_group("pipeline parameters (default: the pipeline's)")
    for flag, dest, typ in PARAM_FLAGS:
        if dest not in exclude:
            g.add_argument(flag, dest=dest, type=typ)
    g.add_argument("--no-retrain", action="store_true", help="certify retrain-free: the fast path")
    g.add_argument("--no-reuse-champion", action="store_true", help="always train the backbone anew")
    g.add_argument(
        "--generate-requests",
        action="store_true",
        help="demos and benchmarks only: draw random requests when the data has no manifest",
    )
    g.add_argument("--confirm", action="store_true", help="slow path: confirm the champion against a retrain")


def _cluster_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="KFP API URL, e.g. https://kubeflow.example.com/pipeline")
    p.add_argument("--namespace", help="the Kubeflow profile namespace (multi-user Kubeflow)")
    p.add_argument("--experiment", default="tru")
    p.epilog = (
        "Authentication: $KF_PIPELINES_TOKEN (a bearer token), or inside the cluster the pod's "
        "service-account token. --tracking-uri (an MLflow server) and --repo (the data repository's git "
        "URL) are required."
    )


def register(sub: argparse._SubParsersAction) -> None:
    pl = sub.add_parser(
        "pipeline", help="the Kubeflow unlearning pipeline: compile, run locally, submit, schedule"
    )
    psub = pl.add_subparsers(dest="pipeline_command", required=True)
    c = psub.add_parser("compile", help="write the pipeline's IR YAML")
    c.add_argument("--out", required=True, help="YAML file to write")
    c.add_argument("--local", action="store_true", help="without GPU / Kubernetes settings (kfp.local)")
    c.add_argument("--image-pull-secret", help="a docker-registry secret for a private image registry")
    c.set_defaults(func=cmd_compile)

    r = psub.add_parser("run", help="run the pipeline end to end here (kfp.local, this Python environment)")
    r.add_argument("--local", action="store_true", help="run with kfp.local.SubprocessRunner (required)")
    r.add_argument("--pipeline-root", help="scratch folder for task outputs (default: scratch/kfp)")
    add_param_flags(r)
    r.set_defaults(func=cmd_run)

    s = psub.add_parser(
        "submit", help="upload this code's pipeline version and start a run on a KFP endpoint"
    )
    _cluster_flags(s)
    s.add_argument("--run-name")
    s.add_argument(
        "--wait", action="store_true", help="follow the run to its end; exit 2 unless it succeeded"
    )
    add_param_flags(s)
    s.set_defaults(func=cmd_submit)

    sc = psub.add_parser("schedule", help="create a recurring (cron) run on a KFP endpoint")
    _cluster_flags(sc)
    sc.add_argument("--cron", required=True, help='cron, 5 fields ("0 3 * * *") or 6 with seconds first')
    sc.add_argument("--name", default="tru-unlearning-schedule", help="recurring run name")
    add_param_flags(sc)
    sc.set_defaults(func=cmd_schedule)
