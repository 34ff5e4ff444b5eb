"""Keyed commitments to deleted data: what a model, a certificate or a registry tag may say about the
requests it forgot, instead of the requests themselves.

A commitment binds a set of deletion requests (or of deleted pairs) without revealing it:

    commit(S) = "hmac-sha256:" + HMAC-SHA256(K, canonical(S))

with K a secret key of the installation (never stored next to a commitment). An *unsalted* hash of a
small id space is reversible (a one-pair deletion on Last.fm-2K is one of 1,892 × 17,632 keys: found by
enumeration in milliseconds); an HMAC is not without K. Whoever holds K and the request manifest (a
data-protection officer, the erasure audit) can recompute and check a commitment.

The key: ``$TRU_COMMITMENT_KEY`` (hex, ≥ 32 bytes; a Kubernetes secret on the cluster), else the file
``$TRU_COMMITMENT_KEY_FILE``, else ``~/.config/tru/commitment.key`` (created with 32 random bytes and
mode 0600 on first use).

``canonical(requests)`` = the requests' manifest rows (request_id, kind, user_id, item_id), sorted by
request_id, unit-separated and newline-terminated; ``canonical(pairs)`` = the sorted unique int64
keys ``u · n_items + i`` as little-endian bytes, prefixed with ``n_items``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import numpy as np

KEY_ENV = "TRU_COMMITMENT_KEY"
KEY_FILE_ENV = "TRU_COMMITMENT_KEY_FILE"
SCHEME = "hmac-sha256"
MIN_KEY_BYTES = 32


class CommitmentKeyError(ValueError):
    """The commitment key is missing, unreadable or too short."""


def _default_key_file() -> Path:
    return Path(os.environ.get(KEY_FILE_ENV) or Path.home() / ".config" / "tru" / "commitment.key")


def commitment_key() -> bytes:
    """The installation's secret key (module docstring); a new key file is created on first use."""
    text = os.environ.get(KEY_ENV, "").strip()
    if text:
        try:
            key = bytes.fromhex(text)
        except ValueError as exc:
            raise CommitmentKeyError(f"${KEY_ENV}: expected hex text ({exc})") from exc
        if len(key) < MIN_KEY_BYTES:
            raise CommitmentKeyError(f"${KEY_ENV}: {len(key)} bytes; expected at least {MIN_KEY_BYTES}")
        return key
    path = _default_key_file()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(MIN_KEY_BYTES) + "\n")
        try:
            os.link(tmp, path)  # atomic and never replaces a key another process created first
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise CommitmentKeyError(f"{path}: unreadable commitment key ({exc}); expected hex text") from exc
    if len(key) < MIN_KEY_BYTES:
        raise CommitmentKeyError(f"{path}: {len(key)} bytes; expected at least {MIN_KEY_BYTES}")
    return key


def existing_commitment_key() -> bytes | None:
    """The installation's key if one exists (``$TRU_COMMITMENT_KEY`` or the key file), else None; unlike
    :func:`commitment_key` it never creates one (a new random key would make every earlier commitment
    look forged to an audit), and an unreadable or short key is None too."""
    if not os.environ.get(KEY_ENV, "").strip() and not _default_key_file().is_file():
        return None
    try:
        return commitment_key()
    except CommitmentKeyError:
        return None


def _mac(payload: bytes, key: bytes | None) -> str:
    digest = hmac.new(key if key is not None else commitment_key(), payload, hashlib.sha256).hexdigest()
    return f"{SCHEME}:{digest}"


def canonical_requests(rows: Iterable[tuple[str, str, int | None, int | None]]) -> bytes:
    """(request_id, kind, user_id, item_id) rows, sorted by request_id, as bytes (module docstring)."""
    lines = sorted(
        "\x1f".join((rid, kind, "" if u is None else str(int(u)), "" if i is None else str(int(i))))
        for rid, kind, u, i in rows
    )
    return "".join(line + "\n" for line in lines).encode()


def commit_requests(requests: Iterable[object], key: bytes | None = None) -> str:
    """Commitment to a set of deletion requests (objects with request_id, kind, user_id, item_id)."""
    rows = [
        (str(r.request_id), str(r.kind), r.user_id, r.item_id)  # type: ignore[attr-defined]
        for r in requests
    ]
    return _mac(canonical_requests(rows), key)


def commit_set(per_request: dict[str, str], key: bytes | None = None) -> str:
    """Commitment to a set of requests from their per-request commitments (``commit_requests([r])`` each):

        commit_set(S) = HMAC(K, Σ_sorted "request_id:commitment\\n")

    so that the commitment of any subset can be recomputed from a record of per-request commitments,
    also after the requests' rows were erased."""
    payload = "".join(f"{rid}:{c}\n" for rid, c in sorted(per_request.items())).encode()
    return _mac(b"set\n" + payload, key)


def commit_pairs(keys: np.ndarray, n_items: int, key: bytes | None = None) -> str:
    """Commitment to a set of pairs given as int64 keys ``u · n_items + i``."""
    uniq = np.unique(np.asarray(keys, dtype=np.int64)).astype("<i8")
    return _mac(np.int64(n_items).astype("<i8").tobytes() + uniq.tobytes(), key)


def verify(commitment: str, expected: str) -> bool:
    """Constant-time comparison of two commitments."""
    return hmac.compare_digest(str(commitment), str(expected))
