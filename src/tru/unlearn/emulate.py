"""What retraining does to a deleted item, emulated (tru-method.md §7a, item regime).

An item without a retained interaction is, in the retrained model, an isolated node of the user-item
graph: retraining never samples it as a positive, only as a uniform negative. Its rows (ID row, trainable
feature rows) start at their seeded initial values and move only through the BPR term of the batches
that draw it as a negative:

    ∂L/∂θ_D = Σ_{(u, p, j) in the batch, j ∈ D} σ(s_uj − s_up) ∂s_uj/∂θ_D / B  +  ∂ penalty(e_j)/∂θ_D

with s_uj = f_u · e_j(θ_D), and Adam steps every batch (also on an all-zero gradient, as the trainer's).
The emulation replays exactly that loop for the deleted items' rows alone — the retrained model's
schedule: the trainer's recipe (:class:`~tru.train.trainer.TrainingRecipe`: Adam's learning rate and
weight decay, the decay λ(e) = lr · f^(e / s), batch size) and the number of
epochs behind the original's weights (:attr:`~tru.models.base.Recommender.trained_epochs`: retraining
on a 5 % smaller set stops at about the same epoch) — against the rest of the model frozen at the
starting point (f_u, s_up from the rebuilt model). The backbone supplies the items' final embeddings as a
function of their rows (:meth:`~tru.models.base.Recommender.isolated_items`). The rest of the model is
not retrain's, so this is an emulation, not retrain's rows: its rank-percentile distance to retrain on
the deleted pairs is measured in ``benchmarks/results/issue9.md``.

Cost: one small forward and backward over the deleted items per training batch (no full forward):
seconds, where retraining takes minutes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from tru.checkpoint import weights_sha256
from tru.data.dataset import Pairs
from tru.models.base import Recommender
from tru.train.sampler import NegativeSampler
from tru.train.trainer import TrainingRecipe
from tru.unlearn.adam import Adam

#: the emulation's random stream: default_rng([seed, EMULATION_STREAM])
EMULATION_STREAM = 7


@dataclass(frozen=True)
class NegativeTraining:
    """The schedule retraining trains a deleted item's rows with: the trainer's recipe from the model's
    own config, for ``epochs`` epochs, drawing with ``seed``."""

    recipe: TrainingRecipe
    epochs: int
    seed: int

    @classmethod
    def of(cls, model: Recommender, seed: int) -> NegativeTraining | None:
        """The model's recipe (``model.config``) for ``model.trained_epochs`` epochs; None when the
        number of epochs is unknown (a checkpoint without a training record)."""
        if not model.trained_epochs:
            return None
        return cls(TrainingRecipe.of(model.config), int(model.trained_epochs), int(seed))


def emulate_negative_training(
    model: Recommender, retain: Pairs, items: np.ndarray, schedule: NegativeTraining
) -> dict[str, np.ndarray]:
    """Train the rows of ``items`` (no retained interaction; graphs already rebuilt on ``retain``, their
    rows already at their initial values) as retraining on ``retain`` would (module docstring), in place.
    Returns parameter name -> the rows set ({} when the backbone has no isolated-item map)."""
    items = np.asarray(items, np.int64)
    if len(items) == 0 or len(retain) == 0:
        return {}
    dev = model.device
    was_training = model.training
    model.eval()
    iso = model.isolated_items(torch.as_tensor(items, device=dev))
    if iso is None:
        model.train(was_training)
        return {}
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            users_final, items_final = model.forward()
        ru = torch.as_tensor(retain.users, dtype=torch.long, device=dev)
        rp = torch.as_tensor(retain.items, dtype=torch.long, device=dev)
        pos_scores = (users_final[ru] * items_final[rp]).sum(-1)
        is_target = torch.zeros(model.n_items, dtype=torch.bool, device=dev)
        is_target[torch.as_tensor(items, device=dev)] = True
        slot = torch.full((model.n_items,), -1, dtype=torch.long, device=dev)
        slot[torch.as_tensor(items, device=dev)] = torch.arange(len(items), device=dev)
        params = list(iso.rows.values())
        for p in params:  # Adam steps every row every batch, on an all-zero gradient too (as the trainer's)
            p.grad = torch.zeros_like(p)
        recipe = schedule.recipe
        # the trainer's Adam, float for float (tru.unlearn.adam)
        opt = Adam(params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
        # the trainer's draws (a shuffle of D_r, one uniform negative per pair that is never a positive of
        # its user), from a stream of their own: not any particular retrain's batches
        rng = np.random.default_rng([schedule.seed, EMULATION_STREAM])
        sampler = NegativeSampler(retain, model.n_users, model.n_items)
        users_np = np.asarray(retain.users, np.int64)
        n, b = len(ru), recipe.batch_size
        for epoch in range(schedule.epochs):
            opt.lr = recipe.learning_rate * recipe.decay(epoch)
            perm = rng.permutation(n)
            order = torch.from_numpy(perm).to(dev)
            negatives = torch.from_numpy(sampler.sample(users_np[perm], rng)).to(dev)
            for a in range(0, n, b):
                batch = order[a : a + b]
                neg = negatives[a : a + b]
                hit = is_target[neg]
                opt.zero_grad(set_to_none=False)
                if bool(hit.any()):
                    rows = batch[hit]
                    e = iso.final()[slot[neg[hit]]]
                    s_neg = (users_final[ru[rows]] * e).sum(-1)
                    loss = F.softplus(s_neg - pos_scores[rows]).sum() / len(batch) + iso.penalty(e)
                    loss.backward()
                opt.step()
        with torch.no_grad():
            _write_rows(model, items, iso.rows)
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    return {name: items for name in iso.rows}


def _write_rows(model: Recommender, items: np.ndarray, rows: dict[str, Tensor]) -> None:
    named = dict(model.named_parameters())
    idx = torch.as_tensor(items, device=model.device)
    for name, value in rows.items():
        named[name][idx] = value.detach().to(named[name].dtype)


def can_emulate(model: Recommender) -> bool:
    """Whether :func:`emulate_deleted_items` can act on ``model``: its backbone maps isolated items
    (:meth:`~tru.models.base.Recommender.isolated_items`) and its training epochs are known."""
    return bool(model.trained_epochs) and type(model).isolated_items is not Recommender.isolated_items


def emulate_deleted_items(
    model: Recommender, retain: Pairs, items: np.ndarray, seed: int
) -> dict[str, np.ndarray]:
    """The exact part for deleted items (graphs already rebuilt on ``retain``): the items of ``items``
    without a retained interaction get their seeded initial rows
    (:meth:`~tru.models.base.Recommender.reset_item_rows`), then retraining's negative-only updates
    (:func:`emulate_negative_training`). Returns parameter name -> the rows set; {} (nothing changed)
    when the model cannot be emulated (:func:`can_emulate`)."""
    schedule = NegativeTraining.of(model, seed)
    isolated = model.untrained_items(retain, items)
    if schedule is None or not can_emulate(model) or len(isolated) == 0:
        return {}
    model.reset_item_rows(isolated, seed)
    memo = _SHARED.get()
    key = _memo_key(model, retain, isolated, schedule) if memo is not None else ""
    if memo is not None and key in memo:  # the proxy and the start of one run: the same rows, once
        with torch.no_grad():
            _write_rows(model, isolated, memo[key])
        return {name: isolated for name in memo[key]}
    rows = emulate_negative_training(model, retain, isolated, schedule)
    if memo is not None:
        named = dict(model.named_parameters())
        idx = torch.as_tensor(isolated, device=model.device)
        memo[key] = {name: named[name][idx].detach().clone() for name in rows}
    return rows


#: inside :func:`shared_emulation`: emulated rows by (model after the reset, D_r, items, schedule)
_SHARED: ContextVar[dict[str, dict[str, Tensor]] | None] = ContextVar("tru_shared_emulation", default=None)


@contextmanager
def shared_emulation() -> Iterator[None]:
    """Within the block, an emulation asked for twice on the same model state, D_r, items and schedule (the
    retrain-free proxy and the candidate's start of one unlearning run) is computed once; the rows live
    in memory for the block only, so a later run pays its own emulation."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def _memo_key(model: Recommender, retain: Pairs, items: np.ndarray, schedule: NegativeTraining) -> str:
    h = hashlib.sha256(weights_sha256(model.state_dict()).encode())
    h.update(np.ascontiguousarray(retain.keys(model.n_items)).tobytes())
    h.update(np.ascontiguousarray(items, np.int64).tobytes())
    h.update(repr(schedule).encode())
    return h.hexdigest()
