"""Log the servable as an MLflow ``pyfunc`` model (a *model from code*), and find where a registered
version's files live (for a KServe ``storageUri``).

Why models from code, not a pickled ``PythonModel`` with ``code_paths``: a pickled instance of
``tru.serving.pyfunc.TruRecommender`` is unpickled by reference to its module, so the serving process
would need ``tru`` importable (and ``tru/__init__`` pulls torch); ``code_paths`` would ship the module
under another name, which the pickle does not know. Logged from code, the model folder holds the
readable source of :mod:`tru.serving.pyfunc` (MLflow executes it at load), the arrays as ``.npz``, the
MLmodel file and the pinned requirements: no pickle at all, and only mlflow / numpy / pandas at serving.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tru.serving import pyfunc as _pyfunc
from tru.serving.export import SERVABLE_FILE, ServableArrays, ServingExportError

if TYPE_CHECKING:
    from mlflow.models import ModelSignature

#: the model-from-code file MLflow copies into the model folder
PYFUNC_FILE = Path(_pyfunc.__file__).resolve()
EXAMPLE_K = 5


def pip_requirements() -> list[str]:
    """The serving requirements, pinned to the versions installed here (no torch, no tru)."""
    import mlflow

    return [f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}", f"pandas=={pd.__version__}"]


def _example_users(arrays: ServableArrays) -> np.ndarray:
    """Two personalised users (or the first ids) and one unknown id: the example shows both paths."""
    pers = np.flatnonzero(arrays.personalised)[:2]
    if len(pers) == 0:
        pers = np.arange(min(2, arrays.meta.n_users))
    return np.concatenate([pers, [arrays.meta.n_users]]).astype(np.int64)


def servable_signature(example_input: pd.DataFrame, example_output: pd.DataFrame) -> ModelSignature:
    """Inputs ``user_id`` (long, required) and ``k`` (long, optional); params ``k`` (long, default 20);
    outputs as the example (``user_id``, ``rank``, ``item_id``, ``score``, ``personalised``)."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import ColSpec, Schema

    with_k = example_input.assign(k=np.full(len(example_input), EXAMPLE_K, dtype=np.int64))
    with warnings.catch_warnings():  # the hint that integer columns cannot hold missing values: known
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        inferred = infer_signature(with_k, example_output, params={"k": _pyfunc.DEFAULT_K})
    cols = [
        ColSpec(c.type, c.name, required=c.name != "k")
        for c in inferred.inputs.inputs  # type: ignore[union-attr]
    ]
    return ModelSignature(inputs=Schema(cols), outputs=inferred.outputs, params=inferred.params)


def log_servable(arrays: ServableArrays, *, name: str = "servable", run_id: str | None = None) -> str:
    """Log ``arrays`` as a pyfunc model named ``name`` in the active MLflow run (or in run ``run_id``,
    resumed and left in the status it had) and return the model URI to register (``models:/m-<id>``).

    The model carries a signature (``user_id`` long; optional ``k`` long; params ``k``), an input example
    (served through the model once at log time, a self-check), pinned ``pip_requirements`` and
    ``metadata["tru_servable"]`` (:class:`~tru.serving.export.ServableMeta`). Register it with
    ``mlflow.register_model(uri, "tru-<dataset>-<backbone>")``, or keep one request with
    ``MlflowClient().create_model_version(name, source=uri, run_id=run_id, tags=…,
    model_id=uri.removeprefix("models:/"))``."""
    import mlflow
    from mlflow import MlflowClient

    active = mlflow.active_run()
    if run_id is None and active is None:
        raise ServingExportError("log_servable: no active MLflow run; start one or pass run_id")
    if active is not None and run_id is not None and active.info.run_id != run_id:
        raise ServingExportError(
            f"log_servable: run {active.info.run_id} is active but run_id={run_id} was requested; end "
            "the active run or log into it"
        )
    with tempfile.TemporaryDirectory(prefix="tru-servable-") as tmp:
        npz = arrays.save(Path(tmp) / SERVABLE_FILE)
        example = pd.DataFrame({"user_id": _example_users(arrays)})
        out = _pyfunc.TruRecommender.from_npz(str(npz)).predict(None, example, {"k": EXAMPLE_K})
        kwargs: dict[str, Any] = {
            "name": name,
            "python_model": str(PYFUNC_FILE),
            "artifacts": {_pyfunc.ARTIFACT_KEY: str(npz)},
            "signature": servable_signature(example, out),
            "input_example": (example, {"k": EXAMPLE_K}),
            "pip_requirements": pip_requirements(),
            "metadata": {"tru_servable": asdict(arrays.meta)},
        }
        if active is not None:
            info = mlflow.pyfunc.log_model(**kwargs)
        else:
            assert run_id is not None
            client = MlflowClient()
            status = client.get_run(run_id).info.status
            with mlflow.start_run(run_id=run_id):
                info = mlflow.pyfunc.log_model(**kwargs)
            if status != "FINISHED":
                client.update_run(run_id, status=status)
    return str(info.model_uri)


def storage_uri(model_name: str, alias: str = "champion") -> str:
    """Where the files of ``model_name@alias`` live (the folder holding ``MLmodel``): the value of a
    KServe ``storageUri`` (``s3://…`` with an S3 artifact store, ``file://…`` locally)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    version = client.get_model_version_by_alias(model_name, alias)
    return str(client.get_model_version_download_uri(model_name, version.version))
