"""Shared fixtures of the checks tests: a small LASSO problem, data, a trained ALISTA."""

from __future__ import annotations

import pytest
import torch
from checks_helpers import DEPTH, M, N
from torch import Tensor

from lightning_unfold import ISTA, SparseRecovery, UnfoldedModel


@pytest.fixture(scope="session")
def problem() -> SparseRecovery:
    return SparseRecovery(m=M, n=N, sparsity=0.1, seed=0)


@pytest.fixture(scope="session")
def data(problem: SparseRecovery) -> tuple[Tensor, Tensor]:
    return problem.sample(128, seed=(3, 0))


@pytest.fixture(scope="session")
def trained_alista(problem: SparseRecovery) -> UnfoldedModel:
    """ALISTA (m=20, n=40, K=8) trained for ~1–3 s: 120 Adam steps, multi-iteration loss."""
    torch.manual_seed(0)
    model = UnfoldedModel(ISTA(), problem, depth=DEPTH, paradigm="objective", variant="alista")
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for it in range(120):
        x, s = problem.sample(128, seed=(1, it))
        traj = model(x)
        loss = sum(((traj.estimates[k] - s) ** 2).sum(1).mean() for k in range(1, DEPTH + 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model
