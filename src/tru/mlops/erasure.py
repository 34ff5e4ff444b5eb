"""``tru erase``: after the champion has forgotten a set of deletion requests, remove the deleted data from
every store tru writes to (``docs/erasure.md``: what each tool really deletes).

What is erased: the requests of ``data/deletions/requests.csv`` whose id the champion of ``name`` has
forgotten (:func:`tru.mlops.registry.forgotten_requests`, the one source of truth for "done") and that are
not erased yet. A request the champion has not forgotten is never erased: it stays pending.

Steps (each reported with its outcome in :class:`ErasureReport`; each is idempotent, so a re-run after a
failure completes what is left, and a second run with nothing new changes nothing):

1. ``data``: the next data version. The rows the requests delete leave ``data/<dataset>/<name>.inter``
   (user: every row of the user, train / valid / test; item: every row of the item; interaction: that
   pair); only that file and the ``stats`` counts of ``dataset.yaml`` change (the id space and everything
   else stay). The requests move from ``requests.csv`` to the redacted ledger ``erased.csv`` (ids, kind,
   times, keyed commitment; no user or item ids). Then ``dvc add data`` and ``git commit`` of data.dvc (the
   message names request ids and counts only). Any failure before the commit restores every file.
2. ``push``: ``dvc push`` of the new version to the default remote (after the commit: an unreachable
   remote leaves the commit intact; the next run pushes).
3. ``dvc-gc``: DVC's cache and remote are content-addressed, so every old version of the ``.inter`` and of
   the manifest is its own object, kept as long as anything holds it (``dvc gc`` only deletes what no
   kept revision references, and ``--all-commits`` keeps every old data version forever; a plain S3
   delete on a versioned bucket only adds a delete marker). ``dvc gc`` cannot scope "objects that hold
   deleted rows", so this step computes the exact set itself: it reads ``data.dvc`` at every commit
   (``git rev-list --all --reflog``) and the ``.dir`` listings, checks the content of every object not
   referenced by a kept revision (the new one, ``HEAD`` and ``--keep-revisions``), whether a commit names
   it or not (an uncommitted ``dvc add`` leaves orphans), with the audit's :class:`TraceMatcher`, and
   deletes those that hold deleted rows, then the ``.dir`` listings that name them: from the cache and
   from the remote, there every S3 object version and delete marker (``delete_objects`` with
   ``VersionId``). Objects a kept revision needs are never deleted (``dvc pull`` at the new revision
   works from an empty cache). It reports the commits whose ``data.dvc`` still names a deleted listing:
   the hashes remain in git history, the data does not.
4. ``pipeline-outputs``: ``kfp.local`` pipeline roots (``<repo>/.tru/kfp`` and every ``--pipeline-root``,
   local or ``s3://``, there every object version) and ``<repo>/.tru/runs``: KFP never collects them, and
   every run folder holds a copy of the dataset it processed. Deleted: each run entry last written before
   the latest erasure (it processed pre-erasure data) and any later one that holds a trace.
5. ``mlflow``: the runs of registry versions tagged ``contains_deleted_data=true`` (superseded champions,
   rejected candidates) and every ``train`` run whose data version held the deleted rows (tag
   ``data_version.dvc_md5``; a train run of this dataset with an unknown data version counts too), never
   the champion's run. ``MlflowClient.delete_run`` is a soft delete; the run and its artifacts are then
   removed permanently with MLflow's own garbage-collection primitives (what ``mlflow gc --run-ids`` does:
   the artifact repository's ``delete_artifacts`` through the tracking server for proxied
   ``mlflow-artifacts:`` stores, then the backend store's hard delete), scoped to these runs only (the
   ``mlflow gc`` command also hard-deletes every soft-deleted experiment and logged model of the store).
   An S3 artifact store's old object versions go too. The registry version records stay (lineage),
   tagged ``purged=true`` with the time.

Nothing printed, logged or reported names a deleted user, item or pair: request ids, counts, commitments
and locations only.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tru.data.dataset import DataError, read_inter, write_atomic
from tru.forget.commitment import commit_requests
from tru.forget.erased import ERASED_PATH, ErasedRequest, append_erased, read_erased
from tru.forget.requests import DeletionRequest, parse_timestamp, read_requests, write_requests
from tru.mlops import erasure_audit as A
from tru.mlops.versioning import (
    DATA_DIR,
    DVC_FILE,
    REQUESTS_PATH,
    check_repo,
    git,
    resolve_rev,
)
from tru.utils import LOG

STATUSES = ("done", "would-do", "nothing-to-do", "skipped", "failed")
MAX_IDS_IN_MESSAGE = 50
MTIME_SLACK_S = 1.0  # erased_at has second precision
MANIFEST_MAX_BYTES = 16 << 20


class ErasureError(ValueError):
    """``tru erase`` cannot start (no repository, several datasets and none named, data/ not matching
    data.dvc); nothing was changed. A ValueError: the CLI prints it and exits 2."""


# ------------------------------------------------------------------------------------------- report
@dataclass
class StepOutcome:
    """One step's outcome: ``status`` in :data:`STATUSES`, a message, counts and the locations it
    deleted (or would delete): paths, ``s3://`` URIs, run ids; never data."""

    step: str
    status: str
    message: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    locations: list[str] = field(default_factory=list)


