"""Dataset sources: each builds an MMRec-format dataset folder (see :mod:`tru.data.dataset`).

A source is a function ``build(out: Path, path: Path | None, **options) -> DatasetManifest`` that writes
into ``out`` (an empty folder) through :func:`tru.data.dataset.write_dataset`. The manifest's ``source``
field records the kind, its parameters, the seed and, for file-based sources, the sha256 of every input;
its ``id_space`` the user / item id space (``write_dataset`` derives it, or takes it from an upstream
manifest that declares one).
:func:`tru.data.prepare.prepare_dataset` dispatches to them and makes the result appear atomically.

This module holds the helpers the sources share; the sources themselves live in the submodules
``synthetic``, ``lfm2k``, ``ml100k`` and ``mmrec`` and are imported on demand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tru.data.dataset import DataError, file_sha256

DEFAULT_SEED = 999
REQUIRED_INTER_COLUMNS = ("userID", "itemID", "x_label")


def inputs_record(files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """``{label: {"file": file name, "sha256": hex digest, "bytes": size}}`` for the manifest.

    Inputs are identified by name and content, never by where they lie: the same inputs prepared from
    another checkout or machine give a byte-identical dataset folder, so its DVC hash (the data version)
    does not change with the path."""
    return {
        label: {
            "file": Path(p).name,
            "sha256": file_sha256(Path(p)),
            "bytes": Path(p).stat().st_size,
        }
        for label, p in files.items()
    }


def require_folder(path: Path | None, source: str, hint: str) -> Path:
    """The input folder of a file-based source, or a DataError saying which option is missing."""
    if path is None:
        raise DataError(f"source '{source}' needs an input folder (path=..., CLI --path): {hint}")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: source '{source}' expected an existing folder ({hint})")
    return folder


def load_matrix(path: Path, expected_rows: int | None = None) -> np.ndarray:
    """Load a 2-d ``.npy`` feature matrix as contiguous float32, checking shape and finiteness.

    Raises DataError naming the file when it is missing, not 2-d, has the wrong number of rows (row i must
    be item i, so rows = n_items) or holds NaN / inf."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: feature file not found")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npy array: {exc}") from exc
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a 2-d (n_items, dim) matrix, got shape {arr.shape}")
    if expected_rows is not None and arr.shape[0] != expected_rows:
        raise DataError(
            f"{path}: expected {expected_rows} rows (one per item, n_items = max(itemID)+1), "
            f"got {arr.shape[0]}"
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{path}: expected a numeric matrix, got dtype {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: {int(bad.sum())} rows hold NaN or inf (first: row {first})")
    return out


def check_inter(df: pd.DataFrame, where: Path) -> pd.DataFrame:
    """Check an MMRec interaction frame's columns and integer ids; returns it with int64 id columns.

    Expected: columns userID, itemID, x_label (rating and timestamp optional); non-negative integer ids;
    x_label in {0, 1, 2}. A missing rating column is filled with 1 (implicit feedback)."""
    missing = [c for c in REQUIRED_INTER_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {missing}; expected header "
            f"'userID itemID rating [timestamp] x_label', got {list(df.columns)}"
        )
    out = df.copy()
    if "rating" not in out.columns:
        out["rating"] = 1
    for col in ("userID", "itemID", "x_label"):
        values = pd.to_numeric(out[col], errors="coerce")
        bad = values.isna() | (values < 0) | (values != values.round())
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{where}: column '{col}' row {row + 2} (line, counting the header) holds "
                f"{out[col].iloc[row]!r}; expected a non-negative integer"
            )
        out[col] = values.astype(np.int64)
    bad_label = ~out["x_label"].isin([0, 1, 2])
    if bad_label.any():
        row = int(np.flatnonzero(bad_label.to_numpy())[0])
        raise DataError(
            f"{where}: x_label on line {row + 2} is {out['x_label'].iloc[row]}; expected 0, 1 or 2"
        )
    return out
