"""The erasure audit: find every place that still holds a trace of deleted data (``tru erasure audit``).

The auditor brings their own copy of the original request manifest (it holds the raw user / item ids;
tru no longer does once a request is erased, see :mod:`tru.forget.erased`). For each request the audit
looks in (``docs/erasure.md``, "What an erasure audit checks"):

* ``dataset``: the dataset files of the current data version (the working tree ``data/``);
* ``dvc-cache``: every object of the DVC cache (``.dvc/cache/files/md5``), whatever revision, or none,
  references it (an uncommitted ``dvc add`` leaves objects no commit names);
* ``dvc-remote``: every object *version* of the default DVC remote (on a versioned S3 bucket a delete
  only adds a delete marker: the old versions still hold the data);
* ``mlflow-run`` / ``mlflow-artifact`` / ``mlflow-registry``: every run (active and soft-deleted):
  params, tags and metric names, its artifact files; registered models' and versions' tags;
* ``pipeline``: ``kfp.local`` pipeline roots (``.tru/kfp`` and any ``--pipeline-root``, local or S3,
  every object version) and ``.tru/runs``; ``tru``: the rest of ``.tru/`` (ledgers, logs);
* ``extra``: any other folder or ``s3://`` prefix given (tru's log files, an MLflow artifact root).

What counts as a trace (:class:`TraceMatcher`), with U / T / P the requested users, items and pairs:

(a) a row of a TSV / CSV with a user and / or item id column (``.inter``, manifests) whose user is in U,
    item in T or (user, item) in P;
(b) in JSON and text: a user-id field (``"user_id": u``, ``userID=u``, ``user u``) with u in U, an
    item-id field with the item in T, a pair written ``(u, i)`` or as neighbouring user / item fields
    that a request deletes; in JSON also lists of pairs under a key naming pairs;
(c) a torch checkpoint (``torch.load(weights_only=True)``) holding an integer tensor of shape (2, n)
    (``forget_pairs``) with a column a request deletes;
(d) a reversible hash: the unsalted sha256 of sorted forget keys (the old ``ForgetSpec.forget_hash``:
    ``sha256(np.unique(u * n_items + i).astype("<i8").tobytes())``) of each single pair, of the
    requested pairs, and, where a dataset copy still holds the rows, of each request's D_f, of every
    prefix of the manifest and of all of it; found as hex text in any file, param or tag. A field
    named ``forget_sha256`` / ``forget_hash`` is reported too (an unsalted hash of a small id space is
    reversible by enumeration, whatever it hashes).

Each :class:`Finding` names the place (a path, ``s3://bucket/key?versionId=…``, ``mlflow:run/<id>#…``),
the store, the kind of trace, the request ids and a count, never an id or a pair. Large ``.npy``
feature matrices are skipped (item content features, not user data).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tru.data.dataset import DataError
from tru.forget.requests import DeletionRequest, read_requests
from tru.utils import LOG

STORES = (
    "dataset",
    "dvc-cache",
    "dvc-remote",
    "mlflow-run",
    "mlflow-artifact",
    "mlflow-registry",
    "pipeline",
    "tru",
    "extra",
)
USER_KEYS = frozenset({"userid", "user_id", "user", "uid", "user_ids", "users"})
ITEM_KEYS = frozenset({"itemid", "item_id", "item", "iid", "item_ids", "items"})
USER_COLS = frozenset({"userid", "user_id", "user", "uid"})
ITEM_COLS = frozenset({"itemid", "item_id", "item", "iid"})
HASH_FIELDS = frozenset({"forget_sha256", "forget_hash"})
SKIP_SUFFIXES = (".npy", ".npz", ".png", ".jpg", ".jpeg", ".gif", ".pdf", ".parquet")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
MAX_BYTES = int(os.environ.get("TRU_AUDIT_MAX_BYTES", str(512 << 20)))
SNIFF_OVER = 8 << 20  # objects larger than this are sniffed (first bytes) before being read whole
_NUMPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_PAIR_WINDOW = 200
_HEX = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")
_PAREN = re.compile(r"\(\s*(\d{1,12})\s*,\s*(\d{1,12})\s*\)")
_UFIELD = re.compile(r"""\buser(?:_?id)?["']?\s*(?:[:=]\s*)?["']?(\d{1,12})\b""", re.IGNORECASE)
_IFIELD = re.compile(r"""\bitem(?:_?id)?["']?\s*(?:[:=]\s*)?["']?(\d{1,12})\b""", re.IGNORECASE)
_SHIFT = np.int64(1 << 31)  # pair key u * 2^31 + i (ids are below 2^31)


class AuditError(ValueError):
    """The audit cannot run (bad requests file, unreadable store); a ValueError: CLI exit 2."""


# ------------------------------------------------------------------------------------------ findings
@dataclass(frozen=True)
class Hit:
    """One kind of trace found in one blob: which requests, how many times (rows, pairs, fields)."""

    kind: str
    request_ids: frozenset[str]
    count: int


@dataclass(frozen=True)
class Finding:
    """A trace of deleted data: where (``location``, ``store``), what (``kind``), of which requests, how
    many. ``detail`` is free text without ids or pairs."""

    location: str
    store: str
    kind: str
    request_ids: tuple[str, ...]
    count: int
    detail: str = ""


@dataclass(frozen=True)
class RequestStatus:
    """A request of the auditor's manifest and what tru's ledgers say about it: ``erased`` (in
    ``data/deletions/erased.csv`` with a matching commitment), ``erased-unverified`` (in the ledger, no
    commitment key here to check it), ``erased-mismatch`` (in the ledger with another content),
    ``pending`` (still in ``requests.csv``), ``unknown`` (in neither)."""

    request_id: str
    kind: str
    status: str


@dataclass
class AuditReport:
    """What the audit scanned and found; ``clean`` when no trace was found and no store failed."""

    repo: str
    requests: list[RequestStatus]
    scope: list[str]
    findings: list[Finding] = field(default_factory=list)
    scanned: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    hash_candidates: int = 0
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.findings and not self.errors

    def by_store(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.store] = out.get(f.store, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "clean": self.clean,
            "requests": [asdict(r) for r in self.requests],
            "scope": list(self.scope),
            "findings": [{**asdict(f), "request_ids": list(f.request_ids)} for f in self.findings],
            "findings_by_store": self.by_store(),
            "scanned": dict(self.scanned),
            "skipped": dict(self.skipped),
            "errors": list(self.errors),
            "hash_candidates": self.hash_candidates,
            "seconds": round(self.seconds, 2),
        }

    def render(self) -> str:
        """A human summary: verdict, per-store counts, one line per finding."""
        head = "CLEAN: no trace of the audited requests" if self.clean else "TRACES FOUND"
        lines = [
            f"{head} ({len(self.scope)} request(s) audited, {sum(self.scanned.values())} blobs scanned "
            f"in {self.seconds:.1f} s)"
        ]
        for r in self.requests:
            lines.append(f"  request {r.request_id} ({r.kind}): {r.status}")
        for store, n in sorted(self.scanned.items()):
            found = self.by_store().get(store, 0)
            lines.append(
                f"  {store:<16} scanned {n:>6}  skipped {self.skipped.get(store, 0):>5}  findings {found}"
            )
        for f in self.findings:
            ids = ",".join(f.request_ids) or "unattributed"
            tail = f" - {f.detail}" if f.detail else ""
            lines.append(f"  [{f.store}] {f.kind} x{f.count} ({ids}): {f.location}{tail}")
        lines += [f"  error: {e}" for e in self.errors]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------- matcher
def _forget_hash(keys: Iterable[int] | np.ndarray) -> str:
    """The old, unsalted ``ForgetSpec.forget_hash`` of a set of keys ``u * n_items + i``."""
    arr = np.unique(np.asarray(list(keys) if not isinstance(keys, np.ndarray) else keys, dtype=np.int64))
    return hashlib.sha256(arr.astype("<i8").tobytes()).hexdigest()


def hash_candidates(
    requests: Sequence[DeletionRequest],
    n_items_list: Iterable[int],
    frames: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray | None, int]] = (),
) -> dict[str, set[str]]:
    """Reversible hashes an erased request may have left (module docstring, (d)): hex → request ids.

    ``frames``: (users, items, labels or None, n_items) of dataset copies that still hold rows; D_f of a
    request is then its train rows there. Empty sets are never candidates (their hash is a constant)."""
    out: dict[str, set[str]] = {}
    pairs = [r for r in requests if r.kind == "interaction"]
    for n in sorted({int(n) for n in n_items_list if n and n > 0}):
        for r in pairs:
            out.setdefault(_forget_hash([r.user_id * n + r.item_id]), set()).add(r.request_id)
        if len(pairs) > 1:
            out.setdefault(_forget_hash([r.user_id * n + r.item_id for r in pairs]), set()).update(
                r.request_id for r in pairs
            )
    for users, items, labels, n in frames:
        if labels is not None:
            train = labels == 0
            users, items = users[train], items[train]
        keys = users.astype(np.int64) * np.int64(n) + items.astype(np.int64)
        per: list[np.ndarray] = []
        for r in requests:
            if r.kind == "user":
                sel = keys[users == r.user_id]
            elif r.kind == "item":
                sel = keys[items == r.item_id]
            else:
                sel = np.array([r.user_id * n + r.item_id], dtype=np.int64)
            per.append(sel)
            if len(sel):
                out.setdefault(_forget_hash(sel), set()).add(r.request_id)
        acc = np.empty(0, np.int64)
        contributed: set[str] = set()
        for j, sel in enumerate(per):  # manifest prefixes: what a trigger at each revision resolved
            acc = np.concatenate([acc, sel])
            if len(sel):
                contributed.add(requests[j].request_id)
            if len(acc) and j > 0:
                out.setdefault(_forget_hash(acc), set()).update(contributed)
    return out


