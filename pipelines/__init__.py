"""Kubeflow pipelines of tru: :mod:`pipelines.unlearning` (the definition) and :mod:`pipelines.runner`
(compile / run locally / submit / schedule)."""
