"""Generated deletion requests for the benchmark: per regime (user / item / interaction) and selection
strategy (random / core / edge, as CURE4Rec), at a ratio, seeded (tru-method.md §2).

Degrees are train degrees: deg(u) = |{i : (u, i) ∈ D}|, deg(i) = |{u : (u, i) ∈ D}| (distinct pairs).

* user regime: k = ⌊ratio · |{u : deg(u) ≥ 1}|⌋ users (at least 1);
* item regime: k = ⌊ratio · |{i : deg(i) ≥ 1}|⌋ items (at least 1);
* interaction regime: k = ⌊ratio · |D|⌋ train pairs (at least 1), never a user's last train item: one
  pair per user, drawn uniformly, is protected, and the k pairs are chosen among the others.

Strategies: ``random`` = uniform; ``core`` = highest degree first; ``edge`` = lowest degree first; ties
(and the order within one degree) are broken by a seeded uniform key. For interactions the degree is the
pair's USER degree, as CURE4Rec ranks by users' interaction counts (``read.delete``: ``value_counts`` of
``uid``; CURE4Rec itself only deletes whole users).

Every draw is made for all candidates whatever the ratio, so for one seed a smaller ratio selects a prefix
of a larger one (nested selections with the same request ids)."""

from __future__ import annotations

import numpy as np

from tru.data.dataset import DataError, RecDataset
from tru.forget.requests import DeletionRequest, parse_timestamp
from tru.forget.spec import REGIMES

STRATEGIES = ("random", "core", "edge")
DEFAULT_REQUESTED_AT = "1970-01-01T00:00:00Z"  # fixed, so that a manifest is a function of the seed
REASON = "benchmark"


def n_selected(ratio: float, total: int) -> int:
    """k = ⌊ratio · total⌋ (with a 1e-9 guard against float error, e.g. 0.29·100), at least 1 if total > 0."""
    if total <= 0:
        return 0
    return max(1, int(np.floor(ratio * total + 1e-9)))


def rank_by_degree(degree: np.ndarray, strategy: str, tie: np.ndarray) -> np.ndarray:
    """Indices in selection order: ``random`` sorts by ``tie`` alone (a uniform permutation when ``tie``
    is uniform), ``core`` by degree descending, ``edge`` by degree ascending, then by ``tie``."""
    if strategy == "random":
        return np.argsort(tie, kind="stable")
    key = -degree if strategy == "core" else degree
    return np.lexsort((tie, key))


def _check_args(regime: str, strategy: str, ratio: float, requested_at: str) -> None:
    errors = []
    if regime not in REGIMES:
        errors.append(f"regime {regime!r}: expected one of {', '.join(REGIMES)}")
    if strategy not in STRATEGIES:
        errors.append(f"strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if not (isinstance(ratio, int | float) and 0.0 < ratio <= 1.0):
        errors.append(f"ratio {ratio!r}: expected a fraction in (0, 1], e.g. 0.05")
    try:
        parse_timestamp(requested_at)
    except ValueError:
        errors.append(f"requested_at {requested_at!r}: expected an ISO 8601 timestamp")
    if errors:
        raise DataError("generate_requests: " + "; ".join(errors))


def _protected(users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mask of one uniformly drawn pair per user (the last one of each user after a random shuffle)."""
    order = np.lexsort((rng.random(len(users)), users))
    sorted_users = users[order]
    last = np.r_[sorted_users[1:] != sorted_users[:-1], True] if len(users) else np.zeros(0, dtype=bool)
    mask = np.zeros(len(users), dtype=bool)
    mask[order[last]] = True
    return mask


def generate_requests(
    dataset: RecDataset,
    regime: str,
    strategy: str = "random",
    ratio: float = 0.05,
    seed: int = 0,
    requested_at: str | None = None,
) -> list[DeletionRequest]:
    """Deletion requests selected from ``dataset``'s train split (selection rules in the module docstring),
    in selection order, with ids ``gen-<regime>-<strategy>-<seed>-<n>`` (n = 0, 1, ...) and reason
    ``benchmark``. Deterministic for a seed."""
    requested_at = DEFAULT_REQUESTED_AT if requested_at is None else requested_at
    _check_args(regime, strategy, ratio, requested_at)
    rng = np.random.default_rng(seed)
    n_users, n_items = dataset.n_users, dataset.n_items
    keys = np.unique(dataset.train.keys(n_items))  # distinct train pairs
    users, items = keys // n_items, keys % n_items
    deg_u = np.bincount(users, minlength=n_users)
    deg_i = np.bincount(items, minlength=n_items)
    prefix = f"gen-{regime}-{strategy}-{seed}"

    def make(n: int, user: int | None, item: int | None) -> DeletionRequest:
        return DeletionRequest(f"{prefix}-{n}", regime, user, item, requested_at, REASON)

    if regime in ("user", "item"):
        deg = deg_u if regime == "user" else deg_i
        eligible = np.flatnonzero(deg > 0)
        order = rank_by_degree(deg[eligible], strategy, rng.random(len(eligible)))
        chosen = eligible[order[: n_selected(ratio, len(eligible))]]
        if regime == "user":
            return [make(n, int(u), None) for n, u in enumerate(chosen)]
        return [make(n, None, int(i)) for n, i in enumerate(chosen)]

    protected = _protected(users, rng)
    tie = rng.random(len(keys))
    k = n_selected(ratio, len(keys))
    candidates = np.flatnonzero(~protected)
    if k > len(candidates):
        raise DataError(
            f"generate_requests: {k} interactions requested ({ratio} of {len(keys)} train pairs) but only "
            f"{len(candidates)} can go while every one of {int(protected.sum())} users keeps a train item; "
            "expected a smaller ratio"
        )
    order = rank_by_degree(deg_u[users[candidates]], strategy, tie[candidates])
    chosen = candidates[order[:k]]
    return [make(n, int(users[c]), int(items[c])) for n, c in enumerate(chosen)]
