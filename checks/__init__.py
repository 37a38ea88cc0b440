"""lightning_unfold.checks: verification checks run on trained unfolded models.

Each check takes a trajectory producer (a model of this library, or any callable
``x -> [s0, ..., sK]``), a problem and data, and returns a :class:`CheckResult`:

* :func:`coupling` — LISTA weight coupling (Chen et al., 2018, Thm. 1);
* :func:`linear_convergence` — linear rate of the error to s* (Chen et al., 2018, Thm. 2);
* :func:`descent` — per-layer descent ratios against 1 − ε (Hadou et al., 2024);
* :func:`reference_agreement` — s^(K) against the CVXPY LASSO solution, KKT residual;
* :func:`descending_constraints` — every layer descends in expectation, also from perturbed
  inputs (Hadou et al., 2024);
* :func:`safeguard` — the safeguarded model continued past K reaches the solution (Heaton et al., 2023);
* :func:`alista_coherence` — coherence of ALISTA's analytic weight (Liu et al., 2019);
* :func:`restricted_isometry` — restricted isometry constant of IHT/ISTA-type layers' W·H
  (Xin et al., 2016), on sampled supports (opt-in, not in the default suite);
* :func:`generalization_across_depth` — gap vs depth against ``√(P log K/|D|)`` (heavy, opt-in);
* :func:`objective_descent` — every layer lowers the model's own objective (−rate for precoding).

:func:`run_checks` runs a suite, :func:`generate_checks` / :func:`pytest_parametrize` expose the
checks to a test suite, :class:`~lightning_unfold.checks.callback.VerificationCallback` runs
them in training, :func:`check_command` is ``lightning-unfold check``.

>>> from lightning_unfold import SparseRecovery, UnfoldedModel, ISTA
>>> from lightning_unfold import checks
>>> problem = SparseRecovery(m=20, n=40, seed=0)
>>> model = UnfoldedModel(ISTA(), problem, depth=8, paradigm="objective", variant="lista_cp")
>>> checks.coupling(model, problem).passed
True
"""

from __future__ import annotations

import importlib
from typing import Any

from .agreement import reference_agreement
from .cli import CheckpointError, check_command, load_checkpoint
from .context import CheckContext, as_check_data, as_trajectory_fn, describe_model, prepare
from .convergence import descent, linear_convergence
from .descending import DEFAULT_BETAS, PERTURBATION_BETAS, descending_constraints, safeguard
from .generalization import assess_generalization, family_of, generalization_across_depth
from .isometry import effective_operators, restricted_isometry
from .objective import objective_descent
from .plots import plot_result, plot_results
from .references import REFERENCES, Reference, resolve_reference
from .report import Report, build_report, format_table, report_for_module
from .result import CheckResult, NotApplicableError, Status
from .runner import (
    CHECKS,
    SUITES,
    BoundCheck,
    CheckSpec,
    generate_checks,
    pytest_parametrize,
    resolve_suite,
    run_checks,
)
from .weights import alista_coherence, analytic_weight, coupling, lista_weights

__all__ = [
    "CHECKS",
    "DEFAULT_BETAS",
    "PERTURBATION_BETAS",
    "REFERENCES",
    "SUITES",
    "BoundCheck",
    "CheckContext",
    "CheckResult",
    "CheckSpec",
    "CheckpointError",
    "NotApplicableError",
    "Reference",
    "Report",
    "Status",
    "VerificationCallback",
    "alista_coherence",
    "analytic_weight",
    "as_check_data",
    "as_trajectory_fn",
    "assess_generalization",
    "build_report",
    "check_command",
    "coupling",
    "descending_constraints",
    "descent",
    "describe_model",
    "effective_operators",
    "family_of",
    "format_table",
    "generalization_across_depth",
    "generate_checks",
    "linear_convergence",
    "lista_weights",
    "load_checkpoint",
    "objective_descent",
    "plot_result",
    "plot_results",
    "prepare",
    "pytest_parametrize",
    "reference_agreement",
    "report_for_module",
    "resolve_reference",
    "resolve_suite",
    "restricted_isometry",
    "run_checks",
    "safeguard",
]


def __getattr__(name: str) -> Any:
    # The callback is the only part that imports Lightning: load it on first use.
    if name == "VerificationCallback":
        return importlib.import_module(f"{__name__}.callback").VerificationCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
