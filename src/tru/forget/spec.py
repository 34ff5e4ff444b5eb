"""What a set of deletion requests means for a dataset: the forget set D_f, the retain set D_r, and the
evaluation sets after the regime's consequences (tru-method.md §2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tru.data.dataset import Pairs, RecDataset

REGIMES = ("user", "item", "interaction")


@dataclass
class ForgetSpec:
    """Resolved deletion requests.

    * ``forget`` D_f ⊂ train and ``retain`` D_r = train \\ D_f (as pairs);
    * ``users``: users whose whole train history is deleted (user requests);
    * ``items``: target items T whose train interactions are deleted (item requests);
    * ``valid`` / ``test``: the evaluation splits after the regime's consequences (user regime: the
      deleted users' rows leave; item regime: the target items' rows leave);
    * ``regime``: ``user`` | ``item`` | ``interaction`` | ``mixed`` (several kinds in one manifest) |
      ``none`` (an empty manifest, or only no-ops);
    * ``request_ids``: ids of the requests that changed D_f; ``noops``: messages for requests that
      changed nothing (already deleted, duplicates), never silently dropped; they name request ids,
      never the ids of a deleted pair;
    * ``requests``: every request resolved (effective or no-op): what a model that forgets this spec
      has forgotten (:meth:`forgotten`)."""

    regime: str
    forget: Pairs
    retain: Pairs
    users: np.ndarray
    items: np.ndarray
    valid: Pairs
    test: Pairs
    request_ids: list[str] = field(default_factory=list)
    noops: list[str] = field(default_factory=list)
    requests: tuple[Any, ...] = ()

    @property
    def affected_users(self) -> np.ndarray:
        """Users with at least one deleted pair."""
        return np.unique(self.forget.users)

    def forget_commitment(self, n_items: int) -> str:
        """Keyed commitment to D_f (:func:`tru.forget.commitment.commit_pairs`): identifies the forget set
        without revealing it (an unsalted hash of a small id space is reversible by enumeration)."""
        from tru.forget.commitment import commit_pairs

        return commit_pairs(self.forget.keys(n_items), n_items)

    def forgotten(self) -> Any:
        """The :class:`tru.checkpoint.Forgotten` record of a model that has forgotten this spec."""
        from tru.checkpoint import Forgotten

        return Forgotten.of(self.requests, len(self.forget))

    def retained_dataset(self, dataset: RecDataset) -> RecDataset:
        """The dataset as a model retrained without D_f sees it: train = D_r, valid/test per regime."""
        ds = dataset.with_train(self.retain)
        ds.valid, ds.test = self.valid, self.test
        return ds

    def summary(self, n_items: int) -> dict[str, Any]:
        """Counts, request ids and keyed commitments only: never the deleted interactions themselves
        (no-op messages are counted, not copied)."""
        return {
            "regime": self.regime,
            "n_requests": len(self.request_ids),
            "request_ids": list(self.request_ids),
            "n_forget_pairs": len(self.forget),
            "n_retain_pairs": len(self.retain),
            "n_users_deleted": len(self.users),
            "n_items_deleted": len(self.items),
            "n_affected_users": len(self.affected_users),
            "forget_commitment": self.forget_commitment(n_items),
            "requests_commitment": self.forgotten().commitment,
            "n_noops": len(self.noops),
        }
