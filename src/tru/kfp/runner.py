"""Compile, run locally, submit and schedule the unlearning pipeline.

* :func:`compile_pipeline`: the IR YAML for a Kubeflow Pipelines cluster; the images it names carry the
  code version it was compiled from (:func:`tru.mlops.images.image`).
* :func:`run_local`: the whole pipeline in this Python environment through
  ``kfp.local.SubprocessRunner(use_venv=False)``, outputs under a scratch folder.
* :func:`submit` / :func:`schedule`: upload the pipeline as a *version named after the code version*,
  then start a run / a recurring (cron) run on a KFP endpoint; ``wait`` follows a run to its end. Both
  refuse to start without an MLflow tracking URI (a pod-local store would vanish with the pod) and
  without a repository URL (a pod has no checkout). Credentials for multi-user Kubeflow: a bearer token
  (``--token`` / ``$KF_PIPELINES_TOKEN``) or, inside the cluster, the pod's service-account token; a
  ``namespace`` (the user's profile).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tru.kfp.pipeline import CLUSTER, LOCAL, PIPELINE_NAME, ClusterConfig, build_pipeline, parameters
from tru.utils import redact_text

SCRATCH_ENV = "TRU_SCRATCH"
TOKEN_ENV = "KF_PIPELINES_TOKEN"
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"  # KFP's projected service-account token
FINAL_STATES = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED", "CANCELLED", "PAUSED")


class PipelineError(RuntimeError):
    """A pipeline could not be compiled, run, submitted or scheduled; the message says why."""


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """Drop ``None`` values; refuse names the pipeline does not have and values it cannot run with
    (:meth:`tru.steps.params.PipelineParams.problems`), before anything is compiled or started."""
    from tru.steps.params import PipelineParams

    known = parameters()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise PipelineError(f"unknown pipeline parameter(s) {unknown}; expected some of {sorted(known)}")
    given = {k: v for k, v in params.items() if v is not None}
    own = {k: v for k, v in given.items() if k in PipelineParams.names()}
    wrong = PipelineParams(**own).problems()
    if wrong:
        raise PipelineError("bad pipeline parameter(s): " + "; ".join(wrong))
    return given


def check_cluster_params(params: dict[str, Any]) -> dict[str, Any]:
    """What a cluster run needs that a local run can default: an MLflow server every task reaches and
    the data repository's URL; a calibration the pods can download (a URI, not a folder of this
    machine); a policy the pods can read (a file of this machine is sent as its YAML text). Returns the
    parameters to submit."""
    from tru.mlops.versioning import is_url

    uri = str(params.get("tracking_uri") or "")
    if not uri.startswith(("http://", "https://", "databricks")):
        raise PipelineError(
            "a cluster run needs --tracking-uri http(s)://<mlflow server> (reachable from the pods): without "
            "it, train and register would write to a pod-local store that disappears with the pod"
        )
    if not is_url(str(params.get("repo") or "")):
        raise PipelineError(
            "a cluster run needs --repo <git URL of the data repository> (https://… or git@…): the pods have "
            "no checkout; ingest clones it at the resolved commit and reads data/ from its DVC remote"
        )
    calibration = str(params.get("calibration") or "")
    if calibration and "://" not in calibration and not calibration.startswith(("runs:/", "models:/")):
        raise PipelineError(
            f"a cluster run needs --calibration as a URI the pods can download (s3://…, runs:/…): "
            f"{calibration!r} is a path on this machine; log the `tru calibrate` folder to MLflow or copy it "
            "to the artifact store"
        )
    policy = str(params.get("policy") or "")
    if policy.strip() and "\n" not in policy and ":" not in policy:  # a path (tru.steps.certify.policy_file)
        if not Path(policy).is_file():
            raise PipelineError(f"--policy {policy!r}: no such file (a cluster run sends a file's text)")
        params = {**params, "policy": Path(policy).read_text()}
    return params


def compile_pipeline(out: Path | str, cfg: ClusterConfig = CLUSTER) -> Path:
    """Write the pipeline's IR YAML to ``out`` and return its path."""
    from kfp import compiler

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(cfg), str(out))
    return out


