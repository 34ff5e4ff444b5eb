"""MIG-GT backbone: shapes, loss, deterministic evaluation, rebuild, branch maps, persistence, modalities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import make_tiny_frame
from tru.data.dataset import DataError, RecDataset, load_dataset, write_dataset
from tru.models import build_backbone
from tru.models.base import Batch
from tru.models.miggt import MIGGT, _CSRSpMM, mgdcf_gamma, mgdcf_propagate, sym_pattern_csr

SMALL: dict[str, Any] = {"embedding_size": 8, "feat_hidden_units": 16, "seed": 3}


def _model(ds: RecDataset, **over: Any) -> MIGGT:
    torch.manual_seed(0)
    model = build_backbone("miggt", ds, {**SMALL, **over})
    assert isinstance(model, MIGGT)
    return model


def _batch(ds: RecDataset, n: int = 256, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(ds.train), (n,), generator=g)
    return Batch(
        torch.from_numpy(ds.train.users)[idx],
        torch.from_numpy(ds.train.items)[idx],
        torch.randint(0, ds.n_items, (n,), generator=g),
    )


def _eval_scores(model: MIGGT, n_users: int) -> torch.Tensor:
    with model.eval_cache():
        return model.full_sort_predict(torch.arange(n_users))


def test_shapes_and_structures(tiny: RecDataset) -> None:
    model = _model(tiny)
    u, i = model()
    assert u.shape == (tiny.n_users, 8) and i.shape == (tiny.n_items, 8)
    assert _eval_scores(model, 5).shape == (5, tiny.n_items)
    # the reference trains without item ID embeddings; the visual slot is projected to the text dimension
    assert not hasattr(model, "item_embedding")
    assert model.rp_image.shape == (24, 12) and not hasattr(model, "rp_text")
    assert model.mlp_image[0].in_features == 12 and model.mlp_text[0].in_features == 12
    assert model.depths == {"id": 4, "text": 2, "image": 1}
    # interaction graphs are non-persistent buffers: on the device, never in the state dict
    assert "adj_val" in dict(model.named_buffers())
    assert not any(k.startswith("adj_") for k in model.state_dict())
    assert not any(k.startswith("feat_") for k in model.state_dict())


def test_propagation_matches_dense_mgdcf(tiny: RecDataset) -> None:
    """h ← β·Âh + α·h0 (k times) / γ_k with Â = D^{-1/2}(A+I)D^{-1/2}, checked against dense algebra."""
    model = _model(tiny)
    n = tiny.n_users + tiny.n_items
    a = torch.zeros(n, n)
    a[torch.from_numpy(tiny.train.users), torch.from_numpy(tiny.train.items) + tiny.n_users] = 1.0
    a = a + a.T + torch.eye(n)
    dis = a.sum(1).pow(-0.5)
    a_hat = dis[:, None] * a * dis[None, :]
    h0 = torch.randn(n, 5)
    h = h0
    for _ in range(3):
        h = 0.9 * a_hat @ h + 0.1 * h0
    got = mgdcf_propagate(model.graph, h0, 3, 0.1, 0.9, 0.2, training=False)
    torch.testing.assert_close(got, h / mgdcf_gamma(0.1, 0.9, 3), rtol=1e-5, atol=1e-5)
    assert mgdcf_gamma(0.1, 0.9, 0) == 1.0
    assert mgdcf_gamma(0.1, 0.9, 2) == pytest.approx(0.81 + 0.1 * 1.9)


def test_csr_product_gradient_uses_the_transpose() -> None:
    """With edge dropout Â' is no longer symmetric: the backward must apply Â'ᵀ, not Â'."""
    n = 7
    pattern = (torch.rand(n, n) < 0.4) | torch.eye(n, dtype=torch.bool)
    pattern = pattern | pattern.T
    dense = torch.rand(n, n) * pattern  # symmetric pattern, asymmetric values
    g = sym_pattern_csr(dense.to_sparse())
    x = torch.randn(n, 3, dtype=torch.float32, requires_grad=True)
    y = _CSRSpMM.apply(g["crow"], g["col"], g["val"], g["val"][g["tperm"]], x)
    w = torch.randn(n, 3)
    (y * w).sum().backward()
    torch.testing.assert_close(y, dense @ x)
    torch.testing.assert_close(x.grad, dense.T @ w)
    with pytest.raises(ValueError, match="symmetric"):
        sym_pattern_csr(torch.triu(torch.ones(3, 3)).to_sparse())


