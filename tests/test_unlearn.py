"""Unlearning methods: the equivalences the method spec demands, and that isolation really freezes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tru.config import load_config
from tru.data.dataset import Pairs
from tru.eval.evaluator import per_pair_hit_rate
from tru.forget.spec import ForgetSpec
from tru.models import build_backbone
from tru.train.trainer import Trainer
from tru.unlearn.api import run_unlearning, unlearn_config
from tru.unlearn.isolation import touched_rows


def interaction_spec(ds, frac: float = 0.1, seed: int = 0) -> ForgetSpec:
    rng = np.random.default_rng(seed)
    tr = ds.train
    pick = rng.random(len(tr)) < frac
    # keep at least one train item per user
    first = np.unique(tr.users, return_index=True)[1]
    pick[first] = False
    return ForgetSpec(
        "interaction",
        tr.subset(pick),
        tr.subset(~pick),
        np.zeros(0, np.int64),
        np.zeros(0, np.int64),
        ds.valid,
        ds.test,
        ["r1"],
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from .conftest import train_tiny

    return train_tiny(tmp_path_factory.mktemp("u") / "tiny", "vbpr", epochs=20, seed=3)


def _run(method, trained, spec, **over):
    ds, model, cfg = trained
    ucfg = unlearn_config(
        cfg,
        {
            "max_steps": 30,
            "check_every": 10,
            "forget_batch_size": 128,
            "retain_batch_size": 256,
            "stop_on_target": False,
            "min_retain_ratio": 0.0,
            **over,
        },
    )
    return run_unlearning(method, model, ds, spec, cfg, ucfg)


def _same(a, b) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values())
    )


def test_tru_with_components_off_is_mmrecun(trained) -> None:
    """Every component off: TRU with the reverse-BPR forget term is MMRecUn, with the (default) ascent
    term it is gradient ascent, bit for bit."""
    spec = interaction_spec(trained[0])
    a = _run("tru", trained, spec, rfg=False, bms=False, cli=False, forget_loss="reverse_bpr")
    b = _run("mmrecun", trained, spec)
    assert a.report["steps"] == b.report["steps"] == 30
    assert _same(a, b)
    c = _run("tru", trained, spec, rfg=True, bms=False, cli=False, forget_loss="reverse_bpr")
    assert not _same(a, c)  # and the switch really switches something
    d = _run("tru", trained, spec, rfg=False, bms=False, cli=False, forget_loss="ascent")
    assert _same(d, _run("gradient_ascent", trained, spec))


def test_tru_with_zero_forget_weight_is_finetuning(trained) -> None:
    spec = interaction_spec(trained[0])
    a = _run("tru", trained, spec, rfg=False, bms=False, cli=False, lambda_f=0.0)
    b = _run("finetune", trained, spec)
    assert _same(a, b)


def test_isolation_freezes_what_it_does_not_select(trained) -> None:
    ds, model, _ = trained
    spec = interaction_spec(ds)
    out = _run("tru", trained, spec, rfg=False, bms=False, cli=True)
    sens = out.report["sensitivity"]
    selected = {(u["unit"], u["part"]) for u in sens["units"] if u["selected"]}
    assert ("user_embedding", "touched") in selected
    touched = touched_rows(spec, ds.n_users, ds.n_items)
    before, after = dict(model.named_parameters()), dict(out.model.named_parameters())
    for u in sens["units"]:
        name = f"{u['unit']}.weight"
        if u["kind"] == "table":
            rows = touched[u["axis"]] if u["part"] == "touched" else ~touched[u["axis"]]
            same = torch.equal(before[name][rows], after[name][rows])
            assert same != u["selected"] or not rows.any(), u["label"]
        elif not u["selected"]:
            for pn in (n for n in before if n.startswith(u["unit"] + ".")):
                assert torch.equal(before[pn], after[pn]), pn
    assert out.report["params_changed"] < out.report["params_total"]


def test_reverse_update_lowers_forget_hit_rate(trained) -> None:
    ds, model, _ = trained
    spec = interaction_spec(ds)
    hr0, _ = per_pair_hit_rate(model, ds.n_users, ds.n_items, spec.forget, spec.retain, 20)
    for method in ("mmrecun", "tru", "gradient_ascent"):
        out = _run(method, trained, spec)
        hr, _ = per_pair_hit_rate(out.model, ds.n_users, ds.n_items, spec.forget, spec.retain, 20)
        assert hr < hr0, method
    assert out.report["seconds"] > 0 and out.report["params_changed"] > 0


def test_bms_logs_branch_scales(trained) -> None:
    spec = interaction_spec(trained[0])
    out = _run("tru", trained, spec)
    hist = out.report["alpha_history"]
    assert hist and set(hist[-1]["alpha"]) >= {"id", "image", "text"}
    assert all(0.1 - 1e-9 <= a <= 1.0 for h in hist for a in h["alpha"].values())


def test_empty_forget_set_is_noop(trained) -> None:
    ds = trained[0]
    spec = ForgetSpec(
        "interaction",
        Pairs(np.zeros(0), np.zeros(0)),
        ds.train,
        np.zeros(0, np.int64),
        np.zeros(0, np.int64),
        ds.valid,
        ds.test,
    )
    out = _run("tru", trained, spec)
    assert out.report["params_changed"] == 0


def test_unlearning_keeps_normalisation_statistics(tmp_path) -> None:
    """MIG-GT's feature MLPs hold BatchNorm: every method that updates in place leaves its running
    statistics (and every other buffer) bit-identical, so only what the optimiser changes changes."""
    from tru.data.dataset import load_dataset, write_dataset

    from .conftest import make_tiny_frame

    df, feats = make_tiny_frame()
    write_dataset(tmp_path / "tiny", "tiny", df, feats)
    ds = load_dataset(tmp_path / "tiny", validate=False)
    cfg = load_config("miggt", overrides={"epochs": 2, "seed": 3, "train_batch_size": 256, "device": "cpu"})
    model = build_backbone("miggt", ds, cfg)
    Trainer(model, ds, cfg, log=lambda _s: None).fit()
    before = {n: b.clone() for n, b in model.named_buffers() if b.dtype.is_floating_point}
    assert any("running_mean" in n for n in before)
    spec = interaction_spec(ds)
    for method, dropout in (("tru", False), ("mmrecun", False), ("mmrecun", True)):
        ucfg = unlearn_config(cfg, {"max_steps": 5, "check_every": 5, "stop_on_target": False,
                                    "min_retain_ratio": 0.0, "seed": 0, "dropout": dropout})  # fmt: skip
        out = run_unlearning(method, model, ds, spec, cfg, ucfg)
        assert out.report["params_changed"] > 0
        after = dict(out.model.named_buffers())
        for name, buf in before.items():
            if "running" in name:
                assert torch.equal(after[name], buf), f"{method} moved {name}"


def test_pair_membership_handles_empty_and_unknown_pairs() -> None:
    from tru.unlearn.rfg import pair_keys, pairs_in

    keys = pair_keys(np.array([0, 2, 1]), np.array([5, 1, 3]), n_items=10)
    got = pairs_in(np.array([2, 0, 1, 9]), np.array([1, 6, 3, 9]), keys, n_items=10)
    assert got.tolist() == [True, False, True, False]
    empty = np.zeros(0, np.int64)
    assert pairs_in(empty, empty, keys, 10).shape == (0,)  # a ranked batch without any target hit
    assert pairs_in(np.array([1]), np.array([3]), pair_keys(empty, empty, 10), 10).tolist() == [False]


def test_tru_item_regime_runs_the_neighbour_term(trained) -> None:
    """Item regime end to end: the gate's neighbour term is rebuilt at every refresh. (The case that crashed
    it on MovieLens-100K, a ranked batch with no target in its top-K, is the empty case of
    test_pair_membership_handles_empty_and_unknown_pairs.)"""
    ds, _model, _cfg = trained
    tr = ds.train
    targets = np.unique(tr.items)[:2]
    pick = np.isin(tr.items, targets)
    keep_eval = lambda p: p.subset(~np.isin(p.items, targets))  # noqa: E731
    spec = ForgetSpec(
        "item", tr.subset(pick), tr.subset(~pick), np.zeros(0, np.int64), targets.astype(np.int64),
        keep_eval(ds.valid), keep_eval(ds.test), ["r-item"],
    )  # fmt: skip
    out = _run("tru", trained, spec, gate_refresh=5, stop_on_target=False)
    assert out.report["steps"] > 5 and out.report["params_changed"] > 0


def test_probe_equals_per_batch_accumulation(trained) -> None:
    """The probe's shared forward pass gives the same unit norms and selection as accumulating the
    gradients of P separately forwarded batches (the literal §6 recipe) on a deterministic backbone."""
    import copy

    from tru.unlearn.engine import make_streams
    from tru.unlearn.isolation import probe
    from tru.unlearn.losses import pair_scores, reverse_bpr

    ds, model, cfg = trained
    model = copy.deepcopy(model)
    spec = interaction_spec(ds, seed=4)
    ucfg = unlearn_config(cfg, {"probe_batches": 4, "forget_batch_size": 64, "retain_batch_size": 128})
    parts = probe(model, spec, *make_streams(model, spec, ds.n_users, ds.n_items, ucfg), ucfg)

    fstream, rstream = make_streams(model, spec, ds.n_users, ds.n_items, ucfg)
    params = dict(model.named_parameters())
    acc_f = {n: torch.zeros_like(p) for n, p in params.items()}
    acc_r = {n: torch.zeros_like(p) for n, p in params.items()}
    for _ in range(4):
        bf, br = fstream.next(), rstream.next()
        lf = reverse_bpr(*pair_scores(*model.forward(), bf))
        for acc, loss in ((acc_f, lf), (acc_r, model.calculate_loss(br))):
            for n, g in zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True)):
                if g is not None:
                    acc[n] += g
    whole = {p.unit: p for p in parts if p.part == "all"}
    assert whole, "no dense unit scored"
    for unit, part in whole.items():
        names = [n for n in params if n == unit or n.startswith(unit + ".")]
        assert names, unit
        ref_f = sum(float(acc_f[n].pow(2).sum()) for n in names) ** 0.5
        ref_r = sum(float(acc_r[n].pow(2).sum()) for n in names) ** 0.5
        assert part.forget_norm == pytest.approx(ref_f, rel=1e-4, abs=1e-9), unit
        assert part.retain_norm == pytest.approx(ref_r, rel=1e-4, abs=1e-9), unit
    assert any(p.forget_norm > 0 for p in whole.values())


@pytest.mark.parametrize("backbone", ["vbpr", "mgcn", "miggt"])
def test_training_state_serves_the_backbone_loss(tiny, backbone: str) -> None:
    """One ``training_state()`` gives the same pair scores as ``forward()`` and the same loss as
    ``calculate_loss`` (same dropout draws), so the engine's single forward per step changes no maths."""
    from tru.models.base import Batch

    model = build_backbone(backbone, tiny, load_config(backbone, overrides={"device": "cpu", "seed": 0}))
    model.train()
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, len(tiny.train), (64,), generator=g)
    batch = Batch(
        torch.from_numpy(tiny.train.users)[idx],
        torch.from_numpy(tiny.train.items)[idx],
        torch.randint(0, tiny.n_items, (64,), generator=g),
    )
    torch.manual_seed(5)
    ref_loss = model.calculate_loss(batch)
    torch.manual_seed(5)
    ref_u, ref_i = model.forward()
    torch.manual_seed(5)
    state = model.training_state()
    u, i = model.state_embeddings(state)
    assert torch.allclose(u, ref_u) and torch.allclose(i, ref_i)
    assert torch.allclose(model.loss_from_state(state, batch), ref_loss)


