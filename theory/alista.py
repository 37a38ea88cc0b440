r"""ALISTA's analytic weight and the (generalised) mutual coherence it minimises.

Reference: Liu, Chen, Wang, Yin (2019), "ALISTA: Analytic Weights Are As Good As Learned Weights
in LISTA", ICLR 2019.
"""

from __future__ import annotations

from typing import Literal, TypeAlias, overload

import numpy as np
import torch
from scipy.optimize import linprog

from ._arrays import ArrayLike, as_batch, as_dictionary, match_batches

WeightMethod: TypeAlias = Literal["frobenius", "minimax"]

__all__ = ["alista_theory_iterates", "alista_weight", "coherence", "mutual_coherence"]


@overload
def alista_weight(H: torch.Tensor, *, method: WeightMethod = "frobenius") -> torch.Tensor: ...
@overload
def alista_weight(H: np.ndarray, *, method: WeightMethod = "frobenius") -> np.ndarray: ...
def alista_weight(
    H: torch.Tensor | np.ndarray, *, method: WeightMethod = "frobenius"
) -> torch.Tensor | np.ndarray:
    r"""ALISTA's analytic weight: the closed-form minimiser of the Frobenius coherence.

    .. math::

        W = \arg\min_{W \in \mathbb R^{m\times n}} \|W^\top H\|_F
        \quad\text{s.t.}\quad (W^\top H)_{ii} = 1\ \forall i,
        \qquad
        w_i = \frac{(HH^\top)^{-1} h_i}{h_i^\top (HH^\top)^{-1} h_i}.

    The problem separates over columns: :math:`\min \|H^\top w_i\|^2` s.t.
    :math:`h_i^\top w_i = 1`, whose Lagrange condition gives the formula (Liu et al., 2019,
    where it is the starting point of the coherence-minimising weight used by ALISTA).
    :math:`HH^\top` must be invertible, i.e. :math:`m \le n` and :math:`H` of full row rank.

    ``method="minimax"`` instead solves the generalised-coherence problem itself (Liu et al.,
    2019, Def. 1), one linear program per column (scipy's HiGHS):

    .. math::

        w_i = \arg\min_{w:\ h_i^\top w = 1} \max_{j \ne i} |h_j^\top w|,
        \qquad \tilde\mu(W, H) = \tilde\mu(H) \le \mu(H),

    the last inequality because :math:`\bar h_i = h_i/\|h_i\|^2` is feasible. The Frobenius
    weight carries no such guarantee: on small Gaussian dictionaries (e.g. 4 × 8, or about 1 in
    10 draws at 20 × 40) its coherence exceeds :math:`\mu(H)`; at ALISTA's sizes (250 × 500)
    it is below.

    Computed in float64; the result has the input's type, and for torch its dtype and device.

    Args:
        H: dictionary (m, n), numpy array or torch tensor.
        method: ``"frobenius"`` (closed form, default) or ``"minimax"`` (exact
            generalised coherence, n small LPs).

    Returns:
        :math:`W` of shape (m, n).

    Raises:
        ValueError: if :math:`HH^\top` is singular or badly conditioned, or a column is zero.
    """
    Hn = as_dictionary(H)
    m, n = Hn.shape
    if m > n:
        raise ValueError(
            f"alista_weight needs m <= n so that H H^T is invertible; H has shape {Hn.shape}. "
            "For an overdetermined H use a least-squares weight instead."
        )
    G = Hn @ Hn.T
    cond = np.linalg.cond(G)
    if not np.isfinite(cond) or cond > 1e12:
        raise ValueError(
            f"H H^T is singular (condition number {cond:.3g}): H (shape {Hn.shape}) must have "
            "full row rank for the analytic ALISTA weight. Remove redundant rows of H."
        )
    P = np.linalg.solve(G, Hn)  # columns (HH^T)^{-1} h_i
    d = np.einsum("ij,ij->j", Hn, P)
    if np.any(d <= 1e-14 * np.max(d)):
        i = int(np.argmin(d))
        raise ValueError(f"column {i} of H is zero; every atom must be non-zero.")
    W = P / d
    if method == "minimax":
        W = _minimax_weight(Hn)
    elif method != "frobenius":
        raise ValueError(f"method must be 'frobenius' or 'minimax'; got {method!r}.")
    if isinstance(H, torch.Tensor):
        return torch.as_tensor(W, dtype=H.dtype, device=H.device)
    return W


def _minimax_weight(H: np.ndarray) -> np.ndarray:
    m, n = H.shape
    W = np.empty_like(H)
    c = np.zeros(m + 1)
    c[-1] = 1.0
    bounds = [(None, None)] * m + [(0.0, None)]
    for i in range(n):
        others = np.delete(H, i, axis=1).T  # (n-1, m)
        ones = np.ones((n - 1, 1))
        A_ub = np.vstack([np.hstack([others, -ones]), np.hstack([-others, -ones])])
        res = linprog(
            c,
            A_ub=A_ub,
            b_ub=np.zeros(2 * (n - 1)),
            A_eq=np.append(H[:, i], 0.0)[None, :],
            b_eq=[1.0],
            bounds=bounds,
            method="highs",
        )
        if res.status != 0:
            raise ValueError(
                f"the minimax coherence LP for column {i} failed ({res.message}); use "
                "method='frobenius'."
            )
        W[:, i] = res.x[:m]
    return W


