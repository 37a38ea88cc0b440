r"""Held-out evaluation of any model per layer, and tuning a classical solver over a grid.

- :func:`layer_metrics` — every metric of a problem at every layer :math:`0..K` of any model: the
  classical solver, an unfolded model of any paradigm, the black box (one output, drawn flat
  from layer 1 on), or any callable ``x ↦ Trajectory``; pooled over the whole set exactly as
  validation pools batches (:class:`~lightning_unfold.training.metrics.LayerwiseMetric`).
- :func:`tune_classical` — a classical solver's hyperparameters (or the problem's objective
  weights) over a grid, scored on held-out data by the problem's primary metric after K
  iterations: the hand-tuning every study's classical baseline gets.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lightning_unfold.core.algorithm import Algorithm, ProblemSpec
from lightning_unfold.core.metrics import ProblemMetric, labelled_rows, primary_metric
from lightning_unfold.core.trajectory import Trajectory
from lightning_unfold.core.unfolded import UnfoldedModel

__all__ = ["TuneResult", "layer_metrics", "tune_classical"]


def _select(problem: ProblemSpec, metrics: Sequence[str] | None) -> list[ProblemMetric]:
    declared = list(problem.metrics())
    if metrics is None:
        return declared
    by_name = {m.name: m for m in declared}
    unknown = [n for n in metrics if n not in by_name]
    if unknown:
        raise ValueError(
            f"{type(problem).__name__} has no metric {unknown}; its metrics are {list(by_name)}."
        )
    return [by_name[n] for n in metrics]


def _estimates(model: Callable[..., Any], x: Tensor, depth: int | None) -> list[Tensor]:
    """Estimates at layers 0..K of one chunk; an :class:`UnfoldedModel` is stepped layer by
    layer (the same arithmetic as its forward pass, without keeping the iterates)."""
    if isinstance(model, UnfoldedModel):
        d = model.check_depth(depth)
        model.problem.validate_observation(x)
        alg = model.algorithm
        s = alg.init(x, model.layer_params(1))
        out = [alg.estimate(s)]
        for k in range(1, d + 1):
            s = model.layer(s, x, k)
            out.append(alg.estimate(s))
        return out
    traj = model(x) if depth is None or not hasattr(model, "depth") else model(x, depth=depth)
    if not isinstance(traj, Trajectory):
        raise TypeError(
            f"layer_metrics needs a model returning a Trajectory, got {type(traj).__name__}."
        )
    return list(traj.estimates)


@torch.no_grad()
def layer_metrics(
    model: Callable[..., Any],
    problem: ProblemSpec,
    x: Tensor,
    target: Tensor,
    *,
    depth: int | None = None,
    metrics: Sequence[str] | None = None,
    batch_size: int | None = None,
) -> dict[str, list[float]]:
    r"""The problem's metrics at every layer of ``model`` on the held-out set ``(x, target)``:
    ``{metric name: [value at layer 0, 1, …, K]}``.

    Args:
        model: an :class:`~lightning_unfold.core.unfolded.UnfoldedModel` (the classical solver
            and the four paradigms; stepped layer by layer, so a classical run of thousands of
            iterations needs the memory of one iterate only), a black box, or any module or
            callable ``x ↦ Trajectory``.
        depth: layers to report, K. Default: the model's own depth. A model whose trajectory is
            shorter (the black box has one output) has its final estimate repeated up to
            ``depth`` — its curve is flat from layer 1 on, layer 0 is its trajectory's start.
            A tied unfolded model or the classical solver runs ``depth`` layers.
        metrics: names of the metrics to compute (default: all the problem declares).
        batch_size: evaluate in chunks of this many samples; the metrics' sufficient statistics
            are summed over chunks, so the figures are the whole set's (to rounding).

    Rows of ``target`` that are unlabelled (NaN, see
    :func:`~lightning_unfold.core.metrics.labelled_rows`) do not count for metrics that need a
    target, as in validation. The model is put in eval mode for the call and restored after.
    """
    specs = _select(problem, metrics)
    if x.shape[0] != target.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but target has {target.shape[0]}.")
    n = x.shape[0]
    size = n if batch_size is None else int(batch_size)
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    try:
        stats: list[list[Tensor]] | None = None
        for start in range(0, max(n, 1), size):
            xc, tc = x[start : start + size], target[start : start + size]
            est = _estimates(model, xc, depth)
            if depth is not None and len(est) < depth + 1:  # one output: repeat it per layer
                est = est + est[-1:] * (depth + 1 - len(est))
            mask = labelled_rows(tc)
            labelled = bool(mask.any())
            chunk: list[list[Tensor]] = []
            for m in specs:
                if not m.needs_target:
                    chunk.append([m.statistics(e, tc, xc) for e in est])
                elif labelled:
                    chunk.append([m.statistics(e[mask], tc[mask], xc[mask]) for e in est])
                else:
                    chunk.append([torch.zeros(m.n_stats, dtype=torch.float64) for _ in est])
            if stats is None:
                stats = chunk
            else:
                stats = [
                    [a + b.to(a.device) for a, b in zip(old, new, strict=True)]
                    for old, new in zip(stats, chunk, strict=True)
                ]
    finally:
        if was_training:
            model.train()  # type: ignore[union-attr]
    assert stats is not None
    return {
        m.name: [float(m.finalize(s)) for s in per] for m, per in zip(specs, stats, strict=True)
    }


@dataclass
class TuneResult:
    """The outcome of :func:`tune_classical`.

    Attributes:
        best: the winning grid point, ``{argument: value}``.
        score: its primary metric at layer ``depth``.
        metric: the metric's name. scores: ``[(grid point, score)]`` in grid order (non-finite
            scores kept as they came, ranked last). curves: the per-layer curve of every grid
            point (layers 0..``curve_to``), in the same order.
    """

    best: dict[str, Any]
    score: float
    metric: str
    scores: list[tuple[dict[str, Any], float]] = field(default_factory=list)
    curves: list[list[float]] = field(default_factory=list)


def _cast(t: Tensor, dtype: torch.dtype | None) -> Tensor:
    if dtype is None or not (t.is_floating_point() or t.is_complex()):
        return t
    if t.is_complex():
        return t.to(torch.complex128 if dtype == torch.float64 else torch.complex64)
    return t.to(dtype)


def tune_classical(
    problem: ProblemSpec,
    algorithm: str | Callable[..., Algorithm[Any]],
    grid: Mapping[str, Sequence[Any]],
    x: Tensor,
    target: Tensor,
    depth: int,
    *,
    options: Mapping[str, Any] | None = None,
    metric: str | None = None,
    curve_to: int | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> TuneResult:
    r"""The grid point of a classical solver with the best ``metric`` after ``depth`` iterations
    on the held-out set ``(x, target)``.

    Each grid key is a constructor argument of the algorithm (its hyperparameters: a step size,
    a penalty ρ, a threshold) or of the problem (the weights of its objective, e.g. λ and μ of a
    regularised objective — the problem is rebuilt from its ``init_args`` with the value); a
    key of neither is an error. Every point of the Cartesian product is run as a
    :class:`~lightning_unfold.core.unfolded.ClassicalSolver` (in ``dtype``; ``None`` keeps the
    data's) and scored by :func:`layer_metrics` at layer ``depth``; ties keep the earlier point
    in grid order, a non-finite score (a diverging step) never wins.

    Args:
        algorithm: a registered name (``"ista"``) or the algorithm's class.
        options: fixed algorithm arguments besides the grid's.
        metric: the metric to score by (default: the problem's primary metric).
        curve_to: compute each point's curve up to this many iterations (≥ ``depth``; default
            ``depth``) — e.g. to also read off the best iteration within a budget.
    """
    from lightning_unfold.algorithms import ALGORITHMS
    from lightning_unfold.core.unfolded import ClassicalSolver

    if isinstance(algorithm, str):
        if algorithm not in ALGORITHMS:
            raise ValueError(f"Unknown algorithm {algorithm!r}; valid: {sorted(ALGORITHMS)}.")
        factory = ALGORITHMS[algorithm]
    else:
        factory = algorithm
    if not grid or any(len(list(v)) == 0 for v in grid.values()):
        raise ValueError(f"The grid needs at least one value per key, got {dict(grid)}.")
    horizon = depth if curve_to is None else int(curve_to)
    if depth < 0 or horizon < depth:
        raise ValueError(f"Need 0 <= depth <= curve_to, got depth={depth}, curve_to={curve_to}.")
    alg_args = set(inspect.signature(factory).parameters)
    prob_args = set(problem.init_args())
    for key in grid:
        if key in alg_args and key in prob_args:
            raise ValueError(
                f"Grid key {key!r} is an argument of both the algorithm and the problem."
            )
        if key not in alg_args | prob_args:
            raise ValueError(
                f"Grid key {key!r} is neither an argument of {getattr(factory, '__name__', factory)} "
                f"({sorted(alg_args)}) nor of {type(problem).__name__} ({sorted(prob_args)})."
            )
    spec = primary_metric(problem.metrics()) if metric is None else _select(problem, [metric])[0]
    xs, ts = _cast(x, dtype), _cast(target, dtype)
    real = xs.real.dtype if xs.is_complex() else xs.dtype  # the solver's (real) dtype
    keys = list(grid)
    scores: list[tuple[dict[str, Any], float]] = []
    curves: list[list[float]] = []
    best: tuple[dict[str, Any], float] | None = None
    for values in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, values, strict=True))
        in_prob = {k: v for k, v in point.items() if k in prob_args}
        prob = type(problem)(**{**problem.init_args(), **in_prob}) if in_prob else problem
        alg_opts = {k: v for k, v in point.items() if k in alg_args}
        alg = factory(**{**dict(options or {}), **alg_opts})
        solver = ClassicalSolver(alg, prob, max(horizon, 1), dtype=real).to(xs.device)
        curve = layer_metrics(solver, prob, xs, ts, depth=horizon, metrics=[spec.name])[spec.name]
        value = curve[depth]
        scores.append((point, value))
        curves.append(curve)
        if math.isfinite(value) and (best is None or spec.better(value, best[1])):
            best = (point, value)
    if best is None:
        raise ValueError(
            f"Every grid point gave a non-finite {spec.name}; widen the grid towards smaller "
            f"steps: {scores}."
        )
    return TuneResult(best[0], best[1], spec.name, scores, curves)
