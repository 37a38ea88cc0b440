r"""Dense-CRF segmentation: mean-field inference unrolled as CRF-RNN (Zheng et al. 2015).

Problem (:class:`Segmentation`): a grey image :math:`I` ``(B, 1, H, W)`` whose pixels belong to
:math:`L` labels, the target the exact label map ``(B, H, W)`` (``-1`` marks an unlabelled row).
A *unary* classifier gives per-pixel logits :math:`U_i \in \mathbb R^L`: a linear map of
:math:`F = 3` features per pixel (the intensity, its 3×3 mean and standard deviation),
deliberately weak. The dense CRF adds, for every pair of pixels :math:`i \ne j`, the energy
:math:`\mu(l_i, l_j)\,k_{ij}` with the Gaussian kernel mixture

.. math:: k_{ij} = \frac{w_s}{S(\theta_\gamma)} e^{-\frac{|p_i - p_j|^2}{2\theta_\gamma^2}}
    + \frac{w_b}{S(\theta_\alpha)} e^{-\frac{|p_i - p_j|^2}{2\theta_\alpha^2}
    - \frac{|I_i - I_j|^2}{2\theta_\beta^2}}

(spatial smoothness and bilateral appearance kernels, Krähenbühl & Koltun 2011; :math:`p_i` the
pixel position; :math:`S` scales each row sum to at most 1, :func:`spatial_kernel`). Mean-field inference approximates the Gibbs distribution
:math:`P(l) \propto \exp(\sum_i U_i(l_i) - \sum_{i<j}\mu(l_i,l_j)k_{ij})` by a product
:math:`Q = \prod_i Q_i` minimising the free energy (KL(Q‖P) up to :math:`\log Z`)

.. math:: \mathcal F(Q) = \sum_i\sum_l Q_i(l)\log Q_i(l) - \sum_i Q_i^\top U_i
    + \tfrac12\sum_{i\ne j} k_{ij}\,Q_i^\top\mu\,Q_j .

:class:`MeanFieldCRF` is the parallel mean-field iteration (CRF-RNN's recurrent layer):

.. math:: m_i = \sum_{j\ne i} k_{ij} Q_j^{(k-1)},\qquad
    Q^{(k)} = (1-\eta_k)\,Q^{(k-1)} + \eta_k\operatorname{softmax}\big(U - \mu\, m\big),
    \qquad Q^{(0)} = \operatorname{softmax}(U).

θo = {unary weights and bias, kernel weights :math:`w_s, w_b`, compatibility :math:`\mu`}
(CRF-RNN learns these end to end; ``tied=True`` is its parameter sharing across iterations),
θh = {:math:`\eta_k`}, the bandwidths are fixed. The dense :math:`N\times N` kernels
(:math:`N = HW`, diagonal excluded) are computed once per observation in ``init`` and carried
through the layers as auxiliary iterate fields.

**Convergence** (what is known, and what is only measured here):

* For a symmetric :math:`\mu` the fixed points (any :math:`\eta > 0`) are the stationary points
  of :math:`\mathcal F` on the product of simplices (the pairwise term's gradient is
  :math:`\mu m`); a learned non-symmetric :math:`\mu` makes the update no gradient map of
  :math:`\mathcal F`, and its fixed points need not be stationary points of it.
* *Parallel* mean field need not decrease :math:`\mathcal F` and may oscillate. Krähenbühl &
  Koltun (2013, ICML, "Parameter learning and convergent inference for dense random fields")
  prove that it converges when the kernels are positive definite and :math:`\mu` is negative
  semidefinite (a concave–convex procedure); the Potts model :math:`\mu = 1 - I` is not negative
  semidefinite, so that result does not cover the classical CRF here. Baqué et al. (2016, CVPR,
  "Principled parallel mean-field inference") prove convergence of damped (proximal-gradient)
  parallel updates for small enough steps.
* An elementary sufficient condition, used by this module's tests: the Jacobian of the softmax is
  :math:`\operatorname{diag}(q) - qq^\top`, whose spectral norm is at most
  :math:`\max_l 2q_l(1-q_l) \le 1/2` (Gershgorin), so the undamped map is Lipschitz with constant
  :math:`\tfrac12\|\mu\|_2\|K\|_2` (:func:`contraction_factor`). Below 1 it is a contraction
  (Banach: a unique fixed point, linear convergence), and every damped map with
  :math:`\eta\in(0,1]` contracts too; if moreover :math:`\|\mu\|_2\|K\|_2 < 1`, :math:`\mathcal F`
  is strictly convex (the entropy's Hessian is :math:`\ge I`), so that fixed point is its global
  minimum. For the hand-set CRF of the study the factor is larger than 1; that the iteration
  still converges there is *empirical* (``docs/crf_rnn.md``).

See ``docs/crf_rnn.md`` and ``examples/crf_rnn_study.py``.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as tF
from scipy import ndimage
from torch import Tensor, nn

from lightning_unfold.core.algorithm import Algorithm, Constraint, ParamSpec, ProblemSpec, Role
from lightning_unfold.core.iterate import aux_field, require_finite
from lightning_unfold.core.metrics import ProblemMetric, RateOf, labelled_rows

__all__ = [
    "SHIPPED_IMAGES",
    "SOURCES",
    "CRFState",
    "MeanFieldCRF",
    "MeanIoU",
    "Segmentation",
    "SegmentationBlackBoxNet",
    "bilateral_kernel",
    "contraction_factor",
    "free_energy",
    "spatial_kernel",
    "unary_features",
]

#: the data sources of :class:`Segmentation`
SOURCES: tuple[str, ...] = ("synthetic", "skimage")
#: scikit-image's shipped files used by ``source="skimage"``, per split: the masks come from
#: different images (horse silhouette / Shepp–Logan phantom), the textures from disjoint halves
#: (rows 0–255 / 256–511) of the same two texture photographs
SHIPPED_IMAGES: dict[str, dict[str, str]] = {
    "train": {"mask": "horse.png", "foreground": "brick.png", "background": "grass.png"},
    "test": {"mask": "phantom.png", "foreground": "brick.png", "background": "grass.png"},
}
_INSTALL = "pip install lightning-unfold[images]"


@functools.lru_cache(maxsize=8)
def _shipped(name: str) -> np.ndarray:
    """A file shipped inside the scikit-image wheel, as a read-only array (no fetch, no network)."""
    try:
        import skimage.data
        import skimage.io
    except ImportError as err:
        raise ImportError(
            f"Segmentation(source='skimage') reads images shipped with scikit-image; install the "
            f"extra: {_INSTALL}"
        ) from err
    path = os.path.join(skimage.data.data_dir, name)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{name} is not in scikit-image's data directory {skimage.data.data_dir}; this "
            "problem uses only images shipped inside the wheel (scikit-image >= 0.22)."
        )
    img = np.asarray(skimage.io.imread(path))
    img.setflags(write=False)
    return img


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
    r"""Seeded segmentation images with exact label maps (module docstring).

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
    def init_args(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "n_labels": self.n_labels,
            "source": self.source,
            "split": self.split,
            "snr_db": self.snr_db,
            "contrast": self.contrast,
            "loss": self.loss,
            "seed": self.seed,
        }

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