def mutual_coherence(W: ArrayLike, H: ArrayLike, *, rescale: bool = False) -> float:
    r"""Generalised mutual coherence of a weight :math:`W` with a dictionary :math:`H`.

    .. math::

        \tilde\mu(W, H) = \max_{i \ne j} |w_i^\top h_j|
        \quad\text{with}\quad w_i^\top h_i = 1 \ \forall i

    (Liu et al., 2019, Def. 1; Chen et al., 2018, use the same quantity for LISTA-CP). Smaller
    :math:`\tilde\mu` allows recovery of denser codes at a faster linear rate.

    Args:
        W: weight (m, n).
        H: dictionary (m, n).
        rescale: rescale each :math:`w_i` by :math:`1/(w_i^\top h_i)` first, so any ``W`` with a
            non-zero diagonal of :math:`W^\top H` becomes feasible.

    Raises:
        ValueError: if shapes differ, or ``diag(W^T H) != 1`` (to 1e-6) and ``rescale`` is False.
    """
    Wn = as_dictionary(W, "W")
    Hn = as_dictionary(H)
    if Wn.shape != Hn.shape:
        raise ValueError(f"W and H must have the same shape (m, n); got {Wn.shape}, {Hn.shape}.")
    M = Wn.T @ Hn
    diag = np.diag(M).copy()
    if rescale:
        if np.any(np.abs(diag) < 1e-12):
            i = int(np.argmin(np.abs(diag)))
            raise ValueError(f"w_{i}^T h_{i} = {diag[i]:.3g} is zero; W cannot be rescaled.")
        M = M / diag[:, None]
    elif not np.allclose(diag, 1.0, rtol=0, atol=1e-6):
        i = int(np.argmax(np.abs(diag - 1.0)))
        raise ValueError(
            f"mutual_coherence needs diag(W^T H) = 1; entry {i} is {diag[i]:.6g}. Use "
            "alista_weight(H), or pass rescale=True to normalise w_i by w_i^T h_i."
        )
    if M.shape[0] == 1:
        return 0.0
    off = M - np.diag(np.diag(M))
    return float(np.max(np.abs(off)))


def coherence(H: ArrayLike) -> float:
    r"""Mutual coherence of a dictionary with itself (columns normalised).

    .. math::

        \mu(H) = \max_{i \ne j} \frac{|h_i^\top h_j|}{\|h_i\|_2\|h_j\|_2}
        = \tilde\mu(\bar H, \bar H), \quad \bar h_i = h_i/\|h_i\|_2

    (Donoho & Huo, 2001; the baseline against which Liu et al., 2019 compare
    :math:`\tilde\mu(W, H)`).

    Raises:
        ValueError: if a column of ``H`` is zero.
    """
    Hn = as_dictionary(H)
    norms = np.linalg.norm(Hn, axis=0)
    if np.any(norms == 0):
        raise ValueError(f"column {int(np.argmin(norms))} of H is zero; coherence is undefined.")
    Hb = Hn / norms
    return mutual_coherence(Hb, Hb)


def alista_theory_iterates(
    H: ArrayLike,
    x: ArrayLike,
    s_star: ArrayLike,
    n_iter: int,
    *,
    gamma: float = 1.0,
    W: ArrayLike | None = None,
) -> np.ndarray:
    r"""ALISTA's iteration with the step and thresholds of its convergence theorem (noiseless).

    Liu et al. (2019), Thm. 1: with :math:`\tilde\mu = \tilde\mu(W, H)`,

    .. math::

        s^{(k+1)} = \eta_{\theta_k}\big(s^{(k)} - \gamma W^\top(H s^{(k)} - x)\big),
        \qquad \theta_k = \gamma\,\tilde\mu\,\|s^{(k)} - s^\star\|_1,

    converges *linearly*, :math:`\|s^{(k)} - s^\star\| \le sB\,e^{-ck}`, for every code with
    :math:`\|s^\star\|_0 = s < (1 + 1/\tilde\mu)/2`. The thresholds use the true code (an
    *oracle*, per instance — the theorem takes the supremum over the code set), so this is a
    teaching and testing device showing what the theorem's parameters do, not a practical
    solver; trained ALISTA learns :math:`\gamma_k, \theta_k` instead.

    Args:
        H: dictionary (m, n), :math:`m \le n`.
        x: observations (B, m) or (m,).
        s_star: the true codes (B, n) or (n,).
        n_iter: number of layers K.
        gamma: step size :math:`\gamma > 0`.
        W: weight with ``diag(W^T H) = 1``; default :func:`alista_weight`.

    Returns:
        float64 array (B, K+1, n), or (K+1, n) for a single observation.
    """
    Hn = as_dictionary(H)
    m, n = Hn.shape
    X, single = as_batch(x, m, "x", "m")
    S_star, _ = as_batch(s_star, n, "s_star", "n")
    match_batches(X, S_star, "x", "s_star")
    if n_iter < 0 or not gamma > 0:
        raise ValueError(f"need n_iter >= 0 and gamma > 0; got {n_iter}, {gamma}.")
    Wn = alista_weight(Hn) if W is None else as_dictionary(W, "W")
    mu = mutual_coherence(Wn, Hn)
    S = np.zeros_like(S_star)
    out = np.empty((X.shape[0], n_iter + 1, n))
    out[:, 0] = S
    for k in range(n_iter):
        theta = gamma * mu * np.abs(S - S_star).sum(axis=1, keepdims=True)
        v = S - gamma * (S @ Hn.T - X) @ Wn
        S = np.sign(v) * np.maximum(np.abs(v) - theta, 0.0)
        out[:, k + 1] = S
    return out[0] if single else out
