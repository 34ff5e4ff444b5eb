"""Dataset validation (Great Expectations): a valid folder passes; each failure class is named with its
file and an example row in the rendered report."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tru.data.dataset import DataError, load_dataset, write_dataset
from tru.data.validate import ValidationReport, validate_dataset

LFM2K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lfm2k"
N_USERS, N_ITEMS, PER_USER = 30, 40, 6
INTER = "toy.inter"


def toy_frame() -> pd.DataFrame:
    """30 users × 6 items each; labels 0,0,0,0,1,2 per user; items cover 0..39 (item = (3u + k) mod 40)."""
    users = np.repeat(np.arange(N_USERS), PER_USER)
    k = np.tile(np.arange(PER_USER), N_USERS)
    labels = np.tile([0, 0, 0, 0, 1, 2], N_USERS)
    return pd.DataFrame(
        {
            "userID": users,
            "itemID": (3 * users + k) % N_ITEMS,
            "rating": 1,
            "timestamp": 1_600_000_000 + np.arange(len(users)),
            "x_label": labels,
        }
    )


def toy_features(n_rows: int = N_ITEMS, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.normal(size=(n_rows, 24)).astype(np.float32),
        "text": rng.normal(size=(n_rows, 12)).astype(np.float32),
    }


def make(tmp_path: Path, df: pd.DataFrame | None = None, feats: dict[str, np.ndarray] | None = None) -> Path:
    folder = tmp_path / "toy"
    write_dataset(folder, "toy", toy_frame() if df is None else df, feats or toy_features())
    return folder


def edit_lines(folder: Path, fn: Callable[[list[list[str]]], None]) -> None:
    """Edit the .inter file as a list of rows of fields; rows[0] is the header (file line 1)."""
    path = folder / INTER
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    fn(rows)
    path.write_text("\n".join("\t".join(r) for r in rows) + "\n")


def edit_manifest(folder: Path, fn: Callable[[dict], None]) -> None:
    path = folder / "dataset.yaml"
    raw = yaml.safe_load(path.read_text())
    fn(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def assert_fails(report: ValidationReport, expectation: str, file: str, *snippets: str) -> str:
    text = report.render()
    assert report.success is False, text
    assert any(f.expectation == expectation and f.file == file for f in report.failures), text
    for s in (expectation, file, *snippets):
        assert s in text, f"{s!r} not in report:\n{text}"
    json.dumps(report.to_dict())  # JSON-able
    return text


def test_valid_dataset_passes(tmp_path: Path) -> None:
    folder = make(tmp_path)
    report = validate_dataset(folder)
    assert report.success, report.render()
    assert report.failures == [] and report.checked > 20 and report.folder == folder
    assert "PASSED" in report.render()
    assert json.loads(json.dumps(report.to_dict()))["success"] is True


def test_more_feature_rows_than_items_allowed_when_stats_say_so(tmp_path: Path) -> None:
    folder = make(tmp_path, feats=toy_features(N_ITEMS + 5))  # write_dataset records stats.n_items = 45
    assert validate_dataset(folder).success
    # without id_space and stats (an older folder), n_items = max(itemID)+1 = 40
    edit_manifest(folder, lambda m: [m.pop("stats"), m.pop("id_space")])
    assert_fails(validate_dataset(folder), "feature_row_count", "image_feat.npy", "rows=45", "expected=40")


def test_missing_column(tmp_path: Path) -> None:
    folder = make(tmp_path)
    edit_lines(folder, lambda rows: [r.pop(-1) for r in rows])  # drop x_label
    report = validate_dataset(folder)
    text = assert_fails(report, "column_exists", INTER, "'x_label'", "line 1")
    assert "x_label_in_set" not in text and "skipped" in text


# One folder per group of independent defects, validated once per module: each failure class below
# has its own test reading the shared report (and together they show that defects do not mask each other).
@pytest.fixture(scope="module")
def rows_report(tmp_path_factory: pytest.TempPathFactory) -> ValidationReport:
    """Text-level defects in the .inter file (rows[i] is file line i + 1)."""
    folder = make(tmp_path_factory.mktemp("rows"))

    def corrupt(rows: list[list[str]]) -> None:
        rows[2][2] = ""  # line 3: rating empty
        rows[3][0] = "3.5"  # line 4: userID not an integer
        rows[4][3] = "yesterday"  # line 5: timestamp not a number
        rows[5][1] = "-2"  # line 6: negative itemID
        rows[6][1] = "abc"  # line 7: itemID not an integer
        rows[8][-1] = "3"  # line 9: x_label out of set
        rows[11][1] = rows[10][1]  # lines 11, 12: same (userID, itemID)

    edit_lines(folder, corrupt)
    return validate_dataset(folder)


@pytest.fixture(scope="module")
def users_report(tmp_path_factory: pytest.TempPathFactory) -> ValidationReport:
    """User 5 keeps only valid/test rows; user 7 has no rows; a stray user id 10**12 leaves a huge gap
    The manifest declares no id space (neither ``id_space`` nor ``stats``), so the older contiguity rule
    applies."""
    df = toy_frame()
    df = df[~((df.userID == 5) & (df.x_label == 0)) & (df.userID != 7)].reset_index(drop=True)
    df.loc[len(df)] = {"userID": 10**12, "itemID": 0, "rating": 1, "timestamp": 0, "x_label": 0}
    folder = make(tmp_path_factory.mktemp("users"), df=df)
    edit_manifest(folder, lambda m: [m.pop("id_space"), m.pop("stats")])
    return validate_dataset(folder)


@pytest.fixture(scope="module")
def features_report(tmp_path_factory: pytest.TempPathFactory) -> ValidationReport:
    """One defect per modality, plus a stats mismatch in the manifest."""
    feats = toy_features()
    feats["image"][7, 3] = np.nan
    feats["image"][9, :] = np.nan
    feats["text"][11, 0] = np.inf
    rng = np.random.default_rng(1)
    feats["short"] = rng.normal(size=(N_ITEMS - 3, 4))  # 37 rows, float64
    feats["wide"] = rng.normal(size=(N_ITEMS, 6)).astype(np.float32)
    feats["ints"] = np.ones((N_ITEMS, 5), dtype=np.int32)
    feats["flat"] = np.ones((N_ITEMS, 1), dtype=np.float32)
    folder = make(tmp_path_factory.mktemp("features"), feats=feats)
    np.save(folder / "ints_feat.npy", feats["ints"])  # write_dataset casts to float32
    np.save(folder / "flat_feat.npy", np.ones(N_ITEMS, dtype=np.float32))  # 1-d
    (folder / "junk_feat.npy").write_text("not numpy\n")
    np.save(folder / "obj_feat.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)

    def edit(m: dict) -> None:
        m["modalities"]["wide"]["dim"] = 7
        m["modalities"]["audio"] = {"file": "audio_feat.npy", "dim": 8}  # not there
        m["modalities"]["junk"] = {"file": "junk_feat.npy"}
        m["modalities"]["obj"] = {"file": "obj_feat.npy"}
        m["stats"]["n_users"] = 31

    edit_manifest(folder, edit)
    return validate_dataset(folder)


def test_non_integer_ids(rows_report: ValidationReport) -> None:
    assert_fails(rows_report, "id_integer", INTER, "line 4:", "userID=3.5", "line 7:", "itemID=abc")


def test_negative_id(rows_report: ValidationReport) -> None:
    assert_fails(rows_report, "id_non_negative", INTER, "line 6:", "itemID=-2")


def test_x_label_out_of_set(rows_report: ValidationReport) -> None:
    assert_fails(rows_report, "x_label_in_set", INTER, "line 9:", "x_label=3")


def test_null_value(rows_report: ValidationReport) -> None:
    assert_fails(rows_report, "not_null", INTER, "line 3:", "rating=None")


def test_non_numeric_timestamp(rows_report: ValidationReport) -> None:
    assert_fails(rows_report, "timestamp_numeric", INTER, "line 5:", "timestamp=yesterday")


def test_duplicate_pair(rows_report: ValidationReport) -> None:
    assert_fails(rows_report, "pairs_unique", INTER, "line 11:", "line 12:")


def test_invalid_ids_skip_derived_checks(rows_report: ValidationReport) -> None:
    names = {f.expectation for f in rows_report.failures}
    assert names == {
        "id_integer",
        "id_non_negative",
        "x_label_in_set",
        "not_null",
        "timestamp_numeric",
        "pairs_unique",
    }, rows_report.render()
    assert any("eval_users_have_train" in s for s in rows_report.skipped)


def test_eval_user_without_train_rows(users_report: ValidationReport) -> None:
    df = toy_frame()
    df = df[~((df.userID == 5) & (df.x_label == 0)) & (df.userID != 7)].reset_index(drop=True)
    first = int(np.flatnonzero(df.userID.to_numpy() == 5)[0]) + 2
    assert_fails(users_report, "eval_users_have_train", INTER, "userID 5:", f"first_eval_line={first}")


def test_user_ids_not_contiguous(users_report: ValidationReport) -> None:
    assert_fails(
        users_report,
        "ids_contiguous",
        INTER,
        "missing_userIDs=7 next_userID=8",
        f"missing_userIDs=30..{10**12 - 1} next_userID={10**12}",
    )
    assert {f.expectation for f in users_report.failures} == {"ids_contiguous", "eval_users_have_train"}


@pytest.mark.parametrize(("row", "modality", "count"), [(7, "image", 1), (9, "image", 24), (11, "text", 1)])
def test_non_finite_feature(features_report: ValidationReport, row: int, modality: str, count: int) -> None:
    assert_fails(features_report, "feature_finite", f"{modality}_feat.npy", f"row {row}: n_nonfinite={count}")


def test_wrong_feature_row_count(features_report: ValidationReport) -> None:
    assert_fails(features_report, "feature_row_count", "short_feat.npy", "rows=37", "expected=40")


def test_declared_dim_mismatch(features_report: ValidationReport) -> None:
    assert_fails(
        features_report, "feature_dim_matches", "dataset.yaml", "modality wide:", "declared_dim=7", "n_cols=6"
    )


def test_feature_dtype_and_shape(features_report: ValidationReport) -> None:
    assert_fails(features_report, "feature_dtype_float", "dataset.yaml", "modality ints:", "dtype=int32")
    assert_fails(features_report, "feature_2d", "dataset.yaml", "modality flat:", "ndim=1")


def test_missing_modality_file(features_report: ValidationReport) -> None:
    assert_fails(
        features_report, "modality_file_exists", "dataset.yaml", "modality audio:", "file=audio_feat.npy"
    )


def test_unloadable_modality_file(features_report: ValidationReport) -> None:
    assert_fails(
        features_report,
        "modality_file_loadable",
        "dataset.yaml",
        "modality junk:",
        "modality obj:",
        "allow_pickle",
    )


def test_stats_disagree(features_report: ValidationReport) -> None:
    assert_fails(features_report, "stats_agree", "dataset.yaml", "stat n_users:", "declared=31", "actual=30")
    names = {f.expectation for f in features_report.failures}
    assert names == {
        "feature_finite",
        "feature_row_count",
        "feature_dim_matches",
        "feature_dtype_float",
        "feature_2d",
        "modality_file_exists",
        "modality_file_loadable",
        "stats_agree",
    }


def test_load_dataset_refuses_invalid_data(tmp_path: Path) -> None:
    folder = make(tmp_path)
    edit_lines(folder, lambda rows: rows[3].__setitem__(0, "3.5"))
    with pytest.raises(DataError, match=r"id_integer[\s\S]*line 4"):
        load_dataset(folder)


def test_unreadable_interaction_file(tmp_path: Path) -> None:
    folder = make(tmp_path)
    edit_lines(folder, lambda rows: rows[1].append("9"))  # an extra field on the first data row
    assert_fails(validate_dataset(folder), "inter_readable", INTER, "line 2 has more fields")
    edit_manifest(folder, lambda m: m.__setitem__("interactions", "gone.inter"))
    report = validate_dataset(folder)
    assert_fails(report, "inter_readable", "gone.inter", "interaction file not found")
    assert [f.expectation for f in report.failures] == ["inter_readable"]  # features still checked (pass)


@pytest.mark.parametrize(
    "content", [None, "name: [unclosed\n", "- just\n- a list\n", "name: x\ninteractions: x.inter\n"]
)
def test_malformed_manifest(tmp_path: Path, content: str | None) -> None:
    folder = make(tmp_path)
    if content is None:
        (folder / "dataset.yaml").unlink()
    else:
        (folder / "dataset.yaml").write_text(content)
    report = validate_dataset(folder)
    assert_fails(report, "manifest_valid", "dataset.yaml", "manifest")
    assert report.checked == 1


@pytest.mark.skipif(not (LFM2K / "lfm2k.inter").is_file(), reason="shared lfm2k data not present")
def test_real_lfm2k_passes(tmp_path: Path) -> None:
    folder = tmp_path / "lfm2k"
    folder.mkdir()
    files = {
        "text": ("all-MiniLM-L6-v2.npy", 384),
        "vggish": ("vggish.npy", 128),
        "whisper": ("whisper.npy", 512),
    }
    for name in ["lfm2k.inter", *(f for f, _ in files.values())]:
        shutil.copyfile(LFM2K / name, folder / name)  # a symlink out of the folder is refused
    manifest = {
        "name": "lfm2k",
        "format": "mmrec",
        "interactions": "lfm2k.inter",
        "modalities": {m: {"file": f, "dim": d} for m, (f, d) in files.items()},
        "stats": {
            "n_users": 1858,
            "n_items": 1425,
            "n_interactions": 56345,
            "n_train": 44327,
            "n_valid": 4799,
            "n_test": 7219,
        },
    }
    (folder / "dataset.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    report = validate_dataset(folder)
    assert report.success, report.render()


# ---------------------------------------------------------------- id space (ids with gaps after an erasure)


def erased_frame(users: tuple[int, ...] = (7, N_USERS - 1)) -> pd.DataFrame:
    """The toy frame with every row of ``users`` removed (as an erasure does), the highest id included."""
    df = toy_frame()
    return df[~df.userID.isin(users)].reset_index(drop=True)


def test_erased_users_leave_gaps_in_a_declared_id_space(tmp_path: Path) -> None:
    """Removing every row of user 7 and of the highest user (29) keeps the id space: validation accepts the
    gaps and the dataset keeps 30 users, so a model trained before the erasure still fits."""
    folder = tmp_path / "toy"
    m = write_dataset(folder, "toy", erased_frame(), toy_features(), id_space=(N_USERS, N_ITEMS))
    raw = yaml.safe_load((folder / "dataset.yaml").read_text())
    assert raw["id_space"] == {"n_users": N_USERS, "n_items": N_ITEMS} and m.id_space is not None
    report = validate_dataset(folder)
    assert report.success, report.render()
    ds = load_dataset(folder)
    assert (ds.n_users, ds.n_items) == (N_USERS, N_ITEMS)
    assert 7 not in set(ds.train.users) and N_USERS - 1 not in set(ds.train.users)


def test_erasure_in_place_on_an_older_folder_keeps_its_stats_id_space(tmp_path: Path) -> None:
    """An erasure that rewrites only the ``.inter`` file and the count stats (as ``tru erase`` does) of a
    folder written before ``id_space`` existed: ``stats.n_users / n_items`` stay and are the id space."""
    folder = make(tmp_path)
    edit_manifest(folder, lambda m: m.pop("id_space"))
    df = erased_frame()
    df.to_csv(folder / INTER, sep="\t", index=False)

    def counts(m: dict) -> None:
        m["stats"].update(n_interactions=len(df), n_train=int((df.x_label == 0).sum()))
        m["stats"].update(n_valid=int((df.x_label == 1).sum()), n_test=int((df.x_label == 2).sum()))

    edit_manifest(folder, counts)
    report = validate_dataset(folder)
    assert report.success, report.render()
    assert (load_dataset(folder).n_users, load_dataset(folder).n_items) == (N_USERS, N_ITEMS)
    edit_manifest(folder, lambda m: m["stats"].__setitem__("n_users", 20))
    assert_fails(validate_dataset(folder), "ids_in_id_space", INTER, "stats.n_users = 20")


def test_write_dataset_declares_the_id_space_by_default(tmp_path: Path) -> None:
    folder = make(tmp_path)
    raw = yaml.safe_load((folder / "dataset.yaml").read_text())
    assert raw["id_space"] == {"n_users": N_USERS, "n_items": N_ITEMS}
    assert list(raw)[:5] == ["name", "format", "interactions", "modalities", "id_space"]


def test_ids_outside_the_declared_id_space_are_refused(tmp_path: Path) -> None:
    folder = make(tmp_path)
    edit_manifest(folder, lambda m: m["id_space"].__setitem__("n_users", 25))
    first = int(np.flatnonzero(toy_frame().userID.to_numpy() >= 25)[0]) + 2
    text = assert_fails(
        validate_dataset(folder), "ids_in_id_space", INTER, "id_space.n_users = 25", f"line {first}"
    )
    assert "ids_contiguous" not in text
    with pytest.raises(
        DataError, match=rf"toy\.inter: line {first}: userID 25 is outside .*'id_space\.n_users'"
    ):
        load_dataset(folder, validate=False)


def test_id_space_must_match_the_feature_rows(tmp_path: Path) -> None:
    folder = make(tmp_path)
    edit_manifest(folder, lambda m: m["id_space"].__setitem__("n_items", 50))
    assert_fails(validate_dataset(folder), "feature_row_count", "image_feat.npy", "rows=40", "expected=50")
    with pytest.raises(DataError, match=r"image_feat\.npy: 40 rows; expected n_items = 50"):
        load_dataset(folder, validate=False)
    with pytest.raises(DataError, match="feature rows"):
        write_dataset(tmp_path / "w", "toy", toy_frame(), toy_features(), id_space=(N_USERS, 50))
    with pytest.raises(DataError, match=r"line \d+: userID 20 is outside"):
        write_dataset(tmp_path / "w", "toy", toy_frame(), toy_features(), id_space=(20, N_ITEMS))
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    "bad", [{"n_users": -1, "n_items": 40}, {"n_users": 30}, [30, 40], {"n_users": "x", "n_items": 1}]
)
def test_malformed_id_space(tmp_path: Path, bad: object) -> None:
    folder = make(tmp_path)
    edit_manifest(folder, lambda m: m.__setitem__("id_space", bad))
    assert_fails(validate_dataset(folder), "manifest_valid", "dataset.yaml", "id_space")


def test_older_folder_falls_back_to_stats_then_max_id(tmp_path: Path) -> None:
    """Without id_space the stats written by write_dataset give the id space (same fingerprint as before
    the field existed); without stats, max(id)+1 and the feature rows."""
    folder = make(tmp_path)
    fp = load_dataset(folder).fingerprint
    edit_manifest(folder, lambda m: m.pop("id_space"))
    ds = load_dataset(folder)
    assert (ds.n_users, ds.n_items, ds.fingerprint) == (N_USERS, N_ITEMS, fp)
    edit_manifest(folder, lambda m: m.pop("stats"))
    ds = load_dataset(folder)
    assert (ds.n_users, ds.n_items, ds.fingerprint) == (N_USERS, N_ITEMS, fp)
