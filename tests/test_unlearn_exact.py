"""Issue 9: the exact part, retrain seeds, the one typed source of the unlearning defaults, rollback as
"no update", the reuse of the sensitivity step's selection, and the item-sink term."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from tru.config import ConfigError, load_config
from tru.data.dataset import Pairs
from tru.forget.spec import ForgetSpec
from tru.models import build_backbone
from tru.train.trainer import Trainer
from tru.unlearn import config as config_mod
from tru.unlearn.api import run_unlearning, unlearn_config
from tru.unlearn.config import UnlearnConfig


def _trained(ds, backbone: str, epochs: int = 3, seed: int = 3):
    cfg = load_config(
        backbone, overrides={"epochs": epochs, "seed": seed, "train_batch_size": 256, "device": "cpu"}
    )
    model = build_backbone(backbone, ds, cfg)
    Trainer(model, ds, cfg, log=lambda _s: None).fit()
    return model, cfg


def user_spec(ds, users: np.ndarray) -> ForgetSpec:
    tr = ds.train
    pick = np.isin(tr.users, users)
    keep = lambda p: p.subset(~np.isin(p.users, users))  # noqa: E731
    return ForgetSpec(
        "user", tr.subset(pick), tr.subset(~pick), np.asarray(users, np.int64), np.zeros(0, np.int64),
        keep(ds.valid), keep(ds.test), ["r-user"],
    )  # fmt: skip


def item_spec(ds, items: np.ndarray) -> ForgetSpec:
    tr = ds.train
    pick = np.isin(tr.items, items)
    keep = lambda p: p.subset(~np.isin(p.items, items))  # noqa: E731
    return ForgetSpec(
        "item", tr.subset(pick), tr.subset(~pick), np.zeros(0, np.int64), np.asarray(items, np.int64),
        keep(ds.valid), keep(ds.test), ["r-item"],
    )  # fmt: skip


def _cfg(model_cfg, **over):
    base = {"max_steps": 20, "check_every": 10, "forget_batch_size": 128, "retain_batch_size": 256}
    return unlearn_config(model_cfg, {**base, **over})


# ------------------------------------------------------------------------------------------ retrain
def test_two_retrain_seeds_give_different_weights(data) -> None:
    """``--seed`` reaches the retrain: seeds 1 and 2 give different weights, the same seed the same."""
    model, cfg = _trained(data, "vbpr", epochs=2)
    spec = user_spec(data, np.arange(5))
    cfg = {**cfg, "epochs": 2}
    runs = [run_unlearning("retrain", model, data, spec, cfg, _cfg(cfg, seed=s)) for s in (1, 2, 1)]
    w = [r.model.state_dict()["user_embedding.weight"] for r in runs]
    assert not torch.equal(w[0], w[1])
    assert torch.equal(w[0], w[2])
    assert runs[1].report["seed"] == 2


# ------------------------------------------------------------------------------------------ the exact part
@pytest.mark.parametrize("backbone", ["mgcn", "vbpr"])
def test_deleted_user_rows_equal_the_retrained_models(data, backbone: str) -> None:
    """After unlearning (any iterative method, here TRU and MMRecUn), a deleted user's ID row equals the
    row of the model retrained with the exact part's seed, exactly: the model's own seed with
    ``exact_seed: model``, by default a seed derived from it that no training uses (so the row is not the
    original's initial value, which its items co-adapted with); without the exact part it equals neither."""
    model, cfg = _trained(data, backbone)
    users = np.array([3, 17, 42])
    spec = user_spec(data, users)
    cfg = {**cfg, "epochs": 2}

    def retrained_rows(seed: int) -> torch.Tensor:
        retrained = run_unlearning("retrain", model, data, spec, cfg, _cfg(cfg, seed=seed)).model
        return retrained.state_dict()["user_embedding.weight"][users]

    independent = _cfg(cfg)
    assert independent.exact_seed == "independent" and independent.rows_seed != independent.seed
    refs = {}
    for exact_seed, ucfg in (("model", _cfg(cfg, exact_seed="model")), ("independent", independent)):
        refs[exact_seed] = ref = retrained_rows(ucfg.rows_seed)
        for method in ("tru", "mmrecun"):
            over = {"exact_seed": exact_seed, "stop_on_target": False}
            out = run_unlearning(method, model, data, spec, cfg, _cfg(cfg, **over))
            rows = out.model.state_dict()["user_embedding.weight"][users]
            assert torch.equal(rows, ref), (method, exact_seed)
            assert out.report["exact_rows"] == {"user_embedding.weight": len(users)}
    # the independent rows are not the original's initial values
    init = model.initial_rows(independent.seed)["user_embedding.weight"][users]
    assert torch.equal(refs["model"], init) and not torch.equal(refs["independent"], init)
    off = run_unlearning("mmrecun", model, data, spec, cfg, _cfg(cfg, exact=False, stop_on_target=False))
    off_rows = off.model.state_dict()["user_embedding.weight"][users]
    assert not any(torch.equal(off_rows, r) for r in refs.values())
    assert off.report["exact_rows"] == {}


def test_initial_rows_do_not_disturb_the_global_generator(data) -> None:
    model, _ = _trained(data, "mgcn", epochs=1)
    torch.manual_seed(0)
    a = torch.rand(3)
    torch.manual_seed(0)
    rows = model.initial_rows(7)
    b = torch.rand(3)
    assert torch.equal(a, b)
    assert torch.equal(rows["user_embedding.weight"], model.initial_rows(7)["user_embedding.weight"])
    assert not torch.equal(rows["user_embedding.weight"], model.initial_rows(8)["user_embedding.weight"])


# ------------------------------------------------------------------------------------------ typed defaults
def test_unlearn_config_has_no_defaults_of_its_own_and_the_yaml_covers_it() -> None:
    fields = dataclasses.fields(UnlearnConfig)
    assert all(f.default is dataclasses.MISSING for f in fields)
    packaged = {k for k in UnlearnConfig.packaged() if k != config_mod.PER_BACKBONE}
    assert packaged == {f.name for f in fields}


def test_the_engine_uses_the_packaged_defaults(data, monkeypatch) -> None:
    """Change the packaged YAML: the engine's checks and learning rate follow it (no fallback numbers)."""
    model, cfg = _trained(data, "vbpr", epochs=2)
    spec = user_spec(data, np.arange(4))
    spec = ForgetSpec("interaction", data.train.subset(np.arange(len(data.train)) % 9 == 1),
                      data.train.subset(np.arange(len(data.train)) % 9 != 1), np.zeros(0, np.int64),
                      np.zeros(0, np.int64), data.valid, data.test, ["r"])  # fmt: skip
    packaged = dict(UnlearnConfig.packaged())
    packaged.update({"check_every": 7, "learning_rate": 0.0123, "max_steps": 21, "stop_on_target": False})
    monkeypatch.setattr(config_mod, "_packaged_yaml", lambda: packaged)
    ucfg = unlearn_config(cfg, {"min_retain_ratio": 0.0})
    assert ucfg.check_every == 7 and ucfg.learning_rate == 0.0123
    out = run_unlearning("mmrecun", model, data, spec, cfg, ucfg)
    assert [h["step"] for h in out.report["history"]] == [0, 7, 14, 21]
    assert out.report["config"]["learning_rate"] == 0.0123


def test_unknown_option_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown unlearning option 'gate_refrsh' .*'gate_refresh'"):
        unlearn_config({"seed": 1}, {"gate_refrsh": 5})


def test_per_backbone_section_applies_under_the_model_config() -> None:
    packaged = UnlearnConfig.packaged()
    for backbone, section in (packaged.get("per_backbone") or {}).items():
        cfg = unlearn_config({"seed": 1, "model": backbone})
        for key, value in section.items():
            assert cfg[key] == value
        # the model config's own section and explicit overrides still win
        key = next(iter(section), "max_steps")
        other = not cfg[key] if isinstance(cfg[key], bool) else cfg[key]
        assert unlearn_config({"seed": 1, "model": backbone}, {key: other})[key] == other


# ------------------------------------------------------------------------------------------ guard
def test_rollback_to_the_start_is_no_update(data) -> None:
    """A guard that can never pass rolls back to the starting point: reported as no update, nothing
    moved by the optimiser."""
    model, cfg = _trained(data, "vbpr", epochs=2)
    tr = data.train
    pick = np.arange(len(tr)) % 7 == 3
    spec = ForgetSpec("interaction", tr.subset(pick), tr.subset(~pick), np.zeros(0, np.int64),
                      np.zeros(0, np.int64), data.valid, data.test, ["r"])  # fmt: skip
    out = run_unlearning(
        "mmrecun",
        model,
        data,
        spec,
        cfg,
        _cfg(cfg, min_retain_ratio=2.0, learning_rate=0.5, stop_on_target=False),
    )
    rep = out.report
    assert rep["no_update"] is True and rep["params_updated"] == 0
    assert rep["stop_reason"].startswith("no update") and rep["steps"] == 10
    ok = run_unlearning(
        "mmrecun", model, data, spec, cfg, _cfg(cfg, min_retain_ratio=0.0, stop_on_target=False)
    )
    assert ok.report["no_update"] is False and ok.report["params_updated"] > 0


# ------------------------------------------------------------------------------------------ selection reuse
def test_unlearning_reuses_the_sensitivity_selection(data, monkeypatch) -> None:
    from tru.unlearn import engine
    from tru.unlearn.isolation import SelectionMismatch
    from tru.unlearn.sensitivity import run_sensitivity

    model, cfg = _trained(data, "vbpr", epochs=2)
    tr = data.train
    pick = np.arange(len(tr)) % 6 == 1
    spec = ForgetSpec("interaction", tr.subset(pick), tr.subset(~pick), np.zeros(0, np.int64),
                      np.zeros(0, np.int64), data.valid, data.test, ["r"])  # fmt: skip
    ucfg = _cfg(cfg, stop_on_target=False, min_retain_ratio=0.0)
    report = run_sensitivity(copy.deepcopy(model), data, spec, ucfg)
    assert report["selection"]
    import json

    report = json.loads(json.dumps(report))  # as the pipeline hands it over: sensitivity.json

    def no_probe(*_a, **_k):
        raise AssertionError("unlearn probed again")

    monkeypatch.setattr(engine, "probe", no_probe)
    out = run_unlearning("tru", model, data, spec, cfg, ucfg, sensitivity=report)
    assert out.report["sensitivity_reused"] is True
    got = [(u["unit"], u["part"]) for u in out.report["sensitivity"]["units"] if u["selected"]]
    assert sorted(got) == sorted((s["unit"], s["part"]) for s in report["selection"])
    alt = ~pick & (np.arange(len(tr)) % 5 == 0)
    other = ForgetSpec("interaction", tr.subset(alt), tr.subset(~alt), np.zeros(0, np.int64),
                       np.zeros(0, np.int64), data.valid, data.test, ["r2"])  # fmt: skip
    with pytest.raises(SelectionMismatch):
        run_unlearning("tru", model, data, other, cfg, ucfg, sensitivity=report)


# ------------------------------------------------------------------------------------------ item sink
def test_item_sink_pushes_targets_down_for_retained_users(data) -> None:
    """Item regime: with the sink term the target items' mean score over random retained users drops
    further than without it (the reverse update alone only reaches their past interactors)."""
    model, cfg = _trained(data, "vbpr", epochs=3)
    counts = np.bincount(data.train.items, minlength=data.n_items)
    targets = np.argsort(-counts)[:3]
    spec = item_spec(data, targets)
    users = torch.as_tensor(np.setdiff1d(np.arange(data.n_users), spec.forget.users))

    def mean_target_score(m) -> float:
        with torch.no_grad():
            return float(m.full_sort_predict(users)[:, torch.as_tensor(targets)].mean())

    base = dict(stop_on_target=False, min_retain_ratio=0.0, rfg=False, bms=False, cli=False)
    on = run_unlearning("tru", model, data, spec, cfg, _cfg(cfg, **base))
    off = run_unlearning("tru", model, data, spec, cfg, _cfg(cfg, item_sink=False, **base))
    assert mean_target_score(on.model) < mean_target_score(off.model)


def test_rank_counts_match_a_brute_force_ranking(data) -> None:
    from tru.eval.evaluator import per_pair_hit_rate
    from tru.eval.rank import rank_counts, rank_distance

    model, _ = _trained(data, "vbpr", epochs=1)
    pairs = data.test
    above, cand = rank_counts(model, pairs, data.train, data.n_users, data.n_items, batch_size=17)
    with torch.no_grad():
        scores = model.full_sort_predict(torch.arange(data.n_users))
    masked = data.train.concat(pairs).csr(data.n_users, data.n_items).toarray() > 0
    for j in range(0, len(pairs), 13):
        u, i = pairs.users[j], pairs.items[j]
        row = scores[u].clone()
        s = row[i].item()
        row[torch.as_tensor(masked[u])] = -torch.inf
        assert above[j] == int((row > s).sum()) and cand[j] == int(torch.isfinite(row).sum())
    hr = per_pair_hit_rate(model, data.n_users, data.n_items, pairs, data.train, 20)[1]
    assert np.array_equal(hr.astype(bool), above < 20)
    pct = above / cand
    d = rank_distance(pct, pct)
    assert d.w1 == 0 and d.ks == 0 and d.shift == 0
    lower = rank_distance(np.clip(pct + 0.1, 0, 1), pct)
    assert lower.shift < 0 and lower.w1 > 0.05  # ranked lower than the reference: over-forgetting side


def test_empty_forget_pairs_are_handled() -> None:
    from tru.eval.rank import rank_distance

    empty = Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert len(empty) == 0
    assert np.isnan(rank_distance(np.zeros(0), np.ones(3)).w1)
