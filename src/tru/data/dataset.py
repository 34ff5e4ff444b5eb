"""The MMRec interchange format, read and written.

A dataset folder holds, at its top level:

* ``<name>.inter``: TSV with header ``userID itemID rating [timestamp] x_label``; x_label 0/1/2 =
  train/valid/test; ids are 0-based and contiguous (``n_users = max(userID)+1``).
* one ``.npy`` feature matrix per modality, row i = item i.
* ``dataset.yaml``: the manifest naming the interaction file and mapping modality names to feature files.

Everything downstream (training, evaluation, unlearning) works on :class:`RecDataset`, whose
interactions are plain int64 numpy arrays (:class:`Pairs`), never per-row Python objects.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import yaml

MANIFEST_NAME = "dataset.yaml"
INTER_COLUMNS = ("userID", "itemID", "rating", "x_label")
OPTIONAL_COLUMNS = ("timestamp",)
TRAIN, VALID, TEST = 0, 1, 2


class DataError(ValueError):
    """Bad input data: the message names the file, the row or field, and what was expected."""


@dataclass(frozen=True)
class Pairs:
    """A set of (user, item) interactions as two aligned int64 arrays."""

    users: np.ndarray
    items: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", np.ascontiguousarray(self.users, dtype=np.int64))
        object.__setattr__(self, "items", np.ascontiguousarray(self.items, dtype=np.int64))
        if self.users.shape != self.items.shape or self.users.ndim != 1:
            raise ValueError(f"users {self.users.shape} and items {self.items.shape} must be equal 1-d")

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def keys(self, n_items: int) -> np.ndarray:
        """Unique int64 key per pair: ``u * n_items + i``."""
        return self.users * np.int64(n_items) + self.items

    def csr(self, n_users: int, n_items: int) -> sp.csr_matrix:
        """Binary user × item CSR matrix (duplicates collapse to 1)."""
        data = np.ones(len(self), dtype=np.float32)
        m = sp.csr_matrix((data, (self.users, self.items)), shape=(n_users, n_items))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    def subset(self, mask: np.ndarray) -> Pairs:
        return Pairs(self.users[mask], self.items[mask])

    def concat(self, other: Pairs) -> Pairs:
        return Pairs(np.concatenate([self.users, other.users]), np.concatenate([self.items, other.items]))

    def isin(self, other: Pairs, n_items: int) -> np.ndarray:
        """Boolean mask: which of our pairs are also in ``other``."""
        return np.isin(self.keys(n_items), other.keys(n_items))


@dataclass(frozen=True)
class Modality:
    name: str
    file: str
    dim: int


@dataclass
class DatasetManifest:
    """The dataset manifest (``dataset.yaml``)."""

    name: str
    interactions: str
    modalities: dict[str, Modality]
    source: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": "mmrec",
            "interactions": self.interactions,
            "modalities": {m.name: {"file": m.file, "dim": m.dim} for m in self.modalities.values()},
            "source": self.source,
            "stats": self.stats,
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> DatasetManifest:
        if not isinstance(raw, dict):
            raise DataError(f"{where}: expected a YAML mapping, got {type(raw).__name__}")
        for key in ("name", "interactions", "modalities"):
            if key not in raw:
                raise DataError(f"{where}: missing field '{key}' (expected name, interactions, modalities)")
        mods = raw["modalities"]
        if not isinstance(mods, dict) or not mods:
            raise DataError(f"{where}: field 'modalities' must map at least one modality name to a file")
        modalities: dict[str, Modality] = {}
        for name, spec in mods.items():
            if isinstance(spec, str):
                spec = {"file": spec}
            if not isinstance(spec, dict) or "file" not in spec:
                raise DataError(f"{where}: modality '{name}' needs a 'file' field")
            try:
                dim = int(spec.get("dim", -1))
            except (TypeError, ValueError) as exc:
                raise DataError(
                    f"{where}: modality '{name}' dim must be an integer, got {spec.get('dim')!r}"
                ) from exc
            modalities[str(name)] = Modality(str(name), str(spec["file"]), dim)
        return cls(
            name=str(raw["name"]),
            interactions=str(raw["interactions"]),
            modalities=modalities,
            source=dict(raw.get("source") or {}),
            stats=dict(raw.get("stats") or {}),
        )

    @classmethod
    def load(cls, folder: Path) -> DatasetManifest:
        path = Path(folder) / MANIFEST_NAME
        if not path.is_file():
            raise DataError(f"{path}: no dataset manifest (run `tru data prepare` or `tru data manifest`)")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise DataError(f"{path}: not valid YAML: {exc}") from exc
        return cls.from_dict(raw, str(path))

    def save(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        write_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False).encode())
        return path


def write_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename: never half-written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(payload)
    tmp.replace(path)


def read_inter(path: Path) -> pd.DataFrame:
    """Read an MMRec ``.inter`` TSV. Column checks beyond parsing belong to validation."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: interaction file not found")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a tab-separated file: {exc}") from exc
    if not isinstance(df.index, pd.RangeIndex):  # pandas shifts columns when rows have an extra field
        raise DataError(f"{path}: line 2 has more fields than the header {list(df.columns)}")
    return df


