"""The classical solver of the power-allocation family, :class:`WMMSE` (Shi et al. 2011), with
its four paradigms' hooks (the recursion is in the family's docstring,
:mod:`lightning_unfold.algorithms.power`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, cast, runtime_checkable

import torch
from torch import Tensor, nn

from lightning_unfold.algorithms.power.iteration import (
    WMMSEState,
    _node_features,
    _receiver,
    graph_matrix,
    wmmse_update,
)
from lightning_unfold.algorithms.power.networks import (
    GraphIteration,
    PowerBlackBoxNet,
    UWMMSECorrection,
)
from lightning_unfold.algorithms.power.problem import (
    InterferenceChannel,
    PowerGains,
    sum_rate,
    sum_rate_kkt_residual,
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


@runtime_checkable
class WMMSECorrectionHook(Protocol):
    r"""A UWMMSE correction network that works *inside* the WMMSE step.

    :meth:`WMMSE.corrected_step` calls ``coefficients`` with the previous iterate
    :math:`s^{(k-1)}`, the channel ``H``, its :class:`PowerGains` (computed once per forward pass)
    and the problem's ``noise`` and ``p_max``, and expects ``(u, w_class, a, b)``, each
    ``(B, M)``: the WMMSE receiver and weight of :math:`v^{(k-1)}` (the ones :meth:`WMMSE.step`
    would compute) and the coefficients, :math:`a > 0`, of the bounded correction
    :math:`w = \max(a\odot w_{\text{class}} + b,\ \varepsilon\, a\odot w_{\text{class}})`
    (:meth:`WMMSE.corrected_step`). The v-update then runs with that :math:`w`. Reduces to WMMSE
    when :math:`a = 1, b = 0`.

    The check is structural: a module qualifies by having a callable ``coefficients`` (it need not
    inherit from this class); :class:`UWMMSECorrection` is one. A module without it is called on
    :meth:`WMMSE.features` instead and returns ``(a, b)``.
    """

    def coefficients(
        self, s: WMMSEState, H: Tensor, gains: PowerGains, noise: Tensor, p_max: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(u, w_class, a, b)`` for iterate ``s`` and channel ``H`` (see the class)."""
        ...


def _correction_hook(net: nn.Module) -> WMMSECorrectionHook | None:
    """``net`` as a :class:`WMMSECorrectionHook` when it has a callable ``coefficients``, else
    ``None``. One attribute lookup: ``isinstance`` on the runtime protocol gives the same answer
    but costs 4 to 19 µs per call on Python 3.11 (measured), once per layer of every forward."""
    hook = getattr(net, "coefficients", None)
    return cast(WMMSECorrectionHook, net) if callable(hook) else None


#: the default ε of :meth:`WMMSE.corrected_step`'s bound w >= ε a w_class: a user pushed to the
#: floor keeps at least 1 % of the weight its multiplicative correction gives it
WEIGHT_FLOOR = 1e-2