def scratch_root(root: Path | str | None = None) -> Path:
    """``root``, else ``$TRU_SCRATCH/kfp``, else ``./scratch/kfp`` (git-ignored)."""
    if root is not None:
        return Path(root).resolve()
    return (Path(os.environ.get(SCRATCH_ENV) or "scratch") / "kfp").resolve()


@contextmanager
def tmpdir_at(path: Path) -> Iterator[None]:
    """Point ``TMPDIR`` (and :mod:`tempfile`) at ``path`` for the duration (KFP leaves a folder per task)."""
    path.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(path)
    tempfile.tempdir = None
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old
        tempfile.tempdir = None


def run_local(params: dict[str, Any], root: Path | str | None = None) -> dict[str, Any]:
    """Run the pipeline end to end with ``kfp.local`` and return register's outcome plus ``seconds`` and
    ``pipeline_root``. Without ``tracking_uri`` the MLflow store is ``$MLFLOW_TRACKING_URI`` or
    ``sqlite:///<cwd>/mlruns.db``; relative paths are made absolute. A failing task raises
    :class:`PipelineError` naming it; the registry and its champion are then unchanged."""
    from kfp import local

    params = check_params(params)
    root = scratch_root(root)
    if not params.get("tracking_uri"):
        from tru.mlops import tracking

        params["tracking_uri"] = tracking.configure(None)
    for key in ("repo", "requests", "dataset"):
        val = params.get(key)
        if val and Path(val).exists():
            params[key] = str(Path(val).resolve())
    if params.get("policy") and "\n" not in params["policy"] and Path(params["policy"]).is_file():
        params["policy"] = str(Path(params["policy"]).resolve())
    with tmpdir_at(root / "tmp"):
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=str(root / "outputs"),
            raise_on_error=True,
        )
        t0 = time.perf_counter()
        try:
            task = build_pipeline(LOCAL)(**params)
        except RuntimeError as exc:
            raise PipelineError(
                f"local run of {PIPELINE_NAME} failed: {redact_text(str(exc))} (the task's log above has the "
                "cause); the registry and its champion are unchanged"
            ) from exc
        seconds = time.perf_counter() - t0
    result = json.loads(task.output)
    result.update({"seconds": round(seconds, 2), "pipeline_root": str(root / "outputs")})
    return result


# ---------------------------------------------------------------------------------------------- cluster
def check_host(host: str, timeout: float = 10.0) -> str:
    """``host`` without a trailing slash, once its KFP API answers (any HTTP status counts: an auth proxy
    answering 401/403 is up); else :class:`PipelineError`."""
    if not host.startswith(("http://", "https://")):
        raise PipelineError(f"--host {host!r}: expected an http(s):// URL of the Kubeflow Pipelines API")
    host = host.rstrip("/")
    try:
        urllib.request.urlopen(f"{host}/apis/v2beta1/healthz", timeout=timeout).close()
    except urllib.error.HTTPError:
        pass
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PipelineError(
            f"cannot reach the Kubeflow Pipelines API at {host} ({reason}); check the URL and that the "
            "server is up (kubectl port-forward?); nothing was submitted"
        ) from exc
    return host


def client(host: str, *, namespace: str | None = None, token: str | None = None) -> Any:
    """A ``kfp.Client`` for ``host`` (checked first) in ``namespace``: with ``token`` (else
    ``$KF_PIPELINES_TOKEN``) as bearer token, or inside a cluster the projected service-account token."""
    import kfp

    host = check_host(host)
    token = token or os.environ.get(TOKEN_ENV) or None
    kwargs: dict[str, Any] = {"host": host, "namespace": namespace or "kubeflow"}
    if token:
        kwargs["existing_token"] = token
    elif Path(os.environ.get("KF_PIPELINES_SA_TOKEN_PATH", SA_TOKEN_PATH)).is_file():
        from kfp.client import ServiceAccountTokenVolumeCredentials

        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials()
    try:
        return kfp.Client(**kwargs)
    except Exception as exc:  # kfp_server_api / urllib3 raise many types
        raise PipelineError(
            f"Kubeflow Pipelines at {host}: {type(exc).__name__}: {redact_text(str(exc))}"
        ) from exc


