"""Safe outputs and exits (issue 8 §6): ``--out`` never destroys inputs or unrelated folders, every
unexpected error is one line with exit 2, secrets in URIs are never echoed, the manifest cannot point
outside its folder or inject a config, and deleting every user is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from tru.cli import main
from tru.commands.common import atomic_dir
from tru.data.dataset import DataError, DatasetManifest, file_sha256, load_dataset, write_dataset
from tru.outputs import MARKER, OutputError, check_output_dir
from tru.utils import redact_text, redact_uri

from .conftest import make_tiny_frame

TRAIN_FAST = ["--backbone", "vbpr", "--epochs", "1", "--set", "train_batch_size=512"]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A small dataset folder ``<tmp>/inputs/base`` as ``tru data prepare`` writes it."""
    df, feats = make_tiny_frame(n_users=60, n_items=40, per_user=8)
    folder = tmp_path / "inputs" / "base"
    write_dataset(folder, "tiny", df, feats, source={"kind": "test"})
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) → sha256: to show that nothing was touched."""
    return {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def train(data: Path | str, out: Path | str, *extra: str) -> int:
    return main(["train", "--data", str(data), *TRAIN_FAST, "--out", str(out), *extra])


# ------------------------------------------------------------------------------------ output folders


def test_out_dot_with_overwrite_is_refused_and_deletes_nothing(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The adversary's report: ``tru train --data base --out . --overwrite`` deleted the whole working
    directory, the input data included."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sentinel.txt").write_text("mine")
    before = snapshot(tmp_path)
    assert train(base, ".", "--overwrite") == 2
    err = capsys.readouterr().err
    assert "working directory" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_out_parent_of_cwd_home_and_root_are_refused(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    work = tmp_path / "work" / "sub"
    work.mkdir(parents=True)
    (tmp_path / "work" / "sentinel.txt").write_text("mine")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    for out, why in (("..", "parent of the working directory"), (tmp_path / "home", "home"), ("/", "root")):
        assert train(base, out, "--overwrite") == 2, out
        assert why in capsys.readouterr().err
    assert (tmp_path / "work" / "sentinel.txt").read_text() == "mine"


@pytest.mark.parametrize("where", ["data", "inside", "contains", "symlink"])
def test_out_is_never_an_input_folder(
    base: Path, tmp_path: Path, where: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """``--out`` = the data folder (replaced the dataset on main), inside it, a folder containing it, or a
    symlink to it: refused before any work, the dataset untouched."""
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path / "inputs")
    link = tmp_path / "link"
    link.symlink_to(base, target_is_directory=True)
    out = {"data": base, "inside": base / "sub", "contains": tmp_path / "inputs", "symlink": link}[where]
    assert train(base, out, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "--data" in err and "choose a folder outside your inputs" in err
    assert snapshot(tmp_path / "inputs") == before and not (base / "sub").exists()


def test_other_commands_refuse_their_inputs_as_out(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """certify (--original, the requests file's folder), unlearn (--model), bench (--data), data prepare
    (the working directory, --path) and requests generate (a file output in the working directory)."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "orig"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    reqs = tmp_path / "req" / "requests.csv"
    reqs.parent.mkdir()
    reqs.write_text("request_id,kind,user_id,item_id,requested_at,reason\n")
    before = snapshot(tmp_path)
    cert = ["certify", "--data", str(base), "--original", str(run), "--unlearned", str(run)]
    cert += ["--requests", str(reqs), "--overwrite", "--out"]
    model = ["--data", str(base), "--model", str(run), "--requests", str(reqs), "--overwrite", "--out"]
    for argv, needle in (
        ([*cert, str(run)], "input --original"),
        ([*cert, str(reqs.parent)], "input --requests"),
        (["unlearn", *model, str(run / "unlearned")], "inside the input folder --model"),
        (["sensitivity", *model, str(base)], "input --data"),
        (["bench", "--data", str(base), "--out", str(base / "bench")], "inside the input folder --data"),
        (["data", "prepare", "--source", "synthetic", "--out", ".", "--overwrite"], "working directory"),
        (["data", "prepare", "--source", "mmrec", "--path", str(base), "--out", str(base)], "input --path"),
        (
            ["requests", "generate", "--data", str(base), "--regime", "user", "--out", "."],
            "working directory",
        ),
    ):
        assert main(argv) == 2, argv
        assert needle in capsys.readouterr().err, argv
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_only_a_folder_tru_wrote(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    assert train(base, foreign, "--overwrite") == 2
    err = capsys.readouterr().err
    assert f"not written by tru (no {MARKER} marker); refusing to replace it" in err
    assert (foreign / "thesis.tex").read_text() == "years of work"

    run = tmp_path / "run"
    assert train(base, run) == 0
    meta = json.loads((run / MARKER).read_text())
    assert meta["written_by"] == "tru train" and {"version", "created_at"} <= set(meta)
    first = (run / "model.pt").read_bytes()
    assert train(base, run) == 2 and "not empty" in capsys.readouterr().err  # no --overwrite
    assert train(base, run, "--overwrite", "--seed", "7") == 0
    assert (run / MARKER).is_file() and (run / "model.pt").read_bytes() != first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.")]  # no temporary folder left


def test_atomic_dir_accepts_runs_of_an_older_tru_but_not_mixed_folders(tmp_path: Path) -> None:
    """A run folder written before the marker existed (only tru's files) is still replaceable, so
    ``make train-demo`` keeps working; the same folder with one unrelated file is not."""
    old = tmp_path / "old-run"
    old.mkdir()
    (old / "run.json").write_text(json.dumps({"config": {}}))
    (old / "model.pt").write_bytes(b"x")
    with atomic_dir(old, overwrite=True, inputs=(), command="tru train") as tmp:
        (tmp / "run.json").write_text("{}")
    assert sorted(p.name for p in old.iterdir()) == [MARKER, "run.json"]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "run.json").write_text("{}")
    (mixed / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not written by tru"), atomic_dir(mixed, True, (), "tru train"):
        pass
    assert (mixed / "notes.txt").read_text() == "mine"


def test_data_prepare_overwrite_keeps_working_for_prepared_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``make demo`` re-runs ``tru data prepare --out data/lfm2k --overwrite`` on a folder prepared earlier
    (prepared folders carry no marker: their bytes are the data's DVC hash); a prepared folder holding a
    file of the user's, or a foreign folder, is refused."""
    out = tmp_path / "data" / "syn"
    prep = ["data", "prepare", "--source", "synthetic", "--preset", "tiny", "--out", str(out)]
    assert main(prep) == 0
    assert not (out / MARKER).exists()
    assert main([*prep, "--overwrite", "--seed", "3"]) == 0
    (out / "notes.txt").write_text("mine")
    assert main([*prep, "--overwrite"]) == 2
    assert "not written by tru" in capsys.readouterr().err and (out / "notes.txt").is_file()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "a.csv").write_text("1\n")
    assert main([*prep[:-1], str(foreign), "--overwrite"]) == 2
    assert (foreign / "a.csv").is_file()


def test_certificate_folder_is_marked_and_only_tru_folders_are_replaced(tmp_path: Path) -> None:
    from tru.certify.output import CertifyError, write_outputs

    out = tmp_path / "cert"
    write_outputs(out, {"certificate.json": b"{}"})
    assert json.loads((out / MARKER).read_text())["written_by"] == "tru certify"
    write_outputs(out, {"certificate.json": b'{"a": 1}'}, overwrite=True)
    assert (out / "certificate.json").read_bytes() == b'{"a": 1}'
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("mine")
    with pytest.raises(CertifyError, match="not written by tru"):
        write_outputs(foreign, {"certificate.json": b"{}"}, overwrite=True)
    assert (foreign / "x.txt").read_text() == "mine"


def test_check_output_dir_resolves_symlinks(base: Path, tmp_path: Path) -> None:
    link = tmp_path / "alias"
    link.symlink_to(base.parent, target_is_directory=True)
    with pytest.raises(OutputError, match="lies inside the input folder --data"):
        check_output_dir(link / "base" / "x", [("--data", base, True)])
    with pytest.raises(OutputError, match="is the input --requests"):
        check_output_dir(tmp_path / "r.csv", [("--requests", tmp_path / "r.csv", False)])
    assert check_output_dir(tmp_path / "fresh", [("--data", base, True)]) == (tmp_path / "fresh").resolve()


# ------------------------------------------------------------------------------------ exit codes


@pytest.fixture
def boom(monkeypatch: pytest.MonkeyPatch) -> None:
    from tru.commands import train as train_cmd

    def cmd_train(_args: object) -> int:
        raise RuntimeError("boom http://u:p@h:5000/x?token=abc&a=1\nsecond line")

    monkeypatch.setattr(train_cmd, "cmd_train", cmd_train)


def test_unexpected_error_is_one_line_exit_2_without_secrets(
    boom: None, base: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert train(base, tmp_path / "out") == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: RuntimeError: boom http://***@h:5000/x?token=***")
    assert "second line" in lines[0] and "--debug" in lines[0]
    assert "Traceback" not in err and "u:p" not in err and "abc" not in err
    assert not (tmp_path / "out").exists()


def test_debug_adds_the_traceback_still_redacted(
    boom: None, base: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--debug", "train", "--data", str(base), *TRAIN_FAST, "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError" in err and "u:p" not in err and "abc" not in err


@pytest.mark.parametrize(
    ("exc", "code"),
    [(KeyboardInterrupt(), 130), (DataError("bad row http://u:p@h"), 1), (PermissionError("denied"), 2)],
)
def test_exit_codes(
    exc: BaseException,
    code: int,
    base: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    from tru.commands import train as train_cmd

    def cmd_train(_args: object) -> int:
        raise exc

    monkeypatch.setattr(train_cmd, "cmd_train", cmd_train)
    assert train(base, tmp_path / "out") == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and "u:p" not in err and err.startswith("error:")


def test_redact_uri() -> None:
    assert redact_uri("http://u:p@host:5000/x?token=abc&a=1") == "http://***@host:5000/x?token=***&a=1"
    for same in ("s3://bucket/key", "sqlite:///abs/path.db", "http://host:5000", "file:///tmp/x?a=1"):
        assert redact_uri(same) == same
    signed = "https://b.s3.amazonaws.com/k?X-Amz-Credential=AK%2F1&X-Amz-Signature=f00&X-Amz-Date=2025"
    assert (
        redact_uri(signed)
        == "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Date=2025"
    )
    assert redact_uri("postgresql://admin:s3cret@db:5432/mlflow") == "postgresql://***@db:5432/mlflow"
    text = "server http://u:p@h/x?password=pw&b=2 (down), see s3://bucket/k."
    assert redact_text(text) == "server http://***@h/x?password=***&b=2 (down), see s3://bucket/k."


# ------------------------------------------------------------------------------------ the manifest


def edit_manifest(folder: Path, **fields: object) -> None:
    path = folder / "dataset.yaml"
    raw = yaml.safe_load(path.read_text())
    for key, value in fields.items():
        if key == "modality_file":
            next(iter(raw["modalities"].values()))["file"] = value
        elif key == "kind":
            raw["source"]["kind"] = value
        else:
            raw[key] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("interactions", "../x.inter", "interactions"),
        ("interactions", "/etc/passwd", "interactions"),
        ("modality_file", "/etc/passwd", "modalities.image.file"),
        ("modality_file", "sub/../../image_feat.npy", "modalities.image.file"),
    ],
)
def test_manifest_paths_stay_inside_the_folder(base: Path, field: str, value: str, named: str) -> None:
    edit_manifest(base, **{field: value})
    with pytest.raises(DataError, match=rf"dataset\.yaml: field '{named}' is .*no '\.\.', not absolute"):
        DatasetManifest.load(base)
    with pytest.raises(DataError, match="manifest_valid"):
        load_dataset(base)


def test_manifest_symlink_out_of_the_folder_is_refused(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    secret = tmp_path / "secret.npy"
    np.save(secret, np.zeros((40, 24), dtype=np.float32))
    (base / "image_feat.npy").unlink()
    (base / "image_feat.npy").symlink_to(secret)
    with pytest.raises(
        DataError, match=r"dataset\.yaml: field 'modalities\.image\.file' .*outside the dataset"
    ):
        DatasetManifest.load(base)
    with pytest.raises(DataError, match="outside the dataset folder"):
        load_dataset(base, validate=False)
    assert main(["data", "validate", str(base)]) == 1
    assert "outside the dataset folder" in capsys.readouterr().out


def crafted_kind(base: Path) -> str:
    """A ``source.kind`` that, used as a config name on main, resolved to ``<base>/evil.yaml``."""
    import tru

    configs = Path(tru.__file__).resolve().parent / "configs" / "dataset"
    (base / "evil.yaml").write_text("learning_rate: 1000\nepochs: 1\n")
    return os.path.relpath(base / "evil", configs)


def test_crafted_source_kind_cannot_inject_a_config(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The adversary's dataset.yaml: ``source.kind`` = a relative path from the packaged config folder to a
    YAML file they placed; on main ``tru train`` trained with ``learning_rate: 1000``."""
    from tru.config import ConfigError, load_config

    kind = crafted_kind(base)
    with pytest.raises(ConfigError, match="plain identifier"):
        load_config("vbpr", kind)
    edit_manifest(base, kind=kind)
    with pytest.raises(DataError, match=r"field 'source\.kind' is .*plain identifier"):
        DatasetManifest.load(base)
    assert train(base, tmp_path / "run") == 1
    assert "source.kind" in capsys.readouterr().err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "", "x" * 65])
def test_dataset_name_is_a_plain_identifier(base: Path, name: str) -> None:
    edit_manifest(base, name=name)
    with pytest.raises(DataError, match="field 'name' is"):
        DatasetManifest.load(base)


def test_packaged_configs_are_read_by_exact_name_only() -> None:
    from tru.config import _read_packaged, load_config

    assert load_config("mgcn", "lfm2k")["learning_rate"] == pytest.approx(1e-3)
    assert _read_packaged("dataset/../model/mgcn.yaml") == {}
    assert _read_packaged("dataset/no-such-dataset.yaml") == {}
    assert load_config("mgcn", "no-such-dataset")["model"] == "mgcn"  # a dataset without a config: none


# ------------------------------------------------------------------------------------ deleting everything


def test_deleting_every_user_is_refused_from_the_cli(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ds = load_dataset(base, validate=False)
    reqs = tmp_path / "all.csv"
    rows = [f"r{u},user,{u},,2025-01-01,gdpr" for u in np.unique(ds.train.users)]
    reqs.write_text("request_id,kind,user_id,item_id,requested_at,reason\n" + "\n".join(rows) + "\n")
    run = tmp_path / "run"
    run.mkdir()
    argv = ["certify", "--data", str(base), "--original", str(run), "--unlearned", str(run)]
    assert main([*argv, "--requests", str(reqs), "--out", str(tmp_path / "cert")]) == 1
    err = capsys.readouterr().err
    n = len(np.unique(ds.train.users))
    assert f"these requests delete every user's train interactions ({n} of {n} users)" in err
    assert "nothing would remain to train on" in err and not (tmp_path / "cert").exists()
