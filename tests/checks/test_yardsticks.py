"""The classical yardstick of the rate and safeguard checks: the classical solver of the model's
algorithm, run on the same samples for the same number of iterations and measured the same way,
so a verdict says whether the learned layers or the classical iteration set it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning_unfold.checks import Status

from lightning_unfold import UnfoldedModel, checks
from lightning_unfold.algorithms import ISTARPCA, UltrasoundClutter
from lightning_unfold.core.unfolded import BlackBoxModel

F64 = torch.float64


def _clutter_model(step_scale: float) -> tuple[UnfoldedModel, UltrasoundClutter, tuple]:
    """ISTA-RPCA-6 on ultrasound clutter with every learned step scaled by ``step_scale``."""
    prob = UltrasoundClutter(n_x=6, n_z=6, n_frames=4, seed=0)
    data = prob.sample(16, seed=1, dtype=F64)
    model = UnfoldedModel(ISTARPCA(), prob, depth=6, paradigm="hyperparameters", dtype=F64)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".step." in name:
                p.mul_(step_scale)
    return model, prob, data


def test_linear_rate_of_the_classical_init_is_its_own_yardstick() -> None:
    model, prob, data = _clutter_model(1.0)
    r = checks.linear_convergence(model, prob, data)
    classical = r.details["classical"]
    assert classical["operator"] == "ISTARPCA"
    # the classical-init model is the classical solver: identical curves, identical rate
    np.testing.assert_allclose(classical["mean_error"], r.details["mean_error"], rtol=0, atol=0)
    assert classical["fit"]["q"] == pytest.approx(r.value)
    assert "the model ends level with it" in r.message and "LASSO" not in r.message


def test_linear_rate_says_where_the_model_ends_against_the_classical_solver() -> None:
    # measured (16 samples): classical ISTA-RPCA 12.1 → 7.37 in 6 iterations; with every step
    # × 0.3 the model ends at 7.84, above it; after 40 Adam steps on 32 other samples (NMSE
    # 0.020) it ends at 1.7, below it
    model, prob, data = _clutter_model(0.3)
    slow = checks.linear_convergence(model, prob, data)
    assert slow.details["mean_error"][-1] > slow.details["classical"]["mean_error"][-1]
    assert "the model ends above it" in slow.message
    model, prob, data = _clutter_model(1.0)
    x, s = prob.sample(32, seed=2, dtype=F64)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(40):
        opt.zero_grad()
        est = model(x).final_estimate
        loss = (est - s).abs().pow(2).sum() / s.abs().pow(2).sum()
        loss.backward()
        opt.step()
    trained = checks.linear_convergence(model, prob, data)
    final = trained.details["mean_error"][-1]
    assert final < 0.5 * trained.details["classical"]["mean_error"][-1], trained.message
    assert "the model ends below it" in trained.message
    assert trained.details["classical"]["fit"]["q"] > trained.value  # faster than ISTA-RPCA


def test_a_black_box_has_no_classical_yardstick() -> None:
    prob = UltrasoundClutter(n_x=6, n_z=6, n_frames=4, seed=0)
    data = prob.sample(8, seed=1, dtype=F64)
    ctx = checks.prepare(BlackBoxModel(prob, 200), prob, data)
    assert ctx.classical() is None


def test_safeguard_yardstick_on_clutter_separation() -> None:
    # ISTA-RPCA from its own initialisation needs the same budget as the classical-init model
    model, prob, data = _clutter_model(1.0)
    ok = checks.safeguard(model, prob, data, n_samples=4, check_every=50)
    assert ok.status is Status.PASSED, ok.message
    alone = ok.details["classical_alone"]
    assert alone["reached"] and alone["iterations"] <= 6 + ok.details["iterations"]
    short = checks.safeguard(model, prob, data, n_samples=4, max_iter=10)
    assert short.status is Status.FAILED and not short.details["classical_alone"]["reached"]
    assert "the budget is short, not the learned layers" in short.message
