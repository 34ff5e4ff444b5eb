"""Membership-inference audits (tru-method.md §8).

**Interaction level.** Features of a pair (u, i), from u's raw scores s_u· over all n items:
score s_ui; rank percentile r = #{j : s_uj > s_ui} / (n − 1) (0 = top); z = (s_ui − mean s_u·) / std s_u·;
gap = s_ui − mean of u's top-20 scores; log(1 + popularity of i in D_r), leaving out the pair itself
for members (otherwise every member has popularity ≥ 1 and a held-out pair may not, a model-free
leak). The attack is a logistic
regression on standardised features, trained on the audited model's own scores for a sample of D_r pairs
(members, label 1) against half of the held-out pairs valid' ∪ test' (non-members, 0), and evaluated as
ROC AUC on D_f (1) against the other half (0). Each seed draws another member sample and another
split into halves. MMRec splits are random per user, so for Retrain D_f and held-out pairs are
exchangeable: its AUC is ≈ 0.5, and the original model's is the upper reference.

**User level** (user regime). A *profile* is a user with a set of items H. Features of a profile, from
u's scores: mean rank percentile of H, mean and max z of H, the share of H in u's top-100, and the mean
margin (s_ui − τ_u) / std s_u· with τ_u the 100th best score. The profile's size is left out (it would
reveal which split it came from). The attack is trained on a *shadow* model (Retrain when given, else
the original): members are retained users with H = their D_r items, non-members the same kind of users
with H = their held-out items (history the shadow never trained on). It is evaluated on the audited
model: deleted users with H = their deleted items (1) against other retained users' held-out profiles
(0), the stand-in for never-seen users (no user in the data is absent from training). Compare the AUC
with Retrain's, never with 0.5: a never-seen user's scores are not those of a held-out profile."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats as sps
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from tru.certify.forgetting import empty_history, pair_blocks
from tru.data.dataset import Pairs, RecDataset
from tru.eval.rank import counts_above
from tru.forget.spec import ForgetSpec
from tru.models.base import Recommender

PAIR_FEATURES = ("score", "rank_pct", "z", "gap_top20", "log_pop")
USER_FEATURES = ("mean_rank_pct", "mean_z", "max_z", "top100_share", "mean_margin100")
ROC_GRID = np.linspace(0.0, 1.0, 101)


# ------------------------------------------------------------------------------------------ features
def score_statistics(
    model: Recommender, pairs: Pairs, n_users: int, n_items: int, batch_size: int | None = None
) -> np.ndarray:
    """Per pair (in ``pairs`` order): [s_ui, rank percentile, z, s_ui − top-20 mean, (s_ui − τ100) / std],
    all from u's unmasked scores over every item."""
    out = np.zeros((len(pairs), 5), dtype=np.float64)
    for blk in pair_blocks(model, pairs, empty_history(n_users, n_items), batch_size):
        scores = blk.ranked.scores
        s = scores[blk.rows, blk.items]
        mean, std = scores.mean(1), scores.std(1, correction=0).clamp_min(1e-12)
        top = torch.topk(scores, min(100, n_items), dim=1).values
        top20 = top[:, : min(20, n_items)].mean(1)
        above = counts_above(scores, blk.rows.cpu().numpy(), s)
        r = blk.rows
        cols = torch.stack(
            [
                s,
                above.float() / max(n_items - 1, 1),
                (s - mean[r]) / std[r],
                s - top20[r],
                (s - top[r, -1]) / std[r],
            ],
            1,
        )
        out[blk.index] = cols.double().cpu().numpy()
    return out


def _pairs_cat(parts: Sequence[Pairs]) -> Pairs:
    return Pairs(np.concatenate([p.users for p in parts]), np.concatenate([p.items for p in parts]))


# ------------------------------------------------------------------------------- interaction level
@dataclass
class InteractionPools:
    """The pairs audited, the same for every model so that AUCs are paired."""

    members: Pairs
    heldout: Pairs
    forget: Pairs

    def counts(self) -> dict[str, int]:
        return {"members_pool": len(self.members), "heldout": len(self.heldout), "forget": len(self.forget)}


def interaction_pools(spec: ForgetSpec, max_pairs: int = 20000, seed: int = 0) -> InteractionPools:
    rng = np.random.default_rng(seed)
    heldout = _pairs_cat([spec.valid, spec.test])
    return InteractionPools(
        spec.retain.sample(max_pairs, rng),
        heldout.sample(max_pairs, rng),
        spec.forget.sample(max_pairs, rng),
    )


