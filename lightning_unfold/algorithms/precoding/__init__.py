r"""Wideband hybrid precoding by projected gradient ascent (PGA), complex-valued end to end.

Problem (Lavi & Shlezinger, IEEE TCOM 2023; Shlezinger et al. 2025, §V): a transmitter with
:math:`M` antennas and :math:`L` RF chains serves :math:`U` single-antenna users on :math:`B`
frequency bands. Band :math:`b` has the channel :math:`H_b \in \mathbb C^{U\times M}`; the precoder
is an analog part :math:`W_a \in \mathbb C^{M\times L}` shared by all bands (phase shifters:
unit-modulus entries :math:`|[W_a]_{ml}| = 1`) and a digital part :math:`W_{d,b} \in
\mathbb C^{L\times U}` per band. The achievable rate, in **nats** per channel use (divide by
:math:`\ln 2` for bit/s/Hz), is

.. math:: R(W_a, \{W_{d,b}\}; H) = \frac1B\sum_{b=1}^B \ln\det\big(I_U + \gamma\,
    H_b W_a W_{d,b} W_{d,b}^H W_a^H H_b^H\big),\qquad \gamma = \mathrm{SNR}/U,

maximised under the total power constraint :math:`\sum_b\|W_a W_{d,b}\|_F^2 = U B` (and
:math:`|W_a| = 1` entrywise in the ``"unit_modulus"`` setting; ``"unconstrained"`` keeps only the
power constraint, as the paper's reference code does).

Gradients (conjugate Wirtinger derivatives :math:`\partial R/\partial \bar W`, the steepest-ascent
direction up to a factor 2; ``torch.autograd`` returns :math:`2\,\partial R/\partial\bar W` for a
real function of complex tensors), with :math:`G_b = I + \gamma H_b W_a W_{d,b}W_{d,b}^H W_a^H
H_b^H`:

.. math::
    \nabla_{W_a} R &= \frac{\gamma}{B}\sum_b H_b^H G_b^{-1} H_b W_a W_{d,b} W_{d,b}^H,\\
    \nabla_{W_{d,b}} R &= \frac{\gamma}{B}\, W_a^H H_b^H G_b^{-1} H_b W_a W_{d,b}.

Iteration :math:`k` of :class:`HybridPGA` (the analog block first, then all digital blocks at the
new analog precoder):

.. math::
    \tilde W_a &= W_a + \mu_{a,k}\,\nabla_{W_a} R(W_a, W_d),\\
    W_a^+ &= \Pi(\tilde W_a),\qquad W_d \leftarrow c(W_a^+, W_d)\,W_d,\\
    W_{d,b}^+ &= c\big(W_a^+, \tilde W_d\big)\,\tilde W_{d,b},\qquad
        \tilde W_{d,b} = W_{d,b} + \mu_{d,b,k}\,\nabla_{W_{d,b}} R(W_a^+, W_d),

with :math:`c(W_a, W_d) = \sqrt{UB/\sum_b\|W_aW_{d,b}\|_F^2}` the power rescale and :math:`\Pi` the
entrywise projection :math:`z \mapsto z/|z|` onto the unit circle (:func:`unit_modulus`; ``1`` for
:math:`z = 0`) in the unit-modulus setting. In the unconstrained setting :math:`\Pi` is the identity
and the analog step is rescaled instead (:math:`W_a^+ = c(\tilde W_a, W_d)\tilde W_a`, as the
reference code). Both maps keep the iterate feasible after every half-step.

*Step-size condition.* The rate is smooth but not concave and the feasible set is not convex, so
there is no closed-form bound: for :math:`\mu` below the inverse Lipschitz constant of the gradient
on the (compact) feasible set the iteration ascends monotonically; the classical solver uses one
tuned constant :math:`\mu_{a,k} = \mu_{d,b,k} = \mu` (:func:`tune_step`). Validation only asks
:math:`\mu > 0` finite.

*Initialisation* (as in the paper): :math:`W_a^{(0)} = \Pi(V_{:,1:L})` from the SVD
:math:`\bar H = U\Sigma V^H` of the mean channel :math:`\bar H = \frac1B\sum_b H_b`; the digital
precoders either a fixed Gaussian draw (``digital_init="random"``, the reference code's choice, one
:math:`\mathcal{CN}(0, 1)` draw from ``init_seed`` shared by all channels — a complex buffer of
the model; real :math:`\mathcal N(0, 1)` for ``channel="real_gaussian"``, as the reference) or the
matched filter
:math:`W_{d,b}^{(0)} = (H_bW_a^{(0)})^H` (``"matched_filter"``), then rescaled onto the power
constraint. An all-zero effective channel falls back to the random draw so the rescale is defined.

Parameters: θh = {``mu_a`` (scalar), ``mu_d`` (one per band)} — learned per iteration by paradigm
``"hyperparameters"`` (the paper's unfolded PGA); ``step_shape="per_chain" | "per_entry"``
gives each RF chain / each entry of the iterate its own step (steps stay channel-independent
hyperparameters, classical value :math:`\mu` everywhere), and ``digital_updates = Q`` runs
:math:`Q` digital steps (each with its own learned steps) per analog step; θo = {``gain``, the :math:`\gamma` inside the
gradient (a per-layer re-weighting of the surrogate; the loss still uses the true SNR)} learned by
``"objective"``; fixed: ``wd_init``. Paradigm ``"correction"`` adds the core's zero-initialised
MLP Δ of the (real, imaginary) parts of the iterate and the channels to each PGA step (it
reproduces PGA at initialisation); ``"inductive_bias"`` replaces each step by the core's residual
MLP of the same features — generic, it keeps the iterate's meaning only through :math:`\Pi`, and
is documented as the weakest fit (``docs/hybrid_precoding.md``). Every iterate of every paradigm is mapped through the feasible
projection :meth:`HybridPGA.feasible` before its rate is computed, so every returned precoder
satisfies both constraints. See ``docs/hybrid_precoding.md``.
"""

from __future__ import annotations

from lightning_unfold.algorithms.precoding.networks import (
    HybridBlackBoxNet,
)
from lightning_unfold.algorithms.precoding.problem import (
    ANALOG_SETTINGS,
    CHANNEL_MODELS,
    HybridPrecoding,
    achievable_rate,
    pack_precoders,
    power_scale,
    rate_gradients,
    unpack_precoders,
)
from lightning_unfold.algorithms.precoding.solvers import (
    HybridPGA,
    PrecoderState,
    tune_step,
)

__all__ = [
    "ANALOG_SETTINGS",
    "CHANNEL_MODELS",
    "HybridBlackBoxNet",
    "HybridPGA",
    "HybridPrecoding",
    "PrecoderState",
    "achievable_rate",
    "pack_precoders",
    "power_scale",
    "rate_gradients",
    "tune_step",
    "unpack_precoders",
]
