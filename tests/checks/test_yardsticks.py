"""The classical yardstick of the rate and safeguard checks: the classical solver of the model's
algorithm, run on the same samples for the same number of iterations and measured the same way,
so a verdict says whether the learned layers or the classical iteration set it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning_unfold.checks import Status

from lightning_unfold import UnfoldedModel, checks
from lightning_unfold.algorithms import ISTARPCA, MeanFieldCRF, Segmentation, UltrasoundClutter
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


@pytest.fixture(scope="module")
def trained() -> tuple[UnfoldedModel, UltrasoundClutter, tuple]:
    """ISTA-RPCA-6 after 40 Adam steps on 32 other samples (NMSE to the truth 0.020)."""
    model, prob, data = _clutter_model(1.0)
    x, s = prob.sample(32, seed=2, dtype=F64)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(40):
        opt.zero_grad()
        est = model(x).final_estimate
        loss = (est - s).abs().pow(2).sum() / s.abs().pow(2).sum()
        loss.backward()
        opt.step()
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
    # ISTA-RPCA is sublinear here: q = 0.975 > 0.9 at the default thresholds, a FAIL that the
    # yardstick attributes to the iteration (the model is the iteration)
    assert r.status is Status.FAILED and r.value is not None and r.value > 0.95


def test_linear_rate_says_where_the_model_ends_against_the_classical_solver(
    trained: tuple[UnfoldedModel, UltrasoundClutter, tuple],
) -> None:
    # measured (16 samples): classical ISTA-RPCA 12.1 → 7.37 in 6 iterations; with every step
    # × 0.3 the model ends at 7.84, above it; after 40 Adam steps on 32 other samples (NMSE
    # 0.020) it ends at 1.7, below it
    model, prob, data = _clutter_model(0.3)
    slow = checks.linear_convergence(model, prob, data)
    assert slow.details["mean_error"][-1] > slow.details["classical"]["mean_error"][-1]
    assert "the model ends above it" in slow.message
    fast = checks.linear_convergence(*trained)
    final = fast.details["mean_error"][-1]
    assert final < 0.5 * fast.details["classical"]["mean_error"][-1], fast.message
    assert "the model ends below it" in fast.message
    assert fast.details["classical"]["fit"]["q"] > fast.value  # faster than ISTA-RPCA


def test_a_black_box_has_no_classical_yardstick() -> None:
    prob = UltrasoundClutter(n_x=6, n_z=6, n_frames=4, seed=0)
    data = prob.sample(8, seed=1, dtype=F64)
    ctx = checks.prepare(BlackBoxModel(prob, 200), prob, data)
    assert ctx.classical() is None


def test_safeguard_yardstick_on_clutter_separation(
    trained: tuple[UnfoldedModel, UltrasoundClutter, tuple],
) -> None:
    # the classical-init model is ISTA-RPCA: the solver alone needs exactly its K + n = 296
    model, prob, data = _clutter_model(1.0)
    ok = checks.safeguard(model, prob, data, n_samples=4)
    assert ok.status is Status.PASSED, ok.message
    alone = ok.details["classical_alone"]
    assert alone["reached"] and alone["iterations"] == 6 + ok.details["iterations"], alone
    # the trained model passes after K + 200 = 206; ISTA-RPCA alone is at 1.25e-4 by then
    fast = checks.safeguard(*trained, n_samples=4)
    assert fast.status is Status.PASSED, fast.message
    alone = fast.details["classical_alone"]
    assert not alone["reached"] and alone["iterations"] == 6 + fast.details["iterations"]
    assert (
        alone["value"] > 10 * fast.value and "the learned layers saved iterations" in fast.message
    )
    short = checks.safeguard(model, prob, data, n_samples=4, max_iter=10)
    assert short.status is Status.FAILED and not short.details["classical_alone"]["reached"]
    assert "the budget is short, not the learned layers" in short.message


def test_descent_says_whether_the_learned_layers_or_the_iteration_break_it() -> None:
    model, prob, data = _clutter_model(1.0)
    ok = checks.objective_descent(model, prob, data)
    assert ok.status is Status.PASSED and "descends too" in ok.message, ok.message
    assert ok.details["classical"]["violated_layers"] == []
    # layer 3 overshoots: a step 4× the classical one is past ISTA-RPCA's 2/L
    with torch.no_grad():
        model.learned.step[2].mul_(4.0)
    bad = checks.objective_descent(model, prob, data)
    assert bad.status is Status.FAILED and 3 in bad.details["violated_layers"], bad.message
    assert bad.details["classical"]["violated_layers"] == []
    assert "the learned layers, not the iteration, break descent" in bad.message
    same = checks.descent(model, prob, data, quantity="objective")
    assert same.status is Status.FAILED and "the learned layers, not the iteration" in same.message


def test_descent_says_when_the_classical_iteration_does_not_descend_either() -> None:
    # mean-field CRF at its classical values on 16 synthetic 10 × 10 images: every iteration
    # smooths the posteriors and raises the cross-entropy against the labels a little
    # (measured 0.80391 → 0.80423 over 4 iterations), so the model's FAIL is the iteration's
    prob = Segmentation(size=10, n_labels=3, seed=1)
    data = prob.sample(16, seed=2)
    model = UnfoldedModel(MeanFieldCRF(), prob, depth=4, paradigm="hyperparameters")
    r = checks.descent(model, prob, data)
    assert r.status is Status.FAILED and r.details["quantity"] == "loss"
    assert r.details["classical"]["violated_layers"] == [1, 2, 3, 4]
    np.testing.assert_allclose(r.details["classical"]["mean_value"], r.details["mean_value"])
    assert "does not descend either" in r.message and "the iteration itself" in r.message
