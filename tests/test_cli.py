"""The command line end to end on tiny synthetic data: the forms users' scripts rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tru.cli import build_parser, main


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    assert (
        main(["data", "prepare", "--source", "synthetic", "--preset", "tiny", "--out", str(d / "data")]) == 0
    )
    return d


@pytest.fixture(scope="module")
def trained(workdir: Path) -> Path:
    run = workdir / "run"
    rc = main(
        [
            "train",
            "--data",
            str(workdir / "data"),
            "--backbone",
            "vbpr",
            "--epochs",
            "3",
            "--seed",
            "5",
            "--set",
            "train_batch_size=512",
            "--out",
            str(run),
        ]
    )
    assert rc == 0
    return run


def test_every_command_has_help() -> None:
    for argv in (
        ["--help"],
        ["data", "--help"],
        ["data", "prepare", "--help"],
        ["data", "validate", "--help"],
        ["train", "--help"],
        ["evaluate", "--help"],
        ["unlearn", "--help"],
        ["sensitivity", "--help"],
        ["requests", "generate", "--help"],
        ["bench", "--help"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0, argv


def test_train_writes_metrics_and_checkpoint(trained: Path, workdir: Path, capsys) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())
    for split in ("valid", "test"):
        for m in ("recall", "ndcg", "precision", "map", "hr"):
            for k in (5, 10, 20, 50):
                assert 0.0 <= metrics[split][f"{m}@{k}"] <= 1.0
    run = json.loads((trained / "run.json").read_text())
    assert run["train_fingerprint"].startswith("hmac-sha256:") and run["features_fingerprint"]
    assert run["forgotten"]["request_ids"] == [] and run["lineage"]["kind"] == "train"
    assert run["config"]["seed"] == 5 and len(run["training"]["history"]) == 3
    capsys.readouterr()
    assert main(["evaluate", "--data", str(workdir / "data"), "--model", str(trained), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["test"]["recall@20"] == pytest.approx(metrics["test"]["recall@20"])


def test_train_refuses_non_empty_out_and_leaves_it(trained: Path, workdir: Path, capsys) -> None:
    before = (trained / "model.pt").read_bytes()
    rc = main(
        [
            "train",
            "--data",
            str(workdir / "data"),
            "--backbone",
            "vbpr",
            "--epochs",
            "1",
            "--out",
            str(trained),
        ]
    )
    assert rc == 2 and "not empty" in capsys.readouterr().err
    assert (trained / "model.pt").read_bytes() == before


def test_evaluate_refuses_other_data(trained: Path, workdir: Path, capsys) -> None:
    other = workdir / "other"
    assert (
        main(
            [
                "data",
                "prepare",
                "--source",
                "synthetic",
                "--preset",
                "tiny",
                "--seed",
                "9",
                "--out",
                str(other),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["evaluate", "--data", str(other), "--model", str(trained)]) == 2
    assert "fingerprint" in capsys.readouterr().err


def test_unlearn_and_sensitivity(trained: Path, workdir: Path, capsys) -> None:
    req = workdir / "requests.csv"
    data = str(workdir / "data")
    assert (
        main(
            [
                "requests",
                "generate",
                "--data",
                data,
                "--regime",
                "interaction",
                "--ratio",
                "0.05",
                "--out",
                str(req),
            ]
        )
        == 0
    )
    sens = workdir / "sens"
    assert (
        main(
            [
                "sensitivity",
                "--data",
                data,
                "--model",
                str(trained),
                "--requests",
                str(req),
                "--out",
                str(sens),
            ]
        )
        == 0
    )
    report = json.loads((sens / "sensitivity.json").read_text())
    assert any(u["selected"] for u in report["units"]) and (sens / "sensitivity.png").stat().st_size > 1000
    out = workdir / "unlearned"
    assert (
        main(
            [
                "unlearn",
                "--data",
                data,
                "--model",
                str(trained),
                "--requests",
                str(req),
                "--method",
                "tru",
                "--set",
                "max_steps=10",
                "--set",
                "stop_on_target=false",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rep = json.loads((out / "unlearn.json").read_text())
    assert rep["method"] == "tru" and rep["steps"] >= 1 and rep["params_changed"] > 0
    # no raw deleted interactions in the report: counts, request ids and a hash only
    assert set(rep["spec"]) <= {
        "regime",
        "n_requests",
        "request_ids",
        "n_forget_pairs",
        "n_retain_pairs",
        "n_users_deleted",
        "n_items_deleted",
        "n_affected_users",
        "forget_commitment",
        "requests_commitment",
        "n_noops",
    }
    capsys.readouterr()
    # the unlearned model is read back like a trained one (its graphs rebuilt from D_r)
    assert main(["evaluate", "--data", data, "--model", str(out), "--json"]) == 2  # the rows are still there
    assert "load it against the erased data version" in capsys.readouterr().err
    assert main(["evaluate", "--data", data, "--model", str(out), "--requests", str(req), "--json"]) == 0
    assert "recall@20" in json.loads(capsys.readouterr().out)["test"]


def test_bad_requests_exit_non_zero_and_write_nothing(trained: Path, workdir: Path, capsys) -> None:
    req = workdir / "bad.csv"
    req.write_text("request_id,kind,user_id,item_id,requested_at,reason\nr1,user,999999,,2026-01-01,x\n")
    out = workdir / "never"
    rc = main(
        [
            "unlearn",
            "--data",
            str(workdir / "data"),
            "--model",
            str(trained),
            "--requests",
            str(req),
            "--out",
            str(out),
        ]
    )
    assert rc != 0 and "999999" in capsys.readouterr().err
    assert not out.exists()


def test_console_script_exit_codes(tmp_path: Path) -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "tru", "evaluate", "--data", str(tmp_path), "--model", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "error" in bad.stderr


def test_threads_flag_applies_to_every_command(monkeypatch, tmp_path) -> None:
    """``--threads`` used to reach torch only through the trainer: ``tru unlearn --threads 1`` ran with
    every core, and two such processes oversubscribed a 2-core machine ~10x."""
    from tru import utils

    seen: list[int] = []
    monkeypatch.setattr(utils, "set_threads", seen.append)
    argv = ["unlearn", "--data", str(tmp_path / "none"), "--model", str(tmp_path / "m"), "--requests",
            str(tmp_path / "r.csv"), "--threads", "1", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) != 0  # no such dataset: an error, after the threads were set
    assert seen == [1]


def test_console_out_dot_overwrite_is_one_line_exit_2_and_deletes_nothing(
    workdir: Path, tmp_path: Path
) -> None:
    """The adversary's command through the real console script: ``tru train --data D --out . --overwrite``
    deleted the working directory (exit 1, traceback) on main."""
    (tmp_path / "sentinel.txt").write_text("mine")
    argv = ["train", "--data", str(workdir / "data"), "--backbone", "vbpr", "--out", ".", "--overwrite"]
    res = subprocess.run([sys.executable, "-m", "tru", *argv], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: --out .")
    assert "Traceback" not in res.stderr and (tmp_path / "sentinel.txt").read_text() == "mine"
    assert (workdir / "data" / "dataset.yaml").is_file()


def test_debug_flag_is_documented() -> None:
    assert "--debug" in build_parser().format_help()


def test_start_up_imports_no_audit_stack() -> None:
    """Every ``tru`` command imported the whole of :mod:`tru.certify` (scikit-learn, SciPy, matplotlib:
    1.7 s) to name CertifyError, and the register step imported it to read a certificate. The package
    now imports a name's submodule on first use; the audits still load where they run."""
    code = (
        "import sys; import tru.cli; tru.cli.build_parser(); import tru.certify.binding, tru.certify.output; "
        "from tru.certify import CertifyError, read_certificate; "
        "print(sorted(m for m in ('sklearn', 'matplotlib', 'scipy.stats', 'tru.certify.statistics') "
        "if m in sys.modules)); from tru.certify import certify; print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "True"], out


def test_the_certify_package_exports_what_it_lists() -> None:
    import importlib

    import tru.certify as package

    assert set(package.__all__) == set(package._EXPORTS)
    for name in package.__all__:
        assert getattr(package, name) is getattr(
            importlib.import_module(f"tru.certify.{package._EXPORTS[name]}"), name
        )
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        package.nothing  # noqa: B018
