"""Certificates bound to what they certify: a hand-edited verdict, a certificate next to another model,
a certificate signed by another installation, and a fake retrain are all refused, and the registry is
left as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tru.certify import CertifyError, run_certification
from tru.certify.binding import CertificateMismatch, check_certificate, read_certificate
from tru.lifecycle import plan_run
from tru.mlops import tracking
from tru.utils import write_json

from .conftest import TinyWorld


def copy_cert(src: Path, dest: Path, **changes: object) -> Path:
    shutil.copytree(src, dest)
    doc = json.loads((dest / "certificate.json").read_text())
    doc.update(changes)
    (dest / "certificate.json").write_text(json.dumps(doc))
    return dest


def test_a_signed_certificate_binds_its_model(tiny_world: TinyWorld) -> None:
    cert = read_certificate(tiny_world.cert_pass)
    assert cert.signed and cert.passed and cert.candidate == "unlearned"
    assert check_certificate(cert, tiny_world.unlearned) == cert.models["unlearned"].weights_sha256
    assert set(cert.models) == {"original", "unlearned", "retrained"}
    assert cert.requests_commitment.startswith("hmac-sha256:") and sorted(cert.request_ids) == sorted(
        tiny_world.ids
    )


def test_a_hand_edited_verdict_is_refused(tiny_world: TinyWorld, tmp_path: Path) -> None:
    forged = copy_cert(tiny_world.cert_fail, tmp_path / "forged", passed=True, verdict="passed", reasons=[])
    cert = read_certificate(forged)
    assert cert.passed and not cert.signed
    with pytest.raises(CertificateMismatch, match="signature missing or invalid"):
        check_certificate(cert, tiny_world.unlearned)
    half = copy_cert(tiny_world.cert_fail, tmp_path / "half", passed=True)  # verdict left "failed"
    with pytest.raises(CertificateMismatch, match="'passed' and 'verdict' disagree"):
        read_certificate(half)


def test_another_models_certificate_is_refused(tiny_world: TinyWorld) -> None:
    cert = read_certificate(tiny_world.cert_pass)
    with pytest.raises(CertificateMismatch, match="a certificate only promotes the model it certified"):
        check_certificate(
            cert, tiny_world.original
        )  # the untouched original with the unlearned's passing cert


def test_another_installations_signature_is_refused(tiny_world: TinyWorld, monkeypatch) -> None:
    monkeypatch.setenv("TRU_COMMITMENT_KEY", "17" * 32)
    with pytest.raises(CertificateMismatch, match="signature"):
        check_certificate(read_certificate(tiny_world.cert_pass), tiny_world.unlearned)


def test_a_fake_retrain_is_refused(tiny_world: TinyWorld, tmp_path: Path) -> None:
    args = (tiny_world.data, tiny_world.original, tiny_world.unlearned, tiny_world.requests_csv)
    with pytest.raises(CertifyError, match=r"not a genuine retrain.*not trained from scratch.*weights are"):
        run_certification(
            *args, tmp_path / "a", retrained_dir=tiny_world.unlearned, seeds=(0,), validate=False
        )
    with pytest.raises(CertifyError, match=r"not a genuine retrain.*not trained on exactly D_r"):
        run_certification(
            *args, tmp_path / "b", retrained_dir=tiny_world.original, seeds=(0,), validate=False
        )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_register_step_refuses_a_mismatch_and_changes_nothing(
    tiny_world: TinyWorld, mlflow_store, tmp_path: Path
) -> None:
    """`register` with the untouched original and another model's passing certificate: refused before
    anything is logged or registered."""
    from tru.steps.register import register

    model = tmp_path / "orig"
    shutil.copytree(tiny_world.original, model)
    plan = plan_run(tiny_world.requests, set(), start="trained")
    write_json(model / "plan.json", plan.to_dict())
    with pytest.raises(CertificateMismatch):
        register(
            model, tiny_world.cert_pass, tiny_world.data, tiny_world.requests_csv, dataset_name="tiny",
            backbone="vbpr", data_version={},
        )  # fmt: skip
    client = MlflowClient(tracking_uri=mlflow_store.uri, registry_uri=mlflow_store.uri)
    assert client.search_registered_models() == []
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
    assert tracking.model_name("tiny", "vbpr")
