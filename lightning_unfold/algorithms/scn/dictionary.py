r"""The classical dictionary pair of sparse-coding super-resolution, fitted on training patches.

Zeyde, Elad & Protter (2010)'s coupling of Yang et al. (2010)'s model: the low-resolution
dictionary :math:`D_l` is learned on the low-resolution features alone, and the high-resolution
dictionary :math:`D_h` is the least-squares map from their sparse codes to the high-resolution
patches, so that coding a feature with :math:`D_l` and reconstructing with :math:`D_h` is, on
the training set, the best linear read-out of the codes the classical solver computes:

1. :math:`D_l` — ``iterations`` rounds of MOD (Engan et al. 1999): LASSO codes
   :math:`A = \arg\min_A \tfrac12\|Y - AD_l^\top\|_F^2 + \lambda\|A\|_1` by FISTA, then
   :math:`D_l \leftarrow Y^\top A(A^\top A + \epsilon I)^{-1}`, columns scaled to unit norm
   (an unused atom is replaced by a random training feature). Initialised with random training
   features.
2. :math:`D_h = R^\top A(A^\top A + \epsilon I)^{-1}` with :math:`A` the LASSO codes of the
   final :math:`D_l` solved to convergence (relative change :math:`10^{-6}`), :math:`R` the
   high-resolution residual patches; :math:`\epsilon = 10^{-8}\operatorname{tr}(A^\top A)/n`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def soft(v: Tensor, theta: Tensor | float) -> Tensor:
    r""":math:`\operatorname{sign}(v)\max(|v| - \theta, 0)`."""
    return torch.sign(v) * (v.abs() - theta).clamp_min(0.0)


def lasso_codes(
    Y: Tensor, D: Tensor, lam: float, *, tol: float = 1e-6, max_iter: int = 2000
) -> tuple[Tensor, int]:
    r"""FISTA (Beck & Teboulle 2009) for :math:`\min_A \tfrac12\|Y - AD^\top\|_F^2 + \lambda\|A\|_1`
    (rows of ``Y`` ``(N, m)`` coded independently; ``D`` ``(m, n)``), step :math:`1/\|D\|_2^2`,
    stopped when :math:`\|A^{(k)} - A^{(k-1)}\|_F \le` ``tol`` :math:`\|A^{(k)}\|_F`. Returns the
    codes ``(N, n)`` and the iterations run."""
    L = float(torch.linalg.matrix_norm(D, 2)) ** 2
    G, B = D.T @ D, Y @ D  # (n, n), (N, n)
    a = z = Y.new_zeros(Y.shape[0], D.shape[1])
    t = 1.0
    for k in range(1, max_iter + 1):
        a_new = soft(z - (z @ G - B) / L, lam / L)
        t_new = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        z = a_new + ((t - 1.0) / t_new) * (a_new - a)
        change = float(torch.linalg.vector_norm(a_new - a))
        scale = float(torch.linalg.vector_norm(a_new))
        a, t = a_new, t_new
        if change <= tol * max(scale, 1e-30):
            return a, k
    return a, max_iter


def _ridge(A: Tensor, target: Tensor) -> Tensor:
    """``target.T @ A @ (A.T A + eps I)^-1`` (``(d, n)``)."""
    gram = A.T @ A
    eps = 1e-8 * float(torch.trace(gram)) / gram.shape[0] + 1e-12
    eye = torch.eye(gram.shape[0], dtype=A.dtype)
    return torch.linalg.solve(gram + eps * eye, A.T @ target).T


def fit_dictionary_pair(
    Y: Tensor, R: Tensor, atoms: int, lam: float, iterations: int, seed: int
) -> tuple[Tensor, Tensor]:
    r"""The classical pair (module docstring): ``Y`` ``(N, m)`` low-resolution features, ``R``
    ``(N, d)`` high-resolution residual patches, float64. Returns :math:`D_l` ``(m, atoms)`` with
    unit columns and :math:`D_h` ``(d, atoms)``."""
    if Y.shape[0] < atoms:
        raise ValueError(
            f"Fitting {atoms} atoms needs at least as many training patches, got {Y.shape[0]}; "
            "lower atoms or raise training_patches."
        )
    rng = np.random.default_rng(seed)
    D = Y[torch.from_numpy(rng.choice(Y.shape[0], atoms, replace=False))].T.clone()
    D = D / torch.linalg.vector_norm(D, dim=0).clamp_min(1e-12)
    for _ in range(iterations):
        A, _ = lasso_codes(Y, D, lam, tol=1e-4, max_iter=100)
        D = _ridge(A, Y)
        norms = torch.linalg.vector_norm(D, dim=0)
        dead = norms < 1e-8
        if bool(dead.any()):
            fresh = Y[torch.from_numpy(rng.choice(Y.shape[0], int(dead.sum()), replace=False))]
            D[:, dead] = fresh.T
            norms = torch.linalg.vector_norm(D, dim=0)
        D = D / norms.clamp_min(1e-12)
    A, _ = lasso_codes(Y, D, lam)
    return D, _ridge(A, R)
