"""The descending_constraints and safeguard checks: must pass, must fail, report with plots."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from checks_helpers import DEPTH, PlainLISTA
from lightning_unfold.checks import Status

from lightning_unfold import ISTA, BlackBoxModel, SparseRecovery, UnfoldedModel, checks
from lightning_unfold.core.safeguard import SafeguardedModel

_PROBLEM = SparseRecovery(m=20, n=40, seed=0)
_DATA = _PROBLEM.sample(64, seed=(3, 0))


def _ista() -> UnfoldedModel:
    return UnfoldedModel(ISTA(), _PROBLEM, DEPTH, "hyperparameters")


def _overshooting_lista() -> UnfoldedModel:
    model = UnfoldedModel(ISTA(), _PROBLEM, DEPTH, "objective", variant="lista")
    with torch.no_grad():
        for w in model.learned["W2"]:
            w.mul_(3.0)  # ||W2|| ~ 3: every layer expands the error
    return model


def test_descending_constraints_passes_for_ista_under_every_perturbation() -> None:
    # ISTA is firmly non-expansive towards the LASSO solution: it descends from any input
    r = checks.descending_constraints(_ista(), _PROBLEM, _DATA, reference="lasso")
    assert r.passed and r.value is not None and r.value < 1.0, r.message
    assert r.threshold == 1.0 and r.details["scale"] == "distance"
    assert set(r.details["ratios_perturbed"]) == {"0", "0.01", "0.1"}
    assert all(len(v) == DEPTH for v in r.details["ratios_perturbed"].values())
    # the paper's test: every sample descends at every size up to 1000 times the iterate's norm
    p = checks.descending_constraints(
        _ista(),
        _PROBLEM,
        _DATA,
        reference="lasso",
        scale="norm",
        betas=checks.PERTURBATION_BETAS,
        criterion="samples",
    )
    assert p.passed and p.value == 1.0, p.message
    assert set(p.details["fraction"]) == {"0", "0.01", "0.1", "1", "10", "100", "1000"}
    assert all(len(v) == DEPTH for v in p.details["fraction"].values())


def test_descending_constraints_fails_for_an_expanding_model() -> None:
    r = checks.descending_constraints(_overshooting_lista(), _PROBLEM, _DATA, reference="lasso")
    assert not r.passed and r.value is not None and r.value > 1.0
    assert "do not descend in expectation" in r.message
    assert r.counterexample is not None and r.counterexample["growth"] > 1
    s = checks.descending_constraints(
        _overshooting_lista(), _PROBLEM, _DATA, reference="lasso", criterion="samples"
    )
    assert not s.passed and s.value is not None and s.value < 0.9


def test_distance_scaled_perturbation_has_the_asked_size() -> None:
    # s~ = s + beta ||s - s*|| z / ||z||: the perturbed input of layer 2 sits at
    # sqrt(1 + beta^2) times the distance of s^(1) in the mean (z nearly orthogonal to s - s*)
    from lightning_unfold.checks.descending import _perturbed_errors

    model = _ista().double()
    x, sol = _DATA[0].double(), _DATA[1].double()
    E = _perturbed_errors(model, x, sol, 1.0, torch.Generator().manual_seed(0), "distance")
    out1, in2 = E[:, 1], E[:, 2]
    keep = out1 > 0  # (an all-zero code that the first layer already recovers exactly)
    assert keep.sum() > 50
    assert (in2[keep] / out1[keep]).mean() == pytest.approx(2**0.5, rel=0.05)
    E0 = _perturbed_errors(model, x, sol, 1e-12, torch.Generator().manual_seed(0), "distance")
    assert E0[:, 2] == pytest.approx(E0[:, 1], rel=1e-9)


def test_descending_constraints_bad_input_and_models_without_layers() -> None:
    with pytest.raises(ValueError, match="betas"):
        checks.descending_constraints(_ista(), _PROBLEM, _DATA, betas=[-1.0])
    with pytest.raises(ValueError, match="min_fraction"):
        checks.descending_constraints(_ista(), _PROBLEM, _DATA, min_fraction=2.0)
    with pytest.raises(ValueError, match="valid: \\['distance', 'norm'\\]"):
        checks.descending_constraints(_ista(), _PROBLEM, _DATA, scale="iterate")
    with pytest.raises(ValueError, match="valid: \\['expected', 'samples'\\]"):
        checks.descending_constraints(_ista(), _PROBLEM, _DATA, criterion="median")
    plain = PlainLISTA(_PROBLEM.H, _PROBLEM.rho, DEPTH)
    with pytest.raises(checks.NotApplicableError, match="does not expose its layers"):
        checks.descending_constraints(plain, _PROBLEM, _DATA)


def test_safeguard_passes_for_garbage_weights_when_continued() -> None:
    r = checks.safeguard(_overshooting_lista(), _PROBLEM, _DATA, tol=1e-6, max_iter=5000)
    assert r.passed and r.value is not None and r.value <= 1e-6, r.message
    assert r.details["certificate"] == "LASSO KKT residual relative to ρ"
    assert max(r.details["fallback_fraction"]) > 0


def test_safeguard_fails_without_enough_continuation() -> None:
    r = checks.safeguard(_overshooting_lista(), _PROBLEM, _DATA, tol=1e-6, max_iter=5)
    assert not r.passed and r.value is not None and r.value > 1e-6
    assert "raise max_iter" in r.message and "not the learned layers" in r.message
    alone = r.details["classical_alone"]
    assert not alone["reached"] and alone["iterations"] == DEPTH + 5 and alone["value"] > 1e-6


def test_safeguard_uses_a_safeguarded_models_own_settings() -> None:
    sg = SafeguardedModel(_ista(), delta=0.3, mu_update="geometric")
    r = checks.safeguard(sg, _PROBLEM, _DATA, max_iter=5000)
    assert r.passed and r.details["mu_update"] == "geometric" and r.details["delta"] == 0.3


def test_both_checks_in_the_report_with_plots(tmp_path: Path) -> None:
    suite = "descending_constraints,safeguard"
    results = checks.run_checks(_overshooting_lista(), _PROBLEM, _DATA, suite, out_dir=tmp_path)
    report = checks.Report(results, checks.describe_model(_overshooting_lista()))
    report.write(tmp_path)
    md = (tmp_path / "report.md").read_text()
    for name in ("descending_constraints", "safeguard"):
        assert f"![{name}]({name}.png)" in md
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    assert "descending_constraints — FAIL" in md and "safeguard — PASS" in md
    # in a named suite both are skipped for a model without layers
    box = BlackBoxModel(_PROBLEM, 200)
    res = {r.name: r for r in checks.run_checks(box, _PROBLEM, _DATA, "all")}
    assert res["safeguard"].status is Status.SKIPPED
    assert res["descending_constraints"].status is Status.SKIPPED


def test_distance_scaled_perturbation_of_a_multi_block_iterate() -> None:
    # ADMM's iterate (s, z, u): each block gets its share of beta times the distance, so the
    # perturbed estimate is about beta times the remaining error away (never an overflow when
    # an estimate is zero); classical ADMM descends from such inputs
    from lightning_unfold.checks.descending import _perturbed_errors

    from lightning_unfold.algorithms import ADMMLasso

    model = UnfoldedModel(ADMMLasso(), _PROBLEM, DEPTH, "hyperparameters").double()
    x, sol = _DATA[0].double(), _DATA[1].double()
    E = _perturbed_errors(model, x, sol, 0.1, torch.Generator().manual_seed(0), "distance")
    assert bool(torch.isfinite(torch.from_numpy(E)).all())
    grow = E[:, 2::2].mean(axis=0) / E[:, 1:-1:2].mean(axis=0)  # perturbed input / clean output
    assert all(1.0 <= g <= 1.1 for g in grow), grow
    r = checks.descending_constraints(model, _PROBLEM, _DATA, reference="lasso")
    assert r.passed and r.value is not None and r.value < 1.0, r.message
