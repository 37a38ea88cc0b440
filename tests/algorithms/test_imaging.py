"""Compressive imaging / ADMM-CSNet: the problem, the metrics, the exact Fourier x-update, the
classical-init equivalence against an independent dense ADMM-TV, the CVXPY TV reference, clear
errors, training, the checks and the study's tiny preset."""

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

from lightning_unfold import ClassicalSolver, UnfoldedModel
from lightning_unfold.algorithms import ADMMTV, ALGORITHMS, CompressiveImaging, ImagingBlackBoxNet
from lightning_unfold.algorithms.imaging import (
    filter_transfer,
    finite_difference_filters,
    piecewise_linear,
    psnr,
    soft_threshold_values,
    ssim,
    tv_objective,
)
from lightning_unfold.training import UnfoldedModule

F64 = torch.float64


def _problem(**kw: Any) -> CompressiveImaging:
    args: dict[str, Any] = {"size": 12, "sampling_rate": 0.3, "tv_weight": 0.01, "seed": 1}
    args.update(kw)
    return CompressiveImaging(**args)


# -- the problem and the metrics -------------------------------------------------------------
@pytest.mark.parametrize("kind", ["random", "radial"])
def test_measurements_are_masked_complex_fourier_data_at_the_requested_snr(kind: str) -> None:
    prob = _problem(size=32, sampling_rate=0.25, mask=kind, snr_db=20.0)
    y, x = prob.sample(4, seed=3, dtype=F64)
    assert y.dtype == torch.complex128 and x.dtype == F64
    assert y.shape == x.shape == (4, 32, 32)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.std()) > 0.1
    mask = prob.mask
    assert float(mask[0, 0]) == 1.0 and set(mask.unique().tolist()) == {0.0, 1.0}
    assert bool((y[:, mask == 0] == 0).all())
    if kind == "random":
        assert prob.sampled_fraction == round(0.25 * 32 * 32) / (32 * 32)
    else:  # discrete lines: the closest fraction
        assert abs(prob.sampled_fraction - 0.25) < 0.03
    clean = mask * torch.fft.fft2(x, norm="ortho")
    snr = 10 * torch.log10(clean.abs().pow(2).sum((1, 2)) / (y - clean).abs().pow(2).sum((1, 2)))
    torch.testing.assert_close(snr, torch.full((4,), 20.0, dtype=F64))
    assert torch.equal(prob.sample(4, seed=3, dtype=F64)[0], y)
    assert not torch.equal(prob.sample(4, seed=4, dtype=F64)[1], x)
    assert CompressiveImaging(size=16, sampling_rate=1.0).sampled_fraction == 1.0


def test_psnr_and_ssim_are_torchmetrics_values_with_unit_range() -> None:
    x = torch.rand(3, 16, 16, dtype=F64)
    noisy = x + 0.05 * torch.randn_like(x)
    mse = (noisy - x).pow(2).mean((1, 2))
    torch.testing.assert_close(psnr(noisy, x), -10 * torch.log10(mse))
    torch.testing.assert_close(ssim(x, x), torch.ones(3, dtype=F64))
    worse = x + 0.2 * torch.randn_like(x)
    assert bool((ssim(worse, x) < ssim(noisy, x)).all()) and bool((ssim(noisy, x) < 1).all())
    names = [m.name for m in _problem().metrics()]
    assert names == ["psnr_db", "ssim"] and _problem().metrics()[0].higher_is_better


# -- operators -------------------------------------------------------------------------------
def test_filter_transfer_is_circular_correlation_and_its_adjoint() -> None:
    n = 10
    x = torch.randn(2, n, n, dtype=F64)
    w = torch.randn(3, 3, 3, dtype=F64)
    Dh = filter_transfer(w, n)
    Dx = torch.fft.ifft2(Dh * torch.fft.fft2(x).unsqueeze(1)).real
    direct = sum(
        w[:, a, b].view(1, 3, 1, 1)
        * torch.roll(x, shifts=(-(a - 1), -(b - 1)), dims=(1, 2)).unsqueeze(1)
        for a in range(3)
        for b in range(3)
    )
    torch.testing.assert_close(Dx, direct)
    tv = finite_difference_filters("tv")
    Dtv = torch.fft.ifft2(filter_transfer(tv, n) * torch.fft.fft2(x).unsqueeze(1)).real
    torch.testing.assert_close(Dtv[:, 0], torch.roll(x, -1, 2) - x)
    torch.testing.assert_close(Dtv[:, 1], torch.roll(x, -1, 1) - x)


