"""The certificate's plots (PNG) and its self-contained HTML report (every image embedded as base64).

Plots: the retain-vs-forget trade-off (with the policy's acceptance region), the interaction-level MIA
ROC curves, the MIA AUCs with their intervals, the layer-sensitivity heatmap (the PNG the unlearning run
wrote, when it did) and the branch scales α_b over the unlearning steps (TRU runs)."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODEL_COLOURS = {
    "original": "tab:red",
    "unlearned": "tab:blue",
    "retrained": "tab:green",
    "proxy": "tab:gray",
}


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _ok(x: Any) -> bool:
    return isinstance(x, int | float) and not math.isnan(x)


def plot_tradeoff(cert: dict[str, Any]) -> bytes:
    """Forget HR@20 (x) against retain Recall@20 (y) per model; shaded: the policy's acceptance region."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ref, pol = cert["reference"], cert["policy"]
    r_hr, r_rec = ref.get("forget_hr@20"), ref.get("retain_recall@20")
    if _ok(r_hr) and _ok(r_rec):
        lo, hi = r_hr - pol["forget_hr_max_deficit"], r_hr + pol["forget_hr_max_excess"]
        floor = pol["retain_recall_min_ratio"] * r_rec
        ax.axvspan(lo, hi, color="tab:green", alpha=0.12, label="policy: forget band")
        ax.axhline(floor, color="tab:green", ls="--", lw=1, label="policy: retain floor")
        ax.axvline(r_hr, color="tab:gray", ls=":", lw=1, label=f"reference ({ref['kind']})")
    for name in ("original", "unlearned", "retrained"):
        block = cert.get(name)
        if block and _ok(block.get("forget_hr@20")) and _ok(block.get("retain_recall@20")):
            ax.scatter(
                block["forget_hr@20"], block["retain_recall@20"], s=70, c=MODEL_COLOURS[name], label=name
            )
    ax.set_xlabel("forget HR@20 (D_f pairs, each ranked alone)")
    ax.set_ylabel("retain Recall@20 (test, D_r masked)")
    ax.set_title("Retain utility vs forget efficacy")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_roc(rocs: dict[str, dict[str, Any]], title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for name, audit in rocs.items():
        roc = audit["roc"]
        ax.plot(roc["fpr"], roc["tpr"], c=MODEL_COLOURS.get(name), label=f"{name} (AUC {audit['auc']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_auc_bars(cert: dict[str, Any]) -> bytes:
    """Mean MIA AUC per model with its t-interval over seeds."""
    names = [n for n in ("original", "unlearned", "retrained") if cert.get(n) and _ok(cert[n].get("mia_auc"))]
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for x, name in enumerate(names):
        b = cert[name]
        lo, hi = b["mia_auc_ci95"]
        err = [[b["mia_auc"] - lo], [hi - b["mia_auc"]]] if _ok(lo) and _ok(hi) else None
        ax.bar(x, b["mia_auc"], color=MODEL_COLOURS[name], yerr=err, capsize=6)
    ref = cert["reference"].get("mia_auc")
    if _ok(ref):
        ax.axhline(ref, color="k", ls=":", lw=1, label=f"reference ({ref:.3f})")
        tol = cert["policy"]["mia_auc_tolerance"]
        ax.axhspan(ref - tol, ref + tol, color="tab:green", alpha=0.12, label="policy band")
        ax.legend(fontsize=7)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("interaction-level MIA AUC")
    ax.set_title("Membership inference (mean, 95 % t-interval)")
    return _png(fig)


def plot_alpha(alpha_history: list[dict[str, Any]]) -> bytes:
    """α_b over the unlearning steps, one line per branch."""
    steps = [int(h["step"]) for h in alpha_history]
    branches = sorted({b for h in alpha_history for b in h.get("alpha", {})})
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for b in branches:
        ax.plot(steps, [h.get("alpha", {}).get(b, math.nan) for h in alpha_history], label=b)
    ax.set_xlabel("unlearning step")
    ax.set_ylabel("branch scale α_b")
    ax.set_ylim(0, 1.05)
    ax.set_title("Branch-wise modality scaling over time")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


def read_png(path: Path) -> bytes | None:
    """The file's bytes if it is a PNG, else ``None``."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return data if data.startswith(PNG_MAGIC) else None


# -------------------------------------------------------------------------------------------- HTML
def _esc(x: Any) -> str:
    return html.escape(str(x))


def _num(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return _esc(x)
    if isinstance(x, float):
        return "n/a" if math.isnan(x) else f"{x:.4f}"
    if isinstance(x, list) and len(x) == 2 and all(isinstance(v, float) for v in x):
        return f"[{_num(x[0])}, {_num(x[1])}]"
    if isinstance(x, list) and len(x) > 20:
        return _esc(", ".join(map(str, x[:20])) + f" … ({len(x) - 20} more)")
    if isinstance(x, list):
        return _esc(", ".join(map(str, x)))
    return _esc(x)


METRIC_ROWS = (
    "mia_auc",
    "mia_auc_ci95",
    "mia_auc_bootstrap_ci95",
    "user_mia_auc",
    "user_mia_auc_ci95",
    "forget_hr@20",
    "forget_recall@20",
    "forget_ndcg@20",
    "retain_recall@20",
    "retain_ndcg@20",
    "retain_precision@20",
    "retain_map@20",
    "retain_recall@10",
    "retain_ndcg@10",
    "seconds",
    "params_changed",
    "params_total",
)


def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(cert: dict[str, Any], images: dict[str, bytes]) -> str:
    """A self-contained HTML page: verdict, reasons, checks, metrics, closeness, efficiency, plots."""
    passed = cert["passed"]
    models = [n for n in ("original", "unlearned", "retrained") if cert.get(n)]
    verdict = "PASSED" if passed else "FAILED"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>tru unlearning certificate</title><style>",
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px;text-align:right}th{background:#f3f3f3}.pass{color:#137333}.fail{color:#b3261e}"
        ".warn{background:#fff4e5;border:1px solid #f0b429;padding:6px 10px}img{max-width:48%;margin:4px}",
        "</style></head><body>",
        f"<h1>Unlearning certificate: <span class='{'pass' if passed else 'fail'}'>{verdict}</span></h1>",
        f"<p>Evidence: <b>{_esc(cert['evidence'])}</b>. Regime: {_esc(cert['regime'])}. "
        f"Backbone: {_esc(cert['unlearned'].get('backbone'))}. "
        f"Method: {_esc(cert['unlearned'].get('method'))}."
        f" Created {_esc(cert['created_at'])}.</p>",
    ]
    if cert["reference"]["kind"] != "retrain":
        parts.append(
            "<p class='warn'>No retrained model was given: the checks use the retrain-free targets of "
            "tru-method.md §7. This is weaker evidence than a comparison with full retraining.</p>"
        )
    reasons = cert["reasons"] or ["all checks passed"]
    parts.append("<h2>Reasons</h2><ul>" + "".join(f"<li>{_esc(r)}</li>" for r in reasons) + "</ul>")
    rows = [
        [
            _esc(c["name"]),
            "ok" if c["passed"] else "<b class='fail'>FAILED</b>",
            _num(c["value"]),
            _esc(c["bound"]),
        ]
        for c in cert["checks"]
    ]
    parts.append("<h2>Policy checks</h2>" + _table(rows, ["check", "result", "value", "bound"]))
    rows = [
        [_esc(m)] + [_num(cert[n].get(m)) for n in models] + [_num(cert["reference"].get(m))]
        for m in METRIC_ROWS
    ]
    parts.append(
        "<h2>Metrics</h2>" + _table(rows, ["metric", *models, f"reference ({cert['reference']['kind']})"])
    )
    if cert.get("closeness"):
        crow = [[_esc(n)] + [_num(v) for v in c.values()] for n, c in cert["closeness"].items()]
        header = ["model vs retrained", *next(iter(cert["closeness"].values())).keys()]
        parts.append("<h2>Closeness to Retrain (affected users)</h2>" + _table(crow, header))
    parts.append(
        "<h2>Efficiency</h2>" + _table([[_esc(k), _num(v)] for k, v in cert["efficiency"].items()], ["", ""])
    )
    parts.append(
        "<h2>Requests</h2>" + _table([[_esc(k), _num(v)] for k, v in cert["requests"].items()], ["", ""])
    )
    parts.append("<h2>Plots</h2>")
    for name, png in images.items():
        b64 = base64.b64encode(png).decode("ascii")
        parts.append(f"<img alt='{_esc(name)}' title='{_esc(name)}' src='data:image/png;base64,{b64}'>")
    if cert["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_esc(n)}</li>" for n in cert["notes"]) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def build_images(
    cert: dict[str, Any], unlearn_meta: dict[str, Any] | None, unlearned_dir: Path | None, notes: list[str]
) -> dict[str, bytes]:
    """Every plot as PNG bytes, keyed by file name; a missing input adds a note instead."""
    images = {"tradeoff.png": plot_tradeoff(cert)}
    rocs = {n: cert["mia"][n] for n in ("original", "unlearned", "retrained", "proxy") if n in cert["mia"]}
    images["mia_roc.png"] = plot_roc(rocs, "Interaction-level MIA ROC (seed 0)")
    images["mia_auc.png"] = plot_auc_bars(cert)
    if cert.get("user_mia"):
        images["user_mia_roc.png"] = plot_roc(cert["user_mia"], "User-level MIA ROC (seed 0)")
    meta = unlearn_meta or {}
    rel = meta.get("sensitivity_png")
    png = None
    if isinstance(rel, str) and rel and unlearned_dir is not None:
        path = (unlearned_dir / rel).resolve()
        if path.is_relative_to(unlearned_dir.resolve()):  # a relative path inside the run folder only
            png = read_png(path)
    if png is not None:
        images["sensitivity.png"] = png
    else:
        notes.append("sensitivity heatmap omitted: unlearn.json names no readable sensitivity_png")
    hist = meta.get("alpha_history")
    if isinstance(hist, list) and hist and all(isinstance(h, dict) and "step" in h for h in hist):
        images["alpha.png"] = plot_alpha(hist)
    else:
        notes.append("branch-scale plot omitted: unlearn.json has no alpha_history (not a TRU run?)")
    return images
