r"""Warm start: begin training a model where another trained model ended.

A study that trains richer paradigms after a learned-hyperparameter model (RPCA's variants 2–4
extend variant 1) starts them from its trained per-layer hyperparameters :math:`\theta_{h,k}`
instead of the classical ones: at one learning rate, a rate small enough for the networks barely
moves step sizes and thresholds within the budget.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lightning_unfold.core.unfolded import UnfoldedModel

__all__ = ["warm_start"]


@torch.no_grad()
def warm_start(
    model: nn.Module, source: nn.Module, names: Sequence[str] | None = None
) -> list[str]:
    r"""Copy ``source``'s per-layer learned parameters into ``model``, layer by layer, in place;
    return the names copied.

    Both are :class:`~lightning_unfold.core.unfolded.UnfoldedModel`\ s (or :class:`~lightning_unfold.training.UnfoldedModule`\ s holding them). Layer k of ``model``
    receives ``source.layer_params(k)`` — the values layer k *uses*, constraints applied — for
    layers 1..min(K, K_source); a tied target receives layer 1's.

    - A target whose parameters are per-layer tensors (hyperparameters, objective, correction
      paradigms) gets the ``names`` it shares with the source's learned parameters (default:
      all shared ones; e.g. ISTA's learned thresholds into LISTA's).
    - A target of the inductive-bias paradigm gets them through its layer networks: each
      network that carries classical hyperparameters defines
      ``warm_start_(params, k, algorithm)`` (e.g.
      :class:`~lightning_unfold.algorithms.rpca.RPCAConvIteration`, whose threshold absorbs
      the algorithm's schedule); a network without it is an error.
    """
    model = getattr(model, "model", model)
    source = getattr(source, "model", source)
    for role, m in (("model", model), ("source", source)):
        if not isinstance(m, UnfoldedModel):
            raise TypeError(f"warm_start needs unfolded models; {role} is {type(m).__name__}.")
    layers = range(1, min(model.depth, source.depth) + 1)
    if model.paradigm == "inductive_bias":
        nets = model.nets
        assert nets is not None
        for k in layers:
            net = nets[0 if len(nets) == 1 else k - 1]
            hook = getattr(net, "warm_start_", None)
            if hook is None:
                raise TypeError(
                    f"{type(net).__name__} defines no warm_start_(params, k, algorithm); an "
                    "inductive-bias layer must say which of its parameters are the classical ones."
                )
            hook(source.layer_params(k), k, source.algorithm)
        return list(names or source.learned.keys())
    shared = [n for n in source.learned if n in model.learned]
    chosen = list(names) if names is not None else shared
    missing = [n for n in chosen if n not in shared]
    if missing or not chosen:
        raise ValueError(
            f"warm_start cannot copy {missing or chosen}: the learned parameters the two models "
            f"share are {shared}."
        )
    for k in layers:
        src = source.layer_params(k)
        for name in chosen:
            model.learned[name][0 if model.tied else k - 1].copy_(src[name])  # type: ignore[index]
        if model.tied:
            break
    return chosen
