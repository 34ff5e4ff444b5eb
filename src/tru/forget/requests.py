"""Deletion-request manifests: the CSV that data teams edit, read strictly, and resolved against a dataset
into a :class:`~tru.forget.spec.ForgetSpec` (tru-method.md §2).

The manifest is UTF-8 CSV with the header ``request_id,kind,user_id,item_id,requested_at,reason`` and one
request per row:

* ``kind`` = ``user`` (``user_id`` set, ``item_id`` empty), ``item`` (``item_id`` set, ``user_id`` empty) or
  ``interaction`` (both set);
* ids are non-negative integers in the dataset's 0-based id space;
* ``requested_at`` is ISO 8601 (``datetime.fromisoformat``; a trailing ``Z`` means UTC);
* ``request_id`` is non-empty and unique: the same row twice is a no-op, the same id with different
  content is a conflict (an error).

Resolution (:func:`resolve_requests`): with U the requested users, T the requested items and P the
requested train pairs,

    D_f = {(u, i) ∈ D : u ∈ U  or  i ∈ T  or  (u, i) ∈ P},    D_r = D \\ D_f,
    valid' = {(u, i) ∈ valid : u ∉ U and i ∉ T},              test' likewise,

and every user not in U keeps at least one train item when P removes pairs from their history.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from tru.data.dataset import DataError, Pairs, RecDataset, write_atomic
from tru.forget.spec import REGIMES, ForgetSpec

HEADER = ("request_id", "kind", "user_id", "item_id", "requested_at", "reason")
KINDS = REGIMES  # a request's kind names the regime it belongs to
MAX_ERRORS = 20
_UINT = re.compile(r"[0-9]+")
_NEG = re.compile(r"-[0-9]+")


@dataclass(frozen=True)
class DeletionRequest:
    """One row of a deletion-request manifest."""

    request_id: str
    kind: str
    user_id: int | None
    item_id: int | None
    requested_at: str
    reason: str

    def row(self) -> list[str]:
        """The CSV cells of this request, in :data:`HEADER` order."""
        return [
            self.request_id,
            self.kind,
            "" if self.user_id is None else str(self.user_id),
            "" if self.item_id is None else str(self.item_id),
            self.requested_at,
            self.reason,
        ]


# --------------------------------------------------------------------------------------------- checks
def parse_timestamp(text: str) -> datetime:
    """ISO 8601 via ``datetime.fromisoformat``; a trailing ``Z`` is read as ``+00:00``."""
    return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)


def _parse_id(text: str, field: str) -> tuple[int | None, str | None]:
    """(value, error): empty → None; otherwise a non-negative integer in plain decimal digits."""
    if text == "":
        return None, None
    if _UINT.fullmatch(text):
        return int(text), None
    if _NEG.fullmatch(text):
        return None, f"field '{field}': negative id {text!r}; expected a non-negative integer"
    return None, f"field '{field}': {text!r} is not an integer; expected a non-negative integer (e.g. 42)"


def check_request(req: DeletionRequest, skip: tuple[str, ...] = ()) -> list[str]:
    """The problems of one request taken alone (empty list: valid), each naming the field; checks of
    the fields in ``skip`` (already reported by the parser) are left out."""
    errs: list[str] = []
    if not req.request_id.strip():
        errs.append("field 'request_id': empty; expected a non-empty identifier")
    if req.kind not in KINDS:
        errs.append(f"field 'kind': unknown kind {req.kind!r}; expected one of {', '.join(KINDS)}")
    else:
        a = "an" if req.kind in ("item", "interaction") else "a"
        need_user = req.kind in ("user", "interaction")
        need_item = req.kind in ("item", "interaction")
        for field, value, needed in (
            ("user_id", req.user_id, need_user),
            ("item_id", req.item_id, need_item),
        ):
            if field in skip:
                continue
            if needed and value is None:
                errs.append(f"field '{field}': missing; {a} {req.kind} request needs a {field}")
            elif not needed and value is not None:
                errs.append(f"field '{field}': a value given for {a} {req.kind} request; expected it empty")
    for field, value in (("user_id", req.user_id), ("item_id", req.item_id)):
        if value is not None and (not isinstance(value, int | np.integer) or value < 0):
            errs.append(f"field '{field}': {value!r}; expected a non-negative integer")
    if not req.requested_at.strip():
        errs.append(
            "field 'requested_at': missing; expected an ISO 8601 timestamp (e.g. 2025-01-31T12:00:00Z)"
        )
    else:
        try:
            parse_timestamp(req.requested_at)
        except ValueError:
            errs.append(
                f"field 'requested_at': {req.requested_at!r} is not ISO 8601; "
                "expected e.g. 2025-01-31, 2025-01-31T12:00:00Z or 2025-01-31T12:00:00+01:00"
            )
    return errs


def _raise_errors(where: str, errors: list[str]) -> None:
    if not errors:
        return
    shown = errors[:MAX_ERRORS]
    more = f"\n  ... and {len(errors) - MAX_ERRORS} more" if len(errors) > MAX_ERRORS else ""
    raise DataError(f"{where}: {len(errors)} error(s):\n  " + "\n  ".join(shown) + more)


def _check_unique(requests: Sequence[DeletionRequest], label: str) -> list[str]:
    """Conflicts: one request_id with different content. Identical repeats are allowed (no-ops)."""
    first: dict[str, DeletionRequest] = {}
    errs = []
    for req in requests:
        seen = first.setdefault(req.request_id, req)
        if seen != req:
            differ = [f for f, x, y in zip(HEADER, seen.row(), req.row(), strict=True) if x != y]
            errs.append(  # the fields that differ, never their values (they may name a deleted pair)
                f"{label} request_id {req.request_id!r}: conflicting duplicate ({', '.join(differ)} differ); "
                "expected one content per request_id (give the second request a new id)"
            )
    return errs


# ------------------------------------------------------------------------------------------------ I/O
def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of a CSV file (a byte-order mark allowed); errors name the file."""
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc}); expected a UTF-8 CSV file") from exc


