r"""ADMM for the LASSO — a small multi-block algorithm, iterate :math:`(s, z, u)`.

Splitting :math:`\min_{s,z} \tfrac12\|x - Hs\|^2 + \rho\|z\|_1` s.t. :math:`s = z` with penalty
:math:`\tau > 0` and scaled dual :math:`u` (Boyd et al. 2011, §6.4):

.. math::
    s^{(k)} &= (D^\top D + \tau I)^{-1}\big(D^\top x + \tau(z^{(k-1)} - u^{(k-1)})\big),\\
    z^{(k)} &= \operatorname{soft}_{\beta}(s^{(k)} + u^{(k-1)}),\\
    u^{(k)} &= u^{(k-1)} + s^{(k)} - z^{(k)},

classically :math:`D = H` and :math:`\beta = \rho/\tau`. ADMM converges for every
:math:`\tau > 0`; the estimate is :math:`z`. θo = {``dictionary``}, θh = {``penalty`` τ,
``threshold`` β}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from lightning_unfold.algorithms.sparse import SparseRecovery, lasso_objective, soft_threshold
from lightning_unfold.core.algorithm import (
    Algorithm,
    Certificate,
    Constraint,
    ParamSpec,
    ProblemSpec,
    Role,
    SolverTheory,
)

__all__ = ["ADMMLasso", "ADMMState"]


@dataclass(frozen=True)
class ADMMState:
    """ADMM's iterate: primal ``s``, split variable ``z`` (the sparse estimate), scaled dual ``u``."""

    s: Tensor
    z: Tensor
    u: Tensor


class ADMMLasso(Algorithm[ADMMState]):
    """ADMM for the LASSO (see the module docstring for the recursion)."""

    name: ClassVar[str] = "admm_lasso"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="the LASSO ½‖x − Hs‖² + ρ‖s‖₁",
        fixed_point="the LASSO solution (primal and dual residuals zero)",
        convex=True,
        averaged="ADMM is Douglas–Rachford splitting, a firmly nonexpansive iteration whose "
        "fixed points give the LASSO solution (Eckstein & Bertsekas 1992, Thm. 8)",
        descent=None,
        linear_rate=None,
    )

    def certificate(self, s: ADMMState, x: Tensor, p: Mapping[str, Tensor]) -> Certificate:
        r"""ADMM's relative primal and dual residuals after one classical step (Boyd et al.
        2011, §3.3): with :math:`(s^+, z^+, u^+) = T(s, z, u)`,

        .. math:: r = \max\Big(\frac{\|s^+ - z^+\|}{\max(\|s^+\|, \|z^+\|)},\;
            \frac{\|z^+ - z\|}{\|u^+\|}\Big),

        both zero exactly at a fixed point, i.e. at the LASSO solution."""
        t = self.step(s, x, p, 1)
        tiny = 1e-30
        norm = torch.linalg.vector_norm
        primal = norm(t.s - t.z, dim=1) / torch.maximum(
            norm(t.s, dim=1), norm(t.z, dim=1)
        ).clamp_min(tiny)
        dual = norm(t.z - s.z, dim=1) / norm(t.u, dim=1).clamp_min(tiny)
        return Certificate("relative primal and dual residual of ADMM", torch.maximum(primal, dual))

    def __init__(self, penalty: float = 1.0) -> None:
        if not (penalty > 0 and math.isfinite(penalty)):
            raise ValueError(f"ADMM penalty tau must be finite and > 0, got {penalty}.")
        self.penalty = float(penalty)

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("dictionary", Role.OBJECTIVE, doc="dictionary D (classical: H)"),
            ParamSpec("penalty", Role.HYPER, Constraint.POSITIVE, "augmented-Lagrangian tau"),
            ParamSpec("threshold", Role.HYPER, Constraint.NONNEGATIVE, "threshold rho / tau"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        if not isinstance(problem, SparseRecovery):
            raise TypeError(f"ADMMLasso solves SparseRecovery problems, got {type(problem)}.")
        return {
            "dictionary": problem.H.clone(),
            "penalty": torch.tensor(self.penalty, dtype=torch.float64),
            "threshold": torch.tensor(problem.rho / self.penalty, dtype=torch.float64),
        }

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> ADMMState:
        z = x.new_zeros(x.shape[0], p["H"].shape[1])
        return ADMMState(s=z, z=z, u=z)

    def step(self, s: ADMMState, x: Tensor, p: Mapping[str, Tensor], k: int) -> ADMMState:
        D = p["dictionary"]
        tau = p["penalty"]
        gram = D.T @ D + tau * torch.eye(D.shape[1], dtype=D.dtype, device=D.device)
        rhs = x @ D + tau * (s.z - s.u)
        s_new = torch.linalg.solve(gram, rhs.T).T
        z_new = soft_threshold(s_new + s.u, p["threshold"])
        return ADMMState(s=s_new, z=z_new, u=s.u + s_new - z_new)

    def estimate(self, s: ADMMState) -> Tensor:
        return s.z

    def objective(self, s: ADMMState, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        return lasso_objective(s.z, x, c["H"], c["rho"])

    def features(self, s: ADMMState, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([s.s, s.z, s.u, x @ p["H"]], dim=1)
