r"""Compressive imaging from undersampled Fourier data: ADMM-TV and ADMM-CSNet.

Problem (:class:`CompressiveImaging`; the MRI-like setting of Yang, Sun, Li & Xu 2018): a real
image :math:`x^\star \in \mathbb R^{n\times n}` (a synthetic piecewise-smooth phantom, or a real
photograph or MR/CT slice shipped inside an installed wheel —
:mod:`~lightning_unfold.core.shipped`; values in :math:`[0, 1]`) is observed through a fixed binary sampling mask :math:`M` of its orthonormal 2-D
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

from lightning_unfold.algorithms.imaging.networks import ImagingBlackBoxNet, ImagingCorrectionNet
from lightning_unfold.algorithms.imaging.operators import (
    FILTER_BANKS,
    PLF_POINTS,
    filter_transfer,
    finite_difference_filters,
    piecewise_linear,
    soft_threshold_values,
    tv_objective,
)
from lightning_unfold.algorithms.imaging.operators import (
    PLF_LO as PLF_LO,
)
from lightning_unfold.algorithms.imaging.operators import (
    PLF_STEP as PLF_STEP,
)
from lightning_unfold.algorithms.imaging.problem import (
    IMAGING_MASKS,
    CompressiveImaging,
    psnr,
    sampling_mask,
    ssim,
)
from lightning_unfold.algorithms.imaging.solvers import ADMMTV, ImagingADMMState
from lightning_unfold.core.shipped import (
    SHIPPED_IMAGES,
    ShippedImage,
    load_shipped,
    parse_image_set,
    shipped_batch,
)

__all__ = [
    "ADMMTV",
    "FILTER_BANKS",
    "IMAGING_MASKS",
    "PLF_POINTS",
    "SHIPPED_IMAGES",
    "CompressiveImaging",
    "ImagingADMMState",
    "ImagingBlackBoxNet",
    "ImagingCorrectionNet",
    "ShippedImage",
    "filter_transfer",
    "finite_difference_filters",
    "load_shipped",
    "parse_image_set",
    "piecewise_linear",
    "psnr",
    "sampling_mask",
    "shipped_batch",
    "soft_threshold_values",
    "ssim",
    "tv_objective",
]