def write_inter(df: pd.DataFrame, path: Path) -> None:
    cols = ["userID", "itemID", "rating"] + (["timestamp"] if "timestamp" in df.columns else []) + ["x_label"]
    buf = df[cols].to_csv(sep="\t", index=False, lineterminator="\n").encode()
    write_atomic(Path(path), buf)


def save_npy(path: Path, array: np.ndarray) -> None:
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)


@dataclass
class RecDataset:
    """A loaded dataset: interactions split by x_label plus item features per modality."""

    name: str
    n_users: int
    n_items: int
    train: Pairs
    valid: Pairs
    test: Pairs
    features: dict[str, np.ndarray]
    manifest: DatasetManifest
    root: Path | None = None
    fingerprint: str = ""

    @property
    def modalities(self) -> list[str]:
        return list(self.features)

    def split(self, label: int) -> Pairs:
        return {TRAIN: self.train, VALID: self.valid, TEST: self.test}[label]

    def with_train(self, train: Pairs) -> RecDataset:
        """A copy whose train split is ``train`` (e.g. the retain set D_r); features and ids are kept."""
        return RecDataset(
            self.name,
            self.n_users,
            self.n_items,
            train,
            self.valid,
            self.test,
            self.features,
            self.manifest,
            self.root,
            self.fingerprint,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_train": len(self.train),
            "n_valid": len(self.valid),
            "n_test": len(self.test),
            "modalities": {k: int(v.shape[1]) for k, v in self.features.items()},
            "fingerprint": self.fingerprint,
        }


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def dataset_fingerprint(folder: Path, manifest: DatasetManifest) -> str:
    """sha256 over the interaction file and every feature file, in manifest order."""
    h = hashlib.sha256()
    for rel in [manifest.interactions, *[m.file for m in manifest.modalities.values()]]:
        h.update(rel.encode())
        h.update(file_sha256(Path(folder) / rel).encode())
    return h.hexdigest()


