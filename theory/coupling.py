r"""Weight coupling of LISTA (Chen, Liu, Wang, Yin, 2018).

LISTA's layer is :math:`s^{(k+1)} = \eta_{\theta_k}(W_1^{(k)} x + W_2^{(k)} s^{(k)})`. Chen et al.,
"Theoretical Linear Convergence of Unfolded ISTA and Its Practical Weights and Thresholds",
NeurIPS 2018, Thm. 1: if LISTA recovers every sufficiently sparse code, then
:math:`W_2^{(k)} - (I - W_1^{(k)} H) \to 0` and :math:`\theta_k \to 0` as :math:`k\to\infty`.
LISTA-CP builds the coupling in: :math:`W_2^{(k)} = I - W_1^{(k)} H`.
"""

from __future__ import annotations

import numpy as np
import torch

from ._arrays import ArrayLike, as_dictionary, to_numpy64

__all__ = ["coupled_w2", "coupling_residual"]


def _layers(a: ArrayLike, name: str, shape: tuple[int, int]) -> np.ndarray:
    arr = to_numpy64(a, name)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != shape:
        raise ValueError(
            f"{name} must have shape (K, {shape[0]}, {shape[1]}) or ({shape[0]}, {shape[1]}) "
            f"to match H; got {tuple(arr.shape)}."
        )
    return arr


def coupled_w2(W1: ArrayLike, H: ArrayLike) -> np.ndarray | torch.Tensor:
    r"""LISTA-CP's coupled weight :math:`W_2^{(k)} = I - W_1^{(k)} H` (Chen et al., 2018, eq. 6).

    Args:
        W1: (K, n, m) or (n, m).
        H: dictionary (m, n).

    Returns:
        (K, n, n) or (n, n); a torch tensor (``W1``'s dtype/device) if ``W1`` is one, else numpy.
    """
    Hn = as_dictionary(H)
    m, n = Hn.shape
    W1n = _layers(W1, "W1", (n, m))
    out = np.eye(n)[None] - W1n @ Hn
    if to_numpy64(W1, "W1").ndim == 2:
        out = out[0]
    if isinstance(W1, torch.Tensor):
        return torch.as_tensor(out, dtype=W1.dtype, device=W1.device)
    return out


def coupling_residual(W1: ArrayLike, W2: ArrayLike, H: ArrayLike) -> np.ndarray:
    r"""Per-layer relative violation of LISTA's weight coupling (Chen et al., 2018, Thm. 1).

    .. math::

        c_k = \frac{\|W_2^{(k)} - (I - W_1^{(k)} H)\|_F}{\|W_2^{(k)}\|_F}.

    Zero for LISTA-CP, ALISTA and ISTA (:math:`W_1 = \mu H^\top, W_2 = I - \mu H^\top H`); for a
    trained LISTA the theorem predicts :math:`c_k \to 0` with depth. If
    :math:`\|W_2^{(k)}\|_F = 0` the denominator is :math:`\|I - W_1^{(k)}H\|_F` instead (and
    :math:`c_k = 0` when both vanish).

    Args:
        W1: input weights, (K, n, m) or (n, m) — numpy or torch.
        W2: recurrent weights, (K, n, n) or (n, n); the same K as ``W1`` (a single matrix is
            broadcast against the other's layers, as for tied weights).
        H: dictionary (m, n).

    Returns:
        float64 array of shape (K,).
    """
    Hn = as_dictionary(H)
    m, n = Hn.shape
    W1n = _layers(W1, "W1", (n, m))
    W2n = _layers(W2, "W2", (n, n))
    if W1n.shape[0] != W2n.shape[0] and 1 not in (W1n.shape[0], W2n.shape[0]):
        raise ValueError(
            f"W1 has {W1n.shape[0]} layers but W2 has {W2n.shape[0]}; pass one of each per layer."
        )
    target = np.eye(n)[None] - W1n @ Hn
    diff = np.linalg.norm(W2n - target, axis=(1, 2))
    den = np.linalg.norm(np.broadcast_to(W2n, (*diff.shape, n, n)), axis=(1, 2))
    alt = np.linalg.norm(np.broadcast_to(target, (*diff.shape, n, n)), axis=(1, 2))
    den = np.where(den > 0, den, alt)
    return np.where(den > 0, diff / np.where(den > 0, den, 1.0), 0.0)