def upload_version(kfp_client: Any, package: Path, *, name: str = PIPELINE_NAME) -> tuple[str, str]:
    """Upload ``package`` as the version ``<code version>`` of the pipeline ``name`` (created when absent;
    an existing version of that name is reused). Returns (pipeline id, version id)."""
    from tru.mlops import images

    version_name = images.code_version()
    pipeline_id = kfp_client.get_pipeline_id(name)
    if pipeline_id is None:  # KFP creates it with a first version named after the pipeline
        pipe = kfp_client.upload_pipeline(str(package), pipeline_name=name, description="tru unlearning")
        pipeline_id = pipe.pipeline_id
    listing = (
        kfp_client.list_pipeline_versions(pipeline_id=pipeline_id, page_size=200).pipeline_versions or []
    )
    for v in listing:
        if v.display_name == version_name:
            return pipeline_id, v.pipeline_version_id
    ver = kfp_client.upload_pipeline_version(
        str(package), pipeline_version_name=version_name, pipeline_id=pipeline_id
    )
    return pipeline_id, ver.pipeline_version_id


@dataclass(frozen=True)
class Target:
    """Where a cluster run goes: the KFP endpoint, the profile namespace, a token, the experiment."""

    host: str
    namespace: str | None = None
    token: str | None = None
    experiment: str = "tru"


def _on_cluster(target: Target, params: dict[str, Any], cfg: ClusterConfig, what: str, start: Any) -> Any:
    """Check the parameters, compile, upload this code's pipeline version into ``target`` and call
    ``start(client, experiment_id, pipeline_id, version_id, params)``; any server error becomes one
    :class:`PipelineError` saying ``what`` failed."""
    params = check_cluster_params(check_params(params))
    kc = client(target.host, namespace=target.namespace, token=target.token)
    with tempfile.TemporaryDirectory(prefix="tru-pipeline-") as tmp:
        package = compile_pipeline(Path(tmp) / "pipeline.yaml", cfg)
        try:
            pipeline_id, version_id = upload_version(kc, package)
            exp = kc.create_experiment(name=target.experiment, namespace=target.namespace)
            return kc, version_id, start(kc, exp.experiment_id, pipeline_id, version_id, params)
        except PipelineError:
            raise
        except Exception as exc:
            raise PipelineError(
                f"{what} on {target.host} failed: {type(exc).__name__}: {redact_text(str(exc))}"
            ) from exc


def submit(
    host: str,
    params: dict[str, Any],
    *,
    experiment: str = "tru",
    run_name: str | None = None,
    namespace: str | None = None,
    token: str | None = None,
    wait: bool = False,
    timeout: float = 6 * 3600,
    cfg: ClusterConfig = CLUSTER,
) -> dict[str, Any]:
    """Upload the pipeline version of this code and start one run on ``host``; with ``wait`` follow it to
    its end and report its state (a run that did not succeed raises :class:`PipelineError`)."""
    name = run_name or f"{PIPELINE_NAME}-{time.strftime('%Y%m%d-%H%M%S')}"

    def start(kc: Any, exp_id: str, pipeline_id: str, version_id: str, p: dict[str, Any]) -> Any:
        return kc.run_pipeline(
            experiment_id=exp_id, job_name=name, params=p, pipeline_id=pipeline_id, version_id=version_id
        )

    target = Target(host, namespace, token, experiment)
    kc, version_id, run = _on_cluster(target, params, cfg, "submitting", start)
    out = {"run_id": run.run_id, "host": host, "experiment": experiment, "pipeline_version_id": version_id}
    if not wait:
        return {**out, "state": "SUBMITTED"}
    done = kc.wait_for_run_completion(run.run_id, timeout=int(timeout))
    out["state"] = str(getattr(done, "state", "") or "").upper()
    if out["state"] != "SUCCEEDED":
        raise PipelineError(
            f"run {run.run_id} on {host} ended {out['state'] or 'in an unknown state'}: {out}"
        )
    return out


