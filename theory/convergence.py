r"""Convergence rates: a linear-rate fit per trajectory and an envelope over a set of instances.

Chen, Liu, Wang, Yin (2018), "Theoretical Linear Convergence of Unfolded ISTA and Its Practical
Weights and Thresholds", NeurIPS, Thm. 2: LISTA-CP with suitable thresholds satisfies, for every
:math:`s^\star` with :math:`\|s^\star\|_0 \le s` and :math:`\|s^\star\|_\infty \le B`, noise of
level :math:`\sigma`,

.. math::

    \|s^{(k)} - s^\star\|_2 \le s B\, e^{-ck} + C\sigma ,

a *linear* rate (ALISTA, Liu et al., 2019, Thm. 1: the same with analytic weights), whereas
ISTA with a fixed threshold only achieves the sublinear :math:`O(1/k)` decrease of the objective
(Beck & Teboulle, 2009).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from ._arrays import ArrayLike, as_trajectory_table, to_numpy64

__all__ = ["Envelope", "LinearRateFit", "fit_envelope", "fit_linear_rate"]


@dataclass(frozen=True)
class LinearRateFit:
    r"""Least-squares fit of :math:`\log e_k = k\log q + c` over layers ``start <= k < stop``.

    Attributes:
        q: fitted per-layer contraction factor (:math:`q < 1` means convergence).
        c: fitted intercept on the log scale, :math:`e_k \approx e^{c} q^k`.
        r2: coefficient of determination of the fit on the log scale; close to 1 for a linear
            (geometric) rate, clearly lower for sublinear rates such as :math:`1/k`.
        start: first layer used.
        stop: one past the last layer used.
        n_points: number of positive errors that entered the fit (zeros are skipped).
    """

    q: float
    c: float
    r2: float
    start: int
    stop: int
    n_points: int

    def predict(self, k: ArrayLike | int) -> np.ndarray:
        r"""The fitted curve :math:`e^{c} q^k` at layers ``k``."""
        kk = np.asarray(k, dtype=np.float64)
        return np.exp(self.c + kk * math.log(self.q))

    def is_linear(self, min_r2: float = 0.98) -> bool:
        """Whether the fit is good (``r2 >= min_r2``) and contracting (``q < 1``)."""
        return self.r2 >= min_r2 and self.q < 1.0


def fit_linear_rate(
    errors: ArrayLike | Sequence[float], start: int = 0, stop: int | None = None
) -> LinearRateFit:
    r"""Fit a linear (geometric) convergence rate to one error trajectory.

    Ordinary least squares on the log scale over the window :math:`k \in [\text{start},
    \text{stop})`:

    .. math::

        \log e_k = k \log q + c, \qquad
        R^2 = 1 - \frac{\sum_k (\log e_k - k\log q - c)^2}{\sum_k (\log e_k - \overline{\log e})^2}.

    A linear rate (Chen et al., 2018, Thm. 2; Liu et al., 2019) gives :math:`R^2 \approx 1`
    with :math:`q < 1`; a sublinear sequence such as :math:`e_k = 1/k` bends on the log scale
    and gives a visibly lower :math:`R^2` over a long enough window.

    Args:
        errors: :math:`e_0, \dots, e_K`, e.g. :math:`\|s^{(k)} - s^\star\|`; index = layer.
        start: first layer of the window (skip a transient).
        stop: one past the last layer (default: all); negative values count from the end.

    Returns:
        :class:`LinearRateFit`. Exact zeros (converged to machine precision) are skipped; if
        all errors in the window are equal, :math:`R^2 = 1` and :math:`q = 1`.

    Raises:
        ValueError: for negative, NaN or Inf errors, or fewer than 3 positive errors in the window.
    """
    e = to_numpy64(errors, "errors")
    if e.ndim != 1:
        raise ValueError(
            f"errors must be 1-D (one value per layer k = 0..K); got shape {e.shape}. "
            "For several instances fit each row, or use fit_envelope."
        )
    if np.any(e < 0):
        raise ValueError("errors must be >= 0 (they are norms); got a negative entry.")
    K1 = e.shape[0]
    lo, hi, _ = slice(start, stop).indices(K1)
    ks = np.arange(lo, hi)
    vals = e[lo:hi]
    keep = vals > 0
    if keep.sum() < 3:
        raise ValueError(
            f"fit_linear_rate needs at least 3 positive errors in layers [{lo}, {hi}); got "
            f"{int(keep.sum())} (of {K1} layers). Widen the window with start/stop."
        )
    k, y = ks[keep].astype(np.float64), np.log(vals[keep])
    A = np.stack([k, np.ones_like(k)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - (slope * k + intercept)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    ss_res = float(np.sum(resid**2))
    r2 = 1.0 if ss_tot <= 1e-300 else 1.0 - ss_res / ss_tot
    return LinearRateFit(
        q=float(np.exp(slope)),
        c=float(intercept),
        r2=r2,
        start=lo,
        stop=hi,
        n_points=int(keep.sum()),
    )


@dataclass(frozen=True)
class Envelope:
    r"""An envelope :math:`\eta B\, e^{-ck} + C\sigma` above every instance's error curve.

    Attributes:
        eta_B: the transient constant :math:`\eta B` (Chen et al.'s :math:`sB`).
        c: the linear rate exponent (per layer contraction :math:`e^{-c}`).
        C_sigma: the noise floor :math:`C\sigma` (0 in the noiseless fit).
        sigma: the noise level used, or None for the noiseless fit.
        area: :math:`\sum_k` of the envelope over the fitted layers (what was minimised).
    """

    eta_B: float
    c: float
    C_sigma: float
    sigma: float | None
    area: float

    @property
    def C(self) -> float | None:
        r""":math:`C = C\sigma/\sigma` when a positive :math:`\sigma` was given."""
        if self.sigma is None or self.sigma == 0:
            return None
        return self.C_sigma / self.sigma

    @property
    def q(self) -> float:
        r"""Per-layer contraction factor :math:`e^{-c}`."""
        return math.exp(-self.c)

    def bound(self, k: ArrayLike | int) -> np.ndarray:
        r"""The envelope :math:`\eta B e^{-ck} + C\sigma` at layers ``k``."""
        kk = np.asarray(k, dtype=np.float64)
        return self.eta_B * np.exp(-self.c * kk) + self.C_sigma

    def holds(self, errors: ArrayLike, rtol: float = 1e-9) -> bool:
        """Whether every instance's errors (N, K+1) lie below the envelope (up to ``rtol``)."""
        E = as_trajectory_table(errors, "errors", min_layers=1)
        b = self.bound(np.arange(E.shape[1]))
        return bool(np.all(E <= b * (1 + rtol) + 1e-300))


def _best_for_rates(
    M: np.ndarray, cs: np.ndarray, free_floor: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smallest-area envelopes (a, b) for each rate in ``cs``: returns (area, a, b), each (G,)."""
    k = np.arange(M.shape[0], dtype=np.float64)
    u = np.exp(-np.outer(cs, k))  # (G, K+1)
    alpha, beta = u.sum(axis=1), float(M.shape[0])
    pos = M > 0
    # a >= M_k e^{ck} for every k (with b = 0): computed in logs to avoid overflow
    log_a_hi = np.max(np.log(M[pos])[None, :] + np.outer(cs, k[pos]), axis=1)
    feasible = log_a_hi <= 700.0  # larger: an astronomically large transient, never optimal
    a_hi = np.exp(np.minimum(log_a_hi, 700.0))
    if not free_floor:
        area = np.where(feasible, alpha * a_hi, np.inf)
        return area, a_hi, np.zeros_like(a_hi)

    # area(a) = alpha*a + beta*max_k(M_k - a u_k)^+ is convex and piecewise linear in a:
    # bisect on the sign of its slope (vectorised over the rates), then set b exactly from a.
    rows = np.arange(cs.shape[0])

    def slope(a: np.ndarray) -> np.ndarray:
        g = M[None, :] - a[:, None] * u
        j = np.argmax(g, axis=1)
        active = g[rows, j] > 0
        return alpha - np.where(active, beta * u[rows, j], 0.0)

    lo = np.zeros_like(a_hi)
    hi = np.where(slope(lo) >= 0, 0.0, a_hi)
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        up = slope(mid) > 0
        hi = np.where(up, mid, hi)
        lo = np.where(up, lo, mid)
    a = hi
    b = np.maximum(np.max(M[None, :] - a[:, None] * u, axis=1), 0.0)
    area = np.where(feasible, alpha * a + beta * b, np.inf)
    return area, a, b


def fit_envelope(
    errors_per_instance: ArrayLike,
    sigma: float | None = None,
    *,
    c_max: float | None = None,
    n_grid: int = 200,
) -> Envelope:
    r"""Smallest envelope :math:`\eta B e^{-ck} + C\sigma` that holds for every instance.

    Fits the shape of Chen et al. (2018, Thm. 2) / Liu et al. (2019, Thm. 1),

    .. math::

        \|s^{(k)}_j - s^\star_j\| \le \eta B\, e^{-ck} + C\sigma
        \quad \forall j = 1..N,\ k = 0..K .

    With :math:`M_k = \max_j \|s^{(k)}_j - s^\star_j\|`, for a fixed :math:`c` the best
    :math:`(\eta B, C\sigma) \ge 0` solve the two-variable linear program

    .. math::

        \min_{a, b \ge 0} \sum_{k=0}^K (a e^{-ck} + b)
        \quad\text{s.t.}\quad a e^{-ck} + b \ge M_k ,

    solved exactly: :math:`b = \max_k (M_k - a e^{-ck})^+` and the objective is convex and
    piecewise linear in :math:`a`, minimised by bisection on its slope. The rate :math:`c` is
    then chosen to minimise that area (a grid of ``n_grid`` points on :math:`[0, c_{max}]`
    refined by a bounded 1-D search). For exact geometric data :math:`M_k = B q^k + D` this
    recovers :math:`c = -\log q`, :math:`\eta B = B`, :math:`C\sigma = D`.

    Args:
        errors_per_instance: (N, K+1) errors per instance and layer (a 1-D array is one instance).
        sigma: noise level :math:`\sigma`; ``None`` (or 0) fits the noiseless envelope
            :math:`C\sigma = 0`. With :math:`\sigma > 0` the fitted floor gives :math:`C`.
        c_max: upper end of the rate search; default
            :math:`1 + \max_k \log(\max M / M_k)` over positive :math:`M_k`.
        n_grid: grid size of the rate search.

    Returns:
        :class:`Envelope` (it holds for every instance by construction).
    """
    E = as_trajectory_table(errors_per_instance, "errors_per_instance")
    if np.any(E < 0):
        raise ValueError("errors_per_instance must be >= 0 (they are norms).")
    if sigma is not None and not sigma >= 0:
        raise ValueError(f"sigma must be >= 0 or None; got {sigma}.")
    free_floor = sigma is not None and sigma > 0
    M = E.max(axis=0)
    if np.all(M == 0):
        return Envelope(eta_B=0.0, c=0.0, C_sigma=0.0, sigma=sigma, area=0.0)
    pos = M[M > 0]
    if c_max is None:
        c_max = 1.0 + float(np.max(np.log(M.max() / pos)))
    if not c_max > 0:
        raise ValueError(f"c_max must be > 0; got {c_max}.")
    if n_grid < 3:
        raise ValueError(f"n_grid must be >= 3; got {n_grid}.")
    grid = np.linspace(0.0, c_max, n_grid)
    areas = _best_for_rates(M, grid, free_floor)[0]
    i = int(np.argmin(areas))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, n_grid - 1)]
    best_c = float(grid[i])
    if hi > lo:
        res = minimize_scalar(
            lambda c: float(_best_for_rates(M, np.array([c]), free_floor)[0][0]),
            bounds=(lo, hi),
            method="bounded",
            options={"xatol": 1e-12 * max(c_max, 1.0)},
        )
        if res.fun < areas[i]:
            best_c = float(res.x)
    area, a, b = (float(v[0]) for v in _best_for_rates(M, np.array([best_c]), free_floor))
    return Envelope(eta_B=a, c=best_c, C_sigma=b, sigma=sigma, area=area)
