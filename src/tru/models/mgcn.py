"""MGCN (Yu et al., ACM MM 2023, "Multi-View Graph Convolutional Network for Multimedia Recommendation").

Faithful to the paper and to the defaults of enoche/MMRec's ``MGCN``, generalised from its two
modality slots (vision "v", text "t") to any number M ≥ 1 of modalities. With M = 2 it is MMRec's model:
the "v" slot is the first non-text modality and the "t" slot is ``text``; modules are created in MMRec's
order, so the same seed gives the same initial weights.

Notation: E_u, E_i the ID embeddings; X_m the trainable raw feature table of modality m; N = n_users +
n_items nodes.

* projection and behaviour-guided purifier:  F_m = W_m X_m + b_m,  P_m = E_i ⊙ σ(G_m F_m + c_m)
* user-item view (LightGCN, no self loops):   H⁰ = [E_u; E_i],  H^{l+1} = Â Hˡ,  C = mean_{l=0..L} Hˡ
  with Â = D^{-1/2} A D^{-1/2} on the bipartite graph of the train interactions
* item-item view per modality:               I_m = S_m^K P_m (S_m the frozen, sym-normalised cosine
  kNN graph of the raw features, k = 10, K = 1),  U_m = R̂ I_m,  V_m = [U_m; I_m]
  with R̂ = D_u^{-1/2} R D_i^{-1/2} (the user-item block of Â)
* behaviour-aware fuser:                     a_m = q(V_m) = w₂ᵀ tanh(W₁ V_m + b₁),  α = softmax_m(a)
  common Z = Σ_m α_m V_m;  specific Ṽ_m = σ(Q_m C + d_m) ⊙ (V_m − Z)
  side  S = (Σ_m Ṽ_m + Z) / (M + 1);  final = C + S
* loss (per BPR batch u, i, j):  softplus(s_uj − s_ui) mean
  + reg_weight · Σ ½‖e‖² / train_batch_size over the batch's final embeddings (MMRec divides by the
  configured batch size, also for the last, shorter batch)
  + cl_loss · [InfoNCE_τ(S_i[pos], C_i[pos]) + InfoNCE_τ(S_u[users], C_u[users])], τ = 0.2,
  InfoNCE_τ(a, b) = mean_r −log( exp(â_r·b̂_r/τ) / Σ_c exp(â_r·b̂_c/τ) ) on L2-normalised rows.

Graphs are non-persistent buffers (sparse COO), so they follow ``.to(device)`` and stay out of the state
dict; products use cached CSR copies of each graph and of its transpose (for the backward pass). Items
removed with :meth:`MGCN.drop_items_from_content_graphs` are recorded in the persistent ``dropped_items``
mask, and loading a state dict rebuilds the kNN graphs from it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tru.data.dataset import DataError, Pairs, RecDataset
from tru.models import graph
from tru.models.base import (
    FUSION_BRANCH,
    ID_BRANCH,
    Batch,
    IsolatedItems,
    Recommender,
    bpr_loss,
    l2_reg,
    seeded,
)

TEXT_MODALITY = "text"


class _SparseMM(torch.autograd.Function):
    """Y = A X for a constant sparse A, with ∂L/∂X = Aᵀ ∂L/∂Y from a precomputed Aᵀ (no per-step
    transpose or coalesce of the sparse matrix, which dominates torch's COO backward)."""

    @staticmethod
    def forward(ctx: Any, adj: Tensor, adj_t: Tensor, dense: Tensor) -> Tensor:
        ctx.adj_t = adj_t
        return torch.sparse.mm(adj, dense)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None, Tensor | None]:
        if not ctx.needs_input_grad[2]:
            return None, None, None
        return None, None, torch.sparse.mm(ctx.adj_t, grad.contiguous())


def sparse_mm(adj: Tensor, adj_t: Tensor, dense: Tensor) -> Tensor:
    """A X, differentiable in X (``adj_t`` must equal Aᵀ)."""
    return _SparseMM.apply(adj, adj_t, dense)


