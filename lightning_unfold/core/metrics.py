r"""Per-problem metrics: what a problem is scored by, layer by layer.

Metrics belong to the problem (:meth:`ProblemSpec.metrics`): NMSE for sparse recovery, relative
error for RPCA, sum-rate for power allocation, BER for detection, achievable rate for precoding.
Each :class:`ProblemMetric` is written as *sufficient statistics*: a short vector of sums over the
samples of a batch (:meth:`ProblemMetric.statistics`) and a map from the summed vector to the
metric's value (:meth:`ProblemMetric.finalize`). Sums add up across batches and across DDP ranks,
so a pooled figure (the literature's pooled NMSE, a bit-error count over all symbols, a mean over
all channel realisations) is exact however the data are split.

Three building blocks cover the usual cases:

* :class:`NMSE` — pooled :math:`10\log_{10}\sum_i\|\hat s_i - s_i\|^2 / \sum_i\|s_i\|^2` (dB);
* :class:`MeanOf` — the mean over samples of a per-sample value (relative error, sum-rate);
* :class:`RateOf` — a ratio of two per-sample counts (bit or symbol error rate).

The first metric a problem lists is its *primary* metric (:func:`primary_metric`): the one the
demo tables, the schedules' held-out evaluation, the checks' report and the studies show.

Rows without a label (a NaN anywhere in a floating target, a negative entry in an integer target)
are skipped by metrics that need a target (:func:`labelled_rows`); metrics of the observation and
estimate alone (a sum-rate) use every row.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "NMSE",
    "MeanOf",
    "ProblemMetric",
    "RateOf",
    "RelativeError",
    "labelled_rows",
    "layer_curves",
    "primary_metric",
]


def labelled_rows(target: Tensor) -> Tensor:
    """Boolean mask ``(B,)`` of labelled rows: floating targets without NaN, integer targets
    without a negative entry (``-1`` marks an unlabelled integer target)."""
    flat = target.reshape(target.shape[0], -1)
    if flat.is_floating_point() or flat.is_complex():
        return ~torch.isnan(flat).any(dim=1)
    return ~(flat < 0).any(dim=1)


class ProblemMetric(ABC):
    """A metric of one layer's estimates, as sufficient statistics (see the module docstring).

    Attributes:
        name: key in logs and curves (``"nmse_db"`` is logged as ``val/nmse_db`` and
            ``val/nmse_db_layer/07``).
        label: human-readable name for tables and plot axes (``"NMSE"``).
        unit: unit for tables and axes (``"dB"``, ``"bit/s/Hz"``, ``""``).
        higher_is_better: the metric's direction.
        needs_target: ``False`` for metrics of the estimate and the observation alone.
        n_stats: length of the statistics vector.
    """

    name: str = ""
    label: str = ""
    unit: str = ""
    higher_is_better: bool = False
    needs_target: bool = True
    n_stats: int = 2

    @abstractmethod
    def statistics(self, estimate: Tensor, target: Tensor, x: Tensor) -> Tensor:
        """Sums over the batch, float64 vector ``(n_stats,)``, of one layer's estimates
        ``(B, ...)`` against the targets ``(B, ...)`` for observations ``x`` ``(B, ...)``.
        Only labelled rows are passed when :attr:`needs_target` is true."""

    @abstractmethod
    def finalize(self, stats: Tensor) -> Tensor:
        """The metric's value (a float64 scalar) from summed statistics; NaN without data."""

    def axis_label(self) -> str:
        """``"NMSE (dB)"`` — for plots."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    def better(self, a: float, b: float) -> bool:
        """Whether value ``a`` is strictly better than ``b`` in this metric's direction."""
        return a > b if self.higher_is_better else a < b

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    return num / den if bool(den > 0) else torch.full_like(num, float("nan"))


class NMSE(ProblemMetric):
    r"""Pooled normalised MSE in dB,
    :math:`10\log_{10}\sum_i\|\hat s_i - s_i\|^2/\sum_i\|s_i\|^2` (sums over the whole evaluated
    set, as in the LISTA literature; complex entries use :math:`|\cdot|^2`)."""

    name, label, unit = "nmse_db", "NMSE", "dB"
    higher_is_better, needs_target, n_stats = False, True, 2

    def statistics(self, estimate: Tensor, target: Tensor, x: Tensor) -> Tensor:
        est = estimate.reshape(estimate.shape[0], -1).to(_wide(estimate))
        tgt = target.reshape(target.shape[0], -1).to(est.dtype)
        return torch.stack([(est - tgt).abs().pow(2).sum(), tgt.abs().pow(2).sum()]).double()

    def finalize(self, stats: Tensor) -> Tensor:
        if not bool(stats[1] > 0):
            return torch.tensor(float("nan"), dtype=torch.float64)
        return 10.0 * torch.log10(stats[0] / stats[1])


