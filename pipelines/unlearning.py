"""The unlearning pipeline (re-exported from :mod:`tru.kfp.pipeline`, where it is defined)."""

from tru.kfp.pipeline import (
    CLUSTER,
    GPU_TASKS,
    LOCAL,
    PIPELINE_NAME,
    TASKS,
    ClusterConfig,
    build_pipeline,
    parameters,
)

__all__ = [
    "CLUSTER",
    "GPU_TASKS",
    "LOCAL",
    "PIPELINE_NAME",
    "TASKS",
    "ClusterConfig",
    "build_pipeline",
    "parameters",
]
