"""Per-layer pooled NMSE as a torchmetrics metric (DDP-aware: sums are reduced across ranks)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["LayerwiseNMSE"]


class LayerwiseNMSE(Metric):
    r"""Pooled normalised MSE in dB at every layer:

    .. math:: \mathrm{NMSE}_k = 10\log_{10}\frac{\sum_i \|\hat s_i^{(k)} - s_i\|^2}{\sum_i \|s_i\|^2},

    the sums running over the whole evaluated set (not a mean of per-sample ratios), as in the
    LISTA literature. ``update`` takes the stacked estimates ``(K + 1, B, ...)`` and the targets
    ``(B, ...)``; rows whose target is NaN (unlabelled) are skipped.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, depth: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # torchmetrics options, e.g. sync_on_compute=False
        self.depth = depth
        self.add_state(
            "err", default=torch.zeros(depth + 1, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("ref", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, estimates: Tensor, target: Tensor) -> None:
        labelled = ~torch.isnan(target.flatten(1)).any(dim=1)
        est = estimates[:, labelled].double().flatten(2)
        tgt = target[labelled].double().flatten(1)
        if est.shape[0] != self.depth + 1:
            raise ValueError(f"Expected {self.depth + 1} stacked estimates, got {est.shape[0]}.")
        # out of place: states reset under inference mode must still update under no_grad
        self.err = self.err + (est - tgt.unsqueeze(0)).pow(2).sum(dim=(1, 2))
        self.ref = self.ref + tgt.pow(2).sum()

    def compute(self) -> Tensor:
        """NMSE in dB for layers 0..K, shape ``(K + 1,)``."""
        return 10.0 * torch.log10(self.err / self.ref.clamp_min(1e-300))
