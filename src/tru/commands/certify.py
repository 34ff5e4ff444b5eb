"""``tru certify`` and ``tru calibrate``: the verdict is data (exit 0 whether it passes or not; non-zero
only on error).

    tru calibrate --data DIR --model RUN --requests CSV [--k 3] [--seeds 11,12,13] [--retrained RUN ...]
                  [--save-retrains] --out CAL_DIR
    tru certify --data DIR --original RUN --unlearned RUN2 [--retrained RUN3] --requests CSV
                [--calibration CAL_DIR] [--second-retrained RUN4] --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _seeds(text: str | None) -> tuple[int, ...] | None:
    if text is None or not text.strip():
        return None
    return tuple(int(s) for s in text.split(",") if s.strip())


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
        seeds=_seeds(args.seeds) or (0,),
        device=args.device,
        overwrite=args.overwrite,
        calibration=args.calibration,
        second_retrained_dir=args.second_retrained,
    )
    summary = {
        "verdict": cert.verdict,
        "passed": cert.passed,
        "evidence": cert.evidence,
        "tolerances": cert.tolerances,
        "update": cert.update,
        "reasons": list(cert.reasons),
    }
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    out = Path(args.out)
    print(
        f"certificate: {out / 'certificate.json'}; report: {out / 'report.html'}; "
        f"statistics on one axis: {out / 'statistics.png'}"
    )
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from tru.certify.calibration import LEVELS, run_calibration

    cal = run_calibration(
        args.data,
        args.model,
        args.requests,
        Path(args.out),
        k=args.k,
        seeds=_seeds(args.seeds),
        retrained_dirs=args.retrained or (),
        audit_seeds=_seeds(args.audit_seeds) or (0, 1, 2),
        policy_path=args.policy,
        device=args.device,
        overwrite=args.overwrite,
        save_retrains=args.save_retrains,
        coverage_factor=args.coverage,
        candidate_methods=tuple(args.candidates),
    )
    d = cal.document
    print(
        f"calibration: K = {cal.k} retrains (seeds {', '.join(map(str, cal.seeds))}), {cal.regime} regime, "
        f"{d['forget_set']['n_forget_pairs']} D_f pairs; covers {d['coverage']['n_forget_pairs'][0]}–"
        f"{d['coverage']['n_forget_pairs'][1]} pairs"
    )
    for level in LEVELS:
        tol = d["tolerances"][level]
        print(f"{level} (joint quantile level {tol['level']:.4f}):")
        for name, st in tol["statistics"].items():
            orig = ", ".join("n/a" if v is None else f"{v:.4f}" for v in st["original_excess"])
            floored = " (floor)" if st["floored"] else ""
            print(
                f"  {name:22s} q95 {st['quantile_plain']:.4f}  tolerance {st['tolerance']:.4f}{floored}  "
                f"original {orig}"
            )
    agree = d["agreement"]
    rate = "n/a" if agree["rate"] is None else f"{agree['rate']:.0%}"
    print(
        f"agreement of retrain-free and retrain verdicts: {agree['candidate_agree']} of "
        f"{agree['candidate_rows']} rows ({rate}) of {', '.join(args.candidates)}; all rows "
        f"{agree['agree']} of {agree['rows']}; retrain-free passed where retrain did not: "
        f"{agree['retrain_free_pass_retrain_not']}"
    )
    print(f"written to {Path(args.out) / 'calibration.json'} and null.png")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("certify", help="certify an unlearned model (retrain comparison + membership audits)")
    c.add_argument("--data", required=True, help="dataset folder")
    c.add_argument("--original", required=True, help="run folder of the original model")
    c.add_argument("--unlearned", required=True, help="run folder written by `tru unlearn`")
    c.add_argument("--retrained", help="run folder of a model retrained on D_r (omit: retrain-free, weaker)")
    c.add_argument("--requests", required=True, help="deletion-request manifest (CSV)")
    c.add_argument(
        "--calibration", help="folder written by `tru calibrate` (revision-2 tolerances; omit: fixed policy)"
    )
    c.add_argument("--second-retrained", help="another retrain on D_r, shown on the report's axis")
    c.add_argument("--policy", help="policy YAML (floors, thresholds); default: the built-in policy")
    c.add_argument("--seeds", default="0,1,2,3,4", help="audit seeds, comma-separated")
    c.add_argument("--device", default="auto")
    c.add_argument("--overwrite", action="store_true")
    c.add_argument("--out", required=True, help="folder for certificate.json, report.html and plots")
    c.set_defaults(func=cmd_certify)

    k = sub.add_parser(
        "calibrate",
        help="measure the certificate's null from K retrains (seeds) of one forget set; write a reusable "
        "calibration",
    )
    k.add_argument("--data", required=True, help="dataset folder")
    k.add_argument("--model", required=True, help="run folder of the original model (backbone and recipe)")
    k.add_argument("--requests", required=True, help="deletion-request manifest (CSV): the forget set")
    k.add_argument("--k", type=int, default=3, help="number of retrains (≥ 3)")
    k.add_argument("--seeds", help="retrain seeds, comma-separated (default: the model's seed + 1..K)")
    k.add_argument("--retrained", nargs="*", help="existing retrain folders to use first (each a seed)")
    k.add_argument("--audit-seeds", default="0,1,2", help="membership-audit seeds, comma-separated")
    k.add_argument("--coverage", type=float, default=2.0, help="sizes covered: [n / f, n · f] (default 2)")
    k.add_argument("--policy", help="policy YAML (floors, quantile) for the summary printed and stored")
    k.add_argument("--save-retrains", action="store_true", help="keep the retrains under OUT/retrains/seed-S")
    k.add_argument(
        "--candidates",
        nargs="+",
        default=["tru"],
        help="unlearning methods run on this forget set for the agreement of retrain-free and retrain "
        "verdicts (default: tru)",
    )
    k.add_argument("--device", default="auto")
    k.add_argument("--overwrite", action="store_true")
    k.add_argument("--out", required=True, help="folder for calibration.json and null.png")
    k.set_defaults(func=cmd_calibrate)
