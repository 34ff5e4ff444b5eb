"""A platform engineer's install: ``pip install .`` (not editable) into a fresh virtual environment, then,
from a folder that is not the checkout, the installed ``tru`` compiles the pipeline and runs the CI
trigger's cluster path up to the Kubeflow server (a stand-in KFP API that records the submission): the
pipeline definitions travel with the package, no ``sys.path`` edits, no checkout needed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml

from tru.mlops import images

from . import fake_kfp
from .conftest import dvc_test_env, recent

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with tru installed from a copy of the source (pyproject, README, src) the way the
    Dockerfiles copy it; the heavy dependencies come from this environment's site-packages through a
    path entry (no re-download), never the editable checkout."""
    base = tmp_path_factory.mktemp("install")
    src = base / "source"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    (Path(site) / "_deps_from_ci.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip_env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    dist = base / "dist"
    wheel = subprocess.run(  # the wheel `pip install .` builds (here with this environment's setuptools)
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
         str(src)], capture_output=True, text=True, env=pip_env,
    )  # fmt: skip
    assert wheel.returncode == 0, wheel.stderr[-3000:]
    (whl,) = dist.glob("tru-*.whl")
    cmd = [py, "-m", "pip", "install", "-q", "--no-deps", str(whl)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=pip_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv


def run(
    venv: Path, *argv: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(venv / "bin" / "tru"), *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
    )


@pytest.mark.slow
def test_a_plain_install_compiles_the_pipeline(installed: Path, tmp_path: Path) -> None:
    code = "import tru, tru.kfp.pipeline as p; print(tru.__file__, p.PIPELINE_NAME)"
    where = subprocess.run(
        [installed / "bin" / "python", "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert str(installed) in where and str(ROOT / "src") not in where and "tru-unlearning" in where
    out = tmp_path / "pipeline.yaml"
    proc = run(installed, "pipeline", "compile", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    params = next(yaml.safe_load_all(out.read_text()))["root"]["inputDefinitions"]["parameters"]
    assert params["image"]["defaultValue"] == images.image("gpu")  # same code, same tag as the checkout


@pytest.mark.slow
def test_the_installed_trigger_submits_to_the_cluster(
    installed: Path, tmp_path: Path, mlflow_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dvc.repo import Repo

    from tru.data.prepare import prepare_dataset
    from tru.forget.requests import DeletionRequest, write_requests

    env = {**dvc_test_env(tmp_path / "dvc-site"), "GIT_CEILING_DIRECTORIES": str(tmp_path)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    Repo.init(str(repo)).close()
    prepare_dataset("synthetic", repo / "data" / "synthetic", preset="tiny")
    (repo / "data" / "deletions").mkdir()
    write_requests(
        repo / "data" / "deletions" / "requests.csv",
        [DeletionRequest("r1", "user", 3, None, recent(), "x")],
    )
    with Repo(str(repo)) as r:
        r.add(str(repo / "data"))
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "data and a request"], check=True, env={**os.environ, **env})
    sha = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    url, rec, server = fake_kfp.start()
    try:
        proc = run(
            installed, "trigger", "--rev", "HEAD", "--repo", str(repo), "--mode", "cluster", "--host", url,
            "--repo-url", "https://git.example.org/data.git", "--tracking-uri", mlflow_server.url,
            "--backbone", "vbpr", "--namespace", "team-a", cwd=tmp_path, env=env,
        )  # fmt: skip
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_,) = rec.runs.values()
    params = run_["runtime_config"]["parameters"]
    assert params["repo"] == "https://git.example.org/data.git" and params["data_rev"] == sha
    assert params["tracking_uri"] == mlflow_server.url and params["backbone"] == "vbpr"
    (package,) = rec.packages.values() if len(rec.packages) == 1 else list(rec.packages.values())[-1:]
    assert images.image("gpu") in package.decode()
    assert '"status": "submitted"' in proc.stdout
