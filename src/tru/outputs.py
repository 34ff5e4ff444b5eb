"""Output folders tru writes (``--out``): one rule set, :func:`check_output_dir`, that every writer calls
(the CLI's atomic folders, certificates, prepared datasets).

* ``out`` (symlinks resolved) must not be the filesystem root, the home folder, the working directory or
  one of its parents, and must neither be, contain nor lie inside an input folder of the command
  (``--data``, ``--model``, ``--original``, ``--unlearned``, ``--retrained``, ``--path``) nor be or
  contain an input file (``--requests``, ``--policy``, ``--config``, ``--sensitivity``);
* a non-empty ``out`` is replaced only with ``overwrite`` and only if tru wrote it: it holds the marker
  file ``.tru-output`` (JSON ``{"written_by", "version", "created_at"}``), or, from an older tru without
  the marker, only tru's output files (a run, sensitivity or certificate folder), or, for ``tru data
  prepare``, a ``dataset.yaml`` whose ``source:`` block says ``tru data prepare`` wrote it (prepared
  folders carry no marker, so that their bytes and DVC hash stay those of the data).

The running command and its inputs (:class:`Invocation`) are set by the CLI (``tru.cli.main``); library
callers outside the CLI see a bare ``tru`` with no inputs."""

from __future__ import annotations

import contextvars
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path


class OutputError(ValueError):
    """An output location that tru refuses to write (the message says what to choose instead)."""


MARKER = ".tru-output"
#: files tru writes into run / sensitivity / certificate folders (a folder of only these is tru's)
TRU_FILE_SUFFIXES = (".pt", ".json", ".png", ".html")
TRU_SIGNATURE_FILES = ("run.json", "sensitivity.json", "certificate.json", "unlearn.json")
#: ``args`` attributes naming input folders / input files of a command
INPUT_DIR_FLAGS = ("data", "model", "original", "unlearned", "retrained", "path", "calibration")
INPUT_FILE_FLAGS = ("requests", "policy", "config", "sensitivity")  # a file flag naming a folder: a folder


@dataclass(frozen=True)
class Invocation:
    """What the running command is (``tru train``) and which paths it reads: set by ``tru.cli.main`` so
    that :func:`atomic_dir` checks and marks its output without every command passing them along."""

    command: str = "tru"
    inputs: tuple[tuple[str, Path, bool], ...] = field(default_factory=tuple)  # (flag, path, is_dir)


_INVOCATION: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar(
    "tru_invocation", default=None
)


@contextmanager
def invoked(inv: Invocation) -> Iterator[Invocation]:
    """Run a block as the CLI command ``inv`` (see :class:`Invocation`)."""
    token = _INVOCATION.set(inv)
    try:
        yield inv
    finally:
        _INVOCATION.reset(token)


def current_invocation() -> Invocation:
    """The running CLI command (see :class:`Invocation`); a bare ``tru`` with no inputs outside the CLI."""
    return _INVOCATION.get() or Invocation()


