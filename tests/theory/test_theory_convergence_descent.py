"""Linear-rate fits, envelopes (Chen et al. 2018 / Liu et al. 2019) and descent (Hadou et al. 2024)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lightning_unfold.theory import (
    alista_theory_iterates,
    alista_weight,
    descent_ratios,
    descent_report,
    descent_violation_rate,
    distance_ratios,
    fit_envelope,
    fit_linear_rate,
    ista_iterates,
    lasso_fista_reference,
    lasso_gradient_norm,
    lasso_objective,
    lipschitz_constant,
    mutual_coherence,
)

FLOATS = {"allow_nan": False, "allow_infinity": False, "allow_subnormal": False}


def _noiseless(k: int, seed: int = 1, m: int = 30, n: int = 60, N: int = 8):
    rng = np.random.default_rng(seed)
    H = rng.standard_normal((m, n))
    H /= np.linalg.norm(H, axis=0)
    S = np.zeros((N, n))
    for b in range(N):
        idx = rng.choice(n, k, replace=False)
        S[b, idx] = rng.choice([-1.0, 1.0], k) * rng.uniform(0.5, 1.5, k)
    return H, S, S @ H.T


# --- fit_linear_rate -------------------------------------------------------------------------------


@given(
    q=st.floats(0.3, 0.95, **FLOATS),
    c0=st.floats(-3.0, 3.0, **FLOATS),
    noise=st.floats(0.0, 0.05, **FLOATS),
    seed=st.integers(0, 2**32 - 1),
)
def test_fit_recovers_the_rate_of_noisy_geometric_sequences(
    q: float, c0: float, noise: float, seed: int
) -> None:
    k = np.arange(40)
    e = np.exp(c0) * q**k * np.exp(noise * np.random.default_rng(seed).standard_normal(40))
    fit = fit_linear_rate(e)
    assert fit.q == pytest.approx(q, rel=0.02)
    assert fit.r2 > 0.98 and fit.is_linear()
    assert fit.n_points == 40 and (fit.start, fit.stop) == (0, 40)
    np.testing.assert_allclose(fit.predict(k), e, rtol=0.25)


def test_fit_reports_a_poor_fit_on_sublinear_sequences() -> None:
    k = np.arange(1, 101)
    fit = fit_linear_rate(1.0 / k)
    assert fit.r2 < 0.9 and not fit.is_linear()
    geometric = fit_linear_rate(0.9**k)
    assert geometric.r2 > 0.999999 and geometric.is_linear()


def test_fit_window_and_zeros_and_errors() -> None:
    e = np.concatenate([np.full(5, 1.0), 0.5 ** np.arange(10), [0.0, 0.0]])
    fit = fit_linear_rate(e, start=5)  # skip the plateau; the exact zeros are dropped
    assert fit.q == pytest.approx(0.5) and fit.n_points == 10
    assert fit_linear_rate(e, start=5, stop=-2).stop == 15
    assert fit_linear_rate(np.ones(5)).q == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 3 positive errors"):
        fit_linear_rate([1.0, 0.0, 0.0, 0.5])
    with pytest.raises(ValueError, match=">= 0"):
        fit_linear_rate([1.0, -0.5, 0.2])
    with pytest.raises(ValueError, match="NaN or Inf"):
        fit_linear_rate([1.0, np.nan, 0.2, 0.1])
    with pytest.raises(ValueError, match="1-D"):
        fit_linear_rate(np.ones((2, 5)))


# --- fit_envelope ----------------------------------------------------------------------------------


@given(
    B=st.floats(0.5, 5.0, **FLOATS),
    q=st.floats(0.3, 0.9, **FLOATS),
    D=st.floats(0.0, 0.1, **FLOATS),
    seed=st.integers(0, 2**32 - 1),
)
def test_envelope_recovers_exact_geometric_data_and_holds(
    B: float, q: float, D: float, seed: int
) -> None:
    k = np.arange(25)
    top = B * q**k + D
    # instances below the top curve; one of them is the top curve itself
    scale = np.random.default_rng(seed).uniform(0.2, 1.0, size=(6, 1))
    E = np.vstack([top, scale * top])
    env = fit_envelope(E, sigma=0.01)
    assert env.holds(E)
    assert env.c == pytest.approx(-np.log(q), rel=1e-4, abs=1e-6)
    assert env.eta_B == pytest.approx(B, rel=1e-3)
    assert env.C_sigma == pytest.approx(D, abs=1e-4 * B)
    assert env.C == pytest.approx(env.C_sigma / 0.01)


def test_noiseless_envelope_has_no_floor() -> None:
    E = np.array([2.0 * 0.5 ** np.arange(20), 0.5 ** np.arange(20)])
    env = fit_envelope(E)
    assert env.C_sigma == 0.0 and env.sigma is None and env.C is None
    assert env.q == pytest.approx(0.5, rel=1e-6)
    assert env.holds(E) and not env.holds(E * 1.1)
    np.testing.assert_allclose(env.bound(np.arange(20)), E[0], rtol=1e-6)
    assert fit_envelope(np.zeros((2, 5))).eta_B == 0.0
    with pytest.raises(ValueError, match=r"shape \(N, K\+1\)"):
        fit_envelope(np.ones((2, 3, 4)))


def test_alista_theory_converges_linearly_and_ista_does_not() -> None:
    # Liu et al. (2019), Thm 1: linear convergence when ||s*||_0 < (1 + 1/mu~)/2
    H, S, X = _noiseless(k=1)
    mu = mutual_coherence(alista_weight(H), H)
    assert 1 < (1 + 1 / mu) / 2  # the condition holds for 1-sparse codes
    K = 40
    E_alista = np.linalg.norm(alista_theory_iterates(H, X, S, K) - S[:, None], axis=2)
    rho = 0.05 * float(np.min(np.max(np.abs(X @ H), axis=1)))
    E_ista = np.linalg.norm(ista_iterates(H, X, rho, K) - S[:, None], axis=2)
    env_alista, env_ista = fit_envelope(E_alista), fit_envelope(E_ista)
    assert env_alista.holds(E_alista) and env_ista.holds(E_ista)
    assert env_alista.c > 0.3  # error shrinks by >25% per layer
    assert env_ista.c < env_alista.c / 5  # ISTA: far slower (sublinear, to a biased point)
    assert fit_linear_rate(E_alista.max(axis=0), stop=30).r2 > 0.95


def test_alista_theory_stalls_when_the_sparsity_condition_fails() -> None:
    H, S, X = _noiseless(k=5)
    mu = mutual_coherence(alista_weight(H), H)
    assert 5 > (1 + 1 / mu) / 2  # condition fails
    E = np.linalg.norm(alista_theory_iterates(H, X, S, 20) - S[:, None], axis=2)
    assert fit_envelope(E).c < 0.05


# --- descent ---------------------------------------------------------------------------------------


def _ista_descent(step_factor: float, K: int = 30):
    H, _, X = _noiseless(k=3, seed=2, m=20, n=40)
    X = X + 0.01 * np.random.default_rng(0).standard_normal(X.shape)
    rho = 0.1 * float(np.min(np.max(np.abs(X @ H), axis=1)))
    traj = ista_iterates(H, X, rho, K, step=step_factor / lipschitz_constant(H))
    s_star = lasso_fista_reference(H, X, rho)
    layers = range(K + 1)
    grads = np.stack([lasso_gradient_norm(H, X, rho, traj[:, k]) for k in layers], axis=1)
    objs = np.stack([lasso_objective(H, X, rho, traj[:, k]) for k in layers], axis=1)
    dists = np.linalg.norm(traj - s_star[:, None], axis=2)
    return grads, objs, dists


def test_ista_satisfies_objective_and_distance_descent() -> None:
    grads, objs, dists = _ista_descent(1.0)
    report = descent_report(grads, 0.0, objective_values=objs, distances=dists)
    assert np.all(report.objective_decrease >= -1e-12)  # Beck & Teboulle, monotone
    assert np.all(report.distance_ratios <= 1 + 1e-12)  # Fejér monotone
    assert descent_violation_rate(report.distance_ratios, 0.0) == 0.0
    assert report.grad_ratios.shape == (30,)
    assert grads[:, -1].mean() < grads[:, 0].mean()


def test_ista_with_too_large_a_step_violates_the_descent_constraints() -> None:
    grads, objs, dists = _ista_descent(3.0, K=15)
    report = descent_report(grads, 0.05, objective_values=objs, distances=dists)
    assert report.violation_rate > 0.5
    assert report.violated_layers.size > 7
    assert np.any(report.objective_decrease < 0)
    assert descent_violation_rate(report.distance_ratios, 0.0) > 0.5


def test_descent_ratios_definition_and_edge_cases() -> None:
    G = np.array([[4.0, 2.0, 1.0, 0.0, 0.0, 1.0], [2.0, 1.0, 0.5, 0.0, 0.0, 0.0]])
    r = descent_ratios(G)
    np.testing.assert_allclose(r[:2], [0.5, 0.5])
    assert r[2] == 0.0 and r[3] == 0.0  # stationary: constraint holds
    assert r[4] == np.inf  # leaving a stationary point violates it
    assert descent_violation_rate(r, 0.4) == pytest.approx(1 / 5)
    assert descent_violation_rate(r, 0.6) == pytest.approx(3 / 5)
    np.testing.assert_allclose(distance_ratios(G[:, :3]), [0.5, 0.5])
    with pytest.raises(ValueError, match=r"eps must lie in \[0, 1\)"):
        descent_violation_rate(r, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        descent_violation_rate(np.array([0.5, np.nan]), 0.1)
    with pytest.raises(ValueError, match=">= 0"):
        descent_ratios(-G)
    with pytest.raises(ValueError, match="layers"):
        descent_report(G, 0.1, distances=G[:, :3])
