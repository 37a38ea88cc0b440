r"""Wideband hybrid precoding by projected gradient ascent (PGA), complex-valued end to end.

Problem (Lavi & Shlezinger, IEEE TCOM 2023; Shlezinger et al. 2025, §V): a transmitter with
:math:`M` antennas and :math:`L` RF chains serves :math:`U` single-antenna users on :math:`B`
frequency bands. Band :math:`b` has the channel :math:`H_b \in \mathbb C^{U\times M}`; the precoder
is an analog part :math:`W_a \in \mathbb C^{M\times L}` shared by all bands (phase shifters:
unit-modulus entries :math:`|[W_a]_{ml}| = 1`) and a digital part :math:`W_{d,b} \in
\mathbb C^{L\times U}` per band. The achievable rate, in **nats** per channel use (divide by
:math:`\ln 2` for bit/s/Hz), is

.. math:: R(W_a, \{W_{d,b}\}; H) = \frac1B\sum_{b=1}^B \ln\det\big(I_U + \gamma\,
    H_b W_a W_{d,b} W_{d,b}^H W_a^H H_b^H\big),\qquad \gamma = \mathrm{SNR}/U,

maximised under the total power constraint :math:`\sum_b\|W_a W_{d,b}\|_F^2 = U B` (and
:math:`|W_a| = 1` entrywise in the ``"unit_modulus"`` setting; ``"unconstrained"`` keeps only the
power constraint, as the paper's reference code does).

Gradients (conjugate Wirtinger derivatives :math:`\partial R/\partial \bar W`, the steepest-ascent
direction up to a factor 2; ``torch.autograd`` returns :math:`2\,\partial R/\partial\bar W` for a
real function of complex tensors), with :math:`G_b = I + \gamma H_b W_a W_{d,b}W_{d,b}^H W_a^H
H_b^H`:

.. math::
    \nabla_{W_a} R &= \frac{\gamma}{B}\sum_b H_b^H G_b^{-1} H_b W_a W_{d,b} W_{d,b}^H,\\
    \nabla_{W_{d,b}} R &= \frac{\gamma}{B}\, W_a^H H_b^H G_b^{-1} H_b W_a W_{d,b}.

Iteration :math:`k` of :class:`HybridPGA` (the analog block first, then all digital blocks at the
new analog precoder):

.. math::
    \tilde W_a &= W_a + \mu_{a,k}\,\nabla_{W_a} R(W_a, W_d),\\
    W_a^+ &= \Pi(\tilde W_a),\qquad W_d \leftarrow c(W_a^+, W_d)\,W_d,\\
    W_{d,b}^+ &= c\big(W_a^+, \tilde W_d\big)\,\tilde W_{d,b},\qquad
        \tilde W_{d,b} = W_{d,b} + \mu_{d,b,k}\,\nabla_{W_{d,b}} R(W_a^+, W_d),

with :math:`c(W_a, W_d) = \sqrt{UB/\sum_b\|W_aW_{d,b}\|_F^2}` the power rescale and :math:`\Pi` the
entrywise projection :math:`z \mapsto z/|z|` onto the unit circle (:func:`unit_modulus`; ``1`` for
:math:`z = 0`) in the unit-modulus setting. In the unconstrained setting :math:`\Pi` is the identity
and the analog step is rescaled instead (:math:`W_a^+ = c(\tilde W_a, W_d)\tilde W_a`, as the
reference code). Both maps keep the iterate feasible after every half-step.

*Step-size condition.* The rate is smooth but not concave and the feasible set is not convex, so
there is no closed-form bound: for :math:`\mu` below the inverse Lipschitz constant of the gradient
on the (compact) feasible set the iteration ascends monotonically; the classical solver uses one
tuned constant :math:`\mu_{a,k} = \mu_{d,b,k} = \mu` (:func:`tune_step`). Validation only asks
:math:`\mu > 0` finite.

*Initialisation* (as in the paper): :math:`W_a^{(0)} = \Pi(V_{:,1:L})` from the SVD
:math:`\bar H = U\Sigma V^H` of the mean channel :math:`\bar H = \frac1B\sum_b H_b`; the digital
precoders either a fixed Gaussian draw (``digital_init="random"``, the reference code's choice, one
:math:`\mathcal{CN}(0, 1)` draw from ``init_seed`` shared by all channels — a complex buffer of
the model; real :math:`\mathcal N(0, 1)` for ``channel="real_gaussian"``, as the reference) or the
matched filter
:math:`W_{d,b}^{(0)} = (H_bW_a^{(0)})^H` (``"matched_filter"``), then rescaled onto the power
constraint. An all-zero effective channel falls back to the random draw so the rescale is defined.

Parameters: θh = {``mu_a`` (scalar), ``mu_d`` (one per band)} — learned per iteration by paradigm
``"hyperparameters"`` (the paper's unfolded PGA); ``step_shape="per_chain" | "per_entry"``
gives each RF chain / each entry of the iterate its own step (steps stay channel-independent
hyperparameters, classical value :math:`\mu` everywhere), and ``digital_updates = Q`` runs
:math:`Q` digital steps (each with its own learned steps) per analog step; θo = {``gain``, the :math:`\gamma` inside the
gradient (a per-layer re-weighting of the surrogate; the loss still uses the true SNR)} learned by
``"objective"``; fixed: ``wd_init``. Paradigm ``"correction"`` adds the core's zero-initialised
MLP Δ of the (real, imaginary) parts of the iterate and the channels to each PGA step (it
reproduces PGA at initialisation); ``"inductive_bias"`` replaces each step by the core's residual
MLP of the same features — generic, it keeps the iterate's meaning only through :math:`\Pi`, and
is documented as the weakest fit (``docs/hybrid_precoding.md``). Every iterate of every paradigm is mapped through the feasible
projection :meth:`HybridPGA.feasible` before its rate is computed, so every returned precoder
satisfies both constraints. See ``docs/hybrid_precoding.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from lightning_unfold.core.algorithm import (
    Algorithm,
    Certificate,
    Constraint,
    ParamSpec,
    ProblemSpec,
    Role,
    SolverTheory,
    as_operator,
    project_unit_modulus,
    require_problem,
    seeded_rng,
)
from lightning_unfold.core.iterate import complex_dtype, real_dtype, require_finite
from lightning_unfold.core.metrics import MeanOf, ProblemMetric

__all__ = [
    "ANALOG_SETTINGS",
    "CHANNEL_MODELS",
    "HybridBlackBoxNet",
    "HybridPGA",
    "HybridPrecoding",
    "PrecoderState",
    "achievable_rate",
    "pack_precoders",
    "power_scale",
    "rate_gradients",
    "tune_step",
    "unpack_precoders",
]

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
    \partial R/\partial\bar W_{d,b})` (module docstring), shapes ``(n, M, L)`` and
    ``(n, B, L, U)``."""
    hwa, a, g = _gram(h, wa, wd, gain)
    scale = gain / h.shape[1]
    gia = torch.linalg.solve(g, a)  # G⁻¹ H W_a W_d
    grad_a = scale * (h.mH @ gia @ wd.mH).sum(dim=1)
    grad_d = scale * (hwa.mH @ gia)
    return grad_a, grad_d


