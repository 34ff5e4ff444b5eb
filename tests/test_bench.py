"""The unlearning benchmark: a real (tiny) matrix run that resumes without redoing cells, and the summary's
distance-to-retrain columns and policy verdicts on a hand-made results frame."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tru import cli
from tru.bench import KEY, BenchConfig, read_results, run_bench, summarise, with_retrain_gaps


def _row(method: str, hr: float, auc: float, retain: float, seed: int = 0) -> dict:
    return {"dataset": "d", "backbone": "b", "regime": "user", "strategy": "random", "ratio": 0.05,
            "seed": seed, "method": method, "forget_hr@20": hr, "mia_auc": auc,
            "retain_recall@20": retain}  # fmt: skip


def test_gaps_and_policy_verdicts() -> None:
    df = pd.DataFrame(
        [
            _row("retrain", 0.10, 0.50, 0.40),
            _row("tru", 0.11, 0.54, 0.39),  # every threshold met
            _row("mmrecun", 0.13, 0.50, 0.40),  # under-forgets: +0.03 > 0.02
            _row("finetune", 0.04, 0.50, 0.40),  # over-forgets: −0.06 < −0.05
            _row("gradient_ascent", 0.10, 0.44, 0.40),  # MIA gap 0.06 > 0.05
            _row("tru-no-rfg", 0.10, 0.50, 0.38),  # retain 0.95 < 0.97
            _row("tru", 0.10, 0.50, 0.40, seed=1),  # no retrain row for seed 1
        ]
    )
    out = with_retrain_gaps(df).set_index(["method", "seed"])
    assert out.loc[("tru", 0), "forget_hr_gap"] == pytest.approx(0.01)
    assert out.loc[("tru", 0), "mia_auc_gap"] == pytest.approx(0.04)
    assert out.loc[("tru", 0), "retain_ratio"] == pytest.approx(0.975)
    verdicts = out["passes"].to_dict()
    assert verdicts == {
        ("retrain", 0): True, ("tru", 0): True, ("mmrecun", 0): False, ("finetune", 0): False,
        ("gradient_ascent", 0): False, ("tru-no-rfg", 0): False, ("tru", 1): False,
    }  # fmt: skip


@pytest.mark.slow
def test_tiny_matrix_resumes_and_tabulates(tiny_dir: Path, tmp_path: Path) -> None:
    cfg = BenchConfig(
        datasets=[str(tiny_dir)], backbones=["vbpr"], regimes=["interaction"], methods=["retrain", "tru"],
        seeds=[0], epochs=2, unlearn={"max_steps": 10, "stop_on_target": False}, mia_seeds=1,
    )  # fmt: skip
    out = tmp_path / "bench"
    results = run_bench(cfg, out)
    df = read_results(results)
    assert sorted(df["method"]) == ["original", "retrain", "tru"]
    assert df.loc[df["method"] == "retrain", "time_ratio"].item() == 1.0
    tru = df[df["method"] == "tru"].iloc[0]
    assert 0 < tru["params_changed"] < tru["params_total"] and 0 < tru["steps"] <= 10
    before = results.read_bytes()
    run_bench(cfg, out)  # resumed: nothing left to run, nothing appended
    assert results.read_bytes() == before
    md = summarise(results, out).read_text()
    assert "| forget_hr_gap | mia_auc_gap | retain_ratio | policy pass |" in md
    assert (out / "tradeoff.png").stat().st_size > 0
    # tabulating several result files (one per dataset) without running anything
    argv = ["bench", "--from-results", str(results), str(results), "--out", str(tmp_path / "t")]
    assert cli.main(argv) == 0
    assert (tmp_path / "t" / "results.md").read_text() == md
    assert len(read_results([results, results])) == len(df)  # duplicate keys collapse
    assert set(KEY) <= set(df.columns)
