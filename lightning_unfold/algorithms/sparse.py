r"""Sparse recovery (the LASSO) and the ISTA family.

Problem: recover a sparse code :math:`s \in \mathbb R^n` from :math:`x = Hs + w`, with the LASSO

.. math:: \mathcal L(s; x) = \tfrac12 \|x - Hs\|_2^2 + \rho \|s\|_1 .

Algorithms (iterates are rows, ``s`` has shape ``(B, n)``):

* :class:`ISTA` — :math:`s^{(k)} = \operatorname{soft}_{\beta}(s^{(k-1)} + \mu H^\top(x - Hs^{(k-1)}))`,
  :math:`\beta = \mu\rho`, converging for :math:`0 < \mu < 2/\|H\|_2^2` (monotone objective decrease
  for :math:`\mu \le 1/\|H\|_2^2`; Daubechies, Defrise & De Mol 2004; Beck & Teboulle 2009).
* :class:`FISTA` — ISTA with Nesterov momentum, iterate :math:`(s, y, t)` (Beck & Teboulle 2009).
* :class:`LISTA` — :math:`s^{(k)} = \operatorname{soft}_{\beta_k}(W_1^k x + W_2^k s^{(k-1)})`,
  classical init :math:`W_1 = \mu H^\top`, :math:`W_2 = I - \mu H^\top H`, :math:`\beta = \mu\rho`
  (Gregor & LeCun 2010).
* :class:`LISTACP` — coupled weights :math:`W_2^k = I - W_1^k H` (Chen et al. 2018);
  :class:`LISTACPSS` adds support selection: the per-sample top :math:`p_k\%` entries by magnitude
  bypass shrinkage, :math:`p_k = \min(1.2k, 13)`.
* :class:`ALISTA` — analytic :math:`W = \arg\min \|W^\top H\|_F` s.t. :math:`\operatorname{diag}(W^\top H)
  = 1`; only a step :math:`\gamma_k` and threshold :math:`\beta_k` are learned (Liu et al. 2019):
  :math:`s^{(k)} = \eta^{ss}_{\beta_k}(s^{(k-1)} - \gamma_k W^\top(Hs^{(k-1)} - x))`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from lightning_unfold.core.algorithm import (
    Algorithm,
    Certificate,
    Constraint,
    ParamSpec,
    ProblemSpec,
    Role,
    SolverTheory,
    as_operator,
    require_problem,
    seeded_rng,
)
from lightning_unfold.core.iterate import require_finite

__all__ = [
    "ALISTA",
    "FISTA",
    "ISTA",
    "LISTA",
    "LISTACP",
    "LISTACPSS",
    "FISTAState",
    "SparseRecovery",
    "lasso_objective",
    "soft_threshold",
    "soft_threshold_support_selection",
    "support_selection_percent",
]


def soft_threshold(v: Tensor, theta: Tensor | float) -> Tensor:
    r"""Soft-thresholding :math:`\operatorname{soft}_\theta(v) = \operatorname{sign}(v)\max(|v|-\theta, 0)`,
    the proximal map of :math:`\theta\|\cdot\|_1`."""
    return torch.sign(v) * torch.clamp(v.abs() - theta, min=0.0)


def support_selection_percent(k: int, *, rate: float = 1.2, cap: float = 13.0) -> float:
    """The support-selection percentage :math:`p_k = \\min(\\text{rate}\\cdot k, \\text{cap})` of layer k."""
    return min(rate * k, cap)


def soft_threshold_support_selection(v: Tensor, theta: Tensor | float, percent: float) -> Tensor:
    r"""Soft-thresholding with support selection (Chen et al. 2018, LISTA-CPSS).

    In each sample (row), the entries among the top ``percent`` % by magnitude that also exceed
    :math:`\theta` are trusted as support and pass unchanged; all others are soft-thresholded.
    """
    n = v.shape[-1]
    count = int(percent / 100.0 * n)
    if count <= 0:
        return soft_threshold(v, theta)
    mag = v.abs()
    kth = torch.topk(mag, count, dim=-1).values[..., -1:]
    bypass = (mag >= kth) & (mag > theta)
    return torch.where(bypass, v, soft_threshold(v, theta))


def lasso_objective(s: Tensor, x: Tensor, H: Tensor, rho: Tensor | float) -> Tensor:
    r"""Per-sample LASSO objective :math:`\tfrac12\|x - Hs\|^2 + \rho\|s\|_1`, shape ``(B,)``."""
    r = x - s @ H.T
    return 0.5 * (r * r).sum(dim=1) + rho * s.abs().sum(dim=1)


class SparseRecovery(ProblemSpec):
    r"""Seeded sparse-recovery problems :math:`x = Hs + w`.

    The dictionary :math:`H \in \mathbb R^{m\times n}` has i.i.d. :math:`\mathcal N(0, 1/m)`
    entries, then unit-norm columns; codes are Bernoulli(``sparsity``)–Gaussian (each entry is
    non-zero with probability ``sparsity``, non-zeros :math:`\mathcal N(0,1)`); noise is white
    Gaussian set per sample by ``snr_db`` (:math:`\|Hs\|^2 / (m\sigma^2) = 10^{\text{SNR}/10}`),
    or absent when ``snr_db`` is ``None``. ``rho`` is the LASSO weight used by the classical
    solvers and by the unsupervised loss. Everything is reproducible from ``seed``.
    """

    default_algorithm = "ista"

    def __init__(
        self,
        m: int = 250,
        n: int = 500,
        sparsity: float = 0.1,
        snr_db: float | None = None,
        rho: float = 0.1,
        seed: int = 0,
        dictionary: Tensor | np.ndarray | list[list[float]] | None = None,
    ) -> None:
        if m < 1 or n < 1:
            raise ValueError(f"Dictionary sizes must be positive, got m={m}, n={n}.")
        if not 0.0 <= sparsity <= 1.0:
            raise ValueError(f"sparsity is a probability in [0, 1], got {sparsity}.")
        if rho < 0 or not math.isfinite(rho):
            raise ValueError(f"The LASSO weight rho must be finite and >= 0, got {rho}.")
        self.m, self.n, self.sparsity, self.snr_db = m, n, sparsity, snr_db
        self.rho, self.seed = float(rho), seed
        if dictionary is not None:
            self.H = as_operator(dictionary, "The dictionary H", shape=(m, n))
        else:
            rng = seeded_rng(seed)
            H = rng.normal(0.0, 1.0 / math.sqrt(m), size=(m, n))
            H /= np.linalg.norm(H, axis=0, keepdims=True)
            self.H = torch.from_numpy(H)

    @classmethod
    def from_dictionary(
        cls,
        H: Tensor | np.ndarray,
        *,
        sparsity: float = 0.1,
        snr_db: float | None = None,
        rho: float = 0.1,
        seed: int = 0,
    ) -> SparseRecovery:
        """A problem with a user-given dictionary ``H`` of shape ``(m, n)`` (the sizes are read
        from it; it survives :meth:`to_config` and checkpoints as the ``dictionary`` argument)."""
        shape = tuple(H.shape) if isinstance(H, Tensor) else np.shape(H)
        if len(shape) != 2:
            raise ValueError(f"The dictionary H must be a matrix (m, n), got shape {shape}.")
        arr = as_operator(H, "The dictionary H", ndim=2)
        return cls(
            m=arr.shape[0],
            n=arr.shape[1],
            sparsity=sparsity,
            snr_db=snr_db,
            rho=rho,
            seed=seed,
            dictionary=arr,
        )

    @property
    def lipschitz(self) -> float:
        r""":math:`\|H\|_2^2`, the Lipschitz constant of :math:`\nabla \tfrac12\|x-Hs\|^2`."""
        return float(torch.linalg.matrix_norm(self.H, ord=2) ** 2)

    def constants(self) -> dict[str, Tensor]:
        return {"H": self.H, "rho": torch.tensor(self.rho, dtype=torch.float64)}

    def sample(
        self, n: int, *, seed: int | Sequence[int], dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        rng = seeded_rng(self.seed, seed)
        support = rng.random((n, self.n)) < self.sparsity
        s = np.where(support, rng.normal(size=(n, self.n)), 0.0)
        clean = s @ self.H.numpy().T
        if self.snr_db is not None:
            power = (clean**2).sum(axis=1, keepdims=True) / self.m
            sigma = np.sqrt(power / 10.0 ** (self.snr_db / 10.0))
            clean = clean + sigma * rng.normal(size=clean.shape)
        return torch.from_numpy(clean).to(dtype), torch.from_numpy(s).to(dtype)

    def noise_sigma(self, s: Tensor) -> Tensor:
        """Per-sample noise standard deviation implied by ``snr_db`` (zeros when noiseless)."""
        if self.snr_db is None:
            return torch.zeros(s.shape[0], dtype=s.dtype)
        power = (s.double() @ self.H.T).pow(2).sum(dim=1) / self.m
        return torch.sqrt(power / 10.0 ** (self.snr_db / 10.0)).to(s.dtype)

    def validate_observation(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (B, {self.m}), got {type(x)}.")
        if x.ndim != 2 or x.shape[1] != self.m:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but the dictionary H is {self.m}×{self.n}: "
                f"observations must be a batch of shape (B, {self.m}) (add a batch dimension "
                "with x.unsqueeze(0) for a single observation)."
            )
        require_finite(x, "The observation x")


def _check_step(step: float, lipschitz: float, name: str) -> None:
    bound = 2.0 / lipschitz
    if not (0.0 < step < bound) or not math.isfinite(step):
        raise ValueError(
            f"{name} step size mu={step:g} is outside (0, 2/||H||^2) = (0, {bound:.6g}); the "
            f"iteration diverges there. Use mu <= 1/||H||^2 = {1.0 / lipschitz:.6g} for a "
            "monotone decrease of the LASSO objective (or leave step=None for that default)."
        )


class ISTA(Algorithm[Tensor]):
    r"""Iterative soft-thresholding for the LASSO.

    .. math:: s^{(k)} = \operatorname{soft}_{\beta_k}\big(s^{(k-1)} + \mu_k D_k^\top(x - D_k s^{(k-1)})\big)

    with θo = {``dictionary`` :math:`D = H`} and θh = {``step`` :math:`\mu`, ``threshold``
    :math:`\beta = \mu\rho`}. Converges for :math:`0 < \mu < 2/\|H\|_2^2`; the default
    :math:`\mu = 1/\|H\|_2^2` gives monotone decrease. :math:`s^{(0)} = 0`.
    """

    name: ClassVar[str] = "ista"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="the LASSO ½‖x − Hs‖² + ρ‖s‖₁",
        fixed_point="the LASSO solution",
        convex=True,
        averaged="ISTA with 0 < μ < 2/‖H‖² is an averaged operator whose fixed points are the "
        "LASSO solutions (Combettes & Wajs 2005, Prop. 3.1)",
        descent="ISTA with μ ≤ 1/‖H‖² never raises the LASSO objective (Beck & Teboulle 2009, "
        "Lemma 2.3)",
        linear_rate="ISTA converges linearly once it has found the support, under strict "
        "complementarity (Hale, Yin & Zhang 2008, Thm. 4.10)",
    )

    def certificate(self, s: Tensor, x: Tensor, p: Mapping[str, Tensor]) -> Certificate:
        r"""The LASSO KKT residual relative to :math:`\rho` (Fermat's rule
        :math:`H^\top(x - Hs) \in \rho\,\partial\|s\|_1`):

        .. math:: r(s) = \tfrac1\rho\max\big(\max_{s_i\ne0}|g_i - \rho\,\mathrm{sign}(s_i)|,\;
            \max_{s_i=0}(|g_i| - \rho)_+\big),\qquad g = H^\top(x - Hs),

        0 exactly at the LASSO solution (whatever the step size or thresholds of the model)."""
        H, rho = p["H"], p["rho"]
        g = (x - s @ H.T) @ H
        on = s != 0
        viol = torch.where(on, (g - rho * torch.sign(s)).abs(), (g.abs() - rho).clamp_min(0.0))
        return Certificate("LASSO KKT residual relative to ρ", viol.amax(dim=1) / rho)

    objective_variants: ClassVar[tuple[str, ...]] = (
        "lista",
        "lista_cp",
        "lista_cpss",
        "alista",
        "direct",
    )

    def __init__(self, step: float | None = None) -> None:
        self.step_size = step

    def _mu(self, problem: SparseRecovery) -> float:
        mu = 1.0 / problem.lipschitz if self.step_size is None else float(self.step_size)
        _check_step(mu, problem.lipschitz, type(self).__name__)
        return mu

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("dictionary", Role.OBJECTIVE, doc="dictionary D (classical: H)"),
            ParamSpec("step", Role.HYPER, Constraint.POSITIVE, "gradient step mu"),
            ParamSpec("threshold", Role.HYPER, Constraint.NONNEGATIVE, "threshold beta"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = require_problem(problem, SparseRecovery, type(self).__name__)
        mu = self._mu(prob)
        return {
            "dictionary": prob.H.clone(),
            "step": torch.tensor(mu, dtype=torch.float64),
            "threshold": torch.tensor(mu * prob.rho, dtype=torch.float64),
        }

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        return x.new_zeros(x.shape[0], p["H"].shape[1])

    def step(self, s: Tensor, x: Tensor, p: Mapping[str, Tensor], k: int) -> Tensor:
        D = p["dictionary"]
        return soft_threshold(s + p["step"] * ((x - s @ D.T) @ D), p["threshold"])

    def objective(self, s: Tensor, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        return lasso_objective(s, x, c["H"], c["rho"])

    def features(self, s: Tensor, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        """:math:`[s, H^\\top x]`: the iterate and the back-projected observation."""
        return torch.cat([s, x @ p["H"]], dim=1)

    def classical_operator(self) -> Algorithm[Any]:
        """ISTA with this algorithm's step: the averaged operator of every ISTA-family form."""
        return ISTA(getattr(self, "step_size", None))

    def objective_form(self, variant: str | None) -> Algorithm[Any]:
        forms: dict[str, Algorithm[Any]] = {
            "lista": LISTA(self.step_size),
            "lista_cp": LISTACP(self.step_size),
            "lista_cpss": LISTACPSS(self.step_size),
            "alista": ALISTA(),
            "direct": self,
        }
        key = "lista" if variant is None else variant
        if key not in forms:
            raise ValueError(
                f"Unknown objective-paradigm variant {variant!r} for ISTA; valid: {list(forms)}."
            )
        return forms[key]


