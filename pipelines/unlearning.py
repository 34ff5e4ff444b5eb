"""The unlearning pipeline: ingest → train → sensitivity → unlearn → certify → register.

One definition serves the cluster and the laptop. :func:`build_pipeline` takes a :class:`ClusterConfig`:
the default (:data:`CLUSTER`) declares CPU / memory requests on every task, a GPU
(``nvidia.com/gpu`` × 1) with a node selector and a toleration for GPU nodes on train / unlearn /
certify, the S3 and MLflow credentials from Kubernetes secrets, retries on the steps that talk to
services (ingest, train, register) and caching on every step but register. :data:`LOCAL` leaves out
what ``kfp.local`` cannot honour (resources, platform config, retries), so a local run prints no
warnings; the tasks, edges and components are the same.

Caching is keyed by KFP on the component and its inputs: the data revision (pass a commit sha or a tag,
as ``tru trigger`` does, not a moving branch name), the dataset and every knob. Register is never cached:
it writes to the registry.
"""

from dataclasses import dataclass
from typing import Any

from components import certify, ingest, register, sensitivity, train, unlearn
from components._common import IMAGE_CPU, IMAGE_GPU
from kfp import dsl, kubernetes

PIPELINE_NAME = "tru-unlearning"
TASKS = ("ingest", "train", "sensitivity", "unlearn", "certify", "register")
GPU_TASKS = ("train", "unlearn", "certify")
RETRY_TASKS = ("ingest", "train", "register")  # they talk to DVC remotes / the MLflow server
CACHED = {
    "ingest": True,
    "train": True,
    "sensitivity": True,
    "unlearn": True,
    "certify": True,
    "register": False,
}
RESOURCES = {  # (cpu request, memory request)
    "ingest": ("1", "4Gi"),
    "train": ("4", "16Gi"),
    "sensitivity": ("2", "8Gi"),
    "unlearn": ("4", "16Gi"),
    "certify": ("4", "16Gi"),
    "register": ("500m", "2Gi"),
}
S3_TASKS = ("ingest", "train", "register")  # DVC remote, MLflow artifact store
MLFLOW_TASKS = ("train", "register")
S3_ENV = {k: k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")}
MLFLOW_ENV = {k: k for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}


@dataclass(frozen=True)
class ClusterConfig:
    """What the compiled pipeline asks of the cluster."""

    gpu: bool = True  # accelerator request + GPU node selector / toleration on GPU_TASKS
    resources: bool = True  # CPU / memory requests
    kubernetes: bool = True  # platform config: secrets, node selector, toleration
    retries: int = 2
    backoff: str = "30s"
    accelerator: str = "nvidia.com/gpu"
    node_selector: tuple[str, str] = ("nvidia.com/gpu.present", "true")
    toleration_key: str = "nvidia.com/gpu"
    s3_secret: str = "tru-s3-credentials"
    mlflow_secret: str = "tru-mlflow-credentials"  # optional: servers without auth need none


CLUSTER = ClusterConfig()
LOCAL = ClusterConfig(gpu=False, resources=False, kubernetes=False, retries=0)


def _configure(name: str, task: Any, cfg: ClusterConfig) -> None:
    """Apply the cluster settings of task ``name``."""
    task.set_caching_options(enable_caching=CACHED[name])
    if cfg.resources:
        cpu, mem = RESOURCES[name]
        task.set_cpu_request(cpu).set_memory_request(mem)
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
    if name in MLFLOW_TASKS:
        kubernetes.use_secret_as_env(
            task, secret_name=cfg.mlflow_secret, secret_key_to_env=MLFLOW_ENV, optional=True
        )


def build_pipeline(cfg: ClusterConfig = CLUSTER) -> Any:
    """The pipeline (a KFP ``GraphComponent``) with the cluster settings of ``cfg``."""

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Certified unlearning of deletion requests: ingest (DVC) → train → layer sensitivity → "
        "unlearn (TRU) → certify → register (MLflow; champion only when certified).",
    )
    def unlearning(
        dataset: str = "lfm2k",
        backbone: str = "mgcn",
        method: str = "tru",
        policy: str = "",
        data_rev: str = "",
        repo: str = "",
        tracking_uri: str = "",
        image: str = IMAGE_GPU,
        cpu_image: str = IMAGE_CPU,
        requests: str = "",
        regime: str = "interaction",
        ratio: float = 0.05,
        seed: int = 0,
        epochs: int = 0,
        max_steps: int = 0,
        retrain: bool = True,
        audit_seeds: str = "0,1,2",
        reuse_champion: bool = True,
    ) -> str:
        """``dataset``: a name under the repository's data/ (or a dataset folder for a local run);
        ``data_rev``: the DVC / git revision; ``policy``: certification policy YAML text or path ('' =
        built-in); ``epochs`` / ``max_steps``: 0 = the configs' values."""
        ing = ingest(
            repo=repo, rev=data_rev, dataset=dataset, requests=requests, regime=regime, ratio=ratio, seed=seed
        )
        data, reqs = ing.outputs["data"], ing.outputs["deletion_requests"]
        tr = train(
            data=data,
            dataset_name=ing.outputs["dataset_name"],
            data_version=ing.outputs["data_version"],
            backbone=backbone,
            tracking_uri=tracking_uri,
            epochs=epochs,
            reuse_champion=reuse_champion,
        )
        se = sensitivity(data=data, model=tr.outputs["model"], deletion_requests=reqs)
        un = unlearn(
            data=data, model=tr.outputs["model"], deletion_requests=reqs, method=method, max_steps=max_steps
        ).after(se)
        ce = certify(
            data=data,
            original=tr.outputs["model"],
            unlearned=un.outputs["unlearned"],
            deletion_requests=reqs,
            policy=policy,
            retrain=retrain,
            audit_seeds=audit_seeds,
        )
        rg = register(
            unlearned=un.outputs["unlearned"],
            certificate=ce.outputs["certificate"],
            sensitivity=se.outputs["report"],
            dataset_name=ing.outputs["dataset_name"],
            backbone=backbone,
            data_version=ing.outputs["data_version"],
            tracking_uri=tracking_uri,
        )
        tasks = {"ingest": ing, "train": tr, "sensitivity": se, "unlearn": un, "certify": ce, "register": rg}
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
