"""CORONA and ISTA/FISTA-RPCA on complex ultrasound data: the generator, the proximal maps, the
blur operators, classical-init equivalence (complex128), a CVXPY reference and a KKT
certificate, phase equivariance, errors, training and the study's tiny preset."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from algorithm_helpers import final_metric, train_briefly
from algorithm_helpers import trajectory_gap as _gap

from lightning_unfold import ClassicalSolver, UnfoldedModel
from lightning_unfold.algorithms import (
    ALGORITHMS,
    CORONA,
    FISTARPCA,
    ISTARPCA,
    UltrasoundClutter,
)
from lightning_unfold.algorithms.corona import (
    _psf_matrix,
    blur,
    blur_adjoint,
    complex_soft_threshold,
    row_soft_threshold,
    singular_value_threshold,
)
from lightning_unfold.training import UnfoldedModule

F64 = torch.float64
C128 = torch.complex128
K = 10


def _problem(**kw: Any) -> UltrasoundClutter:
    args: dict[str, Any] = {"n_x": 8, "n_z": 8, "n_frames": 10, "rank": 2, "seed": 1}
    args.update(kw)
    return UltrasoundClutter(**args)


# -- the problem ----------------------------------------------------------------------------
def test_sequences_are_complex_seeded_low_rank_plus_sparse_plus_noise() -> None:
    prob = _problem(psf_width=0.0, blood_db=-25.0, noise_db=-40.0)
    x, tgt = prob.sample(4, seed=3, dtype=F64)
    assert x.dtype == C128 and x.shape == (4, 64, 10) and tgt.shape == (4, 2, 64, 10)
    assert prob.sample(2, seed=0)[0].dtype == torch.complex64
    x2, _ = prob.sample(4, seed=3, dtype=F64)
    assert torch.equal(x, x2) and not torch.equal(x, prob.sample(4, seed=4, dtype=F64)[0])
    tissue, blood = tgt[:, 0], tgt[:, 1]
    sv = torch.linalg.svdvals(tissue)
    assert float((sv[:, 2:] / sv[:, :1]).max()) < 1e-12, "the tissue has exactly rank 2"
    power = blood.abs().pow(2).mean(dim=(1, 2)) / tissue.abs().pow(2).mean(dim=(1, 2))
    assert torch.allclose(10 * torch.log10(power), torch.full((4,), -25.0, dtype=F64))
    rows = blood.abs().pow(2).sum(-1)  # the blood lives on the vessel pixels only
    active = (rows > 0).double().mean(dim=1)
    assert float(active.max()) < 0.5 and float(active.min()) > 0.0
    # the blood moves: its echo changes from frame to frame (motion and fast Doppler phase)
    change = (blood[..., 1:] - blood[..., :-1]).abs().pow(2).sum() / blood.abs().pow(2).sum()
    assert float(change) > 0.2
    # the tissue varies slowly: its frame-to-frame change is far smaller
    still = (tissue[..., 1:] - tissue[..., :-1]).abs().pow(2).sum() / tissue.abs().pow(2).sum()
    assert float(still) < 0.1 * float(change)
    noise = x - tissue - blood
    noise_db = 10 * math.log10(float(noise.abs().pow(2).mean()))
    assert abs(noise_db - (-40.0)) < 0.5


def test_blur_is_the_psf_matrix_and_blur_adjoint_its_adjoint() -> None:
    prob = _problem(psf_width=0.5)
    grid = (prob.n_x, prob.n_z)
    H = _psf_matrix(prob.psf, *grid).to(C128)
    h = prob.psf_tensor()
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(2, 64, 10, dtype=C128, generator=gen)
    Y = torch.randn(2, 64, 10, dtype=C128, generator=gen)
    assert torch.allclose(blur(X, h, grid), H @ X, atol=1e-13)
    assert torch.allclose(blur_adjoint(Y, h, grid), H.mH @ Y, atol=1e-13)
    lf = float(torch.linalg.eigvalsh(2.0 * H @ H.mH)[-1].real)
    assert prob.lipschitz == pytest.approx(lf, rel=1e-12)
    assert _problem(psf_width=0.0).lipschitz == pytest.approx(2.0)


def test_proximal_maps_shrink_moduli_keep_phases_and_threshold_singular_values() -> None:
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(3, 7, 5, dtype=C128, generator=gen)
    out = complex_soft_threshold(z, 0.4)
    assert torch.allclose(out.abs(), (z.abs() - 0.4).clamp_min(0.0))
    keep = out.abs() > 0
    assert torch.allclose(torch.angle(out[keep]), torch.angle(z[keep]))
    rows = row_soft_threshold(z, 0.9)
    n_in, n_out = torch.linalg.vector_norm(z, dim=-1), torch.linalg.vector_norm(rows, dim=-1)
    assert torch.allclose(n_out, (n_in - 0.9).clamp_min(0.0))
    nz = n_out > 0  # each surviving row is a positive multiple of the input row
    assert torch.allclose(rows[nz] / z[nz], (n_out[nz] / n_in[nz])[:, None].to(C128))
    svt = singular_value_threshold(z, 0.5)
    assert torch.allclose(
        torch.linalg.svdvals(svt), (torch.linalg.svdvals(z) - 0.5).clamp_min(0.0), atol=1e-12
    )
    # SVT is the prox of 0.5‖·‖_*: 0 ∈ Y − Z + 0.5 ∂‖Y‖_*, i.e. Z − Y = 0.5 (U Vᴴ + W)
    U, s, Vh = torch.linalg.svd(svt[0])
    r = int((s > 1e-10).sum())
    G = (z[0] - svt[0]) / 0.5
    assert torch.allclose(U[:, :r].mH @ G @ Vh[:r].mH, torch.eye(r, dtype=C128), atol=1e-10)
    assert float(torch.linalg.matrix_norm(G, ord=2)) <= 1 + 1e-10
    zero = torch.zeros(2, 3, dtype=C128, requires_grad=True)
    (
        complex_soft_threshold(zero, 0.1).abs().sum() + row_soft_threshold(zero, 0.1).abs().sum()
    ).backward()
    assert bool(torch.isfinite(torch.view_as_real(zero.grad)).all())


# -- CORONA is the corona variant of ISTA-RPCA -----------------------------------------------
def test_corona_registered_algorithm_is_the_corona_variant() -> None:
    assert {"ista_rpca", "fista_rpca", "corona"} <= set(ALGORITHMS)
    prob = _problem(psf_width=0.5)
    x, _ = prob.sample(2, seed=5, dtype=F64)
    a = UnfoldedModel(CORONA(kernel_size=5, time_kernel=1), prob, 4, "objective", dtype=F64)
    b = UnfoldedModel(
        ISTARPCA(kernel_size=5, time_kernel=1), prob, 4, "objective", variant="corona", dtype=F64
    )
    assert _gap(a(x), b(x)) == 0.0  # its classical kernels are ISTA-RPCA's: tests/zoo


def test_corona_is_phase_equivariant_with_learned_complex_kernels() -> None:
    prob = _problem()
    x, _ = prob.sample(2, seed=6, dtype=F64)
    model = UnfoldedModel(ISTARPCA(), prob, 4, "objective", variant="corona", dtype=F64)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for w in model.learned["kernels"]:
            w.add_(0.1 * torch.randn(w.shape, dtype=w.dtype, generator=gen))
    rot = torch.exp(torch.tensor(0.7j, dtype=C128))
    a, b = model(x).final, model(rot * x).final
    assert torch.allclose(b.L, rot * a.L, atol=1e-10) and torch.allclose(b.S, rot * a.S, atol=1e-10)


# -- references -----------------------------------------------------------------------------
def test_fista_rpca_converges_to_the_cvxpy_solution_of_a_complex_instance() -> None:
    """CORONA's mixed ℓ1,2 penalty. (With the entrywise complex ℓ1 penalty Clarabel reports an
    inaccurate solution on this instance, so the ℓ1 branch is not compared with CVXPY.)"""
    import cvxpy as cp

    penalty = "l12"

    prob = _problem(n_x=3, n_z=3, n_frames=5, rank=1, lam=0.4, mu=0.15, blood_db=-10.0)
    x, _ = prob.sample(1, seed=7, dtype=F64)
    D = x[0].numpy()
    Lv = cp.Variable(D.shape, complex=True)
    Sv = cp.Variable(D.shape, complex=True)
    rho = float(np.sqrt(np.mean(np.abs(D) ** 2)))
    sparse = cp.sum(cp.norm(Sv, 2, axis=1)) if penalty == "l12" else cp.sum(cp.abs(Sv))
    cvx = cp.Problem(
        cp.Minimize(
            0.5 * cp.sum_squares(D - Lv - Sv) + rho * (0.4 * cp.normNuc(Lv) + 0.15 * sparse)
        )
    )
    cvx.solve(solver=cp.CLARABEL)
    assert cvx.status == cp.OPTIMAL
    solver = ClassicalSolver(FISTARPCA(penalty=penalty), prob, 1, dtype=F64)
    result = solver.solve(x, tol=1e-13, max_iter=20_000)
    s = result.trajectory.final
    obj = float(solver.objective(s, x)[0])
    assert obj == pytest.approx(float(cvx.value), rel=1e-6)
    assert np.abs(s.L[0].numpy() - Lv.value).max() < 1e-4
    assert np.abs(s.S[0].numpy() - Sv.value).max() < 1e-4


def test_ista_rpca_fixed_point_satisfies_the_kkt_conditions() -> None:
    """Solver-independent certificate at ISTA's limit: with G = Hᴴ(D − HL − HS),
    G = λ(U Vᴴ + W), UᴴW = 0, WV = 0, ‖W‖ ≤ 1, and each row g_i = μ s_i/‖s_i‖ (s_i ≠ 0) or
    ‖g_i‖ ≤ μ (s_i = 0)."""
    prob = _problem(n_x=4, n_z=4, n_frames=6, psf_width=0.5, lam=0.3, mu=0.1, blood_db=-10.0)
    x, _ = prob.sample(1, seed=8, dtype=F64)
    solver = ClassicalSolver(ISTARPCA(), prob, 1, dtype=F64)
    result = solver.solve(x, tol=1e-14, max_iter=20_000)
    assert result.converged
    s, grid, h = result.trajectory.final, (4, 4), prob.psf_tensor()
    rho = float(x.abs().pow(2).mean().sqrt())
    lam, mu = 0.3 * rho, 0.1 * rho
    G = blur_adjoint(x - blur(s.L, h, grid) - blur(s.S, h, grid), h, grid)[0]
    U, sv, Vh = torch.linalg.svd(s.L[0])
    r = int((sv > 1e-9).sum())
    assert 1 <= r < 6
    Ur, Vr = U[:, :r], Vh[:r].mH
    assert torch.allclose(Ur.mH @ G @ Vr, lam * torch.eye(r, dtype=C128), atol=1e-8)
    W = G / lam - Ur @ Vr.mH
    assert float((Ur.mH @ W).abs().max()) < 1e-8 and float((W @ Vr).abs().max()) < 1e-8
    assert float(torch.linalg.matrix_norm(W, ord=2)) <= 1 + 1e-8
    rows = torch.linalg.vector_norm(s.S[0], dim=1)
    on = rows > 1e-12
    assert bool(on.any()) and bool((~on).any())
    expect = mu * s.S[0][on] / rows[on][:, None]
    assert torch.allclose(G[on], expect, atol=1e-8)
    assert float(torch.linalg.vector_norm(G[~on], dim=1).max()) <= mu * (1 + 1e-8)
    # the algorithm's own certificate measures exactly these conditions
    par = {**prob.constants(), **ISTARPCA().classical_params(prob)}
    assert float(ISTARPCA().certificate(s, x, par).values.max()) < 1e-8


# -- errors ---------------------------------------------------------------------------------
def test_bad_data_and_configurations_raise_clear_errors() -> None:
    prob = _problem()
    x, _ = prob.sample(2, seed=0)
    model = UnfoldedModel(ISTARPCA(), prob, 2)
    with pytest.raises(ValueError, match=r"\(B, 64, 10\)"):
        model(x.transpose(1, 2))
    with pytest.raises(ValueError, match="complex"):
        model(x.real.contiguous())
    with pytest.raises(ValueError, match="rank must be an integer"):
        _problem(rank=11)
    with pytest.raises(ValueError, match="rank must be an integer"):
        _problem(rank=0)
    with pytest.raises(ValueError, match="n_x must be an integer >= 2"):
        _problem(n_x=1)
    with pytest.raises(ValueError, match="blood_db"):
        _problem(blood_db=5.0)
    with pytest.raises(ValueError, match="vessels"):
        _problem(vessels=3)
    with pytest.raises(ValueError, match="larger than"):
        _problem(psf_width=3.0)
    with pytest.raises(ValueError, match="1/L_f"):
        ClassicalSolver(ISTARPCA(step=0.6), prob, 2)
    with pytest.raises(ValueError, match="penalty"):
        ISTARPCA(penalty="l2")
    with pytest.raises(ValueError, match="odd integer"):
        CORONA(kernel_size=4)
    with pytest.raises(ValueError, match="increase kernel_size"):
        UnfoldedModel(CORONA(kernel_size=3), _problem(psf_width=0.5), 2, "objective")
    with pytest.raises(ValueError, match="exceeds the 8×8 image"):
        UnfoldedModel(CORONA(kernel_size=9), prob, 2, "objective")
    with pytest.raises(TypeError, match="UltrasoundClutter"):
        from lightning_unfold import SparseRecovery

        ISTARPCA().classical_params(SparseRecovery(m=4, n=8))


# -- training -------------------------------------------------------------------------------
def test_corona_training_improves_held_out_blood_nmse() -> None:
    L.seed_everything(0, verbose=False)
    prob = _problem(lam=0.5, mu=0.1)
    module = UnfoldedModule(
        prob, algorithm="ista_rpca", paradigm="objective", variant="corona", depth=4, lr=3e-3
    )
    x, tgt = prob.sample(32, seed=99)
    blood = prob.metrics()[0]
    before = final_metric(module.model, blood, x, tgt)
    train_briefly(module, prob, 30)
    after = final_metric(module.model, blood, x, tgt)
    assert after < before - 1.0, (before, after)
    assert module.model.learned["kernels"][0].is_complex()


# -- the study ------------------------------------------------------------------------------
def test_corona_study_tiny_preset_writes_results(
    tmp_path: Path, load_example: Callable[[str], Any]
) -> None:
    study = load_example("corona_study")
    study.main(["--preset", "tiny", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    depth = study.PRESETS["tiny"].depth
    assert set(results["methods"]) == set(study.METHODS)
    for entry in results["methods"].values():
        assert len(entry["blood_nmse_db"]) == depth and len(entry["tissue_nmse_db"]) == depth
        assert all(math.isfinite(v) for v in entry["blood_nmse_db"])
        assert isinstance(entry["params"], int) and entry["infer_ms"] > 0
    eff = results["efficiency"]["corona"]
    assert eff["fista_iterations"] is None or eff["fista_iterations"] >= 1
    for check in results["checks"]:
        assert check["status"] in ("passed", "failed", "skipped", "error")
        assert check["status"] != "skipped" or check["reason"]
    assert (tmp_path / "corona_study.png").stat().st_size > 0
