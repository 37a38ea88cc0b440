r"""Blind image deblurring: alternating half-quadratic splitting, unrolled as DUBLID.

Problem (:class:`BlindDeblurring`): a sharp grey image :math:`x^\star \in [0,1]^{n\times n}`
blurred by an unknown motion kernel :math:`k^\star` on an :math:`m\times m` box (nonnegative,
summing to 1: a random smooth camera path, :func:`motion_kernel`) and noise,

.. math:: y = k^\star\circledast x^\star + w,

with :math:`\circledast` the **circular** convolution (the image is periodised, so the model is
exact in the Fourier domain). Both :math:`x^\star` and :math:`k^\star` are estimated; they are
identifiable only up to an integer shift :math:`(x(\cdot - d), k(\cdot + d))`, so the metrics
score the best shift within the kernel's half-width (:func:`aligned_psnr`,
:func:`aligned_kernel_error`).

**Classical solver** (:class:`HQSBlindDeblur`): with analysis filters :math:`f_i` (classically
the horizontal and vertical finite differences), the sparse-gradient objective
:math:`\tfrac12\|y - k\circledast x\|^2 + \sum_i\lambda_i\|f_i\circledast x\|_1` is relaxed by
half-quadratic splitting, :math:`z_i \approx f_i\circledast x` with penalty :math:`\zeta_i`
(:math:`\lambda_i = \zeta_i\theta_i`), and minimised alternately — iteration :math:`l`:

.. math::
    z_i^{(l)} &= \mathcal S_{\theta_i}\big(f_i\circledast x^{(l-1)}\big)
        \quad\text{(soft threshold, the z-step)},\\
    k^{(l)} &= \Pi_\Delta\Big(\mathrm{crop}_m\,\arg\min_k\tfrac12\sum_i
        \|f_i\circledast y - k\circledast z_i^{(l)}\|^2 + \tfrac\varepsilon2\|k\|^2\Big)
        = \Pi_\Delta\Big(\mathrm{crop}_m F^{-1}\Big[\frac{\sum_i\overline{\hat z_i}\hat f_i\hat y}
        {\sum_i|\hat z_i|^2 + \varepsilon}\Big]\Big),\\
    x^{(l)} &= \arg\min_x\tfrac12\|y - k^{(l)}\circledast x\|^2 + \sum_i\tfrac{\zeta_i}2
        \|f_i\circledast x - z_i^{(l)}\|^2 = F^{-1}\Big[\frac{\overline{\hat k}\hat y
        + \sum_i\zeta_i\overline{\hat f_i}\hat z_i}{|\hat k|^2 + \sum_i\zeta_i|\hat f_i|^2}\Big],

:math:`\Pi_\Delta` the Euclidean projection onto the simplex (:func:`project_simplex`),
:math:`x^{(0)} = y`, :math:`k^{(0)} = \delta`. Every step is closed form in the Fourier domain.
The kernel is fitted to the *thresholded* filter responses (the strong edges) in the filtered
domain, as in DUBLID and the sparse-gradient kernel estimators before it, which keeps it away
from the blur-free solution :math:`k = \delta` that the joint image-domain objective prefers
(Levin et al. 2009). Conditions: :math:`\theta_i \ge 0`, :math:`\zeta_i > 0`,
:math:`\varepsilon > 0` make every step well defined; the two data terms differ, so the
alternation descends no single objective and its convergence is observed, not proved.

**DUBLID** (Li, Tofighi, Geng, Monga & Eldar, "Efficient and interpretable deep blind image
deblurring via algorithm unrolling", IEEE Trans. Comput. Imaging 2020) is this iteration unrolled
for :math:`K` layers with the filters :math:`f_i^l`, thresholds :math:`\theta_i^l`, penalties
:math:`\zeta_i^l` and :math:`\varepsilon^l` learned per layer, end to end on an image and a kernel
loss (:meth:`BlindDeblurring.supervised_loss`): the ``objective`` paradigm of
:class:`HQSBlindDeblur`. ``hyperparameters`` learns :math:`\theta, \zeta, \varepsilon` per layer
with the classical filters; ``correction`` adds a zero-initialised convolutional correction of
the image; the black box is a residual CNN plus a kernel head (:class:`DeblurBlackBoxNet`). See
``docs/dublid.md`` and ``examples/dublid_study.py``.
"""

from __future__ import annotations

from lightning_unfold.algorithms.dublid.operators import (
    aligned_kernel_error,
    aligned_psnr,
    blur,
    centred_delta,
    embed_kernel,
    filter_responses,
    image_step,
    kernel_step,
    kernel_transfer,
    motion_kernel,
    project_simplex,
    soft,
)
from lightning_unfold.algorithms.dublid.problem import (
    DEBLUR_IMAGES,
    DEBLUR_SOURCES,
    BlindDeblurring,
    shipped_grey,
)
from lightning_unfold.algorithms.dublid.solvers import (
    DeblurBlackBoxNet,
    DeblurState,
    HQSBlindDeblur,
)

__all__ = [
    "DEBLUR_IMAGES",
    "DEBLUR_SOURCES",
    "BlindDeblurring",
    "DeblurBlackBoxNet",
    "DeblurState",
    "HQSBlindDeblur",
    "aligned_kernel_error",
    "aligned_psnr",
    "blur",
    "centred_delta",
    "embed_kernel",
    "filter_responses",
    "image_step",
    "kernel_step",
    "kernel_transfer",
    "motion_kernel",
    "project_simplex",
    "shipped_grey",
    "soft",
]
