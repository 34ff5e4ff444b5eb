"""Synthetic multimodal recommendation data with planted structure (deterministic per seed).

Generative model (every random stream is a numpy Generator seeded by ``[seed, stream]``, so changing
one part, e.g. a feature dimension, leaves the others' draws unchanged):

* latent factors p_u, q_i ~ N(0, d^{-1/2} I_d), d = ``latent_dim`` (16), so p_u·q_i has unit variance;
* power-law popularity: item i gets a random popularity rank r_i ∈ {1..n_items}, log π_i = −a·log r_i;
* per-user counts n_u = ``min_count`` + extra_u, extra ~ Multinomial(N − min_count·n_users, w/Σw) with
  w_u ~ Lomax(``count_shape``) (heavy tail), capped at n_items/2 (the excess is redealt);
* user u's items: n_u draws WITHOUT replacement from softmax_i(β·p_u·q_i + log π_i), done as a Gumbel
  top-k: the n_u largest of β·p_u·q_i + log π_i − log E_ui, E_ui ~ Exp(1) (vectorised over user chunks);
* coverage: items never drawn take over random interactions of items drawn at least twice, so every item
  id < n_items occurs (max itemID = n_items − 1, as the validator requires);
* features of modality m: x_i = tanh(q_i Q_m W1_m) W2_m + σ_m ε, with Q_m the first r_m columns of a
  random orthogonal matrix (the latent directions m can see), W1_m, W2_m Gaussian, signal scaled to unit
  variance per entry, ε ~ N(0, 1). The defaults make ``text`` the stronger modality (sees all 16
  directions, σ = 0.5) and ``image`` the weaker one (8 directions, σ = 1.0), whatever their dimensions;
* split: :func:`tru.data.dataset.mmrec_split` (n < 10: n−2/1/1, else 80/10/10 at random).
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tru.data.dataset import DataError, DatasetManifest, mmrec_split, write_dataset
from tru.data.sources import DEFAULT_SEED

log = logging.getLogger(__name__)

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"n_users": 200, "n_items": 150, "n_interactions": 3_000, "dims": {"image": 32, "text": 16}},
    "small": {
        "n_users": 2_000,
        "n_items": 1_500,
        "n_interactions": 40_000,
        "dims": {"image": 128, "text": 64},
    },
    "clothing": {
        "n_users": 39_387,
        "n_items": 23_033,
        "n_interactions": 278_677,
        "dims": {"image": 4_096, "text": 384},
    },
}
DEFAULT_NOISE = {"image": 1.0, "text": 0.5}
DEFAULT_RANK_FRACTION = {"image": 0.5, "text": 1.0}
USER_CHUNK = 1_024  # users per Gumbel top-k block (fixed: part of the determinism contract)
ROW_CHUNK = 4_096  # feature rows per block
# stream ids for the per-component generators
_FACTORS, _POPULARITY, _COUNTS, _SAMPLING, _COVER, _SPLIT = range(6)


@dataclass(frozen=True)
class SyntheticConfig:
    """All parameters of the generator (a preset plus overrides)."""

    n_users: int
    n_items: int
    n_interactions: int
    dims: dict[str, int]
    noise: dict[str, float] = field(default_factory=dict)
    ranks: dict[str, int] = field(default_factory=dict)
    latent_dim: int = 16
    hidden: int = 64
    affinity: float = 3.0
    popularity_exponent: float = 0.8
    count_shape: float = 2.0
    min_count: int = 5
    seed: int = DEFAULT_SEED

    def noise_of(self, modality: str) -> float:
        return float(self.noise.get(modality, DEFAULT_NOISE.get(modality, 1.0)))

    def rank_of(self, modality: str) -> int:
        default = max(1, round(DEFAULT_RANK_FRACTION.get(modality, 1.0) * self.latent_dim))
        return int(min(self.ranks.get(modality, default), self.latent_dim))


@dataclass
class SyntheticData:
    """A generated dataset in memory, with the planted factors for tests and diagnostics."""

    config: SyntheticConfig
    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    features: dict[str, np.ndarray]
    user_factors: np.ndarray
    item_factors: np.ndarray
    log_popularity: np.ndarray

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "userID": self.users,
                "itemID": self.items,
                "rating": np.ones(len(self.users), dtype=np.int64),
                "x_label": self.labels,
            }
        )


def _mapping(value: Any, cast: type, what: str) -> dict[str, Any]:
    """Accept ``{"image": 32}`` or the CLI form ``"image:32,text:16"``."""
    if value is None:
        return {}
    if isinstance(value, str):
        pairs = [p.split(":", 1) for p in value.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise DataError(f"synthetic option '{what}': expected 'name:value,name:value', got {value!r}")
        value = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(value, dict):
        raise DataError(f"synthetic option '{what}': expected a mapping modality -> value, got {value!r}")
    try:
        return {str(k): cast(v) for k, v in value.items()}
    except (TypeError, ValueError) as exc:
        raise DataError(f"synthetic option '{what}': {exc}") from exc


def resolve_config(preset: str = "tiny", **overrides: Any) -> SyntheticConfig:
    """A preset (``tiny``, ``small``, ``clothing``) with explicit overrides applied and checked."""
    if preset not in PRESETS:
        raise DataError(f"unknown synthetic preset '{preset}'; choose one of {sorted(PRESETS)}")
    base = dict(PRESETS[preset])
    known = set(SyntheticConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise DataError(f"unknown synthetic option(s) {unknown}; known: {sorted(known | {'preset', 'name'})}")
    for key, cast in (("dims", int), ("noise", float), ("ranks", int)):
        if key in overrides:
            overrides[key] = _mapping(overrides[key], cast, key)
    base.update({k: v for k, v in overrides.items() if v is not None})
    cfg = SyntheticConfig(**base)
    cfg = replace(
        cfg,
        n_users=int(cfg.n_users),
        n_items=int(cfg.n_items),
        n_interactions=int(cfg.n_interactions),
        seed=int(cfg.seed),
    )
    cap = _count_cap(cfg)
    if cfg.n_users < 1 or cfg.n_items < cfg.min_count:
        raise DataError(
            f"synthetic: need n_users ≥ 1 and n_items ≥ min_count={cfg.min_count}, "
            f"got {cfg.n_users} users, {cfg.n_items} items"
        )
    if not cfg.min_count * cfg.n_users <= cfg.n_interactions <= cap * cfg.n_users:
        raise DataError(
            f"synthetic: n_interactions={cfg.n_interactions} must lie in "
            f"[{cfg.min_count}·n_users, {cap}·n_users] = "
            f"[{cfg.min_count * cfg.n_users}, {cap * cfg.n_users}]"
        )
    if cfg.n_interactions < 2 * cfg.n_items:
        raise DataError(
            f"synthetic: n_interactions={cfg.n_interactions} is too few to cover "
            f"{cfg.n_items} items (need ≥ 2·n_items)"
        )
    if not cfg.dims or any(d < 1 for d in cfg.dims.values()):
        raise DataError(f"synthetic: 'dims' must give each modality a positive dimension, got {cfg.dims}")
    return cfg


def _count_cap(cfg: SyntheticConfig) -> int:
    return max(cfg.min_count, cfg.n_items // 2)


def _rng(cfg: SyntheticConfig, stream: int | str) -> np.random.Generator:
    key = stream if isinstance(stream, int) else 1_000 + zlib.crc32(stream.encode())
    return np.random.default_rng([cfg.seed, key])


def user_counts(cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """n_u = min_count + extra_u with Σ n_u = N exactly; extra ~ Multinomial(N − min·U, w/Σw),
    w ~ Lomax(count_shape); counts above the cap (n_items/2) are clipped and the excess redealt."""
    cap_extra = _count_cap(cfg) - cfg.min_count
    w = rng.pareto(cfg.count_shape, cfg.n_users) + 1e-3
    extra = rng.multinomial(cfg.n_interactions - cfg.min_count * cfg.n_users, w / w.sum())
    for _ in range(100):
        over = extra > cap_extra
        if not over.any():
            break
        excess = int((extra[over] - cap_extra).sum())
        extra[over] = cap_extra
        room = extra < cap_extra
        extra[room] += rng.multinomial(excess, w[room] / w[room].sum())
    else:  # pragma: no cover - only with absurd caps
        raise DataError("synthetic: could not deal per-user counts under the cap")
    return (extra + cfg.min_count).astype(np.int64)


def sample_interactions(
    user_f: np.ndarray,
    item_f: np.ndarray,
    log_pop: np.ndarray,
    counts: np.ndarray,
    affinity: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Gumbel top-k: user u takes the n_u largest keys β·p_u·q_i + log π_i − log E_ui, E ~ Exp(1),
    which is n_u draws without replacement from softmax_i(β·p_u·q_i + log π_i)."""
    n_users, n_items = user_f.shape[0], item_f.shape[0]
    item_t = np.ascontiguousarray((affinity * item_f).T, dtype=np.float32)
    bias = log_pop.astype(np.float32)
    out_items = []
    keys_buf = np.empty((min(USER_CHUNK, n_users), n_items), dtype=np.float32)
    noise_buf = np.empty_like(keys_buf)
    for start in range(0, n_users, USER_CHUNK):
        stop = min(start + USER_CHUNK, n_users)
        keys, noise = keys_buf[: stop - start], noise_buf[: stop - start]
        np.matmul(user_f[start:stop].astype(np.float32), item_t, out=keys)
        keys += bias
        rng.standard_exponential(dtype=np.float32, out=noise)
        with np.errstate(divide="ignore"):  # E = 0 (p ≈ 1e-9) gives an infinite key: item taken
            np.log(noise, out=noise)
        keys -= noise
        c = counts[start:stop]
        kmax = int(c.max())
        if kmax < n_items:  # the kmax largest keys, at the end of each partitioned row
            top = np.argpartition(keys, n_items - kmax, axis=1)[:, n_items - kmax :]
        else:
            top = np.broadcast_to(np.arange(n_items), keys.shape).copy()
        order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        out_items.append(top[np.arange(kmax)[None, :] < c[:, None]])
    users = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    return users, np.concatenate(out_items).astype(np.int64)


