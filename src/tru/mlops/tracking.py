"""MLflow tracking and model registry for tru run folders.

A run folder (``model.pt`` + ``run.json`` [+ ``metrics.json``, ``unlearn.json``, plots]) is logged as the
artifacts ``model/`` of one MLflow run; a registered model version points at ``runs:/<run_id>/model``.
One registered model per dataset × backbone (:func:`model_name`). Aliases: ``champion`` (the model in
service, moved only by a passing certificate) and ``candidate`` (the last rejected one). Version tags:
``verdict`` (pending | certified | rejected), ``forgotten_requests`` (request ids, never data),
``reasons``; a version that still holds deleted data carries ``contains_deleted_data=true`` and
``deleted_requests`` until :func:`tru.mlops.registry.purge` deletes its artifacts (the registry record stays).

Failure rule: tags are written first and the ``champion`` alias is moved last, so an exception at any
point leaves the champion where it was; a server that does not answer is reported before anything is
written (:class:`TrackingError`)."""

from __future__ import annotations

import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from tru.runfolder import CERT_FILE, METRICS_FILE, MODEL_FILE, RUN_FILE, UNLEARN_FILE, read_json
from tru.utils import redact_text, redact_uri

MODEL_PATH = "model"  # the run folder's place among the run's artifacts
ARTIFACTS_ENV = "TRU_MLFLOW_ARTIFACTS"  # artifact root of new experiments (file:// or s3://)
KINDS = ("train", "unlearn", "certify")


class TrackingError(RuntimeError):
    """The tracking server or artifact store failed or refused; nothing was promoted or deleted."""


def configure(tracking_uri: str | None = None, artifact_root: str | None = None) -> str:
    """Select the tracking + registry store and return its URI.

    Default: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlruns.db``. The choice is exported to
    ``MLFLOW_TRACKING_URI`` (and ``artifact_root`` to ``$TRU_MLFLOW_ARTIFACTS``) so that pipeline tasks
    started as subprocesses use the same store. An HTTP server is checked (``/health``) first."""
    uri = tracking_uri or current_uri()
    _check_reachable(uri)  # before anything changes
    os.environ["MLFLOW_TRACKING_URI"] = uri
    if artifact_root:
        os.environ[ARTIFACTS_ENV] = artifact_root
    return uri


def model_name(dataset: str, backbone: str) -> str:
    """``tru-<dataset>-<backbone>``, lower case, other characters folded to ``-``."""

    def slug(s: str) -> str:
        out = re.sub(r"[^a-z0-9]+", "-", str(s).lower()).strip("-")
        if not out:
            raise ValueError(f"model_name: {s!r} has no letters or digits")
        return out

    return f"tru-{slug(dataset)}-{slug(backbone)}"


def current_uri() -> str:
    """The tracking URI in use: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlruns.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlruns.db'}"


def _check_reachable(uri: str) -> None:
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if not uri.startswith(("http://", "https://")):
        return
    timeout = float(os.environ.get("TRU_MLFLOW_TIMEOUT", "5"))
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status == 200:
                return
            problem = f"HTTP {resp.status}"
    except (urllib.error.URLError, OSError) as exc:
        problem = str(getattr(exc, "reason", exc))
    raise TrackingError(
        f"MLflow tracking server {redact_uri(uri)} is not reachable ({redact_text(problem)}): nothing was "
        "logged or changed. "
        "Start it (mlflow/serve-local.sh) or set MLFLOW_TRACKING_URI to a running server."
    )


def mlflow_client() -> MlflowClient:
    """A client of the tracking + registry store in use, checked reachable first."""
    uri = current_uri()
    _check_reachable(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _key(name: str) -> str:
    """MLflow keys allow ``[/\\w.\\- :]``: ``recall@20`` → ``recall_at_20``, anything else → ``_``."""
    return re.sub(r"[^/\w.\- :]", "_", name.replace("@", "_at_"))[:250]


def _flatten(d: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    return None


def _series(run_meta: dict[str, Any], unlearn: dict[str, Any]) -> list[tuple[str, float, int]]:
    """(key, value, step): per-epoch training rows, per-check unlearning rows, α_b per branch."""
    out: list[tuple[str, float, int]] = []
    for row in (run_meta.get("training") or {}).get("history") or []:
        step = int(row.get("epoch", 0))
        for k, v in _flatten({k: v for k, v in row.items() if k != "epoch"}):
            if (x := _number(v)) is not None:
                out.append((_key(f"epoch_{k.replace('.', '_')}"), x, step))
    for row in unlearn.get("history") or []:
        step = int(row.get("step", 0))
        for k, v in _flatten({k: v for k, v in row.items() if k != "step"}):
            if (x := _number(v)) is not None:
                out.append((_key(f"unlearn_{k.replace('.', '_')}"), x, step))
    for row in unlearn.get("alpha_history") or []:
        for branch, v in (row.get("alpha") or {}).items():
            if (x := _number(v)) is not None:
                out.append((_key(f"alpha_{branch}"), x, int(row.get("step", 0))))
    return out


def _finals(metrics_json: dict[str, Any], cert: dict[str, Any]) -> dict[str, float]:
    """``<split>_<metric>`` from metrics.json; ``cert_<block>_<key>`` from a certificate's blocks."""
    out: dict[str, float] = {}
    for split, vals in metrics_json.items():
        if isinstance(vals, dict):
            out.update({_key(f"{split}_{k}"): x for k, v in vals.items() if (x := _number(v)) is not None})
    if cert:
        out["cert_passed"] = float(bool(cert.get("passed")))
        for block in ("original", "unlearned", "retrained", "reference", "closeness", "efficiency"):
            for k, v in _flatten(cert.get(block) or {}):
                if (x := _number(v)) is not None:
                    out[_key(f"cert_{block}_{k.replace('.', '_')}")] = x
    return out


