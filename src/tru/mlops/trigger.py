"""``tru trigger``: forget every pending deletion request at a data revision.

What is pending is decided by the registry, never by a cache (:mod:`tru.lifecycle`)::

    pending(rev) = manifest(rev) \\ forgotten(champion)

so a request whose run failed (or was never run) is simply still pending: the next trigger, from a
commit hook, a CI job or a schedule, retries it. A trigger with nothing pending does nothing. The
runner it calls is an argument (the CLI passes the Kubeflow pipeline's,
:func:`tru.kfp.runner.run_for_trigger`, or the in-process chain's,
:func:`tru.steps.chain.run_for_trigger`): this library layer imports no CLI and no pipeline
definition. Local triggers on one checkout run one after the other (a lock)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tru.mlops.versioning import (
    VersioningError,
    check_repo,
    data_version,
    has_requests_at,
    only_dataset_at,
    read_requests_at,
    repo_lock,
    resolve_rev,
)
from tru.utils import LOG

Runner = Callable[..., dict[str, Any]]


class TriggerFailed(RuntimeError):
    """The run ended but some requests are still pending (they will be retried by the next trigger);
    ``entry`` holds the trigger's outcome."""

    def __init__(self, message: str, entry: dict[str, Any]) -> None:
        super().__init__(message)
        self.entry = entry


def trigger(
    repo: Path | str,
    rev: str = "HEAD",
    *,
    runner: Runner,
    backbone: str = "mgcn",
    dataset: str | None = None,
    mode: str = "local",
    tracking_uri: str | None = None,
    confirm: bool = False,
    **pipeline_args: Any,
) -> dict[str, Any]:
    """Run ``runner`` for the requests pending at ``rev`` (module docstring). Returns the outcome with
    ``status``: ``nothing-pending``, ``done`` (local: the champion now forgot every one), ``submitted`` /
    ``succeeded`` (cluster), or raises :class:`TriggerFailed` when requests are still pending after a
    local run. Invalid manifests, unknown revisions and runner errors raise; nothing is recorded either
    way: the registry is the record."""
    from tru.lifecycle import pending_requests
    from tru.mlops import registry, tracking

    if mode not in ("local", "cluster"):
        raise VersioningError(f"unknown mode {mode!r}; expected local or cluster")
    root = check_repo(repo)
    sha = resolve_rev(root, rev)
    if not has_requests_at(root, sha):
        raise VersioningError(
            f"{root}@{sha[:12]}: no deletion-request manifest (data/deletions/requests.csv); nothing to "
            "trigger (`tru requests add` creates it)"
        )
    manifest = read_requests_at(root, sha)
    dataset = dataset or only_dataset_at(root, sha)
    uri = tracking.configure(tracking_uri)
    name = tracking.model_name(dataset, backbone)
    entry: dict[str, Any] = {
        "rev": sha,
        "mode": mode,
        "model_name": name,
        "data_version": data_version(root, sha),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    lock = repo_lock(root, "trigger") if mode == "local" else contextlib.nullcontext()
    with lock:
        forgotten = registry.forgotten_requests(name)
        pending = pending_requests(manifest, forgotten)
        entry |= {"pending": [r.request_id for r in pending], "n_forgotten_before": len(forgotten)}
        if not pending and not confirm:
            return {**entry, "status": "nothing-pending"}
        LOG.info("trigger %s: %d pending request(s) for %s", sha[:12], len(pending), name)
        result = runner(
            repo=root, rev=sha, requests=pending, mode=mode, dataset=dataset, backbone=backbone,
            tracking_uri=uri, confirm=confirm, **pipeline_args,
        )  # fmt: skip
    entry["result"] = result
    state = str(result.get("state", "")).upper()
    if mode == "cluster" and state != "SUCCEEDED":
        return {**entry, "status": "submitted"}
    after = registry.forgotten_requests(name)
    still = [r.request_id for r in pending if r.request_id not in after]
    entry |= {"status": "done" if not still else "failed", "still_pending": still}
    if still:
        raise TriggerFailed(
            f"{len(still)} of {len(pending)} request(s) are still pending after the run at {sha[:12]} "
            f"(champion {result.get('champion')}); they stay pending and the next trigger retries them",
            entry,
        )
    return entry
