"""lightning_unfold.theory: reference solvers and the quantities behind the guarantees.

Imports torch, numpy, scipy and cvxpy only — never lightning.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .alista import alista_theory_iterates, alista_weight, coherence, mutual_coherence
from .convergence import Envelope, LinearRateFit, fit_envelope, fit_linear_rate
from .coupling import coupled_w2, coupling_residual
from .descent import (
    DescentReport,
    descent_ratios,
    descent_report,
    descent_violation_rate,
    distance_ratios,
    objective_decrease,
)
from .generalization import count_parameters, generalization_bound_shape, generalization_gap
from .isometry import IsometryEstimate, gershgorin_upper_bound, restricted_isometry_estimate
from .lasso import (
    ista_iterates,
    lasso_gradient_norm,
    lasso_kkt_residual,
    lasso_objective,
    lipschitz_constant,
    soft_threshold,
)
from .reference import (
    ReferenceSolverError,
    box_least_squares_reference,
    elastic_net_reference,
    lasso_fista_reference,
    lasso_reference,
    rpca_pcp_reference,
)

__all__ = [
    "DescentReport",
    "Envelope",
    "IsometryEstimate",
    "LinearRateFit",
    "ReferenceSolverError",
    "alista_theory_iterates",
    "alista_weight",
    "box_least_squares_reference",
    "coherence",
    "count_parameters",
    "coupled_w2",
    "coupling_residual",
    "descent_ratios",
    "descent_report",
    "descent_violation_rate",
    "distance_ratios",
    "elastic_net_reference",
    "fit_envelope",
    "fit_linear_rate",
    "generalization_bound_shape",
    "generalization_gap",
    "gershgorin_upper_bound",
    "ista_iterates",
    "lasso_fista_reference",
    "lasso_gradient_norm",
    "lasso_kkt_residual",
    "lasso_objective",
    "lasso_reference",
    "lipschitz_constant",
    "mutual_coherence",
    "objective_decrease",
    "restricted_isometry_estimate",
    "rpca_pcp_reference",
    "soft_threshold",
]


def __getattr__(name: str) -> ModuleType:
    # ``strategies`` needs hypothesis (a test extra): import it only when asked for.
    if name == "strategies":
        return importlib.import_module(f"{__name__}.strategies")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
