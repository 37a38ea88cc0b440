"""The segmentation problem :class:`Segmentation`, its data sources and its metrics."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as tF
from scipy import ndimage
from torch import Tensor

from lightning_unfold.algorithms.crf.kernels import (
    unary_features,
)
from lightning_unfold.core.algorithm import ProblemSpec
from lightning_unfold.core.iterate import require_finite
from lightning_unfold.core.metrics import ProblemMetric, RateOf, labelled_rows
from lightning_unfold.core.shipped import read_shipped

#: the data sources of :class:`Segmentation`
SOURCES: tuple[str, ...] = ("synthetic", "skimage")
#: scikit-image's shipped files used by ``source="skimage"``, per split: the masks come from
#: different images (horse silhouette / Shepp–Logan phantom), the textures from disjoint halves
#: (rows 0–255 / 256–511) of the same two texture photographs
SHIPPED_IMAGES: dict[str, dict[str, str]] = {
    "train": {"mask": "horse.png", "foreground": "brick.png", "background": "grass.png"},
    "test": {"mask": "phantom.png", "foreground": "brick.png", "background": "grass.png"},
}


def _shipped(name: str) -> np.ndarray:
    """A file shipped inside the scikit-image wheel, as stored (read-only; no fetch, no network):
    :func:`~lightning_unfold.core.shipped.read_shipped` of ``skimage:<name without extension>``."""
    try:
        return read_shipped(f"skimage:{os.path.splitext(name)[0]}")
    except ImportError as err:
        raise ImportError(
            f"Segmentation(source='skimage') reads images shipped with scikit-image: {err}"
        ) from err


def _mask_image(name: str) -> np.ndarray:
    """The boolean foreground of a shipped mask image."""
    img = _shipped(name)
    if name == "horse.png":
        return img[..., 0] < 128  # the dark silhouette
    if name == "phantom.png":  # brain tissue: the grey levels 51, 76, 102 of the phantom
        return (img[..., 0] >= 40) & (img[..., 0] <= 120)
    raise ValueError(f"No mask rule for {name!r}.")


def _texture(name: str, split: str) -> np.ndarray:
    img = _shipped(name).astype(np.float64) / 255.0
    half = img.shape[0] // 2
    return img[:half] if split == "train" else img[half:]


class MeanIoU(ProblemMetric):
    r"""Mean intersection over union of the argmax labels, pooled: the statistics are, per label
    :math:`l`, :math:`\sum|\hat y = l \wedge y = l|` and :math:`\sum|\hat y = l \vee y = l|` over
    every pixel of every image; mIoU is the mean of their ratios over labels with a non-empty
    union (so the value of a whole set equals that of its halves pooled)."""

    label, unit, higher_is_better, needs_target = "mIoU", "", True, True

    def __init__(self, labels: int) -> None:
        self.name, self.labels, self.n_stats = "miou", labels, 2 * labels

    def statistics(self, estimate: Tensor, target: Tensor, x: Tensor) -> Tensor:
        pred = estimate.argmax(dim=1)
        classes = torch.arange(self.labels, device=pred.device).view(-1, 1, 1, 1)
        p, t = pred.unsqueeze(0) == classes, target.unsqueeze(0) == classes
        inter = (p & t).flatten(1).sum(1)
        union = (p | t).flatten(1).sum(1)
        return torch.cat([inter, union]).double()

    def finalize(self, stats: Tensor) -> Tensor:
        inter, union = stats[: self.labels], stats[self.labels :]
        seen = union > 0
        if not bool(seen.any()):
            return torch.tensor(float("nan"), dtype=torch.float64)
        return (inter[seen] / union[seen]).mean()


def _soft_iou(q: Tensor, target: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Soft intersection over union per label of marginals ``q`` ``(B, L, H, W)``, summed over
    ``dims``."""
    onehot = tF.one_hot(target.clamp_min(0), q.shape[1]).permute(0, 3, 1, 2).to(q.dtype)
    inter = (q * onehot).sum(dims)
    return inter / (q.sum(dims) + onehot.sum(dims) - inter).clamp_min(1e-12)