def csv_rows(text: str, where: str, header: Sequence[str], hint: str = "") -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of every non-blank row of a strict CSV with the header ``header`` (leading
    blank lines skipped). A wrong header or invalid CSV is a DataError naming ``where`` and the line; a
    row with another number of fields is yielded as it is (:func:`field_count_error` names it)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        head = next(reader, None)
        while head is not None and not any(c.strip() for c in head):
            head = next(reader, None)
        if head is None:
            return
        if tuple(c.strip() for c in head) != tuple(header):
            raise DataError(
                f"{where}:{reader.line_num}: bad header {','.join(head)!r}; "
                f"expected {','.join(header)!r}{hint}"
            )
        for cells in reader:
            if any(c.strip() for c in cells):
                yield reader.line_num, cells
    except csv.Error as exc:
        raise DataError(f"{where}:{reader.line_num}: not valid CSV: {exc}") from exc


def field_count_error(where: str, line: int, cells: Sequence[str], header: Sequence[str]) -> str | None:
    """The error of a row whose number of fields is not the header's (None when it is)."""
    if len(cells) == len(header):
        return None
    return f"{where}:{line}: {len(cells)} fields; expected {len(header)} ({','.join(header)})"


def read_requests(path: Path | str) -> list[DeletionRequest]:
    """Read a manifest strictly: every row error is collected and one :class:`DataError` lists them,
    each as ``<file>:<line>: field '<name>': <problem>; expected <what>``.

    An exact repeat of a row is kept in the list (:func:`resolve_requests` reports it as a no-op);
    a 0-byte or header-only file gives an empty list."""
    path = Path(path)
    return parse_requests(read_text(path, "deletion-request manifest"), str(path))


