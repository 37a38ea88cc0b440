"""Every check passes where the theory holds and fails where it does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from checks_helpers import DEPTH, PlainLISTA
from lightning_unfold.checks import CheckResult, Status
from torch import Tensor

from lightning_unfold import (
    ISTA,
    ClassicalSolver,
    SparseRecovery,
    Trajectory,
    UnfoldedModel,
    checks,
)


# -- adapter -------------------------------------------------------------------------------
def test_plain_callable_is_adapted(problem: SparseRecovery, data: tuple[Tensor, Tensor]) -> None:
    lista = PlainLISTA(problem.H, problem.rho, DEPTH)
    traj = checks.as_trajectory_fn(lista)(data[0])
    assert isinstance(traj, Trajectory) and traj.depth == DEPTH
    lib = ClassicalSolver(ISTA(), problem, DEPTH)
    # the plain LISTA at its ISTA initialisation reproduces the library's ISTA
    ref = lib(data[0].float()).final_estimate
    assert torch.allclose(traj.final_estimate, ref, atol=1e-5)


def test_adapter_rejects_bad_outputs(data: tuple[Tensor, Tensor]) -> None:
    with pytest.raises(TypeError, match="list"):
        checks.as_trajectory_fn(lambda x: x)(data[0])
    with pytest.raises(TypeError, match="trajectory producer"):
        checks.as_trajectory_fn(3)


def test_result_status_is_consistent() -> None:
    r = CheckResult("x", False, 1.0, 0.5, "m")
    assert r.status is Status.FAILED and "failed" in r.status.value
    with pytest.raises(ValueError, match="passed=True"):
        CheckResult("x", True, 1.0, 0.5, "m", status=Status.ERROR)
    assert CheckResult.error("x", "why").passed is False


# -- coupling ------------------------------------------------------------------------------
def test_coupling_fails_for_lista_with_random_w2(problem: SparseRecovery) -> None:
    g = torch.Generator().manual_seed(0)
    w2 = [torch.randn(40, 40, generator=g) / 40**0.5 for _ in range(DEPTH)]
    r = checks.coupling(PlainLISTA(problem.H, problem.rho, DEPTH, w2=w2), problem)
    assert not r.passed and r.status is Status.FAILED
    assert r.value is not None and r.value > 0.5
    assert r.counterexample is not None and 1 <= r.counterexample["layer"] <= DEPTH


def test_coupling_passes_for_lista_cp(problem: SparseRecovery) -> None:
    lib = UnfoldedModel(ISTA(), problem, DEPTH, "objective", variant="lista_cp")
    with torch.no_grad():  # perturb W1 so the coupling is not ISTA's by accident
        for p in lib.learned["W1"]:
            p.add_(0.01 * torch.randn_like(p))
    assert checks.coupling(lib, problem).passed
    # the plain LISTA with W2 = I − W1 H is coupled too
    plain = PlainLISTA(problem.H, problem.rho, DEPTH)
    r = checks.coupling(plain, problem)
    assert r.passed and r.value is not None and r.value < 1e-5


def test_coupling_passes_when_residual_decays(problem: SparseRecovery) -> None:
    H = problem.H.float()
    plain = PlainLISTA(problem.H, problem.rho, DEPTH)
    R = torch.randn(40, 40, generator=torch.Generator().manual_seed(1)) / 40**0.5
    W1 = torch.stack([w.detach() for w in plain.W1])
    W2 = torch.eye(40) - W1 @ H + torch.stack([0.5**k * R for k in range(DEPTH)])
    r = checks.coupling(None, problem, weights=(W1, W2))
    assert r.passed and r.details["log_slope"] < 0
    grow = torch.eye(40) - W1 @ H + torch.stack([0.1 * 1.3**k * R for k in range(DEPTH)])
    assert not checks.coupling(None, problem, weights=(W1, grow)).passed


# -- linear convergence --------------------------------------------------------------------
def test_linear_convergence_passes_for_trained_alista(
    trained_alista: UnfoldedModel, problem: SparseRecovery, data: tuple[Tensor, Tensor]
) -> None:
    r = checks.linear_convergence(trained_alista, problem, data)
    assert r.passed, r.message
    assert r.details["reference"] == "truth" and r.value is not None and r.value <= 0.9
    assert r.details["fit"]["r2"] >= 0.9


@pytest.mark.parametrize("reference", ["truth", "lasso"])
def test_linear_convergence_fails_for_ista_at_same_depth(
    problem: SparseRecovery, data: tuple[Tensor, Tensor], reference: str
) -> None:
    r = checks.linear_convergence(
        ClassicalSolver(ISTA(), problem, DEPTH), problem, data, reference=reference
    )
    assert not r.passed and r.value is not None and r.value > 0.9
    assert r.counterexample is not None and len(r.counterexample["x"]) == problem.m


def test_linear_convergence_auto_reference(
    problem: SparseRecovery, data: tuple[Tensor, Tensor]
) -> None:
    plain = PlainLISTA(problem.H, problem.rho, DEPTH)
    assert checks.linear_convergence(plain, problem, data).details["reference"] == "truth"
    assert checks.linear_convergence(plain, problem, data[0]).details["reference"] == "lasso"
    solver = ClassicalSolver(ISTA(), problem, DEPTH)
    assert checks.linear_convergence(solver, problem, data).details["reference"] == "lasso"


# -- descent -------------------------------------------------------------------------------
class _BadLayer:
    """Wraps a trajectory producer; layer ``k`` moves the iterate away (doubles it)."""

    def __init__(self, inner: object, k: int) -> None:
        self.inner, self.k = inner, k

    def __call__(self, x: Tensor) -> list[Tensor]:
        its = list(checks.as_trajectory_fn(self.inner)(x).estimates)
        its[self.k] = 2.0 * its[self.k] + 0.5
        return its


@pytest.mark.parametrize("quantity", ["distance", "gradient"])
def test_descent_passes_for_ista(
    problem: SparseRecovery, data: tuple[Tensor, Tensor], quantity: str
) -> None:
    r = checks.descent(ClassicalSolver(ISTA(), problem, DEPTH), problem, data, quantity=quantity)
    assert r.passed, r.message
    assert r.value == 0.0 and len(r.details["ratios"]) == DEPTH


def test_descent_fails_for_a_layer_that_increases_the_error(
    trained_alista: UnfoldedModel, problem: SparseRecovery, data: tuple[Tensor, Tensor]
) -> None:
    assert checks.descent(trained_alista, problem, data).passed
    r = checks.descent(_BadLayer(trained_alista, 4), problem, data)
    assert not r.passed and r.status is Status.FAILED
    assert 4 in r.details["violated_layers"]
    assert r.counterexample is not None and r.counterexample["layer"] == 4
    assert r.counterexample["after"] > r.counterexample["before"]


def test_descent_eps_makes_it_stricter(
    problem: SparseRecovery, data: tuple[Tensor, Tensor]
) -> None:
    solver = ClassicalSolver(ISTA(), problem, DEPTH)
    r = checks.descent(solver, problem, data, eps=0.5, max_violation_rate=0.0)
    assert not r.passed and r.value is not None and r.value > 0


# -- reference agreement -------------------------------------------------------------------
def test_reference_agreement_passes_for_converged_ista(
    problem: SparseRecovery, data: tuple[Tensor, Tensor]
) -> None:
    solver = ClassicalSolver(ISTA(), problem, 600, dtype=torch.float64)
    r = checks.reference_agreement(solver, problem, data, n_reference=4)
    assert r.passed, r.message
    assert max(r.details["reference_kkt_residual"]) < 1e-3


def test_reference_agreement_fails_for_shallow_ista(
    problem: SparseRecovery, data: tuple[Tensor, Tensor]
) -> None:
    r = checks.reference_agreement(
        ClassicalSolver(ISTA(), problem, 3), problem, data, n_reference=4
    )
    assert not r.passed and r.status is Status.FAILED and r.value is not None and r.value > 0.05
    assert r.counterexample is not None


@pytest.mark.parametrize(
    ("solver", "opts", "match"),
    [("CLARABEL", {"max_iter": 1}, "status"), ("NOT_A_SOLVER", {}, "not installed")],
)
def test_reference_agreement_solver_failure_is_a_failed_result(
    problem: SparseRecovery,
    data: tuple[Tensor, Tensor],
    solver: str,
    opts: dict[str, int],
    match: str,
) -> None:
    r = checks.reference_agreement(
        ClassicalSolver(ISTA(), problem, 5),
        problem,
        data,
        n_reference=2,
        solver=solver,
        solver_opts=opts,
    )
    assert not r.passed and r.status is Status.ERROR and match in r.message


# -- ALISTA coherence ----------------------------------------------------------------------
def test_alista_coherence_passes_for_analytic_weight(
    trained_alista: UnfoldedModel, problem: SparseRecovery
) -> None:
    r = checks.alista_coherence(trained_alista, problem)
    assert r.passed and r.value is not None and r.threshold is not None
    assert r.value < r.threshold


def test_alista_coherence_fails_for_other_weights(problem: SparseRecovery) -> None:
    H = problem.H.numpy()
    rng = np.random.default_rng(12345)  # not the problem's seed: that would give W ∝ H
    W = rng.normal(size=H.shape)
    W /= np.einsum("ij,ij->j", W, H)  # feasible (diag(WᵀH) = 1) but not coherence-minimising
    r = checks.alista_coherence(None, problem, weight=W)
    assert not r.passed and r.counterexample is not None and len(r.counterexample["atoms"]) == 2
    r2 = checks.alista_coherence(None, problem, weight=1.1 * H)
    assert not r2.passed and "diag" in r2.message


def test_alista_coherence_does_not_apply_to_lista(problem: SparseRecovery) -> None:
    lista = UnfoldedModel(ISTA(), problem, DEPTH, "objective", variant="lista")
    with pytest.raises(checks.NotApplicableError, match="analytic weight"):
        checks.alista_coherence(lista, problem)


# -- generalization ------------------------------------------------------------------------
def test_generalization_tiny_config_passes() -> None:
    prob = SparseRecovery(m=10, n=20, sparsity=0.1, seed=1)
    model = UnfoldedModel(ISTA(), prob, 2, "objective", variant="alista")
    r = checks.generalization_across_depth(
        model, prob, depths=(1, 2, 4), n_train=32, n_test=128, steps=25, lr=0.02
    )
    assert r.passed, r.message
    assert r.details["depths"] == [1, 2, 4] and r.details["params"] == [2, 4, 8]
    assert all(np.isfinite(r.details["gap"]))


def test_generalization_fails_when_gap_outgrows_the_bound() -> None:
    r = checks.assess_generalization(
        depths=[2, 4, 8],
        train_loss=[0.10, 0.05, 0.01],
        test_loss=[0.11, 0.30, 0.90],
        test_se=[0.002, 0.002, 0.002],
        params=[4, 8, 16],
        n_train=64,
    )
    assert not r.passed and r.value is not None and r.value > 1
    assert r.counterexample == {"depth": 8, "gap": pytest.approx(0.89)}


def test_generalization_draw_se_widens_the_allowance_and_one_draw_is_unchanged() -> None:
    # the same losses fail with the test standard error alone; a large spread of the gap across
    # training draws (draw_se) widens the calibration and the allowance by hypot(se_test, se_D)
    kw = dict(
        depths=[2, 4, 8],
        train_loss=[0.10, 0.05, 0.01],
        test_loss=[0.11, 0.30, 0.90],
        test_se=[0.002, 0.002, 0.002],
        params=[4, 8, 16],
        n_train=64,
    )
    one = checks.assess_generalization(**kw)  # type: ignore[arg-type]
    assert not one.passed and one.details["n_draws"] == 1 and "draw_se" not in one.details
    wide = checks.assess_generalization(**kw, draw_se=[0.1, 0.1, 0.3], n_draws=4)  # type: ignore[arg-type]
    se = np.hypot(0.002, [0.1, 0.1, 0.3])
    assert wide.details["se"] == pytest.approx(se.tolist())
    a = 2 * se[0] / wide.details["bound_shape"][0]
    allowed = 2 * a * np.asarray(wide.details["bound_shape"]) + 2 * se
    assert wide.details["allowed"] == pytest.approx(allowed.tolist())
    assert wide.passed and wide.value is not None and wide.value < one.value  # type: ignore[operator]
    assert "mean over 4 training draws" in wide.message
    zero = checks.assess_generalization(**kw, draw_se=[0.0, 0.0, 0.0], n_draws=4)  # type: ignore[arg-type]
    assert zero.value == one.value and zero.details["allowed"] == one.details["allowed"]
    with pytest.raises(ValueError, match="draw standard error"):
        checks.assess_generalization(**kw, draw_se=[0.1], n_draws=2)  # type: ignore[arg-type]


def test_generalization_n_draws_averages_independent_training_sets() -> None:
    prob = SparseRecovery(m=10, n=20, sparsity=0.1, seed=1)
    model = UnfoldedModel(ISTA(), prob, 2, "objective", variant="alista")
    kw = dict(depths=(1, 2), n_train=8, n_test=32, steps=5, lr=0.02)
    one = checks.generalization_across_depth(model, prob, **kw)  # type: ignore[arg-type]
    again = checks.generalization_across_depth(model, prob, **kw, n_draws=1)  # type: ignore[arg-type]
    assert again.value == one.value and again.details["gap"] == one.details["gap"]
    # recompute the single-draw verdict by hand: n_draws = 1 is the plain assessment
    plain = checks.assess_generalization(
        one.details["depths"],
        one.details["train_loss"],
        one.details["test_loss"],
        one.details["test_se"],
        one.details["params"],
        8,
    )
    assert plain.value == one.value
    many = checks.generalization_across_depth(model, prob, **kw, n_draws=3)  # type: ignore[arg-type]
    assert many.details["n_draws"] == 3 and len(many.details["draw_se"]) == 2
    assert all(s > 0 for s in many.details["draw_se"])  # the draws differ
    assert many.details["gap"] != one.details["gap"]
    assert all(s >= t for s, t in zip(many.details["se"], many.details["test_se"], strict=True))
    with pytest.raises(ValueError, match="n_draws"):
        checks.generalization_across_depth(model, prob, **kw, n_draws=0)  # type: ignore[arg-type]
