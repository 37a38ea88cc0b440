"""Helpers shared by the algorithm tests (imported by name, not through conftest)."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lightning_unfold.core.algorithm import ProblemSpec
from lightning_unfold.core.iterate import iterate_blocks
from lightning_unfold.core.metrics import ProblemMetric
from lightning_unfold.training import SyntheticDataModule
from lightning_unfold.training.study import study_trainer

HAS_SKIMAGE = importlib.util.find_spec("skimage") is not None
#: marks a test that reads images shipped with scikit-image (the ``images`` extra)
needs_skimage = pytest.mark.skipif(
    not HAS_SKIMAGE, reason="scikit-image is not installed (pip install lightning-unfold[images])"
)


def hide_skimage(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import skimage`` (and its ``data``/``io`` modules) fail for the rest of the test,
    as on an install without the ``images`` extra."""
    for name in ("skimage", "skimage.data", "skimage.io"):
        monkeypatch.setitem(sys.modules, name, None)


def final_metric(model: nn.Module, metric: ProblemMetric, x: Tensor, target: Tensor) -> float:
    """A problem metric of ``model``'s final estimate on the batch ``(x, target)``, pooled over
    the batch (``finalize`` of the summed ``statistics``), without gradients."""
    with torch.no_grad():
        est = model(x).final_estimate
    return float(metric.finalize(metric.statistics(est, target, x)))


def train_briefly(module: Any, problem: ProblemSpec, steps: int, batch: int = 8) -> None:
    """Fit ``module`` for ``steps`` optimizer steps on fresh batches of ``batch`` draws of
    ``problem`` (a quiet study trainer): the "training improves the metric" tests."""
    data = SyntheticDataModule(problem, batch_size=batch, train_batches=steps, val_size=batch)
    study_trainer(steps).fit(module, data)


def trajectory_gap(a: Any, b: Any) -> float:
    """Largest entrywise difference between two trajectories' iterates, over every layer and
    every block of a tuple iterate: the classical-init equivalence tests compare it to 1e-8."""
    return max(
        float((ta - tb).detach().abs().max())
        for sa, sb in zip(a.iterates, b.iterates, strict=True)
        for ta, tb in zip(iterate_blocks(sa).values(), iterate_blocks(sb).values(), strict=True)
    )
