"""MLflow model registry for tru run folders: register a logged run as a version, promote it to
``champion`` (a compare-and-set under a registry lock, on a certificate checked against the model),
fetch the champion, list versions and purge artifacts that still hold deleted data. The aliases and
failure rule are described in :mod:`tru.mlops.tracking`, which logs the runs these versions point at;
the lifecycle rules (what is pending, when a version may replace the champion) in :mod:`tru.lifecycle`.

Version tags (one name each, :data:`TAGS`): ``verdict`` (pending | certified | rejected), ``evidence``,
``forgotten_requests`` (ids this version added), ``forgotten_requests_all`` (every id it has forgotten:
what "done" means), ``forgotten_commitment``, ``based_on`` (the champion version the run started from),
``confirmed`` (slow path), ``contains_deleted_data`` / ``deleted_requests`` / ``superseded_by`` on
versions that still hold data a newer champion forgot, ``purged`` once their artifacts are gone."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import socket
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tru.mlops.tracking import (  # sets MLflow's env first
    MODEL_PATH,
    TrackingError,
    current_uri,
    mlflow_client,
)
from tru.runfolder import MODEL_FILE, RUN_FILE, read_json

# isort: split
import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

CHAMPION, CANDIDATE = "champion", "candidate"
_TAG_MAX = 100_000  # registry tag values (MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH)
LOCK_SUFFIX = ".lock"
LOCK_STALE_SECONDS = 600.0


class TAGS:
    """Registry version tag names (module docstring)."""

    VERDICT = "verdict"
    EVIDENCE = "evidence"
    REASONS = "reasons"
    FORGOTTEN = "forgotten_requests"
    FORGOTTEN_ALL = "forgotten_requests_all"
    COMMITMENT = "forgotten_commitment"
    N_FORGOTTEN = "n_forgotten_requests"
    BASED_ON = "based_on"
    CONFIRMED = "confirmed"
    CONTAINS_DELETED = "contains_deleted_data"
    DELETED_REQUESTS = "deleted_requests"
    SUPERSEDED_BY = "superseded_by"
    REJECTED_REQUESTS = "rejected_requests"
    PURGED = "purged"
    DECIDED_AT = "decided_at"
    WEIGHTS = "weights_sha256"


class PromotionConflict(TrackingError):
    """The champion moved while this version was being made (or it would un-forget requests): nothing
    was promoted; its requests stay pending and the next trigger retries them on the new champion."""


class RegistryBusy(TrackingError):
    """Another promotion holds the registry lock for longer than the wait allowed."""


def _registered(client: MlflowClient, name: str) -> Any | None:
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def register_version(
    name: str, run_id: str, run_dir: Path, *, tags: dict[str, str], source: str | None = None
) -> str:
    """Register a new version of ``name`` (created when absent) pointing at ``source`` (default
    ``runs:/<run_id>/model``; the servable pyfunc model when the register step logged one), tagged with
    ``tags``, ``verdict=pending``, the run's data version and the checkpoint's provenance (backbone,
    train fingerprint, weights hash, forgotten count and commitment: never request data). No alias
    moves. On failure the version (and a model created here) is removed again."""
    meta = read_json(Path(run_dir) / RUN_FILE)
    client = mlflow_client()
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise TrackingError(
            f"run {run_id}: not found at {current_uri()} ({exc}); nothing was registered"
        ) from exc
    vtags = {k: v for k, v in run.data.tags.items() if k.startswith("data_version.") or k == "code_version"}
    for key in ("backbone", "train_fingerprint", "features_fingerprint", "weights_sha256", "n_train_pairs"):
        if key in meta:
            vtags[key] = str(meta[key])
    forgotten = meta.get("forgotten") or {}
    vtags["model_forgotten_commitment"] = str(forgotten.get("commitment", ""))
    vtags["model_n_forgotten"] = str(len(forgotten.get("request_ids") or []))
    vtags["lineage"] = str((meta.get("lineage") or {}).get("kind", ""))
    vtags |= {"verdict": "pending", **{k: str(v) for k, v in tags.items()}}
    created_model, version = False, None
    try:
        if _registered(client, name) is None:
            client.create_registered_model(name, description="tru: one model per dataset × backbone")
            created_model = True
        mv = client.create_model_version(
            name,
            source=source or f"runs:/{run_id}/{MODEL_PATH}",
            run_id=run_id,
            tags={k: str(v)[:_TAG_MAX] for k, v in vtags.items()},  # one request: no half-tagged version
            await_creation_for=0,
            model_id=source.removeprefix("models:/") if source and source.startswith("models:/m-") else None,
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
    return f"@run.json(sha256 {digest})"  # too long for a tag: the run's checkpoint record holds them


def _split_ids(tag: str | None) -> set[str]:
    return {s for s in (tag or "").split(",") if s and not s.startswith("@")}


def _champion_version(client: MlflowClient, name: str) -> str | None:
    model = _registered(client, name)
    found = None if model is None else (model.aliases or {}).get(CHAMPION)
    return None if found is None else str(found)  # the sqlite store answers ints, the server strings


def _versions(client: MlflowClient, name: str) -> list[Any]:
    return sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))


def _forgotten_of(client: MlflowClient, mv: Any) -> set[str]:
    """The forgotten ids of a version: its tag, or (too many for a tag) the run's ``run.json`` record."""
    tag = mv.tags.get(TAGS.FORGOTTEN_ALL) or ""
    if not tag.startswith("@"):
        return _split_ids(tag)
    import json

    with tempfile.TemporaryDirectory(prefix="tru-forgotten-", dir=os.environ.get("TMPDIR")) as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=mv.run_id, artifact_path=f"{MODEL_PATH}/run.json", dst_path=tmp, tracking_uri=current_uri()
        )
        meta = json.loads(Path(local).read_text())
    return {str(r) for r in (meta.get("forgotten") or {}).get("request_ids", [])}


