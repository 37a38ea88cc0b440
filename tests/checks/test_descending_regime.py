"""The descending_constraints check on deep networks and on the models of the end-to-end regime.

End-to-end training (loss on the last layer only) of a deep LISTA from its ISTA initialisation
leaves the intermediate layers idle (distance ratio ≈ 1) and lets the last few layers do the work;
the same training under descending constraints keeps every layer a descent step. The check must
tell the two apart.
"""

from __future__ import annotations

import pytest
import torch

from lightning_unfold import ISTA, SparseRecovery, UnfoldedModel, checks

_PROBLEM = SparseRecovery(m=20, n=40, seed=0)
_DATA = _PROBLEM.sample(48, seed=(3, 0))


def test_deep_float32_ista_passes_at_every_perturbation_size() -> None:
    # the perturbations compound over the layers (each relative to the perturbed iterate's norm,
    # so 1000^20 after 20 layers at beta = 1000): in float32 they overflow to inf, which would
    # count classical ISTA as not descending; the check runs them in float64
    model = UnfoldedModel(ISTA(), _PROBLEM, 20, "hyperparameters")
    assert next(model.parameters()).dtype == torch.float32
    r = checks.descending_constraints(
        model,
        _PROBLEM,
        _DATA,
        reference="lasso",
        scale="norm",
        betas=checks.PERTURBATION_BETAS,
        criterion="samples",
    )
    assert r.passed and r.value == 1.0, r.message
    d = checks.descending_constraints(model, _PROBLEM, _DATA, reference="lasso")
    assert d.passed and d.value is not None and d.value < 1.0, d.message
    assert next(model.parameters()).dtype == torch.float32  # the user's model is left alone


def _lista(depth: int, idle: int) -> UnfoldedModel:
    """LISTA at its ISTA initialisation whose first ``idle`` layers are made idle
    (:math:`W_1 = 0`, :math:`W_2 = I`, threshold 0: :math:`s^{(l)} = s^{(l-1)}`) — the shape
    end-to-end training gives a deep LISTA (measured in the descent study: NMSE ≈ 0 dB and
    distance ratios ≈ 1.00 up to layer 15 of 20, the last layers doing all the work)."""
    model = UnfoldedModel(ISTA(), _PROBLEM, depth, "objective", variant="lista")
    with torch.no_grad():
        for k in range(idle):
            model.learned["W1"][k].zero_()
            model.learned["W2"][k].copy_(torch.eye(_PROBLEM.n))
            model.learned["threshold"][k].zero_()
    return model


def test_descending_constraints_passes_for_a_lista_whose_layers_all_descend() -> None:
    r = checks.descending_constraints(_lista(20, 0), _PROBLEM, _DATA, reference="truth")
    assert r.passed, r.message
    assert max(r.details["ratios"]) < 1.0


def test_descending_constraints_fails_for_idle_intermediate_layers() -> None:
    r = checks.descending_constraints(_lista(20, 15), _PROBLEM, _DATA, reference="truth")
    assert not r.passed and r.value is not None and r.value >= 1.0, r.message
    assert "15 of 20 layers do not descend" in r.message
    # the idle layers keep the distance (ratio 1, no sample descends), the last five descend
    assert r.details["ratios"][:15] == pytest.approx([1.0] * 15)
    assert all(f < 0.1 for f in r.details["fraction"]["0"][:15])  # (all-zero codes count)
    assert all(f > 0.9 for f in r.details["fraction"]["0"][15:])
