"""The power-allocation problem :class:`InterferenceChannel`: seeded interference networks, the
per-user and sum rates that score an allocation, the power gains every rate and WMMSE step share,
and the full-power baseline."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from lightning_unfold.core.algorithm import ProblemSpec, as_operator, seeded_rng
from lightning_unfold.core.iterate import require_finite
from lightning_unfold.core.metrics import MeanOf, ProblemMetric

if TYPE_CHECKING:
    from lightning_unfold.algorithms.power.iteration import WMMSEState

#: channel models of :class:`InterferenceChannel` (``"mixed"``: each channel geometric or
#: i.i.d. Rayleigh at random)
CHANNEL_MODELS: tuple[str, ...] = ("geometric", "rayleigh", "mixed")
#: topology modes of a geometric :class:`InterferenceChannel`: one topology per ``seed``, or a
#: fresh topology for every sampled channel
TOPOLOGIES: tuple[str, ...] = ("fixed", "random")


def geometric_topology(
    rng: np.random.Generator, M: int, n: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    r"""Transmitter and receiver positions of the Unrolled-WMMSE geometry: transmitters uniform in
    :math:`[-M, M]^2`, receiver :math:`i` at transmitter :math:`i` plus :math:`U[-M/4, M/4]^2`.

    Returns the distances :math:`d_{ij}` from transmitter j to receiver i, ``(M, M)`` for one
    topology (``n=None``) or ``(n, M, M)`` for ``n`` independent ones, and the positions
    ``(..., M, 2, 2)`` (transmitter, receiver) for plots. One topology draws exactly what the
    protocol's ``default_rng(seed)`` draws (the reference figures depend on it)."""
    shape = (M, 2) if n is None else (n, M, 2)
    tx = rng.uniform(-M, M, size=shape)
    rx = tx + rng.uniform(-M / 4, M / 4, size=shape)
    dist = np.linalg.norm(rx[..., :, None, :] - tx[..., None, :, :], axis=-1)
    return dist, np.stack([tx, rx], axis=-2)


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


def sum_rate_kkt_residual(
    v: Tensor,
    H: Tensor,
    noise: Tensor | float,
    p_max: Tensor | float,
    weights: Tensor | float = 1.0,
    *,
    gains: PowerGains | None = None,
) -> Tensor:
    r"""Per-user KKT residual of the weighted sum-rate over the box :math:`0 \le p \le P_{\max}`,
    in normalised units, ``(B, M)``; 0 exactly at a KKT point.

    With powers :math:`p = v^2`, :math:`N_i = \sigma^2 + \sum_{j\ne i}h_{ij}^2p_j` (noise plus
    interference) and :math:`I_i = N_i + h_{ii}^2p_i`, the gradient of
    :math:`R_\alpha(p) = \sum_i\alpha_i\ln(1 + h_{ii}^2p_i/N_i)` splits into the user's own gain
    and the harm it does to the others,

    .. math:: \frac{\partial R_\alpha}{\partial p_k} = a_k - b_k,\qquad
        a_k = \frac{\alpha_k h_{kk}^2}{I_k},\qquad
        b_k = \sum_{i\ne k}\frac{\alpha_i h_{ik}^2\,h_{ii}^2p_i}{N_iI_i}

    (both :math:`\ge 0`; :math:`b` written without the cancellation of
    :math:`1/N_i - 1/I_i`). The normalised gradient :math:`\hat g_k = (a_k - b_k)/(a_k + b_k)
    \in [-1, 1]` has the sign of the gradient and no units, and so has the normalised power
    :math:`q_k = p_k/P_{\max} \in [0, 1]`; the residual is the natural (projection) residual of
    the box KKT conditions in these units,

    .. math:: r_k = \big|q_k - \Pi_{[0,1]}(q_k + \hat g_k)\big|,

    which is 0 if and only if :math:`\hat g_k = 0` for :math:`0 < q_k < 1`, :math:`\hat g_k \le 0`
    at :math:`q_k = 0` and :math:`\hat g_k \ge 0` at :math:`q_k = 1` — the KKT conditions of
    :math:`\max_{0\le p\le P_{\max}} R_\alpha(p)`. Elsewhere it is the relative imbalance
    :math:`|\hat g_k|` of gain and harm, capped by the distance to the bound the gradient points
    to (a user fading out with :math:`\hat g_k < 0` scores :math:`q_k`). Unchanged when the
    channel gains, the noise and :math:`P_{\max}` are rescaled together, so one tolerance serves
    every noise level (the raw gradient at :math:`\sigma^2 \approx 10^{-9}` is of order
    :math:`1/p`).

    Arguments as :func:`user_rates`, plus ``p_max`` (:math:`P_{\max}`) and the weights
    :math:`\alpha` (a scalar or one per user).
    """
    g = PowerGains.of(H) if gains is None else gains
    power = v.pow(2)
    rest = noise + g.interference(power)  # N_i
    received = rest + g.direct * power  # I_i
    own = weights * g.direct / received
    harm = _row_times(weights * g.direct * power / (rest * received), g.cross)
    scale = own + harm
    g_hat = torch.where(scale > 0, (own - harm) / scale.clamp_min(1e-300), torch.zeros_like(scale))
    q = power / p_max
    return (q - (q + g_hat).clamp(0.0, 1.0)).abs()


