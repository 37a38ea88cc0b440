"""The networks of NMF's ``correction`` and ``inductive_bias`` paradigms and the black-box
baseline."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lightning_unfold.algorithms.nmf.operators import _EPS, _wiener, mu_exponent


def _unpack(features: Tensor, F: int, T: int, R: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    b = features.shape[0]
    sizes = [R * T, R * T, F * R, F * T]
    if features.shape[1] != sum(sizes):
        raise ValueError(f"NMF features have width {features.shape[1]}, expected {sum(sizes)}.")
    rho, H, W, V = torch.split(features, sizes, dim=1)
    return rho.reshape(b, R, T), H.reshape(b, R, T), W.reshape(b, F, R), V.reshape(b, F, T)


def _logs(rho: Tensor, H: Tensor) -> Tensor:
    r"""Network input ``(B, 2R, T)``: :math:`[\log\rho, \log H]` (floored at 1e-12)."""
    return torch.cat([torch.log(rho + _EPS), torch.log(H + _EPS)], dim=1)


class _TimeConv(nn.Sequential):
    """``Conv1d(c_in → c, 3) → ReLU → Conv1d(c → c_out, 3)`` along frames; zero last layer."""

    def __init__(self, c_in: int, channels: int, c_out: int) -> None:
        last = nn.Conv1d(channels, c_out, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        super().__init__(nn.Conv1d(c_in, channels, 3, padding=1), nn.ReLU(), last)


class NMFCorrectionNet(nn.Module):
    r"""Learned multiplicative correction of the H update (paradigm ``correction``).

    With :math:`\rho` the classical ratio and :math:`H^+ = H\odot\rho^\gamma` the classical
    update, the corrected update is :math:`H^+\odot\exp(g)`, :math:`g = \phi([\log\rho, \log H])`
    a two-layer 1-D convolution along frames over the :math:`2R` atom channels (last layer
    zero-initialised: :math:`g = 0`, the classical update). The core adds increments, so the
    network returns :math:`\Delta H = H^+\odot(e^{g} - 1) \ge -H^+` (hence
    :math:`H^+ + \Delta H \ge 0`), :math:`\Delta W = 0` and the matching change of the Wiener
    estimates. :math:`g` is clamped to :math:`[-10, 10]`, so :math:`e^{g} \ge 4.5\cdot10^{-5}`
    dominates any round-off between this :math:`H^+` and the core's.
    """

    def __init__(
        self, F: int, T: int, R: int, r: int, *, channels: int = 16, beta: float = 1.0
    ) -> None:
        super().__init__()
        self.F, self.T, self.R, self.r = F, T, R, r
        self.gamma = mu_exponent(beta)
        self.phi = _TimeConv(2 * R, channels, R)

    def forward(self, features: Tensor) -> Tensor:
        rho, H, W, V = _unpack(features, self.F, self.T, self.R)
        H_plus = H * rho**self.gamma
        g = self.phi(_logs(rho, H)).clamp(-10.0, 10.0)
        dH = H_plus * torch.expm1(g)
        dS = _wiener(W, H_plus + dH, V, self.r) - _wiener(W, H_plus, V, self.r)
        b = features.shape[0]
        return torch.cat(
            [dH.reshape(b, -1), torch.zeros_like(W).reshape(b, -1), dS.reshape(b, -1)], 1
        )


class NMFNetIteration(nn.Module):
    r"""An NMF iteration whose update ratio is a network (paradigm ``inductive_bias``).

    .. math:: H^+ = H \odot \exp\big(\gamma\log(\rho + \epsilon) + \phi([\log\rho, \log H])\big),

    :math:`\phi` a two-layer 1-D convolution along frames (last layer zero-initialised, so the
    layer starts as the classical update with exponent γ; the exponent is clamped to
    :math:`[-10, 10]`, so a layer changes H by at most a factor :math:`e^{10}`); a positive factor
    times a positive :math:`H`, so :math:`H^+ \ge 0`. The dictionary stays the classical one; the Wiener estimates
    are recomputed. Works on the core's ``(features, flat iterate) -> flat iterate`` interface.
    """

    def __init__(
        self, F: int, T: int, R: int, r: int, *, channels: int = 16, exponent: float = 1.0
    ) -> None:
        super().__init__()
        self.F, self.T, self.R, self.r = F, T, R, r
        self.log_gamma = nn.Parameter(torch.tensor(math.log(exponent)))
        self.phi = _TimeConv(2 * R, channels, R)

    def forward(self, features: Tensor, flat_iterate: Tensor) -> Tensor:
        rho, H, W, V = _unpack(features, self.F, self.T, self.R)
        z = _logs(rho, H)
        g = (self.log_gamma.exp() * z[:, : self.R] + self.phi(z)).clamp(-10.0, 10.0)
        H = H * torch.exp(g)
        S = _wiener(W, H, V, self.r)
        b = features.shape[0]
        return torch.cat([H.reshape(b, -1), W.reshape(b, -1), S.reshape(b, -1)], dim=1)


class NMFBlackBoxNet(nn.Module):
    r"""Black-box baseline: a 2-D convolutional mask estimator,
    :math:`\hat S_j = \operatorname{softmax}_j(\Phi(\log(1 + V)))\odot V` (nonnegative, sums to
    :math:`V`), :math:`\Phi` four 3×3 convolutions of a width matched to ``target_params``."""

    def __init__(self, target_params: int, *, layers: int = 4) -> None:
        super().__init__()
        width = 1
        while self._count(width + 1, layers) <= max(target_params, self._count(1, layers)):
            width += 1
        mods: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]
        for _ in range(layers - 2):
            mods += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        mods.append(nn.Conv2d(width, 2, 3, padding=1))
        self.phi = nn.Sequential(*mods)
        self.width = width

    @staticmethod
    def _count(c: int, layers: int) -> int:
        return 10 * c + (layers - 2) * (9 * c * c + c) + 18 * c + 2

    def forward(self, x: Tensor) -> Tensor:
        masks = torch.softmax(self.phi(torch.log1p(x).unsqueeze(1)), dim=1)
        return masks * x.unsqueeze(1)
