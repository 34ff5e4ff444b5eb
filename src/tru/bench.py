"""The unlearning benchmark: backbone × dataset × regime × method (+ TRU ablations) × seeds.

Resumable: every finished cell appends one row to ``results.csv`` (keyed by dataset, backbone, regime,
strategy, ratio, seed, method); a rerun skips the keys already there. Per (dataset, backbone, seed) the
original model is trained once and cached under ``OUT/models``; per (…, regime) the requests are
generated once and the retrained model (the gold standard) is trained once, and every method is timed
against it in the same run. ``summarise`` writes ``results.md`` (mean ± std over seeds) and the
retain-vs-forget trade-off plot.
"""

from __future__ import annotations

import csv
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tru.certify.mia import interaction_mia
from tru.checkpoint import load_run, save_run
from tru.config import load_config
from tru.data.dataset import RecDataset, load_dataset
from tru.eval.evaluator import evaluate_pairs, per_pair_hit_rate
from tru.forget.generate import generate_requests
from tru.forget.requests import resolve_requests, write_requests
from tru.models import build_backbone
from tru.runfolder import has_model
from tru.train.trainer import Trainer
from tru.unlearn.api import run_unlearning, unlearn_config
from tru.utils import LOG

ABLATIONS = {"tru-no-rfg": {"rfg": False}, "tru-no-bms": {"bms": False}, "tru-no-cli": {"cli": False}}
METHODS = ("retrain", "finetune", "gradient_ascent", "mmrecun", "tru")
KEY = ("dataset", "backbone", "regime", "strategy", "ratio", "seed", "method")
COLUMNS = (
    *KEY,
    "seconds",
    "time_ratio",
    "steps",
    "params_changed",
    "params_total",
    "retain_recall@20",
    "retain_ndcg@20",
    "forget_hr@20",
    "forget_recall@20",
    "mia_auc",
    "stop_reason",
)


@dataclass
class BenchConfig:
    datasets: list[str]
    backbones: list[str] = field(default_factory=lambda: ["mgcn", "miggt"])
    regimes: list[str] = field(default_factory=lambda: ["user", "item", "interaction"])
    methods: list[str] = field(default_factory=lambda: [*METHODS, *ABLATIONS])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    strategy: str = "random"
    ratio: float = 0.05
    epochs: int | None = None
    unlearn: dict[str, Any] = field(default_factory=dict)
    mia_seeds: int = 3


def _done(path: Path) -> set[tuple[str, ...]]:
    if not path.is_file():
        return set()
    with open(path, newline="") as fh:
        return {tuple(row[k] for k in KEY) for row in csv.DictReader(fh)}


def _append(path: Path, row: dict[str, Any]) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)


def _original(ds: RecDataset, backbone: str, seed: int, epochs: int | None, cache: Path) -> tuple[Any, dict]:
    folder = cache / f"{ds.name}-{backbone}-s{seed}"
    cfg = load_config(backbone, ds.name, overrides={"seed": seed, "epochs": epochs})
    if has_model(folder):
        run = load_run(folder, ds)
        return run.model, run.config
    model = build_backbone(backbone, ds, cfg)
    result = Trainer(model, ds, cfg).fit()
    save_run(
        folder,
        model,
        cfg,
        ds,
        metrics={"valid": result.best_valid, "test": result.test},
        extra={"training": result.to_dict()},
    )
    return model, cfg


def cell_metrics(model: Any, ds: RecDataset, spec: Any, mia_seeds: int) -> dict[str, float]:
    n_u, n_i = ds.n_users, ds.n_items
    retain = evaluate_pairs(model, n_u, n_i, spec.test, spec.retain, [20])
    forget = evaluate_pairs(model, n_u, n_i, spec.forget, spec.retain, [20])
    return {
        "retain_recall@20": retain["recall@20"],
        "retain_ndcg@20": retain["ndcg@20"],
        "forget_recall@20": forget["recall@20"],
        "forget_hr@20": per_pair_hit_rate(model, n_u, n_i, spec.forget, spec.retain, 20)[0],
        "mia_auc": float(interaction_mia(model, ds, spec, tuple(range(mia_seeds)))["auc"]),
    }


