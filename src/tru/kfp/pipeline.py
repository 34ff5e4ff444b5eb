"""The unlearning pipeline: resolve_revision → ingest → train → sensitivity → unlearn → certify → register.

One definition serves the cluster and the laptop. :func:`build_pipeline` takes a :class:`ClusterConfig`:
the default (:data:`CLUSTER`) declares CPU / memory requests *and limits* on every task, a GPU
(``nvidia.com/gpu`` × 1) with a node selector and a toleration on train / unlearn / certify, the secrets
each task needs as environment variables, an optional image pull secret, and retries on the tasks that
talk to services. :data:`LOCAL` leaves out what ``kfp.local`` cannot honour; tasks, edges and components
are the same.

Secrets (Kubernetes ``Secret`` objects in the run's namespace; names in :class:`ClusterConfig`):

* ``tru-s3-credentials``: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (required; the DVC remote and
  the MLflow artifact store), ``AWS_ENDPOINT_URL`` / ``MLFLOW_S3_ENDPOINT_URL`` (optional: MinIO, Ceph);
* ``tru-commitment-key``: ``TRU_COMMITMENT_KEY`` (required: the key of request commitments and
  certificate signatures; every task must share it or register refuses the certificates);
* ``tru-git-credentials``: ``TRU_GIT_TOKEN`` (optional: a read token for a private data repository);
* ``tru-mlflow-credentials``: ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (optional).

Caching: KFP keys a task's cache on its component and inputs. ``resolve_revision`` is never cached and
turns ``data_rev`` (a branch, ``HEAD``) into the commit sha at run time, so ``ingest`` is cached on the
real data and a scheduled run sees each new commit. ``train`` reads the registry (the champion) and
``register`` writes it: neither is cached.
"""

from dataclasses import dataclass
from typing import Any

from kfp import dsl, kubernetes

from tru.kfp.components import certify, ingest, register, resolve_revision, sensitivity, train, unlearn
from tru.kfp.components.images import IMAGE_CPU, IMAGE_GPU
from tru.steps.params import DEFAULTS as P

