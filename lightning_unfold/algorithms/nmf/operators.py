r"""The β-divergence, the exponent :math:`\gamma(\beta)` that makes the multiplicative update
monotone, and the Wiener filtering of the sources.

The math is in the package docstring (:mod:`lightning_unfold.algorithms.nmf`).
"""

from __future__ import annotations

import torch
from torch import Tensor

_EPS = 1e-12


def mu_exponent(beta: float) -> float:
    r"""The exponent :math:`\gamma(\beta)` under which the multiplicative update is monotone."""
    if beta < 1.0:
        return 1.0 / (2.0 - beta)
    if beta <= 2.0:
        return 1.0
    return 1.0 / (beta - 1.0)


def beta_divergence(v: Tensor, u: Tensor, beta: float) -> Tensor:
    r"""Per-sample :math:`\sum d_\beta(v|u)` over all but the first dimension (``u`` floored at
    :math:`10^{-12}`)."""
    u = u.clamp_min(_EPS)
    if beta == 2.0:
        d = 0.5 * (v - u) ** 2
    elif beta == 1.0:
        d = torch.xlogy(v, v) - v * torch.log(u) - v + u
    elif beta == 0.0:
        ratio = v.clamp_min(_EPS) / u
        d = ratio - torch.log(ratio) - 1.0
    else:
        d = (v**beta + (beta - 1.0) * u**beta - beta * v * u ** (beta - 1.0)) / (
            beta * (beta - 1.0)
        )
    return d.flatten(1).sum(dim=1)


def _wiener(W: Tensor, H: Tensor, V: Tensor, r: int) -> Tensor:
    """Wiener-filtered sources ``(B, 2, F, T)``: :math:`\\frac{W_jH_j}{WH}\\odot V`."""
    parts = torch.stack([W[:, :, :r] @ H[:, :r], W[:, :, r:] @ H[:, r:]], dim=1)
    return parts / (parts.sum(dim=1, keepdim=True) + _EPS) * V.unsqueeze(1)
