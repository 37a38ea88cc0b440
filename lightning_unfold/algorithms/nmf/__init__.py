r"""Nonnegative matrix factorisation by β-divergence multiplicative updates, and deep NMF.

Problem (supervised source separation, :class:`NMFSeparation`): a nonnegative spectrogram-like
mixture :math:`V = S_1 + S_2 \in \mathbb R_{\ge0}^{F\times T}` of two sources, each built from its
own dictionary (harmonic combs and noise bands), is factorised as :math:`V \approx WH` with the
concatenated dictionary :math:`W = [W_1\ W_2] \ge 0` and activations :math:`H \ge 0`, by

.. math:: \min_{H \ge 0}\; D_\beta(V \,|\, WH) + \lambda\|H\|_1,\qquad
    d_\beta(v|u) = \begin{cases} \tfrac12 (v-u)^2 & \beta = 2 \ (\text{Euclidean})\\
    v\log\frac vu - v + u & \beta = 1 \ (\text{Kullback–Leibler})\\
    \frac{v^\beta + (\beta-1)u^\beta - \beta v u^{\beta-1}}{\beta(\beta-1)} & \text{otherwise.}
    \end{cases}

The sources are estimated by Wiener filtering, :math:`\hat S_j = \frac{W_jH_j}{WH}\odot V`, and
scored by their signal-to-distortion ratio (:func:`bss_decomposition`).

Iteration :math:`k` of :class:`NMF` (Lee & Seung 2001; Févotte & Idier 2011), :math:`\Lambda = WH`:

.. math::
    H^{(k)} &= H^{(k-1)} \odot \left(\frac{W_k^\top(V \odot \Lambda^{\beta-2})}
        {W_k^\top\Lambda^{\beta-1} + \lambda_k}\right)^{\gamma_k},\\
    W^{(k)} &= W^{(k-1)} \odot \left(\frac{(V \odot \Lambda'^{\beta-2})H^{(k)\top}}
        {\Lambda'^{\beta-1}H^{(k)\top}}\right)^{\gamma_k}\quad(\text{only with }
        \texttt{update\_dictionary}; \Lambda' = W^{(k-1)}H^{(k)}).

Step-size condition: the exponent :math:`\gamma(\beta) = 1/(2-\beta)` for :math:`\beta < 1`,
:math:`1` for :math:`1 \le \beta \le 2`, :math:`1/(\beta-1)` for :math:`\beta > 2` makes every update
the minimiser of a majoriser, so the objective never increases (Févotte & Idier 2011, Thm. 2);
the classical exponent is :math:`\gamma(\beta)`, and exponents in :math:`(0, \gamma(\beta)]` are
accepted. Multiplicative updates of positive factors by positive ratios keep :math:`H, W \ge 0`.

Paradigms: ``hyperparameters`` learns :math:`\gamma_k, \lambda_k`; ``objective`` learns an untied
nonnegative dictionary :math:`W_k` per layer — **deep NMF** (Le Roux, Hershey & Weninger 2015);
``correction`` multiplies the update by :math:`\exp(\Delta_k)` (:class:`NMFCorrectionNet`);
``inductive_bias`` replaces the ratio by a small network of it (:class:`NMFNetIteration`). Every
one keeps the factors nonnegative: constraints are projections onto :math:`\mathbb R_{\ge0}` and
all learned changes are multiplicative.
"""

from __future__ import annotations

from lightning_unfold.algorithms.nmf.networks import (
    NMFBlackBoxNet,
    NMFCorrectionNet,
    NMFNetIteration,
)
from lightning_unfold.algorithms.nmf.operators import beta_divergence, mu_exponent
from lightning_unfold.algorithms.nmf.problem import NMFSeparation, bss_decomposition
from lightning_unfold.algorithms.nmf.solvers import NMF, NMFState

__all__ = [
    "NMF",
    "NMFBlackBoxNet",
    "NMFCorrectionNet",
    "NMFNetIteration",
    "NMFSeparation",
    "NMFState",
    "beta_divergence",
    "bss_decomposition",
    "mu_exponent",
]
