"""Compile, run locally, submit and schedule the unlearning pipeline.

* :func:`compile_pipeline`: the IR YAML for a Kubeflow Pipelines cluster.
* :func:`run_local`: the whole pipeline in this Python environment through
  ``kfp.local.SubprocessRunner(use_venv=False)`` (each task a subprocess of this interpreter), outputs under
  a scratch folder, ``TMPDIR`` pointed there too (KFP leaves a temporary folder per task).
* :func:`submit` / :func:`schedule`: a run / a recurring (cron) run on a KFP endpoint through
  ``kfp.Client``; the endpoint is checked first, so a server that is down gives one clear
  :class:`PipelineError` and nothing is submitted.
"""

import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipelines.unlearning import CLUSTER, LOCAL, PIPELINE_NAME, ClusterConfig, build_pipeline, parameters

SCRATCH_ENV = "TRU_SCRATCH"


class PipelineError(RuntimeError):
    """A pipeline could not be compiled, run, submitted or scheduled; the message says why."""


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """Drop ``None`` values and refuse names the pipeline does not have."""
    known = parameters()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise PipelineError(f"unknown pipeline parameter(s) {unknown}; expected some of {sorted(known)}")
    return {k: v for k, v in params.items() if v is not None}


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
def _tmpdir(path: Path) -> Iterator[None]:
    """Point ``TMPDIR`` (and :mod:`tempfile`) at ``path`` for the duration."""
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
    """Run the pipeline end to end with ``kfp.local`` and return register's result (promoted, version,
    champion, reasons, ...) plus ``seconds`` and ``pipeline_root``. Task outputs go to
    ``<root>/outputs``, temporary files to ``<root>/tmp``. Without ``tracking_uri`` the MLflow store is
    ``$MLFLOW_TRACKING_URI`` or ``sqlite:///<cwd>/mlruns.db``; a relative dataset path is made absolute.
    A failing task raises :class:`PipelineError` naming it; what it would have registered is not."""
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
    with _tmpdir(root / "tmp"):
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
                f"local run of {PIPELINE_NAME} failed: {exc} (the task's log above has the cause); the "
                "registry and its champion are unchanged"
            ) from exc
        seconds = time.perf_counter() - t0
    result = json.loads(task.output)
    result.update({"seconds": round(seconds, 2), "pipeline_root": str(root / "outputs")})
    return result


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


def _client(host: str) -> Any:
    import kfp

    try:
        return kfp.Client(host=check_host(host))
    except PipelineError:
        raise
    except Exception as exc:  # kfp_server_api / urllib3 raise many types
        raise PipelineError(f"Kubeflow Pipelines at {host}: {type(exc).__name__}: {exc}") from exc


def submit(
    host: str, params: dict[str, Any], *, experiment: str = "tru", run_name: str | None = None
) -> dict[str, Any]:
    """Start one run of the compiled pipeline on ``host``; returns its run id."""
    params = check_params(params)
    client = _client(host)
    with tempfile.TemporaryDirectory(prefix="tru-pipeline-") as tmp:
        package = compile_pipeline(Path(tmp) / "pipeline.yaml")
        try:
            run = client.create_run_from_pipeline_package(
                str(package), arguments=params, run_name=run_name, experiment_name=experiment
            )
        except Exception as exc:
            raise PipelineError(f"submitting to {host} failed: {type(exc).__name__}: {exc}") from exc
    return {"run_id": run.run_id, "host": host, "experiment": experiment}


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
) -> dict[str, Any]:
    """Create a recurring run of the pipeline on ``host`` (cron schedule, one run at a time by default)."""
    params = check_params(params)
    cron = normalise_cron(cron)
    client = _client(host)
    with tempfile.TemporaryDirectory(prefix="tru-pipeline-") as tmp:
        package = compile_pipeline(Path(tmp) / "pipeline.yaml")
        try:
            exp = client.create_experiment(name=experiment)
            job = client.create_recurring_run(
                experiment_id=exp.experiment_id,
                job_name=name,
                cron_expression=cron,
                max_concurrency=max_concurrency,
                pipeline_package_path=str(package),
                params=params,
                enabled=True,
            )
        except Exception as exc:
            raise PipelineError(f"scheduling on {host} failed: {type(exc).__name__}: {exc}") from exc
    return {"recurring_run_id": job.recurring_run_id, "cron": cron, "host": host, "experiment": experiment}


# --------------------------------------------------------------------------------- tru trigger adapter
def run_for_trigger(
    *,
    repo: Path | str,
    rev: str,
    requests: list[Any],
    data_version: dict[str, Any] | None = None,
    mode: str = "local",
    rev_from: str = "",
    host: str | None = None,
    work_dir: Path | str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The pipeline as ``tru trigger``'s runner (``tru.mlops.trigger.trigger`` calls it with the
    revision, the newly added requests and the data version).

    Maps the trigger onto pipeline parameters: ``repo`` and ``data_rev = rev`` (ingest reads ``data/`` and
    the manifest at that commit through ``dvc.api``), ``dataset`` (default: the only folder under
    ``data/`` at ``rev``) and any other pipeline parameter in ``options`` (backbone, method, policy,
    epochs, max_steps, tracking_uri, ...). The pipeline forgets every request of the manifest at ``rev``
    (the new ones and any earlier one a rejected run left unforgotten); in local mode the result is
    checked to cover the new request ids. ``local``: :func:`run_local` with task outputs under
    ``work_dir`` (default ``<repo>/.tru/kfp``, git-ignored); ``cluster``: :func:`submit` to ``host``.
    Raises :class:`PipelineError` on anything the pipeline cannot take (unknown option, ``--model``,
    several datasets and none named, no host)."""
    from tru.mlops.versioning import only_dataset_at

    repo = Path(repo).resolve()
    if options.pop("model", None):
        raise PipelineError(
            "the pipeline takes its original model from the MLflow registry (the champion) or trains one; "
            "--model needs the library runner: tru trigger ... --runner steps --model RUN_DIR"
        )
    dataset = options.pop("dataset", None) or only_dataset_at(repo, rev)
    params = check_params({**options, "dataset": dataset, "repo": str(repo), "data_rev": rev})
    new_ids = [str(getattr(r, "request_id", r)) for r in requests]
    if mode == "cluster":
        if not host:
            raise PipelineError("cluster mode needs the KFP endpoint: tru trigger --mode cluster --host URL")
        result = submit(host, params, run_name=f"tru-trigger-{rev[:12]}")
    elif mode == "local":
        result = run_local(params, root=work_dir or repo / ".tru" / "kfp")
        missing = sorted(set(new_ids) - set(result.get("request_ids") or []))
        if missing:
            raise PipelineError(
                f"the pipeline at {rev[:12]} did not see request(s) {missing}: is data/deletions/"
                "requests.csv committed with `dvc add` at that revision?"
            )
    else:
        raise PipelineError(f"unknown mode {mode!r}; expected local or cluster")
    return {**result, "new_request_ids": new_ids, "data_rev": rev, "rev_from": rev_from}


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.runner OUT.yaml``: compile for the cluster."""
    argv = sys.argv[1:] if argv is None else argv
    print(compile_pipeline(argv[0] if argv else "tru-unlearning.yaml"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
