"""The backbone interface, in MMRec's spirit, plus what unlearning needs.

Every backbone implements three training methods (``calculate_loss``, ``full_sort_predict``,
``pre_epoch_processing``) and, for unlearning:

* :meth:`Recommender.rebuild`: recompute every interaction-derived structure (normalised user-item
  adjacency, user-side aggregations, cached neighbourhoods) from a given set of train interactions,
  e.g. the retain set D_r. Content-only structures (item-item kNN on features) are not user data and
  stay, except that :meth:`drop_items_from_content_graphs` removes deleted items where asked.
* :meth:`Recommender.branches`: which top-level modules belong to the ID branch, to each modality
  branch, and to fusion.
* :meth:`Recommender.layer_units`: the units the layer-sensitivity probe scores: dense modules, and
  embedding / feature tables addressed by rows (axis ``user`` or ``item``).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from tru.data.dataset import Pairs, RecDataset

ID_BRANCH = "id"
FUSION_BRANCH = "fusion"


@dataclass(frozen=True)
class Batch:
    """A BPR batch: user u, positive item i, sampled negative item j (int64 tensors on the device)."""

    users: Tensor
    pos: Tensor
    neg: Tensor


@dataclass(frozen=True)
class IsolatedItems:
    """Items without a retained interaction, as a function of their own rows (everything else frozen):
    what retraining trains them through, for :func:`tru.unlearn.emulate.emulate_negative_training`.

    ``rows``: parameter name -> a leaf tensor (n_items_isolated, …) holding those items' rows of that
    table (requires grad); ``final()``: their final embeddings from ``rows``, bit-equal to the model's
    forward while ``rows`` hold the model's values; ``penalty(e)``: the training loss's regulariser on a
    batch's negative final embeddings ``e`` (what the BPR batch adds for them)."""

    rows: dict[str, Tensor]
    final: Callable[[], Tensor]
    penalty: Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class LayerUnit:
    """A unit of the model for layer sensitivity and isolation.

    ``kind`` is ``"dense"`` (a module: linear, gate, attention, MLP) or ``"table"`` (an embedding or
    feature table whose rows are users or items: ``axis`` says which, so a unit can be split into the
    rows a deletion request touches and the rest)."""

    name: str
    params: tuple[str, ...]
    kind: str
    branch: str
    axis: str | None = None
    n_params: int = 0
    trainable: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class Recommender(nn.Module, ABC):
    """Base class of every backbone."""

    name: ClassVar[str] = "base"
    #: top-level module name -> "user" | "item", for embedding / feature tables addressable by rows
    TABLES: ClassVar[dict[str, str]] = {}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        self.n_users = dataset.n_users
        self.n_items = dataset.n_items
        self.modality_names = list(dataset.features)
        self.embedding_dim = int(config.get("embedding_size", 64))
        #: epochs of training behind the weights (the best epoch kept, counted from 1), when known: set by
        #: :class:`tru.train.trainer.Trainer` and by loading a checkpoint that records it
        self.trained_epochs: int | None = None
        self._eval_cache: tuple[Tensor, Tensor] | None = None

    # ---------------------------------------------------------------- device
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    # ---------------------------------------------------------------- interface
    @abstractmethod
    def rebuild(self, train: Pairs) -> None:
        """Recompute every interaction-derived structure from ``train`` (e.g. D_r)."""

    def pre_epoch_processing(self) -> None:
        """Called once before every training epoch (e.g. edge dropout); default: nothing."""

    @abstractmethod
    def forward(self) -> tuple[Tensor, Tensor]:
        """Final user and item representations, shapes (n_users, d) and (n_items, d)."""

    @abstractmethod
    def calculate_loss(self, batch: Batch) -> Tensor:
        """The backbone's full training loss on a BPR batch (BPR + regulariser + auxiliary losses)."""

    def unlearning_mode(self, dropout: bool = False) -> None:
        """The mode of a reverse update: the deployed (evaluation-mode) forward by default, with gradients.

        ``dropout=False`` (default): evaluation mode: no dropout, no edge dropout, deterministic sampling.
        The update then follows the gradient of the model that is served and certified. Measured on
        MIG-GT / Last.fm-2K (heavy dropout): 40 Adam steps at lr 1e-6 of the retain loss alone on one MLP
        *lowered* valid Recall@20 from 0.3254 to 0.3217 with dropout on and *raised* it to 0.3311 with
        dropout off; with dropout on every iterative method tripped the retain guard within 10 steps.

        ``dropout=True``: training mode (dropout active) with normalisation statistics frozen. BatchNorm
        running statistics are buffers, not parameters: updated by every training-mode forward, they would
        drift outside any optimiser, mask or learning rate (MIG-GT loses 3.5 % of valid Recall@20 in 10
        forwards with no parameter change), so they stay at the trained model's in both modes."""
        if not dropout:
            self.eval()
            return
        self.train()
        for module in self.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()

    def training_state(self) -> Any:
        """One training-mode forward pass that several losses of one optimiser step can share (the
        unlearning engine scores a D_f batch and computes the retain loss on a D_r batch from it).
        Default: ``forward()``; backbones whose loss needs more than the final embeddings return more."""
        return self.forward()

    def state_embeddings(self, state: Any) -> tuple[Tensor, Tensor]:
        """The final (user, item) representations inside a :meth:`training_state`."""
        return state[0], state[1]

    def loss_from_state(self, state: Any, batch: Batch) -> Tensor:
        """``calculate_loss(batch)`` computed from a :meth:`training_state` (default: recomputed)."""
        return self.calculate_loss(batch)

    def auxiliary_loss(self, batch: Batch) -> Tensor:
        """Regulariser and auxiliary losses alone (used by unlearning's retain term); default zero."""
        return torch.zeros((), device=self.device)

    def score_pairs(self, users: Tensor, items: Tensor) -> Tensor:
        """s_ui for aligned user and item index tensors."""
        u, i = self._embeddings()
        return (u[users] * i[items]).sum(-1)

    def full_sort_predict(self, users: Tensor) -> Tensor:
        """Scores of every item for each user in ``users``: shape (len(users), n_items)."""
        u, i = self._embeddings()
        return u[users] @ i.T

    # ---------------------------------------------------------------- evaluation cache
    def _embeddings(self) -> tuple[Tensor, Tensor]:
        return self._eval_cache if self._eval_cache is not None else self.forward()

    @contextmanager
    def eval_cache(self) -> Iterator[None]:
        """Compute the representations once (no grad, eval mode) for many ``full_sort_predict`` calls.
        Re-entrant: inside an active cache, a nested ``eval_cache()`` reuses it (one forward serves a
        whole check; parameters must not change inside)."""
        if self._eval_cache is not None:
            yield
            return
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                u, i = self.forward()
                self._eval_cache = (u.detach(), i.detach())
            yield
        finally:
            self._eval_cache = None
            self.train(was_training)

    # ---------------------------------------------------------------- unlearning maps
    @abstractmethod
    def branches(self) -> dict[str, list[str]]:
        """Branch name (``id``, a modality name, ``fusion``) -> top-level module names."""

    def drop_items_from_content_graphs(self, items: Tensor) -> None:
        """Remove items from content-only graphs (item regime with feature deletion); default none."""

    # ---------------------------------------------------------------- the exact part (tru-method.md §7a)
    def initial_rows(self, seed: int) -> dict[str, Tensor]:
        """Parameter name -> the table as :func:`tru.models.build_backbone` initialises it with ``seed``
        (for the ID tables the exact part resets); default: none known."""
        return {}

    def untrained_users(self, retain: Pairs) -> np.ndarray:
        """Users without a retained interaction: a model trained on ``retain`` never has them in a batch."""
        return np.flatnonzero(np.bincount(np.asarray(retain.users, np.int64), minlength=self.n_users) == 0)

    def untrained_row_values(self, users: np.ndarray, seed: int) -> dict[str, Tensor]:
        """Parameter name -> the rows of ``users`` as a model retrained with ``seed`` leaves them.

        Default: the seeded initial value of every user-axis ID table (:meth:`initial_rows`), exact for a
        backbone whose losses touch only the rows of a batch (MGCN, VBPR: Adam on an all-zero gradient
        leaves a row where it was initialised). A backbone whose retraining does move such rows (a
        regulariser over every row) overrides this with what that retraining does."""
        init = self.initial_rows(seed)
        out = {}
        idx = torch.as_tensor(users, dtype=torch.long)
        for unit in self.layer_units():
            if unit.branch != ID_BRANCH or unit.kind != "table" or unit.axis != "user":
                continue
            for name in unit.params:
                if name in init:
                    out[name] = init[name][idx]
        return out

    def untrained_items(self, retain: Pairs, items: np.ndarray) -> np.ndarray:
        """Those of ``items`` without a retained interaction: retraining on ``retain`` trains them only
        as sampled negatives."""
        items = np.asarray(items, np.int64)
        counts = np.bincount(np.asarray(retain.items, np.int64), minlength=self.n_items)
        return items[counts[items] == 0]

    def reset_item_rows(self, items: np.ndarray, seed: int) -> dict[str, np.ndarray]:
        """Set the rows of ``items`` of every item-axis table :meth:`initial_rows` knows to their initial
        values with ``seed`` (where retraining starts an item it trains only as a negative). Returns
        parameter name -> the rows set."""
        items = np.asarray(items, np.int64)
        if len(items) == 0:
            return {}
        init = self.initial_rows(seed)
        named = dict(self.named_parameters())
        idx = torch.as_tensor(items)
        out = {}
        with torch.no_grad():
            for unit in self.layer_units():
                if unit.kind != "table" or unit.axis != "item":
                    continue
                for name in unit.params:
                    if name in init:
                        p = named[name]
                        p[idx.to(p.device)] = init[name][idx].to(p.device, p.dtype)
                        out[name] = items
        return out

    def isolated_items(self, items: Tensor) -> IsolatedItems | None:
        """``items`` (none of which has a retained interaction, graphs rebuilt without them) as a function
        of their own rows (:class:`IsolatedItems`); None when the backbone does not provide one (their
        rows then keep their initial values: retraining's negative-only updates are not emulated)."""
        return None

    def reset_untrained_rows(self, retain: Pairs, seed: int) -> dict[str, np.ndarray]:
        """The exact part: set the rows that retraining on ``retain`` never trains to what retraining with
        ``seed`` leaves them (:meth:`untrained_row_values`). Returns parameter name -> the rows reset
        (an unlearning update must then leave them alone)."""
        users = self.untrained_users(retain)
        if len(users) == 0:
            return {}
        values = self.untrained_row_values(users, seed)
        params = dict(self.named_parameters())
        idx = torch.as_tensor(users, dtype=torch.long, device=self.device)
        with torch.no_grad():
            for name, val in values.items():
                params[name][idx] = val.to(params[name].device, params[name].dtype)
        return {name: users for name in values}

    def branch_of(self, module_name: str) -> str:
        for branch, modules in self.branches().items():
            if module_name in modules:
                return branch
        return FUSION_BRANCH

    def layer_units(self) -> list[LayerUnit]:
        """One unit per top-level child module that holds parameters."""
        units = []
        for mod_name, module in self.named_children():
            params = [(f"{mod_name}.{n}", p) for n, p in module.named_parameters()]
            if not params:
                continue
            is_table = mod_name in self.TABLES
            units.append(
                LayerUnit(
                    name=mod_name,
                    params=tuple(n for n, _ in params),
                    kind="table" if is_table else "dense",
                    branch=self.branch_of(mod_name),
                    axis=self.TABLES.get(mod_name),
                    n_params=sum(p.numel() for _, p in params),
                    trainable=any(p.requires_grad for _, p in params),
                )
            )
        return units

    def parameter_branches(self) -> dict[str, str]:
        """Parameter name -> branch name."""
        return {p: u.branch for u in self.layer_units() for p in u.params}


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed Python, NumPy and torch's CPU generator as :func:`tru.utils.seed_everything` does, and restore
    their states afterwards (draws inside repeat a constructor's; draws outside are unaffected)."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
    """L_BPR = mean −log σ(s_ui − s_uj) = mean softplus(s_uj − s_ui)."""
    return nn.functional.softplus(neg_scores - pos_scores).mean()


def l2_reg(*tensors: Tensor, batch_size: int) -> Tensor:
    """MMRec's embedding regulariser: Σ ½‖e‖² over the batch's rows, divided by the batch size."""
    return sum(0.5 * t.pow(2).sum() for t in tensors) / batch_size