def interaction_features(
    model: Recommender,
    pools: InteractionPools,
    popularity: np.ndarray,
    n_users: int,
    n_items: int,
    batch_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Feature matrices (columns :data:`PAIR_FEATURES`) for the members pool, held-out and D_f pairs."""
    groups = {"members": pools.members, "heldout": pools.heldout, "forget": pools.forget}
    allp = _pairs_cat(list(groups.values()))
    st = score_statistics(model, allp, n_users, n_items, batch_size)
    pop = popularity[allp.items].astype(np.float64)
    pop[: len(pools.members)] -= 1  # leave-one-out: a member's own interaction is not evidence
    feats = np.column_stack([st[:, :4], np.log1p(np.maximum(pop, 0))])
    out, start = {}, 0
    for name, p in groups.items():
        out[name] = feats[start : start + len(p)]
        start += len(p)
    return out


def _attack(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray) -> np.ndarray:
    """Membership score P(member | x) of a logistic regression on standardised features. A handful of
    features: one BLAS thread is faster than several contending ones."""
    with threadpool_limits(1):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        clf.fit(x_train, y_train)
        return clf.predict_proba(x_eval)[:, 1]


def bootstrap_auc_ci(
    pos: np.ndarray, neg: np.ndarray, n_boot: int = 200, seed: int = 0, level: float = 0.95
) -> list[float]:
    """Percentile interval of the AUC over stratified bootstrap resamples; AUC of one resample =
    (Σ ranks of positives − n₁(n₁+1)/2) / (n₁ n₀), ranks over the resample's pooled scores."""
    n1, n0 = len(pos), len(neg)
    if n1 == 0 or n0 == 0 or n_boot <= 0:
        return [math.nan, math.nan]
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // (n1 + n0))
    aucs = []
    for start in range(0, n_boot, chunk):
        reps = min(chunk, n_boot - start)
        s = np.concatenate([pos[rng.integers(0, n1, (reps, n1))], neg[rng.integers(0, n0, (reps, n0))]], 1)
        ranks = sps.rankdata(s, axis=1)
        aucs.append((ranks[:, :n1].sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0))
    a = np.concatenate(aucs)
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(a, tail)), float(np.percentile(a, 100 - tail))]


def summarise_aucs(
    aucs: Sequence[float], y0: np.ndarray, s0: np.ndarray, n_boot: int, seed: int
) -> dict[str, object]:
    """Mean AUC over seeds with the t-interval mean ± t₀.₉₇₅,ₙ₋₁ · sd / √n, a bootstrap interval and the
    ROC curve (TPR on a fixed FPR grid) of the first seed."""
    a = np.asarray(aucs, dtype=np.float64)
    mean = float(a.mean())
    if len(a) > 1:
        half = float(sps.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))
        ci = [mean - half, mean + half]
    else:
        ci = [math.nan, math.nan]
    fpr, tpr, _ = roc_curve(y0, s0)
    return {
        "auc": mean,
        "ci95": ci,
        "auc_seeds": [float(x) for x in a],
        "bootstrap_ci95": bootstrap_auc_ci(s0[y0 == 1], s0[y0 == 0], n_boot, seed),
        "roc": {"fpr": ROC_GRID.tolist(), "tpr": np.interp(ROC_GRID, fpr, tpr).tolist()},
        "n_eval_members": int((y0 == 1).sum()),
        "n_eval_nonmembers": int((y0 == 0).sum()),
    }


def _attack_round(
    members_train: np.ndarray, non_train: np.ndarray, members_eval: np.ndarray, non_eval: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """One audit round: train the attack on members (1) vs non-members (0), score the evaluation set;
    returns (labels, scores, training-set size)."""
    x_tr = np.concatenate([members_train, non_train])
    y_tr = np.r_[np.ones(len(members_train)), np.zeros(len(non_train))]
    x_ev = np.concatenate([members_eval, non_eval])
    y_ev = np.r_[np.ones(len(members_eval)), np.zeros(len(non_eval))]
    return y_ev, _attack(x_tr, y_tr, x_ev), len(y_tr)


def _summarise_rounds(
    rounds: list[tuple[np.ndarray, np.ndarray, int]], n_boot: int, seed: int
) -> dict[str, object]:
    """AUC per round, summarised; the first round's scores give the ROC and the bootstrap interval."""
    aucs = [roc_auc_score(y, s) for y, s, _ in rounds]
    y0, s0, n_train = rounds[0]
    out = summarise_aucs(aucs, y0, s0, n_boot, seed)
    out["n_train"] = n_train
    return out


def interaction_audit(
    feats: dict[str, np.ndarray], seeds: Sequence[int], n_boot: int = 200
) -> dict[str, object]:
    """Per seed: non-member halves A / B of the held-out pairs, a member sample of size |A| from the
    pool; train on members (1) vs A (0); AUC on D_f (1) vs B (0)."""
    held, mem, fgt = feats["heldout"], feats["members"], feats["forget"]
    if len(held) < 2 or len(mem) == 0 or len(fgt) == 0:
        raise ValueError("membership audit needs D_f pairs, retain pairs and at least 2 held-out pairs")
    rounds: list[tuple[np.ndarray, np.ndarray, int]] = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(held))
        a_idx, b_idx = perm[: len(held) // 2], perm[len(held) // 2 :]
        m_idx = rng.choice(len(mem), min(len(a_idx), len(mem)), replace=False)
        rounds.append(_attack_round(mem[m_idx], held[a_idx], fgt, held[b_idx]))
    return _summarise_rounds(rounds, n_boot, int(seeds[0]))


# -------------------------------------------------------------------------------------- user level
@dataclass
class UserPools:
    """Profiles audited at user level: deleted users' D_f items; a sample of retained users (with both
    D_r and held-out items), their D_r items and their held-out items."""

    deleted: Pairs
    users: np.ndarray
    train: Pairs
    heldout: Pairs

    def counts(self) -> dict[str, int]:
        return {"deleted_users": len(np.unique(self.deleted.users)), "retained_users": len(self.users)}


def user_pools(spec: ForgetSpec, max_users: int = 2000, seed: int = 0) -> UserPools | None:
    """``None`` when there are no deleted users, or fewer than 4 retained users with held-out items."""
    deleted = spec.forget.subset(np.isin(spec.forget.users, spec.users))
    heldout = _pairs_cat([spec.valid, spec.test])
    cand = np.intersect1d(np.unique(heldout.users), np.unique(spec.retain.users))
    cand = cand[~np.isin(cand, spec.users)]
    if len(deleted) == 0 or len(cand) < 4:
        return None
    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(cand, min(max_users, len(cand)), replace=False))
    return UserPools(
        deleted,
        users,
        spec.retain.subset(np.isin(spec.retain.users, users)),
        heldout.subset(np.isin(heldout.users, users)),
    )


