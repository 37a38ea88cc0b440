"""Sparse-coding super-resolution and SCN: classical-init equivalence, the per-patch LASSO against
CVXPY, overlap averaging and the scores against independent implementations, the dictionary
fit, bad input, training, shipped images, the study's tiny preset."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as tF
from algorithm_helpers import HAS_SKIMAGE, hide_skimage, needs_skimage, trajectory_gap

from lightning_unfold import ALGORITHMS, ClassicalSolver, UnfoldedModel
from lightning_unfold.algorithms import SCN, SparseCodingSR, SRBlackBoxNet, SuperResolution
from lightning_unfold.algorithms.scn import (
    SHIPPED_IMAGES,
    degrade,
    features,
    fit_dictionary_pair,
    lasso_codes,
    mean_removal_filters,
    psnr,
    reconstruct,
    ssim,
)
from lightning_unfold.algorithms.scn import images as scn_images
from lightning_unfold.core.algorithm import problem_from_config
from lightning_unfold.training.module import UnfoldedModule

F64 = torch.float64


def _problem(**kw: object) -> SuperResolution:
    return SuperResolution(**{"size": 16, "source": "synthetic", "seed": 1, **kw})  # type: ignore[arg-type]


def _algorithm(**kw: object) -> SparseCodingSR:
    opts = {
        "patch": 3,
        "atoms": 8,
        "lam": 0.01,
        "dictionary_iterations": 2,
        "training_patches": 300,
    }
    return SparseCodingSR(**{**opts, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("paradigm", "variant", "tied"),
    [
        ("hyperparameters", None, False),
        ("objective", "direct", False),
        ("objective", "lista", False),
        ("objective", "lista", True),
    ],
)
def test_classical_init_reproduces_ista_per_patch(
    paradigm: str, variant: str | None, tied: bool
) -> None:
    prob = _problem()
    x, _ = prob.sample(3, seed=2, dtype=F64)
    classical = ClassicalSolver(_algorithm(), prob, 5, dtype=F64)
    model = UnfoldedModel(_algorithm(), prob, 5, paradigm, variant=variant, tied=tied, dtype=F64)
    with torch.no_grad():
        assert trajectory_gap(model(x), classical(x)) <= 1e-10
    if variant == "lista":
        assert isinstance(model.algorithm, SCN) and model.layer_params(1)["threshold"].shape == (8,)


def test_step_is_an_independent_per_patch_ista_and_overlap_average() -> None:
    """One classical layer against a loop over patches with F.unfold / F.fold."""
    prob = _problem()
    alg = _algorithm()
    x, _ = prob.sample(2, seed=3, dtype=F64)
    p = alg.classical_params(prob)
    s = alg.step(alg.step(alg.init(x, p), x, p, 1), x, p, 2)
    E, D, Dh = p["extractor"], p["lr_dictionary"], p["hr_dictionary"]
    mu, beta = float(p["step"]), float(p["threshold"])
    patches = tF.unfold(x, 3).transpose(1, 2)  # (B, L, 9)
    y = patches - patches.mean(-1, keepdim=True)
    assert torch.allclose(y @ E.reshape(9, 9).T, y, atol=1e-14)  # E removes the mean
    a = torch.zeros(2, y.shape[1], 8, dtype=F64)
    for _ in range(2):
        v = a + mu * (y - a @ D.T) @ D
        a = torch.sign(v) * (v.abs() - beta).clamp_min(0)
    assert torch.allclose(s.codes.flatten(2).transpose(1, 2), a, atol=1e-12)
    summed = tF.fold((a @ Dh.T).transpose(1, 2), (16, 16), 3)
    counts = tF.fold(torch.ones(1, 9, y.shape[1], dtype=F64), (16, 16), 3)
    assert torch.allclose(s.image, x + summed / counts, atol=1e-12)
    assert counts.min() == 1 and counts.max() == 9


def test_converged_ista_matches_the_cvxpy_lasso_on_patches() -> None:
    cp = pytest.importorskip("cvxpy")
    prob = _problem()
    alg = _algorithm()
    x, _ = prob.sample(1, seed=4, dtype=F64)
    solver = ClassicalSolver(alg, prob, 1, dtype=F64)
    res = solver.solve(x, tol=1e-13, max_iter=20000)
    codes = res.trajectory.iterates[-1].codes
    p = solver.layer_params(1)
    cert = alg.certificate(res.trajectory.iterates[-1], x, p)
    assert float(cert.values.max()) < 1e-6
    y = features(x, p["extractor"])
    D = p["lr_dictionary"].numpy()
    for r, c in [(0, 0), (5, 7), (13, 2), (9, 9)]:
        # the LASSO of (scale y, scale lam) has the codes scale alpha: solved at unit scale,
        # (codes of order 0.1-1), where Clarabel at its defaults agrees to ~1e-6; the KKT
        # certificate above is the tight, solver-independent part
        target = y[0, :, r, c].numpy()
        scale = 1.0 / max(float(np.linalg.norm(target)), 1e-12)
        a = cp.Variable(8)
        cost = 0.5 * cp.sum_squares(scale * target - D @ a) + scale * alg.lam * cp.norm1(a)
        cp.Problem(cp.Minimize(cost)).solve(solver=cp.CLARABEL)
        assert np.abs(scale * codes[0, :, r, c].numpy() - a.value).max() < 1e-5, (r, c)


def test_objective_decreases_and_certificate_falls() -> None:
    prob = _problem()
    alg = _algorithm()
    x, _ = prob.sample(2, seed=5, dtype=F64)
    model = ClassicalSolver(alg, prob, 40, dtype=F64)
    traj = model(x)
    values = torch.stack([model.objective(s, x) for s in traj.iterates])
    assert bool((values[1:] <= values[:-1] + 1e-12).all())
    c = model.layer_params(1)
    first = alg.certificate(traj.iterates[1], x, c).values
    last = alg.certificate(traj.iterates[-1], x, c).values
    assert bool((last < first).all())


def test_lasso_codes_satisfy_kkt_and_dh_is_the_least_squares_readout() -> None:
    rng = np.random.default_rng(0)
    Y = torch.from_numpy(rng.normal(size=(200, 9)))
    R = torch.from_numpy(rng.normal(size=(200, 9)))
    Dl, Dh = fit_dictionary_pair(Y, R, atoms=6, lam=0.1, iterations=3, seed=0)
    assert torch.allclose(torch.linalg.vector_norm(Dl, dim=0), torch.ones(6, dtype=F64))
    A, iters = lasso_codes(Y, Dl, 0.1, tol=1e-12, max_iter=20000)
    assert iters < 20000
    g = (Y - A @ Dl.T) @ Dl
    on = A != 0
    assert float((g[on] - 0.1 * torch.sign(A[on])).abs().max()) < 1e-6
    assert float((g[~on].abs() - 0.1).max()) < 1e-6
    # D_h: the normal equations of min ||R - A D_h^T||^2 (+ a tiny ridge)
    normal = (R - A @ Dh.T).T @ A
    assert float(normal.abs().max()) < 1e-5 * float((R.T @ A).abs().max())


def test_scores_match_closed_forms_and_scikit_image() -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.rand(2, 1, 24, 24, generator=g, dtype=F64)
    e = (t + 0.05 * torch.randn(2, 1, 24, 24, generator=g, dtype=F64)).clamp(0, 1)
    mse = (e - t)[..., 2:-2, 2:-2].pow(2).flatten(1).mean(1)
    assert torch.allclose(psnr(e, t, 2), -10 * torch.log10(mse))
    assert torch.allclose(ssim(t, t, 2), torch.ones(2, dtype=F64))
    if HAS_SKIMAGE:
        from skimage.metrics import structural_similarity

        for b in range(2):
            ref = structural_similarity(
                e[b, 0, 2:-2, 2:-2].numpy(),
                t[b, 0, 2:-2, 2:-2].numpy(),
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1.0,
            )
            assert abs(float(ssim(e, t, 2)[b]) - ref) < 1e-3  # skimage: reflect-padded borders


def test_degradation_and_problem_data() -> None:
    prob = _problem()
    x, hr = prob.sample(4, seed=0, dtype=F64)
    assert x.shape == hr.shape == (4, 1, 16, 16)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    x32, _ = prob.sample(4, seed=0)
    assert torch.equal(x32, x.float()) and torch.equal(prob.sample(4, seed=0, dtype=F64)[0], x)
    assert not torch.equal(prob.sample(4, seed=1, dtype=F64)[0], x)
    assert float(psnr(x, hr, 2).mean()) < 60  # the degradation loses detail
    smooth = torch.linspace(0, 1, 16, dtype=F64).repeat(16, 1)[None, None]
    assert float(psnr(degrade(smooth, 2), smooth, 2)) > 40  # a ramp survives it
    tests = prob.test_images(crop=20)
    assert [n for n, _, _ in tests] == ["synthetic_0", "synthetic_1", "synthetic_2"]
    assert all(xi.shape == (1, 1, 20, 20) for _, xi, _ in tests)
    rebuilt = problem_from_config(prob.to_config())
    assert torch.equal(rebuilt.sample(2, seed=3)[0], prob.sample(2, seed=3)[0])


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="divisible by scale"):
        SuperResolution(size=15)
    with pytest.raises(ValueError, match="Unknown source"):
        SuperResolution(source="web")
    with pytest.raises(ValueError, match="scale must be"):
        SuperResolution(scale=5)
    with pytest.raises(ValueError, match="border"):
        SuperResolution(size=16, border=3, source="synthetic")
    with pytest.raises(ValueError, match="lam"):
        SparseCodingSR(lam=0.0)
    with pytest.raises(ValueError, match="training_patches"):
        SparseCodingSR(atoms=64, training_patches=10)
    prob = _problem()
    with pytest.raises(ValueError, match=r"outside \(0, 2/\|\|D_l\|\|\^2\)"):
        ClassicalSolver(_algorithm(step=10.0), prob, 2)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        prob.validate_observation(torch.zeros(2, 3, 16, 16))
    x, _ = prob.sample(2, seed=0)
    x[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        prob.validate_observation(x)
    with pytest.raises(ValueError, match="variant"):
        UnfoldedModel(_algorithm(), prob, 2, "objective", variant="alista")
    with pytest.raises(ValueError, match="'hyperparameters' and 'objective'"):
        UnfoldedModel(_algorithm(), prob, 2, "correction")
    with pytest.raises(ValueError, match=r"Unknown shipped image 'skimage:not_shipped'"):
        scn_images.shipped_luminance.__wrapped__("not_shipped.png")  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="divisible by scale"):
        degrade(torch.zeros(1, 1, 15, 16), 2)


def test_black_box_is_a_residual_cnn_within_its_budget() -> None:
    net = SRBlackBoxNet(2000, patch=5)
    n = sum(p.numel() for p in net.parameters())
    assert n <= 2000 and net.width > 2
    x = torch.rand(2, 1, 20, 18)
    assert torch.equal(net(x), x)  # zero last layer: starts at the bicubic input


def test_training_scn_raises_psnr() -> None:
    torch.manual_seed(0)
    prob = _problem()
    module = UnfoldedModule(
        prob,
        algorithm="sc_sr",
        algorithm_options={
            "patch": 3,
            "atoms": 8,
            "dictionary_iterations": 2,
            "training_patches": 300,
        },
        paradigm="objective",
        variant="lista",
        tied=True,
        depth=3,
        lr=3e-3,
    )
    x, y = prob.sample(16, seed=1)
    xv, yv = prob.sample(16, seed=2)
    opt = torch.optim.Adam(module.model.parameters(), lr=3e-3)

    def val_psnr() -> float:
        with torch.no_grad():
            return float(psnr(module.model.predict(xv), yv, 2).mean())

    before = val_psnr()
    for _ in range(30):
        opt.zero_grad()
        module.loss(module.model(x), x, y).backward()
        opt.step()
        module.model.project_parameters_()
    assert val_psnr() > before + 0.05


def test_registry_and_mean_removal() -> None:
    assert ALGORITHMS["sc_sr"] is SparseCodingSR and ALGORITHMS["scn"] is SCN
    E = mean_removal_filters(4)
    patch = torch.rand(1, 1, 4, 4, dtype=F64)
    out = tF.conv2d(patch, E).flatten()
    assert torch.allclose(out, (patch - patch.mean()).flatten())
    codes = torch.zeros(1, 8, 5, 5, dtype=F64)
    assert torch.equal(
        reconstruct(codes, torch.ones(16, 8, dtype=F64), 4), torch.zeros(1, 1, 8, 8, dtype=F64)
    )


@needs_skimage
def test_skimage_source_uses_only_shipped_files_and_splits_by_image() -> None:
    import skimage.data

    assert not set(SHIPPED_IMAGES["train"]) & set(SHIPPED_IMAGES["test"])
    for files in SHIPPED_IMAGES.values():
        for name in files:
            assert os.path.exists(os.path.join(skimage.data.data_dir, name)), name
    train = SuperResolution(size=24, source="skimage", split="train")
    x, hr = train.sample(3, seed=0)
    assert x.shape == (3, 1, 24, 24) and 0 <= float(hr.min()) and float(hr.max()) <= 1
    test = SuperResolution(size=24, source="skimage", split="test")
    names = [n for n, _, _ in test.test_images(crop=64)]
    assert names == list(SHIPPED_IMAGES["test"])
    _, _, hc = test.test_images()[1]  # chelsea, whole: 300 × 451 cut to even sides
    assert hc.shape == (1, 1, 300, 450)


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    scn_images.shipped_luminance.cache_clear()
    hide_skimage(monkeypatch)
    with pytest.raises(ImportError, match=r"lightning-unfold\[images\]"):
        SuperResolution(source="skimage")
    monkeypatch.undo()
    scn_images.shipped_luminance.cache_clear()


@needs_skimage
@pytest.mark.slow
def test_study_tiny_preset(tmp_path: Path, load_example: Callable[[str], Any]) -> None:
    study = load_example("scn_study")
    results = study.main(["--preset", "tiny", "--out", str(tmp_path)])
    methods = results["methods"]
    assert {"bicubic", "sc_sr_converged", "sc_sr_K", "scn"} <= set(methods)
    for m in methods.values():
        assert len(m["psnr_per_image"]) == len(results["images"]["test"])
        assert 0.0 < m["ssim"] <= 1.0 and m["psnr"] > 10.0
    assert methods["sc_sr_converged"]["psnr"] > methods["bicubic"]["psnr"]
    assert (tmp_path / "results.json").exists() and (tmp_path / "psnr_vs_layer.png").exists()
    assert (tmp_path / "crops.png").exists()
