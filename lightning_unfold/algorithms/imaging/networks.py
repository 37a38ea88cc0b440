"""The networks of ADMM-TV's ``correction`` paradigm and the black-box baseline."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_unfold.algorithms.imaging.operators import _ifft
from lightning_unfold.algorithms.imaging.problem import CompressiveImaging
from lightning_unfold.core.iterate import real_dtype
from lightning_unfold.core.networks import ConvDenoiserNet


class ImagingCorrectionNet(nn.Module):
    r"""Learned correction Δ of the image (paradigm ``correction``): a two-layer 3×3 CNN of the
    channels :math:`(x, x_{\mathrm{zf}}, z_1..z_C, u_1..u_C)` of the previous stage, added to the
    ADMM x-update; :math:`\Delta z = \Delta u = 0`. Zero-initialised last layer: the model starts
    as classical ADMM."""

    def __init__(self, n: int, n_filters: int, *, channels: int = 8) -> None:
        super().__init__()
        self.n, self.C = n, n_filters
        last = nn.Conv2d(channels, 1, 3, padding=1, padding_mode="circular")
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        first = nn.Conv2d(2 + 2 * n_filters, channels, 3, padding=1, padding_mode="circular")
        self.conv = nn.Sequential(first, nn.ReLU(), last)

    def forward(self, features: Tensor) -> Tensor:
        b, n, C = features.shape[0], self.n, self.C
        expected = (2 + 2 * C) * n * n
        if features.shape[1] != expected:
            raise ValueError(
                f"Imaging features have width {features.shape[1]}, expected {expected}."
            )
        maps = features.reshape(b, 2 + 2 * C, n, n)
        dx = self.conv(maps).reshape(b, -1)
        return torch.cat([dx, dx.new_zeros(b, 2 * C * n * n)], dim=1)


class ImagingBlackBoxNet(nn.Module):
    r"""Black-box baseline: a residual CNN on the zero-filled reconstruction,
    :math:`\hat x = \rho\,(u - \Phi(u))` with :math:`u = x_{\mathrm{zf}}/\rho`,
    :math:`\rho = \operatorname{rms}(x_{\mathrm{zf}})` and Φ a stack of 3×3 convolutions whose
    width matches ``target_params`` (the core's
    :class:`~lightning_unfold.core.networks.ConvDenoiserNet`; zero-initialised last layer, so it starts at the zero-filled image). It knows the
    mask (to form :math:`x_{\mathrm{zf}}`) but not the iteration."""

    def __init__(self, problem: CompressiveImaging, target_params: int, *, layers: int = 5) -> None:
        super().__init__()
        self.register_buffer("mask", problem.mask.clone().float())
        self.denoiser = ConvDenoiserNet(target_params, layers=layers)

    def forward(self, y: Tensor) -> Tensor:
        zf = _ifft(self.mask.to(real_dtype(y.dtype)) * y).real
        return self.denoiser(zf)
