"""The check registry, suites, ``run_checks``, a (model, check) generator and a pytest helper.

Three layers, as scikit-learn's ``check_estimator``: one function per check
(:data:`CHECKS`), a generator of bound ``(model, check)`` pairs (:func:`generate_checks`) and a
pytest decorator that parametrises a test over them with readable ids
(:func:`pytest_parametrize`).
"""

from __future__ import annotations

import inspect
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_unfold.core.algorithm import ProblemSpec

from .agreement import reference_agreement
from .context import CheckContext, prepare
from .convergence import descent, linear_convergence
from .descending import descending_constraints, safeguard
from .generalization import family_of, generalization_across_depth
from .isometry import effective_operators, restricted_isometry
from .objective import objective_descent, objective_values
from .result import CheckResult, NotApplicableError
from .weights import alista_coherence, analytic_weight, coupling, lista_weights

__all__ = [
    "CHECKS",
    "SUITES",
    "BoundCheck",
    "CheckSpec",
    "generate_checks",
    "pytest_parametrize",
    "resolve_suite",
    "run_checks",
]


@dataclass(frozen=True)
class CheckSpec:
    """A registered check.

    Attributes:
        name: registry name.
        fn: ``fn(model_or_context, problem, data, **options) -> CheckResult``.
        applies: ``applies(ctx) -> None`` if the check applies, else the reason it does not.
        summary: one line for ``--help`` and docs.
    """

    name: str
    fn: Callable[..., CheckResult]
    applies: Callable[[CheckContext], str | None]
    summary: str


def _try(probe: Callable[[], object]) -> str | None:
    try:
        probe()
    except NotApplicableError as exc:
        return str(exc)
    return None


def _coupling_applies(ctx: CheckContext) -> str | None:
    def probe() -> None:
        H, _ = ctx.lasso_constants()
        lista_weights(ctx.inner, H)

    return _try(probe)


def _discrete_targets(ctx: CheckContext) -> str | None:
    if ctx.discrete_targets():
        whose = "" if ctx.problem is None else f"of {type(ctx.problem).__name__} "
        return (
            f"the targets {whose}are discrete labels (class indices) and "
            "the estimates live in another space (probability vectors), so a distance "
            "‖s^(k) − s‖ to the target is undefined "
            "(descent is measured on the problem's loss, the rate on the solver's certificate)."
        )
    return None


def _without_reference(ctx: CheckContext) -> bool:
    """No reference point: the model targets its solver's solution (or there is no ground
    truth) and that solution is not the LASSO's."""
    return (ctx.trained_on_objective() or not ctx.labelled().any()) and not ctx.is_lasso()


def _common_trajectory(ctx: CheckContext, *, discrete_ok: bool = False) -> str | None:
    if ctx.is_black_box():
        return "the black-box baseline has no intermediate iterates (its trajectory is [0, ŝ])."
    discrete = None if discrete_ok else _discrete_targets(ctx)
    if discrete:
        return discrete
    if ctx.trajectory.depth < 3:
        return f"the model has {ctx.trajectory.depth} layers; a rate needs at least 3."
    return None


def _trajectory_applies(ctx: CheckContext) -> str | None:
    reason = _common_trajectory(ctx, discrete_ok=True)
    if reason is None and (_without_reference(ctx) or ctx.discrete_targets()):
        return _try(ctx.certificates)
    return reason


def _has_objective(ctx: CheckContext) -> str | None:
    return _try(ctx.objective_values)


def _descent_applies(ctx: CheckContext) -> str | None:
    reason = _common_trajectory(ctx, discrete_ok=True)
    if reason is None and ctx.discrete_targets():
        return _try(ctx.layer_losses)
    if reason is None and _without_reference(ctx):
        return _has_objective(ctx)
    return reason


def _agreement_applies(ctx: CheckContext) -> str | None:
    if not ctx.is_lasso():
        reason = _try(ctx.operator)
        if reason:
            return reason
    if not ctx.trained_on_objective():
        theory = ctx.theory()
        return (
            f"the model was trained on the ground truth (supervised), so its output is not "
            f"meant to be {theory.fixed_point} of {theory.problem} (run it explicitly with "
            "--suite reference_agreement to measure anyway)."
        )
    return None


