"""The classical solver ADMM-TV (:class:`ADMMTV`, whose ``objective`` paradigm is
ADMM-CSNet) and its iterate."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from lightning_unfold.algorithms.imaging.networks import ImagingBlackBoxNet, ImagingCorrectionNet
from lightning_unfold.algorithms.imaging.operators import (
    _apply,
    _fft,
    _ifft,
    filter_transfer,
    finite_difference_filters,
    piecewise_linear,
    soft_threshold_values,
    tv_objective,
)
from lightning_unfold.algorithms.imaging.problem import CompressiveImaging
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

_GOLDEN = (1.0 + math.sqrt(5.0)) / 2.0
_RHO_FLOOR = 1e-8


@dataclass(frozen=True)
class ImagingADMMState:
    """ADMM's iterate: image ``x`` (B, n, n), split variables ``z`` and scaled duals ``u``
    (B, C, n, n), one channel per filter. The estimate is ``x``."""

    x: Tensor
    z: Tensor
    u: Tensor


class ADMMTV(Algorithm[ImagingADMMState]):
    r"""ADMM for TV-regularised Fourier imaging; its ``objective`` paradigm is ADMM-CSNet.

    Args:
        penalty: classical ρ > 0.
        dual_step: classical η in :math:`(0, (1+\sqrt5)/2)` (1: standard ADMM).
        filters: classical filter bank, ``"tv"`` (2 differences) or ``"tv4"`` (4, with the
            diagonals); the objective's λ weighs every filter equally.

    See :mod:`lightning_unfold.algorithms.imaging` (the package docstring) for the recursion and the
    convergence condition.
    """

    name: ClassVar[str] = "admm_tv"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="TV-regularised reconstruction ½‖y − MFx‖² + λ·TV(x)",
        fixed_point="the TV-regularised reconstruction (primal and dual residuals zero)",
        convex=True,
        averaged="ADMM is Douglas–Rachford splitting, a firmly nonexpansive iteration whose "
        "fixed points give the minimiser (Eckstein & Bertsekas 1992, Thm. 8)",
        descent=None,
        linear_rate=None,
    )

    def certificate(self, s: ImagingADMMState, x: Tensor, p: Mapping[str, Tensor]) -> Certificate:
        r"""The KKT residual of the TV-regularised reconstruction, read from ADMM's state.

        With :math:`A = M\odot F` on real images, :math:`\nabla f(x) = \operatorname{Re}
        F^{-1}\big(M\odot(M\odot Fx - y)\big)`, the classical differences :math:`D_c` and
        :math:`\lambda` = ``tv_weight``, the image :math:`x` minimises
        :math:`f(x) + \lambda\sum_c\|D_cx\|_1` iff there are :math:`z_c` and a dual
        :math:`w_c` with

        .. math:: \nabla f(x) + \textstyle\sum_c D_c^\top w_c = 0,\qquad
            D_cx = z_c,\qquad w_c \in \lambda\,\partial\|z_c\|_1 .

        ADMM's iterate carries all three: :math:`x`, the split :math:`z` and the scaled dual
        :math:`u`, whose unscaled dual is :math:`w = \rho u` (at a fixed point these are exactly
        a KKT triple; with the unit dual step the inclusion holds at every iteration). The
        residual is the largest of the three, each relative,

        .. math:: r = \max\Big(\frac{\|\nabla f(x) + D^\top w\|}
            {\|\operatorname{Re}F^{-1}(M\odot y)\|},\
            \frac{\|Dx - z\|}{\max(\|Dx\|, \|z\|)},\
            \frac{\operatorname{dist}(w, \lambda\,\partial\|z\|_1)}{\lambda\sqrt{Cn^2}}\Big),

        (the first relative to the gradient at :math:`x = 0`, the last to the largest subgradient;
        the distance is entrywise, :math:`|w - \lambda\operatorname{sign}z|` on the support of
        :math:`z`, :math:`(|w| - \lambda)_+` off it). 0 exactly at the minimiser with its dual —
        the optimality condition :math:`0 \in A^\top(Ax - y) + \lambda D^\top\partial\|Dx\|_1`
        — and unchanged when :math:`y`, :math:`\lambda` and :math:`x` are scaled together. The
        dual is read with ``p``'s penalty :math:`\rho` (the classical one in the checks): the
        iterate of an ADMM-CSNet stage, whose :math:`u` is scaled by its own learned
        :math:`\rho_k`, is judged as if it were ADMM's."""
        mask, lam, rho = p["mask"], p["tv_weight"], p["penalty"].clamp_min(_RHO_FLOOR)
        img = s.x
        n = img.shape[-1]
        Dh = filter_transfer(finite_difference_filters(self.filters).to(img.device, img.dtype), n)
        fx = _fft(img)
        grad = _ifft(mask * (mask * fx - x)).real
        w = rho * s.u
        Dtw = _ifft((Dh.conj() * _fft(w)).sum(dim=1)).real
        Dx = _apply(Dh, fx)
        zero_fill = _ifft(mask * x).real
        norm = torch.linalg.vector_norm

        def fro(t: Tensor) -> Tensor:
            return norm(t.flatten(1), dim=1)

        stationary = fro(grad + Dtw) / fro(zero_fill).clamp_min(1e-300)
        primal = fro(Dx - s.z) / torch.maximum(fro(Dx), fro(s.z)).clamp_min(1e-300)
        lam_ = lam.clamp_min(1e-300)
        inclusion = torch.where(
            s.z != 0, (w - lam_ * torch.sign(s.z)).abs(), (w.abs() - lam_).clamp_min(0.0)
        )
        dual = fro(inclusion) / (lam_ * math.sqrt(s.z[0].numel()))
        return Certificate(
            "KKT residual of TV reconstruction (gradient balance, Dx = z, dual in λ∂‖z‖₁)",
            torch.stack([stationary, primal, dual], dim=1).amax(dim=1),
        )

    def convex_reference(self, x: Tensor, problem: ProblemSpec) -> Tensor | None:
        r"""The TV-regularised reconstruction
        :math:`\arg\min_u \tfrac12\|M\odot Fu - y\|^2 + \lambda\|D_hu\|_1 + \lambda\|D_vu\|_1`
        (circular differences, ``filters="tv"`` only) by CVXPY, the complex data split exactly into
        real and imaginary parts; images up to 32 × 32 (``None`` otherwise)."""
        import cvxpy as cp

        prob = require_problem(problem, CompressiveImaging, type(self).__name__)
        n = prob.size
        if self.filters != "tv" or n > 32:
            return None
        F = np.fft.fft(np.eye(n), norm="ortho")
        sampled = prob.mask.detach().cpu().numpy().ravel().astype(bool)
        A = np.kron(F, F)[sampled]
        out = []
        for b in range(x.shape[0]):
            yv = x[b].detach().cpu().to(torch.complex128).numpy().ravel()[sampled]
            u = cp.Variable((n, n))
            uv = cp.vec(u, order="C")
            dh = cp.hstack([u[:, 1:] - u[:, :-1], u[:, :1] - u[:, -1:]])
            dv = cp.vstack([u[1:, :] - u[:-1, :], u[:1, :] - u[-1:, :]])
            data = cp.sum_squares(A.real @ uv - yv.real) + cp.sum_squares(A.imag @ uv - yv.imag)
            tv = cp.sum(cp.abs(dh)) + cp.sum(cp.abs(dv))
            program = cp.Problem(cp.Minimize(0.5 * data + prob.tv_weight * tv))
            program.solve(solver=cp.CLARABEL)
            if program.status != cp.OPTIMAL or u.value is None:
                return None
            out.append(u.value)
        return torch.as_tensor(np.stack(out), dtype=torch.float64)

    def __init__(self, penalty: float = 0.05, dual_step: float = 1.0, filters: str = "tv") -> None:
        if not (penalty > 0 and math.isfinite(penalty)):
            raise ValueError(f"The ADMM penalty rho must be finite and > 0, got {penalty}.")
        if not 0.0 < dual_step < _GOLDEN:
            raise ValueError(
                f"The dual step eta must lie in (0, (1 + sqrt 5)/2) = (0, {_GOLDEN:.4f}) for "
                f"ADMM to converge (Glowinski), got {dual_step}."
            )
        finite_difference_filters(filters)  # validates the name
        self.penalty, self.dual_step, self.filters = float(penalty), float(dual_step), filters

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("filters", Role.OBJECTIVE, doc="3×3 filters D_c (C, 3, 3)"),
            ParamSpec("shrinkage", Role.OBJECTIVE, doc="shrinkage ψ_c at the control points"),
            ParamSpec("weights", Role.HYPER, Constraint.NONNEGATIVE, "prior weights λ_c (C,)"),
            ParamSpec("penalty", Role.HYPER, Constraint.POSITIVE, "augmented-Lagrangian ρ"),
            ParamSpec("dual_step", Role.HYPER, Constraint.POSITIVE, "dual step η"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = require_problem(problem, CompressiveImaging, type(self).__name__)
        w = finite_difference_filters(self.filters)
        f64 = torch.float64
        return {
            "filters": w,
            "shrinkage": soft_threshold_values().repeat(w.shape[0], 1),
            "weights": torch.full((w.shape[0],), prob.tv_weight, dtype=f64),
            "penalty": torch.tensor(self.penalty, dtype=f64),
            "dual_step": torch.tensor(self.dual_step, dtype=f64),
        }

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> ImagingADMMState:
        zf = _ifft(p["mask"] * x).real
        C = p["filters"].shape[0]
        z = zf.new_zeros(zf.shape[0], C, *zf.shape[1:])
        return ImagingADMMState(x=zf, z=z, u=z)

    def step(
        self, s: ImagingADMMState, x: Tensor, p: Mapping[str, Tensor], k: int
    ) -> ImagingADMMState:
        mask, eta = p["mask"], p["dual_step"]
        # a learned ρ driven to the constraint's floor (the smallest normal number) would make
        # ρ|D̂|² underflow to 0/0 at unsampled frequencies; 1e-8 is far below any useful ρ
        rho = p["penalty"].clamp_min(_RHO_FLOOR)
        n = mask.shape[-1]
        Dh = filter_transfer(p["filters"], n)
        sym = 0.5 * (mask + torch.roll(torch.flip(mask, (0, 1)), (1, 1), (0, 1)))  # M(-k)
        rhs = _fft(_ifft(mask * x).real) + rho * (Dh.conj() * _fft(s.z - s.u)).sum(dim=1)
        image = _ifft(rhs / (sym + rho * Dh.abs().pow(2).sum(dim=0))).real
        Dx = _apply(Dh, _fft(image))
        v = Dx + s.u
        floor = torch.finfo(v.dtype).tiny ** 0.5
        theta = (p["weights"] / rho).clamp_min(floor).view(1, -1, 1, 1)
        z = theta * piecewise_linear(v / theta, p["shrinkage"])
        return ImagingADMMState(x=image, z=z, u=s.u + eta * (Dx - z))

    def estimate(self, s: ImagingADMMState) -> Tensor:
        return s.x

    def objective(self, s: ImagingADMMState, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        return tv_objective(s.x, x, c["mask"], c["tv_weight"], self.filters)

    def estimate_objective(self, estimate: Tensor, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        """Per-sample TV objective of images alone (the black box's unsupervised loss)."""
        return tv_objective(estimate, x, c["mask"], c["tv_weight"], self.filters)

    def features(self, s: ImagingADMMState, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        """``(B, F)``: flattened real :math:`[x, x_{\\mathrm{zf}}, z, u]` (:class:`ImagingCorrectionNet`)."""
        b = x.shape[0]
        zf = _ifft(p["mask"] * x).real
        return torch.cat([t.reshape(b, -1) for t in (s.x, zf, s.z, s.u)], dim=1)

    def make_correction_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module:
        prob = require_problem(problem, CompressiveImaging, type(self).__name__)
        C = finite_difference_filters(self.filters).shape[0]
        return ImagingCorrectionNet(prob.size, C, channels=hidden)

    def make_inductive_bias_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module:
        raise ValueError(
            "ADMMTV has no inductive-bias network: ADMM-CSNet (paradigm='objective') already "
            "learns the filters and the shrinkage of every stage while keeping the iteration; "
            "use paradigm='objective', 'hyperparameters' or 'correction'."
        )

    def make_black_box_net(self, problem: ProblemSpec, target_params: int) -> nn.Module:
        return ImagingBlackBoxNet(
            require_problem(problem, CompressiveImaging, type(self).__name__), target_params
        )
