"""Certification on tiny planted data with the light VBPR backbone: the metrics separate a model that
memorised D_f from one retrained without it, the policy lists every failed check, the certificate holds
no raw pairs, the report embeds its plots, and failures leave nothing behind."""

from __future__ import annotations

import copy
import json
import re
import time
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
import torch

from tru.certify import AuditOptions, CertifyError, Policy, certify, open_run, run_certification
from tru.certify.forgetting import per_pair_hits
from tru.certify.mia import score_statistics
from tru.certify.output import write_outputs
from tru.certify.policy import load_policy
from tru.checkpoint import save_run
from tru.config import load_config
from tru.data.dataset import DataError, load_dataset, write_dataset
from tru.forget.requests import DeletionRequest, resolve_requests, write_requests
from tru.forget.spec import ForgetSpec
from tru.models import build_backbone
from tru.train.trainer import Trainer

from .conftest import make_tiny_frame

matplotlib.use("Agg")
import matplotlib.pyplot as plt

FAST = AuditOptions(n_boot=100)


def _fit(ds, train, epochs: int = 15, start=None):
    """Few epochs at a high learning rate without regularisation: the model memorises its train set."""
    cfg = load_config(
        "vbpr",
        overrides={
            "epochs": epochs,
            "seed": 7,
            "train_batch_size": 256,
            "learning_rate": 0.02,
            "reg_weight": 0.0,
            "stopping_step": 1000,
            "eval_step": 1000,
            "device": "cpu",
        },
    )
    model = build_backbone("vbpr", ds, cfg) if start is None else copy.deepcopy(start)
    result = Trainer(model, ds, cfg, train=train, log=lambda _s: None).fit()
    return model, cfg, result


def _requests(ds, rng: np.random.Generator) -> list[DeletionRequest]:
    """Interaction requests: 4 random train pairs of each of 60 random users (each keeps 5 of 9)."""
    tr = ds.train
    users = rng.choice(ds.n_users, 60, replace=False)
    order = np.lexsort((rng.random(len(tr)), tr.users))
    rank = np.arange(len(tr)) - np.searchsorted(tr.users[order], tr.users[order])
    pick = order[(rank < 4) & np.isin(tr.users[order], users)]
    return [
        DeletionRequest(f"req-{k}", "interaction", int(tr.users[j]), int(tr.items[j]), "2025-01-31", "")
        for k, j in enumerate(pick)
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention
    root = tmp_path_factory.mktemp("certify")
    df, feats = make_tiny_frame()
    write_dataset(root / "data", "tiny", df, feats, source={"kind": "test"})
    ds = load_dataset(root / "data", validate=False)
    reqs = _requests(ds, np.random.default_rng(0))
    write_requests(root / "requests.csv", reqs)
    spec = resolve_requests(ds, reqs)
    original, cfg, r_o = _fit(ds, ds.train)
    retrained, _, r_r = _fit(ds, spec.retain)
    t0 = time.perf_counter()
    tuned, _, _ = _fit(ds, spec.retain, epochs=3, start=original)  # fine-tuning on D_r: a weak unlearner
    tuned_s = time.perf_counter() - t0
    save_run(root / "original", original, cfg, ds, extra={"training": r_o.to_dict()})
    for name, model, res in (
        ("retrained", retrained, r_r),
        ("tuned", tuned, None),
        ("retr_unl", retrained, r_r),
    ):
        extra = {"training": res.to_dict()} if res else None
        save_run(root / name, model, cfg, ds, train=spec.retain, forget=spec.forget, extra=extra)
    # the unlearning contract: unlearn.json, with an α history and a sensitivity heatmap (TRU runs)
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.imshow(np.random.default_rng(0).random((4, 3)))
    fig.savefig(root / "tuned" / "sensitivity.png")
    plt.close(fig)
    n_params = sum(p.numel() for p in tuned.parameters())
    meta = {
        "method": "finetune",
        "seconds": tuned_s,
        "steps": 15,
        "params_changed": n_params,
        "params_total": n_params,
        "alpha_history": [
            {"step": s, "alpha": {"id": 1 - s / 40, "image": 0.5, "text": 0.3}} for s in (0, 5, 10)
        ],
        "sensitivity_png": "sensitivity.png",
        "config": {"epochs": 3},
    }
    (root / "tuned" / "unlearn.json").write_text(json.dumps(meta))
    yield {"root": root, "ds": ds, "spec": spec, "reqs": reqs}
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cli_cert(world) -> dict[str, Any]:
    """The CLI path: requests CSV → ForgetSpec, runs loaded from folders, files written."""
    root = world["root"]
    return run_certification(
        root / "data",
        root / "original",
        root / "tuned",
        root / "requests.csv",
        root / "cert",
        retrained_dir=root / "retrained",
        validate=False,
        options=FAST,
    )


def test_metrics_separate_memorised_from_retrained(cli_cert) -> None:
    o, r, u = cli_cert["original"], cli_cert["retrained"], cli_cert["unlearned"]
    assert o["forget_hr@20"] > r["forget_hr@20"] + 0.15
    assert o["forget_recall@20"] > r["forget_recall@20"]
    # membership inference: the memorising original is clearly exposed, Retrain is near chance
    assert o["mia_auc"] > r["mia_auc"] + 0.25
    lo, hi = r["mia_auc_ci95"]
    assert lo - 0.05 <= 0.5 <= hi + 0.05, r["mia_auc_ci95"]
    assert abs(r["mia_auc"] - 0.5) < 0.1
    assert len(o["mia_auc_seeds"]) == 5 and o["mia_auc_bootstrap_ci95"][0] <= o["mia_auc"]
    # retrain is the closeness reference: the original is further from it than identical models would be
    c = cli_cert["closeness"]["original"]
    assert 0 <= c["jaccard@20"] < 1 and c["spearman"] < 1 and c["kl"] > 0
    assert u["method"] == "finetune" and u["params_changed_measured"] > 0
    assert cli_cert["efficiency"]["time_ratio"] is not None and cli_cert["evidence"] == "retrain comparison"


def test_certificate_files_hold_no_raw_pairs(world, cli_cert) -> None:
    out = world["root"] / "cert"
    cert = json.loads((out / "certificate.json").read_text())
    assert cert == cli_cert
    for key in ("passed", "reasons", "original", "unlearned", "retrained"):
        assert key in cert
    for name in ("original", "unlearned", "retrained"):
        for key in (
            "mia_auc",
            "forget_hr@20",
            "forget_recall@20",
            "retain_recall@20",
            "retain_ndcg@20",
            "seconds",
        ):
            assert cert[name][key] is not None, (name, key)
    spec, ds = world["spec"], world["ds"]
    assert cert["requests"]["n_forget_pairs"] == len(spec.forget)
    assert cert["requests"]["forget_sha256"] == spec.forget_hash(ds.n_items)
    assert cert["requests"]["request_ids"] == [r.request_id for r in world["reqs"]]

    int_lists: list[tuple[str, list]] = []

    def walk(obj: Any, key: str = "") -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, k)
        elif isinstance(obj, list):
            if len(obj) >= 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in obj):
                int_lists.append((key, obj))
            for v in obj:
                walk(v, key)

    walk(cert)
    assert [k for k, _ in int_lists] == ["seeds"], int_lists  # no (user, item) pairs anywhere
    text = (out / "certificate.json").read_text() + (out / "report.html").read_text()
    for u, i in zip(spec.forget.users[:50], spec.forget.items[:50]):
        assert f"({u}, {i})" not in text and f"[{u}, {i}]" not in text
    html = (out / "report.html").read_text()
    srcs = re.findall(r"src='([^']*)'", html)
    assert len(srcs) >= 5 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for png in ("tradeoff.png", "mia_roc.png", "mia_auc.png", "sensitivity.png", "alpha.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG")
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".cert.")]  # no temp folder left


