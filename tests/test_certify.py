"""Certificate revision 2 on tiny planted data with the light VBPR backbone (``certify_world``): the
statistics and their user-clustered intervals, the built-in properties (a second retrain passes, the
original fails, a rebuild-only model is labelled, inconclusive when the audit has no power), the
difference attack, the typed signed certificate, the one-axis report plot, and revision 1 (fixed
policy) when no calibration is given."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance
from sklearn.metrics import roc_auc_score

from tru.certify import (
    Calibration,
    Certificate,
    CertifyError,
    Policy,
    calibrate,
    certify,
    open_run,
    read_certificate,
    run_certification,
    verdict_agreement,
)
from tru.certify import forgetting as fg
from tru.certify import statistics as stx
from tru.certify.binding import check_certificate
from tru.certify.calibration import tolerances
from tru.certify.mia import score_statistics
from tru.certify.output import write_outputs
from tru.certify.policy import load_policy, policy_from_dict
from tru.checkpoint import weights_sha256
from tru.data.dataset import DataError
from tru.forget.requests import DeletionRequest, read_requests, resolve_requests, write_requests
from tru.forget.spec import ForgetSpec

from .certify_world import (
    CAL_SEEDS,
    REF_SEED,
    SECOND_SEEDS,
    CertWorld,
    cert_world_fixture,  # noqa: F401 (the session fixture `cert_world`)
)

SEEDS = (0, 1, 2)


def _runs(w: CertWorld, regime: str, *seeds: int) -> list[Any]:
    r = getattr(w, regime)
    return [open_run(r.retrains[s], w.ds, requests=r.spec.requests) for s in seeds]


def _certify(w: CertWorld, regime: str, candidate: Any, **kw: Any) -> Certificate:
    r = getattr(w, regime)
    kw.setdefault("calibration", r.calibration)
    ref = kw.pop("retrained", r.retrains[REF_SEED])
    return certify(
        w.ds, r.spec, w.original, candidate, ref, kw.pop("policy", None), SEEDS, kw.pop("out_dir", None),
        CertWorld.options(), **kw,
    )  # fmt: skip


@pytest.fixture(scope="module")
def second_certs(cert_world: CertWorld) -> list[Certificate]:
    """A second retrain (a seed the calibration never saw) certified against the reference retrain."""
    w = cert_world
    return [_certify(w, "user", w.user.retrains[s]) for s in SECOND_SEEDS] + [
        _certify(w, "inter", w.inter.retrains[SECOND_SEEDS[0]])
    ]


# ------------------------------------------------------------------------------------ the statistics
def test_weighted_helpers_match_references() -> None:
    rng = np.random.default_rng(0)
    s, y = np.round(rng.normal(size=300), 1), rng.random(300) < 0.3  # ties on purpose
    assert stx.weighted_auc(s, y, np.ones((1, 300)))[0] == pytest.approx(roc_auc_score(y, s))
    w = rng.integers(0, 4, 300).astype(float)  # integer weights = replicated elements
    rep = np.repeat(np.arange(300), w.astype(int))
    assert stx.weighted_auc(s, y, w[None])[0] == pytest.approx(roc_auc_score(y[rep], s[rep]))
    a, b = rng.random(200), rng.random(150) ** 2
    assert stx.weighted_w1(a, np.ones((1, 200)), b, np.ones((1, 150)))[0] == pytest.approx(
        wasserstein_distance(a, b)
    )
    wa, wb = rng.integers(0, 3, 200).astype(float), rng.integers(0, 3, 150).astype(float)
    ref = wasserstein_distance(a, b, wa, wb)
    assert stx.weighted_w1(a, wa[None], b, wb[None])[0] == pytest.approx(ref)
    pw = stx.poisson_weights(50, 20, 0)
    assert pw.shape == (21, 50) and (pw[0] == 1).all() and pw[1:].std() > 0.5


def test_difference_attack_folds_split_the_deleted_users(cert_world: CertWorld) -> None:
    """Each fold of the difference attack's cross-fit holds D_f users (else one classifier has no
    positive and the AUC is fixed by the fold sizes, a null of width 0); one user: skipped, with a note."""
    from tru.forget.requests import DeletionRequest, resolve_requests

    ds = cert_world.ds
    users = np.unique(ds.train.users)

    def design(n: int) -> Any:
        reqs = [DeletionRequest(f"u{u}", "user", int(u), None, "2026-01-31", "") for u in users[:n]]
        return stx.build_design(resolve_requests(ds, reqs), ds.n_users, ds.n_items, seeds=range(8))

    for n in (2, 3, 9):
        d = design(n)
        f_users = np.unique(d.forget.users)
        assert len(d.diff_folds) == 8 and len(f_users) == n
        for fold in d.diff_folds:
            assert {int(fold[f_users].sum()), n - int(fold[f_users].sum())} == {n // 2, n - n // 2}
    one = design(1)
    assert one.diff_folds == [] and any("difference attack skipped" in m for m in one.notes)


def test_per_user_metrics_and_ranks_match_the_evaluator(cert_world: CertWorld) -> None:
    w, spec = cert_world, cert_world.inter.spec
    model = open_run(w.original, w.ds).run.model
    _, rec, ndcg = stx.per_user_retain(model, spec.test, spec.retain, w.ds.n_users, w.ds.n_items)
    ref = fg.retain_utility(model, spec, w.ds.n_users, w.ds.n_items)
    assert rec.mean() == pytest.approx(ref["retain_recall@20"]) and ndcg.mean() == pytest.approx(
        ref["retain_ndcg@20"]
    )
    design = stx.build_design(spec, w.ds.n_users, w.ds.n_items, SEEDS)
    ev = stx.model_evidence("original", model, design)
    hits = fg.per_pair_hits(model, design.forget, spec.retain, w.ds.n_users, w.ds.n_items)
    np.testing.assert_array_equal(ev.forget_hit.astype(bool), hits)
    # brute force: each pair ranked alone among the items outside u's D
    with torch.no_grad():
        scores = model.full_sort_predict(torch.arange(w.ds.n_users)).numpy().astype(np.float64)
    masked = scores.copy()
    masked[w.ds.train.users, w.ds.train.items] = -np.inf
    f = design.forget
    s_t = scores[f.users, f.items]
    above = (masked[f.users] > s_t[:, None]).sum(1)
    cand = np.isfinite(masked[f.users]).sum(1)
    np.testing.assert_allclose(ev.forget_pct, above / cand)
    st = score_statistics(model, f, w.ds.n_users, w.ds.n_items, batch_size=5)
    np.testing.assert_allclose(st[:, 1], (scores[f.users] > s_t[:, None]).sum(1) / (w.ds.n_items - 1))


def test_tolerance_is_the_floored_upper_quantile_jointly() -> None:
    rng = np.random.default_rng(1)
    samples = {"forget_hr_gap": rng.random(1000) * 0.2, "rank_w1": rng.random(1000) * 0.001}
    plain = Policy(joint_level=False)
    tol, q, raw = tolerances(samples, plain)
    assert q == 0.95
    assert tol["forget_hr_gap"] == pytest.approx(np.quantile(samples["forget_hr_gap"], 0.95))
    assert tol["rank_w1"] == plain.floor_rank_w1 > raw["rank_w1"]  # the floor wins over a tiny null
    # joint: the quantile rises until 95 % of the draws pass every statistic at once
    ind = {"forget_hr_gap": rng.random(1000), "mia_auc_gap": rng.random(1000)}
    tol, q, _ = tolerances(ind, Policy(floor_forget_hr_gap=0, floor_mia_auc_gap=0))
    ok = (ind["forget_hr_gap"] <= tol["forget_hr_gap"]) & (ind["mia_auc_gap"] <= tol["mia_auc_gap"])
    assert q > 0.96 and ok.mean() >= 0.95


def test_calibration_null_combines_seeds_and_a_user_bootstrap(cert_world: CertWorld) -> None:
    cal, k = cert_world.user.calibration, len(CAL_SEEDS)
    n_boot = cal.document["bootstrap"]["n_boot"]
    null = cal.null("retrain")
    for name in ("forget_hr_gap", "rank_w1", "mia_auc_gap", "user_mia_auc_gap", "retain_recall_ratio"):
        assert len(null.samples[name]) == k * (k - 1) * (n_boot + 1)
        assert len(null.seed_values[name]) == k * (k - 1)
    # seed-to-seed variation is real (genuinely different retrains) and the bootstrap widens it
    w1 = null.samples["rank_w1"].reshape(k * (k - 1), n_boot + 1)
    assert (w1[:, 0] > 0).all() and (w1.std(1) > 0).all()
    assert len(set(cal.seeds)) == k and cal.seeds == list(CAL_SEEDS)
    pol = Policy()
    tol, q, _ = cal.tolerances(pol, "retrain")
    for name, t in tol.items():
        assert t == pytest.approx(max(pol.floor(name), np.nanquantile(null.samples[name], q)))
    stored = cal.document["tolerances"]["retrain"]["statistics"]
    assert {n: s["tolerance"] for n, s in stored.items()} == pytest.approx(tol, abs=1e-5)


# ------------------------------------------------------------------------- the built-in properties
def test_two_seeds_give_different_retrains_and_identical_ones_are_refused(cert_world: CertWorld) -> None:
    w = cert_world
    a, b = _runs(w, "user", CAL_SEEDS[0], CAL_SEEDS[1])
    ha, hb = (weights_sha256(r.run.model.state_dict()) for r in (a, b))
    assert ha != hb, "tru unlearn --method retrain --seed S: the seed does not reach the retrain"
    assert json.loads((a.folder / "unlearn.json").read_text())["seed"] == CAL_SEEDS[0]
    orig = open_run(w.original, w.ds, requests=w.user.spec.requests)
    c = _runs(w, "user", CAL_SEEDS[2])[0]
    with pytest.raises(CertifyError, match=r"identical weights.*seed does not reach training"):
        calibrate(w.ds, w.user.spec, orig, [a, a, c], options=CertWorld.options())
    with pytest.raises(CertifyError, match="K ≥ 3"):
        calibrate(w.ds, w.user.spec, orig, [a, b], options=CertWorld.options())


def test_a_second_retrain_passes(second_certs: list[Certificate]) -> None:
    for cert in second_certs:
        assert cert.verdict == "passed" and cert.passed, cert.reasons
        assert cert.tolerances.startswith("calibrated") and cert.evidence == "retrain comparison"
        assert all(s.passed for s in cert.statistics if s.checked)
        assert cert.update == "updated"  # a retrain changes every parameter
        # without a second retrain given, the axis shows the calibration's: the median distance of its
        # retrain pairs, on the failing side
        row = next(r for r in cert["statistics"] if r["name"] == "forget_hr_gap")
        pairs = cert.calibration and Calibration.load(cert.calibration["folder"]).null("retrain")
        assert pairs and row["second_retrain"] == pytest.approx(
            np.median(np.abs(pairs.seed_values["forget_hr_gap"]))
        )
        assert row["second_retrain_source"].startswith("calibration") and row["second_retrain"] >= 0


def test_the_original_fails(cert_world: CertWorld, second_certs: list[Certificate]) -> None:
    """Every certificate measures the original against the same reference: it is outside tolerance on
    forgetting statistics (so the verdict is not inconclusive); certified as the candidate it fails."""
    for cert in second_certs:
        outside = [s.name for s in cert.statistics if s.kind == "forgetting" and s.original_passed is False]
        assert {"forget_hr_gap", "rank_w1", "mia_auc_gap"} <= set(outside)
    user = second_certs[0]
    assert "user_mia_auc_gap" in [s.name for s in user.statistics if s.original_passed is False]
    same = _certify(cert_world, "user", cert_world.same)
    assert same.verdict == "failed" and not same.passed
    assert {"forget_hr_gap", "rank_w1", "mia_auc_gap", "user_mia_auc_gap"} <= set(same.failed_statistics)
    assert same.update == "rebuild only" and same["unlearned"]["params_changed_measured"] == 0


def test_rebuild_only_is_labelled(cert_world: CertWorld) -> None:
    w = cert_world
    cert = _certify(w, "user", w.rebuilt)
    assert cert.rebuild_only and cert["update"]["params_changed_vs_rebuilt"] == 0
    assert cert["update"]["params_changed_measured"] > 0  # the deleted users' rows were reset
    assert any("rebuild only" in n for n in cert["notes"])
    assert cert.verdict == "failed"  # the items still carry D_f: retrain ranks those pairs lower
    tuned = _certify(w, "inter", w.tuned)
    assert tuned.update == "updated" and not tuned.rebuild_only


def test_inconclusive_when_the_audit_cannot_tell_the_original_from_retrain(cert_world: CertWorld) -> None:
    w = cert_world
    blind = Policy(**{f"floor_{n}": 2.0 for n in stx.STAT_NAMES})  # every tolerance wider than any distance
    cert = _certify(w, "inter", w.inter.retrains[SECOND_SEEDS[0]], policy=blind)
    assert cert.verdict == "inconclusive" and cert.passed is False and cert["passed"] is False
    assert "cannot tell the original model from Retrain" in cert.reasons[0]
    assert cert["inconclusive"]["original_within_tolerance"] is True
    small = _certify(w, "inter", w.inter.retrains[SECOND_SEEDS[0]], policy=Policy(min_forget_pairs=10_000))
    assert small.verdict == "inconclusive" and not small.passed
    assert "at least 10000" in small.reasons[0] and "240 pairs" in small.reasons[0]


def test_the_difference_attack(cert_world: CertWorld, second_certs: list[Certificate]) -> None:
    """AUC of telling D_f from held-out pairs by how they moved from the original: near ½ for a model
    that did not move (the original itself), high for retrain (it drops exactly what it never saw); a
    weak fine-tune moves everything alike and sits far below retrain's AUC."""
    inter = second_certs[-1]
    assert inter["original"]["diff_auc"] == 0.5
    assert inter["retrained"]["diff_auc"] > 0.75 and inter["second_retrained"] is None
    gap = inter.statistic("diff_auc_gap")
    assert gap is not None and gap.checked and gap.passed and abs(gap.candidate) < gap.tolerance
    tuned = _certify(cert_world, "inter", cert_world.tuned)
    d = tuned.statistic("diff_auc_gap")
    assert d is not None and d.passed is False and d.candidate < -d.tolerance
    lo, hi = d.candidate_ci95
    assert lo is not None and hi is not None and lo <= d.candidate <= hi  # user-clustered interval


