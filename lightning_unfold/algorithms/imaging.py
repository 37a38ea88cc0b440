r"""Compressive imaging from undersampled Fourier data: ADMM-TV and ADMM-CSNet.

Problem (:class:`CompressiveImaging`; the MRI-like setting of Yang, Sun, Li & Xu 2018): a real
image :math:`x^\star \in \mathbb R^{n\times n}` (a synthetic piecewise-smooth phantom, values in
:math:`[0, 1]`) is observed through a fixed binary sampling mask :math:`M` of its orthonormal 2-D
Fourier transform :math:`F`, with complex Gaussian noise on the sampled entries,

.. math:: y = M\odot(Fx^\star + e) \in \mathbb C^{n\times n},

and reconstructed by

.. math:: \min_{x\in\mathbb R^{n\times n}}\; \tfrac12\|M\odot Fx - y\|_2^2
    + \sum_{c=1}^{C}\lambda_c\,g(D_c x),

:math:`D_c` circular convolutions with 3×3 filters (classically the finite differences of
anisotropic total variation, :math:`g = \|\cdot\|_1`).

**ADMM** (:class:`ADMMTV`) on the splitting :math:`z_c = D_c x` with penalty :math:`\rho > 0`,
scaled duals :math:`u_c` and dual step :math:`\eta`, stage :math:`k`:

.. math::
    x^{(k)} &= \arg\min_x \tfrac12\|M\odot Fx - y\|^2
        + \tfrac{\rho_k}2\sum_c\|D_c x - z_c^{(k-1)} + u_c^{(k-1)}\|^2
      = F^{-1}\Big[\frac{F\big(\operatorname{Re}F^{-1}(M\odot y)\big)
        + \rho_k\sum_c \overline{\hat D_c}\odot F(z_c^{(k-1)} - u_c^{(k-1)})}
        {M_s + \rho_k\sum_c|\hat D_c|^2}\Big],\\
    z_c^{(k)} &= S_{k,c}\big(D_c x^{(k)} + u_c^{(k-1)}\big),\qquad
      S_{k,c}(v) = \theta_{k,c}\,\psi_{k,c}(v/\theta_{k,c}),\quad
      \theta_{k,c} = \lambda_{k,c}/\rho_k,\\
    u_c^{(k)} &= u_c^{(k-1)} + \eta_k\big(D_c x^{(k)} - z_c^{(k)}\big),

with :math:`\hat D_c` the transfer function of :math:`D_c` (:func:`filter_transfer`,
:math:`F(D_cx) = \hat D_c\odot Fx`) and :math:`M_s(k) = \tfrac12(M(k) + M(-k))` the *symmetrised*
mask. The x-update is exact: for a real :math:`x`, :math:`|Fx|` is even in :math:`k`, so
:math:`\|M\odot Fx\|^2 = \sum_k M_s(k)|Fx(k)|^2`, and the normal operator
:math:`\operatorname{Re}(F^HMF) + \rho\sum_cD_c^\top D_c = F^H(M_s + \rho\sum_c|\hat D_c|^2)F` is
diagonal in the Fourier domain and maps real images to real images (for a conjugate-symmetric
mask :math:`M_s = M` and this is the usual :math:`F^{-1}[(M^Hy + \dots)/(M + \dots)]`). It needs
:math:`M_s(k) + \rho\sum_c|\hat D_c(k)|^2 > 0` at every frequency; finite differences vanish at
:math:`k = 0`, so every mask here samples the DC coefficient. :math:`x^{(0)}` is the zero-filled
reconstruction :math:`\operatorname{Re}F^{-1}(M\odot y)`, :math:`z^{(0)} = u^{(0)} = 0`.

:math:`\psi` is a piecewise-linear shrinkage (:func:`piecewise_linear`) with values at the
fixed control points :math:`t_j \in \{-4, -3.5, \dots, 4\}` (in units of the threshold) and slope
1 outside; classically its values are those of the unit soft threshold,
:math:`\psi(t) = \operatorname{sign}(t)\max(|t| - 1, 0)`, so :math:`S_{k,c}` is exactly the
soft threshold at :math:`\lambda/\rho`, the proximal map of :math:`(\lambda/\rho)\|\cdot\|_1`.

*Convergence condition.* For convex :math:`g` (classically the ℓ1 norm) scaled ADMM converges to
a minimiser for every penalty :math:`\rho > 0` with the dual step :math:`\eta = 1` (Boyd et al.
2011, §3.2), and for every :math:`\eta \in (0, (1+\sqrt5)/2)` (Glowinski's relaxed multiplier
step; Fortin & Glowinski 1983): the classical parameters are validated against these.

**Paradigms.** θo = {``filters`` :math:`D_{k,c}` (C, 3, 3), ``shrinkage`` :math:`\psi_{k,c}`
(C, 17)}, θh = {``weights`` :math:`\lambda_{k,c}` (C,), ``penalty`` :math:`\rho_k`,
``dual_step`` :math:`\eta_k`}. ``hyperparameters`` learns λ, ρ, η per stage (soft thresholds, TV
filters); ``objective`` is **ADMM-CSNet** (the "basic" network of Yang et al.): per-stage learned
filters, learned piecewise-linear shrinkage, λ, ρ and η — the iteration itself is kept, only its
objective and hyperparameters are learned per stage. ``correction`` adds a zero-initialised
two-layer convolutional correction of the image (:class:`ImagingCorrectionNet`);
``inductive_bias`` is not provided (ADMM-CSNet already replaces the prior's pieces by learned ones
while keeping the iterate's meaning). The black box is a residual CNN on the zero-filled
reconstruction (:class:`ImagingBlackBoxNet`). See ``docs/csnet.md``.
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
    Constraint,
    ParamSpec,
    ProblemSpec,
    Role,
    SolverTheory,
    as_operator,
    require_problem,
    seeded_rng,
)
from lightning_unfold.core.iterate import complex_dtype, real_dtype, require_finite
from lightning_unfold.core.metrics import MeanOf, ProblemMetric
from lightning_unfold.core.networks import ConvDenoiserNet

__all__ = [
    "ADMMTV",
    "FILTER_BANKS",
    "IMAGING_MASKS",
    "PLF_POINTS",
    "CompressiveImaging",
    "ImagingADMMState",
    "ImagingBlackBoxNet",
    "ImagingCorrectionNet",
    "filter_transfer",
    "finite_difference_filters",
    "piecewise_linear",
    "psnr",
    "sampling_mask",
    "soft_threshold_values",
    "ssim",
    "tv_objective",
]

#: the sampling patterns of :class:`CompressiveImaging`
IMAGING_MASKS: tuple[str, ...] = ("random", "radial")
#: the classical filter banks of :class:`ADMMTV`
FILTER_BANKS: tuple[str, ...] = ("tv", "tv4")
#: control points of the piecewise-linear shrinkage, in units of the threshold
PLF_LO, PLF_STEP, PLF_POINTS = -4.0, 0.5, 17
_GOLDEN = (1.0 + math.sqrt(5.0)) / 2.0
_RHO_FLOOR = 1e-8


def _fft(x: Tensor) -> Tensor:
    return torch.fft.fft2(x, norm="ortho")


def _ifft(x: Tensor) -> Tensor:
    return torch.fft.ifft2(x, norm="ortho")


# -- images, masks, metrics --------------------------------------------------------------------
def _phantom(rng: np.random.Generator, n: int, ellipses: int, texture: float) -> np.ndarray:
    """A Shepp–Logan-like phantom: a bright skull ring, a grey interior with a smooth texture,
    and ``ellipses`` random inner ellipses of either sign; clipped to ``[0, 1]``."""
    lin = (np.arange(n) + 0.5) / n * 2.0 - 1.0
    Y, X = np.meshgrid(lin, lin, indexing="ij")

    def inside(cx: float, cy: float, a: float, b: float, phi: float) -> np.ndarray:
        c, s = math.cos(phi), math.sin(phi)
        u, v = (X - cx) * c + (Y - cy) * s, -(X - cx) * s + (Y - cy) * c
        return ((u / a) ** 2 + (v / b) ** 2 <= 1.0).astype(np.float64)

    cx, cy = rng.uniform(-0.05, 0.05, 2)
    a, b = rng.uniform(0.7, 0.88), rng.uniform(0.8, 0.94)
    phi = rng.uniform(-0.3, 0.3)
    skull = inside(cx, cy, a, b, phi)
    interior = inside(cx, cy, 0.9 * a, 0.9 * b, phi)
    img = 0.9 * skull - 0.6 * interior
    for _ in range(ellipses):
        r, t = 0.55 * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
        ex, ey = cx + r * a * math.cos(t), cy + r * b * math.sin(t)
        ea, eb = rng.uniform(0.05, 0.3, 2)
        level = rng.uniform(0.1, 0.35) * rng.choice([-1.0, 1.0])
        img += level * inside(ex, ey, ea, eb, rng.uniform(0, math.pi)) * interior
    if texture > 0:
        field = np.zeros_like(X)
        for _ in range(3):
            freq, ang = rng.uniform(1.0, 4.0), rng.uniform(0.0, 2.0 * math.pi)
            arg = freq * (math.cos(ang) * X + math.sin(ang) * Y)
            field += np.cos(math.pi * arg + rng.uniform(0.0, 2.0 * math.pi))
        img += texture * field / 3.0 * interior
    return np.clip(img, 0.0, 1.0)


def _radius(n: int) -> np.ndarray:
    """Frequency radius of every FFT-ordered index, normalised so that the Nyquist edge is 1."""
    k = np.fft.fftfreq(n) * n
    return np.sqrt(k[:, None] ** 2 + k[None, :] ** 2) / (n / 2.0)


def sampling_mask(n: int, rate: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    r"""A binary ``(n, n)`` k-space mask in FFT order (DC at ``[0, 0]``), DC always sampled.

    ``"random"``: variable density — the :math:`\lfloor 0.08 \cdot n/2\rceil`-radius centre fully
    sampled, the rest of :math:`\operatorname{round}(\texttt{rate}\,n^2)` locations drawn without
    replacement with probability :math:`\propto (1 - r/\sqrt2)^3` (:math:`r` the radius, 1 at
    Nyquist). ``"radial"``: lines through the centre at equally spaced angles (a seeded random
    rotation), as many as bring the sampled fraction closest to the rate (lines are discrete: the
    fraction is reported by :attr:`CompressiveImaging.sampled_fraction`).
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(
            f"sampling_rate must lie in (0, 1] (the fraction of k-space sampled), got {rate}."
        )
    if kind not in IMAGING_MASKS:
        raise ValueError(f"Unknown mask {kind!r}; valid: {list(IMAGING_MASKS)}.")
    count = max(1, round(rate * n * n))
    if count >= n * n:
        return np.ones((n, n))
    r = _radius(n)
    if kind == "random":
        flat = r.ravel()
        order = np.argsort(flat, kind="stable")
        centre = order[: min(count, int((flat <= 0.08).sum()))]
        mask = np.zeros(n * n)
        mask[centre] = 1.0
        rest = np.flatnonzero(mask == 0)
        w = np.clip(1.0 - flat[rest] / math.sqrt(2.0), 0.0, None) ** 3 + 1e-6
        pick = rng.choice(rest, size=count - centre.size, replace=False, p=w / w.sum())
        mask[pick] = 1.0
        return mask.reshape(n, n)
    offset = rng.uniform(0.0, 1.0)
    t = np.arange(-n, n + 0.5, 0.5)

    def lines_mask(lines: int) -> np.ndarray:
        centred = np.zeros((n, n))
        for j in range(lines):
            ang = math.pi * (j + offset) / lines
            i0 = np.rint(n // 2 + t * math.sin(ang)).astype(int)
            j0 = np.rint(n // 2 + t * math.cos(ang)).astype(int)
            ok = (i0 >= 0) & (i0 < n) & (j0 >= 0) & (j0 < n)
            centred[i0[ok], j0[ok]] = 1.0
        return np.fft.ifftshift(centred)

    previous = lines_mask(1)
    for lines in range(2, 8 * n):
        current = lines_mask(lines)
        if current.sum() >= count:  # the number of lines whose fraction is closest to the rate
            return current if current.sum() - count <= count - previous.sum() else previous
        previous = current
    return previous


def psnr(estimate: Tensor, target: Tensor, x: Tensor | None = None) -> Tensor:
    r"""Per-sample PSNR in dB for images in :math:`[0, 1]`, :math:`10\log_{10}(1/\mathrm{MSE})`
    (torchmetrics' ``peak_signal_noise_ratio`` with ``data_range=1``), shape ``(B,)``."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(
        estimate.double(), target.double(), data_range=1.0, reduction="none", dim=(1, 2)
    )


def ssim(estimate: Tensor, target: Tensor, x: Tensor | None = None) -> Tensor:
    """Per-sample SSIM (torchmetrics, Gaussian window σ = 1.5 of 11 pixels — 7 below 16×16 —
    ``data_range=1``), shape ``(B,)``."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    kernel = 11 if target.shape[-1] >= 16 else 7
    out = structural_similarity_index_measure(
        estimate.double().unsqueeze(1),
        target.double().unsqueeze(1),
        data_range=1.0,
        kernel_size=kernel,
        reduction="none",
    )
    assert isinstance(out, Tensor)
    return out


class CompressiveImaging(ProblemSpec):
    r"""Seeded undersampled-Fourier imaging of synthetic phantoms (module docstring).

    Args:
        size: image side :math:`n` (``>= 8``).
        sampling_rate: fraction of k-space sampled, in :math:`(0, 1]` (the issue's 20–30 %).
        mask: ``"random"`` (variable density) or ``"radial"`` (:func:`sampling_mask`).
        snr_db: measurement SNR in dB, :math:`\|M\odot Fx\|^2/\|M\odot e\|^2` per image
            (``None``: noiseless).
        tv_weight: λ of the objective (the classical TV weight; tuned in the study).
        ellipses: random inner ellipses per phantom; texture: amplitude of the smooth texture.
        seed: seeds the mask and, combined with ``sample``'s seed, the images and noise.
        mask_matrix: a custom binary ``(size, size)`` mask in FFT order (overrides ``mask`` and
            ``sampling_rate``); it must sample the DC coefficient ``[0][0]``.

    ``sample`` returns ``x = y`` (complex ``(B, n, n)``, zero off the mask) and
    ``target`` = the images (real ``(B, n, n)``).
    """

    default_algorithm = "admm_tv"

    def __init__(
        self,
        size: int = 32,
        sampling_rate: float = 0.25,
        mask: str = "random",
        snr_db: float | None = 30.0,
        tv_weight: float = 0.003,
        ellipses: int = 5,
        texture: float = 0.05,
        seed: int = 0,
        mask_matrix: Tensor | np.ndarray | list[list[float]] | None = None,
    ) -> None:
        if not (isinstance(size, int) and size >= 8):
            raise ValueError(f"size (image side n) must be an integer >= 8, got {size!r}.")
        if snr_db is not None and not math.isfinite(snr_db):
            raise ValueError(f"snr_db must be finite (None for noiseless data), got {snr_db}.")
        if not (tv_weight >= 0 and math.isfinite(tv_weight)):
            raise ValueError(f"tv_weight (lambda) must be finite and >= 0, got {tv_weight}.")
        if ellipses < 0 or not (0.0 <= texture < 1.0):
            raise ValueError(
                f"Need ellipses >= 0 and texture in [0, 1), got {ellipses}, {texture}."
            )
        self.size, self.sampling_rate, self.mask_kind = size, float(sampling_rate), mask
        self.snr_db = None if snr_db is None else float(snr_db)
        self.tv_weight, self.ellipses, self.texture = float(tv_weight), ellipses, float(texture)
        self.seed = seed
        if mask_matrix is not None:
            m = as_operator(mask_matrix, "mask_matrix", ndim=2).numpy()
            if m.shape != (size, size):
                raise ValueError(
                    f"mask_matrix has shape {m.shape} but the images are {size}×{size}: the "
                    f"mask must have the images' shape ({size}, {size})."
                )
            if not np.isin(m, (0.0, 1.0)).all():
                raise ValueError("mask_matrix must be binary (0 = not sampled, 1 = sampled).")
            if not m.any():
                raise ValueError(
                    "mask_matrix is all zero: it samples nothing, so nothing can be "
                    "reconstructed; sample at least the DC coefficient [0][0]."
                )
            if m[0, 0] != 1.0:
                raise ValueError(
                    "mask_matrix does not sample the DC coefficient [0][0] (FFT order): the "
                    "constant image is then invisible to both the mask and finite differences "
                    "and the ADMM x-update is singular; set mask_matrix[0][0] = 1."
                )
        else:
            m = sampling_mask(size, self.sampling_rate, mask, seeded_rng(seed, 13))
        self.mask = torch.from_numpy(m)

    @property
    def sampled_fraction(self) -> float:
        """The fraction of k-space the mask actually samples."""
        return float(self.mask.mean())

    def constants(self) -> dict[str, Tensor]:
        """``mask`` (n, n) float 0/1 in FFT order; ``tv_weight`` λ."""
        return {
            "mask": self.mask.clone(),
            "tv_weight": torch.tensor(self.tv_weight, dtype=torch.float64),
        }

    def images(self, n: int, *, seed: int | Sequence[int]) -> np.ndarray:
        """``n`` seeded phantoms ``(n, size, size)`` in :math:`[0, 1]` (float64)."""
        rng = seeded_rng(self.seed, 1, seed)
        return np.stack([_phantom(rng, self.size, self.ellipses, self.texture) for _ in range(n)])

    def measure(self, images: Tensor, *, seed: int | Sequence[int] = 0) -> Tensor:
        """:math:`y = M\\odot(Fx + e)` for real images ``(B, n, n)``, noise at ``snr_db``."""
        self._check_images(images)
        x = images.to(torch.float64)
        clean = self.mask * _fft(x)
        if self.snr_db is None:
            return clean
        rng = seeded_rng(self.seed, 2, seed)
        shape = (x.shape[0], self.size, self.size)
        noise = torch.from_numpy(rng.normal(size=shape) + 1j * rng.normal(size=shape))
        noise = self.mask * noise / math.sqrt(2.0)
        power = clean.abs().pow(2).sum(dim=(1, 2)) / noise.abs().pow(2).sum(dim=(1, 2))
        scale = torch.sqrt(power / 10.0 ** (self.snr_db / 10.0))
        return clean + scale[:, None, None] * noise

    def zero_filled(self, y: Tensor) -> Tensor:
        r"""The zero-filled reconstruction :math:`\operatorname{Re}F^{-1}(M\odot y)`."""
        return _ifft(self.mask.to(y.device, real_dtype(y.dtype)) * y).real

    def sample(
        self, n: int, *, seed: int | Sequence[int], dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        img = torch.from_numpy(self.images(n, seed=seed))
        y = self.measure(img, seed=seed)
        return y.to(complex_dtype(dtype)), img.to(real_dtype(dtype))

    def metrics(self) -> tuple[ProblemMetric, ...]:
        """Mean PSNR (primary) and mean SSIM over images (torchmetrics, data range 1)."""
        return (
            MeanOf("psnr_db", psnr, label="PSNR", unit="dB", higher_is_better=True),
            MeanOf("ssim", ssim, label="SSIM", higher_is_better=True),
        )

    def _check_images(self, images: Tensor) -> None:
        n = self.size
        if images.ndim != 3 or tuple(images.shape[1:]) != (n, n):
            raise ValueError(
                f"images have shape {tuple(images.shape)} but this CompressiveImaging problem's "
                f"mask is {n}×{n}: pass a batch (B, {n}, {n})."
            )
        if images.is_complex():
            raise ValueError("images must be real (this problem reconstructs real images).")
        require_finite(images, "The images")

    def validate_observation(self, x: Tensor) -> None:
        n = self.size
        if not isinstance(x, Tensor):
            raise TypeError(f"y must be a complex torch.Tensor of shape (B, {n}, {n}).")
        if x.ndim != 3 or tuple(x.shape[1:]) != (n, n):
            raise ValueError(
                f"y has shape {tuple(x.shape)} but this CompressiveImaging problem's mask is "
                f"{n}×{n}: measurements must be a batch (B, {n}, {n}) in FFT order (use "
                "y.unsqueeze(0) for a single image)."
            )
        if not x.is_complex():
            raise ValueError(
                f"y has the real dtype {x.dtype}; Fourier measurements are complex — pass "
                "M * torch.fft.fft2(image, norm='ortho') (complex64/complex128)."
            )
        require_finite(x, "The k-space measurements y")
        off = self.mask.to(x.device) == 0
        if bool((x[:, off] != 0).any()):
            raise ValueError(
                "y has nonzero entries where the sampling mask is 0: the measurements are "
                "M ⊙ F(x); zero the unsampled entries (y = problem.mask * kspace)."
            )


# -- operators -----------------------------------------------------------------------------
def finite_difference_filters(kind: str = "tv") -> Tensor:
    r"""Classical 3×3 filters (C, 3, 3), float64, as correlations :math:`(Dx)_p = \sum_{ab}
    w_{ab}\,x_{p + (a-1, b-1)}`. ``"tv"``: the horizontal and vertical forward differences
    :math:`x_{i,j+1} - x_{i,j}`, :math:`x_{i+1,j} - x_{i,j}` (anisotropic TV); ``"tv4"``: those
    and the two diagonal differences scaled by :math:`1/\sqrt2`."""
    if kind not in FILTER_BANKS:
        raise ValueError(f"Unknown filter bank {kind!r}; valid: {list(FILTER_BANKS)}.")
    taps = [((1, 2), 1.0), ((2, 1), 1.0)]
    if kind == "tv4":
        taps += [((2, 2), 1.0 / math.sqrt(2.0)), ((2, 0), 1.0 / math.sqrt(2.0))]
    w = torch.zeros(len(taps), 3, 3, dtype=torch.float64)
    for c, ((a, b), v) in enumerate(taps):
        w[c, a, b] = v
        w[c, 1, 1] = -v
    return w


def filter_transfer(w: Tensor, n: int) -> Tensor:
    r"""Transfer functions :math:`\hat D_c` (C, n, n), complex: :math:`F(D_cx) = \hat D_c\odot Fx`
    for the circular correlation with the 3×3 filters ``w`` (C, 3, 3),
    :math:`\hat D_c(k) = \sum_q w^{\mathrm{pad}}_q e^{+2\pi i\langle k, q\rangle/n}`."""
    pad = w.new_zeros(w.shape[0], n, n)
    pad[:, :3, :3] = w
    pad = torch.roll(pad, shifts=(-1, -1), dims=(-2, -1))  # tap (1, 1) at offset (0, 0)
    return torch.conj(torch.fft.fft2(pad))


def _apply(Dh: Tensor, fx: Tensor) -> Tensor:
    """:math:`D_c x` for all filters, ``(B, C, n, n)``, from :math:`Fx` ``(B, n, n)``."""
    return _ifft(Dh * fx.unsqueeze(1)).real


def soft_threshold_values() -> Tensor:
    """The unit soft threshold at the control points :math:`t_j`, ``(17,)`` float64."""
    t = PLF_LO + PLF_STEP * torch.arange(PLF_POINTS, dtype=torch.float64)
    return torch.sign(t) * (t.abs() - 1.0).clamp_min(0.0)


def piecewise_linear(t: Tensor, values: Tensor) -> Tensor:
    r""":math:`\psi_c(t)` for ``t`` ``(B, C, n, n)``: linear interpolation of ``values`` (C, 17)
    at the control points :math:`t_j = -4 + 0.5j`, slope 1 outside :math:`[-4, 4]`."""
    C, P = values.shape
    pos = (t - PLF_LO) / PLF_STEP
    # NaN positions (a diverged iterate) get index 0 and stay NaN through `frac`, so the
    # training loop's finite check reports them instead of an out-of-range index here
    idx = pos.detach().nan_to_num(0.0).floor().clamp(0, P - 2).long()
    frac = pos - idx.to(pos.dtype)
    base = (torch.arange(C, device=t.device) * P).view(1, C, 1, 1)
    flat = values.reshape(-1)
    v0, v1 = flat[base + idx], flat[base + idx + 1]
    inner = v0 + frac * (v1 - v0)
    hi = PLF_LO + PLF_STEP * (P - 1)
    below = values[:, 0].view(1, C, 1, 1) + (t - PLF_LO)
    above = values[:, -1].view(1, C, 1, 1) + (t - hi)
    return torch.where(t < PLF_LO, below, torch.where(t > hi, above, inner))


def tv_objective(
    image: Tensor, y: Tensor, mask: Tensor, weight: Tensor | float, kind: str = "tv"
) -> Tensor:
    r"""Per-sample :math:`\tfrac12\|M\odot Fx - y\|^2 + \lambda\sum_c\|D_cx\|_1` (classical
    filters ``kind``), shape ``(B,)``."""
    fx = _fft(image)
    Dh = filter_transfer(
        finite_difference_filters(kind).to(image.device, image.dtype), image.shape[-1]
    )
    data = 0.5 * (mask * fx - y).abs().pow(2).sum(dim=(1, 2))
    return data + weight * _apply(Dh, fx).abs().sum(dim=(1, 2, 3))


@dataclass(frozen=True)
class ImagingADMMState:
    """ADMM's iterate: image ``x`` (B, n, n), split variables ``z`` and scaled duals ``u``
    (B, C, n, n), one channel per filter. The estimate is ``x``."""

    x: Tensor
    z: Tensor
    u: Tensor


class ADMMTV(Algorithm[ImagingADMMState]):
    r"""ADMM for TV-regularised Fourier imaging; its ``objective`` paradigm is ADMM-CSNet.

    Args:
        penalty: classical ρ > 0.
        dual_step: classical η in :math:`(0, (1+\sqrt5)/2)` (1: standard ADMM).
        filters: classical filter bank, ``"tv"`` (2 differences) or ``"tv4"`` (4, with the
            diagonals); the objective's λ weighs every filter equally.

    See the module docstring for the recursion and the convergence condition.
    """

    name: ClassVar[str] = "admm_tv"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="TV-regularised reconstruction ½‖y − MFx‖² + λ·TV(x)",
        fixed_point="the TV-regularised reconstruction (primal and dual residuals zero)",
        convex=True,
        averaged="ADMM is Douglas–Rachford splitting, a firmly nonexpansive iteration whose "
        "fixed points give the minimiser (Eckstein & Bertsekas 1992, Thm. 8)",
        descent=None,
        linear_rate=None,
    )

    def convex_reference(self, x: Tensor, problem: ProblemSpec) -> Tensor | None:
        r"""The TV-regularised reconstruction
        :math:`\arg\min_u \tfrac12\|M\odot Fu - y\|^2 + \lambda\|D_hu\|_1 + \lambda\|D_vu\|_1`
        (circular differences, ``filters="tv"`` only) by CVXPY, the complex data split exactly into
        real and imaginary parts; images up to 32 × 32 (``None`` otherwise)."""
        import cvxpy as cp

        prob = require_problem(problem, CompressiveImaging, type(self).__name__)
        n = prob.size
        if self.filters != "tv" or n > 32:
            return None
        F = np.fft.fft(np.eye(n), norm="ortho")
        sampled = prob.mask.detach().cpu().numpy().ravel().astype(bool)
        A = np.kron(F, F)[sampled]
        out = []
        for b in range(x.shape[0]):
            yv = x[b].detach().cpu().to(torch.complex128).numpy().ravel()[sampled]
            u = cp.Variable((n, n))
            uv = cp.vec(u, order="C")
            dh = cp.hstack([u[:, 1:] - u[:, :-1], u[:, :1] - u[:, -1:]])
            dv = cp.vstack([u[1:, :] - u[:-1, :], u[:1, :] - u[-1:, :]])
            data = cp.sum_squares(A.real @ uv - yv.real) + cp.sum_squares(A.imag @ uv - yv.imag)
            tv = cp.sum(cp.abs(dh)) + cp.sum(cp.abs(dv))
            program = cp.Problem(cp.Minimize(0.5 * data + prob.tv_weight * tv))
            program.solve(solver=cp.CLARABEL)
            if program.status != cp.OPTIMAL or u.value is None:
                return None
            out.append(u.value)
        return torch.as_tensor(np.stack(out), dtype=torch.float64)

    def __init__(self, penalty: float = 0.05, dual_step: float = 1.0, filters: str = "tv") -> None:
        if not (penalty > 0 and math.isfinite(penalty)):
            raise ValueError(f"The ADMM penalty rho must be finite and > 0, got {penalty}.")
        if not 0.0 < dual_step < _GOLDEN:
            raise ValueError(
                f"The dual step eta must lie in (0, (1 + sqrt 5)/2) = (0, {_GOLDEN:.4f}) for "
                f"ADMM to converge (Glowinski), got {dual_step}."
            )
        finite_difference_filters(filters)  # validates the name
        self.penalty, self.dual_step, self.filters = float(penalty), float(dual_step), filters

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("filters", Role.OBJECTIVE, doc="3×3 filters D_c (C, 3, 3)"),
            ParamSpec("shrinkage", Role.OBJECTIVE, doc="shrinkage ψ_c at the control points"),
            ParamSpec("weights", Role.HYPER, Constraint.NONNEGATIVE, "prior weights λ_c (C,)"),
            ParamSpec("penalty", Role.HYPER, Constraint.POSITIVE, "augmented-Lagrangian ρ"),
            ParamSpec("dual_step", Role.HYPER, Constraint.POSITIVE, "dual step η"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = require_problem(problem, CompressiveImaging, type(self).__name__)
        w = finite_difference_filters(self.filters)
        f64 = torch.float64
        return {
            "filters": w,
            "shrinkage": soft_threshold_values().repeat(w.shape[0], 1),
            "weights": torch.full((w.shape[0],), prob.tv_weight, dtype=f64),
            "penalty": torch.tensor(self.penalty, dtype=f64),
            "dual_step": torch.tensor(self.dual_step, dtype=f64),
        }

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> ImagingADMMState:
        zf = _ifft(p["mask"] * x).real
        C = p["filters"].shape[0]
        z = zf.new_zeros(zf.shape[0], C, *zf.shape[1:])
        return ImagingADMMState(x=zf, z=z, u=z)

    def step(
        self, s: ImagingADMMState, x: Tensor, p: Mapping[str, Tensor], k: int
    ) -> ImagingADMMState:
        mask, eta = p["mask"], p["dual_step"]
        # a learned ρ driven to the constraint's floor (the smallest normal number) would make
        # ρ|D̂|² underflow to 0/0 at unsampled frequencies; 1e-8 is far below any useful ρ
        rho = p["penalty"].clamp_min(_RHO_FLOOR)
        n = mask.shape[-1]
        Dh = filter_transfer(p["filters"], n)
        sym = 0.5 * (mask + torch.roll(torch.flip(mask, (0, 1)), (1, 1), (0, 1)))  # M(-k)
        rhs = _fft(_ifft(mask * x).real) + rho * (Dh.conj() * _fft(s.z - s.u)).sum(dim=1)
        image = _ifft(rhs / (sym + rho * Dh.abs().pow(2).sum(dim=0))).real
        Dx = _apply(Dh, _fft(image))
        v = Dx + s.u
        floor = torch.finfo(v.dtype).tiny ** 0.5
        theta = (p["weights"] / rho).clamp_min(floor).view(1, -1, 1, 1)
        z = theta * piecewise_linear(v / theta, p["shrinkage"])
        return ImagingADMMState(x=image, z=z, u=s.u + eta * (Dx - z))

    def estimate(self, s: ImagingADMMState) -> Tensor:
        return s.x

    def objective(self, s: ImagingADMMState, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        return tv_objective(s.x, x, c["mask"], c["tv_weight"], self.filters)

    def estimate_objective(self, estimate: Tensor, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        """Per-sample TV objective of images alone (the black box's unsupervised loss)."""
        return tv_objective(estimate, x, c["mask"], c["tv_weight"], self.filters)

    def features(self, s: ImagingADMMState, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        """``(B, F)``: flattened real :math:`[x, x_{\\mathrm{zf}}, z, u]` (:class:`ImagingCorrectionNet`)."""
        b = x.shape[0]
        zf = _ifft(p["mask"] * x).real
        return torch.cat([t.reshape(b, -1) for t in (s.x, zf, s.z, s.u)], dim=1)

    def make_correction_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module:
        prob = require_problem(problem, CompressiveImaging, type(self).__name__)
        C = finite_difference_filters(self.filters).shape[0]
        return ImagingCorrectionNet(prob.size, C, channels=hidden)

    def make_inductive_bias_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module:
        raise ValueError(
            "ADMMTV has no inductive-bias network: ADMM-CSNet (paradigm='objective') already "
            "learns the filters and the shrinkage of every stage while keeping the iteration; "
            "use paradigm='objective', 'hyperparameters' or 'correction'."
        )

    def make_black_box_net(self, problem: ProblemSpec, target_params: int) -> nn.Module:
        return ImagingBlackBoxNet(
            require_problem(problem, CompressiveImaging, type(self).__name__), target_params
        )


class ImagingCorrectionNet(nn.Module):
    r"""Learned correction Δ of the image (paradigm ``correction``): a two-layer 3×3 CNN of the
    channels :math:`(x, x_{\mathrm{zf}}, z_1..z_C, u_1..u_C)` of the previous stage, added to the
    ADMM x-update; :math:`\Delta z = \Delta u = 0`. Zero-initialised last layer: the model starts
    as classical ADMM."""

    def __init__(self, n: int, n_filters: int, *, channels: int = 8) -> None:
        super().__init__()
        self.n, self.C = n, n_filters
        last = nn.Conv2d(channels, 1, 3, padding=1, padding_mode="circular")
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        first = nn.Conv2d(2 + 2 * n_filters, channels, 3, padding=1, padding_mode="circular")
        self.conv = nn.Sequential(first, nn.ReLU(), last)

    def forward(self, features: Tensor) -> Tensor:
        b, n, C = features.shape[0], self.n, self.C
        expected = (2 + 2 * C) * n * n
        if features.shape[1] != expected:
            raise ValueError(
                f"Imaging features have width {features.shape[1]}, expected {expected}."
            )
        maps = features.reshape(b, 2 + 2 * C, n, n)
        dx = self.conv(maps).reshape(b, -1)
        return torch.cat([dx, dx.new_zeros(b, 2 * C * n * n)], dim=1)


class ImagingBlackBoxNet(nn.Module):
    r"""Black-box baseline: a residual CNN on the zero-filled reconstruction,
    :math:`\hat x = \rho\,(u - \Phi(u))` with :math:`u = x_{\mathrm{zf}}/\rho`,
    :math:`\rho = \operatorname{rms}(x_{\mathrm{zf}})` and Φ a stack of 3×3 convolutions whose
    width matches ``target_params`` (the core's
    :class:`~lightning_unfold.core.networks.ConvDenoiserNet`; zero-initialised last layer, so it starts at the zero-filled image). It knows the
    mask (to form :math:`x_{\mathrm{zf}}`) but not the iteration."""

    def __init__(self, problem: CompressiveImaging, target_params: int, *, layers: int = 5) -> None:
        super().__init__()
        self.register_buffer("mask", problem.mask.clone().float())
        self.denoiser = ConvDenoiserNet(target_params, layers=layers)

    def forward(self, y: Tensor) -> Tensor:
        zf = _ifft(self.mask.to(real_dtype(y.dtype)) * y).real
        return self.denoiser(zf)
