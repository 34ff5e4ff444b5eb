"""Writing a certificate folder atomically, and making the certificate JSON-safe."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


class CertifyError(ValueError):
    """Bad use of certification (e.g. the output folder exists): the message says what to change."""


def clean_json(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars → Python, NaN / ±inf → null, tuples → lists, paths → str."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean_json(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an output path that is a file, that :func:`tru.outputs.check_output_dir` refuses
    (the working directory or a parent, an input folder of the running command, ...), or a non-empty
    folder unless ``overwrite`` and tru wrote it (its ``.tru-output`` marker)."""
    from tru.outputs import OutputError, check_output_dir, current_invocation

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CertifyError(f"{out}: exists and is not a folder; give a new folder for the certificate")
    inv = current_invocation()
    try:
        check_output_dir(out, inv.inputs, overwrite, inv.command)
    except OutputError as exc:
        raise CertifyError(str(exc)) from None


def write_outputs(out: Path, files: dict[str, bytes], overwrite: bool = False) -> Path:
    """Write ``files`` (name → bytes) into a temporary folder next to ``out``, then rename it to ``out``.
    A failure leaves no partial ``out``, no temporary folder, and an overwritten ``out`` restored."""
    from tru.outputs import MARKER, current_invocation, marker_bytes

    given = out = Path(out)
    check_out(out, overwrite)
    command = current_invocation().command
    files = {**files, MARKER: marker_bytes("tru certify" if command == "tru" else command)}
    out = Path(os.path.realpath(out.expanduser()))  # a symlinked out: replace the folder it names
    parent_made = not out.parent.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old: Path | None = None
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if out.exists():
            old = out.with_name(f"{tmp.name}.old")
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            old.rename(out)
        if parent_made and out.parent.is_dir() and not any(out.parent.iterdir()):
            out.parent.rmdir()
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return given
