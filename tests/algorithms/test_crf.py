"""Dense-CRF segmentation and CRF-RNN: classical-init equivalence, the free-energy reference,
fixed-point certificate, metric pooling, bad input, round trips, training, shipped images."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from algorithm_helpers import hide_skimage, needs_skimage, trajectory_gap
from scipy.optimize import minimize

from lightning_unfold import ALGORITHMS, ClassicalSolver, UnfoldedModel
from lightning_unfold.algorithms import MeanFieldCRF, Segmentation, SegmentationBlackBoxNet
from lightning_unfold.algorithms.crf import (
    SHIPPED_IMAGES,
    CRFState,
    MeanIoU,
    bilateral_kernel,
    contraction_factor,
    spatial_kernel,
)
from lightning_unfold.core.algorithm import problem_from_config
from lightning_unfold.core.metrics import layer_curves
from lightning_unfold.training.module import UnfoldedModule, build_model

F64 = torch.float64


def _problem(**kw: object) -> Segmentation:
    return Segmentation(**{"size": 10, "n_labels": 3, "seed": 1, **kw})  # type: ignore[arg-type]


# (paradigm, tied, shared correction, learn hyperparameters): every paradigm that keeps the
# iteration
KEEPS_ITERATION = [
    ("hyperparameters", False, False, False),
    ("hyperparameters", True, False, False),
    ("objective", False, False, False),
    ("objective", True, False, False),
    ("correction", False, False, False),
    ("correction", False, True, False),
    ("correction", True, False, True),
]


@pytest.mark.parametrize(("paradigm", "tied", "shared", "learn_h"), KEEPS_ITERATION, ids=str)
@pytest.mark.parametrize("step", [1.0, 0.6])
def test_classical_init_reproduces_mean_field(
    paradigm: str, tied: bool, shared: bool, learn_h: bool, step: float
) -> None:
    prob = _problem()
    alg = MeanFieldCRF(spatial_weight=2.0, bilateral_weight=1.0, step=step)
    x, _ = prob.sample(3, seed=0, dtype=F64)
    ref = ClassicalSolver(alg, prob, 6, dtype=F64)(x)
    model = UnfoldedModel(
        alg,
        prob,
        6,
        paradigm,
        tied=tied,
        shared_correction=shared,
        learn_hyperparameters=learn_h,
        hidden=4,
        dtype=F64,
    )
    assert trajectory_gap(model(x), ref) < 1e-8


def test_learn_hyperparameters_correction_and_black_box_shapes() -> None:
    prob = _problem()
    x, _ = prob.sample(2, seed=0)
    alg = MeanFieldCRF()
    corr = UnfoldedModel(alg, prob, 3, "correction", learn_hyperparameters=True)
    assert "step" in corr.learned
    ib = UnfoldedModel(alg, prob, 3, "inductive_bias")
    q = ib(x).estimates[-1]
    assert q.shape == (2, 3, 10, 10) and torch.allclose(q.sum(1), torch.ones(2, 10, 10))
    bb = build_model(prob, paradigm="black_box", depth=3)
    assert isinstance(bb.net, SegmentationBlackBoxNet)
    out = bb(x).estimates[-1]
    assert out.shape == (2, 3, 10, 10) and torch.allclose(out.sum(1), torch.ones(2, 10, 10))


def _free_energy_minimum(alg: MeanFieldCRF, prob: Segmentation, x: torch.Tensor) -> torch.Tensor:
    """Direct minimisation of the free energy over per-pixel logits (L-BFGS, float64)."""
    p = ClassicalSolver(alg, prob, 1, dtype=F64).layer_params(1)
    s0 = alg.init(x, p)
    shape = s0.q.shape

    def f(z: np.ndarray) -> tuple[float, np.ndarray]:
        zt = torch.tensor(z, dtype=F64).reshape(shape).requires_grad_(True)
        q = torch.softmax(zt, dim=1)
        state = CRFState(q=q, features=s0.features, spatial=s0.spatial, bilateral=s0.bilateral)
        val = alg.objective(state, x, p).sum()
        (g,) = torch.autograd.grad(val, zt)
        return float(val.detach()), g.reshape(-1).numpy()

    res = minimize(
        f,
        np.zeros(s0.q.numel()),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12},
    )
    assert res.success, res.message
    return torch.softmax(torch.tensor(res.x, dtype=F64).reshape(shape), dim=1)


@pytest.mark.parametrize("step", [1.0, 0.5])
def test_mean_field_fixed_point_is_the_free_energy_minimum(step: float) -> None:
    """Weak couplings: the free energy is strictly convex and the map a contraction, so the
    mean-field fixed point is the unique minimiser found by a direct solver."""
    prob = _problem(size=8)
    alg = MeanFieldCRF(spatial_weight=0.6, bilateral_weight=0.3, step=step)
    x, _ = prob.sample(2, seed=3, dtype=F64)
    solver = ClassicalSolver(alg, prob, 1, dtype=F64)
    p = solver.layer_params(1)
    factor = contraction_factor(alg.init(x, p), p)
    assert float(factor.max()) < 0.5  # ||mu|| ||K|| < 1: strictly convex free energy
    res = solver.solve(x, tol=1e-13, max_iter=2000)
    assert res.converged
    q_ref = _free_energy_minimum(alg, prob, x)
    assert float((res.trajectory.estimates[-1] - q_ref).abs().max()) < 1e-7
    # and a direct minimiser is not matched by the unary alone (the check can fail)
    assert float((res.trajectory.estimates[0] - q_ref).abs().max()) > 1e-3


def test_free_energy_decreases_along_the_iteration_under_weak_coupling() -> None:
    prob = _problem(size=8)
    alg = MeanFieldCRF(spatial_weight=0.6, bilateral_weight=0.3, step=0.5)
    x, _ = prob.sample(2, seed=4, dtype=F64)
    solver = ClassicalSolver(alg, prob, 15, dtype=F64)
    traj = solver(x)
    p = solver.layer_params(1)
    energies = torch.stack([alg.objective(s, x, p) for s in traj.iterates])
    assert bool((energies[1:] <= energies[:-1] + 1e-12).all())


def test_converged_classical_crf_satisfies_the_fixed_point_equation() -> None:
    """The hand-set (strong) CRF: no contraction guarantee, but the iteration settles, and its
    end point satisfies Q = softmax(U - mu m(Q)); the unary start does not."""
    prob = _problem(size=12, n_labels=2)
    alg = MeanFieldCRF(spatial_weight=4.0, bilateral_weight=1.0, step=0.7)
    x, _ = prob.sample(3, seed=5, dtype=F64)
    solver = ClassicalSolver(alg, prob, 1, dtype=F64)
    p = solver.layer_params(1)
    assert float(contraction_factor(alg.init(x, p), p).max()) > 1.0
    res = solver.solve(x, tol=1e-12, max_iter=3000)
    assert res.converged
    s = res.trajectory.iterates[-1]
    residual = (s.q - torch.softmax(alg.logits(s, x, p), dim=1)).abs().max()
    assert float(residual) < 1e-10
    s0 = res.trajectory.iterates[0]
    assert float((s0.q - torch.softmax(alg.logits(s0, x, p), dim=1)).abs().max()) > 1e-2


def test_kernels_are_symmetric_scaled_and_hollow() -> None:
    prob = _problem(size=12)
    x, _ = prob.sample(2, seed=0, dtype=F64)
    ks = spatial_kernel(12, 12, 2.0, dtype=F64)
    kb = bilateral_kernel(x, 5.0, 0.2)
    for k in (ks, kb[0], kb[1]):
        assert torch.equal(k, k.T)
        assert float(k.diagonal().abs().max()) == 0.0
        assert float(k.sum(-1).max()) <= 1.0 + 1e-12
    # an interior pixel of a large grid reaches the scale: its row sums to ~1
    big = spatial_kernel(41, 41, 2.0, dtype=F64)
    assert abs(float(big[20 * 41 + 20].sum()) - 1.0) < 1e-9


def test_miou_pooling_whole_equals_halves_and_known_values() -> None:
    prob = _problem(n_labels=3)
    x, y = prob.sample(6, seed=2)
    q = torch.softmax(torch.randn(6, 3, 10, 10, generator=torch.Generator().manual_seed(0)), 1)
    for m in prob.metrics():
        whole = m.finalize(m.statistics(q, y, x))
        halves = m.finalize(m.statistics(q[:3], y[:3], x[:3]) + m.statistics(q[3:], y[3:], x[3:]))
        assert torch.allclose(whole, halves)
        mean_of_halves = 0.5 * (
            m.finalize(m.statistics(q[:3], y[:3], x[:3]))
            + m.finalize(m.statistics(q[3:], y[3:], x[3:]))
        )
        assert whole.dtype == torch.float64 and bool(torch.isfinite(mean_of_halves))
    miou = MeanIoU(2)
    pred = torch.tensor([[[0, 1], [1, 1]]])
    truth = torch.tensor([[[0, 1], [0, 1]]])
    onehot = torch.nn.functional.one_hot(pred, 2).permute(0, 3, 1, 2).double()
    # label 0: I = 1, U = 2; label 1: I = 2, U = 3
    assert float(miou.finalize(miou.statistics(onehot, truth, onehot))) == pytest.approx(
        (1 / 2 + 2 / 3) / 2
    )
    assert float(miou.finalize(miou.statistics(onehot, pred, onehot))) == 1.0


def test_supervised_loss_skips_unlabelled_rows() -> None:
    prob = _problem()
    x, y = prob.sample(4, seed=0)
    q = ClassicalSolver(MeanFieldCRF(), prob, 2)(x).estimates[-1]
    full = prob.supervised_loss(q, y)
    y2 = y.clone()
    y2[1:] = -1
    assert torch.allclose(prob.supervised_loss(q, y2), prob.per_sample_loss(q[:1], y[:1]).mean())
    assert prob.supervised_loss(q, torch.full_like(y, -1)) is None
    assert float(full) > 0


def test_soft_iou_loss_equals_one_minus_miou_on_one_hot_marginals() -> None:
    prob = _problem(n_labels=3, loss="soft_iou")
    x, y = prob.sample(4, seed=0)
    pred = torch.randint(0, 3, y.shape, generator=torch.Generator().manual_seed(1))
    onehot = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).double()
    miou = float(MeanIoU(3).finalize(MeanIoU(3).statistics(onehot, y, x)))
    assert float(prob.supervised_loss(onehot, y)) == pytest.approx(1.0 - miou)
    truth = torch.nn.functional.one_hot(y, 3).permute(0, 3, 1, 2).double()
    assert float(prob.supervised_loss(truth, y)) == pytest.approx(0.0)
    assert torch.allclose(prob.per_sample_loss(truth, y), torch.zeros(4, dtype=F64))
    with pytest.raises(ValueError, match="soft_iou"):
        Segmentation(loss="dice")


def test_bad_input_is_a_clear_error() -> None:
    prob = _problem()
    model = ClassicalSolver(MeanFieldCRF(), prob, 2)
    x, _ = prob.sample(2, seed=0)
    x[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        model(x)
    with pytest.raises(ValueError, match=r"\(B, 1, 10, 10\)"):
        model(torch.zeros(2, 10, 10))
    with pytest.raises(ValueError, match="step eta"):
        MeanFieldCRF(step=1.5)
    with pytest.raises(ValueError, match="n_labels"):
        Segmentation(source="skimage", n_labels=3)
    with pytest.raises(ValueError, match="valid"):
        Segmentation(source="camera")
    with pytest.raises(TypeError, match="Segmentation"):
        from lightning_unfold import SparseRecovery

        MeanFieldCRF().classical_params(SparseRecovery(m=4, n=8))


def test_config_round_trip_and_registry() -> None:
    prob = _problem(snr_db=None, contrast=0.2, split="test")
    again = problem_from_config(prob.to_config())
    assert again.init_args() == prob.init_args()
    xa, ya = prob.sample(2, seed=9)
    xb, yb = again.sample(2, seed=9)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    xc, _ = Segmentation(**{**prob.init_args(), "split": "train"}).sample(2, seed=9)
    assert not torch.equal(xa, xc)
    assert ALGORITHMS["mean_field_crf"] is MeanFieldCRF
    assert prob.default_algorithm == "mean_field_crf"


def test_training_the_objective_paradigm_lowers_the_loss() -> None:
    torch.manual_seed(0)
    prob = _problem(size=12, n_labels=2)
    module = UnfoldedModule(prob, paradigm="objective", tied=True, depth=3, lr=0.05)
    opt = torch.optim.Adam(module.model.parameters(), lr=0.05)
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
    assert float(loss().detach()) < before - 0.01


@needs_skimage
def test_skimage_source_uses_only_shipped_files_and_splits_by_image() -> None:
    import skimage.data

    for files in SHIPPED_IMAGES.values():
        for name in files.values():
            assert os.path.exists(os.path.join(skimage.data.data_dir, name)), name
    assert SHIPPED_IMAGES["train"]["mask"] != SHIPPED_IMAGES["test"]["mask"]
    train = Segmentation(size=16, source="skimage", split="train")
    test = Segmentation(size=16, source="skimage", split="test")
    x, y = train.sample(4, seed=0)
    xt, yt = test.sample(4, seed=0)
    assert x.shape == (4, 1, 16, 16) and y.shape == (4, 16, 16)
    for labels in (y, yt):
        frac = labels.double().mean(dim=(1, 2))
        assert bool(((frac >= 0.1) & (frac <= 0.9)).all())  # both labels in every crop
    assert not torch.equal(x, xt)
    # the unary is deliberately weak but informative: better than chance, far from perfect
    q = ClassicalSolver(MeanFieldCRF(), test, 1)(xt).estimates[0]
    acc = layer_curves(q[None], yt, xt, test.metrics())["pixel_accuracy"][0]
    assert 0.55 < acc < 0.9


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_skimage(monkeypatch)
    with pytest.raises(ImportError, match=r"pip install lightning-unfold\[images\]"):
        Segmentation(source="skimage")


@needs_skimage
@pytest.mark.slow
def test_study_tiny_preset(tmp_path: Path, load_example: Callable[[str], Any]) -> None:
    study = load_example("crf_rnn_study")
    results = study.main(["--preset", "tiny", "--out", str(tmp_path)])
    methods = results["methods"]
    assert {"unary", "crf_converged", "crf_K", "crf_rnn", "black_box"} <= set(methods)
    assert all(0.0 <= m["miou"] <= 1.0 for m in methods.values())
    assert (tmp_path / "results.json").exists() and (tmp_path / "examples.png").exists()
    assert (tmp_path / "miou_vs_layer.png").exists()


def test_an_iterate_cast_to_float64_steps_in_float64() -> None:
    """The checks cast iterates to float64; the kernels an iterate carries (auxiliary fields,
    not blocks) stay float32, so the step recomputes them in the observation's precision
    instead of mixing dtypes — and gives the float64 model's step."""
    from lightning_unfold.core.iterate import iterate_map

    prob = _problem()
    x32, _ = prob.sample(2, seed=4)
    solver32 = ClassicalSolver(MeanFieldCRF(), prob, 2)
    s32 = solver32(x32).iterates[1]
    s64 = iterate_map(lambda t: t.double(), s32)
    assert s64.spatial is not None and s64.spatial.dtype == torch.float32  # carried as it was
    solver64 = ClassicalSolver(MeanFieldCRF(), prob, 2, dtype=torch.float64)
    p64 = solver64.layer_params(2)
    out = solver64.algorithm.step(s64, x32.double(), p64, 2)
    assert out.q.dtype == torch.float64
    ref = solver64.algorithm.step(
        solver64.algorithm.init(x32.double(), p64).__class__(q=s64.q), x32.double(), p64, 2
    )
    torch.testing.assert_close(out.q, ref.q, rtol=0, atol=1e-12)
    residual = solver64.algorithm.fixed_point_residual(s64, x32.double(), p64)
    assert residual.dtype == torch.float64 and bool(torch.isfinite(residual).all())
