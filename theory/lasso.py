"""The LASSO: proximal map, objective, optimality certificate and the classical ISTA iteration.

References
----------
Daubechies, Defrise, De Mol (2004), "An iterative thresholding algorithm for linear inverse
problems with a sparsity constraint", Comm. Pure Appl. Math. 57(11).
Beck, Teboulle (2009), "A fast iterative shrinkage-thresholding algorithm for linear inverse
problems", SIAM J. Imaging Sci. 2(1).
"""

from __future__ import annotations

from typing import overload

import numpy as np
import torch

from ._arrays import (
    ArrayLike,
    ScalarOrArray,
    as_batch,
    as_dictionary,
    as_per_sample,
    match_batches,
    to_numpy64,
)

__all__ = [
    "ista_iterates",
    "lasso_gradient_norm",
    "lasso_kkt_residual",
    "lasso_objective",
    "lipschitz_constant",
    "soft_threshold",
]


@overload
def soft_threshold(v: torch.Tensor, tau: ScalarOrArray) -> torch.Tensor: ...
@overload
def soft_threshold(v: np.ndarray, tau: ScalarOrArray) -> np.ndarray: ...
def soft_threshold(v: torch.Tensor | np.ndarray, tau: ScalarOrArray) -> torch.Tensor | np.ndarray:
    r"""Soft-thresholding, the proximal map of :math:`\tau\|\cdot\|_1` (Daubechies et al., 2004).

    .. math::

        \eta_\tau(v) = \operatorname{prox}_{\tau\|\cdot\|_1}(v)
        = \arg\min_s \tfrac12\|s - v\|_2^2 + \tau\|s\|_1
        = \operatorname{sign}(v)\,\max(|v| - \tau, 0).

    It is firmly non-expansive: :math:`\|\eta_\tau(u) - \eta_\tau(v)\| \le \|u - v\|`.

    Args:
        v: a torch tensor (the result is a torch tensor, differentiable, same dtype and device)
            or a numpy array (the result is numpy).
        tau: threshold :math:`\tau \ge 0`, a scalar or anything broadcastable against ``v``.

    Raises:
        ValueError: if ``tau`` has a negative entry.
    """
    if isinstance(v, torch.Tensor):
        t = torch.as_tensor(tau, dtype=v.dtype, device=v.device)
        if bool((t < 0).any()):
            raise ValueError("soft_threshold: tau must be >= 0 (it is a threshold).")
        return torch.sign(v) * torch.clamp(v.abs() - t, min=0)
    va = np.asarray(v)
    ta = tau.detach().cpu().numpy() if isinstance(tau, torch.Tensor) else np.asarray(tau)
    if np.any(ta < 0):
        raise ValueError("soft_threshold: tau must be >= 0 (it is a threshold).")
    return np.sign(va) * np.maximum(np.abs(va) - ta, 0.0)


