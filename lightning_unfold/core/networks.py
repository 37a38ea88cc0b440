r"""Networks shared by several problem families.

A family's own networks (its correction Δ, its inductive-bias layer) live with the family; a
network that more than one family uses lives here, so no family imports another.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ConvDenoiserNet"]


class ConvDenoiserNet(nn.Module):
    r"""A residual convolutional denoiser of 2-D maps, scale-equivariant:

    .. math:: \hat M = X - \rho\,\Phi(X/\rho),\qquad \rho = \operatorname{rms}(X),

    Φ a stack of ``layers`` 3×3 convolutions (ReLU between; DnCNN-style residual learning: Φ
    estimates what is to be removed) whose width is the largest whose parameter count stays
    within ``target_params`` (at least width 1). Φ's last layer is zero-initialised, so the
    network starts as the identity :math:`\hat M = X`. Input and output: ``(B, n1, n2)``.

    Used as the black-box baseline of RPCA (the outliers are removed) and as the learned
    denoiser of compressive imaging's black box.
    """

    def __init__(self, target_params: int, *, layers: int = 5) -> None:
        super().__init__()
        if layers < 2:
            raise ValueError(f"{type(self).__name__} needs layers >= 2, got {layers}.")
        width = 1
        while self._count(width + 1, layers) <= max(target_params, self._count(1, layers)):
            width += 1
        mods: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]
        for _ in range(layers - 2):
            mods += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        last = nn.Conv2d(width, 1, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.phi = nn.Sequential(*mods, last)
        self.width = width

    @staticmethod
    def _count(c: int, layers: int) -> int:
        """Parameters of Φ at width ``c``: first conv 9c + c, middle ones 9c² + c, last 9c + 1."""
        return 10 * c + (layers - 2) * (9 * c * c + c) + 9 * c + 1

    def forward(self, x: Tensor) -> Tensor:
        rho = x.pow(2).mean(dim=(-2, -1), keepdim=True).sqrt().clamp_min(torch.finfo(x.dtype).tiny)
        return x - rho * self.phi((x / rho).unsqueeze(1)).squeeze(1)
