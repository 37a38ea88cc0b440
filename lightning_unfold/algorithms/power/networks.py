"""The learned layers of the power-allocation family: the permutation-equivariant graph
convolution, UWMMSE's correction, the inductive-bias graph iteration and the black box."""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from lightning_unfold.algorithms.power.iteration import (
    _N_NODE,
    WMMSEState,
    _receiver,
    _receiver_given_interference,
    _unpack,
    graph_matrix,
)
from lightning_unfold.algorithms.power.problem import PowerGains, _row_times


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

    .. math:: w = \max(a\odot w_{\text{class}} + b,\ \varepsilon\,a\odot w_{\text{class}}),
        \qquad a = e^{\phi_a},\quad b = \phi_b

    (the bound :math:`\varepsilon` is the step's, :meth:`~lightning_unfold.algorithms.power.WMMSE.corrected_step`: without it a
    negative :math:`b` could switch every user off, where power and gradient are exactly zero).

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
    (:math:`w_{\text{class}} \ge 1`, the floor is inactive). :math:`a > 0` keeps the
    multiplicative part from flipping the sign of a weight and makes the floor
    :math:`\varepsilon a w_{\text{class}}` a positive lower bound.
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
