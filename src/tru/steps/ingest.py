"""Step ``ingest``: the dataset and the deletion-request manifest at a data revision, validated."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tru.data.dataset import DataError
from tru.steps.common import REQUESTS_PATH, copy_tree
from tru.utils import LOG


def _git_head(folder: Path) -> str:
    """The commit of the git checkout holding ``folder`` ('' outside git)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def resolve_folder(root: Path, dataset: str) -> Path:
    """A plain dataset folder: ``dataset`` as a path (absolute, or relative to ``root``), else
    ``root/data/<dataset>``."""
    for cand in (Path(dataset), root / dataset, root / "data" / dataset):
        if (cand / "dataset.yaml").is_file():
            return cand
    raise DataError(
        f"dataset {dataset!r}: no dataset folder (with dataset.yaml) at {dataset}, {root / dataset} or "
        f"{root / 'data' / dataset}; expected a folder written by `tru data prepare`"
    )


def ingest(
    repo: str,
    rev: str,
    dataset: str,
    out_data: Path,
    out_requests: Path,
    *,
    requests: str = "",
    generate_requests: bool = False,
    regime: str = "interaction",
    ratio: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Materialise and validate the dataset and the manifest; write them to ``out_data`` (folder) and
    ``out_requests`` (CSV, every request of the manifest); return the data version, dataset summary and
    the manifest's D_f / D_r counts.

    DVC mode (``repo`` a git + DVC repository: a local path, or a git URL on the cluster):
    ``data/<dataset>/`` and ``data/deletions/requests.csv`` at ``rev`` (a commit, a branch or ``HEAD``,
    resolved to its commit sha) through DVC. Folder mode (the local demo): the dataset folder and the
    manifest ``requests`` or ``<repo>/data/deletions/requests.csv``.

    A missing manifest is an error: a pipeline never invents deletions. Only ``generate_requests`` (demos
    and benchmarks) draws random requests from the train split (``regime``, ``ratio``, ``seed``) when no
    manifest exists. Raises :class:`DataError` on invalid data or requests, leaving no output."""
    out_data, out_requests = Path(out_data), Path(out_requests)
    if out_data.exists() and any(out_data.iterdir()):
        raise DataError(f"{out_data}: output exists and is not empty")
    try:
        return _ingest(
            repo, rev, dataset, out_data, out_requests, requests, generate_requests, regime, ratio, seed
        )
    except BaseException:  # nothing half-written: a refused dataset or manifest leaves no output behind
        shutil.rmtree(out_data, ignore_errors=True)
        out_requests.unlink(missing_ok=True)
        raise


def _ingest(
    repo: str,
    rev: str,
    dataset: str,
    out_data: Path,
    out_requests: Path,
    requests: str,
    generate_requests: bool,
    regime: str,
    ratio: float,
    seed: int,
) -> dict[str, Any]:
    from tru.data.dataset import load_dataset
    from tru.data.validate import validate_dataset
    from tru.forget.requests import read_requests, resolve_requests, write_requests
    from tru.mlops import versioning

    reqs: list[Any] | None = None
    if versioning.is_repo_ref(repo):
        source = "dvc"
        at = versioning.resolve_rev_ref(repo, rev or "HEAD")
        versioning.open_dataset_at(repo, at, dataset, out_data)
        version = dict(versioning.data_version(repo, at))
        if versioning.has_requests_at(repo, at):
            reqs, origin = list(versioning.read_requests_at(repo, at)), "manifest"
        where = f"{REQUESTS_PATH}@{at[:12]}"
    else:
        source = "folder"
        root = Path(repo) if repo else Path.cwd()
        folder = resolve_folder(root, dataset)
        copy_tree(folder, out_data)
        version = {"git_commit": _git_head(folder), "dvc_md5": "", "rev": rev}
        manifest = Path(requests) if requests else root / REQUESTS_PATH
        if manifest.is_file():
            reqs, origin = read_requests(manifest), "manifest"
        elif requests:
            raise DataError(f"{manifest}: deletion-request manifest not found")
        where = str(manifest)
    report = validate_dataset(out_data)
    if not report.success:
        raise DataError(f"dataset {dataset!r} ({source}, rev {rev or 'working tree'}):\n{report.render()}")
    ds = load_dataset(out_data, validate=False)
    if reqs is None:
        if not generate_requests:
            raise DataError(
                f"{where}: no deletion-request manifest; a pipeline run needs one (an empty manifest "
                "with its header means no requests). For a demo or benchmark, pass --generate-requests to "
                "draw random requests instead"
            )
        from tru.forget.generate import generate_requests as draw

        now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        reqs, origin = draw(ds, regime, "random", ratio, seed, requested_at=now), "generated"  # arrive now
        LOG.info("no manifest: generated %d %s requests (ratio %s, seed %d)", len(reqs), regime, ratio, seed)
    spec = resolve_requests(ds, reqs)
    out_requests.parent.mkdir(parents=True, exist_ok=True)
    write_requests(out_requests, reqs)
    version["dataset_fingerprint"] = ds.fingerprint
    info = {
        "source": source,
        "requests_origin": origin,
        "dataset_name": ds.name,
        "data_version": version,
        "dataset": ds.summary(),
        "spec": spec.summary(ds.n_items),
    }
    LOG.info("ingest: %s, %d requests in the manifest", ds.name, len(reqs))
    return info
