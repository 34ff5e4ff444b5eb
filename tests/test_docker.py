"""The container images, the image tag and the CI around them, checked without a Docker engine.

* the Dockerfiles, read as text: one base image, official Python, pinned by digest and shared by both images;
  torch 2.13.0 installed before the project, for CUDA 12.x (GPU, asserted at build time, no CUDA base image,
  no PPA) or CPU; the code-version check; a numeric non-root USER last; ENTRYPOINT tru;
* .dockerignore: default-deny, re-including exactly what the Dockerfiles COPY;
* tru.mlops.images: the code version follows the package source (byte changes, renames; not caches), is the
  same for the wheel `pip install .` builds, and names the images; its CLI runs without site-packages;
* docker/Makefile.inc (`make -n image`) and .github/workflows/images.yml tag with that code version;
* the demo's dataset choice in the Makefile (Last.fm-2K, else MovieLens-100K, else synthetic);
* the data.dvc trigger workflow and the post-commit hook."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

import tru
from tru.mlops import images

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = {flavour: DOCKER / f"Dockerfile.{flavour}" for flavour in images.FLAVOURS}
BASE_RE = re.compile(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}")
TAG_RE = re.compile(r"\d+\.\d+\.\d+-[0-9a-f]{12}")


def dockerfile_code(path: Path) -> str:
    """The Dockerfile without its comment lines, each continued instruction on one line (what the checks
    below should see: a comment mentioning a PPA is not a PPA)."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    return re.sub(r"\\\n\s*", " ", "\n".join(lines))


def instructions(code: str, name: str) -> list[str]:
    """The arguments of every ``name`` instruction, in order."""
    return re.findall(rf"(?m)^{name}\s+(.+)$", code)


@pytest.mark.parametrize("flavour", images.FLAVOURS)
def test_dockerfile_base_user_and_install_order(flavour: str) -> None:
    code = dockerfile_code(DOCKERFILES[flavour])
    froms = instructions(code, "FROM")
    assert len(froms) == 1 and BASE_RE.fullmatch(froms[0]), (
        f"{flavour}: FROM {froms} is not pinned python:3.11"
    )
    torch_at = code.find("pip install torch==2.13.0 ")
    project_at = code.find("pip install . ")
    assert 0 <= torch_at < project_at, f"{flavour}: torch==2.13.0 must be installed before the project"
    # the installed code must hash to the tag the image gets
    arg_at = code.find("ARG TRU_CODE_VERSION")
    assert 0 <= arg_at < project_at, f"{flavour}: ARG TRU_CODE_VERSION must precede the project install"
    check = code[project_at:].split("\n")[0]
    assert 'v="$(python -m tru.mlops.images tag)"' in check and '"$v" != "$TRU_CODE_VERSION"' in check
    assert "exit 1" in check
    # a numeric non-root user, set after every install
    users = instructions(code, "USER")
    assert users, f"{flavour}: no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, (
        f"{flavour}: last USER {users[-1]!r} is not a numeric non-root uid"
    )
    assert code.rindex("\nUSER ") > code.rindex("\nRUN "), f"{flavour}: a RUN after the last USER runs as it"
    assert instructions(code, "ENTRYPOINT") == ['["tru"]']
    for copy in instructions(code, "COPY"):
        for src in copy.split()[:-1]:
            assert (ROOT / src).exists(), f"{flavour}: COPY {src}: not in the repository"


def test_both_images_share_one_base() -> None:
    bases = {instructions(dockerfile_code(path), "FROM")[0] for path in DOCKERFILES.values()}
    assert len(bases) == 1, bases


