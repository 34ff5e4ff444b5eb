"""Coupled rank targets (tru.unlearn.coupling): the monotone coupling, the per-pair target item j*, and TRU
in the interaction regime moving the deleted pairs onto the retrain-free reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tru.data.dataset import Pairs
from tru.eval.rank import rank_percentiles, wasserstein1
from tru.unlearn.api import run_unlearning, unlearn_config
from tru.unlearn.coupling import CoupledTargets, monotone_coupling
from tru.unlearn.targets import forget_target

from .test_unlearn import interaction_spec


def test_monotone_coupling_keeps_the_order_and_lands_on_the_reference() -> None:
    rng = np.random.default_rng(0)
    start = rng.uniform(0.0, 0.3, 400)
    reference = rng.beta(2, 5, 1000)
    t = monotone_coupling(start, reference)
    # order kept: the pair ranked highest at the start has the highest target
    assert np.all(np.diff(t[np.argsort(start)]) >= 0)
    # the targets are the reference's quantiles: W1 to it far below the start's
    assert wasserstein1(t, reference) < 0.01 < wasserstein1(start, reference)
    assert t.min() >= reference.min() and t.max() <= reference.max()
    # a small exact case: three pairs onto {0.1, 0.5, 0.9}: the k-th smallest start gets R's quantile at
    # (k + ½)/3, linearly interpolated (numpy's default): 0.1 + 0.4·(1/3), 0.5, 0.5 + 0.4·(2/3)
    got = monotone_coupling(np.array([0.3, 0.1, 0.2]), np.array([0.9, 0.1, 0.5]))
    np.testing.assert_allclose(got, [0.5 + 0.4 * 2 / 3, 0.1 + 0.4 / 3, 0.5])
    with pytest.raises(ValueError, match="non-empty reference"):
        monotone_coupling(start, np.zeros(0))
    assert len(monotone_coupling(np.zeros(0), reference)) == 0


def _targets(seen_pairs: list[tuple[int, int]], n_users: int, n_items: int, coupled, pct) -> CoupledTargets:
    seen = Pairs(np.array([u for u, _ in seen_pairs]), np.array([i for _, i in seen_pairs])).csr(
        n_users, n_items
    )
    keys = np.array([u * n_items + i for u, i in coupled], np.int64)
    order = np.argsort(keys)
    return CoupledTargets(keys[order], np.asarray(pct, float)[order], seen, n_items)


def test_the_loss_pushes_a_pair_above_its_target_against_the_item_at_the_target_rank() -> None:
    n_items = 6
    # one user; item scores = item embedding's first coordinate (user embedding (1, 0))
    u_all = torch.tensor([[1.0, 0.0]], requires_grad=True)
    i_all = torch.tensor([[6.0, 0], [5.0, 0], [4.0, 0], [3.0, 0], [2.0, 0], [1.0, 0]], requires_grad=True)
    # item 0 is the deleted pair, item 5 in D_r: candidates {1, 2, 3, 4} (4 items), ranked 1 > 2 > 3 > 4
    ct = _targets([(0, 0), (0, 5)], 1, n_items, [(0, 0)], [0.5])
    hit, pct = ct.lookup(np.array([0, 0]), np.array([0, 3]))
    assert hit.tolist() == [True, False] and pct[0] == 0.5
    loss = ct.loss(torch.tensor([0]), torch.tensor([0]), pct[:1], u_all, i_all)
    # target rank ⌊0.5 · 4⌋ = 2: j* = item 3 (score 3); the loss is s_u0 − s_u3 = 6 − 3
    assert float(loss) == pytest.approx(3.0)
    loss.backward()
    # the gradient moves the pair's item down and j* up (not u's scale alone)
    assert i_all.grad[0, 0] > 0 and i_all.grad[3, 0] < 0
    assert torch.all(i_all.grad[[1, 2, 4, 5]] == 0)
    # a pair already at or below its target contributes nothing
    low = _targets([(0, 0), (0, 5)], 1, n_items, [(0, 0)], [0.0])
    i_low = i_all.detach().clone()
    i_low[0, 0] = 0.5  # below every candidate
    assert float(low.loss(torch.tensor([0]), torch.tensor([0]), np.array([0.0]), u_all, i_low)) == 0.0
    # a user who has seen every item has no candidate, so no target item: no push (not below a seen item)
    full = _targets([(0, i) for i in range(n_items)], 1, n_items, [(0, 5)], [0.5])
    rising = torch.tensor([[1.0, 0], [2.0, 0], [3.0, 0], [4.0, 0], [5.0, 0], [6.0, 0]])
    assert float(full.loss(torch.tensor([0]), torch.tensor([5]), np.array([0.5]), u_all, rising)) == 0.0


@pytest.fixture(scope="module")
def trained_interaction(tmp_path_factory):
    from .conftest import train_tiny

    frame = {"n_users": 150, "n_items": 90, "per_user": 14, "seed": 2}
    return train_tiny(tmp_path_factory.mktemp("coupling") / "tiny", "mgcn", epochs=12, seed=5, frame=frame)


def test_tru_moves_deleted_interaction_pairs_onto_the_reference(trained_interaction) -> None:
    """The coupled term alone (λ_r = 0; a small rate: this model's rows are small, and one Adam step at
    the default rate moves them past the reference) moves D_f's percentiles onto the retrain-free
    reference, the model's own held-out pairs of the same users (0.082 -> 0.011); the top_k gate
    (rfg_target: top_k) is a different update; the coupling's reference is the interaction part of the
    target."""
    ds, model, cfg = trained_interaction
    spec = interaction_spec(ds, frac=0.1, seed=1)
    over = dict(
        max_steps=60,
        check_every=5,
        min_retain_ratio=0.0,
        cli=False,
        bms=False,
        lambda_r=0.0,
        learning_rate=0.0003,
    )
    target = forget_target(model, ds, spec, unlearn_config(cfg, over).rows_seed)
    assert len(target.interaction_percentiles) == target.summary()["n_reference_pairs"] > 0

    held = ds.test.subset(np.isin(ds.test.users, spec.forget.users))

    def w1(m) -> float:
        """D_f's percentiles against the same model's held-out (test) pairs of the same users."""
        with torch.no_grad():
            p = rank_percentiles(m, spec.forget, spec.retain, ds.n_users, ds.n_items)
            ref = rank_percentiles(m, held, ds.train, ds.n_users, ds.n_items)
        return wasserstein1(p, ref)

    coupled = run_unlearning("tru", model, ds, spec, cfg, unlearn_config(cfg, over))
    top_k = run_unlearning("tru", model, ds, spec, cfg, unlearn_config(cfg, {**over, "rfg_target": "top_k"}))
    start = coupled.report["history"][0]["rank_w1"]
    # at this rate W1 falls at every check until the set is level with the reference
    assert w1(coupled.model) < 0.3 * start
    assert any(
        not torch.equal(a, b)
        for a, b in zip(coupled.model.parameters(), top_k.model.parameters(), strict=True)
    )


def test_coupled_targets_cover_only_interaction_pairs(trained_interaction) -> None:
    ds, model, _cfg = trained_interaction
    spec = interaction_spec(ds, frac=0.1, seed=1)
    ct = CoupledTargets.build(model, spec.forget, spec.retain, np.linspace(0, 1, 50), ds.n_users, ds.n_items)
    hit, pct = ct.lookup(spec.forget.users, spec.forget.items)
    assert hit.all() and np.all((pct >= 0) & (pct <= 1))
    other = Pairs(spec.retain.users[:20], spec.retain.items[:20])
    assert not ct.lookup(other.users, other.items)[0].any()
    # u's D_r and D_f items are never a target item j*
    assert np.all(np.asarray(ct.seen[spec.retain.users, spec.retain.items]) > 0)
    assert np.all(np.asarray(ct.seen[spec.forget.users, spec.forget.items]) > 0)
    assert ct.seen.nnz == len(spec.retain) + len(spec.forget)


def test_a_mixed_manifest_couples_its_interaction_pairs_and_gates_the_rest(
    trained_interaction, monkeypatch
) -> None:
    """A manifest with a deleted user, a target item and some interaction pairs: the coupled term sees
    only the interaction pairs, the gate only the target item's (the deleted user's pairs leave the
    forget term: the exact part reset that row), and the run completes with the coupled stop rule."""
    from tru.forget.spec import ForgetSpec
    from tru.unlearn import engine

    ds, model, cfg = trained_interaction
    inter = interaction_spec(ds, frac=0.08, seed=3)
    tr = ds.train
    user = int(np.setdiff1d(tr.users, inter.forget.users)[0])
    item = int(np.bincount(tr.items, minlength=ds.n_items).argmax())
    keys = lambda p: p.users * ds.n_items + p.items  # noqa: E731
    pick = (tr.users == user) | (tr.items == item) | np.isin(keys(tr), keys(inter.forget))
    keep = lambda p: p.subset((p.users != user) & (p.items != item))  # noqa: E731
    spec = ForgetSpec(
        "mixed", tr.subset(pick), tr.subset(~pick), np.asarray([user]), np.asarray([item]), keep(ds.valid),
        keep(ds.test), ["r-user", "r-item", "r-pairs"],
    )  # fmt: skip
    coupled_pairs: list[tuple[np.ndarray, np.ndarray]] = []
    gated_pairs: list[tuple[np.ndarray, np.ndarray]] = []
    coupled_loss, gate_loss = engine.CoupledTargets.loss, engine.RankingFusionGate.loss

    def spy_coupled(self, users, items, target_pct, u_all, i_all):
        coupled_pairs.append((users.cpu().numpy(), items.cpu().numpy()))
        return coupled_loss(self, users, items, target_pct, u_all, i_all)

    def spy_gate(self, batch, pos, neg, u_all, i_all):
        gated_pairs.append((batch.users.cpu().numpy(), batch.pos.cpu().numpy()))
        return gate_loss(self, batch, pos, neg, u_all, i_all)

    monkeypatch.setattr(engine.CoupledTargets, "loss", spy_coupled)
    monkeypatch.setattr(engine.RankingFusionGate, "loss", spy_gate)
    over = dict(max_steps=10, check_every=5, min_retain_ratio=0.0, learning_rate=0.0003)
    out = run_unlearning("tru", model, ds, spec, cfg, unlearn_config(cfg, over))
    cu = np.concatenate([u for u, _ in coupled_pairs])
    ci = np.concatenate([i for _, i in coupled_pairs])
    gu = np.concatenate([u for u, _ in gated_pairs])
    gi = np.concatenate([i for _, i in gated_pairs])
    assert len(cu) and len(gu)
    assert np.all(np.isin(keys(Pairs(cu, ci)), keys(inter.forget))) and item not in ci
    assert np.all(gi == item) and user not in gu and user not in cu
    assert "reference_pct_mean" in out.report["history"][0]


@pytest.mark.parametrize("kind", ["user", "item", "interaction"])
def test_without_interaction_pairs_the_coupled_setting_changes_nothing(
    trained_interaction, kind, monkeypatch
) -> None:
    """A user or item deletion has no pair to couple: the checker keeps the rank_tolerance stop rule
    against the proxy reference, and TRU with ``rfg_target: coupled`` is bit for bit TRU with ``top_k``
    (without the exact part, so that the start is not already the proxy and the update runs)."""
    from tru.unlearn import engine

    from .test_unlearn_exact import item_spec, user_spec

    ds, model, cfg = trained_interaction
    counts = np.bincount(ds.train.items, minlength=ds.n_items)
    spec = {
        "user": lambda: user_spec(ds, np.arange(5)),
        "item": lambda: item_spec(ds, np.argsort(-counts)[:2]),
        "interaction": lambda: interaction_spec(ds, frac=0.1, seed=1),
    }[kind]()
    rules: list[bool] = []
    init = engine.Checker.__init__

    def spy(self, *args, coupled: bool = False, **kwargs) -> None:
        rules.append(coupled)
        init(self, *args, coupled=coupled, **kwargs)

    monkeypatch.setattr(engine.Checker, "__init__", spy)
    over = dict(max_steps=30, check_every=5, learning_rate=0.001, exact=False)
    a = run_unlearning("tru", model, ds, spec, cfg, unlearn_config(cfg, over))
    b = run_unlearning("tru", model, ds, spec, cfg, unlearn_config(cfg, {**over, "rfg_target": "top_k"}))
    assert rules == [kind == "interaction", False]
    if kind != "interaction":
        assert a.report["stop_reason"] == b.report["stop_reason"] and a.report["steps"] == b.report["steps"]
        assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True))


def test_a_start_within_the_rank_tolerance_needs_no_coupled_update(trained_interaction) -> None:
    """Coupled runs stop at the start when W1 to the reference is already within ``rank_tolerance``
    (MIG-GT's rebuilt start); otherwise they run."""
    ds, model, cfg = trained_interaction
    spec = interaction_spec(ds, frac=0.1, seed=1)
    over = dict(max_steps=10, check_every=5, learning_rate=0.0003, exact=False)
    loose = run_unlearning("tru", model, ds, spec, cfg, unlearn_config(cfg, {**over, "rank_tolerance": 0.5}))
    tight = run_unlearning("tru", model, ds, spec, cfg, unlearn_config(cfg, {**over, "rank_tolerance": 0.0}))
    assert loose.report["no_update"] and loose.report["steps"] == 0
    assert loose.report["stop_reason"] == "no update (forget target met at the start)"
    assert tight.report["steps"] > 0 and not tight.report["no_update"]