class WMMSE(Algorithm[WMMSEState]):
    r"""WMMSE power allocation (Shi et al. 2011) — the recursion is in
    :mod:`lightning_unfold.algorithms.power` (the package docstring).

    Args:
        relax: classical relaxation :math:`\gamma` of the v-update (> 0; 1 = the exact block
            minimiser, for which the sum-rate is non-decreasing; the projection onto
            :math:`[0, \sqrt{P_{\max}}]` keeps every :math:`\gamma` feasible).
        per_user_weights: the weights :math:`\alpha` as one entry per user (``(M,)``, tied to the
            network size) instead of one scalar; the ``objective`` paradigm uses this form.
        weight_floor: :math:`\varepsilon \in (0, 1]` of the bounded UWMMSE correction
            (:meth:`corrected_step`): a corrected MSE weight never falls below
            :math:`\varepsilon` times its multiplicative part, so no correction can switch every
            user off (default :data:`WEIGHT_FLOOR`).

    Parameters: θo = {``weights`` α > 0}, θh = {``relax`` γ ≥ 0}; the problem's ``noise`` and
    ``p_max`` are constants. ``estimate(s)`` is the amplitude vector ``v`` (powers ``v**2``).

    Speed: the power gains are computed once per forward pass and carried by the iterate
    (:class:`WMMSEState`). In float32 on x86 CPUs, switched-off users' amplitudes decay through
    subnormal numbers, on which the CPU is far slower (WMMSE-100 took 1.7x as long at 1000
    channels, measured); ``torch.set_flush_denormal(True)`` (or
    :func:`~lightning_unfold.training.study.flush_denormals`) avoids that.
    """

    name: ClassVar[str] = "wmmse"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="the sum-rate maximisation over powers 0 ≤ p ≤ P_max (non-convex)",
        fixed_point="a KKT point of the sum-rate over 0 ≤ p ≤ P_max (Shi et al. 2011, Thm. 3)",
        convex=False,
        averaged=None,
        descent="WMMSE never lowers the sum-rate: it is block-coordinate descent on the weighted "
        "MSE (Shi et al. 2011, Thm. 3)",
        linear_rate=None,
        certificate_tol=1e-3,
    )

    def certificate(self, s: WMMSEState, x: Tensor, p: Mapping[str, Tensor]) -> Certificate:
        r"""The KKT residual of the weighted sum-rate over :math:`0 \le p \le P_{\max}` at the
        powers :math:`p = v^2` of the iterate, worst user
        (:func:`~lightning_unfold.algorithms.power.problem.sum_rate_kkt_residual`):

        .. math:: r(s) = \max_k\big|q_k - \Pi_{[0,1]}(q_k + \hat g_k)\big|,\qquad
            q_k = \frac{p_k}{P_{\max}},\quad
            \hat g_k = \frac{a_k - b_k}{a_k + b_k},

        :math:`a_k - b_k = \partial R_\alpha/\partial p_k` split into the user's own gain and
        the harm to the others. Shi et al. (2011, Thm. 3) show that WMMSE's limit points are
        stationary points of the (weighted) sum-rate problem in the amplitudes :math:`v`; where
        every :math:`v_k > 0` these are exactly the KKT points in the powers measured here, while
        :math:`v_k = 0` is stationary in :math:`v` whatever the gradient (see ``stalled``
        below). This residual is 0 exactly at the KKT points in :math:`p`, reads
        :math:`v` alone (so it scores any model's estimate, whatever its u and w), and is
        invariant to a common rescaling of the gains, the noise and :math:`P_{\max}`.

        Default tolerance ``theory.certificate_tol = 1e-3``: the residual is a fraction (of the
        gradient's size, or of :math:`P_{\max}`), so 1e-3 means every user's gain and harm
        balance to 0.1 % or its power lies within 0.1 % of :math:`P_{\max}` of the bound the
        gradient points to. Measured on 8 geometric channels with M = 20 at
        :math:`\sigma^2 = 10^{-9.1}`: WMMSE's worst residual is 0.42 after 10 iterations, 0.49
        after 1000, 0.33 after 10 000, 0.22 after 200 000 (median 7.5e-7) and 0.04 after 500 000
        (median 1.5e-12) while the sum-rate keeps rising (81.56 → 83.79 bit/s/Hz from 1000 to
        500 000 iterations): WMMSE approaches KKT points, slowly, and its fixed-point residual
        (4e-4 after 1000 iterations) understates how far it still is. In two of those eight
        channels one user's amplitude underflowed to exactly 0 with a positive gradient
        (residual 0.08 and 0.006 after 10⁶ iterations): WMMSE stalls there, and
        ``stalled`` marks such samples."""
        alpha = self._weights(p["weights"], x)
        gains = PowerGains.for_iterate(s, x)
        per_user = sum_rate_kkt_residual(s.v, x, p["noise"], p["p_max"], alpha, gains=gains)
        return Certificate(
            "sum-rate KKT residual over 0 ≤ p ≤ P_max (normalised, worst user)",
            per_user.amax(dim=1),
            stalled=((s.v == 0) & (per_user > 0)).any(dim=1),
            stall_reason="a user whose amplitude reached exactly 0 stays off under the WMMSE "
            "update (its receiver u = 0 gives v = 0), although switching it on raises the "
            "sum-rate (its gradient is positive): a fixed point of WMMSE that is stationary in "
            "the amplitudes v but not a KKT point in the powers p",
        )

    objective_variants: ClassVar[tuple[str, ...]] = ("per_user",)

    def __init__(
        self, relax: float = 1.0, per_user_weights: bool = False, weight_floor: float = WEIGHT_FLOOR
    ) -> None:
        if not (math.isfinite(relax) and relax > 0):
            raise ValueError(
                f"relax (γ of the v-update) must be finite and > 0, got {relax}; 1 is the "
                "classical WMMSE step."
            )
        if not (math.isfinite(weight_floor) and 0 < weight_floor <= 1):
            raise ValueError(
                f"weight_floor (ε of the bounded correction w >= ε a w_class) must be in (0, 1], "
                f"got {weight_floor}: ε = 0 lets a correction switch every user off, where the "
                f"power and the gradient are exactly zero (default {WEIGHT_FLOOR})."
            )
        self.relax, self.per_user_weights = float(relax), bool(per_user_weights)
        self.weight_floor = float(weight_floor)

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec(
                "weights",
                Role.OBJECTIVE,
                Constraint.POSITIVE,
                "weights α of the weighted sum-rate the iteration ascends (1: the sum-rate)",
            ),
            ParamSpec(
                "relax", Role.HYPER, Constraint.NONNEGATIVE, "relaxation γ_k of the v-update"
            ),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = require_problem(problem, InterferenceChannel, type(self).__name__)
        f64 = torch.float64
        n = prob.M if self.per_user_weights else 1
        return {
            "weights": torch.ones(n, dtype=f64),
            "relax": torch.tensor(self.relax, dtype=f64),
        }

    def objective_form(self, variant: str | None) -> Algorithm[Any]:
        """The ``objective`` paradigm learns per-user weights α (variant ``"per_user"``)."""
        if variant not in (None, "per_user"):
            raise ValueError(
                f"WMMSE has no objective-paradigm variant {variant!r}; valid: "
                f"{list(self.objective_variants)} (a scalar α cancels out of the v-update, so "
                "learning it would learn nothing)."
            )
        return WMMSE(relax=self.relax, per_user_weights=True, weight_floor=self.weight_floor)

    @staticmethod
    def _weights(alpha: Tensor, x: Tensor) -> Tensor:
        m = x.shape[-1]
        if alpha.numel() not in (1, m):
            raise ValueError(
                f"This WMMSE model has per-user weights α for M = {alpha.numel()} pairs but x has "
                f"M = {m}: per-user parameters do not transfer to another network size. Run it "
                f"on {alpha.numel()}-pair networks, or use a model whose parameters are shared "
                "across users (paradigm 'hyperparameters', 'correction', 'inductive_bias' or the "
                "black box), which run at any M."
            )
        return alpha

    @torch.no_grad()
    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> WMMSEState:
        v = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device) * p["p_max"].sqrt()
        gains = PowerGains.of(x)  # once per forward: every layer reuses them
        u, w = _receiver(v, x, p["noise"], gains)
        return WMMSEState(u=u, w=w, v=v, gains=gains)

    def _v_step(
        self,
        u: Tensor,
        w: Tensor,
        s: WMMSEState,
        x: Tensor,
        p: Mapping[str, Tensor],
        gains: PowerGains,
    ) -> WMMSEState:
        alpha = self._weights(p["weights"], x)
        v = wmmse_update(u, w, s.v, x, alpha, p["relax"], p["p_max"].sqrt(), gains=gains)
        return WMMSEState(u=u, w=w, v=v, gains=gains)

    def step(self, s: WMMSEState, x: Tensor, p: Mapping[str, Tensor], k: int) -> WMMSEState:
        gains = PowerGains.for_iterate(s, x)  # shared by the receiver and the v-update
        u, w = _receiver(s.v, x, p["noise"], gains)
        return self._v_step(u, w, s, x, p, gains)

    def corrected_step(
        self, s: WMMSEState, x: Tensor, p: Mapping[str, Tensor], k: int, net: nn.Module
    ) -> WMMSEState:
        r"""UWMMSE with a bounded correction: the classical v-update with the weights

        .. math:: w = \max\big(a\odot w_{\text{class}} + b,\ \varepsilon\,a\odot
            w_{\text{class}}\big),\qquad a > 0,

        :math:`(a, b)` from the correction network, :math:`\varepsilon` = ``weight_floor``.

        **Why the bound.** The v-update
        :math:`\hat v_i = w_i u_i h_{ii} / \sum_j w_j u_j^2 h_{ji}^2` is a ratio: it is unchanged
        when every :math:`w_j` is multiplied by one constant, and :math:`\hat v_i = 0` exactly
        when :math:`w_i = 0`. Chowdhury et al.'s :math:`w = \max(a w_{\text{class}} + b, 0)` lets
        a negative :math:`b` set every weight to 0; then every amplitude is 0, every later
        receiver :math:`u = h v / I` is 0, so every later layer returns 0 too (all-off is a fixed
        point of WMMSE), and the clamp passes no gradient to the parameters: training stops
        there for good (observed: i.i.d. Rayleigh channels, sum-rate 0 from layer 1 on). With the
        floor, :math:`w_i \ge \varepsilon a_i w_{\text{class},i} > 0`, so every amplitude
        that was positive stays positive, a user can be pushed down by a factor ε per layer
        relative to the others (switched off in effect, geometrically over the layers) but
        never all users at once: if every user sits on the floor, :math:`w = \varepsilon a
        \odot w_{\text{class}}` gives the same v-update as :math:`w = a\odot w_{\text{class}}`
        — the multiplicative correction, WMMSE itself when :math:`a = 1` — and :math:`w` keeps a
        non-zero gradient in :math:`a` (and so in the network) everywhere. Correction zero
        (:math:`a = 1, b = 0`) gives :math:`w = w_{\text{class}}` exactly, so the classical-init
        equivalence is untouched.

        A network with the in-step hook of :class:`WMMSECorrectionHook` (such as
        :class:`UWMMSECorrection`) reads the quantities this step computes anyway (the received
        powers :math:`h_{ij}^2 v_j^2`, :math:`w_{\text{class}}`) through its ``coefficients``;
        any other module gets ``net(features(s^{(k-1)}))`` and returns ``(a, b)``. A non-positive
        :math:`a` from such a module voids the bound; the weights are then still clamped at 0.
        """
        gains = PowerGains.for_iterate(s, x)
        hook = _correction_hook(net)
        if hook is not None:
            u, w, a, b = hook.coefficients(s, x, gains, p["noise"], p["p_max"])
        else:
            u, w = _receiver(s.v, x, p["noise"], gains)
            a, b = net(self.features(s, x, p))
        scaled = a * w
        bounded = torch.maximum(scaled + b, self.weight_floor * scaled).clamp_min(0.0)
        return self._v_step(u, bounded, s, x, p, gains)

    def objective(self, s: WMMSEState, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        """:math:`-R(v; H)` per sample (the negative sum-rate)."""
        return -sum_rate(s.v, x, c["noise"], gains=PowerGains.for_iterate(s, x))

    def estimate_objective(self, estimate: Tensor, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        """:math:`-R(v; H)` of amplitudes ``v`` alone (for the black box trained unsupervised)."""
        return -sum_rate(estimate, x, c["noise"])

    def estimate(self, s: WMMSEState) -> Tensor:
        return s.v

    def features(self, s: WMMSEState, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        r"""``(B, 4M + M²)``: the node features of ``s`` (:math:`v/\sqrt P`, :math:`\log(1+w)`,
        :math:`u h_{ii} v`, :math:`G_{ii}`) and the graph :math:`G` = :func:`graph_matrix`, flat."""
        b = x.shape[0]
        node = _node_features(s, x, p["noise"], p["p_max"])
        G = graph_matrix(x, p["noise"], p["p_max"])
        return torch.cat([node.reshape(b, -1), G.reshape(b, -1)], dim=1)

    def make_correction_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module:
        require_problem(problem, InterferenceChannel, type(self).__name__)
        return UWMMSECorrection(hidden)

    def make_inductive_bias_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module:
        prob = require_problem(problem, InterferenceChannel, type(self).__name__)
        return GraphIteration(hidden, noise=prob.noise_power, p_max=prob.p_max)

    def make_black_box_net(self, problem: ProblemSpec, target_params: int) -> nn.Module:
        prob = require_problem(problem, InterferenceChannel, type(self).__name__)
        return PowerBlackBoxNet(target_params, noise=prob.noise_power, p_max=prob.p_max)
