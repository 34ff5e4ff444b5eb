"""Issue 9, item regime: retraining's negative-only updates of the deleted items, emulated (the exact part
for items, tru-method.md §7a)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tru.checkpoint import load_run, save_run
from tru.config import load_config
from tru.eval.rank import rank_percentiles, wasserstein1
from tru.models import build_backbone
from tru.train.trainer import Trainer
from tru.unlearn.api import prepare_start, run_unlearning, unlearn_config
from tru.unlearn.emulate import can_emulate, emulate_deleted_items
from tru.unlearn.proxy import reinit_proxy
from tru.unlearn.targets import forget_target

from .test_unlearn_exact import item_spec

EPOCHS = 12


def _config(**over):
    base = {"epochs": EPOCHS, "seed": 5, "train_batch_size": 256, "device": "cpu", "stopping_step": 1000}
    return load_config("mgcn", overrides={**base, **over})


@pytest.fixture(scope="module")
def trained(data):
    cfg = _config()
    model = build_backbone("mgcn", data, cfg)
    Trainer(model, data, cfg, log=lambda _s: None).fit()
    return model, cfg


@pytest.fixture(scope="module")
def spec(data):
    counts = np.bincount(data.train.items, minlength=data.n_items)
    return item_spec(data, np.argsort(-counts)[5:13])  # 8 well-interacted items: a lot to forget


def test_trainer_and_checkpoint_record_the_epochs(trained, data, tmp_path) -> None:
    model, cfg = trained
    assert model.trained_epochs is not None and 1 <= model.trained_epochs <= EPOCHS
    save_run(tmp_path / "run", model, cfg, data)
    assert load_run(tmp_path / "run", data).model.trained_epochs == model.trained_epochs


def test_the_isolated_item_map_is_the_models_forward(trained, spec) -> None:
    """MGCN's map of isolated items equals its forward, at the start and after the rows move (the
    self loops and shared neighbours of the kNN graphs are carried exactly)."""
    model = copy.deepcopy(trained[0])
    model.rebuild(spec.retain)
    items = torch.as_tensor(spec.items)
    iso = model.isolated_items(items)
    with torch.no_grad():
        torch.testing.assert_close(iso.final(), model.forward()[1][items], atol=1e-5, rtol=1e-5)
        gen = torch.Generator().manual_seed(0)
        named = dict(model.named_parameters())
        for name, rows in iso.rows.items():
            rows.add_(torch.randn(rows.shape, generator=gen))
            named[name][items] = rows
        torch.testing.assert_close(iso.final(), model.forward()[1][items], atol=1e-5, rtol=1e-5)


def test_emulation_moves_only_the_deleted_items_rows(trained, spec) -> None:
    model = copy.deepcopy(trained[0])
    model.rebuild(spec.retain)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = emulate_deleted_items(model, spec.retain, spec.items, seed=5)
    assert set(rows) == {"item_id_embedding.weight", *(f"feat_{m}.weight" for m in model.modalities)}
    others = np.setdiff1d(np.arange(model.n_items), spec.items)
    for name, p in model.named_parameters():
        if name in rows:
            assert torch.equal(p[others], before[name][others]), name
            assert not torch.equal(p[spec.items], before[name][spec.items]), name
        else:
            assert torch.equal(p, before[name]), name
    # deterministic: the same seed gives the same rows
    again = copy.deepcopy(trained[0])
    again.rebuild(spec.retain)
    emulate_deleted_items(again, spec.retain, spec.items, seed=5)
    assert torch.equal(again.item_id_embedding.weight, model.item_id_embedding.weight)


def test_the_emulated_start_ranks_deleted_items_as_retrain_does(trained, data, spec) -> None:
    """The point of the emulation: the deleted pairs' rank percentiles of the emulated start are closer to a
    retrained model's than those of the rebuilt original (memorised rows) and of rows merely reset to
    their initial values (what retraining starts from, before its negative-only updates)."""
    model, cfg = trained
    retrain = run_unlearning("retrain", model, data, spec, cfg, unlearn_config(cfg)).model

    def pct(m):
        with torch.no_grad():
            return rank_percentiles(m, spec.forget, spec.retain, data.n_users, data.n_items)

    ref = pct(retrain)
    rebuilt = copy.deepcopy(model)
    prepare_start(rebuilt, spec, unlearn_config(cfg, {"exact": False}))
    reset = copy.deepcopy(model)
    reset.trained_epochs = None  # nothing to emulate: the rows stay at their initial values
    reset = reinit_proxy(reset, spec, 5)[0]
    emulated = copy.deepcopy(model)
    exact = prepare_start(emulated, spec, unlearn_config(cfg))
    assert "item_id_embedding.weight" in exact
    d_emulated = wasserstein1(pct(emulated), ref)
    assert d_emulated < wasserstein1(pct(rebuilt), ref)
    assert d_emulated < wasserstein1(pct(reset), ref)


def test_tru_starts_from_the_proxy_and_keeps_the_emulated_rows(trained, data, spec) -> None:
    """The candidate's start and the retrain-free reference are the same model on the deleted items, so
    the item regime needs no sink term; the engine leaves the emulated rows alone."""
    model, cfg = trained
    ucfg = unlearn_config(cfg, {"max_steps": 20, "check_every": 10})
    assert not forget_target(model, data, spec, ucfg.rows_seed, ucfg.item_target).sink
    out = run_unlearning("tru", model, data, spec, cfg, ucfg)
    proxy = reinit_proxy(model, spec, ucfg.rows_seed)[0]
    torch.testing.assert_close(
        out.model.item_id_embedding.weight[spec.items], proxy.item_id_embedding.weight[spec.items]
    )
    assert out.report["exact_rows"]["item_id_embedding.weight"] == len(spec.items)


def test_without_a_training_record_nothing_is_emulated(trained, data, spec) -> None:
    """A checkpoint that does not say how long it was trained: the rows keep the original's values and the
    item regime falls back to the sink term."""
    model = copy.deepcopy(trained[0])
    model.trained_epochs = None
    assert not can_emulate(model)
    start = copy.deepcopy(model)
    rows = prepare_start(start, spec, unlearn_config(trained[1]))
    assert "item_id_embedding.weight" not in rows
    assert torch.equal(start.item_id_embedding.weight, model.item_id_embedding.weight)
    assert forget_target(model, data, spec, 5, "auto").sink


def test_a_user_deletion_emulates_the_items_only_deleted_users_held(trained, data) -> None:
    """User regime: an item whose every train interaction belongs to deleted users is an isolated node of
    the retrained model too; its rows are emulated, the other items' rows are left alone."""
    from .test_unlearn_exact import user_spec

    model, cfg = trained
    counts = np.bincount(data.train.items, minlength=data.n_items)
    item = int(np.flatnonzero(counts > 0)[np.argmin(counts[counts > 0])])
    users = np.unique(data.train.users[data.train.items == item])
    spec = user_spec(data, users)
    start = copy.deepcopy(model)
    rows = prepare_start(start, spec, unlearn_config(cfg))
    isolated = model.untrained_items(spec.retain, np.unique(spec.forget.items))
    assert item in isolated
    np.testing.assert_array_equal(rows["item_id_embedding.weight"], isolated)
    kept = np.setdiff1d(np.arange(data.n_items), isolated)
    assert torch.equal(start.item_id_embedding.weight[kept], model.item_id_embedding.weight[kept])
    assert not torch.equal(start.item_id_embedding.weight[item], model.item_id_embedding.weight[item])


def test_the_proxy_and_the_start_share_one_emulation(trained, data, spec, monkeypatch) -> None:
    """The retrain-free target's proxy and the candidate's start need the same emulated rows: one run of the
    emulation serves both (it is most of the item regime's cost)."""
    from tru.unlearn import emulate

    calls = []
    real = emulate.emulate_negative_training
    monkeypatch.setattr(emulate, "emulate_negative_training", lambda *a: calls.append(1) or real(*a))
    model, cfg = trained
    ucfg = unlearn_config(cfg, {"max_steps": 10, "check_every": 10})
    run_unlearning("tru", model, data, spec, cfg, ucfg)
    assert len(calls) == 1
    run_unlearning("tru", model, data, spec, cfg, ucfg)  # a second run pays its own (its time is honest)
    assert len(calls) == 2
