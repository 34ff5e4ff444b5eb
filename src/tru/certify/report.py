"""The certificate's plots (PNG) and its self-contained HTML report (every image embedded as base64).

Plots: **the statistics on one axis** (``statistics.png``: per statistic, the candidate, the original and
a second retrain as multiples of the tolerance on their side, |v − c| / allowance with c = 0 for gaps and
W₁, 1 for ratios, so the tolerance is the line x = 1 for every statistic), the retain-vs-forget
trade-off (with the accepted region), the interaction-level MIA ROC curves, the MIA AUCs with their
user-clustered intervals, the layer-sensitivity heatmap (the PNG the unlearning run wrote, when it did)
and the branch scales α_b over the unlearning steps (TRU runs). A calibration's ``null.png`` shows the
null draws of every statistic on the same normalised axis."""

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
    "second_retrained": "tab:olive",
    "proxy": "tab:gray",
    "retrain-free": "tab:gray",
}


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _ok(x: Any) -> bool:
    return isinstance(x, int | float) and not math.isnan(x)


def _stat_row(cert: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((r for r in cert.get("statistics") or [] if r.get("name") == name), None)


def plot_tradeoff(cert: dict[str, Any]) -> bytes:
    """Forget HR@20 (x) against retain Recall@20 (y) per model; shaded: the accepted region (the forget
    HR gap's bounds around the reference, the retain Recall@20 ratio's floor)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ref = cert["reference"]
    r_hr, r_rec = ref.get("forget_hr@20"), ref.get("retain_recall@20")
    hr_row, rec_row = _stat_row(cert, "forget_hr_gap"), _stat_row(cert, "retain_recall_ratio")
    if _ok(r_hr):
        lo, hi = (hr_row or {}).get("bounds") or [None, None]
        if _ok(lo) and _ok(hi):
            ax.axvspan(r_hr + lo, r_hr + hi, color="tab:green", alpha=0.12, label="accepted: forget HR band")
        ax.axvline(r_hr, color="tab:gray", ls=":", lw=1, label=f"reference ({ref['kind']})")
    if _ok(r_rec):
        lo = ((rec_row or {}).get("bounds") or [None, None])[0]
        if _ok(lo):
            ax.axhline(lo * r_rec, color="tab:green", ls="--", lw=1, label="accepted: retain floor")
    for name in ("original", "unlearned", "retrained", "second_retrained"):
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


NORM_FLOOR = 0.01  # normalised distances below this sit on the axis' left edge (log scale)


def plot_statistics(cert: dict[str, Any]) -> bytes:
    """Per statistic (one row each), on one axis: the candidate, the original and a second retrain as
    multiples of the tolerance on their side (log scale; the tolerance is x = 1 for every row); a
    statistic that is not checked has no marker. The candidate's signed value is written beside."""
    rows = [r for r in cert.get("statistics") or [] if r.get("candidate") is not None]
    fig, ax = plt.subplots(figsize=(7.8, 0.55 * max(len(rows), 1) + 1.6))
    marks = (  # (key, marker, colour, label, vertical offset: the three never hide one another)
        ("candidate", "o", MODEL_COLOURS["unlearned"], "candidate", 0.0),
        ("original", "X", MODEL_COLOURS["original"], "original", -0.2),
        ("second_retrain", "D", MODEL_COLOURS["retrained"], "second retrain", 0.2),
    )
    seen: set[str] = set()
    xmax = 2.0
    for y, r in enumerate(rows):
        norm = r.get("normalised") or {}
        checked = bool(r.get("checked"))
        for key, marker, colour, label, dy in marks:
            v = norm.get(key) if checked else None  # a statistic without a tolerance: its value as text only
            if v is None:
                continue
            x = max(float(v), NORM_FLOOR)
            xmax = max(xmax, x)
            ax.scatter(
                x,
                y + dy,
                marker=marker,
                s=60,
                c=colour,
                zorder=3,
                edgecolors="k",
                linewidths=0.4,
                label=label if label not in seen else None,
            )
            seen.add(label)
        rng = r.get("second_retrain_range")
        tol = r.get("tolerance")
        if checked and rng and _ok(tol) and tol > 0:
            c = 1.0 if r.get("sided") == "lower" else 0.0
            lo, hi = (abs(v - c) / tol for v in rng)
            ax.plot(
                [max(min(lo, hi), NORM_FLOOR), max(lo, hi, NORM_FLOOR)],
                [y + 0.2, y + 0.2],
                c=MODEL_COLOURS["retrained"],
                lw=3,
                alpha=0.35,
                zorder=2,
            )
        status = "ok" if r.get("passed") else ("FAIL" if r.get("passed") is False else "–")
        tol_txt = f"tol {r['tolerance']:.3g}" if _ok(r.get("tolerance")) else "not checked"
        ax.annotate(
            f"{r['candidate']:+.3f} ({tol_txt}, {status})",
            (1.02, y),
            xycoords=("axes fraction", "data"),
            fontsize=7,
            va="center",
        )
    ax.axvline(1.0, color="k", ls="--", lw=1, label="tolerance")
    ax.axvspan(NORM_FLOOR, 1.0, color="tab:green", alpha=0.08)
    ax.set_xscale("log")
    ax.set_xlim(NORM_FLOOR * 0.8, xmax * 1.5)
    ax.set_yticks(range(len(rows)), [r.get("label", r["name"]) for r in rows], fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel("distance to the reference / tolerance (1 = the tolerance; log scale)")
    ref = (cert.get("reference") or {}).get("kind", "")
    ax.set_title(
        f"Statistics against {ref}: verdict {cert.get('verdict', '')} ({cert.get('tolerances', '')})",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def plot_null(cal: dict[str, Any]) -> bytes:
    """A calibration's null draws per statistic (excess / tolerance, retrain level), the plain 95 %
    quantile and the original's distances to each retrain, on one axis like :func:`plot_statistics`."""
    import numpy as np

    level = cal["tolerances"]["retrain"]
    names = list(level["statistics"])
    fig, ax = plt.subplots(figsize=(7.8, 0.55 * max(len(names), 1) + 1.6))
    rng = np.random.default_rng(0)
    xmax = 2.0
    for y, n in enumerate(names):
        st = level["statistics"][n]
        tol = st["tolerance"]
        draws = np.array([v for v in cal["null"]["retrain"]["samples"][n] if v is not None], dtype=float)
        if not _ok(tol) or tol <= 0 or len(draws) == 0:
            continue
        x = np.maximum(draws / tol, NORM_FLOOR)
        ax.scatter(
            x,
            y + rng.uniform(-0.2, 0.2, len(x)),
            s=3,
            c="tab:green",
            alpha=0.25,
            label="null draws (retrain vs retrain)" if y == 0 else None,
        )
        if _ok(st.get("quantile_plain")):
            ax.plot(
                [st["quantile_plain"] / tol] * 2,
                [y - 0.3, y + 0.3],
                c="tab:olive",
                lw=2,
                label="plain 95 % quantile" if y == 0 else None,
            )
        orig = [v for v in st.get("original_excess") or [] if v is not None]
        if orig:
            xo = np.maximum(np.array(orig) / tol, NORM_FLOOR)
            xmax = max(xmax, float(xo.max()))
            ax.scatter(
                xo,
                [y] * len(xo),
                marker="X",
                s=60,
                c=MODEL_COLOURS["original"],
                edgecolors="k",
                linewidths=0.4,
                zorder=3,
                label="original vs each retrain" if y == 0 else None,
            )
        xmax = max(xmax, float(x.max()))
        ax.annotate(
            f"tol {tol:.3g}{' (floor)' if st.get('floored') else ''}",
            (1.02, y),
            xycoords=("axes fraction", "data"),
            fontsize=7,
            va="center",
        )
    ax.axvline(1.0, color="k", ls="--", lw=1, label="tolerance")
    ax.set_xscale("log")
    ax.set_xlim(NORM_FLOOR * 0.8, xmax * 1.5)
    ax.set_yticks(range(len(names)), [cal["statistics"][n]["label"] for n in names], fontsize=8)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel("excess / tolerance (log scale)")
    ax.set_title(
        f"Calibration null: K = {cal['k']} retrains, {cal['regime']} regime, "
        f"{cal['forget_set']['n_forget_pairs']} D_f pairs; joint level q = {level['level']:.3f}",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
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
    """Mean MIA AUC per model with its user-clustered 95 % interval; shaded: the accepted band."""
    names = [
        n
        for n in ("original", "unlearned", "retrained", "second_retrained")
        if cert.get(n) and _ok(cert[n].get("mia_auc"))
    ]
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for x, name in enumerate(names):
        b = cert[name]
        lo, hi = b.get("mia_auc_ci95") or [None, None]
        err = [[b["mia_auc"] - lo], [hi - b["mia_auc"]]] if _ok(lo) and _ok(hi) else None
        ax.bar(x, b["mia_auc"], color=MODEL_COLOURS[name], yerr=err, capsize=6)
    ref = cert["reference"].get("mia_auc")
    if _ok(ref):
        ax.axhline(ref, color="k", ls=":", lw=1, label=f"reference ({ref:.3f})")
        lo, hi = (_stat_row(cert, "mia_auc_gap") or {}).get("bounds") or [None, None]
        if _ok(lo) and _ok(hi):
            ax.axhspan(ref + lo, ref + hi, color="tab:green", alpha=0.12, label="accepted band")
        ax.legend(fontsize=7)
    ax.set_xticks(range(len(names)), names, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("interaction-level MIA AUC")
    ax.set_title("Membership inference (user-clustered 95 % interval)")
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
    "user_mia_auc",
    "user_mia_auc_ci95",
    "diff_auc",
    "diff_auc_ci95",
    "forget_rank_pct_mean",
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


def _fmt_bounds(b: Any) -> str:
    if not isinstance(b, list) or len(b) != 2:
        return "–"
    lo, hi = b
    if lo is None and hi is None:
        return "not checked"
    return f"[{_num(lo) if lo is not None else '−∞'}, {_num(hi) if hi is not None else '+∞'}]"


def _ok_cell(x: Any) -> str:
    return "–" if x is None else ("ok" if x else "<b class='fail'>FAILED</b>")


def render_html(cert: dict[str, Any], images: dict[str, bytes]) -> str:
    """A self-contained HTML page: verdict, reasons, statistics (candidate / original / second retrain /
    bounds), checks, metrics, closeness, efficiency, plots."""
    verdict = str(cert.get("verdict", "failed"))
    models = [n for n in ("original", "unlearned", "retrained", "second_retrained") if cert.get(n)]
    cls = {"passed": "pass", "failed": "fail"}.get(verdict, "warn")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>tru unlearning certificate</title><style>",
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px;text-align:right}th{background:#f3f3f3}.pass{color:#137333}.fail{color:#b3261e}"
        ".warn{background:#fff4e5;border:1px solid #f0b429;padding:6px 10px}img{max-width:48%;margin:4px}"
        "img.wide{max-width:100%}",
        "</style></head><body>",
        f"<h1>Unlearning certificate: <span class='{cls}'>{_esc(verdict.upper())}</span></h1>",
        f"<p>Evidence: <b>{_esc(cert['evidence'])}</b>. "
        f"Tolerances: <b>{_esc(cert.get('tolerances', ''))}</b>. "
        f"Regime: {_esc(cert['regime'])}. Backbone: {_esc(cert['unlearned'].get('backbone'))}. "
        f"Method: {_esc(cert['unlearned'].get('method'))}; update: "
        f"<b>{_esc((cert.get('update') or {}).get('label', ''))}</b>"
        f"{_seed_noise_text(cert.get('update') or {})}. "
        f"Created {_esc(cert['created_at'])}.</p>",
    ]
    if cert["reference"]["kind"] != "retrain":
        parts.append(
            "<p class='warn'>No retrained model was given: the statistics compare with the retrain-free "
            "references of tru-method.md §7. This is weaker evidence than a comparison with full "
            "retraining.</p>"
        )
    if verdict == "inconclusive":
        parts.append("<p class='warn'>Inconclusive is never certified: no claim either way.</p>")
    reasons = cert["reasons"] or ["every statistic within its tolerance"]
    parts.append("<h2>Reasons</h2><ul>" + "".join(f"<li>{_esc(r)}</li>" for r in reasons) + "</ul>")
    if "statistics.png" in images:
        b64 = base64.b64encode(images["statistics.png"]).decode("ascii")
        parts.append(f"<img class='wide' alt='statistics' src='data:image/png;base64,{b64}'>")
    rows = [
        [
            _esc(r.get("label", r["name"])),
            _num(r.get("candidate")),
            _num(r.get("candidate_ci95")),
            _num(r.get("original")),
            _num(r.get("second_retrain")),
            _fmt_bounds(r.get("bounds")),
            _esc(r.get("tolerance_source", "")),
            _ok_cell(r.get("passed")),
            _ok_cell(r.get("original_passed")),
        ]
        for r in cert.get("statistics") or []
    ]
    parts.append(
        "<h2>Statistics (signed, against the reference)</h2>"
        + _table(
            rows,
            [
                "statistic",
                "candidate",
                "95 % (users)",
                "original",
                "second retrain",
                "accepted",
                "tolerance",
                "candidate",
                "original",
            ],
        )
    )
    rows = [
        [_esc(c["name"]), _ok_cell(c["passed"]), _num(c["value"]), _esc(c["bound"])] for c in cert["checks"]
    ]
    parts.append("<h2>Checks</h2>" + _table(rows, ["check", "result", "value", "bound"]))
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
    if cert.get("calibration"):
        parts.append(
            "<h2>Calibration</h2>"
            + _table([[_esc(k), _num(v)] for k, v in cert["calibration"].items()], ["", ""])
        )
    parts.append(
        "<h2>Efficiency</h2>" + _table([[_esc(k), _num(v)] for k, v in cert["efficiency"].items()], ["", ""])
    )
    parts.append(
        "<h2>Requests</h2>" + _table([[_esc(k), _num(v)] for k, v in cert["requests"].items()], ["", ""])
    )
    parts.append("<h2>Plots</h2>")
    for name, png in images.items():
        if name == "statistics.png":
            continue
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
    images = {"statistics.png": plot_statistics(cert), "tradeoff.png": plot_tradeoff(cert)}
    rocs = {n: a for n, a in cert["mia"].items() if isinstance(a, dict) and "roc" in a}
    images["mia_roc.png"] = plot_roc(rocs, "Interaction-level MIA ROC (seed 0)")
    images["mia_auc.png"] = plot_auc_bars(cert)
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


def _seed_noise_text(update: dict[str, Any]) -> str:
    """Say so when the candidate's start carried seed noise (tru.unlearn.seed_noise)."""
    sigma = float(update.get("seed_noise_sigma") or 0.0)
    return f", start with seed noise σ {sigma:.3g}" if sigma > 0 else ""
