r"""Checks on the error trajectory: linear convergence and descent.

**Linear convergence** (Chen, Liu, Wang, Yin, 2018, Thm. 2; Liu, Chen, Wang, Yin, 2019, Thm. 1):
LISTA-CP and ALISTA with suitable weights and thresholds satisfy

.. math::

    \|s^{(k)} - s^\star\|_2 \le \eta B\, e^{-ck} + C\sigma ,

a linear (geometric) rate down to a noise floor, whereas ISTA with a fixed threshold converges
sublinearly (Beck & Teboulle, 2009) — and to the LASSO solution, not to :math:`s^\star`.

**Descent** (Hadou, NaderiAlizadeh, Ribeiro, 2024): the descending constraints

.. math::

    \mathbb E\, q(s^{(k)}) \le (1-\epsilon)\, \mathbb E\, q(s^{(k-1)}),\qquad k = 1..K,

with :math:`q` the distance to the reference (default) or the LASSO gradient norm, make every
layer a descent step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from lightning_unfold.theory import (
    ReferenceSolverError,
    fit_envelope,
    fit_linear_rate,
    lasso_gradient_norm,
)

from lightning_unfold.core.algorithm import ProblemSpec

from .context import CheckContext, prepare
from .references import Reference, resolve_reference
from .result import CheckResult, NotApplicableError

__all__ = ["DESCENT_QUANTITIES", "descent", "linear_convergence", "objective_descent"]

DESCENT_QUANTITIES: tuple[str, ...] = ("auto", "distance", "gradient", "objective", "loss")


def _precision_floor(ctx: CheckContext, ref: Reference) -> float:
    """Smallest error a model computing in its own dtype can resolve: 100·eps·mean‖s*‖."""
    eps = float(np.finfo(_numpy_dtype(ctx)).eps)
    scale = float(np.mean(np.linalg.norm(ref.solution, axis=1)))
    return 100.0 * eps * max(scale, 1e-30)


def _numpy_dtype(ctx: CheckContext) -> type:
    dt = str(ctx.trajectory.final_estimate.dtype)
    return {
        "torch.float16": np.float16,
        "torch.bfloat16": np.float32,
        "torch.float32": np.float32,
    }.get(dt, np.float64)


def _instance(ctx: CheckContext, j: int) -> dict[str, Any]:
    out: dict[str, Any] = {"sample_index": int(j), "x": ctx.x64()[j].tolist()}
    if ctx.target is not None:
        out["target"] = ctx.target64()[j].tolist()
    return out


def linear_convergence(
    model: Any,
    problem: ProblemSpec | None = None,
    data: Any = None,
    *,
    reference: str = "auto",
    q_max: float = 0.9,
    min_r2: float = 0.9,
    start: int = 1,
    stop: int | None = None,
    n_reference: int = 32,
) -> CheckResult:
    r"""Fit the per-layer rate :math:`q` of :math:`\mathbb E\|s^{(k)} - s^\star\|` and test it.

    The mean error over samples, :math:`e_k`, is fitted by :math:`\log e_k = k\log q + c`
    (:func:`~lightning_unfold.theory.fit_linear_rate`) over layers ``start <= k < stop``,
    stopping early where :math:`e_k` reaches the floor: the precision floor
    :math:`100\,\varepsilon_{\text{dtype}}\,\mathbb E\|s^\star\|` and, with noise, twice the
    noise floor :math:`C\sigma` of the envelope fitted to :math:`e_k`. The envelope
    :math:`\eta B e^{-ck} + C\sigma` over *all* instances
    (:func:`~lightning_unfold.theory.fit_envelope`) is reported in ``details``.

    Passes iff :math:`q \le` ``q_max`` and :math:`R^2 \ge` ``min_r2`` (a good linear fit).

    Args:
        model: a trajectory producer or a :class:`CheckContext`.
        problem, data: see :func:`~lightning_unfold.checks.prepare`.
        reference: ``"auto" | "truth" | "lasso"`` (see :mod:`lightning_unfold.checks.references`).
        q_max: largest per-layer contraction counted as linear convergence.
        min_r2: smallest :math:`R^2` of the log-linear fit counted as a linear rate.
        start, stop: layer window of the fit (``stop`` exclusive, default K+1).
        n_reference: samples used with the LASSO reference.
    """
    name = "linear_convergence"
    ctx = prepare(model, problem, data)
    if _use_certificate(ctx, reference):
        return _certificate_rate(ctx, q_max=q_max, min_r2=min_r2, start=start, stop=stop)
    try:
        ref = resolve_reference(ctx, reference, n_reference)
    except ReferenceSolverError as exc:
        return CheckResult.error(name, f"The LASSO reference could not be computed: {exc}")
    E = ref.errors(ctx)  # (N, K+1)
    K1 = E.shape[1]
    if K1 - start < 3:
        raise ValueError(
            f"linear_convergence needs at least 3 layers from start={start}; the model has "
            f"K = {K1 - 1} layers. Lower start or check a deeper model."
        )
    mean = E.mean(axis=0)
    floor = _precision_floor(ctx, ref)
    sigma = float(np.mean(ref.sigma)) if ref.sigma is not None else None
    envelope = fit_envelope(E, sigma)
    noise_floor = 0.0
    if sigma:
        noise_floor = fit_envelope(mean[None], sigma).C_sigma
        floor = max(floor, 2.0 * noise_floor)
    hi = K1 if stop is None else slice(start, stop).indices(K1)[1]
    below = np.flatnonzero(mean[start:hi] <= floor)
    hi_fit = start + int(below[0]) if below.size else hi
    if hi_fit - start < 3:
        hi_fit = min(start + 3, K1)
    fit = fit_linear_rate(mean, start=start, stop=hi_fit)
    passed = fit.q <= q_max and fit.r2 >= min_r2
    # per-instance rates: the worst instance is the counterexample
    per_q = np.full(E.shape[0], np.nan)
    for j in range(E.shape[0]):
        try:
            per_q[j] = fit_linear_rate(E[j], start=start, stop=hi_fit).q
        except ValueError:
            continue
    counterexample = None
    if not passed and np.any(per_q > q_max):
        j = int(np.nanargmax(per_q))
        counterexample = {
            **_instance(ctx, int(ref.index[j])),
            "q": float(per_q[j]),
            "errors": E[j].tolist(),
        }
    window = f"layers {fit.start}–{fit.stop - 1}"
    verdict = _rate_verdict(ctx, passed, q_max, min_r2)
    classical = _classical_rate(ctx, lambda c: ref.errors(c), mean, fit)
    message = (
        f"The mean error to {ref.label} shrinks by q = {fit.q:.3g} per layer over {window} "
        f"(R² = {fit.r2:.3f}; {mean[0]:.3g} → {mean[-1]:.3g}): {verdict}."
        + _classical_sentence(ctx, classical, mean)
    )
    details = {
        "reference": ref.kind,
        "n_samples": int(E.shape[0]),
        "mean_error": mean.tolist(),
        "q10_error": np.quantile(E, 0.1, axis=0).tolist(),
        "q90_error": np.quantile(E, 0.9, axis=0).tolist(),
        "fit": {"q": fit.q, "c": fit.c, "r2": fit.r2, "start": fit.start, "stop": fit.stop},
        "q_max": q_max,
        "min_r2": min_r2,
        "floor": floor,
        "what": f"‖s^(k) − s*‖₂ (s* = {ref.label})",
        "noise_floor": noise_floor,
        "envelope": {
            "eta_B": envelope.eta_B,
            "c": envelope.c,
            "C_sigma": envelope.C_sigma,
            "sigma": envelope.sigma,
        },
        "fraction_instances_above_q_max": float(np.nanmean(per_q > q_max)),
        "classical": classical,
    }
    return CheckResult(name, passed, fit.q, q_max, message, details, counterexample)


def _use_certificate(ctx: CheckContext, reference: str) -> bool:
    """Whether the rate is measured on the operator's certificate: no ground truth to measure
    the error against (discrete labels, none at all, or a model trained on its objective) and
    no LASSO solution."""
    if reference != "auto" or ctx.is_lasso():
        return False
    return ctx.discrete_targets() or ctx.trained_on_objective() or not ctx.labelled().any()


def _rate_verdict(ctx: CheckContext, passed: bool, q_max: float, min_r2: float) -> str:
    """The verdict of a rate fit, naming the result that predicts it for the model's algorithm."""
    theory = ctx.theory()
    alg = ctx.algorithm()
    who = type(alg).__name__ if alg is not None else "this model"
    if passed and theory.linear_rate:
        return f"a linear rate, as predicted: {theory.linear_rate}"
    if passed:
        return f"a linear rate; no theorem predicts one for {who} here (an empirical property)"
    if theory.linear_rate:
        return (
            f"not a linear rate with q ≤ {q_max:g} and R² ≥ {min_r2:g}; the theorem "
            f"({theory.linear_rate}) needs its conditions, which these learned layers do "
            "not meet"
        )
    return (
        f"not a linear rate with q ≤ {q_max:g} and R² ≥ {min_r2:g} — no theorem predicts one "
        f"for {who}, so this describes the model rather than faulting it"
    )


