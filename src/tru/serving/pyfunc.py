"""The servable champion: an MLflow ``pyfunc`` model that ranks items for users from exported arrays.

This file is logged as an MLflow *model from code* (``python_model=<path of this file>``): MLflow copies
it into the model folder and executes it at load time, so the serving process needs only ``mlflow``,
``numpy`` and ``pandas``, never ``torch`` nor the ``tru`` package. Keep it self-contained: import
nothing from ``tru`` here.

Artifacts: one ``servable.npz`` (read with ``np.load(allow_pickle=False)``; no pickled object anywhere)
written by :meth:`tru.serving.export.ServableArrays.save`:

* ``user_emb`` (n_users, d) float32 e_u and ``item_emb`` (n_items, d) float32 e_i, the backbone's final
  representations;
* ``seen_indptr`` (n_users + 1) / ``seen_indices``: each user's retained train items (CSR over D_r, the
  retain set; deleted pairs are never in it);
* ``popularity`` (n_items) int64: c_i = |{u : (u, i) ∈ D_r}|;
* ``excluded`` (n_items) bool: items that are never recommended;
* ``meta_json``: a JSON string (backbone, dataset, sizes, commitment, code version, format version).

Scoring. A *personalised* user u (0 ≤ u < n_users with at least one retained item) gets

    s_ui = e_u · e_i,   top-K_u = the K items i ∉ seen(u) ∪ excluded with the largest s_ui

(equal scores listed by item id). Every other user (deleted from D_r, or an id ≥ n_users that the
model never saw) gets the *non-personalised* list: items ranked by c_i (ties by item id), excluded
items left out, score = c_i; nothing of a deleted user's data or old representation enters it.

Input: a DataFrame with ``user_id`` (int ≥ 0) and optional ``k`` (int, 1..1000) per row; ``params={"k":
…}`` sets k for rows without one; default 20. Output: one row per recommendation, in input-row order:
``user_id``, ``rank`` (1-based), ``item_id``, ``score`` (float32), ``personalised`` (bool). A user with
fewer than k eligible items gets fewer rows.
"""

import json
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

SERVABLE_FORMAT_VERSION = 1
ARTIFACT_KEY = "servable"
DEFAULT_K = 20
MAX_K = 1000
INPUT_COLUMNS = ("user_id", "k")
OUTPUT_COLUMNS = ("user_id", "rank", "item_id", "score", "personalised")
ARRAY_KEYS = (
    "user_emb",
    "item_emb",
    "seen_indptr",
    "seen_indices",
    "popularity",
    "excluded",
    "meta_json",
)
#: bound on one (users × items) float32 score block, bytes
SCORE_BLOCK_BYTES = 64 * 2**20