def test_piecewise_linear_shrinkage_is_the_soft_threshold_at_classical_values() -> None:
    t = torch.linspace(-9, 9, 721, dtype=F64).view(1, 1, 1, -1).expand(1, 2, 1, -1)
    vals = soft_threshold_values().repeat(2, 1)
    expected = torch.sign(t) * (t.abs() - 1).clamp_min(0)
    torch.testing.assert_close(piecewise_linear(t, vals), expected, atol=1e-14, rtol=0)
    bent = vals.clone()
    bent[0, 8] = 0.5  # ψ(0) = 0.5 on channel 0 only
    out = piecewise_linear(torch.zeros(1, 2, 1, 1, dtype=F64), bent)
    assert out.flatten().tolist() == [0.5, 0.0]


def test_x_update_solves_its_subproblem_exactly_with_a_non_symmetric_mask() -> None:
    """The x-update's gradient ∇[½‖M⊙Fx − y‖² + ρ/2 Σ‖D_c x − z_c + u_c‖²] vanishes: the
    symmetrised mask makes the real normal equations exact (the mask is not symmetric)."""
    prob = _problem(size=16)
    m = prob.mask
    assert not torch.equal(m, torch.roll(torch.flip(m, (0, 1)), (1, 1), (0, 1)))
    y, _ = prob.sample(2, seed=0, dtype=F64)
    alg = ADMMTV(penalty=0.3, filters="tv4")
    model = ClassicalSolver(alg, prob, 1, dtype=F64)
    p = model.layer_params(1)
    s0 = alg.init(y, p)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(s0.z.shape, generator=gen, dtype=F64)
    u = torch.randn(s0.z.shape, generator=gen, dtype=F64)
    x = alg.step(type(s0)(x=s0.x, z=z, u=u), y, p, 1).x.clone().requires_grad_(True)
    Dh = filter_transfer(p["filters"], 16)
    Dx = torch.fft.ifft2(Dh * torch.fft.fft2(x).unsqueeze(1)).real
    f = 0.5 * (m * torch.fft.fft2(x, norm="ortho") - y).abs().pow(2).sum()
    f = f + 0.15 * (Dx - z + u).pow(2).sum()
    (grad,) = torch.autograd.grad(f, x)
    assert float(grad.abs().max()) < 1e-10


