r"""Multiuser MIMO detection: soft interference cancellation, DeepSIC, DetNet and the classical floor.

Problem: :math:`U` users each send one symbol of a constellation :math:`\mathcal C = \{c_1..c_M\}`
(unit average power) to :math:`N` receive antennas,

.. math:: y = H s + w,\qquad w \sim \mathcal N(0, \sigma^2 I)\ \text{(BPSK)},\
    \mathcal{CN}(0, \sigma^2 I)\ \text{(complex constellations)},\qquad \mathrm{SNR} = 1/\sigma^2 .

Complex systems are handled in their real-equivalent form: user :math:`u`'s symbol is the real
vector :math:`(\Re s_u, \Im s_u)` and its channel the :math:`2N\times 2` block
:math:`\begin{psmallmatrix}\Re h_u & -\Im h_u\\ \Im h_u & \Re h_u\end{psmallmatrix}`; BPSK stays
real (one real coordinate per user). With :math:`d` real coordinates per symbol (1 or 2) the
receiver sees :math:`N_r = dN` real observations and each real noise component has variance
:math:`\sigma_r^2 = \sigma^2/d`.

The observation handed to every detector is one real row per channel use (see
:meth:`MIMODetection.split`): the received vector, the channel *the detector is given* (under CSI
uncertainty not the one that generated the data) and the noise variance,
:math:`x = [y;\ \operatorname{vec}(\hat H);\ \sigma_r^2]`. Targets are symbol indices ``(B, U)``
(``-1`` = unlabelled); every detector's estimate is a tensor of per-user probability vectors
``(B, U, M)`` (hard detectors give one-hot vectors), scored by the bit error rate (Gray labels,
primary) and the symbol error rate of the per-user argmax.

Detectors:

* :class:`SoftIC` — iterative soft interference cancellation (the model-based algorithm DeepSIC
  unfolds; Choi et al. 2000, Shlezinger, Fu & Eldar 2021). Iterate: per-user posteriors
  :math:`p_u^{(k)} \in \Delta^{M-1}`, :math:`p^{(0)}` uniform. With the posterior means
  :math:`m_j` and covariances :math:`C_j` of the symbols,

  .. math::
      z_u &= y - \textstyle\sum_{j\ne u} H_j m_j,\qquad
      \Sigma_u = \sigma_r^2 I + \nu_k \textstyle\sum_{j\ne u} H_j C_j H_j^\top,\\
      \tilde p_u(c) &\propto \exp\!\big(-\tfrac12 (z_u - H_u c)^\top\Sigma_u^{-1}(z_u - H_u c)\big),
      \qquad p_u^{(k)} = (1-\gamma_k)\,\tilde p_u + \gamma_k\, p_u^{(k-1)},

  the residual interference treated as Gaussian. θh = {damping :math:`\gamma_k \in [0, 1)`,
  interference-variance scale :math:`\nu_k > 0`}, classical :math:`\gamma = 0, \nu = 1` (the plain
  iteration). There is no step size: the iteration is a fixed-point map on a product of simplices;
  damping :math:`\gamma_k < 1` keeps every iterate a probability vector.
* DeepSIC (paradigm ``"inductive_bias"`` of :class:`SoftIC`): the per-user update replaced by a
  classifier :class:`DeepSICLayer` of :math:`[y;\ \text{the other users' probabilities}]`.
* :func:`zero_forcing`, :func:`lmmse`, :func:`maximum_likelihood` — one-shot classical detectors
  (ML by enumerating all :math:`M^U` hypotheses: the floor).
* :class:`ProjectedGradientDetector` — the box-constrained projected gradient iteration DetNet
  unfolds, :math:`\hat s_k = \Pi_{[-1,1]^U}(\hat s_{k-1} - \delta_{1}H^\top y + \delta_{2}H^\top H\hat s_{k-1})`
  (classical :math:`\delta_1 = \delta_2 = -\mu`, :math:`0 < \mu < 2/\lambda_{\max}(H^\top H)`);
  its ``"inductive_bias"`` paradigm is DetNet (:class:`DetNetLayer`; Samuel, Diskin & Wiesel 2019).

See ``docs/detection.md`` and ``examples/mimo_detection_study.py``.
"""

from __future__ import annotations

from lightning_unfold.algorithms.detection.baselines import (
    lmmse,
    maximum_likelihood,
    one_hot_nearest,
    zero_forcing,
)
from lightning_unfold.algorithms.detection.constellation import (
    CONSTELLATIONS,
    Constellation,
    check_probabilities,
    constellation,
)
from lightning_unfold.algorithms.detection.networks import (
    DeepSICLayer,
    DetectionBlackBoxNet,
    DetNetLayer,
)
from lightning_unfold.algorithms.detection.problem import (
    CHANNELS,
    MIMODetection,
    toeplitz_correlation,
)
from lightning_unfold.algorithms.detection.solvers import (
    DetNetState,
    ProjectedGradientDetector,
    SoftIC,
)

# private helpers some tests import from the family's old module path
from lightning_unfold.algorithms.detection.solvers import _moments as _moments
from lightning_unfold.algorithms.detection.solvers import _user_blocks as _user_blocks

__all__ = [
    "CHANNELS",
    "CONSTELLATIONS",
    "Constellation",
    "DeepSICLayer",
    "DetNetLayer",
    "DetNetState",
    "DetectionBlackBoxNet",
    "MIMODetection",
    "ProjectedGradientDetector",
    "SoftIC",
    "check_probabilities",
    "constellation",
    "lmmse",
    "maximum_likelihood",
    "one_hot_nearest",
    "toeplitz_correlation",
    "zero_forcing",
]
