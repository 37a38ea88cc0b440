r"""Generalization of unfolded networks: measured gap, parameter count and the bound's shape.

Schnoor, Behboodi, Rauhut (2023), "Generalization Error Bounds for Iterative Recovery Algorithms
Unfolded as Neural Networks", Information and Inference 12(3): the Rademacher complexity of
K-layer unfolded ISTA-type networks with P trainable parameters, trained on :math:`|D|` samples, gives a
generalization error of order

.. math::

    \mathcal L_{test} - \mathcal L_{train} \lesssim \sqrt{\frac{P \log K}{|D|}}

(up to constants and logarithmic factors in the other problem dimensions). The experiment that
trains models across depths and plots the measured gap against this shape belongs to checks
and examples; this module computes the three ingredients.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from ._arrays import ArrayLike, to_numpy64

__all__ = ["count_parameters", "generalization_bound_shape", "generalization_gap"]


def count_parameters(module_or_tensors: nn.Module | Iterable[torch.Tensor]) -> int:
    r"""Number of trainable scalars :math:`P`, the complexity in Schnoor et al. (2023).

    .. math::

        P = \sum_{\theta \in \Theta} \#\theta ,

    counting each tensor once even if it is shared (tied layers count once).

    Args:
        module_or_tensors: an ``nn.Module`` (its parameters with ``requires_grad=True``) or an
            iterable of tensors (all counted, whatever ``requires_grad`` says).

    Returns:
        :math:`P` as an int.
    """
    if isinstance(module_or_tensors, nn.Module):
        tensors: Iterable[torch.Tensor] = (
            p for p in module_or_tensors.parameters() if p.requires_grad
        )
    elif isinstance(module_or_tensors, torch.Tensor):
        tensors = [module_or_tensors]
    else:
        tensors = module_or_tensors
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            raise TypeError(
                f"count_parameters takes an nn.Module or an iterable of tensors; got an element "
                f"of type {type(t).__name__}."
            )
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel()
    return total


def generalization_gap(
    train_loss: float | ArrayLike, test_loss: float | ArrayLike
) -> float | np.ndarray:
    r"""Empirical generalization gap of a trained model.

    .. math::

        \widehat{\mathrm{gap}} = \hat{\mathcal L}_{test} - \hat{\mathcal L}_{train}.

    Args:
        train_loss: mean loss on the training set (scalar, or an array e.g. one per depth).
        test_loss: mean loss on held-out data, same shape.

    Returns:
        A float for scalar inputs, else a float64 array. A negative gap is possible by chance
        (small test sets) and is returned as is.
    """
    tr = to_numpy64(train_loss, "train_loss")
    te = to_numpy64(test_loss, "test_loss")
    if tr.shape != te.shape:
        raise ValueError(f"train_loss {tr.shape} and test_loss {te.shape} must have one shape.")
    gap = te - tr
    return float(gap) if gap.ndim == 0 else gap


def generalization_bound_shape(P: int, K: int, n_samples: int, scale: float = 1.0) -> float:
    r"""Shape of the generalization bound of Schnoor et al. (2023).

    .. math::

        b(P, K, |D|) = \text{scale}\cdot\sqrt{\frac{P\,\log\max(K, 2)}{|D|}} .

    The bound grows like :math:`\sqrt{\log K}` in depth; for :math:`K = 1` the logarithm
    would vanish, so :math:`\log\max(K, 2)` is used (a one-layer network is not free of
    complexity). ``scale`` absorbs the constants the theorem leaves unspecified; compare
    *shapes* (how the measured gap grows with P, K, :math:`|D|`), not absolute values.

    Args:
        P: number of trainable parameters (:func:`count_parameters`), >= 1.
        K: number of layers, >= 1.
        n_samples: training set size :math:`|D|`, >= 1.
        scale: positive constant.
    """
    for name, v in (("P", P), ("K", K), ("n_samples", n_samples)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {v!r}.")
    if not scale > 0 or not math.isfinite(scale):
        raise ValueError(f"scale must be a positive finite number; got {scale!r}.")
    return float(scale * math.sqrt(P * math.log(max(K, 2)) / n_samples))
