"""IHT and learned IHT: classical-init equivalence, a reference certificate, errors, training,
the restricted-isometry check (must pass / must fail / exactness) and the study's tiny preset."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning_unfold.checks import NotApplicableError, restricted_isometry, run_checks
from lightning_unfold.theory import gershgorin_upper_bound, restricted_isometry_estimate

from lightning_unfold import ClassicalSolver, SparseRecovery, UnfoldedModel
from lightning_unfold.algorithms import ALGORITHMS, IHT, hard_threshold, l0_objective
from lightning_unfold.training import SyntheticDataModule, UnfoldedModule
from lightning_unfold.training.study import study_trainer

F64 = torch.float64
K = 20


def _problem(**kw: Any) -> SparseRecovery:
    args: dict[str, Any] = {"m": 20, "n": 40, "sparsity": 0.1, "rho": 0.1, "seed": 1}
    args.update(kw)
    return SparseRecovery(**args)


# (classical-init equivalence of every paradigm and LIHT form: tests/zoo)
def test_iht_converges_to_a_certified_fixed_point_with_monotone_objective() -> None:
    r"""Reference: at an IHT fixed point the support's entries are the least-squares fit on that
    support (H_Γᵀ r = 0), they exceed θ, and off the support |μ h_jᵀ r| ≤ θ — checked against
    numpy's lstsq, independent of the solver."""
    problem = _problem(m=40, n=80, sparsity=0.05, seed=3)
    x, _ = problem.sample(6, seed=2, dtype=F64)
    alg = IHT(l0_weight=0.01)
    solver = ClassicalSolver(alg, problem, 1, dtype=F64)
    res = solver.solve(x, tol=1e-12, max_iter=5000, keep=True)
    assert res.converged
    obj = torch.stack([solver.objective(s, x) for s in res.trajectory.iterates])
    assert bool((obj[1:] <= obj[:-1] + 1e-10).all()), "IHT must not increase the l0 objective"
    p = solver.layer_params(1)
    mu, theta = float(p["step"]), float(p["threshold"])
    H = problem.H.numpy()
    for s, xi in zip(res.trajectory.final_estimate.numpy(), x.numpy(), strict=True):
        supp = np.flatnonzero(s)
        assert 0 < supp.size < problem.m
        ls = np.linalg.lstsq(H[:, supp], xi, rcond=None)[0]
        np.testing.assert_allclose(s[supp], ls, atol=1e-9)
        assert np.abs(s[supp]).min() > theta
        r = xi - H @ s
        off = np.setdiff1d(np.arange(problem.n), supp)
        assert np.abs(mu * H[:, off].T @ r).max() <= theta + 1e-9


