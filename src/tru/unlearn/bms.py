"""Branch-wise modality scaling (BMS, tru-method.md §5).

Per step, with separate forget and retain gradients g_f, g_r, per branch b (from the backbone's
``branches()``): F_b = ‖g_f on b‖, R_b = ‖g_r on b‖, P_b = ‖θ_b‖, each an EMA (decay 0.9);
ρ_b = F_b / (P_b + ε), ψ_b = R_b / Σ_b' R_b'.

    α_b = clip( (median ρ / ρ_b)^γ · (mean ψ / ψ_b)^η , α_min, 1 )

The forget gradient of every parameter of branch b is scaled by α_b; the retain gradient never is.
A branch that absorbs a disproportionate share of the reversal relative to its size (large ρ_b), or on
which retained users depend heavily (large ψ_b), is damped.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from tru.unlearn.config import UnlearnConfig


class BranchScaler:
    def __init__(self, param_branch: dict[str, str], cfg: UnlearnConfig) -> None:
        self.param_branch = param_branch
        self.branches = sorted(set(param_branch.values()))
        self.decay = cfg.bms_decay
        self.gamma = cfg.gamma
        self.eta = cfg.eta
        self.alpha_min = cfg.alpha_min
        self.eps = 1e-12
        self.ema: dict[str, np.ndarray] = {}
        self.alpha: dict[str, float] = {b: 1.0 for b in self.branches}

    def _norms(self, tensors: dict[str, Tensor | None]) -> np.ndarray:
        """‖·‖ per branch over the given tensors (one fused norm per branch, one host sync in all)."""
        groups: dict[str, list[Tensor]] = {b: [] for b in self.branches}
        for name, t in tensors.items():
            if t is not None and name in self.param_branch:
                groups[self.param_branch[name]].append(t.detach())
        per = []
        for b in self.branches:
            ts = groups[b]
            per.append(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(ts))) if ts else None)
        zero = next((x for x in per if x is not None), None)
        if zero is None:
            return np.zeros(len(self.branches))
        vals = torch.stack([x if x is not None else torch.zeros_like(zero) for x in per])
        return vals.double().cpu().numpy()

    def update(
        self, g_f: dict[str, Tensor | None], g_r: dict[str, Tensor | None], params: dict[str, Tensor]
    ) -> dict[str, float]:
        """Update the EMAs from this step's gradients and return α_b per branch."""
        now = {"F": self._norms(g_f), "R": self._norms(g_r), "P": self._norms(params)}
        for key, val in now.items():
            prev = self.ema.get(key)
            self.ema[key] = val if prev is None else self.decay * prev + (1 - self.decay) * val
        f, r, p = self.ema["F"], self.ema["R"], self.ema["P"]
        rho = f / (p + self.eps)
        psi = r / (r.sum() + self.eps)
        active = rho > 0
        if not active.any():
            self.alpha = {b: 1.0 for b in self.branches}
            return self.alpha
        rho_ratio = np.where(active, np.median(rho[active]) / np.maximum(rho, self.eps), 1.0)
        psi_mean = psi[active].mean()
        psi_ratio = np.where(psi > 0, psi_mean / np.maximum(psi, self.eps), 1.0)
        alpha = np.clip(rho_ratio**self.gamma * psi_ratio**self.eta, self.alpha_min, 1.0)
        self.alpha = {b: float(a) for b, a in zip(self.branches, alpha)}
        return self.alpha

    def scale(self, g_f: dict[str, Tensor | None]) -> dict[str, Tensor | None]:
        return {
            n: (g * self.alpha[self.param_branch[n]] if g is not None and n in self.param_branch else g)
            for n, g in g_f.items()
        }
