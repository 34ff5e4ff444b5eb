"""The unlearning pipeline's steps as plain typed functions: paths in, folders and dicts out.

The Kubeflow components (``components/``) only move artifacts in and out and call one of these, so every
step can be run and tested without Kubeflow. The chain (issue 4)::

    ingest → train → sensitivity → unlearn → certify → register

* :func:`ingest` materialises the dataset and the deletion-request manifest (from a DVC repository at a
  revision, or from a plain folder for the local job), validates both (Great Expectations for the
  dataset; strict parsing and resolution into D_f / D_r for the manifest) and reports the data version.
* :func:`train` reuses the registry's ``champion`` when it was trained on this exact data (same dataset
  fingerprint and backbone), else trains the backbone and logs the run to MLflow.
* :func:`sensitivity`, :func:`unlearn`, :func:`~tru.mlops.release_steps.certify` call the library
  (``tru.unlearn``, ``tru.certify``); with D_f empty (no requests) they pass the model through and certify
  it trivially.
* :func:`~tru.mlops.release_steps.register` logs the run, registers the version and moves ``champion``
  only when the certificate passed (``tru.mlops.registry.promote``).

certify, register and the heatmap page live in :mod:`tru.mlops.release_steps`.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tru.data.dataset import DataError
from tru.utils import LOG, write_json

REQUESTS_PATH = "data/deletions/requests.csv"
INFO_FILE = "step.json"
EMPTY_METHOD = "none"
CHECKPOINT_FILES = ("model.pt", "run.json", "metrics.json")


# ------------------------------------------------------------------------------------------- helpers
def _git_head(folder: Path) -> str:
    """The commit of the git checkout holding ``folder`` ('' outside git)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def is_dvc_repo(repo: str | Path) -> bool:
    """True when ``repo`` is a git checkout initialised with DVC (``.dvc/`` present)."""
    return bool(str(repo)) and (Path(repo) / ".dvc").is_dir()


def _copy_tree(src: Path, dst: Path) -> None:
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise DataError(f"{dst}: output exists and is not empty")
    shutil.copytree(src, dst, dirs_exist_ok=True)


def _load_spec(data_dir: Path, requests_csv: Path) -> tuple[Any, Any]:
    from tru.data.dataset import load_dataset
    from tru.forget.requests import read_requests, resolve_requests

    dataset = load_dataset(Path(data_dir), validate=False)  # validated once, by ingest
    return dataset, resolve_requests(dataset, read_requests(Path(requests_csv)))