# ------------------------------------------------------------------- the certificate and the report
def test_certificate_v2_is_typed_signed_and_plotted(
    cert_world: CertWorld, tmp_path: Path, monkeypatch
) -> None:
    import tru.certify.report as report

    figs: list[Any] = []
    orig_png = report._png
    monkeypatch.setattr(report, "_png", lambda fig: figs.append(fig) or orig_png(fig))
    w = cert_world
    out = tmp_path / "cert"
    second = w.user.retrains[SECOND_SEEDS[0]]
    cert = _certify(w, "user", w.rebuilt, out_dir=out, second_retrained=second)
    doc = json.loads((out / "certificate.json").read_text())
    assert doc == cert and doc["format"] == "tru-certificate/2"
    for key in ("passed", "verdict", "candidate", "models", "reasons", "evidence", "regime", "requests"):
        assert key in doc
    assert doc["passed"] is (doc["verdict"] == "passed") and doc["candidate"] == "unlearned"
    typed = read_certificate(out)
    assert typed.signed and typed.format == "tru-certificate/2" and typed.verdict == cert.verdict
    assert [s.name for s in typed.statistics] == list(stx.STAT_NAMES)
    assert typed.calibration and typed.calibration["sha256"] == w.user.calibration.digest
    assert check_certificate(typed, w.rebuilt) == typed.candidate_binding.weights_sha256
    # per statistic: candidate / original / second retrain / tolerance, the second from the model given
    for s in typed.statistics:
        if s.checked:
            assert None not in (s.candidate, s.original, s.second_retrain, s.tolerance), s
            assert s.second_retrain_passed is True
    assert doc["statistics"][0]["second_retrain_source"] == "model"
    # the one-axis plot: one axes, x = distance / tolerance, the tolerance at x = 1
    png = (out / "statistics.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    stats_fig = next(f for f in figs if f.axes and "tolerance" in f.axes[0].get_xlabel())
    assert len(stats_fig.axes) == 1
    ax = stats_fig.axes[0]
    assert any(np.allclose(line.get_xdata(), 1.0) for line in ax.get_lines())
    xs = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections if len(c.get_offsets())])
    want = [max(v, 0.01) for r in doc["statistics"] if r["checked"] for v in r["normalised"].values()]
    assert sorted(np.round(xs, 6)) == sorted(np.round(want, 6))
    html = (out / "report.html").read_text()
    srcs = re.findall(r"src='([^']*)'", html)
    assert len(srcs) >= 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "second retrain" in html and not [p for p in out.parent.iterdir() if p.name.startswith(".cert.")]


