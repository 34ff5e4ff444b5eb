"""Seed-scale noise on the start (tru.unlearn.seed_noise): the Δz attack AUC reaches the target, the
exact part's rows keep their value, nothing happens without a target."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tru.unlearn.api import prepare_start, run_unlearning, unlearn_config
from tru.unlearn.seed_noise import _Attack, add_seed_noise, sample_pairs, seed_attack_auc, shift_auc

from .test_unlearn_exact import _cfg, _trained


def interaction_spec(ds, n: int, seed: int = 0):
    from tru.forget.spec import ForgetSpec

    rng = np.random.default_rng(seed)
    pick = np.zeros(len(ds.train), bool)
    pick[rng.choice(len(ds.train), n, replace=False)] = True
    tr = ds.train
    return ForgetSpec(
        "interaction", tr.subset(pick), tr.subset(~pick), np.zeros(0, np.int64), np.zeros(0, np.int64),
        ds.valid, ds.test, ["r-pairs"],
    )  # fmt: skip


def test_the_start_reaches_the_target_auc_and_the_exact_rows_keep_their_value(data) -> None:
    original, cfg = _trained(data, "miggt", epochs=3)
    spec = interaction_spec(data, 80)
    ucfg = unlearn_config(cfg, {"seed": 5})
    start = copy.deepcopy(original)
    exact = prepare_start(start, spec, ucfg)
    exact = {**exact, "user_embedding.weight": np.arange(4)}  # rows that must keep their value
    forget, held_out = sample_pairs(spec.forget, 5), sample_pairs(spec.valid, 5)
    attack = _Attack(original, forget, held_out)
    before = attack(start)
    target = before - 0.05  # within reach of σ ≤ 1 on this tiny model (σ = 1: 0.84 from 0.94)
    kept = start.user_embedding.weight[:4].clone()
    noise = add_seed_noise(start, original, forget, held_out, target, exact, seed=5)
    assert noise.reached and 0 < noise.sigma < 1 and noise.auc_before == pytest.approx(before)
    out_of_reach = add_seed_noise(copy.deepcopy(start), original, forget, held_out, 0.5, exact, seed=5)
    assert out_of_reach.sigma == 1.0 and not out_of_reach.reached and out_of_reach.auc > 0.51
    assert abs(noise.auc - target) <= 0.01, noise
    assert attack(start) == pytest.approx(noise.auc)  # the model holds that σ
    assert torch.equal(kept, start.user_embedding.weight[:4])
    assert not torch.equal(start.user_embedding.weight[4:], original.user_embedding.weight[4:])
    again = copy.deepcopy(original)  # seeded: the same call gives the same model
    prepare_start(again, spec, ucfg)
    add_seed_noise(again, original, forget, held_out, target, exact, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), start.parameters(), strict=True))


def test_a_start_at_the_target_is_left_alone_and_a_bad_target_is_refused(data) -> None:
    original, _ = _trained(data, "miggt", epochs=2)
    spec = interaction_spec(data, 80)
    model = copy.deepcopy(original)
    forget, held_out = sample_pairs(spec.forget, 0), sample_pairs(spec.valid, 0)
    before = [p.detach().clone() for p in model.parameters()]
    noise = add_seed_noise(model, original, forget, held_out, 0.6, {}, seed=1)  # unchanged model: AUC ½
    assert noise.sigma == 0.0 and noise.auc_before == 0.5
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    for bad in (0.0, 0.4, 1.0, float("nan")):
        with pytest.raises(ValueError, match=r"in \[0.5, 1\)"):
            add_seed_noise(model, original, forget, held_out, bad, {}, seed=1)


def test_shift_auc_is_mann_whitney() -> None:
    assert shift_auc(np.array([-1.0, -2.0]), np.array([0.0, 1.0])) == 1.0
    assert shift_auc(np.array([0.0]), np.array([0.0])) == 0.5
    assert shift_auc(np.array([1.0, -1.0]), np.array([0.0])) == 0.5


def test_a_retrain_moves_deleted_pairs_more_than_held_out_ones(data) -> None:
    original, cfg = _trained(data, "miggt", epochs=3, seed=3)
    spec = interaction_spec(data, 120)
    retrain = run_unlearning("retrain", original, data, spec, {**cfg, "epochs": 3}, _cfg(cfg, seed=4)).model
    forget, held_out = sample_pairs(spec.forget, 0), sample_pairs(spec.valid, 0)
    aucs = seed_attack_auc(original, [retrain, original], forget, held_out)
    assert aucs[0] > 0.5 and aucs[1] == 0.5


def test_the_unlearning_report_says_what_the_noise_did(data) -> None:
    original, cfg = _trained(data, "miggt", epochs=3)
    spec = interaction_spec(data, 80)
    assert unlearn_config(cfg, {}).seed_noise  # MIG-GT's default
    off = run_unlearning("tru", original, data, spec, cfg, _cfg(cfg, seed=2))
    assert off.report["seed_noise"] is None  # no target known: no noise
    on = run_unlearning("tru", original, data, spec, cfg, _cfg(cfg, seed=2, seed_noise_auc=0.55))
    report = on.report["seed_noise"]
    assert report["target_auc"] == 0.55 and 0 < report["sigma"] <= 1
    assert report["reached"] == (abs(report["auc"] - 0.55) <= 0.01)
    assert report["reached"] or report["sigma"] == 1.0
    assert on.report["params_changed"] > off.report["params_changed"]


def test_a_deletion_of_users_takes_no_noise(data) -> None:
    """The exact part already gives deleted users' pairs what a retrain leaves; noise aimed at them hurt
    (seed_noise.attack_pairs)."""
    from .test_unlearn_exact import user_spec

    original, cfg = _trained(data, "miggt", epochs=2)
    out = run_unlearning(
        "tru", original, data, user_spec(data, np.arange(6)), cfg, _cfg(cfg, seed_noise_auc=0.6)
    )
    assert out.report["seed_noise"] is None


def test_the_noise_target_of_a_retrain_auc_lies_where_the_noise_can_aim() -> None:
    """Retrains the attack scores under chance ask for chance; an AUC of 1 for just under it (the noise's
    target range is [0.5, 1)); nothing measured, no noise."""
    from tru.unlearn.seed_noise import TARGET_RANGE, noise_target

    assert noise_target(0.66) == 0.66
    assert noise_target(0.41) == 0.5 and noise_target(1.0) == TARGET_RANGE[1] < 1
    assert noise_target(None) == 0.0 and noise_target(float("nan")) == 0.0
