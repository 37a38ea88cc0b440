"""The CRF's Gaussian kernels (spatial, bilateral) and the unary features.

The math is in the package docstring (:mod:`lightning_unfold.algorithms.crf`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as tF
from torch import Tensor


# -- kernels and the mean-field update ----------------------------------------------------------
def unary_features(x: Tensor) -> Tensor:
    """Per-pixel features ``(B, 3C, H, W)``: the intensity, its 3×3 mean and its 3×3 standard
    deviation (edges replicated)."""
    padded = tF.pad(torch.cat([x, x * x], dim=1), (1, 1, 1, 1), mode="replicate")
    moments = tF.avg_pool2d(padded, 3, stride=1)
    mean, second = moments.chunk(2, dim=1)
    std = (second - mean * mean).clamp_min(0.0).sqrt()
    return torch.cat([x, mean, std], dim=1)


def _positions(h: int, w: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=dtype, device=device),
        torch.arange(w, dtype=dtype, device=device),
        indexing="ij",
    )
    return torch.stack([yy.reshape(-1), xx.reshape(-1)], dim=1)


def _sq_dist(a: Tensor) -> Tensor:
    """Squared distances ``(..., N, N)`` between the rows of ``a`` ``(..., N, D)``, summed per
    coordinate (exact zeros on the diagonal, unlike ``cdist``'s matrix-product shortcut)."""
    out = (a[..., :, None, 0] - a[..., None, :, 0]).square()
    for d in range(1, a.shape[-1]):
        out += (a[..., :, None, d] - a[..., None, :, d]).square()
    return out


def _gaussian_mass(theta: Tensor | float) -> Tensor:
    r""":math:`S(\theta) = \sum_{d\in\mathbb Z^2\setminus 0}\exp(-|d|^2/2\theta^2)`: the row sum of
    a spatial Gaussian kernel at an interior pixel of an unbounded grid (the largest row sum)."""
    theta = torch.as_tensor(theta, dtype=torch.float64)
    half = math.ceil(8 * float(theta))
    r = torch.arange(-half, half + 1)
    one_d = torch.exp(-(r.double() ** 2) / (2.0 * theta**2)).sum()
    return one_d * one_d - 1.0


def spatial_kernel(
    h: int, w: int, theta_gamma: Tensor | float, *, dtype: torch.dtype, device: Any = None
) -> Tensor:
    r"""The dense spatial kernel :math:`\exp(-|p_i - p_j|^2/2\theta_\gamma^2)/S(\theta_\gamma)`
    ``(N, N)``, zero on the diagonal (:math:`N = hw`, row-major pixels). The scale
    :math:`S` (:func:`_gaussian_mass`) makes every row sum at most 1, so a message is a weighted
    *fraction* of the neighbourhood and the weights :math:`w_s, w_b` are in units of the unary
    logits (a mere change of units of the weights)."""
    pos = _positions(h, w, dtype, torch.device(device or "cpu"))
    theta = torch.as_tensor(theta_gamma, dtype=dtype)
    k = torch.exp(-_sq_dist(pos) / (2.0 * theta**2))
    return k.fill_diagonal_(0.0) / _gaussian_mass(theta).to(dtype)


def bilateral_kernel(x: Tensor, theta_alpha: Tensor | float, theta_beta: Tensor | float) -> Tensor:
    r"""The dense bilateral kernels ``(B, N, N)`` of images ``x`` ``(B, C, H, W)``:
    :math:`\exp(-|p_i - p_j|^2/2\theta_\alpha^2 - |I_i - I_j|^2/2\theta_\beta^2)/S(\theta_\alpha)`,
    zero diagonal (the scale as in :func:`spatial_kernel`)."""
    B, C, H, W = x.shape
    pos = _positions(H, W, x.dtype, x.device)
    alpha = torch.as_tensor(theta_alpha, dtype=x.dtype)
    d_pos = _sq_dist(pos) / (2.0 * alpha**2)
    vals = x.reshape(B, C, H * W).transpose(1, 2)
    beta = torch.as_tensor(theta_beta, dtype=x.dtype)
    k = _sq_dist(vals).div_(-2.0 * beta**2).sub_(d_pos).exp_()  # in place: B·N² entries
    k.diagonal(dim1=1, dim2=2).zero_()
    return k.div_(_gaussian_mass(alpha).to(x.dtype))
