"""The classical solver :class:`NMF` (β-divergence multiplicative updates; its ``objective``
paradigm is deep NMF) and its iterate."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from lightning_unfold.algorithms.nmf.networks import (
    NMFBlackBoxNet,
    NMFCorrectionNet,
    NMFNetIteration,
)
from lightning_unfold.algorithms.nmf.operators import _EPS, _wiener, beta_divergence, mu_exponent
from lightning_unfold.algorithms.nmf.problem import NMFSeparation
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


@dataclass(frozen=True)
class NMFState:
    """The iterate: activations ``H`` ``(B, R, T)``, dictionary ``W`` ``(B, F, R)`` (the layer's
    dictionary, or the iterated one with ``update_dictionary``) and the Wiener-filtered source
    estimates ``S`` ``(B, J, F, T)`` of ``(W, H)`` — the estimate compared with the sources."""

    H: Tensor
    W: Tensor
    S: Tensor


class NMF(Algorithm[NMFState]):
    r"""β-divergence multiplicative updates (the recursion is in
    :mod:`lightning_unfold.algorithms.nmf` (the package docstring)).

    Args:
        beta: the divergence (2 Euclidean, 1 Kullback–Leibler; any real accepted).
        update_dictionary: also iterate :math:`W` (blind NMF) instead of keeping the layer's.
        exponent: classical :math:`\gamma`, in :math:`(0, \gamma(\beta)]` (default
            :math:`\gamma(\beta)`).
        sparsity: classical :math:`\lambda \ge 0` on :math:`\|H\|_1`.
    """

    name: ClassVar[str] = "nmf"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="β-divergence NMF D_β(V | WH) + λ‖H‖₁ over H ≥ 0",
        fixed_point="a KKT point (H ≥ 0, ∇_H ≥ 0, H ⊙ ∇_H = 0)",
        convex=False,
        averaged=None,
        descent="the multiplicative updates with exponent γ ≤ γ(β) never raise the β-divergence "
        "(Févotte & Idier 2011, Thm. 2)",
        linear_rate=None,
    )

    def certificate(self, s: NMFState, x: Tensor, p: Mapping[str, Tensor]) -> Certificate:
        r"""The KKT residual of the activations (the dictionary is the layer's), relative:
        with :math:`\nabla_H = W^\top\Lambda^{\beta-1} - W^\top(V\odot\Lambda^{\beta-2}) +
        \lambda = d - n` (:math:`\Lambda = WH`),

        .. math:: r = \frac{\sum H\odot|d - n|}{\sum H\odot d}
            + \operatorname{mean}_{H_{ij} \approx 0}\big(n_{ij}/d_{ij} - 1\big)_+,

        complementarity :math:`H\odot\nabla_H = 0` plus dual feasibility :math:`\nabla_H \ge 0`
        where :math:`H = 0`; 0 exactly at a KKT point, which is where the multiplicative
        update is at a fixed point."""
        W = s.W if self.update_dictionary else p["dictionary"].expand(x.shape[0], -1, -1)
        num, den = self._powers(W @ s.H + _EPS, x)
        n = W.mT @ num
        d = W.mT @ den + p["sparsity"] + _EPS
        comp = (s.H * (d - n).abs()).flatten(1).sum(1) / (s.H * d).flatten(1).sum(1).clamp_min(_EPS)
        zero = s.H <= 1e-10 * s.H.flatten(1).amax(1).clamp_min(_EPS)[:, None, None]
        infeas = torch.where(zero, (n / d - 1.0).clamp_min(0.0), torch.zeros_like(d))
        frac = infeas.flatten(1).sum(1) / zero.flatten(1).sum(1).clamp_min(1)
        return Certificate("KKT residual of the activations H (relative)", comp + frac)

    def __init__(
        self,
        beta: float = 1.0,
        update_dictionary: bool = False,
        exponent: float | None = None,
        sparsity: float = 0.0,
    ) -> None:
        if not math.isfinite(beta):
            raise ValueError(f"beta must be finite, got {beta}.")
        gmax = mu_exponent(beta)
        gamma = gmax if exponent is None else float(exponent)
        if not 0.0 < gamma <= gmax * (1 + 1e-12):
            raise ValueError(
                f"The multiplicative-update exponent must lie in (0, gamma(beta)] = (0, {gmax:g}] "
                f"for beta = {beta:g} (Févotte & Idier 2011: monotone descent), got {exponent}."
            )
        if not (sparsity >= 0 and math.isfinite(sparsity)):
            raise ValueError(f"sparsity (lambda) must be finite and >= 0, got {sparsity}.")
        self.beta, self.update_dictionary = float(beta), bool(update_dictionary)
        self.exponent, self.sparsity = gamma, float(sparsity)

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec(
                "dictionary", Role.OBJECTIVE, Constraint.NONNEGATIVE, "dictionary W_k (F, R)"
            ),
            ParamSpec("exponent", Role.HYPER, Constraint.POSITIVE, "update exponent gamma_k"),
            ParamSpec("sparsity", Role.HYPER, Constraint.NONNEGATIVE, "l1 weight lambda_k"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = require_problem(problem, NMFSeparation, type(self).__name__)
        f64 = torch.float64
        return {
            "dictionary": prob.W.clone(),
            "exponent": torch.tensor(self.exponent, dtype=f64),
            "sparsity": torch.tensor(self.sparsity, dtype=f64),
        }

    def _powers(self, lam_: Tensor, V: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`(V \odot \Lambda^{\beta-2}, \Lambda^{\beta-1})` (no powers for β = 1, 2)."""
        if self.beta == 1.0:
            return V / lam_, torch.ones_like(lam_)
        if self.beta == 2.0:
            return V, lam_
        return V * lam_ ** (self.beta - 2.0), lam_ ** (self.beta - 1.0)

    def _ratio_H(self, W: Tensor, H: Tensor, V: Tensor, lam: Tensor) -> Tensor:
        num, den = self._powers(W @ H + _EPS, V)
        return (W.mT @ num) / (W.mT @ den + lam + _EPS)

    def _ratio_W(self, W: Tensor, H: Tensor, V: Tensor) -> Tensor:
        num, den = self._powers(W @ H + _EPS, V)
        return (num @ H.mT) / (den @ H.mT + _EPS)

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> NMFState:
        r""":math:`H^{(0)} = c\mathbf 1` with :math:`c = \operatorname{mean}(V)/(R\cdot
        \operatorname{mean}(W))` per sample (so :math:`WH^{(0)}` has :math:`V`'s mean)."""
        W = p["dictionary"].expand(x.shape[0], -1, -1)
        R = W.shape[-1]
        c = x.mean(dim=(1, 2)) / (R * W.mean(dim=(1, 2)) + _EPS)
        H = c[:, None, None] * x.new_ones(x.shape[0], R, x.shape[2])
        return NMFState(H=H, W=W, S=_wiener(W, H, x, round(float(p["atoms"]))))

    def step(self, s: NMFState, x: Tensor, p: Mapping[str, Tensor], k: int) -> NMFState:
        W = s.W if self.update_dictionary else p["dictionary"].expand(x.shape[0], -1, -1)
        gamma = p["exponent"]
        H = s.H * self._ratio_H(W, s.H, x, p["sparsity"]) ** gamma
        if self.update_dictionary:
            W = W * self._ratio_W(W, H, x) ** gamma
        return NMFState(H=H, W=W, S=_wiener(W, H, x, round(float(p["atoms"]))))

    def mu_ratio(self, s: NMFState, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        """The classical ratio of the H update at ``s`` (before the exponent), ``(B, R, T)``."""
        W = s.W if self.update_dictionary else p["dictionary"].expand(x.shape[0], -1, -1)
        return self._ratio_H(W, s.H, x, p["sparsity"])

    def objective(self, s: NMFState, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        lam = float(c["sparsity"]) if "sparsity" in c else self.sparsity
        return beta_divergence(x, s.W @ s.H, self.beta) + lam * s.H.flatten(1).sum(1)

    def estimate(self, s: NMFState) -> Tensor:
        return s.S

    def features(self, s: NMFState, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        r"""``(B, F)``: flattened :math:`[\rho, H, W, V]` with :math:`\rho` the classical ratio of
        the H update (unpacked by the correction / inductive-bias networks)."""
        b = x.shape[0]
        rho = self.mu_ratio(s, x, p)
        parts = (rho, s.H, s.W, x)
        return torch.cat([t.reshape(b, -1) for t in parts], dim=1)

    def _shape(self, problem: NMFSeparation) -> tuple[int, int, int, int]:
        return (
            problem.n_freq,
            problem.n_frames,
            2 * problem.atoms_per_source,
            (problem.atoms_per_source),
        )

    def _no_dictionary_updates(self, what: str) -> None:
        if self.update_dictionary:
            raise ValueError(
                f"The {what} network of NMF corrects the H update only; use "
                "update_dictionary=False (supervised separation with a given dictionary)."
            )

    def make_correction_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module:
        prob = require_problem(problem, NMFSeparation, type(self).__name__)
        self._no_dictionary_updates("correction")
        return NMFCorrectionNet(*self._shape(prob), channels=hidden, beta=self.beta)

    def make_inductive_bias_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module:
        prob = require_problem(problem, NMFSeparation, type(self).__name__)
        self._no_dictionary_updates("inductive-bias")
        return NMFNetIteration(*self._shape(prob), channels=hidden, exponent=self.exponent)

    def make_black_box_net(self, problem: ProblemSpec, target_params: int) -> nn.Module:
        require_problem(problem, NMFSeparation, type(self).__name__)
        return NMFBlackBoxNet(target_params)
