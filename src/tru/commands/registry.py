"""``tru registry``: the MLflow model registry seen from the command line.

    tru registry list     --name N [--tracking-uri URI] [--json]
    tru registry champion --name N [--download DIR] [--tracking-uri URI]
    tru registry purge    --name N [--apply] [--tracking-uri URI]

The store is ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlruns.db``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tru.commands.common import CLIError

_SHOWN_TAGS = (
    "verdict",
    "evidence",
    "confirmed",
    "n_forgotten_requests",
    "based_on",
    "contains_deleted_data",
    "superseded_by",
    "purged",
    "reasons",
)


def _connect(args: argparse.Namespace):
    from tru.mlops import registry, tracking

    try:
        tracking.configure(args.tracking_uri)
    except tracking.TrackingError as exc:
        raise CLIError(str(exc)) from exc
    return registry


def cmd_list(args: argparse.Namespace) -> int:
    registry = _connect(args)
    try:
        versions = registry.list_versions(args.name)
    except registry.TrackingError as exc:
        raise CLIError(str(exc)) from exc
    if args.json:
        print(json.dumps(versions, indent=2))
        return 0
    print(f"{'version':>7}  {'aliases':<18} tags")
    for v in versions:
        tags = ", ".join(f"{k}={v['tags'][k][:60]}" for k in _SHOWN_TAGS if k in v["tags"])
        print(f"{v['version']:>7}  {','.join(v['aliases']) or '-':<18} {tags}")
    return 0


def cmd_champion(args: argparse.Namespace) -> int:
    registry = _connect(args)
    try:
        found = registry.champion(args.name, Path(args.download) if args.download else None)
    except registry.TrackingError as exc:
        raise CLIError(str(exc)) from exc
    if found is None:
        raise CLIError(f"registered model '{args.name}' has no champion")
    version, folder = found
    print(json.dumps({"name": args.name, "version": version, "path": str(folder)}))
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    registry = _connect(args)
    try:
        rows = registry.purge(args.name, dry_run=not args.apply)
    except registry.TrackingError as exc:
        raise CLIError(str(exc)) from exc
    if not rows:
        print(f"{args.name}: nothing to purge (no superseded version holds deleted data)")
    for r in rows:
        print(
            f"{r['action']}: version {r['version']} (run {r['run_id']}, verdict {r['verdict']}), holds "
            f"{len(r['deleted_requests'])} deleted request(s); champion is version {r['champion']}"
        )
    if rows and not args.apply:
        print("dry run: pass --apply to delete these artifacts (registry records stay, tagged purged=true)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    reg = sub.add_parser("registry", help="MLflow model registry: versions, champion, purge")
    rsub = reg.add_subparsers(dest="registry_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", required=True, help="registered model, e.g. tru-lfm2k-mgcn")
        p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")

    p = rsub.add_parser("list", help="versions with their aliases and tags")
    common(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)
    p = rsub.add_parser("champion", help="download the champion's run folder and print its path")
    common(p)
    p.add_argument("--download", metavar="DIR", help="download into DIR (default: a folder under $TMPDIR)")
    p.set_defaults(func=cmd_champion)
    p = rsub.add_parser("purge", help="delete artifacts of versions that still hold deleted data")
    common(p)
    p.add_argument("--apply", action="store_true", help="really delete (default: dry run, list only)")
    p.set_defaults(func=cmd_purge)
