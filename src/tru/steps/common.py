"""What the steps share: loading the dataset with a manifest, copying run folders, flattening metrics."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from tru.data.dataset import DataError, RecDataset
from tru.forget.requests import DeletionRequest
from tru.forget.spec import ForgetSpec
from tru.runfolder import CHECKPOINT_FILES

REQUESTS_PATH = "data/deletions/requests.csv"
EMPTY_METHOD = "none"


def copy_tree(src: Path, dst: Path) -> None:
    """Copy a folder into ``dst``, which must not exist or be empty."""
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise DataError(f"{dst}: output exists and is not empty")
    shutil.copytree(src, dst, dirs_exist_ok=True)


def copy_model(src: Path, dst: Path) -> None:
    """Copy a model's files (:data:`tru.runfolder.CHECKPOINT_FILES`) from ``src`` into ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in CHECKPOINT_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def load_inputs(data_dir: Path, requests_csv: Path) -> tuple[RecDataset, list[DeletionRequest], ForgetSpec]:
    """The dataset (validated once, by ingest), the requests of ``requests_csv`` and their resolution."""
    from tru.data.dataset import load_dataset
    from tru.forget.requests import read_requests, resolve_requests

    dataset = load_dataset(Path(data_dir), validate=False)
    requests = read_requests(Path(requests_csv))
    return dataset, requests, resolve_requests(dataset, requests)


def unlearn_cfg(model_config: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    from tru.unlearn.api import unlearn_config

    return unlearn_config(model_config, overrides)


def flat_metrics(tree: Any, prefix: str = "", depth: int = 3) -> dict[str, float]:
    """Finite numeric leaves of nested dicts as ``a.b.c`` names (``@`` written ``_at_``; lists skipped)."""
    out: dict[str, float] = {}
    if not isinstance(tree, dict) or depth == 0:
        return out
    for key, val in tree.items():
        name = f"{prefix}{key}".replace("@", "_at_")
        if isinstance(val, bool):
            continue
        if isinstance(val, int | float) and math.isfinite(float(val)):
            out[name] = float(val)
        elif isinstance(val, dict):
            out.update(flat_metrics(val, f"{name}.", depth - 1))
    return out


def with_calibration(cfg: Any, folder: Path, dataset: RecDataset, spec: ForgetSpec, run: Any) -> Any:
    """The unlearning config ``cfg`` (:class:`tru.unlearn.config.UnlearnConfig`) with the seed-noise
    target of a ``tru calibrate`` folder (:mod:`tru.unlearn.seed_noise`), after checking that it covers
    this data, model, regime and deletion size (:meth:`tru.certify.calibration.Calibration.check_applies`,
    :class:`~tru.certify.output.CertifyError` otherwise; the number of retrains is the certificate's
    business, not this target's). A target already set (``seed_noise_auc``) wins; a backbone without seed
    noise, and a deletion without interaction pairs (the noise aims at none), take nothing from it; a
    calibration made before the measurement was recorded is refused where it would be used."""
    import dataclasses

    from tru.certify.calibration import Calibration
    from tru.certify.output import CertifyError
    from tru.certify.policy import Policy
    from tru.unlearn.seed_noise import aims_at, noise_target
    from tru.utils import LOG

    cal = Calibration.load(folder)
    cal.check_applies(
        dataset, spec, run.config, run.model.name, dataclasses.replace(Policy(), min_calibration_retrains=1)
    )
    if not cfg.seed_noise or cfg.seed_noise_auc > 0 or not aims_at(spec):
        LOG.info(
            "calibration %s: no seed-noise target taken (off, already set, or no interaction pairs)", folder
        )
        return cfg
    if "seed_noise" not in cal.document:
        raise CertifyError(
            f"calibration {folder}: it holds no seed-noise measurement (made before it was recorded); run "
            "`tru calibrate` again, or set seed_noise_auc"
        )
    if cal.seed_noise_auc is None:  # (a calibration of this regime with no interaction pair: none exists)
        return cfg
    return cfg.replace(seed_noise_auc=noise_target(cal.seed_noise_auc))
