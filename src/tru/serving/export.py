"""Build the servable arrays of a trained (or unlearned) backbone: what a serving process needs to rank,
and nothing more.

For a model M and its retain set D_r (the train pairs it now stands on, deleted pairs removed):

* e_u, e_i: ``M.forward()`` once, in eval mode, without gradients (the final user / item
  representations); every backbone here scores s_ui = e_u·e_i (``full_sort_predict``), which
  :func:`build_servable` checks on a sample of users before exporting;
* seen(u) = {i : (u, i) ∈ D_r}, stored as CSR (``seen_indptr``, ``seen_indices``): masked at serving;
* c_i = |{u : (u, i) ∈ D_r}|, the popularity that ranks the non-personalised list.

**Users without retained items.** A user with seen(u) = ∅ (a user whose data was deleted, or an id
the model never saw) is served the non-personalised list: items by c_i over D_r, nothing masked. This is
how a model retrained on D_r stands towards such a user: MMRec's protocol trains on interactions only,
so a user with no history never enters a batch and a retrained model holds its random initialisation for
them (MGCN, VBPR: untouched; MIG-GT: shrunk by its regulariser over all rows), which ranks by noise and
carries no information about them. The only signal a retrained model has for them is D_r as a whole, and
the popularity list is the non-personalised ranking drawn from D_r alone. It carries nothing of the deleted
data, and a deleted user gets exactly what any unknown user gets. Their e_u row is additionally set to
zero in the export, so the old representation is not shipped.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tru.checkpoint import pairs_fingerprint
from tru.data.dataset import Pairs
from tru.models.base import Recommender
from tru.serving.pyfunc import ARRAY_KEYS, SERVABLE_FORMAT_VERSION
from tru.utils import git_commit

SERVABLE_FILE = "servable.npz"


class ServingExportError(ValueError):
    """The model or the inputs cannot be exported; the message names the field."""


@dataclass(frozen=True)
class ServableMeta:
    """What the servable says about itself (also written into the MLmodel ``metadata``)."""

    backbone: str
    dataset: str
    n_users: int
    n_items: int
    dim: int
    n_personalised: int
    retain_fingerprint: str  #: sha256 of D_r's pair keys (= the checkpoint's ``train_fingerprint``)
    code_version: str
    request_commitment: str | None = None  #: the unlearned model's request-id commitment, if any
    format_version: int = SERVABLE_FORMAT_VERSION


@dataclass(frozen=True)
class ServableArrays:
    """The exported arrays; shapes and dtypes are checked on construction (errors name the field)."""

    user_emb: np.ndarray  #: (n_users, d) float32, e_u; zero rows for users without retained items
    item_emb: np.ndarray  #: (n_items, d) float32, e_i
    seen_indptr: np.ndarray  #: (n_users + 1,) int64, CSR row pointer of seen(u) over D_r
    seen_indices: np.ndarray  #: (nnz,) int32, item ids, sorted within each user
    popularity: np.ndarray  #: (n_items,) int64, c_i over D_r
    excluded: np.ndarray  #: (n_items,) bool, items never recommended
    meta: ServableMeta

    def __post_init__(self) -> None:
        m = self.meta
        expect = {
            "user_emb": ((m.n_users, m.dim), np.float32),
            "item_emb": ((m.n_items, m.dim), np.float32),
            "seen_indptr": ((m.n_users + 1,), np.int64),
            "seen_indices": ((int(self.seen_indptr[-1]) if len(self.seen_indptr) else 0,), np.int32),
            "popularity": ((m.n_items,), np.int64),
            "excluded": ((m.n_items,), np.bool_),
        }
        for name, (shape, dtype) in expect.items():
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != dtype:
                got = (arr.shape, arr.dtype) if isinstance(arr, np.ndarray) else type(arr).__name__
                raise ServingExportError(
                    f"ServableArrays.{name}: expected {shape} {np.dtype(dtype)}, got {got}"
                )
        for name in ("user_emb", "item_emb"):
            if not np.isfinite(getattr(self, name)).all():
                raise ServingExportError(f"ServableArrays.{name}: holds NaN or infinite values")
        if len(self.seen_indices) and (self.seen_indices.min() < 0 or self.seen_indices.max() >= m.n_items):
            raise ServingExportError(f"ServableArrays.seen_indices: item ids outside [0, {m.n_items})")

    @property
    def personalised(self) -> np.ndarray:
        """(n_users,) bool: users with at least one retained item (served s_ui = e_u·e_i)."""
        return np.diff(self.seen_indptr) > 0

    def seen(self, user: int) -> np.ndarray:
        """seen(u): the retained train items of ``user`` (empty for unknown ids)."""
        if not 0 <= user < self.meta.n_users:
            return np.zeros(0, dtype=np.int32)
        return self.seen_indices[self.seen_indptr[user] : self.seen_indptr[user + 1]]

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Unmasked s_ui = e_u·e_i for ``users``: shape (len(users), n_items), float32."""
        return self.user_emb[np.asarray(users, dtype=np.int64)] @ self.item_emb.T

    def save(self, path: Path | str) -> Path:
        """Write one ``.npz`` (plain arrays and a JSON string: loadable with ``allow_pickle=False``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "user_emb": self.user_emb,
            "item_emb": self.item_emb,
            "seen_indptr": self.seen_indptr,
            "seen_indices": self.seen_indices,
            "popularity": self.popularity,
            "excluded": self.excluded,
            "meta_json": np.array(json.dumps(asdict(self.meta), sort_keys=True)),
        }
        assert tuple(payload) == ARRAY_KEYS
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, **payload)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path | str) -> ServableArrays:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ARRAY_KEYS if k not in npz.files]
            if missing:
                raise ServingExportError(f"{path}: not a servable .npz (missing {missing})")
            raw = {k: npz[k] for k in ARRAY_KEYS}
        meta: dict[str, Any] = json.loads(str(raw.pop("meta_json")))
        if meta.get("format_version") != SERVABLE_FORMAT_VERSION:
            version = meta.get("format_version")
            raise ServingExportError(f"{path}: servable format_version {version!r} is not supported")
        return cls(**raw, meta=ServableMeta(**meta))


def _check_pairs(retain: Pairs, n_users: int, n_items: int) -> None:
    for field, ids, n in (("users", retain.users, n_users), ("items", retain.items, n_items)):
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= n):
            raise ServingExportError(
                f"build_servable: retain.{field} holds ids in [{int(ids.min())}, {int(ids.max())}], "
                f"the model has {n} {field}"
            )


@torch.no_grad()
def build_servable(
    model: Recommender,
    retain: Pairs,
    *,
    dataset_name: str,
    request_commitment: str | None = None,
    exclude_items: np.ndarray | None = None,
    code_version: str | None = None,
    verify_users: int = 256,
    atol: float = 1e-4,
    rtol: float = 1e-5,
) -> ServableArrays:
    """Export ``model`` (trained or unlearned) for serving, with seen(u) and c_i over ``retain`` (D_r).

    The representations are computed once (eval mode, no grad). Before anything is exported, up to
    ``verify_users`` users (evenly spread over the id range) are scored both ways and must agree:
    ``model.full_sort_predict(users)`` vs e_u·e_i from the exported arrays, within ``atol + rtol·|s|``;
    a backbone that scores otherwise is refused rather than served wrongly. Users without retained items
    get a zero e_u row (see the module docstring). ``exclude_items`` (e.g. items withdrawn by an item
    deletion) are never recommended to anyone."""
    n_users, n_items = int(model.n_users), int(model.n_items)
    _check_pairs(retain, n_users, n_items)
    with model.eval_cache():
        u_t, i_t = model._embeddings()  # the cache eval_cache just filled: one forward pass
        user_emb = u_t.detach().float().cpu().numpy().astype(np.float32, copy=True)
        item_emb = i_t.detach().float().cpu().numpy().astype(np.float32, copy=True)
        dim = user_emb.shape[1] if user_emb.ndim == 2 else -1
        if user_emb.shape != (n_users, dim) or item_emb.shape != (n_items, dim):
            raise ServingExportError(
                f"build_servable: backbone '{model.name}' forward() gave users {user_emb.shape} and items "
                f"{item_emb.shape}; expected ({n_users}, d) and ({n_items}, d)"
            )
        spread = np.linspace(0, n_users - 1, num=min(verify_users, n_users))
        probe = np.unique(spread.round().astype(np.int64))
        ref = model.full_sort_predict(torch.as_tensor(probe, device=model.device)).float().cpu().numpy()
    ours = user_emb[probe] @ item_emb.T
    if ref.shape != ours.shape or not np.allclose(ours, ref, atol=atol, rtol=rtol):
        worst = float(np.max(np.abs(ours - ref))) if ref.shape == ours.shape else float("nan")
        raise ServingExportError(
            f"build_servable: backbone '{model.name}' does not score s_ui = e_u·e_i with the forward() "
            f"representations (max |Δ| {worst:.3g} on {len(probe)} users; shapes {ref.shape} vs "
            f"{ours.shape}): the servable would rank differently from the model"
        )
    csr = retain.csr(n_users, n_items)
    csr.sort_indices()
    seen_indptr = csr.indptr.astype(np.int64)
    seen_indices = csr.indices.astype(np.int32)
    popularity = np.bincount(seen_indices, minlength=n_items).astype(np.int64)
    personalised = np.diff(seen_indptr) > 0
    user_emb[~personalised] = 0.0
    excluded = np.zeros(n_items, dtype=bool)
    if exclude_items is not None:
        ex = np.asarray(exclude_items, dtype=np.int64).reshape(-1)
        if len(ex) and (int(ex.min()) < 0 or int(ex.max()) >= n_items):
            raise ServingExportError(f"build_servable: exclude_items outside [0, {n_items})")
        excluded[ex] = True
    meta = ServableMeta(
        backbone=str(model.name),
        dataset=str(dataset_name),
        n_users=n_users,
        n_items=n_items,
        dim=int(user_emb.shape[1]),
        n_personalised=int(personalised.sum()),
        retain_fingerprint=pairs_fingerprint(retain, n_items),
        code_version=git_commit() if code_version is None else str(code_version),
        request_commitment=request_commitment,
    )
    return ServableArrays(
        user_emb=user_emb,
        item_emb=item_emb,
        seen_indptr=seen_indptr,
        seen_indices=seen_indices,
        popularity=popularity,
        excluded=excluded,
        meta=meta,
    )
