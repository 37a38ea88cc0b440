"""The MIMO detection problem :class:`MIMODetection`: seeded instances :math:`y = Hs + w`, the
channel models, the observation layout and the bit / symbol error rates."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from lightning_unfold.algorithms.detection.constellation import (
    _constellation_or_raise,
)
from lightning_unfold.core.algorithm import ProblemSpec, as_operator, seeded_rng
from lightning_unfold.core.iterate import require_finite
from lightning_unfold.core.metrics import ProblemMetric, RateOf, labelled_rows

#: the channel models :class:`MIMODetection` knows
CHANNELS: tuple[str, ...] = ("deepsic", "gaussian", "correlated", "toeplitz")


def _db_to_var(snr_db: np.ndarray) -> np.ndarray:
    return 10.0 ** (-snr_db / 10.0)


class MIMODetection(ProblemSpec):
    r"""Seeded multiuser MIMO detection instances :math:`y = Hs + w` (see
    :mod:`lightning_unfold.algorithms.detection` (the package docstring)).

    Args:
        n_users: :math:`U` transmitters (one symbol each); ``users=`` is its deprecated name.
        n_antennas: :math:`N` receive antennas; ``antennas=`` is its deprecated name.
        constellation: one of :data:`CONSTELLATIONS`.
        channel: ``"deepsic"`` — fixed :math:`H_{ij} = e^{-|i-j|}` (Shlezinger et al. 2021);
            ``"gaussian"`` — i.i.d. :math:`\mathcal N(0, 1/N)` (BPSK) or :math:`\mathcal{CN}(0, 1/N)`
            entries drawn per sample; ``"correlated"`` — a fixed Kronecker-correlated channel
            :math:`R_r^{1/2} G R_t^{1/2}/\sqrt N`, :math:`[R]_{ij} = \rho^{|i-j|}`, G drawn from ``seed``;
            ``"toeplitz"`` — DetNet's fixed-channel case (Samuel, Diskin & Wiesel 2019): the fixed
            :math:`H = \begin{psmallmatrix}R^{1/2}\\ 0\end{psmallmatrix}` (:math:`N\times U`,
            :math:`R^{1/2}` the symmetric square root of :math:`[R]_{ij} = \rho^{|i-j|}`,
            :math:`U\times U`), so that :math:`H^H H = R` exactly (unit-norm columns, like the
            ``"gaussian"`` channel on average). Every detector here depends on the channel only
            through :math:`H^H H` and :math:`H^H y` (sufficient statistics), so the zero rows cost
            nothing and any other :math:`QR^{1/2}` with orthonormal :math:`Q` gives the same error
            rates. Needs :math:`U \le N`.
        snr_db: one SNR (dB) or a list to draw from uniformly per sample (SNR = 1/σ²).
        snr_range: ``(lo, hi)`` dB, drawn uniformly per sample (instead of ``snr_db``).
        csi_noise: :math:`\epsilon^2`; the detector is given :math:`H \odot (1 + \epsilon N(0, 1))`,
            redrawn per frame, while the data follow the true H (0: perfect CSI).
        frame: symbols per frame (within one ``sample`` call, rows ``[f·frame, (f+1)·frame)``).
        correlation: ρ of the ``"correlated"`` and ``"toeplitz"`` channels (DetNet's: 0.55).
        loss: ``"cross_entropy"`` (mean over symbols of :math:`-\log p_u(s_u)`, DeepSIC's) or
            ``"symbol_mse"`` (:math:`\sum_u |\mathbb E_{p_u}[s] - s_u|^2` per sample, DetNet's).
        seed: seeds the fixed channels and, with ``sample``'s seed, the data.
        shadowing_db: :math:`\sigma_{sh}` in dB of log-normal shadowing (0: none): every
            sample's channel, whatever its model, is scaled by its own large-scale amplitude gain
            :math:`10^{\xi/20}`, :math:`\xi \sim \mathcal N(0, \sigma_{sh}^2)` dB, so the
            received SNR :math:`10^{\xi/10}\,\mathrm{SNR}` and the spectrum of
            :math:`H^H H` vary from sample to sample (3GPP TR 38.901 uses 4–8 dB).
            The detector is given the scaled channel.
        H_fixed: a user channel, fixed for every sample (it replaces the ``channel`` model):
            ``(n_antennas, n_users)`` — complex for a complex constellation, real for BPSK (a real
            matrix with a complex constellation is read as complex with zero imaginary part) —
            or its real equivalent ``(n_obs, n_sym)`` as :attr:`H_fixed` returns it. It may also
            be set after construction (``problem.H_fixed = H``); either way it is a constructor
            argument of :meth:`init_args`, so configs and checkpoints keep it.
    """

    default_algorithm = "soft_ic"
    renamed_arguments: ClassVar[Mapping[str, str]] = {"users": "n_users", "antennas": "n_antennas"}

    def __init__(
        self,
        n_users: int = 4,
        n_antennas: int = 4,
        constellation: str = "bpsk",
        channel: str = "deepsic",
        snr_db: float | list[float] | None = 10.0,
        snr_range: tuple[float, float] | list[float] | None = None,
        csi_noise: float = 0.0,
        frame: int = 500,
        correlation: float = 0.5,
        loss: str = "cross_entropy",
        seed: int = 0,
        H_fixed: Tensor | np.ndarray | list[list[float]] | None = None,
        shadowing_db: float = 0.0,
    ) -> None:
        if not (
            isinstance(n_users, int)
            and n_users >= 1
            and isinstance(n_antennas, int)
            and n_antennas >= 1
        ):
            raise ValueError(
                f"n_users and n_antennas must be integers >= 1, got {n_users}, {n_antennas}."
            )
        self.const = _constellation_or_raise(constellation)
        if channel not in CHANNELS:
            raise ValueError(f"Unknown channel {channel!r}; valid: {list(CHANNELS)}.")
        if (snr_db is None) == (snr_range is None):
            raise ValueError(
                "Give exactly one of snr_db (a value or a list) and snr_range (lo, hi)."
            )
        if snr_db is not None:
            values = [snr_db] if isinstance(snr_db, int | float) else list(snr_db)
            if not values:
                raise ValueError("snr_db is an empty list; give at least one SNR in dB.")
        else:
            values = list(snr_range)  # type: ignore[arg-type]
            if len(values) != 2 or not values[0] <= values[1]:
                raise ValueError(f"snr_range must be (lo, hi) with lo <= hi, got {snr_range}.")
        for v in values:
            if not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(
                    f"SNR values must be finite numbers in dB, got {v!r} (NaN/Inf is not an SNR)."
                )
        if not (math.isfinite(csi_noise) and csi_noise >= 0):
            raise ValueError(f"csi_noise is a variance >= 0, got {csi_noise}.")
        if not (isinstance(frame, int) and frame >= 1):
            raise ValueError(f"frame must be an integer >= 1, got {frame!r}.")
        if not -1.0 < correlation < 1.0:
            raise ValueError(f"correlation must lie in (-1, 1), got {correlation}.")
        if channel == "toeplitz" and n_users > n_antennas:
            raise ValueError(
                f'channel="toeplitz" gives H^T H = R ({n_users}x{n_users}, full rank), which needs '
                f"at least as many antennas as users; got n_users = {n_users} > n_antennas = "
                f"{n_antennas}."
            )
        if not (
            isinstance(shadowing_db, int | float)
            and not isinstance(shadowing_db, bool)
            and math.isfinite(shadowing_db)
            and shadowing_db >= 0
        ):
            raise ValueError(
                f"shadowing_db is the standard deviation (dB) of the log-normal shadowing, a "
                f"finite number >= 0 (0: no shadowing; 3GPP TR 38.901 uses 4-8 dB), got "
                f"{shadowing_db!r}."
            )
        if loss not in ("cross_entropy", "symbol_mse"):
            raise ValueError(f"Unknown loss {loss!r}; valid: ['cross_entropy', 'symbol_mse'].")
        self.n_users, self.n_antennas, self.channel = n_users, n_antennas, channel
        self.constellation_name = self.const.name
        self.snr_db = None if snr_db is None else [float(v) for v in values]
        self.snr_range = None if snr_range is None else (float(values[0]), float(values[1]))
        self.csi_noise, self.frame, self.correlation = float(csi_noise), frame, float(correlation)
        self.loss, self.seed = loss, seed
        self.shadowing_db = float(shadowing_db)
        self._model_H = self._fixed_channel()
        self._user_H = None if H_fixed is None else self._user_channel(H_fixed)

    @property
    def users(self) -> int:
        """:math:`U`, the same as :attr:`n_users` (the constructor's former name)."""
        return self.n_users

    @property
    def antennas(self) -> int:
        """:math:`N`, the same as :attr:`n_antennas` (the constructor's former name)."""
        return self.n_antennas

    @property
    def H_fixed(self) -> Tensor | None:
        """The fixed real-equivalent channel ``(n_obs, n_sym)`` (float64) every sample uses: the
        user's ``H_fixed`` if one was given, else the ``channel`` model's fixed channel
        (``None`` for ``"gaussian"``, drawn per sample)."""
        return self._model_H if self._user_H is None else self._user_H

    @H_fixed.setter
    def H_fixed(self, value: Tensor | np.ndarray | list[list[float]] | None) -> None:
        self._user_H = None if value is None else self._user_channel(value)
        self._record_init_arg("H_fixed", value)

    def _user_channel(self, value: Tensor | np.ndarray | list[list[float]]) -> Tensor:
        """A user channel as the real-equivalent ``(n_obs, n_sym)`` float64 matrix (see Args)."""
        N, U = self.antennas, self.users
        H = as_operator(value, "H_fixed", ndim=2, complex_ok=self.d == 2)
        if tuple(H.shape) == (N, U):
            return torch.from_numpy(self._real(H.to(torch.complex128).numpy()[None])[0])
        if self.d == 2 and tuple(H.shape) == (self.n_obs, self.n_sym) and not H.is_complex():
            return H
        equivalent = f" or its real equivalent ({self.n_obs}, {self.n_sym})" if self.d == 2 else ""
        raise ValueError(
            f"H_fixed has shape {tuple(H.shape)} but this {U}-user, {N}-antenna "
            f"{self.constellation_name} problem needs a channel of shape (n_antennas, n_users) = "
            f"({N}, {U}){equivalent}: y = H s maps {U} user symbols to {N} antennas."
        )

    # -- sizes --------------------------------------------------------------------------------
    @property
    def d(self) -> int:
        """Real coordinates per symbol (1 for BPSK, 2 for complex constellations)."""
        return self.const.dim

    @property
    def n_obs(self) -> int:
        """:math:`N_r = dN` real observations."""
        return self.antennas * self.d

    @property
    def n_sym(self) -> int:
        """:math:`U_r = dU` real symbol coordinates."""
        return self.users * self.d

    @property
    def width(self) -> int:
        """Width of one observation row :math:`[y;\\operatorname{vec}\\hat H;\\sigma_r^2]`."""
        return self.n_obs + self.n_obs * self.n_sym + 1

    # -- channels -----------------------------------------------------------------------------
    def _complex_fixed(self) -> np.ndarray | None:
        U, N = self.users, self.antennas
        if self.channel == "deepsic":
            i, j = np.arange(N)[:, None], np.arange(U)[None, :]
            return np.exp(-np.abs(i - j)).astype(np.complex128)
        if self.channel == "correlated":
            rng = seeded_rng(self.seed, 11)
            if self.d == 1:
                G = rng.normal(size=(N, U))
            else:
                G = (rng.normal(size=(N, U)) + 1j * rng.normal(size=(N, U))) / math.sqrt(2.0)
            Rr = self.correlation ** np.abs(np.subtract.outer(np.arange(N), np.arange(N)))
            Rt = self.correlation ** np.abs(np.subtract.outer(np.arange(U), np.arange(U)))
            return _sqrtm(Rr) @ G @ _sqrtm(Rt) / math.sqrt(N)
        if self.channel == "toeplitz":
            H = np.zeros((N, U), dtype=np.complex128)
            H[:U] = _sqrtm(toeplitz_correlation(U, self.correlation))
            return H
        return None

    def _fixed_channel(self) -> Tensor | None:
        H = self._complex_fixed()
        return None if H is None else torch.from_numpy(self._real(H[None])[0])

    def _real(self, H: np.ndarray) -> np.ndarray:
        """Real-equivalent ``(B, N_r, U_r)`` of complex ``(B, N, U)`` (user blocks interleaved)."""
        if self.d == 1:
            return H.real.copy()
        B, N, U = H.shape
        out = np.zeros((B, 2 * N, 2 * U))
        out[:, :N, 0::2], out[:, :N, 1::2] = H.real, -H.imag
        out[:, N:, 0::2], out[:, N:, 1::2] = H.imag, H.real
        return out

    def _draw_channels(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.H_fixed is not None:
            return np.broadcast_to(self.H_fixed.numpy(), (n, self.n_obs, self.n_sym)).copy()
        U, N = self.users, self.antennas
        if self.d == 1:
            Hc = rng.normal(scale=1.0 / math.sqrt(N), size=(n, N, U)).astype(np.complex128)
        else:
            Hc = (rng.normal(size=(n, N, U)) + 1j * rng.normal(size=(n, N, U))) / math.sqrt(2 * N)
        return self._real(Hc)

    # -- ProblemSpec --------------------------------------------------------------------------
    def constants(self) -> dict[str, Tensor]:
        """``points`` ``(M, d)``: the constellation (everything else is per sample, in ``x``)."""
        return {"points": self.const.points.clone()}

    def sample(
        self, n: int, *, seed: int | Sequence[int], dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        rng = seeded_rng(self.seed, seed)
        M, d = self.const.size, self.d
        idx = rng.integers(0, M, size=(n, self.users))
        s = self.const.points.numpy()[idx].reshape(n, self.n_sym)  # interleaved (Re, Im)
        if self.snr_db is not None:
            snr = np.asarray(self.snr_db)[rng.integers(0, len(self.snr_db), size=n)]
        else:
            lo, hi = self.snr_range  # type: ignore[misc]
            snr = rng.uniform(lo, hi, size=n)
        var_r = _db_to_var(snr) / d
        H = self._draw_channels(rng, n)
        if self.shadowing_db > 0:  # one large-scale amplitude gain 10^(ξ/20) per sample
            H = H * (10.0 ** (rng.normal(scale=self.shadowing_db, size=n) / 20.0))[:, None, None]
        y = np.einsum("bij,bj->bi", H, s) + np.sqrt(var_r)[:, None] * rng.normal(
            size=(n, self.n_obs)
        )
        if self.csi_noise > 0:
            frames = -(-n // self.frame)
            e = rng.normal(size=(frames, self.n_obs, self.n_sym))
            if d == 2:  # a real factor per complex entry, the same on its real-equivalent block
                e = self._csi_complex(rng, frames)
            given = H * (1.0 + math.sqrt(self.csi_noise) * np.repeat(e, self.frame, 0)[:n])
        else:
            given = H
        x = np.concatenate([y, given.reshape(n, -1), var_r[:, None]], axis=1)
        return torch.from_numpy(x).to(dtype), torch.from_numpy(idx).long()

    def _csi_complex(self, rng: np.random.Generator, frames: int) -> np.ndarray:
        """Multiplicative CSI errors of a complex channel as a real-equivalent factor (the same
        real factor on the four entries of each user block, so the structure is kept)."""
        e = rng.normal(size=(frames, self.antennas, self.users))
        block = np.repeat(e, 2, axis=2)
        return np.concatenate([block, block], axis=1)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(y (B, N_r), Ĥ (B, N_r, U_r), σ_r² (B,))`` from observation rows ``x``."""
        Nr, Ur = self.n_obs, self.n_sym
        return x[:, :Nr], x[:, Nr : Nr + Nr * Ur].reshape(-1, Nr, Ur), x[:, -1]

    def validate_observation(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (B, {self.width}), got {type(x)}.")
        if x.ndim != 2 or x.shape[1] != self.width:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but this {self.users}-user, {self.antennas}-antenna "
                f"{self.constellation_name} problem has rows [y ({self.n_obs}); vec(H) "
                f"({self.n_obs}x{self.n_sym}); noise variance (1)] of width {self.width}: pass a "
                f"batch of shape (B, {self.width}) (see MIMODetection.split)."
            )
        require_finite(x, "The observation x")
        if bool((x[:, -1] <= 0).any()):
            raise ValueError(
                "The noise variance (last column of x) must be > 0; an infinite SNR is not "
                "supported (use a large finite SNR)."
            )

    # -- scoring ------------------------------------------------------------------------------
    def hard(self, estimate: Tensor) -> Tensor:
        """Per-user decisions ``(B, U)``: the argmax of the probability vectors."""
        return estimate.argmax(dim=-1)

    def _errors(self, estimate: Tensor, target: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        bits = self.const.bits.to(target.device)
        wrong = (bits[self.hard(estimate)] != bits[target]).sum(dim=(1, 2))
        trials = torch.full_like(wrong, target.shape[1] * self.const.bits_per_symbol)
        return wrong, trials

    def _symbol_errors(self, estimate: Tensor, target: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        wrong = (self.hard(estimate) != target).sum(dim=1)
        return wrong, torch.full_like(wrong, target.shape[1])

    def metrics(self) -> tuple[ProblemMetric, ...]:
        """Bit error rate (primary; Gray labels of the per-user argmax), then symbol error rate."""
        return (
            RateOf("ber", self._errors, label="BER"),
            RateOf("ser", self._symbol_errors, label="SER"),
        )

    def per_sample_loss(self, estimate: Tensor, target: Tensor) -> Tensor:
        """The supervised loss of each sample ``(B,)`` (rows assumed labelled): the mean over
        users of the cross-entropy, or the ``symbol_mse`` squared error."""
        if self.loss == "cross_entropy":
            picked = estimate.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            return -picked.clamp_min(1e-12).log().mean(dim=1)
        pts = self.const.points.to(estimate)
        return (estimate @ pts - pts[target]).pow(2).sum(dim=(1, 2))

    def supervised_loss(self, estimate: Tensor, target: Tensor) -> Tensor | None:
        r"""Cross-entropy :math:`-\frac1{|\mathcal B_\ell|U}\sum_{i,u}\log p_{iu}(s_{iu})` over
        labelled rows (probabilities clamped at 1e-12), or, with ``loss="symbol_mse"``,
        :math:`\frac1{|\mathcal B_\ell|}\sum_i\sum_u|\mathbb E_{p_{iu}}[s] - s_{iu}|^2`."""
        labelled = labelled_rows(target)
        if not bool(labelled.any()):
            return None
        p, t = estimate[labelled], target[labelled]
        if self.loss == "cross_entropy":
            picked = p.gather(-1, t.unsqueeze(-1)).squeeze(-1)
            return -picked.clamp_min(1e-12).log().mean()
        pts = self.const.points.to(p)
        return (p @ pts - pts[t]).pow(2).sum(dim=(1, 2)).mean()


def toeplitz_correlation(n: int, rho: float) -> np.ndarray:
    r"""The ``n × n`` Toeplitz correlation :math:`[R]_{ij} = \rho^{|i-j|}` (positive definite for
    :math:`|\rho| < 1`)."""
    return rho ** np.abs(np.subtract.outer(np.arange(n), np.arange(n))).astype(np.float64)


def _sqrtm(R: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(R)
    return (V * np.sqrt(np.clip(w, 0, None))) @ V.T
