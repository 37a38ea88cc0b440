"""CVXPY reference solvers, the FISTA certificate solver, and their failure modes."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from lightning_unfold.theory import (
    ReferenceSolverError,
    box_least_squares_reference,
    elastic_net_reference,
    lasso_fista_reference,
    lasso_kkt_residual,
    lasso_reference,
    rpca_pcp_reference,
)
from lightning_unfold.theory.strategies import (
    RPCAInstance,
    SparseRecoveryProblem,
    rpca_instances,
    sparse_recovery_problems,
)
from scipy.optimize import lsq_linear


def _data(seed: int = 0, m: int = 15, n: int = 30, batch: int = 3):
    rng = np.random.default_rng(seed)
    H = rng.standard_normal((m, n)) / np.sqrt(m)
    X = rng.standard_normal((batch, m))
    return H, X


# --- LASSO -------------------------------------------------------------------------------------


@settings(max_examples=10)
@given(problem=sparse_recovery_problems())
def test_cvxpy_and_fista_references_agree_and_are_certified(
    problem: SparseRecoveryProblem,
) -> None:
    H, X, rho = problem.H, problem.x, problem.rho
    s_cvx = lasso_reference(H, X, rho)
    s_fista = lasso_fista_reference(H, X, rho, tol=1e-10)
    assert np.all(lasso_kkt_residual(H, X, rho, s_fista, support_tol=0.0) <= 1e-10)
    assert np.all(lasso_kkt_residual(H, X, rho, s_cvx) <= 1e-6)
    np.testing.assert_allclose(s_cvx, s_fista, atol=1e-6)


def test_batch_equals_single_solves_and_accepts_per_sample_rho_and_torch() -> None:
    H, X = _data()
    rho = np.array([0.05, 0.1, 0.2])
    batch = lasso_reference(torch.tensor(H), torch.tensor(X, dtype=torch.float32), rho)
    assert batch.shape == (3, 30) and batch.dtype == np.float64
    for b in range(3):
        single = lasso_reference(H, X[b].astype(np.float32), rho[b])
        assert single.shape == (30,)
        np.testing.assert_allclose(batch[b], single, atol=1e-6)
    # one observation, rho growing: the l1 norm of the solution shrinks (monotone path)
    path = lasso_reference(H, np.repeat(X[:1], 3, axis=0), rho)
    l1 = np.abs(path).sum(axis=1)
    assert l1[0] > l1[1] > l1[2]


def test_scs_is_less_accurate_than_clarabel() -> None:
    H, X = _data(seed=1)
    exact = lasso_fista_reference(H, X, 0.1)
    clar = lasso_reference(H, X, 0.1, polish=False)
    scs = lasso_reference(H, X, 0.1, solver="SCS", polish=False)
    err_clar = np.abs(clar - exact).max()
    err_scs = np.abs(scs - exact).max()
    assert err_clar < 1e-6
    assert err_scs < 1e-2
    assert err_scs > err_clar


def test_non_optimal_status_raises_naming_the_status() -> None:
    H, X = _data()
    with pytest.raises(ReferenceSolverError, match=r"status 'user_limit'.*try another solver"):
        lasso_reference(H, X, 0.1, max_iter=1)
    with pytest.raises(ReferenceSolverError, match="'optimal_inaccurate'"):
        lasso_reference(H, X, 0.1, solver="SCS", max_iters=2)


def test_unknown_solver_lists_installed_ones() -> None:
    H, X = _data()
    with pytest.raises(ValueError, match=r"not installed.*CLARABEL"):
        lasso_reference(H, X, 0.1, solver="NOPE")


def test_fista_reference_raises_when_budget_is_too_small() -> None:
    H, X = _data(seed=2)
    with pytest.raises(ReferenceSolverError, match=r"did not reach KKT residual.*residual"):
        lasso_fista_reference(H, X, 0.01, max_iter=3, check_every=1)


# --- elastic net -------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_elastic_net_is_a_lasso_on_augmented_data(alpha: float) -> None:
    H, X = _data(seed=3)
    rho = 0.2
    enet = elastic_net_reference(H, X, rho, alpha)
    n = H.shape[1]
    H_aug = np.vstack([H, np.sqrt(rho * (1 - alpha)) * np.eye(n)])
    X_aug = np.hstack([X, np.zeros((X.shape[0], n))])
    if alpha > 0:
        lasso = lasso_fista_reference(H_aug, X_aug, rho * alpha)
        np.testing.assert_allclose(enet, lasso, atol=1e-6)
    else:  # ridge in closed form
        ridge = np.linalg.solve(H.T @ H + rho * np.eye(n), H.T @ X.T).T
        np.testing.assert_allclose(enet, ridge, atol=1e-6)
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        elastic_net_reference(H, X, rho, 1.5)


# --- box-constrained least squares ---------------------------------------------------------------


def test_box_least_squares_matches_scipy_and_respects_the_box() -> None:
    H, X = _data(seed=4, m=20, n=10)
    lower = np.full(10, -0.2)
    upper = np.full(10, 0.3)
    upper[0] = np.inf
    ours = box_least_squares_reference(H, X, lower, upper)
    for b in range(X.shape[0]):
        ref = lsq_linear(H, X[b], bounds=(lower, upper), tol=1e-12, method="bvls").x
        # interior-point accuracy at (nearly) degenerate active bounds is ~1e-6..1e-5
        np.testing.assert_allclose(ours[b], ref, atol=1e-5)
    assert np.all(ours >= lower - 1e-7) and np.all(ours <= upper + 1e-7)
    # the box is active: the unconstrained solution lies outside it
    free = np.linalg.lstsq(H, X.T, rcond=None)[0].T
    assert np.any(free > 0.3) or np.any(free < -0.2)
    unconstrained = box_least_squares_reference(H, X, -np.inf, np.inf)
    np.testing.assert_allclose(unconstrained, free, atol=1e-6)


def test_box_least_squares_rejects_an_empty_box() -> None:
    H, X = _data()
    with pytest.raises(ValueError, match="box is empty"):
        box_least_squares_reference(H, X, 1.0, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        box_least_squares_reference(H, X, np.nan, 1.0)


# --- RPCA ----------------------------------------------------------------------------------------


@settings(max_examples=5)
@given(inst=rpca_instances(n1=(8, 10), n2=(8, 10), rank=(1, 1), sparse_fraction=(0.0, 0.05)))
def test_pcp_recovers_low_rank_plus_sparse_when_the_conditions_hold(inst: RPCAInstance) -> None:
    L, S = rpca_pcp_reference(inst.X)
    np.testing.assert_allclose(L + S, inst.X, atol=1e-6)
    assert np.linalg.norm(L - inst.L) <= 1e-3 * max(np.linalg.norm(inst.L), 1.0)
    assert np.linalg.norm(S - inst.S) <= 1e-3 * max(np.linalg.norm(inst.S), 1.0)


def test_pcp_fails_to_separate_dense_corruption() -> None:
    rng = np.random.default_rng(0)
    n = 10
    L0 = rng.normal(size=(n, 1)) @ rng.normal(size=(1, n)) / np.sqrt(n)
    S0 = np.where(rng.random((n, n)) < 0.5, rng.choice([-1.0, 1.0], size=(n, n)), 0.0)
    L, S = rpca_pcp_reference(L0 + S0)
    # still optimal: its objective is no larger than the ground truth's ...
    lam = 1 / np.sqrt(n)

    def objective(A: np.ndarray, B: np.ndarray) -> float:
        return float(np.linalg.norm(A, "nuc") + lam * np.abs(B).sum())

    assert objective(L, S) <= objective(L0, S0) + 1e-6
    # ... but it is not the ground truth: recovery needs a sparse enough corruption
    assert np.linalg.norm(L - L0) > 0.1 * np.linalg.norm(L0)


def test_pcp_guards_size_and_shape() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        rpca_pcp_reference(np.zeros((60, 60)))
    with pytest.raises(ValueError, match="matrix"):
        rpca_pcp_reference(np.zeros(5))
    with pytest.raises(ValueError, match="lam must be > 0"):
        rpca_pcp_reference(np.eye(3), lam=0.0)
