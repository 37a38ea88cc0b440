r"""CORONA: convolutional robust PCA for ultrasound clutter suppression (Solomon et al. 2019).

Problem (:class:`UltrasoundClutter`): a complex-valued beamformed ultrasound sequence of
:math:`T` frames of an :math:`n_x\times n_z` image, stored as the Casorati matrix
:math:`D \in \mathbb C^{P\times T}` (one column per frame, :math:`P = n_xn_z` pixels), is

.. math:: D = H_1 L + H_2 S + N,

with the *tissue* :math:`L` low rank (a few strong, slowly varying scatterer patterns), the
*blood* :math:`S` row-sparse (weak scatterers moving along a vessel: only vessel pixels are ever
non-zero) and complex noise :math:`N`. :math:`H_1 = H_2 = H` is the identity or a circular 2-D
blur of every frame (a point-spread function). The solvers minimise, per sample,

.. math:: \mathcal L(L, S; D) = \tfrac12\|D - H_1L - H_2S\|_F^2 + \lambda\|L\|_*
    + \mu\|S\|_{1,2},\qquad \|S\|_{1,2} = \textstyle\sum_i \|S_{i,:}\|_2,

(the mixed norm sums the :math:`\ell_2` norms of the pixels' time series, as in CORONA;
``penalty="l1"`` uses the entrywise :math:`\|S\|_1 = \sum_{it}|S_{it}|` instead), with
:math:`\lambda = \texttt{lam}\cdot\rho`, :math:`\mu = \texttt{mu}\cdot\rho`,
:math:`\rho = \operatorname{rms}(D) = \|D\|_F/\sqrt{PT}` (scale-equivariant, as ``rpca.py``).

**ISTA for RPCA** (:class:`ISTARPCA`, the iteration CORONA unfolds): a proximal gradient step on
the joint smooth term, with residual :math:`R = H_1L^{(k-1)} + H_2S^{(k-1)} - D`,

.. math::
    L^{(k)} &= \operatorname{SVT}_{\tau_L\rho}\big(L^{(k-1)} - \eta\,H_1^{\mathsf H}R\big),\\
    S^{(k)} &= \operatorname{prox}_{\tau_S\rho}\big(S^{(k-1)} - \eta\,H_2^{\mathsf H}R\big),

classically :math:`\tau_L = \eta\,\texttt{lam}`, :math:`\tau_S = \eta\,\texttt{mu}`,
:math:`L^{(0)} = S^{(0)} = 0`. :math:`\operatorname{SVT}_\tau(X) = U\max(\Sigma - \tau, 0)V^{\mathsf H}`
(complex SVD) is the prox of :math:`\tau\|\cdot\|_*`; the prox of :math:`\tau\|\cdot\|_{1,2}` shrinks
every row, :math:`s_i \mapsto s_i\max(0, 1 - \tau/\|s_i\|_2)`, and that of :math:`\tau\|\cdot\|_1`
every entry, :math:`z \mapsto z\max(0, 1 - \tau/|z|)` (modulus shrunk, phase kept).
**Step-size condition**: the gradient of the smooth term is Lipschitz with constant
:math:`L_f = \|[H_1\ H_2]\|_2^2 = \lambda_{\max}(H_1H_1^{\mathsf H} + H_2H_2^{\mathsf H})`
(:math:`L_f = 2` for :math:`H = I`); :math:`0 < \eta \le 1/L_f` gives monotone descent and the
:math:`O(1/k)` rate (Beck & Teboulle 2009), the classical step is :math:`\eta = 1/L_f`.
:class:`FISTARPCA` adds Nesterov momentum on :math:`(L, S)` (:math:`O(1/k^2)`, same step bound).

Written as CORONA writes it, one ISTA step is

.. math::
    L^{(k)} &= \operatorname{SVT}_{\tau_L\rho}\big(P_5 * L^{(k-1)} + P_3 * S^{(k-1)} + P_1 * D\big),\\
    S^{(k)} &= \operatorname{prox}_{\tau_S\rho}\big(P_6 * S^{(k-1)} + P_4 * L^{(k-1)} + P_2 * D\big),

with :math:`P_1 = \eta H_1^{\mathsf H}`, :math:`P_2 = \eta H_2^{\mathsf H}`,
:math:`P_3 = -\eta H_1^{\mathsf H}H_2`, :math:`P_4 = -\eta H_2^{\mathsf H}H_1`,
:math:`P_5 = I - \eta H_1^{\mathsf H}H_1`, :math:`P_6 = I - \eta H_2^{\mathsf H}H_2`. For a circular
blur these operators are circular convolutions of every frame, so **CORONA** (:class:`CORONA`)
replaces them by six learned small convolutions per layer, :math:`P_j^k`, over the
:math:`(x, z, t)` axes of the reshaped :math:`n_x\times n_z\times T` sequence (circular in space,
zero-padded in time; ``time_kernel=1`` gives purely spatial 2-D kernels), together with
learned per-layer thresholds :math:`\tau_L^k, \tau_S^k`. The weights are *complex*: the
classical operators are complex-linear (a phase rotation of the echoes commutes with them), and
complex kernels with SVT and modulus shrinkage keep the whole network phase-equivariant,
:math:`D \mapsto e^{i\varphi}D \Rightarrow (L, S) \mapsto e^{i\varphi}(L, S)`, which real
:math:`(\mathrm{re}, \mathrm{im})`-channel kernels would not (tested). Initialised with the
classical kernels (a scaled delta for :math:`H = I`, the exact autocorrelation kernels of the PSF
otherwise), CORONA reproduces ISTA exactly (tested in complex128 to 1e-8).

Paradigms of :class:`ISTARPCA`: ``hyperparameters`` learns :math:`\eta_k, \tau_L^k, \tau_S^k`;
``objective`` learns the operators :math:`H_1^k, H_2^k` (dense, ``variant="direct"``) or, with
``variant="corona"``, is CORONA; ``correction`` and ``inductive_bias`` use the core's default
networks. See ``docs/corona.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_unfold.core.algorithm import (
    Algorithm,
    Constraint,
    ParamSpec,
    ProblemSpec,
    Role,
    SolverTheory,
    require_problem,
    seeded_rng,
)
from lightning_unfold.core.iterate import complex_dtype, require_finite
from lightning_unfold.core.metrics import NMSE, ProblemMetric, labelled_rows

__all__ = [
    "CORONA",
    "FISTARPCA",
    "ISTARPCA",
    "PENALTIES",
    "FISTARPCAState",
    "LowRankSparseState",
    "UltrasoundClutter",
    "blur",
    "blur_adjoint",
    "complex_soft_threshold",
    "corona_kernels",
    "gaussian_psf",
    "lipschitz_constant",
    "low_rank_sparse_objective",
    "row_soft_threshold",
    "singular_value_threshold",
]

#: the sparsity penalties on the blood part: CORONA's mixed ℓ1,2 (rows = pixels) or entrywise ℓ1
PENALTIES: tuple[str, ...] = ("l12", "l1")


# -- proximal maps --------------------------------------------------------------------------
def complex_soft_threshold(v: Tensor, tau: Tensor | float) -> Tensor:
    r"""Entrywise :math:`z \mapsto z\max(0, 1 - \tau/|z|)`: the modulus shrunk by :math:`\tau`, the
    phase kept — the prox of :math:`\tau\|\cdot\|_1` on complex (or real) entries; 0 stays 0."""
    mag = v.abs()
    safe = torch.where(mag > 0, mag, torch.ones_like(mag))
    scale = torch.where(mag > 0, torch.clamp(1.0 - tau / safe, min=0.0), torch.zeros_like(mag))
    return v * scale.to(v.dtype) if v.is_complex() else v * scale


def row_soft_threshold(v: Tensor, tau: Tensor | float) -> Tensor:
    r"""Row-wise :math:`s_i \mapsto s_i\max(0, 1 - \tau/\|s_i\|_2)` over the last axis: the prox of
    :math:`\tau\sum_i\|s_i\|_2` (group soft thresholding); a zero row stays zero."""
    sq = v.abs().pow(2).sum(dim=-1, keepdim=True)
    safe = torch.where(sq > 0, sq, torch.ones_like(sq)).sqrt()
    scale = torch.where(sq > 0, torch.clamp(1.0 - tau / safe, min=0.0), torch.zeros_like(sq))
    return v * scale.to(v.dtype) if v.is_complex() else v * scale


def singular_value_threshold(x: Tensor, tau: Tensor | float) -> Tensor:
    r""":math:`\operatorname{SVT}_\tau(X) = U\max(\Sigma - \tau, 0)V^{\mathsf H}` for a batch
    ``(B, P, T)`` (complex or real; ``tau`` a scalar or ``(B, 1)``): the prox of
    :math:`\tau\|\cdot\|_*`. Its output does not depend on the phases of the singular vectors, so
    the gradient through the complex SVD is well defined."""
    U, s, Vh = torch.linalg.svd(x, full_matrices=False)
    shrunk = torch.clamp(s - tau, min=0.0)
    return (U * shrunk.unsqueeze(-2).to(U.dtype)) @ Vh


def _prox_sparse(v: Tensor, tau: Tensor, penalty: str) -> Tensor:
    return row_soft_threshold(v, tau) if penalty == "l12" else complex_soft_threshold(v, tau)


def _rms(x: Tensor) -> Tensor:
    r""":math:`\operatorname{rms}(D) = \|D\|_F/\sqrt{PT}` per sample, shape ``(B, 1, 1)``."""
    return x.abs().pow(2).mean(dim=(1, 2), keepdim=True).sqrt()


def _grid(p: Mapping[str, Tensor]) -> tuple[int, int]:
    return round(float(p["grid"][0])), round(float(p["grid"][1]))


def blur(x: Tensor, psf: Tensor, grid: tuple[int, int]) -> Tensor:
    r""":math:`HX`: every frame (column) of ``x`` ``(B, P, T)``, as an image on the ``grid``
    :math:`n_x\times n_z`, circularly convolved with ``psf`` ``(s, s)`` (odd, centred)."""
    if psf.numel() == 1:
        return psf.reshape(()).to(x.dtype) * x
    b, P, T = x.shape
    kernel = torch.flip(psf, (0, 1)).reshape(1, 1, *psf.shape, 1)
    return _circular_correlation(x.reshape(b, 1, *grid, T), kernel).reshape(b, P, T)


def blur_adjoint(x: Tensor, psf: Tensor, grid: tuple[int, int]) -> Tensor:
    r""":math:`H^{\mathsf H}X`: circular cross-correlation with :math:`\bar h` (the adjoint of
    :func:`blur`)."""
    if psf.numel() == 1:
        return psf.reshape(()).conj().to(x.dtype) * x
    b, P, T = x.shape
    kernel = psf.conj().reshape(1, 1, *psf.shape, 1)
    return _circular_correlation(x.reshape(b, 1, *grid, T), kernel).reshape(b, P, T)


def lipschitz_constant(psf1: Tensor, psf2: Tensor, grid: tuple[int, int]) -> float:
    r""":math:`L_f = \|[H_1\ H_2]\|_2^2 = \max_\omega |\hat h_1(\omega)|^2 + |\hat h_2(\omega)|^2` for
    circular blurs (both diagonal in the 2-D DFT of the grid)."""
    spectra = []
    for h in (psf1, psf2):
        padded = torch.zeros(grid, dtype=torch.complex128)
        padded[: h.shape[0], : h.shape[1]] = h.to(torch.complex128)
        spectra.append(torch.fft.fft2(padded).abs().pow(2))
    return float((spectra[0] + spectra[1]).max())


def _sparsity_norm(s: Tensor, penalty: str) -> Tensor:
    if penalty == "l12":
        return torch.linalg.vector_norm(s, dim=-1).sum(dim=-1)
    return s.abs().sum(dim=(1, 2))


def low_rank_sparse_objective(
    L: Tensor,
    S: Tensor,
    x: Tensor,
    psf1: Tensor,
    psf2: Tensor,
    grid: tuple[int, int],
    lam: Tensor | float,
    mu: Tensor | float,
    penalty: str = "l12",
) -> Tensor:
    r"""Per-sample :math:`\tfrac12\|D - H_1L - H_2S\|_F^2 + \texttt{lam}\,\rho\|L\|_* +
    \texttt{mu}\,\rho\|S\|_{1,2}` (or :math:`\|S\|_1`), :math:`\rho = \operatorname{rms}(D)`,
    :math:`H_j` the circular blurs by ``psf1``, ``psf2`` on the ``grid``."""
    r = blur(L, psf1, grid) + blur(S, psf2, grid) - x
    rho = _rms(x).flatten()
    nuclear = torch.linalg.svdvals(L).sum(dim=-1)
    return 0.5 * r.abs().pow(2).sum(dim=(1, 2)) + rho * (
        lam * nuclear + mu * _sparsity_norm(S, penalty)
    )


# -- the problem ----------------------------------------------------------------------------
class _PartNMSE(NMSE):
    """Pooled NMSE (dB) of one component (0 = tissue, 1 = blood) of ``(B, 2, P, T)`` estimates."""

    def __init__(self, part: int, name: str, label: str) -> None:
        self.part, self.name, self.label = part, name, label

    def statistics(self, estimate: Tensor, target: Tensor, x: Tensor) -> Tensor:
        return super().statistics(estimate[:, self.part], target[:, self.part], x)


def gaussian_psf(width: float) -> np.ndarray:
    r"""A normalised 2-D Gaussian point-spread function of standard deviation ``width`` pixels on
    a :math:`(2r+1)^2` grid, :math:`r = \lceil 2\,\texttt{width}\rceil`; ``[[1]]`` for width 0."""
    if width == 0:
        return np.ones((1, 1))
    r = math.ceil(2.0 * width)
    g = np.arange(-r, r + 1, dtype=np.float64)
    h = np.exp(-0.5 * (g[:, None] ** 2 + g[None, :] ** 2) / width**2)
    return h / h.sum()


def _circular_correlation(x: Tensor, kernel: Tensor) -> Tensor:
    """Every frame of ``x`` ``(B, C_in, n_x, n_z, T)`` cross-correlated with ``kernel``
    ``(C_out, C_in, k_x, k_z, k_t)`` (odd sizes): circular in space, zero-padded in time."""
    kx, kz, kt = kernel.shape[-3:]
    rx, rz, rt = kx // 2, kz // 2, kt // 2
    if rx or rz:
        x = F.pad(x, (0, 0, rz, rz, rx, rx), mode="circular")
    if rt:
        x = F.pad(x, (rt, rt, 0, 0, 0, 0))
    return F.conv3d(x, kernel.to(x.dtype))


def _psf_matrix(psf: np.ndarray, n_x: int, n_z: int) -> Tensor:
    """The ``(P, P)`` matrix of the circular blur by ``psf`` on an ``n_x × n_z`` grid (raster order:
    pixel ``i·n_z + j``), built by applying the blur to every basis image."""
    P = n_x * n_z
    basis = torch.eye(P, dtype=torch.float64).reshape(P, 1, n_x, n_z, 1)
    kernel = torch.from_numpy(psf[::-1, ::-1].copy()).reshape(1, 1, *psf.shape, 1)
    out = _circular_correlation(basis, kernel)  # column j = H e_j (a true convolution)
    return out.reshape(P, P).T.contiguous()


class UltrasoundClutter(ProblemSpec):
    r"""Seeded synthetic ultrasound sequences :math:`D = H(L + S) + N` (complex, Casorati form).

    Per sample, on an ``n_x`` × ``n_z`` grid over ``n_frames`` frames:

    * **tissue** :math:`L = \sum_{j=1}^{r} u_jv_j^\top` (rank ``rank``): :math:`u_j` a smooth complex
      speckle pattern (complex Gaussian noise blurred circularly with a Gaussian of 1.5 px),
      :math:`v_j(t) = (1 + 0.2\sin(2\pi f'_jt + \psi_j))\,e^{i(2\pi f_jt + \phi_j)}` with slow
      Doppler :math:`|f_j| \le 0.03` cycles/frame (slowly moving strong scatterers); scaled to
      :math:`\operatorname{mean}|L|^2 = 1`;
    * **blood** :math:`S`: ``vessels`` straight vessels (random angle and offset) each carrying
      ``bubbles`` point scatterers that move along it by 0.5–1.5 px per frame (wrapping around),
      each rendered as a Gaussian spot of 0.6 px (cut off at 1.2 px, so that the blood is exactly
      row-sparse) with a random amplitude and a fast Doppler phase
      (0.5–2.5 rad per frame); scaled so that
      :math:`\operatorname{mean}|S|^2 = 10^{\texttt{blood\_db}/10}` (20–30 dB below tissue);
    * **noise** :math:`N`: circular complex Gaussian, :math:`\operatorname{mean}|N|^2 =
      10^{\texttt{noise\_db}/10}`;
    * :math:`H = H_1 = H_2`: the identity (``psf_width = 0``) or a circular Gaussian blur of every
      frame of standard deviation ``psf_width`` pixels (:func:`gaussian_psf`).

    ``sample`` returns ``x = D`` ``(B, P, T)`` and ``target = (L, S)`` stacked ``(B, 2, P, T)``
    (tissue first), complex in the precision of ``dtype`` (float32 → complex64). Metrics: pooled
    NMSE of the blood (primary) and of the tissue, in dB.

    Args:
        n_x, n_z: image size (pixels); n_frames: :math:`T` (``frames=`` is its deprecated
            name); rank: tissue rank
            :math:`1 \le r \le \min(P, T)`; vessels: 1 or 2; bubbles: scatterers per vessel.
        blood_db, noise_db: mean powers relative to the tissue (dB, < 0).
        psf_width: PSF standard deviation (pixels, ≥ 0); its support must fit in the grid.
        lam, mu: relative weights of :math:`\|L\|_*` and :math:`\|S\|_{1,2}` in the objective.
        seed: with ``sample``'s seed, determines the data.
    """

    default_algorithm = "ista_rpca"
    renamed_arguments: ClassVar[Mapping[str, str]] = {"frames": "n_frames"}

    def __init__(
        self,
        n_x: int = 16,
        n_z: int = 16,
        n_frames: int = 20,
        rank: int = 3,
        vessels: int = 1,
        bubbles: int = 12,
        blood_db: float = -20.0,
        noise_db: float = -40.0,
        psf_width: float = 0.0,
        lam: float = 0.5,
        mu: float = 0.2,
        seed: int = 0,
    ) -> None:
        for name, v in (("n_x", n_x), ("n_z", n_z), ("n_frames", n_frames)):
            if not (isinstance(v, int) and v >= 2):
                raise ValueError(f"{name} must be an integer >= 2, got {v!r}.")
        P = n_x * n_z
        if not (isinstance(rank, int) and 1 <= rank <= min(P, n_frames)):
            raise ValueError(
                f"rank must be an integer in [1, min(P, T)] = [1, {min(P, n_frames)}] "
                f"(P = n_x·n_z = {P} pixels, T = {n_frames} frames), got {rank!r}."
            )
        if vessels not in (1, 2):
            raise ValueError(f"vessels must be 1 or 2, got {vessels!r}.")
        if not (isinstance(bubbles, int) and bubbles >= 1):
            raise ValueError(
                f"bubbles (scatterers per vessel) must be an integer >= 1, got {bubbles!r}."
            )
        for name, v in (("blood_db", blood_db), ("noise_db", noise_db)):
            if not (math.isfinite(v) and v < 0):
                raise ValueError(
                    f"{name} is a power relative to the tissue and must be < 0 dB, got {v}."
                )
        if not (math.isfinite(psf_width) and psf_width >= 0):
            raise ValueError(f"psf_width must be finite and >= 0 pixels, got {psf_width}.")
        for name, v in (("lam", lam), ("mu", mu)):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {v}.")
        self.psf = gaussian_psf(float(psf_width))
        if self.psf.shape[0] > min(n_x, n_z):
            raise ValueError(
                f"The PSF of width {psf_width} px has support {self.psf.shape[0]} px, larger than "
                f"the {n_x}×{n_z} image; use a smaller psf_width or a larger image."
            )
        self.n_x, self.n_z, self.n_frames, self.rank = n_x, n_z, n_frames, rank
        self.vessels, self.bubbles = vessels, bubbles
        self.blood_db, self.noise_db, self.psf_width = (
            float(blood_db),
            float(noise_db),
            float(psf_width),
        )
        self.lam, self.mu, self.seed = float(lam), float(mu), seed
        self.H = _psf_matrix(self.psf, n_x, n_z)
        self._speckle_kernel = gaussian_psf(1.5)

    @property
    def pixels(self) -> int:
        return self.n_x * self.n_z

    @property
    def lipschitz(self) -> float:
        r""":math:`L_f = \lambda_{\max}(H_1H_1^{\mathsf H} + H_2H_2^{\mathsf H})` (= 2 for :math:`H = I`)."""
        return lipschitz_constant(self.psf_tensor(), self.psf_tensor(), (self.n_x, self.n_z))

    def psf_tensor(self) -> Tensor:
        """The PSF as a complex128 tensor ``(s, s)``."""
        return torch.from_numpy(self.psf).to(torch.complex128)

    @property
    def frames(self) -> int:
        """:math:`T`, the same as :attr:`n_frames` (the constructor's former name)."""
        return self.n_frames

    def constants(self) -> dict[str, Tensor]:
        """``psf1``, ``psf2`` (the PSFs of :math:`H_1 = H_2`, complex128), ``lam``, ``mu`` and
        ``grid`` = (n_x, n_z)."""
        f64 = torch.float64
        return {
            "psf1": self.psf_tensor(),
            "psf2": self.psf_tensor(),
            "lam": torch.tensor(self.lam, dtype=f64),
            "mu": torch.tensor(self.mu, dtype=f64),
            "grid": torch.tensor([float(self.n_x), float(self.n_z)], dtype=f64),
        }

    def _smooth(self, field: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(field).reshape(1, 1, self.n_x, self.n_z, 1)
        k = torch.from_numpy(self._speckle_kernel).reshape(1, 1, *self._speckle_kernel.shape, 1)
        return _circular_correlation(t, k.to(t.dtype)).reshape(self.n_x, self.n_z).numpy()

    def _tissue(self, rng: np.random.Generator) -> np.ndarray:
        t = np.arange(self.n_frames)
        L = np.zeros((self.pixels, self.n_frames), dtype=np.complex128)
        for _ in range(self.rank):
            field = rng.normal(size=(self.n_x, self.n_z)) + 1j * rng.normal(
                size=(self.n_x, self.n_z)
            )
            u = self._smooth(field.real) + 1j * self._smooth(field.imag)
            u = u.reshape(-1) / np.linalg.norm(u)
            f, f_amp = rng.uniform(-0.03, 0.03), rng.uniform(0.0, 0.05)
            amp = 1.0 + 0.2 * np.sin(2 * np.pi * f_amp * t + rng.uniform(0, 2 * np.pi))
            v = amp * np.exp(1j * (2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)))
            L += rng.uniform(0.5, 1.0) * np.outer(u, v)
        return L / np.sqrt(np.mean(np.abs(L) ** 2))

    def _blood(self, rng: np.random.Generator) -> np.ndarray:
        nx, nz, T = self.n_x, self.n_z, self.n_frames
        gx, gz = np.meshgrid(np.arange(nx), np.arange(nz), indexing="ij")
        S = np.zeros((nx, nz, T), dtype=np.complex128)
        centre = np.array([(nx - 1) / 2.0, (nz - 1) / 2.0])
        for _ in range(self.vessels):
            angle = rng.uniform(0, np.pi)
            direction = np.array([np.cos(angle), np.sin(angle)])
            normal = np.array([-direction[1], direction[0]])
            offset = centre + normal * rng.uniform(-0.3, 0.3) * min(nx, nz)
            length = float(np.hypot(nx, nz))
            pos = rng.uniform(0, length, self.bubbles)
            speed = rng.uniform(0.5, 1.5) * rng.choice([-1.0, 1.0])
            amp = rng.rayleigh(1.0, self.bubbles) * np.exp(
                1j * rng.uniform(0, 2 * np.pi, self.bubbles)
            )
            omega = rng.uniform(0.5, 2.5) + 0.1 * rng.normal(size=self.bubbles)
            for t in range(T):
                s = (pos + speed * t) % length - length / 2.0
                for b in range(self.bubbles):
                    px, pz = offset + s[b] * direction
                    d2 = (gx - px) ** 2 + (gz - pz) ** 2
                    spot = np.where(d2 <= 1.44, np.exp(-0.5 * d2 / 0.6**2), 0.0)
                    S[:, :, t] += amp[b] * np.exp(1j * omega[b] * t) * spot
        S = S.reshape(nx * nz, T)
        power = np.mean(np.abs(S) ** 2)
        if power == 0:  # every scatterer outside the image: a blood-free sequence is degenerate
            S[rng.integers(nx * nz), :] = 1.0
            power = np.mean(np.abs(S) ** 2)
        return S * np.sqrt(10 ** (self.blood_db / 10) / power)

    def sample(
        self, n: int, *, seed: int | Sequence[int], dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        rng = seeded_rng(self.seed, seed)
        P, T = self.pixels, self.n_frames
        target = np.empty((n, 2, P, T), dtype=np.complex128)
        D = np.empty((n, P, T), dtype=np.complex128)
        H = self.H.numpy()
        sigma = math.sqrt(10 ** (self.noise_db / 10) / 2.0)
        for i in range(n):
            L, S = self._tissue(rng), self._blood(rng)
            noise = sigma * (rng.normal(size=(P, T)) + 1j * rng.normal(size=(P, T)))
            target[i, 0], target[i, 1] = L, S
            D[i] = H @ (L + S) + noise
        cdt = complex_dtype(dtype)
        return torch.from_numpy(D).to(cdt), torch.from_numpy(target).to(cdt)

    def metrics(self) -> tuple[ProblemMetric, ...]:
        """Pooled NMSE (dB) of the blood estimate (primary), then of the tissue estimate."""
        return (
            _PartNMSE(1, "blood_nmse_db", "blood NMSE"),
            _PartNMSE(0, "tissue_nmse_db", "tissue NMSE"),
        )

    def supervised_loss(self, estimate: Tensor, target: Tensor) -> Tensor | None:
        r"""Mean over labelled rows of :math:`\|\hat S - S\|_F^2/\|S\|_F^2 + \|\hat L - L\|_F^2/\|L\|_F^2`:
        each part's squared error relative to its own energy, so the 20–30 dB weaker blood counts
        as much as the tissue (a plain squared error would be the tissue's alone)."""
        labelled = labelled_rows(target)
        if not bool(labelled.any()):
            return None
        est, tgt = estimate[labelled], target[labelled]
        err = (est - tgt).abs().pow(2).sum(dim=(2, 3))
        energy = tgt.abs().pow(2).sum(dim=(2, 3)).clamp_min(torch.finfo(err.dtype).tiny)
        return (err / energy).sum(dim=1).mean()

    def validate_observation(self, x: Tensor) -> None:
        shape = (self.pixels, self.n_frames)
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (B, {shape[0]}, {shape[1]}).")
        if x.ndim != 3 or tuple(x.shape[1:]) != shape:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but this UltrasoundClutter problem has "
                f"P×T = {shape[0]}×{shape[1]} (P = n_x·n_z = {self.n_x}·{self.n_z} pixels, "
                f"T = {self.n_frames} frames): observations are Casorati matrices "
                f"(B, {shape[0]}, {shape[1]}) (use x.unsqueeze(0) for one sequence)."
            )
        if not x.is_complex():
            raise ValueError(
                "x is real but ultrasound IQ data are complex: pass the complex Casorati matrix "
                "(e.g. torch.complex(re, im)); a real signal can be cast with x.to(torch.complex64)."
            )
        require_finite(x, "The ultrasound sequence D")


# -- the iterates ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LowRankSparseState:
    """The iterate of ISTA-RPCA and CORONA: tissue ``L`` and blood ``S``, both ``(B, P, T)``.

    The estimate compared with the target is ``(L, S)`` stacked ``(B, 2, P, T)``."""

    L: Tensor
    S: Tensor


@dataclass(frozen=True)
class FISTARPCAState:
    """FISTA-RPCA's iterate: ``(L, S)``, the extrapolated points ``(YL, YS)`` and momentum ``t``."""

    L: Tensor
    S: Tensor
    YL: Tensor
    YS: Tensor
    t: Tensor


def _check_step(step: float | None, penalty: str, who: str) -> None:
    if step is not None and not (math.isfinite(step) and step > 0):
        raise ValueError(
            f"{who}: the step eta must be finite and > 0 (or None for 1/L_f), got {step}."
        )
    if penalty not in PENALTIES:
        raise ValueError(f"{who}: unknown penalty {penalty!r}; valid: {list(PENALTIES)}.")


def _classical_step(prob: UltrasoundClutter, step: float | None, who: str) -> float:
    bound = 1.0 / prob.lipschitz
    eta = bound if step is None else float(step)
    if not eta <= bound * (1 + 1e-12):
        raise ValueError(
            f"{who}: step eta={eta:g} exceeds 1/L_f = {bound:.6g} (L_f = ||[H1 H2]||^2 = "
            f"{prob.lipschitz:.6g}); proximal gradient needs 0 < eta <= 1/L_f. Leave step=None "
            "for the largest valid step."
        )
    return eta


def _check_kernels(kernel_size: int, time_kernel: int) -> None:
    for name, v in (("kernel_size", kernel_size), ("time_kernel", time_kernel)):
        if not (isinstance(v, int) and v >= 1 and v % 2 == 1):
            raise ValueError(f"{name} must be an odd integer >= 1 (a centred kernel), got {v!r}.")


class _ClutterSolver(Algorithm[LowRankSparseState]):
    """The settings ISTA-RPCA and CORONA share (their Args), validated once."""

    def __init__(
        self,
        step: float | None = None,
        penalty: str = "l12",
        kernel_size: int = 3,
        time_kernel: int = 3,
    ) -> None:
        _check_step(step, penalty, type(self).__name__)
        _check_kernels(kernel_size, time_kernel)
        self.step_size, self.penalty = step, penalty
        self.kernel_size, self.time_kernel = kernel_size, time_kernel


class ISTARPCA(_ClutterSolver):
    r"""ISTA for RPCA — proximal gradient with SVT and (group) soft thresholding (module docstring).

    Args:
        step: classical :math:`\eta \in (0, 1/L_f]` (``None``: :math:`1/L_f`).
        penalty: ``"l12"`` (CORONA's :math:`\|S\|_{1,2}`, rows = pixels) or ``"l1"``.
        kernel_size, time_kernel: spatial and temporal kernel sizes of the ``corona`` variant.
    """

    name: ClassVar[str] = "ista_rpca"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="low-rank plus sparse separation ½‖D − H₁L − H₂S‖² + λ‖L‖* + μ‖S‖₁,₂",
        fixed_point="the minimiser",
        convex=True,
        averaged="proximal gradient with step < 2/L is an averaged operator whose fixed points "
        "are the minimisers (Combettes & Wajs 2005, Prop. 3.1)",
        descent="proximal gradient with step ≤ 1/L never raises the objective (Beck & Teboulle "
        "2009, Lemma 2.3)",
        linear_rate=None,
    )
    objective_variants: ClassVar[tuple[str, ...]] = ("direct", "corona")

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("tissue_psf", Role.OBJECTIVE, doc="PSF of H1 (s, s); classical: the PSF"),
            ParamSpec("blood_psf", Role.OBJECTIVE, doc="PSF of H2 (s, s); classical: the PSF"),
            ParamSpec("step", Role.HYPER, Constraint.POSITIVE, "gradient step eta_k"),
            ParamSpec("tau_L", Role.HYPER, Constraint.NONNEGATIVE, "relative SVT threshold"),
            ParamSpec("tau_S", Role.HYPER, Constraint.NONNEGATIVE, "relative blood threshold"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = require_problem(problem, UltrasoundClutter, type(self).__name__)
        eta = _classical_step(prob, self.step_size, type(self).__name__)
        f64 = torch.float64
        return {
            "tissue_psf": prob.psf_tensor(),
            "blood_psf": prob.psf_tensor(),
            "step": torch.tensor(eta, dtype=f64),
            "tau_L": torch.tensor(eta * prob.lam, dtype=f64),
            "tau_S": torch.tensor(eta * prob.mu, dtype=f64),
        }

    def objective_form(self, variant: str | None) -> Algorithm[Any]:
        if variant == "corona":
            return CORONA(self.step_size, self.penalty, self.kernel_size, self.time_kernel)
        return super().objective_form(variant)

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> LowRankSparseState:
        zero = torch.zeros_like(x)
        return LowRankSparseState(L=zero, S=zero)

    def step(
        self, s: LowRankSparseState, x: Tensor, p: Mapping[str, Tensor], k: int
    ) -> LowRankSparseState:
        h1, h2, eta, grid = p["tissue_psf"], p["blood_psf"], p["step"], _grid(p)
        rho = _rms(x)
        r = blur(s.L, h1, grid) + blur(s.S, h2, grid) - x
        L = singular_value_threshold(
            s.L - eta * blur_adjoint(r, h1, grid), (p["tau_L"] * rho).squeeze(-1)
        )
        S = _prox_sparse(s.S - eta * blur_adjoint(r, h2, grid), p["tau_S"] * rho, self.penalty)
        return LowRankSparseState(L=L, S=S)

    def estimate(self, s: Any) -> Tensor:
        return torch.stack([s.L, s.S], dim=1)

    def objective(self, s: Any, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        return low_rank_sparse_objective(
            s.L, s.S, x, c["psf1"], c["psf2"], _grid(c), c["lam"], c["mu"], self.penalty
        )


class FISTARPCA(ISTARPCA):
    r"""FISTA for RPCA (Beck & Teboulle 2009): the ISTA-RPCA step at the extrapolated point,

    .. math::
        (L^{(k)}, S^{(k)}) &= T_{\text{ISTA}}(Y_L^{(k-1)}, Y_S^{(k-1)}),\qquad
        t_k = \tfrac12\big(1 + \sqrt{1 + 4t_{k-1}^2}\big),\\
        Y^{(k)} &= X^{(k)} + \tfrac{t_{k-1} - 1}{t_k}\,(X^{(k)} - X^{(k-1)})\quad (X = L, S),

    :math:`Y^{(0)} = X^{(0)} = 0`, :math:`t_0 = 1`, valid for :math:`0 < \eta \le 1/L_f` (objective
    gap :math:`O(1/k^2)`). The classical baseline CORONA is compared with.
    """

    name: ClassVar[str] = "fista_rpca"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="low-rank plus sparse separation ½‖D − H₁L − H₂S‖² + λ‖L‖* + μ‖S‖₁,₂",
        fixed_point="the minimiser",
        convex=True,
    )
    objective_variants: ClassVar[tuple[str, ...]] = ("direct",)

    def objective_form(self, variant: str | None) -> Algorithm[Any]:
        return Algorithm.objective_form(self, variant)

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> FISTARPCAState:  # type: ignore[override]
        zero = torch.zeros_like(x)
        one = torch.ones(x.shape[0], dtype=p["step"].dtype, device=x.device)
        return FISTARPCAState(L=zero, S=zero, YL=zero, YS=zero, t=one)

    def step(  # type: ignore[override]
        self, s: FISTARPCAState, x: Tensor, p: Mapping[str, Tensor], k: int
    ) -> FISTARPCAState:
        new = ISTARPCA.step(self, LowRankSparseState(L=s.YL, S=s.YS), x, p, k)
        t = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * s.t * s.t))
        beta = ((s.t - 1.0) / t)[:, None, None].to(x.dtype)
        return FISTARPCAState(
            L=new.L, S=new.S, YL=new.L + beta * (new.L - s.L), YS=new.S + beta * (new.S - s.S), t=t
        )


