"""The layer-sensitivity step (``tru sensitivity``): probe a trained model for a set of deletion
requests, write the per-unit scores as JSON and draw them as a heatmap (units × score)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tru.data.dataset import RecDataset
from tru.forget.spec import ForgetSpec
from tru.models.base import Recommender
from tru.unlearn.config import UnlearnConfig
from tru.unlearn.engine import _exact_users, make_streams
from tru.unlearn.isolation import probe, sensitivity_report


def run_sensitivity(
    model: Recommender, dataset: RecDataset, spec: ForgetSpec, cfg: UnlearnConfig | dict[str, Any]
) -> dict[str, Any]:
    """Probe ``model`` as the unlearning methods see it (rebuilt on D_r; with ``exact`` the untrained
    rows set, :func:`tru.unlearn.api.prepare_start`) and return the report. ``tru unlearn`` /
    ``run_unlearning(..., sensitivity=report)`` reuse its ``selection`` instead of probing again; the
    report carries ``forget_commitment`` so it is never applied to another forget set. ``model`` is
    changed in place (rebuilt): pass a copy to keep it."""
    from tru.unlearn.api import prepare_start

    cfg = UnlearnConfig.from_dict(cfg)
    exact = prepare_start(model, spec, cfg)
    skip = _exact_users(model, exact)
    fstream, rstream = make_streams(model, spec, dataset.n_users, dataset.n_items, cfg, skip)
    commitment = spec.forget_commitment(dataset.n_items)
    if fstream is None:  # every deleted pair belongs to a user the exact part reset
        return {"skipped": "every D_f pair belongs to a row the exact part set", "selection": [],
                "units": [], "params_selected": 0, "forget_commitment": commitment}  # fmt: skip
    parts = probe(model, spec, fstream, rstream, cfg)
    for p in model.parameters():
        p.grad = None
    return {**sensitivity_report(parts, cfg), "forget_commitment": commitment}


def plot_sensitivity(report: dict[str, Any], path: Path) -> Path:
    """Heatmap: one row per unit part; columns log10 of ‖g_f‖/√n, ‖g_r‖/√n and the score S_l;
    selected units are marked ✓ with their rank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = report["units"]
    cols = ["forget ‖g_f‖/√n", "retain ‖g_r‖/√n", "score S"]
    mat = np.array(
        [
            [
                u["forget_norm"] / max(u["n_params"], 1) ** 0.5,
                u["retain_norm"] / max(u["n_params"], 1) ** 0.5,
                u["score"],
            ]
            for u in units
        ]
    )
    logm = np.log10(np.maximum(mat, 1e-12))
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(units) + 1.6))
    im = ax.imshow(logm, aspect="auto", cmap="magma")
    ax.set_xticks(range(len(cols)), cols)
    labels = [
        f"{'✓ ' if u['selected'] else ''}{u['label']} ({u['branch']}, {u['n_params']:,})" for u in units
    ]
    ax.set_yticks(range(len(units)), labels, fontsize=8)
    for i in range(len(units)):
        for j in range(len(cols)):
            ax.text(
                j,
                i,
                f"{mat[i, j]:.2g}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if logm[i, j] < logm.mean() else "black",
            )
    fig.colorbar(im, ax=ax, label="log10")
    ax.set_title(
        f"Layer sensitivity: {report['params_selected']:,} of {report['params_total']:,} parameters "
        f"selected (budget {report['capacity_ratio']:.0%} of non-ID)",
        fontsize=9,
    )
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
