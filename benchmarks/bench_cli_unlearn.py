#!/usr/bin/env python
"""The whole ``tru unlearn`` command, before and after, side by side in one run: process start-up, data
validation, loading, the unlearning and writing the run folder, as a user runs it.

    python benchmarks/bench_cli_unlearn.py --data DATA --model RUN --requests CSV --before 7f92a42 \\
        [--rounds 3] [--threads 1] [--json out.json]

Each arm is a fresh ``python -m tru unlearn`` process (``before``: the package of git revision
``--before``, extracted with ``git archive`` into a temporary folder; ``after``: this working tree's),
arms alternating per round. Per run: wall seconds, the child's CPU seconds (user + system) and the
method's own ``seconds`` from ``unlearn.json``; medians per arm and after / before. Each arm has its own
validation cache, warmed by one untimed run first (a data version is validated once, then used by many
commands: the steady state is what a user meets).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_once(src: Path, args: argparse.Namespace, out: Path, cache: Path) -> dict[str, float]:
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "OMP_NUM_THREADS": str(args.threads),
        "TRU_VALIDATION_CACHE": str(cache),
    }
    cmd = [sys.executable, "-m", "tru", "unlearn", "--data", args.data, "--model", args.model]
    cmd += ["--requests", args.requests, "--threads", str(args.threads), "--out", str(out), "--overwrite"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    method = json.loads((out / "unlearn.json").read_text())["seconds"]
    return {"wall": wall, "cpu": cpu, "method": float(method)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--requests", required=True)
    ap.add_argument("--before", required=True, help="git revision of the 'before' arm")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tru-bench-cli-") as tmp_s:
        tmp = Path(tmp_s)
        old = tmp / "before"
        old.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", args.before, "src"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        arms = {"before": old / "src", "after": REPO / "src"}
        runs: dict[str, list[dict[str, float]]] = {a: [] for a in arms}
        for arm, src in arms.items():  # warm each arm's validation cache (untimed)
            run_once(src, args, tmp / f"out-{arm}", tmp / f"cache-{arm}")
        for r in range(args.rounds):
            for arm, src in arms.items():
                runs[arm].append(run_once(src, args, tmp / f"out-{arm}", tmp / f"cache-{arm}"))
                print(
                    f"round {r + 1} {arm}: " + ", ".join(f"{k} {v:.2f} s" for k, v in runs[arm][-1].items())
                )
    med = {a: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for a, rs in runs.items()}
    print("\n| seconds (median) | before | after | after / before |\n|---|---|---|---|")
    for k in ("wall", "cpu", "method"):
        b, a = med["before"][k], med["after"][k]
        print(f"| {k} | {b:.2f} | {a:.2f} | {a / b:.2f} |")
    if args.json:
        report: dict[str, Any] = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "runs": runs,
            "median": med,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