# -- kernels and the mean-field update ----------------------------------------------------------
def unary_features(x: Tensor) -> Tensor:
    """Per-pixel features ``(B, 3C, H, W)``: the intensity, its 3×3 mean and its 3×3 standard
    deviation (edges replicated)."""
    padded = tF.pad(torch.cat([x, x * x], dim=1), (1, 1, 1, 1), mode="replicate")
    moments = tF.avg_pool2d(padded, 3, stride=1)
    mean, second = moments.chunk(2, dim=1)
    std = (second - mean * mean).clamp_min(0.0).sqrt()
    return torch.cat([x, mean, std], dim=1)


def _positions(h: int, w: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=dtype, device=device),
        torch.arange(w, dtype=dtype, device=device),
        indexing="ij",
    )
    return torch.stack([yy.reshape(-1), xx.reshape(-1)], dim=1)


def _sq_dist(a: Tensor) -> Tensor:
    """Squared distances ``(..., N, N)`` between the rows of ``a`` ``(..., N, D)``, summed per
    coordinate (exact zeros on the diagonal, unlike ``cdist``'s matrix-product shortcut)."""
    out = (a[..., :, None, 0] - a[..., None, :, 0]).square()
    for d in range(1, a.shape[-1]):
        out += (a[..., :, None, d] - a[..., None, :, d]).square()
    return out


def _gaussian_mass(theta: Tensor | float) -> Tensor:
    r""":math:`S(\theta) = \sum_{d\in\mathbb Z^2\setminus 0}\exp(-|d|^2/2\theta^2)`: the row sum of
    a spatial Gaussian kernel at an interior pixel of an unbounded grid (the largest row sum)."""
    theta = torch.as_tensor(theta, dtype=torch.float64)
    half = math.ceil(8 * float(theta))
    r = torch.arange(-half, half + 1)
    one_d = torch.exp(-(r.double() ** 2) / (2.0 * theta**2)).sum()
    return one_d * one_d - 1.0