# -- errors --------------------------------------------------------------------------------
def test_invalid_configurations_raise_clear_errors() -> None:
    problem = _problem()
    with pytest.raises(ValueError, match=r"outside \(0, 1/\|\|H\|\|\^2\]"):
        IHT(step=1.5 / problem.lipschitz).classical_params(problem)
    with pytest.raises(ValueError, match="l0_weight"):
        IHT(l0_weight=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        IHT(temperature=float("nan"))
    with pytest.raises(ValueError, match="valid: \\['liht', 'liht_cp', 'direct'\\]"):
        UnfoldedModel(IHT(), problem, 3, "objective", variant="lista")
    from lightning_unfold.algorithms import RPCAProblem

    with pytest.raises(TypeError, match="SparseRecovery"):
        IHT().classical_params(RPCAProblem(n1=6, n2=6, rank=1))
    x, _ = problem.sample(2, seed=0)
    with pytest.raises(ValueError, match="shape"):
        UnfoldedModel(IHT(), problem, 3)(x[:, :5])


def test_hard_threshold_is_exact_forward_and_learns_through_a_surrogate() -> None:
    v = torch.tensor([-0.3, -0.05, 0.0, 0.08, 0.5], dtype=F64, requires_grad=True)
    theta = torch.tensor(0.1, dtype=F64, requires_grad=True)
    out = hard_threshold(v, theta, 0.1)
    assert out.tolist() == [-0.3, 0.0, 0.0, 0.0, 0.5]
    (out.sum()).backward()
    assert theta.grad is not None and float(theta.grad) != 0.0
    theta2 = torch.tensor(0.1, dtype=F64, requires_grad=True)
    exact = hard_threshold(v, theta2, 0.0)  # no surrogate: θ gets no gradient at all
    assert torch.autograd.grad(exact.sum(), [theta2], allow_unused=True) == (None,)
    s = torch.tensor([[1.0, 0.0, -2.0]], dtype=F64)
    H = torch.eye(3, dtype=F64)
    assert float(l0_objective(s, s @ H.T, H, 0.5)) == pytest.approx(1.0)


def test_registered_and_trainable_liht_beats_iht_after_a_short_training() -> None:
    assert {"iht", "liht", "liht_cp"} <= set(ALGORITHMS)
    L.seed_everything(0, verbose=False)
    problem = _problem(m=20, n=40, sparsity=0.1, seed=4)
    module = UnfoldedModule(
        problem,
        algorithm="iht",
        algorithm_options={"l0_weight": 0.002},
        paradigm="objective",
        variant="liht_cp",
        depth=6,
        lr=3e-3,
    )
    x, s = problem.sample(256, seed=99)

    def nmse() -> float:
        with torch.no_grad():
            est = module.model(x).final_estimate
        return float(10 * torch.log10(((est - s) ** 2).sum() / (s**2).sum()))

    before = nmse()
    study_trainer(150).fit(
        module, SyntheticDataModule(problem, batch_size=64, train_batches=150, val_size=16)
    )
    after = nmse()
    assert after < before - 2.0, (before, after)


# -- the restricted-isometry check ---------------------------------------------------------
def test_isometry_estimate_is_exact_when_enumerated_and_a_lower_bound_when_sampled() -> None:
    rng = np.random.default_rng(0)
    A = rng.normal(size=(9, 9)) * 0.3 + np.eye(9)
    s = 3
    brute = max(
        np.linalg.norm(np.eye(s) - A[np.ix_(g, g)], 2) for g in itertools.combinations(range(9), s)
    )
    exact = restricted_isometry_estimate(A, s)
    assert exact.exact and exact.value == pytest.approx(brute, rel=1e-12)
    sampled = restricted_isometry_estimate(A, s, n_supports=5, exhaustive_limit=1, seed=1)
    assert not sampled.exact and sampled.value <= brute + 1e-12
    assert brute <= exact.upper_bound + 1e-12 == gershgorin_upper_bound(A, s) + 1e-12
    # the symmetric case is the RIC of sqrt(mu) H
    H = rng.normal(size=(6, 9)) / math.sqrt(6)
    ric = max(
        max(abs(1 - ev) for ev in np.linalg.eigvalsh(H[:, g].T @ H[:, g]))
        for g in itertools.combinations(range(9), s)
    )
    assert restricted_isometry_estimate(H.T @ H, s).value == pytest.approx(ric, rel=1e-10)
    with pytest.raises(ValueError, match="square"):
        restricted_isometry_estimate(A[:5], s)
    with pytest.raises(ValueError, match="support size"):
        restricted_isometry_estimate(A, 0)


def _iht_model(problem: SparseRecovery, step_factor: float, depth: int = 4) -> UnfoldedModel:
    model = UnfoldedModel(IHT(), problem, depth, "hyperparameters", dtype=F64)
    with torch.no_grad():
        for plist in model.learned["step"]:
            plist.mul_(step_factor)
    return model


@pytest.mark.parametrize("exhaustive_limit", [1, 20_000], ids=["sampled", "exact"])
def test_isometry_check_passes_for_a_better_centred_step(exhaustive_limit: int) -> None:
    problem = _problem(m=12, n=16, sparsity=0.15)  # C(16, 3) = 560 supports
    # μ = 1/‖H‖² leaves 1 − μσ²_min(H_Γ) close to 1; a larger step centres the spectrum
    model = _iht_model(problem, 1.6)
    res = restricted_isometry(model, problem, support_size=3, exhaustive_limit=exhaustive_limit)
    assert res.passed, res.message
    assert res.details["exact"] is (exhaustive_limit > 1)
    assert res.value < res.threshold


def test_isometry_check_fails_for_an_overshooting_step_with_a_certified_counterexample() -> None:
    problem = _problem(m=30, n=60, sparsity=0.1)
    model = _iht_model(problem, 8.0)  # μσ²_max(H_Γ) > 2 on some supports: no contraction
    res = restricted_isometry(model, problem, n_supports=200, threshold=1.0)
    assert not res.passed and res.counterexample is not None
    # the counterexample certifies the failure: recompute its block norm independently
    g = res.counterexample["support"]
    W1 = model.layer_params(res.counterexample["layer"])["step"] * problem.H.T
    A = (W1 @ problem.H).detach().numpy()
    assert np.linalg.norm(np.eye(len(g)) - A[np.ix_(g, g)], 2) >= 1.0
    # and against the classical reference it fails too
    assert not restricted_isometry(model, problem, n_supports=200).passed


def test_isometry_check_reads_liht_and_refuses_corrections() -> None:
    problem = _problem()
    liht = UnfoldedModel(IHT(), problem, 3, "objective", variant="liht_cp", dtype=F64)
    res = restricted_isometry(liht, problem, n_supports=50)
    # classical init: exactly the reference operator
    assert res.value == pytest.approx(res.threshold, rel=1e-12) and not res.passed
    from lightning_unfold import ISTA

    ista = ClassicalSolver(ISTA(), problem, 3, dtype=F64)  # the ISTA family: A = μHᵀH as well
    same = restricted_isometry(ista, problem, n_supports=50)
    assert same.value == pytest.approx(same.threshold, rel=1e-12)
    corr = UnfoldedModel(IHT(), problem, 3, "correction", dtype=F64)
    with pytest.raises(NotApplicableError, match="correction"):
        restricted_isometry(corr, problem)
    (result,) = run_checks(
        liht,
        problem,
        suite=["restricted_isometry"],
        options={"restricted_isometry": {"n_supports": 50}},
    )
    assert result.name == "restricted_isometry" and result.value == pytest.approx(res.value)


# -- the study -----------------------------------------------------------------------------
def test_liht_study_tiny_preset_writes_results(
    tmp_path: Path, load_example: Callable[[str], Any]
) -> None:
    study = load_example("liht_study")
    study.main(["--preset", "tiny", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    depth = study.PRESETS["tiny"].depth
    assert set(results["methods"]) == set(study.METHODS)
    for entry in results["methods"].values():
        assert len(entry["nmse_db"]) == depth
        assert all(math.isfinite(v) for v in entry["nmse_db"])
        assert isinstance(entry["params"], int) and entry["infer_ms"] > 0
    assert "efficiency" in results and "isometry" in results
    assert (tmp_path / "nmse_vs_layer.png").stat().st_size > 0
