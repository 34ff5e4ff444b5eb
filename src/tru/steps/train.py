"""Step ``train``: the start model of a run and the run's plan (:class:`tru.lifecycle.RunPlan`).

The start model is the registry's champion when its checkpoint loads on this data once the rows of the
requests it has forgotten are removed (same id space and features, train fingerprint = D \\ rows(F)),
else a new original trained on D (BPR, early stopping) and logged to MLflow as a ``train`` run. The plan
(pending requests, target T = F ∪ pending, overdue ones) is written as ``plan.json`` beside the model,
and the target requests as their own CSV for the next steps."""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from tru.lifecycle import DEFAULT_DEADLINE_DAYS, RunPlan, plan_run
from tru.runfolder import PLAN_FILE, STEP_FILE
from tru.steps.common import copy_model
from tru.utils import LOG, write_json


def reusable_champion(
    name: str, dataset: Any, requests: list[Any], dest: Path
) -> tuple[str, Path, Any] | None:
    """(version, downloaded folder, loaded run) of the champion when it fits this data (module
    docstring), else None."""
    from tru.checkpoint import CheckpointError, load_run
    from tru.mlops import registry

    found = registry.champion(name, dest)
    if found is None:
        return None
    version, folder = found
    try:
        return str(version), Path(folder), load_run(folder, dataset, requests=requests)
    except CheckpointError as exc:
        LOG.info("champion %s v%s does not fit this data (%s): training anew", name, version, exc)
        return None


def read_plan(model_dir: Path) -> RunPlan:
    """The plan the train step wrote beside the start model."""
    from tru.runfolder import read_json

    return RunPlan.from_dict(read_json(Path(model_dir) / PLAN_FILE, required=True))


def train(
    data_dir: Path,
    requests_csv: Path,
    backbone: str,
    out_dir: Path,
    out_target: Path,
    *,
    dataset_name: str,
    data_version: dict[str, Any],
    tracking_uri: str = "",
    epochs: int = 0,
    overrides: dict[str, Any] | None = None,
    reuse_champion: bool = True,
    deadline_days: float = DEFAULT_DEADLINE_DAYS,
    confirm: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Write the start model's run folder (+ ``plan.json``) to ``out_dir`` and the target requests to
    ``out_target``; return the plan and where the model came from."""
    from tru.checkpoint import Lineage, save_run, weights_sha256
    from tru.config import load_config
    from tru.data.dataset import load_dataset
    from tru.forget.requests import read_requests, write_requests
    from tru.mlops import tracking
    from tru.models import build_backbone
    from tru.train.trainer import Trainer

    tracking.configure(tracking_uri or None)
    name = tracking.model_name(dataset_name, backbone)
    dataset = load_dataset(Path(data_dir), validate=False)
    manifest = read_requests(Path(requests_csv))
    out_dir = Path(out_dir)
    info: dict[str, Any] = {"model_name": name, "run_id": ""}
    champ = None
    if reuse_champion:
        with tempfile.TemporaryDirectory(prefix="tru-champion-") as tmp:
            champ = reusable_champion(name, dataset, manifest, Path(tmp))
            if champ is not None:
                copy_model(champ[1], out_dir)
    if champ is not None:
        version, _folder, run = champ
        forgotten, sha = run.forgotten.ids, run.weights_sha256
        info |= {"start": "champion", "champion_version": version}
        LOG.info(
            "train: starting from champion %s v%s (it forgot %d request(s))", name, version, len(forgotten)
        )
    else:
        over = {"epochs": epochs or None, **(overrides or {})}
        config = load_config(backbone, dataset.manifest.source.get("kind") or dataset.name, overrides=over)
        model = build_backbone(backbone, dataset, config)
        result = Trainer(model, dataset, config).fit()
        lineage = Lineage(kind="train", data_version={k: str(v) for k, v in data_version.items()})
        save_run(
            out_dir,
            model,
            config,
            dataset,
            metrics={"valid": result.best_valid, "test": result.test},
            extra={"training": result.to_dict()},
            lineage=lineage,
        )
        params = {
            "backbone": backbone,
            "dataset": dataset_name,
            "epochs": config.get("epochs"),
            **(overrides or {}),
        }
        run_id = tracking.log_run(out_dir, kind="train", params=params, data_version=data_version)
        version, forgotten, sha = "", frozenset(), weights_sha256(model.state_dict())
        info |= {"start": "trained", "champion_version": "", "run_id": str(run_id)}
    plan = plan_run(
        manifest,
        forgotten,
        start=info["start"],
        start_version=version,
        start_weights_sha256=sha,
        deadline_days=deadline_days,
        confirm=confirm,
        now=now,
    )
    write_json(out_dir / PLAN_FILE, plan.to_dict())
    target_ids = set(plan.target)
    Path(out_target).parent.mkdir(parents=True, exist_ok=True)
    write_requests(Path(out_target), [r for r in manifest if r.request_id in target_ids])
    info |= {
        "n_forgotten": len(plan.forgotten),
        "n_pending": len(plan.pending),
        "n_target": len(plan.target),
        "n_overdue": len(plan.overdue),
        "method_override": plan.method,
    }
    write_json(out_dir / STEP_FILE, info)
    LOG.info(
        "plan: %d pending request(s) on top of %d forgotten%s",
        len(plan.pending),
        len(plan.forgotten),
        f"; {len(plan.overdue)} overdue → full retrain" if plan.overdue else "",
    )
    return info