def test_certificate_holds_no_raw_pairs(cert_world: CertWorld, tmp_path: Path) -> None:
    w = cert_world
    out = tmp_path / "cert"
    cert = run_certification(
        w.data, w.original, w.tuned, w.inter.requests_csv, out, w.inter.retrains[REF_SEED],
        seeds=SEEDS, validate=False, options=CertWorld.options(), calibration=w.inter.cal_dir,
    )  # fmt: skip
    spec = w.inter.spec
    assert cert["requests"]["n_forget_pairs"] == len(spec.forget)
    assert cert["requests"]["forget_commitment"] == spec.forget_commitment(w.ds.n_items)
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

    walk(cert.document)
    assert {k for k, _ in int_lists} <= {"seeds", "n_forget_pairs", "n_units"}, int_lists  # counts only
    text = (out / "certificate.json").read_text() + (out / "report.html").read_text()
    for u, i in zip(spec.forget.users[:50], spec.forget.items[:50]):
        assert f"({u}, {i})" not in text and f"[{u}, {i}]" not in text


# --------------------------------------------------------------------- retrain-free and agreement
def test_retrain_free_calibrated_and_the_agreement(cert_world: CertWorld) -> None:
    w = cert_world
    free = _certify(w, "inter", w.tuned, retrained=None)
    assert free.evidence.startswith("retrain-free") and free["reference"]["kind"] == "retrain-free"
    assert free["calibration"]["level"] == "retrain-free" and free["calibration"]["same_forget_set"] is True
    assert free.verdict == "failed" and "forget_hr_gap" in free.failed_statistics
    agree = verdict_agreement(
        w.ds, w.inter.spec, w.original, w.tuned, w.inter.retrains[REF_SEED], w.inter.calibration,
        seeds=SEEDS, options=CertWorld.options(),
    )  # fmt: skip
    assert agree["retrain"]["verdict"] == "failed" and agree["retrain_free"]["verdict"] == "failed"
    assert agree["agree"] is True and agree["same_forget_set"] is True
    second = verdict_agreement(
        w.ds, w.inter.spec, w.original, w.inter.retrains[SECOND_SEEDS[0]], w.inter.retrains[REF_SEED],
        w.inter.calibration, seeds=SEEDS, options=CertWorld.options(),
    )  # fmt: skip
    assert second["retrain"]["verdict"] == "passed"
    assert set(second["retrain_free"]["statistics"]) == set(stx.STAT_NAMES)