def run_bench(cfg: BenchConfig, out: Path) -> Path:
    """Run every missing cell of the matrix; returns the results CSV."""
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.csv"
    done = _done(results)
    for data_dir, backbone, seed in itertools.product(cfg.datasets, cfg.backbones, cfg.seeds):
        ds = load_dataset(Path(data_dir))
        original = None
        for regime in cfg.regimes:
            keys = {
                m: (ds.name, backbone, regime, cfg.strategy, str(cfg.ratio), str(seed), m)
                for m in ["original", *cfg.methods]
            }
            if all(k in done for k in keys.values()):
                continue
            if original is None:
                original, model_cfg = _original(ds, backbone, seed, cfg.epochs, out / "models")
            reqs = generate_requests(ds, regime, cfg.strategy, cfg.ratio, seed)
            (out / "requests").mkdir(exist_ok=True)
            write_requests(out / "requests" / f"{ds.name}-{regime}-{cfg.strategy}-s{seed}.csv", reqs)
            spec = resolve_requests(ds, reqs)
            base = {
                "dataset": ds.name,
                "backbone": backbone,
                "regime": regime,
                "strategy": cfg.strategy,
                "ratio": cfg.ratio,
                "seed": seed,
            }
            if keys["original"] not in done:
                _append(
                    results,
                    {
                        **base,
                        "method": "original",
                        "seconds": 0,
                        "steps": 0,
                        "params_changed": 0,
                        **cell_metrics(original, ds, spec, cfg.mia_seeds),
                    },
                )
            retrain_seconds = _retrain_seconds(results, base)
            for method in cfg.methods:
                if keys[method] in done:
                    continue
                name = "tru" if method in ABLATIONS else method
                ucfg = unlearn_config(model_cfg, {**cfg.unlearn, **ABLATIONS.get(method, {}), "seed": seed})
                LOG.info("bench %s %s %s seed %d: %s", ds.name, backbone, regime, seed, method)
                t0 = time.perf_counter()
                outcome = run_unlearning(name, original, ds, spec, model_cfg, ucfg)
                seconds = outcome.report.get("seconds", time.perf_counter() - t0)
                if method == "retrain":
                    retrain_seconds = seconds
                row = {
                    **base,
                    "method": method,
                    "seconds": round(seconds, 3),
                    "time_ratio": round(seconds / retrain_seconds, 4) if retrain_seconds else "",
                    "steps": outcome.report["steps"],
                    "params_changed": outcome.report["params_changed"],
                    "params_total": outcome.report["params_total"],
                    "stop_reason": outcome.report["stop_reason"],
                    **cell_metrics(outcome.model, ds, spec, cfg.mia_seeds),
                }
                _append(results, row)
    return results


def _retrain_seconds(results: Path, base: dict[str, Any]) -> float | None:
    if not results.is_file():
        return None
    df = pd.read_csv(results)
    sel = df[
        (df["method"] == "retrain")
        & (df["dataset"] == base["dataset"])
        & (df["backbone"] == base["backbone"])
        & (df["regime"] == base["regime"])
        & (df["seed"] == base["seed"])
    ]
    return float(sel["seconds"].iloc[-1]) if len(sel) else None


SUMMARY_METRICS = ("retain_recall@20", "forget_hr@20", "mia_auc", "time_ratio")
GAP_METRICS = ("forget_hr_gap", "mia_auc_gap", "retain_ratio")
GROUP = ["dataset", "backbone", "regime", "method"]


def with_retrain_gaps(df: pd.DataFrame, policy: Any = None) -> pd.DataFrame:
    """Add, per row, the distance to the same cell's retrained model (same dataset, backbone, regime,
    strategy, ratio, seed) and the default certification policy's verdict on the bench metrics:

        forget_hr_gap = HR_f − HR_f(retrain)      mia_auc_gap = |AUC − AUC(retrain)|
        retain_ratio  = R@20_retain / R@20_retain(retrain)
        passes        = mia_auc_gap ≤ tol ∧ retain_ratio ≥ r_min ∧ −deficit ≤ forget_hr_gap ≤ excess

    (``tru.certify.policy.Policy`` defaults: tol 0.05, r_min 0.97, excess 0.02, deficit 0.05). Rows without a
    retrain row get NaN and ``passes`` False."""
    from tru.certify.policy import Policy

    pol = policy or Policy()
    cell = ["dataset", "backbone", "regime", "strategy", "ratio", "seed"]
    ref = df[df["method"] == "retrain"].drop_duplicates(cell, keep="last")
    ref = ref[[*cell, "forget_hr@20", "mia_auc", "retain_recall@20"]].rename(
        columns={c: f"ref_{c}" for c in ("forget_hr@20", "mia_auc", "retain_recall@20")}
    )
    out = df.merge(ref, on=cell, how="left")
    out["forget_hr_gap"] = out["forget_hr@20"] - out["ref_forget_hr@20"]
    out["mia_auc_gap"] = (out["mia_auc"] - out["ref_mia_auc"]).abs()
    out["retain_ratio"] = out["retain_recall@20"] / out["ref_retain_recall@20"]
    out["passes"] = (
        (out["mia_auc_gap"] <= pol.mia_auc_tolerance)
        & (out["retain_ratio"] >= pol.retain_recall_min_ratio)
        & (out["forget_hr_gap"] <= pol.forget_hr_max_excess)
        & (out["forget_hr_gap"] >= -pol.forget_hr_max_deficit)
    )
    return out.drop(columns=[c for c in out.columns if c.startswith("ref_")])