def _alista_applies(ctx: CheckContext) -> str | None:
    def probe() -> None:
        ctx.lasso_constants()
        analytic_weight(ctx.inner)

    return _try(probe)


def _layers_applies(ctx: CheckContext) -> str | None:
    from lightning_unfold.core.safeguard import SafeguardedModel
    from lightning_unfold.core.unfolded import UnfoldedModel

    inner = ctx.inner
    inner = inner.model if isinstance(inner, SafeguardedModel) else inner
    if not isinstance(inner, UnfoldedModel):
        return (
            f"{type(inner).__name__} does not expose its layers (an UnfoldedModel's .layer and "
            "classical operator are needed)."
        )
    return None


def _descending_applies(ctx: CheckContext) -> str | None:
    reason = _layers_applies(ctx) or _common_trajectory(ctx)
    if reason is None and _without_reference(ctx):
        theory = ctx.theory()
        return (
            "perturbed descent is measured as a distance to a reference point s*, and the model "
            f"targets {theory.fixed_point} of {theory.problem} without a ground truth in the data "
            "(use descent, which measures the objective)."
        )
    return reason


def _isometry_applies(ctx: CheckContext) -> str | None:
    def probe() -> None:
        H, _ = ctx.lasso_constants()
        effective_operators(ctx.inner, H)

    return _try(probe)


def _objective_descent_applies(ctx: CheckContext) -> str | None:
    if ctx.is_black_box():
        return "the black-box baseline has no intermediate iterates (its trajectory is [0, ŝ])."
    return _try(lambda: objective_values(ctx))


def _generalization_applies(ctx: CheckContext) -> str | None:
    return _try(lambda: family_of(ctx.model))


CHECKS: dict[str, CheckSpec] = {
    spec.name: spec
    for spec in (
        CheckSpec(
            "coupling",
            coupling,
            _coupling_applies,
            "LISTA weight coupling W2 − (I − W1·H) → 0 over depth (Chen et al., 2018, Thm. 1)",
        ),
        CheckSpec(
            "linear_convergence",
            linear_convergence,
            _trajectory_applies,
            "error to s* (or the solver's certificate) falls linearly; names the rate theorem "
            "of the model's algorithm (e.g. Chen et al., 2018, Thm. 2 for LISTA-CP)",
        ),
        CheckSpec(
            "descent",
            descent,
            _descent_applies,
            "every layer reduces the expected error, or the objective without a reference "
            "(Hadou et al., 2024)",
        ),
        CheckSpec(
            "reference_agreement",
            reference_agreement,
            _agreement_applies,
            "s^(K) agrees with the problem's reference: CVXPY for the LASSO, else the classical "
            "solver run to convergence",
        ),
        CheckSpec(
            "alista_coherence",
            alista_coherence,
            _alista_applies,
            "generalised coherence of ALISTA's analytic weight (Liu et al., 2019)",
        ),
        CheckSpec(
            "descending_constraints",
            descending_constraints,
            _descending_applies,
            "every layer descends in expectation, also from perturbed inputs (Hadou et al., 2024)",
        ),
        CheckSpec(
            "safeguard",
            safeguard,
            _layers_applies,
            "safeguarded model continued past K reaches the solution (Heaton et al., 2023)",
        ),
        CheckSpec(
            "restricted_isometry",
            restricted_isometry,
            _isometry_applies,
            "restricted isometry constant of each layer's W·H vs the classical HᵀH/‖H‖² "
            "(Xin et al., 2016) [sampled supports: lower bounds]",
        ),
        CheckSpec(
            "generalization",
            generalization_across_depth,
            _generalization_applies,
            "train at several depths; gap vs √(P log K/|D|) (Schnoor et al., 2023) [heavy]",
        ),
        CheckSpec(
            "objective_descent",
            objective_descent,
            _objective_descent_applies,
            "every layer lowers the mean of the model's own objective (−rate for precoding)",
        ),
    )
}

