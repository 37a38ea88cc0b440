"""Per-layer problem metrics as torchmetrics metrics (DDP-aware: sums are reduced across ranks).

:class:`LayerwiseMetric` accumulates a :class:`~lightning_unfold.core.metrics.ProblemMetric`'s
sufficient statistics at every layer 0..K; ``compute`` finalises them into one value per layer.
:class:`LayerwiseNMSE` is the pooled-NMSE instance that estimation problems use by default.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_unfold.core.metrics import NMSE, ProblemMetric, labelled_rows

__all__ = ["LayerwiseMetric", "LayerwiseNMSE"]


class LayerwiseMetric(Metric):
    r"""A problem metric at every layer: statistics ``(K + 1, n_stats)`` summed over all batches
    (and, under DDP, all ranks), then :meth:`ProblemMetric.finalize` per layer.

    ``update`` takes the stacked estimates ``(K + 1, B, ...)``, the targets ``(B, ...)`` and the
    observations ``(B, ...)``; metrics that need a target skip unlabelled rows
    (:func:`~lightning_unfold.core.metrics.labelled_rows`).
    """

    full_state_update = False

    def __init__(self, metric: ProblemMetric, depth: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # torchmetrics options, e.g. sync_on_compute=False
        self.metric, self.depth = metric, depth
        self.add_state(
            "stats",
            default=torch.zeros(depth + 1, metric.n_stats, dtype=torch.float64),
            dist_reduce_fx="sum",
        )

    def update(self, estimates: Tensor, target: Tensor, x: Tensor | None = None) -> None:
        if estimates.shape[0] != self.depth + 1:
            raise ValueError(
                f"Expected {self.depth + 1} stacked estimates, got {estimates.shape[0]}."
            )
        if x is None:
            if not self.metric.needs_target:
                raise ValueError(f"Metric {self.metric.name!r} needs the observations x.")
            x = target
        m = self.metric
        if m.needs_target:
            mask = labelled_rows(target)
            estimates, target, x = estimates[:, mask], target[mask], x[mask]
            if target.shape[0] == 0:
                return
        rows = [m.statistics(estimates[k], target, x) for k in range(self.depth + 1)]
        # out of place: states reset under inference mode must still update under no_grad
        self.stats = self.stats + torch.stack(rows).to(self.stats)

    def compute(self) -> Tensor:
        """The metric at layers 0..K, shape ``(K + 1,)``."""
        return torch.stack([self.metric.finalize(row) for row in self.stats])


class LayerwiseNMSE(LayerwiseMetric):
    r"""Pooled normalised MSE in dB at every layer:

    .. math:: \mathrm{NMSE}_k = 10\log_{10}\frac{\sum_i \|\hat s_i^{(k)} - s_i\|^2}{\sum_i \|s_i\|^2},

    the sums running over the whole evaluated set (not a mean of per-sample ratios), as in the
    LISTA literature. ``update`` takes the stacked estimates ``(K + 1, B, ...)`` and the targets
    ``(B, ...)``; rows whose target is NaN (unlabelled) are skipped.
    """

    def __init__(self, depth: int, **kwargs: Any) -> None:
        super().__init__(NMSE(), depth, **kwargs)
