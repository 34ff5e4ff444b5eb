"""MIG-GT (Hu et al., AAAI 2025): Modality-Independent GNNs with a Global Transformer.

Follows CrawlScript/MIG-GT (``mig_gt/layers/mirf_gt.py``, ``mgdcf.py``, ``main.py``, "baby" setting),
with torch sparse instead of DGL and any set of modalities:

* Branches. The ID branch propagates the user ID table (items enter as zeros: the reference trains
  without item ID embeddings, ``use_item_emb=False``; ``use_item_emb: true`` adds an item table). Every
  modality m has its own branch: raw features f^m → (dropout) → MLP_m (Linear-BN-PReLU-Dropout-Linear-
  BN-PReLU) → item input, users enter as zeros. The reference's "t" branch is ``text``; every other
  modality plays its "v" role and, with ``use_rp``, is first randomly projected to the text dimension:
  f^m ← (f^m R_m) / (‖f^m R_m‖ + 1e-8) with a fixed R_m ~ N(0, 1) (persistent buffer ``rp_<m>``).
* Modality-independent receptive fields (MGDCF). Each branch b has its own depth k_b:
  h ← β·Â h + α·h0 repeated k_b times, then h / γ_k with γ_k = β^k + α·Σ_{i<k} β^i, where
  Â = D^{-1/2}(A + I)D^{-1/2} on the user+item graph with self-loops, and edge dropout on Â's values
  (drawn afresh per branch and forward; every branch's input gets its own dropout too). A node without
  any edge (a deleted user or item once the graph is rebuilt from D_r; none in 5-core training data) gets
  no self-loop (``isolated_self_loop: false``): h = α·h0, where the reference's A + I gives it its own
  input at full weight, 1/(α + β/(d+1)) times what a connected node of degree d keeps (Last.fm-2K item
  regime: target items' final norm 9.9 vs 3.3, so the rebuilt model ranked them higher than before).
* Sum fusion z = dropout(Σ_b h_b), then the sampled global transformer: each node n (user or item)
  attends over [z_n, z_{j_1..j_S}] with S items drawn uniformly; one head, Q = W_q x, K = W_k x
  (d → 4), V = x, att = softmax(QKᵀ/√4)·V, out = 0.1·att + 0.9·x; the node's final representation is the
  output at its own token. At evaluation the S items are drawn with a fixed seed (``eval_sample_seed``).
* Loss: BPR + unsmoothing loss + l2_coef·½(‖U‖² + ‖I‖²) over all final representations, where the
  unsmoothing loss is CE over logits ⟨u, o_{i,t}⟩, t = 0..S, with o_{i,·} the transformer outputs of the
  positive item's token sequence and target t = 0 (its own token). The reference sums the per-pair terms;
  here (``loss_reduction: mean``) the whole loss is divided by the batch size (Adam is invariant to that
  up to its ε); ``sum`` gives the reference's scale. Negatives come from the trainer (one per positive).
* Checked against the reference on the same weights (scratch ``equiv.py``): features, MLPs, each MGDCF
  branch, the transformer output, the loss and the gradients agree to float32 precision.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tru.data.dataset import DataError, Pairs, RecDataset
from tru.models.base import FUSION_BRANCH, ID_BRANCH, Batch, Recommender, bpr_loss, seeded
from tru.models.graph import sym_norm_bipartite

TEXT = "text"


def mgdcf_gamma(alpha: float, beta: float, k: int) -> float:
    """γ_k = β^k + α·Σ_{i<k} β^i, the scale of k MGDCF steps on a constant signal (divided out)."""
    return beta**k + alpha * sum(beta**i for i in range(k))


GRAPH_FIELDS = ("crow", "col", "val", "tperm")


def sym_pattern_csr(adj: Tensor) -> dict[str, Tensor]:
    """CSR arrays (``crow``, ``col``, ``val``) of a square COO matrix whose sparsity pattern is
    symmetric, plus ``tperm``: the transpose has the same pattern and the values ``val[tperm]``."""
    adj = adj.coalesce()
    n = adj.shape[0]
    rows, cols = adj.indices()
    crow = torch.cat([rows.new_zeros(1), torch.bincount(rows, minlength=n).cumsum(0)])
    keys = rows * n + cols  # ascending: a coalesced COO matrix is row-major
    tkeys = cols * n + rows
    tperm = torch.searchsorted(keys, tkeys).clamp_max(max(len(keys) - 1, 0))
    if not torch.equal(keys[tperm], tkeys):
        raise ValueError("sym_pattern_csr: the sparsity pattern is not symmetric")
    return {"crow": crow, "col": cols.contiguous(), "val": adj.values().contiguous(), "tperm": tperm}


class _CSRSpMM(torch.autograd.Function):
    """y = A x for A = CSR(crow, col, val); ∂L/∂x = Aᵀ g with Aᵀ = CSR(crow, col, val_t) (same pattern).
    Avoids the sparse transpose that autograd of a generic sparse product builds on every backward."""

    @staticmethod
    def forward(ctx: Any, crow: Tensor, col: Tensor, val: Tensor, val_t: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(crow, col, val_t)
        n = crow.numel() - 1
        return torch.sparse_csr_tensor(crow, col, val, (n, n), check_invariants=False) @ x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None, None, None, Tensor]:
        crow, col, val_t = ctx.saved_tensors
        n = crow.numel() - 1
        return (
            None,
            None,
            None,
            None,
            torch.sparse_csr_tensor(crow, col, val_t, (n, n), check_invariants=False) @ grad,
        )


def mgdcf_propagate(
    graph: dict[str, Tensor], h0: Tensor, k: int, alpha: float, beta: float, edge_drop: float, training: bool
) -> Tensor:
    """h ← β·Â'h + α·h0, k times, then h / γ_k; Â' is Â (``SymGraph`` arrays) with dropout on its edge
    values while training (each direction of an edge, and each self-loop, dropped independently)."""
    if k <= 0:
        return h0
    val = F.dropout(graph["val"], edge_drop, True) if training and edge_drop > 0 else graph["val"]
    val_t = val[graph["tperm"]]
    h = h0
    for _ in range(k):
        h = beta * _CSRSpMM.apply(graph["crow"], graph["col"], val, val_t, h) + alpha * h0
    return h / mgdcf_gamma(alpha, beta, k)


def feature_mlp(in_dim: int, hidden: int, out_dim: int, drop: float, output_bn: bool = True) -> nn.Sequential:
    """Linear → BN → PReLU → Dropout → Linear → BN → PReLU (the reference's ``MyMLP``; Xavier-uniform
    weights, zero biases)."""
    layers: list[nn.Module] = [
        nn.Linear(in_dim, hidden),
        nn.BatchNorm1d(hidden),
        nn.PReLU(),
        nn.Dropout(drop),
        nn.Linear(hidden, out_dim),
    ]
    if output_bn:
        layers.append(nn.BatchNorm1d(out_dim))
    layers.append(nn.PReLU())
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class GlobalTransformer(nn.Module):
    """One-head attention over token sets x (N, T, d): out = r_a·softmax(QKᵀ/√a)·V + (1 − r_a)·x with
    Q = W_q x, K = W_k x (d → a), V = x (the reference's ``z_transformer``, r_a = 0.1)."""

    def __init__(self, dim: int, att_dim: int = 4, att_weight: float = 0.1) -> None:
        super().__init__()
        self.q = nn.Linear(dim, att_dim)
        self.k = nn.Linear(dim, att_dim)
        for lin in (self.q, self.k):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.att_weight = att_weight

    def forward(self, x: Tensor) -> Tensor:
        q, k = self.q(x), self.k(x)
        att = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)
        return self.att_weight * (att @ x) + (1.0 - self.att_weight) * x


