"""The Kubeflow components of the unlearning pipeline, as installed with tru (``tru.kfp.components``):
one per task, named after it. This folder is the users' entry point; the definitions live in the
package so that a plain ``pip install .`` carries them to every pod and CI runner."""

from tru.kfp.components import certify, ingest, register, resolve_revision, sensitivity, train, unlearn

__all__ = ["certify", "ingest", "register", "resolve_revision", "sensitivity", "train", "unlearn"]
