"""Forget and retain objectives shared by the unlearning methods (tru-method.md §3).

For a D_f batch of (u, i) with negatives j drawn from items not in u's D_r history and not in T:

* reverse BPR (MMRecUn, TRU):   L_f = mean softplus(s_ui − s_uj)   (push the deleted item below j)
* gradient ascent:             L_f = −mean softplus(s_uj − s_ui)   (ascend BPR on D_f; unbounded)

The retain term L_r is the backbone's own training loss on a D_r batch (BPR + regulariser + auxiliary
losses such as MGCN's contrastive term).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn.functional import softplus

from tru.data.dataset import Pairs
from tru.models.base import Batch
from tru.train.sampler import NegativeSampler


def reverse_bpr(pos: Tensor, neg: Tensor) -> Tensor:
    """mean softplus(s_ui − s_uj)."""
    return softplus(pos - neg).mean()


def ascent_bpr(pos: Tensor, neg: Tensor) -> Tensor:
    """−BPR = −mean softplus(s_uj − s_ui) (minimising it ascends BPR)."""
    return -softplus(neg - pos).mean()


FORGET_LOSSES = {"reverse_bpr": reverse_bpr, "ascent": ascent_bpr}


@dataclass
class PairStream:
    """Seeded stream of (u, i, j) batches from a pair set, reshuffled every pass.

    Negatives are uniform over items that are neither in u's ``exclude`` history nor in
    ``excluded_items`` (the target items T)."""

    pairs: Pairs
    sampler: NegativeSampler
    batch_size: int
    rng: np.random.Generator
    device: torch.device

    def __post_init__(self) -> None:
        self._order = np.empty(0, dtype=np.int64)
        self._pos = 0
        self.passes = 0

    def next(self) -> Batch:
        if self._pos >= len(self._order):
            self._order = self.rng.permutation(len(self.pairs))
            self._pos = 0
            self.passes += 1
        idx = self._order[self._pos : self._pos + self.batch_size]
        self._pos += len(idx)
        users, items = self.pairs.users[idx], self.pairs.items[idx]
        neg = self.sampler.sample(users, self.rng)
        to = lambda a: torch.from_numpy(a).to(self.device)  # noqa: E731
        return Batch(to(users), to(items), to(neg))


def pair_scores(u_all: Tensor, i_all: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
    """(s_ui, s_uj) = (⟨e_u, e_i⟩, ⟨e_u, e_j⟩) for a batch's positive and negative pairs, from all-node
    representations (e.g. ``model.state_embeddings(model.training_state())``)."""
    ue = u_all[batch.users]
    return (ue * i_all[batch.pos]).sum(-1), (ue * i_all[batch.neg]).sum(-1)
