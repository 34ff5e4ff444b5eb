"""Dataset validation with Great Expectations (GX 1.x, ephemeral context, no project folder).

Every check is a named GX expectation run on a pandas frame; offending examples are read from GX's
``partial_unexpected_index_list``. Each frame's *index* carries the locator (the 1-based file line of
an ``.inter`` row, the user id, the feature row = item id, the modality name, the stat name), so GX
reports it directly. The index is left *unnamed*: with a named index, or with GX's
``unexpected_index_column_names``, GX 1.24 runs a Python loop over every unexpected row (minutes on a
300k-row file that is wholly wrong) before keeping the first few.

Rules (the MMRec format, see :mod:`tru.data.dataset`):

* ``dataset.yaml`` parses (:meth:`DatasetManifest.load`); every modality file it names exists and is a
  2-d ``.npy`` of dtype float32/float64 that loads with ``allow_pickle=False``; its declared ``dim``
  (when given) equals its column count.
* ``.inter`` (read as text): columns userID, itemID, rating, x_label (timestamp optional, extra columns
  allowed); no nulls; ids match ``^-?\\d+$`` and are ≥ 0; x_label ∈ {0, 1, 2}; rating and timestamp
  are numeric; (userID, itemID) pairs are unique; every user with valid/test rows has ≥ 1 train row.
* Id space: the manifest's declared id space is ``id_space: {n_users, n_items}``, or in a folder written
  before that field existed its ``stats.n_users / n_items``. Every userID is < n_users and every itemID
  < n_items (``ids_in_id_space``), and ids may have gaps: a user id with no row at all is a user whose
  rows an erasure removed (an erasure keeps the id space). Only a manifest that declares no id space
  keeps the older rule that user ids are contiguous: every u in [0, n_users) with
  ``n_users = max(userID)+1`` has a row (``ids_contiguous``). Item ids need not all appear (items with
  no interaction still have features).
* Feature rows: ``n_items = id_space.n_items`` when declared, else ``max(max(itemID)+1, stats.n_items)``
  (stats from the manifest, if given); every modality has exactly n_items rows, so all modalities
  agree, and more rows than the interactions need are allowed only when the manifest says so. Without
  readable ids the expected count is ``stats.n_items`` or else the largest modality row count. Every
  value is finite.
* Manifest ``stats`` (if present): n_interactions, n_train, n_valid, n_test equal the values
  recomputed from the files; n_users and n_items equal ``id_space`` when it is declared (they are the id
  space, as ``write_dataset`` writes them), and without ``id_space`` (they are then the declared id
  space themselves) they are checked by ``ids_in_id_space`` and the feature row count.

Checks that depend on a missing column or on invalid values are skipped (listed in ``skipped``),
never crashed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tru.data.dataset import INTER_COLUMNS, MANIFEST_NAME, OPTIONAL_COLUMNS, DataError, DatasetManifest
from tru.data.validate_core import Failure as Failure
from tru.data.validate_core import ValidationReport, _Check, _Run
from tru.data.validate_features import _check_features

INT_RE = r"^-?\d+$"
NUM_RE = r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$"


def validate_dataset(folder: Path | str) -> ValidationReport:
    """Validate an MMRec dataset folder (rules in the module docstring); never raises on bad data."""
    # GX logs hundreds of INFO lines (docs decorators, datasource config) once the CLI sets INFO level.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations.expectations as gxe

    folder = Path(folder)
    run = _Run(folder)
    try:
        manifest = DatasetManifest.load(folder)
    except (DataError, ValueError, TypeError) as exc:
        run.fail("manifest_valid", MANIFEST_NAME, f"dataset manifest is missing or malformed: {exc}")
        return run.report()
    run.checked += 1
    inter = _check_inter(run, gxe, folder, manifest)
    _check_features(run, gxe, folder, manifest, inter)
    return run.report()


def _check_inter(run: _Run, gxe: Any, folder: Path, manifest: DatasetManifest) -> dict[str, Any] | None:
    """Row-level checks on the ``.inter`` file, then the per-user checks on a derived frame.
    Returns the stats recomputed from it (None when ids, labels or other required values are unusable)."""
    fname = manifest.interactions
    path = folder / fname
    try:
        if not path.is_file():
            raise DataError(f"{path}: interaction file not found")
        raw = pd.read_csv(
            path, sep="\t", dtype=str, keep_default_na=False, na_values=[""], skip_blank_lines=False
        )
        if not isinstance(raw.index, pd.RangeIndex):  # pandas' implicit index: line 2 is one field longer
            raise DataError(f"line 2 has more fields than the header's {len(raw.columns)}")
    except (DataError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        run.fail("inter_readable", fname, f"cannot read the interaction file as TSV: {exc}")
        run.skipped.append(f"all checks on {fname} (file unreadable)")
        return None
    raw.index = pd.RangeIndex(2, len(raw) + 2)  # index = 1-based line in the file
    raw = raw[raw.notna().any(axis=1)]  # blank lines (skipped by read_inter too)
    cols = list(raw.columns)

    def row_example(line: Any, _val: Any) -> dict:
        return {"line": line, **{c: raw.at[line, c] for c in cols}}

    df = raw.copy()
    present = [c for c in (*INTER_COLUMNS, *OPTIONAL_COLUMNS) if c in cols]
    for c in ("userID", "itemID"):
        if c in cols:
            good = df[c].str.match(INT_RE).fillna(False).astype(bool)
            df[f"__{c}_num"] = pd.to_numeric(df[c].where(good), errors="coerce")
    checks = [
        _Check(
            "column_exists",
            fname,
            f"required column '{c}' must exist (header: {', '.join(cols)})",
            gxe.ExpectColumnToExist(column=c),
            lambda _loc, _v: {"line": 1, "header": cols},
        )
        for c in INTER_COLUMNS
    ]
    for c in present:
        checks.append(
            _Check(
                "not_null",
                fname,
                f"column '{c}' must have a value on every row",
                gxe.ExpectColumnValuesToNotBeNull(column=c),
                row_example,
            )
        )
    for c in ("userID", "itemID"):
        if c in cols:
            checks += [
                _Check(
                    "id_integer",
                    fname,
                    f"{c} must be an integer (regex {INT_RE})",
                    gxe.ExpectColumnValuesToMatchRegex(column=c, regex=INT_RE),
                    row_example,
                ),
                _Check(
                    "id_non_negative",
                    fname,
                    f"{c} must be >= 0",
                    gxe.ExpectColumnValuesToBeBetween(column=f"__{c}_num", min_value=0),
                    row_example,
                ),
            ]
    if "x_label" in cols:
        checks.append(
            _Check(
                "x_label_in_set",
                fname,
                "x_label must be 0 (train), 1 (valid) or 2 (test)",
                gxe.ExpectColumnValuesToBeInSet(column="x_label", value_set=["0", "1", "2"]),
                row_example,
            )
        )
    for c in ("rating", "timestamp"):
        if c in cols:
            checks.append(
                _Check(
                    f"{c}_numeric",
                    fname,
                    f"{c} must be a number",
                    gxe.ExpectColumnValuesToMatchRegex(column=c, regex=NUM_RE),
                    row_example,
                )
            )
    space, origin = manifest.declared_id_space()
    for c, bound in (
        ("userID", space.n_users if space else None),
        ("itemID", space.n_items if space else None),
    ):
        if c in cols and bound is not None:
            checks.append(
                _Check(
                    "ids_in_id_space",
                    fname,
                    f"{c} must be < {origin}.{'n_users' if c == 'userID' else 'n_items'} = {bound} "
                    f"({MANIFEST_NAME})",
                    gxe.ExpectColumnValuesToBeBetween(column=f"__{c}_num", max_value=bound - 1),
                    row_example,
                )
            )
    if "userID" in cols and "itemID" in cols:
        checks.append(
            _Check(
                "pairs_unique",
                fname,
                "(userID, itemID) pairs must be unique",
                gxe.ExpectCompoundColumnsToBeUnique(
                    column_list=["__userID_num", "__itemID_num"], ignore_row_if="any_value_is_missing"
                ),
                row_example,
            )
        )
    checks.append(
        _Check(
            "inter_not_empty",
            fname,
            "the interaction file must have rows",
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
        )
    )
    ok = run.validate(df, checks)
    missing = [c for c in INTER_COLUMNS if c not in cols]
    if missing:
        run.skipped.append(f"checks on column(s) {', '.join(missing)} of {fname} (missing)")
    needed = (
        "column_exists",
        "not_null",
        "id_integer",
        "id_non_negative",
        "x_label_in_set",
        "inter_not_empty",
    )
    derived = "eval_users_have_train" + ("" if space else ", ids_contiguous")
    if not all(ok.get(k, True) for k in needed):
        run.skipped.append(f"{derived} on {fname} (ids or x_label missing or invalid)")
        return None
    return _check_users(run, gxe, fname, df, contiguous=space is None)


def _check_users(
    run: _Run, gxe: Any, fname: str, df: pd.DataFrame, contiguous: bool = True
) -> dict[str, Any]:
    """Per-user frame over the user ids present (index = userID, sorted): ``n_train ≥ 1`` for users with
    valid/test rows, and with ``contiguous`` (no declared id space) ``missing_before = u − u_prev − 1``
    must be 0 (ids contiguous from 0; sized by rows, not by max(userID), so a stray huge id cannot blow
    up memory). Returns the stats recomputed here."""
    users = df["__userID_num"].to_numpy(np.int64)
    labels = df["x_label"].astype(np.int64).to_numpy()
    lines = df.index.to_numpy(np.int64)
    present, inv = np.unique(users, return_inverse=True)
    n_rows = np.bincount(inv, minlength=len(present))
    n_train = np.bincount(inv[labels == 0], minlength=len(present))
    n_eval = n_rows - n_train
    first_eval = np.full(len(present), -1, dtype=np.int64)
    ev, first = np.unique(inv[labels != 0], return_index=True)
    first_eval[ev] = lines[labels != 0][first]
    gap = np.diff(present, prepend=-1) - 1
    per_user = pd.DataFrame(
        {"missing_before": gap, "n_train_if_eval": np.where(n_eval > 0, n_train, np.nan)}, index=present
    )

    def pos(u: Any) -> int:
        return int(np.searchsorted(present, u))

    def gap_example(u: Any, _v: Any) -> dict:
        lo = int(u) - int(gap[pos(u)])
        return {"missing_userIDs": f"{lo}" if lo == int(u) - 1 else f"{lo}..{int(u) - 1}", "next_userID": u}

    n_users = int(present[-1]) + 1
    contiguity = [
        _Check(
            "ids_contiguous",
            fname,
            f"every user id in [0, n_users={n_users}) must have a row (declare id_space in "
            f"{MANIFEST_NAME} for ids with gaps)",
            gxe.ExpectColumnValuesToBeBetween(column="missing_before", max_value=0),
            gap_example,
        )
    ]
    run.validate(
        per_user,
        [
            *(contiguity if contiguous else []),
            _Check(
                "eval_users_have_train",
                fname,
                "every user with valid/test rows must have a train row",
                gxe.ExpectColumnValuesToBeBetween(column="n_train_if_eval", min_value=1),
                lambda u, _v: {
                    "userID": u,
                    "n_train": 0,
                    "n_eval": n_eval[pos(u)],
                    "first_eval_line": first_eval[pos(u)],
                },
            ),
        ],
    )
    return {
        "n_users": n_users,
        "n_items": int(df["__itemID_num"].max()) + 1,
        "n_interactions": len(df),
        "n_train": int((labels == 0).sum()),
        "n_valid": int((labels == 1).sum()),
        "n_test": int((labels == 2).sum()),
    }