class TraceMatcher:
    """Tests blobs for traces of a set of requests (module docstring, (a)-(d)); knows the raw ids and
    never returns them: every answer is a :class:`Hit` (kind, request ids, count)."""

    def __init__(
        self, requests: Sequence[DeletionRequest], hashes: dict[str, set[str]] | None = None
    ) -> None:
        self.requests = list(requests)
        self.users: dict[int, set[str]] = {}
        self.items: dict[int, set[str]] = {}
        self.pairs: dict[tuple[int, int], set[str]] = {}
        for r in self.requests:
            if r.kind == "user" and r.user_id is not None:
                self.users.setdefault(int(r.user_id), set()).add(r.request_id)
            elif r.kind == "item" and r.item_id is not None:
                self.items.setdefault(int(r.item_id), set()).add(r.request_id)
            elif r.kind == "interaction" and r.user_id is not None and r.item_id is not None:
                self.pairs.setdefault((int(r.user_id), int(r.item_id)), set()).add(r.request_id)
        self._u = np.array(sorted(self.users), dtype=np.int64)
        self._i = np.array(sorted(self.items), dtype=np.int64)
        self._p = np.array(sorted(u * _SHIFT + i for u, i in self.pairs), dtype=np.int64)
        self.hashes: dict[str, set[str]] = {k.lower(): set(v) for k, v in (hashes or {}).items()}

    @property
    def empty(self) -> bool:
        return not (self.users or self.items or self.pairs)

    def add_hashes(self, more: dict[str, set[str]]) -> None:
        for k, v in more.items():
            self.hashes.setdefault(k.lower(), set()).update(v)

    # ---------------------------------------------------------------------------------- primitives
    def pair_ids(self, u: int, i: int) -> set[str]:
        """Requests deleting the pair (u, i): its interaction request, u's user request, i's item request."""
        return self.pairs.get((u, i), set()) | self.users.get(u, set()) | self.items.get(i, set())

    def _masks(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mu = np.isin(users, self._u) & (users >= 0)
        mi = np.isin(items, self._i) & (items >= 0)
        mp = np.isin(users * _SHIFT + items, self._p) & (users >= 0) & (items >= 0)
        return mu, mi, mp

    def row_mask(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Which rows (user, item) a request deletes; -1 marks a missing cell."""
        mu, mi, mp = self._masks(np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64))
        return mu | mi | mp

    def rows(self, users: np.ndarray, items: np.ndarray) -> Hit | None:
        """Rows (user, item) a request deletes, as a hit; -1 marks a missing cell (a user-only or item-only
        table)."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        mu, mi, mp = self._masks(users, items)
        mask = mu | mi | mp
        if not mask.any():
            return None
        ids: set[str] = set()
        for u in np.unique(users[mu]):
            ids |= self.users[int(u)]
        for i in np.unique(items[mi]):
            ids |= self.items[int(i)]
        for u, i in {(int(a), int(b)) for a, b in zip(users[mp], items[mp], strict=True)}:
            ids |= self.pairs[(u, i)]
        return Hit("row", frozenset(ids), int(mask.sum()))

    # ----------------------------------------------------------------------------------------- text
    def scan_text(self, text: str, with_fields: bool = True) -> list[Hit]:
        """Hex hashes, parenthesised pairs and user / item fields in free text (module docstring)."""
        hits: list[Hit] = []
        if self.hashes:
            ids: set[str] = set()
            n = 0
            for m in _HEX.finditer(text):
                found = self.hashes.get(m.group(0).lower())
                if found:
                    ids |= found
                    n += 1
            if n:
                hits.append(Hit("hash", frozenset(ids), n))
        if self.empty or not with_fields:
            return hits
        ids, n = set(), 0
        for m in _PAREN.finditer(text):
            found = self.pair_ids(int(m.group(1)), int(m.group(2)))
            if found:
                ids |= found
                n += 1
        if n:
            hits.append(Hit("pair", frozenset(ids), n))
        ufields = [(m.start(), int(m.group(1))) for m in _UFIELD.finditer(text)]
        ifields = [(m.start(), int(m.group(1))) for m in _IFIELD.finditer(text)]
        ids, n = set(), 0
        for pos, u in ufields:
            if u in self.users:
                ids |= self.users[u]
                n += 1
            for pos_i, i in ifields:
                if abs(pos_i - pos) <= _PAIR_WINDOW and (u, i) in self.pairs:
                    ids |= self.pairs[(u, i)]
                    n += 1
        for _, i in ifields:
            if i in self.items:
                ids |= self.items[i]
                n += 1
        if n:
            hits.append(Hit("id-field", frozenset(ids), n))
        return hits

    # ----------------------------------------------------------------------------------------- json
    def scan_json(self, doc: Any) -> list[Hit]:
        """Structured JSON: user / item fields (also lists of ids), pairs of neighbouring fields, lists of
        pairs under a key naming pairs, hash fields, and the text rules on every string value."""
        acc: dict[str, tuple[set[str], int]] = {}

        def add(kind: str, ids: set[str], n: int = 1) -> None:
            if ids:
                old = acc.get(kind, (set(), 0))
                acc[kind] = (old[0] | ids, old[1] + n)

        def as_int(v: Any) -> int | None:
            if isinstance(v, bool):
                return None
            if isinstance(v, int):
                return v
            if isinstance(v, str) and v.isdigit() and len(v) <= 12:
                return int(v)
            return None

        def ints(v: Any) -> list[int]:
            vals = v if isinstance(v, list) else [v]
            return [x for x in (as_int(e) for e in vals) if x is not None]

        def walk(node: Any, key: str = "") -> None:
            if isinstance(node, dict):
                lower = {str(k).lower(): v for k, v in node.items()}
                us = [u for k, v in lower.items() if k in USER_KEYS for u in ints(v)]
                its = [i for k, v in lower.items() if k in ITEM_KEYS for i in ints(v)]
                for u in us:
                    add("id-field", self.users.get(u, set()))
                for i in its:
                    add("id-field", self.items.get(i, set()))
                for u in us:
                    for i in its:
                        add("pair", self.pairs.get((u, i), set()))
                for k, v in lower.items():  # a candidate hash is reported as "hash" by the text rules
                    if (
                        k in HASH_FIELDS
                        and isinstance(v, str)
                        and _HEX.fullmatch(v.strip())
                        and v.strip().lower() not in self.hashes
                    ):
                        add("hash-field", {"*"})
                for k, v in node.items():
                    walk(v, str(k).lower())
            elif isinstance(node, list):
                if "pair" in key and node and all(isinstance(e, list) and len(e) == 2 for e in node):
                    for e in node:
                        u, i = as_int(e[0]), as_int(e[1])
                        if u is not None and i is not None:
                            add("pair", self.pair_ids(u, i))
                    return
                if len(node) == 2 and all(as_int(e) is not None for e in node):
                    add("pair", self.pairs.get((as_int(node[0]), as_int(node[1])), set()))  # type: ignore[arg-type]
                    return
                for e in node:
                    walk(e, key)
            elif isinstance(node, str) and node:
                for h in self.scan_text(node):
                    add(h.kind, set(h.request_ids), h.count)

        walk(doc)
        return [
            Hit(kind, frozenset(ids - {"*"}) if ids - {"*"} else frozenset(), n)
            for kind, (ids, n) in acc.items()
        ]

    # ---------------------------------------------------------------------------------------- table
    def scan_table(self, text: str) -> list[Hit] | None:
        """A TSV / CSV whose header names a user and / or item id column: the rows a request deletes.
        None when ``text`` is not such a table."""
        first = text.lstrip("\ufeff").split("\n", 1)[0].strip("\r")
        sep = "\t" if "\t" in first else "," if "," in first else None
        if sep is None:
            return None
        cols = [c.strip().strip('"').lower() for c in first.split(sep)]
        ucol = next((j for j, c in enumerate(cols) if c in USER_COLS), None)
        icol = next((j for j, c in enumerate(cols) if c in ITEM_COLS), None)
        if ucol is None and icol is None:
            return None
        import pandas as pd

        try:
            df = pd.read_csv(
                io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, on_bad_lines="skip"
            )
        except Exception:  # not a parseable table after all: the caller falls back to the text rules
            return None

        def column(j: int | None) -> np.ndarray:
            if j is None or j >= df.shape[1]:
                return np.full(len(df), -1, dtype=np.int64)
            vals = pd.to_numeric(df.iloc[:, j].str.strip(), errors="coerce")
            return vals.fillna(-1).astype(np.int64).to_numpy()

        hit = self.rows(column(ucol), column(icol))
        return [hit] if hit else []

    # ----------------------------------------------------------------------------------- checkpoint
    def scan_checkpoint(self, data: bytes) -> list[Hit] | None:
        """Integer tensors of shape (2, n) (``forget_pairs``) with a deleted column, and the text rules
        on strings inside; None when ``data`` is not a checkpoint ``torch.load(weights_only=True)``
        accepts."""
        import torch

        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception:
            return None
        hits: list[Hit] = []
        texts: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, torch.Tensor):
                if (
                    node.ndim == 2
                    and node.shape[0] == 2
                    and node.shape[1] > 0
                    and not node.dtype.is_floating_point
                    and not node.dtype.is_complex
                    and node.dtype != torch.bool
                ):
                    arr = node.detach().cpu().numpy().astype(np.int64)
                    hit = self.rows(arr[0], arr[1])
                    if hit:
                        hits.append(Hit("checkpoint-pairs", hit.request_ids, hit.count))
            elif isinstance(node, dict):
                for k, v in node.items():
                    if isinstance(k, str):
                        texts.append(k)
                    walk(v)
            elif isinstance(node, list | tuple):
                for v in node:
                    walk(v)
            elif isinstance(node, str):
                texts.append(node)

        walk(payload)
        if texts:
            hits += self.scan_text("\n".join(texts))
        return hits

    # ------------------------------------------------------------------------------------- dispatch
    def scan_bytes(self, data: bytes, name: str = "") -> tuple[list[Hit], str]:
        """Every rule that applies to a blob named ``name`` (a path or a DVC relpath; may be empty).
        Returns (hits, how) with ``how`` one of table, json, text, checkpoint, skipped:<why>."""
        lower = name.lower()
        if lower.endswith(SKIP_SUFFIXES) or data.startswith(_NUMPY_MAGIC):
            return [], "skipped:binary-features"
        if lower.endswith(CHECKPOINT_SUFFIXES) or data.startswith(_ZIP_MAGIC):
            hits = self.scan_checkpoint(data)
            if hits is not None:
                return hits, "checkpoint"
            if data.startswith(_ZIP_MAGIC) or lower.endswith(CHECKPOINT_SUFFIXES):
                return [], "skipped:unreadable-binary"
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            return [], "skipped:binary"
        if "\x00" in text[:4096]:
            return [], "skipped:binary"
        hashes = self.scan_text(text, with_fields=False)
        table = self.scan_table(text) if not lower.endswith((".json", ".yaml", ".yml", ".log")) else None
        if table is not None:
            return _merge(hashes + table), "table"
        stripped = text.lstrip()
        if stripped[:1] in ("{", "["):
            try:
                doc = json.loads(text)
            except ValueError:
                doc = None
            if doc is not None:
                return _merge(self.scan_json(doc)), "json"
        if stripped[:1] == "{" and "\n" in stripped:  # JSON lines
            docs = []
            for line in text.splitlines():
                try:
                    docs.append(json.loads(line))
                except ValueError:
                    docs = []
                    break
            if docs:
                return _merge([h for d in docs for h in self.scan_json(d)]), "json"
        return _merge(self.scan_text(text)), "text"


def _merge(hits: Iterable[Hit]) -> list[Hit]:
    acc: dict[str, tuple[set[str], int]] = {}
    for h in hits:
        ids, n = acc.get(h.kind, (set(), 0))
        acc[h.kind] = (ids | set(h.request_ids), n + h.count)
    return [Hit(k, frozenset(ids), n) for k, (ids, n) in acc.items()]


# ------------------------------------------------------------------------------------------------- S3
@dataclass(frozen=True)
class S3Version:
    """One object version (or delete marker) of an S3 bucket."""

    bucket: str
    key: str
    version_id: str
    is_latest: bool
    is_marker: bool
    size: int
    last_modified: float  # POSIX seconds

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.key}?versionId={self.version_id}"