def _wide(t: Tensor) -> torch.dtype:
    return torch.complex128 if t.is_complex() else torch.float64


class MeanOf(ProblemMetric):
    """The mean over samples of ``fn(estimate, target, x)`` (a ``(B,)`` tensor).

    Args:
        name, label, unit, higher_is_better, needs_target: see :class:`ProblemMetric`.
        fn: per-sample value of one layer's estimates.
    """

    n_stats = 2

    def __init__(
        self,
        name: str,
        fn: Callable[[Tensor, Tensor, Tensor], Tensor],
        *,
        label: str = "",
        unit: str = "",
        higher_is_better: bool = False,
        needs_target: bool = True,
    ) -> None:
        self.name, self.fn, self.label, self.unit = name, fn, label or name, unit
        self.higher_is_better, self.needs_target = higher_is_better, needs_target

    def statistics(self, estimate: Tensor, target: Tensor, x: Tensor) -> Tensor:
        values = self.fn(estimate, target, x).double()
        if values.shape != (estimate.shape[0],):
            raise ValueError(
                f"Metric {self.name!r}: the per-sample function must return shape "
                f"({estimate.shape[0]},), got {tuple(values.shape)}."
            )
        return torch.stack(
            [values.sum(), torch.tensor(float(values.numel()), dtype=torch.float64)]
        ).to(values.device)

    def finalize(self, stats: Tensor) -> Tensor:
        return _ratio(stats[0], stats[1])


class RateOf(ProblemMetric):
    """A pooled rate: ``Σ errors / Σ trials`` with ``fn(estimate, target, x)`` returning the
    per-sample ``(errors, trials)`` pair of ``(B,)`` tensors (bit or symbol error rate)."""

    n_stats = 2

    def __init__(
        self,
        name: str,
        fn: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]],
        *,
        label: str = "",
        unit: str = "",
        higher_is_better: bool = False,
    ) -> None:
        self.name, self.fn, self.label, self.unit = name, fn, label or name, unit
        self.higher_is_better, self.needs_target = higher_is_better, True

    def statistics(self, estimate: Tensor, target: Tensor, x: Tensor) -> Tensor:
        errors, trials = self.fn(estimate, target, x)
        return torch.stack([errors.double().sum(), trials.double().sum()])

    def finalize(self, stats: Tensor) -> Tensor:
        return _ratio(stats[0], stats[1])


def _relative_error(estimate: Tensor, target: Tensor, x: Tensor) -> Tensor:
    est = estimate.reshape(estimate.shape[0], -1).to(_wide(estimate))
    tgt = target.reshape(target.shape[0], -1).to(est.dtype)
    num = torch.linalg.vector_norm(est - tgt, dim=1)
    return num / torch.linalg.vector_norm(tgt, dim=1).clamp_min(1e-300)


class RelativeError(MeanOf):
    r"""Mean over samples of :math:`\|\hat s_i - s_i\|_F / \|s_i\|_F` (RPCA's figure)."""

    def __init__(self) -> None:
        super().__init__(
            "rel_error", _relative_error, label="relative error", higher_is_better=False
        )


def primary_metric(metrics: Sequence[ProblemMetric]) -> ProblemMetric:
    """The primary metric: the first one the problem lists."""
    if not metrics:
        raise ValueError("A problem must declare at least one metric (ProblemSpec.metrics()).")
    return metrics[0]


def check_metrics(metrics: Sequence[ProblemMetric], owner: Any = None) -> tuple[ProblemMetric, ...]:
    """Validate a problem's metric list: at least one, unique non-empty names."""
    ms = tuple(metrics)
    primary_metric(ms)
    names = [m.name for m in ms]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ValueError(
            f"{owner or 'The problem'} declares metrics with empty or repeated names {names}."
        )
    return ms


@torch.no_grad()
def layer_curves(
    estimates: Tensor | Sequence[Tensor],
    target: Tensor,
    x: Tensor,
    metrics: Sequence[ProblemMetric],
) -> dict[str, list[float]]:
    """Every metric at every layer, ``{name: [value at layer 0..K]}``, for stacked estimates
    ``(K + 1, B, ...)`` (or a list of per-layer tensors) of one evaluated set."""
    layers = list(estimates.unbind(0)) if isinstance(estimates, Tensor) else list(estimates)
    mask = labelled_rows(target)
    out: dict[str, list[float]] = {}
    for m in metrics:
        vals = []
        for est in layers:
            if m.needs_target:
                stats = (
                    m.statistics(est[mask], target[mask], x[mask])
                    if bool(mask.any())
                    else torch.zeros(m.n_stats, dtype=torch.float64)
                )
            else:
                stats = m.statistics(est, target, x)
            vals.append(float(m.finalize(stats)))
        out[m.name] = vals
    return out
