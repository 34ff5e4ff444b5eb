"""The unlearning benchmark, revision 2: a real (tiny) matrix run certified with the calibrated certificate
(every method row written, the original never passed, the second retrain's row, the agreement columns, the
same verdicts as ``certify`` / ``verdict_agreement``), resumability, and the summary on a hand-made frame."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tru import cli
from tru.bench import (
    ALL_METHODS,
    KEY,
    ORIGINAL,
    SECOND,
    BenchConfig,
    agreement_table,
    pass_table,
    read_results,
    retrain_seeds,
    run_bench,
    size_ratio,
    summarise,
)


def _cfg(tiny_dir: Path, **kw: object) -> BenchConfig:
    base = dict(
        datasets=[str(tiny_dir)], backbones=["vbpr"], regimes=["user"], seeds=[0, 1], epochs={"*": 15},
        unlearn={"max_steps": 10, "check_every": 5}, n_boot=20, keep_models=True, validate=False,
        # a VBPR that memorises its train set (high rate, no regulariser): the audit has power
        recipe={"learning_rate": 0.02, "reg_weight": 0.0, "train_batch_size": 256},
    )  # fmt: skip
    return BenchConfig(**(base | kw))  # type: ignore[arg-type]


def test_tiny_matrix_certifies_every_method_and_resumes(tiny_dir: Path, tmp_path: Path) -> None:
    from tru.certify import AuditOptions, certify, open_run, verdict_agreement
    from tru.data.dataset import load_dataset
    from tru.forget.requests import read_requests, resolve_requests

    out = tmp_path / "bench"
    cfg = _cfg(tiny_dir)
    results = run_bench(cfg, out)
    df = read_results(results)
    want = [m for m in ALL_METHODS if m != "tru-no-sink"]  # the item sink acts in the item regime only
    for seed in (0, 1):
        assert sorted(df.loc[df["seed"] == seed, "method"]) == sorted(want)
    assert set(df["verdict"]) <= {"passed", "failed", "inconclusive"}
    # the original is never passed (a statistics-only pass would make the audit powerless: inconclusive)
    assert (df.loc[df["method"] == ORIGINAL, "verdict"] != "passed").all()
    # the second retrain: a genuine retrain with another seed, timed like the reference
    sec = df[df["method"] == SECOND]
    assert len(sec) == 2 and (sec["update"] == "updated").all() and (sec["time_ratio"] > 0).all()
    # the agreement columns: the retrain-free verdict with the other seed's calibration, and with its own
    assert (df["rf_verdict"].isin(["passed", "failed", "inconclusive"])).all()
    assert (df["agree"].astype(bool) == (df["rf_verdict"] == df["verdict"])).all()
    assert sorted(df.groupby("seed")["rf_calibration_seed"].first().tolist()) == [0, 1]
    assert (df.loc[df["seed"] == 0, "rf_calibration_seed"] == 1).all()
    assert (df["agree_same"].astype(bool) == (df["rf_verdict_same"] == df["verdict"])).all()
    # timings: every unlearned row has its own seconds and the reference retrain's
    tru = df[df["method"] == "tru"].iloc[0]
    assert tru["ref_seconds"] > 0 and tru["time_ratio"] == pytest.approx(
        tru["seconds"] / tru["ref_seconds"], rel=0.02
    )
    assert (df.loc[df["method"] == "rebuild-only", "update"] == "rebuild only").all()
    tr = pd.read_csv(out / "training.csv")
    assert sorted(tr["role"].value_counts().to_dict().items()) == [("original", 2), ("retrain", 6)]
    assert tr["hit_cap"].all()  # 15 epochs, patience 20: every run reaches the cap (and training.csv says so)

    # the bench's verdicts are certify's and verdict_agreement's, statistic for statistic
    ds = load_dataset(tiny_dir)
    cell = "tiny-vbpr-user-random-0.05-s0"
    spec = resolve_requests(ds, read_requests(out / "requests" / f"{cell}.csv"))
    orig = open_run(out / "models" / "original" / "tiny-vbpr-s0", ds)
    ref = open_run(
        out / "models" / "retrain" / cell / f"seed-{retrain_seeds(0, 3)[0]}", ds, requests=spec.requests
    )
    cand = open_run(out / "runs" / cell / "tru", ds, requests=spec.requests)
    opts = AuditOptions(n_boot=20)
    cert = certify(
        ds, spec, orig, cand, ref, seeds=(0, 1, 2), options=opts, calibration=out / "calibrations" / cell
    )
    assert cert.verdict == tru["verdict"]
    for name in ("forget_hr_gap", "rank_w1", "retain_recall_ratio"):
        assert cert.statistic(name).candidate == pytest.approx(tru[f"stat_{name}"], abs=1e-6)
    own = verdict_agreement(
        ds, spec, orig, cand, ref, out / "calibrations" / cell, seeds=(0, 1, 2), options=opts
    )
    assert own["retrain"]["verdict"] == tru["verdict"]
    assert own["retrain_free"]["verdict"] == tru["rf_verdict_same"]
    other = out / "calibrations" / "tiny-vbpr-user-random-0.05-s1"  # the next seed's forget set
    agree = verdict_agreement(ds, spec, orig, cand, ref, other, seeds=(0, 1, 2), options=opts)
    assert agree["same_forget_set"] is False and agree["retrain_free"]["verdict"] == tru["rf_verdict"]

    # a cached run folder with the older forgotten record (no per-request commitments) is re-recorded
    from tru.bench import _forgotten_current
    from tru.checkpoint import Forgotten, save_run

    old = Forgotten(tuple(spec.forgotten().request_ids), "older-format", len(spec.forget))
    save_run(cand.folder, cand.run.model, cand.run.config, ds, train=spec.retain, forgotten=old,
             lineage=cand.run.lineage)  # fmt: skip
    stale = open_run(cand.folder, ds, requests=spec.requests)
    assert not stale.run.forgotten.covers(spec.forgotten())
    fresh = _forgotten_current(stale, spec, ds)
    assert (
        fresh.run.forgotten.covers(spec.forgotten()) and fresh.run.weights_sha256 == cand.run.weights_sha256
    )

    # resumable: a rerun adds nothing; rows lost with a killed run come back, and only those
    before = results.read_bytes()
    run_bench(cfg, out)
    assert results.read_bytes() == before
    lines = before.decode().splitlines(keepends=True)
    results.write_text("".join(lines[:-3]))
    run_bench(cfg, out)
    again = read_results(results)
    assert len(again) == len(df) and len(pd.read_csv(results)) == len(df)
    md = summarise(results, out).read_text()
    assert "## Pass rate per cell" in md and "## Agreement of retrain-free and retrain verdicts" in md
    assert (out / "results.png").stat().st_size > 0
    argv = ["bench", "--from-results", str(results), "--out", str(tmp_path / "t")]
    assert cli.main(argv) == 0
    assert set(KEY) <= set(df.columns)


def _row(method: str, verdict: str, rf: str, seed: int, regime: str = "user", size: str = "0.05") -> dict:
    return {"dataset": "d", "backbone": "b", "regime": regime, "strategy": "random", "size": size,
            "seed": seed, "method": method, "verdict": verdict, "rf_verdict": rf, "rf_verdict_same": rf,
            "failing": "" if verdict != "failed" else "mia_auc_gap", "update": "updated",
            "time_ratio": 0.01 if method != ORIGINAL else None, "cpu_ratio": 0.01}  # fmt: skip


def test_summary_counts_inconclusive_apart_and_agreement(tmp_path: Path) -> None:
    rows = [
        _row("tru", "passed", "passed", 0),
        _row("tru", "inconclusive", "passed", 1),
        _row("tru", "failed", "failed", 2),
        _row(ORIGINAL, "inconclusive", "inconclusive", 0),
        _row(ORIGINAL, "failed", "failed", 1),
        _row(ORIGINAL, "failed", "passed", 2),
        _row("tru", "passed", "failed", 0, "item"),
    ]
    df = pd.DataFrame(rows)
    tab = pass_table(df).set_index(["regime", "method"])
    assert tab.loc[("user", "tru"), ["n", "passed", "failed", "inconclusive"]].tolist() == [3, 1, 1, 1]
    assert (
        tab.loc[("user", ORIGINAL), "passed"] == 0 and tab.loc[("user", "tru"), "failing"] == "mia_auc_gap 1"
    )
    ag = agreement_table(df).set_index("regime")
    assert ag.loc["user", "n"] == 6 and ag.loc["user", "agree"] == 4
    assert ag.loc["user", "rf_pass_rt_not"] == 2 and ag.loc["item", "rf_not_rt_pass"] == 1
    csv = tmp_path / "results.csv"
    df.to_csv(csv, index=False)
    md = summarise(csv, tmp_path).read_text()
    assert "| d | b | user | 1/3 (1 inc.) · 0.010 | 0/3 (1 inc.) |" in md
    assert "- original: passed 0 / 3" in md


def test_sizes_select_exact_counts(tiny: object) -> None:
    from tru.forget.generate import generate_requests

    for n in (1, 10):
        reqs = generate_requests(tiny, "user", "random", size_ratio(tiny, "user", str(n)), 3)  # type: ignore[arg-type]
        assert len(reqs) == n
    assert size_ratio(tiny, "user", "0.05") == 0.05  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        size_ratio(tiny, "user", "100000")  # type: ignore[arg-type]


def test_a_bad_unlearning_option_is_refused_before_anything_is_trained(
    tiny_dir: Path, tmp_path: Path, capsys
) -> None:
    """``tru bench --set`` with a value outside its option's range stops at once (exit 2, the option named),
    before the hours of originals and retrains it would otherwise train first; ``tru unlearn`` likewise
    names the option before it looks for the model."""
    out = tmp_path / "b"
    argv = ["bench", "--data", str(tiny_dir), "--backbone", "vbpr", "--regime", "user", "--seeds", "0",
            "--epochs", "2", "--set", "learning_rate=0", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 2
    assert "'learning_rate': expected a value > 0, got 0" in capsys.readouterr().err
    assert not out.exists() or not any(out.rglob("*.pt"))
    argv = ["unlearn", "--data", str(tiny_dir), "--model", str(tmp_path / "no-such-run"),
            "--requests", str(tmp_path / "no.csv"), "--set", "min_retain_ratio=.nan",
            "--out", str(tmp_path / "u")]  # fmt: skip
    assert cli.main(argv) == 2
    assert "'min_retain_ratio': expected a finite number, got nan" in capsys.readouterr().err
    assert not (tmp_path / "u").exists()
