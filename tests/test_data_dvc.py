"""The repository's own ``data.dvc``: it tracks ``data/`` as ``make demo`` produces it (Last.fm-2K prepared
from ../shared/data/lfm2k; no deletion manifest), its default remote is S3 and no credential is in git."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import LFM2K

ROOT = Path(__file__).resolve().parents[1]


def test_data_dvc_tracks_the_data_folder() -> None:
    meta = yaml.safe_load((ROOT / "data.dvc").read_text())
    (out,) = meta["outs"]
    assert out["path"] == "data" and out["md5"].endswith(".dir") and out["nfiles"] >= 4


def test_default_remote_is_s3_without_credentials() -> None:
    text = (ROOT / ".dvc" / "config").read_text()
    cfg = configparser.ConfigParser()
    cfg.read_string(text)
    remote = cfg["core"]["remote"]
    assert cfg[f"'remote \"{remote}\"'"]["url"].startswith("s3://")
    for secret in ("access_key_id", "secret_access_key", "session_token", "credentialpath"):
        assert secret not in text
    assert "config.local" in (ROOT / ".dvc" / ".gitignore").read_text()


@pytest.mark.skipif(not (LFM2K / "lfm2k.inter").is_file(), reason=f"no Last.fm-2K at {LFM2K}")
def test_data_dvc_matches_the_prepared_default_dataset(tmp_path: Path) -> None:
    """Prepare the default dataset into a fresh git + DVC repository and `dvc add data`: the directory hash
    is the one committed in data.dvc (preparation is byte-for-byte deterministic)."""
    from dvc.repo import Repo

    from tru.data.prepare import prepare_dataset

    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path)}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, env=env)
    Repo.init(str(tmp_path)).close()
    prepare_dataset("lfm2k", tmp_path / "data" / "lfm2k", path=LFM2K)
    with Repo(str(tmp_path)) as repo:
        repo.add(str(tmp_path / "data"))
    ours = yaml.safe_load((tmp_path / "data.dvc").read_text())["outs"][0]
    committed = yaml.safe_load((ROOT / "data.dvc").read_text())["outs"][0]
    assert (ours["md5"], ours["size"], ours["nfiles"]) == (
        committed["md5"],
        committed["size"],
        committed["nfiles"],
    ), "data.dvc is stale: re-run `make data-lfm2k` in a clean data/ and `dvc add data`"
    shutil.rmtree(tmp_path / ".dvc" / "cache", ignore_errors=True)
