"""The six steps in process, in the pipeline's order and with its parameters: what ``tru trigger
--runner steps`` runs (no Kubeflow needed), and the reference the Kubeflow pipeline (:mod:`tru.kfp`)
is tested against. Each step writes into its own folder under the work folder, as a KFP task would."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tru.steps.params import PipelineParams
from tru.utils import LOG

STEP_DIRS = ("ingest", "train", "sensitivity", "unlearn", "certify", "register")


def run_chain(params: PipelineParams, work_dir: Path | str | None = None) -> dict[str, Any]:
    """ingest → train → sensitivity → unlearn → certify → register with ``params``; returns register's
    outcome plus ``seconds`` and ``work_dir``. A failing step raises (its output folder stays for
    inspection); the registry is changed only by the last step."""
    from tru.steps import certify, ingest, register, sensitivity, train, unlearn

    p = params
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    default = Path(p.repo or ".") / ".tru" / "runs" / f"{(p.data_rev or 'local')[:12]}-{stamp}"
    work = Path(work_dir) if work_dir else default
    d = {name: work / name for name in STEP_DIRS}
    t0 = time.perf_counter()
    data, manifest = d["ingest"] / "data", d["ingest"] / "requests.csv"
    info = ingest.ingest(
        p.repo, p.data_rev, p.dataset, data, manifest, requests=p.requests,
        generate_requests=p.generate_requests, regime=p.regime, ratio=p.ratio, seed=p.seed,
    )  # fmt: skip
    target = d["train"] / "target_requests.csv"
    common = {"dataset_name": info["dataset_name"], "data_version": info["data_version"]}
    train.train(
        data, manifest, p.backbone, d["train"] / "model", target, **common, tracking_uri=p.tracking_uri,
        epochs=p.epochs, reuse_champion=p.reuse_champion, deadline_days=p.deadline_days, confirm=p.confirm,
    )  # fmt: skip
    model = d["train"] / "model"
    sensitivity.sensitivity(data, model, target, d["sensitivity"])
    unlearn.unlearn(
        data,
        model,
        target,
        d["unlearn"],
        method=p.method,
        max_steps=p.max_steps,
        sensitivity_dir=d["sensitivity"],
        calibration=p.calibration,
    )
    certify.certify(
        data, model, d["unlearn"], target, d["certify"], policy=p.policy, retrain=p.retrain, seeds=p.seeds,
        calibration=p.calibration,
    )  # fmt: skip
    result = register.register(
        d["unlearn"], d["certify"], data, target, **common, backbone=p.backbone, tracking_uri=p.tracking_uri,
        sensitivity_dir=d["sensitivity"],
    )  # fmt: skip
    result |= {"seconds": round(time.perf_counter() - t0, 2), "work_dir": str(work)}
    d["register"].mkdir(parents=True, exist_ok=True)
    (d["register"] / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    LOG.info(
        "chain: %s in %.1f s", "promoted" if result.get("promoted") else "not promoted", result["seconds"]
    )
    return result


def run_for_trigger(
    *,
    repo: Path | str,
    rev: str,
    requests: list[Any],
    mode: str = "local",
    work_dir: Path | str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """:func:`run_chain` as ``tru trigger``'s runner (local only): the data revision ``rev`` of ``repo``;
    ``options`` are pipeline parameters (dataset, backbone, method, policy, epochs, ...)."""
    if mode != "local":
        raise ValueError("the steps runner is local only; cluster mode submits the Kubeflow pipeline")
    for key in ("data_version", "host", "namespace", "repo_url", "wait"):
        options.pop(key, None)
    return run_chain(PipelineParams.of({**options, "repo": str(repo), "data_rev": rev}), work_dir)
