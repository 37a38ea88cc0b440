"""The source-separation problem :class:`NMFSeparation` (data generation) and its BSS Eval
metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lightning_unfold.core.algorithm import (
    ProblemSpec,
    seeded_rng,
)
from lightning_unfold.core.iterate import require_finite
from lightning_unfold.core.metrics import MeanOf, ProblemMetric


def bss_decomposition(estimate: Tensor, reference: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""SDR, SIR and SAR (dB) of every estimated source, shapes ``(B, J)``.

    BSS Eval (Vincent, Gribonval & Févotte 2006) with time-invariant gains (distortion filters of
    length 1), on the flattened spectrograms: for estimate :math:`\hat s_j` and references
    :math:`s_1..s_J`,

    .. math::
        s_{\text{target}} = \frac{\langle\hat s_j, s_j\rangle}{\|s_j\|^2}s_j,\quad
        e_{\text{interf}} = P_{\{s_i\}}\hat s_j - s_{\text{target}},\quad
        e_{\text{artif}} = \hat s_j - P_{\{s_i\}}\hat s_j,

    :math:`P_{\{s_i\}}` the orthogonal projection onto the span of all references;
    :math:`\mathrm{SDR} = 10\log_{10}\|s_{\text{target}}\|^2/\|e_{\text{interf}}+e_{\text{artif}}\|^2`,
    :math:`\mathrm{SIR} = 10\log_{10}\|s_{\text{target}}\|^2/\|e_{\text{interf}}\|^2`,
    :math:`\mathrm{SAR} = 10\log_{10}\|s_{\text{target}}+e_{\text{interf}}\|^2/\|e_{\text{artif}}\|^2`
    (each ratio's terms floored at :math:`10^{-30}`; a perfect estimate reads above 200 dB, the
    limit set by the :math:`10^{-12}` ridge of the references' Gram matrix).
    Computed in float64. ``estimate`` and ``reference`` are ``(B, J, ...)``.
    """
    if estimate.shape != reference.shape or estimate.ndim < 3:
        raise ValueError(
            f"estimate {tuple(estimate.shape)} and reference {tuple(reference.shape)} must both "
            "be (B, J, ...) with the same shape."
        )
    est = estimate.flatten(2).double()
    ref = reference.flatten(2).double()
    gram = ref @ ref.mT  # (B, J, J)
    J = gram.shape[-1]
    ridge = 1e-12 * gram.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(1e-300) / J
    gram = gram + ridge[:, None, None] * torch.eye(J, dtype=gram.dtype)
    inner = est @ ref.mT  # (B, J_est, J_ref): <ŝ_j, s_i>
    coef = torch.linalg.solve(gram, inner.mT).mT  # projection coefficients onto span{s_i}
    proj = coef @ ref
    own = torch.diagonal(inner, dim1=-2, dim2=-1) / torch.diagonal(gram, dim1=-2, dim2=-1)
    target = own.unsqueeze(-1) * ref
    e_interf = proj - target
    e_artif = est - proj

    def db(num: Tensor, den: Tensor) -> Tensor:
        n = num.pow(2).sum(-1).clamp_min(1e-30)
        d = den.pow(2).sum(-1).clamp_min(1e-30)
        return 10.0 * torch.log10(n / d)

    return db(target, e_interf + e_artif), db(target, e_interf), db(target + e_interf, e_artif)


def _sdr(estimate: Tensor, target: Tensor, x: Tensor) -> Tensor:
    return bss_decomposition(estimate, target)[0].mean(dim=1)


def _sir(estimate: Tensor, target: Tensor, x: Tensor) -> Tensor:
    return bss_decomposition(estimate, target)[1].mean(dim=1)


def _comb(freqs: np.ndarray, f0: float, n_harm: int, width: float, decay: float) -> np.ndarray:
    atom = np.zeros_like(freqs)
    for h in range(1, n_harm + 1):
        if h * f0 >= freqs[-1] + 3 * width:
            break
        atom += decay ** (h - 1) * np.exp(-0.5 * ((freqs - h * f0) / width) ** 2)
    return atom


def _band(freqs: np.ndarray, lo: float, hi: float, soft: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(freqs - lo) / soft)) / (1.0 + np.exp((freqs - hi) / soft))


