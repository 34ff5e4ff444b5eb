"""``tru certify``: the verdict is data (exit 0 whether it passes or not; non-zero only on error)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_certify(args: argparse.Namespace) -> int:
    from tru.certify import run_certification

    cert = run_certification(
        args.data,
        args.original,
        args.unlearned,
        args.requests,
        Path(args.out),
        retrained_dir=args.retrained,
        policy_path=args.policy,
        seeds=tuple(int(s) for s in args.seeds.split(",")),
        device=args.device,
        overwrite=args.overwrite,
    )
    print(json.dumps({k: cert[k] for k in ("passed", "evidence", "reasons")}, indent=2))
    print(f"certificate: {Path(args.out) / 'certificate.json'}; report: {Path(args.out) / 'report.html'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("certify", help="certify an unlearned model (retrain comparison + membership audits)")
    c.add_argument("--data", required=True, help="dataset folder")
    c.add_argument("--original", required=True, help="run folder of the original model")
    c.add_argument("--unlearned", required=True, help="run folder written by `tru unlearn`")
    c.add_argument("--retrained", help="run folder of a model retrained on D_r (omit: retrain-free, weaker)")
    c.add_argument("--requests", required=True, help="deletion-request manifest (CSV)")
    c.add_argument("--policy", help="policy YAML (thresholds); default: the built-in policy")
    c.add_argument("--seeds", default="0,1,2,3,4", help="audit seeds, comma-separated")
    c.add_argument("--device", default="auto")
    c.add_argument("--overwrite", action="store_true")
    c.add_argument("--out", required=True, help="folder for certificate.json, report.html and plots")
    c.set_defaults(func=cmd_certify)
