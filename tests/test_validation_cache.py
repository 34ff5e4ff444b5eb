"""A dataset's contents are validated once: the stamp is keyed, skipped only for the same bytes, never
left by a failure, and switchable off."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import tru.data.validate as validate_module
from tru.data.dataset import DataError, load_dataset
from tru.data.validation_cache import CACHE_ENV, fingerprint


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "validated"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def suite_runs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folders the Great Expectations suite ran on (the real suite, counted)."""
    runs: list[Path] = []
    real = validate_module.validate_dataset

    def counted(folder):
        runs.append(Path(folder))
        return real(folder)

    monkeypatch.setattr(validate_module, "validate_dataset", counted)
    return runs


def _inter(folder: Path) -> Path:
    return next(folder.glob("*.inter"))


def test_same_bytes_are_validated_once_and_a_change_again(tiny_dir: Path, cache: Path, suite_runs) -> None:
    load_dataset(tiny_dir)
    load_dataset(tiny_dir)
    assert len(suite_runs) == 1
    stamps = list(cache.iterdir())
    assert len(stamps) == 1
    assert set(json.loads(stamps[0].read_text())) == {"validated_at", "checks"}  # no data in a stamp
    # keyed: not a plain hash of any file, nothing a guess of the contents could be checked against
    plain = {hashlib.sha256(p.read_bytes()).hexdigest() for p in tiny_dir.iterdir() if p.is_file()}
    assert stamps[0].name not in plain and stamps[0].name == fingerprint(tiny_dir)
    # one broken row: a new fingerprint, the suite runs and refuses it, and leaves no stamp
    inter = _inter(tiny_dir)
    lines = inter.read_text().splitlines()
    fields = lines[1].split("\t")
    fields[0] = "not-a-user"
    inter.write_text("\n".join([lines[0], "\t".join(fields), *lines[2:]]) + "\n")
    for _ in range(2):  # a failure is never remembered
        with pytest.raises(DataError, match=r"not-a-user|userID"):
            load_dataset(tiny_dir)
    assert len(suite_runs) == 3 and len(list(cache.iterdir())) == 1


def test_a_feature_file_or_the_key_changes_the_fingerprint(
    tiny_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = fingerprint(tiny_dir)
    assert first is not None and fingerprint(tiny_dir) == first
    feat = next(tiny_dir.glob("*.npy"))
    raw = bytearray(feat.read_bytes())
    raw[-1] ^= 1
    feat.write_bytes(bytes(raw))
    assert fingerprint(tiny_dir) not in (None, first)
    monkeypatch.setenv("TRU_COMMITMENT_KEY", "a7" * 32)
    assert fingerprint(tiny_dir) not in (None, first)


def test_cache_off_validates_every_time(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch, suite_runs) -> None:
    monkeypatch.setenv(CACHE_ENV, "off")
    load_dataset(tiny_dir)
    load_dataset(tiny_dir)
    assert len(suite_runs) == 2


def test_an_unwritable_cache_is_no_cache(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suite_runs
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "validated"))  # under a file: cannot be created
    load_dataset(tiny_dir)
    load_dataset(tiny_dir)
    assert len(suite_runs) == 2


def test_without_a_key_nothing_is_remembered_and_no_key_is_made(
    tiny_dir: Path, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, suite_runs
) -> None:
    """Loading data never mints an installation key (a new key would make the erasure audit read every
    earlier commitment as forged): without one, validation runs every time."""
    key_file = tmp_path / "no-key" / "commitment.key"
    monkeypatch.delenv("TRU_COMMITMENT_KEY", raising=False)
    monkeypatch.setenv("TRU_COMMITMENT_KEY_FILE", str(key_file))
    load_dataset(tiny_dir)
    load_dataset(tiny_dir)
    assert len(suite_runs) == 2 and not key_file.exists() and not cache.exists()


def test_tru_data_validate_runs_the_suite_and_leaves_the_stamp(
    tiny_dir: Path, cache: Path, suite_runs
) -> None:
    """``tru data validate`` always checks (that is what it is for), and a pass spares the next load."""
    from tru.cli import main

    assert main(["data", "validate", str(tiny_dir)]) == 0
    assert main(["data", "validate", str(tiny_dir)]) == 0
    assert len(suite_runs) == 2 and [p.name for p in cache.iterdir()] == [fingerprint(tiny_dir)]
    load_dataset(tiny_dir)
    assert len(suite_runs) == 2