def test_gpu_dockerfile_torch_for_cuda_12_on_plain_python() -> None:
    code = dockerfile_code(DOCKERFILES["gpu"])
    install = re.search(
        r"pip install torch==2\.13\.0 --index-url https://download\.pytorch\.org/whl/cu(\d+)", code
    )
    assert install and install[1].startswith("12"), "torch must come from a CUDA 12.x index (cu12x)"
    # the build fails unless the installed torch is a CUDA 12 build
    assert "torch.version.cuda" in code and "startswith('12.')" in code and "sys.exit(" in code
    # the CUDA libraries come only from torch's nvidia-* wheels: no CUDA base, apt CUDA packages or PPA
    lowered = code.lower()
    for banned in ("nvidia/cuda", "ppa:", "add-apt-repository", "deadsnakes", "libcudnn", "cuda-runtime"):
        assert banned not in lowered, f"Dockerfile.gpu: {banned!r}"
    assert "libcudart.so*' -not -path '*/site-packages/*'" in code, "no check for a second CUDA runtime"
    assert "NVIDIA_VISIBLE_DEVICES" not in code, "the device plugin sets it per pod"
    # the comment states the driver the image needs
    assert re.search(r"minimum driver: >= 525\.60\.13", DOCKERFILES["gpu"].read_text())


def test_cpu_dockerfile_torch_cpu_wheel() -> None:
    code = dockerfile_code(DOCKERFILES["cpu"])
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu " in code
    assert "torch.version.cuda is None" in code


def test_dockerignore_sends_only_what_the_dockerfiles_copy() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert rules[0] == "*", "default-deny: the first rule must exclude everything"
    included = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = {
        src.rstrip("/")
        for path in DOCKERFILES.values()
        for copy in instructions(dockerfile_code(path), "COPY")
        for src in copy.split()[:-1]
    }
    assert included == copied == {"pyproject.toml", "README.md", "src"}
    for secret_or_bulk in ("data", ".venv", "scratch", "mlruns", "mlruns.db", ".git", ".dvc", "runs"):
        assert secret_or_bulk not in included
    assert {"**/__pycache__", "**/*.egg-info"} <= set(rules)


# ---------------------------------------------------------------------------------------------------------
# the code version


