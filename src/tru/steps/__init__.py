"""The unlearning pipeline's steps as plain typed functions: paths in, folders and dicts out. One module
per step; the Kubeflow components (:mod:`tru.kfp.components`) only move artifacts and call one of
these, and :mod:`tru.steps.chain` runs the six in process (``tru trigger --runner steps``)::

    ingest → train → sensitivity → unlearn → certify → register

* :func:`~tru.steps.ingest.ingest`: the dataset and the deletion manifest at a data revision, validated.
* :func:`~tru.steps.train.train`: the start model (the registry's champion when it fits this data,
  else an original trained on D) and the run's plan (:class:`tru.lifecycle.RunPlan`): what to forget.
* :func:`~tru.steps.sensitivity.sensitivity`: the layer-sensitivity probe for the planned requests.
* :func:`~tru.steps.unlearn.unlearn`: TRU (or the method asked; a retrain when a request is overdue).
* :func:`~tru.steps.certify.certify`: the signed certificate, and the compliance-fallback retrain.
* :func:`~tru.steps.register.register`: MLflow run + registry version; ``champion`` moves by
  compare-and-set on a certificate checked against the model.

The rules they follow are written once, in :mod:`tru.lifecycle`."""