def _id_tables(n_users: int, n_items: int, d: int, use_item_emb: bool) -> dict[str, nn.Embedding]:
    """The ID tables, N(0, 1/d), the first draws after the seed (shared by the constructor and
    :meth:`MIGGT.initial_rows`, so the same seed gives the same rows)."""
    out = {"user_embedding": nn.Embedding(n_users, d)}
    nn.init.normal_(out["user_embedding"].weight, std=d**-0.5)
    if use_item_emb:
        out["item_embedding"] = nn.Embedding(n_items, d)
        nn.init.normal_(out["item_embedding"].weight, std=d**-0.5)
    return out


class MIGGT(Recommender):
    name = "miggt"
    TABLES = {"user_embedding": "user", "item_embedding": "item"}

    def __init__(self, dataset: RecDataset, config: dict[str, Any]) -> None:
        super().__init__(dataset, config)
        d = self.embedding_dim
        c = self.config
        self.alpha = float(c.get("alpha", 0.1))
        self.beta = float(c.get("beta", 0.9))
        self.input_feat_drop = float(c.get("input_feat_drop_rate", 0.3))
        self.user_x_drop = float(c.get("user_x_drop_rate", 0.3))
        self.item_x_drop = float(c.get("item_x_drop_rate", 0.3))
        self.edge_drop = float(c.get("edge_drop_rate", 0.2))
        self.z_drop = float(c.get("z_drop_rate", 0.2))
        self.l2_coef = float(c.get("l2_coef", 1e-5))
        self.num_samples = int(c.get("num_samples", 10))
        self.eval_sample_seed = int(c.get("eval_sample_seed", 0))
        self.loss_reduction = str(c.get("loss_reduction", "mean"))
        self.isolated_self_loop = bool(c.get("isolated_self_loop", False))
        if self.loss_reduction not in ("mean", "sum"):
            raise ValueError(
                f"miggt config 'loss_reduction': expected 'mean' or 'sum', got {self.loss_reduction!r}"
            )
        if not dataset.features:
            raise DataError(f"dataset '{dataset.name}': MIG-GT needs at least one modality feature matrix")
        for m in dataset.features:
            if not m or "." in m or m in (ID_BRANCH, FUSION_BRANCH):
                raise DataError(
                    f"dataset '{dataset.name}': modality name {m!r} cannot name a branch "
                    f"(expected a non-empty name without '.', other than {ID_BRANCH!r} and "
                    f"{FUSION_BRANCH!r})"
                )
        # depths: k_id for the ID branch, k_<modality> per modality (text 2, others 1); k < 0 drops a branch
        self.depths: dict[str, int] = {ID_BRANCH: int(c.get("k_id", 4))}
        for m in dataset.features:
            self.depths[m] = int(c.get(f"k_{m}", 2 if m == TEXT else 1))
        self.active = [m for m in dataset.features if self.depths[m] >= 0]
        use_id = self.depths[ID_BRANCH] >= 0
        if not use_id and not self.active:
            raise ValueError("miggt: every branch is switched off (all k_* < 0)")

        tables = _id_tables(self.n_users, self.n_items, d, bool(c.get("use_item_emb", False)))
        self.user_embedding = tables["user_embedding"]
        if "item_embedding" in tables:
            self.item_embedding = tables["item_embedding"]

        anchor = TEXT if TEXT in dataset.features else next(iter(dataset.features))
        rp_dim = int(dataset.features[anchor].shape[1])
        gen = torch.Generator().manual_seed(int(c.get("seed", 999)))
        hidden = int(c.get("feat_hidden_units", 512))
        feat_drop, bn = float(c.get("feat_drop_rate", 0.3)), bool(c.get("bn", True))
        for m, feat in dataset.features.items():
            if feat.ndim != 2 or feat.shape[0] < self.n_items:
                raise DataError(
                    f"dataset '{dataset.name}': features '{m}' have shape {tuple(feat.shape)}, "
                    f"expected ({self.n_items}, dim)"
                )
            self.register_buffer(
                f"feat_{m}", torch.as_tensor(feat[: self.n_items], dtype=torch.float32), persistent=False
            )
            in_dim = int(feat.shape[1])
            if bool(c.get("use_rp", True)) and m != anchor:
                self.register_buffer(f"rp_{m}", torch.randn(in_dim, rp_dim, generator=gen))
                in_dim = rp_dim
            if m in self.active:
                self.add_module(f"mlp_{m}", feature_mlp(in_dim, hidden, d, feat_drop, bn))
        self.transformer = GlobalTransformer(d, int(c.get("att_units", 4)), float(c.get("att_weight", 0.1)))
        for f in GRAPH_FIELDS:
            self.register_buffer(f"adj_{f}", torch.empty(0), persistent=False)
        self.rebuild(dataset.train)

    # ---------------------------------------------------------------- structures
    def rebuild(self, train: Pairs) -> None:
        """Â = D^{-1/2}(A + I)D^{-1/2} over users + items, from ``train`` only."""
        adj = sym_norm_bipartite(
            train,
            self.n_users,
            self.n_items,
            self_loops=True,
            device=self.device,
            isolated_self_loops=self.isolated_self_loop,
        )
        for f, t in sym_pattern_csr(adj).items():
            setattr(self, f"adj_{f}", t)

    @property
    def graph(self) -> dict[str, Tensor]:
        """Â as ``sym_pattern_csr`` arrays (non-persistent buffers: they follow ``.to(device)``)."""
        return {f: getattr(self, f"adj_{f}") for f in GRAPH_FIELDS}

    def item_features(self, m: str) -> Tensor:
        """f^m, randomly projected and row-L2-normalised where ``rp_<m>`` exists."""
        x = getattr(self, f"feat_{m}")
        rp = getattr(self, f"rp_{m}", None)
        if rp is not None:
            x = x @ rp
            x = x / (x.norm(dim=-1, keepdim=True) + 1e-8)
        return x

    # ---------------------------------------------------------------- forward
    def _branch_outputs(self) -> dict[str, Tensor]:
        """h_b for every active branch, shape (n_users + n_items, d)."""
        tr, graph = self.training, self.graph
        users = self.user_embedding.weight
        out: dict[str, Tensor] = {}
        if self.depths[ID_BRANCH] >= 0:
            if hasattr(self, "item_embedding"):
                item_in = F.dropout(self.item_embedding.weight, self.item_x_drop, tr)
            else:
                item_in = users.new_zeros(self.n_items, users.shape[1])
            h0 = torch.cat([F.dropout(users, self.user_x_drop, tr), item_in])
            out[ID_BRANCH] = mgdcf_propagate(
                graph, h0, self.depths[ID_BRANCH], self.alpha, self.beta, self.edge_drop, tr
            )
        for m in self.active:
            x = F.dropout(self.item_features(m), self.input_feat_drop, tr)
            enc = getattr(self, f"mlp_{m}")(x)
            h0 = torch.cat([enc.new_zeros(self.n_users, enc.shape[1]), F.dropout(enc, self.item_x_drop, tr)])
            out[m] = mgdcf_propagate(graph, h0, self.depths[m], self.alpha, self.beta, self.edge_drop, tr)
        return out

    def _sample_memory(self, n_nodes: int) -> Tensor:
        """(n_nodes, S) uniform item indices; a fixed-seed generator at evaluation (deterministic)."""
        dev = self.adj_val.device
        if self.training:
            return torch.randint(0, self.n_items, (n_nodes, self.num_samples), device=dev)
        gen = torch.Generator(device=dev).manual_seed(self.eval_sample_seed)
        return torch.randint(0, self.n_items, (n_nodes, self.num_samples), device=dev, generator=gen)

    def _forward_all(self) -> tuple[Tensor, Tensor]:
        """Final representations of all nodes (N, d) and the transformer outputs (N, 1 + S, d)."""
        z = sum(self._branch_outputs().values())
        z = F.dropout(z, self.z_drop, self.training)
        items = z[self.n_users :]
        tokens = torch.cat([z.unsqueeze(1), items[self._sample_memory(z.shape[0])]], dim=1)
        memory = self.transformer(tokens)
        return memory[:, 0], memory

    def forward(self) -> tuple[Tensor, Tensor]:
        h, _ = self._forward_all()
        return h[: self.n_users], h[self.n_users :]

    # ---------------------------------------------------------------- losses
    def training_state(self) -> tuple[Tensor, Tensor]:
        """(H, memory): final node representations and the transformer outputs the unsmoothing loss uses."""
        return self._forward_all()

    def state_embeddings(self, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h = state[0]
        return h[: self.n_users], h[self.n_users :]

    def loss_from_state(self, state: tuple[Tensor, Tensor], batch: Batch) -> Tensor:
        bpr, aux = self._losses(batch, state)
        return bpr + aux

    def _losses(self, batch: Batch, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """(BPR, unsmoothing + l2) from one forward pass (``state``, or a fresh one), both reduced per
        ``loss_reduction``."""
        h, memory = self._forward_all() if state is None else state
        u_all, i_all = h[: self.n_users], h[self.n_users :]
        u = u_all[batch.users]
        pos = (u * i_all[batch.pos]).sum(-1)
        neg = (u * i_all[batch.neg]).sum(-1)
        logits = (memory[batch.pos + self.n_users] @ u.unsqueeze(-1)).squeeze(-1)
        target = torch.zeros(len(batch.users), dtype=torch.long, device=logits.device)
        scale = float(len(batch.users)) if self.loss_reduction == "sum" else 1.0
        unsmooth = F.cross_entropy(logits, target) * scale
        l2 = 0.5 * (u_all.pow(2).sum() + i_all.pow(2).sum()) * self.l2_coef / len(batch.users) * scale
        return bpr_loss(pos, neg) * scale, unsmooth + l2

    def calculate_loss(self, batch: Batch) -> Tensor:
        """BPR + CE_unsmooth + l2_coef·½‖H‖² (the reference's loss / batch size with ``mean``)."""
        bpr, aux = self._losses(batch)
        return bpr + aux

    def auxiliary_loss(self, batch: Batch) -> Tensor:
        """Unsmoothing loss + the l2 term (everything but BPR)."""
        return self._losses(batch)[1]

    # ---------------------------------------------------------------- unlearning maps
    def initial_rows(self, seed: int) -> dict[str, Tensor]:
        """The ID tables as :func:`tru.models.build_backbone` draws them with ``seed`` (global RNG state
        untouched). A user without a retained interaction is, in a model trained on D_r, an isolated
        node: its ID-branch output is α·E_u (no self-loop, ``isolated_self_loop: false``), so only the
        l2 term over every final row reaches its row, with a gradient of order l2_coef·α²·‖E_u‖/B, far
        below Adam's ε: retraining leaves the row at its initial value up to a relative change measured
        below 1 % (see the issue-9 report); the default :meth:`untrained_row_values` (the initial value)
        applies."""
        with seeded(seed):
            tables = _id_tables(
                self.n_users, self.n_items, self.embedding_dim, hasattr(self, "item_embedding")
            )
        return {f"{name}.weight": t.weight.detach() for name, t in tables.items()}

    def branches(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {ID_BRANCH: ["user_embedding"]}
        if hasattr(self, "item_embedding"):
            out[ID_BRANCH].append("item_embedding")
        for m in self.modality_names:
            out[m] = [f"mlp_{m}"] if m in self.active else []
        out[FUSION_BRANCH] = ["transformer"]
        return out
