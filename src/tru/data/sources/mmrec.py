"""Any existing MMRec dataset folder (e.g. Amazon Baby: ``baby.inter`` + ``image_feat.npy`` 4096-d +
``text_feat.npy`` 384-d), copied into the output folder with a manifest.

Which files are used:

* a ``dataset.yaml`` in the folder is honoured (its interaction file, modalities and name);
* otherwise the interaction file is the single ``*.inter`` (several: name one with ``inter=``), and the
  modalities are every ``*_feat.npy``, named by the prefix (``image_feat.npy`` → ``image``);
* explicit options ``inter=`` and ``modalities=`` (``{"image": "image_feat.npy"}`` or the CLI form
  ``"image:image_feat.npy,text:text_feat.npy"``) override both.

The split (x_label) is kept as given; columns other than userID itemID rating timestamp x_label are dropped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tru.data.dataset import MANIFEST_NAME, DataError, DatasetManifest, read_inter, write_dataset
from tru.data.sources import check_inter, inputs_record, load_matrix, require_folder

FEATURE_SUFFIX = "_feat.npy"
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
KEPT_COLUMNS = ("userID", "itemID", "rating", "timestamp", "x_label")


def _parse_modalities(value: Any) -> dict[str, str]:
    if isinstance(value, str):
        pairs = [p.split(":", 1) for p in value.split(",") if p.strip()]
        if not pairs or any(len(p) != 2 for p in pairs):
            raise DataError(f"mmrec option 'modalities': expected 'name:file,name:file', got {value!r}")
        value = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(value, dict) or not value:
        raise DataError(
            f"mmrec option 'modalities': expected a non-empty mapping name -> file, got {value!r}"
        )
    return {str(k): str(v) for k, v in value.items()}


def _find_inter(folder: Path) -> str:
    found = sorted(p.name for p in folder.glob("*.inter"))
    if not found:
        raise DataError(f"{folder}: no *.inter interaction file (expected e.g. baby.inter)")
    if len(found) > 1:
        raise DataError(
            f"{folder}: several interaction files {found}; name one with inter=... (CLI --option inter=NAME)"
        )
    return found[0]


def _find_modalities(folder: Path) -> dict[str, str]:
    found = sorted(folder.glob(f"*{FEATURE_SUFFIX}"))
    if not found:
        raise DataError(
            f"{folder}: no *{FEATURE_SUFFIX} feature files (expected e.g. image_feat.npy, "
            "text_feat.npy); name them with modalities=..."
        )
    return {p.name[: -len(FEATURE_SUFFIX)]: p.name for p in found}


def build(
    out: Path,
    path: Path | None = None,
    inter: str | None = None,
    modalities: dict[str, str] | str | None = None,
    name: str | None = None,
) -> DatasetManifest:
    """Copy the MMRec dataset in ``path`` into ``out`` (see the module docstring for which files)."""
    folder = require_folder(path, "mmrec", "an MMRec dataset folder with <name>.inter and *_feat.npy files")
    upstream: DatasetManifest | None = None
    if (folder / MANIFEST_NAME).is_file():
        upstream = DatasetManifest.load(folder)
        inter = inter or upstream.interactions
        if modalities is None:
            modalities = {m.name: m.file for m in upstream.modalities.values()}
        name = name or upstream.name
    inter = inter or _find_inter(folder)
    mods = _parse_modalities(modalities) if modalities is not None else _find_modalities(folder)
    for mod in mods:
        if not _NAME_OK.match(mod):
            raise DataError(f"{folder}: modality name {mod!r} must be letters, digits, '_', '-' or '.'")
    inter_path = folder / str(inter)
    name = str(name or inter_path.stem)
    if not _NAME_OK.match(name):
        raise DataError(f"{inter_path}: dataset name {name!r} must be letters, digits, '_', '-' or '.'")

    raw = read_inter(inter_path)
    ints = check_inter(raw, inter_path)
    n_items = int(ints["itemID"].max()) + 1 if len(ints) else 0
    features = {mod: load_matrix(folder / rel) for mod, rel in mods.items()}
    rows = {mod: arr.shape[0] for mod, arr in features.items()}
    if len(set(rows.values())) != 1:
        raise DataError(f"{folder}: feature matrices disagree on the number of items (rows): {rows}")
    n_rows = next(iter(rows.values()))
    if n_rows < n_items:
        raise DataError(
            f"{folder}: feature matrices have {n_rows} rows but {inter_path.name} uses item ids "
            f"up to {n_items - 1} (row i must be item i)"
        )
    dropped = [c for c in raw.columns if c not in KEPT_COLUMNS]
    table = raw if "rating" in raw.columns else raw.assign(rating="1")
    source: dict[str, Any] = {
        "kind": "mmrec",
        "options": {"inter": inter, "modalities": mods},
        "seed": None,
        "inputs": inputs_record({"interactions": inter_path, **{m: folder / f for m, f in mods.items()}}),
    }
    if dropped:
        source["dropped_columns"] = dropped
    if "rating" not in raw.columns:
        source["notes"] = "no rating column: filled with 1 (implicit feedback)"
    if upstream is not None:
        source["upstream"] = {"name": upstream.name, "source": upstream.source}
    id_space = upstream.id_space if upstream is not None else None  # an erased upstream keeps its ids
    return write_dataset(out, name, table, features, source=source, id_space=id_space)