def cover_items(items: np.ndarray, n_items: int, rng: np.random.Generator) -> np.ndarray:
    """Give every never-drawn item one interaction: it replaces a random interaction of an item drawn at
    least twice (never the last copy of an item), so no user gets a duplicate and counts stay fixed."""
    deg = np.bincount(items, minlength=n_items)
    missing = np.flatnonzero(deg == 0)
    if missing.size == 0:
        return items
    perm = rng.permutation(len(items))
    grouped = perm[np.argsort(items[perm], kind="stable")]  # grouped by item, random within item
    sorted_items = items[grouped]
    rank = np.arange(len(items)) - np.searchsorted(sorted_items, sorted_items, side="left")
    eligible = grouped[rank < deg[sorted_items] - 1]
    if eligible.size < missing.size:
        raise DataError(
            f"synthetic: {missing.size} items never drawn and only {eligible.size} spare "
            "interactions to give them; raise n_interactions or lower n_items"
        )
    items = items.copy()
    items[rng.choice(eligible, size=missing.size, replace=False)] = rng.permutation(missing)
    return items


def item_features(
    item_f: np.ndarray, dim: int, noise: float, rank: int, hidden: int, rng: np.random.Generator
) -> np.ndarray:
    """x_i = tanh(q_i Q W1) W2 + σ ε, Q (d × rank) orthonormal, W1 ~ N(0, 2/rank), W2 scaled so the
    signal has unit variance per entry; float32, generated in row blocks of ROW_CHUNK."""
    d = item_f.shape[1]
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    w1 = rng.standard_normal((rank, hidden)) * np.sqrt(2.0 / rank) * d**0.25
    h = np.tanh(item_f @ q[:, :rank] @ w1)
    w2 = rng.standard_normal((hidden, dim)) / np.sqrt(hidden * max(float(h.var()), 1e-12))
    w2 = w2.astype(np.float32)
    h = h.astype(np.float32)
    out = np.empty((item_f.shape[0], dim), dtype=np.float32)
    for start in range(0, item_f.shape[0], ROW_CHUNK):
        stop = min(start + ROW_CHUNK, item_f.shape[0])
        block = h[start:stop] @ w2
        block += np.float32(noise) * rng.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] = block
    return out