# -- an independent dense float64 ADMM-TV -----------------------------------------------------
def _dense_operators(
    prob: CompressiveImaging, w: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    n = prob.size
    F = np.fft.fft(np.eye(n), norm="ortho")
    F2 = np.kron(F, F)  # row-major vec of an n×n image
    A = np.real(F2.conj().T @ np.diag(prob.mask.numpy().ravel()) @ F2)
    Ds = []
    for c in range(w.shape[0]):
        D = np.zeros((n * n, n * n))
        for j in range(n * n):
            e = np.zeros(n * n)
            e[j] = 1.0
            img = e.reshape(n, n)
            out = sum(
                w[c, a, b] * np.roll(img, (-(a - 1), -(b - 1)), axis=(0, 1))
                for a in range(3)
                for b in range(3)
            )
            D[:, j] = out.ravel()
        Ds.append(D)
    return A, Ds


def _dense_admm(
    prob: CompressiveImaging, y: np.ndarray, rho: float, lam: float, k: int, w: np.ndarray
) -> list[np.ndarray]:
    """Plain ADMM-TV with a dense linear solve and np.sign soft thresholds; ``k`` iterates."""
    n = prob.size
    A, Ds = _dense_operators(prob, w)
    F = np.fft.fft(np.eye(n), norm="ortho")
    F2 = np.kron(F, F)
    lhs = A + rho * sum(D.T @ D for D in Ds)
    out = []
    for yb in y:
        b0 = np.real(F2.conj().T @ yb.ravel())  # Re F^H (M y), y already masked
        z = [np.zeros(n * n) for _ in Ds]
        u = [np.zeros(n * n) for _ in Ds]
        xs = [np.real(np.fft.ifft2(yb, norm="ortho")).ravel()]
        for _ in range(k):
            x = np.linalg.solve(
                lhs, b0 + rho * sum(D.T @ (zc - uc) for D, zc, uc in zip(Ds, z, u, strict=True))
            )
            for c, D in enumerate(Ds):
                v = D @ x + u[c]
                z[c] = np.sign(v) * np.maximum(np.abs(v) - lam / rho, 0.0)
                u[c] = u[c] + (D @ x - z[c])
            xs.append(x)
        out.append(np.stack(xs).reshape(k + 1, n, n))
    return out


@pytest.mark.parametrize("filters", ["tv", "tv4"])
def test_classical_admm_tv_reproduces_an_independent_dense_admm_tv(filters: str) -> None:
    """The classical solver against a dense float64 ADMM-TV (every paradigm's classical-init
    equivalence to the classical solver is in tests/zoo)."""
    K, rho = 6, 0.2
    prob = _problem(size=8, sampling_rate=0.3)
    y, _ = prob.sample(2, seed=5, dtype=F64)
    alg = ADMMTV(penalty=rho, filters=filters)
    ref = _dense_admm(
        prob, y.numpy(), rho, prob.tv_weight, K, finite_difference_filters(filters).numpy()
    )
    ref_t = torch.from_numpy(np.stack(ref, axis=1))  # (K+1, B, n, n)
    assert float((ref_t[-1] - ref_t[1]).abs().max()) > 1e-3  # the iterates do move
    classical = ClassicalSolver(alg, prob, K, dtype=F64)(y).stacked_estimates()
    assert float((classical - ref_t).abs().max()) <= 1e-8


def test_admm_tv_to_convergence_matches_the_cvxpy_tv_reference() -> None:
    """16×16, complex data as real and imaginary parts; Clarabel's TV solution and ours agree
    to 1e-6 and our objective is not above CVXPY's (up to Clarabel's tolerance)."""
    import cvxpy as cp

    n = 16
    prob = CompressiveImaging(size=n, sampling_rate=0.3, tv_weight=0.01, seed=3)
    y, _ = prob.sample(1, seed=1, dtype=F64)
    res = ClassicalSolver(ADMMTV(penalty=0.5), prob, 1, dtype=F64).solve(
        y, tol=1e-11, max_iter=5000
    )
    assert res.converged, res
    ours = res.trajectory.estimates[-1]
    F = np.fft.fft(np.eye(n), norm="ortho")
    sampled = prob.mask.numpy().ravel().astype(bool)
    A = np.kron(F, F)[sampled]
    yv = y[0].numpy().ravel()[sampled]
    X = cp.Variable((n, n))
    xv = cp.vec(X, order="C")
    dh = cp.hstack([X[:, 1:] - X[:, :-1], X[:, :1] - X[:, -1:]])
    dv = cp.vstack([X[1:, :] - X[:-1, :], X[:1, :] - X[-1:, :]])
    data = cp.sum_squares(A.real @ xv - yv.real) + cp.sum_squares(A.imag @ xv - yv.imag)
    objective = 0.5 * data + prob.tv_weight * (cp.sum(cp.abs(dh)) + cp.sum(cp.abs(dv)))
    problem = cp.Problem(cp.Minimize(objective))
    problem.solve(solver=cp.CLARABEL)
    assert problem.status == cp.OPTIMAL
    ref = torch.from_numpy(X.value)[None]
    assert float((ours - ref).abs().max()) < 1e-6
    ours_obj = float(tv_objective(ours, y, prob.mask, prob.tv_weight))
    assert ours_obj <= float(problem.value) + 1e-8
    assert ours_obj == pytest.approx(
        float(tv_objective(ref, y, prob.mask, prob.tv_weight)), rel=1e-9
    )


# -- errors ----------------------------------------------------------------------------------
def test_bad_data_and_configurations_raise_clear_errors() -> None:
    prob = _problem()
    y, x = prob.sample(2, seed=0)
    model = UnfoldedModel(ADMMTV(), prob, 2)
    with pytest.raises(ValueError, match=r"\(B, 12, 12\)"):
        model(y[:, :8, :8])
    with pytest.raises(ValueError, match="complex"):
        model(y.real)
    with pytest.raises(ValueError, match="nonzero entries where the sampling mask is 0"):
        model(torch.fft.fft2(x, norm="ortho"))
    with pytest.raises(ValueError, match="images' shape"):
        _problem(mask_matrix=np.ones((8, 8)).tolist())
    with pytest.raises(ValueError, match="all zero"):
        _problem(mask_matrix=np.zeros((12, 12)).tolist())
    no_dc = np.ones((12, 12))
    no_dc[0, 0] = 0
    with pytest.raises(ValueError, match="DC coefficient"):
        _problem(mask_matrix=no_dc.tolist())
    with pytest.raises(ValueError, match="binary"):
        _problem(mask_matrix=np.full((12, 12), 0.5).tolist())
    with pytest.raises(ValueError, match="images have shape"):
        prob.measure(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="non-finite"):
        prob.measure(torch.full((1, 12, 12), float("nan")))
    for rate in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"sampling_rate must lie in \(0, 1\]"):
            _problem(sampling_rate=rate)
    with pytest.raises(ValueError, match="Unknown mask"):
        _problem(mask="spiral")
    with pytest.raises(ValueError, match="penalty rho"):
        ADMMTV(penalty=0.0)
    with pytest.raises(ValueError, match="dual step eta"):
        ADMMTV(dual_step=1.7)
    with pytest.raises(ValueError, match="Unknown filter bank"):
        ADMMTV(filters="dct")
    with pytest.raises(ValueError, match="paradigm='objective'"):
        UnfoldedModel(ADMMTV(), prob, 2, "inductive_bias")
    from lightning_unfold import SparseRecovery

    with pytest.raises(TypeError, match="CompressiveImaging"):
        ADMMTV().classical_params(SparseRecovery(m=4, n=8))
    custom = _problem(mask_matrix=prob.mask.tolist())
    assert torch.equal(CompressiveImaging(**custom.init_args()).mask, prob.mask)


