"""Paradigm options that live in the core: learned hyperparameters beside a correction, and the
shared convolutional denoiser."""

from __future__ import annotations

import pytest
import torch

from lightning_unfold import ISTA, ClassicalSolver, SparseRecovery, UnfoldedModel
from lightning_unfold.core import ConvDenoiserNet, promote_hyperparameters
from lightning_unfold.training import UnfoldedModule

F64 = torch.float64


@pytest.mark.parametrize("tied", [False, True])
def test_correction_with_learned_hyperparameters_starts_as_the_classical_solver(tied: bool) -> None:
    prob = SparseRecovery(m=12, n=24, sparsity=0.2, rho=0.05, seed=3)
    x, _ = prob.sample(5, seed=1, dtype=F64)
    ref = ClassicalSolver(ISTA(), prob, 8, dtype=F64)(x)
    model = UnfoldedModel(
        ISTA(), prob, 8, "correction", tied=tied, learn_hyperparameters=True, hidden=4, dtype=F64
    )
    hypers = {s.name for s in model.specs if s.role.value == "hyper"}
    assert hypers and hypers <= set(model.learned)
    assert all(len(model.learned[n]) == (1 if tied else 8) for n in hypers)
    with torch.no_grad():
        traj = model(x)
    for a, b in zip(traj.estimates, ref.estimates, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    # the layer's trainable tensors include its hyperparameters (what schedules train)
    if not tied:
        ids = {id(p) for p in model.layer_parameters(3)}
        assert all(id(model.learned[n][2]) in ids for n in hypers)


def test_learned_hyperparameters_equal_promotion_after_the_fact() -> None:
    prob = SparseRecovery(m=10, n=20, rho=0.05, seed=4)
    torch.manual_seed(0)
    built = UnfoldedModel(ISTA(), prob, 4, "correction", learn_hyperparameters=True, hidden=3)
    torch.manual_seed(0)
    promoted = promote_hyperparameters(UnfoldedModel(ISTA(), prob, 4, "correction", hidden=3))
    # the same trainable parameters (promotion also leaves the classical values as buffers)
    assert [n for n, _ in built.named_parameters()] == [n for n, _ in promoted.named_parameters()]
    for (_, a), (_, b) in zip(built.named_parameters(), promoted.named_parameters(), strict=True):
        torch.testing.assert_close(a, b)
    x, _ = prob.sample(3, seed=0)
    with torch.no_grad():
        torch.testing.assert_close(built(x).final_estimate, promoted(x).final_estimate)


def test_learned_hyperparameters_are_refused_where_they_mean_nothing() -> None:
    prob = SparseRecovery(m=10, n=20, seed=4)
    with pytest.raises(ValueError, match="inductive_bias paradigm replaces the iteration"):
        UnfoldedModel(ISTA(), prob, 3, "inductive_bias", learn_hyperparameters=True)
    with pytest.raises(TypeError, match="paradigm='correction'"):
        promote_hyperparameters(UnfoldedModel(ISTA(), prob, 3, "objective"))
    module = UnfoldedModule(prob, paradigm="correction", depth=3, learn_hyperparameters=True)
    assert module.hparams["learn_hyperparameters"] is True
    assert "step" in module.model.learned or len(module.model.learned) > 0


def test_conv_denoiser_starts_as_identity_and_matches_its_budget() -> None:
    net = ConvDenoiserNet(2000, layers=4)
    x = torch.randn(3, 9, 7)
    torch.testing.assert_close(net(x), x)
    count = sum(p.numel() for p in net.parameters())
    assert count <= 2000 < ConvDenoiserNet._count(net.width + 1, 4)
    with pytest.raises(ValueError, match="layers >= 2"):
        ConvDenoiserNet(100, layers=1)
