"""Soft-thresholding, the LASSO objective, its KKT certificate and ISTA."""

import cvxpy as cp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lightning_unfold.theory import (
    ista_iterates,
    lasso_fista_reference,
    lasso_gradient_norm,
    lasso_kkt_residual,
    lasso_objective,
    lasso_reference,
    lipschitz_constant,
    soft_threshold,
)
from lightning_unfold.theory.strategies import SparseRecoveryProblem, sparse_recovery_problems

SEEDS = st.integers(0, 2**32 - 1)
TAUS = st.floats(0.0, 3.0, allow_nan=False, allow_subnormal=False)


def _problem(seed: int = 0, m: int = 20, n: int = 40, k: int = 3, batch: int = 4):
    rng = np.random.default_rng(seed)
    H = rng.standard_normal((m, n))
    H /= np.linalg.norm(H, axis=0)
    S = np.zeros((batch, n))
    for b in range(batch):
        S[b, rng.choice(n, k, replace=False)] = rng.standard_normal(k)
    X = S @ H.T + 0.01 * rng.standard_normal((batch, m))
    rho = 0.1 * float(np.min(np.max(np.abs(X @ H), axis=1)))
    return H, S, X, rho


# --- soft-thresholding -------------------------------------------------------------------------


@settings(max_examples=15)
@given(seed=SEEDS, n=st.integers(1, 12), tau=TAUS)
def test_soft_threshold_is_the_prox_of_the_l1_norm(seed: int, n: int, tau: float) -> None:
    v = np.random.default_rng(seed).normal(scale=2.0, size=n)
    s = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(s - v) + tau * cp.norm1(s)))
    prob.solve(solver="CLARABEL")
    assert prob.status == cp.OPTIMAL
    np.testing.assert_allclose(soft_threshold(v, tau), s.value, atol=1e-6)


@given(seed=SEEDS, n=st.integers(1, 30), tau=TAUS)
def test_soft_threshold_is_non_expansive(seed: int, n: int, tau: float) -> None:
    rng = np.random.default_rng(seed)
    u, v = rng.normal(scale=3.0, size=(2, n))
    lhs = np.linalg.norm(soft_threshold(u, tau) - soft_threshold(v, tau))
    assert lhs <= np.linalg.norm(u - v) * (1 + 1e-12)
    # firm non-expansiveness: ||Tu - Tv||^2 <= <Tu - Tv, u - v>
    d = soft_threshold(u, tau) - soft_threshold(v, tau)
    assert d @ d <= d @ (u - v) + 1e-12


def test_a_non_prox_map_fails_the_same_checks() -> None:
    # hard thresholding is not non-expansive: the property test above can fail.
    def hard(v: np.ndarray, tau: float) -> np.ndarray:
        return np.where(np.abs(v) > tau, v, 0.0)

    u, v = np.array([1.01]), np.array([0.99])
    assert np.linalg.norm(hard(u, 1.0) - hard(v, 1.0)) > np.linalg.norm(u - v)
    assert np.linalg.norm(soft_threshold(u, 1.0) - soft_threshold(v, 1.0)) <= 0.02 + 1e-15


