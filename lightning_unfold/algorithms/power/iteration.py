"""WMMSE's iterate and update formulas, shared by the solver (:class:`WMMSE`) and the networks
that replace or correct its steps: the state, the MMSE receiver and weight, the projected
v-update and the graph features the networks read."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_unfold.algorithms.power.problem import PowerGains, _row_times
from lightning_unfold.core.iterate import aux_field

#: node features per user that the graph networks read from an iterate (see :func:`_node_features`)
_N_NODE = 4


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


def _receiver(
    v: Tensor, H: Tensor, noise: Tensor, gains: PowerGains | None = None
) -> tuple[Tensor, Tensor]:
    r"""The MMSE receiver and MSE weight for amplitudes ``v``: :math:`(u, w)`
    (:mod:`lightning_unfold.algorithms.power` (the package docstring));
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