def load_dataset(folder: Path | str, validate: bool = True) -> RecDataset:
    """Load a dataset folder. With ``validate`` (default) Great Expectations checks run first and a
    :class:`DataError` carrying the report is raised on any failure: nothing runs on invalid data."""
    folder = Path(folder)
    if validate:
        from tru.data.validate import validate_dataset

        report = validate_dataset(folder)
        if not report.success:
            raise DataError(report.render())
    manifest = DatasetManifest.load(folder)
    df = read_inter(folder / manifest.interactions)
    try:
        users = df["userID"].astype(np.int64).to_numpy()
        items = df["itemID"].astype(np.int64).to_numpy()
        labels = df["x_label"].astype(np.int64).to_numpy()
    except (KeyError, ValueError) as exc:
        raise DataError(f"{folder / manifest.interactions}: cannot read integer ids: {exc}") from exc
    n_users = int(users.max()) + 1 if len(users) else 0
    n_items = int(items.max()) + 1 if len(items) else 0
    features: dict[str, np.ndarray] = {}
    for mod in manifest.modalities.values():
        arr = np.load(folder / mod.file, allow_pickle=False)
        features[mod.name] = np.ascontiguousarray(arr, dtype=np.float32)
        n_items = max(n_items, arr.shape[0])
    splits = {lab: Pairs(users[labels == lab], items[labels == lab]) for lab in (TRAIN, VALID, TEST)}
    return RecDataset(
        name=manifest.name,
        n_users=n_users,
        n_items=n_items,
        train=splits[TRAIN],
        valid=splits[VALID],
        test=splits[TEST],
        features=features,
        manifest=manifest,
        root=folder,
        fingerprint=dataset_fingerprint(folder, manifest),
    )


def write_dataset(
    folder: Path | str,
    name: str,
    inter: pd.DataFrame,
    features: dict[str, np.ndarray],
    source: dict[str, Any] | None = None,
    feature_files: dict[str, str] | None = None,
) -> DatasetManifest:
    """Write a dataset folder in MMRec format (``<name>.inter``, one ``.npy`` per modality, the manifest).

    Files are written through temporary names and renamed, and the manifest is written last, so a
    failure never leaves a folder that looks complete."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not features:
        raise DataError(f"{folder}: a dataset needs at least one modality feature matrix")
    feature_files = feature_files or {}
    modalities: dict[str, Modality] = {}
    for mod, arr in features.items():
        fname = feature_files.get(mod, f"{mod}_feat.npy")
        save_npy(folder / fname, np.ascontiguousarray(arr, dtype=np.float32))
        modalities[mod] = Modality(mod, fname, int(arr.shape[1]))
    inter_name = f"{name}.inter"
    write_inter(inter, folder / inter_name)
    labels = inter["x_label"].astype(int)
    stats = {
        "n_users": int(inter["userID"].astype(int).max()) + 1,
        "n_items": int(max(inter["itemID"].astype(int).max() + 1, *(a.shape[0] for a in features.values()))),
        "n_interactions": len(inter),
        "n_train": int((labels == TRAIN).sum()),
        "n_valid": int((labels == VALID).sum()),
        "n_test": int((labels == TEST).sum()),
    }
    manifest = DatasetManifest(name, inter_name, modalities, dict(source or {}), stats)
    manifest.save(folder)
    return manifest


def mmrec_split(
    users: np.ndarray,
    rng: np.random.Generator,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    min_items: int = 10,
) -> np.ndarray:
    """MMRec's per-user random split, vectorised.

    For each user with n interactions: n < ``min_items`` → n−2 train, 1 valid, 1 test (n ≥ 3; n = 2 →
    1 train / 1 test; n = 1 → train); otherwise a random permutation cut at ⌊0.8·n⌋ / ⌊0.9·n⌋ (train /
    valid / test). Returns x_label per row (aligned with ``users``)."""
    users = np.asarray(users, dtype=np.int64)
    order = np.lexsort((rng.random(len(users)), users))  # random order within each user
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
    counts = np.diff(np.r_[starts, len(users)])
    rank = np.arange(len(users)) - np.repeat(starts, counts)
    n = np.repeat(counts, counts)
    small = n < min_items
    n_train = np.where(small, np.maximum(n - 2, np.minimum(n, 1)), np.floor(ratios[0] * n).astype(np.int64))
    n_valid_end = np.where(
        small, np.where(n >= 3, n - 1, n_train), np.floor((ratios[0] + ratios[1]) * n).astype(np.int64)
    )
    label_sorted = np.where(rank < n_train, TRAIN, np.where(rank < n_valid_end, VALID, TEST))
    labels = np.empty(len(users), dtype=np.int64)
    labels[order] = label_sorted
    return labels
