"""Safe model checkpoints: a run folder holding ``model.pt`` (loaded with ``weights_only=True``) and
``run.json`` (config, provenance, code version, metrics); file names in :mod:`tru.runfolder`.

A checkpoint says exactly what its model was trained on and what it has forgotten, never the forgotten
data itself:

* ``id_space`` (n_users, n_items) and ``features_fingerprint`` (the item feature matrices): the model's
  shape and content inputs; loading on a dataset where either differs is refused;
* ``train_fingerprint`` = sha256 of the sorted unique pair keys it was trained on (D, or D_r);
* ``forgotten``: the ids of the deletion requests the model has forgotten and a keyed commitment to
  them (:mod:`tru.forget.commitment`), never the deleted pairs;
* ``lineage``: how the model was made (``train`` from scratch, ``unlearn`` from a parent model,
  ``retrain`` from scratch on D_r), the parent's weights hash and registry version, the data version;
* ``weights_sha256``: the hash of the weights (certificates bind to it).

Loading (:func:`load_run`): on the *erased* dataset (the forgotten rows physically removed) the train
split is the model's train set; on a dataset that still holds the forgotten rows, pass the deletion
manifest (``requests``) and the rows of the forgotten requests are removed first. Either way the train
fingerprint must match, so a model never loads against data it was not trained on."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tru.data.dataset import Pairs, RecDataset
from tru.models import build_backbone
from tru.models.base import Recommender
from tru.runfolder import METRICS_FILE, MODEL_FILE, RUN_FILE
from tru.utils import git_commit, write_json

FORMAT_VERSION = 2
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
    "isolated_self_loop",
)
LINEAGE_KINDS = ("train", "unlearn", "retrain")


class CheckpointError(ValueError):
    """The checkpoint is missing, corrupt, or does not match the dataset / config it is loaded with."""


def pairs_fingerprint(pairs: Pairs, n_items: int) -> str:
    """A keyed hash of the sorted unique pair keys (:func:`tru.forget.commitment.commit_pairs`): identifies
    a train set independent of row order. Keyed, because an unsalted hash of the pre-deletion train set,
    next to the erased data, would give a deleted pair away by enumeration."""
    from tru.forget.commitment import commit_pairs

    return commit_pairs(pairs.keys(n_items), n_items)


def features_fingerprint(dataset: RecDataset) -> str:
    """sha256 over the id space and every modality's feature matrix (name, shape, float32 bytes)."""
    h = hashlib.sha256(f"{dataset.n_users}x{dataset.n_items}".encode())
    for name in sorted(dataset.features):
        arr = np.ascontiguousarray(dataset.features[name], dtype="<f4")
        h.update(f"|{name}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the state dict in key order: name, dtype, shape and the raw bytes of every tensor."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass(frozen=True)
class Forgotten:
    """What a model has forgotten: request ids (sorted), a keyed commitment per request
    (``commit_requests([r])``) and the set's commitment (:func:`tru.forget.commitment.commit_set` over
    them): never the requests' user or item ids. Per-request commitments let a certificate for a subset
    be checked, also after the rows of earlier requests were erased (:meth:`restricted`)."""

    request_ids: tuple[str, ...] = ()
    commitment: str = ""
    n_pairs: int = 0
    per_request: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, requests: Sequence[Any], n_pairs: int) -> Forgotten:
        """The forgotten set of ``requests`` (objects with request_id, kind, user_id, item_id)."""
        from tru.forget.commitment import commit_requests, commitment_key

        uniq = {str(r.request_id): r for r in requests}
        # the key is read once, not per request (70 µs each: 0.6 s of a 4,000-request `tru unlearn`)
        key = commitment_key() if uniq else None
        return cls.from_commitments({rid: commit_requests([r], key) for rid, r in uniq.items()}, n_pairs)

    @classmethod
    def from_commitments(cls, per_request: dict[str, str], n_pairs: int = 0) -> Forgotten:
        from tru.forget.commitment import commit_set

        if not per_request:
            return cls(n_pairs=int(n_pairs))
        return cls(tuple(sorted(per_request)), commit_set(per_request), int(n_pairs), dict(per_request))

    def inherit(self, parent: Forgotten) -> Forgotten:
        """This set plus everything ``parent`` forgot: a model made from ``parent`` (or retrained on data
        from which the rows of the parent's other requests were erased) has forgotten those too."""
        merged = {**parent.per_request, **self.per_request}
        return Forgotten.from_commitments(merged, self.n_pairs)

    def restricted(self, ids: Iterable[str]) -> Forgotten | None:
        """The record of the subset ``ids`` (None when one of them is not forgotten here)."""
        ids = set(ids)
        if not ids <= set(self.per_request):
            return None
        return Forgotten.from_commitments({i: self.per_request[i] for i in ids})

    def covers(self, other: Forgotten) -> bool:
        """Whether this model has forgotten exactly the requests of ``other`` (same commitments), and maybe
        more."""
        sub = self.restricted(other.request_ids)
        return sub is not None and sub.commitment == other.commitment

    @classmethod
    def from_dict(cls, raw: Any) -> Forgotten:
        raw = raw or {}
        return cls(
            tuple(str(r) for r in raw.get("request_ids", ())),
            str(raw.get("commitment", "")),
            int(raw.get("n_pairs", 0)),
            {str(k): str(v) for k, v in (raw.get("per_request") or {}).items()},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_ids": list(self.request_ids),
            "commitment": self.commitment,
            "n_pairs": self.n_pairs,
            "per_request": dict(sorted(self.per_request.items())),
        }

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self.request_ids)


