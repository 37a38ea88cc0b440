r"""Power allocation in an interference network: WMMSE and its unfoldings (UWMMSE).

Problem (Shi et al. 2011; Chowdhury et al. 2021, "Unfolding WMMSE using graph neural networks"):
:math:`M` transmitter–receiver pairs share one band. The observation is the channel matrix
:math:`H \in \mathbb R_{\ge 0}^{M\times M}` of amplitude gains, :math:`h_{ij}` from transmitter
:math:`j` to receiver :math:`i` (the power gain is :math:`h_{ij}^2`). With transmit amplitudes
:math:`v \in [0, \sqrt{P_{\max}}]^M` (powers :math:`v_i^2`) and noise power :math:`\sigma^2`, the
sum-rate is

.. math:: R(v; H) = \sum_{i=1}^M \log_2\Big(1 + \frac{h_{ii}^2 v_i^2}
    {\sigma^2 + \sum_{j\ne i} h_{ij}^2 v_j^2}\Big)\quad\text{(bit/s/Hz)},

and the solver's objective is :math:`\mathcal L(s; H) = -R(v; H)` per sample, so
``supervision="unsupervised"`` trains on the sum-rate (as UWMMSE does).

WMMSE (Shi et al. 2011) maximises the weighted sum-rate :math:`\sum_i\alpha_i\log_2(1+\mathrm{SINR}_i)`
through the equivalent weighted-MSE problem, by block-coordinate descent on the iterate
:math:`s = (u, w, v)` (receive coefficients, MSE weights, transmit amplitudes). Iteration
:math:`k` of :class:`WMMSE`, with :math:`I_i = \sigma^2 + \sum_j h_{ij}^2 v_j^2` the power received
by receiver :math:`i` (signal included):

.. math::
    u_i &= \frac{h_{ii} v_i}{I_i} \qquad\text{(MMSE receiver for the current } v\text{)},\\
    w_i &= \frac{1}{1 - u_i h_{ii} v_i} = \frac{I_i}{I_i - h_{ii}^2 v_i^2} = 1 + \mathrm{SINR}_i,\\
    \hat v_i &= \frac{\alpha_i w_i u_i h_{ii}}{\sum_j \alpha_j w_j u_j^2 h_{ji}^2},\qquad
    v_i = \Pi_{[0,\sqrt{P_{\max}}]}\big((1-\gamma_k) v_i^{(k-1)} + \gamma_k \hat v_i\big),

all in terms of the *previous* :math:`v` (the new :math:`u` and :math:`w` first, then :math:`v`).
Classical values: :math:`\alpha = 1` (the sum-rate), :math:`\gamma_k = 1` (the exact block
minimiser; the sum-rate is then non-decreasing in :math:`k`, Shi et al. 2011, Thm. 3). The
relaxation :math:`\gamma \in (0, 1]` keeps the projected v-update a convex combination of
feasible points; :math:`\gamma > 1` (over-relaxation) is allowed but the monotonicity guarantee
only holds for :math:`\gamma = 1`. Initialisation: :math:`v^{(0)} = \sqrt{P_{\max}}` (full power),
:math:`u^{(0)}, w^{(0)}` from the two formulas above. The projection makes
:math:`0 \le v \le \sqrt{P_{\max}}` hold at every layer of every paradigm that keeps the iteration.

The estimate compared across layers is the amplitude vector :math:`v` (``(B, M)``; the powers are
:math:`v^2`). There is no ground truth: the targets of :class:`InterferenceChannel` are NaN
(unlabelled) and the problem is scored by its sum-rate alone.

Paradigms (:class:`~lightning_unfold.core.UnfoldedModel`):

``hyperparameters``
    :math:`\gamma_k` learned per layer (the step/relaxation of the v-update), K parameters.
``objective``
    per-user weights :math:`\alpha^{(k)} \in \mathbb R_{>0}^M` of the weighted sum-rate that the
    iteration ascends, learned per layer with :math:`\gamma_k` (the training loss stays the plain
    sum-rate). They are tied to the network size :math:`M`: such a model cannot run at another M
    (a clear error says so). The classical form uses one scalar :math:`\alpha = 1` for all users.
``correction`` (**UWMMSE**)
    :math:`w_i = a_i\, w_{i,\text{class}} + b_i` before the v-update, with :math:`a = 1 + \hat a`,
    :math:`\hat a, b` from two permutation-equivariant graph networks of :math:`(s^{(k-1)}, H)`
    (:class:`UWMMSECorrection`, zero at initialisation), weights shared across users.
``inductive_bias``
    each iteration replaced by a graph network that outputs the next :math:`(u, w, v)`
    (:class:`GraphIteration`).

and the black box :class:`PowerBlackBoxNet`, a permutation-equivariant graph network
:math:`H \mapsto v`. The graph networks share their weights across users, so a model trained at
:math:`M = 20` runs unchanged at any M. See ``docs/power_allocation.md``.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from lightning_unfold.core.algorithm import (
    Algorithm,
    Constraint,
    ParamSpec,
    ProblemSpec,
    Role,
    SolverTheory,
    as_operator,
    require_problem,
    seeded_rng,
)
from lightning_unfold.core.iterate import aux_field, require_finite
from lightning_unfold.core.metrics import MeanOf, ProblemMetric

__all__ = [
    "CHANNEL_MODELS",
    "WMMSE",
    "GraphConv",
    "GraphIteration",
    "InterferenceChannel",
    "PowerBlackBoxNet",
    "PowerGains",
    "UWMMSECorrection",
    "WMMSEState",
    "full_power",
    "graph_matrix",
    "sum_rate",
    "user_rates",
    "wmmse_update",
]

#: channel models of :class:`InterferenceChannel`
CHANNEL_MODELS: tuple[str, ...] = ("geometric", "rayleigh")

#: node features per user that the graph networks read from an iterate (see :func:`_node_features`)
_N_NODE = 4


def user_rates(
    v: Tensor, H: Tensor, noise: Tensor | float, *, gains: PowerGains | None = None
) -> Tensor:
    r"""Per-user rates :math:`\log_2(1+\mathrm{SINR}_i)` (bit/s/Hz), ``(B, M)``.

    ``v`` ``(B, M)`` are transmit amplitudes (powers :math:`v^2`), ``H`` ``(B, M, M)`` amplitude
    gains :math:`h_{ij}` (transmitter j → receiver i), ``noise`` the noise power :math:`\sigma^2`,
    ``gains`` = :meth:`PowerGains.of` ``(H)`` when the caller has them already.
    The interference :math:`\sum_{j\ne i} h_{ij}^2 v_j^2` is summed over the cross links only
    (:class:`PowerGains`), never as a total minus the own signal, which rounding would lose when
    the own signal dominates.
    """
    g = PowerGains.of(H) if gains is None else gains
    power = v.pow(2)
    return torch.log2(1.0 + g.direct * power / (noise + g.interference(power)))


def sum_rate(
    v: Tensor, H: Tensor, noise: Tensor | float, *, gains: PowerGains | None = None
) -> Tensor:
    r"""Per-sample sum-rate :math:`\sum_i\log_2(1+\mathrm{SINR}_i)` (bit/s/Hz), ``(B,)``
    (arguments as :func:`user_rates`)."""
    return user_rates(v, H, noise, gains=gains).sum(dim=1)


def full_power(H: Tensor, p_max: float = 1.0) -> Tensor:
    r"""The full-power baseline :math:`v = \sqrt{P_{\max}}` for every user, ``(B, M)``."""
    return torch.full(H.shape[:2], math.sqrt(p_max), dtype=H.dtype, device=H.device)


@dataclass(frozen=True)
class WMMSEState:
    """WMMSE's iterate: receive coefficients ``u``, MSE weights ``w``, amplitudes ``v``, each
    ``(B, M)``. The estimate is ``v`` (transmit amplitudes; powers are ``v**2``).

    ``gains`` (auxiliary, not a block: :func:`~lightning_unfold.core.iterate.aux_field`) are the
    :class:`PowerGains` of the channel the iterate belongs to, computed once by
    :meth:`WMMSE.init` and handed on by every layer; a state built without them (or used with
    another channel) has them recomputed (:meth:`PowerGains.for_iterate`)."""

    u: Tensor
    w: Tensor
    v: Tensor
    gains: PowerGains | None = aux_field()


def _row_times(r: Tensor, A: Tensor) -> Tensor:
    r"""``(B, M) × (B, M, N) → (B, N)``: :math:`(rA)_j = \sum_i r_i A_{ij}` per sample.

    Written as a batched row-vector product, which a CPU runs several times faster than the
    broadcast-multiply-and-sum it equals (``A`` may be a transposed view)."""
    return torch.bmm(r.unsqueeze(1), A).squeeze(1)


@dataclass(frozen=True)
class PowerGains:
    r"""The power gains of a batch of channels, split into direct and cross links.

    ``h`` ``(B, M)``: the direct amplitude gains :math:`h_{ii}`; ``direct`` = :math:`h_{ii}^2`;
    ``cross`` ``(B, M, M)``: :math:`h_{ij}^2` for :math:`i \ne j` and 0 on the diagonal. Sums
    over interferers then read ``cross`` and need no subtraction of the own term (which loses
    the interference to rounding when a user's own signal dominates).

    They depend on the channel alone, so a forward pass computes them once: :meth:`WMMSE.init`
    stores them in the iterate (``source`` is the channel tensor they were computed from) and
    every layer reuses them. Recomputing them per layer had cost 40 % of a WMMSE iteration at
    B = 1000 (the squares of a ``(B, M, M)`` tensor, measured).
    """

    h: Tensor
    direct: Tensor
    cross: Tensor
    source: Tensor | None = field(default=None, compare=False, repr=False)

    @staticmethod
    def of(H: Tensor) -> PowerGains:
        """The gains of amplitude channels ``H`` ``(B, M, M)``."""
        cross = H.pow(2)
        h = H.diagonal(dim1=1, dim2=2).contiguous()  # contiguous: strided work is slow
        cross.diagonal(dim1=1, dim2=2).zero_()
        return PowerGains(h=h, direct=h.pow(2), cross=cross, source=H)

    @staticmethod
    def for_iterate(s: WMMSEState, H: Tensor) -> PowerGains:
        """The gains that iterate ``s`` carries when they were computed from this very ``H``
        (identity, not equality: no comparison of the entries), else freshly computed."""
        g = s.gains
        return g if g is not None and g.source is H else PowerGains.of(H)

    @functools.cached_property
    def cross_t(self) -> Tensor:
        r"""``cross`` transposed and contiguous, :math:`(C^\top)_{ji} = h_{ij}^2`, made on first
        use: a row times a contiguous matrix runs about twice as fast on a CPU as a row times a
        transposed view (measured at B = 64 to 6400), and a forward pass reuses it per layer."""
        return self.cross.transpose(1, 2).contiguous()

    def interference(self, power: Tensor) -> Tensor:
        r""":math:`\sum_{j\ne i} h_{ij}^2 p_j` ``(B, M)`` for transmit powers ``power`` ``(B, M)``."""
        return _row_times(power, self.cross_t)


def _receiver(
    v: Tensor, H: Tensor, noise: Tensor, gains: PowerGains | None = None
) -> tuple[Tensor, Tensor]:
    r"""The MMSE receiver and MSE weight for amplitudes ``v``: :math:`(u, w)` (module docstring);
    ``gains`` = :meth:`PowerGains.of` ``(H)`` when the caller has them already."""
    g = PowerGains.of(H) if gains is None else gains
    v2 = v.pow(2)
    u, w, _ = _receiver_given_interference(v, v2, g, g.interference(v2), noise)
    return u, w


def _receiver_given_interference(
    v: Tensor, v2: Tensor, g: PowerGains, interference: Tensor, noise: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    r""":math:`(u, w, I)` from the interference :math:`\sum_{j\ne i} h_{ij}^2 v_j^2`
    (``v2`` = ``v**2``): the receiver :math:`u = h_{ii}v_i/I_i`, the weight
    :math:`w = I_i/(I_i - h_{ii}^2 v_i^2)` and the received power
    :math:`I_i = \sigma^2 + \sum_j h_{ij}^2 v_j^2` (signal included). The denominator of
    :math:`w` is noise plus interference, formed as such (no cancellation)."""
    rest = noise + interference
    received = rest + g.direct * v2
    return g.h * v / received, received / rest, received


def wmmse_update(
    u: Tensor,
    w: Tensor,
    v_prev: Tensor,
    H: Tensor,
    alpha: Tensor,
    gamma: Tensor,
    vmax: Tensor,
    *,
    gains: PowerGains | None = None,
) -> Tensor:
    r"""The projected, relaxed v-update
    :math:`\Pi_{[0,\sqrt{P}]}((1-\gamma)v^{(k-1)} + \gamma\,\alpha w u h_{ii} / \sum_j \alpha_j w_j
    u_j^2 h_{ji}^2)`; ``gains`` = :meth:`PowerGains.of` ``(H)`` when the caller has them."""
    g = PowerGains.of(H) if gains is None else gains
    aw = alpha * w
    c = aw * u.pow(2)
    den = _row_times(c, g.cross) + g.direct * c  # Σ_j h_ji² α_j w_j u_j²
    v_hat = aw * u * g.h / den.clamp_min(torch.finfo(den.dtype).tiny)
    v = v_prev + gamma * (v_hat - v_prev)
    return torch.minimum(v.clamp_min(0.0), vmax)


def graph_matrix(H: Tensor, noise: Tensor | float, p_max: Tensor | float) -> Tensor:
    r"""The graph the networks aggregate over: :math:`G_{ij} = \log_{10}(1 + h_{ij}^2 P_{\max}/
    \sigma^2)/10`, ``(B, M, M)``.

    Non-negative and monotone in each link's gain, zero for links below the noise, about 0.1 per
    10 dB of SNR: the raw gains span twenty orders of magnitude, which no network digests.
    """
    return torch.log10(1.0 + H.pow(2) * (p_max / noise)) / 10.0


def _node_features(s: WMMSEState, H: Tensor, noise: Tensor, p_max: Tensor) -> Tensor:
    r"""Per-user features ``(B, M, 4)``: :math:`v/\sqrt{P}`, :math:`\log(1+w)`,
    :math:`u h_{ii} v` (:math:`= \mathrm{SINR}/(1+\mathrm{SINR})` classically), :math:`G_{ii}`."""
    h_ii = H.diagonal(dim1=1, dim2=2)
    g_ii = graph_matrix(h_ii, noise, p_max)
    return torch.stack(
        [s.v / p_max.sqrt(), torch.log1p(s.w.clamp_min(0.0)), s.u * h_ii * s.v, g_ii], dim=2
    )


def _unpack(features: Tensor, n_node: int) -> tuple[Tensor, Tensor]:
    """Inverse of the packing ``[node (B, M, n_node) flat, G (B, M, M) flat]``; M from the width."""
    width = features.shape[1]
    m = (math.isqrt(n_node * n_node + 4 * width) - n_node) // 2
    if m < 1 or m * n_node + m * m != width:
        raise ValueError(
            f"Graph features of width {width} are not [M·{n_node} node features, M·M graph] "
            "for any M; pass WMMSE.features(...)."
        )
    b = features.shape[0]
    node = features[:, : m * n_node].reshape(b, m, n_node)
    return node, features[:, m * n_node :].reshape(b, m, m)


class GraphConv(nn.Module):
    r"""One permutation-equivariant message-passing layer on a dense graph ``G`` ``(B, M, M)``:

    .. math:: X' = \operatorname{diag}(G)\,X W_0 + \tfrac1M G X W_1 + \mathbf 1 b^\top,

    :math:`X` ``(B, M, F_{in})`` node features, :math:`W_0, W_1 \in \mathbb R^{F_{in}\times F_{out}}`
    shared across users, so the layer works for any M and permuting the users permutes the output.
    The aggregation is a mean (:math:`1/M`), so feature scales do not grow with the network size.
    """

    def __init__(self, f_in: int, f_out: int, *, zero: bool = False) -> None:
        super().__init__()
        self.self_weight = nn.Linear(f_in, f_out, bias=True)
        self.neigh_weight = nn.Linear(f_in, f_out, bias=False)
        if zero:
            for p in self.parameters():
                nn.init.zeros_(p)

    def forward(self, X: Tensor, G: Tensor) -> Tensor:
        diag = G.diagonal(dim1=1, dim2=2).unsqueeze(2)
        # G X W1 = G (X W1) = (G X) W1: aggregate on the narrower side (M² · min(F_in, F_out))
        if X.shape[-1] <= self.neigh_weight.out_features:
            neigh = self.neigh_weight(G @ X)
        else:
            neigh = G @ self.neigh_weight(X)
        return diag * self.self_weight(X) + neigh / G.shape[-1]


class _GNN(nn.Module):
    """``layers`` GraphConvs, ReLU between; the last one zero-initialised when ``zero_last``."""

    def __init__(
        self, f_in: int, hidden: int, f_out: int, *, layers: int = 2, zero_last: bool = False
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"A graph network needs layers >= 1, got {layers}.")
        dims = [f_in] + [hidden] * (layers - 1) + [f_out]
        self.convs = nn.ModuleList(
            GraphConv(a, b, zero=zero_last and i == layers - 1)
            for i, (a, b) in enumerate(itertools.pairwise(dims))
        )

    def forward(self, X: Tensor, G: Tensor) -> Tensor:
        for i, conv in enumerate(self.convs):
            X = conv(X, G)
            if i < len(self.convs) - 1:
                X = torch.relu(X)
        return X


def _decibel(ratio: Tensor) -> Tensor:
    r""":math:`\log_{10}(1 + r)/10`: a power ratio in units of 100 dB (0.1 per 10 dB), the scale
    on which the graph networks read powers (the raw gains span twenty orders of magnitude)."""
    return torch.log1p(ratio) / (10.0 * math.log(10.0))


class UWMMSECorrection(nn.Module):
    r"""UWMMSE's learned correction (Chowdhury et al. 2021): a permutation-equivariant graph
    network of the previous iterate :math:`s^{(k-1)} = (u, w, v)` and the channel :math:`H`, one
    shared trunk and two heads, that outputs the coefficients of

    .. math:: w = \max(a\odot w_{\text{class}} + b,\ 0),\qquad a = e^{\phi_a},\quad b = \phi_b.

    Both message-passing layers aggregate over the *received-power graph* of the current
    amplitudes, :math:`T_{ij} = h_{ij}^2 v_j^2` for :math:`j \ne i` (the interference receiver
    i gets from transmitter j, which WMMSE's receiver sums anyway), normalised by the total
    received power
    :math:`I_i = \sigma^2 + \sum_j T_{ij}`:

    .. math::
        Z &= \operatorname{ReLU}\big(X W_0 + D_I^{-1} T\, Y W_1 + c\big)
            \qquad\text{(trunk: incoming, "who reaches me")},\\
        \phi_a &= Z v_0 + (D_I^{-1} T)^\top Z v_1 + d_a,\qquad \phi_b = Z v_2 + d_b
            \qquad\text{(heads; } \phi_a \text{ also outgoing, "whom I reach")},

    :math:`X` ``(B, M, 4)`` the node features :math:`v/\sqrt P`, :math:`\ln w_{\text{class}}/10`
    (the current rate in nats/10), the direct link :math:`\mathrm{dB}(h_{ii}^2 P/\sigma^2)` and
    the received power :math:`\mathrm{dB}(I_i/\sigma^2)` (:func:`_decibel`: 0.1 per 10 dB), and
    :math:`Y` ``(B, M, 2)`` the neighbour features :math:`v_j/\sqrt P` and
    :math:`\mathrm{dB}(h_{jj}^2 P/\sigma^2)`. The weights :math:`W_0, W_1, v_0, v_1, v_2, c, d`
    are shared across users, so permuting the users permutes :math:`(a, b)` and the network runs
    at any M. Its inputs are shares of received power, rates and per-link SNRs — none grows with
    the network size (a sum over users would).

    **Cost.** One layer costs two batched row products with the ``(B, M, M)`` gain matrix on top
    of the WMMSE step (of widths 3 — the received powers and the incoming messages in one — and
    1), two dense products of width ``hidden`` over the B·M users, and about 25 element-wise,
    stacking and view operations (a dispatch trace: 62 per layer against the step's 28); the gains :math:`h_{ij}^2` and :math:`w_{\text{class}}` are the
    step's own (:meth:`coefficients`). In all, one layer costs about 3.0 WMMSE iterations on a
    CPU (measured at B = 1000, subnormals flushed), so a K = 4 UWMMSE runs in about a sixth of
    WMMSE-100's time there (``docs/power_allocation.md`` says what bounds it).

    The heads are zero-initialised, so :math:`a = 1, b = 0` and the untrained model *is* WMMSE
    (:math:`w_{\text{class}} \ge 1`, the clamp is inactive). The clamp keeps :math:`w` a
    non-negative MSE weight; :math:`a > 0` keeps the multiplicative part from flipping the sign
    of a weight.
    """

    #: node features (amplitude, rate, direct link, received power), then incoming messages of
    #: the neighbour features (amplitude, direct link)
    N_NODE, N_NEIGHBOUR = 4, 2

    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"UWMMSECorrection needs hidden >= 1, got {hidden}.")
        #: [W_0; W_1] and c: the trunk reads [X, D_I^{-1} T Y]
        self.trunk = nn.Linear(self.N_NODE + self.N_NEIGHBOUR, hidden)
        #: rows (v_0, v_2, v_1) and d: phi_a's and phi_b's self terms, then phi_a's message
        self.heads = nn.Linear(hidden, 3)
        for param in self.heads.parameters():
            nn.init.zeros_(param)

    def coefficients(
        self, s: WMMSEState, H: Tensor, gains: PowerGains, noise: Tensor, p_max: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""``(u, w_class, a, b)``, each ``(B, M)``, for iterate ``s``, amplitude gains ``H`` and
        their :class:`PowerGains` ``gains``: the WMMSE receiver and weight of :math:`v^{(k-1)}`
        (:func:`_receiver`'s) and the correction's coefficients."""
        noise = noise.to(H.dtype)
        b, m = s.v.shape
        v2 = s.v.pow(2)
        amp = s.v / p_max.to(H.dtype).sqrt()
        link = _decibel(gains.direct * (p_max / noise))
        # one product with the (transposed) cross gains gives the interference and the
        # incoming messages, Σ_{j≠i} h_ij² v_j² [1, Y_j]; a few rows times the gain matrix is
        # several times faster on a CPU than (B, M, M) @ (B, M, F)
        rows = torch.stack([v2, amp * v2, link * v2], dim=1)  # (B, 3, M)
        interference, msg_amp, msg_link = torch.bmm(rows, gains.cross_t).unbind(1)
        u, w, received = _receiver_given_interference(s.v, v2, gains, interference, noise)
        inv = received.reciprocal()
        # features channel-first, (6, B·M): the small dense layers are then (F_out × 6) @
        # (6 × B·M) products, far faster on a CPU than (B·M × 6) @ (6 × F_out) for small F_out
        feats = torch.stack(
            [
                amp,
                torch.log(w) / 10.0,
                link,
                torch.log(received / noise) / (10.0 * math.log(10.0)),  # dB(I / σ²)
                msg_amp * inv,  # Σ_j T_ij Y_j / I_i
                msg_link * inv,
            ],
            dim=0,
        ).reshape(self.N_NODE + self.N_NEIGHBOUR, b * m)
        z = torch.relu(torch.addmm(self.trunk.bias.unsqueeze(1), self.trunk.weight, feats))
        out = torch.addmm(self.heads.bias.unsqueeze(1), self.heads.weight, z)
        self_a, phi_b, msg = out.reshape(3, b, m).unbind(0)
        # Σ_{i≠j} T_ij (Z v_1)_i / I_i = v_j² Σ_{i≠j} h_ij² (Z v_1)_i / I_i
        phi_a = torch.addcmul(self_a, _row_times(msg * inv, gains.cross), v2)
        return u, w, torch.exp(phi_a.clamp(-10.0, 10.0)), phi_b

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        raise TypeError(
            "UWMMSECorrection reads the WMMSE step's own quantities: call it through "
            "WMMSE.corrected_step (or coefficients(s, H, H**2, noise, p_max)), not on features."
        )


class GraphIteration(nn.Module):
    r"""The inductive-bias layer: a 2-layer graph network :math:`\Phi` that outputs the next
    :math:`(u, w, v)` while keeping their meaning,

    .. math::
        v &= \sqrt{P}\,\sigma\big(\operatorname{logit}(\bar v^{(k-1)}) + \Phi_v(X, G)\big),\qquad
        \bar v = \operatorname{clip}(v/\sqrt P, 10^{-3}, 1 - 10^{-3}),\\
        u &= u_{\text{MMSE}}(v),\qquad w = w_{\text{class}}(u, v)\,e^{\Phi_w(X, G)},

    (the amplitudes stay in :math:`[0, \sqrt P]` by construction, :math:`u` is the MMSE receiver
    of the new :math:`v`, :math:`w > 0` a learned MSE weight passed to the next layer). There is
    no closed-form v-update: the network is the iteration. Φ's last layer is zero-initialised, so
    an untrained layer keeps :math:`v` (full power at layer 1) — not the classical step.
    The core calls it with ``(features, flat iterate)`` and it returns the flat next iterate.
    """

    def __init__(self, hidden: int = 16, *, noise: float = 1.0, p_max: float = 1.0) -> None:
        super().__init__()
        self.phi = _GNN(_N_NODE, hidden, 2, zero_last=True)
        self.register_buffer("noise", torch.tensor(float(noise)))
        self.register_buffer("p_max", torch.tensor(float(p_max)))

    def forward(self, features: Tensor, flat_iterate: Tensor) -> Tensor:
        X, G = _unpack(features, _N_NODE)
        b, m = X.shape[:2]
        vmax = self.p_max.sqrt()
        out = self.phi(X, G)
        vbar = X[:, :, 0].clamp(1e-3, 1.0 - 1e-3)
        v = vmax * torch.sigmoid(torch.logit(vbar) + out[:, :, 0])
        # recover power gains from G: h² = (10^(10 G) − 1) σ² / P (exact inverse of graph_matrix)
        gain = torch.expm1(G * (10.0 * math.log(10.0))) * (self.noise / self.p_max)
        u, w = _receiver(v, gain.clamp_min(0.0).sqrt(), self.noise.to(v.dtype))
        w = w * torch.exp(out[:, :, 1].clamp(-30.0, 30.0))
        return torch.cat([u, w, v], dim=1).reshape(b, 3 * m)


class PowerBlackBoxNet(nn.Module):
    r"""The black box: a permutation-equivariant graph network :math:`H \mapsto v`,

    .. math:: v = \sqrt{P}\,\sigma\big(\Phi(X_0, G)\big),\quad X_0 = \big[G_{ii},\ \textstyle
        \frac1M\sum_j G_{ij},\ \frac1M\sum_j G_{ji}\big],

    Φ ``layers`` :class:`GraphConv` layers (ReLU between) whose width is chosen to match
    ``target_params``. It knows nothing of the iteration; shared across users, it runs at any M.
    """

    def __init__(
        self, target_params: int, *, noise: float, p_max: float = 1.0, layers: int = 4
    ) -> None:
        super().__init__()
        if layers < 2:
            raise ValueError(f"PowerBlackBoxNet needs layers >= 2, got {layers}.")
        width = 1
        while self._count(width + 1, layers) <= max(target_params, self._count(1, layers)):
            width += 1
        self.width = width
        self.phi = _GNN(3, width, 1, layers=layers)
        self.register_buffer("noise", torch.tensor(float(noise)))
        self.register_buffer("p_max", torch.tensor(float(p_max)))

    @staticmethod
    def _count(h: int, layers: int) -> int:
        return (2 * 3 * h + h) + (layers - 2) * (2 * h * h + h) + (2 * h + 1)

    def forward(self, H: Tensor) -> Tensor:
        G = graph_matrix(H, self.noise, self.p_max)
        X0 = torch.stack([G.diagonal(dim1=1, dim2=2), G.mean(2), G.mean(1)], dim=2)
        return self.p_max.sqrt() * torch.sigmoid(self.phi(X0, G).squeeze(2))


class InterferenceChannel(ProblemSpec):
    r"""Seeded interference networks of M transmitter–receiver pairs (x = H, no target).

    ``channel="geometric"`` (the Unrolled-WMMSE protocol, Chowdhury et al. 2021): one topology per
    ``seed`` — transmitters uniform in :math:`[-M, M]^2`, receiver :math:`i` at transmitter
    :math:`i` plus :math:`U[-M/4, M/4]^2` — and per sample amplitude gains
    :math:`h_{ij} = d_{ij}^{-2.2}\,r_{ij}`, :math:`d_{ij}` the distance from transmitter j to
    receiver i, :math:`r_{ij}` i.i.d. Rayleigh(1) fading (``numpy``'s ``rayleigh(1.0)``,
    :math:`\mathbb E r^2 = 2`). ``channel="rayleigh"``: :math:`h_{ij} = r_{ij}` (no geometry).

    Args:
        M: number of pairs (>= 1; M = 1 has no interference).
        channel: one of :data:`CHANNEL_MODELS`.
        noise_power: :math:`\sigma^2 > 0` (default :math:`10^{-9.1}`).
        p_max: :math:`P_{\max} > 0` (amplitudes :math:`v \in [0, \sqrt{P_{\max}}]`).
        path_loss: the exponent of :math:`d^{-\text{path\_loss}}` (amplitude), default 2.2.
        seed: the topology (and, combined with ``sample``'s seed, the fading).
        channel_set: the user's channels, ``(K, M, M)`` amplitude gains :math:`|h_{ij}| \ge 0`
            (e.g. from measurements or a ray tracer); ``sample`` then draws its matrices
            uniformly from these K (seeded) instead of the ``channel`` model, and configs and
            checkpoints keep the set.

    ``sample`` returns ``x = H`` ``(B, M, M)`` and ``target`` = NaN ``(B, M)`` (unlabelled:
    power allocation has no ground truth; supervised training raises a clear error).
    ``validate_observation`` accepts any M, so that models that generalise across sizes run on
    other networks; models with per-user parameters raise their own error.
    """

    default_algorithm = "wmmse"

    def __init__(
        self,
        M: int = 20,
        channel: str = "geometric",
        noise_power: float = 10**-9.1,
        p_max: float = 1.0,
        path_loss: float = 2.2,
        seed: int = 0,
        channel_set: Tensor | np.ndarray | list[Any] | None = None,
    ) -> None:
        if isinstance(M, bool) or not isinstance(M, int) or M < 1:
            raise ValueError(
                f"M (number of transmitter-receiver pairs) must be an int >= 1, got {M!r}."
            )
        if channel not in CHANNEL_MODELS:
            raise ValueError(f"Unknown channel {channel!r}; valid: {list(CHANNEL_MODELS)}.")
        for name, value in (("noise_power", noise_power), ("p_max", p_max)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"{name} must be finite and > 0, got {value}: a power budget or noise power "
                    "of zero makes every rate 0 (or infinite)."
                )
        if not (math.isfinite(path_loss) and path_loss >= 0):
            raise ValueError(f"path_loss must be finite and >= 0, got {path_loss}.")
        self.M, self.channel, self.seed = M, channel, seed
        self.noise_power, self.p_max, self.path_loss = (
            float(noise_power),
            float(p_max),
            float(path_loss),
        )
        if channel == "geometric":
            rng = seeded_rng(seed)
            tx = rng.uniform(-M, M, size=(M, 2))
            rx = tx + rng.uniform(-M / 4, M / 4, size=(M, 2))
            dist = np.linalg.norm(rx[:, None, :] - tx[None, :, :], axis=2)
            self.distances: np.ndarray | None = dist
            self.path_gain = dist ** (-self.path_loss)
        else:
            self.distances = None
            self.path_gain = np.ones((M, M))
        self.channel_set: Tensor | None = None
        if channel_set is not None:
            H = as_operator(channel_set, "channel_set", ndim=3)
            if H.shape[0] < 1 or tuple(H.shape[1:]) != (M, M):
                raise ValueError(
                    f"channel_set has shape {tuple(H.shape)} but this InterferenceChannel has "
                    f"M={M} pairs: the set must be (K, M, M) = (K, {M}, {M}) with K >= 1 "
                    "(or set M to the size of your channels)."
                )
            if bool((H < 0).any()):
                raise ValueError(
                    f"channel_set has {int((H < 0).sum())} negative entries; it holds amplitude "
                    "gains |h_ij| >= 0 (pass the magnitudes of complex channels)."
                )
            self.channel_set = H

    def constants(self) -> dict[str, Tensor]:
        """``noise`` (σ²) and ``p_max`` (P_max), float64 scalars."""
        f64 = torch.float64
        return {
            "noise": torch.tensor(self.noise_power, dtype=f64),
            "p_max": torch.tensor(self.p_max, dtype=f64),
        }

    def with_size(self, M: int) -> InterferenceChannel:
        """The same protocol (channel model, noise, power, seed) at another network size."""
        if self.channel_set is not None:
            raise ValueError(
                "This InterferenceChannel samples a user channel_set of fixed size M = "
                f"{self.M}; build one from channels of {M} pairs instead of with_size({M})."
            )
        return InterferenceChannel(**{**self.init_args(), "M": M})

    def sample(
        self, n: int, *, seed: int | Sequence[int], dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        rng = seeded_rng(self.seed, seed)
        if self.channel_set is not None:
            H = self.channel_set.numpy()[rng.integers(0, self.channel_set.shape[0], size=n)]
        else:
            H = self.path_gain[None] * rng.rayleigh(1.0, size=(n, self.M, self.M))
        target = torch.full((n, self.M), float("nan"), dtype=dtype)
        return torch.from_numpy(H).to(dtype), target

    def metrics(self) -> tuple[ProblemMetric, ...]:
        r"""The mean sum-rate :math:`\mathbb E\,R(v; H)` (bit/s/Hz, higher is better) — primary —
        then the mean rate of the worst user :math:`\mathbb E\min_i \log_2(1+\mathrm{SINR}_i)`."""
        noise = self.noise_power

        def rate(v: Tensor, target: Tensor, H: Tensor) -> Tensor:
            return sum_rate(v.to(H.dtype), H, noise)

        def worst(v: Tensor, target: Tensor, H: Tensor) -> Tensor:
            return user_rates(v.to(H.dtype), H, noise).min(dim=1).values

        return (
            MeanOf(
                "sum_rate",
                rate,
                label="sum-rate",
                unit="bit/s/Hz",
                higher_is_better=True,
                needs_target=False,
            ),
            MeanOf(
                "min_rate",
                worst,
                label="worst-user rate",
                unit="bit/s/Hz",
                higher_is_better=True,
                needs_target=False,
            ),
        )

    def validate_observation(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError("x must be a torch.Tensor of channel matrices, shape (B, M, M).")
        if x.ndim != 3 or x.shape[1] != x.shape[2]:
            raise ValueError(
                f"x has shape {tuple(x.shape)}; an InterferenceChannel observation is a batch of "
                "square channel matrices (B, M, M), H[b, i, j] the amplitude gain from "
                "transmitter j to receiver i (use H.unsqueeze(0) for one matrix)."
            )
        if x.shape[1] < 1:
            raise ValueError("x has M = 0 pairs; a network needs at least one pair.")
        require_finite(x, "The channel matrix H")
        if bool(x.amin() < 0):  # one reduction; counted only on failure
            raise ValueError(
                f"The channel matrix H has {int((x < 0).sum())} negative entries; H holds "
                "amplitude gains |h_ij| >= 0 (pass the magnitudes of complex channels)."
            )


class WMMSE(Algorithm[WMMSEState]):
    r"""WMMSE power allocation (Shi et al. 2011) — the recursion is in the module docstring.

    Args:
        relax: classical relaxation :math:`\gamma` of the v-update (> 0; 1 = the exact block
            minimiser, for which the sum-rate is non-decreasing; the projection onto
            :math:`[0, \sqrt{P_{\max}}]` keeps every :math:`\gamma` feasible).
        per_user_weights: the weights :math:`\alpha` as one entry per user (``(M,)``, tied to the
            network size) instead of one scalar; the ``objective`` paradigm uses this form.

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
        fixed_point="a stationary point of the sum-rate (Shi et al. 2011, Thm. 3)",
        convex=False,
        averaged=None,
        descent="WMMSE never lowers the sum-rate: it is block-coordinate descent on the weighted "
        "MSE (Shi et al. 2011, Thm. 3)",
        linear_rate=None,
    )
    objective_variants: ClassVar[tuple[str, ...]] = ("per_user",)

    def __init__(self, relax: float = 1.0, per_user_weights: bool = False) -> None:
        if not (math.isfinite(relax) and relax > 0):
            raise ValueError(
                f"relax (γ of the v-update) must be finite and > 0, got {relax}; 1 is the "
                "classical WMMSE step."
            )
        self.relax, self.per_user_weights = float(relax), bool(per_user_weights)

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
        return WMMSE(relax=self.relax, per_user_weights=True)

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
        r"""UWMMSE: :math:`w = \max(a\odot w_{\text{class}} + b, 0)` with :math:`(a, b)` from the
        correction network, then the classical v-update with that :math:`w`.

        A :class:`UWMMSECorrection` reads the quantities this step computes anyway (the received
        powers :math:`h_{ij}^2 v_j^2`, :math:`w_{\text{class}}`) through :meth:`UWMMSECorrection.
        coefficients`; any other module gets ``net(features(s^{(k-1)}))`` and returns ``(a, b)``.
        """
        gains = PowerGains.for_iterate(s, x)
        if isinstance(net, UWMMSECorrection):
            u, w, a, b = net.coefficients(s, x, gains, p["noise"], p["p_max"])
            return self._v_step(u, torch.addcmul(b, a, w).clamp_min(0.0), s, x, p, gains)
        u, w = _receiver(s.v, x, p["noise"], gains)
        a, b = net(self.features(s, x, p))
        return self._v_step(u, (a * w + b).clamp_min(0.0), s, x, p, gains)

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
