"""Parameter counting, the empirical gap and the bound shape of Schnoor et al. (2023)."""

import math

import numpy as np
import pytest
import torch
from lightning_unfold.theory import (
    count_parameters,
    generalization_bound_shape,
    generalization_gap,
)
from torch import nn


def test_count_parameters_counts_trainable_and_shared_once() -> None:
    lin = nn.Linear(4, 3)  # 12 + 3
    assert count_parameters(lin) == 15
    tied = nn.ModuleList([lin, lin])  # tied layers count once
    assert count_parameters(tied) == 15
    lin.bias.requires_grad_(False)
    assert count_parameters(lin) == 12
    t = torch.zeros(5, 2)
    assert count_parameters([t, t, torch.zeros(3)]) == 13
    assert count_parameters(torch.zeros(7)) == 7
    with pytest.raises(TypeError, match="iterable of tensors"):
        count_parameters([np.zeros(3)])


def test_generalization_gap() -> None:
    assert generalization_gap(0.1, 0.25) == pytest.approx(0.15)
    np.testing.assert_allclose(generalization_gap([0.1, 0.2], [0.3, 0.1]), [0.2, -0.1])
    with pytest.raises(ValueError, match="one shape"):
        generalization_gap([0.1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN or Inf"):
        generalization_gap(float("nan"), 0.1)


def test_bound_shape_scales_as_the_theorem_says() -> None:
    b = generalization_bound_shape(100, 10, 1000)
    assert b == pytest.approx(math.sqrt(100 * math.log(10) / 1000))
    assert generalization_bound_shape(400, 10, 1000) == pytest.approx(2 * b)  # sqrt(P)
    assert generalization_bound_shape(100, 10, 4000) == pytest.approx(b / 2)  # 1/sqrt(|D|)
    assert generalization_bound_shape(100, 100, 1000) == pytest.approx(b * math.sqrt(2))  # log K
    # K = 1: log 1 = 0 would claim no complexity; log max(K, 2) is used
    assert generalization_bound_shape(100, 1, 1000) == generalization_bound_shape(100, 2, 1000)
    assert generalization_bound_shape(100, 10, 1000, scale=3.0) == pytest.approx(3 * b)


def test_a_gap_that_grows_faster_than_the_shape_is_detectable() -> None:
    # the comparison the checks will make: gap / shape is bounded when the theorem's shape
    # holds, and grows when it does not (here: gap linear in P instead of sqrt(P))
    Ps = np.array([10, 100, 1000, 10000])
    shape = np.array([generalization_bound_shape(int(P), 10, 1000) for P in Ps])
    following = 0.5 * shape
    violating = 1e-4 * Ps
    assert np.ptp(following / shape) < 1e-12
    assert np.all(np.diff(violating / shape) > 0)


@pytest.mark.parametrize(
    ("args", "match"),
    [((0, 10, 100), "P must be"), ((10, 0, 100), "K must be"), ((10, 2, 0), "n_samples")],
)
def test_bound_shape_rejects_bad_inputs(args: tuple[int, int, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generalization_bound_shape(*args)
    with pytest.raises(ValueError, match="scale"):
        generalization_bound_shape(10, 2, 10, scale=-1.0)