def copy_package(dest: Path) -> Path:
    shutil.copytree(images.PACKAGE_DIR, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_code_version_follows_the_source(tmp_path: Path) -> None:
    a, b = copy_package(tmp_path / "a" / "tru"), copy_package(tmp_path / "b" / "tru")
    tag = images.tag_for(a, "0.1.0")
    assert TAG_RE.fullmatch(tag) and tag == images.tag_for(b, "0.1.0"), "identical trees, different tags"
    assert images.tag_for(a, "0.2.0") != tag

    module = b / "mlops" / "images.py"
    original = module.read_bytes()
    module.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit of one byte
    assert images.tag_for(b, "0.1.0") != tag
    module.write_bytes(original)
    assert images.tag_for(b, "0.1.0") == tag

    config = next(b.glob("configs/*.yaml"))
    config.write_text(config.read_text() + "\n# a comment\n")
    assert images.tag_for(b, "0.1.0") != tag, "packaged YAML is code"
    shutil.copy2(a / config.relative_to(b), config)
    assert images.tag_for(b, "0.1.0") == tag

    (b / "mlops" / "__pycache__").mkdir()
    (b / "mlops" / "__pycache__" / "images.cpython-311.pyc").write_bytes(b"compiled")
    (b / "NOTES.txt").write_text("not code")
    assert images.tag_for(b, "0.1.0") == tag, "caches and non-source files must not change the tag"

    (b / "mlops" / "images.py").rename(b / "mlops" / "images_renamed.py")
    assert images.tag_for(b, "0.1.0") != tag, "a rename changes what runs"

    with pytest.raises(FileNotFoundError):
        images.tag_for(tmp_path / "missing", "0.1.0")
    with pytest.raises(ValueError, match="valid image tag"):
        images.tag_for(a, "0.1.0+local")


def test_code_version_is_the_same_after_pip_install(tmp_path: Path) -> None:
    """`pip install .` (what the Dockerfiles run) installs exactly the hashed files: the wheel built from
    the Docker build context hashes to the checkout's tag, and its CLI prints that tag."""
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, context / name)
    copy_package(context / "src" / "tru")
    expected = images.tag_for(context / "src" / "tru", tru.__version__)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         str(context), "-w", str(wheels)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (wheel,) = wheels.glob("tru-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    assert images.tag_for(site / "tru", tru.__version__) == expected
    assert images.source_files(site / "tru") == images.source_files(context / "src" / "tru")
    out = subprocess.run(
        [sys.executable, "-S", "-m", "tru.mlops.images", "tag"],
        env={**os.environ, "PYTHONPATH": str(site)}, cwd=tmp_path, check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert out.stdout.strip() == expected


def test_image_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(images.REGISTRY_ENV, raising=False)
    version = images.code_version()
    assert version == images.tag_for(images.PACKAGE_DIR, tru.__version__)
    assert images.image("gpu") == f"ghcr.io/tru-ml/tru:{version}-gpu" == images.IMAGE_GPU
    assert images.image("cpu") == f"ghcr.io/tru-ml/tru:{version}-cpu" == images.IMAGE_CPU
    assert images.image("cpu", "v1.2.3") == "ghcr.io/tru-ml/tru:v1.2.3-cpu"
    monkeypatch.setenv(images.REGISTRY_ENV, "registry.example.com:5000/ml/tru")
    assert f"registry.example.com:5000/ml/tru:{version}-gpu" == images.IMAGE_GPU
    monkeypatch.setenv(images.REGISTRY_ENV, "")
    assert images.registry() == images.DEFAULT_REGISTRY
    with pytest.raises(ValueError, match="unknown image flavour 'tpu'"):
        images.image("tpu")
    with pytest.raises(ValueError, match="not a valid Docker tag"):
        images.image("gpu", "bad tag")
    for bad in ("ghcr.io/Org/tru", "ghcr.io/org/tru:1.0", "ghcr.io/org/tru@sha256:00"):
        monkeypatch.setenv(images.REGISTRY_ENV, bad)
        with pytest.raises(ValueError, match="TRU_IMAGE_REGISTRY"):
            images.registry()
    with pytest.raises(AttributeError):
        _ = images.IMAGE_TPU


def test_cli_needs_only_the_standard_library() -> None:
    """`PYTHONPATH=src python -S -m tru.mlops.images ...` (no site-packages): how make and CI get the tag."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), images.REGISTRY_ENV: "localhost:5000/tru"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-S", "-m", "tru.mlops.images", *args]
        return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)

    tag = cli("tag")
    assert tag.returncode == 0, tag.stderr
    assert TAG_RE.fullmatch(tag.stdout.strip())
    ref = cli("ref", "gpu")
    assert ref.stdout.strip() == f"localhost:5000/tru:{tag.stdout.strip()}-gpu"
    assert cli("registry").stdout.strip() == "localhost:5000/tru"
    assert cli("ref", "tpu").returncode == 2
    env[images.REGISTRY_ENV] = "Not/A:repo"
    bad = cli("ref", "cpu")
    assert bad.returncode == 2 and bad.stderr.startswith("error: TRU_IMAGE_REGISTRY='Not/A:repo'")


def make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=ROOT, env={**os.environ, **(env or {})},
        capture_output=True, text=True,
    )  # fmt: skip


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_image_tags_with_the_code_version() -> None:
    env = {images.REGISTRY_ENV: "localhost:5000/ml/tru"}
    before = images.tag_for(images.PACKAGE_DIR, tru.__version__)  # computed afresh: others may edit src
    run = make("-n", "image", "LATEST=1", f"PY={sys.executable}", "BIN=/nonexistent", env=env)
    after = images.tag_for(images.PACKAGE_DIR, tru.__version__)
    assert run.returncode == 0, run.stderr
    commands = re.sub(r"\s*\\\n\s*", " ", run.stdout)
    tags = set(re.findall(r"--build-arg TRU_CODE_VERSION=(\S+)", commands))
    assert len(tags) == 1 and tags <= {before, after}, tags
    (tag,) = tags
    for flavour in images.FLAVOURS:
        assert (
            f"docker build -f docker/Dockerfile.{flavour} --build-arg TRU_CODE_VERSION={tag} "
            f"-t localhost:5000/ml/tru:{tag}-{flavour} -t localhost:5000/ml/tru:latest-{flavour} ."
        ) in commands, commands
    printed = make("-s", "image-tag", f"PY={sys.executable}", "BIN=/nonexistent").stdout.strip()
    assert printed in {before, after, images.tag_for(images.PACKAGE_DIR, tru.__version__)}
    broken = make("-n", "image-gpu", "PY=/nonexistent/python", "BIN=/nonexistent")
    assert broken.returncode != 0 and "no code version or registry" in broken.stderr


def test_images_workflow_builds_and_pushes_both_images_on_tags() -> None:
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "images.yml").read_text())
    on = wf.get("on", wf.get(True))
    assert on["push"] == {"tags": ["v*"]} and "workflow_dispatch" in on
    assert wf["permissions"] == {"contents": "read", "packages": "write"}
    (job,) = wf["jobs"].values()
    assert job["strategy"]["matrix"]["flavour"] == list(images.FLAVOURS)
    steps = job["steps"]
    run = "\n".join(step.get("run", "") for step in steps)
    assert 'tag="$(PYTHONPATH=src python -m tru.mlops.images tag)"' in run
    assert 'echo "tag=$tag" >> "$GITHUB_OUTPUT"' in run
    (login,) = [s for s in steps if str(s.get("uses", "")).startswith("docker/login-action@")]
    assert login["with"]["registry"] == "ghcr.io" and "secrets.GITHUB_TOKEN" in login["with"]["password"]
    (build,) = [s for s in steps if str(s.get("uses", "")).startswith("docker/build-push-action@")]
    args = build["with"]
    assert args["push"] is True and args["context"] == "."
    assert args["file"] == "docker/Dockerfile.${{ matrix.flavour }}"
    assert all(path.is_file() for path in DOCKERFILES.values())
    assert args["build-args"].strip() == "TRU_CODE_VERSION=${{ steps.version.outputs.tag }}"
    tags = args["tags"].strip().splitlines()
    assert (
        tags[0]
        == "${{ steps.version.outputs.registry }}:${{ steps.version.outputs.tag }}-${{ matrix.flavour }}"
    )
    assert "github.ref_name" in tags[1] and "github.ref_type == 'tag'" in tags[1]


# ---------------------------------------------------------------------------------------------------------
# `make demo` anywhere: which dataset demo-data prepares (the Makefile's control flow, with a stand-in `tru`
# that records its calls; the real preparations are minutes of CPU and a download)

STUB_TRU = """#!/bin/bash
echo "tru $*" >> "$STUB_LOG"
if [ "$1 $2" = "data prepare" ]; then
    if [[ " $* " == *" --source ml100k "* && -n "$STUB_NO_REGISTRY" ]]; then
        echo "error: ml100k: pip download recbole==1.2.1 failed" >&2; exit 2
    fi
    while [ $# -gt 0 ]; do [ "$1" = --out ] && mkdir -p "$2"; shift; done
fi
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
@pytest.mark.parametrize(
    ("lfm2k", "registry", "dataset", "said"),
    [
        (True, True, "lfm2k", "demo dataset: Last.fm-2K from"),
        (False, True, "ml100k", "Last.fm-2K not found at {lfm2k}: running the demo on MovieLens-100K"),
        (False, False, "synthetic-small", "running the demo on the synthetic preset 'small'"),
    ],
)
def test_demo_data_falls_back(tmp_path: Path, lfm2k: bool, registry: bool, dataset: str, said: str) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name in ("tru", "python"):
        (venv / "bin" / name).write_text(STUB_TRU)
        (venv / "bin" / name).chmod(0o755)
    (venv / ".installed").touch()  # newer than pyproject.toml: `install` is up to date
    os.utime(venv / ".installed", (2**31, 2**31))
    source = tmp_path / "lfm2k"
    if lfm2k:
        source.mkdir()
    data, log = tmp_path / "data", tmp_path / "calls.log"
    env = {"STUB_LOG": str(log), "STUB_NO_REGISTRY": "" if registry else "1"}
    run = make("demo-data", f"VENV={venv}", f"DATA={data}", f"LFM2K={source}", f"SCRATCH={tmp_path}", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert said.format(lfm2k=source) in run.stdout
    assert (tmp_path / "demo-dataset.txt").read_text().strip() == f"{data}/{dataset}"
    assert not (data / "demo-dataset.txt").exists()  # data/ holds only the prepared data (data.dvc)
    calls = log.read_text().splitlines()
    assert calls[-1] == f"tru data validate {data}/{dataset}"
    source_flag = {"lfm2k": "lfm2k", "ml100k": "ml100k", "synthetic-small": "synthetic"}[dataset]
    assert any(f"--source {source_flag} " in call and f"--out {data}/{dataset} " in call for call in calls)
    if not registry:
        assert any("--source ml100k" in call for call in calls), "MovieLens-100K must be tried first"
    # the demo's pipeline run reads the folder demo-data chose, as one command a flag can be appended to
    dry = make(
        "-n", "demo", f"VENV={venv}", f"DATA={data}", f"LFM2K={source}", f"SCRATCH={tmp_path}", env=env
    )
    run_line = re.sub(r"\s*\\\n\s*", " ", dry.stdout).strip().splitlines()[-1]
    assert run_line.startswith(
        f'{venv}/bin/tru pipeline run --local --dataset "$(cat {tmp_path}/demo-dataset.txt)"'
    )
    assert "--generate-requests" in run_line and run_line.endswith("mlruns.db")


def test_ci_workflow_triggers_on_data_dvc() -> None:
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "trigger.yml").read_text())
    on = wf.get("on", wf.get(True))
    assert on["push"]["paths"] == ["data.dvc"]
    steps = wf["jobs"]["trigger"]["steps"]
    run = "\n".join(s.get("run", "") for s in steps)
    assert 'tru trigger --rev "$REV" --mode cluster' in run and "cache" not in json.dumps(steps)
    assert run.index("pip install torch==2.13.0") < run.index("pip install .")
    assert any(s.get("with", {}).get("fetch-depth") == 0 for s in steps)
    assert wf["concurrency"]["cancel-in-progress"] is False


def test_post_commit_hook(tmp_path: Path) -> None:
    """A commit that does not touch data.dvc runs nothing; one that does runs `tru trigger --rev <sha>`
    and the commit stands whatever the trigger says (here: not a DVC repository)."""
    hook = ROOT / "hooks" / "post-commit"
    assert os.access(hook, os.X_OK)
    assert subprocess.run(["bash", "-n", str(hook)]).returncode == 0
    tru = shutil.which("tru") or str(Path(sys.executable).parent / "tru")
    env = {
        **os.environ,
        "TRU": tru,
        "TRU_HOOK_FOREGROUND": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t.invalid",
    }

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(tmp_path), *args], capture_output=True, text=True, env=env, check=True
        )

    git("init", "-q")
    git("config", "core.hooksPath", str(hook.parent))
    (tmp_path / "a.txt").write_text("a")
    git("add", "a.txt")
    assert "post-commit" not in git("commit", "-q", "-m", "first").stderr  # no parent: nothing to do
    (tmp_path / "b.txt").write_text("b")
    git("add", "b.txt")
    assert "post-commit" not in git("commit", "-q", "-m", "not data").stderr
    (tmp_path / "data.dvc").write_text("outs:\n- md5: 0.dir\n  path: data\n")
    git("add", "data.dvc")
    err = git("commit", "-q", "-m", "data").stderr
    sha = git("rev-parse", "HEAD").stdout.strip()
    assert f"post-commit: data.dvc changed in {sha[:12]}: {tru} trigger --rev {sha}" in err
    assert git("log", "--format=%s").stdout.split("\n")[0] == "data"
    # the trigger itself ran and answered: this folder has no .dvc/
    assert "not a DVC repository" in err, err