def test_the_calibrations_agreement_gates_a_retrain_free_pass(cert_world: CertWorld) -> None:
    """certification.md §5: a retrain-free pass counts only where the calibration measured retrain-free
    verdicts agreeing with retrain's at least ``min_retrain_free_agreement`` of the time."""
    from tru.certify.binding import sign

    w = cert_world
    cal = w.user.calibration
    a, k = cal.document["agreement"], cal.k
    # every retrain against each other retrain, the original against each retrain; no candidate was
    # given, so no rate: those rows agree by construction (in-sample, or no power)
    assert a["rows"] == len(a["table"]) == k * (k - 1) + k and a["models"]["original"]["rows"] == k
    assert all(r["retrain"] != "passed" and r["retrain_free"] != "passed" for r in a["table"]
               if r["model"] == "original")  # fmt: skip
    assert a["candidate_rows"] == 0 and a["rate"] is None
    # a model that passes retrain-free (the rebuild + the exact part, user regime) ...
    lax = Policy(min_retrain_free_agreement=0.0)
    free = _certify(w, "user", w.rebuilt, retrained=None, policy=lax)
    assert free.verdict == "passed", free.reasons
    # ... is inconclusive under the default policy: this calibration measured no candidate's agreement
    blind = _certify(w, "user", w.rebuilt, retrained=None)
    assert blind.verdict == "inconclusive" and "--candidates" in blind.reasons[0]
    # ... and without any calibration (revision 1)
    rev1 = {"mia_auc_tolerance": 1, "user_mia_auc_tolerance": None, "retain_recall_min_ratio": 0,
            "forget_hr_max_excess": 1, "forget_hr_max_deficit": 1}  # fmt: skip
    bare = _certify(w, "user", w.rebuilt, retrained=None, calibration=None, policy=policy_from_dict(rev1))
    assert bare.verdict == "inconclusive" and "no calibration measured" in bare.reasons[0]
    lax1 = policy_from_dict({**rev1, "min_retrain_free_agreement": 0})
    assert _certify(w, "user", w.rebuilt, retrained=None, calibration=None, policy=lax1).verdict == "passed"

    def signed(agreement: dict[str, Any]) -> Calibration:
        doc = {key: v for key, v in cal.document.items() if key != "signature"}
        return Calibration(sign({**doc, "agreement": agreement}))

    measured = {"rows": 12, "agree": 11, "candidate_rows": 3, "candidate_agree": 2, "rate": 2 / 3,
                "policy": Policy().to_dict()}  # fmt: skip
    # ... passes with a measured agreement at the bar, is inconclusive below it
    at_bar = signed(measured)
    assert _certify(w, "user", w.rebuilt, retrained=None, calibration=at_bar,
                    policy=Policy(min_retrain_free_agreement=0.6)).verdict == "passed"  # fmt: skip
    low = _certify(w, "user", w.rebuilt, retrained=None, calibration=at_bar)
    assert low.verdict == "inconclusive" and "2 of 3" in low.reasons[0]
    assert "min_retrain_free_agreement" in low.reasons[0]
    # ... and when the agreement was measured under other tolerance settings
    other = signed({**measured, "candidate_agree": 3, "rate": 1.0,
                    "policy": Policy(floor_rank_w1=0.5).to_dict()})  # fmt: skip
    moved = _certify(w, "user", w.rebuilt, retrained=None, calibration=other)
    assert moved.verdict == "inconclusive" and "floor_rank_w1" in moved.reasons[0]
    # a retrain comparison is not gated
    compared = _certify(w, "user", w.rebuilt, calibration=at_bar)
    assert compared.verdict == _certify(w, "user", w.rebuilt).verdict