class ServingInputError(MlflowException):
    """A request the model refuses; the message names the field (answered as HTTP 400 by the server)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value (for messages: ``1.5``, not ``np.float64(1.5)``)."""
    return value.item() if isinstance(value, np.generic) else value


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _int_values(values: Any, field: str, allow_missing: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(int64 values, present mask) of a column, refusing boolean, non-numeric and non-integral entries,
    and missing ones unless ``allow_missing`` (the error names ``field`` and the first bad row)."""
    arr = np.asarray(values)
    if arr.dtype.kind == "O":
        present = np.array([not (allow_missing and _missing(v)) for v in arr], dtype=bool)
        numeric = [
            not p or (isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool))
            for v, p in zip(arr, present)
        ]
        if not all(numeric):
            row = numeric.index(False)
            raise ServingInputError(f"'{field}' row {row}: {_plain(arr[row])!r} is not an integer")
        arr = np.array([float(v) if p else np.nan for v, p in zip(arr, present)], dtype=np.float64)
    elif arr.dtype.kind not in "iuf":
        raise ServingInputError(f"'{field}' must hold integers; got values of dtype {arr.dtype}")
    if arr.dtype.kind != "f":
        return arr.astype(np.int64), np.ones(len(arr), dtype=bool)
    present = ~np.isnan(arr) if allow_missing else np.ones(len(arr), dtype=bool)
    with np.errstate(invalid="ignore"):
        bad = present & (~np.isfinite(arr) | (arr != np.round(arr)))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ServingInputError(f"'{field}' row {row}: {_plain(arr[row])!r} is not an integer")
    return np.where(present, arr, 0).astype(np.int64), present


class TruRecommender(mlflow.pyfunc.PythonModel):
    """Top-K recommendation from exported representations; see the module docstring for the rules."""

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self._loaded = False

    # ---------------------------------------------------------------- loading
    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        if ARTIFACT_KEY not in context.artifacts:
            raise MlflowException(f"model artifacts lack '{ARTIFACT_KEY}' (the servable .npz)")
        self.load_arrays(context.artifacts[ARTIFACT_KEY])

    @classmethod
    def from_npz(cls, path: str) -> "TruRecommender":
        """A model straight from a ``servable.npz`` file (tests, benchmarks; no MLflow involved)."""
        model = cls()
        model.load_arrays(path)
        return model

    def load_arrays(self, path: str) -> None:
        """Read and check the ``.npz`` (no pickle), then precompute the non-personalised ranking."""
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ARRAY_KEYS if k not in npz.files]
            if missing:
                raise MlflowException(f"{path}: servable arrays lack {missing}")
            arrays = {k: npz[k] for k in ARRAY_KEYS}
        meta = json.loads(str(arrays["meta_json"]))
        if meta.get("format_version") != SERVABLE_FORMAT_VERSION:
            raise MlflowException(
                f"{path}: servable format_version {meta.get('format_version')!r}, this model reads "
                f"{SERVABLE_FORMAT_VERSION}"
            )
        self.user_emb = np.ascontiguousarray(arrays["user_emb"], dtype=np.float32)
        self.item_emb = np.ascontiguousarray(arrays["item_emb"], dtype=np.float32)
        self.seen_indptr = arrays["seen_indptr"].astype(np.int64)
        self.seen_indices = arrays["seen_indices"].astype(np.int64)
        self.popularity = arrays["popularity"].astype(np.int64)
        self.excluded = arrays["excluded"].astype(bool)
        self.n_users, self.n_items = int(self.user_emb.shape[0]), int(self.item_emb.shape[0])
        if self.seen_indptr.shape != (self.n_users + 1,) or self.popularity.shape != (self.n_items,):
            raise MlflowException(f"{path}: servable arrays have inconsistent shapes")
        self.meta = meta
        self.personalised = np.diff(self.seen_indptr) > 0
        # non-personalised list: by popularity c_i descending, ties by item id, excluded items left out
        order = np.lexsort((np.arange(self.n_items), -self.popularity))
        self.popular_items = order[~self.excluded[order]]
        self.popular_scores = self.popularity[self.popular_items].astype(np.float32)
        self._excluded_ids = np.flatnonzero(self.excluded)
        self._loaded = True

    # ---------------------------------------------------------------- prediction
    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Top-K items per input row: columns ``user_id``, ``rank``, ``item_id``, ``score``,
        ``personalised``; s_ui = e_u·e_i over unseen, non-excluded items for a personalised user, the
        D_r popularity list otherwise."""
        users, ks = self.parse_input(model_input, params)
        return self.recommend(users, ks)

    def parse_input(
        self, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(user ids, k per row) from the request, with errors that name the field."""
        if not self._loaded:
            raise MlflowException("TruRecommender: no arrays loaded (load_context / from_npz first)")
        if isinstance(model_input, dict):
            model_input = pd.DataFrame(model_input)
        if not isinstance(model_input, pd.DataFrame):
            raise ServingInputError(
                f"model_input must be a DataFrame with columns {list(INPUT_COLUMNS)}, "
                f"got {type(model_input).__name__}"
            )
        cols = [str(c) for c in model_input.columns]
        if "user_id" not in cols:
            raise ServingInputError(
                f"model_input: missing column 'user_id' (got columns {cols}); expected 'user_id' (int) "
                "and optionally 'k' (int)"
            )
        extra = sorted(set(cols) - set(INPUT_COLUMNS))
        if extra:
            raise ServingInputError(
                f"model_input: unexpected column(s) {extra}; expected {list(INPUT_COLUMNS)}"
            )
        users, _ = _int_values(model_input["user_id"].to_numpy(), "user_id")
        if users.size and int(users.min()) < 0:
            row = int(np.flatnonzero(users < 0)[0])
            raise ServingInputError(
                f"'user_id' row {row}: {int(users[row])} is negative; user ids are integers ≥ 0 "
                f"(ids ≥ {self.n_users} are unknown users and get the non-personalised list)"
            )
        default_k = DEFAULT_K
        if params and params.get("k") is not None:
            k = _plain(params["k"])
            integral = isinstance(k, int | float) and not isinstance(k, bool) and float(k).is_integer()
            if not integral:
                raise ServingInputError(f"'params.k': {k!r} is not an integer")
            default_k = int(k)
        ks = np.full(len(users), default_k, dtype=np.int64)
        given = np.zeros(len(users), dtype=bool)  # rows whose k comes from the 'k' column
        if "k" in cols:
            col_k, given = _int_values(model_input["k"].to_numpy(), "k", allow_missing=True)
            ks[given] = col_k[given]
        bad = (ks < 1) | (ks > MAX_K)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            where = "'k' row" if given[row] else "'params.k' for row"
            raise ServingInputError(f"{where} {row}: {int(ks[row])} is outside 1..{MAX_K}")
        return users, ks

    def recommend(self, users: np.ndarray, ks: np.ndarray) -> pd.DataFrame:
        """Vectorised top-K for valid ``users`` (int64 ≥ 0) and ``ks`` (1..MAX_K) per row."""
        users = np.asarray(users, dtype=np.int64)
        ks = np.asarray(ks, dtype=np.int64)
        n = len(users)
        kmax = int(ks.max()) if n else 0
        width = min(kmax, self.n_items)
        items = np.zeros((n, width), dtype=np.int64)
        scores = np.zeros((n, width), dtype=np.float32)
        avail = np.zeros(n, dtype=np.int64)
        pers = np.zeros(n, dtype=bool)
        known = users < self.n_users
        pers[known] = self.personalised[users[known]]
        # non-personalised rows: the precomputed popularity list
        rows = np.flatnonzero(~pers)
        if len(rows) and width:
            w = min(width, len(self.popular_items))
            items[rows, :w] = self.popular_items[:w]
            scores[rows, :w] = self.popular_scores[:w]
            avail[rows] = len(self.popular_items)
        # personalised rows: one matmul per block, seen and excluded items at −∞, argpartition for top-K
        rows = np.flatnonzero(pers)
        block = max(1, SCORE_BLOCK_BYTES // (4 * max(self.n_items, 1)))
        for start in range(0, len(rows), block):
            r = rows[start : start + block]
            u = users[r]
            s = self.user_emb[u] @ self.item_emb.T
            starts, ends = self.seen_indptr[u], self.seen_indptr[u + 1]
            counts = ends - starts
            pos = np.repeat(np.arange(len(u)), counts)
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            s[pos, self.seen_indices[np.repeat(starts, counts) + offsets]] = -np.inf
            s[:, self._excluded_ids] = -np.inf
            if width < self.n_items:
                cand = np.argpartition(-s, width - 1, axis=1)[:, :width]
            else:
                cand = np.broadcast_to(np.arange(self.n_items), s.shape)
            vals = np.take_along_axis(s, cand, axis=1)
            order = np.lexsort((cand, -vals), axis=1)  # score descending, then item id ascending
            items[r] = np.take_along_axis(cand, order, axis=1)
            scores[r] = np.take_along_axis(vals, order, axis=1)
            avail[r] = np.count_nonzero(np.isfinite(s), axis=1)
        take = np.minimum(ks, avail)
        valid = np.arange(width)[None, :] < take[:, None]
        counts = valid.sum(axis=1)
        return pd.DataFrame(
            {
                "user_id": np.repeat(users, counts),
                "rank": np.broadcast_to(np.arange(1, width + 1, dtype=np.int64), (n, width))[valid],
                "item_id": items[valid],
                "score": scores[valid],
                "personalised": np.repeat(pers, counts),
            }
        )


# Executed as MLflow's model-from-code file (any module name but the package's own): hand MLflow the
# model object. Imported as ``tru.serving.pyfunc`` (library use), nothing is registered.
if __name__ != "tru.serving.pyfunc":
    mlflow.models.set_model(TruRecommender())