class LISTA(ISTA):
    r"""Learned ISTA (Gregor & LeCun 2010): θo = {``W1`` (n×m), ``W2`` (n×n)}, θh = {``threshold``}.

    .. math:: s^{(k)} = \operatorname{soft}_{\beta_k}(W_1^k x + W_2^k s^{(k-1)}),

    classical init :math:`W_1 = \mu H^\top`, :math:`W_2 = I - \mu H^\top H`, :math:`\beta = \mu\rho`
    (then identical to ISTA with step μ, valid for :math:`0<\mu<2/\|H\|_2^2`).
    """

    name: ClassVar[str] = "lista"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="sparse recovery (LASSO ½‖x − Hs‖² + ρ‖s‖₁ for the classical iteration)",
        fixed_point="the LASSO solution",
        convex=True,
        averaged=None,
        descent=None,
        linear_rate=None,
    )
    objective_variants: ClassVar[tuple[str, ...]] = ("direct",)

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("W1", Role.OBJECTIVE, doc="input matrix W1 (n×m), classical mu H^T"),
            ParamSpec(
                "W2", Role.OBJECTIVE, doc="recurrent matrix W2 (n×n), classical I - mu H^T H"
            ),
            ParamSpec("threshold", Role.HYPER, Constraint.NONNEGATIVE, "threshold beta"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = require_problem(problem, SparseRecovery, type(self).__name__)
        mu = self._mu(prob)
        H = prob.H
        return {
            "W1": mu * H.T.clone(),
            "W2": torch.eye(prob.n, dtype=H.dtype) - mu * H.T @ H,
            "threshold": torch.tensor(mu * prob.rho, dtype=torch.float64),
        }

    def step(self, s: Tensor, x: Tensor, p: Mapping[str, Tensor], k: int) -> Tensor:
        return soft_threshold(x @ p["W1"].T + s @ p["W2"].T, p["threshold"])

    def objective_form(self, variant: str | None) -> Algorithm[Any]:
        return Algorithm.objective_form(self, variant)


class LISTACP(LISTA):
    r"""LISTA with coupled weights (Chen et al. 2018): :math:`W_2^k = I - W_1^k H`, so

    .. math:: s^{(k)} = \operatorname{soft}_{\beta_k}\big(s^{(k-1)} + W^k (x - H s^{(k-1)})\big),

    θo = {``W1`` (n×m)}, classical :math:`W_1 = \mu H^\top`. With :math:`\beta_k \to 0` and bounded
    coherence this converges linearly (Chen et al. 2018, Thm. 2).
    """

    name: ClassVar[str] = "lista_cp"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="sparse recovery (LASSO ½‖x − Hs‖² + ρ‖s‖₁ for the classical iteration)",
        fixed_point="the true sparse code (thresholds → 0)",
        convex=True,
        linear_rate="LISTA-CP with coupled weights and thresholds as in the theorem converges "
        "linearly, ‖s^(k) − s*‖ ≤ ηB·e^(−ck) + Cσ (Chen et al. 2018, Thm. 2)",
    )
    support_selection: ClassVar[bool] = False

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("W1", Role.OBJECTIVE, doc="coupled weight W (n×m); W2 = I - W H"),
            ParamSpec("threshold", Role.HYPER, Constraint.NONNEGATIVE, "threshold beta"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        full = super().classical_params(problem)
        return {"W1": full["W1"], "threshold": full["threshold"]}

    def step(self, s: Tensor, x: Tensor, p: Mapping[str, Tensor], k: int) -> Tensor:
        v = s + (x - s @ p["H"].T) @ p["W1"].T
        if self.support_selection:
            return soft_threshold_support_selection(v, p["threshold"], support_selection_percent(k))
        return soft_threshold(v, p["threshold"])


class LISTACPSS(LISTACP):
    """LISTA-CP with support selection, :math:`p_k = \\min(1.2k, 13)\\%` (Chen et al. 2018)."""

    name: ClassVar[str] = "lista_cpss"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="sparse recovery (LASSO ½‖x − Hs‖² + ρ‖s‖₁ for the classical iteration)",
        fixed_point="the true sparse code (thresholds → 0)",
        convex=True,
        linear_rate="LISTA-CPSS converges linearly with a better constant than LISTA-CP "
        "(Chen et al. 2018, Thm. 3)",
    )
    support_selection: ClassVar[bool] = True