def parse_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix without a leading slash)."""
    if not uri.startswith("s3://"):
        raise AuditError(f"{uri!r}: expected an s3://bucket/prefix URI")
    bucket, _, prefix = uri[5:].partition("/")
    if not bucket:
        raise AuditError(f"{uri!r}: no bucket name")
    return bucket, prefix.strip("/")


def s3_client(
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> Any:
    """A boto3 S3 client; the endpoint defaults to ``$MLFLOW_S3_ENDPOINT_URL`` / ``$AWS_ENDPOINT_URL``,
    credentials to the environment (never written anywhere)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url
        or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
        or os.environ.get("AWS_ENDPOINT_URL")
        or None,
        region_name=region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        aws_access_key_id=access_key_id or None,
        aws_secret_access_key=secret_access_key or None,
    )


def list_versions(client: Any, bucket: str, prefix: str) -> list[S3Version]:
    """Every object version and delete marker under ``prefix`` (an unversioned bucket answers one
    version per object, id ``null``)."""
    out: list[S3Version] = []
    pages = client.get_paginator("list_object_versions").paginate(
        Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""
    )
    for page in pages:
        for v in page.get("Versions", []):
            out.append(
                S3Version(
                    bucket,
                    v["Key"],
                    str(v.get("VersionId") or "null"),
                    bool(v.get("IsLatest")),
                    False,
                    int(v.get("Size") or 0),
                    v["LastModified"].timestamp(),
                )
            )
        for m in page.get("DeleteMarkers", []):
            out.append(
                S3Version(
                    bucket,
                    m["Key"],
                    str(m.get("VersionId") or "null"),
                    bool(m.get("IsLatest")),
                    True,
                    0,
                    m["LastModified"].timestamp(),
                )
            )
    return out


