"""UnfoldedModule's speed options: the deferred NaN check and the opt-in torch.compile."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from lightning_unfold import SparseRecovery, SyntheticDataModule, UnfoldedModule
from lightning_unfold.core.trajectory import Trajectory

PROBLEM = SparseRecovery(m=8, n=16, seed=0)


class _NaNFrom(UnfoldedModule):
    """The loss turns NaN from global step ``bad_step`` on."""

    bad_step = 3

    def loss(self, traj: Trajectory[Any], x: Tensor, target: Tensor) -> Tensor:
        loss = super().loss(traj, x, target)
        return loss * float("nan") if self.global_step >= self.bad_step else loss


def _fit(module: UnfoldedModule, quiet_trainer: Any, batches: int, steps: int) -> None:
    data = SyntheticDataModule(PROBLEM, batch_size=8, train_batches=batches, val_size=8)
    quiet_trainer(max_steps=steps, limit_val_batches=0).fit(module, data)


@pytest.mark.parametrize(
    ("every", "batches", "match"),
    [
        (1, 10, r"at step 3;"),  # every step: the exact step
        (4, 10, r"at steps 0\.\.3;"),  # the first host check after the NaN names its window
        (50, 5, r"at steps 0\.\.4;"),  # fewer steps than the interval: the epoch end checks
    ],
)
def test_nan_loss_is_a_clear_error_without_a_per_step_sync(
    quiet_trainer: Any, every: int, batches: int, match: str
) -> None:
    module = _NaNFrom(PROBLEM, variant="lista_cp", depth=2, check_finite_every=every)
    with pytest.raises(FloatingPointError, match=match + " lower the learning rate"):
        _fit(module, quiet_trainer, batches, steps=10)


def test_finite_losses_pass_and_bad_interval_is_an_error(quiet_trainer: Any) -> None:
    _fit(UnfoldedModule(PROBLEM, depth=2, check_finite_every=3), quiet_trainer, 4, steps=8)
    with pytest.raises(ValueError, match="check_finite_every must be an integer >= 1"):
        UnfoldedModule(PROBLEM, depth=2, check_finite_every=0)


def test_compile_runs_the_training_forward_compiled_and_keeps_the_state_dict(
    quiet_trainer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    real = torch.compile

    def eager_compile(fn: Any, **kw: Any) -> Any:  # dynamo tracing, no C++ code generation
        calls.append(fn)
        return real(fn, backend="eager", **kw)

    monkeypatch.setattr(torch, "compile", eager_compile)
    torch.manual_seed(0)
    plain = UnfoldedModule(PROBLEM, variant="lista_cp", depth=3)
    compiled = UnfoldedModule(PROBLEM, variant="lista_cp", depth=3, compile=True)
    assert plain.state_dict().keys() == compiled.state_dict().keys()
    for mod in (plain, compiled):
        _fit(mod, quiet_trainer, 3, steps=3)
    assert len(calls) == 1 and getattr(calls[0], "__self__", None) is compiled.model
    for a, b in zip(plain.parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert plain.state_dict().keys() == compiled.state_dict().keys()