def _mean_std(vals: pd.Series) -> str:
    vals = pd.to_numeric(vals, errors="coerce").dropna()
    if vals.empty:
        return "—"
    return f"{vals.mean():.3f} ± {vals.std(ddof=1):.3f}" if len(vals) > 1 else f"{vals.mean():.3f}"


def read_results(paths: Path | list[Path]) -> pd.DataFrame:
    """One frame from one or more results CSVs (later files win on duplicate keys)."""
    paths = [paths] if isinstance(paths, Path) else list(paths)
    df = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    return df.drop_duplicates(list(KEY), keep="last")


def _table(df: pd.DataFrame, cols: list[str], skip: tuple[str, ...] = ()) -> list[str]:
    """Markdown rows (mean ± std over seeds) per dataset × backbone × regime × method."""
    order = {m: i for i, m in enumerate(["original", *METHODS, *ABLATIONS])}
    lines = [
        "| dataset | backbone | regime | method | n | " + " | ".join(cols) + " | policy pass |",
        "|" + "---|" * (6 + len(cols)),
    ]
    groups = [g for g in df.groupby(GROUP, sort=False) if g[0][3] not in skip]
    for (dset, bb, regime, method), g in sorted(groups, key=lambda g: (*g[0][:3], order.get(g[0][3], 99))):
        cells = [_mean_std(g[m]) for m in cols]
        passed = "—" if method in ("original", "retrain") else f"{int(g['passes'].sum())}/{len(g)}"
        lines.append(
            f"| {dset} | {bb} | {regime} | {method} | {len(g)} | " + " | ".join(cells) + f" | {passed} |"
        )
    return lines


def summarise(results: Path | list[Path], out: Path | None = None) -> Path:
    """``results.md``: the distance to retrain (:func:`with_retrain_gaps`: time ratio, forget HR@20 gap, MIA
    AUC gap, retain Recall@20 ratio, seeds passing the default policy), then every metric, mean ± std over
    seeds per dataset × backbone × regime × method; plus the retain-vs-forget trade-off plot. Returns the
    Markdown path."""
    paths = [results] if isinstance(results, Path) else list(results)
    df = with_retrain_gaps(read_results(paths))
    out = out or paths[0].parent
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "## Distance to retrain (mean ± std over seeds; policy: tru.certify.policy defaults)",
        "",
        *_table(df, ["time_ratio", *GAP_METRICS], skip=("retrain",)),
        "",
        "## All metrics",
        "",
        *_table(df, [*SUMMARY_METRICS, *GAP_METRICS]),
    ]
    md = out / "results.md"
    md.write_text("\n".join(lines) + "\n")
    _plot_tradeoff(df, out / "tradeoff.png")
    return md


def _plot_tradeoff(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(df.groupby(["dataset", "backbone", "regime"]))
    cols = min(3, len(panels)) or 1
    rows = -(-len(panels) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    markers = dict(zip(["original", *METHODS, *ABLATIONS], "*osD^vPXp"))
    for ax, ((dset, bb, regime), g) in zip(axes.flat, panels):
        for method, gm in g.groupby("method"):
            x = pd.to_numeric(gm["forget_hr@20"], errors="coerce")
            y = pd.to_numeric(gm["retain_recall@20"], errors="coerce")
            ax.errorbar(
                x.mean(),
                y.mean(),
                xerr=np.nan_to_num(x.std()),
                yerr=np.nan_to_num(y.std()),
                marker=markers.get(method, "o"),
                label=method,
                capsize=2,
                linestyle="none",
            )
        ax.set_title(f"{dset} / {bb} / {regime}", fontsize=9)
        ax.set_xlabel("forget HR@20 (per pair; retrain = target)")
        ax.set_ylabel("retain Recall@20")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
