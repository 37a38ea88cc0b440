"""Bad input gets a clear error that names the problem."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_unfold import (
    ISTA,
    ClassicalSolver,
    ConvergenceWarning,
    SolveStatus,
    SparseRecovery,
    UnfoldedModel,
    UnfoldedModule,
    make_algorithm,
)

PROBLEM = SparseRecovery(m=10, n=20, seed=0)


def test_observation_shape_mismatch_names_the_dictionary() -> None:
    model = UnfoldedModel(ISTA(), PROBLEM, 3)
    with pytest.raises(ValueError, match=r"x has shape \(4, 11\).*10×20.*\(B, 10\)"):
        model(torch.zeros(4, 11))
    with pytest.raises(ValueError, match=r"unsqueeze"):
        model(torch.zeros(10))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_observation(bad: float) -> None:
    x = torch.zeros(3, 10)
    x[1, 2] = bad
    with pytest.raises(ValueError, match=r"observation x contains non-finite"):
        UnfoldedModel(ISTA(), PROBLEM, 3)(x)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_dictionary(bad: float) -> None:
    H = torch.randn(10, 20)
    H[0, 0] = bad
    with pytest.raises(ValueError, match=r"dictionary H contains non-finite"):
        SparseRecovery.from_dictionary(H)


def test_dictionary_must_be_a_matrix() -> None:
    with pytest.raises(ValueError, match=r"matrix \(m, n\)"):
        SparseRecovery.from_dictionary(torch.randn(10))


@pytest.mark.parametrize("depth", [0, -3])
def test_depth_below_one(depth: int) -> None:
    with pytest.raises(ValueError, match=r"depth.*>= 1"):
        UnfoldedModel(ISTA(), PROBLEM, depth)
    with pytest.raises(ValueError, match=r"depth.*>= 1"):
        UnfoldedModule(PROBLEM, depth=depth)


def test_step_size_outside_the_convergence_interval() -> None:
    lip = PROBLEM.lipschitz
    for step in (0.0, -0.1, 2.0 / lip, 3.0 / lip):
        with pytest.raises(ValueError, match=r"outside \(0, 2/\|\|H\|\|\^2\)"):
            UnfoldedModel(ISTA(step=step), PROBLEM, 3)
    for variant in ("lista", "lista_cp"):
        with pytest.raises(ValueError, match=r"outside"):
            UnfoldedModel(ISTA(step=5.0 / lip), PROBLEM, 3, "objective", variant=variant)
    # inside the interval but above 1/L: allowed (ISTA still converges)
    UnfoldedModel(ISTA(step=1.5 / lip), PROBLEM, 3)


def test_unknown_paradigm_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"hyperparameters.*objective.*correction.*inductive_bias"):
        UnfoldedModel(ISTA(), PROBLEM, 3, "learned")
    with pytest.raises(ValueError, match=r"classical.*black_box"):
        UnfoldedModule(PROBLEM, paradigm="learned")


def test_unknown_variant_algorithm_and_training_options() -> None:
    with pytest.raises(ValueError, match=r"lista_cp"):
        UnfoldedModel(ISTA(), PROBLEM, 3, "objective", variant="nope")
    with pytest.raises(ValueError, match=r"only"):
        UnfoldedModel(ISTA(), PROBLEM, 3, "hyperparameters", variant="lista")
    with pytest.raises(ValueError, match=r"valid:.*ista"):
        make_algorithm("isra")
    with pytest.raises(ValueError, match=r"supervised.*unsupervised.*semi_supervised"):
        UnfoldedModule(PROBLEM, supervision="self")
    with pytest.raises(ValueError, match=r"end_to_end.*multi_iteration"):
        UnfoldedModule(PROBLEM, formulation="layerwise")
    with pytest.raises(ValueError, match=r"3 layers"):
        UnfoldedModule(PROBLEM, depth=3, formulation="multi_iteration", layer_weights=[1.0])


def test_untied_model_refuses_a_longer_run() -> None:
    model = UnfoldedModel(ISTA(), PROBLEM, 3)
    with pytest.raises(ValueError, match=r"tied=True"):
        model(torch.zeros(2, 10), depth=5)


def test_solver_reports_divergence() -> None:
    solver = ClassicalSolver(ISTA(), PROBLEM, 1)
    x, _ = PROBLEM.sample(2, seed=0)
    with pytest.warns(ConvergenceWarning, match=r"max_iter=5 .*increase max_iter"):
        result = solver.solve(x, tol=1e-30, max_iter=5)
    assert not result.converged and result.iterations == 5
    assert result.status is SolveStatus.MAX_ITER and result.final_change > result.tol
    # a caller that stops early on purpose gets the status without the warning
    quiet = solver.solve(x, tol=1e-30, max_iter=5, warn=False)  # warnings are errors here
    assert quiet.status is SolveStatus.MAX_ITER
    done = ClassicalSolver(ISTA(), PROBLEM, 1, dtype=torch.float64).solve(
        x.double(), tol=1e-6, max_iter=20_000
    )
    assert done.status is SolveStatus.CONVERGED and done.final_change <= 1e-6


def test_problem_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match=r"sparsity"):
        SparseRecovery(sparsity=1.5)
    with pytest.raises(ValueError, match=r"rho"):
        SparseRecovery(rho=-1.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.complex64])
def test_require_finite_fast_path_is_exact(dtype: torch.dtype) -> None:
    """The one-reduction fast path (a finite sum) never hides a NaN or Inf, and a sum that
    overflows although every entry is finite does not raise."""
    from lightning_unfold.core.iterate import require_finite

    big = torch.full((64,), torch.finfo(dtype).max / 2, dtype=dtype)
    require_finite(big, "big")  # the sum overflows to Inf; every entry is finite
    require_finite(torch.zeros(0, dtype=dtype), "empty")
    require_finite(torch.arange(5), "integers")
    for bad, counts in ((float("nan"), r"1 NaN, 0 Inf"), (float("inf"), r"0 NaN, 1 Inf")):
        x = torch.ones(10, dtype=dtype)
        x[3] = bad
        with pytest.raises(ValueError, match=counts):
            require_finite(x, "x")
    x = torch.ones(10, dtype=dtype)
    x[0], x[1] = float("inf"), float("-inf")  # they cancel to NaN in the sum: still caught
    with pytest.raises(ValueError, match=r"0 NaN, 2 Inf"):
        require_finite(x, "x")