def _certificate_rate(
    ctx: CheckContext, *, q_max: float, min_r2: float, start: int, stop: int | None
) -> CheckResult:
    """Linear rate of the mean optimality certificate (problems without a reference point)."""
    name = "linear_convergence"
    what, E = ctx.certificates()  # (B, K+1)
    K1 = E.shape[1]
    if K1 - start < 3:
        raise ValueError(
            f"linear_convergence needs at least 3 layers from start={start}; the model has "
            f"K = {K1 - 1} layers. Lower start or check a deeper model."
        )
    mean = E.mean(axis=0)
    floor = 100.0 * float(np.finfo(_numpy_dtype(ctx)).eps)
    hi = K1 if stop is None else slice(start, stop).indices(K1)[1]
    below = np.flatnonzero(mean[start:hi] <= floor)
    hi_fit = start + int(below[0]) if below.size else hi
    if hi_fit - start < 3:
        hi_fit = min(start + 3, K1)
    fit = fit_linear_rate(np.maximum(mean, 1e-300), start=start, stop=hi_fit)
    passed = fit.q <= q_max and fit.r2 >= min_r2
    verdict = _rate_verdict(ctx, passed, q_max, min_r2)
    classical = _classical_rate(ctx, lambda c: c.certificates()[1], mean, fit)
    message = (
        f"The mean {what} (distance to {ctx.theory().fixed_point}; no ground truth in the "
        f"estimates' space) shrinks by q = {fit.q:.3g} per layer over layers {fit.start}–{fit.stop - 1} "
        f"(R² = {fit.r2:.3f}; {mean[fit.start]:.3g} → {mean[fit.stop - 1]:.3g}): {verdict}."
        + _classical_sentence(ctx, classical, mean, fit.start, fit.stop - 1)
    )
    details = {
        "reference": "certificate",
        "what": what,
        "n_samples": int(E.shape[0]),
        "mean_error": mean.tolist(),
        "q10_error": np.quantile(E, 0.1, axis=0).tolist(),
        "q90_error": np.quantile(E, 0.9, axis=0).tolist(),
        "fit": {"q": fit.q, "c": fit.c, "r2": fit.r2, "start": fit.start, "stop": fit.stop},
        "q_max": q_max,
        "min_r2": min_r2,
        "floor": floor,
        "envelope": {"eta_B": float(mean[0]), "c": 0.0, "C_sigma": 0.0, "sigma": None},
        "classical": classical,
    }
    return CheckResult(name, passed, fit.q, q_max, message, details)


