"""Small shared helpers: seeding, devices, logging, provenance."""

from __future__ import annotations

import json
import logging
import os
import random
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

LOG = logging.getLogger("tru")


_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_USERINFO_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)@")
_SECRET_KEY_RE = re.compile(
    r"(token|secret|passw(or)?d|pwd|signature|credential|api[_-]?key|access[_-]?key|auth|^sig$|^key$)",
    re.IGNORECASE,
)
REDACTED = "***"


def redact_uri(uri: str) -> str:
    """``uri`` with its secrets replaced by ``***``: the ``user:password@`` userinfo and the values of
    query parameters that carry credentials (``token=``, ``X-Amz-Signature=``, ``X-Amz-Credential=``,
    ``password=``, ``api_key=``, ``sig=`` ...). Anything else (``s3://bucket/key``,
    ``sqlite:///abs/path.db``, plain paths) is returned unchanged, byte for byte."""
    text = str(uri)
    text = _USERINFO_RE.sub(lambda m: f"{m.group(1)}{REDACTED}@", text, count=1)
    if "?" not in text:
        return text
    head, _, rest = text.partition("?")
    query, hash_, fragment = rest.partition("#")

    def one(param: str) -> str:
        key, eq, _value = param.partition("=")
        return f"{key}={REDACTED}" if eq and _SECRET_KEY_RE.search(key) else param

    query = "&".join(one(p) for p in query.split("&"))
    return f"{head}?{query}{hash_}{fragment}"


def redact_text(text: str) -> str:
    """Free text (an error message, a log line) with :func:`redact_uri` applied to every URI in it."""

    def one(m: re.Match[str]) -> str:
        uri = m.group(0)
        tail = len(uri) - len(uri.rstrip(").,;:]}"))  # sentence punctuation after the URI stays
        return redact_uri(uri[: len(uri) - tail]) + uri[len(uri) - tail :]

    return _URI_RE.sub(one, str(text))


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(spec: str | None = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU; otherwise the named device."""
    if spec in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{spec}' requested but CUDA is not available")
    return dev


def set_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(int(n))


def git_commit(path: Path | str = ".") -> str:
    """The current git commit of the code (``unknown`` outside a git checkout); ``+dirty`` if modified."""
    here = Path(__file__).resolve().parent
    for cwd in (here, Path(path)):
        try:
            sha = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            return sha + ("+dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            continue
    return "unknown"


def write_json(path: Path, payload: Any) -> None:
    """Atomic JSON write (temporary file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
