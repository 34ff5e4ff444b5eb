"""The six steps in process, in the pipeline's order and with its parameters: what ``tru trigger
--runner steps`` runs (no Kubeflow needed), and the reference the Kubeflow pipeline (:mod:`tru.kfp`)
is tested against. Each step writes into its own folder under the work folder, as a KFP task would."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tru.utils import LOG

STEP_DIRS = ("ingest", "train", "sensitivity", "unlearn", "certify", "register")


def run_chain(
    *,
    repo: str,
    rev: str = "",
    dataset: str,
    backbone: str = "mgcn",
    method: str = "tru",
    policy: str = "",
    tracking_uri: str = "",
    requests: str = "",
    generate_requests: bool = False,
    regime: str = "interaction",
    ratio: float = 0.05,
    seed: int = 0,
    epochs: int = 0,
    max_steps: int = 0,
    retrain: bool = True,
    audit_seeds: str = "0,1,2",
    reuse_champion: bool = True,
    deadline_days: float = 30.0,
    confirm: bool = False,
    work_dir: Path | str | None = None,
) -> dict[str, Any]:
    """ingest → train → sensitivity → unlearn → certify → register; returns register's outcome plus
    ``seconds`` and ``work_dir``. A failing step raises (its output folder stays for inspection); the
    registry is changed only by the last step."""
    from tru.steps import certify, ingest, register, sensitivity, train, unlearn

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    work = (
        Path(work_dir)
        if work_dir
        else Path(repo or ".") / ".tru" / "runs" / f"{(rev or 'local')[:12]}-{stamp}"
    )
    d = {name: work / name for name in STEP_DIRS}
    t0 = time.perf_counter()
    info = ingest.ingest(
        repo, rev, dataset, d["ingest"] / "data", d["ingest"] / "requests.csv", requests=requests,
        generate_requests=generate_requests, regime=regime, ratio=ratio, seed=seed,
    )  # fmt: skip
    data, manifest = d["ingest"] / "data", d["ingest"] / "requests.csv"
    target = d["train"] / "target_requests.csv"
    train.train(
        data, manifest, backbone, d["train"] / "model", target, dataset_name=info["dataset_name"],
        data_version=info["data_version"], tracking_uri=tracking_uri, epochs=epochs,
        reuse_champion=reuse_champion, deadline_days=deadline_days, confirm=confirm,
    )  # fmt: skip
    model = d["train"] / "model"
    sensitivity.sensitivity(data, model, target, d["sensitivity"])
    unlearn.unlearn(
        data,
        model,
        target,
        d["unlearn"],
        method=method,
        max_steps=max_steps,
        sensitivity_dir=d["sensitivity"],
    )
    seeds = tuple(int(s) for s in audit_seeds.split(",") if s.strip())
    certify.certify(
        data, model, d["unlearn"], target, d["certify"], policy=policy, retrain=retrain, seeds=seeds
    )
    result = register.register(
        d["unlearn"], d["certify"], data, target, dataset_name=info["dataset_name"], backbone=backbone,
        data_version=info["data_version"], tracking_uri=tracking_uri, sensitivity_dir=d["sensitivity"],
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
    options.pop("data_version", None)
    options.pop("host", None)
    return run_chain(repo=str(repo), rev=rev, work_dir=work_dir, **options)