class NMFSeparation(ProblemSpec):
    r"""Seeded two-source separation of nonnegative spectrogram-like mixtures.

    Each source :math:`j` has a nominal dictionary of ``combs`` harmonic combs (fundamentals drawn
    once from ``seed`` in a source-specific range, Gaussian partials of width ``width`` bins,
    amplitudes decaying as :math:`0.8^{h-1}`) and ``bands`` noise bands (smooth band-pass shapes),
    columns normalised to unit :math:`\ell_2` norm. Per sample, every atom is *perturbed* — its
    fundamental shifted by a factor :math:`1 + \epsilon`, :math:`|\epsilon| \le` ``jitter``, its
    partials scaled by independent log-normal gains — so the models' nominal dictionary is
    mismatched, as a dictionary learned on other recordings would be. Activations follow on/off
    Markov chains (mean segment ``segment`` frames) with Gamma amplitudes, smoothed over time.
    :math:`S_j = W_j^{\text{sample}}H_j + \text{floor}` (a small nonnegative noise floor
    ``noise``), :math:`V = S_1 + S_2`.

    ``sample`` returns ``x = V`` ``(B, F, T)`` and ``target = (S_1, S_2)`` ``(B, 2, F, T)``.
    Metrics: SDR (primary) and SIR of the Wiener-filtered estimates, dB
    (:func:`bss_decomposition`).
    """

    default_algorithm = "nmf"

    def __init__(
        self,
        n_freq: int = 64,
        n_frames: int = 32,
        combs: int = 5,
        bands: int = 2,
        width: float = 0.8,
        jitter: float = 0.03,
        noise: float = 0.01,
        segment: float = 6.0,
        seed: int = 0,
    ) -> None:
        if n_freq < 8 or n_frames < 1:
            raise ValueError(f"Need n_freq >= 8 and n_frames >= 1, got {n_freq}, {n_frames}.")
        if combs < 0 or bands < 0 or combs + bands < 1:
            raise ValueError(f"Each source needs at least one atom, got {combs=}, {bands=}.")
        for name, v in (("width", width), ("segment", segment)):
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be finite and > 0, got {v}.")
        for name, v in (("jitter", jitter), ("noise", noise)):
            if not (0 <= v < 1):
                raise ValueError(f"{name} must lie in [0, 1), got {v}.")
        self.n_freq, self.n_frames, self.combs, self.bands = n_freq, n_frames, combs, bands
        self.width, self.jitter, self.noise, self.segment = (
            float(width),
            float(jitter),
            float(noise),
            float(segment),
        )
        self.seed = seed
        rng = seeded_rng(seed, 11)
        freqs = np.arange(n_freq, dtype=np.float64)
        # source 0: low fundamentals, bands low-mid; source 1: higher fundamentals, bands high
        self._f0 = [
            np.sort(rng.uniform(0.06, 0.14, combs) * n_freq),
            np.sort(rng.uniform(0.11, 0.22, combs) * n_freq),
        ]
        self._bands = []
        for j in range(2):
            lo = rng.uniform(0.1 + 0.35 * j, 0.35 + 0.35 * j, bands) * n_freq
            self._bands.append(np.stack([lo, lo + rng.uniform(0.08, 0.2, bands) * n_freq], 1))
        self._freqs = freqs
        W = np.concatenate([self._atoms(j, None) for j in range(2)], axis=1)
        self.W = torch.from_numpy(W)

    @property
    def atoms_per_source(self) -> int:
        return self.combs + self.bands

    def _atoms(self, j: int, rng: np.random.Generator | None) -> np.ndarray:
        """Dictionary of source ``j`` ``(F, r)``: nominal, or perturbed with ``rng``."""
        cols = []
        for f0 in self._f0[j]:
            f = f0 if rng is None else f0 * (1.0 + rng.uniform(-self.jitter, self.jitter))
            atom = _comb(self._freqs, f, 12, self.width, 0.8)
            if rng is not None:  # per-partial gains: an atom whose timbre varies
                atom = atom * np.exp(0.2 * rng.normal(size=atom.shape)).clip(0.5, 2.0)
            cols.append(atom)
        for lo, hi in self._bands[j]:
            band = _band(self._freqs, lo, hi, 1.0)
            if rng is not None:
                band = band * np.exp(0.2 * rng.normal(size=band.shape))
            cols.append(band)
        A = np.stack(cols, axis=1)
        return A / np.linalg.norm(A, axis=0, keepdims=True)

    def _activations(self, rng: np.random.Generator) -> np.ndarray:
        r, T = self.atoms_per_source, self.n_frames
        p_switch = 1.0 / self.segment
        on = np.zeros((r, T), dtype=bool)
        state = rng.random(r) < 0.4
        for t in range(T):
            flip = rng.random(r) < p_switch
            state = np.where(flip, ~state, state)
            on[:, t] = state
        amp = rng.gamma(2.0, 0.5, size=(r, 1)) * np.exp(0.3 * rng.normal(size=(r, T)))
        h = on * amp
        kernel = np.array([0.25, 0.5, 0.25])
        return np.stack([np.convolve(row, kernel, mode="same") for row in h])

    def constants(self) -> dict[str, Tensor]:
        """``W``: the nominal dictionary ``(F, 2r)`` (source 1's atoms first); ``atoms``: r."""
        return {
            "W": self.W.clone(),
            "atoms": torch.tensor(float(self.atoms_per_source), dtype=torch.float64),
        }

    def sample(
        self, n: int, *, seed: int | Sequence[int], dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        rng = seeded_rng(self.seed, seed)
        S = np.empty((n, 2, self.n_freq, self.n_frames))
        for i in range(n):
            for j in range(2):
                S[i, j] = self._atoms(j, rng) @ self._activations(rng)
                S[i, j] += self.noise * np.abs(rng.normal(size=(self.n_freq, self.n_frames)))
        V = S.sum(axis=1)
        return torch.from_numpy(V).to(dtype), torch.from_numpy(S).to(dtype)

    def metrics(self) -> tuple[ProblemMetric, ...]:
        """Mean SDR (primary) and mean SIR over sources and samples, dB."""
        return (
            MeanOf("sdr_db", _sdr, label="SDR", unit="dB", higher_is_better=True),
            MeanOf("sir_db", _sir, label="SIR", unit="dB", higher_is_better=True),
        )

    def validate_observation(self, x: Tensor) -> None:
        shape = (self.n_freq, self.n_frames)
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (B, {shape[0]}, {shape[1]}).")
        if x.ndim != 3 or tuple(x.shape[1:]) != shape:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but this NMFSeparation problem has F×T = "
                f"{shape[0]}×{shape[1]}: mixtures must be a batch (B, {shape[0]}, {shape[1]}) "
                "(use x.unsqueeze(0) for one spectrogram)."
            )
        require_finite(x, "The mixture spectrogram V")
        if bool((x < 0).any()):
            raise ValueError(
                f"The mixture spectrogram V has {int((x < 0).sum())} negative entries; NMF "
                "factorises nonnegative data (use magnitudes or powers, not signed values)."
            )
