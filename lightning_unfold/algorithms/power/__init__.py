r"""Power allocation in an interference network: WMMSE and its unfoldings (UWMMSE).

Problem (Shi et al. 2011; Chowdhury et al. 2021, "Unfolding WMMSE using graph neural networks"):
:math:`M` transmitter–receiver pairs share one band. The observation is the channel matrix
:math:`H \in \mathbb R_{\ge 0}^{M\times M}` of amplitude gains, :math:`h_{ij}` from transmitter
:math:`j` to receiver :math:`i` (the power gain is :math:`h_{ij}^2`). With transmit amplitudes
:math:`v \in [0, \sqrt{P_{\max}}]^M` (powers :math:`v_i^2`) and noise power :math:`\sigma^2`, the
sum-rate is

.. math:: R(v; H) = \sum_{i=1}^M \log_2\Big(1 + \frac{h_{ii}^2 v_i^2}
    {\sigma^2 + \sum_{j\ne i} h_{ij}^2 v_j^2}\Big)\quad\text{(bit/s/Hz)},

and the solver's objective is :math:`\mathcal L(s; H) = -R(v; H)` per sample, so
``supervision="unsupervised"`` trains on the sum-rate (as UWMMSE does).

WMMSE (Shi et al. 2011) maximises the weighted sum-rate :math:`\sum_i\alpha_i\log_2(1+\mathrm{SINR}_i)`
through the equivalent weighted-MSE problem, by block-coordinate descent on the iterate
:math:`s = (u, w, v)` (receive coefficients, MSE weights, transmit amplitudes). Iteration
:math:`k` of :class:`WMMSE`, with :math:`I_i = \sigma^2 + \sum_j h_{ij}^2 v_j^2` the power received
by receiver :math:`i` (signal included):

.. math::
    u_i &= \frac{h_{ii} v_i}{I_i} \qquad\text{(MMSE receiver for the current } v\text{)},\\
    w_i &= \frac{1}{1 - u_i h_{ii} v_i} = \frac{I_i}{I_i - h_{ii}^2 v_i^2} = 1 + \mathrm{SINR}_i,\\
    \hat v_i &= \frac{\alpha_i w_i u_i h_{ii}}{\sum_j \alpha_j w_j u_j^2 h_{ji}^2},\qquad
    v_i = \Pi_{[0,\sqrt{P_{\max}}]}\big((1-\gamma_k) v_i^{(k-1)} + \gamma_k \hat v_i\big),

all in terms of the *previous* :math:`v` (the new :math:`u` and :math:`w` first, then :math:`v`).
Classical values: :math:`\alpha = 1` (the sum-rate), :math:`\gamma_k = 1` (the exact block
minimiser; the sum-rate is then non-decreasing in :math:`k`, Shi et al. 2011, Thm. 3). The
relaxation :math:`\gamma \in (0, 1]` keeps the projected v-update a convex combination of
feasible points; :math:`\gamma > 1` (over-relaxation) is allowed but the monotonicity guarantee
only holds for :math:`\gamma = 1`. Initialisation: :math:`v^{(0)} = \sqrt{P_{\max}}` (full power),
:math:`u^{(0)}, w^{(0)}` from the two formulas above. The projection makes
:math:`0 \le v \le \sqrt{P_{\max}}` hold at every layer of every paradigm that keeps the iteration.

The estimate compared across layers is the amplitude vector :math:`v` (``(B, M)``; the powers are
:math:`v^2`). There is no ground truth: the targets of :class:`InterferenceChannel` are NaN
(unlabelled) and the problem is scored by its sum-rate alone.

Paradigms (:class:`~lightning_unfold.core.UnfoldedModel`):

``hyperparameters``
    :math:`\gamma_k` learned per layer (the step/relaxation of the v-update), K parameters.
``objective``
    per-user weights :math:`\alpha^{(k)} \in \mathbb R_{>0}^M` of the weighted sum-rate that the
    iteration ascends, learned per layer with :math:`\gamma_k` (the training loss stays the plain
    sum-rate). They are tied to the network size :math:`M`: such a model cannot run at another M
    (a clear error says so). The classical form uses one scalar :math:`\alpha = 1` for all users.
``correction`` (**UWMMSE**)
    :math:`w_i = \max(a_i\, w_{i,\text{class}} + b_i,\ \varepsilon\, a_i w_{i,\text{class}})`
    before the v-update, with :math:`a = e^{\phi_a} > 0` and :math:`\phi_a, b` from a
    permutation-equivariant graph network of :math:`(s^{(k-1)}, H)` (:class:`UWMMSECorrection`,
    zero at initialisation), weights shared across users. The floor :math:`\varepsilon`
    (``WMMSE(weight_floor=...)``, default 0.01) keeps a correction from switching every user off,
    a state with zero power and zero gradient (:meth:`WMMSE.corrected_step` says why).
``inductive_bias``
    each iteration replaced by a graph network that outputs the next :math:`(u, w, v)`
    (:class:`GraphIteration`).

and the black box :class:`PowerBlackBoxNet`, a permutation-equivariant graph network
:math:`H \mapsto v`. The graph networks share their weights across users, so a model trained at
:math:`M = 20` runs unchanged at any M. See ``docs/power_allocation.md``.
"""

from lightning_unfold.algorithms.power.iteration import WMMSEState, graph_matrix, wmmse_update
from lightning_unfold.algorithms.power.networks import (
    GraphConv,
    GraphIteration,
    PowerBlackBoxNet,
    UWMMSECorrection,
)
from lightning_unfold.algorithms.power.problem import (
    CHANNEL_MODELS,
    TOPOLOGIES,
    InterferenceChannel,
    PowerGains,
    full_power,
    geometric_topology,
    sum_rate,
    sum_rate_kkt_residual,
    user_rates,
)
from lightning_unfold.algorithms.power.solvers import WEIGHT_FLOOR, WMMSE, WMMSECorrectionHook

__all__ = [
    "CHANNEL_MODELS",
    "TOPOLOGIES",
    "WEIGHT_FLOOR",
    "WMMSE",
    "GraphConv",
    "GraphIteration",
    "InterferenceChannel",
    "PowerBlackBoxNet",
    "PowerGains",
    "UWMMSECorrection",
    "WMMSECorrectionHook",
    "WMMSEState",
    "full_power",
    "geometric_topology",
    "graph_matrix",
    "sum_rate",
    "sum_rate_kkt_residual",
    "user_rates",
    "wmmse_update",
]