def test_weak_unlearner_fails_with_reasons(cli_cert) -> None:
    assert cli_cert["passed"] is False
    failed = {c["name"] for c in cli_cert["checks"] if not c["passed"]}
    assert "forget_hr@20_max" in failed and "mia_auc" in failed
    assert len(cli_cert["reasons"]) == len(failed) and all("FAILED" in r for r in cli_cert["reasons"])


def test_impossible_policy_fails_listing_every_reason(world) -> None:
    root, ds, spec = world["root"], world["ds"], world["spec"]
    orig, retr = open_run(root / "original", ds), open_run(root / "retrained", ds)
    same = open_run(root / "retr_unl", ds)  # a perfect unlearner: Retrain itself (no unlearn.json)
    impossible = Policy(retain_recall_min_ratio=1.5, max_time_ratio=0.0)
    cert = certify(ds, spec, orig, same, retr, policy=impossible, seeds=(0, 1, 2), options=FAST)
    assert cert["closeness"]["unlearned"] == {"jaccard@20": 1.0, "spearman": 1.0, "kl": 0.0}
    assert any("unlearn.json missing" in n for n in cert["notes"])
    assert cert["passed"] is False
    failed = [c["name"] for c in cert["checks"] if not c["passed"]]
    assert failed == ["retain_recall@20", "time_ratio"]  # every other check passes for Retrain itself
    assert len(cert["reasons"]) == 2 and "retain Recall@20" in cert["reasons"][0]