PIPELINE_NAME = "tru-unlearning"
TASKS = ("resolve_revision", "ingest", "train", "sensitivity", "unlearn", "certify", "register")
GPU_TASKS = ("train", "unlearn", "certify")
RETRY_TASKS = ("resolve_revision", "ingest", "train", "register")  # they talk to git, DVC, MLflow
CACHED = {
    "resolve_revision": False,
    "ingest": True,
    "train": False,
    "sensitivity": True,
    "unlearn": True,
    "certify": True,
    "register": False,
}
RESOURCES = {  # (cpu request, memory request, cpu limit, memory limit)
    "resolve_revision": ("250m", "512Mi", "1", "1Gi"),
    "ingest": ("1", "4Gi", "2", "8Gi"),
    "train": ("4", "16Gi", "8", "32Gi"),
    "sensitivity": ("2", "8Gi", "4", "16Gi"),
    "unlearn": ("4", "16Gi", "8", "32Gi"),
    "certify": ("4", "16Gi", "8", "32Gi"),
    "register": ("500m", "2Gi", "2", "4Gi"),
}
S3_TASKS = ("ingest", "train", "register")  # DVC remote, MLflow artifact store
GIT_TASKS = ("resolve_revision", "ingest")
KEY_TASKS = ("train", "sensitivity", "unlearn", "certify", "register")
MLFLOW_TASKS = ("train", "register")
S3_ENV = {k: k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
S3_OPTIONAL_ENV = {k: k for k in ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")}
MLFLOW_ENV = {k: k for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
KEY_ENV = {"TRU_COMMITMENT_KEY": "TRU_COMMITMENT_KEY"}
GIT_ENV = {"TRU_GIT_TOKEN": "TRU_GIT_TOKEN"}


@dataclass(frozen=True)
class ClusterConfig:
    """What the compiled pipeline asks of the cluster."""

    gpu: bool = True  # accelerator request + GPU node selector / toleration on GPU_TASKS
    resources: bool = True  # CPU / memory requests and limits
    kubernetes: bool = True  # platform config: secrets, node selector, toleration, pull secret
    retries: int = 2
    backoff: str = "30s"
    accelerator: str = "nvidia.com/gpu"
    node_selector: tuple[str, str] = ("nvidia.com/gpu.present", "true")  # the GPU operator's label
    toleration_key: str = "nvidia.com/gpu"
    s3_secret: str = "tru-s3-credentials"
    key_secret: str = "tru-commitment-key"
    git_secret: str = "tru-git-credentials"  # optional: public repositories need none
    mlflow_secret: str = "tru-mlflow-credentials"  # optional: servers without auth need none
    image_pull_secret: str = ""  # optional: a private registry's docker-registry secret


CLUSTER = ClusterConfig()
LOCAL = ClusterConfig(gpu=False, resources=False, kubernetes=False, retries=0)


def _configure(name: str, task: Any, cfg: ClusterConfig) -> None:
    """Apply the cluster settings of task ``name``."""
    task.set_caching_options(enable_caching=CACHED[name])
    if cfg.resources:
        cpu, mem, cpu_max, mem_max = RESOURCES[name]
        task.set_cpu_request(cpu).set_memory_request(mem).set_cpu_limit(cpu_max).set_memory_limit(mem_max)
    if cfg.retries and name in RETRY_TASKS:
        task.set_retry(num_retries=cfg.retries, backoff_duration=cfg.backoff, backoff_factor=2.0)
    gpu = cfg.gpu and name in GPU_TASKS
    if gpu:
        task.set_accelerator_type(cfg.accelerator).set_accelerator_limit(1)
    if not cfg.kubernetes:
        return
    if gpu:
        kubernetes.add_node_selector(task, label_key=cfg.node_selector[0], label_value=cfg.node_selector[1])
        kubernetes.add_toleration(task, key=cfg.toleration_key, operator="Exists", effect="NoSchedule")
    if name in S3_TASKS:
        kubernetes.use_secret_as_env(task, secret_name=cfg.s3_secret, secret_key_to_env=S3_ENV)
        kubernetes.use_secret_as_env(
            task, secret_name=cfg.s3_secret, secret_key_to_env=S3_OPTIONAL_ENV, optional=True
        )
    if name in KEY_TASKS:
        kubernetes.use_secret_as_env(task, secret_name=cfg.key_secret, secret_key_to_env=KEY_ENV)
    if name in GIT_TASKS:
        kubernetes.use_secret_as_env(
            task, secret_name=cfg.git_secret, secret_key_to_env=GIT_ENV, optional=True
        )
    if name in MLFLOW_TASKS:
        kubernetes.use_secret_as_env(
            task, secret_name=cfg.mlflow_secret, secret_key_to_env=MLFLOW_ENV, optional=True
        )
    if cfg.image_pull_secret:
        kubernetes.set_image_pull_secrets(task, [cfg.image_pull_secret])


def build_pipeline(cfg: ClusterConfig = CLUSTER) -> Any:
    """The pipeline (a KFP ``GraphComponent``) with the cluster settings of ``cfg``."""

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Certified unlearning of committed deletion requests: ingest (DVC) → train (champion or "
        "original) → layer sensitivity → unlearn (TRU) → certify (signed) → register (MLflow; champion by "
        "compare-and-set, compliance fallback to the retrain).",
    )
    def unlearning(
        dataset: str = P.dataset,
        backbone: str = P.backbone,
        method: str = P.method,
        policy: str = P.policy,
        data_rev: str = P.data_rev,
        repo: str = P.repo,
        tracking_uri: str = P.tracking_uri,
        image: str = IMAGE_GPU,
        cpu_image: str = IMAGE_CPU,
        requests: str = P.requests,
        generate_requests: bool = P.generate_requests,
        regime: str = P.regime,
        ratio: float = P.ratio,
        seed: int = P.seed,
        epochs: int = P.epochs,
        max_steps: int = P.max_steps,
        retrain: bool = P.retrain,
        audit_seeds: str = P.audit_seeds,
        reuse_champion: bool = P.reuse_champion,
        deadline_days: float = P.deadline_days,
        confirm: bool = P.confirm,
        calibration: str = P.calibration,
    ) -> str:
        """The parameters of :class:`tru.steps.params.PipelineParams` (their meaning and defaults), plus
        ``image`` / ``cpu_image``: the images the GPU and CPU tasks run in."""
        rv = resolve_revision(repo=repo, rev=data_rev)
        ing = ingest(
            repo=repo, rev=rv.output, dataset=dataset, requests=requests, generate_requests=generate_requests,
            regime=regime, ratio=ratio, seed=seed,
        )  # fmt: skip
        data, manifest = ing.outputs["data"], ing.outputs["deletion_requests"]
        tr = train(
            data=data, deletion_requests=manifest, dataset_name=ing.outputs["dataset_name"],
            data_version=ing.outputs["data_version"], backbone=backbone, tracking_uri=tracking_uri,
            epochs=epochs, reuse_champion=reuse_champion, deadline_days=deadline_days, confirm=confirm,
        )  # fmt: skip
        model, target = tr.outputs["model"], tr.outputs["target_requests"]
        se = sensitivity(data=data, model=model, target_requests=target)
        un = unlearn(
            data=data, model=model, target_requests=target, sensitivity=se.outputs["report"], method=method,
            max_steps=max_steps, calibration=calibration,
        )  # fmt: skip
        ce = certify(
            data=data, original=model, unlearned=un.outputs["unlearned"], target_requests=target,
            policy=policy, retrain=retrain, audit_seeds=audit_seeds, calibration=calibration,
        )  # fmt: skip
        rg = register(
            unlearned=un.outputs["unlearned"], certificate=ce.outputs["certificate"], data=data,
            target_requests=target, sensitivity=se.outputs["report"],
            dataset_name=ing.outputs["dataset_name"], backbone=backbone,
            data_version=ing.outputs["data_version"], tracking_uri=tracking_uri,
        )  # fmt: skip
        tasks = {
            "resolve_revision": rv, "ingest": ing, "train": tr, "sensitivity": se, "unlearn": un,
            "certify": ce, "register": rg,
        }  # fmt: skip
        for name, task in tasks.items():
            task.set_container_image(image if name in GPU_TASKS else cpu_image)
            _configure(name, task, cfg)
        return rg.outputs["Output"]

    return unlearning


def parameters() -> dict[str, Any]:
    """The pipeline's parameters with their defaults."""
    import inspect

    sig = inspect.signature(build_pipeline(LOCAL).pipeline_func)
    return {n: p.default for n, p in sig.parameters.items()}
