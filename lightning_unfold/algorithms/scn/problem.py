"""The super-resolution problem :class:`SuperResolution`, its data and its classical dictionary pair."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as tF
from torch import Tensor

from lightning_unfold.algorithms.scn.dictionary import fit_dictionary_pair
from lightning_unfold.algorithms.scn.images import (
    SHIPPED_IMAGES,
    degrade,
    psnr,
    shipped_luminance,
    ssim,
    synthetic_image,
)
from lightning_unfold.core.algorithm import ProblemSpec, seeded_rng
from lightning_unfold.core.iterate import require_finite
from lightning_unfold.core.metrics import MeanOf, ProblemMetric

#: the data sources of :class:`SuperResolution`
SOURCES: tuple[str, ...] = ("synthetic", "skimage")
#: the synthetic test images' side when no crop is given
_SYNTHETIC_TEST = (3, 64)


def mean_removal_filters(patch: int) -> Tensor:
    r"""The classical feature extractor ``(p², 1, p, p)`` float64: filter :math:`j` maps a
    :math:`p\times p` patch :math:`u` to :math:`u_j - \bar u` (the patch with its mean removed)."""
    m = patch * patch
    E = torch.eye(m, dtype=torch.float64) - 1.0 / m
    return E.reshape(m, 1, patch, patch)


class SuperResolution(ProblemSpec):
    r"""Single-image super-resolution of the luminance channel
    (:mod:`lightning_unfold.algorithms.scn` (the package docstring)).

    The target is a high-resolution image :math:`X` ``(B, 1, H, W)`` in [0, 1]; the observation
    the bicubic-interpolated low-resolution image
    :math:`x = \uparrow_s\!\downarrow_s X` (:func:`~lightning_unfold.algorithms.scn.images.degrade`:
    antialiased bicubic downsampling by ``scale`` and bicubic upsampling back, clipped to
    [0, 1]), which every estimator refines.

    Args:
        size: side (high-resolution pixels) of the square crops :meth:`sample` draws for
            training and validation; a multiple of ``scale``.
        scale: the magnification factor :math:`s` (2, 3 or 4).
        source: ``"skimage"`` — crops of the luminance of photographs shipped inside the
            scikit-image wheel (:data:`SHIPPED_IMAGES`: six for ``split="train"``, four others
            for ``"test"``; needs ``pip install "lightning-unfold[images]"``); ``"synthetic"`` —
            seeded piecewise-smooth images (no dependency, for tests).
        split: ``"train"`` or ``"test"``: which images :meth:`sample` and
            :meth:`test_images` read (synthetic: independent seed streams).
        border: pixels cropped on every side before scoring (default: ``scale``).
        seed: seeds every draw (with ``sample``'s seed).
    """

    default_algorithm = "sc_sr"

    def __init__(
        self,
        size: int = 32,
        scale: int = 2,
        source: str = "skimage",
        split: str = "train",
        border: int | None = None,
        seed: int = 0,
    ) -> None:
        if scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {scale!r}.")
        if not (isinstance(size, int) and 12 <= size <= 256 and size % scale == 0):
            raise ValueError(
                f"size must be an integer in [12, 256] divisible by scale={scale}, got {size!r}."
            )
        if source not in SOURCES:
            raise ValueError(f"Unknown source {source!r}; valid: {list(SOURCES)}.")
        if split not in ("train", "test"):
            raise ValueError(f"Unknown split {split!r}; valid: ['train', 'test'].")
        border = scale if border is None else border
        if not (isinstance(border, int) and 0 <= border and size - 2 * border >= 11):
            raise ValueError(
                f"border must be an integer >= 0 leaving at least 11 pixels of a size-{size} "
                f"crop for SSIM, got {border!r}."
            )
        if source == "skimage":
            shipped_luminance(SHIPPED_IMAGES[split][0])  # a missing extra fails here, clearly
        self.size, self.scale, self.source, self.split = size, scale, source, split
        self.border, self.seed = border, int(seed)

    # -- ProblemSpec ----------------------------------------------------------------------------
    def constants(self) -> dict[str, Tensor]:
        """None: the dictionaries are parameters of :class:`SparseCodingSR`."""
        return {}

    def sample(
        self, n: int, *, seed: int | Sequence[int], dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        """``n`` seeded crops ``size × size``: (bicubic observation, high-resolution target),
        each a random crop of a random image of the split, randomly flipped and rotated by a
        multiple of 90°."""
        rng = seeded_rng(self.seed, 0 if self.split == "train" else 1, seed)
        crops = []
        for _ in range(n):
            if self.source == "synthetic":
                img = synthetic_image(rng, self.size)
            else:
                names = SHIPPED_IMAGES[self.split]
                full = shipped_luminance(names[int(rng.integers(len(names)))])
                r = int(rng.integers(0, full.shape[0] - self.size + 1))
                c = int(rng.integers(0, full.shape[1] - self.size + 1))
                img = full[r : r + self.size, c : c + self.size]
            img = np.rot90(img, int(rng.integers(0, 4)))
            crops.append(img[:, ::-1] if rng.random() < 0.5 else img)
        hr = torch.from_numpy(np.ascontiguousarray(np.stack(crops)[:, None]))
        return degrade(hr, self.scale).to(dtype), hr.to(dtype)

    def crop_to_scale(self, img: np.ndarray, crop: int | None) -> np.ndarray:
        """The central ``crop × crop`` part of ``img`` (the whole image when ``None`` or larger),
        its sides cut down to multiples of ``scale``."""
        h, w = img.shape
        if crop is not None:
            h, w = min(h, crop), min(w, crop)
        h, w = h - h % self.scale, w - w % self.scale
        r, c = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        return img[r : r + h, c : c + w]

    def test_images(
        self, crop: int | None = None, dtype: torch.dtype = torch.float64
    ) -> list[tuple[str, Tensor, Tensor]]:
        """The split's whole images (or their central ``crop × crop`` parts), one at a time:
        ``(name, observation (1, 1, H, W), target (1, 1, H, W))``."""
        if self.source == "skimage":
            named = [(nm, shipped_luminance(nm)) for nm in SHIPPED_IMAGES[self.split]]
        else:
            count, side = _SYNTHETIC_TEST
            rng = seeded_rng(self.seed, 2 if self.split == "train" else 3)
            side = side if crop is None else max(crop, 16)
            named = [(f"synthetic_{i}", synthetic_image(rng, side)) for i in range(count)]
        out = []
        for name, img in named:
            hr = torch.from_numpy(np.array(self.crop_to_scale(img, crop)))[None, None]
            out.append((name, degrade(hr, self.scale).to(dtype), hr.to(dtype)))
        return out

    def validate_observation(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != 1 or min(x.shape[2:]) < 12:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"SuperResolution expects bicubic-interpolated luminance images of shape "
                f"(B, 1, H, W) with H, W >= 12, got {shape}; interpolate the low-resolution "
                "image to the target size first (lightning_unfold.algorithms.scn.degrade)."
            )
        require_finite(x, "The interpolated image batch x")

    # -- scoring --------------------------------------------------------------------------------
    def metrics(self) -> tuple[ProblemMetric, ...]:
        """PSNR (dB, primary) and SSIM of the luminance, ``border`` pixels cropped, the estimate
        clipped to [0, 1]; means over images."""
        return (
            MeanOf("psnr", self._psnr, label="PSNR", unit="dB", higher_is_better=True),
            MeanOf("ssim", self._ssim, label="SSIM", higher_is_better=True),
        )

    def _psnr(self, estimate: Tensor, target: Tensor, x: Tensor) -> Tensor:
        return psnr(estimate, target, self.border)

    def _ssim(self, estimate: Tensor, target: Tensor, x: Tensor) -> Tensor:
        return ssim(estimate, target, self.border)

    # -- the classical dictionary pair ----------------------------------------------------------
    def training_patches(self, patch: int, n_patches: int) -> tuple[Tensor, Tensor]:
        r"""``n_patches`` seeded pairs from the *training* split (whatever this problem's split),
        float64: the mean-removed :math:`p\times p` patches of the observation ``(N, p²)`` and
        the residual patches :math:`X - x` at the same place ``(N, p²)``. Patches whose
        mean-removed observation has RMS below 0.01 (flat regions, which every dictionary
        codes as 0) are left out, as in Yang et al. (2010)."""
        train = SuperResolution(**{**self.init_args(), "split": "train"})
        per_crop = (self.size - patch + 1) ** 2
        n_crops = min(4 * math.ceil(n_patches / per_crop) + 1, 4096)
        x, hr = train.sample(n_crops, seed=(7919,), dtype=torch.float64)
        feats = tF.conv2d(x, mean_removal_filters(patch)).flatten(2).transpose(1, 2)
        resid = tF.unfold(hr - x, patch).transpose(1, 2)
        feats, resid = feats.reshape(-1, patch * patch), resid.reshape(-1, patch * patch)
        keep = torch.linalg.vector_norm(feats, dim=1) >= 0.01 * patch
        feats, resid = feats[keep], resid[keep]
        rng = seeded_rng(self.seed, 4, patch)
        pick = rng.choice(feats.shape[0], min(n_patches, feats.shape[0]), replace=False)
        idx = torch.from_numpy(np.sort(pick))
        return feats[idx], resid[idx]

    def dictionary_pair(
        self, patch: int, atoms: int, lam: float, iterations: int, n_patches: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        r"""The classical extractor ``(p², 1, p, p)`` (:func:`mean_removal_filters`),
        :math:`D_l` ``(p², atoms)`` and :math:`D_h` ``(p², atoms)``, float64, fitted on
        :meth:`training_patches` (:func:`~lightning_unfold.algorithms.scn.dictionary.
        fit_dictionary_pair`; cached per argument set)."""
        key = tuple(sorted({**self.init_args(), "split": "train"}.items()))
        E, Dl, Dh = _pair(key, patch, atoms, float(lam), iterations, n_patches)
        return E.clone(), Dl.clone(), Dh.clone()


@functools.lru_cache(maxsize=16)
def _pair(
    args: tuple[tuple[str, Any], ...],
    patch: int,
    atoms: int,
    lam: float,
    iterations: int,
    n_patches: int,
) -> tuple[Tensor, Tensor, Tensor]:
    train = SuperResolution(**dict(args))
    Y, R = train.training_patches(patch, n_patches)
    Dl, Dh = fit_dictionary_pair(Y, R, atoms, lam, iterations, seed=train.seed)
    return mean_removal_filters(patch), Dl, Dh
