r"""Reference agreement: does the model's output solve its problem?

For the classical solver and models trained with the objective as loss, :math:`s^{(K)}` should be
close to the LASSO solution

.. math::

    s^\star(x) = \arg\min_s \tfrac12\|x - Hs\|_2^2 + \rho\|s\|_1

computed by CVXPY (Clarabel; :func:`~lightning_unfold.theory.lasso_reference`), and nearly
satisfy its optimality condition :math:`H^\top(x - Hs) \in \rho\,\partial\|s\|_1`
(:func:`~lightning_unfold.theory.lasso_kkt_residual`, a solver-independent certificate).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from lightning_unfold.theory import ReferenceSolverError, lasso_kkt_residual, lasso_reference

from lightning_unfold.core.algorithm import ProblemSpec
from lightning_unfold.core.iterate import cast_precision, iterate_map

from .context import CheckContext, prepare, real64
from .result import CheckResult, NotApplicableError

__all__ = ["objective_agreement", "reference_agreement"]


def reference_agreement(
    model: Any,
    problem: ProblemSpec | None = None,
    data: Any = None,
    *,
    rel_tol: float = 0.05,
    kkt_tol: float | None = None,
    n_reference: int = 8,
    solver: str = "CLARABEL",
    solver_opts: Mapping[str, Any] | None = None,
    reference_kkt_tol: float = 0.05,
    objective_rtol: float | None = None,
    n_objective_reference: int = 256,
    objective_max_iter: int = 2000,
) -> CheckResult:
    r"""Relative distance of :math:`s^{(K)}` to the CVXPY reference, and its KKT residual.

    .. math::

        d = \frac1N\sum_j \frac{\|s_j^{(K)} - s_j^\star\|_2}{\max(\|s_j^\star\|_2, 10^{-12})},
        \qquad r_j = \text{KKT residual of } s_j^{(K)} \text{ relative to } \rho.

    Passes iff :math:`d \le` ``rel_tol`` (and, if ``kkt_tol`` is given, the median :math:`r_j \le`
    ``kkt_tol``). The reference itself must be certified: its KKT residual must be
    :math:`\le` ``reference_kkt_tol`` (Clarabel at its defaults reaches ~1e-3–1e-8 relative to
    :math:`\rho` at n = 500, far below the model's distance), otherwise — and whenever the CVXPY
    solver fails — the result is a failed check (status ERROR) whose message gives the reason.

    Models whose algorithm does not solve the LASSO (WMMSE, PGA, IHT, NMF, TV-ADMM, RPCA, ...)
    are judged by :func:`objective_agreement` instead (the classical solver run to
    convergence), with ``objective_rtol``, ``n_objective_reference`` and ``objective_max_iter``.

    Args:
        n_reference: number of samples solved (CVXPY costs ~0.5–1 s per sample at n = 500).
        solver, solver_opts: CVXPY solver name and its options (e.g. ``{"max_iter": 200}``).
    """
    name = "reference_agreement"
    ctx = prepare(model, problem, data)
    if not ctx.is_lasso():
        return objective_agreement(
            ctx,
            rel_tol=objective_rtol,
            n_reference=n_objective_reference,
            max_iter=objective_max_iter,
        )
    H, rho = ctx.lasso_constants()
    n = min(n_reference, ctx.x.shape[0])
    X = ctx.x64()[:n]
    try:
        ref = ctx.cached(
            ("cvxpy", solver, n, tuple(sorted((solver_opts or {}).items()))),
            lambda: lasso_reference(H, X, rho, solver=solver, **dict(solver_opts or {})),
        )
    except (ReferenceSolverError, ValueError) as exc:
        return CheckResult.error(
            name,
            f"The CVXPY reference could not be computed, so agreement was not checked: {exc}",
            solver=solver,
        )
    ref = np.asarray(ref)
    ref_kkt = lasso_kkt_residual(H, X, rho, ref)
    if float(ref_kkt.max()) > reference_kkt_tol:
        return CheckResult.error(
            name,
            f"The CVXPY reference ({solver}) is not certified: its KKT residual reaches "
            f"{float(ref_kkt.max()):.3g} > {reference_kkt_tol:g}; tighten the solver "
            "tolerances (solver_opts) or try another solver.",
            solver=solver,
            reference_kkt=ref_kkt.tolist(),
        )
    sK = ctx.estimates64()[-1, :n]
    dist = np.linalg.norm(sK - ref, axis=1) / np.maximum(np.linalg.norm(ref, axis=1), 1e-12)
    kkt = lasso_kkt_residual(H, X, rho, sK, support_tol=0.0)
    d = float(dist.mean())
    kkt_med = float(np.median(kkt))
    passed = d <= rel_tol and (kkt_tol is None or kkt_med <= kkt_tol)
    kkt_part = f"; median KKT residual {kkt_med:.3g}·ρ" + (
        f" (needed ≤ {kkt_tol:g})" if kkt_tol is not None else ""
    )
    message = (
        f"s^(K) lies at relative distance {d:.3g} from the CVXPY LASSO solution on {n} samples "
        f"(needed ≤ {rel_tol:g}){kkt_part}: the model "
        f"{'solves' if passed else 'does not solve'} the LASSO to that accuracy."
    )
    j = int(np.argmax(dist))
    counterexample = None
    if not passed:
        counterexample = {
            "sample_index": j,
            "x": X[j].tolist(),
            "reference": ref[j].tolist(),
            "estimate": sK[j].tolist(),
            "relative_distance": float(dist[j]),
            "kkt_residual": float(kkt[j]),
        }
    details = {
        "relative_distance": dist.tolist(),
        "kkt_residual": kkt.tolist(),
        "reference_kkt_residual": ref_kkt.tolist(),
        "solver": solver,
        "n_samples": n,
        "kkt_tol": kkt_tol,
    }
    return CheckResult(name, passed, d, rel_tol, message, details, counterexample)


def objective_agreement(
    model: Any,
    problem: ProblemSpec | None = None,
    data: Any = None,
    *,
    rel_tol: float | None = None,
    n_reference: int = 256,
    tol: float = 1e-8,
    max_iter: int = 2000,
    n_cvxpy: int = 8,
) -> CheckResult:
    r"""Agreement with the model's classical solver run to convergence (problems without a
    CVXPY reference here: WMMSE, PGA, soft-IC, multiplicative NMF, IHT, TV-ADMM, RPCA).

    The reference :math:`s^\star` is the classical operator :math:`T` of the model's algorithm
    (:meth:`~lightning_unfold.core.algorithm.Algorithm.classical_operator`, classical
    parameters, float64 / complex128 — complex data stay complex) iterated from its
    initialisation until the relative change is :math:`\le` ``tol`` or ``max_iter`` iterations;
    its optimality certificate is reported. Then

    * for a **convex** problem (:attr:`~lightning_unfold.core.algorithm.SolverTheory.convex`)
      with a CVXPY formulation (:meth:`~lightning_unfold.core.algorithm.Algorithm.
      convex_reference`: box least squares for projected-gradient detection, TV reconstruction),
      the reference is CVXPY's solution on ``n_cvxpy`` samples; otherwise the converged
      classical solver's. The mean relative distance
      :math:`\frac1N\sum_j\|\hat s_j^{(K)} - \hat s_j^\star\|/\|\hat s_j^\star\|` must be
      :math:`\le` ``rel_tol`` (default 0.05);
    * for a **non-convex** problem, whose stationary points differ, the relative gap of the mean
      objective :math:`g = (\bar{\mathcal L}(s^{(K)}) - \bar{\mathcal L}(s^\star)) /
      |\bar{\mathcal L}(s^\star)|` must be :math:`\le` ``rel_tol`` (default 0.02; for WMMSE:
      the sum-rate within 2 % of WMMSE run to convergence, or better).
    """
    from lightning_unfold.core.unfolded import ClassicalSolver

    name = "reference_agreement"
    ctx = prepare(model, problem, data)
    if not isinstance(ctx, CheckContext) or ctx.problem is None:
        raise NotApplicableError("agreement with the classical solver needs the problem.")
    op, params = ctx.operator()
    theory = ctx.theory()
    convex = theory.convex
    tol_ = rel_tol if rel_tol is not None else (0.05 if convex else 0.02)
    if convex:
        cvx = _convex_reference(ctx, op, min(n_cvxpy, ctx.x.shape[0]), tol_)
        if cvx is not None:
            return cvx
    n = min(n_reference, ctx.x.shape[0])
    x64 = cast_precision(ctx.x[:n], torch.float64)
    solver = ClassicalSolver(op, ctx.problem, 1, dtype=torch.float64)
    res = ctx.cached(
        ("classical", n, tol, max_iter),
        lambda: solver.solve(x64, tol=tol, max_iter=max_iter, warn=False),
    )
    ref_state = res.trajectory.final
    ref_cert = op.certificate(ref_state, x64, params)
    cert_max = float(ref_cert.values.max())
    opname = type(op).__name__
    stalled = 0 if ref_cert.stalled is None else int(ref_cert.stalled.sum())
    stall_note = (
        f"; {stalled} of {ref_cert.values.numel()} samples stalled where the iteration cannot "
        "continue, not at a stationary point"
        if stalled
        else ""
    )
    reference = (
        f"{opname} run to convergence ({res.iterations} iterations, "
        f"{'converged' if res.converged else 'not converged'} to {tol:g}; its {ref_cert.name} "
        f"{cert_max:.2e}{stall_note})"
    )
    est = ctx.estimates64()[-1, :n]
    sol = real64(res.trajectory.final_estimate)
    if est.shape != sol.shape:
        raise NotApplicableError(
            f"the model's estimates have {est.shape[1]} entries and {opname}'s {sol.shape[1]}."
        )
    dist = np.linalg.norm(est - sol, axis=1) / np.maximum(np.linalg.norm(sol, axis=1), 1e-12)
    final = ctx.trajectory.iterates[-1]
    try:
        final64 = iterate_map(lambda t: cast_precision(t[:n], torch.float64), final)
        model_obj = op.objective(final64, x64, params).detach().cpu().to(torch.float64).numpy()
    except (RuntimeError, TypeError, AttributeError, KeyError, IndexError):
        model_obj = ctx.objective_values()[:n, -1]
    ref_obj = op.objective(ref_state, x64, params).detach().cpu().to(torch.float64).numpy()
    ref_mean, model_mean = float(ref_obj.mean()), float(model_obj.mean())
    gap = (model_mean - ref_mean) / max(abs(ref_mean), 1e-30)
    if convex:
        value = float(dist.mean())
        passed = value <= tol_
        message = (
            f"s^(K) lies at mean relative distance {value:.3g} from the solution of "
            f"{theory.problem} computed by {reference} on {n} samples (needed ≤ {tol_:g}; the "
            f"problem is convex, so the converged solver's point is its solution): the model "
            f"{'solves' if passed else 'does not solve'} it to that accuracy."
        )
    else:
        value = gap
        passed = gap <= tol_
        message = (
            f"The mean objective at layer K is {model_mean:.5g} against {ref_mean:.5g} for "
            f"{reference} on {n} samples: relative gap {gap:+.3g} "
            f"({'within' if passed else 'beyond'} {tol_:g}). The problem is not convex, so the "
            "objective is compared, not the point."
        )
    j = int(np.argmax(dist if convex else model_obj - ref_obj))
    counterexample = None
    if not passed:
        counterexample = {
            "sample_index": j,
            "relative_distance": float(dist[j]),
            "objective": float(model_obj[j]),
            "reference_objective": float(ref_obj[j]),
        }
    details = {
        "reference": opname,
        "reference_name": f"{opname} to convergence",
        "convex": convex,
        "quantity": "objective",
        "model_objective": model_mean,
        "reference_objective": ref_mean,
        "objective_gap": gap,
        "reference_iterations": res.iterations,
        "reference_converged": res.converged,
        "reference_certificate": ref_cert.values.tolist(),
        "reference_stalled": stalled,
        "certificate_name": ref_cert.name,
        "relative_distance_of_estimates": float(dist.mean()),
        "n_samples": n,
    }
    return CheckResult(name, passed, value, tol_, message, details, counterexample)


def _convex_reference(ctx: CheckContext, op: Any, n: int, rel_tol: float) -> CheckResult | None:
    """Agreement with the CVXPY solution of a convex problem, or ``None`` without one."""
    assert ctx.problem is not None
    x64 = cast_precision(ctx.x[:n], torch.float64)
    try:
        ref = op.convex_reference(x64, ctx.problem)
    except Exception as exc:  # a failed reference solve: fall back to the classical solver
        error = f"{type(exc).__name__}: {exc}"
        ctx.cached("cvxpy_error", lambda: error)
        return None
    if ref is None:
        return None
    theory = ctx.theory()
    est = ctx.estimates64()[-1, :n]
    sol = real64(ref)
    dist = np.linalg.norm(est - sol, axis=1) / np.maximum(np.linalg.norm(sol, axis=1), 1e-12)
    value = float(dist.mean())
    passed = value <= rel_tol
    message = (
        f"s^(K) lies at mean relative distance {value:.3g} from the CVXPY (Clarabel) solution of "
        f"{theory.problem} on {n} samples (needed ≤ {rel_tol:g}): the model "
        f"{'solves' if passed else 'does not solve'} it to that accuracy."
    )
    j = int(np.argmax(dist))
    counterexample = None if passed else {"sample_index": j, "relative_distance": float(dist[j])}
    details = {
        "reference": "cvxpy",
        "reference_name": "CVXPY reference",
        "convex": True,
        "relative_distance_list": dist.tolist(),
        "n_samples": n,
    }
    return CheckResult(
        "reference_agreement", passed, value, rel_tol, message, details, counterexample
    )
