"""Blind deblurring and DUBLID: classical-init equivalence, the closed-form steps against dense
float64 solves, the simplex projection, the converged fixed point, the shift-aligned metrics,
bad input, shipped images, training and the study's tiny preset."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from algorithm_helpers import hide_skimage, needs_skimage, trajectory_gap

from lightning_unfold import ALGORITHMS, ClassicalSolver, SparseRecovery, UnfoldedModel
from lightning_unfold.algorithms import BlindDeblurring, HQSBlindDeblur
from lightning_unfold.algorithms.dublid import (
    DEBLUR_IMAGES,
    DeblurState,
    aligned_kernel_error,
    aligned_psnr,
    blur,
    embed_kernel,
    filter_responses,
    image_step,
    kernel_step,
    motion_kernel,
    project_simplex,
)
from lightning_unfold.algorithms.dublid.operators import crop_kernel, transfers
from lightning_unfold.algorithms.imaging import finite_difference_filters
from lightning_unfold.core.algorithm import problem_from_config
from lightning_unfold.core.metrics import layer_curves
from lightning_unfold.training.module import UnfoldedModule

F64 = torch.float64


def _problem(**kw: object) -> BlindDeblurring:
    args = {"size": 24, "kernel_size": 7, "source": "synthetic", "seed": 1, **kw}
    return BlindDeblurring(**args)  # type: ignore[arg-type]


# -- dense references -------------------------------------------------------------------------
def _conv_matrix(k: np.ndarray, n: int) -> np.ndarray:
    """The n² × n² matrix of x ↦ k ⊛ x (circular, k centred on its middle tap), built entry by
    entry from the definition (k ⊛ x)_p = Σ_q k_q x_{p−q}."""
    m, r = k.shape[0], k.shape[0] // 2
    A = np.zeros((n * n, n * n))
    for p1 in range(n):
        for p2 in range(n):
            for a in range(m):
                for b in range(m):
                    q1, q2 = (p1 - (a - r)) % n, (p2 - (b - r)) % n
                    A[p1 * n + p2, q1 * n + q2] += k[a, b]
    return A


def _corr_matrix(w: np.ndarray, n: int) -> np.ndarray:
    """The n² × n² matrix of the 3×3 correlation (f ⊛ x)_p = Σ_ab w_ab x_{p + (a−1, b−1)}."""
    A = np.zeros((n * n, n * n))
    for p1 in range(n):
        for p2 in range(n):
            for a in range(3):
                for b in range(3):
                    A[p1 * n + p2, ((p1 + a - 1) % n) * n + (p2 + b - 1) % n] += w[a, b]
    return A


@pytest.mark.parametrize("bank", ["tv", "tv4"])
def test_image_step_is_the_dense_least_squares_solution(bank: str) -> None:
    rng = np.random.default_rng(0)
    n, m = 8, 3
    k = motion_kernel(rng, m)
    y, w = rng.normal(size=(n, n)), finite_difference_filters(bank).numpy()
    z = rng.normal(size=(w.shape[0], n, n))
    zeta = rng.uniform(0.1, 1.0, size=w.shape[0])
    Kmat = _conv_matrix(k, n)
    lhs, rhs = Kmat.T @ Kmat, Kmat.T @ y.ravel()
    for i in range(w.shape[0]):
        Fi = _corr_matrix(w[i], n)
        lhs += zeta[i] * Fi.T @ Fi
        rhs += zeta[i] * Fi.T @ z[i].ravel()
    dense = np.linalg.solve(lhs, rhs).reshape(n, n)
    D = transfers(torch.from_numpy(w), n)
    ours = image_step(
        torch.from_numpy(k)[None],
        torch.from_numpy(z)[None],
        torch.from_numpy(y)[None],
        D,
        torch.from_numpy(zeta),
    )[0]
    np.testing.assert_allclose(ours.numpy(), dense, atol=1e-10)
    # the filter responses and the blur are the dense operators too
    np.testing.assert_allclose(
        blur(torch.from_numpy(y)[None], torch.from_numpy(k)[None])[0].numpy().ravel(),
        Kmat @ y.ravel(),
        atol=1e-12,
    )
    fx = filter_responses(torch.from_numpy(y)[None], D)[0]
    np.testing.assert_allclose(fx[0].numpy().ravel(), _corr_matrix(w[0], n) @ y.ravel(), atol=1e-12)


def test_kernel_step_is_the_dense_least_squares_solution_then_the_simplex_projection() -> None:
    rng = np.random.default_rng(1)
    n, m, eps = 6, 3, 0.3
    w = finite_difference_filters("tv").numpy()
    y, z = rng.normal(size=(n, n)), rng.normal(size=(2, n, n))
    # k ⊛ z_i is linear in k over all n × n kernels (origin at (0, 0)): column q is z_i shifted
    cols = []
    for q1 in range(n):
        for q2 in range(n):
            cols.append(np.roll(z, (q1, q2), axis=(1, 2)).reshape(2, -1))
    Z = np.stack(cols, axis=-1)  # (2, n², n²)
    lhs = sum(Z[i].T @ Z[i] for i in range(2)) + eps * np.eye(n * n)
    rhs = sum(Z[i].T @ (_corr_matrix(w[i], n) @ y.ravel()) for i in range(2))
    dense = np.linalg.solve(lhs, rhs).reshape(n, n)
    D = transfers(torch.from_numpy(w), n)
    k, full = kernel_step(
        torch.from_numpy(z)[None], torch.from_numpy(y)[None], D, torch.tensor(eps, dtype=F64), m
    )
    np.testing.assert_allclose(full[0].numpy(), dense, atol=1e-10)
    expected = project_simplex(crop_kernel(torch.from_numpy(dense)[None], m))
    torch.testing.assert_close(k, expected, rtol=0, atol=1e-12)
    # embed and crop are inverse on the box
    torch.testing.assert_close(crop_kernel(embed_kernel(k, n), m), k, rtol=0, atol=0)


def test_simplex_projection_satisfies_its_optimality_conditions() -> None:
    """p = argmin ‖p − v‖ on the simplex ⟺ p = max(v − τ, 0) with Σp = 1 (KKT); τ is found
    here independently by bisection on the monotone Σ max(v − τ, 0)."""
    g = torch.Generator().manual_seed(0)
    v = torch.randn(20, 5, 5, generator=g, dtype=F64) * torch.tensor([0.01, 1.0, 10.0]).repeat(7)[
        :20
    ].view(-1, 1, 1)
    p = project_simplex(v)
    assert bool((p >= 0).all())
    torch.testing.assert_close(p.flatten(1).sum(1), torch.ones(20, dtype=F64))
    flat = v.flatten(1)
    lo, hi = flat.min(1).values - 1.0, flat.max(1).values
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        over = (flat - mid[:, None]).clamp_min(0).sum(1) > 1.0
        lo, hi = torch.where(over, mid, lo), torch.where(over, hi, mid)
    ref = (flat - (0.5 * (lo + hi))[:, None]).clamp_min(0).reshape(v.shape)
    torch.testing.assert_close(p, ref, rtol=0, atol=1e-12)
    on = project_simplex(p)  # a point on the simplex is its own projection
    torch.testing.assert_close(on, p, rtol=0, atol=1e-14)


# -- classical-init equivalence and the classical run ------------------------------------------
KEEPS_ITERATION = [
    ("hyperparameters", False, False, False),
    ("hyperparameters", True, False, False),
    ("objective", False, False, False),
    ("objective", True, False, False),
    ("correction", False, False, False),
    ("correction", True, False, True),
]


@pytest.mark.parametrize(("paradigm", "tied", "shared", "learn_h"), KEEPS_ITERATION, ids=str)
def test_classical_init_reproduces_the_alternation(
    paradigm: str, tied: bool, shared: bool, learn_h: bool
) -> None:
    prob = _problem()
    x, _ = prob.sample(3, seed=0, dtype=F64)
    alg = {"threshold": 0.08, "penalty": 0.05, "kernel_reg": 3.0, "filters": "tv4"}
    ref = ClassicalSolver(HQSBlindDeblur(**alg), prob, 6, dtype=F64)(x)
    model = UnfoldedModel(
        HQSBlindDeblur(**alg),
        prob,
        6,
        paradigm,
        tied=tied,
        hidden=4,
        shared_correction=shared,
        learn_hyperparameters=learn_h,
        dtype=F64,
    )
    assert trajectory_gap(model(x), ref) <= 1e-10


def test_converged_classical_run_is_a_fixed_point_and_deblurs() -> None:
    prob = _problem(snr_db=40.0)
    x, target = prob.sample(4, seed=2, dtype=F64)
    solver = ClassicalSolver(
        HQSBlindDeblur(threshold=0.05, penalty=0.05, kernel_reg=1.0), prob, 1, dtype=F64
    )
    res = solver.solve(x, tol=1e-9, max_iter=3000)
    assert res.converged, res.iterations
    s = res.trajectory.final
    assert isinstance(s, DeblurState)
    residual = solver.algorithm.fixed_point_residual(s, x, solver.layer_params(1))
    assert float(residual.max()) < 1e-7
    assert bool((s.k >= 0).all())
    torch.testing.assert_close(s.k.flatten(1).sum(1), torch.ones(4, dtype=F64))
    est, blurred = res.trajectory.final_estimate, torch.cat([x.flatten(1), s.k.flatten(1)], 1)
    curves = layer_curves(torch.stack([blurred, est]), target, x, prob.metrics())
    assert curves["psnr_db"][1] > curves["psnr_db"][0] + 1.0  # better than the blurred input
    # a far-from-converged iterate has a large residual: the check can fail
    early = ClassicalSolver(solver.algorithm, prob, 1, dtype=F64)(x).final
    assert (
        float(solver.algorithm.fixed_point_residual(early, x, solver.layer_params(1)).max()) > 1e-3
    )


# -- problem, metrics, bad input ----------------------------------------------------------------
def test_kernels_lie_on_the_simplex_and_samples_are_seeded() -> None:
    prob = _problem()
    x, t = prob.sample(5, seed=(1, 2))
    x2, t2 = prob.sample(5, seed=(1, 2))
    assert torch.equal(x, x2) and torch.equal(t, t2)
    assert not torch.equal(x, prob.sample(5, seed=(1, 3))[0])
    x64, t64 = prob.sample(5, seed=(1, 2), dtype=F64)
    assert torch.equal(x64.float(), x) and x.shape == (5, 24, 24) and t.shape == (5, 24 * 24 + 49)
    img, k = prob.unpack(t64)
    assert bool((k >= 0).all()) and bool((img >= 0).all() and (img <= 1).all())
    torch.testing.assert_close(k.flatten(1).sum(1), torch.ones(5, dtype=F64))
    assert bool((k.flatten(1).max(1).values < 0.9).all())  # a blur, not an identity
    noiseless = _problem(snr_db=None)
    y, tt = noiseless.sample(2, seed=0, dtype=F64)
    torch.testing.assert_close(y, blur(*noiseless.unpack(tt)))


def test_aligned_metrics_ignore_the_shift_ambiguity_and_pool() -> None:
    prob = _problem(snr_db=None)
    y, t = prob.sample(6, seed=0, dtype=F64)
    img, k = prob.unpack(t)
    # (x(· − d), k(· + d)) blurs to the same y: the metrics score it as exact
    shifted_k = torch.nn.functional.pad(k, (1, 1, 1, 1))[..., 2:, :-2]  # k moved by (−1, +1)
    shifted_x = torch.roll(img, (1, -1), dims=(-2, -1))
    inside = shifted_k.flatten(1).sum(1) > 1 - 1e-12
    assert bool(inside.any())
    torch.testing.assert_close(blur(shifted_x, shifted_k)[inside], y[inside], rtol=0, atol=1e-12)
    assert bool((aligned_psnr(shifted_x, img, 3) > 200).all())
    assert float(aligned_kernel_error(shifted_k[inside], k[inside], 3).max()) < 1e-12
    assert float(aligned_kernel_error(shifted_k, k, 0).min()) > 0.1  # unaligned: an error
    est = torch.cat([shifted_x.flatten(1), shifted_k.flatten(1)], 1)
    blurred = torch.cat([y.flatten(1), k.flatten(1)], 1)
    for metric in prob.metrics():
        whole = metric.statistics(est, t, y)
        parts = metric.statistics(est[:2], t[:2], y[:2]) + metric.statistics(est[2:], t[2:], y[2:])
        torch.testing.assert_close(whole, parts)
    curves = layer_curves(torch.stack([blurred, est]), t, y, prob.metrics())
    assert curves["psnr_db"][1] > curves["psnr_db"][0]
    psnr0 = -10 * torch.log10((y - img).pow(2).flatten(1).mean(1))
    assert curves["psnr_db"][0] >= float(psnr0.mean()) - 1e-9  # alignment can only help


def test_supervised_loss_skips_unlabelled_rows_and_weighs_the_kernel() -> None:
    prob = _problem(kernel_weight=0.5)
    _, t = prob.sample(3, seed=0, dtype=F64)
    est = t.clone()
    _img, k = prob.unpack(est)
    k.mul_(0.0)  # kernel error 1 (relative), image exact
    assert float(prob.supervised_loss(est, t)) == pytest.approx(0.5)
    t_nan = t.clone()
    t_nan[1] = float("nan")
    assert float(prob.supervised_loss(est, t_nan)) == pytest.approx(0.5)
    t_nan[:] = float("nan")
    assert prob.supervised_loss(est, t_nan) is None


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="odd integer"):
        BlindDeblurring(kernel_size=6, source="synthetic")
    with pytest.raises(ValueError, match="odd integer"):
        BlindDeblurring(size=16, kernel_size=9, source="synthetic")
    with pytest.raises(ValueError, match="Unknown source"):
        BlindDeblurring(source="web")
    with pytest.raises(ValueError, match="snr_db"):
        BlindDeblurring(snr_db=math.inf, source="synthetic")
    with pytest.raises(ValueError, match="zeta must be finite and > 0"):
        HQSBlindDeblur(penalty=0.0)
    with pytest.raises(ValueError, match="epsilon must be finite and > 0"):
        HQSBlindDeblur(kernel_reg=-1.0)
    with pytest.raises(ValueError, match="threshold"):
        HQSBlindDeblur(threshold=math.nan)
    with pytest.raises(ValueError, match="Unknown filter bank"):
        HQSBlindDeblur(filters="sobel")
    with pytest.raises(ValueError, match="not bound to a problem"):
        HQSBlindDeblur().init(torch.zeros(1, 16, 16), {})
    prob = _problem()
    model = UnfoldedModel(HQSBlindDeblur(), prob, 2, "objective")
    with pytest.raises(ValueError, match=r"\(B, 24, 24\)"):
        model(torch.zeros(24, 24))
    bad = torch.zeros(1, 24, 24)
    bad[0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(bad)
    with pytest.raises(ValueError, match="inductive-bias"):
        UnfoldedModel(HQSBlindDeblur(), prob, 2, "inductive_bias")
    with pytest.raises(TypeError):
        UnfoldedModel(HQSBlindDeblur(), SparseRecovery(m=4, n=8), 2, "objective")
    with pytest.raises(ValueError, match="entries"):
        prob.unpack(torch.zeros(2, 10))


def test_config_round_trip_and_registry() -> None:
    prob = _problem(snr_db=None, kernel_weight=0.1)
    again = problem_from_config(prob.to_config())
    assert isinstance(again, BlindDeblurring) and again.init_args() == prob.init_args()
    assert torch.equal(again.sample(2, seed=3)[0], prob.sample(2, seed=3)[0])
    assert ALGORITHMS["hqs_deblur"] is HQSBlindDeblur


def test_training_dublid_lowers_the_loss_and_keeps_the_kernel_on_the_simplex() -> None:
    torch.manual_seed(0)
    prob = _problem(size=16, kernel_size=5)
    module = UnfoldedModule(
        prob,
        algorithm="hqs_deblur",
        paradigm="objective",
        depth=3,
        lr=3e-3,
        algorithm_options={"threshold": 0.05, "penalty": 0.05, "kernel_reg": 1.0},
    )
    opt = torch.optim.Adam(module.model.parameters(), lr=3e-3)
    x, y = prob.sample(8, seed=1)

    def loss() -> torch.Tensor:
        return module.loss(module.model(x), x, y)

    before = float(loss().detach())
    for _ in range(15):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
        module.model.project_parameters_()
    assert float(loss().detach()) < 0.97 * before
    k = module.model(x).final.k
    assert bool((k >= 0).all())
    torch.testing.assert_close(k.sum((1, 2)), torch.ones(8))


@needs_skimage
def test_skimage_source_uses_only_shipped_files_and_splits_by_image() -> None:
    import skimage.data

    for files in DEBLUR_IMAGES.values():
        for name in files:
            assert os.path.exists(os.path.join(skimage.data.data_dir, name)), name
    assert not set(DEBLUR_IMAGES["train"]) & set(DEBLUR_IMAGES["test"])
    train = BlindDeblurring(size=32, kernel_size=7, split="train")
    test = BlindDeblurring(size=32, kernel_size=7, split="test")
    y, t = train.sample(3, seed=0)
    yt, _tt = test.sample(3, seed=0)
    assert y.shape == (3, 32, 32) and not torch.equal(y, yt)
    img, _ = train.unpack(t)
    assert bool((img.flatten(1).std(1) >= 0.08 - 1e-6).all())


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning_unfold.algorithms.dublid.problem as problem

    problem.shipped_grey.cache_clear()
    hide_skimage(monkeypatch)
    with pytest.raises(ImportError, match=r"pip install lightning-unfold\[images\]"):
        BlindDeblurring(source="skimage")
    monkeypatch.undo()
    problem.shipped_grey.cache_clear()


@needs_skimage
@pytest.mark.slow
def test_study_tiny_preset(tmp_path: Path, load_example: Callable[[str], Any]) -> None:
    study = load_example("dublid_study")
    results = study.main(["--preset", "tiny", "--out", str(tmp_path)])
    methods = results["methods"]
    assert {"blurred", "classical_K", "classical_converged", "dublid"} <= set(methods)
    for res in methods.values():
        assert math.isfinite(res["psnr_db"]) and res["kernel_error"] >= 0
    assert len(methods["dublid"]["psnr_db_per_layer"]) == results["config"]["depth"] + 1
    assert (tmp_path / "results.json").exists() and (tmp_path / "examples.png").exists()
    assert (tmp_path / "psnr_vs_layer.png").exists()