def _unlearn_cfg(model_config: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    from tru.unlearn.api import unlearn_config

    return unlearn_config(model_config, overrides)


def read_info(folder: Path) -> dict[str, Any]:
    """The ``step.json`` a step leaves in its output folder ({} when absent)."""
    path = Path(folder) / INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def flat_metrics(tree: Any, prefix: str = "", depth: int = 3) -> dict[str, float]:
    """Finite numeric leaves of nested dicts as ``a.b.c`` names (``@`` written ``_at_``; lists skipped)."""
    out: dict[str, float] = {}
    if not isinstance(tree, dict) or depth == 0:
        return out
    for key, val in tree.items():
        name = f"{prefix}{key}".replace("@", "_at_")
        if isinstance(val, bool):
            continue
        if isinstance(val, int | float) and math.isfinite(float(val)):
            out[name] = float(val)
        elif isinstance(val, dict):
            out.update(flat_metrics(val, f"{name}.", depth - 1))
    return out


# -------------------------------------------------------------------------------------------- ingest
def _resolve_folder(root: Path, dataset: str) -> Path:
    """A plain dataset folder: ``dataset`` as a path (absolute, or relative to ``root``), else
    ``root/data/<dataset>``."""
    for cand in (Path(dataset), root / dataset, root / "data" / dataset):
        if (cand / "dataset.yaml").is_file():
            return cand
    raise DataError(
        f"dataset {dataset!r}: no dataset folder (with dataset.yaml) at {dataset}, {root / dataset} or "
        f"{root / 'data' / dataset}; expected a folder written by `tru data prepare`"
    )


def ingest(
    repo: str,
    rev: str,
    dataset: str,
    out_data: Path,
    out_requests: Path,
    *,
    requests: str = "",
    regime: str = "interaction",
    ratio: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Materialise and validate the dataset and the manifest; write them to ``out_data`` (folder) and
    ``out_requests`` (CSV); return the data version, dataset summary and D_f / D_r summary.

    DVC mode (``repo`` is a DVC repository): ``data/<dataset>/`` and ``data/deletions/requests.csv`` at
    ``rev`` through ``dvc.api``; a missing manifest means no requests. Folder mode (local job): the dataset
    folder, the manifest ``requests`` or ``<repo>/data/deletions/requests.csv`` when present, else
    requests generated from the train split (``regime``, ``ratio``, ``seed``). Raises
    :class:`DataError` (and writes nothing usable) on invalid data or requests."""
    from tru.data.dataset import load_dataset
    from tru.data.validate import validate_dataset
    from tru.forget.requests import read_requests, resolve_requests, write_requests

    out_data, out_requests = Path(out_data), Path(out_requests)
    root = Path(repo) if repo else Path.cwd()
    reqs: list[Any] | None = None
    if is_dvc_repo(repo):
        from tru.mlops import versioning

        source, at = "dvc", rev or "HEAD"
        versioning.open_dataset_at(root, at, dataset, out_data)
        version = dict(versioning.data_version(root, at))
        reqs = list(versioning.read_requests_at(root, at))  # no manifest at ``at``: no requests
        origin = "manifest" if reqs else "none"
    else:
        source = "folder"
        folder = _resolve_folder(root, dataset)
        _copy_tree(folder, out_data)
        version = {"git_commit": _git_head(folder), "dvc_md5": "", "rev": rev}
        manifest = Path(requests) if requests else root / REQUESTS_PATH
        if requests or manifest.is_file():
            reqs, origin = read_requests(manifest), "manifest"
    report = validate_dataset(out_data)
    if not report.success:
        raise DataError(f"dataset {dataset!r} ({source}, rev {rev or 'working tree'}):\n{report.render()}")
    ds = load_dataset(out_data, validate=False)
    if reqs is None:
        from tru.forget.generate import generate_requests

        reqs, origin = generate_requests(ds, regime, "random", ratio, seed), "generated"
        LOG.info("no manifest: generated %d %s requests (ratio %s, seed %d)", len(reqs), regime, ratio, seed)
    spec = resolve_requests(ds, reqs)
    out_requests.parent.mkdir(parents=True, exist_ok=True)
    write_requests(out_requests, reqs)
    version["dataset_fingerprint"] = ds.fingerprint
    info = {
        "source": source,
        "requests_origin": origin,
        "dataset_name": ds.name,
        "data_version": version,
        "dataset": ds.summary(),
        "spec": spec.summary(ds.n_items),
    }
    LOG.info("ingest: %s, %d requests → %d forget pairs", ds.name, len(reqs), len(spec.forget))
    return info


# --------------------------------------------------------------------------------------------- train
def _reusable_champion(name: str, backbone: str, fingerprint: str, dest: Path) -> tuple[str, Path] | None:
    """The champion's (version, run folder) when it was trained on this data with this backbone."""
    from tru.mlops import registry

    found = registry.champion(name, dest)
    if found is None:
        return None
    version, folder = found
    meta_path = Path(folder) / "run.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta.get("data_fingerprint") == fingerprint and meta.get("backbone") == backbone:
        return str(version), Path(folder)
    LOG.info("champion %s v%s was trained on other data or another backbone: training anew", name, version)
    return None


def train(
    data_dir: Path,
    backbone: str,
    out_dir: Path,
    *,
    dataset_name: str,
    data_version: dict[str, Any],
    tracking_uri: str = "",
    epochs: int = 0,
    overrides: dict[str, Any] | None = None,
    reuse_champion: bool = True,
) -> dict[str, Any]:
    """Write the original model's run folder to ``out_dir``: the registry's champion for
    ``dataset_name`` × ``backbone`` when it was trained on this data (run.json ``data_fingerprint``),
    else a freshly trained backbone (BPR, early stopping), logged to MLflow as a ``train`` run."""
    from tru.checkpoint import save_run
    from tru.config import load_config
    from tru.data.dataset import load_dataset
    from tru.mlops import tracking
    from tru.models import build_backbone
    from tru.train.trainer import Trainer

    tracking.configure(tracking_uri or None)
    name = tracking.model_name(dataset_name, backbone)
    dataset = load_dataset(Path(data_dir), validate=False)
    out_dir = Path(out_dir)
    if reuse_champion:
        with tempfile.TemporaryDirectory(prefix="tru-champion-") as tmp:
            champ = _reusable_champion(name, backbone, dataset.fingerprint, Path(tmp))
            if champ is not None:
                version, folder = champ
                out_dir.mkdir(parents=True, exist_ok=True)
                for fname in CHECKPOINT_FILES:
                    if (folder / fname).is_file():
                        shutil.copy2(folder / fname, out_dir / fname)
                LOG.info("train: reusing champion %s v%s (same data fingerprint)", name, version)
                info = {"reused": True, "model_name": name, "champion_version": version, "run_id": ""}
                write_json(out_dir / INFO_FILE, info)
                return info
    over = {"epochs": epochs or None, **(overrides or {})}
    config = load_config(backbone, dataset.manifest.source.get("kind") or dataset.name, overrides=over)
    model = build_backbone(backbone, dataset, config)
    result = Trainer(model, dataset, config).fit()
    metrics = {"valid": result.best_valid, "test": result.test}
    save_run(out_dir, model, config, dataset, metrics=metrics, extra={"training": result.to_dict()})
    params = {
        "backbone": backbone,
        "dataset": dataset_name,
        "epochs": config.get("epochs"),
        **(overrides or {}),
    }
    run_id = tracking.log_run(out_dir, kind="train", params=params, data_version=data_version)
    info = {"reused": False, "model_name": name, "champion_version": "", "run_id": str(run_id)}
    write_json(out_dir / INFO_FILE, info)
    return info


# ------------------------------------------------------------------------------- sensitivity, unlearn
def sensitivity(
    data_dir: Path,
    model_dir: Path,
    requests_csv: Path,
    out_dir: Path,
    *,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The layer-sensitivity probe for these requests: ``sensitivity.json`` and ``sensitivity.png``
    (per-unit scores S_l = ‖g_f‖/√n_f ÷ ‖g_r‖/√n_r, tru-method.md §6) in ``out_dir``."""
    from tru.checkpoint import load_run
    from tru.unlearn.sensitivity import plot_sensitivity, run_sensitivity
    from tru.utils import resolve_device

    dataset, spec = _load_spec(data_dir, requests_csv)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(spec.forget) == 0:
        report: dict[str, Any] = {"skipped": "no deletion requests: D_f is empty", "units": []}
        write_json(out_dir / "sensitivity.json", report)
        return {"selected": [], "skipped": True}
    run = load_run(Path(model_dir), dataset, device=resolve_device("auto"))
    report = run_sensitivity(run.model, dataset, spec, _unlearn_cfg(run.config, overrides))
    report["spec"] = spec.summary(dataset.n_items)
    write_json(out_dir / "sensitivity.json", report)
    plot_sensitivity(report, out_dir / "sensitivity.png")
    selected = [u["label"] for u in report["units"] if u["selected"]]
    return {"selected": selected, "params_selected": report.get("params_selected"), "skipped": False}


def unlearn(
    data_dir: Path,
    model_dir: Path,
    requests_csv: Path,
    out_dir: Path,
    *,
    method: str = "tru",
    max_steps: int = 0,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``method`` (TRU by default) on the original model for the requests; write the unlearned run
    folder (model.pt, run.json, metrics.json, unlearn.json). With D_f empty the original passes through
    unchanged (method ``none``)."""
    from tru.checkpoint import load_run
    from tru.unlearn.api import run_unlearning, save_unlearned
    from tru.utils import resolve_device

    dataset, spec = _load_spec(data_dir, requests_csv)
    out_dir = Path(out_dir)
    if len(spec.forget) == 0:
        _copy_tree(Path(model_dir), out_dir)
        (out_dir / INFO_FILE).unlink(missing_ok=True)
        report = {
            "method": EMPTY_METHOD,
            "steps": 0,
            "seconds": 0.0,
            "params_changed": 0,
            "stop_reason": "no deletion requests",
            "spec": spec.summary(dataset.n_items),
        }
        write_json(out_dir / "unlearn.json", report)
        return {k: report[k] for k in ("method", "steps", "seconds", "params_changed", "stop_reason")}
    run = load_run(Path(model_dir), dataset, device=resolve_device("auto"))
    cfg = _unlearn_cfg(run.config, {**(overrides or {}), "max_steps": max_steps or None})
    outcome = run_unlearning(method, run.model, dataset, spec, run.config, cfg)
    save_unlearned(out_dir, outcome, run.config, dataset, spec)
    rep = outcome.report
    return {
        "method": method,
        "steps": int(rep["steps"]),
        "seconds": float(rep["seconds"]),
        "params_changed": int(rep["params_changed"]),
        "stop_reason": str(rep["stop_reason"]),
        "metrics": outcome.metrics,
    }
