r"""Checks of the two descent guarantees: descending constraints and the safeguard.

**Descending constraints, robustly** (Hadou, NaderiAlizadeh, Ribeiro, 2024): a model trained
under :math:`\mathbb E\|s^{(l)} - s^\star\| \le (1-\epsilon)\mathbb E\|s^{(l-1)} - s^\star\|`
should make every layer a descent step — in expectation, on the data, and also when its input
is perturbed. :func:`descending_constraints` replaces each intermediate iterate by
:math:`\tilde s^{(l)} = s^{(l)} + \beta\,r^{(l)} z/\|z\|` before the next layer and measures,
per layer, the expected distance ratio from the perturbed input. By default the perturbation is
scaled by the iterate's own distance to the solution, :math:`r^{(l)} = \|s^{(l)} - s^\star\|`;
``scale="norm"`` gives the paper's :math:`r^{(l)} = \|s^{(l)}\|` with its sizes
:data:`PERTURBATION_BETAS` (see the function's docstring for why that is not the default).

**Safeguarded unfolding** (Heaton, Chen, Wang, Yin, 2023): the safeguarded model converges to a
fixed point of the classical operator for *any* learned weights once continued past layer
:math:`K`. :func:`safeguard` runs it (float64) and certifies the limit with the classical operator's own
optimality certificate (:meth:`~lightning_unfold.core.algorithm.Algorithm.certificate`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lightning_unfold.theory import ReferenceSolverError
from torch import Tensor

from lightning_unfold.core.algorithm import ProblemSpec
from lightning_unfold.core.iterate import as_real_rows, cast_precision, iterate_map
from lightning_unfold.core.perturb import relative_perturbation
from lightning_unfold.core.safeguard import SafeguardedModel
from lightning_unfold.core.unfolded import UnfoldedModel

from .context import CheckContext, prepare
from .references import resolve_reference
from .result import CheckResult, NotApplicableError

__all__ = [
    "CRITERIA",
    "DEFAULT_BETAS",
    "PERTURBATION_BETAS",
    "PERTURBATION_SCALES",
    "descending_constraints",
    "safeguard",
]

#: the perturbation sizes of Hadou et al. (2024), relative to the iterate's norm (``scale="norm"``)
PERTURBATION_BETAS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
#: the default sizes, relative to the iterate's distance to the solution (``scale="distance"``)
DEFAULT_BETAS: tuple[float, ...] = (0.01, 0.1)
#: what a perturbation's size is relative to
PERTURBATION_SCALES: tuple[str, ...] = ("distance", "norm")
#: the pass criteria of :func:`descending_constraints`
CRITERIA: tuple[str, ...] = ("expected", "samples")


def _unfolded(ctx: CheckContext, what: str) -> UnfoldedModel:
    inner = ctx.inner
    if isinstance(inner, SafeguardedModel):
        inner = inner.model
    if not isinstance(inner, UnfoldedModel):
        raise NotApplicableError(
            f"{what} steps through the layers of an UnfoldedModel (it perturbs or safeguards "
            f"the intermediate iterates); {type(inner).__name__} does not expose its layers."
        )
    return inner


def _float64(module: Any) -> Any:
    """The module in float64 precision, complex parameters in complex128 (``Module.double()``
    leaves complex tensors as they are)."""
    return module._apply(lambda t: cast_precision(t, torch.float64))


def _perturb(
    s: Any, est: torch.Tensor, sol: torch.Tensor, beta: float, scale: str, gen: torch.Generator
) -> Any:
    r"""``s`` plus noise of norm :math:`\beta r` per sample, :math:`r = \|s\|` (``"norm"``) or
    :math:`r = \|\hat s - s^\star\|` (``"distance"``). An iterate that is not its own estimate
    (several blocks, or another shape) gets in each block :math:`b` noise of norm
    :math:`\beta r\,\|b\|/\max(\|\hat s\|, r)`: its share of the distance, at most
    :math:`\beta\|b\|`."""
    if scale == "norm":
        return relative_perturbation(s, beta, gen)
    n = est.shape[0]
    flat = as_real_rows(est.reshape(n, -1)).double()
    dist = torch.linalg.vector_norm(flat - as_real_rows(sol.reshape(n, -1)).double(), dim=1)
    if isinstance(s, torch.Tensor) and s.shape == est.shape and s.is_floating_point():
        z = torch.randn(s.shape, generator=gen, dtype=s.dtype, device="cpu").to(s.device)
        zf = z.reshape(n, -1)
        size = (beta * dist).to(zf.dtype) / zf.norm(dim=1).clamp_min(1e-30)
        return s + (zf * size[:, None]).reshape(s.shape)
    rel = beta * dist / torch.maximum(torch.linalg.vector_norm(flat, dim=1), dist).clamp_min(1e-300)

    def add(b: torch.Tensor) -> torch.Tensor:
        if b.ndim < 2 or not b.is_floating_point():
            return b
        z = torch.randn(b.shape, generator=gen, dtype=b.dtype, device="cpu").to(b.device)
        zf, bf = z.reshape(b.shape[0], -1), b.reshape(b.shape[0], -1)
        size = rel.to(bf.real.dtype) * bf.norm(dim=1) / zf.norm(dim=1).clamp_min(1e-30)
        return b + (zf * size[:, None]).reshape(b.shape)

    return iterate_map(add, s)


@torch.no_grad()
def _perturbed_errors(
    inner: UnfoldedModel,
    x: torch.Tensor,
    sol: torch.Tensor,
    beta: float,
    gen: torch.Generator,
    scale: str = "norm",
) -> np.ndarray:
    """(N, 2K) distances: per layer l, of its perturbed input s̃^(l−1) and of its output s^(l)."""
    alg = inner.algorithm
    s = alg.init(x, inner.layer_params(1))
    cols: list[torch.Tensor] = []
    target = as_real_rows(sol.reshape(x.shape[0], -1)).double()

    def dist(it: Any) -> torch.Tensor:
        est = as_real_rows(alg.estimate(it)).double()  # complex entries as (re, im): same norm
        return torch.linalg.vector_norm(est.reshape(x.shape[0], -1) - target, dim=1)

    for k in range(1, inner.depth + 1):
        cols.append(dist(s))
        s = inner.layer(s, x, k)
        cols.append(dist(s))
        if k < inner.depth:
            s = _perturb(s, alg.estimate(s), sol, beta, scale, gen)
    E = torch.stack(cols, dim=1).cpu().numpy()
    return np.where(np.isfinite(E), E, np.inf)


def _descends(E: np.ndarray, eps: float, floor: float) -> np.ndarray:
    """(N, K) booleans: layer l reduced sample i's distance below (1 − eps) of its input's."""
    before, after = E[:, :-1], E[:, 1:]
    return (after < (1.0 - eps) * before) | (before <= floor)


def _expected_ratios(before: np.ndarray, after: np.ndarray, floor: float) -> np.ndarray:
    r""":math:`\mathbb E\|s^{(l)} - s^\star\| / \mathbb E\|\tilde s^{(l-1)} - s^\star\|` per layer
    (0 where the mean input is already at the precision floor: nothing left to descend)."""
    b, a = before.mean(axis=0), after.mean(axis=0)
    with np.errstate(invalid="ignore", over="ignore"):
        r = np.where(b <= floor, 0.0, a / np.maximum(b, 1e-300))
    return np.nan_to_num(r, nan=np.inf)


def descending_constraints(
    model: Any,
    problem: ProblemSpec | None = None,
    data: Any = None,
    *,
    reference: str = "auto",
    betas: Sequence[float] = DEFAULT_BETAS,
    scale: str = "distance",
    criterion: str = "expected",
    eps: float = 0.0,
    min_fraction: float = 0.9,
    n_reference: int = 32,
    seed: int = 0,
) -> CheckResult:
    r"""Every layer a descent step, unperturbed and from perturbed inputs.

    For each :math:`\beta \in \{0\} \cup` ``betas`` the model runs with every intermediate
    iterate perturbed, :math:`\tilde s^{(l)} = s^{(l)} + \beta\, r_i^{(l)} z/\|z\|`
    (:math:`z` Gaussian, seeded), and the check measures per layer, over the samples,

    .. math::

        \rho_l(\beta) = \frac{\mathbb E_i\,\|s_i^{(l)} - s_i^\star\|}
                             {\mathbb E_i\,\|\tilde s_i^{(l-1)} - s_i^\star\|},\qquad
        f_l(\beta) = \frac1N\#\{i : \|s_i^{(l)} - s_i^\star\| < (1-\epsilon)\,
        \|\tilde s_i^{(l-1)} - s_i^\star\|\}.

    ``criterion="expected"`` (default) passes iff :math:`\max_{l,\beta}\rho_l(\beta) <
    1-\epsilon`: the descending constraint itself, :math:`\mathbb E\|s^{(l)}-s^\star\| \le
    (1-\epsilon)\,\mathbb E\|s^{(l-1)}-s^\star\|`, which is a statement *in expectation* — it
    does not promise that a given fraction of samples descends, so no fraction threshold follows
    from the theory (``value`` is the largest ratio). ``criterion="samples"`` is the per-sample
    test: passes iff :math:`\min_\beta \frac1K\sum_l f_l(\beta) \ge` ``min_fraction``.

    **Perturbation scale.** ``scale="distance"`` (default) takes :math:`r^{(l)} =
    \|s^{(l)} - s^\star\|`: :math:`\beta` is then the perturbation's size relative to the
    error that layer :math:`l+1` has left to remove, the same meaning at every layer, and the
    perturbed input stays at distance :math:`\approx\sqrt{1+\beta^2}\,\|s^{(l)} - s^\star\|`,
    so the perturbations do not compound along a network that descends. If layer :math:`l` is
    :math:`L`-Lipschitz and satisfies the constraint with margin :math:`\epsilon'`, then
    :math:`\rho_l(\beta) \le (1-\epsilon') + L\beta`: the constraint implies descent from inputs
    perturbed by up to :math:`\beta \approx \epsilon'/L` of the remaining error, which is what the
    default sizes :data:`DEFAULT_BETAS` = (0.01, 0.1) probe (margins of a few percent, layers
    close to non-expansive); larger :math:`\beta` asks for the robustness that noise injection
    during training is meant to add. ``scale="norm"`` takes :math:`r^{(l)} = \|s^{(l)}\|`, the
    paper's test with its sizes :data:`PERTURBATION_BETAS` up to 1000: near the solution
    :math:`\|s^{(l)}\| \gg \|s^{(l)} - s^\star\|`, so :math:`\beta = 1` already puts the input
    many remaining-errors away, and a non-descending layer multiplies it by up to
    :math:`(1+\beta)` per layer — at :math:`K = 20`, :math:`\beta = 1000`, inputs :math:`10^{60}`
    times off the trajectory, where every layer acts as its linear part and the test measures
    that part's spectrum, not the trained descent (in the descent study's :math:`K = 20` LISTA
    models it fails constrained and unconstrained alike).

    Inputs already at the precision floor count as descending. ``reference`` as in
    :func:`~lightning_unfold.checks.descent`. ``details`` holds both statistics for every
    :math:`\beta` (``ratios_perturbed``, ``fraction``, ``overall``).
    """
    name = "descending_constraints"
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must lie in [0, 1); got {eps}.")
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction must lie in [0, 1]; got {min_fraction}.")
    if scale not in PERTURBATION_SCALES:
        raise ValueError(f"Unknown scale {scale!r}; valid: {list(PERTURBATION_SCALES)}.")
    if criterion not in CRITERIA:
        raise ValueError(f"Unknown criterion {criterion!r}; valid: {list(CRITERIA)}.")
    betas = [float(b) for b in betas]
    if any(not (b > 0 and math.isfinite(b)) for b in betas):
        raise ValueError(f"betas must be finite and > 0; got {betas}.")
    ctx = prepare(model, problem, data)
    inner = _unfolded(ctx, "descending_constraints")
    try:
        ref = resolve_reference(ctx, reference, n_reference)
    except ReferenceSolverError as exc:
        return CheckResult.error(name, f"The LASSO reference could not be computed: {exc}")
    from .convergence import _precision_floor

    floor = _precision_floor(ctx, ref)
    E0 = ref.errors(ctx)
    fractions: dict[str, list[float]] = {"0": _descends(E0, eps, floor).mean(axis=0).tolist()}
    means = E0.mean(axis=0)
    ratios = (means[1:] / np.maximum(means[:-1], 1e-300)).tolist()
    expected: dict[str, list[float]] = {
        "0": _expected_ratios(E0[:, :-1], E0[:, 1:], floor).tolist()
    }
    # the perturbations can compound over the layers (with scale="norm" each is relative to the
    # norm of the perturbed iterate, so up to (1 + β)^K times the input's): run them in float64,
    # where float32 would overflow to inf for K = 20 at β = 100 and count even ISTA as not
    # descending
    inner = _float64(copy.deepcopy(inner))
    x = cast_precision(ctx.x[ref.index], torch.float64)
    sol = torch.from_numpy(ref.solution)
    worst: tuple[float, float, int, int] | None = None  # (growth, beta, sample, layer)
    was_training = inner.training
    inner.eval()
    try:
        for beta in betas:
            gen = torch.Generator().manual_seed(seed)
            E = _perturbed_errors(inner, x, sol, beta, gen, scale)
            before, after = E[:, 0::2], E[:, 1::2]
            d = (after < (1.0 - eps) * before) | (before <= floor)
            fractions[f"{beta:g}"] = d.mean(axis=0).tolist()
            expected[f"{beta:g}"] = _expected_ratios(before, after, floor).tolist()
            with np.errstate(invalid="ignore"):
                growth = np.nan_to_num(after / np.maximum(before, 1e-300), nan=np.inf)
            i, l = np.unravel_index(int(np.argmax(growth)), growth.shape)
            if worst is None or growth[i, l] > worst[0]:
                worst = (float(growth[i, l]), beta, int(i), int(l) + 1)
    finally:
        inner.train(was_training)
    overall = {b: float(np.mean(f)) for b, f in fractions.items()}
    largest = {b: float(np.max(r)) for b, r in expected.items()}
    unpert = overall["0"]
    scale_words = "its distance to the solution" if scale == "distance" else "its norm"
    if criterion == "expected":
        value = max(largest.values())
        threshold = 1.0 - eps
        passed = value < threshold
        worst_beta = max(largest, key=largest.__getitem__)
        layer = int(np.argmax(expected[worst_beta])) + 1
        n_up = sum(
            int(np.max([expected[b][j] for b in expected]) >= threshold)
            for j in range(len(expected["0"]))
        )
        message = (
            f"The largest expected distance ratio E‖s^(l) − s*‖ / E‖s̃^(l−1) − s*‖ to "
            f"{ref.label} is {value:.3f} (layer {layer}, β = {worst_beta}; inputs perturbed by β "
            f"times {scale_words}; {100 * unpert:.1f}% of (sample, layer) pairs descend "
            "unperturbed), "
            + (
                f"below {threshold:g}: every layer is a descent step in expectation, also from "
                "perturbed inputs, as descending constraints (Hadou et al. 2024) require."
                if passed
                else f"not below {threshold:g}: {n_up} of {len(expected['0'])} layers do not "
                "descend in expectation (Hadou et al. 2024 train with descending constraints, "
                "and noise injection, against this)."
            )
        )
    else:
        value = min(overall.values())
        threshold = min_fraction
        passed = value >= min_fraction
        worst_beta = min(overall, key=overall.__getitem__)
        message = (
            f"{100 * unpert:.1f}% of (sample, layer) pairs reduce the distance to {ref.label} "
            f"unperturbed; under perturbations of β times {scale_words} the lowest fraction is "
            f"{100 * value:.1f}% (β = {worst_beta}), "
            + (
                f"at least {100 * min_fraction:g}%: the layers act as descent steps even off the "
                "trajectory they were trained on."
                if passed
                else f"below {100 * min_fraction:g}%: some layers move away from the solution "
                "when their input is perturbed (Hadou et al. 2024 train with descending "
                "constraints and noise injection against this)."
            )
        )
    counterexample = None
    if not passed and worst is not None and worst[0] >= 1.0:
        counterexample = {
            "sample_index": int(ref.index[worst[2]]),
            "beta": worst[1],
            "layer": worst[3],
            "growth": worst[0],
        }
    details = {
        "reference": ref.kind,
        "reference_label": ref.label,
        "betas": [0.0, *betas],
        "scale": scale,
        "criterion": criterion,
        "fraction": fractions,
        "overall": overall,
        "ratios_perturbed": expected,
        "largest_ratio": largest,
        "ratios": ratios,
        "mean_error": means.tolist(),
        "eps": eps,
        "min_fraction": min_fraction,
        "n_samples": int(E0.shape[0]),
    }
    return CheckResult(name, passed, value, threshold, message, details, counterexample)


def _all_stuck(cert: np.ndarray, stalled: Tensor | None, fixed: Tensor | None, tol: float) -> bool:
    """Whether every sample above ``tol`` is stalled *and* at a fixed point of the classical
    iteration (its relative fixed-point residual ``fixed`` ≤ 1e-12): more iterations change
    nothing there, so the safeguard stops early."""
    if stalled is None or fixed is None:
        return False
    flags = stalled.detach().cpu().numpy().astype(bool)
    still = fixed.detach().to("cpu", torch.float64).numpy() <= 1e-12
    return bool(np.all((flags & still)[cert > tol]))


def safeguard(
    model: Any,
    problem: ProblemSpec | None = None,
    data: Any = None,
    *,
    tol: float | None = None,
    max_iter: int = 2000,
    check_every: int = 10,
    n_samples: int = 32,
    delta: float = 0.01,
    mu_update: str = "ema",
) -> CheckResult:
    r"""Safeguard the model, continue past layer K, and certify the limit.

    ``model`` is a :class:`~lightning_unfold.core.safeguard.SafeguardedModel` (its settings are
    used) or an :class:`~lightning_unfold.core.unfolded.UnfoldedModel` (safeguarded here with
    ``delta`` and ``mu_update``). In float64, the first ``n_samples`` samples run the K
    safeguarded layers, then classical iterations; every ``check_every`` iterations the
    classical operator's optimality certificate is measured
    (:meth:`~lightning_unfold.core.algorithm.Algorithm.certificate`: the LASSO KKT residual for
    ISTA, ADMM's primal and dual residuals, the KKT residual of NMF, the fixed-point residual
    :math:`\|T(s) - s\|/\|T(s)\|` by default) until every sample is at most ``tol`` or
    ``max_iter`` iterations ran. The message says whether Heaton et al.'s theorem applies
    (the operator is averaged: :attr:`~lightning_unfold.core.algorithm.SolverTheory.averaged`).

    Passes iff the largest certificate is :math:`\le` ``tol`` within ``max_iter`` iterations;
    ``tol=None`` takes the operator's own default
    (:attr:`~lightning_unfold.core.algorithm.SolverTheory.certificate_tol`: 1e-6 for relative
    residuals, 1e-3 for WMMSE's normalised KKT residual). When the certificate marks the worst
    sample as *stalled* (:attr:`~lightning_unfold.core.algorithm.Certificate.stalled`: a point
    the classical iteration cannot leave that is not a solution) the message says so instead of
    asking for more iterations. ``details`` holds the fallback fraction of every layer and the
    certificate's curve.
    """
    name = "safeguard"
    if tol is not None and not tol > 0:
        raise ValueError(f"tol must be > 0 (or None for the algorithm's default); got {tol}.")
    if not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be an integer >= 1; got {check_every}.")
    ctx = prepare(model, problem, data)
    _unfolded(ctx, "safeguard")
    inner = ctx.inner
    try:
        if isinstance(inner, SafeguardedModel):
            sg = _float64(copy.deepcopy(inner))
        else:
            sg = SafeguardedModel(
                _float64(copy.deepcopy(inner)),
                delta=delta,
                mu_update=mu_update,
                problem=ctx.problem,
            )
    except TypeError as exc:
        raise NotApplicableError(str(exc)) from exc
    sg.eval()
    x = cast_precision(ctx.x[:n_samples], torch.float64)
    op = sg.operator
    classical = {k: cast_precision(v, torch.float64) for k, v in sg.classical.as_dict().items()}
    theory = op.theory
    tol = theory.certificate_tol if tol is None else float(tol)
    name_of: list[str] = []
    stall: list[Any] = [None, ""]
    fixed: list[Any] = [None]

    def measure(s: Any) -> np.ndarray:
        cert = op.certificate(s, x, classical)
        name_of[:] = [cert.name]
        stall[:] = [cert.stalled, cert.stall_reason]
        fixed[:] = [None]
        if cert.stalled is not None and bool(cert.stalled.any()):
            fixed[:] = [op.fixed_point_residual(s, x, classical)]
        return cert.values.detach().to("cpu", torch.float64).numpy()

    with torch.no_grad():
        iterates, fallback, t_s, _ = sg.run_layers(x, None)  # type: ignore[arg-type]
        K = len(iterates) - 1
        s = iterates[-1]
        cert = measure(s)
        curve = [(0, float(cert.max()))]
        n = 0
        while n < max_iter and cert.max() > tol and not _all_stuck(cert, stall[0], fixed[0], tol):
            step = min(check_every, max_iter - n)
            for _ in range(step):
                n += 1
                s = t_s
                t_s = sg.T(s, x, K + n + 1)
            cert = measure(s)
            curve.append((n, float(cert.max())))
        # the yardstick: the classical solver alone, from its own initialisation, on the same
        # samples, measured the same way, with the iterations the safeguarded model used when it
        # passed (K + n: did the learned layers save any?) and the whole budget when it failed
        # (K + max_iter: is the budget or the model short?)
        budget = K + (n if float(cert.max()) <= tol else max_iter)
        alone_s = op.init(x, classical)
        alone = op.certificate(alone_s, x, classical).values.detach().to("cpu", torch.float64)
        alone_curve = [(0, float(alone.max()))]
        m = 0
        while m < budget and float(alone.max()) > tol:
            step = min(check_every, budget - m)
            for _ in range(step):
                m += 1
                alone_s = op.step(alone_s, x, classical, m)
            alone = op.certificate(alone_s, x, classical).values.detach().to("cpu", torch.float64)
            alone_curve.append((m, float(alone.max())))
    fb = fallback.double().mean(dim=1).tolist()
    value = float(cert.max())
    passed = value <= tol
    alone_value = float(alone.max())
    alone_ok = alone_value <= tol
    what = name_of[0]
    opname = type(op).__name__
    alone_at = (
        f"the classical {opname} alone, from its own initialisation, is at {alone_value:.2e} "
        f"after the same budget of K + {max_iter} = {m} iterations"
    )
    if theory.averaged:
        why = f"as Heaton et al. (2023, Thm. 3.1) guarantee for any learned weights, since {theory.averaged}"
        fault = (
            f"the guarantee is asymptotic and the budget is short, not the learned layers "
            f"({alone_at}): raise max_iter"
        )
    else:
        why = (
            f"an empirical property here: Heaton et al.'s guarantee needs an averaged operator, "
            f"and {opname}'s iteration for {theory.problem} is not known to be one"
        )
        fault = (
            f"the classical {opname} continued from the safeguarded layers has not reached "
            f"{theory.fixed_point}, and the budget is short, not the learned layers ({alone_at}): "
            "raise max_iter (no theorem promises convergence here)"
        )
    if not passed and alone_ok:
        fault = (
            f"the learned layers are at fault: the classical {opname} alone, from its own "
            f"initialisation, reaches {alone_value:.2e} ≤ {tol:g} in {m} iterations, within the "
            f"same budget of K + {max_iter}"
        )
    stalled = stall[0].detach().cpu().numpy().astype(bool) if stall[0] is not None else None
    worst = int(np.argmax(cert))
    if not passed and stalled is not None and bool(stalled[worst]):
        fault = (
            f"the classical {opname} has stalled, not at a stationary point: {stall[1]} "
            f"({int(stalled.sum())} of {stalled.size} samples); raising max_iter cannot undo it"
            + (
                f" (the classical {opname} alone, from its own initialisation, reaches "
                f"{alone_value:.2e} ≤ {tol:g} in {m} iterations: the learned layers led it "
                "into the stall)"
                if alone_ok
                else f" (the classical {opname} alone is at {alone_value:.2e} after {m})"
            )
        )
    head = ""
    if passed:
        head = (
            f" The classical {opname} alone, from its own initialisation, needs {m} iterations "
            f"to get below {tol:g} (the safeguarded model: K + {n} = {K + n})."
            if alone_ok
            else f" The classical {opname} alone, from its own initialisation, is still at "
            f"{alone_value:.2e} after the same K + {n} = {m} iterations: the learned layers "
            "saved iterations."
        )
    message = (
        f"After K = {K} safeguarded layers (fallback fraction per layer {min(fb):.2f}–"
        f"{max(fb):.2f}) and {n} classical {opname} iterations the largest {what} is "
        f"{value:.2e} "
        + (
            f"≤ {tol:g}: the safeguarded model reaches {theory.fixed_point}, {why}."
            if passed
            else f"> {tol:g} within {max_iter} iterations: {fault}."
        )
        + head
    )
    counterexample = None
    if not passed:
        j = int(np.argmax(cert))
        counterexample = {"sample_index": j, "certificate": float(cert[j])}
    details = {
        "certificate": what,
        "certificate_name": what,
        "fallback_fraction": fb,
        "iterations": int(n),
        "curve": [[int(i), v] for i, v in curve],
        "tol": tol,
        "max_iter": max_iter,
        "delta": sg.delta,
        "mu_update": sg.mu_update,
        "operator": type(sg.operator).__name__,
        "n_samples": int(x.shape[0]),
        "certificate_per_sample": cert.tolist(),
        "stalled_per_sample": None if stalled is None else stalled.tolist(),
        "classical_alone": {
            "iterations": int(m),
            "value": alone_value,
            "reached": bool(alone_ok),
            "curve": [[int(i), v] for i, v in alone_curve],
        },
    }
    return CheckResult(name, passed, value, tol, message, details, counterexample)
