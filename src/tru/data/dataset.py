"""The MMRec interchange format, read and written.

A dataset folder holds, at its top level:

* ``<name>.inter``: TSV with header ``userID itemID rating [timestamp] x_label``; x_label 0/1/2 =
  train/valid/test; ids are 0-based and lie in the manifest's id space.
* one ``.npy`` feature matrix per modality, row i = item i (``id_space.n_items`` rows).
* ``dataset.yaml``: the manifest naming the interaction file and mapping modality names to feature files,
  and declaring the id space ``id_space: {n_users, n_items}``: user ids are ``0 .. n_users-1`` and item
  ids ``0 .. n_items-1``. Ids need not all have rows: when an erasure removes every row of a user (even
  the highest id) the id space stays, so models trained before still fit. Folders written before the
  field existed fall back to ``stats.n_users / n_items``, then to ``max(id)+1`` (and feature rows).

The manifest is checked on load: ``name`` and ``source.kind`` are plain identifiers (they select packaged
config files by name), and every file it names is a relative path inside the dataset folder (no ``..``,
not absolute, no symlink out of the folder).

Everything downstream (training, evaluation, unlearning) works on :class:`RecDataset`, whose
interactions are plain int64 numpy arrays (:class:`Pairs`), never per-row Python objects.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
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
#: dataset names and source kinds: plain identifiers (they name packaged config files and ``<name>.inter``)
IDENTIFIER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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

    def sample(self, n: int, rng: np.random.Generator) -> Pairs:
        """At most ``n`` of the pairs, drawn without replacement by ``rng``, in their order (all of them,
        untouched, when there are no more than ``n``)."""
        if len(self) <= n:
            return self
        return self.subset(np.sort(rng.choice(len(self), n, replace=False)))

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


@dataclass(frozen=True)
class IdSpace:
    """The declared id space: user ids ``0 .. n_users-1``, item ids ``0 .. n_items-1``."""

    n_users: int
    n_items: int

    def to_dict(self) -> dict[str, int]:
        return {"n_users": self.n_users, "n_items": self.n_items}


def _plain_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_identifier(value: Any, field_name: str, where: str) -> str:
    """``value`` as a plain identifier (:data:`IDENTIFIER_RE`), else a DataError naming the field."""
    if _plain_int(value):
        value = str(value)
    if not isinstance(value, str) or not IDENTIFIER_RE.fullmatch(value):
        raise DataError(
            f"{where}: field '{field_name}' is {value!r}; expected a plain identifier (a letter or digit, "
            "then letters, digits, '_', '-', '.'; at most 64 characters), not a path"
        )
    return value


def check_relative_file(value: Any, field_name: str, where: str) -> str:
    """``value`` as a relative file path inside the dataset folder: not empty, not absolute, no ``..``
    component (symlinks are checked on load, :meth:`DatasetManifest.check_files_inside`)."""
    text = value if isinstance(value, str) else None
    parts = re.split(r"[\\/]", text) if text else []
    if (
        not text
        or text.startswith(("/", "\\", "~"))
        or re.match(r"^[A-Za-z]:", text)
        or ".." in parts
        or "\0" in text
    ):
        raise DataError(
            f"{where}: field '{field_name}' is {value!r}; expected a file path relative to the dataset "
            "folder (no '..', not absolute)"
        )
    return text


@dataclass
class DatasetManifest:
    """The dataset manifest (``dataset.yaml``)."""

    name: str
    interactions: str
    modalities: dict[str, Modality]
    source: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    id_space: IdSpace | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "format": "mmrec",
            "interactions": self.interactions,
            "modalities": {m.name: {"file": m.file, "dim": m.dim} for m in self.modalities.values()},
        }
        if self.id_space is not None:
            out["id_space"] = self.id_space.to_dict()
        out["source"] = self.source
        out["stats"] = self.stats
        return out

    def files(self) -> dict[str, str]:
        """``{manifest field: relative path}`` of every file the manifest names."""
        return {
            "interactions": self.interactions,
            **{f"modalities.{m.name}.file": m.file for m in self.modalities.values()},
        }

    def declared_id_space(self) -> tuple[IdSpace | None, str]:
        """The id space the manifest declares and the field it comes from: ``id_space``, else the
        ``stats`` written by :func:`write_dataset` (older folders), else ``(None, "")``."""
        if self.id_space is not None:
            return self.id_space, "id_space"
        nu, ni = self.stats.get("n_users"), self.stats.get("n_items")
        if _plain_int(nu) and _plain_int(ni) and nu >= 0 and ni >= 0:
            return IdSpace(int(nu), int(ni)), "stats"
        return None, ""

    def check_files_inside(self, folder: Path, where: str) -> None:
        """Every named file, symlinks resolved, lies inside ``folder``; else a DataError naming the field."""
        root = os.path.realpath(folder)
        for fld, rel in self.files().items():
            real = os.path.realpath(Path(folder) / rel)
            if os.path.commonpath([root, real]) != root:
                raise DataError(
                    f"{where}: field '{fld}' ({rel!r}) resolves to {real}, outside the dataset folder "
                    f"{root}; expected a file inside it (no symlink out of the folder)"
                )

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> DatasetManifest:
        if not isinstance(raw, dict):
            raise DataError(f"{where}: expected a YAML mapping, got {type(raw).__name__}")
        for key in ("name", "interactions", "modalities"):
            if key not in raw:
                raise DataError(f"{where}: missing field '{key}' (expected name, interactions, modalities)")
        name = check_identifier(raw["name"], "name", where)
        interactions = check_relative_file(raw["interactions"], "interactions", where)
        mods = raw["modalities"]
        if not isinstance(mods, dict) or not mods:
            raise DataError(f"{where}: field 'modalities' must map at least one modality name to a file")
        modalities: dict[str, Modality] = {}
        for mod_name, spec in mods.items():
            if isinstance(spec, str):
                spec = {"file": spec}
            if not isinstance(spec, dict) or "file" not in spec:
                raise DataError(f"{where}: modality '{mod_name}' needs a 'file' field")
            try:
                dim = int(spec.get("dim", -1))
            except (TypeError, ValueError) as exc:
                raise DataError(
                    f"{where}: modality '{mod_name}' dim must be an integer, got {spec.get('dim')!r}"
                ) from exc
            file = check_relative_file(spec["file"], f"modalities.{mod_name}.file", where)
            modalities[str(mod_name)] = Modality(str(mod_name), file, dim)
        source = raw.get("source") or {}
        if not isinstance(source, dict):
            raise DataError(f"{where}: field 'source' must be a mapping, got {type(source).__name__}")
        if "kind" in source:
            check_identifier(source["kind"], "source.kind", where)
        stats = raw.get("stats") or {}
        if not isinstance(stats, dict):
            raise DataError(f"{where}: field 'stats' must be a mapping, got {type(stats).__name__}")
        return cls(
            name=name,
            interactions=interactions,
            modalities=modalities,
            source=dict(source),
            stats=dict(stats),
            id_space=_parse_id_space(raw.get("id_space"), where),
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
        manifest = cls.from_dict(raw, str(path))
        manifest.check_files_inside(Path(folder), str(path))
        return manifest

    def save(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        write_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False).encode())
        return path


def _parse_id_space(raw: Any, where: str) -> IdSpace | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"n_users", "n_items"}:
        raise DataError(
            f"{where}: field 'id_space' is {raw!r}; expected a mapping {{n_users: N, n_items: M}} "
            "(the number of user ids and of item ids)"
        )
    for key in ("n_users", "n_items"):
        if not _plain_int(raw[key]) or raw[key] < 0:
            raise DataError(
                f"{where}: field 'id_space.{key}' is {raw[key]!r}; expected a non-negative integer"
            )
    return IdSpace(int(raw["n_users"]), int(raw["n_items"]))


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


def dataset_fingerprint(folder: Path, manifest: DatasetManifest, id_space: IdSpace | None = None) -> str:
    """sha256 over the interaction file and every feature file, in manifest order; with ``id_space`` (an
    id space the files alone do not imply, e.g. after an erasure removed the highest user) also over it."""
    h = hashlib.sha256()
    for rel in [manifest.interactions, *[m.file for m in manifest.modalities.values()]]:
        h.update(rel.encode())
        h.update(file_sha256(Path(folder) / rel).encode())
    if id_space is not None:
        h.update(f"id_space:{id_space.n_users},{id_space.n_items}".encode())
    return h.hexdigest()


def _check_ids_inside(ids: np.ndarray, n: int, column: str, path: Path, field_name: str) -> None:
    """DataError naming the file, the first offending line and the manifest field if an id is < 0 or ≥ n."""
    bad = (ids < 0) | (ids >= n)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: line {row + 2}: {column} {int(ids[row])} is outside the id space [0, {n}) declared "
            f"by dataset.yaml field '{field_name}' ({int(bad.sum())} row(s) outside it)"
        )


_NOT_TAKEN = "not taken"


def validate_and_remember(folder: Path, before: str | None = _NOT_TAKEN) -> Any:
    """Run the Great Expectations suite on ``folder`` and return its report; a pass of bytes that did not
    change while they were checked is remembered (:mod:`tru.data.validation_cache`). ``before``: the
    folder's fingerprint taken earlier (None: no stamp can be kept; taken here when not given)."""
    from tru.data.validate import validate_dataset
    from tru.data.validation_cache import fingerprint, remember_valid

    before = fingerprint(folder) if before == _NOT_TAKEN else before
    report = validate_dataset(folder)
    if report.success and before is not None and fingerprint(folder) == before:
        remember_valid(before, report.checked)
    return report