def _pixels_correct(estimate: Tensor, target: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    right = (estimate.argmax(dim=1) == target).flatten(1).sum(1)
    return right, torch.full_like(right, target[0].numel())


class Segmentation(ProblemSpec):
    r"""Seeded segmentation images with exact label maps
    (:mod:`lightning_unfold.algorithms.crf` (the package docstring)).

    Args:
        size: image side :math:`H = W` (pixels).
        n_labels: :math:`L` (2 or 3 for ``"synthetic"``; 2 for ``"skimage"``).
        source: ``"synthetic"`` — random ellipses, each label a smoothed-noise texture whose mean
            differs from the next label's by ``contrast``; ``"skimage"`` — brick (foreground)
            composited on grass (background) through masks cut from scikit-image's shipped
            images (:data:`SHIPPED_IMAGES`; needs ``pip install lightning-unfold[images]``).
        split: ``"train"`` or ``"test"``; for ``"skimage"`` the two splits share no mask image
            and no texture pixel; for ``"synthetic"`` they are independent seed streams.
        snr_db: additive white Gaussian noise at this SNR relative to each clean image's
            variance (``None``: none).
        contrast: mean-intensity step between consecutive synthetic labels.
        loss: the supervised loss, ``"cross_entropy"`` (CRF-RNN's) or ``"soft_iou"``
            (:meth:`supervised_loss`).
        seed: seeds every draw (with ``sample``'s seed).
    """

    default_algorithm = "mean_field_crf"

    def __init__(
        self,
        size: int = 32,
        n_labels: int = 2,
        source: str = "synthetic",
        split: str = "train",
        snr_db: float | None = 20.0,
        contrast: float = 0.1,
        loss: str = "cross_entropy",
        seed: int = 0,
    ) -> None:
        if not (isinstance(size, int) and 8 <= size <= 96):
            raise ValueError(
                f"size must be an integer in [8, 96] (the dense kernels hold size^4 entries per "
                f"image), got {size!r}."
            )
        if source not in SOURCES:
            raise ValueError(f"Unknown source {source!r}; valid: {list(SOURCES)}.")
        if split not in ("train", "test"):
            raise ValueError(f"Unknown split {split!r}; valid: ['train', 'test'].")
        valid_labels = (2, 3) if source == "synthetic" else (2,)
        if n_labels not in valid_labels:
            raise ValueError(
                f"source={source!r} supports n_labels in {valid_labels}, got {n_labels!r}."
            )
        if snr_db is not None and not math.isfinite(snr_db):
            raise ValueError(f"snr_db must be finite (None for noiseless images), got {snr_db}.")
        if not (math.isfinite(contrast) and contrast > 0):
            raise ValueError(f"contrast must be finite and > 0, got {contrast}.")
        if loss not in ("cross_entropy", "soft_iou"):
            raise ValueError(f"Unknown loss {loss!r}; valid: ['cross_entropy', 'soft_iou'].")
        if source == "skimage":
            _mask_image(SHIPPED_IMAGES[split]["mask"])  # a missing extra fails here, clearly
        self.size, self.n_labels, self.source, self.split = size, n_labels, source, split
        self.snr_db = None if snr_db is None else float(snr_db)
        self.contrast, self.loss, self.seed, self.channels = float(contrast), loss, int(seed), 1

    # -- ProblemSpec ----------------------------------------------------------------------------
    def constants(self) -> dict[str, Tensor]:
        """None: every CRF quantity is a parameter of :class:`MeanFieldCRF`."""
        return {}

    def sample(
        self, n: int, *, seed: int | Sequence[int], dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        extra = [seed] if isinstance(seed, int) else list(seed)
        rng = np.random.default_rng([self.seed, 0 if self.split == "train" else 1, *extra])
        images, masks = [], []
        for _ in range(n):
            lab, img = self._synthetic(rng) if self.source == "synthetic" else self._shipped(rng)
            if self.snr_db is not None:
                sigma = math.sqrt(img.var() / 10.0 ** (self.snr_db / 10.0))
                img = img + sigma * rng.normal(size=img.shape)
            images.append(img)
            masks.append(lab)
        x = torch.from_numpy(np.stack(images)[:, None]).to(dtype)
        return x, torch.from_numpy(np.stack(masks)).long()

    def _synthetic(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        n = self.size
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
        lab = np.zeros((n, n), dtype=np.int64)
        for label in range(1, self.n_labels):
            for _ in range(int(rng.integers(1, 3))):
                cy, cx = rng.uniform(0.15 * n, 0.85 * n, size=2)
                ay, ax = rng.uniform(0.12 * n, 0.3 * n, size=2)
                t = rng.uniform(0, math.pi)
                u = ((xx - cx) * math.cos(t) + (yy - cy) * math.sin(t)) / ax
                v = (-(xx - cx) * math.sin(t) + (yy - cy) * math.cos(t)) / ay
                lab[u * u + v * v <= 1.0] = label
        img = np.zeros((n, n))
        for label in range(self.n_labels):  # smoothed noise, correlation length 1 + label pixels
            tex = ndimage.gaussian_filter(rng.normal(size=(n, n)), 1.0 + label, mode="wrap")
            tex = 0.1 * tex / max(float(tex.std()), 1e-12)
            img = np.where(lab == label, 0.5 + self.contrast * (label - 0.5) + tex, img)
        return lab, img

    def _shipped(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        n, files = self.size, SHIPPED_IMAGES[self.split]
        full = _mask_image(files["mask"])
        for _ in range(50):  # a crop showing both labels, each on >= 15 % of the pixels
            side = int(rng.integers(int(0.3 * min(full.shape)), int(0.6 * min(full.shape)) + 1))
            r0 = int(rng.integers(0, full.shape[0] - side + 1))
            c0 = int(rng.integers(0, full.shape[1] - side + 1))
            crop = full[r0 : r0 + side, c0 : c0 + side].astype(np.float64)
            small = ndimage.zoom(crop, n / side, order=1, grid_mode=True, mode="nearest")[:n, :n]
            lab = (small >= 0.5).astype(np.int64)
            if 0.15 <= lab.mean() <= 0.85:
                break
        if rng.random() < 0.5:
            lab = lab[:, ::-1]
        layers = []
        for key in ("background", "foreground"):
            tex = _texture(files[key], self.split)
            r, c = rng.integers(0, tex.shape[0] - n + 1), rng.integers(0, tex.shape[1] - n + 1)
            patch = tex[r : r + n, c : c + n]
            layers.append(np.rot90(patch, int(rng.integers(0, 4))))
        return np.ascontiguousarray(lab), np.where(lab == 1, layers[1], layers[0])

    def validate_observation(self, x: Tensor) -> None:
        expected = (self.channels, self.size, self.size)
        if not isinstance(x, Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != expected:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"Segmentation expects images of shape (B, {self.channels}, {self.size}, "
                f"{self.size}), got {shape}; pass a batch of grey images (B, 1, H, W)."
            )
        require_finite(x, "The image batch x")

    # -- scoring --------------------------------------------------------------------------------
    def metrics(self) -> tuple[ProblemMetric, ...]:
        """mIoU (primary, pooled per label), then pixel accuracy."""
        acc = RateOf(
            "pixel_accuracy", _pixels_correct, label="pixel accuracy", higher_is_better=True
        )
        return (MeanIoU(self.n_labels), acc)

    def per_sample_loss(self, estimate: Tensor, target: Tensor) -> Tensor:
        r"""The loss of each image ``(B,)`` (rows assumed labelled): the mean over pixels of
        :math:`-\log Q_i(y_i)`, or with ``loss="soft_iou"`` one minus the image's soft mIoU."""
        if self.loss == "soft_iou":
            return 1.0 - _soft_iou(estimate, target, dims=(2, 3)).mean(1)
        picked = estimate.gather(1, target.clamp_min(0).unsqueeze(1)).squeeze(1)
        return -picked.clamp_min(1e-12).log().flatten(1).mean(1)

    def supervised_loss(self, estimate: Tensor, target: Tensor) -> Tensor | None:
        r"""Over labelled images (``None`` when none is labelled): the pixel cross-entropy
        :math:`-\frac1{|\mathcal B_\ell|N}\sum_{b,i}\log Q_{bi}(y_{bi})` (probabilities clamped at
        1e-12), or with ``loss="soft_iou"`` one minus the soft mIoU pooled over the batch,
        :math:`1 - \frac1L\sum_l \frac{\sum Q_l\,[y = l]}{\sum (Q_l + [y = l] - Q_l\,[y = l])}`
        (Rahman & Wang 2016), which pools like the metric."""
        labelled = labelled_rows(target)
        if not bool(labelled.any()):
            return None
        if self.loss == "soft_iou":
            return 1.0 - _soft_iou(estimate[labelled], target[labelled], dims=(0, 2, 3)).mean()
        return self.per_sample_loss(estimate[labelled], target[labelled]).mean()

    # -- the unary's classical fit --------------------------------------------------------------
    def unary_classifier(self, n: int = 48) -> tuple[Tensor, Tensor]:
        r"""Classical unary weights ``(L, F)`` and bias ``(L,)`` (float64): linear discriminant
        analysis fitted in closed form on ``n`` seeded images of the *training* split (whatever
        this problem's split): class means :math:`m_l`, pooled covariance :math:`\Sigma` and
        priors :math:`\pi_l` of the features give :math:`W_l = \Sigma^{-1}m_l`,
        :math:`b_l = -\tfrac12 m_l^\top\Sigma^{-1}m_l + \log\pi_l` (the Bayes classifier of
        Gaussian classes with a shared covariance)."""
        args = {**self.init_args(), "split": "train"}
        W, b = _lda_unary(tuple(sorted(args.items())), n)
        return W.clone(), b.clone()


@functools.lru_cache(maxsize=16)
def _lda_unary(args: tuple[tuple[str, Any], ...], n: int) -> tuple[Tensor, Tensor]:
    """:meth:`Segmentation.unary_classifier` of the training problem ``args`` (cached)."""
    train = Segmentation(**dict(args))
    x, y = train.sample(n, seed=(7919, 0), dtype=torch.float64)
    feats = unary_features(x).permute(0, 2, 3, 1).reshape(-1, 3 * train.channels)
    labels = y.reshape(-1)
    means = torch.stack([feats[labels == c].mean(0) for c in range(train.n_labels)])
    centred = feats - means[labels]
    prec = torch.linalg.inv(centred.T @ centred / feats.shape[0])
    prior = torch.bincount(labels, minlength=train.n_labels).double() / labels.numel()
    W = means @ prec
    return W, -0.5 * (W * means).sum(1) + prior.log()
