"""NMF / deep NMF: the problem, SDR, classical-init equivalence, references, nonnegativity of every
paradigm, errors, training and the study's tiny preset."""

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
from scipy.optimize import nnls

from lightning_unfold import ClassicalSolver, UnfoldedModel
from lightning_unfold.algorithms import (
    ALGORITHMS,
    NMF,
    NMFBlackBoxNet,
    NMFSeparation,
    beta_divergence,
    bss_decomposition,
)
from lightning_unfold.core.iterate import iterate_blocks
from lightning_unfold.training import UnfoldedModule

F64 = torch.float64
K = 15


def _problem(**kw: Any) -> NMFSeparation:
    args: dict[str, Any] = {"n_freq": 24, "n_frames": 10, "combs": 3, "bands": 1, "seed": 2}
    args.update(kw)
    return NMFSeparation(**args)


# -- the problem and the metric -------------------------------------------------------------
def test_mixtures_are_nonnegative_sums_of_two_sources_and_reproducible() -> None:
    prob = _problem()
    x, S = prob.sample(4, seed=1, dtype=F64)
    assert x.shape == (4, 24, 10) and S.shape == (4, 2, 24, 10)
    assert bool((S >= 0).all()) and torch.allclose(S.sum(1), x)
    assert torch.equal(prob.sample(4, seed=1, dtype=F64)[0], x)
    assert not torch.equal(prob.sample(4, seed=2, dtype=F64)[0], x)
    W = prob.constants()["W"]
    assert W.shape == (24, 8) and bool((W >= 0).all())
    torch.testing.assert_close(torch.linalg.vector_norm(W, dim=0), torch.ones(8, dtype=F64))


def test_sdr_matches_the_bss_eval_decomposition_on_orthogonal_signals() -> None:
    """s1 ⟂ s2 ⟂ n: ŝ1 = a s1 + b s2 + c n has SDR 10log(a²|s1|²/(b²|s2|² + c²|n|²)),
    SIR 10log(a²|s1|²/(b²|s2|²)), SAR 10log((a²|s1|² + b²|s2|²)/(c²|n|²))."""
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(40, 3)))
    s1, s2, n = (Q[:, i] * w for i, w in enumerate((2.0, 1.0, 3.0)))
    a, b, c = 0.9, 0.2, 0.05
    est = np.stack([a * s1 + b * s2 + c * n, s2])[None]
    ref = np.stack([s1, s2])[None]
    sdr, sir, sar = bss_decomposition(torch.from_numpy(est), torch.from_numpy(ref))
    e1, e2, en = (a**2) * 4.0, (b**2) * 1.0, (c**2) * 9.0
    assert float(sdr[0, 0]) == pytest.approx(10 * math.log10(e1 / (e2 + en)), abs=1e-9)
    assert float(sir[0, 0]) == pytest.approx(10 * math.log10(e1 / e2), abs=1e-9)
    assert float(sar[0, 0]) == pytest.approx(10 * math.log10((e1 + e2) / en), abs=1e-9)
    assert float(sdr[0, 1]) > 200  # a perfect estimate (the Gram ridge limits it)
    # scale invariance
    sdr2, _, _ = bss_decomposition(torch.from_numpy(3.0 * est), torch.from_numpy(ref))
    assert torch.allclose(sdr, sdr2)
    with pytest.raises(ValueError, match="same shape"):
        bss_decomposition(torch.from_numpy(est), torch.from_numpy(ref[:, :1]))


def test_beta_divergence_special_cases() -> None:
    v = torch.tensor([[1.0, 2.0, 0.5]], dtype=F64)
    u = torch.tensor([[2.0, 2.0, 1.0]], dtype=F64)
    assert float(beta_divergence(v, u, 2.0)) == pytest.approx(0.5 * (1 + 0 + 0.25))
    kl = sum(a * math.log(a / b) - a + b for a, b in ((1, 2), (2, 2), (0.5, 1)))
    assert float(beta_divergence(v, u, 1.0)) == pytest.approx(kl)
    # the general formula tends to KL as beta -> 1
    assert float(beta_divergence(v, u, 1.0 + 1e-6)) == pytest.approx(kl, rel=1e-4)
    assert float(beta_divergence(v, v, 0.5)) == pytest.approx(0.0, abs=1e-12)


# -- equivalence and references -------------------------------------------------------------
# (classical-init equivalence of every paradigm, both betas: tests/zoo)
@pytest.mark.parametrize("beta", [1.0, 2.0], ids=["kl", "euclid"])
def test_nmf_descends_monotonically_towards_the_convex_reference_optimum(beta: float) -> None:
    """With W fixed, min_{H≥0} D_β(V|WH) + λ‖H‖₁ is convex for β ∈ {1, 2}: its optimum from
    scipy's NNLS (β = 2, λ = 0) or CVXPY/Clarabel's exponential cone (KL) is a lower bound that
    MU must approach monotonically (multiplicative updates converge sublinearly, so the test
    bounds the gap after 600 iterations instead of asking for 1e-8)."""
    import cvxpy as cp

    prob = _problem(n_frames=4)
    x, _ = prob.sample(2, seed=4, dtype=F64)
    W = prob.constants()["W"].numpy()
    lam = 0.0 if beta == 2.0 else 0.01
    if beta == 2.0:
        ref = sum(
            0.5 * float(np.sum((v - W @ nnls(W, v)[0]) ** 2))
            for v in x.numpy().transpose(0, 2, 1).reshape(-1, W.shape[0])
        )
    else:
        ref = 0.0
        for V in x.numpy():
            H = cp.Variable((W.shape[1], V.shape[1]), nonneg=True)
            problem = cp.Problem(cp.Minimize(cp.sum(cp.kl_div(V, W @ H)) + lam * cp.sum(H)))
            problem.solve(solver=cp.CLARABEL)
            assert problem.status == cp.OPTIMAL
            ref += float(problem.value)
    solver = ClassicalSolver(NMF(beta=beta, sparsity=lam), prob, 600, dtype=F64)
    with torch.no_grad():
        traj = solver(x)
    obj = np.array([float(solver.objective(s, x).sum()) for s in traj.iterates])
    assert np.all(np.diff(obj) <= 1e-12 * obj[:-1]), "MU must not increase the objective"
    gaps = (obj[[10, 100, 600]] - ref) / ref
    assert gaps.min() >= -1e-7, "MU went below the convex optimum: the reference is wrong"
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] <= 0.05, gaps


