r"""Loss formulations and supervision modes of the deep-unfolding literature.

*Supervision* gives the per-layer loss :math:`\ell_k`:

``supervised``
    :math:`\ell_k = \frac1{|\mathcal B_\ell|}\sum_{i\in\mathcal B_\ell}\|\hat s_i^{(k)} - s_i\|^2`
    (squared error per labelled sample, on the same per-sample scale as the objective).
``unsupervised``
    :math:`\ell_k = \frac1{|\mathcal B|}\sum_i \mathcal L(s_i^{(k)}; x_i)`, the solver's own objective.
``semi_supervised``
    :math:`(1-w)\,\ell_k^{\text{sup}} + w\,\ell_k^{\text{unsup}}`; rows whose target is NaN count as
    unlabelled (only in the unsupervised term).

*Formulation* combines layers (Shlezinger et al. 2025, §IV):

``end_to_end``
    :math:`\mathcal J = \ell_K`.
``multi_iteration``
    :math:`\mathcal J = \sum_{k=1}^K \alpha_k \ell_k`, default :math:`\alpha_k = \log(1+k)`.

Sequential layer-wise training (loss on :math:`s^{(k)}` of the layer being trained) is the
end-to-end loss of a truncated model; the schedule callbacks drive it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import Tensor

from lightning_unfold.core.metrics import labelled_rows

__all__ = ["FORMULATIONS", "SUPERVISIONS", "layer_weights", "supervised_layer_loss"]

SUPERVISIONS: tuple[str, ...] = ("supervised", "unsupervised", "semi_supervised")
FORMULATIONS: tuple[str, ...] = ("end_to_end", "multi_iteration")


def layer_weights(depth: int, weights: Sequence[float] | None = None) -> list[float]:
    r"""Multi-iteration weights :math:`\alpha_1..\alpha_K` (default :math:`\log(1+k)`)."""
    if weights is None:
        return [math.log(1.0 + k) for k in range(1, depth + 1)]
    w = [float(v) for v in weights]
    if len(w) != depth:
        raise ValueError(f"layer_weights has {len(w)} entries but the model has {depth} layers.")
    if any(v < 0 or not math.isfinite(v) for v in w) or sum(w) == 0:
        raise ValueError(f"layer_weights must be finite, >= 0 and not all zero, got {w}.")
    return w


def supervised_layer_loss(estimate: Tensor, target: Tensor) -> Tensor | None:
    """Mean over labelled rows (targets without NaN) of the squared error summed over entries.

    ``None`` when no row is labelled. This is :meth:`ProblemSpec.supervised_loss`'s default;
    :class:`~lightning_unfold.training.module.UnfoldedModule` calls the problem's own.
    """
    labelled = labelled_rows(target)
    if not bool(labelled.any()):
        return None
    diff = (estimate[labelled] - target[labelled]).flatten(1)
    return diff.abs().pow(2).sum(dim=1).mean()


def combine(
    per_layer: Callable[[int], Tensor], layers: Sequence[int], weights: Sequence[float]
) -> Tensor:
    """:math:`\\sum_k \\alpha_k \\ell_k` over ``layers`` (1-based) with matching ``weights``."""
    total = per_layer(layers[0]) * weights[0]
    for k, w in zip(layers[1:], weights[1:], strict=True):
        if w != 0.0:
            total = total + w * per_layer(k)
    return total