def _find_certificate(run_dir: Path, artifacts: Sequence[Path]) -> dict[str, Any]:
    for p in (run_dir, *artifacts):
        p = Path(p)
        cand = p / CERT_FILE if p.is_dir() else p
        if cand.name == CERT_FILE and cand.is_file():
            return read_json(cand)
    return {}


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _experiment_id(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = os.environ.get(ARTIFACTS_ENV)
    uri = current_uri()
    if not root and uri.startswith("sqlite:///"):  # next to the database, not in the working folder
        db = Path(uri.removeprefix("sqlite:///"))
        root = (db.parent / f"{db.stem}-artifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=root or None)
    except MlflowException:  # created concurrently by another task
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def log_run(
    run_dir: Path,
    *,
    kind: str,
    params: dict[str, Any],
    data_version: dict[str, Any],
    experiment: str = "tru",
    artifacts: Iterable[Path] = (),
    metrics: dict[str, float] | None = None,
    run_name: str | None = None,
) -> str:
    """Log one tru run folder as an MLflow run and return its run id.

    Params: run.json ``config`` (+ unlearn.json ``config`` as ``unlearn.*``) overlaid with ``params``,
    flattened with dots. Metrics with steps: ``epoch_loss``, ``epoch_valid_<m>`` (training history),
    ``unlearn_<m>`` (unlearning checks), ``alpha_<branch>``; final: ``<split>_<m>`` from metrics.json,
    ``cert_*`` from a certificate in the folder or among ``artifacts``, and ``metrics``. Tags:
    ``kind``, ``code_version``, ``data_version.<key>``. Artifacts: the folder under ``model/`` (or
    ``<kind>/`` for a folder without ``model.pt``), each extra artifact at the root. On failure the run
    is marked FAILED and :class:`TrackingError` raised."""
    run_dir = Path(run_dir)
    if kind not in KINDS:
        raise ValueError(f"log_run: kind must be one of {KINDS}, got {kind!r}")
    if not run_dir.is_dir():
        raise TrackingError(f"{run_dir}: not a run folder")
    has_model = (run_dir / MODEL_FILE).is_file()
    if kind != "certify" and not (has_model and (run_dir / RUN_FILE).is_file()):
        raise TrackingError(f"{run_dir}: a {kind} run folder needs model.pt and run.json")
    extra = [Path(a) for a in artifacts]
    for a in extra:
        if not a.exists():
            raise TrackingError(f"{a}: artifact to log does not exist")
        if a.name in (MODEL_PATH, kind):
            raise TrackingError(f"{a}: the artifact name '{a.name}' is reserved for the run folder")
    meta, unlearn = read_json(run_dir / RUN_FILE), read_json(run_dir / UNLEARN_FILE)
    cert = _find_certificate(run_dir, extra)
    flat = dict(_flatten(meta.get("config") or {}))
    flat |= {f"unlearn.{k}": v for k, v in _flatten(unlearn.get("config") or {})}
    flat |= dict(_flatten(params or {}))
    ts = int(time.time() * 1000)
    finals = _finals(read_json(run_dir / METRICS_FILE), cert) | {
        _key(k): float(v) for k, v in (metrics or {}).items()
    }
    metric_rows = [Metric(k, v, ts, s) for k, v, s in _series(meta, unlearn)]
    metric_rows += [Metric(k, v, ts, 0) for k, v in finals.items()]
    tags = {"kind": kind, "code_version": str(meta.get("code_version") or cert.get("code_version") or "")}
    tags |= {f"data_version.{k}": str(v) for k, v in (data_version or {}).items()}
    if meta.get("backbone"):
        tags["backbone"] = str(meta["backbone"])
    if isinstance(meta.get("dataset"), dict) and meta["dataset"].get("name"):
        tags["dataset"] = str(meta["dataset"]["name"])
    if cert:
        tags["certificate.passed"] = str(bool(cert.get("passed"))).lower()
    if tags["code_version"]:
        tags["mlflow.source.git.commit"] = tags["code_version"].removesuffix("+dirty")
    tags["mlflow.runName"] = run_name or "-".join(
        x for x in (kind, tags.get("backbone"), tags.get("dataset")) if x
    )
    client = mlflow_client()
    try:
        run_id = client.create_run(_experiment_id(client, experiment), tags=tags).info.run_id
    except MlflowException as exc:
        raise TrackingError(
            f"MLflow at {redact_uri(current_uri())}: cannot create a run: {redact_text(str(exc))}"
        ) from exc
    try:
        params_rows = [Param(_key(k), str(v)[:6000]) for k, v in flat.items()]
        for chunk in _chunks(params_rows, 100):
            client.log_batch(run_id, params=chunk)
        for chunk in _chunks(metric_rows, 1000):
            client.log_batch(run_id, metrics=chunk)
        client.log_artifacts(run_id, str(run_dir), MODEL_PATH if has_model else kind)
        for a in extra:
            if a.is_dir():
                client.log_artifacts(run_id, str(a), a.name)
            else:
                client.log_artifact(run_id, str(a))
        client.set_terminated(run_id, "FINISHED")
    except Exception as exc:
        try:
            client.set_tag(run_id, "tru.error", str(exc)[:7000])
            client.set_terminated(run_id, "FAILED")
        except Exception:  # the store itself is gone: the run stays RUNNING, never registered
            pass
        raise TrackingError(f"logging {run_dir} to MLflow run {run_id} failed: {exc}") from exc
    return run_id