@dataclass(frozen=True)
class PrecoderState:
    """PGA's iterate: the analog precoder ``Wa`` ``(n, M, L)`` and the digital precoders ``Wd``
    ``(n, B, L, U)``, both complex. The estimate is the packed feasible pair
    (:func:`pack_precoders`)."""

    Wa: Tensor
    Wd: Tensor


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
    r"""Seeded wideband channels :math:`\{H_b\}` for hybrid precoding (module docstring).

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


#: the valid ``digital_init`` values of :class:`HybridPGA`
DIGITAL_INITS: tuple[str, ...] = ("random", "matched_filter")
#: the valid ``step_shape`` values of :class:`HybridPGA` (the granularity of the learned steps)
STEP_SHAPES: tuple[str, ...] = ("scalar", "per_chain", "per_entry")


class HybridPGA(Algorithm[PrecoderState]):
    r"""Projected gradient ascent on the achievable rate (see the module docstring).

    Args:
        step: the classical constant step :math:`\mu_{a,k} = \mu_{d,b,k} = \mu > 0`.
        digital_init: ``"random"`` (a fixed Gaussian draw, the paper's reference code) or
            ``"matched_filter"`` (:math:`W_{d,b} = (H_bW_a)^H`).
        init_seed: seed of the fixed random digital initialisation.
        step_shape: the granularity of one iteration's steps (all initialised to ``step``, so
            every choice reproduces the same classical PGA before training):

            - ``"scalar"`` — :math:`\mu_{a,k}` one scalar, :math:`\mu_{d,b,k}` one per band
              ``(B,)``: the paper's unfolded PGA;
            - ``"per_chain"`` — one analog step per RF chain (column of :math:`W_a`) ``(L,)``
              and one digital step per band and RF chain (row of :math:`W_{d,b}`) ``(B, L)``;
            - ``"per_entry"`` — a step matrix of the size of the iterate: :math:`\mu_{a,k}
              \in \mathbb R_{\ge 0}^{M\times L}` and :math:`\mu_{d,b,k} \in
              \mathbb R_{\ge 0}^{L\times U}` per band ``(B, L, U)``; the gradient step becomes
              the entrywise (diagonally preconditioned) :math:`W + \mu\odot\nabla_W R`.

            The steps stay hyperparameters θh: they do not depend on the channel, only the
            number of values per iteration grows (:math:`1 + B`, :math:`L(1 + B)`,
            :math:`ML + BLU`).
        digital_updates: :math:`Q \ge 1` digital gradient steps (each followed by the power
            rescale) after each analog step, at the new analog precoder; with :math:`Q > 1` the
            digital steps of iteration :math:`k` get a leading axis ``(Q, ...)``, one learned set
            per inner update :math:`q`. A fixed structural choice of the classical algorithm
            (the classical solver with the same ``digital_updates`` is its reference); one
            iteration then costs :math:`1 + Q` gradient evaluations instead of 2.
    """

    name: ClassVar[str] = "hybrid_pga"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="the achievable-rate maximisation of wideband hybrid precoding (non-convex: "
        "unit-modulus analog precoder)",
        fixed_point="a stationary point of the rate on the constraint set",
        convex=False,
        averaged=None,
        descent=None,
        linear_rate=None,
    )

    def certificate(self, s: PrecoderState, x: Tensor, p: Mapping[str, Tensor]) -> Certificate:
        r"""The projected-gradient residual :math:`\|P(s + \mu\nabla R(s)) - s\| /
        \|P(s + \mu\nabla R(s))\|` at the classical steps: the fixed-point residual of
        projected gradient ascent, zero exactly at a stationary point of the rate on the
        constraint set."""
        return Certificate(
            "relative projected-gradient residual of PGA", self.fixed_point_residual(s, x, p)
        )

    def __init__(
        self,
        step: float = 0.5,
        digital_init: str = "random",
        init_seed: int = 0,
        *,
        step_shape: str = "scalar",
        digital_updates: int = 1,
    ) -> None:
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"The PGA step must be finite and > 0, got {step}.")
        if digital_init not in DIGITAL_INITS:
            raise ValueError(
                f"Unknown digital_init {digital_init!r}; valid: {list(DIGITAL_INITS)}."
            )
        if step_shape not in STEP_SHAPES:
            raise ValueError(f"Unknown step_shape {step_shape!r}; valid: {list(STEP_SHAPES)}.")
        if not (
            isinstance(digital_updates, int)
            and not isinstance(digital_updates, bool)
            and digital_updates >= 1
        ):
            raise ValueError(
                f"digital_updates (Q, digital steps per analog step) must be an integer >= 1, "
                f"got {digital_updates!r}."
            )
        self.step_size, self.digital_init, self.init_seed = float(step), digital_init, init_seed
        self.step_shape, self.digital_updates = step_shape, digital_updates

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        self._bind(problem)
        return (
            ParamSpec("gain", Role.OBJECTIVE, Constraint.POSITIVE, "γ inside the gradient"),
            ParamSpec(
                "mu_a",
                Role.HYPER,
                Constraint.NONNEGATIVE,
                f"analog step μ_a,k, shared by all bands: {self._shape_doc('a')}",
            ),
            ParamSpec(
                "mu_d",
                Role.HYPER,
                Constraint.NONNEGATIVE,
                f"digital steps μ_d,b,k: {self._shape_doc('d')}",
            ),
            ParamSpec(
                "wd_init",
                Role.FIXED,
                doc="fixed random digital start (B, L, U): CN(0, 1), real N(0, 1) for real channels",
            ),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = self._bind(problem)
        f64 = torch.float64
        gen = torch.Generator().manual_seed(self.init_seed)
        shape = (prob.n_bands, prob.n_rf, prob.n_users)
        if prob.channel == "real_gaussian":  # the reference code's real N(0, 1) start
            wd0 = torch.randn(*shape, generator=gen, dtype=f64)
        else:  # CN(0, 1)
            wd0 = torch.randn(*shape, generator=gen, dtype=torch.complex128)
        shape_a, shape_d = self.step_shapes(prob)
        return {
            "gain": torch.tensor(prob.gain, dtype=f64),
            "mu_a": torch.full(shape_a, self.step_size, dtype=f64),
            "mu_d": torch.full(shape_d, self.step_size, dtype=f64),
            "wd_init": wd0,
        }

    def step_shapes(self, problem: HybridPrecoding) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The shapes of one iteration's ``mu_a`` and ``mu_d`` (class docstring, ``step_shape``
        and ``digital_updates``)."""
        M, L, B, U = problem.n_antennas, problem.n_rf, problem.n_bands, problem.n_users
        shape_a, shape_d = {
            "scalar": ((), (B,)),
            "per_chain": ((L,), (B, L)),
            "per_entry": ((M, L), (B, L, U)),
        }[self.step_shape]
        if self.digital_updates > 1:
            shape_d = (self.digital_updates, *shape_d)
        return shape_a, shape_d

    def _shape_doc(self, block: str) -> str:
        a, d = {
            "scalar": ("scalar", "(B,), one per band"),
            "per_chain": ("(L,), one per RF chain", "(B, L), per band and RF chain"),
            "per_entry": ("(M, L), one per entry of W_a", "(B, L, U), one per entry of W_d,b"),
        }[self.step_shape]
        if block == "a":
            return a
        q = self.digital_updates
        return d if q == 1 else f"(Q={q}, ...) of {d}, one set per digital update q"

    def _digital_step(self, mu_d: Tensor) -> Tensor:
        """``mu_d`` of one digital update, shaped to broadcast against ``W_d`` ``(n, B, L, U)``."""
        if self.step_shape == "scalar":
            return mu_d[:, None, None]
        if self.step_shape == "per_chain":
            return mu_d[:, :, None]
        return mu_d

    # -- the feasible set ------------------------------------------------------------------
    def _bind(self, problem: ProblemSpec) -> HybridPrecoding:
        """Remember the problem's feasible set (unit modulus or not, the budget UB), which
        :meth:`feasible` and :meth:`estimate` need; one instance serves one setting."""
        prob = require_problem(problem, HybridPrecoding, type(self).__name__)
        setting = (prob.unit_modulus, prob.total_power)
        bound = getattr(self, "_setting", None)
        if bound is not None and bound != setting:
            raise ValueError(
                f"This HybridPGA instance is bound to (unit_modulus, power) = {bound}, not "
                f"{setting}; create one HybridPGA per problem setting."
            )
        self._setting = setting
        return prob

    def _feasible_set(self) -> tuple[bool, float]:
        setting = getattr(self, "_setting", None)
        if setting is None:
            raise RuntimeError(
                "HybridPGA does not know its feasible set yet: call param_specs(problem) or "
                "classical_params(problem) first (UnfoldedModel does so)."
            )
        return setting

    def feasible(self, s: PrecoderState) -> PrecoderState:
        """:math:`\\Pi`: unit-modulus projection of ``Wa`` (in that setting), then the power
        rescale of ``Wd``. The identity (to rounding) on feasible iterates."""
        um, total = self._feasible_set()
        wa = project_unit_modulus(s.Wa) if um else s.Wa
        scale = power_scale(wa, s.Wd, total)
        return PrecoderState(Wa=wa, Wd=s.Wd * scale.to(s.Wd.dtype)[:, None, None, None])

    @staticmethod
    def _channels(x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        return x.to(complex_dtype(p["mu_a"].dtype))

    @torch.no_grad()
    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> PrecoderState:
        h = self._channels(x, p)
        n, B, U, _ = h.shape
        L = p["wd_init"].shape[1]
        um, _ = self._feasible_set()
        _, _, vh = torch.linalg.svd(h.mean(dim=1), full_matrices=True)
        wa = vh.mH[:, :, :L]
        if um:
            wa = project_unit_modulus(wa)
        rand = p["wd_init"].to(h.dtype).expand(n, B, L, U)
        if self.digital_init == "matched_filter":
            wd = (h @ wa.unsqueeze(1)).mH
            dead = _precoders(wa, wd).abs().pow(2).sum(dim=(1, 2, 3)) == 0
            wd = torch.where(dead[:, None, None, None], rand, wd)
        else:
            wd = rand
        return self.feasible(PrecoderState(Wa=wa.contiguous(), Wd=wd.contiguous()))

    def step(self, s: PrecoderState, x: Tensor, p: Mapping[str, Tensor], k: int) -> PrecoderState:
        h = self._channels(x, p)
        um, total = self._feasible_set()
        s = self.feasible(s)
        wa, wd = s.Wa, s.Wd
        grad_a, _ = rate_gradients(h, wa, wd, p["gain"])
        wa = wa + p["mu_a"] * grad_a
        if um:
            wa = project_unit_modulus(wa)
            wd = wd * power_scale(wa, wd, total).to(wd.dtype)[:, None, None, None]
        else:
            wa = wa * power_scale(wa, wd, total).to(wa.dtype)[:, None, None]
        mu_d = p["mu_d"] if self.digital_updates > 1 else p["mu_d"].unsqueeze(0)
        for q in range(self.digital_updates):
            _, grad_d = rate_gradients(h, wa, wd, p["gain"])
            wd = wd + self._digital_step(mu_d[q]) * grad_d
            wd = wd * power_scale(wa, wd, total).to(wd.dtype)[:, None, None, None]
        return PrecoderState(Wa=wa, Wd=wd)

    def objective(self, s: PrecoderState, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        """Per-sample negative rate (nats) of the feasible projection, with the true SNR."""
        f = self.feasible(s)
        return -achievable_rate(x.to(f.Wa.dtype), f.Wa, f.Wd, c["snr_gain"])

    def estimate_objective(self, estimate: Tensor, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        """Per-sample negative rate (nats) of packed precoders alone (:func:`pack_precoders`): the
        unsupervised loss of models without an iterate (the black box). The sizes are read from
        the channels ``x`` ``(n, B, U, M)`` and the estimate's width :math:`ML + BLU`."""
        _, B, U, M = x.shape
        L = estimate.shape[1] // (M + B * U)
        if estimate.ndim != 2 or estimate.shape[1] != L * (M + B * U) or L < 1:
            raise ValueError(
                f"A packed precoder for channels (n, B={B}, U={U}, M={M}) has width M·L + B·L·U "
                f"for some L >= 1; got an estimate of shape {tuple(estimate.shape)}."
            )
        n = estimate.shape[0]
        wa = estimate[:, : M * L].reshape(n, M, L)
        wd = estimate[:, M * L :].reshape(n, B, L, U)
        gain = c["snr_gain"].real if c["snr_gain"].is_complex() else c["snr_gain"]
        h = x.to(wa.dtype) if wa.is_complex() else x
        return -achievable_rate(h, wa.to(h.dtype), wd.to(h.dtype), gain)

    def estimate(self, s: PrecoderState) -> Tensor:
        """The packed feasible precoders :func:`pack_precoders` of :math:`\\Pi(s)`: feasible
        whatever produced ``s`` (a learned correction, a network layer)."""
        f = self.feasible(s)
        return pack_precoders(f.Wa, f.Wd)

    def make_black_box_net(self, problem: ProblemSpec, target_params: int) -> nn.Module:
        return HybridBlackBoxNet(
            require_problem(problem, HybridPrecoding, type(self).__name__), target_params
        )


class HybridBlackBoxNet(nn.Module):
    r"""The black-box baseline: an MLP from the channels to feasible precoders.

    Input: the real and imaginary parts of all :math:`H_b`, divided by the per-sample rms of the
    channel; ``n_hidden_layers`` ReLU layers of a width chosen so the parameter count is close to
    ``target_params``; output: the real and imaginary parts of a raw :math:`(W_a, \{W_{d,b}\})`,
    mapped onto the feasible set exactly as PGA's iterates are (:func:`unit_modulus` in that
    setting, then the power rescale), so the black box returns feasible precoders too. It knows
    nothing of the rate's gradient or of the SVD initialisation.
    """

    def __init__(
        self, problem: HybridPrecoding, target_params: int, *, n_hidden_layers: int = 2
    ) -> None:
        super().__init__()
        if n_hidden_layers < 1:
            raise ValueError(f"n_hidden_layers must be >= 1, got {n_hidden_layers}.")
        self.problem = problem
        p = problem
        in_dim = 2 * p.n_bands * p.n_users * p.n_antennas
        out_dim = 2 * p.estimate_width

        def count(h: int) -> int:
            return (in_dim + 1) * h + (n_hidden_layers - 1) * (h + 1) * h + (h + 1) * out_dim

        width = 1
        while count(width + 1) <= max(target_params, count(1)):
            width += 1
        layers: list[nn.Module] = [nn.Linear(in_dim, width), nn.ReLU()]
        for _ in range(n_hidden_layers - 1):
            layers += [nn.Linear(width, width), nn.ReLU()]
        layers.append(nn.Linear(width, out_dim))
        self.mlp = nn.Sequential(*layers)
        self.width = width

    def forward(self, x: Tensor) -> Tensor:
        real_dtype = self.mlp[0].weight.dtype
        h = x.to(complex_dtype(real_dtype))
        feats = torch.view_as_real(h).reshape(h.shape[0], -1)
        rms = feats.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(torch.finfo(real_dtype).tiny)
        raw = self.mlp(feats / rms)
        est = torch.view_as_complex(raw.reshape(h.shape[0], -1, 2).contiguous())
        wa, wd = unpack_precoders(est, self.problem)
        if self.problem.unit_modulus:
            wa = project_unit_modulus(wa)
        wd = wd * power_scale(wa, wd, self.problem.total_power).to(wd.dtype)[:, None, None, None]
        return pack_precoders(wa, wd)


def tune_step(
    problem: HybridPrecoding,
    depth: int,
    x: Tensor,
    candidates: Sequence[float] = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0),
    *,
    digital_init: str = "random",
    dtype: torch.dtype = torch.float64,
) -> float:
    """The constant step among ``candidates`` with the highest mean rate after ``depth``
    classical iterations on the tuning channels ``x`` (a grid search; ties: the earlier
    candidate) — :func:`~lightning_unfold.training.tune_classical` over ``step``."""
    from lightning_unfold.training.evaluation import tune_classical

    unlabelled = torch.full((x.shape[0], 1), float("nan"))  # the rate needs no target
    found = tune_classical(
        problem,
        HybridPGA,
        {"step": [float(mu) for mu in candidates]},
        x,
        unlabelled,
        depth,
        options={"digital_init": digital_init},
        dtype=dtype,
    )
    return float(found.best["step"])
