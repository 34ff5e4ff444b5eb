"""The backbone contract, run for every backbone in the registry (VBPR, MGCN, MIG-GT): what the trainer,
the unlearning engine, the certificate and the servable export rely on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tru.checkpoint import load_run, save_run
from tru.config import load_config
from tru.models import BACKBONES, build_backbone
from tru.models.base import Batch
from tru.train.sampler import NegativeSampler

pytestmark = pytest.mark.parametrize("name", sorted(BACKBONES))


def _model(name: str, tiny, seed: int = 7):
    cfg = load_config(name, overrides={"seed": seed, "embedding_size": 16, "device": "cpu"})
    return build_backbone(name, tiny, cfg), cfg


def _batch(tiny, n: int = 64) -> Batch:
    import numpy as np

    rng = np.random.default_rng(0)
    idx = rng.choice(len(tiny.train), n, replace=False)
    users, pos = tiny.train.users[idx], tiny.train.items[idx]
    neg = NegativeSampler(tiny.train, tiny.n_users, tiny.n_items).sample(users, rng)
    return Batch(*(torch.as_tensor(a) for a in (users, pos, neg)))


def test_shapes_scores_and_gradients(name: str, tiny) -> None:
    model, _ = _model(name, tiny)
    model.eval()
    with torch.no_grad():
        u, i = model.forward()
        assert u.shape[0] == tiny.n_users and i.shape[0] == tiny.n_items and u.shape[1] == i.shape[1]
        users = torch.arange(5)
        scores = model.full_sort_predict(users)
        assert scores.shape == (5, tiny.n_items) and torch.isfinite(scores).all()
        pairs = model.score_pairs(users, torch.arange(5))
        assert torch.allclose(pairs, scores[torch.arange(5), torch.arange(5)], atol=1e-4)
    model.train()
    loss = model.calculate_loss(_batch(tiny))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


def test_units_and_branches_cover_every_parameter(name: str, tiny) -> None:
    model, _ = _model(name, tiny)
    named = {n for n, _ in model.named_parameters()}
    in_units = {p for u in model.layer_units() for p in u.params}
    assert in_units == named
    branches = model.parameter_branches()
    assert set(branches) == named
    assert {"id", *tiny.features} <= set(branches.values())  # the ID branch and one branch per modality


def test_training_state_serves_the_same_loss(name: str, tiny) -> None:
    model, _ = _model(name, tiny)
    model.unlearning_mode(dropout=False)
    batch = _batch(tiny)
    state = model.training_state()
    u, i = model.state_embeddings(state)
    assert u.shape[0] == tiny.n_users and i.shape[0] == tiny.n_items
    a, b = model.loss_from_state(state, batch), model.calculate_loss(batch)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_same_seed_same_model_other_seed_other_model(name: str, tiny) -> None:
    a, _ = _model(name, tiny, seed=7)
    b, _ = _model(name, tiny, seed=7)
    c, _ = _model(name, tiny, seed=8)
    sa, sb, sc = (dict(m.state_dict()) for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


def test_rebuild_on_a_subset_and_checkpoint_round_trip(name: str, tiny, tmp_path: Path) -> None:
    model, cfg = _model(name, tiny)
    keep = tiny.train.subset(tiny.train.users != 0)
    model.rebuild(keep)
    model.eval()
    with torch.no_grad():
        before = model.full_sort_predict(torch.arange(tiny.n_users))
    retained = tiny.with_train(keep)
    save_run(tmp_path / "run", model, cfg, retained)
    loaded = load_run(tmp_path / "run", retained).model
    loaded.eval()
    with torch.no_grad():
        after = loaded.full_sort_predict(torch.arange(tiny.n_users))
    assert torch.allclose(before, after, atol=1e-5)