def full_power(H: Tensor, p_max: float = 1.0) -> Tensor:
    r"""The full-power baseline :math:`v = \sqrt{P_{\max}}` for every user, ``(B, M)``."""
    return torch.full(H.shape[:2], math.sqrt(p_max), dtype=H.dtype, device=H.device)


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


class InterferenceChannel(ProblemSpec):
    r"""Seeded interference networks of M transmitter–receiver pairs (x = H, no target).

    ``channel="geometric"`` (the Unrolled-WMMSE protocol, Chowdhury et al. 2021): one topology per
    ``seed`` — transmitters uniform in :math:`[-M, M]^2`, receiver :math:`i` at transmitter
    :math:`i` plus :math:`U[-M/4, M/4]^2` (:func:`geometric_topology`) — and per sample amplitude
    gains :math:`h_{ij} = d_{ij}^{-2.2}\,r_{ij}`, :math:`d_{ij}` the distance from transmitter j to
    receiver i, :math:`r_{ij}` i.i.d. Rayleigh(1) fading (``numpy``'s ``rayleigh(1.0)``,
    :math:`\mathbb E r^2 = 2`). ``channel="rayleigh"``: :math:`h_{ij} = r_{ij}` (no geometry).
    ``channel="mixed"``: every sampled channel is, independently, i.i.d. Rayleigh with
    probability ``rayleigh_fraction`` (default 1/2) and geometric otherwise (the ``topology``
    mode's topology), so one model trains on both channel models: UWMMSE trained on
    ``channel="mixed", topology="random", rayleigh_fraction=0.2`` with the every-layer loss stays
    above WMMSE-k at every layer on geometric and Rayleigh channels (three seeds), at 95.8 % of
    WMMSE-100 on unseen topologies against 98.5 % for geometric-only training of the same size.

    ``topology="random"`` draws a fresh topology for every sampled channel (the same geometry,
    positions from ``sample``'s seeded stream), so a model trained on it sees a distribution of
    topologies instead of one; ``topology="fixed"`` (default) keeps the one topology of ``seed``.
    A model trained on one topology learns that topology's interference pattern: UWMMSE trained
    on seed 0 alone reaches 95.2–98.8 % of WMMSE-100 on topologies 1–5, trained on random
    topologies 96.4–98.6 %, and 97.5–100.3 % with a network twice as wide trained twice as long
    (three seeds each, ``examples/uwmmse_generalisation_study.py``, ``docs/power_allocation.md``).

    Args:
        M: number of pairs (>= 1; M = 1 has no interference).
        channel: one of :data:`CHANNEL_MODELS`.
        noise_power: :math:`\sigma^2 > 0` (default :math:`10^{-9.1}`).
        p_max: :math:`P_{\max} > 0` (amplitudes :math:`v \in [0, \sqrt{P_{\max}}]`).
        path_loss: the exponent of :math:`d^{-\text{path\_loss}}` (amplitude), default 2.2.
        seed: the topology (and, combined with ``sample``'s seed, the fading; with
            ``topology="random"`` it seeds the topologies' stream too).
        topology: one of :data:`TOPOLOGIES`: ``"fixed"`` (one topology per ``seed``) or
            ``"random"`` (a fresh geometric topology per sampled channel; ``channel`` must be
            ``"geometric"`` or ``"mixed"`` and no ``channel_set`` given).
        channel_set: the user's channels, ``(K, M, M)`` amplitude gains :math:`|h_{ij}| \ge 0`
            (e.g. from measurements or a ray tracer); ``sample`` then draws its matrices
            uniformly from these K (seeded) instead of the ``channel`` model, and configs and
            checkpoints keep the set.
        rayleigh_fraction: with ``channel="mixed"``, the probability in (0, 1) that a sampled
            channel is i.i.d. Rayleigh (default 0.5); only valid with ``channel="mixed"``.

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
        topology: str = "fixed",
        rayleigh_fraction: float | None = None,
    ) -> None:
        if isinstance(M, bool) or not isinstance(M, int) or M < 1:
            raise ValueError(
                f"M (number of transmitter-receiver pairs) must be an int >= 1, got {M!r}."
            )
        if channel not in CHANNEL_MODELS:
            raise ValueError(f"Unknown channel {channel!r}; valid: {list(CHANNEL_MODELS)}.")
        if topology not in TOPOLOGIES:
            raise ValueError(f"Unknown topology {topology!r}; valid: {list(TOPOLOGIES)}.")
        if topology == "random" and (channel == "rayleigh" or channel_set is not None):
            raise ValueError(
                "topology='random' draws a fresh geometric topology per channel: it needs "
                f"channel='geometric' or 'mixed' and no channel_set (got channel={channel!r}"
                f"{', a channel_set' if channel_set is not None else ''}); use topology='fixed'."
            )
        if channel == "mixed" and channel_set is not None:
            raise ValueError(
                "channel='mixed' draws each channel from the geometric or the Rayleigh model; "
                "a channel_set replaces the channel model. Pass one or the other."
            )
        if rayleigh_fraction is not None:
            if channel != "mixed":
                raise ValueError(
                    f"rayleigh_fraction={rayleigh_fraction} only applies to channel='mixed' "
                    f"(got channel={channel!r}); drop it or use channel='mixed'."
                )
            if not (isinstance(rayleigh_fraction, float | int) and 0 < rayleigh_fraction < 1):
                raise ValueError(
                    f"rayleigh_fraction must lie in (0, 1), got {rayleigh_fraction!r}: 0 or 1 "
                    "is channel='geometric' or channel='rayleigh'."
                )
        self.rayleigh_fraction: float | None = (
            (0.5 if rayleigh_fraction is None else float(rayleigh_fraction))
            if channel == "mixed"
            else None
        )
        for name, value in (("noise_power", noise_power), ("p_max", p_max)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"{name} must be finite and > 0, got {value}: a power budget or noise power "
                    "of zero makes every rate 0 (or infinite)."
                )
        if not (math.isfinite(path_loss) and path_loss >= 0):
            raise ValueError(f"path_loss must be finite and >= 0, got {path_loss}.")
        self.M, self.channel, self.seed, self.topology = M, channel, seed, topology
        self.noise_power, self.p_max, self.path_loss = (
            float(noise_power),
            float(p_max),
            float(path_loss),
        )
        #: the distances d_ij and amplitude path gains d_ij^-path_loss of the fixed topology
        #: (``None`` with ``topology="random"``, where every channel has its own; with
        #: ``channel="mixed"`` those of its geometric channels)
        self.distances: np.ndarray | None = None
        self.path_gain: np.ndarray | None = np.ones((M, M))
        if channel != "rayleigh" and topology == "fixed":
            self.distances = geometric_topology(seeded_rng(seed), M)[0]
            self.path_gain = self.distances ** (-self.path_loss)
        elif topology == "random":
            self.path_gain = None
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
        """The same protocol (channel model, noise, power, seed, topology mode) at another
        network size."""
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
        elif self.path_gain is None or self.rayleigh_fraction is not None:
            # topology="random" (one topology per channel) and/or channel="mixed" (per channel
            # geometric or Rayleigh), then fading
            gain = (
                self.path_gain[None]
                if self.path_gain is not None
                else geometric_topology(rng, self.M, n)[0] ** (-self.path_loss)
            )
            if self.rayleigh_fraction is not None:
                rayleigh = rng.random(n) < self.rayleigh_fraction
                gain = np.where(rayleigh[:, None, None], 1.0, gain)
            H = gain * rng.rayleigh(1.0, size=(n, self.M, self.M))
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
