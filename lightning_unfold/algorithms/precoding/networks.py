"""The black-box baseline :class:`HybridBlackBoxNet` (an MLP from channels to feasible
precoders).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_unfold.algorithms.precoding.problem import (
    HybridPrecoding,
    pack_precoders,
    power_scale,
    unpack_precoders,
)
from lightning_unfold.core.algorithm import (
    project_unit_modulus,
)
from lightning_unfold.core.iterate import complex_dtype


class HybridBlackBoxNet(nn.Module):
    r"""The black-box baseline: an MLP from the channels to feasible precoders.

    Input: the real and imaginary parts of all :math:`H_b`, divided by the per-sample rms of the
    channel; ``n_hidden_layers`` ReLU layers of a width chosen so the parameter count is close to
    ``target_params``; output: the real and imaginary parts of a raw :math:`(W_a, \{W_{d,b}\})`,
    mapped onto the feasible set exactly as PGA's iterates are (:func:`unit_modulus` in that
    setting, then the power rescale), so the black box returns feasible precoders too. It knows
    nothing of the rate's gradient or of the SVD initialisation.
    """

    def __init__(
        self, problem: HybridPrecoding, target_params: int, *, n_hidden_layers: int = 2
    ) -> None:
        super().__init__()
        if n_hidden_layers < 1:
            raise ValueError(f"n_hidden_layers must be >= 1, got {n_hidden_layers}.")
        self.problem = problem
        p = problem
        in_dim = 2 * p.n_bands * p.n_users * p.n_antennas
        out_dim = 2 * p.estimate_width

        def count(h: int) -> int:
            return (in_dim + 1) * h + (n_hidden_layers - 1) * (h + 1) * h + (h + 1) * out_dim

        width = 1
        while count(width + 1) <= max(target_params, count(1)):
            width += 1
        layers: list[nn.Module] = [nn.Linear(in_dim, width), nn.ReLU()]
        for _ in range(n_hidden_layers - 1):
            layers += [nn.Linear(width, width), nn.ReLU()]
        layers.append(nn.Linear(width, out_dim))
        self.mlp = nn.Sequential(*layers)
        self.width = width

    def forward(self, x: Tensor) -> Tensor:
        real_dtype = self.mlp[0].weight.dtype
        h = x.to(complex_dtype(real_dtype))
        feats = torch.view_as_real(h).reshape(h.shape[0], -1)
        rms = feats.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(torch.finfo(real_dtype).tiny)
        raw = self.mlp(feats / rms)
        est = torch.view_as_complex(raw.reshape(h.shape[0], -1, 2).contiguous())
        wa, wd = unpack_precoders(est, self.problem)
        if self.problem.unit_modulus:
            wa = project_unit_modulus(wa)
        wd = wd * power_scale(wa, wd, self.problem.total_power).to(wd.dtype)[:, None, None, None]
        return pack_precoders(wa, wd)
