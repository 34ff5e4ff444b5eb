"""MGCN backbone: shapes, training signal, graphs (rebuild, kNN, item dropping), unlearning maps, state
round trips, M = 1 / 2 / 3 modalities, and equality with MMRec's two-slot equations (dense re-derivation)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from tru.config import load_config
from tru.data.dataset import DataError, RecDataset, load_dataset, write_dataset
from tru.models import build_backbone
from tru.models.base import Batch
from tru.models.mgcn import MGCN, info_nce, info_nce_rows, sparse_mm
from tru.train.trainer import Trainer

from .conftest import make_tiny_frame


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These graphs are tiny: one intra-op thread is faster, and far faster on a shared, loaded machine
    (OpenMP threads spin-waiting on each other); the global setting is restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg(**over: object) -> dict:
    return load_config("mgcn", overrides={"seed": 3, "device": "cpu", "train_batch_size": 256, **over})


def _model(ds: RecDataset, **over: object) -> MGCN:
    model = build_backbone("mgcn", ds, _cfg(**over))
    assert isinstance(model, MGCN)
    return model


def _dataset(tmp_path: Path, dims: dict[str, int], name: str = "d") -> RecDataset:
    df, feats = make_tiny_frame(n_users=60, n_items=40, per_user=10, dims=dims)
    write_dataset(tmp_path / name, name, df, feats)
    return load_dataset(tmp_path / name, validate=False)


def _batch(ds: RecDataset, n: int = 128, seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ds.train), n)
    return Batch(
        torch.from_numpy(ds.train.users[idx]),
        torch.from_numpy(ds.train.items[idx]),
        torch.from_numpy(rng.integers(0, ds.n_items, n)),
    )


def _dense(t: torch.Tensor) -> torch.Tensor:
    return t.to_dense()


def test_config_defaults() -> None:
    cfg = load_config("mgcn")
    assert (cfg["embedding_size"], cfg["n_ui_layers"], cfg["n_layers"], cfg["knn_k"]) == (64, 2, 1, 10)
    assert (cfg["reg_weight"], cfg["cl_loss"], cfg["cl_temperature"]) == (1e-4, 0.01, 0.2)


def test_forward_shapes_and_scores(tiny) -> None:
    model = _model(tiny)
    users, items = model()
    assert users.shape == (tiny.n_users, 64) and items.shape == (tiny.n_items, 64)
    assert torch.isfinite(users).all() and torch.isfinite(items).all()
    with model.eval_cache():
        scores = model.full_sort_predict(torch.arange(5))
        pair = model.score_pairs(torch.arange(5), torch.full((5,), 3))
    assert scores.shape == (5, tiny.n_items)
    assert torch.allclose(scores[:, 3], pair)


def test_loss_finite_and_decreasing(tiny) -> None:
    model = _model(tiny)
    batch = _batch(tiny)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = model.calculate_loss(batch)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
    aux = model.auxiliary_loss(batch)
    bpr, reg, cl = model._loss_terms(batch)
    assert aux.item() == pytest.approx((reg + cl).item(), rel=1e-6)
    assert model.calculate_loss(batch).item() == pytest.approx((bpr + reg + cl).item(), rel=1e-6)


def test_every_parameter_gets_a_gradient(tiny) -> None:
    model = _model(tiny)
    model.calculate_loss(_batch(tiny)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_sparse_mm_gradient_matches_dense() -> None:
    g = torch.Generator().manual_seed(0)
    dense = torch.rand(7, 5, generator=g) * (torch.rand(7, 5, generator=g) < 0.4)
    coo = dense.to_sparse()
    x = torch.randn(5, 3, generator=g, requires_grad=True)
    y = sparse_mm(coo.to_sparse_csr(), coo.t().coalesce().to_sparse_csr(), x)
    w = torch.randn(7, 3, generator=g)
    (y * w).sum().backward()
    assert torch.allclose(y, dense @ x.detach(), atol=1e-6)
    assert torch.allclose(x.grad, dense.T @ w, atol=1e-6)


def test_info_nce_over_distinct_ids_equals_batch_form() -> None:
    g = torch.Generator().manual_seed(1)
    t1 = torch.randn(30, 8, generator=g, requires_grad=True)
    t2 = torch.randn(30, 8, generator=g, requires_grad=True)
    ids = torch.randint(0, 12, (50,), generator=g)  # many repeats, as in a BPR batch
    full = info_nce(t1[ids], t2[ids], 0.2)
    grads_full = torch.autograd.grad(full, [t1, t2])
    rows = info_nce_rows(t1, t2, ids, 0.2)
    grads_rows = torch.autograd.grad(rows, [t1, t2])
    assert rows.item() == pytest.approx(full.item(), rel=1e-5)
    for a, b in zip(grads_rows, grads_full):
        assert torch.allclose(a, b, atol=1e-6)
    # the plain form is MMRec's −log(exp(pos/τ) / Σ exp(·/τ))
    a, b = F.normalize(t1[ids], dim=1), F.normalize(t2[ids], dim=1)
    ref = -torch.log(torch.exp((a * b).sum(1) / 0.2) / torch.exp(a @ b.T / 0.2).sum(1)).mean()
    assert full.item() == pytest.approx(ref.item(), rel=1e-5)


def test_rebuild_changes_ui_graph_not_knn(tiny) -> None:
    model = _model(tiny)
    adj, r = _dense(model.norm_adj), _dense(model.R)
    knn = {m: _dense(getattr(model, f"knn_{m}")) for m in model.modalities}
    keep = np.arange(len(tiny.train)) % 3 != 0
    subset = tiny.train.subset(keep)
    model.rebuild(subset)
    assert not torch.equal(adj, _dense(model.norm_adj))
    assert not torch.equal(r, _dense(model.R))
    r_csr, r_csr_t = model.graph("R")
    assert torch.equal(r_csr.to_dense(), _dense(model.R))
    assert torch.equal(r_csr_t.to_dense(), _dense(model.R).T)
    # R̂ has edges exactly on the subset's pairs
    nz = _dense(model.R).nonzero().numpy()
    expect = np.unique(subset.keys(tiny.n_items))
    assert np.array_equal(np.sort(nz[:, 0] * tiny.n_items + nz[:, 1]), expect)
    for m in model.modalities:
        assert torch.equal(knn[m], _dense(getattr(model, f"knn_{m}")))
    # back to the full train split: the original graph again
    model.rebuild(tiny.train)
    assert torch.equal(adj, _dense(model.norm_adj))


def test_graphs_are_non_persistent_buffers(tiny) -> None:
    model = _model(tiny)
    keys = set(model.state_dict())
    buffers = dict(model.named_buffers())
    for name in ["norm_adj", "R", *[f"knn_{m}" for m in model.modalities]]:
        assert name in buffers and name not in keys and buffers[name].is_sparse
    assert "dropped_items" in keys
    # a deep copy (e.g. the original model kept beside an unlearned one) is independent and equal
    twin = copy.deepcopy(model)
    with torch.no_grad():
        assert torch.equal(torch.cat(model()), torch.cat(twin()))
        twin.user_embedding.weight.add_(1.0)
        assert not torch.equal(torch.cat(model()), torch.cat(twin()))


def test_branches_and_layer_units_cover_parameters_once(tiny) -> None:
    model = _model(tiny)
    branches = model.branches()
    assert branches["id"] == ["user_embedding", "item_id_embedding"]
    assert branches["fusion"] == ["query_common"]
    for m in ("image", "text"):
        assert branches[m] == [f"feat_{m}", f"proj_{m}", f"purifier_{m}", f"prefer_{m}"]
    listed = [name for mods in branches.values() for name in mods]
    assert len(listed) == len(set(listed))
    children = {n for n, c in model.named_children() if any(True for _ in c.parameters())}
    assert set(listed) == children
    units = model.layer_units()
    params = [p for u in units for p in u.params]
    assert sorted(params) == sorted(n for n, _ in model.named_parameters())
    assert len(params) == len(set(params))
    kinds = {u.name: (u.kind, u.axis, u.branch) for u in units}
    assert kinds["user_embedding"] == ("table", "user", "id")
    assert kinds["item_id_embedding"] == ("table", "item", "id")
    assert kinds["feat_text"] == ("table", "item", "text")
    assert kinds["proj_image"] == ("dense", None, "image")
    assert kinds["query_common"] == ("dense", None, "fusion")


@pytest.mark.parametrize("dims", [{"image": 10}, {"text": 8, "audio": 6, "image": 12}])
def test_other_modality_counts(tmp_path: Path, dims: dict[str, int]) -> None:
    ds = _dataset(tmp_path, dims)
    model = _model(ds)
    users, items = model()
    assert users.shape == (ds.n_users, 64) and items.shape == (ds.n_items, 64)
    loss = model.calculate_loss(_batch(ds, 64))
    loss.backward()
    assert torch.isfinite(loss)
    assert set(model.branches()) == {"id", "fusion", *dims}
    assert model.modalities[-1] == ("text" if "text" in dims else list(dims)[-1])
    assert len([u for u in model.layer_units() if u.axis == "item"]) == 1 + len(dims)


def test_reserved_modality_name_is_refused(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, {"fusion": 6, "text": 5})
    with pytest.raises(DataError, match="fusion"):
        _model(ds)


def test_state_dict_round_trip_reproduces_scores(tiny) -> None:
    model = _model(tiny)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for seed in range(3):
        opt.zero_grad()
        model.calculate_loss(_batch(tiny, seed=seed)).backward()
        opt.step()
    model.drop_items_from_content_graphs(torch.tensor([1, 4]))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fresh = _model(tiny, seed=11)
    fresh.load_state_dict(state)
    with model.eval_cache(), fresh.eval_cache():
        users = torch.arange(tiny.n_users)
        assert torch.equal(model.full_sort_predict(users), fresh.full_sort_predict(users))
    for m in model.modalities:
        assert torch.equal(_dense(getattr(model, f"knn_{m}")), _dense(getattr(fresh, f"knn_{m}")))


def test_drop_items_removes_knn_edges(tiny) -> None:
    model = _model(tiny)
    before = {m: _dense(getattr(model, f"knn_{m}")) for m in model.modalities}
    drop = torch.tensor([0, 5, 9])
    touched = (before["text"][:, drop] > 0).any(dim=1)
    model.drop_items_from_content_graphs(drop)
    assert model.dropped_items[drop].all() and int(model.dropped_items.sum()) == 3
    for m in model.modalities:
        after = _dense(getattr(model, f"knn_{m}"))
        assert (after[drop] == 0).all() and (after[:, drop] == 0).all()
        assert torch.equal(after.T, model.graph(f"knn_{m}")[1].to_dense())
        rows = after.nonzero()[:, 0]
        kept = torch.ones(tiny.n_items, dtype=torch.bool)
        kept[drop] = False
        # every kept item still has k neighbours (a replacement for each dropped one)
        assert torch.equal(
            torch.bincount(rows, minlength=tiny.n_items)[kept], torch.full((int(kept.sum()),), model.knn_k)
        )
    assert touched.any()  # the dropped items were somebody's neighbours, and got replaced
    # the UI graph is untouched, and the model still trains
    assert torch.isfinite(model.calculate_loss(_batch(tiny)))
    model.drop_items_from_content_graphs(torch.tensor([5, 7]))
    assert int(model.dropped_items.sum()) == 4
    with pytest.raises(ValueError, match="item ids"):
        model.drop_items_from_content_graphs(torch.tensor([tiny.n_items]))


def _mmrec_two_slot(model: MGCN, v: str, t: str) -> tuple[torch.Tensor, torch.Tensor]:
    """MMRec's MGCN.forward written out with dense matrices and its image ("v") / text ("t") slots."""
    adj, r = _dense(model.norm_adj), _dense(model.R)
    img_adj, txt_adj = _dense(getattr(model, f"knn_{v}")), _dense(getattr(model, f"knn_{t}"))
    image_feats = getattr(model, f"proj_{v}")(getattr(model, f"feat_{v}").weight)
    text_feats = getattr(model, f"proj_{t}")(getattr(model, f"feat_{t}").weight)
    iid = model.item_id_embedding.weight
    image_item = iid * torch.sigmoid(F.linear(image_feats, *getattr(model, f"purifier_{v}")[0].parameters()))
    text_item = iid * torch.sigmoid(F.linear(text_feats, *getattr(model, f"purifier_{t}")[0].parameters()))
    ego = torch.cat([model.user_embedding.weight, iid])
    layers = [ego]
    for _ in range(2):
        ego = adj @ ego
        layers.append(ego)
    content = torch.stack(layers, 1).mean(1)
    image_item, text_item = img_adj @ image_item, txt_adj @ text_item
    image = torch.cat([r @ image_item, image_item])
    text = torch.cat([r @ text_item, text_item])
    w = torch.softmax(torch.cat([model.query_common(image), model.query_common(text)], -1), -1)
    common = w[:, :1] * image + w[:, 1:] * text
    sep_image = getattr(model, f"prefer_{v}")(content) * (image - common)
    sep_text = getattr(model, f"prefer_{t}")(content) * (text - common)
    side = (sep_image + sep_text + common) / 3
    return content, side


def test_two_modalities_equal_mmrec_equations(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, {"text": 9, "audio": 7})  # text listed first: still MMRec's "t" slot
    model = _model(ds)
    assert model.modalities == ["audio", "text"]
    content, side = model._views()
    ref_content, ref_side = _mmrec_two_slot(model, "audio", "text")
    assert torch.allclose(content, ref_content, atol=1e-6)
    assert torch.allclose(side, ref_side, atol=1e-6)
    users, items = model()
    assert torch.allclose(torch.cat([users, items]), ref_content + ref_side, atol=1e-6)


def test_trainer_fits_mgcn(tiny) -> None:
    cfg = _cfg(epochs=2, stopping_step=5)
    model = build_backbone("mgcn", tiny, cfg)
    result = Trainer(model, tiny, cfg, log=lambda _s: None).fit()
    assert result.epochs_run == 2 and np.isfinite(result.test["recall@20"])