def _validate_once(folder: Path) -> None:
    """Raise a :class:`DataError` carrying the Great Expectations report unless the folder's exact bytes
    passed validation before (:mod:`tru.data.validation_cache`); remember a pass."""
    from tru.data.validation_cache import fingerprint, seen_valid

    before = fingerprint(folder)
    if seen_valid(before):
        logging.getLogger("tru").info(
            "dataset %s: these contents passed validation before; checks not repeated", folder
        )
        return
    report = validate_and_remember(folder, before)
    if not report.success:
        raise DataError(report.render())


def load_dataset(folder: Path | str, validate: bool = True) -> RecDataset:
    """Load a dataset folder. With ``validate`` (default) Great Expectations checks run first and a
    :class:`DataError` carrying the report is raised on any failure: nothing runs on invalid data.

    ``n_users`` / ``n_items`` are the manifest's declared id space (``id_space``, else ``stats`` of older
    folders, else ``max(id)+1`` and the feature rows); ids outside it, and feature matrices whose row
    count is not ``n_items``, are a :class:`DataError`."""
    folder = Path(folder)
    if validate:
        _validate_once(folder)
    manifest = DatasetManifest.load(folder)
    inter_path = folder / manifest.interactions
    df = read_inter(inter_path)
    try:
        users = df["userID"].astype(np.int64).to_numpy()
        items = df["itemID"].astype(np.int64).to_numpy()
        labels = df["x_label"].astype(np.int64).to_numpy()
    except (KeyError, ValueError) as exc:
        raise DataError(f"{inter_path}: cannot read integer ids: {exc}") from exc
    features: dict[str, np.ndarray] = {}
    for mod in manifest.modalities.values():
        arr = np.load(folder / mod.file, allow_pickle=False)
        if arr.ndim != 2:
            raise DataError(f"{folder / mod.file}: expected a 2-d (n_items, dim) matrix, got {arr.shape}")
        features[mod.name] = np.ascontiguousarray(arr, dtype=np.float32)
    implied = IdSpace(
        int(users.max()) + 1 if len(users) else 0,
        max([int(items.max()) + 1 if len(items) else 0, *(a.shape[0] for a in features.values())]),
    )
    declared, origin = manifest.declared_id_space()
    space = declared or implied
    _check_ids_inside(users, space.n_users, "userID", inter_path, f"{origin}.n_users")
    _check_ids_inside(items, space.n_items, "itemID", inter_path, f"{origin}.n_items")
    for mod in manifest.modalities.values():
        rows = features[mod.name].shape[0]
        if rows != space.n_items:
            raise DataError(
                f"{folder / mod.file}: {rows} rows; expected n_items = {space.n_items} (row i = item i; "
                f"dataset.yaml field '{origin or 'modalities'}' gives the id space)"
            )
    splits = {lab: Pairs(users[labels == lab], items[labels == lab]) for lab in (TRAIN, VALID, TEST)}
    return RecDataset(
        name=manifest.name,
        n_users=space.n_users,
        n_items=space.n_items,
        train=splits[TRAIN],
        valid=splits[VALID],
        test=splits[TEST],
        features=features,
        manifest=manifest,
        root=folder,
        fingerprint=dataset_fingerprint(folder, manifest, None if space == implied else space),
    )