def normalise_cron(cron: str) -> str:
    """KFP's cron has six fields (seconds first); a five-field expression gets ``0`` seconds."""
    fields = cron.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise PipelineError(
            f"--cron {cron!r}: expected 5 fields (min hour day month weekday) or 6 (with seconds first)"
        )
    return " ".join(fields)


def schedule(
    host: str,
    cron: str,
    params: dict[str, Any],
    *,
    experiment: str = "tru",
    name: str = f"{PIPELINE_NAME}-schedule",
    max_concurrency: int = 1,
    namespace: str | None = None,
    token: str | None = None,
    cfg: ClusterConfig = CLUSTER,
) -> dict[str, Any]:
    """A recurring run (cron, one at a time by default) of this code's pipeline version. Its ``data_rev``
    is a branch or ``HEAD`` (default): each run resolves it to the commit sha at run time."""
    cron = normalise_cron(cron)

    def start(kc: Any, exp_id: str, pipeline_id: str, version_id: str, p: dict[str, Any]) -> Any:
        return kc.create_recurring_run(
            experiment_id=exp_id, job_name=name, cron_expression=cron, max_concurrency=max_concurrency,
            pipeline_id=pipeline_id, version_id=version_id, params=p, enabled=True,
        )  # fmt: skip

    _, _, job = _on_cluster(Target(host, namespace, token, experiment), params, cfg, "scheduling", start)
    return {"recurring_run_id": job.recurring_run_id, "cron": cron, "host": host, "experiment": experiment}


# --------------------------------------------------------------------------------- tru trigger adapter
def run_for_trigger(
    *,
    repo: Path | str,
    rev: str,
    requests: list[Any],
    mode: str = "local",
    host: str | None = None,
    repo_url: str | None = None,
    work_dir: Path | str | None = None,
    namespace: str | None = None,
    token: str | None = None,
    wait: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """The pipeline as ``tru trigger``'s runner: data revision ``rev`` (a commit sha) of ``repo``.

    ``local``: :func:`run_local` on the local checkout, task outputs under ``work_dir`` (default
    ``<repo>/.tru/kfp``, git-ignored). ``cluster``: :func:`submit` to ``host`` with ``repo`` = the
    repository URL (``repo_url``, else the checkout's ``origin`` remote): the pods clone it at ``rev``;
    never a local path."""
    from tru.mlops.versioning import is_url, origin_url

    options.pop("data_version", None)
    params = check_params({**options, "data_rev": rev})
    if mode == "cluster":
        if not host:
            raise PipelineError("cluster mode needs the KFP endpoint: tru trigger --mode cluster --host URL")
        url = repo_url or (str(repo) if is_url(repo) else origin_url(Path(repo)))
        params["repo"] = url
        return submit(
            host, params, run_name=f"tru-trigger-{rev[:12]}", namespace=namespace, token=token, wait=wait
        )
    if mode != "local":
        raise PipelineError(f"unknown mode {mode!r}; expected local or cluster")
    params["repo"] = str(Path(repo).resolve())
    return run_local(params, root=work_dir or Path(repo) / ".tru" / "kfp")


def main(argv: list[str] | None = None) -> int:
    """``python -m tru.kfp.runner OUT.yaml``: compile for the cluster."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    print(compile_pipeline(argv[0] if argv else "tru-unlearning.yaml"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
