"""The calibration artifact: stored, reused, and refused (with a message saying what differs) for another
regime, a forget-set size outside its coverage, another model, another data version, or an edited
file; ``tru calibrate`` and ``tru certify --calibration`` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tru.certify import Calibration, CertifyError, Policy, certify, open_run
from tru.certify.calibration import CAL_FILE, NULL_PNG, recipe_of, train_retrains
from tru.cli import main
from tru.data.dataset import load_dataset, write_dataset
from tru.forget.requests import DeletionRequest, resolve_requests

from .certify_world import (
    CAL_SEEDS,
    REF_SEED,
    SECOND_SEEDS,
    CertWorld,
    cert_world_fixture,  # noqa: F401 (the session fixture `cert_world`)
)
from .conftest import make_tiny_frame


def test_round_trip_and_reuse(cert_world: CertWorld, tmp_path: Path) -> None:
    w = cert_world
    cal = Calibration.load(w.user.cal_dir)
    assert cal.document == w.user.calibration.document and cal.digest == w.user.calibration.digest
    assert (w.user.cal_dir / NULL_PNG).read_bytes().startswith(b"\x89PNG")
    doc = cal.document
    assert doc["format"] == "tru-calibration/1" and doc["k"] == 3 and doc["regime"] == "user"
    assert doc["forget_set"]["n_units"] == 20 and doc["coverage"]["n_units"] == [10, 40]
    assert doc["model"]["backbone"] == "vbpr" and doc["dataset"]["fingerprint"] == w.ds.fingerprint
    assert set(doc["tolerances"]) >= {"retrain", "retrain-free", "policy"}
    # reused from its folder by two certificates of another forget set of similar size (same regime)
    users = np.setdiff1d(np.arange(w.ds.n_users), w.user.spec.users)[:15]
    reqs = [DeletionRequest(f"v{u}", "user", int(u), None, "2026-02-01", "") for u in users]
    spec = resolve_requests(w.ds, reqs)
    orig = open_run(w.original, w.ds, requests=spec.requests)
    ref, second = train_retrains(w.ds, spec, orig, [REF_SEED, SECOND_SEEDS[0]], tmp_path / "r")
    c = certify(
        w.ds, spec, orig, second, ref, seeds=(0, 1), options=CertWorld.options(), calibration=w.user.cal_dir
    )
    assert c["calibration"]["sha256"] == cal.digest and c["calibration"]["same_forget_set"] is False
    assert c.tolerances.startswith("calibrated") and c.verdict == "passed", c.reasons
    assert c.statistic("forget_hr_gap").tolerance == pytest.approx(
        cal.tolerances(Policy(), "retrain", [s.name for s in c.statistics if s.candidate is not None])[0][
            "forget_hr_gap"
        ]
    )


def test_refused_outside_its_coverage(cert_world: CertWorld, tmp_path: Path) -> None:
    w = cert_world
    cal, pol, cfg = w.user.calibration, Policy(), w.config
    cal.check_applies(w.ds, w.user.spec, cfg, "vbpr", pol)  # its own forget set: fine
    with pytest.raises(CertifyError, match="user regime; these requests are in the interaction regime"):
        cal.check_applies(w.ds, w.inter.spec, cfg, "vbpr", pol)
    few = resolve_requests(
        w.ds, [DeletionRequest(f"f{u}", "user", u, None, "2026-01-01", "") for u in range(5)]
    )
    with pytest.raises(CertifyError, match=r"covers forget sets of \d+–\d+ pairs and 10–40 users.*5 users"):
        cal.check_applies(w.ds, few, cfg, "vbpr", pol)
    with pytest.raises(CertifyError, match=r"recipe differs in epochs: 15 → 5"):
        cal.check_applies(w.ds, w.user.spec, {**cfg, "epochs": 5}, "vbpr", pol)
    with pytest.raises(CertifyError, match="made for model vbpr"):
        cal.check_applies(w.ds, w.user.spec, cfg, "mgcn", pol)
    assert "seed" not in recipe_of(cfg) and "device" not in recipe_of(cfg)
    cal.check_applies(w.ds, w.user.spec, {**cfg, "seed": 99, "device": "cuda"}, "vbpr", pol)  # not recipe
    df, feats = make_tiny_frame(seed=5)
    write_dataset(tmp_path / "other", "tiny", df, feats, source={"kind": "test"})
    other = load_dataset(tmp_path / "other", validate=False)
    with pytest.raises(CertifyError, match=r"measured on data version 'tiny'.*calibrate again"):
        cal.check_applies(other, w.user.spec, cfg, "vbpr", pol)
    with pytest.raises(CertifyError, match="at least 4"):
        cal.check_applies(w.ds, w.user.spec, cfg, "vbpr", Policy(min_calibration_retrains=4))
    # through certify: refused before anything is computed or written
    with pytest.raises(CertifyError, match="regime"):
        certify(
            w.ds, w.inter.spec, w.original, w.tuned, w.inter.retrains[REF_SEED], calibration=w.user.cal_dir,
            out_dir=tmp_path / "never",
        )  # fmt: skip
    assert not (tmp_path / "never").exists()


def test_an_edited_or_foreign_file_is_refused(cert_world: CertWorld, tmp_path: Path) -> None:
    doc = json.loads((cert_world.user.cal_dir / CAL_FILE).read_text())
    doc["null"]["retrain"]["samples"]["forget_hr_gap"] = [0.9] * 10  # a looser null
    (tmp_path / "edited").mkdir()
    (tmp_path / "edited" / CAL_FILE).write_text(json.dumps(doc))
    with pytest.raises(CertifyError, match="signature missing or invalid"):
        Calibration.load(tmp_path / "edited")
    (tmp_path / "edited" / CAL_FILE).write_text(json.dumps({"format": "other"}))
    with pytest.raises(CertifyError, match="format 'other'"):
        Calibration.load(tmp_path / "edited")
    with pytest.raises(CertifyError, match="no calibration"):
        Calibration.load(tmp_path / "nowhere")


def test_cli_calibrate_then_certify(cert_world: CertWorld, tmp_path: Path, capsys) -> None:
    w = cert_world
    cal_dir, out = tmp_path / "cal", tmp_path / "cert"
    rc = main([
        "calibrate", "--data", str(w.data), "--model", str(w.original),
        "--requests", str(w.inter.requests_csv),
        "--k", "3", "--retrained", str(w.inter.retrains[CAL_SEEDS[0]]), "--audit-seeds", "0,1",
        "--save-retrains", "--out", str(cal_dir),
    ])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "K = 3 retrains" in text and "tolerance" in text
    cal = Calibration.load(cal_dir)
    base = int(w.config["seed"])
    assert cal.seeds == [CAL_SEEDS[0], base + 1, base + 2]  # the given retrain, then the model's seed + 1..
    assert [r["folder"] for r in cal.document["retrains"]][1:] == [
        f"retrains/seed-{base + 1}",
        f"retrains/seed-{base + 2}",
    ]
    assert (cal_dir / "retrains" / f"seed-{base + 1}" / "model.pt").is_file()
    # TRU run on the calibration's forget set is judged for the agreement, beside the original and retrains
    agree = cal.document["agreement"]
    assert agree["models"]["candidate:tru"]["rows"] == 3 and agree["rows"] == 3 * 2 + 3 + 3
    tru_rows = [r for r in agree["table"] if r["model"] == "candidate:tru"]
    assert agree["candidate_rows"] == 3 and agree["candidate_agree"] == sum(
        r["retrain"] == r["retrain_free"] for r in tru_rows
    )
    assert (cal_dir / "retrains" / "candidates" / "tru" / "model.pt").is_file()
    assert f"agreement of retrain-free and retrain verdicts: {agree['candidate_agree']} of 3 rows" in text
    rc = main([
        "certify", "--data", str(w.data), "--original", str(w.original), "--unlearned", str(w.tuned),
        "--retrained", str(w.inter.retrains[REF_SEED]), "--requests", str(w.inter.requests_csv),
        "--calibration", str(cal_dir), "--seeds", "0,1", "--out", str(out),
    ])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0, text
    summary = json.loads(text[: text.rindex("}") + 1])
    assert summary["verdict"] == "failed" and summary["tolerances"].startswith("calibrated")
    assert (out / "statistics.png").is_file() and (out / "certificate.json").is_file()
    rc = main(
        [
            "certify",
            "--data",
            str(w.data),
            "--original",
            str(w.original),
            "--unlearned",
            str(w.tuned),
            "--requests",
            str(w.inter.requests_csv),
            "--calibration",
            str(cal_dir),
            "--out",
            str(cal_dir / "x"),
        ]
    )
    # the rule of every input folder (tru.outputs): --calibration is one
    assert rc == 2 and "lies inside the input folder --calibration" in capsys.readouterr().err


def test_unlearn_takes_the_seed_noise_of_a_calibration_that_covers_it(
    cert_world: CertWorld, tmp_path: Path, capsys
) -> None:
    """The calibration records the retrains' difference-attack AUC on the change of z; ``tru unlearn
    --calibration`` gives it to the start (here VBPR with ``seed_noise`` switched on); a calibration of
    another regime, or one made before the measurement was recorded, is refused (exit 2, nothing written)."""
    from tru.certify.binding import sign

    w = cert_world
    block = w.inter.calibration.document["seed_noise"]
    assert len(block["aucs"]) == 3 and block["auc"] == pytest.approx(float(np.median(block["aucs"])))
    assert block["auc"] > 0.5  # a retrain moves the deleted pairs' z more than held-out ones
    base = ["unlearn", "--data", str(w.data), "--model", str(w.original), "--requests",
            str(w.inter.requests_csv), "--set", "seed_noise=true", "--set", "max_steps=10"]  # fmt: skip
    out = tmp_path / "noisy"
    assert main([*base, "--calibration", str(w.inter.cal_dir), "--out", str(out)]) == 0, capsys.readouterr()
    noise = json.loads((out / "unlearn.json").read_text())["seed_noise"]
    assert noise["target_auc"] == pytest.approx(block["auc"])
    # VBPR has no graph: its start is the original (attack AUC ½, below a retrain's): nothing to add
    assert noise["auc_before"] == 0.5 and noise["sigma"] == 0.0 and noise["reached"]
    assert main([*base, "--calibration", str(w.user.cal_dir), "--out", str(tmp_path / "x")]) == 2
    assert "regime" in capsys.readouterr().err and not (tmp_path / "x").exists()
    # a user deletion with its own regime's calibration: applies, and there is no interaction pair to aim at
    assert w.user.calibration.document["seed_noise"]["auc"] is None
    user = [*base[:5], "--requests", str(w.user.requests_csv), *base[7:]]
    user += ["--calibration", str(w.user.cal_dir), "--out", str(tmp_path / "u")]
    assert main(user) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "u" / "unlearn.json").read_text())["seed_noise"] is None
    old = tmp_path / "old-cal"
    old.mkdir()
    doc = {k: v for k, v in w.inter.calibration.document.items() if k not in ("seed_noise", "signature")}
    (old / CAL_FILE).write_text(json.dumps(sign(doc)))
    assert main([*base, "--calibration", str(old), "--out", str(tmp_path / "y")]) == 2
    assert "no seed-noise measurement" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_unlearn_aims_at_chance_when_the_retrains_sit_below_it_and_refuses_a_bad_target(
    cert_world: CertWorld, tmp_path: Path, capsys
) -> None:
    """A calibration whose retrains the difference attack scores under ½ (a small forget set) asks for a
    start it cannot tell from chance, 0.5, not for an impossible target (which stopped the run with exit 2
    after the exact part); a target set by hand outside 0 or [0.5, 1) is refused when the options are read
    (exit 2, nothing written)."""
    from tru.certify.binding import sign

    w = cert_world
    base = ["unlearn", "--data", str(w.data), "--model", str(w.original), "--requests",
            str(w.inter.requests_csv), "--set", "seed_noise=true", "--set", "max_steps=10"]  # fmt: skip
    low = tmp_path / "low-cal"
    low.mkdir()
    doc = {k: v for k, v in w.inter.calibration.document.items() if k != "signature"}
    doc["seed_noise"] = {**doc["seed_noise"], "aucs": [0.41, 0.44, 0.47], "auc": 0.44}
    (low / CAL_FILE).write_text(json.dumps(sign(doc)))
    out = tmp_path / "chance"
    assert main([*base, "--calibration", str(low), "--out", str(out)]) == 0, capsys.readouterr().err
    assert json.loads((out / "unlearn.json").read_text())["seed_noise"]["target_auc"] == 0.5
    bad = tmp_path / "bad"
    assert main([*base, "--set", "seed_noise_auc=0.3", "--out", str(bad)]) == 2
    assert "'seed_noise_auc': expected 0 (off) or a value in [0.5, 1), got 0.3" in capsys.readouterr().err
    assert not bad.exists()
