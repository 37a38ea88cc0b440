r"""Circular convolution with a small kernel, the closed-form x- and k-steps of half-quadratic
splitting, the projection onto the kernel simplex, motion-blur kernels and shift-aligned errors.

The math is in the package docstring (:mod:`lightning_unfold.algorithms.dublid`). Transforms
are unnormalised 2-D DFTs (``torch.fft.fft2``), under which :math:`F(k\circledast x) =
\hat k\odot\hat x` for the circular convolution and Parseval reads
:math:`\|a\|^2 = n^{-2}\sum_\omega|\hat a(\omega)|^2`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from lightning_unfold.algorithms.imaging.operators import filter_transfer

__all__ = [
    "aligned_kernel_error",
    "aligned_psnr",
    "blur",
    "centred_delta",
    "embed_kernel",
    "image_step",
    "kernel_step",
    "kernel_transfer",
    "motion_kernel",
    "project_simplex",
    "soft",
]


def embed_kernel(k: Tensor, n: int) -> Tensor:
    r"""The ``(B, m, m)`` kernels (centre tap at index ``m // 2``) zero-padded to ``(B, n, n)``
    with the centre tap at index ``(0, 0)`` (the origin of the circular convolution)."""
    m = k.shape[-1]
    pad = k.new_zeros(*k.shape[:-2], n, n)
    pad[..., :m, :m] = k
    return torch.roll(pad, shifts=(-(m // 2), -(m // 2)), dims=(-2, -1))


def crop_kernel(full: Tensor, m: int) -> Tensor:
    """The inverse of :func:`embed_kernel`: the centred ``m × m`` box of ``(B, n, n)`` kernels."""
    return torch.roll(full, shifts=(m // 2, m // 2), dims=(-2, -1))[..., :m, :m]


def kernel_transfer(k: Tensor, n: int) -> Tensor:
    r""":math:`\hat k` ``(B, n, n)`` complex: :math:`F(k\circledast x) = \hat k\odot\hat x`."""
    return torch.fft.fft2(embed_kernel(k, n))


def blur(x: Tensor, k: Tensor) -> Tensor:
    r"""The circular convolution :math:`k\circledast x` of images ``(B, n, n)`` with kernels
    ``(B, m, m)``, :math:`(k\circledast x)_p = \sum_q k_q\,x_{p-q}` (``q`` relative to the centre
    tap, indices modulo ``n``)."""
    return torch.fft.ifft2(kernel_transfer(k, x.shape[-1]) * torch.fft.fft2(x)).real


def centred_delta(batch: int, m: int, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``(B, m, m)`` identity kernels (one at the centre tap)."""
    k = torch.zeros(batch, m, m, dtype=dtype, device=device)
    k[:, m // 2, m // 2] = 1.0
    return k


def soft(v: Tensor, theta: Tensor) -> Tensor:
    r"""Soft threshold :math:`\operatorname{sign}(v)\max(|v| - \theta, 0)`, ``theta`` per channel
    ``(C,)`` of ``v`` ``(B, C, n, n)``."""
    t = theta.view(1, -1, 1, 1)
    return torch.sign(v) * (v.abs() - t).clamp_min(0.0)


def project_simplex(v: Tensor) -> Tensor:
    r"""Euclidean projection of each ``(m, m)`` kernel of ``v`` ``(B, m, m)`` onto the simplex
    :math:`\{k \ge 0, \sum k = 1\}`: :math:`k = \max(v - \tau, 0)` with :math:`\tau` found by
    sorting (Held, Wolfe & Crowder 1974; Duchi et al. 2008)."""
    flat = v.reshape(v.shape[0], -1)
    u, _ = torch.sort(flat, dim=1, descending=True)
    css = u.cumsum(dim=1) - 1.0
    idx = torch.arange(1, flat.shape[1] + 1, device=v.device, dtype=v.dtype)
    active = (u - css / idx) > 0
    rho = active.to(torch.int64).cumsum(dim=1).argmax(dim=1, keepdim=True)  # last True
    tau = css.gather(1, rho) / (rho + 1).to(v.dtype)
    return (flat - tau).clamp_min(0.0).reshape(v.shape)


def filter_responses(x: Tensor, D: Tensor) -> Tensor:
    r""":math:`f_i\circledast x` for every filter, ``(B, C, n, n)``, from transfers ``D`` (C, n, n)."""
    return torch.fft.ifft2(D * torch.fft.fft2(x).unsqueeze(1)).real


def kernel_step(z: Tensor, y: Tensor, D: Tensor, reg: Tensor, m: int) -> tuple[Tensor, Tensor]:
    r"""The kernel update: the unconstrained minimiser over all :math:`n\times n` kernels

    .. math:: \tilde k = \arg\min_k \tfrac12\sum_i\|f_i\circledast y - k\circledast z_i\|^2
        + \tfrac\varepsilon2\|k\|^2 = F^{-1}\Big[\frac{\sum_i\overline{\hat z_i}\,\hat f_i\,\hat y}
        {\sum_i|\hat z_i|^2 + \varepsilon}\Big],

    then cropped to the centred :math:`m\times m` box and projected onto the simplex. Returns the
    projected kernels ``(B, m, m)`` and :math:`\tilde k` ``(B, n, n)`` (before crop, origin at
    ``(0, 0)``)."""
    Z = torch.fft.fft2(z)
    num = (Z.conj() * D * torch.fft.fft2(y).unsqueeze(1)).sum(dim=1)
    den = Z.abs().pow(2).sum(dim=1) + reg
    full = torch.fft.ifft2(num / den).real
    return project_simplex(crop_kernel(full, m)), full


def image_step(k: Tensor, z: Tensor, y: Tensor, D: Tensor, penalty: Tensor) -> Tensor:
    r"""The non-blind image update

    .. math:: x = \arg\min_x \tfrac12\|y - k\circledast x\|^2 + \sum_i\tfrac{\zeta_i}2
        \|f_i\circledast x - z_i\|^2 = F^{-1}\Big[\frac{\overline{\hat k}\hat y
        + \sum_i\zeta_i\overline{\hat f_i}\hat z_i}{|\hat k|^2 + \sum_i\zeta_i|\hat f_i|^2}\Big].

    The denominator is positive at every frequency where :math:`\hat k` or some :math:`\hat f_i`
    is nonzero; at :math:`\omega = 0`, :math:`\hat k(0) = \sum k = 1` for a kernel on the
    simplex."""
    K = kernel_transfer(k, y.shape[-1])
    zeta = penalty.view(1, -1, 1, 1)
    num = K.conj() * torch.fft.fft2(y) + (zeta * D.conj() * torch.fft.fft2(z)).sum(dim=1)
    den = K.abs().pow(2) + (zeta * D.abs().pow(2)).sum(dim=1)
    return torch.fft.ifft2(num / den).real


def transfers(filters: Tensor, n: int) -> Tensor:
    """Transfer functions ``(C, n, n)`` of 3×3 filters ``(C, 3, 3)`` (correlations, as
    :func:`~lightning_unfold.algorithms.imaging.filter_transfer`)."""
    return filter_transfer(filters, n)


# -- data: motion-blur kernels --------------------------------------------------------------------
def motion_kernel(rng: np.random.Generator, m: int) -> np.ndarray:
    r"""A random motion-blur kernel ``(m, m)``, nonnegative, summing to 1.

    The camera path is a random walk of 200 unit steps whose heading performs a Gaussian random
    walk (σ = 0.25 rad per step, with a random start): a smooth curve. It is scaled to a random
    extent of 40–100 % of the box's :math:`m - 1` pixels, centred on its centroid, sampled at
    1000 points along its length and splatted bilinearly onto the :math:`m\times m` grid."""
    steps = 200
    heading = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0.0, 0.25, size=steps))
    path = np.concatenate(
        [[[0.0, 0.0]], np.cumsum(np.stack([np.cos(heading), np.sin(heading)], 1), 0)]
    )
    path -= path.mean(axis=0)
    extent = float(np.abs(path).max())
    half = (m - 1) / 2.0
    path *= rng.uniform(0.4, 1.0) * half / max(extent, 1e-12)
    t = np.linspace(0.0, steps, 1000)
    pts = np.stack([np.interp(t, np.arange(steps + 1), path[:, d]) for d in range(2)], 1) + half
    k = np.zeros((m, m))
    r0, c0 = np.floor(pts[:, 0]).astype(int), np.floor(pts[:, 1]).astype(int)
    fr, fc = pts[:, 0] - r0, pts[:, 1] - c0
    for dr, dc, w in (
        (0, 0, (1 - fr) * (1 - fc)),
        (1, 0, fr * (1 - fc)),
        (0, 1, (1 - fr) * fc),
        (1, 1, fr * fc),
    ):
        np.add.at(k, (np.clip(r0 + dr, 0, m - 1), np.clip(c0 + dc, 0, m - 1)), w)
    return k / k.sum()


