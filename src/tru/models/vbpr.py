"""VBPR (He & McAuley, AAAI 2016), the light multimodal backbone, as in MMRec.

s_ui = ⟨[γ_u ; θ_u], [γ_i ; Σ_m E_m f_i^m]⟩ with γ the latent ID factors (d), θ_u the user's visual /
content preference (d) and E_m a linear projection of modality m's features f^m to d. The sum over
modalities equals one linear map of the concatenated features (MMRec's VBPR), split per modality so that
each modality is its own branch. Loss: BPR + reg_weight · ½‖·‖² of the batch's representations.
VBPR has no interaction-derived structure, so :meth:`rebuild` has nothing to do.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tru.data.dataset import Pairs, RecDataset
from tru.models.base import FUSION_BRANCH, ID_BRANCH, Batch, Recommender, bpr_loss, l2_reg, seeded


def _id_tables(n_users: int, n_items: int, d: int) -> tuple[nn.Embedding, nn.Embedding]:
    """[γ_u; θ_u] (2d) and γ_i (d), Xavier-uniform: the first draws after the seed (shared by the
    constructor and :meth:`VBPR.initial_rows`)."""
    users, items = nn.Embedding(n_users, 2 * d), nn.Embedding(n_items, d)
    nn.init.xavier_uniform_(users.weight)
    nn.init.xavier_uniform_(items.weight)
    return users, items


class VBPR(Recommender):
    name = "vbpr"
    TABLES = {"user_embedding": "user", "item_embedding": "item"}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        super().__init__(dataset, config)
        d = self.embedding_dim
        self.reg_weight = float(config.get("reg_weight", 1e-4))
        self.user_embedding, self.item_embedding = _id_tables(self.n_users, self.n_items, d)
        for mod, feat in dataset.features.items():
            self.register_buffer(f"feat_{mod}", torch.as_tensor(feat, dtype=torch.float32), persistent=False)
            proj = nn.Linear(feat.shape[1], d)
            nn.init.xavier_normal_(proj.weight)
            setattr(self, f"proj_{mod}", proj)
        self.dropout = float(config.get("dropout", 0.0))

    def rebuild(self, train: Pairs) -> None:
        """No interaction-derived structures."""

    def _items(self) -> Tensor:
        content = sum(getattr(self, f"proj_{m}")(getattr(self, f"feat_{m}")) for m in self.modality_names)
        content = nn.functional.dropout(content, self.dropout, self.training)
        return torch.cat([self.item_embedding.weight, content], dim=1)

    def forward(self) -> tuple[Tensor, Tensor]:
        return self.user_embedding.weight, self._items()

    def calculate_loss(self, batch: Batch) -> Tensor:
        return self.loss_from_state(self.forward(), batch)

    def loss_from_state(self, state: Any, batch: Batch) -> Tensor:
        u_all, i_all = state
        u, p, n = u_all[batch.users], i_all[batch.pos], i_all[batch.neg]
        pos, neg = (u * p).sum(-1), (u * n).sum(-1)
        return bpr_loss(pos, neg) + self.reg_weight * l2_reg(u, p, n, batch_size=len(batch.users))

    def auxiliary_loss(self, batch: Batch) -> Tensor:
        u_all, i_all = self.forward()
        return self.reg_weight * l2_reg(
            u_all[batch.users], i_all[batch.pos], i_all[batch.neg], batch_size=len(batch.users)
        )

    def initial_rows(self, seed: int) -> dict[str, Tensor]:
        """The ID tables as :func:`tru.models.build_backbone` draws them with ``seed`` (global RNG state
        untouched); a user never in a batch keeps this row (the regulariser covers batch rows only)."""
        with seeded(seed):
            users, items = _id_tables(self.n_users, self.n_items, self.embedding_dim)
        return {
            "user_embedding.weight": users.weight.detach(),
            "item_embedding.weight": items.weight.detach(),
        }

    def branches(self) -> dict[str, list[str]]:
        out = {ID_BRANCH: ["user_embedding", "item_embedding"], FUSION_BRANCH: []}
        for m in self.modality_names:
            out[m] = [f"proj_{m}"]
        return out
