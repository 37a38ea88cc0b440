r"""Reference solvers: CVXPY (Clarabel by default) and a float64 FISTA run to a KKT certificate.

Tolerances. With CVXPY's defaults, Clarabel (an interior-point method) solves the LASSO to a
duality gap of ~1e-8: coefficients are accurate to ~1e-8 and off-support entries are ~1e-8
rather than exactly zero; the KKT residual (:func:`~lightning_unfold.theory.lasso_kkt_residual`)
is typically ~1e-9 relative to :math:`\rho`. SCS (first-order, CVXPY default ``eps`` 1e-5 to
1e-4) is only accurate to ~1e-5 to 1e-7 — enough for plots, not for tight support tests. Solver
options are passed through ``**solver_opts`` (e.g. ``tol_gap_abs=1e-10`` for Clarabel,
``eps=1e-9`` for SCS). :func:`lasso_fista_reference` returns exact zeros off the support and a
certificate at ``tol`` (default 1e-10); it is usually faster than CVXPY for small batches.

Batches re-use one canonicalised problem: the observation (and the regularisation weights) are
``cvxpy.Parameter`` s of a DPP problem, so each sample only re-runs the numerical solver.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import cvxpy as cp
import numpy as np
import torch

from ._arrays import (
    ArrayLike,
    ScalarOrArray,
    as_batch,
    as_dictionary,
    as_per_sample,
    to_numpy64,
)
from .lasso import lasso_kkt_residual, lipschitz_constant, soft_threshold

__all__ = [
    "ReferenceSolverError",
    "box_least_squares_reference",
    "elastic_net_reference",
    "lasso_fista_reference",
    "lasso_reference",
    "rpca_pcp_reference",
]


class ReferenceSolverError(RuntimeError):
    """A reference solver did not reach a certified optimum (the message says what to try)."""


def _check_solver(solver: str) -> str:
    name = solver.upper()
    installed = cp.installed_solvers()
    if name not in installed:
        raise ValueError(
            f"solver {solver!r} is not installed for CVXPY; installed solvers: "
            f"{', '.join(installed)}. Pass one of those as solver=..."
        )
    return name


def _solve(problem: cp.Problem, solver: str, solver_opts: dict[str, object], what: str) -> None:
    try:
        with warnings.catch_warnings():
            # CVXPY warns on 'optimal_inaccurate'; we raise a ReferenceSolverError instead.
            warnings.filterwarnings("ignore", message="Solution may be inaccurate")
            problem.solve(solver=solver, **solver_opts)
    except cp.error.SolverError as exc:
        raise ReferenceSolverError(
            f"{what}: CVXPY solver {solver} failed ({exc}). Try another solver (e.g. "
            f"solver='SCS' or 'CLARABEL') or looser tolerances via solver options."
        ) from exc
    if problem.status != cp.OPTIMAL:
        if problem.status in (cp.INFEASIBLE, cp.UNBOUNDED):
            hint = "the data define no finite optimum: check the bounds and the data's scale."
        else:
            hint = (
                "try another solver (installed: "
                f"{', '.join(cp.installed_solvers())}), or raise its iteration limit / adjust "
                "its tolerances (Clarabel: max_iter, tol_gap_abs, tol_gap_rel; SCS: max_iters, "
                "eps_abs, eps_rel)."
            )
        raise ReferenceSolverError(
            f"{what}: CVXPY solver {solver} returned status {problem.status!r}, not 'optimal'; "
            + hint
        )


def _batch_solve(
    problem: cp.Problem,
    variable: cp.Variable,
    set_params: Callable[[int], None],
    batch: int,
    solver: str,
    solver_opts: dict[str, object],
    what: str,
) -> np.ndarray:
    if not problem.is_dpp():  # pragma: no cover - a programming error, not a user error
        raise AssertionError(f"{what}: the parameterised problem must be DPP.")
    out = np.empty((batch, variable.shape[0]))
    for b in range(batch):
        set_params(b)
        _solve(problem, solver, solver_opts, f"{what} (sample {b})")
        out[b] = variable.value
    return out


def lasso_reference(
    H: ArrayLike,
    x: ArrayLike,
    rho: ScalarOrArray,
    *,
    solver: str = "CLARABEL",
    polish: bool = True,
    **solver_opts: object,
) -> np.ndarray:
    r"""LASSO solutions with CVXPY, one per observation.

    .. math::

        s^\star(x) = \arg\min_s \tfrac12\|x - Hs\|_2^2 + \rho\|s\|_1
        \qquad\text{(Tibshirani, 1996; Chen, Donoho, Saunders, 1998 — basis pursuit denoising).}

    One problem is canonicalised with ``x`` and ``rho`` as parameters and re-solved per sample.
    See the module docstring for tolerances: with Clarabel the raw solution is accurate to
    ~1e-8 on well-conditioned problems, off-support entries are ~1e-8 rather than 0, and near
    degenerate problems (a coefficient close to 0 with :math:`|g_i| \approx \rho`) can leave a
    KKT residual of ~1e-5.

    Polishing (default): the support and signs :math:`\sigma` of the solver's answer (entries
    above :math:`10^{-7}..10^{-4}\|s\|_\infty`) give the candidate
    :math:`s_S = (H_S^\top H_S)^{-1}(H_S^\top x - \rho\sigma)`, which replaces the raw answer
    only if its :func:`~lightning_unfold.theory.lasso_kkt_residual` is smaller — so the returned
    point is never less certified than the solver's, usually to ~1e-15 with exact zeros.

    Args:
        H: dictionary, shape (m, n).
        x: observations, shape (B, m) or (m,).
        rho: :math:`\rho \ge 0`, a scalar or one per sample (B,).
        solver: any installed CVXPY solver that handles SOCPs (``"CLARABEL"``, ``"SCS"``, …).
        polish: refine on the identified support when that improves the certificate; pass
            False for the raw CVXPY output (e.g. to study a solver's own accuracy).
        **solver_opts: passed to ``Problem.solve``.

    Returns:
        float64 array (B, n), or (n,) for a single observation.

    Raises:
        ReferenceSolverError: when the solver's status is not ``optimal`` (the status is named).
    """
    Hn = as_dictionary(H)
    m, n = Hn.shape
    X, single = as_batch(x, m, "x", "m")
    r = as_per_sample(rho, X.shape[0], "rho", positive=False)
    name = _check_solver(solver)
    s = cp.Variable(n)
    xp = cp.Parameter(m)
    rp = cp.Parameter(nonneg=True)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(xp - Hn @ s) + rp * cp.norm1(s)))

    def set_params(b: int) -> None:
        xp.value = X[b]
        rp.value = r[b]

    out = _batch_solve(prob, s, set_params, X.shape[0], name, dict(solver_opts), "LASSO")
    if polish and np.all(r > 0):
        for b in range(X.shape[0]):
            out[b] = _polish_certified(Hn, X[b], float(r[b]), out[b])
    return out[0] if single else out


def _polish_certified(H: np.ndarray, x: np.ndarray, rho: float, s: np.ndarray) -> np.ndarray:
    """Best of ``s`` and its support-polished versions, by the KKT residual."""
    best, best_res = s, float(lasso_kkt_residual(H, x, rho, s))
    top = float(np.max(np.abs(s)))
    for rel in (1e-7, 1e-6, 1e-5, 1e-4):
        cand = _polish(H, x, rho, np.where(np.abs(s) > rel * top, s, 0.0))
        if cand is None:
            continue
        res = float(lasso_kkt_residual(H, x, rho, cand, support_tol=0.0))
        if res < best_res:
            best, best_res = cand, res
    return best


def elastic_net_reference(
    H: ArrayLike,
    x: ArrayLike,
    rho: ScalarOrArray,
    alpha: float,
    *,
    solver: str = "CLARABEL",
    polish: bool = True,
    **solver_opts: object,
) -> np.ndarray:
    r"""Elastic-net solutions with CVXPY (Zou & Hastie, 2005; glmnet's parameterisation).

    .. math::

        \arg\min_s \tfrac12\|x - Hs\|_2^2
        + \rho\Big(\alpha\|s\|_1 + \tfrac{1-\alpha}{2}\|s\|_2^2\Big),
        \qquad 0 \le \alpha \le 1 .

    :math:`\alpha = 1` is the LASSO, :math:`\alpha = 0` ridge regression. It equals the LASSO
    with weight :math:`\rho\alpha` on the augmented data
    :math:`\big[\begin{smallmatrix}H\\ \sqrt{\rho(1-\alpha)}I\end{smallmatrix}\big]`,
    :math:`\big[\begin{smallmatrix}x\\ 0\end{smallmatrix}\big]`.

    Args:
        H, x, solver, solver_opts: as in :func:`lasso_reference`.
        rho: :math:`\rho \ge 0`, scalar or (B,).
        alpha: mixing weight in [0, 1].
        polish: as in :func:`lasso_reference`, applied to the augmented LASSO (for
            :math:`\alpha > 0`); the result is kept only if it lowers that LASSO's KKT residual.

    Returns:
        float64 array (B, n), or (n,) for a single observation.
    """
    Hn = as_dictionary(H)
    m, n = Hn.shape
    X, single = as_batch(x, m, "x", "m")
    r = as_per_sample(rho, X.shape[0], "rho", positive=False)
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1] (1 = LASSO, 0 = ridge); got {alpha}.")
    name = _check_solver(solver)
    s = cp.Variable(n)
    xp = cp.Parameter(m)
    l1 = cp.Parameter(nonneg=True)
    l2 = cp.Parameter(nonneg=True)
    obj = 0.5 * cp.sum_squares(xp - Hn @ s) + l1 * cp.norm1(s) + 0.5 * l2 * cp.sum_squares(s)
    prob = cp.Problem(cp.Minimize(obj))

    def set_params(b: int) -> None:
        xp.value = X[b]
        l1.value = r[b] * float(alpha)
        l2.value = r[b] * (1.0 - float(alpha))

    out = _batch_solve(prob, s, set_params, X.shape[0], name, dict(solver_opts), "elastic net")
    if polish and float(alpha) > 0:
        for b in range(X.shape[0]):
            if r[b] > 0:  # polish as a LASSO on the augmented data (see above)
                H_aug = np.vstack([Hn, np.sqrt(r[b] * (1.0 - float(alpha))) * np.eye(n)])
                x_aug = np.concatenate([X[b], np.zeros(n)])
                out[b] = _polish_certified(H_aug, x_aug, r[b] * float(alpha), out[b])
    return out[0] if single else out


def box_least_squares_reference(
    H: ArrayLike,
    x: ArrayLike,
    lower: ScalarOrArray,
    upper: ScalarOrArray,
    *,
    solver: str = "CLARABEL",
    **solver_opts: object,
) -> np.ndarray:
    r"""Box-constrained least squares with CVXPY (e.g. the target of unfolded projected gradient).

    .. math::

        \arg\min_s \tfrac12\|x - Hs\|_2^2 \quad\text{s.t.}\quad l \le s \le u .

    Args:
        H, x, solver, solver_opts: as in :func:`lasso_reference`.
        lower, upper: bounds, scalars or shape (n,), shared by the batch; ``-inf``/``inf``
            entries leave that side unconstrained. Must satisfy ``lower <= upper``.

    Returns:
        float64 array (B, n), or (n,) for a single observation.
    """
    Hn = as_dictionary(H)
    m, n = Hn.shape
    X, single = as_batch(x, m, "x", "m")
    lo = _bound(lower, n, "lower")
    up = _bound(upper, n, "upper")
    if np.any(lo > up):
        i = int(np.argmax(lo > up))
        raise ValueError(
            f"the box is empty: lower[{i}] = {lo[i]} > upper[{i}] = {up[i]}; swap or fix bounds."
        )
    name = _check_solver(solver)
    s = cp.Variable(n)
    xp = cp.Parameter(m)
    cons = []
    lo_idx = np.flatnonzero(np.isfinite(lo))
    up_idx = np.flatnonzero(np.isfinite(up))
    if lo_idx.size:
        cons.append(s[lo_idx] >= lo[lo_idx])
    if up_idx.size:
        cons.append(s[up_idx] <= up[up_idx])
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(xp - Hn @ s)), cons)

    def set_params(b: int) -> None:
        xp.value = X[b]

    out = _batch_solve(prob, s, set_params, X.shape[0], name, dict(solver_opts), "box LS")
    return out[0] if single else out


def _bound(value: ScalarOrArray, n: int, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().to(device="cpu", dtype=torch.float64).numpy()
    arr = np.asarray(value, dtype=np.float64)
    if np.any(np.isnan(arr)):
        raise ValueError(f"{name} contains NaN; use -inf/inf for an unconstrained side.")
    if arr.ndim == 0:
        return np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape (n,) = ({n},); got {arr.shape}.")
    return arr


def rpca_pcp_reference(
    X: ArrayLike,
    lam: float | None = None,
    *,
    solver: str = "CLARABEL",
    max_entries: int = 2500,
    **solver_opts: object,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Convex robust PCA by principal component pursuit (Candès, Li, Ma, Wright, 2011).

    .. math::

        (L^\star, S^\star) = \arg\min_{L, S} \|L\|_* + \lambda\|S\|_1
        \quad\text{s.t.}\quad L + S = X,
        \qquad \lambda = 1/\sqrt{\max(n_1, n_2)} \text{ by default.}

    Candès et al. prove exact recovery of a low-rank :math:`L_0` and a sparse :math:`S_0` from
    :math:`X = L_0 + S_0` w.h.p. when :math:`\mathrm{rank}(L_0) \le \rho_r n/(\mu\log^2 n)` with
    incoherent singular vectors and the support of :math:`S_0` uniformly random with a small
    enough fraction of entries.

    The nuclear norm makes this a semidefinite program of size :math:`(n_1+n_2)`: for **small
    sizes only** (the default guard is ``max_entries = 2500``, e.g. 50 × 50; a 20 × 20 matrix
    takes well under a second with Clarabel). Use an iterative RPCA solver for larger data.

    Args:
        X: data matrix (n1, n2), numpy or torch.
        lam: :math:`\lambda > 0`; default :math:`1/\sqrt{\max(n_1,n_2)}`.
        solver: an installed CVXPY solver that supports SDPs (``"CLARABEL"``, ``"SCS"``).
        max_entries: refuse larger matrices (raise the limit explicitly if you mean it).
        **solver_opts: passed to ``Problem.solve``.

    Returns:
        ``(L, S)``, float64 arrays of shape (n1, n2).
    """
    Xn = to_numpy64(X, "X")
    if Xn.ndim != 2 or Xn.size == 0:
        raise ValueError(f"X must be a non-empty matrix (n1, n2); got shape {Xn.shape}.")
    if Xn.size > max_entries:
        raise ValueError(
            f"X has {Xn.size} entries > max_entries = {max_entries}: PCP via CVXPY is an SDP "
            "meant for small reference problems. Pass max_entries=... to override, or use an "
            "iterative RPCA solver."
        )
    n1, n2 = Xn.shape
    lam_v = 1.0 / np.sqrt(max(n1, n2)) if lam is None else float(lam)
    if not lam_v > 0:
        raise ValueError(f"lam must be > 0; got {lam}.")
    name = _check_solver(solver)
    L = cp.Variable((n1, n2))
    S = cp.Variable((n1, n2))
    prob = cp.Problem(cp.Minimize(cp.normNuc(L) + lam_v * cp.sum(cp.abs(S))), [L + S == Xn])
    _solve(prob, name, dict(solver_opts), "RPCA (PCP)")
    return np.asarray(L.value, dtype=np.float64), np.asarray(S.value, dtype=np.float64)


def lasso_fista_reference(
    H: ArrayLike,
    x: ArrayLike,
    rho: ScalarOrArray,
    *,
    tol: float = 1e-10,
    max_iter: int = 100_000,
    check_every: int = 25,
) -> np.ndarray:
    r"""LASSO solutions by float64 FISTA with adaptive restart, run until a KKT certificate.

    FISTA (Beck & Teboulle, 2009) with the gradient-based restart of O'Donoghue & Candès (2015):

    .. math::

        s^{(k+1)} = \eta_{\rho/L}\big(y^{(k)} + \tfrac1L H^\top(x - Hy^{(k)})\big),\quad
        y^{(k+1)} = s^{(k+1)} + \tfrac{t_k - 1}{t_{k+1}}(s^{(k+1)} - s^{(k)}),

    with :math:`L = \|H\|_2^2`. Every ``check_every`` iterations the support and signs of the
    iterate are used to *polish*: :math:`s_S = (H_S^\top H_S)^{-1}(H_S^\top x - \rho\,
    \mathrm{sign}(s_S))`. A sample stops as soon as either candidate has
    :func:`~lightning_unfold.theory.lasso_kkt_residual` :math:`\le` ``tol`` — the result is
    certified optimal whatever produced it, and off-support entries are exactly zero.

    Args:
        H, x: as in :func:`lasso_reference`.
        rho: :math:`\rho > 0`, scalar or (B,).
        tol: KKT residual to certify (relative to :math:`\rho`).
        max_iter: iteration budget.
        check_every: how often to test the certificate and try polishing.

    Returns:
        float64 array (B, n), or (n,) for a single observation.

    Raises:
        ReferenceSolverError: if some sample has not reached ``tol`` after ``max_iter``
            iterations (the residual reached is named).
    """
    Hn = as_dictionary(H)
    m, n = Hn.shape
    X, single = as_batch(x, m, "x", "m")
    B = X.shape[0]
    r = as_per_sample(rho, B, "rho", positive=True)
    if not tol > 0:
        raise ValueError(f"tol must be > 0; got {tol}.")
    Lc = lipschitz_constant(Hn)
    HtH = Hn.T @ Hn
    HtX = X @ Hn
    tau = (r / Lc)[:, None]
    S = np.zeros((B, n))
    Y = S.copy()
    t = np.ones(B)
    result = np.full((B, n), np.nan)
    done = np.zeros(B, dtype=bool)
    res = np.full(B, np.inf)
    for it in range(1, max_iter + 1):
        S_new = soft_threshold(Y + (HtX - Y @ HtH) / Lc, tau)
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t**2))
        # restart momentum where it points uphill (O'Donoghue & Candès, 2015)
        restart = np.sum((Y - S_new) * (S_new - S), axis=1) > 0
        beta = np.where(restart, 0.0, (t - 1.0) / t_new)
        t = np.where(restart, 1.0, t_new)
        Y = S_new + beta[:, None] * (S_new - S)
        S = S_new
        if it % check_every and it != max_iter:
            continue
        todo = np.flatnonzero(~done)
        res_it = lasso_kkt_residual(Hn, X[todo], r[todo], S[todo], support_tol=0.0)
        for j, b in enumerate(todo):
            if res_it[j] <= tol:
                result[b], done[b], res[b] = S[b], True, res_it[j]
                continue
            cand = _polish(Hn, X[b], r[b], S[b])
            if cand is not None:
                rc = float(lasso_kkt_residual(Hn, X[b], r[b], cand, support_tol=0.0))
                if rc <= tol:
                    result[b], done[b], res[b] = cand, True, rc
                    continue
            res[b] = res_it[j]
        if done.all():
            break
    if not done.all():
        worst = int(np.argmax(np.where(done, -np.inf, res)))
        raise ReferenceSolverError(
            f"LASSO FISTA reference: {int((~done).sum())} of {B} samples did not reach KKT "
            f"residual {tol:g} in {max_iter} iterations (worst: sample {worst}, residual "
            f"{res[worst]:.3g}). Increase max_iter, loosen tol, or use lasso_reference (CVXPY)."
        )
    return result[0] if single else result


def _polish(H: np.ndarray, x: np.ndarray, rho: float, s: np.ndarray) -> np.ndarray | None:
    support = np.flatnonzero(s)
    if support.size == 0 or support.size > H.shape[0]:
        return None
    Hs = H[:, support]
    sign = np.sign(s[support])
    try:
        coef = np.linalg.solve(Hs.T @ Hs, Hs.T @ x - rho * sign)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.sign(coef) == sign):
        return None
    out = np.zeros_like(s)
    out[support] = coef
    return out
