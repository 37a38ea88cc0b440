r"""Descending constraints of unrolled networks (Hadou, NaderiAlizadeh, Ribeiro, 2024).

Hadou et al., "Robust Stochastically-Descending Unrolled Networks", IEEE Trans. Signal Process.
72 (2024), train unrolled networks under the constraints

.. math::

    \mathbb E\,\|\nabla L(s^{(k)})\| \le (1 - \epsilon)\, \mathbb E\,\|\nabla L(s^{(k-1)})\|,
    \qquad k = 1, \dots, K,

which make the layers behave like a descent method: the expected gradient norm shrinks by at
least :math:`1-\epsilon` per layer, so the outputs approach a stationary point even under
perturbations. This module measures those ratios from per-instance, per-layer values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._arrays import ArrayLike, as_trajectory_table

__all__ = [
    "DescentReport",
    "descent_ratios",
    "descent_report",
    "descent_violation_rate",
    "distance_ratios",
    "objective_decrease",
]


def _mean_ratios(values: np.ndarray) -> np.ndarray:
    mean = values.mean(axis=0)
    num, den = mean[1:], mean[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = num / den
    ratio = np.where(den > 0, ratio, np.where(num > 0, np.inf, 0.0))
    return ratio


def descent_ratios(grad_norms: ArrayLike) -> np.ndarray:
    r"""Per-layer ratios of the expected gradient norm (Hadou et al., 2024).

    .. math::

        r_k = \frac{\frac1N\sum_j \|\nabla L(s_j^{(k)})\|}{\frac1N\sum_j
        \|\nabla L(s_j^{(k-1)})\|}, \qquad k = 1..K .

    The descending constraint of layer :math:`k` holds iff :math:`r_k \le 1-\epsilon`. When the
    denominator is 0 the ratio is 0 if the numerator is 0 too (already stationary: the
    constraint holds) and :math:`+\infty` otherwise.

    Args:
        grad_norms: (N, K+1) gradient norms per instance and layer, e.g. from
            :func:`~lightning_unfold.theory.lasso_gradient_norm`.

    Returns:
        float64 array (K,).
    """
    G = as_trajectory_table(grad_norms, "grad_norms")
    if np.any(G < 0):
        raise ValueError("grad_norms must be >= 0 (they are norms).")
    return _mean_ratios(G)


def distance_ratios(distances: ArrayLike) -> np.ndarray:
    r"""Per-layer ratios of the expected distance to a reference solution.

    .. math::

        d_k = \frac{\mathbb E\,\|s^{(k)} - s^\star\|}{\mathbb E\,\|s^{(k-1)} - s^\star\|},
        \qquad k = 1..K,

    with :math:`s^\star` e.g. from :func:`~lightning_unfold.theory.lasso_reference`. For ISTA
    with :math:`\mu \le 2/\|H\|^2` the iterates are Fejér monotone, :math:`d_k \le 1`
    (Combettes & Wajs, 2005). Zero denominators are handled as in :func:`descent_ratios`.

    Args:
        distances: (N, K+1) non-negative distances per instance and layer.

    Returns:
        float64 array (K,).
    """
    D = as_trajectory_table(distances, "distances")
    if np.any(D < 0):
        raise ValueError("distances must be >= 0 (they are norms).")
    return _mean_ratios(D)


def objective_decrease(objective_values: ArrayLike) -> np.ndarray:
    r"""Per-layer mean decrease of the objective.

    .. math::

        \delta_k = \frac1N \sum_j \big(L(s_j^{(k-1)}) - L(s_j^{(k)})\big), \qquad k = 1..K .

    ISTA/FISTA-style descent with :math:`\mu \le 1/\|H\|^2` has :math:`\delta_k \ge 0` for every
    instance (Beck & Teboulle, 2009, Lemma 2.3); a negative entry is an ascent step.

    Args:
        objective_values: (N, K+1) objective values per instance and layer.

    Returns:
        float64 array (K,) — positive where the objective went down on average.
    """
    V = as_trajectory_table(objective_values, "objective_values")
    return -np.diff(V, axis=1).mean(axis=0)


def descent_violation_rate(ratios: ArrayLike, eps: float) -> float:
    r"""Fraction of layers violating the descending constraint :math:`r_k \le 1 - \epsilon`.

    .. math::

        v = \frac{1}{K}\,\#\{k : r_k > 1 - \epsilon\}

    (Hadou et al., 2024 report this to show which constraints are active/violated).

    Args:
        ratios: (K,) ratios from :func:`descent_ratios` or :func:`distance_ratios`.
        eps: :math:`\epsilon \in [0, 1)`.
    """
    if isinstance(ratios, torch.Tensor):
        ratios = ratios.detach().to(device="cpu", dtype=torch.float64).numpy()
    r = np.asarray(ratios, dtype=np.float64)  # +inf allowed: see descent_ratios
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"ratios must be a non-empty 1-D array (K,); got shape {r.shape}.")
    if np.any(np.isnan(r)):
        raise ValueError("ratios contain NaN; the trajectories produced NaN gradients or errors.")
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must lie in [0, 1); got {eps}.")
    return float(np.mean(r > 1.0 - eps))


@dataclass(frozen=True)
class DescentReport:
    r"""Descent quantities of one set of trajectories.

    Attributes:
        eps: the :math:`\epsilon` of the constraints :math:`r_k \le 1-\epsilon`.
        grad_ratios: :func:`descent_ratios`, (K,).
        violation_rate: :func:`descent_violation_rate` of ``grad_ratios``.
        objective_decrease: :func:`objective_decrease`, (K,), or None.
        distance_ratios: :func:`distance_ratios`, (K,), or None.
    """

    eps: float
    grad_ratios: np.ndarray
    violation_rate: float
    objective_decrease: np.ndarray | None
    distance_ratios: np.ndarray | None

    @property
    def violated_layers(self) -> np.ndarray:
        """1-based layer indices k whose constraint is violated."""
        return np.flatnonzero(self.grad_ratios > 1.0 - self.eps) + 1


def descent_report(
    grad_norms: ArrayLike,
    eps: float,
    *,
    objective_values: ArrayLike | None = None,
    distances: ArrayLike | None = None,
) -> DescentReport:
    r"""Bundle the descent quantities of Hadou et al. (2024) for one set of trajectories.

    .. math::

        r_k = \frac{\mathbb E\|\nabla L(s^{(k)})\|}{\mathbb E\|\nabla L(s^{(k-1)})\|},\quad
        v = \tfrac1K\#\{k: r_k > 1-\epsilon\}.

    Args:
        grad_norms: (N, K+1).
        eps: :math:`\epsilon \in [0, 1)`.
        objective_values: optional (N, K+1).
        distances: optional (N, K+1) distances to a reference solution.
    """
    ratios = descent_ratios(grad_norms)
    K = ratios.shape[0]
    obj = None if objective_values is None else objective_decrease(objective_values)
    dist = None if distances is None else distance_ratios(distances)
    for name, arr in (("objective_values", obj), ("distances", dist)):
        if arr is not None and arr.shape[0] != K:
            raise ValueError(f"{name} has {arr.shape[0] + 1} layers but grad_norms has {K + 1}.")
    return DescentReport(
        eps=float(eps),
        grad_ratios=ratios,
        violation_rate=descent_violation_rate(ratios, eps),
        objective_decrease=obj,
        distance_ratios=dist,
    )
