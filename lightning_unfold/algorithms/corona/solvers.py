"""The classical solvers ISTA-RPCA and FISTA-RPCA, their iterates and step-size checks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from lightning_unfold.algorithms.corona.operators import (
    PENALTIES,
    _grid,
    _prox_sparse,
    _rms,
    blur,
    blur_adjoint,
    low_rank_sparse_objective,
    nuclear_subgradient_distance,
    singular_value_threshold,
    sparse_subgradient_distance,
)
from lightning_unfold.algorithms.corona.problem import (
    UltrasoundClutter,
)
from lightning_unfold.core.algorithm import (
    Algorithm,
    Certificate,
    Constraint,
    ParamSpec,
    ProblemSpec,
    Role,
    SolverTheory,
    require_problem,
)


# -- the iterates ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LowRankSparseState:
    """The iterate of ISTA-RPCA and CORONA: tissue ``L`` and blood ``S``, both ``(B, P, T)``.

    The estimate compared with the target is ``(L, S)`` stacked ``(B, 2, P, T)``."""

    L: Tensor
    S: Tensor


@dataclass(frozen=True)
class FISTARPCAState:
    """FISTA-RPCA's iterate: ``(L, S)``, the extrapolated points ``(YL, YS)`` and momentum ``t``."""

    L: Tensor
    S: Tensor
    YL: Tensor
    YS: Tensor
    t: Tensor


def _check_step(step: float | None, penalty: str, who: str) -> None:
    if step is not None and not (math.isfinite(step) and step > 0):
        raise ValueError(
            f"{who}: the step eta must be finite and > 0 (or None for 1/L_f), got {step}."
        )
    if penalty not in PENALTIES:
        raise ValueError(f"{who}: unknown penalty {penalty!r}; valid: {list(PENALTIES)}.")


def _classical_step(prob: UltrasoundClutter, step: float | None, who: str) -> float:
    bound = 1.0 / prob.lipschitz
    eta = bound if step is None else float(step)
    if not eta <= bound * (1 + 1e-12):
        raise ValueError(
            f"{who}: step eta={eta:g} exceeds 1/L_f = {bound:.6g} (L_f = ||[H1 H2]||^2 = "
            f"{prob.lipschitz:.6g}); proximal gradient needs 0 < eta <= 1/L_f. Leave step=None "
            "for the largest valid step."
        )
    return eta


def _check_kernels(kernel_size: int, time_kernel: int) -> None:
    for name, v in (("kernel_size", kernel_size), ("time_kernel", time_kernel)):
        if not (isinstance(v, int) and v >= 1 and v % 2 == 1):
            raise ValueError(f"{name} must be an odd integer >= 1 (a centred kernel), got {v!r}.")


class _ClutterSolver(Algorithm[LowRankSparseState]):
    """The settings ISTA-RPCA and CORONA share (their Args), validated once."""

    def __init__(
        self,
        step: float | None = None,
        penalty: str = "l12",
        kernel_size: int = 3,
        time_kernel: int = 3,
    ) -> None:
        _check_step(step, penalty, type(self).__name__)
        _check_kernels(kernel_size, time_kernel)
        self.step_size, self.penalty = step, penalty
        self.kernel_size, self.time_kernel = kernel_size, time_kernel