@dataclass(frozen=True)
class Lineage:
    """How a model was made. ``parent_version``: the registry version it was derived from ('' if none)."""

    kind: str = "train"
    method: str = ""
    parent_weights_sha256: str = ""
    parent_version: str = ""
    data_version: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in LINEAGE_KINDS:
            raise ValueError(f"lineage kind {self.kind!r}: expected one of {LINEAGE_KINDS}")

    @classmethod
    def from_dict(cls, raw: Any) -> Lineage:
        raw = dict(raw or {})
        raw["data_version"] = {str(k): str(v) for k, v in (raw.get("data_version") or {}).items()}
        known = {k: raw[k] for k in ("kind", "method", "parent_weights_sha256", "parent_version") if k in raw}
        return cls(**known, data_version=raw["data_version"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedRun:
    model: Recommender
    config: dict[str, Any]
    meta: dict[str, Any]
    train: Pairs
    forgotten: Forgotten = field(default_factory=Forgotten)
    lineage: Lineage = field(default_factory=Lineage)
    weights_sha256: str = ""


def save_run(
    run_dir: Path | str,
    model: Recommender,
    config: dict[str, Any],
    dataset: RecDataset,
    train: Pairs | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    forgotten: Forgotten | None = None,
    lineage: Lineage | None = None,
) -> Path:
    """Write ``model.pt`` + ``run.json`` (+ ``metrics.json`` when given) atomically into ``run_dir``.

    ``train``: the interactions the model was trained on (default: the dataset's train split; D_r for
    unlearned and retrained models); ``forgotten``: the requests it has forgotten (ids + commitment:
    never the pairs)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    train = dataset.train if train is None else train
    forgotten = forgotten or Forgotten()
    lineage = lineage or Lineage()
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    digest = weights_sha256(state)
    provenance = {
        "backbone": model.name,
        "id_space": {"n_users": dataset.n_users, "n_items": dataset.n_items},
        "features_fingerprint": features_fingerprint(dataset),
        "train_fingerprint": pairs_fingerprint(train, dataset.n_items),
        "n_train_pairs": len(train),
        "forgotten": forgotten.to_dict(),
        "lineage": lineage.to_dict(),
        "weights_sha256": digest,
        "trained_epochs": model.trained_epochs,
    }
    payload = {
        "format_version": FORMAT_VERSION,
        "state_dict": state,
        "config": json.loads(json.dumps(config, default=str)),
        **provenance,
    }
    tmp = run_dir / f".{MODEL_FILE}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, run_dir / MODEL_FILE)
    meta = {
        "format_version": FORMAT_VERSION,
        **provenance,
        "dataset": dataset.summary(),
        "code_version": git_commit(),
        "config": payload["config"],
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        **(extra or {}),
    }
    write_json(run_dir / RUN_FILE, meta)
    if metrics is not None:
        write_json(run_dir / METRICS_FILE, metrics)
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
        got = payload.get("format_version") if isinstance(payload, dict) else None
        hint = (
            " (format 1 stored the deleted pairs inside the model: retrain or re-run the unlearning)"
            if got == 1
            else ""
        )
        raise CheckpointError(
            f"{path}: checkpoint format {got!r}; expected format_version {FORMAT_VERSION}{hint}"
        )
    return payload


def checkpoint_forgotten(run_dir: Path | str) -> Forgotten:
    """The forgotten set recorded in a run folder's checkpoint (no model is built)."""
    return Forgotten.from_dict(read_checkpoint(run_dir).get("forgotten"))


def model_train_set(
    payload: dict[str, Any], dataset: RecDataset, requests: Iterable[Any] | None, where: Path
) -> Pairs:
    """The interactions a checkpoint was trained on, found in ``dataset``: its train split when the
    fingerprints match (an original model, or the erased dataset), else the split without the rows of
    the model's forgotten requests taken from ``requests`` (the deletion manifest)."""
    want, n_items = str(payload["train_fingerprint"]), dataset.n_items
    if pairs_fingerprint(dataset.train, n_items) == want:
        return dataset.train
    forgotten = Forgotten.from_dict(payload.get("forgotten"))
    if not forgotten.request_ids:
        raise CheckpointError(
            f"{where}: trained on {payload.get('n_train_pairs', '?')} pairs (fingerprint {want[:12]}…) that "
            f"are not dataset {dataset.root}'s train split ({len(dataset.train)} pairs)"
        )
    if requests is None:
        raise CheckpointError(
            f"{where}: the model has forgotten {len(forgotten.request_ids)} deletion request(s) whose rows "
            f"are still in dataset {dataset.root}: load it against the erased data version, or give the "
            "deletion manifest that holds those requests"
        )
    from tru.forget.requests import resolve_requests

    mine = [r for r in requests if str(r.request_id) in forgotten.ids]
    retain = resolve_requests(dataset, mine, strict=False).retain if mine else dataset.train
    if pairs_fingerprint(retain, n_items) != want:
        missing = len(forgotten.ids - {str(r.request_id) for r in mine})
        raise CheckpointError(
            f"{where}: the dataset without the rows of the model's {len(mine)} forgotten request(s) found in "
            f"the manifest ({missing} not found there) is not the set the model was trained on"
        )
    return retain


def load_run(
    run_dir: Path | str,
    dataset: RecDataset,
    config_overrides: dict[str, Any] | None = None,
    device: str | torch.device | None = None,
    requests: Iterable[Any] | None = None,
) -> LoadedRun:
    """Rebuild the model on ``dataset`` and load its weights, refusing any mismatch (module docstring).
    ``requests``: the deletion manifest, needed only when ``dataset`` still holds rows the model forgot."""
    path = Path(run_dir) / MODEL_FILE
    payload = read_checkpoint(run_dir)
    space = payload.get("id_space") or {}
    if (space.get("n_users"), space.get("n_items")) != (dataset.n_users, dataset.n_items):
        raise CheckpointError(
            f"{path}: made for {space.get('n_users')} users × {space.get('n_items')} items, but dataset "
            f"{dataset.root} has {dataset.n_users} × {dataset.n_items}: evaluate it on its own data"
        )
    if payload.get("features_fingerprint") != features_fingerprint(dataset):
        raise CheckpointError(
            f"{path}: trained with other item features than dataset {dataset.root}'s "
            f"(fingerprint {str(payload.get('features_fingerprint'))[:12]}…): evaluate it on its own data"
        )
    config = dict(payload["config"])
    for key, val in (config_overrides or {}).items():
        if key in ARCH_KEYS and key in config and config[key] != val:
            raise CheckpointError(
                f"{path}: config '{key}' is {config[key]!r} in the checkpoint, {val!r} requested"
            )
        config[key] = val
    train = model_train_set(payload, dataset, requests, path)
    model = build_backbone(payload["backbone"], dataset, config)
    if train is not dataset.train:
        model.rebuild(train)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit backbone '{payload['backbone']}': {exc}") from exc
    if device is not None:
        model.to(device)
    meta_path = Path(run_dir) / RUN_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    model.trained_epochs = _trained_epochs(payload, meta, payload["config"], path)
    return LoadedRun(
        model,
        config,
        meta,
        train,
        Forgotten.from_dict(payload.get("forgotten")),
        Lineage.from_dict(payload.get("lineage")),
        str(payload.get("weights_sha256", "")),
    )


def _trained_epochs(
    payload: dict[str, Any], meta: dict[str, Any], config: dict[str, Any], path: Path
) -> int | None:
    """The epochs of training behind a checkpoint's weights: recorded since the emulation of retraining's
    negative-only updates needs them; before that, the best epoch of the run's training record. A
    recorded value must be a whole number in [1, the config's epoch cap]: the emulation runs that many
    epochs, so a forged one is refused, not run."""
    value = payload.get("trained_epochs")
    if value is None:
        best = (meta.get("training") or {}).get("best_epoch")
        return int(best) + 1 if isinstance(best, int) and not isinstance(best, bool) and best >= 0 else None
    cap = config.get("epochs")
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < 1
        or (isinstance(cap, int) and value > cap)
    ):
        raise CheckpointError(
            f"{path}: 'trained_epochs' must be a whole number from 1 to the config's epoch cap "
            f"({cap if cap is not None else 'none'}), got {value!r}"
        )
    return value


def verify_weights(run_dir: Path | str) -> str:
    """Recompute the weights hash of a run folder's checkpoint; refuse one whose recorded hash differs
    (a checkpoint edited after it was written). Returns the hash."""
    payload = read_checkpoint(run_dir)
    got = weights_sha256(payload["state_dict"])
    if got != payload.get("weights_sha256"):
        raise CheckpointError(
            f"{Path(run_dir) / MODEL_FILE}: weights hash {got[:12]}… differs from the recorded "
            f"{str(payload.get('weights_sha256'))[:12]}…: the checkpoint was altered"
        )
    return got


def copy_run(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)