def _real(path: Path | str) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def _is_relative(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def check_output_location(
    out: Path | str, inputs: Iterable[tuple[str, Path | str, bool]] = (), what: str = "--out"
) -> Path:
    """Refuse an output path (folder or file) that is ``/``, the home folder, the working directory or
    one of its parents, or that is, contains or lies inside an input folder, or is or contains an input
    file; symlinks are resolved first. Returns the resolved path. Raises :class:`OutputError`."""
    real = _real(out)
    cwd = _real(Path.cwd())
    try:
        home: Path | None = _real(Path.home())
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        home = None
    shown = f"{what} {out}" + (f" (= {real})" if str(real) != str(out) else "")
    if real.parent == real:
        raise OutputError(f"{shown}: is the filesystem root; choose a new folder for {what}")
    if real == home:
        raise OutputError(f"{shown}: is your home folder; choose a new folder for {what}")
    if _is_relative(cwd, real):
        where = "the working directory" if real == cwd else "a parent of the working directory"
        raise OutputError(f"{shown}: is {where}; refusing to write there: choose a new folder for {what}")
    for flag, path, is_dir in inputs:
        src = _real(path)
        if real == src:
            raise OutputError(f"{shown}: is the input {flag} {path}; choose a folder outside your inputs")
        if _is_relative(src, real):
            raise OutputError(
                f"{shown}: contains the input {flag} {path}; choose a folder outside your inputs"
            )
        if is_dir and _is_relative(real, src):
            raise OutputError(
                f"{shown}: lies inside the input folder {flag} {path}; choose a folder outside your inputs"
            )
    return real


def _prepared_dataset(folder: Path) -> bool:
    """A dataset folder written by ``tru data prepare``: its ``dataset.yaml`` has a ``source`` mapping
    with a ``kind`` (every source records it), and the folder holds nothing but that manifest and the
    files it names (so replacing it deletes no file of the user's)."""
    import yaml

    try:
        raw = yaml.safe_load((folder / "dataset.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    if not (isinstance(raw, dict) and isinstance(raw.get("source"), dict) and "kind" in raw["source"]):
        return False
    mods = raw.get("modalities")
    named = {"dataset.yaml", str(raw.get("interactions"))}
    if isinstance(mods, dict):
        named |= {str(m.get("file")) if isinstance(m, dict) else str(m) for m in mods.values()}
    return all(p.name in named and p.is_file() and not p.is_symlink() for p in folder.iterdir())


def _legacy_tru_output(folder: Path) -> bool:
    """A run / sensitivity / certificate folder written by a tru older than the marker: only regular
    files with tru's suffixes, and at least one of tru's signature JSON files that parses."""
    entries = list(folder.iterdir())
    if not all(p.is_file() and not p.is_symlink() and p.suffix in TRU_FILE_SUFFIXES for p in entries):
        return False
    for name in TRU_SIGNATURE_FILES:
        try:
            if isinstance(json.loads((folder / name).read_text()), dict):
                return True
        except (OSError, ValueError):
            continue
    return False


def tru_wrote(folder: Path, command: str = "") -> bool:
    """Whether ``folder`` was written by tru (see the module docstring)."""
    marker = folder / MARKER
    if marker.is_file() and not marker.is_symlink():
        try:
            meta = json.loads(marker.read_text())
        except (OSError, ValueError):
            meta = None
        if isinstance(meta, dict) and str(meta.get("written_by", "")).startswith("tru"):
            return True
    if command == "tru data prepare":
        return _prepared_dataset(folder)
    return _legacy_tru_output(folder)


def check_output_dir(
    out: Path | str,
    inputs: Iterable[tuple[str, Path | str, bool]] = (),
    overwrite: bool = False,
    command: str = "",
) -> Path:
    """The checks every writer of an output folder runs before writing (module docstring): the location
    (:func:`check_output_location`), then, for a non-empty folder, ``overwrite`` and tru's marker.
    Returns the resolved folder. Raises :class:`OutputError` naming the folder and what to do instead."""
    real = check_output_location(out, inputs)
    if real.exists() and not real.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; choose a new folder for --out")
    if real.is_dir() and any(real.iterdir()):
        if not overwrite:
            raise OutputError(
                f"{out}: exists and is not empty (pass --overwrite to replace a folder tru wrote)"
            )
        if not tru_wrote(real, command):
            raise OutputError(
                f"{out}: not written by tru (no {MARKER} marker); refusing to replace it: "
                "choose a new --out or remove it yourself"
            )
    return real


def marker_bytes(command: str) -> bytes:
    """The content of the ``.tru-output`` marker for a folder written by ``command``."""
    from tru import __version__

    meta = {
        "written_by": command or "tru",
        "version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return (json.dumps(meta, indent=2) + "\n").encode()


@contextmanager
def atomic_dir(
    out: Path,
    overwrite: bool,
    inputs: Sequence[tuple[str, Path | str, bool]] | None = None,
    command: str | None = None,
) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it (with tru's ``.tru-output`` marker) replaces
    ``out``, on failure it is removed, so ``out`` is never half-written and an existing ``out`` survives
    a failed run. ``out`` is checked first (:func:`check_output_dir`); ``inputs`` and ``command`` default
    to those of the running CLI command."""
    inv = current_invocation()
    inputs = inv.inputs if inputs is None else tuple(inputs)
    command = inv.command if command is None else command
    real = check_output_dir(out, inputs, overwrite, command)
    real.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{real.name}.", dir=real.parent))
    old: Path | None = None
    try:
        yield tmp
        (tmp / MARKER).write_bytes(marker_bytes(command))
        check_output_dir(real, inputs, overwrite, command)  # again: the folder may have changed meanwhile
        if real.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{real.name}.old-", dir=real.parent))
            old.rmdir()
            real.rename(old)
        try:
            tmp.rename(real)
        except BaseException:
            if old is not None:
                old.rename(real)
                old = None
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
