"""The statistics of certificate revision 2 (``shared/docs/certification.md`` §2), between a candidate model
C and a reference R (a retrain, or the retrain-free reference of tru-method.md §7), with intervals that
cluster by user.

**Design.** Everything that must be the same for every model compared is drawn once per forget set
(:class:`AuditDesign`): the D_f pool (≤ ``max_pairs`` pairs), the membership-audit pools (a D_r sample,
a held-out sample valid ∪ test), the attack splits per audit seed, the user folds of the cross-fitted
attacks, the deleted and member users of the user-level audit and the retained test users.

**Evidence.** Per model, :func:`model_evidence` keeps what the statistics need, per pair or per user:

* D_f rank percentiles p_ui = #{j ∈ C_u : s_uj > s_ui} / |C_u| (C_u: items outside u's D ∖ {i},
  :func:`tru.eval.rank.rank_counts`) and per-pair hits h_ui = 1[p_ui · |C_u| < 20];
* interaction-level membership scores: per audit seed, a logistic regression on the pair features
  (score, rank percentile, z, gap to the top-20 mean, log popularity in D_r) trained on D_r members (1)
  vs held-out half A (0), scored on D_f (1) and held-out half B (0);
* user-level profile features (deleted users present; :func:`tru.certify.mia.profile_features`: mean
  rank percentile, mean / max z, top-100 share, mean margin of a profile H in u's ranking): the deleted
  users with H = their D_f items, and a sample of retained *member* users with H = their D_r items.
  The user-level attack (:func:`user_mia_aucs`) is trained on the **reference**, where the deleted
  users are genuinely never-seen users (a retrain never had them; no constructed stand-in, whose items
  would still carry its footprint): members (1) vs never-seen deleted users (0), a logistic regression
  cross-fitted over two user folds; its AUC P(s(member) > s(deleted)) is then measured on the candidate
  and on the reference with the same out-of-fold attack. High under Retrain (the deleted users are
  non-members), ≈ ½ for a model that still holds them;
* difference-attack scores (given the original O): features Δ = f_M(u, i) − f_O(u, i) of score, rank
  percentile, z and gap to the top-20 mean on D_f pairs (1) and held-out pairs (0), logistic regression
  cross-fitted over two user folds;
* per retained test user: Recall@20 and NDCG@20 (D_r masked; MMRec full ranking).

**Statistics** (signed values; the *excess* is what a tolerance bounds):

====================== =============================================== ===================
name                   value                                           excess
====================== =============================================== ===================
``forget_hr_gap``      HR@20_f(C) − HR@20_f(R)  (> 0: under-forgetting) |value|
``rank_w1``            W₁(p(C), p(R)) = ∫ |F_C(x) − F_R(x)| dx          value
``mia_auc_gap``        AUC_MIA(C) − AUC_MIA(R)  (mean over audit seeds) |value|
``user_mia_auc_gap``   AUC_user(C) − AUC_user(R)  (< 0: under-forgetting) |value|
``diff_auc_gap``       AUC_diff(O → C) − AUC_diff(O → R)               |value|
``retain_recall_ratio`` Recall@20(C) / Recall@20(R)                     1 − value (one-sided)
``retain_ndcg_ratio``  NDCG@20(C) / NDCG@20(R)                          1 − value (one-sided)
====================== =============================================== ===================

**User-clustered bootstrap.** Pairs of one user are not independent, so resampling is over users: a
Poisson bootstrap (each user u gets weight w_u ~ Poisson(1), independently, the same weights for every
model compared and every statistic), row 0 the unit weights (the point estimate). Weighted forms: HR =
Σ w_u h_ui / Σ w_u; F(x) = Σ w_u 1[p_ui ≤ x] / Σ w_u; AUC = Σ_{i∈1, j∈0} w_i w_j (1[s_i > s_j] + ½ 1[s_i =
s_j]) / (Σ_{i∈1} w_i Σ_{j∈0} w_j) (Mann–Whitney); Recall = Σ w_u r_u / Σ w_u."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from tru.certify.mia import profile_features, score_statistics
from tru.data.dataset import Pairs
from tru.eval.evaluator import iter_ranked, sorted_membership
from tru.eval.rank import rank_counts
from tru.forget.spec import ForgetSpec
from tru.models.base import Recommender

K = 20
MIN_USER_AUDIT = 6  # deleted users needed for the cross-fitted user-level attack (3 per fold)
MIN_MEMBERS = 50  # member users drawn at least for the user-level attack (capped by max_users)
MIN_DIFF_USERS = 2  # D_f users needed for the difference attack's user-level cross-fit (1 per fold)


@dataclass(frozen=True)
class StatSpec:
    """One statistic of the certificate: its meaning, which side fails, and whether it is about
    forgetting (used by the inconclusive rule) or retain utility."""

    name: str
    label: str
    kind: str  # "forgetting" | "utility"
    sided: str  # "two-sided" (|value|), "upper" (value ≥ 0, larger is worse), "lower" (ratio, 1 − value)
    formula: str


STATS: tuple[StatSpec, ...] = (
    StatSpec("forget_hr_gap", "forget HR@20 gap", "forgetting", "two-sided", "HR@20_f(C) − HR@20_f(R)"),
    StatSpec("rank_w1", "D_f rank-percentile W₁", "forgetting", "upper", "W₁(p_C, p_R) on D_f"),
    StatSpec("mia_auc_gap", "interaction MIA AUC gap", "forgetting", "two-sided", "AUC_MIA(C) − AUC_MIA(R)"),
    StatSpec("user_mia_auc_gap", "user MIA AUC gap", "forgetting", "two-sided", "AUC_user(C) − AUC_user(R)"),
    StatSpec("diff_auc_gap", "difference-attack AUC gap", "forgetting", "two-sided", "AUC(O→C) − AUC(O→R)"),
    StatSpec("retain_recall_ratio", "retain Recall@20 ratio", "utility", "lower", "Recall@20(C) / (R)"),
    StatSpec("retain_ndcg_ratio", "retain NDCG@20 ratio", "utility", "lower", "NDCG@20(C) / (R)"),
)
STAT_NAMES = tuple(s.name for s in STATS)
STAT_BY_NAME = {s.name: s for s in STATS}
FORGETTING = tuple(s.name for s in STATS if s.kind == "forgetting")
DIFF_FEATURES = ("d_score", "d_rank_pct", "d_z", "d_gap_top20")


def excess(name: str, value: np.ndarray | float) -> np.ndarray | float:
    """The quantity a tolerance bounds: |value| (two-sided), value (upper), 1 − value (lower)."""
    sided = STAT_BY_NAME[name].sided
    if sided == "two-sided":
        return np.abs(value)
    if sided == "lower":
        return 1.0 - np.asarray(value) if isinstance(value, np.ndarray) else 1.0 - value
    return value


# ------------------------------------------------------------------------------------------ helpers
def poisson_weights(n_users: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot + 1) × n_users user weights: row 0 all ones (the point estimate), rows 1.. Poisson(1)."""
    rng = np.random.default_rng(seed)
    w = np.ones((n_boot + 1, n_users), dtype=np.float64)
    if n_boot > 0:
        w[1:] = rng.poisson(1.0, size=(n_boot, n_users))
    return w


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mann–Whitney AUC of ``scores`` (positives: ``labels`` true) under each row of ``weights``
    (B × n, one weight per element): Σ_{i∈1} w_i (Σ_{j∈0, s_j<s_i} w_j + ½ Σ_{j∈0, s_j=s_i} w_j) /
    (W₁ W₀). NaN where a class has zero weight."""
    weights = np.atleast_2d(weights)
    if len(scores) == 0:
        return np.full(weights.shape[0], np.nan)
    order = np.argsort(scores, kind="mergesort")
    s, y, w = scores[order], labels[order].astype(bool), weights[:, order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    gneg = np.add.reduceat(w * ~y, starts, axis=1)
    gpos = np.add.reduceat(w * y, starts, axis=1)
    below = np.cumsum(gneg, axis=1) - gneg
    num = (gpos * (below + 0.5 * gneg)).sum(1)
    den = gpos.sum(1) * gneg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _weighted_cdf(values: np.ndarray, weights: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """F(x) = Σ w_i 1[v_i ≤ x] / Σ w_i at every x of ``grid``, per weight row (B × len(grid))."""
    order = np.argsort(values, kind="mergesort")
    v, w = values[order], weights[:, order]
    cw = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(w, axis=1)], axis=1)
    idx = np.searchsorted(v, grid, side="right")
    tot = cw[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return cw[:, idx] / np.where(tot > 0, tot, np.nan)


def weighted_w1(a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray) -> np.ndarray:
    """W₁ = ∫ |F_a(x) − F_b(x)| dx between two weighted empirical distributions, per weight row
    (exact: the CDFs are step functions on the merged support)."""
    if len(a) == 0 or len(b) == 0:
        return np.full(np.atleast_2d(wa).shape[0], np.nan)
    grid = np.unique(np.concatenate([a, b]))
    if len(grid) < 2:
        return np.zeros(np.atleast_2d(wa).shape[0])
    fa = _weighted_cdf(a, np.atleast_2d(wa), grid)
    fb = _weighted_cdf(b, np.atleast_2d(wb), grid)
    return (np.abs(fa - fb)[:, :-1] * np.diff(grid)).sum(1)


def _wmean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    tot = weights.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, (weights * values).sum(1) / np.where(tot > 0, tot, 1), np.nan)


def _cat(parts: Sequence[Pairs]) -> Pairs:
    return Pairs(np.concatenate([p.users for p in parts]), np.concatenate([p.items for p in parts]))


def _fit_predict(x_tr: np.ndarray, y_tr: np.ndarray, x_ev: np.ndarray) -> np.ndarray:
    """P(class 1 | x) of a logistic regression on standardised features; a constant when the training
    features are constant or a class is missing (nothing to learn: every score ties)."""
    if len(np.unique(y_tr)) < 2 or not np.isfinite(x_tr).all() or np.ptp(x_tr, axis=0).max(initial=0) == 0:
        return np.full(len(x_ev), 0.5)
    with threadpool_limits(1):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        clf.fit(x_tr, y_tr)
        return clf.predict_proba(x_ev)[:, 1]


def _cross_fit(x: np.ndarray, y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Out-of-fold scores over two folds (train on one, score the other)."""
    out = np.full(len(x), 0.5)
    for f in (0, 1):
        tr, ev = fold != f, fold == f
        if ev.any():
            out[ev] = _fit_predict(x[tr], y[tr], x[ev])
    return out


