"""lightning_unfold: deep unfolding for PyTorch Lightning, with a theory-check toolkit.

>>> from lightning_unfold import SparseRecovery, UnfoldedModule, SyntheticDataModule
>>> problem = SparseRecovery(m=50, n=100, seed=0)
>>> module = UnfoldedModule(problem, paradigm="objective", variant="alista", depth=10)
"""

from typing import Any

from lightning_unfold.algorithms import (
    ALGORITHMS,
    ALISTA,
    FISTA,
    ISTA,
    LISTA,
    LISTACP,
    LISTACPSS,
    ADMMLasso,
    SparseRecovery,
    make_algorithm,
    register_algorithm,
)
from lightning_unfold.core import (
    PARADIGMS,
    Algorithm,
    BlackBoxModel,
    ClassicalSolver,
    Constraint,
    ConvDenoiserNet,
    ConvergenceWarning,
    ParamSpec,
    ProblemSpec,
    Role,
    SolveResult,
    SolveStatus,
    Trajectory,
    UnfoldedModel,
    promote_hyperparameters,
)
from lightning_unfold.core.safeguard import SafeguardedModel

# Lightning is imported only when a training name is first used, so that
# ``import lightning_unfold.theory`` (and the core) never pulls Lightning in.
_TRAINING_NAMES = (
    "BASELINES",
    "SyntheticDataModule",
    "UnfoldedModule",
    "UserDataModule",
    "build_model",
    "DescendingConstraints",
)


def __getattr__(name: str) -> Any:
    if name in _TRAINING_NAMES:
        from lightning_unfold import training

        return getattr(training, name)
    raise AttributeError(f"module 'lightning_unfold' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS",
    "ALISTA",
    "BASELINES",
    "FISTA",
    "ISTA",
    "LISTA",
    "LISTACP",
    "LISTACPSS",
    "PARADIGMS",
    "ADMMLasso",
    "Algorithm",
    "BlackBoxModel",
    "ClassicalSolver",
    "Constraint",
    "ConvDenoiserNet",
    "ConvergenceWarning",
    "DescendingConstraints",
    "ParamSpec",
    "ProblemSpec",
    "Role",
    "SafeguardedModel",
    "SolveResult",
    "SolveStatus",
    "SparseRecovery",
    "SyntheticDataModule",
    "Trajectory",
    "UnfoldedModel",
    "UnfoldedModule",
    "UserDataModule",
    "__version__",
    "build_model",
    "make_algorithm",
    "promote_hyperparameters",
    "register_algorithm",
]