@dataclass
class ErasureReport:
    """What ``tru erase`` did (or, with ``dry_run``, would do)."""

    repo: str
    name: str
    dataset: str | None
    dry_run: bool
    champion: str | None = None
    erased: list[str] = field(default_factory=list)
    already_erased: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    commitment: str | None = None
    rows_removed: dict[str, int] = field(default_factory=dict)
    data_commit: str | None = None
    history_commits: list[str] = field(default_factory=list)
    steps: list[StepOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.status != "failed" for s in self.steps)

    @property
    def changed(self) -> bool:
        return any(s.status == "done" for s in self.steps)

    def step(self, name: str) -> StepOutcome | None:
        return next((s for s in self.steps if s.step == name), None)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(ok=self.ok, changed=self.changed)
        if self.history_commits:
            out["history_note"] = (
                f"{len(self.history_commits)} git commit(s) still name deleted objects in data.dvc: "
                "the hashes remain in history, the data does not"
            )
        return out


# ----------------------------------------------------------------------------------------- plumbing
def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _ids_text(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:MAX_IDS_IN_MESSAGE])
    return shown + (f" (+{len(ids) - MAX_IDS_IN_MESSAGE} more)" if len(ids) > MAX_IDS_IN_MESSAGE else "")


def _redact(message: str, matcher: A.TraceMatcher | None) -> str:
    """``message`` unless it names a deleted id or pair (a tool's error quoting data): then a stub."""
    if matcher is not None and any(matcher.scan_text(message)):
        return "(message withheld: it quoted deleted data)"
    return message


def _unique(requests: Iterable[DeletionRequest]) -> list[DeletionRequest]:
    seen: dict[str, DeletionRequest] = {}
    for r in requests:
        seen.setdefault(r.request_id, r)
    return list(seen.values())


def _datasets(repo: Path) -> list[str]:
    root = repo / DATA_DIR
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and p.name != "deletions" and not p.name.startswith(".")
    )


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _champion(name: str, uri: str) -> tuple[str | None, str | None]:
    """(version, run id) of the champion of ``name``; (None, None) when there is none."""
    from tru.mlops.registry import CHAMPION

    client = _client(uri)
    try:
        model = client.get_registered_model(name)
    except Exception:
        return None, None
    version = (model.aliases or {}).get(CHAMPION)
    if version is None:
        return None, None
    mv = client.get_model_version(name, str(version))
    return str(version), mv.run_id


# ------------------------------------------------------------------------------------- data version
def _row_mask(df: Any, requests: Sequence[DeletionRequest]) -> np.ndarray:
    """Rows of an ``.inter`` frame the requests delete (module docstring, step 1)."""
    import pandas as pd

    users = pd.to_numeric(df["userID"], errors="coerce").fillna(-1).astype(np.int64).to_numpy()
    items = pd.to_numeric(df["itemID"], errors="coerce").fillna(-1).astype(np.int64).to_numpy()
    return A.TraceMatcher(requests).row_mask(users, items)


def _edit_stats(text: str, counts: dict[str, int]) -> str:
    """``dataset.yaml`` with only the ``stats`` counts replaced, byte for byte elsewhere (a block-style
    ``stats:`` mapping is edited in place; anything else is re-dumped with the same content)."""
    raw = yaml.safe_load(text) or {}
    stats = raw.get("stats")
    if not isinstance(stats, dict):
        return text
    todo = {k: v for k, v in counts.items() if k in stats}
    if not todo:
        return text
    lines = text.splitlines(keepends=True)
    inside, out = False, []
    for line in lines:
        stripped = line.strip()
        if line[:1] not in (" ", "\t") and stripped:
            inside = stripped.startswith("stats:") and stripped == "stats:"
        elif inside and ":" in stripped:
            key = stripped.split(":", 1)[0].strip()
            if key in todo:
                indent = line[: len(line) - len(line.lstrip())]
                line = f"{indent}{key}: {todo[key]}" + ("\n" if line.endswith("\n") else "")
        out.append(line)
    edited = "".join(out)
    want = {**raw, "stats": {**stats, **todo}}
    if yaml.safe_load(edited) == want:
        return edited
    return yaml.safe_dump(want, sort_keys=False)


def _plan_data(
    repo: Path, dataset: str, requests: Sequence[DeletionRequest]
) -> tuple[dict[str, bytes], dict[str, int]]:
    """New contents of the ``.inter`` file and ``dataset.yaml`` (path → bytes) and rows removed per split."""
    folder = repo / DATA_DIR / dataset
    manifest_path = folder / "dataset.yaml"
    if not manifest_path.is_file():
        raise ErasureError(f"{manifest_path}: no dataset manifest; expected data/{dataset}/dataset.yaml")
    text = manifest_path.read_text()
    raw = yaml.safe_load(text) or {}
    inter = folder / str(raw.get("interactions") or f"{dataset}.inter")
    df = read_inter(inter)
    for col in ("userID", "itemID", "x_label"):
        if col not in df.columns:
            raise DataError(f"{inter}: no column {col!r}; expected an MMRec .inter file")
    mask = _row_mask(df, requests)
    labels = df["x_label"].astype(str).str.strip()
    removed = {
        split: int((mask & (labels == code)).sum())
        for split, code in (("train", "0"), ("valid", "1"), ("test", "2"))
    }
    keep = df[~mask]
    kept_labels = labels[~mask]
    payload = keep.to_csv(sep="\t", index=False, lineterminator="\n").encode()
    counts = {
        "n_interactions": len(keep),
        "n_train": int((kept_labels == "0").sum()),
        "n_valid": int((kept_labels == "1").sum()),
        "n_test": int((kept_labels == "2").sum()),
    }
    return {str(inter): payload, str(manifest_path): _edit_stats(text, counts).encode()}, removed