def _user_folds(n_users: int, seed: int, stratify: np.ndarray | None = None) -> np.ndarray:
    """Fold (0/1) of every user id, a random half each; the users in ``stratify`` (those with pairs in
    D_f) split half and half on their own, so that each fold's classifier has positives to learn from
    (unstratified, two D_f users landed in one fold with probability 1/2: one classifier had no positive,
    its constant scores tied every D_f pair and the AUC was 0.75 whatever the models, a null of width 0)."""
    r = np.random.default_rng(seed)
    perm = r.permutation(n_users)
    fold = np.zeros(n_users, dtype=np.int8)
    fold[perm[: n_users // 2]] = 1
    if stratify is not None and len(stratify):
        s = np.asarray(stratify, np.int64)[r.permutation(len(stratify))]
        fold[s] = 0
        fold[s[: len(s) // 2]] = 1
    return fold


# ------------------------------------------------------------------------------------------- design
@dataclass
class UserDesign:
    """User-level audit: deleted users (H = their D_f items; never-seen in a retrain) and member users
    (retained users, H = their D_r items)."""

    deleted_users: np.ndarray
    deleted: Pairs
    member_users: np.ndarray
    members: Pairs
    folds: list[np.ndarray]  # per audit seed, fold of each row of users()

    def users(self) -> np.ndarray:
        return np.concatenate([self.deleted_users, self.member_users])

    def labels(self) -> np.ndarray:
        """1 = member, 0 = deleted (never-seen in the reference)."""
        return np.r_[np.zeros(len(self.deleted_users)), np.ones(len(self.member_users))].astype(bool)


@dataclass
class AuditDesign:
    """What every model of one certificate (or calibration) is audited on (module docstring)."""

    n_users: int
    n_items: int
    seeds: tuple[int, ...]
    forget: Pairs
    forget_history: Pairs  # D_r ∪ (D_f ∖ pool): masked when ranking the pool's pairs
    members: Pairs
    heldout: Pairs
    popularity: np.ndarray
    rounds: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per seed: member idx, held-out A, held-out B
    diff_folds: list[np.ndarray]  # per seed: fold of every user id
    retain_targets: Pairs
    retain_history: Pairs
    user: UserDesign | None
    notes: list[str] = field(default_factory=list)

    def all_pairs(self) -> Pairs:
        return _cat([self.members, self.heldout, self.forget])

    def counts(self) -> dict[str, int]:
        out = {
            "forget_pool": len(self.forget),
            "members_pool": len(self.members),
            "heldout": len(self.heldout),
            "forget_users": len(np.unique(self.forget.users)),
            "retain_test_users": len(np.unique(self.retain_targets.users)),
        }
        if self.user is not None:
            out |= {
                "deleted_users": len(self.user.deleted_users),
                "member_users": len(self.user.member_users),
            }
        return out


def build_design(
    spec: ForgetSpec,
    n_users: int,
    n_items: int,
    seeds: Sequence[int],
    max_pairs: int = 20000,
    max_users: int = 2000,
    seed: int = 0,
) -> AuditDesign:
    """Draw the audit design of ``spec`` (module docstring); deterministic in ``seed`` and ``seeds``."""
    rng = np.random.default_rng(seed)
    heldout_all = _cat([spec.valid, spec.test])
    members = spec.retain.sample(max_pairs, rng)
    heldout = heldout_all.sample(max_pairs, rng)
    forget = spec.forget.sample(max_pairs, rng)
    forget_history = spec.retain
    if len(forget) < len(spec.forget):  # pairs left out of the pool stay masked (D_f is not candidates)
        rest = ~np.isin(spec.forget.keys(n_items), forget.keys(n_items))
        forget_history = spec.retain.concat(spec.forget.subset(rest))
    popularity = np.bincount(spec.retain.items, minlength=n_items).astype(np.float64)
    rounds = []
    for s in seeds:
        r = np.random.default_rng(int(s))
        perm = r.permutation(len(heldout))
        a_idx, b_idx = perm[: len(heldout) // 2], perm[len(heldout) // 2 :]
        m_idx = r.choice(len(members), min(len(a_idx), len(members)), replace=False)
        rounds.append((m_idx, a_idx, b_idx))
    notes: list[str] = []
    forget_users = np.unique(forget.users)
    diff_folds: list[np.ndarray] = []
    if len(forget_users) >= MIN_DIFF_USERS:
        diff_folds = [_user_folds(n_users, 10_000 + int(s), stratify=forget_users) for s in seeds]
    elif len(forget):
        notes.append(
            f"difference attack skipped: D_f holds pairs of {len(forget_users)} user(s); its user-level "
            f"cross-fit needs at least {MIN_DIFF_USERS}"
        )
    user = None
    deleted_users = np.intersect1d(np.asarray(spec.users, np.int64), spec.forget.users)
    if len(deleted_users):
        if len(deleted_users) < MIN_USER_AUDIT:
            notes.append(
                f"user-level audit skipped: {len(deleted_users)} deleted user(s); the cross-fitted attack "
                f"needs at least {MIN_USER_AUDIT}"
            )
        else:
            cand = np.setdiff1d(np.unique(spec.retain.users), deleted_users)
            n_mem = min(len(cand), max_users, max(len(deleted_users), MIN_MEMBERS))
            if n_mem < MIN_USER_AUDIT:
                notes.append(f"user-level audit skipped: only {n_mem} retained users as members")
            else:
                mem_users = np.sort(rng.choice(cand, n_mem, replace=False))
                deleted = spec.forget.subset(np.isin(spec.forget.users, deleted_users))
                mem_pairs = spec.retain.subset(np.isin(spec.retain.users, mem_users))
                folds = []
                for s in seeds:  # two folds, stratified: half of the deleted and half of the members each
                    r = np.random.default_rng(20_000 + int(s))
                    f = np.zeros(len(deleted_users) + n_mem, dtype=np.int8)
                    for lo, hi in ((0, len(deleted_users)), (len(deleted_users), len(f))):
                        perm = r.permutation(hi - lo)
                        f[lo + perm[: (hi - lo) // 2]] = 1
                    folds.append(f)
                user = UserDesign(deleted_users, deleted, mem_users, mem_pairs, folds)
    return AuditDesign(
        n_users,
        n_items,
        tuple(int(s) for s in seeds),
        forget,
        forget_history,
        members,
        heldout,
        popularity,
        rounds,
        diff_folds,
        spec.test,
        spec.retain,
        user,
        notes,
    )


# ----------------------------------------------------------------------------------------- evidence
@dataclass
class Evidence:
    """What the statistics need of one model (or of the retrain-free reference), per pair / user."""

    name: str
    forget_users: np.ndarray
    forget_pct: np.ndarray
    forget_hit: np.ndarray
    forget_factor: np.ndarray | None = None  # per-pair weight factor (a reference mixing two parts)
    mia: list[np.ndarray] | None = None  # per audit seed: scores of D_f then held-out half B
    mia_const: float | None = None  # a reference AUC with no sampling variation (0.5)
    user_feats: np.ndarray | None = None  # profile features of UserDesign.users() (deleted, then members)
    diff: list[np.ndarray] | None = None  # per audit seed: out-of-fold scores of D_f then held-out
    retain_users: np.ndarray | None = None
    retain_recall: np.ndarray | None = None
    retain_ndcg: np.ndarray | None = None
    pair_stats: np.ndarray | None = None  # score_statistics on design.all_pairs() (the original's)


def per_user_retain(
    model: Recommender,
    targets: Pairs,
    history: Pairs,
    n_users: int,
    n_items: int,
    k: int = K,
    batch_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, Recall@k, NDCG@k) per user of ``targets`` (``history`` masked, all items ranked); their
    means are :func:`tru.eval.evaluator.evaluate_pairs`' recall@k / ndcg@k: recall_u = hits / |T_u|,
    ndcg_u = Σ_r hit_r / log₂(r + 1) / Σ_{r ≤ min(|T_u|, k)} 1 / log₂(r + 1)."""
    gt = targets.csr(n_users, n_items)
    n_gt_all = np.diff(gt.indptr)
    users = np.flatnonzero(n_gt_all > 0)
    recall = np.zeros(len(users))
    ndcg = np.zeros(len(users))
    if len(users) == 0:
        return users, recall, ndcg
    gt_keys = np.unique(targets.keys(n_items))
    hist_keys = np.unique(history.keys(n_items))
    kk = min(k, n_items)
    disc = 1.0 / np.log2(np.arange(2, kk + 2))
    idcg = np.cumsum(disc)
    start = 0
    for rb in iter_ranked(model, users, history.csr(n_users, n_items), kk, batch_size):
        keys = rb.users[:, None] * np.int64(n_items) + rb.topk.cpu().numpy()
        hits = (sorted_membership(gt_keys, keys) & ~sorted_membership(hist_keys, keys)).astype(np.float64)
        n_gt = n_gt_all[rb.users]
        sl = slice(start, start + len(rb.users))
        recall[sl] = hits.sum(1) / n_gt
        ndcg[sl] = (hits * disc[: hits.shape[1]]).sum(1) / idcg[np.minimum(n_gt, k) - 1]
        start += len(rb.users)
    return users, recall, ndcg


def _mia_scores(feats: np.ndarray, design: AuditDesign) -> list[np.ndarray]:
    nm, nh = len(design.members), len(design.heldout)
    mem, held, fgt = feats[:nm], feats[nm : nm + nh], feats[nm + nh :]
    out = []
    for m_idx, a_idx, b_idx in design.rounds:
        x_tr = np.concatenate([mem[m_idx], held[a_idx]])
        y_tr = np.r_[np.ones(len(m_idx)), np.zeros(len(a_idx))]
        out.append(_fit_predict(x_tr, y_tr, np.concatenate([fgt, held[b_idx]])))
    return out


def mia_eval_sets(design: AuditDesign) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per audit seed: (users, labels) of the interaction-level evaluation set (D_f, then held-out B)."""
    out = []
    for _, _, b_idx in design.rounds:
        users = np.concatenate([design.forget.users, design.heldout.users[b_idx]])
        labels = np.r_[np.ones(len(design.forget)), np.zeros(len(b_idx))].astype(bool)
        out.append((users, labels))
    return out


def diff_eval_set(design: AuditDesign) -> tuple[np.ndarray, np.ndarray]:
    """(users, labels) of the difference attack's pairs (D_f pool, then the held-out pool)."""
    users = np.concatenate([design.forget.users, design.heldout.users])
    return users, np.r_[np.ones(len(design.forget)), np.zeros(len(design.heldout))].astype(bool)


def _diff_scores(st: np.ndarray, st_o: np.ndarray, design: AuditDesign) -> list[np.ndarray]:
    nm = len(design.members)
    x = (st[nm:, :4] - st_o[nm:, :4]).astype(np.float64)  # held-out, then D_f (all_pairs order)
    nh = len(design.heldout)
    x = np.concatenate([x[nh:], x[:nh]])  # D_f first, as diff_eval_set
    users, labels = diff_eval_set(design)
    return [_cross_fit(x, labels.astype(float), folds[users]) for folds in design.diff_folds]


def _user_features(model: Recommender, design: AuditDesign, batch_size: int | None) -> np.ndarray:
    ud = design.user
    assert ud is not None
    pairs = _cat([ud.deleted, ud.members])
    st = score_statistics(model, pairs, design.n_users, design.n_items, batch_size)
    nd = len(ud.deleted)
    return np.concatenate(
        [
            profile_features(st[:nd], ud.deleted.users, ud.deleted_users),
            profile_features(st[nd:], ud.members.users, ud.member_users),
        ]
    )


def user_mia_aucs(
    cand: Evidence, ref: Evidence, design: AuditDesign, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(AUC on the candidate, AUC on the reference) of the user-level attack trained on the reference
    (module docstring), per weight row; means over audit seeds. NaN without a user-level design."""
    b = weights.shape[0]
    ud = design.user
    if ud is None or cand.user_feats is None or ref.user_feats is None:
        return np.full(b, np.nan), np.full(b, np.nan)
    y = ud.labels()
    w = weights[:, ud.users()]
    ac, ar = [], []
    for fold in ud.folds:
        sc, sr = np.full(len(y), 0.5), np.full(len(y), 0.5)
        for f in (0, 1):
            tr, ev = fold != f, fold == f
            both = _fit_predict(
                ref.user_feats[tr],
                y[tr].astype(float),
                np.concatenate([cand.user_feats[ev], ref.user_feats[ev]]),
            )
            sc[ev], sr[ev] = both[: ev.sum()], both[ev.sum() :]
        ac.append(weighted_auc(sc, y, w))
        ar.append(weighted_auc(sr, y, w))
    return np.mean(ac, axis=0), np.mean(ar, axis=0)


def model_evidence(
    name: str,
    model: Recommender,
    design: AuditDesign,
    original: Evidence | None = None,
    batch_size: int | None = None,
    keep_pair_stats: bool = False,
) -> Evidence:
    """The :class:`Evidence` of ``model``; with ``original`` (whose
    ``pair_stats`` are kept) also the difference-attack scores from the original to this model."""
    nu, ni = design.n_users, design.n_items
    st = score_statistics(model, design.all_pairs(), nu, ni, batch_size)
    pop = design.popularity[design.all_pairs().items].copy()
    pop[: len(design.members)] -= 1  # leave-one-out: a member's own interaction is not evidence
    feats = np.column_stack([st[:, :4], np.log1p(np.maximum(pop, 0))])
    above, cand = rank_counts(model, design.forget, design.forget_history, nu, ni, batch_size)
    users, rec, ndcg = per_user_retain(
        model, design.retain_targets, design.retain_history, nu, ni, K, batch_size
    )
    ev = Evidence(
        name,
        design.forget.users,
        above / np.maximum(cand, 1),
        (above < K).astype(np.float64),
        mia=_mia_scores(feats, design),
        retain_users=users,
        retain_recall=rec,
        retain_ndcg=ndcg,
        pair_stats=st if keep_pair_stats else None,
    )
    if original is not None and original.pair_stats is not None:
        ev.diff = _diff_scores(st, original.pair_stats, design)
    if design.user is not None:
        ev.user_feats = _user_features(model, design, batch_size)
    return ev


def retrain_free_evidence(
    original: Recommender,
    original_train: Pairs,
    original_ev: Evidence,
    proxy: Recommender | None,
    spec: ForgetSpec,
    design: AuditDesign,
    entity: np.ndarray,
    batch_size: int | None = None,
) -> Evidence:
    """The retrain-free reference (tru-method.md §7) as :class:`Evidence`:

    * D_f percentiles / hits: interaction pairs → the original's on the same users' test pairs (history:
      the original's train set; pairs it never selected on), each weighted n_f,int / n_test so the part
      weighs what its D_f pairs weigh; pairs of deleted users / target items → the re-initialised
      proxy's (:func:`tru.certify.forgetting.reinit_proxy`) on those pairs;
    * membership: the proxy's scores where whole users / items are deleted, else AUC = ½ (deleted and
      held-out pairs are exchangeable for a model that never saw them);
    * user level (the attack is then trained on the proxy, whose deleted users have re-initialised rows
      but whose items still carry their footprint) and difference attack: the proxy's (none without);
    * retain utility: the original's."""
    nu, ni = design.n_users, design.n_items
    pool = design.forget
    ent = entity
    users, pct, hit, fac = [], [], [], []
    if (~ent).any():
        iu = np.unique(pool.users[~ent])
        test = spec.test.subset(np.isin(spec.test.users, iu))
        if len(test):
            a, c = rank_counts(original, test, original_train, nu, ni, batch_size)
            users.append(test.users)
            pct.append(a / np.maximum(c, 1))
            hit.append((a < K).astype(np.float64))
            fac.append(np.full(len(test), (~ent).sum() / len(test)))
    if ent.any() and proxy is not None:
        tgt = pool.subset(ent)
        hist = design.forget_history.concat(pool.subset(~ent)) if (~ent).any() else design.forget_history
        a, c = rank_counts(proxy, tgt, hist, nu, ni, batch_size)
        users.append(tgt.users)
        pct.append(a / np.maximum(c, 1))
        hit.append((a < K).astype(np.float64))
        fac.append(np.ones(len(tgt)))
    ev = Evidence(
        "retrain-free",
        np.concatenate(users) if users else np.zeros(0, np.int64),
        np.concatenate(pct) if pct else np.zeros(0),
        np.concatenate(hit) if hit else np.zeros(0),
        np.concatenate(fac) if fac else np.zeros(0),
        retain_users=original_ev.retain_users,
        retain_recall=original_ev.retain_recall,
        retain_ndcg=original_ev.retain_ndcg,
    )
    if proxy is not None:
        pe = model_evidence("proxy", proxy, design, original_ev, batch_size)
        ev.mia, ev.user_feats, ev.diff = pe.mia, pe.user_feats, pe.diff
    else:
        ev.mia_const = 0.5
    return ev


# ------------------------------------------------------------------------------------------- levels
def levels(ev: Evidence, design: AuditDesign, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Per weight row: forget HR@20, interaction-level and difference-attack AUC (means over audit
    seeds) and retain Recall@20 / NDCG@20, each weighted by user (module docstring). (The user-level AUC
    depends on the reference, whose attack it uses: :func:`user_mia_aucs`.)"""
    b = weights.shape[0]
    nan = np.full(b, np.nan)
    fw = weights[:, ev.forget_users]
    if ev.forget_factor is not None and len(ev.forget_factor):
        fw = fw * ev.forget_factor
    out = {"forget_hr": _wmean(ev.forget_hit, fw) if len(ev.forget_hit) else nan}
    if ev.mia_const is not None:
        out["mia_auc"] = np.full(b, ev.mia_const)
    elif ev.mia is not None:
        sets = mia_eval_sets(design)
        out["mia_auc"] = np.mean(
            [weighted_auc(s, lab, weights[:, u]) for s, (u, lab) in zip(ev.mia, sets)], axis=0
        )
    else:
        out["mia_auc"] = nan
    if ev.diff:  # None (no original) or [] (skipped: too few users in D_f) is not measured
        u, lab = diff_eval_set(design)
        out["diff_auc"] = np.mean([weighted_auc(s, lab, weights[:, u]) for s in ev.diff], axis=0)
    else:
        out["diff_auc"] = nan
    if ev.retain_users is not None and len(ev.retain_users):
        rw = weights[:, ev.retain_users]
        out["retain_recall"] = _wmean(ev.retain_recall, rw)
        out["retain_ndcg"] = _wmean(ev.retain_ndcg, rw)
    else:
        out["retain_recall"] = out["retain_ndcg"] = nan
    return out


def compare(
    cand: Evidence,
    ref: Evidence,
    design: AuditDesign,
    weights: np.ndarray,
    cand_levels: dict[str, np.ndarray] | None = None,
    ref_levels: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Every statistic (signed values, module docstring) of ``cand`` against ``ref``, per weight row."""
    lc = cand_levels or levels(cand, design, weights)
    lr = ref_levels or levels(ref, design, weights)
    uc, ur = user_mia_aucs(cand, ref, design, weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "forget_hr_gap": lc["forget_hr"] - lr["forget_hr"],
            "mia_auc_gap": lc["mia_auc"] - lr["mia_auc"],
            "user_mia_auc_gap": uc - ur,
            "diff_auc_gap": lc["diff_auc"] - lr["diff_auc"],
            "retain_recall_ratio": lc["retain_recall"] / lr["retain_recall"],
            "retain_ndcg_ratio": lc["retain_ndcg"] / lr["retain_ndcg"],
        }
    wc = weights[:, cand.forget_users]
    if cand.forget_factor is not None and len(cand.forget_factor):
        wc = wc * cand.forget_factor
    wr = weights[:, ref.forget_users]
    if ref.forget_factor is not None and len(ref.forget_factor):
        wr = wr * ref.forget_factor
    out["rank_w1"] = weighted_w1(cand.forget_pct, wc, ref.forget_pct, wr)
    return {k: out[k] for k in STAT_NAMES}


def interval(samples: np.ndarray, level: float = 0.95) -> list[float]:
    """Percentile interval of bootstrap ``samples`` (NaN-free part); [nan, nan] when none."""
    s = samples[np.isfinite(samples)]
    if len(s) < 2:
        return [math.nan, math.nan]
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(s, tail)), float(np.percentile(s, 100 - tail))]