# ------------------------------------------------------------------------- revision 1 (no calibration)
def test_without_calibration_the_fixed_policy_decides(cert_world: CertWorld) -> None:
    w = cert_world
    weak = _certify(w, "inter", w.tuned, calibration=None)
    assert weak.tolerances.startswith("fixed") and weak.verdict == "failed"
    failed = set(weak.failed_statistics)
    assert {"forget_hr_gap", "mia_auc_gap"} <= failed and "rank_w1" not in failed  # rev 1 has no W₁ key
    assert weak.statistic("rank_w1").checked is False
    assert all("FAILED" in r for r in weak.reasons) and len(weak.reasons) == len(failed)
    lenient = policy_from_dict(
        {"mia_auc_tolerance": 1, "user_mia_auc_tolerance": None, "retain_recall_min_ratio": 0,
         "forget_hr_max_excess": 1, "forget_hr_max_deficit": 1}
    )  # fmt: skip
    ok = _certify(w, "inter", w.tuned, calibration=None, policy=lenient)
    assert ok.verdict == "passed" and ok.passed  # revision 1 never says inconclusive
    hard = _certify(w, "inter", w.inter.retrains[SECOND_SEEDS[0]], calibration=None,
                    policy=Policy(retain_recall_min_ratio=1.5, max_time_ratio=0.0))  # fmt: skip
    assert hard.verdict == "failed" and any("retain Recall@20" in r for r in hard.reasons)