def read_local(path: Path, limit: int = MAX_BYTES) -> bytes | None:
    """The bytes of a file; None when it is larger than ``limit`` or is a numpy matrix (sniffed)."""
    size = path.stat().st_size
    if size > limit:
        return None
    with open(path, "rb") as fh:
        head = fh.read(8)
        if head.startswith(_NUMPY_MAGIC):
            return None
        return head + fh.read()


def read_version(client: Any, v: S3Version, limit: int = MAX_BYTES) -> bytes | None:
    """The bytes of one object version; None when it is larger than ``limit`` or is a numpy matrix
    (sniffed with a ranged read first when large)."""
    if v.is_marker:
        return None
    args = {"Bucket": v.bucket, "Key": v.key}
    if v.version_id != "null":
        args["VersionId"] = v.version_id
    if v.size > SNIFF_OVER:
        head = client.get_object(**args, Range="bytes=0-7")["Body"].read()
        if head.startswith(_NUMPY_MAGIC) or v.size > limit:
            return None
    return client.get_object(**args)["Body"].read()


def delete_versions(client: Any, versions: Sequence[S3Version]) -> int:
    """Delete these object versions and delete markers (by VersionId: permanent, also on a versioned
    bucket); returns how many. Raises naming the first key S3 refused."""
    n = 0
    by_bucket: dict[str, list[S3Version]] = {}
    for v in versions:
        by_bucket.setdefault(v.bucket, []).append(v)
    for bucket, vs in by_bucket.items():
        for start in range(0, len(vs), 1000):
            chunk = vs[start : start + 1000]
            objs = [{"Key": v.key, "VersionId": v.version_id} for v in chunk]
            resp = client.delete_objects(Bucket=bucket, Delete={"Objects": objs, "Quiet": True})
            errors = resp.get("Errors") or []
            if errors:
                e = errors[0]
                raise AuditError(
                    f"s3://{bucket}/{e.get('Key')}?versionId={e.get('VersionId')}: delete refused "
                    f"({e.get('Code')}: {e.get('Message')}); {len(errors)} of {len(objs)} failed"
                )
            n += len(objs)
    return n