def _check_data_clean(repo: Path) -> None:
    """data/ matches the work tree's data.dvc, and data.dvc is committed."""
    with A.dvc_repo(repo) as r:
        changes = r.status(targets=[str(repo / DVC_FILE)])
    if changes:
        raise ErasureError(
            f"{repo}/data differs from {DVC_FILE}; run `dvc pull` (missing data) or `dvc add data` and "
            "commit (your own edits) first; nothing was erased"
        )
    if subprocess.run(["git", "-C", str(repo), "diff", "--quiet", "HEAD", "--", DVC_FILE]).returncode:
        raise ErasureError(
            f"{repo}/{DVC_FILE} has uncommitted changes; commit them first; nothing was erased"
        )


def _data_step(
    repo: Path,
    dataset: str,
    requests: Sequence[DeletionRequest],
    pending: Sequence[DeletionRequest],
    report: ErasureReport,
    *,
    dry_run: bool,
    commit: bool,
    erased_at: str,
) -> StepOutcome:
    files, removed = _plan_data(repo, dataset, requests)
    report.rows_removed = removed
    report.commitment = commit_requests(requests)
    counts = {"requests": len(requests), **{f"rows_{k}": v for k, v in removed.items()}}
    ids = [r.request_id for r in requests]
    if dry_run:
        return StepOutcome(
            "data", "would-do", f"would remove the rows of {len(ids)} request(s) and commit", counts
        )
    manifest, ledger = repo / REQUESTS_PATH, repo / ERASED_PATH
    touched = [Path(p) for p in files] + [manifest, ledger, repo / DVC_FILE, repo / ".gitignore"]
    saved = {p: (p.read_bytes() if p.is_file() else None) for p in touched}
    try:
        for path, payload in files.items():
            write_atomic(Path(path), payload)
        write_requests(manifest, list(pending))
        append_erased(ledger, [ErasedRequest.from_request(r, erased_at) for r in requests])
        with A.dvc_repo(repo) as r:
            r.add(str(repo / DATA_DIR))
        if commit:
            paths = [DVC_FILE] + ([".gitignore"] if (repo / ".gitignore").is_file() else [])
            git(repo, "add", *paths)
            msg = (
                f"erase {len(ids)} deletion request(s): {_ids_text(ids)}\n\nrows removed: "
                f"{removed['train']} train, {removed['valid']} valid, {removed['test']} test; "
                f"ledger: {ERASED_PATH}"
            )
            git(repo, "commit", "-q", "-m", msg, "--", *paths)
    except BaseException:
        for p, old in saved.items():
            if old is None:
                p.unlink(missing_ok=True)
            else:
                write_atomic(p, old)
        subprocess.run(
            ["git", "-C", str(repo), "reset", "-q", "--", DVC_FILE, ".gitignore"], capture_output=True
        )
        raise
    if commit:
        report.data_commit = git(repo, "rev-parse", "HEAD").strip()
        return StepOutcome("data", "done", f"data version committed as {report.data_commit[:12]}", counts)
    return StepOutcome(
        "data",
        "done",
        f"data version written (dvc add); commit {DVC_FILE} and re-run tru erase to collect",
        counts,
    )


def _push_step(repo: Path, remote: A.DvcRemote | None, dry_run: bool) -> StepOutcome:
    if remote is None:
        return StepOutcome("push", "skipped", "no default DVC remote")
    if dry_run:
        return StepOutcome("push", "would-do", f"would dvc push to '{remote.name}'")
    with A.dvc_repo(repo) as r:
        n = int(r.push(targets=[str(repo / DVC_FILE)], remote=remote.name) or 0)
    return StepOutcome(
        "push", "done" if n else "nothing-to-do", f"pushed {n} object(s) to '{remote.name}'", {"pushed": n}
    )


# ----------------------------------------------------------------------------------------------- gc
@dataclass
class GcPlan:
    """The exact DVC objects to delete (module docstring, step 3) and what history still names."""

    cache: dict[str, Path] = field(default_factory=dict)  # md5 → cache path to delete
    remote: dict[str, list[A.S3Version]] = field(default_factory=dict)  # md5 → remote versions to delete
    manifests: set[str] = field(default_factory=set)  # tainted manifests: deleted after the other objects
    dirs: set[str] = field(default_factory=set)
    retained: set[str] = field(default_factory=set)  # hold deleted rows but a kept revision needs them
    history: list[str] = field(default_factory=list)
    held_versions: set[str] = field(default_factory=set)  # data versions (dir md5) that held deleted rows
    clean_versions: set[str] = field(default_factory=set)
    checked: int = 0


