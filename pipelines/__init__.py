"""Kubeflow pipelines of tru, as installed with the package: :mod:`pipelines.unlearning` (the definition,
``tru.kfp.pipeline``) and :mod:`pipelines.runner` (compile / run locally / submit / schedule,
``tru.kfp.runner``). This folder is the users' entry point; ``tru pipeline compile --out FILE`` writes the
compiled YAML."""
