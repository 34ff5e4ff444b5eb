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
  are numeric; (userID, itemID) pairs are unique; every user with valid/test rows has ≥ 1 train row;
  user ids are contiguous: every u in [0, n_users) with ``n_users = max(userID)+1`` has a row. Item ids
  need not all appear (items with no interaction still have features).
* Feature rows: ``n_items = max(max(itemID)+1, stats.n_items)`` (stats from the manifest, if given);
  every modality has exactly n_items rows, so all modalities agree, and more rows than the
  interactions need are allowed only when the manifest's stats say so. Without readable ids the
  expected count is ``stats.n_items`` or else the largest modality row count. Every value is finite.
* Manifest ``stats`` (if present): n_users, n_items, n_interactions, n_train, n_valid, n_test equal the
  values recomputed from the files (n_items = max(max(itemID)+1, feature rows), as ``write_dataset``
  writes it).

Checks that depend on a missing column or on invalid values are skipped (listed in ``skipped``),
never crashed.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tru.data.dataset import INTER_COLUMNS, MANIFEST_NAME, OPTIONAL_COLUMNS, DataError, DatasetManifest

INT_RE = r"^-?\d+$"
NUM_RE = r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$"
FLOAT_DTYPES = ["float32", "float64"]
STAT_KEYS = ("n_users", "n_items", "n_interactions", "n_train", "n_valid", "n_test")
N_EXAMPLES = 5
CHUNK_ELEMS = 1 << 23  # finiteness is checked in row blocks of about 8M values (32 MB of float32)


@dataclass
class Failure:
    """One failed expectation: its name, the file, what went wrong, and up to 5 offending examples."""

    expectation: str
    file: str
    message: str
    examples: list = field(default_factory=list)


@dataclass
class ValidationReport:
    success: bool
    failures: list[Failure]
    checked: int
    folder: Path
    skipped: list[str] = field(default_factory=list)

    def render(self) -> str:
        """Human-readable report: one block per failed expectation with its examples."""
        head = "PASSED" if self.success else f"FAILED ({len(self.failures)} failed)"
        lines = [f"Dataset validation of {self.folder}: {head}, {self.checked} expectations checked"]
        for f in self.failures:
            lines.append(f"  FAIL {f.expectation} [{f.file}]: {f.message}")
            lines.extend(f"      {_fmt_example(ex)}" for ex in f.examples)
        lines.extend(f"  skipped: {s}" for s in self.skipped)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "folder": str(self.folder),
            "checked": self.checked,
            "failures": [
                {
                    "expectation": f.expectation,
                    "file": f.file,
                    "message": f.message,
                    "examples": _py(f.examples),
                }
                for f in self.failures
            ],
            "skipped": list(self.skipped),
        }


def _py(v: Any) -> Any:
    """numpy scalars / NaN / tuples → plain JSON-able Python values."""
    if isinstance(v, dict):
        return {str(k): _py(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_py(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else str(v)
    return v


def _fmt_example(ex: Any) -> str:
    if not isinstance(ex, dict):
        return str(ex)
    ex = dict(ex)
    key = next((k for k in ("line", "row", "userID", "modality", "stat") if k in ex), None)
    lead = f"{key} {ex.pop(key)}: " if key else ""
    return lead + " ".join(f"{k}={v}" for k, v in ex.items())


@dataclass
class _Check:
    name: str
    file: str
    what: str
    expectation: Any  # a gxe.Expectation
    example: Any = None  # callable(locator, value) -> dict


@functools.cache
def _batch_definition() -> Any:
    """One ephemeral GX context per process (progress bars off) with a whole-dataframe batch
    definition; every frame is validated through it as a batch parameter. Suites are never stored."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)  # GX sets INFO
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = ctx.data_sources.add_pandas("tru").add_dataframe_asset("frame")
    return asset.add_batch_definition_whole_dataframe("whole")


class _Run:
    """One validation: the GX context, the failures and the counters."""

    def __init__(self, folder: Path) -> None:
        import great_expectations as gx

        self.gx = gx
        self.folder = folder
        self.batch_def = _batch_definition()
        self.failures: list[Failure] = []
        self.skipped: list[str] = []
        self.checked = 0

    def fail(self, name: str, file: str, message: str, examples: list | None = None) -> None:
        self.checked += 1
        self.failures.append(Failure(name, file, message, _py(examples or [])))

    def validate(self, df: pd.DataFrame, checks: list[_Check]) -> dict[str, bool]:
        """Run ``checks`` on ``df`` as one GX suite; record failures; return success per check name."""
        if not checks:
            return {}
        suite = self.gx.ExpectationSuite(name=f"tru-{self.checked}")
        for i, c in enumerate(checks):
            c.expectation.meta = {"tru_check": i}
            suite.add_expectation(c.expectation)
        batch = self.batch_def.get_batch(batch_parameters={"dataframe": df})
        res = batch.validate(
            suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": N_EXAMPLES}
        )
        ok: dict[str, bool] = {}
        for r in sorted(res.results, key=lambda r: r.expectation_config.meta["tru_check"]):
            c = checks[r.expectation_config.meta["tru_check"]]
            self.checked += 1
            ok[c.name] = ok.get(c.name, True) and bool(r.success)
            if r.success:
                continue
            gx_type = r.expectation_config.type
            exc = r.exception_info or {}
            if exc.get("raised_exception"):
                self.failures.append(
                    Failure(
                        c.name, c.file, f"{c.what} ({gx_type} raised: {exc.get('exception_message')})", []
                    )
                )
                continue
            res_d = r.result or {}
            if "unexpected_count" in res_d:
                msg = f"{c.what}: {res_d['unexpected_count']} of {res_d['element_count']} unexpected"
                locs = res_d.get("partial_unexpected_index_list") or []
                vals = res_d.get("partial_unexpected_list") or [None] * len(locs)
                examples = [
                    c.example(loc, val) if c.example else {"at": loc, "value": val}
                    for loc, val in zip(locs, vals)
                ]
            else:
                msg = f"{c.what}: observed {res_d.get('observed_value', 'nothing')}"
                examples = [c.example(None, res_d.get("observed_value"))] if c.example else []
            self.failures.append(Failure(c.name, c.file, f"{msg} ({gx_type})", _py(examples)))
        return ok

    def report(self) -> ValidationReport:
        return ValidationReport(not self.failures, self.failures, self.checked, self.folder, self.skipped)


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
    if not all(ok.get(k, True) for k in needed):
        run.skipped.append(
            f"eval_users_have_train, ids_contiguous on {fname} (ids or x_label missing or invalid)"
        )
        return None
    return _check_users(run, gxe, fname, df)


def _check_users(run: _Run, gxe: Any, fname: str, df: pd.DataFrame) -> dict[str, Any]:
    """Per-user frame over the user ids present (index = userID, sorted): ``missing_before = u − u_prev − 1``
    must be 0 (ids contiguous from 0; sized by rows, not by max(userID), so a stray huge id cannot blow
    up memory), and ``n_train ≥ 1`` for users with valid/test rows. Returns the stats recomputed here."""
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
    run.validate(
        per_user,
        [
            _Check(
                "ids_contiguous",
                fname,
                f"every user id in [0, n_users={n_users}) must have a row",
                gxe.ExpectColumnValuesToBeBetween(column="missing_before", max_value=0),
                gap_example,
            ),
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
    if sources:
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
