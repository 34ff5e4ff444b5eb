"""Feature-matrix checks of dataset validation (:mod:`tru.data.validate` has the rules): every modality
file exists, loads, is a 2-d float matrix of the declared dim with n_items rows of finite values, and the
manifest's stats agree with the data and the declared id space."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tru.data.dataset import MANIFEST_NAME, DatasetManifest
from tru.data.validate_core import _Check, _Run

FLOAT_DTYPES = ["float32", "float64"]
STAT_KEYS = ("n_users", "n_items", "n_interactions", "n_train", "n_valid", "n_test")
CHUNK_ELEMS = 1 << 23  # finiteness is checked in row blocks of about 8M values (32 MB of float32)


def _load(path: Path) -> tuple[np.ndarray | None, str]:
    if path.suffix != ".npy":
        return None, f"not a .npy file: {path.name}"
    err: Exception | None = None
    for mmap in ("r", None):  # memory-mapped first; a plain load gives numpy's message (object dtype)
        try:
            return np.load(path, mmap_mode=mmap, allow_pickle=False), ""
        except (ValueError, OSError, EOFError) as exc:
            err = exc
    return None, f"{type(err).__name__}: {err}"


def _finite_rows(arr: np.ndarray) -> np.ndarray:
    """Per row: number of non-finite values, computed in row blocks (never the whole matrix at once)."""
    if arr.dtype.kind not in "fc":
        return np.zeros(arr.shape[0], dtype=np.int64)
    step = max(1, CHUNK_ELEMS // max(1, arr.shape[1]))
    return np.concatenate(
        [(~np.isfinite(arr[i : i + step])).sum(axis=1) for i in range(0, arr.shape[0], step)]
        or [np.zeros(0, dtype=np.int64)]
    )


def _check_features(
    run: _Run, gxe: Any, folder: Path, manifest: DatasetManifest, inter: dict[str, Any] | None
) -> None:
    """Modality summary frame (index = modality) then one per-row frame (index = row) per matrix."""
    summary: dict[str, dict[str, Any]] = {}
    arrays: dict[str, np.ndarray] = {}
    for mod in manifest.modalities.values():
        path = folder / mod.file
        rec: dict[str, Any] = {
            "file": mod.file,
            "exists": path.is_file(),
            "loadable": None,
            "error": "",
            "ndim": None,
            "dtype": None,
            "n_cols": None,
            "declared_dim": None,
        }
        if rec["exists"]:
            arr, rec["error"] = _load(path)
            rec["loadable"] = arr is not None
            if arr is not None:
                rec.update(ndim=arr.ndim, dtype=str(arr.dtype))
                if arr.ndim == 2:
                    arrays[mod.name] = arr
                    rec["n_cols"] = arr.shape[1]
                    rec["declared_dim"] = mod.dim if mod.dim >= 0 else None
        summary[mod.name] = rec
    frame = pd.DataFrame.from_dict(summary, orient="index").astype(object)

    def mod_example(*keys: str) -> Any:
        return lambda m, _v: {"modality": m, **{k: frame.at[m, k] for k in ("file", *keys)}}

    run.validate(
        frame,
        [
            _Check(
                "modality_file_exists",
                MANIFEST_NAME,
                "every modality file named in the manifest must exist",
                gxe.ExpectColumnValuesToBeInSet(column="exists", value_set=[True]),
                mod_example(),
            ),
            _Check(
                "modality_file_loadable",
                MANIFEST_NAME,
                "must load with np.load(allow_pickle=False)",
                gxe.ExpectColumnValuesToBeInSet(column="loadable", value_set=[True]),
                mod_example("error"),
            ),
            _Check(
                "feature_2d",
                MANIFEST_NAME,
                "feature matrices must be 2-d",
                gxe.ExpectColumnValuesToBeInSet(column="ndim", value_set=[2]),
                mod_example("ndim"),
            ),
            _Check(
                "feature_dtype_float",
                MANIFEST_NAME,
                f"feature dtype must be one of {FLOAT_DTYPES}",
                gxe.ExpectColumnValuesToBeInSet(column="dtype", value_set=FLOAT_DTYPES),
                mod_example("dtype"),
            ),
            _Check(
                "feature_dim_matches",
                MANIFEST_NAME,
                "declared dim must equal the column count",
                gxe.ExpectColumnPairValuesToBeEqual(
                    column_A="declared_dim", column_B="n_cols", ignore_row_if="either_value_is_missing"
                ),
                mod_example("declared_dim", "n_cols"),
            ),
        ],
    )
    stats = manifest.stats or {}
    declared = stats.get("n_items")
    declared = declared if isinstance(declared, int) and not isinstance(declared, bool) else None
    sources = {"max(itemID)+1": inter["n_items"] if inter else None, "stats.n_items": declared}
    sources = {k: v for k, v in sources.items() if v is not None}
    expected, why = 0, ""
    if manifest.id_space is not None:  # the declared id space (item ids beyond it fail ids_in_id_space)
        expected, why = manifest.id_space.n_items, f"id_space.n_items={manifest.id_space.n_items}"
    elif sources:
        expected = max(sources.values())
        why = ", ".join(f"{k}={v}" for k, v in sources.items())
    elif arrays:
        expected = max(a.shape[0] for a in arrays.values())
        why = "the largest modality; no usable ids or stats"
    for name, arr in arrays.items():
        file = manifest.modalities[name].file
        bad = _finite_rows(arr)
        rows = pd.DataFrame({"n_nonfinite": bad, "finite": bad == 0}, index=pd.RangeIndex(len(bad)))
        run.validate(
            rows,
            [
                _Check(
                    "feature_row_count",
                    file,
                    f"'{name}' must have n_items = {expected} rows ({why})",
                    gxe.ExpectTableRowCountToEqual(value=expected),
                    lambda _r, v, n=name: {"modality": n, "rows": v, "expected": expected},
                ),
                _Check(
                    "feature_finite",
                    file,
                    f"'{name}' values must be finite (no NaN/inf); rows = item ids",
                    gxe.ExpectColumnValuesToBeInSet(column="finite", value_set=[True]),
                    lambda r, _v, b=bad: {"row": r, "n_nonfinite": b[r]},
                ),
            ],
        )
    if inter is None or not stats:
        if stats:
            run.skipped.append("stats_agree (interactions unusable)")
        return
    actual = dict(inter, n_items=max([inter["n_items"], *(a.shape[0] for a in arrays.values())]))
    keys = [k for k in STAT_KEYS if k in stats]
    if manifest.id_space is not None:  # stats.n_users / n_items are the id space (gaps allowed)
        actual.update(manifest.id_space.to_dict())
    elif manifest.declared_id_space()[0] is not None:  # they *are* the declared id space: checked above
        keys = [k for k in keys if k not in ("n_users", "n_items")]
    table = pd.DataFrame(
        {"declared": [stats[k] for k in keys], "actual": [actual[k] for k in keys]}, index=keys, dtype=object
    )
    run.validate(
        table,
        [
            _Check(
                "stats_agree",
                MANIFEST_NAME,
                "the manifest's stats must match the data",
                gxe.ExpectColumnPairValuesToBeEqual(column_A="declared", column_B="actual"),
                lambda k, _v: {
                    "stat": k,
                    "declared": table.at[k, "declared"],
                    "actual": table.at[k, "actual"],
                },
            )
        ],
    )
