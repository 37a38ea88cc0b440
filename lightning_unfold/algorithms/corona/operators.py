r"""CORONA's operators: the proximal maps (SVT, modulus and row shrinkage), the circular
blurs :math:`H`, :math:`H^{\mathsf H}`, their Lipschitz constant and the RPCA objective.

The math is in the package docstring (:mod:`lightning_unfold.algorithms.corona`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: the sparsity penalties on the blood part: CORONA's mixed ℓ1,2 (rows = pixels) or entrywise ℓ1
PENALTIES: tuple[str, ...] = ("l12", "l1")


# -- proximal maps --------------------------------------------------------------------------
def complex_soft_threshold(v: Tensor, tau: Tensor | float) -> Tensor:
    r"""Entrywise :math:`z \mapsto z\max(0, 1 - \tau/|z|)`: the modulus shrunk by :math:`\tau`, the
    phase kept — the prox of :math:`\tau\|\cdot\|_1` on complex (or real) entries; 0 stays 0."""
    mag = v.abs()
    safe = torch.where(mag > 0, mag, torch.ones_like(mag))
    scale = torch.where(mag > 0, torch.clamp(1.0 - tau / safe, min=0.0), torch.zeros_like(mag))
    return v * scale.to(v.dtype) if v.is_complex() else v * scale


def row_soft_threshold(v: Tensor, tau: Tensor | float) -> Tensor:
    r"""Row-wise :math:`s_i \mapsto s_i\max(0, 1 - \tau/\|s_i\|_2)` over the last axis: the prox of
    :math:`\tau\sum_i\|s_i\|_2` (group soft thresholding); a zero row stays zero."""
    sq = v.abs().pow(2).sum(dim=-1, keepdim=True)
    safe = torch.where(sq > 0, sq, torch.ones_like(sq)).sqrt()
    scale = torch.where(sq > 0, torch.clamp(1.0 - tau / safe, min=0.0), torch.zeros_like(sq))
    return v * scale.to(v.dtype) if v.is_complex() else v * scale


def singular_value_threshold(x: Tensor, tau: Tensor | float) -> Tensor:
    r""":math:`\operatorname{SVT}_\tau(X) = U\max(\Sigma - \tau, 0)V^{\mathsf H}` for a batch
    ``(B, P, T)`` (complex or real; ``tau`` a scalar or ``(B, 1)``): the prox of
    :math:`\tau\|\cdot\|_*`. Its output does not depend on the phases of the singular vectors, so
    the gradient through the complex SVD is well defined."""
    U, s, Vh = torch.linalg.svd(x, full_matrices=False)
    shrunk = torch.clamp(s - tau, min=0.0)
    return (U * shrunk.unsqueeze(-2).to(U.dtype)) @ Vh


def nuclear_subgradient_distance(G: Tensor, L: Tensor, rank_tol: float = 1e-6) -> Tensor:
    r"""Per-sample Frobenius distance from ``G`` to the subdifferential of the nuclear norm at
    ``L`` (both ``(B, P, T)``, complex or real), shape ``(B,)``.

    With the full SVD :math:`L = U\Sigma V^{\mathsf H}` and :math:`r` the number of singular values
    above ``rank_tol`` times the largest, :math:`\partial\|L\|_* = \{U_rV_r^{\mathsf H} + W :
    U_r^{\mathsf H}W = 0,\ WV_r = 0,\ \|W\|_2 \le 1\}`. In the singular bases,
    :math:`\hat G = U^{\mathsf H}GV = \begin{pmatrix}A & B\\ C & D\end{pmatrix}` (:math:`A` of size
    :math:`r\times r`), the set is :math:`A = I`, :math:`B = C = 0`, :math:`\|D\|_2 \le 1`, so

    .. math:: \operatorname{dist}(G, \partial\|L\|_*)^2 = \|A - I\|_F^2 + \|B\|_F^2 + \|C\|_F^2
        + \sum_i(\sigma_i(D) - 1)_+^2.

    ``rank_tol`` treats the singular values a float32 iterate leaves where its singular value
    threshold gave exact zeros (about 1e-7 of the largest) as zero."""
    out = []
    for g, ell in zip(G, L, strict=True):
        U, s, Vh = torch.linalg.svd(ell, full_matrices=True)
        r = int((s > rank_tol * s[0]).sum()) if s.numel() and float(s[0]) > 0 else 0
        hat = U.mH @ g @ Vh.mH
        eye = torch.eye(r, dtype=hat.dtype, device=hat.device)
        inner = (hat[:r, :r] - eye).abs().pow(2).sum()
        cross = hat[:r, r:].abs().pow(2).sum() + hat[r:, :r].abs().pow(2).sum()
        rest = hat[r:, r:]
        spill = (
            (torch.linalg.svdvals(rest) - 1.0).clamp_min(0.0).pow(2).sum()
            if rest.numel()
            else inner.new_zeros(())
        )
        out.append((inner + cross + spill).sqrt())
    return torch.stack(out)


def sparse_subgradient_distance(G: Tensor, S: Tensor, penalty: str) -> Tensor:
    r"""Per-sample Frobenius distance from ``G`` to the subdifferential of the sparsity penalty at
    ``S`` (``(B, P, T)``), shape ``(B,)``: for ``"l12"`` row by row (rows = pixels),
    :math:`\|g_i - s_i/\|s_i\|\|` where :math:`s_i \ne 0` and :math:`(\|g_i\| - 1)_+` where
    :math:`s_i = 0`; for ``"l1"`` the same entrywise with moduli (:math:`s/|s|`, complex phase)."""
    if penalty == "l12":
        size = torch.linalg.vector_norm(S, dim=-1, keepdim=True)
        gsize = torch.linalg.vector_norm(G, dim=-1)
        unit = S / torch.where(size > 0, size, torch.ones_like(size)).to(S.dtype)
        on = torch.linalg.vector_norm(G - unit, dim=-1)
        per = torch.where(size.squeeze(-1) > 0, on, (gsize - 1.0).clamp_min(0.0))
    else:
        size = S.abs()
        unit = S / torch.where(size > 0, size, torch.ones_like(size)).to(S.dtype)
        per = torch.where(size > 0, (G - unit).abs(), (G.abs() - 1.0).clamp_min(0.0))
    return torch.linalg.vector_norm(per.flatten(1), dim=1)


def _prox_sparse(v: Tensor, tau: Tensor, penalty: str) -> Tensor:
    return row_soft_threshold(v, tau) if penalty == "l12" else complex_soft_threshold(v, tau)


def _rms(x: Tensor) -> Tensor:
    r""":math:`\operatorname{rms}(D) = \|D\|_F/\sqrt{PT}` per sample, shape ``(B, 1, 1)``."""
    return x.abs().pow(2).mean(dim=(1, 2), keepdim=True).sqrt()


def _grid(p: Mapping[str, Tensor]) -> tuple[int, int]:
    return round(float(p["grid"][0])), round(float(p["grid"][1]))


def blur(x: Tensor, psf: Tensor, grid: tuple[int, int]) -> Tensor:
    r""":math:`HX`: every frame (column) of ``x`` ``(B, P, T)``, as an image on the ``grid``
    :math:`n_x\times n_z`, circularly convolved with ``psf`` ``(s, s)`` (odd, centred)."""
    if psf.numel() == 1:
        return psf.reshape(()).to(x.dtype) * x
    b, P, T = x.shape
    kernel = torch.flip(psf, (0, 1)).reshape(1, 1, *psf.shape, 1)
    return _circular_correlation(x.reshape(b, 1, *grid, T), kernel).reshape(b, P, T)


def blur_adjoint(x: Tensor, psf: Tensor, grid: tuple[int, int]) -> Tensor:
    r""":math:`H^{\mathsf H}X`: circular cross-correlation with :math:`\bar h` (the adjoint of
    :func:`blur`)."""
    if psf.numel() == 1:
        return psf.reshape(()).conj().to(x.dtype) * x
    b, P, T = x.shape
    kernel = psf.conj().reshape(1, 1, *psf.shape, 1)
    return _circular_correlation(x.reshape(b, 1, *grid, T), kernel).reshape(b, P, T)


def lipschitz_constant(psf1: Tensor, psf2: Tensor, grid: tuple[int, int]) -> float:
    r""":math:`L_f = \|[H_1\ H_2]\|_2^2 = \max_\omega |\hat h_1(\omega)|^2 + |\hat h_2(\omega)|^2` for
    circular blurs (both diagonal in the 2-D DFT of the grid)."""
    spectra = []
    for h in (psf1, psf2):
        padded = torch.zeros(grid, dtype=torch.complex128)
        padded[: h.shape[0], : h.shape[1]] = h.to(torch.complex128)
        spectra.append(torch.fft.fft2(padded).abs().pow(2))
    return float((spectra[0] + spectra[1]).max())


def _sparsity_norm(s: Tensor, penalty: str) -> Tensor:
    if penalty == "l12":
        return torch.linalg.vector_norm(s, dim=-1).sum(dim=-1)
    return s.abs().sum(dim=(1, 2))


def low_rank_sparse_objective(
    L: Tensor,
    S: Tensor,
    x: Tensor,
    psf1: Tensor,
    psf2: Tensor,
    grid: tuple[int, int],
    lam: Tensor | float,
    mu: Tensor | float,
    penalty: str = "l12",
) -> Tensor:
    r"""Per-sample :math:`\tfrac12\|D - H_1L - H_2S\|_F^2 + \texttt{lam}\,\rho\|L\|_* +
    \texttt{mu}\,\rho\|S\|_{1,2}` (or :math:`\|S\|_1`), :math:`\rho = \operatorname{rms}(D)`,
    :math:`H_j` the circular blurs by ``psf1``, ``psf2`` on the ``grid``."""
    r = blur(L, psf1, grid) + blur(S, psf2, grid) - x
    rho = _rms(x).flatten()
    nuclear = torch.linalg.svdvals(L).sum(dim=-1)
    return 0.5 * r.abs().pow(2).sum(dim=(1, 2)) + rho * (
        lam * nuclear + mu * _sparsity_norm(S, penalty)
    )


def gaussian_psf(width: float) -> np.ndarray:
    r"""A normalised 2-D Gaussian point-spread function of standard deviation ``width`` pixels on
    a :math:`(2r+1)^2` grid, :math:`r = \lceil 2\,\texttt{width}\rceil`; ``[[1]]`` for width 0."""
    if width == 0:
        return np.ones((1, 1))
    r = math.ceil(2.0 * width)
    g = np.arange(-r, r + 1, dtype=np.float64)
    h = np.exp(-0.5 * (g[:, None] ** 2 + g[None, :] ** 2) / width**2)
    return h / h.sum()


def _circular_correlation(x: Tensor, kernel: Tensor) -> Tensor:
    """Every frame of ``x`` ``(B, C_in, n_x, n_z, T)`` cross-correlated with ``kernel``
    ``(C_out, C_in, k_x, k_z, k_t)`` (odd sizes): circular in space, zero-padded in time."""
    kx, kz, kt = kernel.shape[-3:]
    rx, rz, rt = kx // 2, kz // 2, kt // 2
    if rx or rz:
        x = F.pad(x, (0, 0, rz, rz, rx, rx), mode="circular")
    if rt:
        x = F.pad(x, (rt, rt, 0, 0, 0, 0))
    return F.conv3d(x, kernel.to(x.dtype))


def _psf_matrix(psf: np.ndarray, n_x: int, n_z: int) -> Tensor:
    """The ``(P, P)`` matrix of the circular blur by ``psf`` on an ``n_x × n_z`` grid (raster order:
    pixel ``i·n_z + j``), built by applying the blur to every basis image."""
    P = n_x * n_z
    basis = torch.eye(P, dtype=torch.float64).reshape(P, 1, n_x, n_z, 1)
    kernel = torch.from_numpy(psf[::-1, ::-1].copy()).reshape(1, 1, *psf.shape, 1)
    out = _circular_correlation(basis, kernel)  # column j = H e_j (a true convolution)
    return out.reshape(P, P).T.contiguous()