# ------------------------------------------------------------------------------------------ DVC stores
@dataclass
class DvcRemote:
    """The default DVC remote: its name, URL and (for S3) a client built from DVC's config."""

    name: str
    url: str
    client: Any = None
    bucket: str = ""
    prefix: str = ""
    path: Path | None = None

    @property
    def files_prefix(self) -> str:
        return f"{self.prefix}/files/md5".lstrip("/")

    def key(self, oid: str) -> str:
        return f"{self.files_prefix}/{oid[:2]}/{oid[2:]}"


@contextlib.contextmanager
def dvc_repo(repo: Path) -> Iterator[Any]:
    """An in-process ``dvc.repo.Repo``; DVC's console hints go to the debug log."""
    import logging

    from dvc.repo import Repo

    buf, dvc_log = io.StringIO(), logging.getLogger("dvc")
    level = dvc_log.level
    dvc_log.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(buf), Repo(str(repo)) as r:
            yield r
    finally:
        dvc_log.setLevel(level)
        if buf.getvalue().strip():
            LOG.debug("dvc: %s", buf.getvalue().strip())


def dvc_cache_dir(repo: Path) -> Path:
    """``.dvc/cache/files/md5`` (or the configured cache), where DVC 3 keeps objects by md5."""
    with dvc_repo(repo) as r:
        return Path(r.cache.local.path)


def dvc_default_remote(repo: Path) -> DvcRemote | None:
    """The default remote with credentials from DVC's config (``--local`` included) or the environment;
    None when no default remote is configured. S3 and local-folder remotes are supported."""
    with dvc_repo(repo) as r:
        name = r.config["core"].get("remote")
        if not name:
            return None
        conf = dict(r.config["remote"].get(name) or {})
    url = str(conf.get("url") or "")
    if url.startswith("s3://"):
        bucket, prefix = parse_s3(url)
        client = s3_client(
            conf.get("endpointurl"),
            conf.get("region"),
            conf.get("access_key_id"),
            conf.get("secret_access_key"),
        )
        return DvcRemote(name, url, client, bucket, prefix)
    if "://" in url and not url.startswith("file://"):
        raise AuditError(f"DVC remote '{name}' ({url}): only s3:// and local-folder remotes are supported")
    path = Path(url.removeprefix("file://"))
    if not path.is_absolute():
        path = (repo / ".dvc" / path).resolve()
    return DvcRemote(name, url, path=path)