def parse_requests(text: str, where: str) -> list[DeletionRequest]:
    """A manifest's text, parsed strictly (:func:`read_requests`); ``where`` names it in errors."""
    errors: list[str] = []
    out: list[DeletionRequest] = []
    lines: dict[str, tuple[int, DeletionRequest]] = {}
    for line, cells in csv_rows(text, where, HEADER):
        if bad := field_count_error(where, line, cells, HEADER):
            errors.append(bad)
            continue
        rid, kind, u_txt, i_txt, ts = (c.strip() for c in cells[:5])
        reason = cells[5]
        row_errs: list[str] = []
        uid, err_u = _parse_id(u_txt, "user_id")
        iid, err_i = _parse_id(i_txt, "item_id")
        row_errs += [e for e in (err_u, err_i) if e]
        req = DeletionRequest(rid, kind, uid, iid, ts, reason)
        bad_cells = tuple(f for f, e in (("user_id", err_u), ("item_id", err_i)) if e)
        row_errs += check_request(req, skip=bad_cells)
        if not row_errs and rid in lines and lines[rid][1] != req:
            row_errs.append(
                f"field 'request_id': {rid!r} already used on line {lines[rid][0]} with other content; "
                "expected a unique request_id (an exact repeat of a row is allowed)"
            )
        errors += [f"{where}:{line}: {e}" for e in row_errs]
        if not row_errs:
            lines.setdefault(rid, (line, req))
            out.append(req)
    _raise_errors(f"{where}: deletion-request manifest", errors)
    return out


def render_rows(requests: Iterable[DeletionRequest]) -> bytes:
    """The CSV bytes of ``requests`` as :func:`append_requests` writes them (no header)."""
    return _render(requests, header=False)


def _render(requests: Iterable[DeletionRequest], header: bool) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(HEADER)
    for req in requests:
        writer.writerow(req.row())
    return buf.getvalue().encode("utf-8")


def _check_all(requests: Sequence[DeletionRequest], where: str) -> None:
    errors = [f"request {req.request_id!r}: {e}" for req in requests for e in check_request(req)]
    _raise_errors(where, errors + _check_unique(requests, "manifest"))


def write_requests(path: Path | str, requests: Sequence[DeletionRequest]) -> Path:
    """Validate every request, then write the manifest atomically (temporary file + rename)."""
    path = Path(path)
    _check_all(requests, f"{path}: refusing to write deletion requests")
    write_atomic(path, _render(requests, header=True))
    return path


def append_requests(path: Path | str, new: Sequence[DeletionRequest]) -> Path:
    """Append requests to a manifest (created if absent). Refuses, leaving the file untouched, when the
    existing file is invalid, a new request is invalid, or a new request_id is already in the file."""
    path = Path(path)
    where = f"{path}: refusing to append deletion requests"
    existing = read_requests(path) if path.is_file() else []
    _check_all(new, where)
    present = {r.request_id for r in existing}
    clash = [r.request_id for r in new if r.request_id in present]
    _raise_errors(where, [f"request_id {rid!r}: already in the manifest; expected a new id" for rid in clash])
    old = path.read_bytes() if path.is_file() else b""
    if not old.strip():
        payload = _render(new, header=True)
    else:
        payload = old + (b"" if old.endswith(b"\n") else b"\n") + _render(new, header=False)
    write_atomic(path, payload)
    return path


