r"""Relative perturbations of iterates (noise injection; the robustness test of Hadou et al. 2024).

:func:`relative_perturbation` adds to every block :math:`b` of an iterate, per sample,

.. math:: \tilde s_b = s_b + \beta\,\|s_b\|_2\,\frac{z}{\|z\|_2}, \qquad z \sim \mathcal N(0, I),

a perturbation of norm exactly :math:`\beta` times the block's norm, so :math:`\beta` means the
same for every problem and every block (the code of sparse recovery, RPCA's factors ``L, R`` and
outliers ``Y``, ADMM's ``s, z, u``). Blocks with fewer than two dimensions per sample (momentum
scalars such as FISTA's ``t``) are left alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_unfold.core.iterate import iterate_map

__all__ = ["relative_perturbation"]


def relative_perturbation(s: Any, beta: float, generator: torch.Generator | None = None) -> Any:
    """``s`` plus noise of relative size ``beta`` in every block (see the module docstring)."""
    if not (beta >= 0 and beta == beta and beta != float("inf")):
        raise ValueError(
            f"The relative perturbation size beta must be finite and >= 0, got {beta}."
        )
    if beta == 0:
        return s

    def add(b: Tensor) -> Tensor:
        if b.ndim < 2 or not b.is_floating_point():
            return b
        z = torch.randn(b.shape, generator=generator, dtype=b.dtype, device="cpu").to(b.device)
        flat_z = z.reshape(b.shape[0], -1)
        flat_b = b.detach().reshape(b.shape[0], -1)
        scale = beta * flat_b.norm(dim=1) / flat_z.norm(dim=1).clamp_min(1e-30)
        return b + (flat_z * scale[:, None]).reshape(b.shape)

    return iterate_map(add, s)
