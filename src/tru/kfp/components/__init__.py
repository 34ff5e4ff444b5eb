"""Kubeflow components of the unlearning pipeline, one module per task, named after it.

Each is a lightweight Python component (``@dsl.component(base_image=..., install_kfp_package=False)``:
the project's image already holds kfp and tru) whose body calls one :mod:`tru.steps` step; the
components only move artifacts in and out. The function names are the pipeline's task names."""

from tru.kfp.components.certify import certify
from tru.kfp.components.ingest import ingest
from tru.kfp.components.register import register
from tru.kfp.components.resolve_revision import resolve_revision
from tru.kfp.components.sensitivity import sensitivity
from tru.kfp.components.train import train
from tru.kfp.components.unlearn import unlearn

__all__ = ["certify", "ingest", "register", "resolve_revision", "sensitivity", "train", "unlearn"]
