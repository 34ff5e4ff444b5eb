"""Safe model checkpoints: a run folder holding ``model.pt`` (loaded with ``weights_only=True``) and
``run.json`` (config, data fingerprint, code version, metrics).

A checkpoint records the fingerprint of the dataset it was trained on and the fingerprint of the exact
train interactions (the train split, or the retain set D_r after unlearning). Loading it against another
dataset, or with a config whose architecture differs, is refused with a clear error."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tru.data.dataset import Pairs, RecDataset
from tru.models import build_backbone
from tru.models.base import Recommender
from tru.utils import git_commit, write_json

FORMAT_VERSION = 1
MODEL_FILE = "model.pt"
RUN_FILE = "run.json"
#: config keys that change the architecture or the scores: a mismatch refuses the checkpoint
ARCH_KEYS = (
    "model",
    "embedding_size",
    "n_ui_layers",
    "n_layers",
    "knn_k",
    "k_e",
    "k_t",
    "k_v",
    "n_heads",
    "num_samples",
)


class CheckpointError(ValueError):
    """The checkpoint is missing, corrupt, or does not match the dataset / config it is loaded with."""


def pairs_fingerprint(pairs: Pairs, n_items: int) -> str:
    """sha256 of the sorted unique pair keys: identifies a train set independent of row order."""
    keys = np.unique(pairs.keys(n_items)).astype("<i8")
    return hashlib.sha256(keys.tobytes()).hexdigest()


@dataclass
class LoadedRun:
    model: Recommender
    config: dict[str, Any]
    meta: dict[str, Any]
    train: Pairs


def save_run(
    run_dir: Path | str,
    model: Recommender,
    config: dict[str, Any],
    dataset: RecDataset,
    train: Pairs | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    forget: Pairs | None = None,
) -> Path:
    """Write ``model.pt`` + ``run.json`` (+ ``metrics.json`` when given) atomically into ``run_dir``.

    ``forget`` (the pairs removed from the train split, for unlearned models) is stored inside the
    checkpoint so that a reload rebuilds the graphs from D_r; run.json holds only its count and hash."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    train = dataset.train if train is None else train
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    forget_arr = (
        np.stack([forget.users, forget.items])
        if forget is not None and len(forget)
        else np.zeros((2, 0), dtype=np.int64)
    )
    payload = {
        "format_version": FORMAT_VERSION,
        "backbone": model.name,
        "state_dict": state,
        "config": json.loads(json.dumps(config, default=str)),
        "data_fingerprint": dataset.fingerprint,
        "train_fingerprint": pairs_fingerprint(train, dataset.n_items),
        "forget_pairs": torch.from_numpy(forget_arr.astype(np.int64)),
        "n_users": dataset.n_users,
        "n_items": dataset.n_items,
    }
    tmp = run_dir / f".{MODEL_FILE}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, run_dir / MODEL_FILE)
    meta = {
        "format_version": FORMAT_VERSION,
        "backbone": model.name,
        "dataset": dataset.summary(),
        "data_fingerprint": dataset.fingerprint,
        "train_fingerprint": payload["train_fingerprint"],
        "n_forget_pairs": int(forget_arr.shape[1]),
        "code_version": git_commit(),
        "config": payload["config"],
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        **(extra or {}),
    }
    write_json(run_dir / RUN_FILE, meta)
    if metrics is not None:
        write_json(run_dir / "metrics.json", metrics)
    return run_dir


def read_checkpoint(run_dir: Path | str) -> dict[str, Any]:
    path = Path(run_dir) / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint (expected a run folder written by `tru train`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt / unsafe files
        raise CheckpointError(f"{path}: cannot load safely (weights_only=True): {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unknown checkpoint format (expected format_version {FORMAT_VERSION})")
    return payload


def load_run(
    run_dir: Path | str,
    dataset: RecDataset,
    config_overrides: dict[str, Any] | None = None,
    device: str | torch.device | None = None,
) -> LoadedRun:
    """Rebuild the model on ``dataset`` and load its weights, refusing any mismatch."""
    payload = read_checkpoint(run_dir)
    path = Path(run_dir) / MODEL_FILE
    if payload["data_fingerprint"] != dataset.fingerprint:
        raise CheckpointError(
            f"{path}: trained on data fingerprint {payload['data_fingerprint'][:12]}…, but dataset "
            f"{dataset.root} has {dataset.fingerprint[:12]}…: evaluate it on the data it was trained on"
        )
    config = dict(payload["config"])
    for key, val in (config_overrides or {}).items():
        if key in ARCH_KEYS and key in config and config[key] != val:
            raise CheckpointError(
                f"{path}: config '{key}' is {config[key]!r} in the checkpoint, {val!r} requested"
            )
        config[key] = val
    forget_arr = payload["forget_pairs"].numpy()
    train = dataset.train
    forget = Pairs(forget_arr[0], forget_arr[1])
    if len(forget):
        train = train.subset(~train.isin(forget, dataset.n_items))
    if pairs_fingerprint(train, dataset.n_items) != payload["train_fingerprint"]:
        raise CheckpointError(f"{path}: the train interactions it was trained on are not the dataset's")
    model = build_backbone(payload["backbone"], dataset, config)
    if len(forget):
        model.rebuild(train)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit backbone '{payload['backbone']}': {exc}") from exc
    if device is not None:
        model.to(device)
    meta_path = Path(run_dir) / RUN_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return LoadedRun(model, config, meta, train)


def copy_run(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)