# ------------------------------------------------------------------------------------------------ lock
@contextlib.contextmanager
def registry_lock(name: str, timeout: float = 120.0) -> Iterator[None]:
    """Mutual exclusion for promotions of ``name`` across processes and machines.

    The lock is the registered model ``<name>.lock``: creating a registered model is atomic in every
    MLflow store (a unique name), so exactly one creator wins; it is deleted on exit. A lock older than
    :data:`LOCK_STALE_SECONDS` (a holder that died) is broken. Raises :class:`RegistryBusy` after
    ``timeout`` seconds."""
    client = mlflow_client()
    lock = f"{name}{LOCK_SUFFIX}"
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.create_registered_model(
                lock,
                tags={"holder": holder, "acquired_at": f"{time.time():.3f}"},
                description=f"tru: promotion lock of {name} (held while a version is promoted)",
            )
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # e.g. a busy sqlite store: try again
                if time.monotonic() > deadline:
                    raise TrackingError(f"registry lock {lock}: {exc}") from exc
                time.sleep(0.05 + random.random() * 0.2)
                continue
        try:
            held = _registered(client, lock)
        except MlflowException:
            held = None
        if held is not None:
            try:
                age = time.time() - float((held.tags or {}).get("acquired_at", "0"))
            except ValueError:
                age = LOCK_STALE_SECONDS + 1
            if age > LOCK_STALE_SECONDS:
                with contextlib.suppress(MlflowException):
                    client.delete_registered_model(lock)
                continue
        if time.monotonic() > deadline:
            raise RegistryBusy(f"registry lock {lock} is held by another promotion; nothing was changed")
        time.sleep(0.05 + random.random() * 0.2)
    try:
        yield
    finally:
        try:
            held = _registered(client, lock)
            if held is not None and (held.tags or {}).get("holder") == holder:
                client.delete_registered_model(lock)
        except MlflowException:
            pass


# ------------------------------------------------------------------------------------------ promotion
def _tagger(client: MlflowClient, name: str) -> tuple[Any, list[tuple[str, str, str | None]]]:
    undo: list[tuple[str, str, str | None]] = []

    def tag(v: str, key: str, value: str, old_tags: dict[str, str]) -> None:
        undo.append((v, key, old_tags.get(key)))
        client.set_model_version_tag(name, v, key, value[:_TAG_MAX])

    return tag, undo


def _rollback(client: MlflowClient, name: str, undo: list[tuple[str, str, str | None]]) -> None:
    for v, key, old_value in reversed(undo):
        try:
            if old_value is None:
                client.delete_model_version_tag(name, v, key)
            else:
                client.set_model_version_tag(name, v, key, old_value)
        except Exception:
            break