def test_unlearning_mode_updates_the_deployed_forward_unless_dropout_is_asked(tiny) -> None:
    """Default: the reverse update differentiates the evaluation-mode forward (no dropout, deterministic
    memory sampling), so two forwards agree; ``dropout=True`` keeps dropout on (forwards differ) with
    normalisation frozen; both keep gradients."""
    model = build_backbone("miggt", tiny, load_config("miggt", overrides={"device": "cpu", "seed": 0}))
    model.unlearning_mode()
    a, b = model.forward()[1], model.forward()[1]
    assert torch.equal(a, b) and a.requires_grad and not model.training
    model.unlearning_mode(dropout=True)
    assert model.training and not torch.equal(model.forward()[1], model.forward()[1])
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert bns and not any(m.training for m in bns)


def test_selection_takes_the_best_dense_unit_even_over_budget() -> None:
    """A large dense unit with the top score (MIG-GT's feature MLP) is selected even when it alone
    exceeds the capacity budget; the rest are filled greedily within the budget. Switched off, the
    budget excludes it and a small, lower-scored unit stands in (the earlier rule)."""
    from tru.unlearn.isolation import UnitPart, select

    def parts() -> list[UnitPart]:
        return [
            UnitPart("user_embedding", "touched", "table", "id", "user", 1000, score=9.0),
            UnitPart("mlp_text", "all", "dense", "text", None, 5000, score=16.0),
            UnitPart("mlp_audio", "all", "dense", "audio", None, 5000, score=7.0),
            UnitPart("transformer", "all", "dense", "fusion", None, 50, score=5.0),
        ]

    from tru.unlearn.config import UnlearnConfig

    cfg = UnlearnConfig.defaults().replace(capacity_ratio=0.2, top_free=3)
    chosen = {p.unit for p in select(parts(), cfg) if p.selected}
    assert chosen == {"user_embedding", "mlp_text"}
    chosen = {p.unit for p in select(parts(), cfg.replace(best_dense_first=False)) if p.selected}
    assert chosen == {"user_embedding", "transformer"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"dropout": "maybe"}, "'dropout': expected true or false, got 'maybe'"),
        ({"best_dense_first": 1}, "'best_dense_first': expected true or false, got 1"),
        ({"learning_rate": "fast"}, "'learning_rate': expected a finite number, got 'fast'"),
        ({"learning_rate": ".nan"}, "'learning_rate': expected a finite number, got '.nan'"),
        ({"min_retain_ratio": float("nan")}, "'min_retain_ratio': expected a finite number, got nan"),
        ({"delta": float("inf")}, "'delta': expected a finite number, got inf"),
        ({"max_steps": float("inf")}, "'max_steps': expected an integer, got inf"),
        ({"max_steps": 2.5}, "'max_steps': expected an integer, got 2.5"),
        (
            {"retain_scope": "everything"},
            "'retain_scope': expected one of ['selected', 'all'], got 'everything'",
        ),
        ({"learning_rate": 0}, "'learning_rate': expected a value > 0, got 0"),
        ({"learning_rate": "-1e-3"}, "'learning_rate': expected a value > 0, got '-1e-3'"),
        ({"min_retain_ratio": -0.1}, "'min_retain_ratio': expected a value >= 0, got -0.1"),
        ({"rank_plateau": 1.2}, "'rank_plateau': expected a value in [0, 1], got 1.2"),
        ({"forget_batch_size": 0}, "'forget_batch_size': expected a value >= 1, got 0"),
        ({"capacity_ratio": 1.5}, "'capacity_ratio': expected a value in [0, 1], got 1.5"),
        ({"seed": -3}, "'seed': expected a value >= 0, got -3"),
        ({"seed_noise_auc": 0.3}, "'seed_noise_auc': expected 0 (off) or a value in [0.5, 1), got 0.3"),
        ({"seed_noise_auc": 1}, "'seed_noise_auc': expected 0 (off) or a value in [0.5, 1), got 1"),
    ],
)
def test_unlearn_config_names_the_bad_option(override: dict, message: str) -> None:
    import re

    from tru.config import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        unlearn_config({"seed": 1}, override)