def spatial_kernel(
    h: int, w: int, theta_gamma: Tensor | float, *, dtype: torch.dtype, device: Any = None
) -> Tensor:
    r"""The dense spatial kernel :math:`\exp(-|p_i - p_j|^2/2\theta_\gamma^2)/S(\theta_\gamma)`
    ``(N, N)``, zero on the diagonal (:math:`N = hw`, row-major pixels). The scale
    :math:`S` (:func:`_gaussian_mass`) makes every row sum at most 1, so a message is a weighted
    *fraction* of the neighbourhood and the weights :math:`w_s, w_b` are in units of the unary
    logits (a mere change of units of the weights)."""
    pos = _positions(h, w, dtype, torch.device(device or "cpu"))
    theta = torch.as_tensor(theta_gamma, dtype=dtype)
    k = torch.exp(-_sq_dist(pos) / (2.0 * theta**2))
    return k.fill_diagonal_(0.0) / _gaussian_mass(theta).to(dtype)


def bilateral_kernel(x: Tensor, theta_alpha: Tensor | float, theta_beta: Tensor | float) -> Tensor:
    r"""The dense bilateral kernels ``(B, N, N)`` of images ``x`` ``(B, C, H, W)``:
    :math:`\exp(-|p_i - p_j|^2/2\theta_\alpha^2 - |I_i - I_j|^2/2\theta_\beta^2)/S(\theta_\alpha)`,
    zero diagonal (the scale as in :func:`spatial_kernel`)."""
    B, C, H, W = x.shape
    pos = _positions(H, W, x.dtype, x.device)
    alpha = torch.as_tensor(theta_alpha, dtype=x.dtype)
    d_pos = _sq_dist(pos) / (2.0 * alpha**2)
    vals = x.reshape(B, C, H * W).transpose(1, 2)
    beta = torch.as_tensor(theta_beta, dtype=x.dtype)
    k = _sq_dist(vals).div_(-2.0 * beta**2).sub_(d_pos).exp_()  # in place: B·N² entries
    k.diagonal(dim1=1, dim2=2).zero_()
    return k.div_(_gaussian_mass(alpha).to(x.dtype))


@dataclass(frozen=True)
class CRFState:
    """The mean-field iterate: marginals ``q`` ``(B, L, H, W)``. Auxiliary (observation-only,
    computed once by :meth:`MeanFieldCRF.init`): the unary ``features`` ``(B, F, H, W)``, the
    ``spatial`` kernel ``(N, N)`` and the ``bilateral`` kernels ``(B, N, N)``."""

    q: Tensor
    features: Tensor | None = aux_field()
    spatial: Tensor | None = aux_field()
    bilateral: Tensor | None = aux_field()


