r"""Nonnegative matrix factorisation by β-divergence multiplicative updates, and deep NMF.

Problem (supervised source separation, :class:`NMFSeparation`): a nonnegative spectrogram-like
mixture :math:`V = S_1 + S_2 \in \mathbb R_{\ge0}^{F\times T}` of two sources, each built from its
own dictionary (harmonic combs and noise bands), is factorised as :math:`V \approx WH` with the
concatenated dictionary :math:`W = [W_1\ W_2] \ge 0` and activations :math:`H \ge 0`, by

.. math:: \min_{H \ge 0}\; D_\beta(V \,|\, WH) + \lambda\|H\|_1,\qquad
    d_\beta(v|u) = \begin{cases} \tfrac12 (v-u)^2 & \beta = 2 \ (\text{Euclidean})\\
    v\log\frac vu - v + u & \beta = 1 \ (\text{Kullback–Leibler})\\
    \frac{v^\beta + (\beta-1)u^\beta - \beta v u^{\beta-1}}{\beta(\beta-1)} & \text{otherwise.}
    \end{cases}

The sources are estimated by Wiener filtering, :math:`\hat S_j = \frac{W_jH_j}{WH}\odot V`, and
scored by their signal-to-distortion ratio (:func:`bss_decomposition`).

Iteration :math:`k` of :class:`NMF` (Lee & Seung 2001; Févotte & Idier 2011), :math:`\Lambda = WH`:

.. math::
    H^{(k)} &= H^{(k-1)} \odot \left(\frac{W_k^\top(V \odot \Lambda^{\beta-2})}
        {W_k^\top\Lambda^{\beta-1} + \lambda_k}\right)^{\gamma_k},\\
    W^{(k)} &= W^{(k-1)} \odot \left(\frac{(V \odot \Lambda'^{\beta-2})H^{(k)\top}}
        {\Lambda'^{\beta-1}H^{(k)\top}}\right)^{\gamma_k}\quad(\text{only with }
        \texttt{update\_dictionary}; \Lambda' = W^{(k-1)}H^{(k)}).

Step-size condition: the exponent :math:`\gamma(\beta) = 1/(2-\beta)` for :math:`\beta < 1`,
:math:`1` for :math:`1 \le \beta \le 2`, :math:`1/(\beta-1)` for :math:`\beta > 2` makes every update
the minimiser of a majoriser, so the objective never increases (Févotte & Idier 2011, Thm. 2);
the classical exponent is :math:`\gamma(\beta)`, and exponents in :math:`(0, \gamma(\beta)]` are
accepted. Multiplicative updates of positive factors by positive ratios keep :math:`H, W \ge 0`.

Paradigms: ``hyperparameters`` learns :math:`\gamma_k, \lambda_k`; ``objective`` learns an untied
nonnegative dictionary :math:`W_k` per layer — **deep NMF** (Le Roux, Hershey & Weninger 2015);
``correction`` multiplies the update by :math:`\exp(\Delta_k)` (:class:`NMFCorrectionNet`);
``inductive_bias`` replaces the ratio by a small network of it (:class:`NMFNetIteration`). Every
one keeps the factors nonnegative: constraints are projections onto :math:`\mathbb R_{\ge0}` and
all learned changes are multiplicative.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

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
    require_problem,
    seeded_rng,
)
from lightning_unfold.core.iterate import require_finite
from lightning_unfold.core.metrics import MeanOf, ProblemMetric

__all__ = [
    "NMF",
    "NMFBlackBoxNet",
    "NMFCorrectionNet",
    "NMFNetIteration",
    "NMFSeparation",
    "NMFState",
    "beta_divergence",
    "bss_decomposition",
    "mu_exponent",
]

_EPS = 1e-12


def mu_exponent(beta: float) -> float:
    r"""The exponent :math:`\gamma(\beta)` under which the multiplicative update is monotone."""
    if beta < 1.0:
        return 1.0 / (2.0 - beta)
    if beta <= 2.0:
        return 1.0
    return 1.0 / (beta - 1.0)


def beta_divergence(v: Tensor, u: Tensor, beta: float) -> Tensor:
    r"""Per-sample :math:`\sum d_\beta(v|u)` over all but the first dimension (``u`` floored at
    :math:`10^{-12}`)."""
    u = u.clamp_min(_EPS)
    if beta == 2.0:
        d = 0.5 * (v - u) ** 2
    elif beta == 1.0:
        d = torch.xlogy(v, v) - v * torch.log(u) - v + u
    elif beta == 0.0:
        ratio = v.clamp_min(_EPS) / u
        d = ratio - torch.log(ratio) - 1.0
    else:
        d = (v**beta + (beta - 1.0) * u**beta - beta * v * u ** (beta - 1.0)) / (
            beta * (beta - 1.0)
        )
    return d.flatten(1).sum(dim=1)


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


@dataclass(frozen=True)
class NMFState:
    """The iterate: activations ``H`` ``(B, R, T)``, dictionary ``W`` ``(B, F, R)`` (the layer's
    dictionary, or the iterated one with ``update_dictionary``) and the Wiener-filtered source
    estimates ``S`` ``(B, J, F, T)`` of ``(W, H)`` — the estimate compared with the sources."""

    H: Tensor
    W: Tensor
    S: Tensor


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


def _wiener(W: Tensor, H: Tensor, V: Tensor, r: int) -> Tensor:
    """Wiener-filtered sources ``(B, 2, F, T)``: :math:`\\frac{W_jH_j}{WH}\\odot V`."""
    parts = torch.stack([W[:, :, :r] @ H[:, :r], W[:, :, r:] @ H[:, r:]], dim=1)
    return parts / (parts.sum(dim=1, keepdim=True) + _EPS) * V.unsqueeze(1)


class NMF(Algorithm[NMFState]):
    r"""β-divergence multiplicative updates (see the module docstring for the recursion).

    Args:
        beta: the divergence (2 Euclidean, 1 Kullback–Leibler; any real accepted).
        update_dictionary: also iterate :math:`W` (blind NMF) instead of keeping the layer's.
        exponent: classical :math:`\gamma`, in :math:`(0, \gamma(\beta)]` (default
            :math:`\gamma(\beta)`).
        sparsity: classical :math:`\lambda \ge 0` on :math:`\|H\|_1`.
    """

    name: ClassVar[str] = "nmf"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="β-divergence NMF D_β(V | WH) + λ‖H‖₁ over H ≥ 0",
        fixed_point="a KKT point (H ≥ 0, ∇_H ≥ 0, H ⊙ ∇_H = 0)",
        convex=False,
        averaged=None,
        descent="the multiplicative updates with exponent γ ≤ γ(β) never raise the β-divergence "
        "(Févotte & Idier 2011, Thm. 2)",
        linear_rate=None,
    )

    def certificate(self, s: NMFState, x: Tensor, p: Mapping[str, Tensor]) -> Certificate:
        r"""The KKT residual of the activations (the dictionary is the layer's), relative:
        with :math:`\nabla_H = W^\top\Lambda^{\beta-1} - W^\top(V\odot\Lambda^{\beta-2}) +
        \lambda = d - n` (:math:`\Lambda = WH`),

        .. math:: r = \frac{\sum H\odot|d - n|}{\sum H\odot d}
            + \operatorname{mean}_{H_{ij} \approx 0}\big(n_{ij}/d_{ij} - 1\big)_+,

        complementarity :math:`H\odot\nabla_H = 0` plus dual feasibility :math:`\nabla_H \ge 0`
        where :math:`H = 0`; 0 exactly at a KKT point, which is where the multiplicative
        update is at a fixed point."""
        W = s.W if self.update_dictionary else p["dictionary"].expand(x.shape[0], -1, -1)
        num, den = self._powers(W @ s.H + _EPS, x)
        n = W.mT @ num
        d = W.mT @ den + p["sparsity"] + _EPS
        comp = (s.H * (d - n).abs()).flatten(1).sum(1) / (s.H * d).flatten(1).sum(1).clamp_min(_EPS)
        zero = s.H <= 1e-10 * s.H.flatten(1).amax(1).clamp_min(_EPS)[:, None, None]
        infeas = torch.where(zero, (n / d - 1.0).clamp_min(0.0), torch.zeros_like(d))
        frac = infeas.flatten(1).sum(1) / zero.flatten(1).sum(1).clamp_min(1)
        return Certificate("KKT residual of the activations H (relative)", comp + frac)

    def __init__(
        self,
        beta: float = 1.0,
        update_dictionary: bool = False,
        exponent: float | None = None,
        sparsity: float = 0.0,
    ) -> None:
        if not math.isfinite(beta):
            raise ValueError(f"beta must be finite, got {beta}.")
        gmax = mu_exponent(beta)
        gamma = gmax if exponent is None else float(exponent)
        if not 0.0 < gamma <= gmax * (1 + 1e-12):
            raise ValueError(
                f"The multiplicative-update exponent must lie in (0, gamma(beta)] = (0, {gmax:g}] "
                f"for beta = {beta:g} (Févotte & Idier 2011: monotone descent), got {exponent}."
            )
        if not (sparsity >= 0 and math.isfinite(sparsity)):
            raise ValueError(f"sparsity (lambda) must be finite and >= 0, got {sparsity}.")
        self.beta, self.update_dictionary = float(beta), bool(update_dictionary)
        self.exponent, self.sparsity = gamma, float(sparsity)

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec(
                "dictionary", Role.OBJECTIVE, Constraint.NONNEGATIVE, "dictionary W_k (F, R)"
            ),
            ParamSpec("exponent", Role.HYPER, Constraint.POSITIVE, "update exponent gamma_k"),
            ParamSpec("sparsity", Role.HYPER, Constraint.NONNEGATIVE, "l1 weight lambda_k"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = require_problem(problem, NMFSeparation, type(self).__name__)
        f64 = torch.float64
        return {
            "dictionary": prob.W.clone(),
            "exponent": torch.tensor(self.exponent, dtype=f64),
            "sparsity": torch.tensor(self.sparsity, dtype=f64),
        }

    def _powers(self, lam_: Tensor, V: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`(V \odot \Lambda^{\beta-2}, \Lambda^{\beta-1})` (no powers for β = 1, 2)."""
        if self.beta == 1.0:
            return V / lam_, torch.ones_like(lam_)
        if self.beta == 2.0:
            return V, lam_
        return V * lam_ ** (self.beta - 2.0), lam_ ** (self.beta - 1.0)

    def _ratio_H(self, W: Tensor, H: Tensor, V: Tensor, lam: Tensor) -> Tensor:
        num, den = self._powers(W @ H + _EPS, V)
        return (W.mT @ num) / (W.mT @ den + lam + _EPS)

    def _ratio_W(self, W: Tensor, H: Tensor, V: Tensor) -> Tensor:
        num, den = self._powers(W @ H + _EPS, V)
        return (num @ H.mT) / (den @ H.mT + _EPS)

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> NMFState:
        r""":math:`H^{(0)} = c\mathbf 1` with :math:`c = \operatorname{mean}(V)/(R\cdot
        \operatorname{mean}(W))` per sample (so :math:`WH^{(0)}` has :math:`V`'s mean)."""
        W = p["dictionary"].expand(x.shape[0], -1, -1)
        R = W.shape[-1]
        c = x.mean(dim=(1, 2)) / (R * W.mean(dim=(1, 2)) + _EPS)
        H = c[:, None, None] * x.new_ones(x.shape[0], R, x.shape[2])
        return NMFState(H=H, W=W, S=_wiener(W, H, x, round(float(p["atoms"]))))

    def step(self, s: NMFState, x: Tensor, p: Mapping[str, Tensor], k: int) -> NMFState:
        W = s.W if self.update_dictionary else p["dictionary"].expand(x.shape[0], -1, -1)
        gamma = p["exponent"]
        H = s.H * self._ratio_H(W, s.H, x, p["sparsity"]) ** gamma
        if self.update_dictionary:
            W = W * self._ratio_W(W, H, x) ** gamma
        return NMFState(H=H, W=W, S=_wiener(W, H, x, round(float(p["atoms"]))))

    def mu_ratio(self, s: NMFState, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        """The classical ratio of the H update at ``s`` (before the exponent), ``(B, R, T)``."""
        W = s.W if self.update_dictionary else p["dictionary"].expand(x.shape[0], -1, -1)
        return self._ratio_H(W, s.H, x, p["sparsity"])

    def objective(self, s: NMFState, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        lam = float(c["sparsity"]) if "sparsity" in c else self.sparsity
        return beta_divergence(x, s.W @ s.H, self.beta) + lam * s.H.flatten(1).sum(1)

    def estimate(self, s: NMFState) -> Tensor:
        return s.S

    def features(self, s: NMFState, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        r"""``(B, F)``: flattened :math:`[\rho, H, W, V]` with :math:`\rho` the classical ratio of
        the H update (unpacked by the correction / inductive-bias networks)."""
        b = x.shape[0]
        rho = self.mu_ratio(s, x, p)
        parts = (rho, s.H, s.W, x)
        return torch.cat([t.reshape(b, -1) for t in parts], dim=1)

    def _shape(self, problem: NMFSeparation) -> tuple[int, int, int, int]:
        return (
            problem.n_freq,
            problem.n_frames,
            2 * problem.atoms_per_source,
            (problem.atoms_per_source),
        )

    def _no_dictionary_updates(self, what: str) -> None:
        if self.update_dictionary:
            raise ValueError(
                f"The {what} network of NMF corrects the H update only; use "
                "update_dictionary=False (supervised separation with a given dictionary)."
            )

    def make_correction_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module:
        prob = require_problem(problem, NMFSeparation, type(self).__name__)
        self._no_dictionary_updates("correction")
        return NMFCorrectionNet(*self._shape(prob), channels=hidden, beta=self.beta)

    def make_inductive_bias_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module:
        prob = require_problem(problem, NMFSeparation, type(self).__name__)
        self._no_dictionary_updates("inductive-bias")
        return NMFNetIteration(*self._shape(prob), channels=hidden, exponent=self.exponent)

    def make_black_box_net(self, problem: ProblemSpec, target_params: int) -> nn.Module:
        require_problem(problem, NMFSeparation, type(self).__name__)
        return NMFBlackBoxNet(target_params)


def _unpack(features: Tensor, F: int, T: int, R: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    b = features.shape[0]
    sizes = [R * T, R * T, F * R, F * T]
    if features.shape[1] != sum(sizes):
        raise ValueError(f"NMF features have width {features.shape[1]}, expected {sum(sizes)}.")
    rho, H, W, V = torch.split(features, sizes, dim=1)
    return rho.reshape(b, R, T), H.reshape(b, R, T), W.reshape(b, F, R), V.reshape(b, F, T)


def _logs(rho: Tensor, H: Tensor) -> Tensor:
    r"""Network input ``(B, 2R, T)``: :math:`[\log\rho, \log H]` (floored at 1e-12)."""
    return torch.cat([torch.log(rho + _EPS), torch.log(H + _EPS)], dim=1)


class _TimeConv(nn.Sequential):
    """``Conv1d(c_in → c, 3) → ReLU → Conv1d(c → c_out, 3)`` along frames; zero last layer."""

    def __init__(self, c_in: int, channels: int, c_out: int) -> None:
        last = nn.Conv1d(channels, c_out, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        super().__init__(nn.Conv1d(c_in, channels, 3, padding=1), nn.ReLU(), last)


class NMFCorrectionNet(nn.Module):
    r"""Learned multiplicative correction of the H update (paradigm ``correction``).

    With :math:`\rho` the classical ratio and :math:`H^+ = H\odot\rho^\gamma` the classical
    update, the corrected update is :math:`H^+\odot\exp(g)`, :math:`g = \phi([\log\rho, \log H])`
    a two-layer 1-D convolution along frames over the :math:`2R` atom channels (last layer
    zero-initialised: :math:`g = 0`, the classical update). The core adds increments, so the
    network returns :math:`\Delta H = H^+\odot(e^{g} - 1) \ge -H^+` (hence
    :math:`H^+ + \Delta H \ge 0`), :math:`\Delta W = 0` and the matching change of the Wiener
    estimates. :math:`g` is clamped to :math:`[-10, 10]`, so :math:`e^{g} \ge 4.5\cdot10^{-5}`
    dominates any round-off between this :math:`H^+` and the core's.
    """

    def __init__(
        self, F: int, T: int, R: int, r: int, *, channels: int = 16, beta: float = 1.0
    ) -> None:
        super().__init__()
        self.F, self.T, self.R, self.r = F, T, R, r
        self.gamma = mu_exponent(beta)
        self.phi = _TimeConv(2 * R, channels, R)

    def forward(self, features: Tensor) -> Tensor:
        rho, H, W, V = _unpack(features, self.F, self.T, self.R)
        H_plus = H * rho**self.gamma
        g = self.phi(_logs(rho, H)).clamp(-10.0, 10.0)
        dH = H_plus * torch.expm1(g)
        dS = _wiener(W, H_plus + dH, V, self.r) - _wiener(W, H_plus, V, self.r)
        b = features.shape[0]
        return torch.cat(
            [dH.reshape(b, -1), torch.zeros_like(W).reshape(b, -1), dS.reshape(b, -1)], 1
        )


class NMFNetIteration(nn.Module):
    r"""An NMF iteration whose update ratio is a network (paradigm ``inductive_bias``).

    .. math:: H^+ = H \odot \exp\big(\gamma\log(\rho + \epsilon) + \phi([\log\rho, \log H])\big),

    :math:`\phi` a two-layer 1-D convolution along frames (last layer zero-initialised, so the
    layer starts as the classical update with exponent γ; the exponent is clamped to
    :math:`[-10, 10]`, so a layer changes H by at most a factor :math:`e^{10}`); a positive factor
    times a positive :math:`H`, so :math:`H^+ \ge 0`. The dictionary stays the classical one; the Wiener estimates
    are recomputed. Works on the core's ``(features, flat iterate) -> flat iterate`` interface.
    """

    def __init__(
        self, F: int, T: int, R: int, r: int, *, channels: int = 16, exponent: float = 1.0
    ) -> None:
        super().__init__()
        self.F, self.T, self.R, self.r = F, T, R, r
        self.log_gamma = nn.Parameter(torch.tensor(math.log(exponent)))
        self.phi = _TimeConv(2 * R, channels, R)

    def forward(self, features: Tensor, flat_iterate: Tensor) -> Tensor:
        rho, H, W, V = _unpack(features, self.F, self.T, self.R)
        z = _logs(rho, H)
        g = (self.log_gamma.exp() * z[:, : self.R] + self.phi(z)).clamp(-10.0, 10.0)
        H = H * torch.exp(g)
        S = _wiener(W, H, V, self.r)
        b = features.shape[0]
        return torch.cat([H.reshape(b, -1), W.reshape(b, -1), S.reshape(b, -1)], dim=1)


class NMFBlackBoxNet(nn.Module):
    r"""Black-box baseline: a 2-D convolutional mask estimator,
    :math:`\hat S_j = \operatorname{softmax}_j(\Phi(\log(1 + V)))\odot V` (nonnegative, sums to
    :math:`V`), :math:`\Phi` four 3×3 convolutions of a width matched to ``target_params``."""

    def __init__(self, target_params: int, *, layers: int = 4) -> None:
        super().__init__()
        width = 1
        while self._count(width + 1, layers) <= max(target_params, self._count(1, layers)):
            width += 1
        mods: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]
        for _ in range(layers - 2):
            mods += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        mods.append(nn.Conv2d(width, 2, 3, padding=1))
        self.phi = nn.Sequential(*mods)
        self.width = width

    @staticmethod
    def _count(c: int, layers: int) -> int:
        return 10 * c + (layers - 2) * (9 * c * c + c) + 18 * c + 2

    def forward(self, x: Tensor) -> Tensor:
        masks = torch.softmax(self.phi(torch.log1p(x).unsqueeze(1)), dim=1)
        return masks * x.unsqueeze(1)
