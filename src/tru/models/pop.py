"""Most-popular ranker: s_ui = train count of item i (a non-personalised baseline; nothing to train)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from tru.data.dataset import Pairs, RecDataset
from tru.models.base import Batch, Recommender


class MostPopular(Recommender):
    name = "pop"

    def __init__(self, dataset: RecDataset, config: dict[str, Any] | None = None) -> None:
        super().__init__(dataset, config or {})
        self.register_buffer("counts", torch.zeros(self.n_items), persistent=False)
        self.rebuild(dataset.train)

    def rebuild(self, train: Pairs) -> None:
        counts = np.bincount(train.items, minlength=self.n_items).astype(np.float32)
        self.counts = torch.from_numpy(counts).to(self.counts.device)

    def forward(self) -> tuple[Tensor, Tensor]:
        return torch.ones(self.n_users, 1, device=self.counts.device), self.counts.unsqueeze(1)

    def calculate_loss(self, batch: Batch) -> Tensor:
        raise NotImplementedError("the most-popular ranker has nothing to train")

    def branches(self) -> dict[str, list[str]]:
        return {}