def profile_features(stats: np.ndarray, users: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Aggregate pair statistics into one row (columns :data:`USER_FEATURES`) per user of ``order``
    (every user of ``order`` must own at least one pair)."""
    inv = np.searchsorted(order, users)
    cnt = np.bincount(inv, minlength=len(order)).astype(np.float64)
    if (cnt == 0).any():
        raise ValueError("profile_features: a user of the profile list has no items")

    def mean(col: np.ndarray) -> np.ndarray:
        return np.bincount(inv, weights=col, minlength=len(order)) / cnt

    max_z = np.full(len(order), -np.inf)
    np.maximum.at(max_z, inv, stats[:, 2])
    return np.column_stack(
        [
            mean(stats[:, 1]),
            mean(stats[:, 2]),
            max_z,
            mean((stats[:, 4] >= 0).astype(float)),
            mean(stats[:, 4]),
        ]
    )


def user_features(
    model: Recommender,
    pools: UserPools,
    n_users: int,
    n_items: int,
    with_train: bool,
    batch_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Profile features: ``deleted`` (one row per deleted user), ``heldout`` and, for the shadow,
    ``train`` (one row per user of ``pools.users``, in that order)."""
    groups = {"deleted": pools.deleted, "heldout": pools.heldout}
    if with_train:
        groups["train"] = pools.train
    allp = _pairs_cat(list(groups.values()))
    st = score_statistics(model, allp, n_users, n_items, batch_size)
    out, start = {}, 0
    for name, p in groups.items():
        order = np.unique(p.users) if name == "deleted" else pools.users
        out[name] = profile_features(st[start : start + len(p)], p.users, order)
        start += len(p)
    return out


def user_audit(
    shadow: dict[str, np.ndarray],
    target: dict[str, np.ndarray],
    seeds: Sequence[int],
    n_boot: int = 200,
) -> dict[str, object]:
    """Per seed: retained users split into halves A / B; train on the shadow's A profiles (D_r items: 1,
    held-out items: 0); AUC on the target's deleted users (1) vs B's held-out profiles (0)."""
    n = len(shadow["heldout"])
    rounds: list[tuple[np.ndarray, np.ndarray, int]] = []
    for seed in seeds:
        perm = np.random.default_rng(seed).permutation(n)
        a_idx, b_idx = perm[: n // 2], perm[n // 2 :]
        rounds.append(
            _attack_round(
                shadow["train"][a_idx], shadow["heldout"][a_idx], target["deleted"], target["heldout"][b_idx]
            )
        )
    return _summarise_rounds(rounds, n_boot, int(seeds[0]))


def interaction_mia(
    model: Recommender, dataset: RecDataset, spec: ForgetSpec, seeds: Sequence[int] = (0, 1, 2)
) -> dict[str, object]:
    """The interaction-level audit of one model in one call (pools seeded by ``seeds[0]``; popularity
    counted in D_r): what the benchmark records per cell."""
    pools = interaction_pools(spec, seed=int(seeds[0]))
    popularity = np.bincount(spec.retain.items, minlength=dataset.n_items)
    feats = interaction_features(model, pools, popularity, dataset.n_users, dataset.n_items)
    return interaction_audit(feats, seeds)