def _classical_rate(
    ctx: CheckContext, errors: Callable[[CheckContext], np.ndarray], mean: np.ndarray, fit: Any
) -> dict[str, Any] | None:
    """The classical solver's mean error curve over the same iterations, measured the same way
    (``errors`` of its context), and its rate over the model's fit window; ``None`` where the
    model has no classical iteration or the quantity cannot be read on the solver's iterates."""
    cctx = ctx.classical()
    if cctx is None:
        return None
    try:
        E = np.asarray(errors(cctx), dtype=float)
    except (NotApplicableError, ValueError, TypeError, RuntimeError, FloatingPointError):
        return None
    if E.ndim != 2 or E.shape[1] != mean.shape[0] or not np.all(np.isfinite(E)):
        return None
    cmean = E.mean(axis=0)
    try:
        cfit = fit_linear_rate(np.maximum(cmean, 1e-300), start=fit.start, stop=fit.stop)
    except ValueError:
        return None
    return {
        "operator": type(cctx.inner.algorithm).__name__,
        "mean_error": cmean.tolist(),
        "fit": {"q": cfit.q, "c": cfit.c, "r2": cfit.r2, "start": cfit.start, "stop": cfit.stop},
    }


def _classical_descent(
    ctx: CheckContext,
    measure: Callable[[CheckContext], np.ndarray],
    violated: Callable[[np.ndarray], np.ndarray],
    model_violates: bool,
) -> tuple[dict[str, Any] | None, str]:
    """The classical solver of the model's algorithm on the same samples, its per-layer curve of
    the same quantity (``measure`` of its context) judged by the same rule (``violated`` of the
    mean curve), and one sentence saying whether it descends where the model does not."""
    cctx = ctx.classical()
    if cctx is None:
        return None, ""
    try:
        Q = np.asarray(measure(cctx), dtype=float)
    except (NotApplicableError, ValueError, TypeError, RuntimeError, FloatingPointError):
        return None, ""
    if Q.ndim != 2 or not np.all(np.isfinite(Q)):
        return None, ""
    mean = Q.mean(axis=0)
    bad = (np.flatnonzero(violated(mean)) + 1).tolist()
    op = type(cctx.inner.algorithm).__name__
    where = (
        f"layers {', '.join(map(str, bad))}" if len(bad) > 1 else f"layer {bad[0]}" if bad else ""
    )
    if model_violates and not bad:
        sentence = (
            f" The classical {op} on the same samples descends at every iteration, so the learned "
            "layers, not the iteration, break descent."
        )
    elif model_violates:
        sentence = (
            f" The classical {op} on the same samples does not descend either ({where}): the "
            "iteration itself is no descent method on this quantity here."
        )
    elif bad:
        sentence = f" The classical {op} on the same samples does not ({where})."
    else:
        sentence = f" The classical {op} on the same samples descends too."
    return {"operator": op, "mean_value": mean.tolist(), "violated_layers": bad}, sentence