def test_loss_finite_and_decreasing(tiny: RecDataset) -> None:
    model = _model(tiny)
    batch = _batch(tiny)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        loss = model.calculate_loss(batch)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    aux = model.auxiliary_loss(batch)
    assert torch.isfinite(aux) and aux.item() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_sum_reduction_scales_loss(tiny: RecDataset) -> None:
    batch = _batch(tiny, n=64)
    mean_model, sum_model = _model(tiny).eval(), _model(tiny, loss_reduction="sum").eval()
    with torch.no_grad():
        ratio = sum_model.calculate_loss(batch) / mean_model.calculate_loss(batch)
    assert ratio.item() == pytest.approx(64.0, rel=1e-4)
    with pytest.raises(ValueError, match="loss_reduction"):
        _model(tiny, loss_reduction="max")


def test_evaluation_is_deterministic(tiny: RecDataset) -> None:
    model = _model(tiny)
    model.train()
    with torch.no_grad():
        t1, t2 = model()[0], model()[0]
    assert not torch.equal(t1, t2)  # training: fresh samples and dropout each pass
    s1, s2 = _eval_scores(model, tiny.n_users), _eval_scores(model, tiny.n_users)
    assert torch.equal(s1, s2)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model()[1], model()[1])


def test_rebuild_changes_propagation(tiny: RecDataset) -> None:
    model = _model(tiny).eval()
    full_nnz = model.adj_val.numel()
    before = _eval_scores(model, tiny.n_users)
    keep = np.arange(len(tiny.train)) % 2 == 0
    model.rebuild(tiny.train.subset(keep))
    assert model.adj_val.numel() < full_nnz
    assert not torch.allclose(_eval_scores(model, tiny.n_users), before)
    model.rebuild(tiny.train)
    assert model.adj_val.numel() == full_nnz
    torch.testing.assert_close(_eval_scores(model, tiny.n_users), before)


def test_branches_cover_every_parameter_once(tiny: RecDataset) -> None:
    model = _model(tiny, use_item_emb=True)
    branches = model.branches()
    assert set(branches) == {"id", "text", "image", "fusion"}
    assert branches["id"] == ["user_embedding", "item_embedding"]
    listed = [name for mods in branches.values() for name in mods]
    assert len(listed) == len(set(listed))
    units = model.layer_units()
    covered = [p for u in units for p in u.params]
    assert sorted(covered) == sorted(n for n, _ in model.named_parameters())
    assert len(covered) == len(set(covered))
    by_name = {u.name: u for u in units}
    assert by_name["user_embedding"].kind == "table" and by_name["user_embedding"].axis == "user"
    assert by_name["item_embedding"].axis == "item"
    assert by_name["mlp_text"].branch == "text" and by_name["mlp_image"].branch == "image"
    assert by_name["transformer"].branch == "fusion"


def test_random_projection_survives_state_dict(tiny: RecDataset, tmp_path: Path) -> None:
    a = _model(tiny, seed=1).eval()
    b = _model(tiny, seed=2).eval()
    assert not torch.equal(a.rp_image, b.rp_image)
    path = tmp_path / "miggt.pt"
    torch.save(a.state_dict(), path)
    b.load_state_dict(torch.load(path))
    assert torch.equal(a.rp_image, b.rp_image)
    torch.testing.assert_close(_eval_scores(a, 10), _eval_scores(b, 10))