class ISTARPCA(_ClutterSolver):
    r"""ISTA for RPCA — proximal gradient with SVT and (group) soft thresholding
    (:mod:`lightning_unfold.algorithms.corona` (the package docstring)).

    Args:
        step: classical :math:`\eta \in (0, 1/L_f]` (``None``: :math:`1/L_f`).
        penalty: ``"l12"`` (CORONA's :math:`\|S\|_{1,2}`, rows = pixels) or ``"l1"``.
        kernel_size, time_kernel: spatial and temporal kernel sizes of the ``corona`` variant.
    """

    name: ClassVar[str] = "ista_rpca"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="low-rank plus sparse separation ½‖D − H₁L − H₂S‖² + λ‖L‖* + μ‖S‖₁,₂",
        fixed_point="the minimiser",
        convex=True,
        averaged="proximal gradient with step < 2/L is an averaged operator whose fixed points "
        "are the minimisers (Combettes & Wajs 2005, Prop. 3.1)",
        descent="proximal gradient with step ≤ 1/L never raises the objective (Beck & Teboulle "
        "2009, Lemma 2.3)",
        linear_rate=None,
    )
    objective_variants: ClassVar[tuple[str, ...]] = ("direct", "corona")

    def certificate(self, s: Any, x: Tensor, p: Mapping[str, Tensor]) -> Certificate:
        r"""The optimality residual of the convex objective: with :math:`E = H_1L + H_2S - D`,
        :math:`\lambda = \texttt{lam}\cdot\operatorname{rms}(D)`, :math:`\mu =
        \texttt{mu}\cdot\operatorname{rms}(D)`, the minimiser is characterised by Fermat's rule
        :math:`0 \in H_1^{\mathsf H}E + \lambda\,\partial\|L\|_*` and
        :math:`0 \in H_2^{\mathsf H}E + \mu\,\partial\|S\|_{1,2}` (or :math:`\|S\|_1`). Each is
        measured as the distance to the subdifferential
        (:func:`~lightning_unfold.algorithms.corona.operators.nuclear_subgradient_distance`, from
        the SVD of :math:`L`; :func:`~lightning_unfold.algorithms.corona.operators.
        sparse_subgradient_distance`, from the support of :math:`S`), in units of the weight and
        of the largest subgradient's norm (:math:`\sqrt{\min(P, T)}` for the nuclear norm,
        :math:`\sqrt{\#\text{groups}}` for the sparsity penalty):

        .. math:: r = \max\Big(\frac{\operatorname{dist}(-H_1^{\mathsf H}E/\lambda,\
            \partial\|L\|_*)}{\sqrt{\min(P, T)}},\
            \frac{\operatorname{dist}(-H_2^{\mathsf H}E/\mu,\ \partial\|S\|_{1,2})}
            {\sqrt{\#\text{groups}}}\Big),

        0 exactly at the minimiser (the fixed point of proximal gradient, for any step),
        unchanged when :math:`D` is scaled. FISTA-RPCA's iterate is scored at its
        :math:`(L, S)`, CORONA's through this operator (:meth:`CORONA.classical_operator`)."""
        grid = _grid(p)
        h1, h2 = p["psf1"], p["psf2"]
        rho = _rms(x).flatten()
        E = blur(s.L, h1, grid) + blur(s.S, h2, grid) - x
        lam = (p["lam"] * rho).clamp_min(1e-300)[:, None, None]
        mu = (p["mu"] * rho).clamp_min(1e-300)[:, None, None]
        P, T = x.shape[-2:]
        groups = P if self.penalty == "l12" else P * T
        d_low = nuclear_subgradient_distance(-blur_adjoint(E, h1, grid) / lam, s.L)
        d_sparse = sparse_subgradient_distance(-blur_adjoint(E, h2, grid) / mu, s.S, self.penalty)
        return Certificate(
            "optimality residual of low-rank plus sparse separation (subdifferential distance "
            "relative to λ, μ)",
            torch.maximum(d_low / math.sqrt(min(P, T)), d_sparse / math.sqrt(groups)),
        )

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("tissue_psf", Role.OBJECTIVE, doc="PSF of H1 (s, s); classical: the PSF"),
            ParamSpec("blood_psf", Role.OBJECTIVE, doc="PSF of H2 (s, s); classical: the PSF"),
            ParamSpec("step", Role.HYPER, Constraint.POSITIVE, "gradient step eta_k"),
            ParamSpec("tau_L", Role.HYPER, Constraint.NONNEGATIVE, "relative SVT threshold"),
            ParamSpec("tau_S", Role.HYPER, Constraint.NONNEGATIVE, "relative blood threshold"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = require_problem(problem, UltrasoundClutter, type(self).__name__)
        eta = _classical_step(prob, self.step_size, type(self).__name__)
        f64 = torch.float64
        return {
            "tissue_psf": prob.psf_tensor(),
            "blood_psf": prob.psf_tensor(),
            "step": torch.tensor(eta, dtype=f64),
            "tau_L": torch.tensor(eta * prob.lam, dtype=f64),
            "tau_S": torch.tensor(eta * prob.mu, dtype=f64),
        }

    def objective_form(self, variant: str | None) -> Algorithm[Any]:
        if variant == "corona":
            from lightning_unfold.algorithms.corona.networks import CORONA  # networks imports us

            return CORONA(self.step_size, self.penalty, self.kernel_size, self.time_kernel)
        return super().objective_form(variant)

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> LowRankSparseState:
        zero = torch.zeros_like(x)
        return LowRankSparseState(L=zero, S=zero)

    def step(
        self, s: LowRankSparseState, x: Tensor, p: Mapping[str, Tensor], k: int
    ) -> LowRankSparseState:
        h1, h2, eta, grid = p["tissue_psf"], p["blood_psf"], p["step"], _grid(p)
        rho = _rms(x)
        r = blur(s.L, h1, grid) + blur(s.S, h2, grid) - x
        L = singular_value_threshold(
            s.L - eta * blur_adjoint(r, h1, grid), (p["tau_L"] * rho).squeeze(-1)
        )
        S = _prox_sparse(s.S - eta * blur_adjoint(r, h2, grid), p["tau_S"] * rho, self.penalty)
        return LowRankSparseState(L=L, S=S)

    def estimate(self, s: Any) -> Tensor:
        return torch.stack([s.L, s.S], dim=1)

    def objective(self, s: Any, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        return low_rank_sparse_objective(
            s.L, s.S, x, c["psf1"], c["psf2"], _grid(c), c["lam"], c["mu"], self.penalty
        )


class FISTARPCA(ISTARPCA):
    r"""FISTA for RPCA (Beck & Teboulle 2009): the ISTA-RPCA step at the extrapolated point,

    .. math::
        (L^{(k)}, S^{(k)}) &= T_{\text{ISTA}}(Y_L^{(k-1)}, Y_S^{(k-1)}),\qquad
        t_k = \tfrac12\big(1 + \sqrt{1 + 4t_{k-1}^2}\big),\\
        Y^{(k)} &= X^{(k)} + \tfrac{t_{k-1} - 1}{t_k}\,(X^{(k)} - X^{(k-1)})\quad (X = L, S),

    :math:`Y^{(0)} = X^{(0)} = 0`, :math:`t_0 = 1`, valid for :math:`0 < \eta \le 1/L_f` (objective
    gap :math:`O(1/k^2)`). The classical baseline CORONA is compared with.
    """

    name: ClassVar[str] = "fista_rpca"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="low-rank plus sparse separation ½‖D − H₁L − H₂S‖² + λ‖L‖* + μ‖S‖₁,₂",
        fixed_point="the minimiser",
        convex=True,
    )
    objective_variants: ClassVar[tuple[str, ...]] = ("direct",)

    def objective_form(self, variant: str | None) -> Algorithm[Any]:
        return Algorithm.objective_form(self, variant)

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> FISTARPCAState:  # type: ignore[override]
        zero = torch.zeros_like(x)
        one = torch.ones(x.shape[0], dtype=p["step"].dtype, device=x.device)
        return FISTARPCAState(L=zero, S=zero, YL=zero, YS=zero, t=one)

    def step(  # type: ignore[override]
        self, s: FISTARPCAState, x: Tensor, p: Mapping[str, Tensor], k: int
    ) -> FISTARPCAState:
        new = ISTARPCA.step(self, LowRankSparseState(L=s.YL, S=s.YS), x, p, k)
        t = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * s.t * s.t))
        beta = ((s.t - 1.0) / t)[:, None, None].to(x.dtype)
        return FISTARPCAState(
            L=new.L, S=new.S, YL=new.L + beta * (new.L - s.L), YS=new.S + beta * (new.S - s.S), t=t
        )