def read_dir_listing(data: bytes) -> list[dict[str, str]] | None:
    """A DVC ``.dir`` object: ``[{"md5", "relpath"}, ...]``; None when ``data`` is not one."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if isinstance(doc, list) and all(isinstance(e, dict) and "md5" in e and "relpath" in e for e in doc):
        return [{"md5": str(e["md5"]), "relpath": str(e["relpath"])} for e in doc]
    return None


def cache_objects(cache: Path) -> dict[str, Path]:
    """Every object of the cache: md5 (``<md5>`` or ``<md5>.dir``) → path."""
    out: dict[str, Path] = {}
    if not cache.is_dir():
        return out
    for sub in sorted(cache.iterdir()):
        if sub.is_dir() and len(sub.name) == 2:
            for f in sub.iterdir():
                if f.is_file() and not f.name.startswith("."):
                    out[sub.name + f.name] = f
    return out


def remote_objects(remote: DvcRemote) -> dict[str, list[S3Version]]:
    """Every object of the remote: md5 → its versions and delete markers (a local remote: one pseudo
    version per file, id ``file``)."""
    out: dict[str, list[S3Version]] = {}
    if remote.client is not None:
        for v in list_versions(remote.client, remote.bucket, remote.files_prefix):
            rest = v.key[len(remote.files_prefix) :].strip("/")
            if "/" in rest:
                a, b = rest.split("/", 1)
                out.setdefault(a + b, []).append(v)
        return out
    assert remote.path is not None
    for oid, p in cache_objects(remote.path / "files" / "md5").items():
        st = p.stat()
        out[oid] = [S3Version("", str(p), "file", True, False, st.st_size, st.st_mtime)]
    return out


def read_remote(remote: DvcRemote, v: S3Version, limit: int = MAX_BYTES) -> bytes | None:
    """The bytes of one remote object version (None: too large, numpy, or a delete marker)."""
    if v.version_id == "file":
        p = Path(v.key)
        if p.stat().st_size > limit:
            return None
        return p.read_bytes()
    return read_version(remote.client, v, limit)


def relpaths_from_listings(listings: Iterable[list[dict[str, str]]]) -> dict[str, str]:
    """md5 → a relpath that names it (for readable locations and for choosing a parser)."""
    out: dict[str, str] = {}
    for listing in listings:
        for e in listing:
            out.setdefault(e["md5"], e["relpath"])
    return out


# ------------------------------------------------------------------------------------------- scanner
class _Scanner:
    def __init__(self, matcher: TraceMatcher, report: AuditReport) -> None:
        self.m = matcher
        self.report = report
        self.seen: set[Path] = set()

    def count(self, store: str, how: str) -> None:
        bucket = self.report.skipped if how.startswith("skipped") else self.report.scanned
        bucket[store] = bucket.get(store, 0) + 1

    def blob(self, location: str, store: str, data: bytes | None, name: str = "", detail: str = "") -> None:
        if data is None:
            self.count(store, "skipped")
            return
        hits, how = self.m.scan_bytes(data, name or location)
        self.count(store, how)
        for h in hits:
            self.add(location, store, h, detail)

    def add(self, location: str, store: str, hit: Hit, detail: str = "") -> None:
        more = {
            "hash-field": "unsalted forget-set hash field (reversible by enumeration of a small id space)",
            "hash": "unsalted sha256 of deleted keys (reversible)",
            "checkpoint-pairs": "integer (2, n) tensor with deleted pairs",
            "row": "table rows of deleted users / items / pairs",
        }.get(hit.kind, "")
        text = "; ".join(x for x in (more, detail) if x)
        self.report.findings.append(
            Finding(location, store, hit.kind, tuple(sorted(hit.request_ids)), hit.count, text)
        )

    def text_field(self, location: str, store: str, text: str) -> None:
        self.count(store, "text")
        for h in _merge(self.m.scan_text(text)):
            self.add(location, store, h)

    def tree(self, root: Path, store: str, store_of: Any = None) -> None:
        """Every file under ``root`` (a file is scanned once per audit, under its first store)."""
        root = Path(root)
        if not root.exists():
            return
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            rp = p.resolve()
            if rp in self.seen:
                continue
            self.seen.add(rp)
            where = store_of(p) if store_of else store
            if p.name.lower().endswith(SKIP_SUFFIXES):
                self.count(where, "skipped")
                continue
            try:
                data = read_local(p)
            except OSError as exc:
                self.report.errors.append(f"{p}: unreadable ({exc})")
                continue
            if data is None:
                self.count(where, "skipped")
                continue
            self.blob(str(p), where, data, p.name)

    def s3(self, uri: str, store: str, client: Any = None) -> None:
        bucket, prefix = parse_s3(uri)
        client = client or s3_client()
        try:
            versions = list_versions(client, bucket, prefix)
        except Exception as exc:
            self.report.errors.append(f"{uri}: cannot list object versions ({type(exc).__name__}: {exc})")
            return
        for v in versions:
            if v.is_marker:
                continue
            try:
                data = read_version(client, v)
            except Exception as exc:
                self.report.errors.append(f"{v.location}: unreadable ({type(exc).__name__}: {exc})")
                continue
            self.blob(v.location, store, data, v.key, "" if v.is_latest else "a non-current object version")


# --------------------------------------------------------------------------------------------- audit
def dataset_frames(
    data_dir: Path,
) -> tuple[list[int], list[tuple[np.ndarray, np.ndarray, np.ndarray | None, int]]]:
    """n_items of each dataset under ``data/`` (dataset.yaml ``id_space`` or ``stats``) and its rows."""
    import pandas as pd

    n_items: list[int] = []
    frames = []
    if not data_dir.is_dir():
        return n_items, frames
    for manifest in sorted(data_dir.glob("*/dataset.yaml")):
        try:
            raw = yaml.safe_load(manifest.read_text()) or {}
            inter = manifest.parent / str(raw.get("interactions", ""))
            n = (raw.get("id_space") or {}).get("n_items") or (raw.get("stats") or {}).get("n_items")
            df = pd.read_csv(inter, sep="\t", usecols=["userID", "itemID", "x_label"], dtype=np.int64)
        except Exception as exc:  # a broken dataset is the validator's business: no candidates from it
            LOG.debug("audit: no hash candidates from %s (%s)", manifest, exc)
            continue
        n = int(n) if n else int(df["itemID"].max()) + 1 if len(df) else 0
        n_items.append(n)
        frames.append((df["userID"].to_numpy(), df["itemID"].to_numpy(), df["x_label"].to_numpy(), n))
    return n_items, frames


def _existing_key() -> bytes | None:
    """The commitment key if one exists here (never created: see
    :func:`tru.forget.commitment.existing_commitment_key`)."""
    from tru.forget.commitment import existing_commitment_key

    return existing_commitment_key()


def request_statuses(repo: Path, requests: Sequence[DeletionRequest]) -> list[RequestStatus]:
    """Each audited request against tru's ledgers at the working tree (:class:`RequestStatus`)."""
    from tru.forget.erased import ERASED_PATH, read_erased
    from tru.mlops.versioning import REQUESTS_PATH

    ledger = (
        {r.request_id: r for r in read_erased(repo / ERASED_PATH)} if (repo / ERASED_PATH).is_file() else {}
    )
    manifest = repo / REQUESTS_PATH
    pending = {r.request_id for r in read_requests(manifest)} if manifest.is_file() else set()
    key = _existing_key() if ledger else None
    out = []
    for req in requests:
        row = ledger.get(req.request_id)
        if row is not None:
            status = (
                "erased-unverified"
                if key is None
                else "erased"
                if row.matches(req, key)
                else "erased-mismatch"
            )
        else:
            status = "pending" if req.request_id in pending else "unknown"
        out.append(RequestStatus(req.request_id, req.kind, status))
    return out