def test_soft_threshold_torch_keeps_type_and_gradient() -> None:
    v = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], dtype=torch.float32, requires_grad=True)
    out = soft_threshold(v, 1.0)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.detach().numpy(), [-1.0, 0.0, 0.0, 0.0, 1.0])
    out.sum().backward()
    np.testing.assert_allclose(v.grad.numpy(), [1.0, 0.0, 0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="tau must be >= 0"):
        soft_threshold(v, -0.1)
    with pytest.raises(ValueError, match="tau must be >= 0"):
        soft_threshold(np.ones(3), np.array([1.0, -1.0, 0.0]))


# --- objective and certificate -----------------------------------------------------------------


def test_lasso_objective_matches_definition_numpy_and_torch() -> None:
    H, S, X, rho = _problem()
    expected = 0.5 * np.sum((X - S @ H.T) ** 2, axis=1) + rho * np.abs(S).sum(axis=1)
    np.testing.assert_allclose(lasso_objective(H, X, rho, S), expected, rtol=1e-12)
    St = torch.tensor(S, requires_grad=True)
    val = lasso_objective(torch.tensor(H), torch.tensor(X), rho, St)
    assert isinstance(val, torch.Tensor) and val.shape == (4,)
    np.testing.assert_allclose(val.detach().numpy(), expected, rtol=1e-12)
    val.sum().backward()
    assert St.grad is not None
    assert float(lasso_objective(H, X[0], rho, S[0])) == pytest.approx(expected[0])


def test_kkt_residual_certifies_the_solution_and_rejects_others() -> None:
    H, _, X, rho = _problem(seed=3)
    s_star = lasso_fista_reference(H, X, rho)
    assert np.all(lasso_kkt_residual(H, X, rho, s_star) <= 1e-10)
    # condition fails: a perturbed point, and the zero vector when rho < ||H^T x||_inf
    assert np.all(lasso_kkt_residual(H, X, rho, s_star + 1e-2) > 1e-3)
    assert np.all(lasso_kkt_residual(H, X, rho, np.zeros_like(s_star)) > 1.0)
    # zero is optimal iff rho >= ||H^T x||_inf
    big = 1.01 * float(np.max(np.abs(X[0] @ H)))
    assert float(lasso_kkt_residual(H, X[0], big, np.zeros(H.shape[1]))) == 0.0


def test_kkt_residual_treats_interior_point_dust_as_zero() -> None:
    H, _, X, rho = _problem(seed=4)
    raw = lasso_reference(H, X, rho, polish=False)
    assert np.all(lasso_kkt_residual(H, X, rho, raw) <= 1e-4)
    # with exact supports (tol 0) the ~1e-8 off-support entries look like sign violations
    assert np.max(lasso_kkt_residual(H, X, rho, raw, support_tol=0.0)) > 1e-3
    polished = lasso_reference(H, X, rho)
    assert np.all(lasso_kkt_residual(H, X, rho, polished, support_tol=0.0) <= 1e-10)
    np.testing.assert_allclose(polished, raw, atol=1e-5)


def test_gradient_norm_is_zero_at_the_solution_and_the_gradient_off_it() -> None:
    H, _, X, rho = _problem(seed=5)
    s_star = lasso_fista_reference(H, X, rho)
    assert np.all(lasso_gradient_norm(H, X, rho, s_star) <= 1e-9)
    # where every entry is non-zero L is differentiable: compare with autograd
    s = np.random.default_rng(0).uniform(0.1, 1.0, size=s_star.shape)
    st_ = torch.tensor(s, requires_grad=True)
    lasso_objective(torch.tensor(H), torch.tensor(X), rho, st_).sum().backward()
    np.testing.assert_allclose(
        lasso_gradient_norm(H, X, rho, s), st_.grad.norm(dim=1).numpy(), rtol=1e-10
    )
    # at zero: the min-norm subgradient is the soft-thresholded negative correlation
    g0 = lasso_gradient_norm(H, X, rho, np.zeros_like(s))
    np.testing.assert_allclose(g0, np.linalg.norm(soft_threshold(X @ H, rho), axis=1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x": np.ones(7)}, "last dimension must be m = 20"),
        ({"s": np.ones((4, 39))}, "last dimension must be n = 40"),
        ({"s": np.ones((3, 40))}, "batch size 4"),
        ({"rho": -1.0}, "rho must be > 0"),
        ({"rho": np.ones(3)}, r"shape \(B,\) = \(4,\)"),
        ({"x": np.full((4, 20), np.nan)}, "NaN or Inf"),
        ({"H": np.ones((2, 3, 4))}, "2-D matrix"),
    ],
)
def test_clear_errors(kwargs: dict, match: str) -> None:
    H, S, X, rho = _problem()
    args = {"H": H, "x": X, "rho": rho, "s": S} | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        lasso_kkt_residual(**args)


# --- ISTA ----------------------------------------------------------------------------------------


@settings(max_examples=10)
@given(problem=sparse_recovery_problems())
def test_ista_decreases_objective_and_reaches_the_cvxpy_solution(
    problem: SparseRecoveryProblem,
) -> None:
    H, X, rho = problem.H, problem.x, problem.rho
    K = 4000
    traj = ista_iterates(H, X, rho, K)  # mu = 1/||H||^2
    obj = 0.5 * np.sum((X[:, None] - traj @ H.T) ** 2, axis=-1) + rho * np.abs(traj).sum(-1)
    np.testing.assert_allclose(obj[:, -1], lasso_objective(H, X, rho, traj[:, -1]))
    scale = np.maximum(obj[:, :1], 1.0)
    assert np.all(np.diff(obj, axis=1) <= 1e-12 * scale)  # monotone decrease
    s_cvx = lasso_reference(H, X, rho)
    assert np.all(lasso_kkt_residual(H, X, rho, s_cvx) <= 1e-6)
    # Beck & Teboulle's sublinear bound L(s_K) - L* <= ||s*||^2 L / (2K), then closeness
    L = lipschitz_constant(H)
    gap = obj[:, -1] - lasso_objective(H, X, rho, s_cvx)
    assert np.all(gap <= np.sum(s_cvx**2, axis=1) * L / (2 * K) + 1e-8)
    np.testing.assert_allclose(traj[:, -1], s_cvx, atol=1e-4)


def test_ista_with_too_large_a_step_does_not_descend() -> None:
    H, _, X, rho = _problem(seed=6)
    L = lipschitz_constant(H)
    traj = ista_iterates(H, X, rho, 30, step=3.0 / L)  # condition mu <= 1/L fails
    obj = np.stack([lasso_objective(H, X, rho, traj[:, k]) for k in range(31)], axis=1)
    # the condition is sufficient, not necessary (sparse iterates only see a restricted
    # Lipschitz constant), but here most instances ascend and blow up
    assert np.mean(np.any(np.diff(obj, axis=1) > 1e-9, axis=1)) >= 0.5
    assert np.max(obj[:, -1]) > 1e6 * np.max(obj[:, 0])


def test_ista_shapes_and_start() -> None:
    H, _, X, rho = _problem()
    assert ista_iterates(H, X, rho, 5).shape == (4, 6, 40)
    single = ista_iterates(H, X[0], rho, 5, s0=np.ones(40))
    assert single.shape == (6, 40)
    np.testing.assert_array_equal(single[0], np.ones(40))
    with pytest.raises(ValueError, match="step must be > 0"):
        ista_iterates(H, X, rho, 5, step=0.0)