def _dvc_md5s(repo: Path, shas: Sequence[str]) -> dict[str, str]:
    """sha → the md5 data.dvc names at that commit (commits without data.dvc left out)."""
    prefix = git(repo, "rev-parse", "--show-prefix").strip()
    if not shas:
        return {}
    out = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "--batch"],
        input="".join(f"{s}:{prefix}{DVC_FILE}\n" for s in shas).encode(),
        capture_output=True,
    ).stdout
    result: dict[str, str] = {}
    pos = 0
    for sha in shas:
        nl = out.index(b"\n", pos)
        parts = out[pos:nl].decode().split()
        pos = nl + 1
        if len(parts) != 3 or not parts[2].isdigit():  # "<name> missing": no body follows
            continue
        size = int(parts[2])
        body = out[pos : pos + size]
        pos += size + 1
        if parts[1] != "blob":
            continue
        try:
            outs = (yaml.safe_load(body) or {}).get("outs") or []
        except yaml.YAMLError:
            continue
        if len(outs) == 1 and outs[0].get("md5"):
            result[sha] = str(outs[0]["md5"])
    return result


def _is_manifest(data: bytes | None, rel: str) -> bool:
    if rel:
        return rel.startswith("deletions/") or "/deletions/" in rel
    return bool(data) and data.lstrip(b"\xef\xbb\xbf").startswith(b"request_id,")


def _plan_gc(
    repo: Path,
    matcher: A.TraceMatcher,
    remote: A.DvcRemote | None,
    keep_shas: Sequence[str],
    *,
    simulate_new_version: bool,
) -> GcPlan:
    """Which objects hold deleted rows and are referenced by no kept revision (module docstring, step 3).

    ``simulate_new_version`` (a dry run before the data step): HEAD's objects that hold deleted rows are
    not protected, as the new version will not reference them."""
    revs = sorted(set(git(repo, "rev-list", "--all", "--reflog").split()) | {resolve_rev(repo, "HEAD")})
    md5_at = _dvc_md5s(repo, revs)
    cache_dir = A.dvc_cache_dir(repo)
    cache = A.cache_objects(cache_dir)
    remote_objs = A.remote_objects(remote) if remote is not None else {}
    head = resolve_rev(repo, "HEAD")
    work = yaml.safe_load((repo / DVC_FILE).read_text()) if (repo / DVC_FILE).is_file() else {}
    work_md5 = str(((work or {}).get("outs") or [{}])[0].get("md5") or "")

    def stored(oid: str) -> bool:
        return oid in cache or any(not v.is_marker for v in remote_objs.get(oid, []))

    def read(oid: str) -> bytes | None:
        if oid in cache:
            return A.read_local(cache[oid])
        for v in remote_objs.get(oid, []):
            if not v.is_marker and remote is not None:
                data = A.read_remote(remote, v)
                if data is not None:
                    return data
        return None

    listings: dict[str, list[dict[str, str]] | None] = {}
    for oid in {
        *md5_at.values(),
        *(o for o in cache if o.endswith(".dir")),
        *(o for o in remote_objs if o.endswith(".dir")),
    }:
        if oid.endswith(".dir"):
            data = read(oid)
            listings[oid] = A.read_dir_listing(data) if data is not None else None

    def refs(top: str) -> set[str]:
        if not top.endswith(".dir"):
            return {top}
        return {top} | {e["md5"] for e in listings.get(top) or []}

    protected_tops = {md5_at[s] for s in keep_shas if s in md5_at}
    if not simulate_new_version:
        protected_tops |= {x for x in (md5_at.get(head), work_md5) if x}
    keep: set[str] = set().union(*(refs(t) for t in protected_tops)) if protected_tops else set()
    names = A.relpaths_from_listings(x for x in listings.values() if x)
    plan = GcPlan()
    candidates = {
        *cache,
        *remote_objs,
        *(e for lst in listings.values() if lst for e in (x["md5"] for x in lst)),
    }
    candidates = {o for o in candidates if not o.endswith(".dir")}
    tainted: set[str] = set()
    missing: set[str] = set()
    if matcher.empty and not matcher.hashes:
        candidates = set()  # nothing to look for: only the stored / collected state of each version matters
    for oid in sorted(candidates):
        rel = names.get(oid, "")
        if rel.lower().endswith(A.SKIP_SUFFIXES):
            continue
        if oid in keep and not (rel.endswith(".inter") or _is_manifest(None, rel)):
            continue  # a kept dataset file that cannot hold rows (yaml): no need to read it
        data = read(oid)
        if data is None:
            if not stored(oid):
                missing.add(oid)
            continue
        plan.checked += 1
        hits, _ = matcher.scan_bytes(data, rel)
        if hits:
            tainted.add(oid)
            if _is_manifest(data, rel):
                plan.manifests.add(oid)
    plan.retained = tainted & keep
    for oid in tainted - keep:
        if oid in cache:
            plan.cache[oid] = cache[oid]
        if remote_objs.get(oid):
            plan.remote[oid] = remote_objs[oid]
    gone_like = {
        o for o in missing if names.get(o, "").endswith(".inter") or _is_manifest(None, names.get(o, ""))
    }
    for top, lst in listings.items():
        if top in protected_tops or lst is None:
            continue
        listed = {e["md5"] for e in lst}
        if listed & ((tainted - keep) | gone_like):
            plan.dirs.add(top)
            if top in cache:
                plan.cache[top] = cache[top]
            if remote_objs.get(top):
                plan.remote[top] = remote_objs[top]
    bad_refs = tainted | gone_like
    for sha, top in sorted(md5_at.items()):
        lst = listings.get(top) if top.endswith(".dir") else [{"md5": top, "relpath": ""}]
        listed = {e["md5"] for e in lst} if lst else set()
        gone = not stored(top)
        holds = gone or lst is None or top in plan.dirs or bool(listed & bad_refs)
        (plan.held_versions if holds else plan.clean_versions).add(top)
        if top in plan.dirs or (gone and top not in protected_tops):
            plan.history.append(sha)
    order = {s: i for i, s in enumerate(git(repo, "rev-list", "--all", "--reflog", "--date-order").split())}
    plan.history.sort(key=lambda s: order.get(s, len(order)))
    return plan


