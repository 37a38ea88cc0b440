"""Sparse recovery beyond classical-init equivalence: support selection, references to
convergence, shapes, parameter counts, ``predict``. (Every family's classical-init equivalence,
ISTA, FISTA, ADMM and the LISTA forms included, is in the problem zoo, ``tests/zoo``.)"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lightning_unfold import (
    FISTA,
    ISTA,
    ADMMLasso,
    ClassicalSolver,
    SparseRecovery,
    UnfoldedModel,
)

K = 20


def test_lista_cpss_differs_from_ista_only_by_support_selection() -> None:
    problem = SparseRecovery(m=20, n=100, sparsity=0.1, rho=0.05, seed=6)
    x, _ = problem.sample(8, seed=1, dtype=torch.float64)
    ista = ClassicalSolver(ISTA(), problem, K, dtype=torch.float64)(x)
    cpss = UnfoldedModel(
        ISTA(), problem, K, "objective", variant="lista_cpss", dtype=torch.float64
    )(x)
    # p_1 = 1.2 % of 100 entries = 1 entry bypasses shrinkage: first layer already differs
    assert float((cpss.estimates[1] - ista.estimates[1]).detach().abs().max()) > 1e-6


def test_ista_to_convergence_matches_cvxpy_and_kkt() -> None:
    from lightning_unfold.theory import lasso_kkt_residual, lasso_reference

    problem = SparseRecovery(m=20, n=40, sparsity=0.15, rho=0.05, seed=9)
    x, _ = problem.sample(4, seed=3, dtype=torch.float64)
    result = ClassicalSolver(ISTA(), problem, 1, dtype=torch.float64).solve(
        x, tol=1e-13, max_iter=200_000
    )
    assert result.converged
    s = result.trajectory.final_estimate.detach().numpy()
    ref = lasso_reference(problem.H.numpy(), x.numpy(), problem.rho)
    # Clarabel at its defaults is accurate to ~1e-8 on these sizes; ISTA is run to 1e-13
    assert abs(s - ref).max() <= 1e-6
    assert lasso_kkt_residual(problem.H.numpy(), x.numpy(), problem.rho, s).max() <= 1e-6


@pytest.mark.parametrize("make_alg", [FISTA, lambda: ADMMLasso(penalty=1.0)], ids=["fista", "admm"])
def test_other_solvers_reach_cvxpy_solution(make_alg: Any) -> None:
    from lightning_unfold.theory import lasso_reference

    problem = SparseRecovery(m=20, n=40, sparsity=0.15, rho=0.05, seed=11)
    x, _ = problem.sample(4, seed=3, dtype=torch.float64)
    res = ClassicalSolver(make_alg(), problem, 1, dtype=torch.float64).solve(
        x, tol=1e-12, max_iter=100_000
    )
    ref = lasso_reference(problem.H.numpy(), x.numpy(), problem.rho)
    assert abs(res.trajectory.final_estimate.detach().numpy() - ref).max() <= 1e-6


def test_inductive_bias_and_alista_produce_trajectories_of_the_right_shape() -> None:
    problem = SparseRecovery(m=12, n=24, seed=0)
    x, s = problem.sample(5, seed=0)
    for model in (
        UnfoldedModel(ISTA(), problem, 4, "inductive_bias"),
        UnfoldedModel(ISTA(), problem, 4, "objective", variant="alista"),
        UnfoldedModel(ADMMLasso(), problem, 4, "inductive_bias"),
    ):
        traj = model(x)
        assert traj.depth == 4
        assert traj.final_estimate.shape == s.shape
        assert torch.isfinite(traj.stacked_estimates()).all()


def test_parameter_counts_per_paradigm() -> None:
    problem = SparseRecovery(m=10, n=20, seed=0)
    K = 3

    def count(model: torch.nn.Module) -> int:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    assert count(UnfoldedModel(ISTA(), problem, K, "hyperparameters")) == 2 * K
    assert count(UnfoldedModel(ISTA(), problem, K, "hyperparameters", tied=True)) == 2
    assert count(UnfoldedModel(ISTA(), problem, K, "objective", variant="lista")) == K * (
        20 * 10 + 20 * 20 + 1
    )
    assert count(UnfoldedModel(ISTA(), problem, K, "objective", variant="lista_cp")) == K * (
        20 * 10 + 1
    )
    assert count(UnfoldedModel(ISTA(), problem, K, "objective", variant="alista")) == 2 * K
    assert count(ClassicalSolver(ISTA(), problem, K)) == 0


@pytest.mark.parametrize(
    ("paradigm", "tied"),
    [("classical", True), ("objective", False), ("correction", False), ("black_box", True)],
)
def test_predict_is_the_forward_pass_final_estimate(paradigm: str, tied: bool) -> None:
    """``predict`` runs the same layers as ``forward`` without keeping the trajectory."""
    from lightning_unfold.training.module import build_model

    prob = SparseRecovery(m=12, n=24, seed=5)
    torch.manual_seed(0)
    kw: dict[str, Any] = {"tied": tied} if paradigm in ("objective", "correction") else {}
    if paradigm == "black_box":
        kw["black_box_params"] = 500
    model = build_model(prob, paradigm=paradigm, depth=6, **kw)
    with torch.no_grad():  # move off the classical values so that every layer matters
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x, _ = prob.sample(8, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(model.predict(x), model(x).estimates[-1], rtol=0, atol=0)
        if paradigm != "black_box":
            torch.testing.assert_close(model.predict(x, 3), model(x, 3).estimates[-1])
    with pytest.raises(ValueError, match="non-finite values"):
        model.predict(torch.full_like(x, float("nan")))