# --------------------------------------------------------------------------------------------- resolve
def _first_index(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each entry, the index of the first entry with the same value, and whether it is that first."""
    _, first, inv = np.unique(values, return_index=True, return_inverse=True)
    first_of = first[inv]
    return first_of, first_of == np.arange(len(values))


def _refuse_empty_retain(dataset: RecDataset, train: Pairs, retain: Pairs, kinds: np.ndarray) -> None:
    """A DataError when the requests would leave no train interaction at all (D_r empty): every user's,
    or every item's, train interactions deleted; there would be nothing left to train or unlearn on."""
    if len(retain) > 0 or len(train) == 0:
        return
    n_u = len(np.unique(train.users))
    n_i = len(np.unique(train.items))
    counts = ", ".join(f"{int((kinds == k).sum())} {k}" for k in KINDS if (kinds == k).any())
    raise DataError(
        f"deletion requests against dataset {dataset.name!r}: these requests delete every user's train "
        f"interactions ({n_u} of {n_u} users) and every item's ({n_i} of {n_i} items); nothing would "
        f"remain to train on: the retained set D_r would be empty ({counts} request(s)). Unlearning needs "
        "data left to keep: delete the dataset itself instead, or file fewer requests"
    )


def resolve_requests(
    dataset: RecDataset, requests: Sequence[DeletionRequest], strict: bool = True
) -> ForgetSpec:
    """Resolve requests against ``dataset`` into D_f, D_r and the regime-adjusted evaluation splits
    (formulas in the module docstring).

    Errors (one :class:`DataError` listing all): invalid request, conflicting request_id, unknown user /
    item id (≥ n_users / n_items), with ``strict`` an interaction pair that is not a train interaction,
    interaction requests that would delete every train item of a user not deleted by a user request, and
    requests that together delete every train interaction (every user's, every item's: D_r empty).
    No-ops (``spec.noops``, never silent): repeated rows, an id already requested by an earlier request,
    an interaction inside a deleted user's or item's history, a non-train pair without ``strict``, a user
    or item with no train interactions. ``regime``: the one kind present, ``mixed``, or ``none`` (empty)."""
    n_users, n_items = dataset.n_users, dataset.n_items
    train = dataset.train
    noops: list[str] = []
    _check_all(requests, "deletion requests")
    unique: list[DeletionRequest] = []
    seen: dict[str, int] = {}
    for req in requests:
        seen[req.request_id] = seen.get(req.request_id, 0) + 1
        if seen[req.request_id] == 1:
            unique.append(req)
    noops += [
        f"request {rid!r}: given {n} times (identical rows); counted once" for rid, n in seen.items() if n > 1
    ]
    errors = []
    for req in unique:
        if req.user_id is not None and req.user_id >= n_users:
            errors.append(f"request {req.request_id!r}: unknown user_id {req.user_id}; expected < {n_users}")
        if req.item_id is not None and req.item_id >= n_items:
            errors.append(f"request {req.request_id!r}: unknown item_id {req.item_id}; expected < {n_items}")
    _raise_errors(f"deletion requests against dataset {dataset.name!r}", errors)

    if not unique:
        empty = Pairs(np.empty(0, np.int64), np.empty(0, np.int64))
        noops.append("no deletion requests: nothing to forget (D_f is empty, D_r = train)")
        none = np.empty(0, np.int64)
        return ForgetSpec("none", empty, train, none, none, dataset.valid, dataset.test, [], noops, ())

    ids = np.array([r.request_id for r in unique], dtype=object)
    kind = np.array([r.kind for r in unique])
    uid = np.array([-1 if r.user_id is None else r.user_id for r in unique], dtype=np.int64)
    iid = np.array([-1 if r.item_id is None else r.item_id for r in unique], dtype=np.int64)
    effective = np.ones(len(unique), dtype=bool)
    train_deg_u = np.bincount(train.users, minlength=n_users)
    train_deg_i = np.bincount(train.items, minlength=n_items)

    owners: dict[str, np.ndarray] = {}
    for k, col, n, deg in (("user", uid, n_users, train_deg_u), ("item", iid, n_items, train_deg_i)):
        sel = np.flatnonzero(kind == k)
        first_of, is_first = _first_index(col[sel])
        for j in np.flatnonzero(~is_first):
            effective[sel[j]] = False
            noops.append(
                f"request {ids[sel[j]]!r}: its {k} is already deleted by request "
                f"{ids[sel[first_of[j]]]!r}; no-op"
            )
        owner = np.full(n, -1, dtype=np.int64)  # index of the request deleting each user / item
        owner[col[sel[is_first]]] = sel[is_first]
        owners[k] = owner
        for j in sel[is_first][deg[col[sel[is_first]]] == 0]:  # rare: a loop per such request
            effective[j] = False
            nv, nt = (
                int(np.sum((p.users if k == "user" else p.items) == col[j]))
                for p in (dataset.valid, dataset.test)
            )
            noops.append(
                f"request {ids[j]!r}: its {k} has no train interactions (D_f unchanged); "
                f"its {nv} valid / {nt} test rows leave evaluation"
            )
    user_owner, item_owner = owners["user"], owners["item"]
    del_u, del_i = user_owner >= 0, item_owner >= 0

    # interaction requests, vectorised over requests: in train? covered by a user / item request? repeated?
    sel = np.flatnonzero(kind == "interaction")
    keys = uid[sel] * np.int64(n_items) + iid[sel]
    train_keys = train.keys(n_items)
    first_of, is_first = _first_index(keys)
    not_train = ~np.isin(keys, train_keys)
    cov_u = ~not_train & del_u[uid[sel]]
    cov_i = ~not_train & ~cov_u & del_i[iid[sel]]
    repeat = ~not_train & ~cov_u & ~cov_i & ~is_first
    effective[sel[not_train | cov_u | cov_i | repeat]] = False
    in_valid = np.isin(keys, dataset.valid.keys(n_items))
    in_test = np.isin(keys, dataset.test.keys(n_items))
    for j in np.flatnonzero(not_train | cov_u | cov_i | repeat):  # messages only for the no-ops / errors
        r = sel[j]
        head = f"request {ids[r]!r}: its pair"  # never the ids of a pair to delete
        if not_train[j]:
            what = "a valid pair" if in_valid[j] else "a test pair" if in_test[j] else "no interaction at all"
            msg = f"{head} is not a train interaction (it is {what}); only train pairs can be forgotten"
            if strict:
                errors.append(f"{msg} (strict; resolve with strict=False to report it as a no-op)")
            else:
                noops.append(f"{msg}; no-op")
        elif cov_u[j]:
            noops.append(f"{head} is covered by user request {ids[user_owner[uid[r]]]!r}; no-op")
        elif cov_i[j]:
            noops.append(f"{head} is covered by item request {ids[item_owner[iid[r]]]!r}; no-op")
        else:
            noops.append(f"{head} already deleted by request {ids[sel[first_of[j]]]!r}; no-op")
    _raise_errors(f"deletion requests against dataset {dataset.name!r}", errors)

    pair_keys = keys[effective[sel]]
    forget_mask = del_u[train.users] | del_i[train.items] | np.isin(train_keys, pair_keys)
    retain = train.subset(~forget_mask)
    _refuse_empty_retain(dataset, train, retain, kind[effective])

    # interaction-regime invariant: a user not deleted as a whole keeps ≥ 1 train item
    req_users = uid[sel[effective[sel]]]
    left = np.bincount(retain.users, minlength=n_users)
    emptied = np.unique(req_users[(left[req_users] == 0) & ~del_u[req_users]])
    for u in emptied:
        mine = [str(ids[r]) for r in sel[effective[sel]] if uid[r] == u]
        items_note = " (together with item requests)" if del_i[train.items[train.users == u]].any() else ""
        errors.append(
            f"interaction requests {', '.join(mine)} would delete all {train_deg_u[u]} train items of their "
            f"user{items_note}; the interaction regime keeps at least one train item per user; "
            "file a user request instead"
        )
    _raise_errors(f"deletion requests against dataset {dataset.name!r}", errors)

    def _keep(p: Pairs) -> Pairs:
        return p.subset(~(del_u[p.users] | del_i[p.items]))

    kinds_present = [k for k in KINDS if (kind == k).any()]
    regime = kinds_present[0] if len(kinds_present) == 1 else "mixed"
    return ForgetSpec(
        regime=regime,
        forget=train.subset(forget_mask),
        retain=retain,
        users=np.flatnonzero(del_u),
        items=np.flatnonzero(del_i),
        valid=_keep(dataset.valid),
        test=_keep(dataset.test),
        request_ids=[str(r) for r in ids[effective]],
        noops=noops,
        requests=tuple(unique),
    )
