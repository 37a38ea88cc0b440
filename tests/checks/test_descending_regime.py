"""The descending_constraints check on deep networks and on the models of the end-to-end regime.

End-to-end training (loss on the last layer only) of a deep LISTA from its ISTA initialisation
leaves the intermediate layers idle (distance ratio ≈ 1) and lets the last few layers do the work;
the same training under descending constraints keeps every layer a descent step. The check must
tell the two apart: on a deterministic construction of that shape, and on two small but real
trainings (marked slow: about 17 s of CPU).
"""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lightning_unfold import (
    ISTA,
    SparseRecovery,
    SyntheticDataModule,
    UnfoldedModel,
    UnfoldedModule,
    checks,
)
from lightning_unfold.training import DescendingConstraints, LRScheduler
from lightning_unfold.training.study import study_trainer

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


def _train(constrained: bool) -> UnfoldedModel:
    """A real training in the regime where descending constraints bind: LISTA, K = 12, trained
    on its last layer only (600 Adam steps at lr 1e-2, cosine decay, gradient norm clipped at 1),
    with or without descending constraints (ε = 0.1, a dual step every 10 steps). Same seed,
    data stream and initialisation for both."""
    L.seed_everything(0, verbose=False)
    module = UnfoldedModule(
        _TRAIN_PROBLEM,
        paradigm="objective",
        variant="lista",
        depth=12,
        lr=1e-2,
        formulation="end_to_end",
        scheduler=LRScheduler("cosine"),
    )
    callbacks = (
        [DescendingConstraints(eps=0.1, dual_lr=1.0, dual_every_n_steps=10)] if constrained else []
    )
    data = SyntheticDataModule(
        _TRAIN_PROBLEM, batch_size=64, train_batches=600, val_size=64, seed=0
    )
    study_trainer(600, "cpu", callbacks, max_epochs=1, gradient_clip_val=1.0).fit(module, data)
    return module.model


_TRAIN_PROBLEM = SparseRecovery(m=32, n=64, sparsity=0.1, snr_db=None, rho=0.05, seed=0)


@pytest.mark.slow
def test_the_check_tells_trained_constrained_from_unconstrained_lista_apart() -> None:
    # measured (seeds 0-3, this setting): end to end leaves 4-6 middle layers idle (ratio
    # 1.000-1.002) in every seed; constrained keeps every layer below 1 (largest 0.92-0.99)
    data = _TRAIN_PROBLEM.sample(256, seed=(3, 0))
    free = checks.descending_constraints(_train(False), _TRAIN_PROBLEM, data, reference="truth")
    assert not free.passed and free.value is not None and free.value >= 1.0, free.message
    idle = [r >= 1.0 for r in free.details["ratios"]]
    assert sum(idle) >= 3 and not any(idle[-3:])  # the last layers do the work
    tied = checks.descending_constraints(_train(True), _TRAIN_PROBLEM, data, reference="truth")
    assert tied.passed and tied.value is not None and tied.value < 0.97, tied.message
    assert max(tied.details["ratios"]) < 1.0
