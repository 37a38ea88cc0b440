"""ALISTA's analytic weight, coherence, and LISTA's weight coupling."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lightning_unfold.theory import (
    alista_weight,
    coherence,
    coupled_w2,
    coupling_residual,
    lipschitz_constant,
    mutual_coherence,
)
from lightning_unfold.theory.strategies import well_conditioned_dictionaries


def _gaussian(seed: int, m: int = 20, n: int = 40) -> np.ndarray:
    H = np.random.default_rng(seed).standard_normal((m, n))
    return H / np.linalg.norm(H, axis=0)


# --- ALISTA --------------------------------------------------------------------------------------


@settings(max_examples=15)
@given(H=well_conditioned_dictionaries())
def test_alista_weights_are_feasible_and_minimax_is_less_coherent_than_h(H: np.ndarray) -> None:
    W = alista_weight(H)
    np.testing.assert_allclose(np.diag(W.T @ H), 1.0, atol=1e-10)
    W_mm = alista_weight(H, method="minimax")
    np.testing.assert_allclose(np.diag(W_mm.T @ H), 1.0, atol=1e-7)
    mu_mm = mutual_coherence(W_mm, H)
    assert mu_mm <= coherence(H) + 1e-7
    assert mu_mm <= mutual_coherence(W, H) + 1e-7  # minimax is optimal for the max


@pytest.mark.parametrize("seed", range(5))
def test_frobenius_weight_is_less_coherent_on_moderate_gaussian_dictionaries(seed: int) -> None:
    H = _gaussian(100 + seed, 40, 80)
    assert mutual_coherence(alista_weight(H), H) < coherence(H)


def test_frobenius_weight_can_be_more_coherent_on_tiny_dictionaries() -> None:
    # the closed form minimises ||W^T H||_F, not the max: no guarantee (found by hypothesis)
    H = _gaussian(0, 4, 8)
    assert mutual_coherence(alista_weight(H), H) > coherence(H)
    assert mutual_coherence(alista_weight(H, method="minimax"), H) <= coherence(H) + 1e-9


@settings(max_examples=10)
@given(H=well_conditioned_dictionaries(), seed=st.integers(0, 2**32 - 1))
def test_alista_weight_minimises_the_frobenius_coherence(H: np.ndarray, seed: int) -> None:
    # any feasible perturbation D (diag(D^T H) = 0) can only increase ||W^T H||_F
    W = alista_weight(H)
    D = np.random.default_rng(seed).standard_normal(W.shape)
    D -= H * (np.einsum("ij,ij->j", D, H) / np.einsum("ij,ij->j", H, H))
    np.testing.assert_allclose(np.diag(D.T @ H), 0.0, atol=1e-10)
    base = np.linalg.norm(W.T @ H)
    for t in (1e-3, 0.1, 1.0):
        assert np.linalg.norm((W + t * D).T @ H) >= base - 1e-12


def test_alista_weight_keeps_torch_type_dtype_and_device() -> None:
    H = torch.tensor(_gaussian(0), dtype=torch.float32)
    W = alista_weight(H)
    assert isinstance(W, torch.Tensor) and W.dtype == torch.float32 and W.device == H.device
    np.testing.assert_allclose(torch.diag(W.T @ H).numpy(), 1.0, atol=1e-5)
    assert isinstance(alista_weight(H.double().numpy()), np.ndarray)


def test_alista_weight_refuses_when_hht_is_singular() -> None:
    with pytest.raises(ValueError, match="m <= n"):
        alista_weight(np.random.default_rng(0).standard_normal((30, 10)))
    H = _gaussian(1, 10, 20)
    H[5] = H[4]  # repeated row: H H^T singular
    with pytest.raises(ValueError, match="full row rank"):
        alista_weight(H)


def test_coherence_condition_fails_for_an_identical_pair_of_atoms() -> None:
    H = _gaussian(2)
    H[:, 1] = H[:, 0]
    assert coherence(H) == pytest.approx(1.0)
    W = alista_weight(H)  # still defined, but cannot separate identical atoms
    assert mutual_coherence(W, H) == pytest.approx(1.0)


def test_mutual_coherence_requires_unit_diagonal_or_rescale() -> None:
    H = _gaussian(3)
    with pytest.raises(ValueError, match=r"diag\(W\^T H\) = 1.*rescale=True"):
        mutual_coherence(2.0 * H, H)
    assert mutual_coherence(2.0 * H, H, rescale=True) == pytest.approx(coherence(H))
    with pytest.raises(ValueError, match="same shape"):
        mutual_coherence(H[:, :5], H)
    # identity dictionary: orthogonal atoms, zero coherence
    assert coherence(np.eye(4)) == 0.0


# --- weight coupling ------------------------------------------------------------------------------


@settings(max_examples=10)
@given(seed=st.integers(0, 2**32 - 1), K=st.integers(1, 6))
def test_lista_cp_and_ista_have_zero_coupling_residual(seed: int, K: int) -> None:
    H = _gaussian(seed % 1000, 10, 20)
    W1 = np.random.default_rng(seed).standard_normal((K, 20, 10))
    np.testing.assert_allclose(coupling_residual(W1, coupled_w2(W1, H), H), 0.0, atol=1e-12)
    mu = 1.0 / lipschitz_constant(H)
    ista_w1, ista_w2 = mu * H.T, np.eye(20) - mu * H.T @ H
    assert coupling_residual(ista_w1, ista_w2, H)[0] == pytest.approx(0.0, abs=1e-12)


def test_random_lista_violates_the_coupling() -> None:
    rng = np.random.default_rng(0)
    H = _gaussian(0, 10, 20)
    W1 = rng.standard_normal((5, 20, 10))
    W2 = rng.standard_normal((5, 20, 20))
    res = coupling_residual(W1, W2, H)
    assert res.shape == (5,) and np.all(res > 0.5)
    # a coupling that is approached with depth, as Chen et al. (2018) predict for trained LISTA
    decay = np.array([1.0, 0.3, 0.1, 0.03, 0.01])[:, None, None]
    W2_trained = coupled_w2(W1, H) + decay * 0.1 * W2
    assert np.all(np.diff(coupling_residual(W1, W2_trained, H)) < 0)


def test_coupling_accepts_torch_and_tied_weights_and_checks_shapes() -> None:
    H = _gaussian(1, 10, 20)
    W1 = torch.randn(20, 10, dtype=torch.float64)
    W2 = coupled_w2(W1, H)
    assert isinstance(W2, torch.Tensor) and W2.shape == (20, 20)
    assert coupling_residual(W1, W2, H).shape == (1,)
    # tied W1 against per-layer W2
    W2_layers = torch.stack([W2, W2 + 1.0])
    res = coupling_residual(W1, W2_layers, H)
    assert res[0] == pytest.approx(0.0, abs=1e-12) and res[1] > 0
    with pytest.raises(ValueError, match=r"W1 must have shape \(K, 20, 10\)"):
        coupling_residual(np.ones((3, 10, 20)), np.ones((3, 20, 20)), H)
    with pytest.raises(ValueError, match="3 layers but W2 has 2"):
        coupling_residual(np.ones((3, 20, 10)), np.ones((2, 20, 20)), H)
    # W2 = 0 falls back to ||I - W1 H||
    assert coupling_residual(np.zeros((20, 10)), np.zeros((20, 20)), H)[0] == pytest.approx(1.0)
