r"""Iterative hard thresholding (IHT) and learned IHT (LIHT) for sparse recovery.

Problem: the :class:`~lightning_unfold.algorithms.sparse.SparseRecovery` family,
:math:`x = Hs + w`, now with the :math:`\ell_0`-penalised least-squares objective

.. math:: \mathcal L(s; x) = \tfrac12\|x - Hs\|_2^2 + \lambda_0\|s\|_0 .

Algorithms (iterates are rows, ``s`` has shape ``(B, n)``):

* :class:`IHT` — :math:`s^{(k)} = \mathcal H_{\theta}\big(s^{(k-1)} + \mu H^\top(x - Hs^{(k-1)})\big)`,
  with the hard threshold :math:`\mathcal H_\theta(v) = v\,\mathbb 1(|v| > \theta)`, the proximal map
  of :math:`\mu\lambda_0\|\cdot\|_0` for :math:`\theta = \sqrt{2\mu\lambda_0}` (Blumensath & Davies
  2008). For :math:`0 < \mu \le 1/\|H\|_2^2` every step minimises a majoriser of
  :math:`\mathcal L`, so the objective never increases; Blumensath & Davies prove convergence of the
  iterates to a local minimiser for :math:`\mu\|H\|_2^2 < 1`.
* :class:`LIHT` — learned IHT (Xin, Wang, Gao & Wipf 2016):
  :math:`s^{(k)} = \mathcal H_{\theta_k}(W_1^k x + W_2^k s^{(k-1)})`, classical init
  :math:`W_1 = \mu H^\top`, :math:`W_2 = I - \mu H^\top H`, :math:`\theta = \sqrt{2\mu\lambda_0}`
  (then identical to IHT).
* :class:`LIHTCP` — LIHT with coupled weights :math:`W_2^k = I - W^k H` (as LISTA-CP), so that
  :math:`s^{(k)} = \mathcal H_{\theta_k}(s^{(k-1)} + W^k(x - Hs^{(k-1)}))`; its effective operator
  :math:`A_k = W^k H` is what the restricted-isometry check
  (:func:`lightning_unfold.checks.restricted_isometry`) measures.

**What the theory says** (Xin et al. 2016, §3–4): IHT recovers every :math:`s`-sparse code when the
restricted isometry constant of the effective operator is small (Blumensath & Davies 2009:
:math:`\delta_{3s} < 1/\sqrt{32}` for :math:`\mu = 1`); a learned layer
:math:`W_1 = \mu(\Psi H)^\top\Psi`, :math:`W_2 = I - \mu(\Psi H)^\top\Psi H` is IHT on the
preconditioned system :math:`(\Psi H, \Psi x)`, and learning can pick :math:`\Psi` so that
:math:`\delta_{3s}[\Psi H] < \delta_{3s}[H]` — for a correlated dictionary by far. So the learned
weights *should* lower a restricted isometry constant; the check measures whether they did.

**Training through a hard threshold.** :math:`\partial\mathcal H_\theta(v)/\partial\theta` is zero
almost everywhere (a Dirac at :math:`|v| = \theta`), so gradient descent cannot move a threshold.
:func:`hard_threshold` therefore uses a straight-through surrogate: the forward value is exactly
:math:`v\,\mathbb 1(|v|>\theta)`, the backward pass differentiates the gate
:math:`\sigma((|v|-\theta)/\tau)`, :math:`\tau = t\cdot\theta` (``temperature`` :math:`t`,
default 0.1). Classical initialisation still reproduces IHT bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from lightning_unfold.algorithms.sparse import SparseRecovery
from lightning_unfold.core.algorithm import (
    Algorithm,
    Constraint,
    ParamSpec,
    ProblemSpec,
    Role,
    SolverTheory,
    require_problem,
)

__all__ = ["IHT", "LIHT", "LIHTCP", "hard_threshold", "l0_objective"]


def hard_threshold(v: Tensor, theta: Tensor | float, temperature: float = 0.1) -> Tensor:
    r"""Hard thresholding :math:`\mathcal H_\theta(v) = v\,\mathbb 1(|v| > \theta)` (the
    :math:`\ell_0` prox), with a straight-through surrogate gradient.

    The forward value is exact. The gate's gradient is that of
    :math:`\sigma((|v| - \theta)/\tau)`, :math:`\tau = \texttt{temperature}\cdot\theta` (floored at
    the dtype's tiny), which gives the threshold a gradient; ``temperature = 0`` gives the exact
    (almost everywhere zero) derivative in :math:`\theta`.
    """
    theta_t = torch.as_tensor(theta, dtype=v.dtype, device=v.device)
    mag = v.abs()
    hard = (mag > theta_t).to(v.dtype)
    if temperature <= 0 or not (v.requires_grad or theta_t.requires_grad):
        return v * hard
    tau = (temperature * theta_t).clamp_min(torch.finfo(v.dtype).tiny)
    soft = torch.sigmoid((mag - theta_t) / tau)
    return v * (hard + (soft - soft.detach()))


def l0_objective(s: Tensor, x: Tensor, H: Tensor, l0_weight: Tensor | float) -> Tensor:
    r"""Per-sample :math:`\tfrac12\|x - Hs\|^2 + \lambda_0\|s\|_0`, shape ``(B,)``."""
    r = x - s @ H.T
    return 0.5 * (r * r).sum(dim=1) + l0_weight * (s != 0).sum(dim=1).to(s.dtype)


class IHT(Algorithm[Tensor]):
    r"""Iterative hard thresholding for :math:`\tfrac12\|x - Hs\|^2 + \lambda_0\|s\|_0`.

    .. math:: s^{(k)} = \mathcal H_{\theta_k}\big(s^{(k-1)} + \mu_k D_k^\top(x - D_k s^{(k-1)})\big),
        \qquad s^{(0)} = 0,

    θo = {``dictionary`` :math:`D = H`}, θh = {``step`` :math:`\mu`, ``threshold``
    :math:`\theta = \sqrt{2\mu\lambda_0}`}. Step-size condition: :math:`0 < \mu \le 1/\|H\|_2^2`
    (monotone objective; the default is :math:`1/\|H\|_2^2`).

    Args:
        step: :math:`\mu` (default :math:`1/\|H\|_2^2`).
        l0_weight: :math:`\lambda_0 > 0` (default :math:`\rho^2/2` with the problem's ``rho``,
            i.e. :math:`\theta = \rho\sqrt{\mu}`).
        temperature: the surrogate-gradient temperature of :func:`hard_threshold`.
    """

    name: ClassVar[str] = "iht"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="the ℓ0-penalised least squares ½‖x − Hs‖² + λ₀‖s‖₀",
        fixed_point="an L-stationary point (Beck & Eldar 2013, Lemma 2.2)",
        convex=False,
        averaged=None,
        descent="IHT with μ ≤ 1/‖H‖² never raises the ℓ0-penalised objective (Blumensath & "
        "Davies 2008, Thm. 1)",
        linear_rate="IHT converges linearly to the sparse code up to the noise when H has "
        "restricted isometry δ_3s < 1/√32 (Blumensath & Davies 2009, Thm. 1)",
    )
    objective_variants: ClassVar[tuple[str, ...]] = ("liht", "liht_cp", "direct")

    def __init__(
        self,
        step: float | None = None,
        l0_weight: float | None = None,
        temperature: float = 0.1,
    ) -> None:
        if l0_weight is not None and not (l0_weight > 0 and math.isfinite(l0_weight)):
            raise ValueError(f"l0_weight (lambda_0) must be finite and > 0, got {l0_weight}.")
        if not (temperature >= 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be finite and >= 0, got {temperature}.")
        self.step_size, self.l0_weight, self.temperature = step, l0_weight, float(temperature)

    def _mu(self, problem: SparseRecovery) -> float:
        lip = problem.lipschitz
        mu = 1.0 / lip if self.step_size is None else float(self.step_size)
        if not (0.0 < mu <= (1.0 + 1e-12) / lip) or not math.isfinite(mu):
            raise ValueError(
                f"{type(self).__name__} step size mu={mu:g} is outside (0, 1/||H||^2] = "
                f"(0, {1.0 / lip:.6g}]: only there does every hard-thresholding step decrease "
                "the l0 objective (Blumensath & Davies 2008). Leave step=None for 1/||H||^2."
            )
        return mu

    def lam0(self, problem: ProblemSpec) -> float:
        r"""The :math:`\ell_0` weight :math:`\lambda_0` (default :math:`\rho^2/2`)."""
        prob = require_problem(problem, SparseRecovery, type(self).__name__)
        return prob.rho**2 / 2.0 if self.l0_weight is None else float(self.l0_weight)

    def _theta(self, problem: SparseRecovery, mu: float) -> float:
        return math.sqrt(2.0 * mu * self.lam0(problem))

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("dictionary", Role.OBJECTIVE, doc="dictionary D (classical: H)"),
            ParamSpec("step", Role.HYPER, Constraint.POSITIVE, "gradient step mu"),
            ParamSpec("threshold", Role.HYPER, Constraint.NONNEGATIVE, "hard threshold theta"),
            ParamSpec("l0_weight", Role.FIXED, Constraint.POSITIVE, "l0 weight lambda_0"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = require_problem(problem, SparseRecovery, type(self).__name__)
        mu = self._mu(prob)
        f64 = torch.float64
        return {
            "dictionary": prob.H.clone(),
            "step": torch.tensor(mu, dtype=f64),
            "threshold": torch.tensor(self._theta(prob, mu), dtype=f64),
            "l0_weight": torch.tensor(self.lam0(prob), dtype=f64),
        }

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        return x.new_zeros(x.shape[0], p["H"].shape[1])

    def step(self, s: Tensor, x: Tensor, p: Mapping[str, Tensor], k: int) -> Tensor:
        D = p["dictionary"]
        v = s + p["step"] * ((x - s @ D.T) @ D)
        return hard_threshold(v, p["threshold"], self.temperature)

    def objective(self, s: Tensor, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        """The :math:`\\ell_0` objective with this algorithm's :math:`\\lambda_0`.

        It is piecewise constant in the support, so it is no unsupervised *training* loss (its
        gradient ignores :math:`\\|s\\|_0`); use supervised training.
        """
        if "l0_weight" in c:
            return l0_objective(s, x, c["H"], c["l0_weight"])
        lam0 = self.l0_weight if self.l0_weight is not None else float(c["rho"]) ** 2 / 2.0
        return l0_objective(s, x, c["H"], lam0)

    def features(self, s: Tensor, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        """:math:`[s, H^\\top x]`: the iterate and the back-projected observation."""
        return torch.cat([s, x @ p["H"]], dim=1)

    def objective_form(self, variant: str | None) -> Algorithm[Any]:
        forms: dict[str, Algorithm[Any]] = {
            "liht": LIHT(self.step_size, self.l0_weight, self.temperature),
            "liht_cp": LIHTCP(self.step_size, self.l0_weight, self.temperature),
            "direct": self,
        }
        key = "liht" if variant is None else variant
        if key not in forms:
            raise ValueError(
                f"Unknown objective-paradigm variant {variant!r} for IHT; valid: {list(forms)}."
            )
        return forms[key]


class LIHT(IHT):
    r"""Learned IHT (Xin et al. 2016): θo = {``W1`` (n×m), ``W2`` (n×n)}, θh = {``threshold``}.

    .. math:: s^{(k)} = \mathcal H_{\theta_k}(W_1^k x + W_2^k s^{(k-1)}),

    classical init :math:`W_1 = \mu H^\top`, :math:`W_2 = I - \mu H^\top H`,
    :math:`\theta = \sqrt{2\mu\lambda_0}` (IHT, valid for :math:`0 < \mu \le 1/\|H\|_2^2`).
    """

    name: ClassVar[str] = "liht"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="the ℓ0-penalised least squares ½‖x − Hs‖² + λ₀‖s‖₀",
        fixed_point="an L-stationary point of the classical IHT (Beck & Eldar 2013, Lemma 2.2)",
        convex=False,
        linear_rate="learned IHT converges linearly where its layers' operators W·H have a "
        "restricted isometry constant below IHT's (Xin et al. 2016, Thm. 1)",
    )
    objective_variants: ClassVar[tuple[str, ...]] = ("direct",)

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("W1", Role.OBJECTIVE, doc="input matrix W1 (n×m), classical mu H^T"),
            ParamSpec("W2", Role.OBJECTIVE, doc="recurrent W2 (n×n), classical I - mu H^T H"),
            ParamSpec("threshold", Role.HYPER, Constraint.NONNEGATIVE, "hard threshold theta"),
            ParamSpec("l0_weight", Role.FIXED, Constraint.POSITIVE, "l0 weight lambda_0"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = require_problem(problem, SparseRecovery, type(self).__name__)
        full = super().classical_params(prob)
        mu, H = float(full["step"]), prob.H
        return {
            "W1": mu * H.T.clone(),
            "W2": torch.eye(prob.n, dtype=H.dtype) - mu * H.T @ H,
            "threshold": full["threshold"],
            "l0_weight": full["l0_weight"],
        }

    def step(self, s: Tensor, x: Tensor, p: Mapping[str, Tensor], k: int) -> Tensor:
        return hard_threshold(x @ p["W1"].T + s @ p["W2"].T, p["threshold"], self.temperature)

    def objective_form(self, variant: str | None) -> Algorithm[Any]:
        return Algorithm.objective_form(self, variant)


class LIHTCP(LIHT):
    r"""LIHT with coupled weights: :math:`W_2^k = I - W^k H`,

    .. math:: s^{(k)} = \mathcal H_{\theta_k}\big(s^{(k-1)} + W^k(x - Hs^{(k-1)})\big),

    θo = {``W1`` = :math:`W` (n×m)}, classical :math:`W = \mu H^\top`. In the noiseless case the
    error before thresholding is :math:`(I - W^kH)(s^{(k-1)} - s^\star)`, so the layer contracts on
    :math:`s`-sparse errors iff the restricted isometry constant of :math:`A_k = W^kH` is below 1.
    """

    name: ClassVar[str] = "liht_cp"

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("W1", Role.OBJECTIVE, doc="coupled weight W (n×m); W2 = I - W H"),
            ParamSpec("threshold", Role.HYPER, Constraint.NONNEGATIVE, "hard threshold theta"),
            ParamSpec("l0_weight", Role.FIXED, Constraint.POSITIVE, "l0 weight lambda_0"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        full = super().classical_params(problem)
        return {k: full[k] for k in ("W1", "threshold", "l0_weight")}

    def step(self, s: Tensor, x: Tensor, p: Mapping[str, Tensor], k: int) -> Tensor:
        v = s + (x - s @ p["H"].T) @ p["W1"].T
        return hard_threshold(v, p["threshold"], self.temperature)
