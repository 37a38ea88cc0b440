"""The speed benchmark suite: ``python -m benchmarks`` (see :mod:`benchmarks.__main__`).

Every figure is a *ratio of two timings measured side by side in one run* (round-robin, medians),
so that the load of a shared machine affects both sides alike:

* ``layer``: one unfolded layer, forward and forward + backward, against the floor of
  ``torch.matmul`` on the layer's own matrix products (same shapes, dtype and device);
* ``step``: one training step of :class:`~lightning_unfold.UnfoldedModule` under Lightning
  against a hand-written PyTorch loop (same model, data, loss and optimizer), with a breakdown;
* ``inference``: the (briefly trained) unfolded model against the classical solver run until it
  reaches the same accuracy, and against a per-instance convex solver (CVXPY) where there is one;
* ``ddp``: 2-process ``ddp_spawn`` training throughput on CPU against a single process.

A problem family takes part by registering a :class:`Family` (see :mod:`benchmarks.families`
for sparse recovery and RPCA)::

    from benchmarks import Family, register

    register(Family(name="power", sizes={...}, make_problem=..., module_kwargs=..., ...))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

__all__ = ["REGISTRY", "Family", "LayerCase", "ReferenceSolver", "register"]


@dataclass(frozen=True)
class LayerCase:
    """One unfolded layer and its matmul floor, on prepared inputs.

    ``layer()`` runs the layer as the model does (parameters, constraints, the iteration);
    ``floor()`` runs only the layer's matrix products with ``torch.matmul``, returning their
    outputs. ``flops`` counts the forward multiply-adds ×2 of those products. Both return the
    tensors that forward + backward differentiates (against fixed random cotangents); the
    leaves that need gradients are ``layer_leaves`` / ``floor_leaves``.
    """

    layer: Callable[[], Sequence[Tensor]]
    floor: Callable[[], Sequence[Tensor]]
    flops: float
    layer_leaves: Sequence[Tensor]
    floor_leaves: Sequence[Tensor]
    shapes: str


@dataclass(frozen=True)
class ReferenceSolver:
    """A per-instance solver (e.g. CVXPY) for the inference comparison.

    ``solve(x, problem)`` takes a float64 array of ``n`` observations and returns the estimates
    (same layout as the model's); timed per instance.
    """

    name: str
    solve: Callable[[np.ndarray, Any], np.ndarray]
    instances: int = 2


@dataclass(frozen=True)
class Family:
    """A problem family's benchmark entry.

    Args:
        name: short name (``"sparse"``); the key in the tables.
        sizes: per preset (``"tiny"``, ``"cpu"``) a mapping of sizes that the callables below read
            (must include ``batch`` and ``depth``).
        make_problem: sizes → the :class:`~lightning_unfold.core.algorithm.ProblemSpec`.
        module_kwargs: sizes → :class:`~lightning_unfold.UnfoldedModule` arguments for the
            step, inference and DDP benchmarks (paradigm, variant, depth, lr).
        layer_case: (problem, sizes) → the :class:`LayerCase` of one layer.
        classical: registered algorithm names the trained model is compared with at equal
            accuracy.
        metric: ``(estimate, target) -> dB`` pooled error (lower is better), and its name.
        reference: optional per-instance solver.
    """

    name: str
    sizes: Mapping[str, Mapping[str, Any]]
    make_problem: Callable[[Mapping[str, Any]], Any]
    module_kwargs: Callable[[Mapping[str, Any]], dict[str, Any]]
    layer_case: Callable[[Any, Mapping[str, Any]], LayerCase]
    classical: Sequence[str]
    metric: Callable[[Tensor, Tensor], float]
    metric_name: str = "NMSE (dB)"
    reference: ReferenceSolver | None = None
    notes: Sequence[str] = field(default_factory=tuple)


#: every registered family, by name (filled by :mod:`benchmarks.families` and by extensions)
REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add ``family`` to :data:`REGISTRY` (its sizes must cover batch and depth)."""
    if family.name in REGISTRY:
        raise ValueError(f"A benchmark family named {family.name!r} is already registered.")
    for preset, sizes in family.sizes.items():
        missing = {"batch", "depth"} - set(sizes)
        if missing:
            raise ValueError(f"Family {family.name!r}, preset {preset!r}: sizes lack {missing}.")
    REGISTRY[family.name] = family
    return family
