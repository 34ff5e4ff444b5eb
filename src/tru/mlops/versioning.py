"""Data versioning with DVC: ``data/`` (the datasets and the deletion-request manifest) is tracked through
``data.dvc``; a deletion request is a DVC commit, and :func:`tru.mlops.trigger.trigger` runs the unlearning
pipeline for the requests a commit added, once per revision.

Definitions (``R(rev)`` is the manifest at ``rev``, read through ``dvc.api``, i.e. the git tree of ``rev``
plus the DVC cache or remote):

    data version(rev)       = (git commit of rev, md5 of data.dvc's single output)
    new(rev_from, rev_to)   = {r ∈ R(rev_to) : r.request_id ∉ ids(R(rev_from))},  in manifest order
    trigger(rev_from, rev_to) runs the pipeline on new(rev_from, rev_to) \\ processed   unless commit(rev_to)
                            is in the ledger ``.tru/processed.json``, which it then records.

Credentials never enter git: :func:`configure_remote` writes them with ``dvc remote modify --local``
(``.dvc/config.local``); the environment (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``) works too.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from tru.data.dataset import DataError, write_atomic
from tru.forget.requests import DeletionRequest, append_requests, check_request, parse_requests
from tru.utils import LOG

REQUESTS_PATH = "data/deletions/requests.csv"
DATA_DIR = "data"
DVC_FILE = "data.dvc"


class VersioningError(ValueError):
    """A versioning step that cannot proceed (no repository, unknown revision, DVC failure); nothing was
    changed. A ValueError, so the CLI prints ``error: <message>`` and exits 2."""


# ------------------------------------------------------------------------------------------- plumbing
def git(repo: Path, *args: str) -> str:
    """``git -C repo <args>``'s output; a failure is a :class:`VersioningError` with git's message."""
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise VersioningError(
            f"{repo}: git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc.stdout


_URL = re.compile(r"^(https?|ssh|git|file)://|^[\w.-]+@[\w.-]+:")
GIT_TOKEN_ENV = "TRU_GIT_TOKEN"  # a Kubernetes secret on the cluster (the repository's read token)
GIT_USER_ENV = "TRU_GIT_USERNAME"
_CLONES: dict[str, Path] = {}


def is_url(repo: str | Path) -> bool:
    """``repo`` names a remote git repository (https, ssh, git, file URL or ``user@host:path``)."""
    return bool(_URL.match(str(repo)))


def is_repo_ref(repo: str | Path) -> bool:
    """``repo`` is a git + DVC repository: a URL (the cluster's form) or a local checkout with ``.dvc/``."""
    return bool(str(repo)) and (is_url(repo) or (Path(repo) / ".dvc").is_dir())


def _git_auth_env() -> tuple[list[str], dict[str, str]]:
    """Git options and environment that answer an https password prompt with ``$TRU_GIT_TOKEN``, through
    a credential helper reading the environment: the token never appears in a command line or a log."""
    token = os.environ.get(GIT_TOKEN_ENV, "")
    if not token:
        return [], {}
    helper = (
        '!f() { echo "username=${TRU_GIT_USERNAME:-x-access-token}"; echo "password=${TRU_GIT_TOKEN}"; }; f'
    )
    return ["-c", f"credential.helper={helper}"], {"GIT_TERMINAL_PROMPT": "0"}


def materialise(url: str) -> Path:
    """A local clone of the repository at ``url`` (once per process; later calls fetch), so every
    revision's ``data.dvc`` and manifest can be read; the data itself comes from the DVC remote named in
    the repository's ``.dvc/config`` at that revision (credentials from the environment)."""
    from tru.utils import redact_uri

    opts, extra = _git_auth_env()
    env = {**os.environ, **extra}
    if url in _CLONES and _CLONES[url].is_dir():
        subprocess.run(["git", *opts, "-C", str(_CLONES[url]), "fetch", "-q", "--all", "--tags"], env=env,
                       capture_output=True, text=True)  # fmt: skip
        return _CLONES[url]
    base = Path(tempfile.mkdtemp(prefix="tru-repo-"))
    dest = base / hashlib.sha256(url.encode()).hexdigest()[:12]
    proc = subprocess.run(
        ["git", *opts, "clone", "-q", url, str(dest)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        err = proc.stderr.replace(os.environ.get(GIT_TOKEN_ENV, "") or "\0", "***").strip()
        raise VersioningError(
            f"{redact_uri(url)}: git clone failed: {err}; check the URL and ${GIT_TOKEN_ENV}"
        )
    _CLONES[url] = dest
    return dest


def origin_url(repo: Path) -> str:
    """The URL of the checkout's ``origin`` remote (what a cluster run clones)."""
    url = (
        git(check_repo(repo), "remote", "get-url", "origin").strip() if (Path(repo) / ".git").exists() else ""
    )
    if not url:
        raise VersioningError(
            f"{repo}: no 'origin' remote; a cluster run needs the repository's URL: pass --repo-url"
        )
    return url


def check_repo(repo: Path | str) -> Path:
    """``repo`` as an absolute path, after checking it is a git work tree with DVC initialised; a URL is
    cloned first (:func:`materialise`)."""
    if is_url(repo):
        return check_repo(materialise(str(repo)))
    repo = Path(repo).expanduser().resolve()
    if not repo.is_dir():
        raise VersioningError(f"{repo}: no such folder; expected a git + DVC repository")
    if subprocess.run(["git", "-C", str(repo), "rev-parse", "--git-dir"], capture_output=True).returncode:
        raise VersioningError(f"{repo}: not a git repository; run `git init && dvc init` there first")
    if not (repo / ".dvc").is_dir():
        raise VersioningError(f"{repo}: not a DVC repository (no .dvc/ folder); run `dvc init` there first")
    return repo


def resolve_rev(repo: Path, rev: str) -> str:
    """The full commit sha of ``rev`` (a sha, branch, tag or ``HEAD~1``)."""
    for cand in (rev, f"origin/{rev}"):  # a clone knows other branches as origin/<branch>
        proc = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{cand}^{{commit}}"],
            capture_output=True,
            text=True,
        )
        if proc.returncode == 0 and proc.stdout.strip():
            break
    if proc.returncode != 0 or not proc.stdout.strip():
        raise VersioningError(
            f"{repo}: unknown revision {rev!r}; expected a commit, branch or tag of this repo"
        )
    return proc.stdout.strip()


@contextlib.contextmanager
def _dvc(repo: Path) -> Iterator[Any]:
    """An in-process ``dvc.repo.Repo`` (about 1 s faster per call than the CLI); its console hints go to
    the debug log, its errors become :class:`VersioningError`."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    buf, dvc_log = io.StringIO(), logging.getLogger("dvc")
    level = dvc_log.level
    dvc_log.setLevel(logging.WARNING)  # its "To track the changes with git, run: ..." hints
    try:
        with contextlib.redirect_stdout(buf), Repo(str(repo)) as r:
            yield r
    except DvcException as exc:
        raise VersioningError(f"{repo}: dvc failed: {exc}") from exc
    finally:
        dvc_log.setLevel(level)
        if buf.getvalue().strip():
            LOG.debug("dvc: %s", buf.getvalue().strip())


def default_remote(repo: Path) -> str | None:
    """The name of the default DVC remote (``core.remote``), or None when none is configured."""
    with _dvc(repo) as r:
        return r.config["core"].get("remote") or None


def configure_remote(
    repo: Path | str,
    url: str,
    *,
    name: str = "storage",
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> None:
    """Add (or update) the default remote ``name`` at ``url`` (e.g. ``s3://bucket/dvc``) with an optional
    S3 endpoint (MinIO, moto, Ceph). URL, endpoint and region go to ``.dvc/config`` (commit it before the
    data, so every revision can be read back from the remote); credentials only to ``.dvc/config.local``."""
    repo = check_repo(repo)
    with _dvc(repo) as r, r.config.edit("repo") as conf:
        conf["core"]["remote"] = name
        conf["remote"].setdefault(name, {})["url"] = url
        if endpoint_url:
            conf["remote"][name]["endpointurl"] = endpoint_url
        if region:
            conf["remote"][name]["region"] = region
    if access_key_id or secret_access_key:
        with _dvc(repo) as r, r.config.edit("local") as conf:
            sect = conf["remote"].setdefault(name, {})
            if access_key_id:
                sect["access_key_id"] = access_key_id
            if secret_access_key:
                sect["secret_access_key"] = secret_access_key


# -------------------------------------------------------------------------------------------- reading
def _dvc_file_at(repo: Path, sha: str) -> dict[str, Any]:
    prefix = git(repo, "rev-parse", "--show-prefix").strip()
    proc = subprocess.run(
        ["git", "-C", str(repo), "show", f"{sha}:{prefix}{DVC_FILE}"], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise VersioningError(
            f"{repo}: {DVC_FILE} is not in commit {sha[:12]}; data/ is not tracked by DVC "
            "at that revision (run `dvc add data` and commit data.dvc)"
        )
    return yaml.safe_load(proc.stdout) or {}


def _out_md5(meta: dict[str, Any], where: str) -> str:
    outs = meta.get("outs") or []
    if len(outs) != 1 or not outs[0].get("md5"):
        raise VersioningError(f"{where}: expected one output with an md5 (`dvc add data`), got {outs!r}")
    return str(outs[0]["md5"])


def data_version(repo: Path | str, rev: str | None = None) -> dict[str, Any]:
    """``{"git_commit", "dvc_md5", "rev", "dirty"}`` of ``rev``; ``rev=None`` is the work tree: HEAD's commit
    and the work tree's data.dvc, ``dirty`` when that differs from HEAD's (a request not yet committed)."""
    repo = check_repo(repo)
    sha = resolve_rev(repo, rev or "HEAD")
    md5 = _out_md5(_dvc_file_at(repo, sha), f"{DVC_FILE}@{sha[:12]}")
    if rev is not None:
        return {"git_commit": sha, "dvc_md5": md5, "rev": rev, "dirty": False}
    path = repo / DVC_FILE
    if not path.is_file():
        raise VersioningError(f"{path}: missing; data/ is not tracked by DVC (run `dvc add data`)")
    work = _out_md5(yaml.safe_load(path.read_text()) or {}, str(path))
    return {"git_commit": sha, "dvc_md5": work, "rev": "workspace", "dirty": work != md5}


def _fs(repo: Path, sha: str) -> Any:
    from dvc.api import DVCFileSystem

    try:
        return DVCFileSystem(str(repo), rev=sha)
    except Exception as exc:  # dvc raises many types here (SCM, config, remote)
        raise VersioningError(f"{repo}@{sha[:12]}: cannot open the DVC file system: {exc}") from exc


def read_requests_at(repo: Path | str, rev: str, path: str = REQUESTS_PATH) -> list[DeletionRequest]:
    """The manifest at ``rev`` (``dvc.api``: from the cache, else from the remote as configured at ``rev``),
    validated strictly; a revision without a manifest has no requests (empty list)."""
    repo = check_repo(repo)
    sha = resolve_rev(repo, rev)
    where = f"{path}@{sha[:12] if rev == sha else rev}"
    _dvc_file_at(repo, sha)
    fs = _fs(repo, sha)
    try:
        if not fs.exists(path):
            return []
        raw = fs.read_bytes(path)
    except Exception as exc:
        raise VersioningError(
            f"{where}: cannot read it through DVC ({type(exc).__name__}: {exc}); is the DVC remote "
            "reachable and its credentials set (`dvc remote modify --local` or AWS_* variables)?"
        ) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not UTF-8 text ({exc}); expected a UTF-8 CSV file") from exc
    return parse_requests(text, where)


def resolve_rev_ref(repo: Path | str, rev: str) -> str:
    """:func:`resolve_rev` for a local path or a URL (a branch or ``HEAD`` → the commit sha: what a
    scheduled run needs so that caching is keyed on the real data)."""
    root = check_repo(repo)
    if is_url(repo) and not re.fullmatch(r"[0-9a-f]{40}", rev):  # a clone: the remote's branch is the truth
        try:
            return resolve_rev(root, f"origin/{rev}")
        except VersioningError:
            pass
    return resolve_rev(root, rev)


def has_requests_at(repo: Path | str, rev: str, path: str = REQUESTS_PATH) -> bool:
    """Whether the manifest exists at ``rev``."""
    root = check_repo(repo)
    sha = resolve_rev(root, rev)
    _dvc_file_at(root, sha)
    try:
        return bool(_fs(root, sha).exists(path))
    except Exception as exc:
        raise VersioningError(f"{path}@{sha[:12]}: cannot check it through DVC: {exc}") from exc


def datasets_at(repo: Path | str, rev: str) -> list[str]:
    """The dataset folders under ``data/`` at ``rev`` (every folder but ``deletions``)."""
    repo = check_repo(repo)
    fs = _fs(repo, resolve_rev(repo, rev))
    return sorted(
        Path(p).name for p in fs.ls(DATA_DIR, detail=False) if fs.isdir(p) and Path(p).name != "deletions"
    )


def only_dataset_at(repo: Path | str, rev: str) -> str:
    """The name of the single dataset folder under ``data/`` at ``rev``; :class:`VersioningError` naming
    what is there when there are none or several."""
    names = datasets_at(repo, rev)
    if len(names) != 1:
        raise VersioningError(
            f"{repo}@{rev[:12]}: {len(names)} datasets under data/ ({', '.join(names) or 'none'}); "
            "name one with --dataset"
        )
    return names[0]


def open_dataset_at(repo: Path | str, rev: str, name: str, dest: Path | str) -> Path:
    """Materialise ``data/<name>/`` at ``rev`` as the folder ``dest`` (its files directly inside), through a
    temporary sibling and a rename: ``dest`` is complete or absent. Returns ``dest``."""
    repo, dest = check_repo(repo), Path(dest).expanduser().resolve()
    sha = resolve_rev(repo, rev)
    fs = _fs(repo, sha)
    src = f"{DATA_DIR}/{name}"
    if not fs.isdir(src):
        have = ", ".join(datasets_at(repo, sha)) or "none"
        raise VersioningError(f"{repo}@{rev}: no dataset {src}/; datasets at that revision: {have}")
    if dest.exists() and any(dest.iterdir()):
        raise VersioningError(f"{dest}: exists and is not empty; expected a new folder for data/{name}@{rev}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for p in fs.find(src):
            target = tmp / Path(p).relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(fs.read_bytes(p))
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def new_requests(repo: Path | str, rev_from: str, rev_to: str) -> list[DeletionRequest]:
    """Requests at ``rev_to`` whose id is not at ``rev_from`` (formula in the module docstring). A request
    whose content changed between the revisions is an error; one that disappeared is logged."""
    before = {r.request_id: r for r in read_requests_at(repo, rev_from)}
    after = read_requests_at(repo, rev_to)
    changed = [r.request_id for r in after if r.request_id in before and before[r.request_id] != r]
    if changed:
        raise DataError(
            f"{REQUESTS_PATH}: request(s) {', '.join(changed)} changed between {rev_from} and "
            f"{rev_to}; expected committed requests to stay as they are (file a new request id)"
        )
    gone = set(before) - {r.request_id for r in after}
    if gone:
        LOG.warning(
            "requests removed between %s and %s (data already forgotten stays forgotten): %s",
            rev_from,
            rev_to,
            ", ".join(sorted(gone)),
        )
    out: dict[str, DeletionRequest] = {}
    for r in after:
        if r.request_id not in before:
            out.setdefault(r.request_id, r)
    return list(out.values())


# ----------------------------------------------------------------------------------------------- writing
def make_request(
    *,
    user: int | None = None,
    item: int | None = None,
    pair: tuple[int, int] | None = None,
    reason: str,
    request_id: str | None = None,
    requested_at: str | None = None,
) -> DeletionRequest:
    """One request from exactly one of ``user`` / ``item`` / ``pair``; the id defaults to
    ``req-<UTC time>-<random>`` and the time to now (UTC)."""
    given = [k for k, v in (("user", user), ("item", item), ("pair", pair)) if v is not None]
    if len(given) != 1:
        raise VersioningError(f"give exactly one of user, item, pair (got {', '.join(given) or 'none'})")
    now = datetime.now(UTC).replace(microsecond=0)
    uid, iid = pair if pair is not None else (user, item)
    kind = "interaction" if pair is not None else given[0]
    req = DeletionRequest(
        request_id=request_id or f"req-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}",
        kind=kind,
        user_id=None if uid is None else int(uid),
        item_id=None if iid is None else int(iid),
        requested_at=requested_at or now.isoformat().replace("+00:00", "Z"),
        reason=reason,
    )
    errs = check_request(req)
    if errs:
        raise DataError("deletion request: " + "; ".join(errs))
    return req


def requests_add(
    repo: Path | str,
    *,
    user: int | None = None,
    item: int | None = None,
    pair: tuple[int, int] | None = None,
    reason: str,
    request_id: str | None = None,
    push: bool = True,
    dataset_dir: Path | str | None = None,
    commit: bool = False,
    requested_at: str | None = None,
) -> DeletionRequest:
    """Append one request to ``data/deletions/requests.csv`` and record it with DVC: ``dvc add data``, then
    ``dvc push`` when ``push`` and a default remote is configured, then (``commit=True``) a git commit of
    data.dvc. With ``dataset_dir`` the ids are checked against that dataset first (unknown ids, pairs not
    in train). Any failure removes this request's row again and restores data.dvc and .gitignore: nothing is
    left half-done. Concurrent calls run one after the other (:func:`requests_lock`), so a failing one
    never touches another's request."""
    repo = check_repo(repo)
    req = make_request(
        user=user, item=item, pair=pair, reason=reason, request_id=request_id, requested_at=requested_at
    )
    if dataset_dir is not None:
        from tru.data.dataset import load_dataset
        from tru.forget.requests import resolve_requests

        resolve_requests(load_dataset(Path(dataset_dir), validate=False), [req])
    with requests_lock(repo):
        return _requests_add_locked(repo, req, push=push, commit=commit)


@contextlib.contextmanager
def repo_lock(repo: Path, name: str) -> Iterator[None]:
    """An exclusive lock ``<repo>/.tru/<name>.lock`` (two writers run one after the other, across
    processes); ``.tru/`` ignores itself in git."""
    folder = repo / ".tru"
    folder.mkdir(exist_ok=True)
    if not (folder / ".gitignore").is_file():
        write_atomic(folder / ".gitignore", b"*\n")
    with open(folder / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def requests_lock(repo: Path) -> contextlib.AbstractContextManager[None]:
    """The manifest's lock: concurrent ``tru requests add`` run one after the other."""
    return repo_lock(repo, "requests")


def _remove_own_row(manifest: Path, req: DeletionRequest, existed: bool) -> None:
    """Drop the row this request appended (its exact CSV rendering, last occurrence) from the manifest,
    keeping every other byte: other requests are never touched."""
    if not manifest.is_file():
        return
    from tru.forget.requests import render_rows

    data, row = manifest.read_bytes(), render_rows([req])
    at = data.rfind(row)
    if at < 0:
        return
    rest = data[:at] + data[at + len(row) :]
    if not existed and rest.count(b"\n") <= 1:  # this request created the file: only its header is left
        manifest.unlink()
    else:
        write_atomic(manifest, rest)


def _requests_add_locked(repo: Path, req: DeletionRequest, *, push: bool, commit: bool) -> DeletionRequest:
    dvc_file = repo / DVC_FILE
    if dvc_file.is_file():
        with _dvc(repo) as r:
            changes = r.status(targets=[str(dvc_file)])
        if changes:
            raise VersioningError(
                f"{repo}/data differs from {DVC_FILE} ({changes}); run `dvc pull` (missing "
                "data) or `dvc add data` (your own edits) first"
            )
    manifest = repo / REQUESTS_PATH
    existed = manifest.is_file()
    saved = {p: (p.read_bytes() if p.is_file() else None) for p in (dvc_file, repo / ".gitignore")}
    try:
        manifest.parent.mkdir(parents=True, exist_ok=True)
        append_requests(manifest, [req])
        with _dvc(repo) as r:
            r.add(str(repo / DATA_DIR))
        remote = default_remote(repo) if push else None
        if remote:
            with _dvc(repo) as r:
                r.push(targets=[str(dvc_file)], remote=remote)
        if commit:
            git(repo, "add", DVC_FILE, ".gitignore")
            git(repo, "commit", "-q", "-m", f"deletion request {req.request_id} ({req.kind})")
    except BaseException:
        _remove_own_row(manifest, req, existed)  # only this request's row: never another one's
        for p, old in saved.items():
            if old is None:
                p.unlink(missing_ok=True)
            else:
                write_atomic(p, old)
        if commit:
            subprocess.run(
                ["git", "-C", str(repo), "reset", "-q", "--", DVC_FILE, ".gitignore"], capture_output=True
            )
        raise
    LOG.info("request %s recorded in %s (pushed: %s)", req.request_id, DVC_FILE, bool(remote))
    return req