def _lasso_inputs(
    H: ArrayLike, x: ArrayLike, rho: ScalarOrArray, s: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    Hn = as_dictionary(H)
    m, n = Hn.shape
    X, single_x = as_batch(x, m, "x", "m")
    S, single_s = as_batch(s, n, "s", "n")
    match_batches(X, S, "x", "s")
    r = as_per_sample(rho, X.shape[0], "rho", positive=True)
    return Hn, X, S, r, single_x and single_s


def lasso_objective(
    H: ArrayLike, x: ArrayLike, rho: ScalarOrArray, s: ArrayLike
) -> np.ndarray | torch.Tensor:
    r"""Per-sample LASSO objective.

    .. math::

        L(s; x) = \tfrac12\|x - Hs\|_2^2 + \rho\|s\|_1 .

    Args:
        H: dictionary, shape (m, n).
        x: observations, shape (B, m) or (m,).
        rho: regularisation weight :math:`\rho > 0`, scalar or shape (B,).
        s: codes, shape (B, n) or (n,).

    Returns:
        Shape (B,) (or a scalar array for single inputs). If ``s`` is a torch tensor the result
        is a torch tensor in ``s``'s dtype and device and is differentiable with respect to
        ``s`` (so it can serve as an objective-as-loss); otherwise a float64 numpy array.
    """
    if isinstance(s, torch.Tensor):
        dt, dev = s.dtype, s.device
        Ht = torch.as_tensor(as_dictionary(H), dtype=dt, device=dev)
        xt = (
            x.to(dtype=dt, device=dev)
            if isinstance(x, torch.Tensor)
            else torch.as_tensor(to_numpy64(x, "x"), dtype=dt, device=dev)
        )
        if not torch.isfinite(s).all():
            raise ValueError("s contains NaN or Inf; the model producing it has diverged.")
        if xt.shape[-1] != Ht.shape[0] or s.shape[-1] != Ht.shape[1]:
            raise ValueError(
                f"shapes do not match H {tuple(Ht.shape)}: x {tuple(xt.shape)} must end in m = "
                f"{Ht.shape[0]} and s {tuple(s.shape)} in n = {Ht.shape[1]}."
            )
        rt = (
            torch.as_tensor(rho, dtype=dt, device=dev)
            if not isinstance(rho, torch.Tensor)
            else rho.to(dtype=dt, device=dev)
        )
        if bool((rt <= 0).any()):
            raise ValueError("rho must be > 0.")
        resid = xt - s @ Ht.T
        return 0.5 * (resid**2).sum(-1) + rt * s.abs().sum(-1)
    Hn, X, S, r, single = _lasso_inputs(H, x, rho, s)
    val = 0.5 * np.sum((X - S @ Hn.T) ** 2, axis=1) + r * np.sum(np.abs(S), axis=1)
    return val[0] if single else val


def _support_mask(S: np.ndarray, support_tol: float | None) -> np.ndarray:
    if support_tol is None:
        tol = 1e-6 * np.max(np.abs(S), axis=1, keepdims=True)
    else:
        if support_tol < 0:
            raise ValueError(f"support_tol must be >= 0; got {support_tol}.")
        tol = np.full((S.shape[0], 1), float(support_tol))
    return np.abs(S) > tol


def lasso_kkt_residual(
    H: ArrayLike,
    x: ArrayLike,
    rho: ScalarOrArray,
    s: ArrayLike,
    *,
    support_tol: float | None = None,
) -> np.ndarray:
    r"""Solver-independent optimality certificate of the LASSO, relative to :math:`\rho`.

    :math:`s` minimises :math:`\tfrac12\|x-Hs\|^2 + \rho\|s\|_1` iff
    :math:`g = H^\top(x - Hs) \in \rho\,\partial\|s\|_1` (Fermat's rule). The residual measures the
    largest violation of that inclusion:

    .. math::

        r(s) = \frac{1}{\rho}\max\Big(\max_{i: s_i \ne 0} |g_i - \rho\,\mathrm{sign}(s_i)|,\;
               \max_{i: s_i = 0} \max(|g_i| - \rho, 0)\Big).

    Interior-point solvers (Clarabel, SCS) return off-support entries of size ~1e-8 rather than
    exact zeros, so entries with :math:`|s_i| \le` ``support_tol`` are treated as zero. Treating a
    tiny true coefficient as zero is harmless: there :math:`|g_i| \approx \rho`.

    Args:
        H: dictionary, shape (m, n).
        x: observations, shape (B, m) or (m,).
        rho: :math:`\rho > 0`, scalar or shape (B,).
        s: candidate solutions, shape (B, n) or (n,).
        support_tol: absolute threshold below which an entry counts as zero; the default
            ``None`` uses :math:`10^{-6}\|s\|_\infty` per sample.

    Returns:
        float64 array of shape (B,) (a 0-d array for single inputs); 0 exactly at a solution.
    """
    Hn, X, S, r, single = _lasso_inputs(H, x, rho, s)
    G = (X - S @ Hn.T) @ Hn
    on = _support_mask(S, support_tol)
    rr = r[:, None]
    viol = np.where(on, np.abs(G - rr * np.sign(S)), np.maximum(np.abs(G) - rr, 0.0))
    res = viol.max(axis=1) / r
    return res[0] if single else res


def lasso_gradient_norm(
    H: ArrayLike,
    x: ArrayLike,
    rho: ScalarOrArray,
    s: ArrayLike,
    *,
    support_tol: float = 0.0,
) -> np.ndarray:
    r"""Norm of the minimum-norm subgradient of the LASSO objective, per sample.

    With :math:`g = H^\top(x - Hs)` the subdifferential is
    :math:`\partial L(s) = -g + \rho\,\partial\|s\|_1`; its element of least norm has entries

    .. math::

        v_i = \begin{cases} -g_i + \rho\,\mathrm{sign}(s_i) & s_i \ne 0,\\
        -\mathrm{sign}(g_i)\max(|g_i| - \rho, 0) & s_i = 0, \end{cases}
        \qquad \|\nabla L(s)\| := \|v\|_2 .

    It is 0 exactly at the LASSO solution, which makes it the "gradient" in the descending
    constraints :math:`\mathbb E\|\nabla L(s^{(k)})\| \le (1-\epsilon)\mathbb E\|\nabla
    L(s^{(k-1)})\|` of Hadou et al. (2024), "Robust Stochastically-Descending Unrolled Networks",
    IEEE Trans. Signal Process.

    Args:
        H, x, rho, s: as in :func:`lasso_objective`.
        support_tol: entries with :math:`|s_i| \le` ``support_tol`` count as zero (default exact).

    Returns:
        float64 array of shape (B,) (0-d for single inputs).
    """
    Hn, X, S, r, single = _lasso_inputs(H, x, rho, s)
    G = (X - S @ Hn.T) @ Hn
    on = _support_mask(S, support_tol)
    rr = r[:, None]
    V = np.where(on, -G + rr * np.sign(S), -np.sign(G) * np.maximum(np.abs(G) - rr, 0.0))
    out = np.linalg.norm(V, axis=1)
    return out[0] if single else out


def lipschitz_constant(H: ArrayLike) -> float:
    r"""Lipschitz constant of :math:`\nabla_s \tfrac12\|x - Hs\|^2`, i.e. :math:`L = \|H\|_2^2`.

    ISTA's step size condition (Daubechies et al., 2004; Beck & Teboulle, 2009) is
    :math:`0 < \mu \le 1/L` for monotone decrease of the objective.
    """
    Hn = as_dictionary(H)
    return float(np.linalg.norm(Hn, 2) ** 2)


def ista_iterates(
    H: ArrayLike,
    x: ArrayLike,
    rho: ScalarOrArray,
    n_iter: int,
    *,
    step: float | None = None,
    s0: ArrayLike | None = None,
) -> np.ndarray:
    r"""All iterates of ISTA on the LASSO, in float64 (Daubechies et al., 2004).

    .. math::

        s^{(k+1)} = \eta_{\mu\rho}\big(s^{(k)} + \mu H^\top(x - H s^{(k)})\big),
        \qquad s^{(0)} = s_0 \ (\text{default } 0).

    With :math:`0 < \mu \le 1/\|H\|_2^2` the objective decreases monotonically and
    :math:`L(s^{(k)}) - L^\star \le \|s^{(0)} - s^\star\|^2 / (2\mu k)` — a *sublinear* rate
    (Beck & Teboulle, 2009, Thm. 3.1), in contrast with the linear rate of LISTA-CP / ALISTA.

    Args:
        H, x, rho: as in :func:`lasso_objective`.
        n_iter: number of iterations K (>= 0).
        step: :math:`\mu`; default :math:`1/\|H\|_2^2`. Larger steps are allowed (to show what
            happens when the condition fails) but must be > 0.
        s0: starting point, shape (B, n) or (n,); default zeros.

    Returns:
        float64 array of shape (B, K+1, n), or (K+1, n) for a single observation; index k along
        the layer axis is :math:`s^{(k)}`.
    """
    Hn = as_dictionary(H)
    m, n = Hn.shape
    X, single = as_batch(x, m, "x", "m")
    r = as_per_sample(rho, X.shape[0], "rho", positive=False)
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0; got {n_iter}.")
    mu = 1.0 / lipschitz_constant(Hn) if step is None else float(step)
    if not mu > 0:
        raise ValueError(f"step must be > 0; got {step}.")
    if s0 is None:
        S = np.zeros((X.shape[0], n))
    else:
        S, _ = as_batch(s0, n, "s0", "n")
        S = np.broadcast_to(S, (X.shape[0], n)).copy()
    out = np.empty((X.shape[0], n_iter + 1, n))
    out[:, 0] = S
    HtX = X @ Hn
    HtH = Hn.T @ Hn
    tau = (mu * r)[:, None]
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(n_iter):
            S = soft_threshold(S + mu * (HtX - S @ HtH), tau)
            out[:, k + 1] = S
    return out[0] if single else out
