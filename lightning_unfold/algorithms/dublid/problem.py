"""The blind deblurring problem :class:`BlindDeblurring`: shipped or synthetic images, random
motion-blur kernels, and its metrics (shift-aligned PSNR, kernel error)."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lightning_unfold.algorithms.dublid.operators import (
    aligned_kernel_error,
    aligned_psnr,
    blur,
    motion_kernel,
)
from lightning_unfold.core.algorithm import ProblemSpec, seeded_rng
from lightning_unfold.core.iterate import require_finite
from lightning_unfold.core.metrics import MeanOf, ProblemMetric, labelled_rows
from lightning_unfold.core.shipped import load_shipped

#: the image sources of :class:`BlindDeblurring`
DEBLUR_SOURCES: tuple[str, ...] = ("skimage", "synthetic")
#: scikit-image's shipped files per split (``source="skimage"``): no image is in both
DEBLUR_IMAGES: dict[str, tuple[str, ...]] = {
    "train": ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "motorcycle_left.png"),
    "test": ("coins.png", "rocket.jpg", "moon.png"),
}


@functools.lru_cache(maxsize=16)
def shipped_grey(name: str, downscale: int) -> np.ndarray:
    """A file shipped inside the scikit-image wheel (never fetched), as a read-only grey image in
    ``[0, 1]`` (RGB by ITU-R 601 luma: :func:`~lightning_unfold.core.shipped.load_shipped` of
    ``skimage:<name without extension>`` with ``luma="bt601"``), averaged over
    ``downscale × downscale`` blocks."""
    try:
        img = load_shipped(f"skimage:{os.path.splitext(name)[0]}", luma="bt601")
    except ImportError as err:
        raise ImportError(
            f"BlindDeblurring(source='skimage') reads images shipped with scikit-image: {err} "
            "(or use source='synthetic')."
        ) from err
    h, w = (img.shape[0] // downscale) * downscale, (img.shape[1] // downscale) * downscale
    img = img[:h, :w].reshape(h // downscale, downscale, w // downscale, downscale).mean((1, 3))
    img.setflags(write=False)
    return img


def _synthetic_image(rng: np.random.Generator, n: int) -> np.ndarray:
    """A piecewise-smooth test image: a linear ramp and 6 random rectangles and disks of random
    grey levels, clipped to ``[0, 1]`` (sharp edges, which blind deblurring needs)."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) / n
    img = 0.3 + 0.2 * (rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy)
    for _ in range(6):
        level = rng.uniform(0.0, 1.0)
        cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.3)
        shape = (
            (np.abs(yy - cy) < r) & (np.abs(xx - cx) < 0.7 * r)
            if rng.random() < 0.5
            else (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        )
        img = np.where(shape, level, img)
    return np.clip(img, 0.0, 1.0)


def _kernel_radius(m: int) -> int:
    return m // 2


class BlindDeblurring(ProblemSpec):
    r"""Seeded blind deblurring, :math:`y = k\circledast x + w` (package docstring).

    ``sample`` returns the blurred images ``y`` ``(B, n, n)`` and as target the sharp image and
    the kernel packed in one row, ``(B, n² + m²)`` (:meth:`unpack` splits it; a NaN row is
    unlabelled). The convolution is **circular** (the images are periodised), so the model is
    exact and the shift ambiguity is exact too: the metrics score the best integer shift within
    :math:`\pm\lfloor m/2\rfloor` pixels (:func:`~lightning_unfold.algorithms.dublid.aligned_psnr`).

    Args:
        size: image side :math:`n` (pixels), 16 to 256.
        kernel_size: odd kernel box side :math:`m`, 3 to :math:`n/2`.
        source: ``"skimage"`` — random crops (std ≥ 0.08, random flips) of scikit-image's
            shipped photographs (:data:`DEBLUR_IMAGES`: training and test images differ; needs
            ``pip install lightning-unfold[images]``); ``"synthetic"`` — random rectangles and
            disks (no dependency; the two splits are independent seed streams).
        split: ``"train"`` or ``"test"``.
        snr_db: white Gaussian noise at this SNR, the blurred image's variance over
            :math:`\sigma^2`, per image, in dB (``None``: noiseless).
        downscale: the shipped images are first averaged over blocks of this side (a 64-pixel
            crop of a 512-pixel photograph at ``downscale=2`` shows a quarter of its width).
        kernel_weight: weight :math:`\beta` of the kernel term of :meth:`supervised_loss`.
        seed: seeds every draw (with ``sample``'s seed).
    """

    default_algorithm = "hqs_deblur"

    def __init__(
        self,
        size: int = 64,
        kernel_size: int = 13,
        source: str = "skimage",
        split: str = "train",
        snr_db: float | None = 30.0,
        downscale: int = 2,
        kernel_weight: float = 0.01,
        seed: int = 0,
    ) -> None:
        if not (isinstance(size, int) and 16 <= size <= 256):
            raise ValueError(f"size must be an integer in [16, 256], got {size!r}.")
        if not (
            isinstance(kernel_size, int) and kernel_size % 2 == 1 and 3 <= kernel_size <= size // 2
        ):
            raise ValueError(
                f"kernel_size must be an odd integer in [3, size/2] = [3, {size // 2}] (the box "
                f"is centred on a tap), got {kernel_size!r}."
            )
        if source not in DEBLUR_SOURCES:
            raise ValueError(f"Unknown source {source!r}; valid: {list(DEBLUR_SOURCES)}.")
        if split not in ("train", "test"):
            raise ValueError(f"Unknown split {split!r}; valid: ['train', 'test'].")
        if snr_db is not None and not math.isfinite(snr_db):
            raise ValueError(f"snr_db must be finite (None for noiseless images), got {snr_db}.")
        if not (isinstance(downscale, int) and downscale >= 1):
            raise ValueError(f"downscale must be an integer >= 1, got {downscale!r}.")
        if not (math.isfinite(kernel_weight) and kernel_weight >= 0):
            raise ValueError(f"kernel_weight must be finite and >= 0, got {kernel_weight}.")
        if source == "skimage":
            for name in DEBLUR_IMAGES[split]:  # a missing extra fails here, clearly
                img = shipped_grey(name, downscale)
                if min(img.shape) < size:
                    raise ValueError(
                        f"{name} at downscale={downscale} is {img.shape[0]}×{img.shape[1]}, "
                        f"smaller than size={size}; lower downscale or size."
                    )
        self.size, self.kernel_size, self.source, self.split = size, kernel_size, source, split
        self.snr_db = None if snr_db is None else float(snr_db)
        self.downscale, self.kernel_weight, self.seed = downscale, float(kernel_weight), int(seed)
        self.radius = _kernel_radius(kernel_size)

    # -- ProblemSpec ----------------------------------------------------------------------------
    def constants(self) -> dict[str, Tensor]:
        """None: the filters, thresholds and penalties are parameters of the algorithm."""
        return {}

    def sample(
        self, n: int, *, seed: int | Sequence[int], dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        rng = seeded_rng(self.seed, 0 if self.split == "train" else 1, seed)
        N, m = self.size, self.kernel_size
        images, kernels = np.empty((n, N, N)), np.empty((n, m, m))
        for i in range(n):
            images[i] = self._image(rng)
            kernels[i] = motion_kernel(rng, m)
        x64, k64 = torch.from_numpy(images), torch.from_numpy(kernels)
        y = blur(x64, k64)
        if self.snr_db is not None:
            var = y.flatten(1).var(dim=1).clamp_min(1e-12).view(-1, 1, 1)
            sigma = (var / 10.0 ** (self.snr_db / 10.0)).sqrt()
            y = y + sigma * torch.from_numpy(rng.normal(size=y.shape))
        target = torch.cat([x64.flatten(1), k64.flatten(1)], dim=1)
        return y.to(dtype), target.to(dtype)

    def _image(self, rng: np.random.Generator) -> np.ndarray:
        n = self.size
        if self.source == "synthetic":
            return _synthetic_image(rng, n)
        names = DEBLUR_IMAGES[self.split]
        for _ in range(100):  # a crop with some structure (std >= 0.08)
            full = shipped_grey(names[int(rng.integers(len(names)))], self.downscale)
            r = int(rng.integers(0, full.shape[0] - n + 1))
            c = int(rng.integers(0, full.shape[1] - n + 1))
            crop = full[r : r + n, c : c + n]
            if crop.std() >= 0.08:
                break
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return np.ascontiguousarray(crop)

    def validate_observation(self, x: Tensor) -> None:
        n = self.size
        if not isinstance(x, Tensor) or x.ndim != 3 or tuple(x.shape[1:]) != (n, n):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"BlindDeblurring expects blurred grey images of shape (B, {n}, {n}), got "
                f"{shape}; pass a batch of real images (x.unsqueeze(0) for one image)."
            )
        if x.is_complex():
            raise ValueError("BlindDeblurring expects real images, got a complex tensor.")
        require_finite(x, "The blurred image batch x")

    # -- packing and scoring --------------------------------------------------------------------
    def unpack(self, packed: Tensor) -> tuple[Tensor, Tensor]:
        """Split an estimate or target ``(B, n² + m²)`` into images ``(B, n, n)`` and kernels
        ``(B, m, m)``."""
        n, m = self.size, self.kernel_size
        if packed.shape[-1] != n * n + m * m:
            raise ValueError(
                f"A packed image and kernel has n² + m² = {n * n + m * m} entries, got "
                f"{packed.shape[-1]}."
            )
        lead = packed.shape[:-1]
        return packed[..., : n * n].reshape(*lead, n, n), packed[..., n * n :].reshape(*lead, m, m)

    def _psnr(self, estimate: Tensor, target: Tensor, x: Tensor) -> Tensor:
        return aligned_psnr(self.unpack(estimate)[0], self.unpack(target)[0], self.radius)

    def _kernel_error(self, estimate: Tensor, target: Tensor, x: Tensor) -> Tensor:
        return aligned_kernel_error(self.unpack(estimate)[1], self.unpack(target)[1], self.radius)

    def metrics(self) -> tuple[ProblemMetric, ...]:
        """Shift-aligned image PSNR in dB (primary), then the aligned relative kernel error."""
        return (
            MeanOf("psnr_db", self._psnr, label="PSNR", unit="dB", higher_is_better=True),
            MeanOf("kernel_error", self._kernel_error, label="kernel error ‖k̂ − k‖/‖k‖"),
        )

    def per_sample_loss(self, estimate: Tensor, target: Tensor) -> Tensor:
        r"""Per image ``(B,)``: :math:`\frac1{n^2}\|\hat x - x\|^2 + \beta\|\hat k - k\|^2/\|k\|^2`
        (no shift alignment: the kernels are drawn centred on their centroid and the iteration
        starts from a centred identity kernel)."""
        xe, ke = self.unpack(estimate)
        xt, kt = self.unpack(target)
        img = (xe - xt).pow(2).flatten(1).mean(1)
        ker = (ke - kt).pow(2).flatten(1).sum(1) / kt.pow(2).flatten(1).sum(1).clamp_min(1e-12)
        return img + self.kernel_weight * ker

    def supervised_loss(self, estimate: Tensor, target: Tensor) -> Tensor | None:
        """The mean of :meth:`per_sample_loss` over labelled rows (``None`` when none is)."""
        labelled = labelled_rows(target)
        if not bool(labelled.any()):
            return None
        return self.per_sample_loss(estimate[labelled], target[labelled]).mean()