def test_retrain_free_user_regime(world) -> None:
    """Without a retrained model: §7 targets from the re-initialised proxy, weaker evidence."""
    ds = world["ds"]
    orig = open_run(world["root"] / "original", ds)
    users = np.arange(0, ds.n_users, 10)
    reqs = [DeletionRequest(f"u{u}", "user", int(u), None, "2025-02-01", "") for u in users]
    spec = resolve_requests(ds, reqs)
    cert = certify(ds, spec, orig, orig, None, seeds=(0, 1, 2), options=FAST)
    assert cert["evidence"] == "retrain-free (weaker than retrain comparison)"
    assert cert["retrained"] is None and cert["reference"]["kind"] == "retrain-free"
    ref, u = cert["reference"], cert["unlearned"]
    assert ref["forget_target"]["n_entity_pairs"] == len(spec.forget)
    assert u["forget_hr@20"] > ref["forget_hr@20"] + 0.2  # the original still ranks its deleted users' items
    assert u["user_mia_auc"] > ref["user_mia_auc"] + 0.2 and u["mia_auc"] > ref["mia_auc"] + 0.2
    assert cert["passed"] is False and cert["audit"]["user_shadow_model"] == "original"


def test_ranking_helpers_match_brute_force(world) -> None:
    ds, spec = world["ds"], world["spec"]
    model = open_run(world["root"] / "original", ds).run.model
    with torch.no_grad():
        scores = model.full_sort_predict(torch.arange(ds.n_users)).numpy().astype(np.float64)
    hits = per_pair_hits(model, spec.forget, spec.retain, ds.n_users, ds.n_items, 20, batch_size=7)
    masked = scores.copy()
    masked[spec.retain.users, spec.retain.items] = -np.inf
    masked[spec.forget.users, spec.forget.items] = -np.inf
    s_t = scores[spec.forget.users, spec.forget.items]
    above = (masked[spec.forget.users] > s_t[:, None]).sum(1)
    np.testing.assert_array_equal(hits, above < 20)
    st = score_statistics(model, spec.forget, ds.n_users, ds.n_items, batch_size=5)
    rows = scores[spec.forget.users]
    rank = (rows > s_t[:, None]).sum(1) / (ds.n_items - 1)
    np.testing.assert_allclose(st[:, 0], s_t, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(st[:, 1], rank, atol=1e-6)
    z = (s_t - rows.mean(1)) / rows.std(1)
    np.testing.assert_allclose(st[:, 2], z, rtol=1e-3, atol=1e-3)


def test_policy_file_checks(tmp_path: Path) -> None:
    assert load_policy(None) == Policy()
    good = tmp_path / "policy.yaml"
    good.write_text("mia_auc_tolerance: 0.03\nmax_time_ratio: 0.5\nuser_mia_auc_tolerance: null\n")
    pol = load_policy(good)
    assert pol.mia_auc_tolerance == 0.03 and pol.max_time_ratio == 0.5 and pol.user_mia_auc_tolerance is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("mia_auc_tolerence: 0.03\n")
    with pytest.raises(DataError, match=r"bad\.yaml.*unknown policy key 'mia_auc_tolerence'"):
        load_policy(bad)
    bad.write_text("retain_recall_min_ratio: -1\n")
    with pytest.raises(DataError, match="retain_recall_min_ratio"):
        load_policy(bad)
    bad.write_text("- a list\n")
    with pytest.raises(DataError, match="mapping"):
        load_policy(bad)


def test_failures_leave_no_output(world, tmp_path: Path) -> None:
    root, ds = world["root"], world["ds"]
    out = tmp_path / "out" / "cert"
    bad_policy = tmp_path / "policy.yaml"
    bad_policy.write_text("forget_hr_max_excess: 0.02\nsurprise: 1\n")
    args = (root / "data", root / "original", root / "tuned")
    with pytest.raises(DataError, match="surprise"):
        run_certification(*args, root / "requests.csv", out, root / "retrained", bad_policy, validate=False)
    bad_csv = tmp_path / "requests.csv"
    write_requests(bad_csv, [DeletionRequest("x", "user", ds.n_users + 5, None, "2025-01-01", "")])
    with pytest.raises(DataError, match="unknown user_id"):
        run_certification(*args, bad_csv, out, validate=False)
    assert not out.exists() and not out.parent.exists()
    # a failure while writing: nothing at out, no temporary folder
    with pytest.raises(FileNotFoundError):
        write_outputs(out, {"a.json": b"{}", "missing/b.png": b"x"})
    assert not out.exists() and not out.parent.exists()
    # an existing non-empty folder is refused untouched; an empty spec is refused
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("keep")
    with pytest.raises(CertifyError, match="not empty"):
        write_outputs(out, {"a.json": b"{}"})
    assert (out / "keep.txt").read_text() == "keep"
    empty = ForgetSpec(
        "none",
        ds.train.subset(np.zeros(len(ds.train), bool)),
        ds.train,
        np.empty(0),
        np.empty(0),
        ds.valid,
        ds.test,
    )
    orig = open_run(root / "original", ds)
    with pytest.raises(DataError, match="nothing to certify"):
        certify(ds, empty, orig, orig, out_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()
