"""The ultrasound clutter problem :class:`UltrasoundClutter` (data generation and metrics)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from lightning_unfold.algorithms.corona.operators import (
    _circular_correlation,
    _psf_matrix,
    gaussian_psf,
    lipschitz_constant,
)
from lightning_unfold.core.algorithm import (
    ProblemSpec,
    seeded_rng,
)
from lightning_unfold.core.iterate import complex_dtype, require_finite
from lightning_unfold.core.metrics import NMSE, ProblemMetric, labelled_rows


# -- the problem ----------------------------------------------------------------------------
class _PartNMSE(NMSE):
    """Pooled NMSE (dB) of one component (0 = tissue, 1 = blood) of ``(B, 2, P, T)`` estimates."""

    def __init__(self, part: int, name: str, label: str) -> None:
        self.part, self.name, self.label = part, name, label

    def statistics(self, estimate: Tensor, target: Tensor, x: Tensor) -> Tensor:
        return super().statistics(estimate[:, self.part], target[:, self.part], x)


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
