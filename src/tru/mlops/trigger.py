"""The trigger ledger and :func:`trigger`: run the unlearning pipeline for the deletion requests a DVC
commit added, once per revision (definitions in :mod:`tru.mlops.versioning`); processed revisions are
recorded in ``.tru/processed.json``."""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tru.data.dataset import write_atomic
from tru.mlops.versioning import VersioningError, check_repo, data_version, new_requests, resolve_rev
from tru.utils import LOG

LEDGER_PATH = ".tru/processed.json"
Runner = Callable[..., dict[str, Any]]


# ------------------------------------------------------------------------------------------------ ledger
@contextlib.contextmanager
def _ledger_lock(repo: Path) -> Iterator[Path]:
    """An exclusive lock on ``.tru/`` (two hooks firing at once run one after the other); the folder
    ignores itself in git (``.tru/.gitignore`` = ``*``)."""
    folder = (repo / LEDGER_PATH).parent
    folder.mkdir(exist_ok=True)
    if not (folder / ".gitignore").is_file():
        (folder / ".gitignore").write_text("*\n")
    with open(folder / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield repo / LEDGER_PATH
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_ledger(repo: Path | str) -> dict[str, dict[str, Any]]:
    """Processed revisions: ``{commit sha: {"status", "rev_from", "requests", "data_version", ...}}``."""
    path = Path(repo) / LEDGER_PATH
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text())["revisions"])
    except (ValueError, KeyError, TypeError) as exc:
        raise VersioningError(
            f"{path}: unreadable trigger ledger ({exc}); expected {{'revisions': {{...}}}}; "
            "fix or remove it (removing it re-runs every revision)"
        ) from exc


# ----------------------------------------------------------------------------------------------- trigger
def _pipeline_runner(mode: str, kind: str = "kfp") -> Runner:
    """The runner ``trigger`` hands the requests to. ``kfp`` (default): the Kubeflow pipeline through
    ``pipelines.runner.run_for_trigger`` (``kfp.local`` in local mode, a submitted run in cluster mode);
    ``steps``: the library runner :func:`tru.commands.mlops_data.run_steps` (the same steps in process,
    local only; takes ``--model``)."""
    if kind == "steps":
        if mode != "local":
            raise VersioningError("the steps runner is local only; cluster mode submits the KFP pipeline")
        from tru.commands.mlops_data import run_steps

        return run_steps
    if kind != "kfp":
        raise VersioningError(f"unknown runner {kind!r}; expected kfp or steps")
    from tru.commands.common import CLIError
    from tru.commands.pipeline import load_runner

    try:
        return load_runner().run_for_trigger
    except (ImportError, CLIError) as exc:
        raise VersioningError(
            f"the KFP pipeline is not importable here ({exc}); run from the project checkout (its "
            "pipelines/ package) with kfp installed, or use --runner steps for the in-process steps"
        ) from exc


def trigger(
    repo: Path | str,
    rev_from: str,
    rev_to: str,
    *,
    mode: str = "local",
    runner: Runner | None = None,
    runner_kind: str = "kfp",
    force: bool = False,
    **pipeline_args: Any,
) -> dict[str, Any]:
    """Run (``local``) or submit (``cluster``) the pipeline for the requests added between the revisions,
    once per ``rev_to`` commit (module docstring). Returns the ledger entry with ``status`` ``processed``,
    ``no-new-requests`` or ``already-processed``. A failure (unknown revision, invalid manifest, runner
    error) raises and leaves the ledger untouched; ``force`` re-runs a processed revision."""
    if mode not in ("local", "cluster"):
        raise VersioningError(f"unknown mode {mode!r}; expected local or cluster")
    repo = check_repo(repo)
    sha_from, sha_to = resolve_rev(repo, rev_from), resolve_rev(repo, rev_to)
    with _ledger_lock(repo) as path:
        ledger = read_ledger(repo)
        if sha_to in ledger and not force:
            return {**ledger[sha_to], "status": "already-processed", "rev_to": sha_to}
        found = new_requests(repo, sha_from, sha_to)
        done = set() if force else {rid for e in ledger.values() for rid in e.get("requests", [])}
        todo = [r for r in found if r.request_id not in done]
        entry: dict[str, Any] = {
            "rev_from": sha_from,
            "rev_to": sha_to,
            "mode": mode,
            "data_version": data_version(repo, sha_to),
            "requests": [r.request_id for r in todo],
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if todo:
            run = runner or _pipeline_runner(mode, runner_kind)
            LOG.info(
                "trigger %s..%s: %d new request(s), running %s",
                sha_from[:12],
                sha_to[:12],
                len(todo),
                getattr(run, "__name__", run),
            )
            result = run(
                repo=repo,
                rev=sha_to,
                rev_from=sha_from,
                requests=todo,
                data_version=entry["data_version"],
                mode=mode,
                **pipeline_args,
            )
            entry.update(status="processed", result=json.loads(json.dumps(result, default=str)))
        else:
            entry["status"] = "no-new-requests"
        ledger[sha_to] = entry
        write_atomic(path, json.dumps({"revisions": ledger}, indent=2).encode())
    return entry