def test_unlearn_config_admits_the_edges_of_each_range() -> None:
    """The bounds themselves where they are closed, and the value that switches an option off."""
    cfg = unlearn_config(
        {"seed": 0},
        {"max_steps": 0, "min_retain_ratio": 1.0, "capacity_ratio": 0.0, "seed_noise_auc": 0.0,
         "check_users": 0, "alpha_min": 0.0, "delta": -0.5},
    )  # fmt: skip
    assert (cfg.max_steps, cfg.min_retain_ratio, cfg.seed_noise_auc, cfg.delta) == (0, 1.0, 0.0, -0.5)
    assert unlearn_config({"seed": 0}, {"seed_noise_auc": 0.5}).seed_noise_auc == 0.5


def test_a_range_says_what_it_admits() -> None:
    from tru.unlearn.config import Range

    assert str(Range(0.0, low_open=True)) == "a value > 0"
    assert str(Range(high=1.0, high_open=True)) == "a value < 1"
    assert str(Range()) == "a finite number"
    assert str(Range(0.5, 1.0, high_open=True, off=0.0)) == "0 (off) or a value in [0.5, 1)"
    assert Range(high=1.0).admits(-5.0) and not Range(high=1.0).admits(1.5)


def test_unlearn_config_reads_numbers_written_as_yaml_strings() -> None:
    """``--set learning_rate=1e-3`` reaches the config as the string '1e-3' (YAML 1.1): it is a number."""
    cfg = unlearn_config({"seed": 1}, {"learning_rate": "1e-3", "max_steps": "40", "dropout": True})
    assert cfg["learning_rate"] == 1e-3 and cfg["max_steps"] == 40 and cfg["dropout"] is True
