"""The descending_constraints check on deep networks and on the models of the end-to-end regime.

End-to-end training (loss on the last layer only) of a deep LISTA from its ISTA initialisation
leaves the intermediate layers idle (distance ratio ≈ 1) and lets the last few layers do the work;
the same training under descending constraints keeps every layer a descent step. The check must
tell the two apart.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lightning_unfold import ISTA, SparseRecovery, UnfoldedModel, checks
from lightning_unfold.training import DescendingConstraints, SyntheticDataModule, UnfoldedModule
from lightning_unfold.training.study import study_trainer


def test_deep_float32_ista_passes_at_every_perturbation_size() -> None:
    # the perturbations compound over the layers (each relative to the perturbed iterate's norm,
    # so 1000^20 after 20 layers at beta = 1000): in float32 they overflow to inf, which would
    # count classical ISTA as not descending; the check runs them in float64
    problem = SparseRecovery(m=20, n=40, seed=0)
    data = problem.sample(32, seed=(3, 0))
    model = UnfoldedModel(ISTA(), problem, 20, "hyperparameters")
    assert next(model.parameters()).dtype == torch.float32
    r = checks.descending_constraints(model, problem, data, reference="lasso")
    assert r.passed and r.value == 1.0, r.message
    assert next(model.parameters()).dtype == torch.float32  # the user's model is left alone