# -- nonnegativity of every paradigm -----------------------------------------------------------
@pytest.mark.parametrize(
    "paradigm", ["hyperparameters", "objective", "correction", "inductive_bias", "black_box"]
)
def test_every_paradigm_keeps_factors_and_estimates_nonnegative(paradigm: str) -> None:
    prob = _problem()
    x, _ = prob.sample(4, seed=5)
    module = UnfoldedModule(prob, algorithm="nmf", paradigm=paradigm, depth=4, hidden=4)
    torch.manual_seed(0)
    with torch.no_grad():  # adversarial parameters: raw values far outside the valid sets
        for p in module.model.parameters():
            p.add_(3.0 * torch.randn_like(p))
    with torch.no_grad():
        traj = module.model(x)
    for it in traj.iterates[1:]:
        blocks = iterate_blocks(it) if paradigm != "black_box" else {"S": it}
        for name, t in blocks.items():
            assert bool(torch.isfinite(t).all()), name
            assert float(t.min()) >= 0.0, (paradigm, name, float(t.min()))


def test_black_box_net_matches_its_budget_and_sums_to_the_mixture() -> None:
    net = NMFBlackBoxNet(2000)
    count = sum(p.numel() for p in net.parameters())
    assert 0.6 * 2000 <= count <= 2000
    x = torch.rand(2, 24, 10)
    out = net(x)
    assert out.shape == (2, 2, 24, 10) and torch.allclose(out.sum(1), x, atol=1e-6)


# -- errors ---------------------------------------------------------------------------------
def test_bad_data_and_configurations_raise_clear_errors() -> None:
    prob = _problem()
    x, _ = prob.sample(2, seed=0)
    model = UnfoldedModel(NMF(), prob, 3)
    with pytest.raises(ValueError, match="negative entries"):
        model(x - 1.0)
    with pytest.raises(ValueError, match=r"\(B, 24, 10\)"):
        model(x.transpose(1, 2))
    with pytest.raises(ValueError, match="exponent"):
        NMF(beta=1.0, exponent=1.5)
    with pytest.raises(ValueError, match="exponent"):
        NMF(beta=3.0, exponent=0.8)  # gamma(3) = 1/2
    with pytest.raises(ValueError, match="sparsity"):
        NMF(sparsity=-1.0)
    with pytest.raises(ValueError, match="update_dictionary=False"):
        UnfoldedModel(NMF(update_dictionary=True), prob, 3, "correction")
    with pytest.raises(ValueError, match="at least one atom"):
        NMFSeparation(combs=0, bands=0)
    from lightning_unfold import SparseRecovery

    with pytest.raises(TypeError, match="NMFSeparation"):
        NMF().classical_params(SparseRecovery(m=4, n=8))


# -- training -------------------------------------------------------------------------------
def test_deep_nmf_training_improves_sdr_on_held_out_mixtures() -> None:
    assert "nmf" in ALGORITHMS
    L.seed_everything(0, verbose=False)
    prob = _problem()
    module = UnfoldedModule(prob, algorithm="nmf", paradigm="objective", depth=3, lr=3e-3)
    x, S = prob.sample(64, seed=99)
    sdr = prob.metrics()[0]
    before = final_metric(module.model, sdr, x, S)
    train_briefly(module, prob, 40)
    after = final_metric(module.model, sdr, x, S)
    assert after > before + 0.5, (before, after)
    # the raw learned dictionaries themselves were projected back onto W >= 0 after every step
    raw = torch.stack([w.detach() for w in module.model.learned["dictionary"]])
    assert float(raw.min()) >= 0.0


# -- the study ------------------------------------------------------------------------------
def test_nmf_study_tiny_preset_writes_results(
    tmp_path: Path, load_example: Callable[[str], Any]
) -> None:
    study = load_example("nmf_study")
    study.main(["--preset", "tiny", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    depth = study.PRESETS["tiny"].depth
    assert set(results["methods"]) == set(study.METHODS)
    for entry in results["methods"].values():
        assert len(entry["sdr_db"]) == depth
        assert all(math.isfinite(v) for v in entry["sdr_db"])
        assert isinstance(entry["params"], int) and entry["infer_ms"] > 0
        assert entry["min_factor"] >= 0.0
    assert (tmp_path / "sdr_vs_layer.png").stat().st_size > 0