class _CsrCache(dict):
    """name -> (COO buffer, CSR A, CSR Aᵀ): CSR copies of the sparse graph buffers for fast products.

    An entry is valid while the buffer is the same object (``rebuild`` and ``.to(device)`` replace it).
    Never copied or pickled (CSR tensors have no storage to deep-copy): a copy starts empty."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _CsrCache:
        return _CsrCache()

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (_CsrCache, ())


def info_nce(view1: Tensor, view2: Tensor, temperature: float) -> Tensor:
    """InfoNCE_τ(a, b) = mean_r −log softmax_c(â_r·b̂_c / τ)[r] on L2-normalised rows (MMRec's ``InfoNCE``)."""
    a, b = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    logits = a @ b.T / temperature
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


def info_nce_rows(table1: Tensor, table2: Tensor, ids: Tensor, temperature: float) -> Tensor:
    """``info_nce(table1[ids], table2[ids], τ)`` computed over the distinct ids only.

    Rows with the same id are identical, so with U the distinct ids and n_c their multiplicities,
    InfoNCE = (1/B) Σ_{r∈U} n_r [ logsumexp_{c∈U}(â_r·b̂_c/τ + log n_c) − â_r·b̂_r/τ ],
    the same value and gradient at |U|² instead of B² cost (a BPR batch repeats popular ids)."""
    uniq, counts = torch.unique(ids, return_counts=True)
    n = counts.to(table1.dtype)
    log_n = n.log()
    a = F.normalize(table1[uniq], dim=1) / temperature  # scale the (|U|, d) rows, not the |U|² logits
    b = F.normalize(table2[uniq], dim=1)
    logits = torch.addmm(log_n.unsqueeze(0), a, b.T)  # â_r·b̂_c/τ + log n_c
    nll = F.cross_entropy(logits, torch.arange(uniq.shape[0], device=uniq.device), reduction="none")
    return (n * (nll + log_n)).sum() / ids.shape[0]


def _id_tables(n_users: int, n_items: int, d: int) -> tuple[nn.Embedding, nn.Embedding]:
    """E_u, E_i ~ Xavier-uniform, drawn in MMRec's order (the first draws after the seed: the constructor
    and :meth:`MGCN.initial_rows` share this function, so the same seed gives the same rows)."""
    users, items = nn.Embedding(n_users, d), nn.Embedding(n_items, d)
    nn.init.xavier_uniform_(users.weight)
    nn.init.xavier_uniform_(items.weight)
    return users, items


def _gate(dim: int) -> nn.Sequential:
    """x ↦ σ(W x + b), a d → d gate."""
    return nn.Sequential(nn.Linear(dim, dim), nn.Sigmoid())


class MGCN(Recommender):
    """Multi-View Graph Convolutional Network; see the module docstring for the formulas."""

    name = "mgcn"
    TABLES = {"user_embedding": "user", "item_id_embedding": "item"}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        super().__init__(dataset, config)
        if not dataset.features:
            raise DataError(f"dataset '{dataset.name}': MGCN needs at least one modality feature matrix")
        d = self.embedding_dim
        self.n_ui_layers = int(config.get("n_ui_layers", 2))
        self.n_layers = int(config.get("n_layers", 1))
        self.knn_k = int(config.get("knn_k", 10))
        self.reg_weight = float(config.get("reg_weight", 1e-4))
        self.cl_weight = float(config.get("cl_loss", 0.01))
        self.cl_temperature = float(config.get("cl_temperature", 0.2))
        self.reg_batch_size = int(config.get("train_batch_size", 2048))
        # MMRec's order: its "v" slot (non-text modalities) before its "t" slot (text)
        self.modalities = [m for m in self.modality_names if m != TEXT_MODALITY] + (
            [TEXT_MODALITY] if TEXT_MODALITY in self.modality_names else []
        )
        self._check_features(dataset)
        self._raw_features = {m: dataset.features[m] for m in self.modalities}
        self.TABLES = {**type(self).TABLES, **{f"feat_{m}": "item" for m in self.modalities}}

        # parameters, created in MMRec's order (same seed -> same initial weights as MMRec's MGCN)
        self.user_embedding, self.item_id_embedding = _id_tables(self.n_users, self.n_items, d)
        for m in self.modalities:
            feat = torch.tensor(dataset.features[m], dtype=torch.float32)  # a copy: training moves it
            self.add_module(f"feat_{m}", nn.Embedding.from_pretrained(feat, freeze=False))
        for m in self.modalities:
            self.add_module(f"proj_{m}", nn.Linear(dataset.features[m].shape[1], d))
        self.query_common = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
        for m in self.modalities:
            self.add_module(f"purifier_{m}", _gate(d))
        for m in self.modalities:
            self.add_module(f"prefer_{m}", _gate(d))

        # graphs: interaction-derived (rebuild) and content-only (kNN on raw features)
        self.register_buffer("dropped_items", torch.zeros(self.n_items, dtype=torch.bool))
        self._csr = _CsrCache()
        self.rebuild(dataset.train)
        self._build_content_graphs()
        self.register_load_state_dict_post_hook(MGCN._after_load)

    # ---------------------------------------------------------------- validation
    def _check_features(self, dataset: RecDataset) -> None:
        for m in self.modalities:
            feat = dataset.features[m]
            where = f"dataset '{dataset.name}', modality '{m}'"
            if m in (ID_BRANCH, FUSION_BRANCH) or "." in m or not m:
                raise DataError(
                    f"{where}: the name is reserved or not a valid module name (expected a "
                    f"non-empty name without '.', not '{ID_BRANCH}' / '{FUSION_BRANCH}')"
                )
            if feat.ndim != 2 or feat.shape[0] != self.n_items:
                raise DataError(
                    f"{where}: feature matrix has shape {feat.shape}, expected ({self.n_items}, dim)"
                )
            if not np.isfinite(feat).all():
                bad = int(np.flatnonzero(~np.isfinite(feat).all(axis=1))[0])
                raise DataError(f"{where}: row {bad} holds a NaN or infinite value")

    # ---------------------------------------------------------------- graphs
    def rebuild(self, train: Pairs) -> None:
        """Â (bipartite, symmetric normalisation) and R̂ = D_u^{-1/2} R D_i^{-1/2} from ``train``, on the
        model's device. Content graphs are untouched."""
        dev = self.device
        adj = graph.sym_norm_bipartite(train, self.n_users, self.n_items, device=dev)
        r_hat = graph.sym_norm_user_item(train, self.n_users, self.n_items, device=dev)
        self.register_buffer("norm_adj", adj, persistent=False)
        self.register_buffer("R", r_hat, persistent=False)

    def _build_content_graphs(self) -> None:
        """S_m = kNN(cos, k) of the raw features of modality m, without the dropped items."""
        dev = self.device
        self._graph_mask = self.dropped_items.detach().clone()
        keep = ~self.dropped_items.to(dev) if bool(self.dropped_items.any()) else None
        for m in self.modalities:
            feats = torch.as_tensor(self._raw_features[m], dtype=torch.float32, device=dev)
            s = graph.knn_graph(feats, self.knn_k, keep_mask=keep)
            self.register_buffer(f"knn_{m}", s, persistent=False)

    def drop_items_from_content_graphs(self, items: Tensor) -> None:
        """Rebuild every kNN graph without ``items`` (no edges in or out); the persistent ``dropped_items``
        mask accumulates over calls, so a reloaded state dict reproduces the graphs."""
        idx = torch.as_tensor(items, dtype=torch.long).reshape(-1).to(self.dropped_items.device)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.n_items):
            raise ValueError(
                f"item ids must lie in [0, {self.n_items}), got {idx.min().item()}..{idx.max().item()}"
            )
        self.dropped_items[idx] = True
        self._build_content_graphs()

    @staticmethod
    def _after_load(module: nn.Module, _incompatible: Any) -> None:
        assert isinstance(module, MGCN)
        if not torch.equal(module._graph_mask.to(module.dropped_items.device), module.dropped_items):
            module._build_content_graphs()

    def graph(self, name: str) -> tuple[Tensor, Tensor]:
        """(A, Aᵀ) in CSR form for the sparse COO buffer ``name`` (cached until the buffer changes)."""
        buf = getattr(self, name)
        hit = self._csr.get(name)
        if hit is None or hit[0] is not buf:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                coo = buf.coalesce()
                hit = (buf, coo.to_sparse_csr(), coo.t().coalesce().to_sparse_csr())
            self._csr[name] = hit
        return hit[1], hit[2]

    # ---------------------------------------------------------------- forward
    def _views(self) -> tuple[Tensor, Tensor]:
        """(C, S): the user-item (content) view and the fused side view, both (N, d)."""
        item_id = self.item_id_embedding.weight
        # user-item view: C = mean over H⁰..H^L, H^{l+1} = Â Hˡ
        h = torch.cat([self.user_embedding.weight, item_id], dim=0)
        layers = [h]
        adj, adj_t = self.graph("norm_adj")
        r_hat, r_hat_t = self.graph("R")
        for _ in range(self.n_ui_layers):
            h = sparse_mm(adj, adj_t, h)
            layers.append(h)
        content = torch.stack(layers, dim=1).mean(dim=1)
        # item-item views: I_m = S_m^K (E_i ⊙ σ(G_m F_m)), U_m = R̂ I_m
        views = []
        for m in self.modalities:
            projected = getattr(self, f"proj_{m}")(getattr(self, f"feat_{m}").weight)
            item_view = item_id * getattr(self, f"purifier_{m}")(projected)
            knn, knn_t = self.graph(f"knn_{m}")
            for _ in range(self.n_layers):
                item_view = sparse_mm(knn, knn_t, item_view)
            user_view = sparse_mm(r_hat, r_hat_t, item_view)
            views.append(torch.cat([user_view, item_view], dim=0))
        stacked = torch.stack(views, dim=0)  # (M, N, d)
        # behaviour-aware fuser
        weights = torch.softmax(self.query_common(stacked), dim=0)  # (M, N, 1)
        common = (weights * stacked).sum(dim=0)
        specific = [
            getattr(self, f"prefer_{m}")(content) * (stacked[k] - common)
            for k, m in enumerate(self.modalities)
        ]
        side = (torch.stack(specific, dim=0).sum(dim=0) + common) / (len(self.modalities) + 1)
        return content, side

    def forward(self) -> tuple[Tensor, Tensor]:
        """Final representations C + S, split into users (n_users, d) and items (n_items, d)."""
        content, side = self._views()
        final = content + side
        return final[: self.n_users], final[self.n_users :]

    # ---------------------------------------------------------------- losses
    def training_state(self) -> tuple[Tensor, Tensor]:
        """(C, S): the two views, from which both the final scores and the contrastive loss follow."""
        return self._views()

    def state_embeddings(self, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        final = state[0] + state[1]
        return final[: self.n_users], final[self.n_users :]

    def loss_from_state(self, state: tuple[Tensor, Tensor], batch: Batch) -> Tensor:
        bpr, reg, cl = self._loss_terms(batch, state)
        return bpr + reg + cl

    def _loss_terms(
        self, batch: Batch, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(BPR, weighted regulariser, weighted contrastive loss) from one forward pass (``state``, or a
        fresh one)."""
        content, side = self._views() if state is None else state
        final = content + side
        nu = self.n_users
        u = final[batch.users]
        p = final[nu + batch.pos]
        n = final[nu + batch.neg]
        bpr = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        reg = self.reg_weight * l2_reg(u, p, n, batch_size=self.reg_batch_size)
        cl = info_nce_rows(side, content, nu + batch.pos, self.cl_temperature) + info_nce_rows(
            side, content, batch.users, self.cl_temperature
        )
        return bpr, reg, self.cl_weight * cl

    def calculate_loss(self, batch: Batch) -> Tensor:
        """BPR + reg_weight · ½‖e‖²/B + cl_loss · (InfoNCE items + InfoNCE users)."""
        bpr, reg, cl = self._loss_terms(batch)
        return bpr + reg + cl

    def auxiliary_loss(self, batch: Batch) -> Tensor:
        """reg_weight · ½‖e‖²/B + cl_loss · (InfoNCE items + InfoNCE users), without BPR."""
        _, reg, cl = self._loss_terms(batch)
        return reg + cl

    # ---------------------------------------------------------------- unlearning maps
    def isolated_items(self, items: Tensor) -> IsolatedItems:
        """Final embeddings of items without a user-item edge as a function of their ID rows E_D and raw
        feature rows X_m[D], everything else frozen at its current value (exact, not linearised):

            C_D = E_D / (L + 1)              (isolated in Â, no self loops: Hˡ_D = 0 for l ≥ 1)
            P_m = E ⊙ σ(G_m F_m(X_m)),
            I_m[D] = (S_m^K P_m)[D] = (S_m^K P⁰_m)[D] + S_m^K[D, D] (P_m[D] − P⁰_m[D])
            then the fuser, the preference gates σ(Q_m C_D + d_m) and S_D = (Σ_m Ṽ_m + Z) / (M + 1);
            final_D = C_D + S_D.

        (P⁰ at the current weights; S_m^K[·, D] by K products of S_m with the indicator columns of D.) The
        penalty is the BPR batch's regulariser on negatives, reg_weight · ½‖e‖² / train_batch_size."""
        idx = torch.as_tensor(items, dtype=torch.long, device=self.device).reshape(-1)
        with torch.no_grad():
            item_id = self.item_id_embedding.weight
            base, block, p0 = {}, {}, {}
            for m in self.modalities:
                projected = getattr(self, f"proj_{m}")(getattr(self, f"feat_{m}").weight)
                p = item_id * getattr(self, f"purifier_{m}")(projected)
                knn, _ = self.graph(f"knn_{m}")
                view = p
                for _ in range(self.n_layers):
                    view = torch.sparse.mm(knn, view)
                blk = torch.empty(len(idx), len(idx), device=item_id.device)
                for a in range(0, len(idx), 512):  # S^K[:, D] in column chunks: O(n_items × 512) memory
                    part = idx[a : a + 512]
                    cols = torch.zeros(self.n_items, len(part), device=item_id.device)
                    cols[part, torch.arange(len(part), device=item_id.device)] = 1.0
                    for _ in range(self.n_layers):
                        cols = torch.sparse.mm(knn, cols)
                    blk[:, a : a + len(part)] = cols[idx]
                base[m], block[m], p0[m] = view[idx].clone(), blk, p[idx].clone()
        rows = {"item_id_embedding.weight": item_id.detach()[idx].clone().requires_grad_(True)}
        for m in self.modalities:
            feat = getattr(self, f"feat_{m}").weight
            rows[f"feat_{m}.weight"] = feat.detach()[idx].clone().requires_grad_(True)
        n_layers_ui = self.n_ui_layers

        def final() -> Tensor:
            e = rows["item_id_embedding.weight"]
            content = e / (n_layers_ui + 1)
            views = []
            for m in self.modalities:
                p = e * getattr(self, f"purifier_{m}")(getattr(self, f"proj_{m}")(rows[f"feat_{m}.weight"]))
                views.append(base[m] + block[m] @ (p - p0[m]))
            stacked = torch.stack(views, dim=0)
            weights = torch.softmax(self.query_common(stacked), dim=0)
            common = (weights * stacked).sum(dim=0)
            specific = [
                getattr(self, f"prefer_{m}")(content) * (stacked[k] - common)
                for k, m in enumerate(self.modalities)
            ]
            return content + (torch.stack(specific, dim=0).sum(dim=0) + common) / (len(self.modalities) + 1)

        def penalty(neg: Tensor) -> Tensor:
            return self.reg_weight * l2_reg(neg, batch_size=self.reg_batch_size)

        return IsolatedItems(rows, final, penalty)

    def initial_rows(self, seed: int) -> dict[str, Tensor]:
        """The ID tables as :func:`tru.models.build_backbone` draws them with ``seed`` (global RNG state
        untouched) and the trainable raw feature tables as initialised (the dataset's features). A user
        without a retained interaction is never in a BPR or contrastive batch, so its row keeps exactly
        this value through retraining (Adam on a zero gradient does not move it)."""
        with seeded(seed):
            users, items = _id_tables(self.n_users, self.n_items, self.embedding_dim)
        raw = {
            f"feat_{m}.weight": torch.as_tensor(self._raw_features[m], dtype=torch.float32)
            for m in self.modalities
        }
        return {
            "user_embedding.weight": users.weight.detach(),
            "item_id_embedding.weight": items.weight.detach(),
            **raw,
        }

    def branches(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {ID_BRANCH: ["user_embedding", "item_id_embedding"]}
        for m in self.modalities:
            out[m] = [f"feat_{m}", f"proj_{m}", f"purifier_{m}", f"prefer_{m}"]
        out[FUSION_BRANCH] = ["query_common"]
        return out
