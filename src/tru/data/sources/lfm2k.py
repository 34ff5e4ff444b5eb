"""Last.fm-2K (HetRec 2011) in MMRec format, from a folder such as ``../shared/data/lfm2k``.

Inputs (row i of every matrix = item i):

* ``lfm2k.inter``: header ``userID itemID rating x_label`` (no timestamp); the given split is kept;
* ``all-MiniLM-L6-v2.npy`` (n_items, 384) float32 → modality ``text``;
* ``vggish.npy`` (n_items, 128) float64 → modality ``audio``, cast to float32;
* ``whisper.npy`` (n_items, 512) float32 → modality ``whisper``, only with ``whisper=True``.

Everything is copied (never linked) into the output folder, which is the user's own data directory.
Without ``path`` the folder is looked for at ``$TRU_LFM2K``, then ``../shared/data/lfm2k`` from the
working directory, then ``shared/data/lfm2k`` beside the project checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

from tru.data.dataset import DataError, DatasetManifest, read_inter, write_dataset
from tru.data.sources import check_inter, inputs_record, load_matrix, require_folder

INTER_FILE = "lfm2k.inter"
TEXT_FILE = "all-MiniLM-L6-v2.npy"
AUDIO_FILE = "vggish.npy"
WHISPER_FILE = "whisper.npy"
EXPECTED_HEADER = ["userID", "itemID", "rating", "x_label"]


def default_path() -> Path | None:
    """The first candidate folder (see the module docstring) that holds ``lfm2k.inter``, else None."""
    candidates = [Path(os.environ["TRU_LFM2K"])] if os.environ.get("TRU_LFM2K") else []
    candidates.append(Path.cwd().parent / "shared/data/lfm2k")
    # src/tru/data/sources/lfm2k.py: parents[5] is the folder holding the checkout (and shared/)
    candidates += [p / "shared/data/lfm2k" for p in Path(__file__).resolve().parents[4:6]]
    return next((c for c in candidates if (c / INTER_FILE).is_file()), None)


def build(out: Path, path: Path | None = None, whisper: bool = False, name: str = "lfm2k") -> DatasetManifest:
    """Copy Last.fm-2K from ``path`` into ``out`` with modalities text, audio (and whisper)."""
    hint = f"a folder holding {INTER_FILE}, {TEXT_FILE} and {AUDIO_FILE}, e.g. ../shared/data/lfm2k"
    folder = require_folder(path if path is not None else default_path(), "lfm2k", hint)
    inter_path = folder / INTER_FILE
    raw = read_inter(inter_path)
    if list(raw.columns) != EXPECTED_HEADER:
        raise DataError(
            f"{inter_path}: expected header {EXPECTED_HEADER} (tab-separated), got {list(raw.columns)}"
        )
    ints = check_inter(raw, inter_path)
    n_items = int(ints["itemID"].max()) + 1
    files = {"text": folder / TEXT_FILE, "audio": folder / AUDIO_FILE}
    if whisper:
        files["whisper"] = folder / WHISPER_FILE
    features = {mod: load_matrix(p, expected_rows=n_items) for mod, p in files.items()}
    source = {
        "kind": "lfm2k",
        "options": {"whisper": bool(whisper)},
        "seed": None,
        "inputs": inputs_record({"interactions": inter_path, **files}),
        "notes": "split as given (x_label); vggish cast float64 -> float32",
    }
    return write_dataset(out, name, raw, features, source=source)
