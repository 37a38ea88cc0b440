r"""CORONA: convolutional robust PCA for ultrasound clutter suppression (Solomon et al. 2019).

Problem (:class:`UltrasoundClutter`): a complex-valued beamformed ultrasound sequence of
:math:`T` frames of an :math:`n_x\times n_z` image, stored as the Casorati matrix
:math:`D \in \mathbb C^{P\times T}` (one column per frame, :math:`P = n_xn_z` pixels), is

.. math:: D = H_1 L + H_2 S + N,

with the *tissue* :math:`L` low rank (a few strong, slowly varying scatterer patterns), the
*blood* :math:`S` row-sparse (weak scatterers moving along a vessel: only vessel pixels are ever
non-zero) and complex noise :math:`N`. :math:`H_1 = H_2 = H` is the identity or a circular 2-D
blur of every frame (a point-spread function). The solvers minimise, per sample,

.. math:: \mathcal L(L, S; D) = \tfrac12\|D - H_1L - H_2S\|_F^2 + \lambda\|L\|_*
    + \mu\|S\|_{1,2},\qquad \|S\|_{1,2} = \textstyle\sum_i \|S_{i,:}\|_2,

(the mixed norm sums the :math:`\ell_2` norms of the pixels' time series, as in CORONA;
``penalty="l1"`` uses the entrywise :math:`\|S\|_1 = \sum_{it}|S_{it}|` instead), with
:math:`\lambda = \texttt{lam}\cdot\rho`, :math:`\mu = \texttt{mu}\cdot\rho`,
:math:`\rho = \operatorname{rms}(D) = \|D\|_F/\sqrt{PT}` (scale-equivariant, as ``rpca.py``).

**ISTA for RPCA** (:class:`ISTARPCA`, the iteration CORONA unfolds): a proximal gradient step on
the joint smooth term, with residual :math:`R = H_1L^{(k-1)} + H_2S^{(k-1)} - D`,

.. math::
    L^{(k)} &= \operatorname{SVT}_{\tau_L\rho}\big(L^{(k-1)} - \eta\,H_1^{\mathsf H}R\big),\\
    S^{(k)} &= \operatorname{prox}_{\tau_S\rho}\big(S^{(k-1)} - \eta\,H_2^{\mathsf H}R\big),

classically :math:`\tau_L = \eta\,\texttt{lam}`, :math:`\tau_S = \eta\,\texttt{mu}`,
:math:`L^{(0)} = S^{(0)} = 0`. :math:`\operatorname{SVT}_\tau(X) = U\max(\Sigma - \tau, 0)V^{\mathsf H}`
(complex SVD) is the prox of :math:`\tau\|\cdot\|_*`; the prox of :math:`\tau\|\cdot\|_{1,2}` shrinks
every row, :math:`s_i \mapsto s_i\max(0, 1 - \tau/\|s_i\|_2)`, and that of :math:`\tau\|\cdot\|_1`
every entry, :math:`z \mapsto z\max(0, 1 - \tau/|z|)` (modulus shrunk, phase kept).
**Step-size condition**: the gradient of the smooth term is Lipschitz with constant
:math:`L_f = \|[H_1\ H_2]\|_2^2 = \lambda_{\max}(H_1H_1^{\mathsf H} + H_2H_2^{\mathsf H})`
(:math:`L_f = 2` for :math:`H = I`); :math:`0 < \eta \le 1/L_f` gives monotone descent and the
:math:`O(1/k)` rate (Beck & Teboulle 2009), the classical step is :math:`\eta = 1/L_f`.
:class:`FISTARPCA` adds Nesterov momentum on :math:`(L, S)` (:math:`O(1/k^2)`, same step bound).

Written as CORONA writes it, one ISTA step is

.. math::
    L^{(k)} &= \operatorname{SVT}_{\tau_L\rho}\big(P_5 * L^{(k-1)} + P_3 * S^{(k-1)} + P_1 * D\big),\\
    S^{(k)} &= \operatorname{prox}_{\tau_S\rho}\big(P_6 * S^{(k-1)} + P_4 * L^{(k-1)} + P_2 * D\big),

with :math:`P_1 = \eta H_1^{\mathsf H}`, :math:`P_2 = \eta H_2^{\mathsf H}`,
:math:`P_3 = -\eta H_1^{\mathsf H}H_2`, :math:`P_4 = -\eta H_2^{\mathsf H}H_1`,
:math:`P_5 = I - \eta H_1^{\mathsf H}H_1`, :math:`P_6 = I - \eta H_2^{\mathsf H}H_2`. For a circular
blur these operators are circular convolutions of every frame, so **CORONA** (:class:`CORONA`)
replaces them by six learned small convolutions per layer, :math:`P_j^k`, over the
:math:`(x, z, t)` axes of the reshaped :math:`n_x\times n_z\times T` sequence (circular in space,
zero-padded in time; ``time_kernel=1`` gives purely spatial 2-D kernels), together with
learned per-layer thresholds :math:`\tau_L^k, \tau_S^k`. The weights are *complex*: the
classical operators are complex-linear (a phase rotation of the echoes commutes with them), and
complex kernels with SVT and modulus shrinkage keep the whole network phase-equivariant,
:math:`D \mapsto e^{i\varphi}D \Rightarrow (L, S) \mapsto e^{i\varphi}(L, S)`, which real
:math:`(\mathrm{re}, \mathrm{im})`-channel kernels would not (tested). Initialised with the
classical kernels (a scaled delta for :math:`H = I`, the exact autocorrelation kernels of the PSF
otherwise), CORONA reproduces ISTA exactly (tested in complex128 to 1e-8).

Paradigms of :class:`ISTARPCA`: ``hyperparameters`` learns :math:`\eta_k, \tau_L^k, \tau_S^k`;
``objective`` learns the operators :math:`H_1^k, H_2^k` (dense, ``variant="direct"``) or, with
``variant="corona"``, is CORONA; ``correction`` and ``inductive_bias`` use the core's default
networks. See ``docs/corona.md``.
"""

from __future__ import annotations

from lightning_unfold.algorithms.corona.networks import (
    CORONA,
    corona_kernels,
)
from lightning_unfold.algorithms.corona.operators import (
    PENALTIES,
    blur,
    blur_adjoint,
    complex_soft_threshold,
    gaussian_psf,
    lipschitz_constant,
    low_rank_sparse_objective,
    row_soft_threshold,
    singular_value_threshold,
)
from lightning_unfold.algorithms.corona.operators import (
    _psf_matrix as _psf_matrix,
)
from lightning_unfold.algorithms.corona.problem import (
    UltrasoundClutter,
)
from lightning_unfold.algorithms.corona.solvers import (
    FISTARPCA,
    ISTARPCA,
    FISTARPCAState,
    LowRankSparseState,
)

__all__ = [
    "CORONA",
    "FISTARPCA",
    "ISTARPCA",
    "PENALTIES",
    "FISTARPCAState",
    "LowRankSparseState",
    "UltrasoundClutter",
    "blur",
    "blur_adjoint",
    "complex_soft_threshold",
    "corona_kernels",
    "gaussian_psf",
    "lipschitz_constant",
    "low_rank_sparse_objective",
    "row_soft_threshold",
    "singular_value_threshold",
]
