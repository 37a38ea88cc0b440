"""RPCA: problem generation, the classical iteration, the four paradigms, errors, training."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch

from lightning_unfold import ALGORITHMS, ClassicalSolver, UnfoldedModel
from lightning_unfold.algorithms.rpca import (
    RPCA,
    RPCABlackBoxNet,
    RPCAConvIteration,
    RPCAProblem,
    RPCAState,
    dct_matrix,
    init_layer_thresholds,
    promote_hyperparameters,
    relative_frobenius_error,
)
from lightning_unfold.core.iterate import iterate_flatten, iterate_unflatten
from lightning_unfold.training import SyntheticDataModule, UnfoldedModule

F64 = torch.float64
TRANSFORMS = ("identity", "orthogonal", "dct")


def _problem(**kw: object) -> RPCAProblem:
    args: dict[str, object] = {"n1": 14, "n2": 10, "rank": 2, "outlier_fraction": 0.1, "seed": 3}
    args.update(kw)
    return RPCAProblem(**args)  # type: ignore[arg-type]


# -- the problem ---------------------------------------------------------------------------
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_sample_shapes_model_and_reproducibility(transform: str) -> None:
    prob = _problem(transform=transform)
    x, target = prob.sample(5, seed=1, dtype=F64)
    assert x.shape == target.shape == (5, 14, 10)
    assert torch.linalg.matrix_rank(target).tolist() == [2] * 5
    outliers = torch.linalg.solve(prob.psi_true, x - target)
    counts = (outliers.abs() > 1e-12).flatten(1).sum(1)
    assert counts.tolist() == [math.floor(0.1 * 140)] * 5
    bound = target.abs().mean(dim=(1, 2))
    assert bool((outliers.abs().flatten(1).amax(1) <= bound + 1e-12).all())
    x2, _ = prob.sample(5, seed=1, dtype=F64)
    x3, _ = prob.sample(5, seed=2, dtype=F64)
    assert torch.equal(x, x2) and not torch.equal(x, x3)


def test_dct_is_orthonormal() -> None:
    C = dct_matrix(9)
    np.testing.assert_allclose(C @ C.T, np.eye(9), atol=1e-12)


def test_mismatched_models_get_noisy_transform_data_uses_true_one() -> None:
    clean, noisy = _problem(), _problem(psi_noise=0.3)
    assert torch.equal(clean.constants()["Psi"], torch.eye(14, dtype=F64))
    gap = float(torch.linalg.matrix_norm(noisy.constants()["Psi"] - torch.eye(14, dtype=F64), 2))
    assert 0.2 < gap < 1.5  # ‖σN‖₂ ≈ 2σ
    xc, _ = clean.sample(3, seed=0, dtype=F64)
    xn, _ = noisy.sample(3, seed=0, dtype=F64)
    assert torch.equal(xc, xn)


def test_config_round_trip_rebuilds_the_same_problem() -> None:
    from lightning_unfold.core.algorithm import problem_from_config

    prob = _problem(transform="orthogonal", psi_noise=0.2)
    back = problem_from_config(prob.to_config())
    assert torch.equal(back.constants()["Psi"], prob.constants()["Psi"])
    custom = _problem(transform_matrix=(2.0 * torch.eye(14, dtype=F64)).tolist())
    again = problem_from_config(custom.to_config())
    assert torch.equal(again.psi_true, custom.psi_true)


# -- errors --------------------------------------------------------------------------------
def test_non_square_observations_work_and_bad_ones_are_refused() -> None:
    prob = _problem(n1=9, n2=16)
    x, _ = prob.sample(2, seed=0)
    traj = ClassicalSolver(RPCA(), prob, 3)(x)
    assert traj.final_estimate.shape == (2, 9, 16)
    assert traj.final.L.shape == (2, 9, 2) and traj.final.R.shape == (2, 16, 2)
    with pytest.raises(ValueError, match=r"shape \(B, 9, 16\)"):
        prob.validate_observation(x.transpose(1, 2))
    with pytest.raises(ValueError, match="shape"):
        prob.validate_observation(x[0])


def test_rank_larger_than_matrix_is_refused() -> None:
    with pytest.raises(ValueError, match=r"r ≤ min\(n1, n2\)"):
        RPCAProblem(n1=8, n2=4, rank=5)
    with pytest.raises(ValueError, match="rank"):
        RPCAProblem(n1=8, n2=4, rank=0)


def test_non_invertible_transform_is_refused() -> None:
    psi = torch.eye(6, dtype=F64)
    psi[5] = psi[4]
    with pytest.raises(ValueError, match="not invertible"):
        RPCAProblem(n1=6, n2=5, rank=1, transform_matrix=psi.tolist())
    with pytest.raises(ValueError, match=r"shape \(n1, n1\)"):
        RPCAProblem(n1=6, n2=5, rank=1, transform_matrix=torch.eye(5).tolist())
    with pytest.raises(ValueError, match="Unknown transform"):
        RPCAProblem(n1=6, n2=5, rank=1, transform="wavelet")


def test_bad_hyperparameters_and_problem_types_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\(0, 2\)"):
        RPCA(step=2.5)
    with pytest.raises(ValueError, match="decay"):
        RPCA(decay=0.0)
    from lightning_unfold import SparseRecovery

    with pytest.raises(TypeError, match="RPCAProblem"):
        RPCA().classical_params(SparseRecovery(m=4, n=6))


# -- the classical iteration ---------------------------------------------------------------
def test_registered_and_iterate_round_trips() -> None:
    assert ALGORITHMS["rpca"] is RPCA
    prob = _problem()
    x, _ = prob.sample(2, seed=0, dtype=F64)
    s = RPCA().init(x, {**prob.constants(), **RPCA().classical_params(prob)})
    assert isinstance(s, RPCAState)
    assert torch.equal(
        iterate_flatten(iterate_unflatten(iterate_flatten(s), s)), iterate_flatten(s)
    )


def test_init_is_the_split_truncated_svd() -> None:
    prob = _problem()
    x, _ = prob.sample(3, seed=0, dtype=F64)
    alg = RPCA(zeta_init=1e6)  # nothing exceeds τ₀: Y⁽⁰⁾ = 0 and LRᵀ is the best rank-r fit of X
    s = alg.init(x, {**prob.constants(), **alg.classical_params(prob)})
    U, S, Vh = torch.linalg.svd(x)
    best = U[:, :, :2] @ torch.diag_embed(S[:, :2]) @ Vh[:, :2]
    torch.testing.assert_close(s.L @ s.R.mT, best, rtol=0, atol=1e-12)
    torch.testing.assert_close(s.L.mT @ s.L, s.R.mT @ s.R, rtol=0, atol=1e-12)  # balanced
    assert float(s.Y.abs().max()) == 0.0


def test_step_matches_a_direct_implementation() -> None:
    prob = _problem(transform="orthogonal")
    x, _ = prob.sample(2, seed=1, dtype=F64)
    alg = RPCA(step=0.7, zeta=1.5, decay=0.6)
    p = {**prob.constants(), **alg.classical_params(prob)}
    s = alg.init(x, p)
    k = 3
    new = alg.step(s, x, p, k)
    Psi = prob.psi_given
    for b in range(2):
        X, L, R = x[b], s.L[b], s.R[b]
        rms = float(X.pow(2).mean().sqrt())
        tau = rms * max(1.5 * 0.6 ** (k - 1), prob.lam)
        V = torch.linalg.inv(Psi) @ (X - L @ R.T)
        Y = torch.sign(V) * torch.clamp(V.abs() - tau, min=0)
        L2 = L - 0.7 * (L @ R.T + Psi @ Y - X) @ R @ torch.linalg.inv(R.T @ R)
        R2 = R - 0.7 * (L2 @ R.T + Psi @ Y - X).T @ L2 @ torch.linalg.inv(L2.T @ L2)
        torch.testing.assert_close(new.Y[b], Y, rtol=0, atol=1e-12)
        torch.testing.assert_close(new.L[b], L2, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(new.R[b], R2, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("transform", ["identity", "dct"])
def test_classical_solver_recovers_the_low_rank_part(transform: str) -> None:
    """Float64, 20×20, r = 2, α = 0.05, lam = 1e-3: the solver run to convergence (change ≤
    1e-12, ~260 iterations) recovers L★R★ᵀ to relative error ≤ 1e-3. The limit is biased by the
    threshold floor (block-coordinate descent on a Huber loss): the error measured is ~2e-4,
    proportional to lam (~2e-5 at lam = 1e-4). Its objective is lower than at K = 10."""
    prob = RPCAProblem(n1=20, n2=20, rank=2, outlier_fraction=0.05, transform=transform, lam=1e-3)
    x, target = prob.sample(4, seed=0, dtype=F64)
    solver = ClassicalSolver(RPCA(), prob, 10, dtype=F64)
    res = solver.solve(x, tol=1e-12, max_iter=5000)
    assert res.converged
    err = relative_frobenius_error(res.trajectory.final_estimate, target)
    assert float(err.max()) < 1e-3
    early = solver(x)
    assert float(relative_frobenius_error(early.final_estimate, target).max()) > float(err.max())
    assert bool(
        (solver.objective(res.trajectory.final, x) <= solver.objective(early.final, x)).all()
    )


def test_classical_agrees_with_convex_pcp_reference() -> None:
    """The convex PCP reference (Candès et al. 2011, Clarabel) and our factorised solver run to
    convergence agree on L★R★ᵀ: both within 1e-3 relative (PCP's λ = 1/√n is exact here; the SDP
    is solved to ~1e-8), so within 2e-3 of each other."""
    theory = pytest.importorskip("lightning_unfold.theory")
    if not hasattr(theory, "rpca_pcp_reference"):
        pytest.skip("lightning_unfold.theory.rpca_pcp_reference is not available")
    prob = RPCAProblem(n1=15, n2=15, rank=1, outlier_fraction=0.05, lam=1e-4, seed=5)
    x, target = prob.sample(1, seed=0, dtype=F64)
    L_pcp, _ = theory.rpca_pcp_reference(x[0].numpy())
    res = ClassicalSolver(RPCA(), prob, 1, dtype=F64).solve(x, tol=1e-12, max_iter=5000)
    ours = res.trajectory.final_estimate[0].numpy()
    ref = target[0].numpy()
    scale = np.linalg.norm(ref)
    assert np.linalg.norm(L_pcp - ref) / scale < 1e-3
    assert np.linalg.norm(ours - ref) / scale < 1e-3
    assert np.linalg.norm(ours - L_pcp) / scale < 2e-3


# -- the four paradigms --------------------------------------------------------------------
@pytest.mark.parametrize("paradigm", ["hyperparameters", "objective", "correction"])
def test_each_paradigm_learns_the_documented_parameters(paradigm: str) -> None:
    """Variants 1 (hyperparameters), 2 (objective: Ψ_k learned) and 3 (correction with promoted
    hyperparameters); their classical-init equivalence is in tests/zoo."""
    prob = _problem(transform="dct", psi_noise=0.2)
    model = UnfoldedModel(RPCA(step=0.8, zeta=1.2, decay=0.6), prob, 10, paradigm, hidden=3)
    if paradigm == "correction":
        assert set(model.learned) == set()
        promote_hyperparameters(model)
    expected = {
        "hyperparameters": {"eta_L", "eta_R", "zeta"},
        "objective": {"transform", "eta_L", "eta_R", "zeta"},
        "correction": {"eta_L", "eta_R", "zeta"},
    }[paradigm]
    assert set(model.learned) == expected
    assert model.stacked("zeta").shape == (10,)


def test_inductive_bias_layers_are_the_identity_transform_iteration_at_init() -> None:
    """Variant 4 at init = the classical iteration with Ψ = I (its conv net never sees Ψ)."""
    prob = _problem()
    x, _ = prob.sample(3, seed=0, dtype=F64)
    alg = RPCA(zeta=1.1, decay=0.6)
    model = UnfoldedModel(alg, prob, 5, "inductive_bias", dtype=F64, hidden=3)
    assert all(isinstance(n, RPCAConvIteration) for n in model.nets)
    init_layer_thresholds(model, alg)
    ref = ClassicalSolver(alg, prob, 5, dtype=F64)(x)
    with torch.no_grad():
        traj = model(x)
    torch.testing.assert_close(traj.final_estimate, ref.final_estimate, rtol=0, atol=1e-8)
    with pytest.raises(TypeError, match="inductive_bias"):
        init_layer_thresholds(UnfoldedModel(alg, prob, 2, "hyperparameters"), alg)


def test_correction_changes_only_factors_and_gradients_reach_it() -> None:
    prob = _problem()
    x, target = prob.sample(3, seed=0)
    model = UnfoldedModel(RPCA(), prob, 2, "correction", hidden=3)
    net = model.nets[0]
    torch.manual_seed(0)
    with torch.no_grad():
        for q in net.parameters():
            q.normal_(0.0, 0.3)
    p = model.layer_params(1)
    s = model.algorithm.init(x, p)
    with torch.no_grad():
        delta = iterate_unflatten(net(model.algorithm.features(s, x, p)), s)
    assert float(delta.Y.abs().max()) == 0.0
    assert float(delta.L.abs().max()) > 0 and float(delta.R.abs().max()) > 0
    loss = relative_frobenius_error(model(x).final_estimate, target).mean()
    loss.backward()
    assert all(q.grad is not None for q in net.parameters())


def test_paradigm_errors_are_clear() -> None:
    with pytest.raises(TypeError, match="correction"):
        promote_hyperparameters(UnfoldedModel(RPCA(), _problem(), 2, "objective"))


def test_black_box_is_a_residual_conv_net_of_comparable_size() -> None:
    prob = _problem()
    objective = UnfoldedModule(prob, paradigm="objective", depth=3).model
    target = sum(p.numel() for p in objective.parameters())
    box = UnfoldedModule(prob, paradigm="black_box", depth=3).model
    assert isinstance(box.net, RPCABlackBoxNet)
    n_params = sum(p.numel() for p in box.parameters())
    assert 0.5 * target <= n_params <= target, (n_params, target)
    x, target_lr = prob.sample(4, seed=(7, 0))
    with torch.no_grad():
        out = box(x).final_estimate
    assert out.shape == target_lr.shape
    torch.testing.assert_close(out, x)  # starts at M = X (zero last layer): not at M = 0
    # scale equivariance: the net sees X / rms(X)
    with torch.no_grad():
        for p in box.net.phi[-1].parameters():
            p.normal_(0.0, 0.1)
        torch.testing.assert_close(box(3.0 * x).final_estimate, 3.0 * box(x).final_estimate)
    with pytest.raises(ValueError, match="layers >= 2"):
        RPCABlackBoxNet(1000, layers=1)


# -- training ------------------------------------------------------------------------------
@pytest.mark.parametrize("paradigm", ["hyperparameters", "correction"])
def test_tiny_end_to_end_training_lowers_the_error(paradigm: str) -> None:
    prob = _problem(psi_noise=0.3)
    torch.manual_seed(0)
    module = UnfoldedModule(
        prob, paradigm=paradigm, depth=3, hidden=2, lr=2e-2, formulation="multi_iteration"
    )
    if paradigm == "correction":
        promote_hyperparameters(module.model)
    x, target = prob.sample(32, seed=(5, 0))

    def error() -> float:
        with torch.no_grad():
            return float(relative_frobenius_error(module.model(x).final_estimate, target).mean())

    before = error()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=30,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, SyntheticDataModule(prob, batch_size=16, train_batches=30, val_size=16))
    after = error()
    assert after < before
    assert module.model.layer_params(2)["eta_L"].item() != pytest.approx(1.0, abs=1e-6)


def test_study_tiny_preset_writes_the_specified_schema(
    tmp_path: Path, load_example: Callable[[str], Any]
) -> None:
    study = load_example("rpca_study")
    study.main(["--preset", "tiny", "--out", str(tmp_path)])
    import json

    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"matched", "mismatched"}
    depth = study.PRESETS["tiny"].depth
    for setting in results.values():
        assert set(setting) == set(study.METHODS)
        for entry in setting.values():
            assert set(entry) == {"rel_error", "params", "infer_ms", "train_s"}
            assert len(entry["rel_error"]) == depth
            assert all(math.isfinite(v) for v in entry["rel_error"])
            assert isinstance(entry["params"], int) and entry["infer_ms"] > 0
        assert setting["classical"]["params"] == 0 and setting["hyperparameters"]["params"] == 9
    assert (tmp_path / "matched.png").stat().st_size > 0
    assert (tmp_path / "mismatched.png").stat().st_size > 0
    extras = json.loads((tmp_path / "extras.json").read_text())
    assert "latency" in extras["matched"] and "grid_search" in extras["mismatched"]
