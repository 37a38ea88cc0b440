r"""Reference agreement: does the model's output solve the LASSO?

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

from .context import CheckContext, prepare
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
    objective_rtol: float = 0.02,
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

    Problems that are not a LASSO (no ``H``, ``rho`` constants) but name a classical algorithm
    (``default_algorithm``, e.g. WMMSE) are judged by :func:`objective_agreement` instead, with
    ``objective_rtol``, ``n_objective_reference`` and ``objective_max_iter``.

    Args:
        n_reference: number of samples solved (CVXPY costs ~0.5–1 s per sample at n = 500).
        solver, solver_opts: CVXPY solver name and its options (e.g. ``{"max_iter": 200}``).
    """
    name = "reference_agreement"
    ctx = prepare(model, problem, data)
    try:
        H, rho = ctx.lasso_constants()
    except NotApplicableError:
        if ctx.problem is None or not ctx.problem.default_algorithm:
            raise
        return objective_agreement(
            ctx,
            rel_tol=objective_rtol,
            n_reference=n_objective_reference,
            max_iter=objective_max_iter,
        )
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
    rel_tol: float = 0.02,
    n_reference: int = 256,
    tol: float = 1e-5,
    max_iter: int = 2000,
) -> CheckResult:
    r"""Agreement in objective with the problem's classical solver run to convergence.

    For non-convex problems (WMMSE power allocation) the solution is not unique, so the output
    :math:`s^{(K)}` is not compared with one reference point; its mean objective is compared with
    that of the classical algorithm (``problem.default_algorithm`` at its classical parameters,
    float64, ``ClassicalSolver.solve`` to ``tol`` or ``max_iter`` iterations):

    .. math:: g = \frac{\bar{\mathcal L}(s^{(K)}) - \bar{\mathcal L}(s^\star)}
        {|\bar{\mathcal L}(s^\star)|},

    passing iff :math:`g \le` ``rel_tol`` (for WMMSE: the sum-rate is within ``rel_tol`` of
    WMMSE run to convergence, or better). The mean relative distance of the estimates is
    reported in the details (informative only: other stationary points are as good).
    """
    from lightning_unfold.algorithms import make_algorithm
    from lightning_unfold.core.unfolded import ClassicalSolver

    name = "reference_agreement"
    ctx = prepare(model, problem, data)
    if not isinstance(ctx, CheckContext) or ctx.problem is None:
        raise NotApplicableError("objective agreement needs the problem (problem=...).")
    Q = ctx.objective_values()
    n = min(n_reference, ctx.x.shape[0])
    x64 = ctx.x[:n].to(torch.float64)
    alg = make_algorithm(ctx.problem.default_algorithm)
    solver = ClassicalSolver(alg, ctx.problem, 1, dtype=torch.float64)
    res = ctx.cached(
        ("classical", n, tol, max_iter),
        lambda: solver.solve(x64, tol=tol, max_iter=max_iter, warn=False),
    )
    ref_obj = solver.objective(res.trajectory.final, x64).detach().cpu().numpy()
    model_obj = Q[:n, -1]
    ref_mean, model_mean = float(ref_obj.mean()), float(model_obj.mean())
    gap = (model_mean - ref_mean) / max(abs(ref_mean), 1e-30)
    passed = gap <= rel_tol
    est = ctx.estimates64()[-1, :n]
    sol = res.trajectory.final_estimate.detach().cpu().numpy().reshape(n, -1)
    dist = np.linalg.norm(est - sol, axis=1) / np.maximum(np.linalg.norm(sol, axis=1), 1e-12)
    message = (
        f"The mean objective at layer K is {model_mean:.5g} against {ref_mean:.5g} for "
        f"{type(alg).__name__} run to convergence ({res.iterations} iterations, "
        f"{'converged' if res.converged else 'not converged'} to {tol:g}) on {n} samples: "
        f"relative gap {gap:+.3g} ({'within' if passed else 'beyond'} {rel_tol:g})."
    )
    j = int(np.argmax(model_obj - ref_obj))
    counterexample = None
    if not passed:
        counterexample = {
            "sample_index": j,
            "x": ctx.x64()[j].tolist(),
            "objective": float(model_obj[j]),
            "reference_objective": float(ref_obj[j]),
        }
    details = {
        "model_objective": model_mean,
        "reference_objective": ref_mean,
        "reference_iterations": res.iterations,
        "reference_converged": res.converged,
        "relative_distance_of_estimates": float(dist.mean()),
        "n_samples": n,
    }
    return CheckResult(name, passed, gap, rel_tol, message, details, counterexample)
