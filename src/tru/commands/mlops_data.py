"""``tru requests add | status`` and ``tru trigger``: deletion requests as DVC commits, where each one
stands, and the pipeline run for every pending one (see :mod:`tru.lifecycle`).

    tru requests add (--user U | --item I | --pair U I) --reason TEXT [--id ID] [--repo DIR] [--data DIR]
                     [--no-push] [--commit]
    tru requests status --backbone B [--repo DIR] [--rev REV] [--deadline-days D] [--json]
    tru trigger [--rev REV] [--repo DIR] [--runner kfp|steps] [--mode local|cluster] [--host URL] ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tru.commands.common import CLIError
from tru.commands.pipeline import add_param_flags, params_from


def cmd_requests_add(args: argparse.Namespace) -> int:
    from tru.mlops.versioning import DVC_FILE, REQUESTS_PATH, requests_add

    req = requests_add(
        Path(args.repo),
        user=args.user,
        item=args.item,
        pair=tuple(args.pair) if args.pair else None,
        reason=args.reason,
        request_id=args.id,
        push=not args.no_push,
        dataset_dir=args.data,
        commit=args.commit,
    )
    # ids and kind only: the user / item ids of a deletion request never go to a log
    print(json.dumps({"request_id": req.request_id, "kind": req.kind, "manifest": REQUESTS_PATH}))
    if not args.commit:
        print(
            f"recorded with DVC; to commit it: git add {DVC_FILE} && git commit -m 'deletion request "
            f"{req.request_id}'"
        )
    return 0


def cmd_requests_status(args: argparse.Namespace) -> int:
    from tru.forget.erased import read_erased
    from tru.forget.requests import read_requests
    from tru.lifecycle import request_statuses
    from tru.mlops import registry, tracking, versioning

    repo = versioning.check_repo(args.repo)
    if args.rev:
        sha = versioning.resolve_rev(repo, args.rev)
        manifest = versioning.read_requests_at(repo, sha)
        dataset = args.dataset or versioning.only_dataset_at(repo, sha)
    else:  # the working tree, committed or not
        path = repo / versioning.REQUESTS_PATH
        manifest = read_requests(path) if path.is_file() else []
        names = sorted(p.name for p in (repo / "data").iterdir() if p.is_dir() and p.name != "deletions")
        if not args.dataset and len(names) != 1:
            raise CLIError(
                f"{repo}/data: {len(names)} datasets ({', '.join(names)}); name one with --dataset"
            )
        dataset = args.dataset or names[0]
    erased_path = repo / "data" / "deletions" / "erased.csv"
    erased = read_erased(erased_path) if erased_path.is_file() else []
    tracking.configure(args.tracking_uri)
    name = tracking.model_name(dataset, args.backbone)
    rows = request_statuses(
        manifest, registry.version_records(name), erased, deadline_days=args.deadline_days
    )
    if args.json:
        print(json.dumps({"model_name": name, "requests": [r.to_dict() for r in rows]}, indent=2))
        return 0
    print(f"{name}: {len(rows)} request(s)")
    print(f"{'request_id':<28} {'kind':<12} {'state':<10} {'version':>7}  evidence / due")
    for r in rows:
        detail = r.evidence if r.state in ("forgotten", "erased") else f"due {r.due}"
        if r.erased_at:
            detail += f"; erased {r.erased_at}"
        if r.confirmed == "true":
            detail += "; confirmed by retrain"
        print(f"{r.request_id:<28} {r.kind:<12} {r.state:<10} {r.version or '-':>7}  {detail}")
    counts = {s: sum(r.state == s for r in rows) for s in ("pending", "overdue", "forgotten", "erased")}
    print("  ".join(f"{k}: {v}" for k, v in counts.items()))
    return 0


def runner_for(kind: str, mode: str) -> Any:
    """The runner ``tru trigger`` hands the pending requests to: ``kfp`` (the Kubeflow pipeline:
    ``kfp.local`` here, a submitted run in cluster mode) or ``steps`` (the same six steps in process)."""
    if kind == "steps":
        if mode != "local":
            raise CLIError("the steps runner is local only; cluster mode submits the Kubeflow pipeline")
        from tru.steps.chain import run_for_trigger

        return run_for_trigger
    from tru.kfp.runner import run_for_trigger

    return run_for_trigger


def cmd_trigger(args: argparse.Namespace) -> int:
    from tru.kfp.runner import PipelineError
    from tru.mlops.registry import PromotionConflict
    from tru.mlops.trigger import TriggerFailed, trigger

    opts: dict[str, Any] = params_from(args)
    for key in ("host", "work_dir", "repo_url", "namespace"):
        if getattr(args, key, None):
            opts[key] = getattr(args, key)
    if args.wait:
        opts["wait"] = True
    backbone = opts.pop("backbone", None) or "mgcn"
    dataset = opts.pop("dataset", None)
    tracking_uri = opts.pop("tracking_uri", None)
    confirm = bool(opts.pop("confirm", False))
    try:
        entry = trigger(
            Path(args.repo_dir), args.rev, runner=runner_for(args.runner, args.mode), backbone=backbone,
            dataset=dataset, mode=args.mode, tracking_uri=tracking_uri, confirm=confirm, **opts,
        )  # fmt: skip
    except TriggerFailed as exc:
        print(json.dumps(exc.entry, indent=2, default=str))
        raise CLIError(str(exc)) from exc
    except (PipelineError, PromotionConflict) as exc:
        raise CLIError(f"{exc} (the requests stay pending; the next trigger retries them)") from exc
    print(json.dumps(entry, indent=2, default=str))
    return 0


def add_requests_parsers(rsub: argparse._SubParsersAction) -> None:
    """``tru requests add`` and ``tru requests status`` under the ``tru requests`` group."""
    add = rsub.add_parser(
        "add",
        help="append a deletion request to data/deletions/requests.csv and record it with DVC "
        "(dvc add, dvc push), ready to commit",
    )
    who = add.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=int, metavar="U", help="forget every interaction of user U")
    who.add_argument("--item", type=int, metavar="I", help="forget every interaction with item I")
    who.add_argument("--pair", type=int, nargs=2, metavar=("U", "I"), help="forget one interaction")
    add.add_argument("--reason", required=True, help="why (free text, kept in the manifest)")
    add.add_argument("--id", help="request id (default: req-<UTC time>-<random>)")
    add.add_argument("--repo", default=".", help="git + DVC repository (default: .)")
    add.add_argument("--data", help="dataset folder to check the ids against (unknown id, pair not in train)")
    add.add_argument("--no-push", action="store_true", help="do not `dvc push` even if a remote is set")
    add.add_argument("--commit", action="store_true", help="also `git commit` data.dvc")
    add.set_defaults(func=cmd_requests_add)

    st = rsub.add_parser(
        "status", help="each request with its state (pending / overdue / forgotten by version N / erased)"
    )
    st.add_argument("--repo", default=".", help="git + DVC repository (default: .)")
    st.add_argument("--rev", help="a committed revision (default: the working tree)")
    st.add_argument("--dataset", help="dataset folder name under data/ (default: the only one)")
    st.add_argument("--backbone", default="mgcn", help="the registered model is tru-<dataset>-<backbone>")
    st.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    st.add_argument("--deadline-days", type=float, default=30.0, help="days from requested_at (default 30)")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=cmd_requests_status)


def register(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser(
        "trigger",
        help="run (local) or submit (cluster) the unlearning pipeline for every request pending at a "
        "revision (pending = manifest − what the champion forgot)",
    )
    tr.add_argument("--rev", "--to", dest="rev", default="HEAD", help="data revision (default HEAD)")
    tr.add_argument(
        "--repo-dir", "--repo", dest="repo_dir", default=".", help="git + DVC checkout (default: .)"
    )
    tr.add_argument("--mode", default="local", choices=("local", "cluster"))
    tr.add_argument("--host", help="KFP endpoint (cluster mode)")
    tr.add_argument("--namespace", help="Kubeflow profile namespace (cluster mode)")
    tr.add_argument("--repo-url", dest="repo_url", help="the repository URL the pods clone (default: origin)")
    tr.add_argument("--wait", action="store_true", help="cluster mode: follow the run to its end")
    tr.add_argument("--work-dir", dest="work_dir", help="folder for the run's outputs (local)")
    tr.add_argument(
        "--runner",
        default="kfp",
        choices=("kfp", "steps"),
        help="kfp: the Kubeflow pipeline (kfp.local here, a run on --host in cluster mode); steps: the same "
        "six steps in process (local only)",
    )
    add_param_flags(tr, exclude=("repo", "data_rev"))
    tr.set_defaults(func=cmd_trigger)
