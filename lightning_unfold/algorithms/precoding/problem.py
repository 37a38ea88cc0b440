"""The wideband hybrid precoding problem :class:`HybridPrecoding`: the achievable rate, its
gradients, the power rescale, the precoder packing, channel generation and metrics.

The math is in the package docstring (:mod:`lightning_unfold.algorithms.precoding`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_unfold.core.algorithm import (
    ProblemSpec,
    as_operator,
    seeded_rng,
)
from lightning_unfold.core.iterate import complex_dtype, real_dtype, require_finite
from lightning_unfold.core.metrics import MeanOf, ProblemMetric

#: the feasible sets of the analog precoder
ANALOG_SETTINGS: tuple[str, ...] = ("unit_modulus", "unconstrained")
#: the channel models of :class:`HybridPrecoding`
CHANNEL_MODELS: tuple[str, ...] = ("gaussian", "real_gaussian", "multipath")


def _precoders(wa: Tensor, wd: Tensor) -> Tensor:
    """The per-band precoders :math:`W_aW_{d,b}`, ``(n, B, M, U)``."""
    return wa.unsqueeze(1) @ wd


def power_scale(wa: Tensor, wd: Tensor, total: float) -> Tensor:
    r"""Per-sample :math:`\sqrt{\texttt{total}/\sum_b\|W_aW_{d,b}\|_F^2}`, shape ``(n,)``
    (the power of a zero precoder is clamped to the smallest normal number)."""
    power = _precoders(wa, wd).abs().pow(2).sum(dim=(1, 2, 3))
    return torch.sqrt(total / power.clamp_min(torch.finfo(power.dtype).tiny))


def _gram(h: Tensor, wa: Tensor, wd: Tensor, gain: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
    hwa = h @ wa.unsqueeze(1)  # (n, B, U, L)
    a = hwa @ wd  # (n, B, U, U)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return hwa, a, eye + gain * (a @ a.mH)


def achievable_rate(h: Tensor, wa: Tensor, wd: Tensor, gain: Tensor | float) -> Tensor:
    r"""Per-sample rate :math:`\frac1B\sum_b\ln\det(I + \gamma H_bW_aW_{d,b}W_{d,b}^HW_a^HH_b^H)`
    in nats, shape ``(n,)``, for ``h`` ``(n, B, U, M)``, ``wa`` ``(n, M, L)``, ``wd``
    ``(n, B, L, U)``; ``gain`` is :math:`\gamma = \mathrm{SNR}/U`."""
    _, _, g = _gram(h, wa, wd, gain)
    return torch.linalg.slogdet(g).logabsdet.mean(dim=1)


def rate_gradients(
    h: Tensor, wa: Tensor, wd: Tensor, gain: Tensor | float
) -> tuple[Tensor, Tensor]:
    r"""The conjugate Wirtinger gradients :math:`(\partial R/\partial\bar W_a,
    \partial R/\partial\bar W_{d,b})`
    (:mod:`lightning_unfold.algorithms.precoding` (the package docstring)), shapes
    ``(n, M, L)`` and ``(n, B, L, U)``."""
    hwa, a, g = _gram(h, wa, wd, gain)
    scale = gain / h.shape[1]
    gia = torch.linalg.solve(g, a)  # G⁻¹ H W_a W_d
    grad_a = scale * (h.mH @ gia @ wd.mH).sum(dim=1)
    grad_d = scale * (hwa.mH @ gia)
    return grad_a, grad_d


def pack_precoders(wa: Tensor, wd: Tensor) -> Tensor:
    """``(n, M·L + B·L·U)``: the flattened ``[Wa, Wd]`` of one batch (the problem's estimate)."""
    n = wa.shape[0]
    return torch.cat([wa.reshape(n, -1), wd.reshape(n, -1)], dim=1)


def unpack_precoders(est: Tensor, problem: HybridPrecoding) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`pack_precoders` for ``problem``'s sizes: ``(Wa, Wd)``."""
    M, L, B, U = problem.n_antennas, problem.n_rf, problem.n_bands, problem.n_users
    width = M * L + B * L * U
    if est.ndim != 2 or est.shape[1] != width:
        raise ValueError(
            f"A packed precoder of this HybridPrecoding has shape (n, {width}) = (n, M·L + B·L·U) "
            f"with M={M}, L={L}, B={B}, U={U}; got {tuple(est.shape)}."
        )
    n = est.shape[0]
    return est[:, : M * L].reshape(n, M, L), est[:, M * L :].reshape(n, B, L, U)


class HybridPrecoding(ProblemSpec):
    r"""Seeded wideband channels :math:`\{H_b\}` for hybrid precoding
    (:mod:`lightning_unfold.algorithms.precoding` (the package docstring)).

    Args:
        n_bands: :math:`B` frequency bands (default 8, the paper's set-up).
        n_users: :math:`U` single-antenna users (6).
        n_rf: :math:`L` RF chains (10); :math:`U \le L \le M` is required (each user needs a
            chain; the analog precoder has at most :math:`M` independent columns).
        n_antennas: :math:`M` transmit antennas (12).
        snr_db: total SNR in dB, :math:`\gamma = 10^{\mathrm{snr\_db}/10}/U`. ``None``:
            :math:`\gamma = 1`, the reference code's normalisation (``snr_db = 10\log_{10}U``).
        channel: ``"gaussian"`` — i.i.d. :math:`\mathcal{CN}(0, 1)` entries, independent bands;
            ``"real_gaussian"`` — i.i.d. real :math:`\mathcal N(0, 1)` (the reference code's data,
            stored as complex with zero imaginary part); ``"multipath"`` — a frequency-selective
            geometric model (``n_clusters`` clusters of ``n_rays`` rays, per-ray complex gain,
            angle of departure (half-wavelength ULA) and delay, so bands are correlated):
            :math:`H_b[u,:] = \sqrt{1/(CP)}\sum_{c,p}\alpha_{ucp}e^{-2\pi i\tau_{ucp}b/B}
            a(\theta_{ucp})^H`, :math:`a(\theta)_m = e^{i\pi m\sin\theta}`,
            :math:`\tau \sim \mathcal U[0, \texttt{delay\_spread}]` (in sample periods of the
            whole band), cluster angles uniform in :math:`[-\pi/2, \pi/2]` and ray angles
            Laplacian around them (``angle_spread`` rad); :math:`\mathbb E|H_{b,um}|^2 = 1`.
        analog: ``"unit_modulus"`` or ``"unconstrained"`` (power constraint only).
        seed: combined with ``sample``'s seed.
        channel_set: the user's channels, complex ``(K, B, U, M)`` (e.g. measured or ray-traced);
            ``sample`` then draws its channels uniformly from these K (seeded) instead of the
            ``channel`` model, and configs and checkpoints keep the set.

    ``sample`` returns ``x`` = the channels ``(n, B, U, M)`` (complex64 for ``dtype=float32``,
    complex128 for float64) and ``target`` = NaN ``(n, M·L + B·L·U)`` (real): the problem has no
    labels; it is trained with the unsupervised loss (−rate).
    """

    default_algorithm = "hybrid_pga"

    def __init__(
        self,
        n_bands: int = 8,
        n_users: int = 6,
        n_rf: int = 10,
        n_antennas: int = 12,
        snr_db: float | None = None,
        channel: str = "gaussian",
        analog: str = "unit_modulus",
        n_clusters: int = 3,
        n_rays: int = 4,
        delay_spread: float = 2.0,
        angle_spread: float = 0.1,
        seed: int = 0,
        channel_set: Tensor | np.ndarray | list[Any] | None = None,
    ) -> None:
        for name, v in (("n_bands", n_bands), ("n_users", n_users), ("n_rf", n_rf)):
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}.")
        if not (isinstance(n_antennas, int) and n_antennas >= 1):
            raise ValueError(f"n_antennas must be an integer >= 1, got {n_antennas!r}.")
        if n_rf < n_users:
            raise ValueError(
                f"n_rf = L = {n_rf} RF chains cannot serve n_users = U = {n_users} streams: hybrid "
                "precoding needs L >= U (each user's stream needs an RF chain). Increase n_rf or "
                "serve fewer users."
            )
        if n_rf > n_antennas:
            raise ValueError(
                f"n_rf = L = {n_rf} exceeds n_antennas = M = {n_antennas}: the analog precoder "
                "W_a (M×L) would have more RF chains than antennas; use L <= M."
            )
        if snr_db is not None and not math.isfinite(float(snr_db)):
            raise ValueError(f"snr_db must be a finite number of dB (or None), got {snr_db!r}.")
        if channel not in CHANNEL_MODELS:
            raise ValueError(f"Unknown channel {channel!r}; valid: {list(CHANNEL_MODELS)}.")
        if analog not in ANALOG_SETTINGS:
            raise ValueError(f"Unknown analog setting {analog!r}; valid: {list(ANALOG_SETTINGS)}.")
        if n_clusters < 1 or n_rays < 1:
            raise ValueError(f"n_clusters and n_rays must be >= 1, got {n_clusters}, {n_rays}.")
        if not (delay_spread >= 0 and angle_spread >= 0):
            raise ValueError("delay_spread and angle_spread must be >= 0.")
        self.n_bands, self.n_users, self.n_rf, self.n_antennas = n_bands, n_users, n_rf, n_antennas
        self.snr_db = None if snr_db is None else float(snr_db)
        self.channel, self.analog = channel, analog
        self.n_clusters, self.n_rays = int(n_clusters), int(n_rays)
        self.delay_spread, self.angle_spread = float(delay_spread), float(angle_spread)
        self.seed = seed
        self.channel_set: Tensor | None = None
        if channel_set is not None:
            H = as_operator(channel_set, "channel_set", ndim=4, complex_ok=True)
            want = (n_bands, n_users, n_antennas)
            if H.shape[0] < 1 or tuple(H.shape[1:]) != want:
                raise ValueError(
                    f"channel_set has shape {tuple(H.shape)} but this HybridPrecoding has "
                    f"B={n_bands} bands, U={n_users} users and M={n_antennas} antennas: the set "
                    f"must be (K, B, U, M) = (K, {n_bands}, {n_users}, {n_antennas}) with K >= 1."
                )
            self.channel_set = H.to(torch.complex128)

    @property
    def gain(self) -> float:
        r""":math:`\gamma = \mathrm{SNR}/U` (1 when ``snr_db`` is ``None``)."""
        if self.snr_db is None:
            return 1.0
        return 10.0 ** (self.snr_db / 10.0) / self.n_users

    @property
    def unit_modulus(self) -> bool:
        return self.analog == "unit_modulus"

    @property
    def total_power(self) -> float:
        """The power budget :math:`UB`."""
        return float(self.n_users * self.n_bands)

    @property
    def estimate_width(self) -> int:
        return self.n_antennas * self.n_rf + self.n_bands * self.n_rf * self.n_users

    def constants(self) -> dict[str, Tensor]:
        """``snr_gain``: :math:`\\gamma = \\mathrm{SNR}/U` of the objective."""
        return {"snr_gain": torch.tensor(self.gain, dtype=torch.float64)}

    def _multipath(self, rng: np.random.Generator, n: int) -> np.ndarray:
        B, U, M = self.n_bands, self.n_users, self.n_antennas
        C, P = self.n_clusters, self.n_rays
        centre = rng.uniform(-np.pi / 2, np.pi / 2, size=(n, U, C, 1))
        theta = centre + rng.laplace(scale=self.angle_spread / np.sqrt(2), size=(n, U, C, P))
        tau = rng.uniform(0.0, self.delay_spread, size=(n, U, C, P))
        alpha = (rng.normal(size=(n, U, C, P)) + 1j * rng.normal(size=(n, U, C, P))) / np.sqrt(2)
        m = np.arange(M)
        steer = np.exp(-1j * np.pi * m * np.sin(theta)[..., None])  # conj(a(θ)), (n,U,C,P,M)
        b = np.arange(B)
        phase = np.exp(-2j * np.pi * tau[None] * b[:, None, None, None, None] / B)  # (B,n,U,C,P)
        h = np.einsum("bnucp,nucp,nucpm->nbum", phase, alpha, steer) / np.sqrt(C * P)
        return h

    def sample(
        self, n: int, *, seed: int | Sequence[int], dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        rng = seeded_rng(self.seed, seed)
        shape = (n, self.n_bands, self.n_users, self.n_antennas)
        if self.channel_set is not None:
            h = self.channel_set.numpy()[rng.integers(0, self.channel_set.shape[0], size=n)]
        elif self.channel == "gaussian":
            h = (rng.normal(size=shape) + 1j * rng.normal(size=shape)) / np.sqrt(2)
        elif self.channel == "real_gaussian":
            h = rng.normal(size=shape).astype(np.complex128)
        else:
            h = self._multipath(rng, n)
        x = torch.from_numpy(np.ascontiguousarray(h)).to(complex_dtype(dtype))
        target = torch.full((n, self.estimate_width), float("nan"), dtype=real_dtype(dtype))
        return x, target

    def rate_of_estimate(self, estimate: Tensor, x: Tensor) -> Tensor:
        """Per-sample rate (nats) of packed precoders ``estimate`` for channels ``x``."""
        wa, wd = unpack_precoders(estimate, self)
        h = x.to(wa.dtype) if wa.is_complex() else x
        return achievable_rate(h, wa.to(h.dtype), wd.to(h.dtype), self.gain)

    def metrics(self) -> tuple[ProblemMetric, ...]:
        """The achievable rate in nats per channel use (mean over channels; primary), named
        ``rate_nats`` because the library's other rates are in bit/s/Hz (divide by ln 2)."""
        return (
            MeanOf(
                "rate_nats",
                lambda est, target, x: self.rate_of_estimate(est, x),
                label="achievable rate",
                unit="nat/s/Hz",
                higher_is_better=True,
                needs_target=False,
            ),
        )

    def supervised_loss(self, estimate: Tensor, target: Tensor) -> Tensor | None:
        raise ValueError(
            "HybridPrecoding has no labels (its targets are NaN): train with "
            "supervision='unsupervised', whose loss is the negative achievable rate."
        )

    def validate_observation(self, x: Tensor) -> None:
        """Channels ``(n, B, U, M)``, complex, or real floating (treated as complex with zero
        imaginary part: the solvers cast them), finite."""
        shape = (self.n_bands, self.n_users, self.n_antennas)
        if not isinstance(x, Tensor):
            raise TypeError(
                f"x must be a torch.Tensor of channels (n, {', '.join(map(str, shape))})."
            )
        if not (x.is_complex() or x.is_floating_point()):
            raise TypeError(
                f"The channels must be a complex tensor (or a real floating one, read as complex "
                f"with zero imaginary part); got dtype {x.dtype}. Use x.to(torch.complex64)."
            )
        if x.ndim != 4 or tuple(x.shape[1:]) != shape:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but this HybridPrecoding has B={shape[0]} bands, "
                f"U={shape[1]} users and M={shape[2]} antennas: channels must be a batch of shape "
                f"(n, {shape[0]}, {shape[1]}, {shape[2]}) (use x.unsqueeze(0) for one channel)."
            )
        require_finite(torch.view_as_real(x) if x.is_complex() else x, "The channel H")
