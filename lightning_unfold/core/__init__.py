"""The unfolding abstraction: algorithm declarations, iterates, trajectories, paradigms."""

from lightning_unfold.core.algorithm import (
    Algorithm,
    Certificate,
    Constraint,
    ParamSpec,
    ProblemSpec,
    Role,
    SolverTheory,
    problem_from_config,
)
from lightning_unfold.core.iterate import (
    aux_field,
    iterate_blocks,
    iterate_flatten,
    iterate_map,
    iterate_unflatten,
)
from lightning_unfold.core.metrics import (
    NMSE,
    MeanOf,
    ProblemMetric,
    RateOf,
    RelativeError,
    labelled_rows,
    layer_curves,
    primary_metric,
)
from lightning_unfold.core.networks import ConvDenoiserNet
from lightning_unfold.core.perturb import relative_perturbation
from lightning_unfold.core.safeguard import MU_UPDATES, SafeguardedModel, SafeguardResult
from lightning_unfold.core.trajectory import Trajectory
from lightning_unfold.core.unfolded import (
    PARADIGMS,
    BlackBoxModel,
    ClassicalSolver,
    ConvergenceWarning,
    SolveResult,
    SolveStatus,
    UnfoldedModel,
    promote_hyperparameters,
)

__all__ = [
    "MU_UPDATES",
    "NMSE",
    "PARADIGMS",
    "Algorithm",
    "BlackBoxModel",
    "Certificate",
    "ClassicalSolver",
    "Constraint",
    "ConvDenoiserNet",
    "ConvergenceWarning",
    "MeanOf",
    "ParamSpec",
    "ProblemMetric",
    "ProblemSpec",
    "RateOf",
    "RelativeError",
    "Role",
    "SafeguardResult",
    "SafeguardedModel",
    "SolveResult",
    "SolveStatus",
    "SolverTheory",
    "Trajectory",
    "UnfoldedModel",
    "aux_field",
    "iterate_blocks",
    "iterate_flatten",
    "iterate_map",
    "iterate_unflatten",
    "labelled_rows",
    "layer_curves",
    "primary_metric",
    "problem_from_config",
    "promote_hyperparameters",
    "relative_perturbation",
]