def test_policy_file_checks(tmp_path: Path) -> None:
    assert load_policy(None) == Policy()
    good = tmp_path / "policy.yaml"
    good.write_text(
        "mia_auc_tolerance: 0.03\nfloor_rank_w1: 0.05\nmin_forget_pairs: 50\njoint_level: false\n"
    )
    pol = load_policy(good)
    assert pol.mia_auc_tolerance == 0.03 and pol.floor("rank_w1") == 0.05 and pol.min_forget_pairs == 50
    assert pol.joint_level is False
    bad = tmp_path / "bad.yaml"
    for text, match in (
        ("mia_auc_tolerence: 0.03\n", r"bad\.yaml.*unknown policy key 'mia_auc_tolerence'"),
        ("retain_recall_min_ratio: -1\n", "retain_recall_min_ratio"),
        ("min_forget_pairs: 2.5\n", "whole number"),
        ("null_quantile: 1.5\n", "null_quantile"),
        ("joint_level: 1\n", "true or false"),
        ("- a list\n", "mapping"),
    ):
        bad.write_text(text)
        with pytest.raises(DataError, match=match):
            load_policy(bad)


def test_failures_leave_no_output(cert_world: CertWorld, tmp_path: Path) -> None:
    w = cert_world
    out = tmp_path / "out" / "cert"
    bad_policy = tmp_path / "policy.yaml"
    bad_policy.write_text("forget_hr_max_excess: 0.02\nsurprise: 1\n")
    args = (w.data, w.original, w.tuned)
    with pytest.raises(DataError, match="surprise"):
        run_certification(
            *args, w.inter.requests_csv, out, w.inter.retrains[REF_SEED], bad_policy, validate=False
        )
    bad_csv = tmp_path / "requests.csv"
    write_requests(bad_csv, [DeletionRequest("x", "user", w.ds.n_users + 5, None, "2025-01-01", "")])
    with pytest.raises(DataError, match="unknown user_id"):
        run_certification(*args, bad_csv, out, validate=False)
    with pytest.raises(CertifyError, match="regime"):  # a user-regime calibration for interaction requests
        run_certification(*args, w.inter.requests_csv, out, validate=False, calibration=w.user.cal_dir)
    assert not out.exists() and not out.parent.exists()
    with pytest.raises(FileNotFoundError):
        write_outputs(out, {"a.json": b"{}", "missing/b.png": b"x"})
    assert not out.exists() and not out.parent.exists()
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("keep")
    with pytest.raises(CertifyError, match="not empty"):
        write_outputs(out, {"a.json": b"{}"})
    assert (out / "keep.txt").read_text() == "keep"
    ds = w.ds
    empty = ForgetSpec(
        "none", ds.train.subset(np.zeros(len(ds.train), bool)), ds.train, np.empty(0), np.empty(0), ds.valid,
        ds.test,
    )  # fmt: skip
    with pytest.raises(DataError, match="nothing to certify"):
        certify(ds, empty, w.original, w.original, out_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_a_retrain_that_is_not_genuine_is_refused(cert_world: CertWorld) -> None:
    w = cert_world
    with pytest.raises(CertifyError, match="not a genuine retrain"):
        _certify(w, "inter", w.tuned, retrained=w.tuned)
    with pytest.raises(CertifyError, match="same weights as the reference"):
        _certify(w, "inter", w.tuned, second_retrained=w.inter.retrains[REF_SEED])
    extra = DeletionRequest("extra", "user", int(w.user.spec.users[0]), None, "2025-02-01", "")
    spec = resolve_requests(w.ds, [*read_requests(w.inter.requests_csv), extra], strict=False)
    with pytest.raises(CertifyError, match=r"has forgotten 240 request.*not the 241"):
        certify(w.ds, spec, w.original, w.tuned, options=CertWorld.options())


def test_a_start_with_seed_noise_is_said(cert_world: CertWorld) -> None:
    """A candidate whose start carried seed noise (tru.unlearn.seed_noise) and that then changed nothing is
    still 'rebuild only', and the certificate, its notes and its report say the start was noised."""
    import dataclasses

    from tru.certify import open_run

    w = cert_world
    tuned = open_run(w.tuned, w.ds, requests=w.inter.spec.requests)
    meta = {**(tuned.unlearn or {}), "no_update": True, "seed_noise": {"sigma": 0.3, "target_auc": 0.66}}
    cert = _certify(w, "inter", dataclasses.replace(tuned, unlearn=meta))
    assert cert.rebuild_only and cert["update"]["seed_noise_sigma"] == 0.3
    assert any("seed noise (σ 0.3" in n for n in cert["notes"])
    plain = _certify(w, "inter", tuned)
    assert plain["update"]["seed_noise_sigma"] == 0.0 and "seed noise" not in plain["update"]["why"]