def _gc_step(repo: Path, plan: GcPlan, remote: A.DvcRemote | None, dry_run: bool) -> StepOutcome:
    n_versions = sum(len(v) for v in plan.remote.values())
    counts = {
        "objects_checked": plan.checked,
        "cache_objects": len(plan.cache),
        "remote_objects": len(plan.remote),
        "remote_versions": n_versions,
        "dir_listings": len(plan.dirs),
        "retained_by_kept_revisions": len(plan.retained),
        "history_commits": len(plan.history),
    }
    # the stores, not the objects: an md5 of a small old manifest could be matched by enumeration
    locations = sorted({str(p.parent.parent) for p in plan.cache.values()})
    if plan.remote and remote is not None:
        locations.append(remote.url)
    note = (
        f"; {len(plan.retained)} object(s) holding deleted rows kept because a kept revision references them"
        if plan.retained
        else ""
    )
    if not plan.cache and not plan.remote:
        return StepOutcome("dvc-gc", "nothing-to-do", "no DVC object holds deleted rows" + note, counts)
    if dry_run:
        return StepOutcome(
            "dvc-gc",
            "would-do",
            f"would delete {len(plan.cache)} cache object(s) and {n_versions} remote object version(s)"
            + note,
            counts,
            locations,
        )

    # order: data objects, then manifests (they name the requests a re-run needs), then .dir listings
    def rank(oid: str) -> int:
        return 2 if oid in plan.dirs else 1 if oid in plan.manifests else 0

    for oid in sorted({*plan.cache, *plan.remote}, key=rank):
        path = plan.cache.get(oid)
        if path is not None:
            path.unlink(missing_ok=True)
        versions = plan.remote.get(oid) or []
        if versions and remote is not None:
            if remote.client is not None:
                A.delete_versions(remote.client, versions)
            else:
                for v in versions:
                    Path(v.key).unlink(missing_ok=True)
    LOG.info("erase: deleted %d cache object(s), %d remote object version(s)", len(plan.cache), n_versions)
    return StepOutcome(
        "dvc-gc",
        "done",
        f"deleted {len(plan.cache)} cache object(s) and {n_versions} remote object version(s)" + note,
        counts,
        locations,
    )


# --------------------------------------------------------------------------------- pipeline outputs
def _entries(root: Path) -> list[Path]:
    """Run entries of a local root: its children, with ``outputs/`` (kfp.local) expanded one level."""
    if not root.is_dir():
        return []
    out = []
    for child in sorted(root.iterdir()):
        if child.name == "outputs" and child.is_dir():
            out += sorted(child.iterdir())
        elif child.name not in (".gitignore",):
            out.append(child)
    return out


def _newest_mtime(path: Path) -> float:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_mtime
    times = [p.lstat().st_mtime for p in path.rglob("*")]
    return max(times, default=path.lstat().st_mtime)


def _holds_trace(path: Path, matcher: A.TraceMatcher) -> bool:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for p in files:
        if p.name.lower().endswith(A.SKIP_SUFFIXES) or p.stat().st_size > A.MAX_BYTES:
            continue
        hits, _ = matcher.scan_bytes(p.read_bytes(), p.name)
        if hits:
            return True
    return False


def _pipeline_step(
    repo: Path, roots: Sequence[str], cutoff: float | None, matcher: A.TraceMatcher, dry_run: bool
) -> StepOutcome:
    if cutoff is None:
        return StepOutcome("pipeline-outputs", "nothing-to-do", "nothing erased yet")
    local_roots = [repo / ".tru" / "kfp", repo / ".tru" / "runs"]
    local_roots += [Path(r).expanduser().resolve() for r in roots if not str(r).startswith("s3://")]
    s3_roots = [str(r) for r in roots if str(r).startswith("s3://")]
    doomed: list[Path] = []
    for root in dict.fromkeys(local_roots):
        for entry in _entries(root):
            if _newest_mtime(entry) <= cutoff + MTIME_SLACK_S or _holds_trace(entry, matcher):
                doomed.append(entry)
    doomed_s3: list[A.S3Version] = []
    client = A.s3_client() if s3_roots else None
    for uri in s3_roots:
        bucket, prefix = A.parse_s3(uri)
        for v in A.list_versions(client, bucket, prefix):
            if v.last_modified <= cutoff + MTIME_SLACK_S:
                doomed_s3.append(v)
            elif not v.is_marker:
                data = A.read_version(client, v)
                if data is not None and matcher.scan_bytes(data, v.key)[0]:
                    doomed_s3.append(v)
    counts = {"local_entries": len(doomed), "s3_versions": len(doomed_s3)}
    locations = [str(p) for p in doomed] + [v.location for v in doomed_s3]
    if not doomed and not doomed_s3:
        return StepOutcome(
            "pipeline-outputs", "nothing-to-do", "no run output predates the erasure or holds a trace", counts
        )
    if dry_run:
        return StepOutcome(
            "pipeline-outputs", "would-do", f"would delete {len(locations)} run output(s)", counts, locations
        )
    for p in doomed:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    if doomed_s3:
        A.delete_versions(client, doomed_s3)
    LOG.info("erase: deleted %d local run output(s), %d S3 object version(s)", len(doomed), len(doomed_s3))
    return StepOutcome(
        "pipeline-outputs", "done", f"deleted {len(locations)} run output(s)", counts, locations
    )


