"""Deletion-request manifests: strict parsing, resolution into D_f / D_r / evaluation sets, generation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tru.data.dataset import DataError, DatasetManifest, Modality, Pairs, RecDataset
from tru.forget.generate import generate_requests, n_selected
from tru.forget.requests import (
    HEADER,
    DeletionRequest,
    append_requests,
    read_requests,
    resolve_requests,
    write_requests,
)

TS = "2025-01-31T12:00:00Z"
GOOD_ROW = f"r1,user,0,,{TS},gdpr"


def make_dataset(
    train: list[tuple[int, int]],
    valid: list[tuple[int, int]],
    test: list[tuple[int, int]],
    n_users: int,
    n_items: int,
) -> RecDataset:
    def pairs(rows: list[tuple[int, int]]) -> Pairs:
        arr = np.array(rows, dtype=np.int64).reshape(-1, 2)
        return Pairs(arr[:, 0], arr[:, 1])

    manifest = DatasetManifest("mem", "mem.inter", {"text": Modality("text", "text.npy", 2)})
    feats = {"text": np.zeros((n_items, 2), dtype=np.float32)}
    return RecDataset("mem", n_users, n_items, pairs(train), pairs(valid), pairs(test), feats, manifest)


@pytest.fixture
def small() -> RecDataset:
    """6 users × 8 items; train degrees u0..u5 = 5, 3, 2, 1, 3, 2; item 7 only in test."""
    train = [
        (0, 0),
        (0, 1),
        (0, 2),
        (0, 3),
        (0, 4),
        (1, 0),
        (1, 1),
        (1, 2),
        (2, 0),
        (2, 5),
        (3, 1),
        (4, 0),
        (4, 2),
        (4, 6),
        (5, 3),
        (5, 4),
    ]
    valid = [(0, 5), (1, 3), (2, 1), (4, 4)]
    test = [(0, 6), (1, 4), (3, 0), (5, 0), (2, 7)]
    return make_dataset(train, valid, test, 6, 8)


def skewed(n_users: int = 40, n_items: int = 50, seed: int = 0) -> RecDataset:
    """User u has train degree u + 1 (distinct random items): item degrees vary too."""
    rng = np.random.default_rng(seed)
    train = [(u, int(i)) for u in range(n_users) for i in rng.choice(n_items, u + 1, replace=False)]
    return make_dataset(train, [(0, 0)], [(1, 1)], n_users, n_items)


def req(rid: str, kind: str, user: int | None = None, item: int | None = None) -> DeletionRequest:
    return DeletionRequest(rid, kind, user, item, TS, "test")


def manifest(tmp_path: Path, *rows: str) -> Path:
    """A manifest with the header (line 1), a valid row (line 2) and ``rows`` (line 3 on)."""
    path = tmp_path / "requests.csv"
    path.write_text("\n".join([",".join(HEADER), GOOD_ROW, *rows]) + "\n")
    return path


def read_error(path: Path, line: int, field: str) -> str:
    """The DataError of reading ``path``: it names the file, the line and the field."""
    with pytest.raises(DataError) as exc:
        read_requests(path)
    msg = str(exc.value)
    assert f"{path}:{line}:" in msg and f"'{field}'" in msg, msg
    return msg


def assert_append_refused(tmp_path: Path, bad: DeletionRequest, field: str) -> None:
    """append_requests refuses ``bad`` with a message naming the field and leaves the file byte-identical."""
    path = tmp_path / "ok.csv"
    write_requests(path, [req("a", "user", 0)])
    before = path.read_bytes()
    with pytest.raises(DataError, match=field):
        append_requests(path, [req("b", "item", item=1), bad])
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


# ------------------------------------------------------------------------------ one test per failure class
def test_bad_header(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(f"request_id,kind,user,item_id,requested_at,reason\n{GOOD_ROW}\n")
    with pytest.raises(DataError, match=rf"{path}:1: bad header .*expected 'request_id,kind,user_id"):
        read_requests(path)
    before = path.read_bytes()
    with pytest.raises(DataError, match="bad header"):
        append_requests(path, [req("r2", "user", 1)])
    assert path.read_bytes() == before


def test_unknown_kind(tmp_path: Path) -> None:
    msg = read_error(manifest(tmp_path, f"r2,delete,1,,{TS},x"), 3, "kind")
    assert "expected one of user, item, interaction" in msg
    assert_append_refused(tmp_path, req("c", "User", 1), "'kind'")


def test_missing_id(tmp_path: Path) -> None:
    msg = read_error(manifest(tmp_path, f"r2,interaction,,4,{TS},x"), 3, "user_id")
    assert "missing" in msg
    read_error(manifest(tmp_path, f"r2,item,,,{TS},x"), 3, "item_id")
    assert_append_refused(tmp_path, req("c", "interaction", 1), "'item_id': missing")


def test_item_id_on_a_user_request(tmp_path: Path) -> None:
    msg = read_error(manifest(tmp_path, f"r2,user,1,4,{TS},x"), 3, "item_id")
    assert "given for a user request; expected it empty" in msg
    read_error(manifest(tmp_path, f"r2,item,1,4,{TS},x"), 3, "user_id")
    assert_append_refused(tmp_path, req("c", "user", 1, 4), "'item_id'")


def test_non_integer_id(tmp_path: Path) -> None:
    msg = read_error(manifest(tmp_path, f"r2,user,1.5,,{TS},x"), 3, "user_id")
    assert "'1.5' is not an integer" in msg and "missing" not in msg
    read_error(manifest(tmp_path, f"r2,item,,abc,{TS},x"), 3, "item_id")
    assert_append_refused(tmp_path, req("c", "user", "7"), "'user_id'")  # type: ignore[arg-type]


def test_negative_id(tmp_path: Path) -> None:
    msg = read_error(manifest(tmp_path, f"r2,interaction,2,-3,{TS},x"), 3, "item_id")
    assert "negative id '-3'" in msg
    assert_append_refused(tmp_path, req("c", "user", -1), "'user_id'")


def test_bad_timestamp(tmp_path: Path) -> None:
    msg = read_error(manifest(tmp_path, "r2,user,1,,31/01/2025,x"), 3, "requested_at")
    assert "not ISO 8601" in msg
    read_error(manifest(tmp_path, "r2,user,1,,,x"), 3, "requested_at")
    assert_append_refused(tmp_path, replace(req("c", "user", 1), requested_at="yesterday"), "requested_at")


def test_conflicting_duplicate_request_id(tmp_path: Path) -> None:
    msg = read_error(manifest(tmp_path, f"r1,user,1,,{TS},gdpr"), 3, "request_id")
    assert "already used on line 2" in msg
    with pytest.raises(DataError, match="conflicting duplicate"):
        write_requests(tmp_path / "new.csv", [req("x", "user", 1), req("x", "user", 2)])
    assert not (tmp_path / "new.csv").exists()
    path = tmp_path / "ok.csv"
    write_requests(path, [req("a", "user", 0)])
    before = path.read_bytes()
    with pytest.raises(DataError, match="request_id 'a': already in the manifest"):
        append_requests(path, [req("a", "user", 0)])
    assert path.read_bytes() == before


def test_unknown_user_and_item_ids(small: RecDataset) -> None:
    with pytest.raises(DataError) as exc:
        resolve_requests(
            small, [req("u", "user", 6), req("i", "item", item=8), req("p", "interaction", 0, 99)]
        )
    msg = str(exc.value)
    assert "request 'u': unknown user_id 6; expected < 6" in msg
    assert "request 'i': unknown item_id 8; expected < 8" in msg
    assert "request 'p': unknown item_id 99" in msg and "3 error(s)" in msg


def test_non_train_pair(small: RecDataset) -> None:
    reqs = [req("v", "interaction", 0, 5), req("t", "interaction", 1, 4), req("n", "interaction", 3, 3)]
    with pytest.raises(DataError) as exc:
        resolve_requests(small, reqs)
    msg = str(exc.value)
    assert "request 'v': its pair is not a train interaction (it is a valid pair)" in msg
    assert "(0, 5)" not in msg  # messages name requests, never the ids of a pair to delete
    assert "(it is a test pair)" in msg and "(it is no interaction at all)" in msg
    spec = resolve_requests(small, [*reqs, req("ok", "interaction", 0, 0)], strict=False)
    assert spec.request_ids == ["ok"] and len(spec.noops) == 3 and all("no-op" in m for m in spec.noops)
    assert len(spec.forget) == 1


# ------------------------------------------------------------------------------------------ no-ops, I/O
def test_exact_duplicate_is_a_reported_noop(tmp_path: Path, small: RecDataset) -> None:
    path = manifest(tmp_path, GOOD_ROW)
    reqs = read_requests(path)
    assert len(reqs) == 2 and reqs[0] == reqs[1]
    spec = resolve_requests(small, reqs)
    assert spec.request_ids == ["r1"]
    assert any("'r1': given 2 times (identical rows)" in m for m in spec.noops)


def test_covered_requests_are_noops_naming_both(small: RecDataset) -> None:
    reqs = [
        req("p1", "interaction", 0, 1),
        req("u0", "user", 0),
        req("i2", "item", item=2),
        req("p2", "interaction", 1, 2),
        req("p3", "interaction", 4, 6),
        req("p4", "interaction", 4, 6),
        req("u0b", "user", 0),
    ]
    spec = resolve_requests(small, reqs)
    assert spec.request_ids == ["u0", "i2", "p3"] and spec.regime == "mixed"
    text = "\n".join(spec.noops)
    assert "'p1': its pair is covered by user request 'u0'" in text and "(0, 1)" not in text
    assert "'p2': its pair is covered by item request 'i2'" in text
    assert "'p4': its pair already deleted by request 'p3'" in text
    assert "'u0b': its user is already deleted by request 'u0'" in text


def test_empty_manifest_is_a_noop(tmp_path: Path, small: RecDataset) -> None:
    zero = tmp_path / "zero.csv"
    zero.write_bytes(b"")
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(HEADER) + "\n\n")
    assert read_requests(zero) == [] and read_requests(header_only) == []
    spec = resolve_requests(small, [])
    assert len(spec.forget) == 0 and len(spec.retain) == len(small.train) and spec.request_ids == []
    assert spec.noops and "nothing to forget" in spec.noops[0]
    append_requests(zero, [req("a", "user", 0)])
    assert read_requests(zero) == [req("a", "user", 0)]


def test_roundtrip_append_and_all_errors_listed(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    first = [
        req("a", "user", 3),
        DeletionRequest("b, with comma", "interaction", 1, 2, "2025-01-31", 'say "hi"'),
    ]
    write_requests(path, first)
    append_requests(path, [req("c", "item", item=5)])
    assert read_requests(path) == [*first, req("c", "item", item=5)]
    bad = manifest(tmp_path, *[f"x{k},user,-{k + 1},,{TS},r" for k in range(25)], "y,user,1,,not-a-date,r")
    with pytest.raises(DataError) as exc:
        read_requests(bad)
    assert "26 error(s)" in str(exc.value) and "... and 6 more" in str(exc.value)


# ------------------------------------------------------------------------------------------- resolution
def test_forget_and_retain_partition_train(small: RecDataset) -> None:
    spec = resolve_requests(
        small, [req("u", "user", 1), req("i", "item", item=3), req("p", "interaction", 4, 6)]
    )
    n = small.n_items
    train, f, r = small.train.keys(n), spec.forget.keys(n), spec.retain.keys(n)
    assert len(f) + len(r) == len(train) and not np.isin(f, r).any()
    assert np.array_equal(np.sort(np.concatenate([f, r])), np.sort(train))
    expect = {(1, 0), (1, 1), (1, 2), (0, 3), (5, 3), (4, 6)}
    assert set(zip(spec.forget.users.tolist(), spec.forget.items.tolist())) == expect
    assert spec.users.tolist() == [1] and spec.items.tolist() == [3]


def test_user_regime_removes_users_eval_rows(small: RecDataset) -> None:
    spec = resolve_requests(small, [req("a", "user", 0), req("b", "user", 2)])
    assert spec.regime == "user" and spec.request_ids == ["a", "b"]
    assert not np.isin(spec.valid.users, [0, 2]).any() and not np.isin(spec.test.users, [0, 2]).any()
    assert len(spec.valid) == 2 and len(spec.test) == 3
    assert not np.isin(spec.retain.users, [0, 2]).any() and len(spec.forget) == 7


def test_item_regime_removes_items_eval_rows(small: RecDataset) -> None:
    spec = resolve_requests(small, [req("a", "item", item=0), req("b", "item", item=7)])
    assert spec.regime == "item" and spec.request_ids == ["a"]  # item 7 has no train row
    assert any("'b': its item has no train interactions" in m and "0 valid / 1 test" in m for m in spec.noops)
    assert not np.isin(spec.test.items, [0, 7]).any() and len(spec.test) == 2
    assert len(spec.valid) == len(small.valid) and len(spec.forget) == 4


def test_interaction_regime_keeps_a_train_item_per_user(small: RecDataset) -> None:
    spec = resolve_requests(small, [req("a", "interaction", 0, 0), req("b", "interaction", 2, 5)])
    assert spec.regime == "interaction" and len(spec.forget) == 2
    assert (
        spec.valid is not None and len(spec.valid) == len(small.valid) and len(spec.test) == len(small.test)
    )
    assert (np.bincount(spec.retain.users, minlength=6) >= 1).all()
    with pytest.raises(DataError) as exc:
        resolve_requests(
            small,
            [
                req("a", "interaction", 2, 0),
                req("x", "item", item=4),
                req("b", "interaction", 2, 5),
                req("c", "interaction", 3, 1),
            ],
        )
    msg = str(exc.value)
    assert "interaction requests a, b would delete all 2 train items of their user" in msg
    assert "interaction requests c would delete" in msg and "file a user request instead" in msg
    ok = resolve_requests(small, [req("u", "user", 3), req("c", "interaction", 3, 1)])  # covered: no error
    assert ok.request_ids == ["u"]


# ------------------------------------------------------------------------------------------- generation
@pytest.mark.parametrize("strategy", ["random", "core", "edge"])
def test_generated_user_and_item_requests(strategy: str) -> None:
    ds = skewed()
    deg_u = np.bincount(ds.train.users, minlength=ds.n_users)
    deg_i = np.bincount(ds.train.items, minlength=ds.n_items)
    for regime, deg, field in (("user", deg_u, "user_id"), ("item", deg_i, "item_id")):
        reqs = generate_requests(ds, regime, strategy, ratio=0.1, seed=3)
        eligible = np.flatnonzero(deg > 0)
        assert len(reqs) == n_selected(0.1, len(eligible)) > 0
        assert [r.request_id for r in reqs] == [f"gen-{regime}-{strategy}-3-{n}" for n in range(len(reqs))]
        chosen = np.array([getattr(r, field) for r in reqs])
        assert len(np.unique(chosen)) == len(chosen) and (deg[chosen] > 0).all()
        rest = np.setdiff1d(eligible, chosen)
        if strategy == "core":
            assert deg[chosen].min() >= deg[rest].max()
        if strategy == "edge":
            assert deg[chosen].max() <= deg[rest].min()
        assert reqs == generate_requests(ds, regime, strategy, ratio=0.1, seed=3)
        assert (
            generate_requests(ds, regime, strategy, ratio=0.05, seed=3)
            == reqs[: n_selected(0.05, len(eligible))]
        )
        spec = resolve_requests(ds, reqs)
        assert spec.regime == regime and len(spec.request_ids) == len(reqs)
    assert generate_requests(ds, "user", "random", 0.1, seed=3) != generate_requests(
        ds, "user", "random", 0.1, seed=4
    )


@pytest.mark.parametrize("strategy", ["random", "core", "edge"])
def test_generated_interaction_requests(strategy: str) -> None:
    ds = skewed()
    deg_u = np.bincount(ds.train.users, minlength=ds.n_users)
    reqs = generate_requests(ds, "interaction", strategy, seed=1)
    assert len(reqs) == n_selected(0.05, len(ds.train)) == 41
    spec = resolve_requests(ds, reqs)  # also checks: pairs are train pairs, no user loses its whole history
    assert len(spec.forget) == 41 and (np.bincount(spec.retain.users, minlength=ds.n_users) >= 1).all()
    users = np.array([r.user_id for r in reqs])
    if strategy == "core":  # the highest-degree users give up their pairs first: 39 of user 39, then user 38
        assert np.bincount(users, minlength=40)[39] == 39 and set(users.tolist()) == {38, 39}
    if strategy == "edge":  # user u (degree u + 1) has u candidates: 1 + 2 + ... + 8 = 36, then 5 of user 9
        assert set(users.tolist()) == set(range(1, 10)) and (deg_u[users] <= 10).all()
    assert reqs == generate_requests(ds, "interaction", strategy, seed=1)
    assert reqs != generate_requests(ds, "interaction", strategy, seed=2)
    with pytest.raises(DataError, match="keeps a train item"):
        generate_requests(ds, "interaction", strategy, ratio=1.0)


def test_generation_on_tiny_and_bad_arguments(tiny: RecDataset) -> None:
    reqs = generate_requests(tiny, "user", "core", seed=0)
    assert len(reqs) == 6 and all(r.reason == "benchmark" and r.requested_at.endswith("Z") for r in reqs)
    with pytest.raises(DataError, match=r"strategy 'hub'.*ratio 0"):
        generate_requests(tiny, "user", "hub", ratio=0)
    with pytest.raises(DataError, match="regime 'pair'"):
        generate_requests(tiny, "pair")


# ---------------------------------------------------------------- nothing left to train on


def test_deleting_every_user_is_refused(small: RecDataset) -> None:
    """Every user with train interactions deleted: D_r would be empty, a clear DataError (on main these
    requests resolved to an empty retain set and unlearning failed later without saying why)."""
    reqs = [req(f"u{u}", "user", u) for u in range(6)]
    with pytest.raises(DataError, match=r"delete every user's train interactions \(6 of 6 users\)") as exc:
        resolve_requests(small, reqs)
    assert "nothing would remain to train on" in str(exc.value)
    assert len(resolve_requests(small, reqs[:-1]).retain) == 2  # one user left: allowed


def test_deleting_every_item_or_mixing_kinds_to_empty_is_refused(small: RecDataset) -> None:
    """Every item with train interactions (0..6) deleted, or users + items + pairs that together cover
    every train pair: the same refusal."""
    with pytest.raises(DataError, match=r"every item's \(7 of 7 items\)"):
        resolve_requests(small, [req(f"i{i}", "item", item=i) for i in range(7)])
    mixed = [req("a", "user", 0), req("b", "user", 1), req("c", "item", item=0), req("d", "item", item=3)]
    mixed += [req("e", "user", 2), req("f", "interaction", 3, 1), req("g", "item", item=2)]
    mixed += [req("h", "item", item=6), req("k", "item", item=4)]
    with pytest.raises(DataError, match="nothing would remain to train on"):
        resolve_requests(small, mixed)
