"""The compressive imaging problem :class:`CompressiveImaging`: phantoms, sampling masks,
noisy Fourier measurements and the PSNR / SSIM metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lightning_unfold.algorithms.imaging.operators import _fft, _ifft
from lightning_unfold.core.algorithm import ProblemSpec, as_operator, seeded_rng
from lightning_unfold.core.iterate import complex_dtype, real_dtype, require_finite
from lightning_unfold.core.metrics import MeanOf, ProblemMetric
from lightning_unfold.core.shipped import (
    CROPS,
    load_shipped,
    parse_image_set,
    shipped_batch,
)

#: the sampling patterns of :class:`CompressiveImaging`
IMAGING_MASKS: tuple[str, ...] = ("random", "radial")


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
    r"""Seeded undersampled-Fourier imaging of synthetic phantoms or of real images shipped
    inside packages (:mod:`lightning_unfold.algorithms.imaging` (the package docstring)).

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
        images: ``"phantoms"`` (the synthetic phantoms; ``ellipses`` and ``texture`` shape them)
            or a comma-separated list of real images shipped inside installed wheels,
            ``"skimage:camera,astronaut,pydicom:MR_small"`` (a name without ``package:`` takes
            the package named last; the valid names are
            :data:`~lightning_unfold.core.shipped.SHIPPED_IMAGES`; needs
            ``pip install lightning-unfold[images]``, nothing is downloaded).
        crop: the view of real images: ``"patches"`` — seeded random square patches at random
            scales, flips and rotations (training), or ``"whole"`` — each image's centred square
            in the listed order, batch entry ``i`` is image ``i mod len(images)`` (testing);
            see :func:`~lightning_unfold.core.shipped.shipped_batch`. Both give
            grey levels in :math:`[0, 1]` resized to ``size × size``.

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
        images: str = "phantoms",
        crop: str = "patches",
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
        if crop not in CROPS:
            raise ValueError(f"Unknown crop {crop!r}; valid: {list(CROPS)}.")
        if images == "phantoms":
            if crop != "patches":
                raise ValueError(
                    "crop='whole' views real images (images='skimage:camera,...'); the "
                    "synthetic phantoms are always drawn whole (keep crop='patches')."
                )
            self.image_keys: tuple[str, ...] = ()
        else:
            self.image_keys = parse_image_set(images)
            for key in self.image_keys:  # a missing extra or file fails here, by name
                load_shipped(key)
        self.images_spec, self.crop = images, crop
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
        """``n`` seeded images ``(n, size, size)`` in :math:`[0, 1]` (float64): phantoms, or
        patches / whole images of the shipped set (``images``, ``crop``)."""
        rng = seeded_rng(self.seed, 1, seed)
        if self.image_keys:
            return shipped_batch(self.image_keys, n, self.size, self.crop, rng)
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
