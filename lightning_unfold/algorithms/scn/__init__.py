r"""Single-image super-resolution by sparse coding, unrolled as SCN (Wang et al. 2015).

Problem (:class:`SuperResolution`): recover the luminance :math:`X` ``(B, 1, H, W)`` of an image
from its bicubic-interpolated low-resolution version :math:`x = \uparrow_s\!\downarrow_s X`
(antialiased bicubic downsampling by :math:`s = 2`, bicubic upsampling back, :func:`degrade`).
Training crops and whole test images come from disjoint photographs shipped inside the
scikit-image wheel (:data:`SHIPPED_IMAGES`), or from seeded synthetic images.

Classical solver (:class:`SparseCodingSR`, Yang et al. 2010 in the form of Zeyde et al. 2010):
every :math:`p\times p` patch :math:`i` of :math:`x` (stride 1) gives a feature
:math:`y_i = E P_i x` (the patch minus its mean), coded by the LASSO

.. math:: \alpha_i^\star = \arg\min_\alpha \tfrac12\|y_i - D_l\alpha\|^2 + \lambda\|\alpha\|_1

with ISTA, :math:`\alpha^{(k)} = \operatorname{soft}_{\mu\lambda}(\alpha^{(k-1)} +
\mu D_l^\top(y - D_l\alpha^{(k-1)}))`, :math:`0 < \mu < 2/\|D_l\|_2^2`; the estimate adds the
high-resolution residual patches :math:`D_h\alpha_i`, averaged where they overlap. The
dictionary pair is fitted on training patches (:mod:`~lightning_unfold.algorithms.scn.dictionary`:
MOD for :math:`D_l`, least squares from the converged codes for :math:`D_h`).

Unfolded (:class:`SCN`, the ``objective`` paradigm): the same pipeline with :math:`K` LISTA
layers :math:`\alpha^{(k)} = \operatorname{soft}_{\theta}(W E*x + S\alpha^{(k-1)})`, the
extractor :math:`E`, :math:`W`, :math:`S`, the per-atom thresholds :math:`\theta` and
:math:`D_h` learned end to end; classically initialised it *is* :math:`K` ISTA iterations.

See ``docs/scn.md`` and ``examples/scn_study.py``.
"""

from __future__ import annotations

from lightning_unfold.algorithms.scn.dictionary import (
    fit_dictionary_pair,
    lasso_codes,
)
from lightning_unfold.algorithms.scn.images import (
    SHIPPED_IMAGES,
    degrade,
    psnr,
    shipped_luminance,
    ssim,
    synthetic_image,
)
from lightning_unfold.algorithms.scn.networks import SRBlackBoxNet
from lightning_unfold.algorithms.scn.problem import (
    SOURCES,
    SuperResolution,
    mean_removal_filters,
)
from lightning_unfold.algorithms.scn.solvers import (
    SCN,
    SparseCodingSR,
    SRState,
    features,
    reconstruct,
)

__all__ = [
    "SCN",
    "SHIPPED_IMAGES",
    "SOURCES",
    "SRBlackBoxNet",
    "SRState",
    "SparseCodingSR",
    "SuperResolution",
    "degrade",
    "features",
    "fit_dictionary_pair",
    "lasso_codes",
    "mean_removal_filters",
    "psnr",
    "reconstruct",
    "shipped_luminance",
    "ssim",
    "synthetic_image",
]
