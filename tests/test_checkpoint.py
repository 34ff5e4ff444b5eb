"""Checkpoints record what a model forgot (request ids + a keyed commitment), never the deleted pairs, and
load against the erased data (ids need not be contiguous) or, with the manifest, against the data that
still holds the rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tru.checkpoint import CheckpointError, load_run, read_checkpoint, verify_weights, weights_sha256
from tru.data.dataset import load_dataset, read_inter, write_dataset

from .conftest import TinyWorld


def _int_tensors(obj: object) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj] if not obj.is_floating_point() else []
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _int_tensors(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in _int_tensors(v)]
    return []


def without_users(world: TinyWorld, dest: Path, users: set[int]) -> Path:
    """The tiny dataset with every row of ``users`` removed, the id space kept (as an erasure writes it)."""
    ds = world.dataset
    df = read_inter(world.data / ds.manifest.interactions)
    kept = df[~df["userID"].astype(int).isin(users)]
    write_dataset(
        dest, ds.name, kept, ds.features, source=ds.manifest.source, id_space=(ds.n_users, ds.n_items)
    )
    return dest


def erased_copy(world: TinyWorld, dest: Path) -> Path:
    return without_users(world, dest, {int(r.user_id) for r in world.requests})


def test_the_checkpoint_holds_no_deleted_pair(tiny_world: TinyWorld) -> None:
    payload = read_checkpoint(tiny_world.unlearned)
    assert "forget_pairs" not in payload
    forgotten = payload["forgotten"]
    assert forgotten["request_ids"] == sorted(tiny_world.ids) and forgotten["commitment"].startswith("hmac-")
    assert forgotten["n_pairs"] == len(tiny_world.spec.forget)
    keys = set(tiny_world.spec.forget.keys(tiny_world.dataset.n_items).tolist())
    users = {r.user_id for r in tiny_world.requests}
    for t in _int_tensors(payload):  # no integer tensor lists a deleted pair or a deleted user's id
        flat = t.reshape(-1).tolist()
        if t.dim() == 2 and t.shape[0] == 2:
            pairs = {
                u * tiny_world.dataset.n_items + i for u, i in zip(flat[: t.shape[1]], flat[t.shape[1] :])
            }
            assert not pairs & keys
    text = (tiny_world.unlearned / "run.json").read_text() + (
        tiny_world.unlearned / "unlearn.json"
    ).read_text()
    for u in users:
        assert f'"user_id": {u}' not in text


def test_loading_needs_the_erased_data_or_the_manifest(tiny_world: TinyWorld, tmp_path: Path) -> None:
    ds = tiny_world.dataset
    with pytest.raises(CheckpointError, match=r"forgotten 3 deletion request\(s\) whose rows are still"):
        load_run(tiny_world.unlearned, ds)
    with_manifest = load_run(tiny_world.unlearned, ds, requests=tiny_world.requests)
    assert len(with_manifest.train) == len(tiny_world.spec.retain)
    with pytest.raises(CheckpointError, match="not the set the model was trained on"):
        load_run(tiny_world.unlearned, ds, requests=tiny_world.requests[:1])
    # the erased dataset: the deleted users have no row at all; one of them is given the highest id
    erased = load_dataset(erased_copy(tiny_world, tmp_path / "erased"), validate=False)
    assert (erased.n_users, erased.n_items) == (ds.n_users, ds.n_items)
    run = load_run(tiny_world.unlearned, erased)
    assert run.forgotten.ids == set(tiny_world.ids) and len(run.train) == len(tiny_world.spec.retain)
    u = torch.arange(ds.n_users)
    with torch.no_grad():
        assert torch.equal(run.model.full_sort_predict(u), with_manifest.model.full_sort_predict(u))
    # the original model does not load on the erased data: it was trained on the deleted rows
    with pytest.raises(CheckpointError, match="not dataset"):
        load_run(tiny_world.original, erased)


def test_erasing_the_last_user_keeps_the_id_space(tiny_world: TinyWorld, tmp_path: Path) -> None:
    """Ids need not be contiguous: removing every row of the highest user id keeps n_users (the id space
    is the manifest's), so a model trained without that user still loads."""
    ds = tiny_world.dataset
    last = ds.n_users - 1
    gone = load_dataset(without_users(tiny_world, tmp_path / "no-last", {last}), validate=True)
    assert gone.n_users == ds.n_users and not (gone.train.users == last).any()
    retained = ds.with_train(ds.train.subset(ds.train.users != last))
    from tru.checkpoint import save_run

    model = load_run(tiny_world.original, ds).model
    save_run(tmp_path / "fits", model, load_run(tiny_world.original, ds).config, retained)
    assert load_run(tmp_path / "fits", gone).train.users.max() < last


def test_tampered_weights_and_other_data_are_refused(tiny_world: TinyWorld, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    shutil.copytree(tiny_world.original, folder)
    assert verify_weights(folder) == read_checkpoint(folder)["weights_sha256"]
    payload = torch.load(folder / "model.pt", weights_only=True)
    key = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][key] = payload["state_dict"][key] + 1e-3
    torch.save(payload, folder / "model.pt")
    with pytest.raises(CheckpointError, match="the checkpoint was altered"):
        verify_weights(folder)
    assert weights_sha256(payload["state_dict"]) != payload["weights_sha256"]
    # another item feature matrix: refused before any weight is read
    other = tmp_path / "other-features"
    shutil.copytree(tiny_world.data, other)
    feat = next(other.glob("*.npy"))
    arr = np.load(feat)
    np.save(feat, arr + 1.0)
    with pytest.raises(CheckpointError, match="other item features"):
        load_run(tiny_world.original, load_dataset(other, validate=False))


def test_format_1_checkpoints_are_refused_with_a_reason(tmp_path: Path) -> None:
    torch.save(
        {"format_version": 1, "forget_pairs": torch.zeros((2, 0), dtype=torch.int64)}, tmp_path / "model.pt"
    )
    with pytest.raises(CheckpointError, match="format 1 stored the deleted pairs"):
        read_checkpoint(tmp_path)


def test_forgotten_records_cover_subsets_and_survive_erasure() -> None:
    """Per-request commitments: the record of a subset can be checked without the other requests' rows
    (erased since), and a model made from a parent inherits what the parent forgot."""
    from tru.checkpoint import Forgotten
    from tru.forget.requests import DeletionRequest

    a, b, c = (
        DeletionRequest(r, "user", u, None, "2026-11-01", "t") for r, u in (("a", 1), ("b", 2), ("c", 3))
    )
    parent = Forgotten.of([a, b], 10)
    child = Forgotten.of([b, c], 7).inherit(parent)  # a was erased since: only the parent's record has it
    assert child.ids == {"a", "b", "c"} and child.per_request["a"] == parent.per_request["a"]
    assert child.covers(Forgotten.of([b, c], 0)) and child.covers(Forgotten.of([a], 0))
    assert not child.covers(Forgotten.of([DeletionRequest("c", "user", 4, None, "2026-11-01", "t")], 0))
    assert child.restricted(["a", "z"]) is None
    assert Forgotten.from_dict(child.to_dict()) == child


@pytest.mark.parametrize("forged", [0, -3, 10**9, 2.5, "50", True])
def test_a_forged_trained_epochs_is_refused_before_any_emulation(
    tiny_world: TinyWorld, tmp_path: Path, forged: object
) -> None:
    """The emulation of retraining's negative-only updates runs ``trained_epochs`` epochs: a hand-edited
    value (zero, negative, beyond the config's epoch cap, not a whole number) is refused, naming the file
    and the field; the genuine value loads."""
    folder = tmp_path / "run"
    shutil.copytree(tiny_world.original, folder)
    data = load_dataset(tiny_world.data, validate=False)
    genuine = load_run(folder, data).model.trained_epochs
    assert genuine is not None and genuine >= 1
    payload = torch.load(folder / "model.pt", weights_only=True)
    payload["trained_epochs"] = forged
    torch.save(payload, folder / "model.pt")
    with pytest.raises(CheckpointError, match=r"model\.pt: 'trained_epochs' must be a whole number"):
        load_run(folder, data)
