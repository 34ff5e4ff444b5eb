"""``tru erase`` and ``tru erasure audit``: remove forgotten requests' data from every store, and check that
nothing of them is left (see :mod:`tru.mlops.erasure` and :mod:`tru.mlops.erasure_audit`).

    tru erase --repo DIR --name tru-<dataset>-<backbone> [--dataset NAME] [--tracking-uri URI]
              [--backend-store-uri URI] [--mlflow-artifacts-destination S3_URI]
              [--pipeline-root PATH_OR_S3 ...]
              [--keep-revisions REV ...] [--dry-run] [--commit/--no-commit]
    tru erasure audit --repo DIR --requests CSV [--tracking-uri URI] [--pipeline-root PATH_OR_S3 ...]
              [--scan PATH_OR_S3 ...] [--erased-only] [--experiment NAME ...] [--model NAME ...] [--no-mlflow]
              [--json]

``tru erase`` prints its report as JSON (request ids, counts, locations; never ids of users or items) and
exits 0 when every step succeeded, 2 when one failed (re-run it: the steps are idempotent).
``tru erasure audit`` exits 0 when clean, 1 when traces were found, 2 on error.
"""

from __future__ import annotations

import argparse
import json
import sys

from tru.commands.common import CLIError

EXIT_TRACES = 1
EXIT_ERROR = 2


def cmd_erase(args: argparse.Namespace) -> int:
    from tru.mlops.erasure import erase
    from tru.mlops.tracking import TrackingError

    try:
        report = erase(
            args.repo,
            args.name,
            dataset=args.dataset,
            tracking_uri=args.tracking_uri,
            backend_store_uri=args.backend_store_uri,
            mlflow_artifacts_destination=args.mlflow_artifacts_destination,
            pipeline_roots=args.pipeline_root or (),
            keep_revisions=args.keep_revisions or (),
            dry_run=args.dry_run,
            commit=args.commit,
        )
    except TrackingError as exc:
        raise CLIError(str(exc)) from exc
    print(json.dumps(report.to_dict(), indent=2))
    if not report.ok:
        failed = [s.step for s in report.steps if s.status == "failed"]
        print(
            f"error: step(s) failed: {', '.join(failed)}; fix the cause and re-run tru erase", file=sys.stderr
        )
        return EXIT_ERROR
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from tru.data.dataset import DataError
    from tru.mlops.erasure_audit import audit
    from tru.mlops.tracking import TrackingError

    try:
        report = audit(
            args.repo,
            args.requests,
            tracking_uri=args.tracking_uri,
            pipeline_roots=args.pipeline_root or (),
            scan=args.scan or (),
            erased_only=args.erased_only,
            experiments=args.experiment,
            model_names=args.model,
            mlflow=not args.no_mlflow,
        )
    except (DataError, TrackingError) as exc:  # exit 1 means "traces found" here: errors are 2
        raise CLIError(str(exc)) from exc
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render())
    if report.errors:
        return EXIT_ERROR
    return 0 if report.clean else EXIT_TRACES


def register(sub: argparse._SubParsersAction) -> None:
    er = sub.add_parser(
        "erase",
        help="remove the data of requests the champion has forgotten from the dataset (a DVC commit), the "
        "DVC cache and remote, pipeline outputs and MLflow; prints a JSON report",
    )
    er.add_argument("--repo", default=".", help="git + DVC repository (default: .)")
    er.add_argument("--name", required=True, help="registered model, tru-<dataset>-<backbone>")
    er.add_argument("--dataset", help="dataset folder under data/ (default: the only one)")
    er.add_argument(
        "--tracking-uri", dest="tracking_uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI)"
    )
    er.add_argument(
        "--backend-store-uri",
        dest="backend_store_uri",
        help="the tracking server's backend store (as given to `mlflow server`), needed to remove runs "
        "permanently when --tracking-uri is an http(s) server (default $MLFLOW_BACKEND_STORE_URI)",
    )
    er.add_argument(
        "--mlflow-artifacts-destination",
        dest="mlflow_artifacts_destination",
        metavar="S3_URI",
        help="the server's --artifacts-destination: old S3 object versions of purged runs are deleted too",
    )
    er.add_argument(
        "--pipeline-root",
        action="append",
        metavar="PATH_OR_S3",
        help="a kfp.local pipeline root besides <repo>/.tru/kfp (repeatable; s3:// roots: every object "
        "version)",
    )
    er.add_argument(
        "--keep-revisions", nargs="+", metavar="REV", help="revisions whose DVC objects must stay (retention)"
    )
    er.add_argument("--dry-run", action="store_true", help="change nothing; report what would go")
    er.add_argument(
        "--commit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="git commit the new data version (default); --no-commit leaves it to you (collection waits)",
    )
    er.set_defaults(func=cmd_erase)

    grp = sub.add_parser("erasure", help="erasure checks")
    gsub = grp.add_subparsers(dest="erasure_command", required=True)
    au = gsub.add_parser(
        "audit",
        help="scan the dataset, DVC cache and remote, MLflow, pipeline outputs and tru's files for any trace "
        "of the requests; exit 0 clean, 1 traces found, 2 error",
    )
    au.add_argument("--repo", default=".", help="git + DVC repository (default: .)")
    au.add_argument(
        "--requests", required=True, help="the auditor's copy of the original request manifest (CSV)"
    )
    au.add_argument(
        "--tracking-uri", dest="tracking_uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI)"
    )
    au.add_argument(
        "--pipeline-root", action="append", metavar="PATH_OR_S3", help="more pipeline roots (repeatable)"
    )
    au.add_argument(
        "--scan", action="append", metavar="PATH_OR_S3", help="more places to scan: log files, artifact roots"
    )
    au.add_argument(
        "--erased-only", action="store_true", help="audit only requests tru's ledger says are erased"
    )
    au.add_argument("--experiment", action="append", help="limit the MLflow scan to these experiments")
    au.add_argument("--model", action="append", help="limit the registry scan to these registered models")
    au.add_argument("--no-mlflow", action="store_true", help="skip MLflow")
    au.add_argument("--json", action="store_true", help="print the report as JSON")
    au.set_defaults(func=cmd_audit)
