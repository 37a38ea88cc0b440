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

from lightning_unfold.algorithms.crf.kernels import (
    bilateral_kernel,
    spatial_kernel,
    unary_features,
)
from lightning_unfold.algorithms.crf.networks import (
    SegmentationBlackBoxNet,
)
from lightning_unfold.algorithms.crf.problem import (
    SHIPPED_IMAGES,
    SOURCES,
    MeanIoU,
    Segmentation,
)
from lightning_unfold.algorithms.crf.solvers import (
    CRFState,
    MeanFieldCRF,
    contraction_factor,
    free_energy,
)

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
