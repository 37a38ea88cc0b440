r"""The Fourier transforms, the 3×3 filter banks :math:`D_c`, their transfer functions, the
piecewise-linear shrinkage :math:`\psi` and the TV objective of compressive imaging.

The math is in the package docstring (:mod:`lightning_unfold.algorithms.imaging`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: the classical filter banks of :class:`ADMMTV`
FILTER_BANKS: tuple[str, ...] = ("tv", "tv4")
#: control points of the piecewise-linear shrinkage, in units of the threshold
PLF_LO, PLF_STEP, PLF_POINTS = -4.0, 0.5, 17


def _fft(x: Tensor) -> Tensor:
    return torch.fft.fft2(x, norm="ortho")


def _ifft(x: Tensor) -> Tensor:
    return torch.fft.ifft2(x, norm="ortho")


# -- operators -----------------------------------------------------------------------------
def finite_difference_filters(kind: str = "tv") -> Tensor:
    r"""Classical 3×3 filters (C, 3, 3), float64, as correlations :math:`(Dx)_p = \sum_{ab}
    w_{ab}\,x_{p + (a-1, b-1)}`. ``"tv"``: the horizontal and vertical forward differences
    :math:`x_{i,j+1} - x_{i,j}`, :math:`x_{i+1,j} - x_{i,j}` (anisotropic TV); ``"tv4"``: those
    and the two diagonal differences scaled by :math:`1/\sqrt2`."""
    if kind not in FILTER_BANKS:
        raise ValueError(f"Unknown filter bank {kind!r}; valid: {list(FILTER_BANKS)}.")
    taps = [((1, 2), 1.0), ((2, 1), 1.0)]
    if kind == "tv4":
        taps += [((2, 2), 1.0 / math.sqrt(2.0)), ((2, 0), 1.0 / math.sqrt(2.0))]
    w = torch.zeros(len(taps), 3, 3, dtype=torch.float64)
    for c, ((a, b), v) in enumerate(taps):
        w[c, a, b] = v
        w[c, 1, 1] = -v
    return w


def filter_transfer(w: Tensor, n: int) -> Tensor:
    r"""Transfer functions :math:`\hat D_c` (C, n, n), complex: :math:`F(D_cx) = \hat D_c\odot Fx`
    for the circular correlation with the 3×3 filters ``w`` (C, 3, 3),
    :math:`\hat D_c(k) = \sum_q w^{\mathrm{pad}}_q e^{+2\pi i\langle k, q\rangle/n}`."""
    pad = w.new_zeros(w.shape[0], n, n)
    pad[:, :3, :3] = w
    pad = torch.roll(pad, shifts=(-1, -1), dims=(-2, -1))  # tap (1, 1) at offset (0, 0)
    return torch.conj(torch.fft.fft2(pad))


def _apply(Dh: Tensor, fx: Tensor) -> Tensor:
    """:math:`D_c x` for all filters, ``(B, C, n, n)``, from :math:`Fx` ``(B, n, n)``."""
    return _ifft(Dh * fx.unsqueeze(1)).real


def soft_threshold_values() -> Tensor:
    """The unit soft threshold at the control points :math:`t_j`, ``(17,)`` float64."""
    t = PLF_LO + PLF_STEP * torch.arange(PLF_POINTS, dtype=torch.float64)
    return torch.sign(t) * (t.abs() - 1.0).clamp_min(0.0)


def piecewise_linear(t: Tensor, values: Tensor) -> Tensor:
    r""":math:`\psi_c(t)` for ``t`` ``(B, C, n, n)``: linear interpolation of ``values`` (C, 17)
    at the control points :math:`t_j = -4 + 0.5j`, slope 1 outside :math:`[-4, 4]`."""
    C, P = values.shape
    pos = (t - PLF_LO) / PLF_STEP
    # NaN positions (a diverged iterate) get index 0 and stay NaN through `frac`, so the
    # training loop's finite check reports them instead of an out-of-range index here
    idx = pos.detach().nan_to_num(0.0).floor().clamp(0, P - 2).long()
    frac = pos - idx.to(pos.dtype)
    base = (torch.arange(C, device=t.device) * P).view(1, C, 1, 1)
    flat = values.reshape(-1)
    v0, v1 = flat[base + idx], flat[base + idx + 1]
    inner = v0 + frac * (v1 - v0)
    hi = PLF_LO + PLF_STEP * (P - 1)
    below = values[:, 0].view(1, C, 1, 1) + (t - PLF_LO)
    above = values[:, -1].view(1, C, 1, 1) + (t - hi)
    return torch.where(t < PLF_LO, below, torch.where(t > hi, above, inner))


def tv_objective(
    image: Tensor, y: Tensor, mask: Tensor, weight: Tensor | float, kind: str = "tv"
) -> Tensor:
    r"""Per-sample :math:`\tfrac12\|M\odot Fx - y\|^2 + \lambda\sum_c\|D_cx\|_1` (classical
    filters ``kind``), shape ``(B,)``."""
    fx = _fft(image)
    Dh = filter_transfer(
        finite_difference_filters(kind).to(image.device, image.dtype), image.shape[-1]
    )
    data = 0.5 * (mask * fx - y).abs().pow(2).sum(dim=(1, 2))
    return data + weight * _apply(Dh, fx).abs().sum(dim=(1, 2, 3))
