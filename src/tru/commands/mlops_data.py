"""``tru requests add`` and ``tru trigger``: deletion requests as DVC commits, and the pipeline run for the
requests a commit added (see :mod:`tru.mlops.versioning`).

    tru requests add (--user U | --item I | --pair U I) --reason TEXT [--id ID] [--repo DIR] [--data DIR]
                     [--no-push] [--commit]
    tru trigger --from REV --to REV [--repo DIR] [--mode local|cluster] [--host URL] [--dataset NAME]
                [--backbone B] [--method M] [--epochs N] [--model RUN] [--policy YAML] [--force]

:func:`run_steps` is the local runner used when the KFP pipeline package is not importable: the library
steps (train, unlearn, certify) through :func:`tru.cli.main` on the data materialised at the revision.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tru.commands.common import CLIError
from tru.forget.requests import DeletionRequest


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
    print(
        json.dumps(
            {
                "request": dict(
                    zip(
                        ("request_id", "kind", "user_id", "item_id", "requested_at", "reason"),
                        req.row(),
                        strict=True,
                    )
                ),
                "manifest": REQUESTS_PATH,
            }
        )
    )
    if not args.commit:
        print(
            f"recorded with DVC; to commit it: git add {DVC_FILE} && git commit -m 'deletion request "
            f"{req.request_id}'"
        )
    return 0


def cmd_trigger(args: argparse.Namespace) -> int:
    from tru.mlops.trigger import trigger

    opts = {
        k: getattr(args, k)
        for k in (
            "host",
            "dataset",
            "backbone",
            "method",
            "epochs",
            "model",
            "policy",
            "work_dir",
            "tracking_uri",
            "max_steps",
        )
    }
    try:
        entry = trigger(
            Path(args.repo),
            args.rev_from,
            args.rev_to,
            mode=args.mode,
            runner_kind=args.runner,
            force=args.force,
            **{k: v for k, v in opts.items() if v is not None},
        )
    except Exception as exc:  # the pipeline's own errors (kfp runner) are user-facing: a message, exit 2
        runner = sys.modules.get("pipelines.runner")
        if runner is not None and isinstance(exc, runner.PipelineError):
            raise CLIError(str(exc)) from exc
        raise
    print(json.dumps(entry, indent=2))
    return 0


def add_requests_add_parser(rsub: argparse._SubParsersAction) -> None:
    """``tru requests add`` under the existing ``tru requests`` group (its sub-parsers action)."""
    add = rsub.add_parser(
        "add",
        help="append a deletion request to data/deletions/requests.csv and record "
        "it with DVC (dvc add, dvc push), ready to commit",
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


def register(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser(
        "trigger",
        help="run (local) or submit (cluster) the unlearning pipeline for the "
        "deletion requests added between two revisions; once per revision",
    )
    tr.add_argument("--from", dest="rev_from", required=True, metavar="REV", help="e.g. HEAD~1")
    tr.add_argument("--to", dest="rev_to", required=True, metavar="REV", help="e.g. HEAD")
    tr.add_argument("--repo", default=".", help="git + DVC repository (default: .)")
    tr.add_argument("--mode", default="local", choices=("local", "cluster"))
    tr.add_argument("--host", help="KFP endpoint (cluster mode)")
    tr.add_argument("--dataset", help="dataset folder name under data/ (default: the only one)")
    tr.add_argument("--backbone", help="backbone to train when no model is given (default: mgcn)")
    tr.add_argument("--method", help="unlearning method (default: tru)")
    tr.add_argument("--epochs", type=int, help="training epochs when a model is trained")
    tr.add_argument("--model", help="run folder of the current model (skips training)")
    tr.add_argument("--policy", help="certification policy YAML")
    tr.add_argument("--work-dir", dest="work_dir", help="folder for the run's outputs")
    tr.add_argument(
        "--runner",
        default="kfp",
        choices=("kfp", "steps"),
        help="kfp: the Kubeflow pipeline (kfp.local here, a run on --host in cluster mode); steps: the same "
        "steps in process through the library (local only; takes --model)",
    )
    tr.add_argument("--tracking-uri", dest="tracking_uri", help="MLflow tracking URI (kfp runner)")
    tr.add_argument("--max-steps", dest="max_steps", type=int, help="unlearning step budget (kfp runner)")
    tr.add_argument("--force", action="store_true", help="re-run a revision already processed")
    tr.set_defaults(func=cmd_trigger)


def run_steps(
    *,
    repo: Path,
    rev: str,
    requests: list[DeletionRequest],
    work_dir: Path | str | None = None,
    dataset: str | None = None,
    backbone: str = "mgcn",
    method: str = "tru",
    model: Path | str | None = None,
    epochs: int | None = None,
    policy: Path | str | None = None,
    seeds: str = "0,1,2",
    train_args: tuple[str, ...] = (),
    **_: Any,
) -> dict[str, Any]:
    """The pipeline's steps run directly through the library CLI (the local runner when KFP's is absent):
    materialise ``data/<dataset>`` at ``rev``; ``tru train`` (unless ``model`` is given); ``tru unlearn``
    on the new requests; ``tru certify``. Returns paths and the verdict."""
    from tru.cli import main
    from tru.forget.requests import write_requests
    from tru.mlops.versioning import only_dataset_at, open_dataset_at

    repo = Path(repo)
    dataset = dataset or only_dataset_at(repo, rev)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    work = Path(work_dir) if work_dir else repo / ".tru" / "runs" / f"{rev[:12]}-{stamp}"
    data = open_dataset_at(repo, rev, dataset, work / "data")
    csv = write_requests(work / "requests.csv", requests)

    def step(command: str, *flags: object, **opts: object) -> None:
        """``tru <command> --key value ...`` in process; ``opts`` with a None value are left out."""
        argv = [command, *(str(f) for f in flags)]
        for key, val in opts.items():
            argv += [] if val is None else [f"--{key}", str(val)]
        rc = main(argv)
        if rc != 0:
            raise CLIError(f"pipeline step {command} failed (exit {rc}); its work folder: {work}")

    if model is None:
        model = work / "original"
        step("train", *train_args, data=data, backbone=backbone, epochs=epochs, out=model)
    unlearned, cert_dir = work / "unlearned", work / "certificate"
    step("unlearn", data=data, model=model, requests=csv, method=method, out=unlearned)
    step(
        "certify",
        data=data,
        original=model,
        unlearned=unlearned,
        requests=csv,
        seeds=seeds,
        policy=policy,
        out=cert_dir,
    )
    cert = json.loads((cert_dir / "certificate.json").read_text())
    paths = {
        "work_dir": work,
        "model": model,
        "unlearned": unlearned,
        "certificate": cert_dir / "certificate.json",
    }
    out: dict[str, Any] = {k: str(v) for k, v in paths.items()}
    return {**out, "dataset": dataset, "passed": bool(cert["passed"]), "reasons": cert.get("reasons", [])}
