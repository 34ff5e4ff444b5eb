"""``prepare_dataset``: build a dataset folder from one of the sources, atomically.

The source writes into a temporary sibling folder ``.<out>.tmp-<random>``; only when it has finished is
that folder renamed to ``out``. A failure removes the temporary folder, so ``out`` is either absent,
untouched, or complete. A non-empty ``out`` is refused unless ``overwrite=True``, in which case the old
folder is replaced only after the new one is complete.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tru.data.dataset import DataError, DatasetManifest

log = logging.getLogger(__name__)

SOURCES: dict[str, str] = {
    "synthetic": "generated data with planted structure (presets tiny / small / clothing)",
    "lfm2k": "Last.fm-2K from a folder with lfm2k.inter, all-MiniLM-L6-v2.npy, vggish.npy (path=...)",
    "ml100k": "MovieLens-100K, 5-core, fetched from PyPI's recbole==1.2.1 wheel; text + genre modalities",
    "mmrec": "any MMRec dataset folder (<name>.inter + *_feat.npy, or its dataset.yaml) (path=...)",
}


def _is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def prepare_dataset(
    source: str, out: Path | str, path: Path | str | None = None, overwrite: bool = False, **options: Any
) -> DatasetManifest:
    """Build dataset ``source`` into the folder ``out`` and return its manifest.

    ``path`` is the input folder of file-based sources (lfm2k, mmrec; for ml100k an optional local
    recbole wheel); ``options`` go to the source's ``build`` (e.g. ``preset="small", seed=1`` for
    synthetic, ``whisper=True`` for lfm2k, ``cache_dir=...`` for ml100k)."""
    if source not in SOURCES:
        raise DataError(f"unknown dataset source '{source}'; choose one of: {', '.join(SOURCES)}")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another --out")
    if _is_nonempty_dir(out) and not overwrite:
        raise DataError(
            f"{out}: folder is not empty; choose an empty or new --out, or pass overwrite=True "
            "(CLI --overwrite) to replace it"
        )
    build = importlib.import_module(f"tru.data.sources.{source}").build
    try:
        inspect.signature(build).bind(out, path, **options)
    except TypeError as exc:
        accepted = [p for p in inspect.signature(build).parameters if p not in ("out", "path")]
        raise DataError(f"source '{source}': {exc}; its options are {accepted}") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would carry over to the user's data folder
    try:
        manifest: DatasetManifest = build(tmp, None if path is None else Path(path), **options)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "prepared %s dataset '%s' from %s in %s: %s", source, manifest.name, path or "-", out, manifest.stats
    )
    return manifest


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is first renamed aside and removed afterwards."""
    if not out.exists():
        tmp.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old.rmdir()
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