def _unique(requests: Sequence[DeletionRequest]) -> list[DeletionRequest]:
    seen: dict[str, DeletionRequest] = {}
    for r in requests:
        seen.setdefault(r.request_id, r)
    return list(seen.values())


def audit(
    repo: Path | str,
    requests_csv: Path | str,
    *,
    tracking_uri: str | None = None,
    pipeline_roots: Sequence[str] = (),
    scan: Sequence[str] = (),
    erased_only: bool = False,
    experiments: Sequence[str] | None = None,
    model_names: Sequence[str] | None = None,
    mlflow: bool = True,
) -> AuditReport:
    """Scan every store (module docstring) for traces of the requests in ``requests_csv`` (the auditor's
    copy of the manifest) and return an :class:`AuditReport`.

    ``erased_only``: audit only the requests tru's ledger says are erased (pending ones are expected to
    still have their rows). ``pipeline_roots`` / ``scan``: more folders or ``s3://`` prefixes (pipeline
    roots; log files, MLflow artifact roots). ``experiments`` / ``model_names``: limit the MLflow scan
    (default: every experiment and registered model of the tracking store); ``mlflow=False`` skips it.
    A store that cannot be read is an error in the report (not clean), never a silent pass."""
    from tru.mlops.versioning import DATA_DIR, check_repo

    t0 = time.perf_counter()
    repo = check_repo(repo)
    try:
        all_requests = _unique(read_requests(Path(requests_csv)))
    except DataError as exc:
        raise AuditError(f"--requests: {exc}") from exc
    statuses = request_statuses(repo, all_requests)
    status_of = {s.request_id: s.status for s in statuses}
    scope = [r for r in all_requests if not erased_only or status_of[r.request_id].startswith("erased")]
    report = AuditReport(str(repo), statuses, [r.request_id for r in scope])
    for s in statuses:
        if s.status == "erased-mismatch" and s.request_id in report.scope:
            report.findings.append(
                Finding(
                    str(repo / "data/deletions/erased.csv"),
                    "tru",
                    "ledger-mismatch",
                    (s.request_id,),
                    1,
                    "the ledger's commitment does not match the auditor's copy of this request",
                )
            )
    n_items, frames = dataset_frames(repo / DATA_DIR)
    matcher = TraceMatcher(scope, hash_candidates(scope, n_items, frames))
    report.hash_candidates = len(matcher.hashes)
    if not scope:
        report.seconds = time.perf_counter() - t0
        return report
    sc = _Scanner(matcher, report)
    requests_path = Path(requests_csv).resolve()
    sc.seen.add(requests_path)  # the auditor's own copy is not a trace

    LOG.info("audit: %d request(s); scanning the dataset files", len(scope))
    sc.tree(repo / DATA_DIR, "dataset")
    _scan_dvc(repo, sc)

    tru_dir = repo / ".tru"
    roots = [tru_dir / "kfp", tru_dir / "runs"]
    s3_roots = [p for p in pipeline_roots if str(p).startswith("s3://")]
    roots += [Path(p) for p in pipeline_roots if not str(p).startswith("s3://")]
    LOG.info("audit: scanning pipeline roots and .tru/")
    for root in roots:
        sc.tree(root, "pipeline")
    for uri in s3_roots:
        sc.s3(uri, "pipeline")
    sc.tree(tru_dir, "tru")
    for extra in scan:
        if str(extra).startswith("s3://"):
            sc.s3(str(extra), "extra")
        else:
            sc.tree(Path(extra), "extra")
    if mlflow:
        LOG.info("audit: scanning MLflow runs, artifacts and the registry")
        try:
            _scan_mlflow(sc, tracking_uri, experiments, model_names)
        except Exception as exc:
            report.errors.append(f"MLflow ({tracking_uri or 'default store'}): {type(exc).__name__}: {exc}")
    report.seconds = time.perf_counter() - t0
    LOG.info(
        "audit: %s, %d finding(s) in %.1f s",
        "clean" if report.clean else "traces found",
        len(report.findings),
        report.seconds,
    )
    return report