#: named suites; ``default`` omits the heavy generalization check (it trains models) and the
#: perturbation test ``descending_constraints`` (a target of constraint-trained models, which an
#: unconstrained model need not meet; run it with ``all`` or by name)
SUITES: dict[str, tuple[str, ...]] = {
    "default": (
        "coupling",
        "alista_coherence",
        "linear_convergence",
        "descent",
        "reference_agreement",
        "safeguard",
    ),
    "cheap": ("coupling", "alista_coherence", "linear_convergence", "descent"),
    "all": (
        "coupling",
        "alista_coherence",
        "linear_convergence",
        "descent",
        "reference_agreement",
        "descending_constraints",
        "safeguard",
        "generalization",
        "restricted_isometry",
        "objective_descent",
    ),
}


def resolve_suite(suite: str | Sequence[str]) -> tuple[tuple[str, ...], frozenset[str]]:
    """Check names of ``suite`` and the subset that was named explicitly.

    ``suite`` is a suite name (:data:`SUITES`), a comma-separated string of check and suite
    names, or a sequence of them. Checks that come from a named suite are skipped when they do
    not apply to the model; checks named explicitly are always run (and an inapplicable one is
    an error).
    """
    items = [s.strip() for s in suite.split(",")] if isinstance(suite, str) else list(suite)
    items = [s for s in items if s]
    if not items:
        raise ValueError(f"Empty suite; valid suites: {list(SUITES)}, checks: {list(CHECKS)}.")
    names: list[str] = []
    explicit: set[str] = set()
    for item in items:
        if item in SUITES:
            names.extend(SUITES[item])
        elif item in CHECKS:
            names.append(item)
            explicit.add(item)
        else:
            raise ValueError(
                f"Unknown check or suite {item!r}; valid suites: {list(SUITES)}, "
                f"checks: {list(CHECKS)}."
            )
    return tuple(dict.fromkeys(names)), frozenset(explicit)


def _run_one(
    spec: CheckSpec, ctx: CheckContext, options: Mapping[str, Any], skip_inapplicable: bool
) -> CheckResult:
    try:
        if skip_inapplicable:
            reason = spec.applies(ctx)
            if reason is not None:
                return CheckResult.skipped(spec.name, f"Skipped: {reason}")
        return spec.fn(ctx, **dict(options))
    except NotApplicableError as exc:
        return CheckResult.error(spec.name, f"The check does not apply to this model: {exc}")
    except Exception as exc:  # a report must survive one broken check; the reason is kept
        return CheckResult.error(
            spec.name,
            f"The check raised {type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(limit=5),
        )


