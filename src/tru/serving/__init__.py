"""Serving: export a (unlearned) backbone to plain arrays and log them as an MLflow pyfunc model that
ranks top-K items per user with seen items masked, loadable without torch, tru or the dataset.

* :func:`tru.serving.export.build_servable` → :class:`~tru.serving.export.ServableArrays`
* :func:`tru.serving.mlflow_model.log_servable` → the model URI to register
* :class:`tru.serving.pyfunc.TruRecommender`: the model (a self-contained file, logged from code)
"""

from __future__ import annotations

from tru.serving.export import ServableArrays, ServableMeta, ServingExportError, build_servable
from tru.serving.mlflow_model import log_servable, pip_requirements, storage_uri

__all__ = [
    "ServableArrays",
    "ServableMeta",
    "ServingExportError",
    "build_servable",
    "log_servable",
    "pip_requirements",
    "storage_uri",
]
