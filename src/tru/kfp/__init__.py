"""The Kubeflow Pipelines form of the unlearning pipeline, installed with the library (``pip install .``):

* :mod:`tru.kfp.components`: one lightweight component per task (``ingest``, ``resolve_revision``,
  ``train``, ``sensitivity``, ``unlearn``, ``certify``, ``register``), each a thin typed function that
  moves artifacts and calls one :mod:`tru.steps` step;
* :mod:`tru.kfp.pipeline`: the pipeline and its cluster settings (:class:`ClusterConfig`);
* :mod:`tru.kfp.runner`: compile, run locally (``kfp.local``), submit, schedule, and the trigger adapter.

The repository's top-level ``pipelines/`` and ``components/`` re-export these for users who look there."""
