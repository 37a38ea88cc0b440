r"""Descent of the model's own objective, layer by layer (any problem, real or complex).

The LASSO checks (:func:`~lightning_unfold.checks.descent` with a LASSO reference) measure distances
to a reference solution. Problems without one (hybrid precoding: maximise the achievable rate, no
closed-form optimum) are judged on their objective itself:

.. math::
    \delta_k = \frac1N\sum_j \big(\mathcal L(s_j^{(k-1)}; x_j) - \mathcal L(s_j^{(k)}; x_j)\big),
    \qquad k = 1..K,

(:func:`~lightning_unfold.theory.objective_decrease`); layer :math:`k` *violates* descent when
:math:`\delta_k < -\texttt{tol}\cdot\frac1N\sum_j|\mathcal L(s_j^{(0)}; x_j)|`. For the rate problem
:math:`\mathcal L = -R`, so descent is ascent of the rate. The objective is evaluated by the model's
``objective(s, x)`` on its own iterates, so it works for complex iterates as they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lightning_unfold.theory.descent import objective_decrease

from lightning_unfold.core.iterate import cast_precision
from lightning_unfold.core.unfolded import UnfoldedModel

from .context import CheckContext, _model_dtype, prepare
from .result import CheckResult, NotApplicableError

__all__ = ["objective_descent"]


def objective_values(ctx: CheckContext) -> np.ndarray:
    """``(N, K+1)`` float64 objective values of every sample at every layer."""
    inner = ctx.inner
    if not isinstance(inner, UnfoldedModel):
        raise NotApplicableError(
            f"objective descent needs an unfolded model with an objective(s, x); got "
            f"{type(inner).__name__} (the black box has no iterates)."
        )
    dtype = _model_dtype(inner)
    x = cast_precision(ctx.x, dtype) if dtype is not None else ctx.x
    with torch.no_grad():
        values = [inner.objective(s, x) for s in ctx.trajectory.iterates]
    table = torch.stack(values, dim=1).detach().to("cpu", torch.float64)
    if table.is_complex():
        raise NotApplicableError(
            "the model's objective is complex-valued; descent needs a real one."
        )
    return table.numpy()


def objective_descent(
    model: Any,
    problem: Any = None,
    data: Any = None,
    *,
    tol: float = 0.0,
    max_violation_rate: float = 0.0,
) -> CheckResult:
    r"""Every layer decreases the mean objective (module docstring); passes iff the fraction of
    violating layers is at most ``max_violation_rate``. The counterexample is the sample whose
    objective rose most at the worst layer."""
    name = "objective_descent"
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0; got {tol}.")
    if not 0.0 <= max_violation_rate <= 1.0:
        raise ValueError(f"max_violation_rate must lie in [0, 1]; got {max_violation_rate}.")
    ctx = prepare(model, problem, data)
    V = objective_values(ctx)
    if not np.all(np.isfinite(V)):
        return CheckResult.error(
            name, "The objective is NaN/Inf on some layer; the model diverged."
        )
    delta = objective_decrease(V)
    scale = float(np.abs(V[:, 0]).mean()) or 1.0
    violated = delta < -tol * scale
    K = delta.shape[0]
    rate = float(violated.sum()) / K
    passed = rate <= max_violation_rate
    layers = (np.flatnonzero(violated) + 1).tolist()
    counterexample = None
    if layers:
        worst = int(np.argmin(delta)) + 1
        rise = V[:, worst] - V[:, worst - 1]
        j = int(np.argmax(rise))
        counterexample = {
            "sample": j,
            "layer": worst,
            "before": float(V[j, worst - 1]),
            "after": float(V[j, worst]),
        }
    alg = ctx.algorithm()
    what = f"mean objective of {type(alg).__name__}" if alg is not None else "mean objective"
    if not layers:
        message = (
            f"Every one of the {K} layers lowers the {what} (smallest decrease "
            f"{float(delta.min()):.3g}): the layers act as descent steps on it."
        )
    else:
        message = (
            f"{len(layers)} of {K} layers raise the {what} by more than tol·|L(s⁰)| "
            f"(layers {', '.join(map(str, layers))}; worst δ = {float(delta.min()):.3g})"
            + (
                f", within the allowed rate {max_violation_rate:g}."
                if passed
                else "; those layers are no descent steps on it."
            )
        )
    from .convergence import _classical_descent, _descent_theorem

    def rule(m: np.ndarray) -> np.ndarray:
        return objective_decrease(m[None]) < -tol * scale

    classical, yard = _classical_descent(ctx, objective_values, rule, bool(layers) and not passed)
    message = f"{message} {_descent_theorem(ctx)}{yard}"
    details = {
        "decrease": delta.tolist(),
        "mean_objective": V.mean(axis=0).tolist(),
        "tol": tol,
        "scale": scale,
        "violated_layers": layers,
        "mean_value": V.mean(axis=0).tolist(),
        "what": what,
        "classical": classical,
    }
    return CheckResult(name, passed, rate, max_violation_rate, message, details, counterexample)