# -- CORONA ---------------------------------------------------------------------------------
def _lsi_kernel(op: Tensor, n_x: int, n_z: int, size: int) -> Tensor:
    """The ``size × size`` cross-correlation kernel of a circular, shift-invariant operator ``op``
    ``(P, P)`` on the ``n_x × n_z`` grid; raises if the operator does not fit in that kernel."""
    cx, cz, r = n_x // 2, n_z // 2, size // 2
    response = op[:, cx * n_z + cz].reshape(n_x, n_z)  # op applied to a centred delta
    # cross-correlation: y[i] = sum_a w[a] x[i + a - r]  =>  w[a] = response[c + r - a]
    ix = (cx + r - torch.arange(size)) % n_x
    iz = (cz + r - torch.arange(size)) % n_z
    kernel = response[ix][:, iz]
    rebuilt = torch.zeros((n_x, n_z), dtype=response.dtype)
    rebuilt[ix[:, None], iz[None, :]] = kernel
    if not torch.allclose(rebuilt, response, atol=1e-12 * float(response.abs().max()), rtol=0.0):
        raise ValueError(
            f"The classical operator spreads beyond a {size}×{size} kernel (H^H H of the PSF has "
            "support 2·(PSF size) − 1); increase kernel_size to represent it exactly."
        )
    return kernel