# -- baselines, training, checks, study ---------------------------------------------------------
class _RelativeStep(UnfoldedModule):
    """Adam with each tensor's step scaled by its initial magnitude (as examples/csnet_study.py:
    λ ≈ 1e-3 and filter taps ≈ 1 need different steps; one plain lr drives ρ to 0)."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        base = float(self.hparams["lr"])
        groups = [
            {"params": [p], "lr": base * (float(p.detach().abs().mean()) or 1.0)}
            for p in self.parameters()
            if p.requires_grad
        ]
        return torch.optim.Adam(groups)


def test_black_box_matches_its_budget_and_starts_at_the_zero_filled_image() -> None:
    prob = _problem()
    net = ImagingBlackBoxNet(prob, 600)
    count = sum(p.numel() for p in net.parameters())
    assert 0.4 * 600 <= count <= 600
    y, _ = prob.sample(2, seed=0)
    torch.testing.assert_close(net(y), prob.zero_filled(y))


def test_admm_csnet_training_beats_its_classical_start_and_the_checks_report() -> None:
    from lightning_unfold import checks

    assert ALGORITHMS["admm_tv"] is ADMMTV
    L.seed_everything(0, verbose=False)
    prob = _problem(size=16, sampling_rate=0.25, tv_weight=0.003)
    module = _RelativeStep(
        prob,
        algorithm="admm_tv",
        algorithm_options={"penalty": 0.02},
        paradigm="objective",
        depth=4,
        lr=1e-2,
    )
    y, x = prob.sample(16, seed=99)
    metric = prob.metrics()[0]
    before = final_metric(module.model, metric, y, x)
    train_briefly(module, prob, 25)
    after = final_metric(module.model, metric, y, x)
    assert after > before + 0.3, (before, after)
    with torch.no_grad():  # a penalty at its constraint's floor keeps the iteration finite
        for plist in module.model.learned["penalty"]:
            plist.fill_(-1.0)
        assert bool(torch.isfinite(module.model(y).final_estimate).all())
    results = {
        r.name: r for r in checks.run_checks(module, n_samples=8, suite="cheap,objective_descent")
    }
    for r in results.values():
        assert r.status is not checks.Status.ERROR, (r.name, r.message)
        if r.status is checks.Status.SKIPPED:
            assert "Skipped:" in r.message and len(r.message) > 30
    assert results["coupling"].status is checks.Status.SKIPPED


def test_csnet_study_tiny_preset_writes_results(
    tmp_path: Path, load_example: Callable[[str], Any]
) -> None:
    study = load_example("csnet_study")
    study.main(["--preset", "tiny", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    depth = study.PRESETS["tiny"].depth
    assert set(results["methods"]) == set(study.METHODS)
    for name, entry in results["methods"].items():
        assert len(entry["psnr_db"]) == (1 if name == "black_box" else depth + 1)
        assert all(math.isfinite(v) for v in entry["psnr_db"] + entry["ssim"])
        assert isinstance(entry["params"], int) and entry["infer_ms"] > 0
    eff = results["efficiency"]
    assert eff["goal_psnr_db"] == results["methods"]["admm_csnet"]["psnr_db"][-1]
    assert ("classical_iterations" in eff) or ("note" in eff)
    assert (tmp_path / "psnr_vs_stage.png").stat().st_size > 10_000