def _unary(feats: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return torch.einsum("lf,bfhw->blhw", weight, feats) + bias.view(1, -1, 1, 1)


def _messages(q: Tensor, spatial: Tensor, bilateral: Tensor, ws: Tensor, wb: Tensor) -> Tensor:
    r""":math:`m_i = \sum_{j\ne i}k_{ij}Q_j` ``(B, L, H, W)`` (both kernels symmetric)."""
    B, L, H, W = q.shape
    flat = q.reshape(B, L, H * W)
    m = ws * (flat @ spatial) + wb * torch.bmm(flat, bilateral)
    return m.reshape(B, L, H, W)


def _compat(mu: Tensor, m: Tensor) -> Tensor:
    return torch.einsum("lk,bkhw->blhw", mu, m)


def free_energy(
    q: Tensor, unary: Tensor, messages: Tensor, compatibility: Tensor, *, floor: float = 1e-300
) -> Tensor:
    r"""Per-image :math:`\sum Q\log Q - \sum Q U + \tfrac12\sum Q\odot\mu m` ``(B,)`` with
    ``messages`` :math:`m = \sum_{j\ne i}k_{ij}Q_j` of this very ``q``."""
    ent = (q * q.clamp_min(floor).log()).flatten(1).sum(1)
    lin = (q * unary).flatten(1).sum(1)
    pair = (q * _compat(compatibility, messages)).flatten(1).sum(1)
    return ent - lin + 0.5 * pair


def contraction_factor(s: CRFState, p: Mapping[str, Tensor]) -> Tensor:
    r"""Per image ``(B,)`` the bound :math:`\tfrac12\|\mu\|_2\|w_sK_s + w_bK_b\|_2` on the
    Lipschitz constant of the undamped mean-field map (module docstring): below 1, the
    iteration is a contraction with a unique fixed point."""
    if s.spatial is None or s.bilateral is None:
        raise ValueError("The iterate carries no kernels; build it with MeanFieldCRF.init.")
    K = p["spatial_weight"] * s.spatial + p["bilateral_weight"] * s.bilateral
    return (
        0.5
        * torch.linalg.matrix_norm(p["compatibility"], 2)
        * torch.linalg.eigvalsh(K).abs().amax(-1)
    )


def _require_segmentation(problem: ProblemSpec) -> Segmentation:
    if not isinstance(problem, Segmentation):
        raise TypeError(f"MeanFieldCRF solves Segmentation problems, got {type(problem).__name__}.")
    return problem


class MeanFieldCRF(Algorithm[CRFState]):
    r"""Parallel mean-field inference of the dense CRF (module docstring), CRF-RNN's layer:

    .. math:: Q^{(k)} = (1-\eta_k)Q^{(k-1)} + \eta_k\operatorname{softmax}\Big(U_k - \mu_k
        \sum_{j\ne i}\big(w_{s,k}k^s_{ij} + w_{b,k}k^b_{ij}\big)Q_j^{(k-1)}\Big),

    :math:`U_k = W_k\phi + b_k` the unary of the features :math:`\phi` (intensity, 3×3 mean and std).
    θo = {``unary_weight``, ``unary_bias`` (classical: LDA on training images,
    :meth:`Segmentation.unary_classifier`), ``spatial_weight``, ``bilateral_weight``,
    ``compatibility`` (classical Potts :math:`1 - I`)}; θh = {``step`` :math:`\eta`, classical
    1 = CRF-RNN's update, clamped to :math:`(0, 1]`}; fixed: the bandwidths. Step-size
    condition: :math:`0 < \eta \le 1` keeps every iterate a product of probability vectors;
    convergence is guaranteed when :func:`contraction_factor` is below 1 (module docstring),
    otherwise only observed.

    Args:
        spatial_weight, bilateral_weight: hand-set :math:`w_s, w_b \ge 0`.
        theta_gamma, theta_alpha: spatial bandwidths (pixels); theta_beta: intensity bandwidth.
        step: classical :math:`\eta \in (0, 1]`.

    The correction and inductive-bias networks are two 3×3 convolutions of :math:`[Q, I]` with
    ``hidden`` channels (the paradigm's argument).
    """

    name: ClassVar[str] = "mean_field_crf"

    def __init__(
        self,
        spatial_weight: float = 0.05,
        bilateral_weight: float = 0.1,
        theta_gamma: float = 2.0,
        theta_alpha: float = 6.0,
        theta_beta: float = 0.15,
        step: float = 1.0,
    ) -> None:
        for nm, v in (("spatial_weight", spatial_weight), ("bilateral_weight", bilateral_weight)):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{nm} must be finite and >= 0, got {v}.")
        for nm, v in (("theta_gamma", theta_gamma), ("theta_alpha", theta_alpha)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{nm} (a bandwidth in pixels) must be finite and > 0, got {v}.")
        if not (math.isfinite(theta_beta) and theta_beta > 0):
            raise ValueError(
                f"theta_beta (intensity bandwidth) must be finite and > 0, got {theta_beta}."
            )
        if not 0.0 < step <= 1.0:
            raise ValueError(
                f"step eta must lie in (0, 1]: (1 - eta) Q + eta softmax(...) is a probability "
                f"vector only there (1 = CRF-RNN's update), got {step}."
            )
        self.spatial_weight, self.bilateral_weight = float(spatial_weight), float(bilateral_weight)
        self.theta_gamma, self.theta_alpha = float(theta_gamma), float(theta_alpha)
        self.theta_beta, self.step_size = float(theta_beta), float(step)
        self._classical: dict[str, Tensor] | None = None

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("unary_weight", Role.OBJECTIVE, doc="unary weights W (L, F)"),
            ParamSpec("unary_bias", Role.OBJECTIVE, doc="unary bias b (L,)"),
            ParamSpec("spatial_weight", Role.OBJECTIVE, Constraint.NONNEGATIVE, "w_s"),
            ParamSpec("bilateral_weight", Role.OBJECTIVE, Constraint.NONNEGATIVE, "w_b"),
            ParamSpec("compatibility", Role.OBJECTIVE, doc="label compatibility mu (L, L)"),
            ParamSpec("step", Role.HYPER, Constraint.POSITIVE, "mean-field step eta in (0, 1]"),
            ParamSpec("theta_gamma", Role.FIXED, Constraint.POSITIVE, "spatial bandwidth"),
            ParamSpec("theta_alpha", Role.FIXED, Constraint.POSITIVE, "bilateral bandwidth"),
            ParamSpec("theta_beta", Role.FIXED, Constraint.POSITIVE, "intensity bandwidth"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = _require_segmentation(problem)
        W, b = prob.unary_classifier()
        f64 = torch.float64
        L = prob.n_labels

        def scalar(v: float) -> Tensor:
            return torch.tensor(v, dtype=f64)

        self._classical = {
            "unary_weight": W,
            "unary_bias": b,
            "spatial_weight": scalar(self.spatial_weight),
            "bilateral_weight": scalar(self.bilateral_weight),
            "compatibility": 1.0 - torch.eye(L, dtype=f64),
            "step": scalar(self.step_size),
            "theta_gamma": scalar(self.theta_gamma),
            "theta_alpha": scalar(self.theta_alpha),
            "theta_beta": scalar(self.theta_beta),
        }
        return {k: v.clone() for k, v in self._classical.items()}

    def _param(self, name: str, c: Mapping[str, Tensor], like: Tensor) -> Tensor:
        if name in c:
            return c[name]
        if self._classical is None:
            raise ValueError("MeanFieldCRF is not bound to a problem; call classical_params first.")
        return self._classical[name].to(like)

    def kernels(self, x: Tensor, c: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The spatial ``(N, N)`` and bilateral ``(B, N, N)`` kernels of the images ``x``."""
        _, _, H, W = x.shape
        spatial = spatial_kernel(
            H, W, self._param("theta_gamma", c, x), dtype=x.dtype, device=x.device
        )
        bilateral = bilateral_kernel(
            x, self._param("theta_alpha", c, x), self._param("theta_beta", c, x)
        )
        return spatial, bilateral

    def unary_marginals(self, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        r"""The unary classifier alone, :math:`\operatorname{softmax}(W\phi(x) + b)` ``(B, L, H, W)``."""
        return torch.softmax(_unary(unary_features(x), p["unary_weight"], p["unary_bias"]), dim=1)

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> CRFState:
        feats = unary_features(x)
        spatial, bilateral = self.kernels(x, p)
        q = torch.softmax(_unary(feats, p["unary_weight"], p["unary_bias"]), dim=1)
        return CRFState(q=q, features=feats, spatial=spatial, bilateral=bilateral)

    def _state(self, s: CRFState, x: Tensor, p: Mapping[str, Tensor]) -> CRFState:
        if s.features is None or s.spatial is None or s.bilateral is None:
            feats = unary_features(x)
            spatial, bilateral = self.kernels(x, p)
            return CRFState(q=s.q, features=feats, spatial=spatial, bilateral=bilateral)
        return s

    def logits(self, s: CRFState, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        r""":math:`U - \mu m` of the iterate ``s`` (the argument of the softmax)."""
        s = self._state(s, x, p)
        assert s.features is not None and s.spatial is not None and s.bilateral is not None
        m = _messages(s.q, s.spatial, s.bilateral, p["spatial_weight"], p["bilateral_weight"])
        return _unary(s.features, p["unary_weight"], p["unary_bias"]) - _compat(
            p["compatibility"], m
        )

    def _relax(self, s: CRFState, p: Mapping[str, Tensor], logits: Tensor) -> CRFState:
        eta = p["step"].clamp(max=1.0)
        q = (1.0 - eta) * s.q + eta * torch.softmax(logits, dim=1)
        return CRFState(q=q, features=s.features, spatial=s.spatial, bilateral=s.bilateral)

    def step(self, s: CRFState, x: Tensor, p: Mapping[str, Tensor], k: int) -> CRFState:
        s = self._state(s, x, p)
        return self._relax(s, p, self.logits(s, x, p))

    def estimate(self, s: CRFState) -> Tensor:
        return s.q

    def objective(self, s: CRFState, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        """The mean-field free energy :func:`free_energy` per image (θo from ``c``, or the
        classical values where the model learns them)."""
        q = s.q
        if s.spatial is None or s.bilateral is None:
            spatial, bilateral = self.kernels(x, c)
        else:
            spatial, bilateral = s.spatial, s.bilateral
        feats = unary_features(x) if s.features is None else s.features
        g = {n: self._param(n, c, q) for n in ("unary_weight", "unary_bias", "compatibility")}
        ws, wb = self._param("spatial_weight", c, q), self._param("bilateral_weight", c, q)
        unary = _unary(feats, g["unary_weight"], g["unary_bias"])
        m = _messages(q, spatial, bilateral, ws, wb)
        return free_energy(q, unary, m, g["compatibility"])

    # -- learned networks -------------------------------------------------------------------------
    def corrected_step(
        self, s: CRFState, x: Tensor, p: Mapping[str, Tensor], k: int, net: nn.Module
    ) -> CRFState:
        r"""Correction inside the softmax, :math:`Q^{(k)} = (1-\eta)Q + \eta\operatorname{softmax}
        (U - \mu m + \Delta(Q, I))`, so the iterate stays a probability map; Δ starts at 0."""
        s = self._state(s, x, p)
        delta = net(self.features(s, x, p)).reshape(s.q.shape)
        return self._relax(s, p, self.logits(s, x, p) + delta)

    def make_correction_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module:
        prob = _require_segmentation(problem)
        return _ConvHead(prob.n_labels + prob.channels, prob.n_labels, prob.size, hidden, zero=True)

    def make_inductive_bias_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module:
        prob = _require_segmentation(problem)
        return _ConvIteration(prob.n_labels, prob.channels, prob.size, hidden)

    def make_black_box_net(self, problem: ProblemSpec, target_params: int) -> nn.Module:
        prob = _require_segmentation(problem)
        return SegmentationBlackBoxNet(prob.channels, prob.n_labels, target_params)


class _ConvHead(nn.Module):
    """Two 3×3 convolutions of the maps ``[Q, I]`` (flat features in, flat logits out)."""

    def __init__(self, c_in: int, c_out: int, size: int, hidden: int, *, zero: bool) -> None:
        super().__init__()
        self.c_in, self.size = c_in, size
        last = nn.Conv2d(hidden, c_out, 3, padding=1)
        if zero:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.conv = nn.Sequential(nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU(), last)

    def forward(self, features: Tensor) -> Tensor:
        maps = features.reshape(features.shape[0], self.c_in, self.size, self.size)
        return self.conv(maps).flatten(1)


class _ConvIteration(nn.Module):
    r"""Inductive-bias layer: :math:`Q^{(k)} = \operatorname{softmax}(\log Q^{(k-1)} +
    \mathrm{conv}([Q^{(k-1)}, I]))` — a learned update that keeps the iterate a probability map."""

    def __init__(self, labels: int, channels: int, size: int, hidden: int) -> None:
        super().__init__()
        self.labels, self.size = labels, size
        self.head = _ConvHead(labels + channels, labels, size, hidden, zero=False)

    def forward(self, features: Tensor, flat_iterate: Tensor) -> Tensor:
        B = features.shape[0]
        q = flat_iterate.reshape(B, self.labels, self.size, self.size)
        logits = q.clamp_min(1e-12).log() + self.head(features).reshape(q.shape)
        return torch.softmax(logits, dim=1).flatten(1)


class SegmentationBlackBoxNet(nn.Module):
    r"""The black box: ``layers`` 3×3 convolutions with dilations 1, 2, 4, ... (receptive field
    :math:`2^{\text{layers}} + 1` pixels), ReLU between, softmax over labels; the width is the
    largest whose parameter count stays within ``target_params`` (at least 2)."""

    def __init__(self, channels: int, labels: int, target_params: int, *, layers: int = 4) -> None:
        super().__init__()
        if layers < 2:
            raise ValueError(f"{type(self).__name__} needs layers >= 2, got {layers}.")

        def count(w: int) -> int:
            return (9 * channels + 1) * w + (layers - 2) * (9 * w + 1) * w + (9 * w + 1) * labels

        width = 2
        while count(width + 1) <= target_params:
            width += 1
        mods: list[nn.Module] = []
        c_in = channels
        for i in range(layers):
            c_out = labels if i == layers - 1 else width
            d = 2**i if i < layers - 1 else 1
            mods.append(nn.Conv2d(c_in, c_out, 3, padding=d, dilation=d))
            if i < layers - 1:
                mods.append(nn.ReLU())
            c_in = c_out
        self.net, self.width = nn.Sequential(*mods), width

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.net(x), dim=1)