def run_checks(
    model: Any,
    problem: ProblemSpec | None = None,
    data: Any = None,
    suite: str | Sequence[str] = "default",
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    n_samples: int = 256,
    seed: int = 0,
    out_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[CheckResult]:
    """Run a suite of checks on one model and return one :class:`CheckResult` per check.

    Args:
        model: a trajectory producer (see :func:`~lightning_unfold.checks.as_trajectory_fn`).
        problem: the problem (default ``model.problem``).
        data: ``(x, target)``, ``x``, a datamodule, or ``None`` (drawn from ``problem``).
        suite: a suite name (``"default"``, ``"cheap"``, ``"all"``), check names, or a
            comma-separated mix. Checks of a *named suite* that do not apply to the model are
            reported as skipped; checks *named explicitly* that do not apply are errors.
            ``"default,reference_agreement"`` forces one check on top of a suite.
        options: per-check keyword arguments, e.g. ``{"linear_convergence": {"q_max": 0.8}}``.
        n_samples: samples used (when ``data`` is a datamodule or ``None``).
        out_dir: if given, the report is written there as by ``lightning-unfold check``:
            ``report.json``, ``report.md`` and the plots (attached to the returned results).
        progress: called with one line before each check (``"[3/6] safeguard …"``) and one
            after it (``"[3/6] safeguard: PASS in 12.4 s"``); ``lightning-unfold check`` prints
            them to stderr, since one check can take minutes.

    Exceptions inside a check become results with status ERROR (never a crash); a plot that
    cannot be drawn is reported in the result's ``details["plot_error"]``.
    """
    names, explicit = resolve_suite(suite)
    opts = dict(options or {})
    unknown = set(opts) - set(CHECKS)
    if unknown:
        raise ValueError(f"options for unknown checks {sorted(unknown)}; valid: {list(CHECKS)}.")
    ctx = prepare(model, problem, data, n_samples=n_samples, seed=seed)
    results = []
    for i, n in enumerate(names, start=1):
        if progress is not None:
            progress(f"[{i}/{len(names)}] {n} …")
        start = time.perf_counter()
        results.append(_run_one(CHECKS[n], ctx, opts.get(n, {}), n not in explicit))
        if progress is not None:
            took = time.perf_counter() - start
            progress(f"[{i}/{len(names)}] {n}: {results[-1].status.label} in {took:.1f} s")
    if out_dir is not None:
        from .report import build_report

        report = build_report(
            results,
            ctx.model,
            (ctx.x, ctx.target),
            out_dir,
            n_samples=n_samples,
            problem=ctx.problem,
        )
        results = list(report.results)
    return results


class BoundCheck:
    """A check bound to its problem, data and options: ``bound(model) -> CheckResult``."""

    def __init__(
        self,
        name: str,
        problem: ProblemSpec | None,
        data: Any,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if name not in CHECKS:
            raise ValueError(f"Unknown check {name!r}; valid: {list(CHECKS)}.")
        self.name, self.problem, self.data = name, problem, data
        self.options = dict(options or {})

    def __call__(self, model: Any) -> CheckResult:
        return CHECKS[self.name].fn(_materialise(model), self.problem, self.data, **self.options)

    def __repr__(self) -> str:
        return f"BoundCheck({self.name})"


_FACTORY_CACHE: dict[int, Any] = {}


def _is_factory(obj: Any) -> bool:
    if not callable(obj) or hasattr(obj, "forward"):
        return False
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in sig.parameters.values()
    )


def _materialise(model: Any) -> Any:
    """Call a zero-argument model factory once (cached); pass models through."""
    if _is_factory(model):
        key = id(model)
        if key not in _FACTORY_CACHE:
            _FACTORY_CACHE[key] = model()
        return _FACTORY_CACHE[key]
    return model


def _model_id(model: Any) -> str:
    name = getattr(model, "__name__", None) or type(model).__name__
    return str(name)


def generate_checks(
    models: Any,
    problem: ProblemSpec | None = None,
    data: Any = None,
    suite: str | Sequence[str] = "cheap",
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Iterator[tuple[Any, BoundCheck]]:
    """Yield ``(model, check)`` pairs: ``check(model)`` runs one check and returns its result.

    ``models`` is one model, a list of models, or a mapping ``{id: model}``; a model may be a
    zero-argument factory (called once, lazily, when its first check runs — so test collection
    does not train anything).
    """
    names, _ = resolve_suite(suite)
    items = models.items() if isinstance(models, Mapping) else None
    seq = list(items) if items is not None else [(None, m) for m in _as_list(models)]
    for _, model in seq:
        for n in names:
            yield model, BoundCheck(n, problem, data, (options or {}).get(n))


def _as_list(models: Any) -> list[Any]:
    return list(models) if isinstance(models, (list, tuple)) else [models]


def pytest_parametrize(
    models: Any,
    problem: ProblemSpec | None = None,
    data: Any = None,
    suite: str | Sequence[str] = "cheap",
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Any:
    """A ``pytest.mark.parametrize`` over ``(model, check)`` with ids ``"<model>-<check>"``.

    Example::

        @checks.pytest_parametrize({"lista_cp": make_model}, problem, (x, s), suite="cheap")
        def test_theory(model, check):
            result = check(model)
            assert result.passed, result.message
    """
    import pytest

    ids: list[str] = []
    pairs = []
    named = models.items() if isinstance(models, Mapping) else None
    seq = list(named) if named is not None else [(None, m) for m in _as_list(models)]
    for key, model in seq:
        for m, check in generate_checks(model, problem, data, suite, options=options):
            pairs.append((m, check))
            ids.append(f"{key if key is not None else _model_id(model)}-{check.name}")
    return pytest.mark.parametrize(("model", "check"), pairs, ids=ids)
