"""Adam for the unlearning updates: the arithmetic of ``torch.optim.Adam`` (L2 weight decay, no amsgrad,
no maximise), without its start-up cost.

Per parameter θ that has a gradient g at this step (a parameter whose ``grad`` is None is skipped, its
step count t unchanged, as in torch):

    t ← t + 1
    g ← g + λ·θ                                    (λ: weight_decay; skipped when 0)
    m ← m + (1 − β₁)·(g − m)                       (``lerp``)
    v ← β₂·v + (1 − β₂)·g²
    θ ← θ − η / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)

The same operations in the same order as torch's single-tensor Adam (its CPU path), so the same floats
bit for bit (``tests/test_adam.py``): the item emulation must train the target items' rows exactly as the
trainer's ``torch.optim.Adam`` would. Why not that class: its constructor imports ``torch._dynamo`` on
first use (``torch._disable_dynamo`` on ``add_param_group``), 1.5 s of every ``tru unlearn`` process here
(``benchmarks/bench_cli_unlearn.py``) for a compiler the update never uses.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class Adam:
    """Adam over ``params`` (see the module docstring); ``lr`` may be changed between steps."""

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("Adam got an empty parameter list")
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Adam: invalid lr {lr}, betas {betas}, eps {eps} or decay {weight_decay}")
        self.lr, self.weight_decay, self.betas, self.eps = float(lr), float(weight_decay), betas, float(eps)
        self.steps = [0] * len(self.params)
        self.exp_avg: list[Tensor | None] = [None] * len(self.params)
        self.exp_avg_sq: list[Tensor | None] = [None] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_()
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for k, p in enumerate(self.params):
            grad = p.grad
            if grad is None:
                continue
            if self.exp_avg[k] is None:
                self.exp_avg[k] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.exp_avg_sq[k] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avg, exp_avg_sq = self.exp_avg[k], self.exp_avg_sq[k]
            assert exp_avg is not None and exp_avg_sq is not None
            self.steps[k] += 1
            t = float(self.steps[k])
            if self.weight_decay != 0:
                grad = grad.add(p, alpha=self.weight_decay)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = self.lr / (1 - beta1**t)
            denom = (exp_avg_sq.sqrt() / (1 - beta2**t) ** 0.5).add_(self.eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)