def write_dataset(
    folder: Path | str,
    name: str,
    inter: pd.DataFrame,
    features: dict[str, np.ndarray],
    source: dict[str, Any] | None = None,
    feature_files: dict[str, str] | None = None,
    id_space: IdSpace | tuple[int, int] | None = None,
) -> DatasetManifest:
    """Write a dataset folder in MMRec format (``<name>.inter``, one ``.npy`` per modality, the manifest).

    ``id_space`` (``IdSpace`` or ``(n_users, n_items)``) declares the id space; default: ``max(userID)+1``
    users and ``max(max(itemID)+1, feature rows)`` items. Pass the original dataset's id space when
    writing a dataset with rows removed (an erasure), so that ids keep their meaning and models fit.
    Files are written through temporary names and renamed, and the manifest is written last, so a
    failure never leaves a folder that looks complete."""
    folder = Path(folder)
    check_identifier(name, "name", f"dataset {folder}")
    if source and "kind" in source:
        check_identifier(source["kind"], "source.kind", f"dataset {folder}")
    if not features:
        raise DataError(f"{folder}: a dataset needs at least one modality feature matrix")
    feature_files = feature_files or {}
    users = inter["userID"].astype(np.int64).to_numpy()
    items = inter["itemID"].astype(np.int64).to_numpy()
    n_users_data = int(users.max()) + 1 if len(users) else 0
    n_items_data = int(
        max([int(items.max()) + 1 if len(items) else 0, *(a.shape[0] for a in features.values())])
    )
    if id_space is None:
        space = IdSpace(n_users_data, n_items_data)
    else:
        space = id_space if isinstance(id_space, IdSpace) else IdSpace(int(id_space[0]), int(id_space[1]))
        where = f"{folder}: writing dataset {name!r}"
        _check_ids_inside(users, space.n_users, "userID", Path(f"{name}.inter"), "id_space.n_users")
        _check_ids_inside(items, space.n_items, "itemID", Path(f"{name}.inter"), "id_space.n_items")
        rows = {mod: int(a.shape[0]) for mod, a in features.items() if a.shape[0] != space.n_items}
        if rows:
            raise DataError(f"{where}: feature rows {rows}; expected id_space.n_items = {space.n_items}")
    folder.mkdir(parents=True, exist_ok=True)
    modalities: dict[str, Modality] = {}
    for mod, arr in features.items():
        fname = feature_files.get(mod, f"{mod}_feat.npy")
        save_npy(folder / fname, np.ascontiguousarray(arr, dtype=np.float32))
        modalities[mod] = Modality(mod, fname, int(arr.shape[1]))
    inter_name = f"{name}.inter"
    write_inter(inter, folder / inter_name)
    labels = inter["x_label"].astype(int)
    stats = {  # n_users / n_items: the id space (after an erasure, larger than the ids present)
        "n_users": space.n_users,
        "n_items": space.n_items,
        "n_interactions": len(inter),
        "n_train": int((labels == TRAIN).sum()),
        "n_valid": int((labels == VALID).sum()),
        "n_test": int((labels == TEST).sum()),
    }
    manifest = DatasetManifest(name, inter_name, modalities, dict(source or {}), stats, space)
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
