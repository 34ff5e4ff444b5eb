"""``tru certify``: audit an unlearned model against the original and (when given) a retrained one,
check the policy, and write ``certificate.json``, ``report.html`` and the plots atomically.

Evidence levels: with a retrained model every check compares with Retrain ("retrain comparison");
without one the retrain-free targets of tru-method.md §7 stand in ("retrain-free (weaker than retrain
comparison)"): forget HR@20 against :func:`~tru.certify.forgetting.retrain_free_forget_target`, retain
Recall@20 against the original's, and the MIA AUC against 0.5 (interaction regime: deleted and held-out
pairs are exchangeable for a model that never saw them) or, when whole users / items are deleted,
against the AUC of the re-initialised proxy (a never-seen user's or item's scores are not those of a
held-out pair, so 0.5 is not the never-seen value there).

The certificate holds counts, request ids and a hash of D_f, never the deleted interactions."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tru.certify import forgetting as fg
from tru.certify import mia
from tru.certify.output import CertifyError, check_out, clean_json, write_outputs
from tru.certify.policy import Policy, load_policy, run_checks
from tru.certify.report import build_images, render_html
from tru.checkpoint import LoadedRun, load_run, pairs_fingerprint
from tru.data.dataset import DataError, RecDataset
from tru.forget.spec import ForgetSpec
from tru.utils import git_commit

DEFAULT_SEEDS = (0, 1, 2, 3, 4)
EVIDENCE_RETRAIN = "retrain comparison"
EVIDENCE_FREE = "retrain-free (weaker than retrain comparison)"
UNLEARN_FILE = "unlearn.json"
CERT_FILE = "certificate.json"
REPORT_FILE = "report.html"


@dataclass
class ModelRun:
    """A loaded model with its run folder and, for unlearned runs, the parsed ``unlearn.json``."""

    run: LoadedRun
    folder: Path | None = None
    unlearn: dict[str, Any] | None = None


@dataclass
class AuditOptions:
    max_pairs: int = 20000  # cap per pool (retain sample, held-out, D_f) of the interaction-level audit
    max_users: int = 2000  # retained users sampled for the user-level audit
    n_boot: int = 200  # bootstrap resamples for the interval on the first seed
    batch_size: int | None = None  # users per score block (default: a 32 MiB block)
    seed: int = 0  # pools and the proxy's re-initialisation


def read_unlearn_meta(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / UNLEARN_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object (method, seconds, steps, params_changed, ...)")
    for key in ("seconds", "params_changed", "params_total", "steps"):
        if key in raw and raw[key] is not None and not isinstance(raw[key], int | float):
            raise DataError(f"{path}: field '{key}' must be a number, got {raw[key]!r}")
    return raw


def open_run(folder: Path | str, dataset: RecDataset, device: str | torch.device | None = None) -> ModelRun:
    """Load a run folder (``model.pt`` + ``run.json``, plus ``unlearn.json`` when present)."""
    folder = Path(folder)
    return ModelRun(load_run(folder, dataset, device=device), folder, read_unlearn_meta(folder))


def _as_run(run: ModelRun | Path | str, dataset: RecDataset) -> ModelRun:
    return run if isinstance(run, ModelRun) else open_run(run, dataset)


def _training_seconds(mr: ModelRun) -> float | None:
    """Wall time that produced the run: ``tru train``'s training seconds, or for a model retrained by
    ``tru unlearn --method retrain`` (the pipeline's certify step) the unlearning report's seconds."""
    sec = (mr.run.meta.get("training") or {}).get("seconds")
    if not isinstance(sec, int | float) and (mr.unlearn or {}).get("method") == "retrain":
        sec = mr.unlearn.get("seconds")  # type: ignore[union-attr]
    return float(sec) if isinstance(sec, int | float) else None


def _n_trainable(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def _changed_params(a: torch.nn.Module, b: torch.nn.Module) -> int | None:
    """Number of parameter entries that differ between two models of one architecture."""
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    if pa.keys() != pb.keys() or any(pa[k].shape != pb[k].shape for k in pa):
        return None
    return int(sum(int((pa[k].detach().cpu() != pb[k].detach().cpu()).sum()) for k in pa))


def _model_block(mr: ModelRun, dataset: RecDataset, spec: ForgetSpec, opts: AuditOptions) -> dict[str, Any]:
    nu, ni, bs = dataset.n_users, dataset.n_items, opts.batch_size
    model = mr.run.model
    block: dict[str, Any] = {
        "run": str(mr.folder) if mr.folder else None,
        "backbone": model.name,
        "train_fingerprint": pairs_fingerprint(mr.run.train, ni),
        "n_train_pairs": len(mr.run.train),
    }
    block.update(fg.forget_efficacy(model, spec, nu, ni, bs))
    block.update(fg.retain_utility(model, spec, nu, ni, bs))
    return block


def _add_audit(block: dict[str, Any], audit: dict[str, Any], prefix: str) -> None:
    block[f"{prefix}_auc"] = audit["auc"]
    block[f"{prefix}_auc_ci95"] = audit["ci95"]
    block[f"{prefix}_auc_bootstrap_ci95"] = audit["bootstrap_ci95"]
    block[f"{prefix}_auc_seeds"] = audit["auc_seeds"]


def _consistency(name: str, mr: ModelRun, expected: str, what: str, n_items: int) -> dict[str, Any] | None:
    got = pairs_fingerprint(mr.run.train, n_items)
    if got == expected:
        return None
    return {
        "name": f"consistency_{name}",
        "passed": False,
        "value": None,
        "bound": what,
        "message": f"the {name} model was trained on {len(mr.run.train)} pairs (fingerprint {got[:12]}…), "
        f"not on {what}: its comparison does not certify these requests",
    }


def certify(
    dataset: RecDataset,
    spec: ForgetSpec,
    original: ModelRun | Path | str,
    unlearned: ModelRun | Path | str,
    retrained: ModelRun | Path | str | None = None,
    policy: Policy | None = None,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    out_dir: Path | str | None = None,
    options: AuditOptions | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Audit ``unlearned`` for the deletion ``spec`` and return the certificate (a JSON-safe dict); with
    ``out_dir`` also write it, the HTML report and the plots there atomically. Models are
    :class:`ModelRun` (see :func:`open_run`) or run folders, loaded on ``dataset``."""
    t0 = time.perf_counter()
    policy = policy or Policy()
    opts = options or AuditOptions()
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise CertifyError("certify: give at least one seed for the membership audits")
    if len(spec.forget) == 0:
        raise DataError(f"deletion requests for dataset {dataset.name!r}: D_f is empty, nothing to certify")
    if out_dir is not None:
        check_out(Path(out_dir), overwrite)
    original, unlearned = _as_run(original, dataset), _as_run(unlearned, dataset)
    retrained = _as_run(retrained, dataset) if retrained is not None else None
    nu, ni, bs = dataset.n_users, dataset.n_items, opts.batch_size
    notes: list[str] = []
    runs = {"original": original, "unlearned": unlearned} | ({"retrained": retrained} if retrained else {})
    blocks = {name: _model_block(mr, dataset, spec, opts) for name, mr in runs.items()}

    # membership inference, interaction level: the same pools for every model
    pop = np.bincount(spec.retain.items, minlength=ni).astype(np.float64)
    pools = mia.interaction_pools(spec, opts.max_pairs, opts.seed)
    audits: dict[str, dict[str, Any]] = {}
    models = {name: mr.run.model for name, mr in runs.items()}
    proxy_model = None
    ent = fg.entity_mask(spec)
    if retrained is None and ent.any():
        proxy_model, n_reinit = fg.reinit_proxy(original.run.model, spec, opts.seed)
        models["proxy"] = proxy_model
        notes.append(
            f"retrain-free proxy: the original model, graphs rebuilt from D_r, {n_reinit} ID-table "
            "entries re-drawn"
        )
    for name, model in models.items():
        feats = mia.interaction_features(model, pools, pop, nu, ni, bs)
        audits[name] = mia.interaction_audit(feats, seeds, opts.n_boot)
        if name in blocks:
            _add_audit(blocks[name], audits[name], "mia")

    # membership inference, user level (deleted users present)
    user_audits: dict[str, dict[str, Any]] = {}
    upools = mia.user_pools(spec, opts.max_users, opts.seed) if len(spec.users) else None
    shadow_name = "retrained" if retrained is not None else "original"
    if upools is not None:
        shadow = mia.user_features(models[shadow_name], upools, nu, ni, True, bs)
        for name, model in models.items():
            target = shadow if name == shadow_name else mia.user_features(model, upools, nu, ni, False, bs)
            user_audits[name] = mia.user_audit(shadow, target, seeds, opts.n_boot)
            if name in blocks:
                _add_audit(blocks[name], user_audits[name], "user_mia")
    elif len(spec.users):
        notes.append("user-level audit skipped: fewer than 4 retained users with held-out items")

    # efficiency
    u_meta = unlearned.unlearn or {}
    if unlearned.unlearn is None:
        notes.append(f"{UNLEARN_FILE} missing in the unlearned run: method, time and parameters unknown")
    blocks["unlearned"]["method"] = u_meta.get("method")
    blocks["unlearned"]["steps"] = u_meta.get("steps")
    blocks["original"]["seconds"] = _training_seconds(original)
    blocks["unlearned"]["seconds"] = u_meta.get("seconds")
    for name, mr in runs.items():
        total = _n_trainable(mr.run.model)
        blocks[name]["params_total"] = total
        blocks[name]["params_changed"] = total  # trained from scratch
    blocks["unlearned"]["params_changed"] = u_meta.get("params_changed")
    blocks["unlearned"]["params_total"] = u_meta.get("params_total", blocks["unlearned"]["params_total"])
    measured = _changed_params(original.run.model, unlearned.run.model)
    blocks["unlearned"]["params_changed_measured"] = measured
    if retrained is not None:
        blocks["retrained"]["seconds"] = _training_seconds(retrained)
        ref_sec, ref_src = blocks["retrained"]["seconds"], "retrained"
    else:
        ref_sec, ref_src = blocks["original"]["seconds"], "original training (retrain-free stand-in)"
    u_sec, p_changed = blocks["unlearned"]["seconds"], blocks["unlearned"]["params_changed"]
    p_changed = measured if p_changed is None else p_changed
    ok_time = (
        isinstance(u_sec, int | float) and isinstance(ref_sec, int | float) and ref_sec > 0 and u_sec > 0
    )
    efficiency = {
        "unlearned_seconds": u_sec,
        "reference_seconds": ref_sec,
        "reference_seconds_from": ref_src,
        "time_ratio": u_sec / ref_sec if ok_time else None,
        "speedup": ref_sec / u_sec if ok_time else None,
        "params_changed": p_changed,
        "params_changed_measured": measured,
        "params_total": blocks["unlearned"]["params_total"],
        "params_changed_fraction": (p_changed / blocks["unlearned"]["params_total"])
        if p_changed is not None and blocks["unlearned"]["params_total"]
        else None,
    }
    for name in runs:
        if blocks[name].get("seconds") is None:
            notes.append(
                f"{name}: no wall time recorded (run.json training.seconds / {UNLEARN_FILE} seconds)"
            )

    # closeness and the reference
    closeness: dict[str, dict[str, float]] = {}
    if retrained is not None:
        for name in ("unlearned", "original"):
            closeness[name] = fg.closeness(
                runs[name].run.model, retrained.run.model, spec.affected_users, spec.retain, nu, ni, fg.K, bs
            )
            blocks[name]["closeness_to_retrain"] = closeness[name]
        reference = {"kind": "retrain"} | {
            k: blocks["retrained"].get(k)
            for k in ("forget_hr@20", "mia_auc", "user_mia_auc", "retain_recall@20", "retain_ndcg@20")
            if k in blocks["retrained"]
        }
    else:
        target = fg.retrain_free_forget_target(
            original.run.model, original.run.train, spec, nu, ni, proxy_model, bs
        )
        reference = {
            "kind": "retrain-free",
            "forget_hr@20": target["forget_hr@20"],
            "forget_target": target,
            "retain_recall@20": blocks["original"]["retain_recall@20"],
            "retain_ndcg@20": blocks["original"]["retain_ndcg@20"],
        }
        if ent.any():
            reference["mia_auc"] = audits["proxy"]["auc"]
            reference["mia_reference"] = "AUC of the re-initialised proxy (deleted users / items present)"
        else:
            reference["mia_auc"] = 0.5
            reference["mia_reference"] = "0.5: deleted and held-out pairs are exchangeable when never seen"
        if "proxy" in user_audits:
            reference["user_mia_auc"] = user_audits["proxy"]["auc"]

    # policy
    ref_name = "Retrain" if retrained is not None else "the retrain-free target"
    checks = [
        c.__dict__
        for c in run_checks(policy, blocks["unlearned"], reference, ref_name, efficiency, retrained is None)
    ]
    fp_d, fp_r = pairs_fingerprint(dataset.train, ni), pairs_fingerprint(spec.retain, ni)
    for name, mr, fp, what in (
        ("original", original, fp_d, "the dataset's train split D"),
        ("unlearned", unlearned, fp_r, "the retain set D_r = D \\ D_f of these requests"),
        ("retrained", retrained, fp_r, "the retain set D_r = D \\ D_f of these requests"),
    ):
        bad = _consistency(name, mr, fp, what, ni) if mr is not None else None
        if bad:
            checks.append(bad)
    reasons = [c["message"] for c in checks if not c["passed"]]
    summary = spec.summary(ni)
    summary["n_noops"] = len(summary.pop("noops"))  # no-op messages name pairs: counts only
    cert: dict[str, Any] = {
        "format": "tru-certificate/1",
        "passed": not reasons,
        "reasons": reasons,
        "evidence": EVIDENCE_RETRAIN if retrained is not None else EVIDENCE_FREE,
        "regime": spec.regime,
        "checks": checks,
        "policy": policy.to_dict(),
        "requests": summary,
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint, "n_users": nu, "n_items": ni},
        "original": blocks["original"],
        "unlearned": blocks["unlearned"],
        "retrained": blocks.get("retrained"),
        "reference": reference,
        "closeness": closeness,
        "efficiency": efficiency,
        "mia": audits,
        "user_mia": user_audits,
        "audit": {
            "seeds": seeds,
            "pair_features": list(mia.PAIR_FEATURES),
            "user_features": list(mia.USER_FEATURES),
            "attack": "logistic regression on standardised features (scikit-learn)",
            "pools": pools.counts(),
            "user_pools": upools.counts() if upools is not None else None,
            "user_shadow_model": shadow_name if upools is not None else None,
        },
        "notes": notes,
        "code_version": git_commit(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    cert["certify_seconds"] = round(time.perf_counter() - t0, 3)
    cert = clean_json(cert)
    if out_dir is not None:
        images = build_images(cert, unlearned.unlearn, unlearned.folder, cert["notes"])
        files = {name: png for name, png in images.items()}
        files[REPORT_FILE] = render_html(cert, images).encode()
        files[CERT_FILE] = (json.dumps(cert, indent=2, allow_nan=False) + "\n").encode()
        write_outputs(Path(out_dir), files, overwrite)
    return cert


def run_certification(
    data_dir: Path | str,
    original_dir: Path | str,
    unlearned_dir: Path | str,
    requests_csv: Path | str,
    out_dir: Path | str,
    retrained_dir: Path | str | None = None,
    policy_path: Path | str | None = None,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    validate: bool = True,
    options: AuditOptions | None = None,
) -> dict[str, Any]:
    """What ``tru certify`` runs: load the dataset, the requests (resolved into a ForgetSpec), the policy
    and the runs; certify; write ``out_dir``. Every input is checked before anything is written."""
    from tru.data.dataset import load_dataset
    from tru.forget.requests import read_requests, resolve_requests
    from tru.utils import resolve_device

    if isinstance(device, str) or device is None:
        device = resolve_device(device or "auto")

    check_out(Path(out_dir), overwrite)
    policy = load_policy(policy_path)
    dataset = load_dataset(Path(data_dir), validate=validate)
    spec = resolve_requests(dataset, read_requests(requests_csv))
    original = open_run(original_dir, dataset, device)
    unlearned = open_run(unlearned_dir, dataset, device)
    retrained = open_run(retrained_dir, dataset, device) if retrained_dir is not None else None
    return certify(dataset, spec, original, unlearned, retrained, policy, seeds, out_dir, options, overwrite)
