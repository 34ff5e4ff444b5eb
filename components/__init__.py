"""Kubeflow Pipelines components of the unlearning pipeline, one module per step.

Each is a lightweight Python component (``@dsl.component(base_image=..., install_kfp_package=False)``: the
project's image already holds kfp and tru) whose body imports :mod:`tru.mlops.steps` (or
:mod:`tru.mlops.release_steps`) and calls one step; the components only move artifacts in and out.
The function names are the pipeline's task names."""

from components.certify import certify
from components.ingest import ingest
from components.layer_sensitivity import sensitivity
from components.register import register
from components.train_backbone import train
from components.tru_unlearn import unlearn

__all__ = ["certify", "ingest", "register", "sensitivity", "train", "unlearn"]