class ALISTA(LISTACP):
    r"""Analytic LISTA (Liu, Chen, Wang & Yin 2019).

    .. math:: s^{(k)} = \eta^{ss}_{\beta_k}\big(s^{(k-1)} - \gamma_k W^\top(H s^{(k-1)} - x)\big)

    with the analytic weight :math:`W = \arg\min_W \|W^\top H\|_F` s.t.
    :math:`\operatorname{diag}(W^\top H) = 1` (:func:`lightning_unfold.theory.alista_weight`), fixed;
    only :math:`\gamma_k > 0` and :math:`\beta_k \ge 0` are learned (2 parameters per layer).
    Support selection :math:`p_k = \min(1.2k, 13)\%` as in the paper. Classical init:
    :math:`\gamma = 1/\|W^\top H\|_2`, :math:`\beta = \gamma\rho`.
    """

    name: ClassVar[str] = "alista"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="sparse recovery (LASSO ½‖x − Hs‖² + ρ‖s‖₁ for the classical iteration)",
        fixed_point="the true sparse code (thresholds → 0)",
        convex=True,
        linear_rate="ALISTA with its analytic weight converges linearly (Liu et al. 2019, Thm. 1)",
    )

    def __init__(self, support_selection: bool = True) -> None:
        super().__init__(None)
        self._ss = support_selection

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("W", Role.FIXED, doc="analytic weight (m×n), diag(W^T H) = 1"),
            ParamSpec("gamma", Role.HYPER, Constraint.POSITIVE, "step gamma"),
            ParamSpec("threshold", Role.HYPER, Constraint.NONNEGATIVE, "threshold beta"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        from lightning_unfold.theory import alista_weight

        prob = require_problem(problem, SparseRecovery, type(self).__name__)
        W = alista_weight(prob.H)
        gamma = 1.0 / float(torch.linalg.matrix_norm(W.T @ prob.H, ord=2))
        return {
            "W": W,
            "gamma": torch.tensor(gamma, dtype=torch.float64),
            "threshold": torch.tensor(gamma * prob.rho, dtype=torch.float64),
        }

    def step(self, s: Tensor, x: Tensor, p: Mapping[str, Tensor], k: int) -> Tensor:
        v = s + p["gamma"] * ((x - s @ p["H"].T) @ p["W"])
        if self._ss:
            return soft_threshold_support_selection(v, p["threshold"], support_selection_percent(k))
        return soft_threshold(v, p["threshold"])


@dataclass(frozen=True)
class FISTAState:
    """FISTA's iterate: the estimate ``s``, the extrapolated point ``y`` and momentum ``t``."""

    s: Tensor
    y: Tensor
    t: Tensor


class FISTA(Algorithm[FISTAState]):
    r"""FISTA (Beck & Teboulle 2009), a multi-block iterate :math:`(s, y, t)`:

    .. math::
        s^{(k)} &= \operatorname{soft}_{\beta}\big(y^{(k-1)} + \mu H^\top(x - Hy^{(k-1)})\big),\\
        t^{(k)} &= \tfrac12\big(1 + \sqrt{1 + 4 (t^{(k-1)})^2}\big),\\
        y^{(k)} &= s^{(k)} + \tfrac{t^{(k-1)} - 1}{t^{(k)}}(s^{(k)} - s^{(k-1)}),

    :math:`\beta = \mu\rho`, valid for :math:`0 < \mu \le 1/\|H\|_2^2` (objective gap
    :math:`O(1/k^2)`), :math:`s^{(0)} = y^{(0)} = 0`, :math:`t^{(0)} = 1`.
    """

    name: ClassVar[str] = "fista"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="the LASSO ½‖x − Hs‖² + ρ‖s‖₁",
        fixed_point="the LASSO solution",
        convex=True,
        descent=None,
        linear_rate=None,
    )

    def __init__(self, step: float | None = None) -> None:
        self.step_size = step

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("dictionary", Role.OBJECTIVE, doc="dictionary D (classical: H)"),
            ParamSpec("step", Role.HYPER, Constraint.POSITIVE, "gradient step mu"),
            ParamSpec("threshold", Role.HYPER, Constraint.NONNEGATIVE, "threshold beta"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = require_problem(problem, SparseRecovery, type(self).__name__)
        mu = 1.0 / prob.lipschitz if self.step_size is None else float(self.step_size)
        if not 0.0 < mu <= 1.0 / prob.lipschitz * (1 + 1e-12):
            raise ValueError(
                f"FISTA step size mu={mu:g} must lie in (0, 1/||H||^2] = "
                f"(0, {1.0 / prob.lipschitz:.6g}]; leave step=None for the largest valid one."
            )
        return {
            "dictionary": prob.H.clone(),
            "step": torch.tensor(mu, dtype=torch.float64),
            "threshold": torch.tensor(mu * prob.rho, dtype=torch.float64),
        }

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> FISTAState:
        z = x.new_zeros(x.shape[0], p["H"].shape[1])
        return FISTAState(s=z, y=z, t=x.new_ones(x.shape[0]))

    def step(self, s: FISTAState, x: Tensor, p: Mapping[str, Tensor], k: int) -> FISTAState:
        D = p["dictionary"]
        s_new = soft_threshold(s.y + p["step"] * ((x - s.y @ D.T) @ D), p["threshold"])
        t_new = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * s.t * s.t))
        y_new = s_new + ((s.t - 1.0) / t_new).unsqueeze(1) * (s_new - s.s)
        return FISTAState(s=s_new, y=y_new, t=t_new)

    def estimate(self, s: FISTAState) -> Tensor:
        return s.s

    def objective(self, s: FISTAState, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        return lasso_objective(s.s, x, c["H"], c["rho"])

    def features(self, s: FISTAState, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([s.s, s.y, x @ p["H"]], dim=1)