def reject(name: str, version: str, reasons: list[str], request_ids: Iterable[str]) -> dict[str, Any]:
    """Tag ``version`` rejected with ``reasons`` and give it the ``candidate`` alias; the champion stays."""
    client = mlflow_client()
    version = str(version)
    mv = client.get_model_version(name, version)
    tag, undo = _tagger(client, name)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        tag(version, TAGS.VERDICT, "rejected", mv.tags)
        tag(version, TAGS.REASONS, "; ".join(reasons) or "certificate did not pass", mv.tags)
        tag(version, TAGS.REJECTED_REQUESTS, _ids_tag(request_ids), mv.tags)
        tag(version, TAGS.DECIDED_AT, now, mv.tags)
        client.set_registered_model_alias(name, CANDIDATE, version)
    except Exception as exc:
        _rollback(client, name, undo)
        raise TrackingError(f"rejecting '{name}' version {version} failed ({exc})") from exc
    return {"promoted": False, "version": version, "champion": _champion_version(client, name)}


def promote(
    name: str,
    version: str,
    *,
    forgotten: Iterable[str],
    new_requests: Iterable[str],
    evidence: str,
    based_on: str | None,
    commitment: str = "",
    confirmed: bool = False,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Move ``champion`` to ``version`` (its certificate already checked against the model by the caller:
    :func:`tru.certify.binding.check_certificate`), as a compare-and-set under :func:`registry_lock`:

        allowed ⇔ no champion  or  based_on = champion  or  forgotten ⊋ champion's forgotten set

    (:func:`tru.lifecycle.may_promote` must hold too: a promotion never un-forgets a request). Racing
    promotions from the same champion: exactly one wins; the others raise :class:`PromotionConflict`.
    Tags first, alias last: a failure leaves the champion where it was and restores the tags. Older
    versions that did not forget all of ``forgotten`` are tagged ``contains_deleted_data=true``."""
    from tru.lifecycle import may_promote

    version = str(version)
    ids = {str(i) for i in forgotten}
    with registry_lock(name, timeout):
        client = mlflow_client()
        try:
            mv = client.get_model_version(name, version)
        except MlflowException as exc:
            raise TrackingError(f"'{name}' version {version}: not in the registry ({exc})") from exc
        before = _champion_version(client, name)
        if before == version:
            return {"promoted": True, "version": version, "champion": version}
        prev: set[str] = set()
        if before is not None:
            prev = _forgotten_of(client, client.get_model_version(name, before))
            if not may_promote(ids, prev):
                lost = len(prev - ids)
                raise PromotionConflict(
                    f"'{name}' version {version} has not forgotten {lost} request(s) that champion version "
                    f"{before} forgot: promoting it would bring their data back; champion unchanged, its "
                    "requests stay pending and the next trigger retries them"
                )
            if str(based_on or "") != before and not ids > prev:
                raise PromotionConflict(
                    f"'{name}' version {version} was made from champion version {based_on or 'none'}, but "
                    f"the champion is now version {before} and has already forgotten as much: champion "
                    "unchanged; the next trigger retries on the new champion"
                )
        now = datetime.now(UTC).isoformat(timespec="seconds")
        tag, undo = _tagger(client, name)
        try:
            tag(version, TAGS.VERDICT, "certified", mv.tags)
            tag(version, TAGS.EVIDENCE, evidence, mv.tags)
            tag(version, TAGS.FORGOTTEN, _ids_tag(new_requests), mv.tags)
            tag(version, TAGS.FORGOTTEN_ALL, _ids_tag(ids), mv.tags)
            tag(version, TAGS.N_FORGOTTEN, str(len(ids)), mv.tags)
            if commitment:
                tag(version, TAGS.COMMITMENT, commitment, mv.tags)
            tag(version, TAGS.BASED_ON, str(based_on or ""), mv.tags)
            tag(version, TAGS.CONFIRMED, "true" if confirmed else "false", mv.tags)
            tag(version, TAGS.DECIDED_AT, now, mv.tags)
            for old in _versions(client, name):
                old_v = str(old.version)
                if old_v == version or ids <= _forgotten_of(client, old):
                    continue
                held = _split_ids(old.tags.get(TAGS.DELETED_REQUESTS)) | (ids - _forgotten_of(client, old))
                tag(old_v, TAGS.CONTAINS_DELETED, "true", old.tags)
                tag(old_v, TAGS.DELETED_REQUESTS, _ids_tag(held), old.tags)
                if old_v == before:
                    tag(old_v, TAGS.SUPERSEDED_BY, version, old.tags)
            client.set_registered_model_alias(name, CHAMPION, version)  # last: the only step that promotes
            if str((_registered(client, name).aliases or {}).get(CANDIDATE)) == version:
                client.delete_registered_model_alias(name, CANDIDATE)
        except Exception as exc:
            _rollback(client, name, undo)
            raise TrackingError(
                f"promoting '{name}' version {version} failed ({exc}); champion is still {before}"
            ) from exc
    return {"promoted": True, "version": version, "champion": version, "previous": before}


def confirm(name: str, version: str, *, evidence: str) -> dict[str, Any]:
    """The slow path confirmed the champion ``version`` against a retrain: tag ``confirmed=true``."""
    client = mlflow_client()
    with registry_lock(name):
        if _champion_version(client, name) != str(version):
            raise PromotionConflict(
                f"'{name}' version {version} is no longer the champion; nothing confirmed"
            )
        now = datetime.now(UTC).isoformat(timespec="seconds")
        client.set_model_version_tag(name, str(version), TAGS.CONFIRMED, "true")
        client.set_model_version_tag(name, str(version), "confirmed_evidence", evidence)
        client.set_model_version_tag(name, str(version), "confirmed_at", now)
    return {"confirmed": True, "version": str(version)}


def forgotten_requests(name: str) -> set[str]:
    """Request ids the serving champion of ``name`` has forgotten (empty when there is no champion).

    The one source of truth for "done": a request is done only when the champion has forgotten it."""
    client = mlflow_client()
    version = _champion_version(client, name)
    if version is None:
        return set()
    return _forgotten_of(client, client.get_model_version(name, version))


def champion_version(name: str) -> str | None:
    """The champion's version number (None when there is none)."""
    return _champion_version(mlflow_client(), name)


def version_records(name: str) -> list[Any]:
    """Every version as a :class:`tru.lifecycle.VersionRecord` (for ``tru requests status``)."""
    from tru.lifecycle import VersionRecord

    client = mlflow_client()
    model = _registered(client, name)
    if model is None:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, v in (model.aliases or {}).items():
        aliases.setdefault(str(v), []).append(alias)
    return [
        VersionRecord(
            version=str(v.version),
            aliases=tuple(sorted(aliases.get(str(v.version), []))),
            verdict=v.tags.get(TAGS.VERDICT, ""),
            evidence=v.tags.get(TAGS.EVIDENCE, ""),
            forgotten_all=frozenset(_forgotten_of(client, v))
            if v.tags.get(TAGS.FORGOTTEN_ALL)
            else frozenset(),
            decided_at=v.tags.get(TAGS.DECIDED_AT, ""),
            confirmed=v.tags.get(TAGS.CONFIRMED, ""),
            contains_deleted_data=v.tags.get(TAGS.CONTAINS_DELETED) == "true",
        )
        for v in _versions(client, name)
    ]


def champion(name: str, dest: Path | None = None) -> tuple[str, Path] | None:
    """(version, local folder with model.pt and run.json) of the champion, or None when there is none.
    The folder is ``dest`` or a new temporary folder under ``$TMPDIR``. A champion tagged as holding
    deleted data (or purged) is never served: :class:`TrackingError`."""
    client = mlflow_client()
    version = _champion_version(client, name)
    if version is None:
        return None
    mv = client.get_model_version(name, version)
    if mv.tags.get(TAGS.PURGED) == "true":
        raise TrackingError(f"'{name}' champion version {version} has been purged: no artifacts")
    if mv.tags.get(TAGS.CONTAINS_DELETED) == "true":
        raise TrackingError(
            f"'{name}' champion version {version} is tagged contains_deleted_data=true (a newer version "
            "forgot requests it still holds): refusing to serve it; promote a certified version"
        )
    out = (
        Path(dest)
        if dest is not None
        else Path(tempfile.mkdtemp(prefix="tru-champion-", dir=os.environ.get("TMPDIR")))
    )
    out.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=mv.run_id, artifact_path=MODEL_PATH, dst_path=str(out), tracking_uri=current_uri()
        )
    except Exception as exc:
        raise TrackingError(
            f"downloading '{name}' version {version} (run {mv.run_id}) failed: {exc}"
        ) from exc
    if not (Path(local) / MODEL_FILE).is_file():
        raise TrackingError(f"'{name}' version {version}: run {mv.run_id} has no {MODEL_PATH}/model.pt")
    return version, Path(local)


def list_versions(name: str) -> list[dict[str, Any]]:
    """Every version of ``name`` with its aliases, run id, source and tags (oldest first)."""
    client = mlflow_client()
    model = _registered(client, name)
    if model is None:
        raise TrackingError(f"no registered model '{name}' at {current_uri()}")
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
    client = mlflow_client()
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
                get_artifact_repository(uri, tracking_uri=current_uri()).delete_artifacts()
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
