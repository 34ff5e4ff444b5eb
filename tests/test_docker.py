"""The container images, CI workflow and git hook, checked without a Docker engine: the Dockerfiles parse,
pin their bases, install torch before the project and run as a non-root user; the image names agree
between tru.mlops.images and docker/Makefile.inc; the workflow and the hook call `tru trigger`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tru.mlops.images import IMAGE_CPU, IMAGE_GPU

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
    "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip
FROM_RE = re.compile(
    r"(?P<image>[a-z0-9][a-z0-9._/-]*):(?P<tag>[A-Za-z0-9][A-Za-z0-9._-]*)"
    r"(?:@sha256:(?P<digest>[0-9a-f]{64}))?(?:\s+AS\s+\w+)?"
)


def parse_dockerfile(text: str) -> list[tuple[str, str, int]]:
    """(INSTRUCTION, arguments, first line) per instruction: comments and blank lines dropped, lines ending
    in a backslash joined; an unknown instruction or a dangling continuation is a ValueError."""
    out: list[tuple[str, str, int]] = []
    buf, start = "", 0
    for n, line in enumerate(text.splitlines(), 1):
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if not buf:
            start = n
        buf += line.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        word, _, args = buf.strip().partition(" ")
        if word.upper() not in INSTRUCTIONS or word != word.upper():
            raise ValueError(f"line {start}: unknown instruction {word!r}")
        if not args.strip():
            raise ValueError(f"line {start}: {word} without arguments")
        out.append((word, " ".join(args.split()), start))
        buf = ""
    if buf:
        raise ValueError(f"line {start}: continuation at end of file")
    return out


def check_dockerfile(path: Path) -> dict[str, str]:
    """The checks every image must pass; returns the base image's name, tag and digest."""
    ins = parse_dockerfile(path.read_text())
    names = [i for i, _, _ in ins]
    assert names[0] == "FROM", f"{path}: first instruction is {names[0]}"
    base = FROM_RE.fullmatch(ins[0][1])
    assert base, f"{path}: FROM {ins[0][1]!r} is not image:tag[@sha256:digest]"
    assert base["tag"] != "latest" and re.search(r"\d+\.\d+\.\d+", base["tag"]), f"{path}: tag not exact"
    assert base["digest"], f"{path}: base not pinned by digest"
    runs = [(n, a) for n, (i, a, _) in enumerate(ins) if i == "RUN"]
    torch_at = [n for n, a in runs if re.search(r"pip install torch==2\.13\.0\b", a)]
    project_at = [n for n, a in runs if re.search(r"pip install \.(\s|$)", a)]
    assert torch_at and project_at and torch_at[0] < project_at[0], f"{path}: torch must be installed first"
    copies = [a.split() for i, a, _ in ins if i == "COPY"]
    for *srcs, _dest in copies:
        for src in srcs:
            assert (ROOT / src).exists(), f"{path}: COPY {src}: not in the build context"
    assert any(srcs[:-1] == ["src", "./src"] or "src" in srcs for srcs in copies), f"{path}: src/ not copied"
    users = [a for i, a, _ in ins if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{path}: must end as a non-root user"
    assert ins[names.index("USER")][2] > ins[project_at[0]][2], f"{path}: USER before the install"
    assert "WORKDIR" in names
    entry = [a for i, a, _ in ins if i == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["tru"], f'{path}: ENTRYPOINT must be ["tru"]'
    return {"image": base["image"], "tag": base["tag"], "digest": base["digest"]}


def test_gpu_dockerfile() -> None:
    base = check_dockerfile(DOCKER / "Dockerfile.gpu")
    assert base["image"] == "nvidia/cuda" and "runtime" in base["tag"]
    # torch 2.13.0's PyPI wheel is the CUDA 13.0 build: the base's CUDA must be 13.0 too
    assert base["tag"].startswith("13.0."), base
    text = (DOCKER / "Dockerfile.gpu").read_text()
    assert "python3.11" in text and "torch.version.cuda" in text


def test_cpu_dockerfile() -> None:
    base = check_dockerfile(DOCKER / "Dockerfile.cpu")
    assert base["image"] == "python" and base["tag"].startswith("3.11.") and "slim" in base["tag"]
    assert "download.pytorch.org/whl/cpu" in (DOCKER / "Dockerfile.cpu").read_text()


def test_parser_rejects_what_it_should() -> None:
    assert parse_dockerfile("# c\nFROM a:1.2.3\nRUN echo \\\n  # note\n  hi\n") == [
        ("FROM", "a:1.2.3", 2),
        ("RUN", "echo hi", 3),
    ]
    for bad in ("FORM a:1\n", "FROM a:1\nRUN x \\\n", "FROM a:1\nUSER\n", "from a:1\n"):
        with pytest.raises(ValueError):
            parse_dockerfile(bad)
    assert not FROM_RE.fullmatch("python:3.11-slim@sha256:abc")  # a truncated digest
    assert FROM_RE.fullmatch("python:3.11.14-slim")["digest"] is None


def test_image_names_match_the_makefile() -> None:
    text = (DOCKER / "Makefile.inc").read_text()
    var = dict(re.findall(r"(?m)^(IMAGE|TAG) \?= (\S+)$", text))
    assert f"{var['IMAGE']}:{var['TAG']}-gpu" == IMAGE_GPU == "ghcr.io/tru-ml/tru:0.1.0-gpu"
    assert f"{var['IMAGE']}:{var['TAG']}-cpu" == IMAGE_CPU == "ghcr.io/tru-ml/tru:0.1.0-cpu"
    assert re.search(r"(?m)^image: image-gpu image-cpu$", text)
    for flavour in ("gpu", "cpu"):
        assert f"build -f docker/Dockerfile.{flavour} -t $(IMAGE):$(TAG)-{flavour} ." in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "data", ".dvc/config.local"} <= set(ignored) and "src" not in ignored


def test_ci_workflow_triggers_on_data_dvc() -> None:
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "trigger.yml").read_text())
    on = wf.get("on", wf.get(True))
    assert on["push"]["paths"] == ["data.dvc"]
    steps = wf["jobs"]["trigger"]["steps"]
    run = "\n".join(s.get("run", "") for s in steps)
    assert 'tru trigger --from "$REV_FROM" --to "$REV_TO"' in run
    assert run.index("pip install torch==2.13.0") < run.index("pip install .")
    assert any(s.get("with", {}).get("fetch-depth") == 0 for s in steps)
    assert wf["concurrency"]["cancel-in-progress"] is False


def test_post_commit_hook(tmp_path: Path) -> None:
    """A commit that does not touch data.dvc runs nothing; one that does runs `tru trigger --from HEAD~1
    --to <sha>` and the commit stands whatever the trigger says (here: not a DVC repository)."""
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
    assert f"post-commit: data.dvc changed in {sha[:12]}: {tru} trigger --from HEAD~1 --to {sha}" in err
    assert git("log", "--format=%s").stdout.split("\n")[0] == "data"
    # the trigger itself ran and answered: this folder has no .dvc/
    assert "not a DVC repository" in err, err