# -- scores with the shift ambiguity removed -------------------------------------------------------
def _shifts(radius: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(-radius, radius + 1) for b in range(-radius, radius + 1)]


def aligned_psnr(estimate: Tensor, target: Tensor, radius: int) -> Tensor:
    r"""Per-image PSNR (dB, peak 1) of ``estimate`` against ``target`` ``(B, n, n)`` after the
    best circular integer shift :math:`d`, :math:`|d_1|, |d_2| \le` ``radius``: blind
    deblurring recovers :math:`(x, k)` only up to :math:`(x(\cdot - d), k(\cdot + d))`, which
    gives the same blurred image under circular convolution."""
    best = None
    for d in _shifts(radius):
        mse = (torch.roll(estimate, d, dims=(-2, -1)) - target).double().pow(2).flatten(1).mean(1)
        best = mse if best is None else torch.minimum(best, mse)
    assert best is not None
    return -10.0 * torch.log10(best.clamp_min(1e-30))


def aligned_kernel_error(estimate: Tensor, target: Tensor, radius: int) -> Tensor:
    r"""Per-kernel relative error :math:`\min_d\|k̂(\cdot - d) - k\|/\|k\|` ``(B,)`` over integer
    shifts :math:`|d_1|, |d_2| \le` ``radius`` with zero fill (the kernel's side of the shift
    ambiguity, :func:`aligned_psnr`)."""
    m, r = target.shape[-1], radius
    pad = torch.nn.functional.pad(estimate.double(), (r, r, r, r))
    ref = target.double()
    best = None
    for a, b in _shifts(r):
        win = pad[..., r + a : r + a + m, r + b : r + b + m]
        err = (win - ref).pow(2).flatten(1).sum(1)
        best = err if best is None else torch.minimum(best, err)
    assert best is not None
    return (best / ref.pow(2).flatten(1).sum(1).clamp_min(1e-300)).sqrt()