# ------------------------------------------------------------------------------------------- mlflow
def _artifact_s3_prefix(artifact_uri: str, destination: str | None) -> str | None:
    """The ``s3://`` prefix holding a run's artifacts: the URI itself, or a proxied ``mlflow-artifacts:``
    URI mapped onto the server's ``--artifacts-destination``."""
    if artifact_uri.startswith("s3://"):
        return artifact_uri.rstrip("/")
    if artifact_uri.startswith("mlflow-artifacts:") and destination and destination.startswith("s3://"):
        path = artifact_uri.removeprefix("mlflow-artifacts:")
        if path.startswith("//"):
            path = "/" + path[2:].split("/", 1)[1] if "/" in path[2:] else "/"
        return destination.rstrip("/") + "/" + path.strip("/")
    return None


def _hard_delete_runs(
    run_ids: Sequence[str], tracking_uri: str, backend_store_uri: str, destination: str | None
) -> list[str]:
    """Permanently remove soft-deleted runs and their artifacts, as ``mlflow gc --run-ids`` does (the
    artifact repository's ``delete_artifacts``, through the server for proxied stores, then the backend
    store's hard delete), for these runs only; then every S3 object version under their artifact prefix."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.tracking import _get_store

    store = _get_store(backend_store_uri)
    if not hasattr(store, "_hard_delete_run"):
        raise ErasureError(f"MLflow backend store {backend_store_uri}: it cannot hard-delete runs")
    done = []
    for rid in run_ids:
        run = store.get_run(rid)
        if run.info.lifecycle_stage != "deleted":
            raise ErasureError(f"run {rid}: not in the deleted stage; refusing to remove it permanently")
        uri = run.info.artifact_uri
        get_artifact_repository(uri, tracking_uri=tracking_uri).delete_artifacts()
        prefix = _artifact_s3_prefix(uri, destination)
        if prefix:
            client = A.s3_client()
            bucket, key = A.parse_s3(prefix)
            A.delete_versions(client, A.list_versions(client, bucket, key))
        store._hard_delete_run(rid)
        done.append(rid)
    return done


def _mlflow_step(
    name: str,
    dataset: str | None,
    champion_run: str | None,
    plan: GcPlan | None,
    *,
    tracking_uri: str,
    backend_store_uri: str | None,
    destination: str | None,
    dry_run: bool,
) -> StepOutcome:
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    from tru.mlops.registry import CANDIDATE

    client = _client(tracking_uri)
    targets: dict[str, str] = {}
    to_tag: list[Any] = []
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        versions = []
    champion_runs = {champion_run} if champion_run else set()
    model_runs = {v.run_id for v in versions}
    for v in versions:
        t = v.tags or {}
        if t.get("contains_deleted_data") != "true" or v.run_id in champion_runs:
            continue
        if t.get("purged_by") != "tru erase":
            to_tag.append(v)
        targets.setdefault(v.run_id, f"version {v.version} (contains_deleted_data)")
    held = plan.held_versions if plan else set()
    clean = plan.clean_versions if plan else set()
    exps: list[str] = []
    token = None
    while True:
        page = client.search_experiments(view_type=ViewType.ALL, page_token=token)
        exps += [e.experiment_id for e in page]
        token = page.token
        if not token:
            break
    for start in range(0, len(exps), 100):
        token = None
        while True:
            page = client.search_runs(
                exps[start : start + 100], "tags.kind = 'train'", run_view_type=ViewType.ALL, page_token=token
            )
            for run in page:
                rid, tags = run.info.run_id, run.data.tags
                if rid in champion_runs:
                    continue
                md5 = tags.get("data_version.dvc_md5")
                ds = tags.get("dataset")
                if md5 and md5 in held:
                    targets.setdefault(rid, "train run on a data version that held the deleted rows")
                elif md5 and md5 in clean:
                    continue
                elif ds == dataset or rid in model_runs:  # ours, data version unknown: not kept
                    targets.setdefault(rid, "train run of this dataset on an unknown data version")
            token = page.token
            if not token:
                break
    existing: list[str] = []
    for rid in targets:
        try:
            client.get_run(rid)
            existing.append(rid)
        except MlflowException:
            pass  # already removed permanently
    counts = {"runs": len(existing), "versions_to_tag": len(to_tag)}
    locations = [f"mlflow:run/{rid} ({targets[rid]})" for rid in existing]
    if not existing and not to_tag:
        return StepOutcome("mlflow", "nothing-to-do", "no MLflow run holds deleted data", counts)
    if dry_run:
        return StepOutcome(
            "mlflow",
            "would-do",
            f"would purge {len(existing)} run(s) and tag {len(to_tag)} version(s)",
            counts,
            locations,
        )
    for rid in existing:
        if client.get_run(rid).info.lifecycle_stage != "deleted":
            client.delete_run(rid)  # soft delete first: what mlflow gc requires
    backend = backend_store_uri or os.environ.get("MLFLOW_BACKEND_STORE_URI")
    if not backend and not tracking_uri.startswith(("http://", "https://")):
        backend = tracking_uri
    if existing and not backend:
        return StepOutcome(
            "mlflow",
            "failed",
            f"soft-deleted {len(existing)} run(s); removing them permanently needs the tracking server's "
            "backend store: re-run with --backend-store-uri (the URI given to `mlflow server`)",
            counts,
            locations,
        )
    purged = _hard_delete_runs(existing, tracking_uri, backend, destination) if existing else []
    now = _now()
    aliases: dict[str, str] = {}
    with contextlib.suppress(MlflowException):
        aliases = {k: str(v) for k, v in (client.get_registered_model(name).aliases or {}).items()}
    for v in to_tag:
        client.set_model_version_tag(name, v.version, "purged", "true")
        client.set_model_version_tag(name, v.version, "purged_at", now)
        client.set_model_version_tag(name, v.version, "purged_by", "tru erase")
        if aliases.get(CANDIDATE) == str(v.version):
            client.delete_registered_model_alias(name, CANDIDATE)
    LOG.info("erase: purged %d MLflow run(s), tagged %d version(s)", len(purged), len(to_tag))
    return StepOutcome(
        "mlflow",
        "done",
        f"purged {len(purged)} run(s) with their artifacts; tagged {len(to_tag)} version(s) purged",
        counts,
        locations,
    )


# -------------------------------------------------------------------------------------------- erase
def _manifest_rows(text: str) -> Iterable[DeletionRequest]:
    """Rows of an old manifest object, leniently and in memory (a commitment check follows: a row read
    wrongly never matches)."""
    for cells in csv.reader(io.StringIO(text, newline="")):
        if len(cells) != 6 or cells[0].strip() == "request_id":
            continue
        rid, kind, u, i, ts, reason = (c.strip() for c in cells)
        user = int(u) if u.isdigit() else None
        item = int(i) if i.isdigit() else None
        yield DeletionRequest(rid, kind, user, item, ts, reason)


def _recover_requests(
    repo: Path, ledger: Sequence[ErasedRequest], known: Sequence[DeletionRequest], remote: A.DvcRemote | None
) -> list[DeletionRequest]:
    """Raw rows of ledger requests not in ``known``, from any manifest version still in the cache or the
    remote, each verified against its ledger commitment. Found only while an earlier collection is
    incomplete (a re-run after a failure): their objects still hold rows and must go now."""
    known_ids = {k.request_id for k in known}
    need = {r.request_id: r for r in ledger if r.request_id not in known_ids}
    found: dict[str, DeletionRequest] = {}

    def take(data: bytes) -> None:
        if not data.lstrip(b"\xef\xbb\xbf").startswith(b"request_id,"):
            return
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            return
        for req in _manifest_rows(text):
            row = need.get(req.request_id)
            if row is not None and req.request_id not in found and row.matches(req):
                found[req.request_id] = req

    if not need:
        return []
    cache = A.cache_objects(A.dvc_cache_dir(repo))
    for oid, path in cache.items():
        if not oid.endswith(".dir") and path.stat().st_size <= MANIFEST_MAX_BYTES:
            with path.open("rb") as fh:
                if fh.read(16).lstrip(b"\xef\xbb\xbf").startswith(b"request_id,"):
                    take(path.read_bytes())
    if remote is not None and len(found) < len(need):
        for oid, versions in A.remote_objects(remote).items():
            if oid.endswith(".dir") or oid in cache:  # content-addressed: the cache copy was read
                continue
            for v in versions:
                if not v.is_marker and v.size <= MANIFEST_MAX_BYTES:
                    data = A.read_remote(remote, v)
                    if data:
                        take(data)
    return list(found.values())


def erase(
    repo: Path | str,
    name: str,
    *,
    dataset: str | None = None,
    tracking_uri: str | None = None,
    backend_store_uri: str | None = None,
    mlflow_artifacts_destination: str | None = None,
    pipeline_roots: Sequence[str] = (),
    keep_revisions: Sequence[str] = (),
    dry_run: bool = False,
    commit: bool = True,
) -> ErasureReport:
    """Erase the requests the champion of ``name`` has forgotten from every store (module docstring) and
    return the :class:`ErasureReport`; ``dry_run`` changes nothing and reports what would go.

    ``tracking_uri``: the MLflow store (default ``$MLFLOW_TRACKING_URI``); ``backend_store_uri``: the
    server's backend store when ``tracking_uri`` is an HTTP server (needed to remove runs permanently);
    ``mlflow_artifacts_destination``: the server's ``--artifacts-destination`` (``s3://``: old object
    versions of purged runs are deleted too). ``keep_revisions``: revisions whose DVC objects must stay
    (retention), besides ``HEAD``. ``commit=False``: write and ``dvc add`` the new data version but leave
    the git commit to the caller (collection then waits for a run after that commit)."""
    from tru.mlops import registry, tracking

    repo = check_repo(repo)
    uri = tracking.configure(tracking_uri)
    names = _datasets(repo)
    if dataset is None:
        if len(names) != 1:
            raise ErasureError(
                f"{repo}/data: {len(names)} datasets ({', '.join(names) or 'none'}); name one with --dataset"
            )
        dataset = names[0]
    elif dataset not in names:
        raise ErasureError(f"{repo}/data/{dataset}: no such dataset; datasets: {', '.join(names) or 'none'}")
    report = ErasureReport(str(repo), name, dataset, dry_run)
    keep_shas = [resolve_rev(repo, r) for r in keep_revisions]
    forgotten = registry.forgotten_requests(name)
    report.champion, champion_run = _champion(name, uri)
    manifest_path, ledger_path = repo / REQUESTS_PATH, repo / ERASED_PATH
    manifest = read_requests(manifest_path) if manifest_path.is_file() else []
    ledger = read_erased(ledger_path) if ledger_path.is_file() else []
    ledger_ids = {r.request_id for r in ledger}
    to_erase = _unique(r for r in manifest if r.request_id in forgotten)
    pending = [r for r in manifest if r.request_id not in forgotten]
    report.erased = [r.request_id for r in to_erase]
    report.pending = list(dict.fromkeys(r.request_id for r in pending))
    report.already_erased = sorted(ledger_ids - set(report.erased))
    LOG.info(
        "erase: %s: champion %s; %d request(s) to erase, %d pending (not forgotten), %d already erased",
        name,
        report.champion,
        len(to_erase),
        len(report.pending),
        len(report.already_erased),
    )

    remote = A.dvc_default_remote(repo)
    n_items, frames = A.dataset_frames(repo / DATA_DIR)  # before the rewrite: D_f hashes need the rows
    if to_erase:
        _check_data_clean(repo)
    erased_at = _now()
    matcher: A.TraceMatcher | None = None
    try:
        recovered = _recover_requests(repo, ledger, to_erase, remote) if ledger else []
        matcher_requests = [*to_erase, *recovered]
        matcher = A.TraceMatcher(matcher_requests, A.hash_candidates(matcher_requests, n_items, frames))
    except Exception as exc:
        report.steps.append(
            StepOutcome("plan", "failed", f"cannot read the DVC stores: {type(exc).__name__}: {exc}")
        )
        return report

    def run(step: str, fn: Any) -> StepOutcome | None:
        LOG.info("erase: step %s%s", step, " (dry run)" if dry_run else "")
        try:
            outcome = fn()
        except Exception as exc:
            outcome = StepOutcome(step, "failed", _redact(f"{type(exc).__name__}: {exc}", matcher))
        report.steps.append(outcome)
        LOG.info("erase: %s: %s: %s", step, outcome.status, outcome.message)
        return outcome

    if to_erase:
        data = run(
            "data",
            lambda: _data_step(
                repo, dataset, to_erase, pending, report, dry_run=dry_run, commit=commit, erased_at=erased_at
            ),
        )
        if data is None or data.status == "failed":
            return report
    else:
        report.steps.append(StepOutcome("data", "nothing-to-do", "no forgotten request left in the manifest"))
    run("push", lambda: _push_step(repo, remote, dry_run))

    plan: GcPlan | None = None
    committed = not subprocess.run(
        ["git", "-C", str(repo), "diff", "--quiet", "HEAD", "--", DVC_FILE]
    ).returncode
    if not committed and not dry_run:
        report.steps.append(
            StepOutcome(
                "dvc-gc",
                "skipped",
                f"{DVC_FILE} is not committed: commit it, then re-run tru erase to collect",
            )
        )
    else:
        try:
            plan = _plan_gc(repo, matcher, remote, keep_shas, simulate_new_version=dry_run and bool(to_erase))
        except Exception as exc:
            msg = _redact(f"planning: {type(exc).__name__}: {exc}", matcher)
            report.steps.append(StepOutcome("dvc-gc", "failed", msg))
        else:
            report.history_commits = plan.history
            gc_plan = plan
            run("dvc-gc", lambda: _gc_step(repo, gc_plan, remote, dry_run))

    times = [parse_timestamp(r.erased_at).timestamp() for r in ledger]
    if to_erase:
        times.append(parse_timestamp(erased_at).timestamp())
    cutoff = max(times) if times else None
    run("pipeline-outputs", lambda: _pipeline_step(repo, pipeline_roots, cutoff, matcher, dry_run))
    if plan is None:  # which data versions held the rows is unknown: purge nothing rather than guess
        report.steps.append(
            StepOutcome("mlflow", "skipped", "waits for the DVC collection step (see dvc-gc)")
        )
    else:
        gc_plan = plan
        run(
            "mlflow",
            lambda: _mlflow_step(
                name,
                dataset,
                champion_run,
                gc_plan,
                tracking_uri=uri,
                backend_store_uri=backend_store_uri,
                destination=mlflow_artifacts_destination,
                dry_run=dry_run,
            ),
        )
    return report
