"""CORONA: ISTA-RPCA with its six operators as learned complex convolutions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from lightning_unfold.algorithms.corona.operators import (
    _circular_correlation,
    _grid,
    _prox_sparse,
    _rms,
    low_rank_sparse_objective,
    singular_value_threshold,
)
from lightning_unfold.algorithms.corona.problem import (
    UltrasoundClutter,
)
from lightning_unfold.algorithms.corona.solvers import (
    ISTARPCA,
    LowRankSparseState,
    _classical_step,
    _ClutterSolver,
)
from lightning_unfold.core.algorithm import (
    Algorithm,
    Constraint,
    ParamSpec,
    ProblemSpec,
    Role,
    SolverTheory,
    require_problem,
)


# -- CORONA ---------------------------------------------------------------------------------
def _lsi_kernel(op: Tensor, n_x: int, n_z: int, size: int) -> Tensor:
    """The ``size × size`` cross-correlation kernel of a circular, shift-invariant operator ``op``
    ``(P, P)`` on the ``n_x × n_z`` grid; raises if the operator does not fit in that kernel."""
    cx, cz, r = n_x // 2, n_z // 2, size // 2
    response = op[:, cx * n_z + cz].reshape(n_x, n_z)  # op applied to a centred delta
    # cross-correlation: y[i] = sum_a w[a] x[i + a - r]  =>  w[a] = response[c + r - a]
    ix = (cx + r - torch.arange(size)) % n_x
    iz = (cz + r - torch.arange(size)) % n_z
    kernel = response[ix][:, iz]
    rebuilt = torch.zeros((n_x, n_z), dtype=response.dtype)
    rebuilt[ix[:, None], iz[None, :]] = kernel
    if not torch.allclose(rebuilt, response, atol=1e-12 * float(response.abs().max()), rtol=0.0):
        raise ValueError(
            f"The classical operator spreads beyond a {size}×{size} kernel (H^H H of the PSF has "
            "support 2·(PSF size) − 1); increase kernel_size to represent it exactly."
        )
    return kernel


def corona_kernels(
    H1: Tensor, H2: Tensor, eta: float, n_x: int, n_z: int, size: int, time_kernel: int
) -> Tensor:
    r"""CORONA's classical kernels ``(2, 3, size, size, time_kernel)`` (complex128): output
    channels (L, S), input channels (L, S, D), i.e. ``[[P5, P3, P1], [P4, P6, P2]]`` with
    :math:`P_5 = I - \eta H_1^{\mathsf H}H_1`, :math:`P_3 = -\eta H_1^{\mathsf H}H_2`,
    :math:`P_1 = \eta H_1^{\mathsf H}`, :math:`P_4 = -\eta H_2^{\mathsf H}H_1`,
    :math:`P_6 = I - \eta H_2^{\mathsf H}H_2`, :math:`P_2 = \eta H_2^{\mathsf H}` (each at the
    centre frame of the temporal extent). ``H1``, ``H2`` must be circular blurs of the grid."""
    if size > min(n_x, n_z):
        raise ValueError(
            f"kernel_size {size} exceeds the {n_x}×{n_z} image; circular padding needs "
            "kernel_size <= min(n_x, n_z)."
        )
    H1, H2 = H1.to(torch.complex128), H2.to(torch.complex128)
    eye = torch.eye(H1.shape[0], dtype=torch.complex128)
    ops = [
        [eye - eta * H1.mH @ H1, -eta * H1.mH @ H2, eta * H1.mH],
        [-eta * H2.mH @ H1, eye - eta * H2.mH @ H2, eta * H2.mH],
    ]
    out = torch.zeros((2, 3, size, size, time_kernel), dtype=torch.complex128)
    for o in range(2):
        for i in range(3):
            out[o, i, :, :, time_kernel // 2] = _lsi_kernel(ops[o][i], n_x, n_z, size)
    return out


class CORONA(_ClutterSolver):
    r"""CORONA (Solomon et al. 2019): ISTA-RPCA with the six operators as learned convolutions.

    Layer :math:`k` (see :mod:`lightning_unfold.algorithms.corona`, the package docstring), on
    the reshaped :math:`n_x\times n_z\times T` sequences, with one kernel tensor
    :math:`\mathcal P^k` of shape ``(2, 3, k, k, k_t)`` holding
    :math:`[[P_5, P_3, P_1], [P_4, P_6, P_2]]`:

    .. math::
        (A, B) &= \mathcal P^k * (L^{(k-1)}, S^{(k-1)}, D),\\
        L^{(k)} &= \operatorname{SVT}_{\tau^k_L\rho}(A),\qquad
        S^{(k)} = \operatorname{prox}_{\tau^k_S\rho}(B).

    Classical values: the kernels of :func:`corona_kernels` (for :math:`H = I`, :math:`\eta = 1/2`:
    :math:`P_1 = P_2 = P_5 = P_6 = \tfrac12\delta`, :math:`P_3 = P_4 = -\tfrac12\delta`) and
    :math:`\tau_L = \eta\,\texttt{lam}`, :math:`\tau_S = \eta\,\texttt{mu}` — exactly ISTA-RPCA, whose
    step condition :math:`\eta \le 1/L_f` they inherit. Learned kernels carry no step condition
    (as LISTA's weights do not). Registered as ``"corona"``; also the ``corona`` variant of
    :class:`ISTARPCA`'s objective paradigm.

    Args:
        step: the classical :math:`\eta` the kernels start from (``None``: :math:`1/L_f`).
        penalty: ``"l12"`` or ``"l1"``.
        kernel_size: spatial kernel size (odd; at least the support of :math:`H^{\mathsf H}H`).
        time_kernel: temporal kernel size (odd; 1 = spatial 2-D kernels per frame).
    """

    name: ClassVar[str] = "corona"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="low-rank plus sparse separation ½‖D − H₁L − H₂S‖² + λ‖L‖* + μ‖S‖₁,₂",
        fixed_point="the minimiser (for the classical convolutions)",
        convex=True,
    )

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec(
                "kernels",
                Role.OBJECTIVE,
                doc="complex kernels (2, 3, k, k, k_t): [[P5, P3, P1], [P4, P6, P2]]",
            ),
            ParamSpec("tau_L", Role.HYPER, Constraint.NONNEGATIVE, "relative SVT threshold"),
            ParamSpec("tau_S", Role.HYPER, Constraint.NONNEGATIVE, "relative blood threshold"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = require_problem(problem, UltrasoundClutter, type(self).__name__)
        eta = _classical_step(prob, self.step_size, type(self).__name__)
        kernels = corona_kernels(
            prob.H, prob.H, eta, prob.n_x, prob.n_z, self.kernel_size, self.time_kernel
        )
        f64 = torch.float64
        return {
            "kernels": kernels,
            "tau_L": torch.tensor(eta * prob.lam, dtype=f64),
            "tau_S": torch.tensor(eta * prob.mu, dtype=f64),
        }

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> LowRankSparseState:
        zero = torch.zeros_like(x)
        return LowRankSparseState(L=zero, S=zero)

    def step(
        self, s: LowRankSparseState, x: Tensor, p: Mapping[str, Tensor], k: int
    ) -> LowRankSparseState:
        n_x, n_z = (round(float(v)) for v in p["grid"])
        b, P, T = x.shape
        vol = torch.stack([s.L, s.S, x], dim=1).reshape(b, 3, n_x, n_z, T)
        out = _circular_correlation(vol, p["kernels"]).reshape(b, 2, P, T)
        rho = _rms(x)
        L = singular_value_threshold(out[:, 0], (p["tau_L"] * rho).squeeze(-1))
        S = _prox_sparse(out[:, 1], p["tau_S"] * rho, self.penalty)
        return LowRankSparseState(L=L, S=S)

    def estimate(self, s: Any) -> Tensor:
        return torch.stack([s.L, s.S], dim=1)

    def objective(self, s: Any, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        return low_rank_sparse_objective(
            s.L, s.S, x, c["psf1"], c["psf2"], _grid(c), c["lam"], c["mu"], self.penalty
        )

    def classical_operator(self) -> Algorithm[Any]:
        """The fixed-point operator is ISTA-RPCA's (the classical kernels are exactly it)."""
        return ISTARPCA(self.step_size, self.penalty, self.kernel_size, self.time_kernel)
