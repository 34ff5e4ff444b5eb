"""The redacted ledger of erased deletion requests: ``data/deletions/erased.csv``.

When ``tru erase`` removes the rows of a request from the data, the request leaves the manifest
(``requests.csv``, which holds raw user / item ids) and one row enters this ledger, with no ids:

    request_id,kind,requested_at,erased_at,commitment

``commitment`` is :func:`tru.forget.commitment.commit_requests` of that one request (a keyed HMAC over its
manifest row, ids included): whoever holds the installation key and the original manifest (the erasure
audit, a data-protection officer) can check that a request id was erased with exactly that content;
nobody else learns the ids from it. ``kind`` and both times are kept (counts per kind, delays).

Reading is strict (:func:`read_erased`): every problem is reported as ``<file>:<line>: field '<name>':
<problem>; expected <what>``; writing is atomic (temporary file + rename) and validates first.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tru.data.dataset import DataError, write_atomic
from tru.forget.commitment import SCHEME, commit_requests
from tru.forget.requests import (
    KINDS,
    DeletionRequest,
    csv_rows,
    field_count_error,
    parse_timestamp,
    read_text,
)

ERASED_PATH = "data/deletions/erased.csv"
HEADER = ("request_id", "kind", "requested_at", "erased_at", "commitment")
MAX_ERRORS = 20
_COMMITMENT = re.compile(rf"{SCHEME}:[0-9a-f]{{64}}")


@dataclass(frozen=True)
class ErasedRequest:
    """One row of the erased ledger: a request whose rows are gone from the data (no user / item ids)."""

    request_id: str
    kind: str
    requested_at: str
    erased_at: str
    commitment: str

    def row(self) -> list[str]:
        """The CSV cells, in :data:`HEADER` order."""
        return [self.request_id, self.kind, self.requested_at, self.erased_at, self.commitment]

    @classmethod
    def from_request(
        cls, req: DeletionRequest, erased_at: str | None = None, key: bytes | None = None
    ) -> ErasedRequest:
        """The ledger row of ``req`` erased at ``erased_at`` (default: now, UTC, seconds)."""
        when = erased_at or datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        return cls(req.request_id, req.kind, req.requested_at, when, commit_requests([req], key=key))

    def matches(self, req: DeletionRequest, key: bytes | None = None) -> bool:
        """Whether ``req`` (a raw manifest row) is the request this row committed to."""
        from tru.forget.commitment import verify

        return (
            req.request_id == self.request_id
            and req.kind == self.kind
            and verify(commit_requests([req], key=key), self.commitment)
        )


def check_erased(row: ErasedRequest) -> list[str]:
    """The problems of one ledger row (empty: valid), each naming the field."""
    errs: list[str] = []
    if not row.request_id.strip():
        errs.append("field 'request_id': empty; expected a non-empty identifier")
    if row.kind not in KINDS:
        errs.append(f"field 'kind': unknown kind {row.kind!r}; expected one of {', '.join(KINDS)}")
    for field in ("requested_at", "erased_at"):
        value = getattr(row, field)
        try:
            parse_timestamp(value)
        except ValueError:
            errs.append(f"field '{field}': {value!r} is not ISO 8601; expected e.g. 2025-01-31T12:00:00Z")
    if not _COMMITMENT.fullmatch(row.commitment):
        errs.append(
            f"field 'commitment': {row.commitment[:80]!r} is not a keyed commitment; "
            f"expected '{SCHEME}:' followed by 64 lower-case hex digits"
        )
    return errs


def _raise(where: str, errors: list[str]) -> None:
    if errors:
        shown = errors[:MAX_ERRORS]
        more = f"\n  ... and {len(errors) - MAX_ERRORS} more" if len(errors) > MAX_ERRORS else ""
        raise DataError(f"{where}: {len(errors)} error(s):\n  " + "\n  ".join(shown) + more)


def read_erased(path: Path | str) -> list[ErasedRequest]:
    """Read the ledger strictly (module docstring); a missing file is an error, a 0-byte or header-only
    file an empty ledger. A request id given twice is an error (the ledger records each erasure once)."""
    path = Path(path)
    text = read_text(path, "erased-request ledger")
    out: list[ErasedRequest] = []
    errors: list[str] = []
    first_line: dict[str, int] = {}
    for line, cells in csv_rows(text, str(path), HEADER, " (the ledger holds no user or item ids)"):
        if bad := field_count_error(str(path), line, cells, HEADER):
            errors.append(bad)
            continue
        row = ErasedRequest(*(c.strip() for c in cells))
        row_errs = check_erased(row)
        if not row_errs and row.request_id in first_line:
            row_errs.append(
                f"field 'request_id': {row.request_id!r} already on line {first_line[row.request_id]}; "
                "expected each erased request once"
            )
        errors += [f"{path}:{line}: {e}" for e in row_errs]
        if not row_errs:
            first_line[row.request_id] = line
            out.append(row)
    _raise(f"{path}: erased-request ledger", errors)
    return out


def erased_ids(path: Path | str) -> set[str]:
    """Request ids in the ledger (empty when the file does not exist)."""
    path = Path(path)
    return {r.request_id for r in read_erased(path)} if path.is_file() else set()


def _render(rows: Iterable[ErasedRequest]) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    for row in rows:
        writer.writerow(row.row())
    return buf.getvalue().encode("utf-8")


def write_erased(path: Path | str, rows: Sequence[ErasedRequest]) -> Path:
    """Validate every row (and unique ids), then write the ledger atomically."""
    path = Path(path)
    errors = [f"request {r.request_id!r}: {e}" for r in rows for e in check_erased(r)]
    seen: set[str] = set()
    for r in rows:
        if r.request_id in seen:
            errors.append(f"request {r.request_id!r}: given twice; expected each erased request once")
        seen.add(r.request_id)
    _raise(f"{path}: refusing to write the erased-request ledger", errors)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, _render(rows))
    return path


def append_erased(path: Path | str, new: Sequence[ErasedRequest]) -> list[ErasedRequest]:
    """Add ``new`` rows to the ledger (created if absent); a request id already there is kept as it is
    (an erasure is recorded once, at its first time). Returns the rows actually added."""
    path = Path(path)
    existing = read_erased(path) if path.is_file() else []
    present = {r.request_id for r in existing}
    added: list[ErasedRequest] = []
    for r in new:
        if r.request_id not in present:
            present.add(r.request_id)
            added.append(r)
    write_erased(path, [*existing, *added])
    return added