def test_three_modalities_and_custom_depths(tmp_path: Path) -> None:
    df, feats = make_tiny_frame(n_users=60, n_items=40, dims={"image": 20, "text": 10, "audio": 6})
    write_dataset(tmp_path / "d3", "d3", df, feats)
    ds = load_dataset(tmp_path / "d3", validate=False)
    model = _model(ds, k_audio=3, k_image=-1)
    assert model.depths == {"id": 4, "image": -1, "text": 2, "audio": 3}
    assert not hasattr(model, "mlp_image")  # k < 0 switches a branch off
    assert model.branches()["image"] == [] and model.branches()["audio"] == ["mlp_audio"]
    assert model.rp_audio.shape == (6, 10) and model.rp_image.shape == (20, 10)
    loss = model.calculate_loss(_batch(ds, n=64))
    loss.backward()
    assert torch.isfinite(loss)
    assert _eval_scores(model, ds.n_users).shape == (ds.n_users, ds.n_items)


def test_without_text_projects_to_first_modality(tmp_path: Path) -> None:
    df, feats = make_tiny_frame(n_users=40, n_items=30, dims={"visual": 9, "audio": 5})
    write_dataset(tmp_path / "d2", "d2", df, feats)
    ds = load_dataset(tmp_path / "d2", validate=False)
    model = _model(ds)
    assert not hasattr(model, "rp_visual") and model.rp_audio.shape == (5, 9)
    assert model.depths == {"id": 4, "visual": 1, "audio": 1}
    assert torch.isfinite(model.calculate_loss(_batch(ds, n=32)))


def test_bad_modality_name_is_rejected(tiny: RecDataset) -> None:
    feats = {"fusion": tiny.features["text"]}
    bad = RecDataset(
        tiny.name, tiny.n_users, tiny.n_items, tiny.train, tiny.valid, tiny.test, feats, tiny.manifest
    )
    with pytest.raises(DataError, match="fusion"):
        MIGGT(bad, SMALL)


def test_isolated_nodes_get_no_self_loop_unless_asked(tiny: RecDataset) -> None:
    """After a rebuild without some items' edges, an isolated node propagates to α·h0 (no neighbours to
    average; ``isolated_self_loop: false``), not to its own input at full weight (the reference's A + I);
    connected nodes are unchanged either way, and training data without isolated nodes gives the same
    graph."""
    items = np.array([0, 1])
    train = tiny.train.subset(~np.isin(tiny.train.items, items))
    iso = tiny.n_users + items
    h0 = torch.randn(tiny.n_users + tiny.n_items, 5)
    outs = {}
    for loop in (False, True):
        model = _model(tiny, isolated_self_loop=loop)
        full = model.adj_val.clone()
        model.rebuild(train)
        outs[loop] = mgdcf_propagate(model.graph, h0, 3, 0.1, 0.9, 0.2, training=False)
        model.rebuild(tiny.train)
        assert torch.equal(model.adj_val, full)  # no isolated node in training data: identical graphs
    torch.testing.assert_close(outs[False][iso], 0.1 * h0[iso])
    torch.testing.assert_close(outs[True][iso], h0[iso])
    rest = np.setdiff1d(np.arange(len(h0)), iso)
    torch.testing.assert_close(outs[False][rest], outs[True][rest])


def test_initial_rows_repeat_the_constructor(tiny: RecDataset) -> None:
    model = build_backbone("miggt", tiny, {**SMALL, "seed": 11})
    rows = model.initial_rows(11)
    fresh = build_backbone("miggt", tiny, {**SMALL, "seed": 11})
    assert torch.equal(rows["user_embedding.weight"], fresh.user_embedding.weight.detach())
    users = np.array([2, 5])
    trained = tiny.train.subset(~np.isin(tiny.train.users, users))
    with torch.no_grad():
        model.user_embedding.weight.mul_(3.0)
    reset = model.reset_untrained_rows(trained, 11)
    assert set(reset) == {"user_embedding.weight"} and list(reset["user_embedding.weight"]) == [2, 5]
    assert torch.equal(model.user_embedding.weight[users], fresh.user_embedding.weight[users])
    assert torch.equal(model.user_embedding.weight[0], 3.0 * fresh.user_embedding.weight[0])