def _scan_dvc(repo: Path, sc: _Scanner) -> None:
    """Every object of the DVC cache and every object version of the default remote."""
    LOG.info("audit: scanning the DVC cache and remote")
    try:
        cache = dvc_cache_dir(repo)
        remote = dvc_default_remote(repo)
    except Exception as exc:
        sc.report.errors.append(
            f"DVC: cannot read the repository's configuration ({type(exc).__name__}: {exc})"
        )
        return
    local = cache_objects(cache)
    listings = [
        lst
        for oid, p in local.items()
        if oid.endswith(".dir")
        for lst in [read_dir_listing(p.read_bytes())]
        if lst
    ]
    remote_objs: dict[str, list[S3Version]] = {}
    if remote is not None:
        try:
            remote_objs = remote_objects(remote)
        except Exception as exc:
            sc.report.errors.append(
                f"DVC remote {remote.url}: cannot list objects ({type(exc).__name__}: {exc})"
            )
        for oid, versions in remote_objs.items():
            if oid.endswith(".dir") and oid not in local:
                v = next((v for v in versions if not v.is_marker), None)
                data = read_remote(remote, v) if v else None
                lst = read_dir_listing(data) if data else None
                if lst:
                    listings.append(lst)
    names = relpaths_from_listings(listings)
    for oid, p in local.items():
        rel = names.get(oid, "")
        sc.seen.add(p.resolve())
        if rel.lower().endswith(SKIP_SUFFIXES):
            sc.count("dvc-cache", "skipped")
            continue
        sc.blob(f"{p}" + (f" ({rel})" if rel else ""), "dvc-cache", read_local(p), rel or p.name)
    if remote is None:
        return
    for oid, versions in remote_objs.items():
        rel = names.get(oid, "")
        for v in versions:
            if v.is_marker:
                continue
            if rel.lower().endswith(SKIP_SUFFIXES):
                sc.count("dvc-remote", "skipped")
                continue
            try:
                data = read_remote(remote, v)
            except Exception as exc:
                sc.report.errors.append(f"{v.location}: unreadable ({type(exc).__name__}: {exc})")
                continue
            where = v.location if v.version_id != "file" else v.key
            detail = (
                ""
                if v.is_latest
                else "a non-current object version (behind a newer version or delete marker)"
            )
            sc.blob(where + (f" ({rel})" if rel else ""), "dvc-remote", data, rel or v.key, detail)


def _scan_mlflow(
    sc: _Scanner,
    tracking_uri: str | None,
    experiments: Sequence[str] | None,
    model_names: Sequence[str] | None,
) -> None:
    """Runs (active and soft-deleted): params, tags, metric names and artifact files; the registry's
    model and version tags and descriptions."""
    from tru.mlops import tracking

    uri = tracking.configure(tracking_uri)
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exps = []
    token = None
    while True:
        page = client.search_experiments(view_type=ViewType.ALL, page_token=token)
        exps += list(page)
        token = page.token
        if not token:
            break
    if experiments is not None:
        exps = [e for e in exps if e.name in set(experiments)]
    tmp_root = Path(tempfile.mkdtemp(prefix="tru-audit-", dir=os.environ.get("TMPDIR")))
    try:
        for exp in exps:
            token = None
            while True:
                runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, page_token=token)
                for run in runs:
                    _scan_run(sc, client, run, tmp_root)
                token = runs.token
                if not token:
                    break
        names = (
            list(model_names)
            if model_names is not None
            else [m.name for m in client.search_registered_models(max_results=1000)]
        )
        for name in names:
            try:
                model = client.get_registered_model(name)
            except Exception:
                continue
            for k, v in (model.tags or {}).items():
                sc.text_field(f"mlflow:registry/{name}#tags.{k}", "mlflow-registry", f"{k}: {v}")
            if model.description:
                sc.text_field(f"mlflow:registry/{name}#description", "mlflow-registry", model.description)
            for mv in client.search_model_versions(f"name='{name}'"):
                for k, v in (mv.tags or {}).items():
                    sc.text_field(
                        f"mlflow:registry/{name}/{mv.version}#tags.{k}", "mlflow-registry", f"{k}: {v}"
                    )
                if mv.description:
                    sc.text_field(
                        f"mlflow:registry/{name}/{mv.version}#description", "mlflow-registry", mv.description
                    )
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def _scan_run(sc: _Scanner, client: Any, run: Any, tmp_root: Path) -> None:
    rid = run.info.run_id
    deleted = run.info.lifecycle_stage == "deleted"
    where = f"mlflow:run/{rid}" + (" (soft-deleted)" if deleted else "")
    for k, v in run.data.params.items():
        sc.text_field(f"{where}#params.{k}", "mlflow-run", f"{k}: {v}")
    for k, v in run.data.tags.items():
        sc.text_field(f"{where}#tags.{k}", "mlflow-run", f"{k}: {v}")
    for k in run.data.metrics:
        sc.text_field(f"{where}#metrics.{k}", "mlflow-run", k)
    try:
        files = _list_artifacts(client, rid)
    except Exception as exc:
        sc.report.errors.append(
            f"{where}: cannot list its artifacts ({type(exc).__name__}: {str(exc)[:300]})"
        )
        return
    dest = tmp_root / rid
    try:
        for rel, size in files:
            if rel.lower().endswith(SKIP_SUFFIXES) or (size or 0) > MAX_BYTES:
                sc.count("mlflow-artifact", "skipped")
                continue
            try:
                local = Path(client.download_artifacts(rid, rel, str(dest)))
            except Exception as exc:
                msg = f"{type(exc).__name__}: {str(exc)[:300]}"
                sc.report.errors.append(f"{where}/artifacts/{rel}: cannot download it ({msg})")
                continue
            sc.blob(f"{where}/artifacts/{rel}", "mlflow-artifact", local.read_bytes(), rel)
            local.unlink(missing_ok=True)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def _list_artifacts(client: Any, run_id: str, path: str | None = None) -> list[tuple[str, int | None]]:
    """Every artifact file of a run: (path, size), recursively."""
    out: list[tuple[str, int | None]] = []
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            out += _list_artifacts(client, run_id, info.path)
        else:
            out.append((info.path, info.file_size))
    return out
