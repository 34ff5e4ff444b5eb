"""MLflow model registry for tru run folders: register a logged run as a version, promote it to
``champion`` on a passing certificate, fetch the champion, list versions and purge artifacts that still
hold deleted data. The aliases, version tags and failure rule are described in :mod:`tru.mlops.tracking`,
which logs the runs these versions point at."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tru.mlops.tracking import MODEL_PATH, TrackingError, _client, _read_json, _uri  # sets MLflow's env first

# isort: split
import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

CHAMPION, CANDIDATE = "champion", "candidate"
_TAG_MAX = 100_000  # registry tag values (MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH)


def _registered(client: MlflowClient, name: str) -> Any | None:
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def register_version(name: str, run_id: str, run_dir: Path, *, tags: dict[str, str]) -> str:
    """Register ``runs:/<run_id>/model`` as a new version of ``name`` (created when absent), tagged with
    ``tags``, ``verdict=pending``, the run's data version and the checkpoint's fingerprints. No alias
    moves. On failure the version (and a model created here) is removed again."""
    meta = _read_json(Path(run_dir) / "run.json")
    client = _client()
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise TrackingError(f"run {run_id}: not found at {_uri()} ({exc}); nothing was registered") from exc
    vtags = {k: v for k, v in run.data.tags.items() if k.startswith("data_version.") or k == "code_version"}
    for key in ("backbone", "data_fingerprint", "train_fingerprint", "n_forget_pairs"):
        if key in meta:
            vtags[key] = str(meta[key])
    vtags |= {"verdict": "pending", **{k: str(v) for k, v in tags.items()}}
    created_model, version = False, None
    try:
        if _registered(client, name) is None:
            client.create_registered_model(name, description="tru: one model per dataset × backbone")
            created_model = True
        mv = client.create_model_version(
            name,
            source=f"runs:/{run_id}/{MODEL_PATH}",
            run_id=run_id,
            tags={k: str(v)[:_TAG_MAX] for k, v in vtags.items()},  # one request: no half-tagged version
            await_creation_for=0,
        )
        version = mv.version
    except Exception as exc:
        try:
            if version is not None:
                client.delete_model_version(name, version)
            if created_model:
                client.delete_registered_model(name)
        except Exception:
            pass
        raise TrackingError(f"registering run {run_id} as a version of '{name}' failed: {exc}") from exc
    return str(version)


def _ids_tag(ids: Iterable[str]) -> str:
    text = ",".join(sorted({str(i) for i in ids}))
    if len(text) <= _TAG_MAX:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"{text[: _TAG_MAX - 100]}…(truncated; sha256 {digest})"


def _split_ids(tag: str | None) -> set[str]:
    return {s for s in (tag or "").split(",") if s and "…" not in s}


def _champion_version(client: MlflowClient, name: str) -> str | None:
    model = _registered(client, name)
    found = None if model is None else (model.aliases or {}).get(CHAMPION)
    return None if found is None else str(found)  # the sqlite store answers ints, the server strings


def _versions(client: MlflowClient, name: str) -> list[Any]:
    return sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))


def promote(name: str, version: str, certificate: dict[str, Any], request_ids: list[str]) -> dict[str, Any]:
    """Move ``champion`` to ``version`` only when ``certificate["passed"] is True``.

    Passed: the version is tagged verdict=certified, forgotten_requests=<ids>, and every older version
    that did not forget these ids (the previous champion, rejected candidates) is tagged
    contains_deleted_data=true, deleted_requests=<ids>, the previous champion also superseded_by=<version>;
    then the alias moves (last). Failed: the version is tagged verdict=rejected with the reasons and gets
    the ``candidate`` alias; the champion is not touched. Returns promoted, version, champion."""
    client = _client()
    version = str(version)
    ids = sorted({str(i) for i in request_ids})
    try:
        mv = client.get_model_version(name, version)
    except MlflowException as exc:
        raise TrackingError(f"'{name}' version {version}: not in the registry ({exc})") from exc
    before = _champion_version(client, name)
    passed = certificate.get("passed") is True
    now = datetime.now(UTC).isoformat(timespec="seconds")
    undo: list[tuple[str, str, str | None]] = []  # (version, key, old value) to restore on failure

    def tag(v: str, key: str, value: str, old_tags: dict[str, str]) -> None:
        undo.append((v, key, old_tags.get(key)))
        client.set_model_version_tag(name, v, key, value[:_TAG_MAX])

    try:
        if not passed:
            reasons = [str(r) for r in certificate.get("reasons") or []] or ["certificate did not pass"]
            tag(version, "verdict", "rejected", mv.tags)
            tag(version, "reasons", "; ".join(reasons), mv.tags)
            tag(version, "rejected_requests", _ids_tag(ids), mv.tags)
            tag(version, "decided_at", now, mv.tags)
            client.set_registered_model_alias(name, CANDIDATE, version)
            return {"promoted": False, "version": version, "champion": before}
        if before == version:
            return {"promoted": True, "version": version, "champion": version}
        prev_all = set()
        if before is not None:
            prev_all = _split_ids(client.get_model_version(name, before).tags.get("forgotten_requests_all"))
        tag(version, "verdict", "certified", mv.tags)
        tag(version, "forgotten_requests", _ids_tag(ids), mv.tags)
        tag(version, "forgotten_requests_all", _ids_tag(prev_all | set(ids)), mv.tags)
        tag(version, "certificate_evidence", str(certificate.get("evidence", "")), mv.tags)
        tag(version, "decided_at", now, mv.tags)
        for old in _versions(client, name):
            old_v = str(old.version)
            if int(old.version) >= int(version) or set(ids) <= _split_ids(
                old.tags.get("forgotten_requests_all")
            ):
                continue
            held = _split_ids(old.tags.get("deleted_requests")) | set(ids)
            tag(old_v, "contains_deleted_data", "true", old.tags)
            tag(old_v, "deleted_requests", _ids_tag(held), old.tags)
            if old_v == before:
                tag(old_v, "superseded_by", version, old.tags)
        client.set_registered_model_alias(name, CHAMPION, version)  # last: the only step that promotes
        if str((_registered(client, name).aliases or {}).get(CANDIDATE)) == version:
            client.delete_registered_model_alias(name, CANDIDATE)
    except Exception as exc:
        for v, key, old_value in reversed(undo):
            try:
                if old_value is None:
                    client.delete_model_version_tag(name, v, key)
                else:
                    client.set_model_version_tag(name, v, key, old_value)
            except Exception:
                break
        raise TrackingError(
            f"promoting '{name}' version {version} failed ({exc}); champion is still {before}"
        ) from exc
    return {"promoted": True, "version": version, "champion": version}


def champion(name: str, dest: Path | None = None) -> tuple[str, Path] | None:
    """(version, local folder with model.pt and run.json) of the champion, or None when there is none.
    The folder is ``dest`` or a new temporary folder under ``$TMPDIR``."""
    client = _client()
    version = _champion_version(client, name)
    if version is None:
        return None
    mv = client.get_model_version(name, version)
    if mv.tags.get("purged") == "true":
        raise TrackingError(f"'{name}' champion version {version} has been purged: no artifacts")
    out = (
        Path(dest)
        if dest is not None
        else Path(tempfile.mkdtemp(prefix="tru-champion-", dir=os.environ.get("TMPDIR")))
    )
    out.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=mv.run_id, artifact_path=MODEL_PATH, dst_path=str(out), tracking_uri=_uri()
        )
    except Exception as exc:
        raise TrackingError(
            f"downloading '{name}' version {version} (run {mv.run_id}) failed: {exc}"
        ) from exc
    if not (Path(local) / "model.pt").is_file():
        raise TrackingError(f"'{name}' version {version}: run {mv.run_id} has no {MODEL_PATH}/model.pt")
    return version, Path(local)


def list_versions(name: str) -> list[dict[str, Any]]:
    """Every version of ``name`` with its aliases, run id, source and tags (oldest first)."""
    client = _client()
    model = _registered(client, name)
    if model is None:
        raise TrackingError(f"no registered model '{name}' at {_uri()}")
    by_version: dict[str, list[str]] = {}
    for alias, v in (model.aliases or {}).items():
        by_version.setdefault(str(v), []).append(alias)
    return [
        {
            "version": str(v.version),
            "aliases": sorted(by_version.get(str(v.version), [])),
            "run_id": v.run_id,
            "source": v.source,
            "tags": dict(v.tags),
        }
        for v in _versions(client, name)
    ]


def purge(name: str, dry_run: bool = True) -> list[dict[str, Any]]:
    """Versions holding deleted data whose certified successor is champion: delete their ``model/``
    artifacts (the registry record stays, tagged purged=true; a ``candidate`` alias on it is removed).
    Eligible: contains_deleted_data=true, not purged, older than the champion, and the champion's
    verdict is certified.
    ``dry_run`` (default) only lists them."""
    client = _client()
    champ = _champion_version(client, name)
    if champ is None or client.get_model_version(name, champ).tags.get("verdict") != "certified":
        return []
    out: list[dict[str, Any]] = []
    aliases = {k: str(v) for k, v in (_registered(client, name).aliases or {}).items()}
    versions = _versions(client, name)
    champ_runs = {v.run_id for v in versions if str(v.version) == champ}  # never delete the champion's files
    for v in versions:
        t = v.tags
        if t.get("contains_deleted_data") != "true" or t.get("purged") == "true":
            continue
        if int(v.version) >= int(champ) or v.run_id in champ_runs:
            continue
        row = {
            "version": str(v.version),
            "run_id": v.run_id,
            "verdict": t.get("verdict"),
            "deleted_requests": sorted(_split_ids(t.get("deleted_requests"))),
            "champion": champ,
            "action": "would delete" if dry_run else "deleted",
        }
        if not dry_run:
            uri = client.get_run(v.run_id).info.artifact_uri.rstrip("/") + "/" + MODEL_PATH
            try:
                get_artifact_repository(uri, tracking_uri=_uri()).delete_artifacts()
                client.set_model_version_tag(name, v.version, "purged", "true")
                client.set_model_version_tag(name, v.version, "purged_at", datetime.now(UTC).isoformat())
                client.set_tag(v.run_id, "purged", "true")
                if aliases.get(CANDIDATE) == str(v.version):  # a rejected candidate: no longer one
                    client.delete_registered_model_alias(name, CANDIDATE)
            except Exception as exc:
                raise TrackingError(
                    f"purging '{name}' version {v.version} ({uri}) failed: {exc}; "
                    f"purged before it: {[r['version'] for r in out]}"
                ) from exc
            row["artifacts"] = uri
        out.append(row)
    return out
