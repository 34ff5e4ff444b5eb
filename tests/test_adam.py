"""tru.unlearn.adam.Adam computes what torch.optim.Adam computes, float for float, without importing
torch._dynamo."""

import subprocess
import sys

import pytest
import torch

from tru.unlearn.adam import Adam


def _params(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(7, 5, generator=g).requires_grad_(), torch.randn(3, generator=g).requires_grad_()]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_the_same_floats_as_torch_adam_with_skipped_parameters_and_a_new_rate(
    weight_decay: float, foreach: bool
) -> None:
    """Both paths: single-tensor (torch's default on CPU) and foreach (its default on CUDA, checked here on
    CPU kernels)."""
    ours, theirs = _params(0), _params(0)
    opt_ours = Adam(ours, lr=0.01, weight_decay=weight_decay, foreach=foreach)
    opt_theirs = torch.optim.Adam(theirs, lr=0.01, weight_decay=weight_decay, foreach=foreach)
    g = torch.Generator().manual_seed(1)
    for step in range(30):
        if step == 12:  # emulate.py changes the rate between epochs
            opt_ours.lr = 0.003
            for group in opt_theirs.param_groups:
                group["lr"] = 0.003
        opt_ours.zero_grad(set_to_none=True)
        opt_theirs.zero_grad(set_to_none=True)
        for a, b in zip(ours, theirs, strict=True):
            grad = torch.randn(a.shape, generator=g) * 10 ** float(torch.randint(-6, 2, (), generator=g))
            if step % 4 == 3 and a.dim() == 1:  # a parameter without a gradient this step: skipped
                continue
            a.grad, b.grad = grad.clone(), grad.clone()
        opt_ours.step()
        opt_theirs.step()
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a, b), f"step {step}: {(a - b).abs().max()}"
    assert opt_ours.steps == [30, sum(1 for s in range(30) if s % 4 != 3)]


def test_zero_grad_keeps_or_drops_the_tensor() -> None:
    p = _params(2)[0]
    opt = Adam([p], lr=0.1)
    p.grad = torch.ones_like(p)
    opt.zero_grad(set_to_none=False)
    assert p.grad is not None and not p.grad.any()
    opt.zero_grad()
    assert p.grad is None


def test_a_bad_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="empty parameter list"):
        Adam([], lr=0.1)
    with pytest.raises(ValueError, match="invalid"):
        Adam(_params(3), lr=-1.0)


def test_no_dynamo_import() -> None:
    code = (
        "import sys, torch; from tru.unlearn.adam import Adam; p = torch.zeros(2, requires_grad=True); "
        "o = Adam([p], lr=0.1); p.grad = torch.ones(2); o.step(); print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