def _classical_sentence(
    ctx: CheckContext, classical: dict[str, Any] | None, mean: Any, first: int = 0, last_k: int = -1
) -> str:
    """One sentence comparing the model with the classical solver at the same depth (the
    curve's values at layers ``first`` and ``last_k``, as the model's are quoted)."""
    if classical is None:
        return ""
    cm = classical["mean_error"]
    K = len(cm) - 1
    last, clast = float(mean[last_k]), float(cm[last_k])
    if last < 0.98 * clast:
        cmp = "below"
    elif last > clast / 0.98:
        cmp = "above"
    else:
        cmp = "level with"
    return (
        f" The classical {classical['operator']} over the same {K} iterations: q = "
        f"{classical['fit']['q']:.3g} ({cm[first]:.3g} → {clast:.3g}); the model ends {cmp} it."
    )


def descent(
    model: Any,
    problem: ProblemSpec | None = None,
    data: Any = None,
    *,
    quantity: str = "auto",
    reference: str = "auto",
    eps: float = 0.0,
    max_violation_rate: float = 0.0,
    n_reference: int = 32,
) -> CheckResult:
    r"""Per-layer descent ratios against :math:`1-\epsilon` (Hadou et al., 2024).

    .. math::

        r_k = \frac{\mathbb E\, q(s^{(k)})}{\mathbb E\, q(s^{(k-1)})},\qquad
        v = \tfrac1K\#\{k : r_k > 1-\epsilon\},

    with :math:`q` the problem's own supervised loss per sample (``quantity="loss"``, the
    default for discrete targets: the cross-entropy of the posteriors for symbol detection), the
    distance to the reference (``quantity="distance"``,
    :func:`~lightning_unfold.theory.distance_ratios`) or the norm of the LASSO's minimum-norm
    subgradient (``"gradient"``, :func:`~lightning_unfold.theory.lasso_gradient_norm`, the
    quantity of Hadou et al.), or the model's own objective (``"objective"``, for problems
    without a unique reference solution, e.g. WMMSE's negative sum-rate: see
    :func:`objective_descent`). ``"auto"`` (default): ``"distance"`` when the problem is a
    LASSO or the data have targets, else ``"objective"``. Layers entered at the precision floor
    (:math:`\mathbb E\,q(s^{(k-1)}) \le 100\,\varepsilon\,\mathbb E\|s^\star\|`) cannot descend
    measurably and are not counted as violations. Passes iff :math:`v \le`
    ``max_violation_rate`` (default 0: every layer descends).

    The counterexample is the sample whose error grew most at the worst violated layer.
    """
    name = "descent"
    if quantity not in DESCENT_QUANTITIES:
        raise ValueError(f"Unknown quantity {quantity!r}; valid: {list(DESCENT_QUANTITIES)}.")
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must lie in [0, 1); got {eps}.")
    ctx = prepare(model, problem, data)
    if quantity == "auto":
        if ctx.discrete_targets():
            quantity = "loss"
        else:
            quantity = "objective" if _use_certificate(ctx, reference) else "distance"
    if quantity == "objective":
        return objective_descent(ctx, eps=eps, max_violation_rate=max_violation_rate)
    ref: Reference | None = None
    index: np.ndarray | None = None
    if quantity == "loss":
        index, Q = ctx.layer_losses()
        what = f"per-sample supervised loss of {type(ctx.problem).__name__}"
        floor = 0.0
    elif quantity == "distance":
        try:
            ref = resolve_reference(ctx, reference, n_reference)
        except ReferenceSolverError as exc:
            return CheckResult.error(name, f"The LASSO reference could not be computed: {exc}")
        Q = ref.errors(ctx)
        what = f"distance to {ref.label}"
        floor = _precision_floor(ctx, ref)
    else:
        H, rho = ctx.lasso_constants()
        est = ctx.estimates64()
        X = ctx.x64()
        Q = np.stack([lasso_gradient_norm(H, X, rho, est[k]) for k in range(est.shape[0])], 1)
        what = "LASSO gradient norm"
        floor = 100.0 * float(np.finfo(_numpy_dtype(ctx)).eps) * float(np.abs(X @ H).max())
    mean = Q.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(mean[:-1] > 0, mean[1:] / mean[:-1], np.where(mean[1:] > 0, np.inf, 0.0))
    active = mean[:-1] > floor
    violated = active & (ratios > 1.0 - eps)
    K = ratios.shape[0]
    rate = float(violated.sum()) / K
    passed = rate <= max_violation_rate
    counterexample = None
    layers = np.flatnonzero(violated) + 1
    if layers.size:
        k = int(layers[np.argmax(ratios[layers - 1])])
        growth = Q[:, k] - Q[:, k - 1]
        j = int(np.argmax(growth))
        counterexample = {
            **_instance(
                ctx,
                int(ref.index[j]) if ref is not None else int(index[j]) if index is not None else j,
            ),
            "layer": k,
            "before": float(Q[j, k - 1]),
            "after": float(Q[j, k]),
        }
    bound = f"1 − ε = {1.0 - eps:g}"
    theorem = _descent_theorem(ctx)

    def rule(m: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(m[:-1] > 0, m[1:] / m[:-1], np.where(m[1:] > 0, np.inf, 0.0))
        return (m[:-1] > floor) & (r > 1.0 - eps)

    def measure(c: CheckContext) -> np.ndarray:
        if quantity == "loss":
            idx, q = c.layer_losses()
            if index is None or not np.array_equal(idx, index):
                raise ValueError("the classical solver's losses are not on the same samples")
            return q
        if ref is not None:
            return ref.errors(c)
        H_, rho_ = c.lasso_constants()
        e = c.estimates64()
        return np.stack(
            [lasso_gradient_norm(H_, c.x64(), rho_, e[k]) for k in range(e.shape[0])], 1
        )

    classical, yard = _classical_descent(ctx, measure, rule, bool(layers.size) and not passed)
    theorem = f"{theorem}{yard}"
    if passed and not layers.size:
        message = (
            f"Every layer reduces the mean {what} (largest ratio {np.max(ratios[active], initial=0):.3g}"
            f" ≤ {bound}): the layers act as descent steps. {theorem}"
        )
    elif passed:
        message = (
            f"{layers.size} of {K} layers do not reduce the mean {what} by {bound} (layers "
            f"{', '.join(map(str, layers.tolist()))}), within the allowed rate {max_violation_rate:g}."
            f" {theorem}"
        )
    else:
        worst = int(layers[np.argmax(ratios[layers - 1])])
        if ratios[worst - 1] > 1.0:
            after = "raise the loss" if quantity == "loss" else "move away from the solution"
        else:  # with eps > 0 a layer that reduces too little also violates
            after = f"reduce it, by less than the required factor {bound}"
        message = (
            f"{layers.size} of {K} layers violate the descent constraint r_k ≤ {bound} on the mean "
            f"{what} (worst: layer {worst}, ratio {ratios[worst - 1]:.3g}); those layers {after}. "
            f"{theorem}"
        )
    details = {
        "quantity": quantity,
        "reference": ref.kind if ref is not None else "lasso_gradient",
        "ratios": [float(r) if np.isfinite(r) else None for r in ratios],
        "what": what,
        "mean_value": mean.tolist(),
        "eps": eps,
        "violated_layers": layers.tolist(),
        "floor": floor,
        "layers_at_floor": (np.flatnonzero(~active) + 1).tolist(),
        "classical": classical,
    }
    return CheckResult(name, passed, rate, max_violation_rate, message, details, counterexample)


def _descent_theorem(ctx: CheckContext) -> str:
    """Which result predicts per-layer descent for the model (a sentence for messages)."""
    alg = ctx.algorithm()
    who = type(alg).__name__ if alg is not None else "the model"
    theory = ctx.theory()
    unfolded = ctx.unfolded()
    classical = unfolded is not None and unfolded.paradigm == "classical"
    from lightning_unfold.core.unfolded import ClassicalSolver

    classical = classical or isinstance(unfolded, ClassicalSolver)
    if classical and theory.descent:
        return f"Predicted for the classical iteration: {theory.descent}."
    if classical:
        return f"No theorem predicts per-iteration descent for classical {who} (empirical)."
    base = f" (for the classical iteration: {theory.descent})" if theory.descent else ""
    return (
        "For learned layers descent is guaranteed only when trained with descending "
        f"constraints (Hadou et al. 2024){base}; otherwise it is an empirical property."
    )


def objective_descent(
    model: Any,
    problem: ProblemSpec | None = None,
    data: Any = None,
    *,
    eps: float = 0.0,
    max_violation_rate: float = 0.0,
) -> CheckResult:
    r"""Every layer decreases the mean objective: with :math:`m_k = \mathbb E\,\mathcal
    L(s^{(k)}; x)` (the model's own objective, e.g. WMMSE's negative sum-rate),

    .. math:: m_k \le m_{k-1} - \epsilon\,|m_{k-1}|,\qquad k = 1..K,

    up to a rounding floor :math:`100\,\varepsilon_{\text{mach}}|m_{k-1}|`. Classical WMMSE
    satisfies it with :math:`\epsilon = 0` (Shi et al. 2011, Thm. 3: the sum-rate is
    non-decreasing), so a learned model that violates it has layers that undo progress. The
    message names the result that applies to the model's algorithm
    (:attr:`~lightning_unfold.core.algorithm.SolverTheory.descent`). Passes iff
    the fraction of violating layers is :math:`\le` ``max_violation_rate``. The counterexample is
    the sample whose objective grew most at the worst layer. Problems with a unique solution are
    better served by ``quantity="distance"``.
    """
    name = "descent"
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must lie in [0, 1); got {eps}.")
    ctx = prepare(model, problem, data)
    if ctx.trajectory.depth < 1:
        raise NotApplicableError("the model has no layers.")
    Q = ctx.objective_values()  # (B, K+1)
    mean = Q.mean(axis=0)
    change = mean[1:] - mean[:-1]
    floor = 100.0 * float(np.finfo(_numpy_dtype(ctx)).eps) * np.abs(mean[:-1])
    violated = change > -eps * np.abs(mean[:-1]) + floor
    K = change.shape[0]
    rate = float(violated.sum()) / K
    passed = rate <= max_violation_rate
    layers = np.flatnonzero(violated) + 1
    counterexample = None
    if layers.size:
        k = int(layers[np.argmax(change[layers - 1])])
        growth = Q[:, k] - Q[:, k - 1]
        j = int(np.argmax(growth))
        counterexample = {
            **_instance(ctx, j),
            "layer": k,
            "before": float(Q[j, k - 1]),
            "after": float(Q[j, k]),
        }

    def rule(m: np.ndarray) -> np.ndarray:
        fl = 100.0 * float(np.finfo(_numpy_dtype(ctx)).eps) * np.abs(m[:-1])
        return (m[1:] - m[:-1]) > -eps * np.abs(m[:-1]) + fl

    classical, yard = _classical_descent(
        ctx, lambda c: c.objective_values(), rule, bool(layers.size) and not passed
    )
    if not layers.size:
        message = (
            f"Every layer decreases the mean objective (from {mean[0]:.4g} to {mean[-1]:.4g}; "
            f"smallest decrease {float(-change.max()):.3g}): the layers act as descent steps. "
            f"{_descent_theorem(ctx)}{yard}"
        )
    elif passed:
        message = (
            f"{layers.size} of {K} layers do not decrease the mean objective (layers "
            f"{', '.join(map(str, layers.tolist()))}), within the allowed rate {max_violation_rate:g}."
            f" {_descent_theorem(ctx)}{yard}"
        )
    else:
        worst = int(layers[np.argmax(change[layers - 1])])
        rising = int((change[layers - 1] > floor[layers - 1]).sum())
        if rising == layers.size:
            verdict = "increase the mean objective"
            after = "those layers undo the solver's progress"
        else:  # with eps > 0 a layer that lowers the objective too little also violates
            verdict = (
                f"do not lower the mean objective by ε·|m_(k−1)| (ε = {eps:g}; {rising} of them "
                "raise it)"
            )
            after = (
                "those layers undo the solver's progress"
                if rising
                else "they descend, by less than the required margin"
            )
        message = (
            f"{layers.size} of {K} layers {verdict} (worst: layer {worst}, "
            f"{mean[worst - 1]:.4g} → {mean[worst]:.4g}); {after}. {_descent_theorem(ctx)}{yard}"
        )
    details = {
        "classical": classical,
        "quantity": "objective",
        "what": f"mean objective of {type(ctx.algorithm()).__name__} ({ctx.theory().problem})",
        "mean_value": mean.tolist(),
        "change": change.tolist(),
        "eps": eps,
        "violated_layers": layers.tolist(),
    }
    return CheckResult(name, passed, rate, max_violation_rate, message, details, counterexample)
