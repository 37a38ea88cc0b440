"""The classical mean-field iteration :class:`MeanFieldCRF`, its iterate, free energy and
contraction factor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from lightning_unfold.algorithms.crf.kernels import (
    bilateral_kernel,
    spatial_kernel,
    unary_features,
)
from lightning_unfold.algorithms.crf.networks import (
    SegmentationBlackBoxNet,
    _ConvHead,
    _ConvIteration,
)
from lightning_unfold.algorithms.crf.problem import (
    Segmentation,
)
from lightning_unfold.core.algorithm import (
    Algorithm,
    Constraint,
    ParamSpec,
    ProblemSpec,
    Role,
    SolverTheory,
)
from lightning_unfold.core.iterate import aux_field


@dataclass(frozen=True)
class CRFState:
    """The mean-field iterate: marginals ``q`` ``(B, L, H, W)``. Auxiliary (observation-only,
    computed once by :meth:`MeanFieldCRF.init`): the unary ``features`` ``(B, F, H, W)``, the
    ``spatial`` kernel ``(N, N)`` and the ``bilateral`` kernels ``(B, N, N)``."""

    q: Tensor
    features: Tensor | None = aux_field()
    spatial: Tensor | None = aux_field()
    bilateral: Tensor | None = aux_field()


def _unary(feats: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return torch.einsum("lf,bfhw->blhw", weight, feats) + bias.view(1, -1, 1, 1)


def _messages(q: Tensor, spatial: Tensor, bilateral: Tensor, ws: Tensor, wb: Tensor) -> Tensor:
    r""":math:`m_i = \sum_{j\ne i}k_{ij}Q_j` ``(B, L, H, W)`` (both kernels symmetric)."""
    B, L, H, W = q.shape
    flat = q.reshape(B, L, H * W)
    m = ws * (flat @ spatial) + wb * torch.bmm(flat, bilateral)
    return m.reshape(B, L, H, W)


def _compat(mu: Tensor, m: Tensor) -> Tensor:
    return torch.einsum("lk,bkhw->blhw", mu, m)


def free_energy(
    q: Tensor, unary: Tensor, messages: Tensor, compatibility: Tensor, *, floor: float = 1e-300
) -> Tensor:
    r"""Per-image :math:`\sum Q\log Q - \sum Q U + \tfrac12\sum Q\odot\mu m` ``(B,)`` with
    ``messages`` :math:`m = \sum_{j\ne i}k_{ij}Q_j` of this very ``q``."""
    ent = (q * q.clamp_min(floor).log()).flatten(1).sum(1)
    lin = (q * unary).flatten(1).sum(1)
    pair = (q * _compat(compatibility, messages)).flatten(1).sum(1)
    return ent - lin + 0.5 * pair


def contraction_factor(s: CRFState, p: Mapping[str, Tensor]) -> Tensor:
    r"""Per image ``(B,)`` the bound :math:`\tfrac12\|\mu\|_2\|w_sK_s + w_bK_b\|_2` on the
    Lipschitz constant of the undamped mean-field map
    (:mod:`lightning_unfold.algorithms.crf` (the package docstring)): below 1, the
    iteration is a contraction with a unique fixed point."""
    if s.spatial is None or s.bilateral is None:
        raise ValueError("The iterate carries no kernels; build it with MeanFieldCRF.init.")
    K = p["spatial_weight"] * s.spatial + p["bilateral_weight"] * s.bilateral
    return (
        0.5
        * torch.linalg.matrix_norm(p["compatibility"], 2)
        * torch.linalg.eigvalsh(K).abs().amax(-1)
    )


def _require_segmentation(problem: ProblemSpec) -> Segmentation:
    if not isinstance(problem, Segmentation):
        raise TypeError(f"MeanFieldCRF solves Segmentation problems, got {type(problem).__name__}.")
    return problem


class MeanFieldCRF(Algorithm[CRFState]):
    r"""Parallel mean-field inference of the dense CRF
    (:mod:`lightning_unfold.algorithms.crf` (the package docstring)), CRF-RNN's layer:

    .. math:: Q^{(k)} = (1-\eta_k)Q^{(k-1)} + \eta_k\operatorname{softmax}\Big(U_k - \mu_k
        \sum_{j\ne i}\big(w_{s,k}k^s_{ij} + w_{b,k}k^b_{ij}\big)Q_j^{(k-1)}\Big),

    :math:`U_k = W_k\phi + b_k` the unary of the features :math:`\phi` (intensity, 3×3 mean and std).
    θo = {``unary_weight``, ``unary_bias`` (classical: LDA on training images,
    :meth:`Segmentation.unary_classifier`), ``spatial_weight``, ``bilateral_weight``,
    ``compatibility`` (classical Potts :math:`1 - I`)}; θh = {``step`` :math:`\eta`, classical
    1 = CRF-RNN's update, clamped to :math:`(0, 1]`}; fixed: the bandwidths. Step-size
    condition: :math:`0 < \eta \le 1` keeps every iterate a product of probability vectors;
    convergence is guaranteed when :func:`contraction_factor` is below 1
    (:mod:`lightning_unfold.algorithms.crf` (the package docstring)),
    otherwise only observed.

    Args:
        spatial_weight, bilateral_weight: hand-set :math:`w_s, w_b \ge 0`.
        theta_gamma, theta_alpha: spatial bandwidths (pixels); theta_beta: intensity bandwidth.
        step: classical :math:`\eta \in (0, 1]`.

    The correction and inductive-bias networks are two 3×3 convolutions of :math:`[Q, I]` with
    ``hidden`` channels (the paradigm's argument).
    """

    name: ClassVar[str] = "mean_field_crf"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="dense-CRF segmentation: the mean-field free energy "
        "Σ Q log Q − Σ Q·U + ½ Σ Q·μm(Q) over per-pixel label distributions Q",
        fixed_point="a stationary point of the mean-field free energy, Q = softmax(U − μm(Q)) "
        "(for a symmetric compatibility μ)",
        convex=False,
        averaged=None,
        descent=None,  # parallel mean field need not lower the free energy (module docstring)
        linear_rate="the mean-field map is a contraction where contraction_factor < 1 (weak "
        "couplings) and then converges linearly (Banach's fixed-point theorem)",
    )

    def __init__(
        self,
        spatial_weight: float = 0.05,
        bilateral_weight: float = 0.1,
        theta_gamma: float = 2.0,
        theta_alpha: float = 6.0,
        theta_beta: float = 0.15,
        step: float = 1.0,
    ) -> None:
        for nm, v in (("spatial_weight", spatial_weight), ("bilateral_weight", bilateral_weight)):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{nm} must be finite and >= 0, got {v}.")
        for nm, v in (("theta_gamma", theta_gamma), ("theta_alpha", theta_alpha)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{nm} (a bandwidth in pixels) must be finite and > 0, got {v}.")
        if not (math.isfinite(theta_beta) and theta_beta > 0):
            raise ValueError(
                f"theta_beta (intensity bandwidth) must be finite and > 0, got {theta_beta}."
            )
        if not 0.0 < step <= 1.0:
            raise ValueError(
                f"step eta must lie in (0, 1]: (1 - eta) Q + eta softmax(...) is a probability "
                f"vector only there (1 = CRF-RNN's update), got {step}."
            )
        self.spatial_weight, self.bilateral_weight = float(spatial_weight), float(bilateral_weight)
        self.theta_gamma, self.theta_alpha = float(theta_gamma), float(theta_alpha)
        self.theta_beta, self.step_size = float(theta_beta), float(step)
        self._classical: dict[str, Tensor] | None = None

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("unary_weight", Role.OBJECTIVE, doc="unary weights W (L, F)"),
            ParamSpec("unary_bias", Role.OBJECTIVE, doc="unary bias b (L,)"),
            ParamSpec("spatial_weight", Role.OBJECTIVE, Constraint.NONNEGATIVE, "w_s"),
            ParamSpec("bilateral_weight", Role.OBJECTIVE, Constraint.NONNEGATIVE, "w_b"),
            ParamSpec("compatibility", Role.OBJECTIVE, doc="label compatibility mu (L, L)"),
            ParamSpec("step", Role.HYPER, Constraint.POSITIVE, "mean-field step eta in (0, 1]"),
            ParamSpec("theta_gamma", Role.FIXED, Constraint.POSITIVE, "spatial bandwidth"),
            ParamSpec("theta_alpha", Role.FIXED, Constraint.POSITIVE, "bilateral bandwidth"),
            ParamSpec("theta_beta", Role.FIXED, Constraint.POSITIVE, "intensity bandwidth"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = _require_segmentation(problem)
        W, b = prob.unary_classifier()
        f64 = torch.float64
        L = prob.n_labels

        def scalar(v: float) -> Tensor:
            return torch.tensor(v, dtype=f64)

        self._classical = {
            "unary_weight": W,
            "unary_bias": b,
            "spatial_weight": scalar(self.spatial_weight),
            "bilateral_weight": scalar(self.bilateral_weight),
            "compatibility": 1.0 - torch.eye(L, dtype=f64),
            "step": scalar(self.step_size),
            "theta_gamma": scalar(self.theta_gamma),
            "theta_alpha": scalar(self.theta_alpha),
            "theta_beta": scalar(self.theta_beta),
        }
        return {k: v.clone() for k, v in self._classical.items()}

    def _param(self, name: str, c: Mapping[str, Tensor], like: Tensor) -> Tensor:
        if name in c:
            return c[name]
        if self._classical is None:
            raise ValueError("MeanFieldCRF is not bound to a problem; call classical_params first.")
        return self._classical[name].to(like)

    def kernels(self, x: Tensor, c: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The spatial ``(N, N)`` and bilateral ``(B, N, N)`` kernels of the images ``x``."""
        _, _, H, W = x.shape
        spatial = spatial_kernel(
            H, W, self._param("theta_gamma", c, x), dtype=x.dtype, device=x.device
        )
        bilateral = bilateral_kernel(
            x, self._param("theta_alpha", c, x), self._param("theta_beta", c, x)
        )
        return spatial, bilateral

    def unary_marginals(self, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        r"""The unary classifier alone, :math:`\operatorname{softmax}(W\phi(x) + b)` ``(B, L, H, W)``."""
        return torch.softmax(_unary(unary_features(x), p["unary_weight"], p["unary_bias"]), dim=1)

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> CRFState:
        feats = unary_features(x)
        spatial, bilateral = self.kernels(x, p)
        q = torch.softmax(_unary(feats, p["unary_weight"], p["unary_bias"]), dim=1)
        return CRFState(q=q, features=feats, spatial=spatial, bilateral=bilateral)

    def _state(self, s: CRFState, x: Tensor, p: Mapping[str, Tensor]) -> CRFState:
        """``s`` with the observation-only fields it carries, recomputed from ``x`` when it
        carries none or carries them in another precision or on another device (an iterate
        cast to float64 by the checks keeps its float32 kernels: aux fields are not blocks)."""
        carried = (s.features, s.spatial, s.bilateral)
        if any(t is None or t.dtype != x.dtype or t.device != x.device for t in carried):
            feats = unary_features(x)
            spatial, bilateral = self.kernels(x, p)
            return CRFState(q=s.q, features=feats, spatial=spatial, bilateral=bilateral)
        return s

    def logits(self, s: CRFState, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        r""":math:`U - \mu m` of the iterate ``s`` (the argument of the softmax)."""
        s = self._state(s, x, p)
        assert s.features is not None and s.spatial is not None and s.bilateral is not None
        m = _messages(s.q, s.spatial, s.bilateral, p["spatial_weight"], p["bilateral_weight"])
        return _unary(s.features, p["unary_weight"], p["unary_bias"]) - _compat(
            p["compatibility"], m
        )

    def _relax(self, s: CRFState, p: Mapping[str, Tensor], logits: Tensor) -> CRFState:
        eta = p["step"].clamp(max=1.0)
        q = (1.0 - eta) * s.q + eta * torch.softmax(logits, dim=1)
        return CRFState(q=q, features=s.features, spatial=s.spatial, bilateral=s.bilateral)

    def step(self, s: CRFState, x: Tensor, p: Mapping[str, Tensor], k: int) -> CRFState:
        s = self._state(s, x, p)
        return self._relax(s, p, self.logits(s, x, p))

    def estimate(self, s: CRFState) -> Tensor:
        return s.q

    def objective(self, s: CRFState, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        """The mean-field free energy :func:`free_energy` per image (θo from ``c``, or the
        classical values where the model learns them)."""
        s = self._state(s, x, c)
        assert s.features is not None and s.spatial is not None and s.bilateral is not None
        q, spatial, bilateral, feats = s.q, s.spatial, s.bilateral, s.features
        g = {n: self._param(n, c, q) for n in ("unary_weight", "unary_bias", "compatibility")}
        ws, wb = self._param("spatial_weight", c, q), self._param("bilateral_weight", c, q)
        unary = _unary(feats, g["unary_weight"], g["unary_bias"])
        m = _messages(q, spatial, bilateral, ws, wb)
        return free_energy(q, unary, m, g["compatibility"])

    # -- learned networks -------------------------------------------------------------------------
    def corrected_step(
        self, s: CRFState, x: Tensor, p: Mapping[str, Tensor], k: int, net: nn.Module
    ) -> CRFState:
        r"""Correction inside the softmax, :math:`Q^{(k)} = (1-\eta)Q + \eta\operatorname{softmax}
        (U - \mu m + \Delta(Q, I))`, so the iterate stays a probability map; Δ starts at 0."""
        s = self._state(s, x, p)
        delta = net(self.features(s, x, p)).reshape(s.q.shape)
        return self._relax(s, p, self.logits(s, x, p) + delta)

    def make_correction_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module:
        prob = _require_segmentation(problem)
        return _ConvHead(prob.n_labels + prob.channels, prob.n_labels, prob.size, hidden, zero=True)

    def make_inductive_bias_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module:
        prob = _require_segmentation(problem)
        return _ConvIteration(prob.n_labels, prob.channels, prob.size, hidden)

    def make_black_box_net(self, problem: ProblemSpec, target_params: int) -> nn.Module:
        prob = _require_segmentation(problem)
        return SegmentationBlackBoxNet(prob.channels, prob.n_labels, target_params)
