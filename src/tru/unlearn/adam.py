"""Adam for the unlearning updates: the arithmetic of ``torch.optim.Adam`` (L2 weight decay, no amsgrad,
no maximise), without its start-up cost.

Per parameter θ that has a gradient g at this step (a parameter whose ``grad`` is None is skipped, its
step count t unchanged, as in torch):

    t ← t + 1
    g ← g + λ·θ                                    (λ: weight_decay; skipped when 0)
    m ← m + (1 − β₁)·(g − m)                       (``lerp``)
    v ← β₂·v + (1 − β₂)·g²
    θ ← θ − η / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)

The same operations in the same order as torch's Adam takes by default, so the same floats bit for bit
(``tests/test_adam.py``): the single-tensor path on CPU, the ``torch._foreach_*`` path where every parameter
is on CUDA / XPU (torch's default there; on CUDA a tensor divided by a Python scalar is computed as a product
with its reciprocal, a foreach division is not). The item emulation must train the target items' rows
exactly as the trainer's ``torch.optim.Adam`` would. (The foreach path is checked against torch's foreach
Adam on CPU kernels; no GPU was at hand to check it on CUDA.)

Why not that class: its constructor imports ``torch._dynamo`` on first use (``torch._disable_dynamo`` on
``add_param_group``), 1.5 s of every ``tru unlearn`` process here (``benchmarks/bench_cli_unlearn.py``) for a
compiler the update never uses.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

#: devices where torch's Adam takes its foreach path by default
FOREACH_DEVICES = ("cuda", "xpu")


class Adam:
    """Adam over ``params`` (see the module docstring); ``lr`` may be changed between steps."""

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        foreach: bool | None = None,
    ) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("Adam got an empty parameter list")
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Adam: invalid lr {lr}, betas {betas}, eps {eps} or decay {weight_decay}")
        self.lr, self.weight_decay, self.betas, self.eps = float(lr), float(weight_decay), betas, float(eps)
        #: None: torch's default (foreach where every parameter is on a foreach device)
        self.foreach = (
            all(p.device.type in FOREACH_DEVICES for p in self.params) if foreach is None else foreach
        )
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

    def _state(self, k: int) -> tuple[Tensor, Tensor]:
        p = self.params[k]
        if self.exp_avg[k] is None:
            self.exp_avg[k] = torch.zeros_like(p, memory_format=torch.preserve_format)
            self.exp_avg_sq[k] = torch.zeros_like(p, memory_format=torch.preserve_format)
        exp_avg, exp_avg_sq = self.exp_avg[k], self.exp_avg_sq[k]
        assert exp_avg is not None and exp_avg_sq is not None
        return exp_avg, exp_avg_sq

    @torch.no_grad()
    def step(self) -> None:
        if self.foreach:
            self._step_foreach()
            return
        beta1, beta2 = self.betas
        for k, p in enumerate(self.params):
            grad = p.grad
            if grad is None:
                continue
            exp_avg, exp_avg_sq = self._state(k)
            self.steps[k] += 1
            t = float(self.steps[k])
            if self.weight_decay != 0:
                grad = grad.add(p, alpha=self.weight_decay)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = self.lr / (1 - beta1**t)
            denom = (exp_avg_sq.sqrt() / (1 - beta2**t) ** 0.5).add_(self.eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)

    def _step_foreach(self) -> None:
        """The same update as torch's multi-tensor Adam (``_multi_tensor_adam``, not capturable)."""
        beta1, beta2 = self.betas
        live = [k for k, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        params = [self.params[k] for k in live]
        grads = [p.grad for p in params]
        states = [self._state(k) for k in live]
        exp_avgs, exp_avg_sqs = [a for a, _ in states], [b for _, b in states]
        for k in live:
            self.steps[k] += 1
        if self.weight_decay != 0:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        steps = [float(self.steps[k]) for k in live]
        step_size = [(self.lr / (1 - beta1**t)) * -1 for t in steps]
        bias_correction2_sqrt = [(1 - beta2**t) ** 0.5 for t in steps]
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)
