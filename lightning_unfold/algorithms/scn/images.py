r"""Images for super-resolution: scikit-image's shipped files, luminance, the degradation, and
the scores (PSNR, SSIM) on luminance with a cropped border.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import torch
import torch.nn.functional as tF
from scipy import ndimage
from torch import Tensor

from lightning_unfold.core.shipped import load_shipped

#: scikit-image's shipped photographs used by ``source="skimage"``, per split (no image is in
#: both); every file is inside the scikit-image wheel (``skimage.data.data_dir``), none is fetched
SHIPPED_IMAGES: dict[str, tuple[str, ...]] = {
    "train": (
        "astronaut.png",
        "coffee.png",
        "rocket.jpg",
        "motorcycle_left.png",
        "brick.png",
        "gravel.png",
    ),
    "test": ("camera.png", "chelsea.png", "coins.png", "moon.png"),
}


@functools.lru_cache(maxsize=16)
def shipped_luminance(name: str) -> np.ndarray:
    r"""The luminance of a file shipped inside the scikit-image wheel, float64 in [0, 1], read-only.

    Grey images are divided by 255; colour images (R, G, B in [0, 1]) become the ITU-R BT.601
    luma of YCbCr, :math:`Y = (16 + 65.481R + 128.553G + 24.966B)/255` (the channel super-resolution
    papers score): :func:`~lightning_unfold.core.shipped.load_shipped` of
    ``skimage:<name without extension>`` with ``luma="ycbcr"``. Nothing is downloaded: a name
    that is not a shipped image is an error.
    """
    try:
        return load_shipped(f"skimage:{os.path.splitext(name)[0]}", luma="ycbcr")
    except ImportError as err:
        raise ImportError(
            f"SuperResolution(source='skimage') reads images shipped with scikit-image: {err}"
        ) from err


def synthetic_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A seeded piecewise-smooth test image ``(size, size)`` in [0, 1]: a smooth ramp, random
    ellipses and stripes of random grey levels, lightly blurred (σ = 0.6 px)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    a, b = rng.uniform(-0.3, 0.3, size=2)
    img = 0.5 + a * (xx - 0.5) + b * (yy - 0.5)
    for _ in range(int(rng.integers(2, 5))):
        cy, cx = rng.uniform(0.1, 0.9, size=2)
        ay, ax = rng.uniform(0.08, 0.35, size=2)
        t = rng.uniform(0, math.pi)
        u = ((xx - cx) * math.cos(t) + (yy - cy) * math.sin(t)) / ax
        v = (-(xx - cx) * math.sin(t) + (yy - cy) * math.cos(t)) / ay
        img = np.where(u * u + v * v <= 1.0, rng.uniform(0.05, 0.95), img)
    t, period = rng.uniform(0, math.pi), rng.uniform(0.08, 0.25)
    phase = (xx * math.cos(t) + yy * math.sin(t)) / period
    img = img + 0.15 * np.sign(np.sin(2 * math.pi * phase)) * (rng.random() < 0.5)
    return np.clip(ndimage.gaussian_filter(img, 0.6, mode="reflect"), 0.0, 1.0)


def degrade(hr: Tensor, scale: int) -> Tensor:
    r"""The observation of a high-resolution batch ``hr`` ``(B, 1, H, W)`` (:math:`H, W`
    multiples of ``scale``): antialiased bicubic downsampling by ``scale``, then bicubic
    upsampling back to :math:`H \times W` (PyTorch's ``interpolate``, ``align_corners=False``),
    clipped to [0, 1] like a stored image — the interpolated input of SCN and SRCNN."""
    H, W = hr.shape[-2:]
    if H % scale or W % scale:
        raise ValueError(
            f"The high-resolution image {H}×{W} must have sides divisible by scale={scale}; "
            "crop it first (SuperResolution.crop_to_scale)."
        )
    low = tF.interpolate(hr, scale_factor=1.0 / scale, mode="bicubic", antialias=True)
    up = tF.interpolate(low, size=(H, W), mode="bicubic", align_corners=False)
    return up.clamp(0.0, 1.0)


def _crop(t: Tensor, border: int) -> Tensor:
    if border == 0:
        return t
    return t[..., border:-border, border:-border]


def psnr(estimate: Tensor, target: Tensor, border: int) -> Tensor:
    r"""Per image ``(B,)``: :math:`10\log_{10}(1/\mathrm{MSE})` dB of the estimate clipped to
    [0, 1] against the target (peak 1), ``border`` pixels cropped on every side."""
    e, t = _crop(estimate.clamp(0.0, 1.0), border), _crop(target, border)
    mse = (e - t).pow(2).flatten(1).mean(1)
    return -10.0 * torch.log10(mse.clamp_min(1e-20))


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> Tensor:
    r = torch.arange(-5, 6, dtype=dtype, device=device)
    g = torch.exp(-(r**2) / (2 * 1.5**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, 11, 11)


def ssim(estimate: Tensor, target: Tensor, border: int) -> Tensor:
    r"""Per image ``(B,)``: the structural similarity of Wang et al. (2004) with an 11×11
    Gaussian window (σ = 1.5), :math:`C_1 = (0.01)^2`, :math:`C_2 = (0.03)^2` (data range 1),
    of the estimate clipped to [0, 1], ``border`` pixels cropped first; the mean of the SSIM map
    over the windows that fit inside (scikit-image's ``structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)``)."""
    e, t = _crop(estimate.clamp(0.0, 1.0), border), _crop(target, border)
    if min(e.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11×11 after cropping, got {e.shape}.")
    w = _gaussian_window(e.dtype, e.device)

    def filt(v: Tensor) -> Tensor:
        return tF.conv2d(v, w)

    mu_e, mu_t = filt(e), filt(t)
    var_e = filt(e * e) - mu_e**2
    var_t = filt(t * t) - mu_t**2
    cov = filt(e * t) - mu_e * mu_t
    c1, c2 = 0.01**2, 0.03**2
    num = (2 * mu_e * mu_t + c1) * (2 * cov + c2)
    den = (mu_e**2 + mu_t**2 + c1) * (var_e + var_t + c2)
    return (num / den).flatten(1).mean(1)