def generate(cfg: SyntheticConfig) -> SyntheticData:
    """Run the generative model of the module docstring; deterministic given ``cfg``."""
    t0 = time.perf_counter()
    frng = _rng(cfg, _FACTORS)
    scale = cfg.latent_dim**-0.25
    user_f = frng.standard_normal((cfg.n_users, cfg.latent_dim)) * scale
    item_f = frng.standard_normal((cfg.n_items, cfg.latent_dim)) * scale
    ranks = _rng(cfg, _POPULARITY).permutation(cfg.n_items) + 1
    log_pop = -cfg.popularity_exponent * np.log(ranks)
    log_pop -= log_pop.mean()
    counts = user_counts(cfg, _rng(cfg, _COUNTS))
    users, items = sample_interactions(user_f, item_f, log_pop, counts, cfg.affinity, _rng(cfg, _SAMPLING))
    items = cover_items(items, cfg.n_items, _rng(cfg, _COVER))
    order = np.lexsort((items, users))  # rows by (user, item): no preference order leaks
    users, items = users[order], items[order]
    labels = mmrec_split(users, _rng(cfg, _SPLIT))
    log.info(
        "synthetic: %d users × %d items × %d interactions sampled in %.1f s",
        cfg.n_users,
        cfg.n_items,
        len(users),
        time.perf_counter() - t0,
    )
    features = {}
    for mod, dim in cfg.dims.items():
        features[mod] = item_features(
            item_f, dim, cfg.noise_of(mod), cfg.rank_of(mod), cfg.hidden, _rng(cfg, mod)
        )
        log.info(
            "synthetic: modality %s (%d-d, σ=%.2f, rank %d) done at %.1f s",
            mod,
            dim,
            cfg.noise_of(mod),
            cfg.rank_of(mod),
            time.perf_counter() - t0,
        )
    return SyntheticData(cfg, users, items, labels, features, user_f, item_f, log_pop)


def build(
    out: Path, path: Path | None = None, preset: str = "tiny", name: str = "synthetic", **overrides: Any
) -> DatasetManifest:
    """Generate the dataset ``preset`` (+ overrides, see :class:`SyntheticConfig`) into ``out``."""
    if path is not None:
        raise DataError("source 'synthetic' takes no input path (it generates its data)")
    cfg = resolve_config(preset, **overrides)
    data = generate(cfg)
    params = asdict(cfg)
    seed = params.pop("seed")
    params["noise"] = {m: cfg.noise_of(m) for m in cfg.dims}
    params["ranks"] = {m: cfg.rank_of(m) for m in cfg.dims}
    source = {"kind": "synthetic", "preset": preset, "seed": seed, "params": params}
    return write_dataset(out, name, data.frame(), data.features, source=source)