def corona_kernels(
    H1: Tensor, H2: Tensor, eta: float, n_x: int, n_z: int, size: int, time_kernel: int
) -> Tensor:
    r"""CORONA's classical kernels ``(2, 3, size, size, time_kernel)`` (complex128): output
    channels (L, S), input channels (L, S, D), i.e. ``[[P5, P3, P1], [P4, P6, P2]]`` with
    :math:`P_5 = I - \eta H_1^{\mathsf H}H_1`, :math:`P_3 = -\eta H_1^{\mathsf H}H_2`,
    :math:`P_1 = \eta H_1^{\mathsf H}`, :math:`P_4 = -\eta H_2^{\mathsf H}H_1`,
    :math:`P_6 = I - \eta H_2^{\mathsf H}H_2`, :math:`P_2 = \eta H_2^{\mathsf H}` (each at the
    centre frame of the temporal extent). ``H1``, ``H2`` must be circular blurs of the grid."""
    if size > min(n_x, n_z):
        raise ValueError(
            f"kernel_size {size} exceeds the {n_x}×{n_z} image; circular padding needs "
            "kernel_size <= min(n_x, n_z)."
        )
    H1, H2 = H1.to(torch.complex128), H2.to(torch.complex128)
    eye = torch.eye(H1.shape[0], dtype=torch.complex128)
    ops = [
        [eye - eta * H1.mH @ H1, -eta * H1.mH @ H2, eta * H1.mH],
        [-eta * H2.mH @ H1, eye - eta * H2.mH @ H2, eta * H2.mH],
    ]
    out = torch.zeros((2, 3, size, size, time_kernel), dtype=torch.complex128)
    for o in range(2):
        for i in range(3):
            out[o, i, :, :, time_kernel // 2] = _lsi_kernel(ops[o][i], n_x, n_z, size)
    return out


class CORONA(_ClutterSolver):
    r"""CORONA (Solomon et al. 2019): ISTA-RPCA with the six operators as learned convolutions.

    Layer :math:`k` (see the module docstring), on the reshaped :math:`n_x\times n_z\times T`
    sequences, with one kernel tensor :math:`\mathcal P^k` of shape ``(2, 3, k, k, k_t)`` holding
    :math:`[[P_5, P_3, P_1], [P_4, P_6, P_2]]`:

    .. math::
        (A, B) &= \mathcal P^k * (L^{(k-1)}, S^{(k-1)}, D),\\
        L^{(k)} &= \operatorname{SVT}_{\tau^k_L\rho}(A),\qquad
        S^{(k)} = \operatorname{prox}_{\tau^k_S\rho}(B).

    Classical values: the kernels of :func:`corona_kernels` (for :math:`H = I`, :math:`\eta = 1/2`:
    :math:`P_1 = P_2 = P_5 = P_6 = \tfrac12\delta`, :math:`P_3 = P_4 = -\tfrac12\delta`) and
    :math:`\tau_L = \eta\,\texttt{lam}`, :math:`\tau_S = \eta\,\texttt{mu}` — exactly ISTA-RPCA, whose
    step condition :math:`\eta \le 1/L_f` they inherit. Learned kernels carry no step condition
    (as LISTA's weights do not). Registered as ``"corona"``; also the ``corona`` variant of
    :class:`ISTARPCA`'s objective paradigm.

    Args:
        step: the classical :math:`\eta` the kernels start from (``None``: :math:`1/L_f`).
        penalty: ``"l12"`` or ``"l1"``.
        kernel_size: spatial kernel size (odd; at least the support of :math:`H^{\mathsf H}H`).
        time_kernel: temporal kernel size (odd; 1 = spatial 2-D kernels per frame).
    """

    name: ClassVar[str] = "corona"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="low-rank plus sparse separation ½‖D − H₁L − H₂S‖² + λ‖L‖* + μ‖S‖₁,₂",
        fixed_point="the minimiser (for the classical convolutions)",
        convex=True,
    )

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec(
                "kernels",
                Role.OBJECTIVE,
                doc="complex kernels (2, 3, k, k, k_t): [[P5, P3, P1], [P4, P6, P2]]",
            ),
            ParamSpec("tau_L", Role.HYPER, Constraint.NONNEGATIVE, "relative SVT threshold"),
            ParamSpec("tau_S", Role.HYPER, Constraint.NONNEGATIVE, "relative blood threshold"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = require_problem(problem, UltrasoundClutter, type(self).__name__)
        eta = _classical_step(prob, self.step_size, type(self).__name__)
        kernels = corona_kernels(
            prob.H, prob.H, eta, prob.n_x, prob.n_z, self.kernel_size, self.time_kernel
        )
        f64 = torch.float64
        return {
            "kernels": kernels,
            "tau_L": torch.tensor(eta * prob.lam, dtype=f64),
            "tau_S": torch.tensor(eta * prob.mu, dtype=f64),
        }

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> LowRankSparseState:
        zero = torch.zeros_like(x)
        return LowRankSparseState(L=zero, S=zero)

    def step(
        self, s: LowRankSparseState, x: Tensor, p: Mapping[str, Tensor], k: int
    ) -> LowRankSparseState:
        n_x, n_z = (round(float(v)) for v in p["grid"])
        b, P, T = x.shape
        vol = torch.stack([s.L, s.S, x], dim=1).reshape(b, 3, n_x, n_z, T)
        out = _circular_correlation(vol, p["kernels"]).reshape(b, 2, P, T)
        rho = _rms(x)
        L = singular_value_threshold(out[:, 0], (p["tau_L"] * rho).squeeze(-1))
        S = _prox_sparse(out[:, 1], p["tau_S"] * rho, self.penalty)
        return LowRankSparseState(L=L, S=S)

    def estimate(self, s: Any) -> Tensor:
        return torch.stack([s.L, s.S], dim=1)

    def objective(self, s: Any, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        return low_rank_sparse_objective(
            s.L, s.S, x, c["psf1"], c["psf2"], _grid(c), c["lam"], c["mu"], self.penalty
        )

    def classical_operator(self) -> Algorithm[Any]:
        """The fixed-point operator is ISTA-RPCA's (the classical kernels are exactly it)."""
        return ISTARPCA(self.step_size, self.penalty, self.kernel_size, self.time_kernel)
