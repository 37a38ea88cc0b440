"""Constellations of the MIMO detection family: the unit-power symbol sets with their Gray
labels, and the check that an iterate holds probability vectors over them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lightning_unfold.core.iterate import require_finite

#: the constellations :class:`MIMODetection` knows
CONSTELLATIONS: tuple[str, ...] = ("bpsk", "qpsk", "16qam")


@dataclass(frozen=True)
class Constellation:
    """A unit-power constellation: ``points`` ``(M, d)`` real coordinates (d = 1 for BPSK, 2 for
    complex constellations as (Re, Im)) and its Gray labels ``bits`` ``(M, b)`` (0/1)."""

    name: str
    points: Tensor
    bits: Tensor

    @property
    def size(self) -> int:
        return int(self.points.shape[0])

    @property
    def dim(self) -> int:
        return int(self.points.shape[1])

    @property
    def bits_per_symbol(self) -> int:
        return int(self.bits.shape[1])


def constellation(name: str) -> Constellation:
    """BPSK (:math:`\\pm1`), Gray QPSK (:math:`(\\pm1\\pm j)/\\sqrt2`) or Gray 16-QAM
    (:math:`\\{\\pm1,\\pm3\\}^2/\\sqrt{10}`); index :math:`i` carries the bits of :math:`i` in binary
    (most significant first), and neighbouring points differ in one bit."""
    key = name.lower().replace("-", "") if isinstance(name, str) else name
    if key == "bpsk":
        pts = np.array([[1.0], [-1.0]])
        bits = np.array([[0], [1]])
    elif key in ("qpsk", "16qam"):
        per_axis = 1 if key == "qpsk" else 2
        gray_levels = {
            1: {(0,): 1.0, (1,): -1.0},
            2: {(0, 0): -3, (0, 1): -1, (1, 1): 1, (1, 0): 3},
        }
        levels = gray_levels[per_axis]
        norm = math.sqrt(2.0) if key == "qpsk" else math.sqrt(10.0)
        b = 2 * per_axis
        idx = np.arange(1 << b)
        bits = (idx[:, None] >> np.arange(b - 1, -1, -1)[None, :]) & 1
        pts = (
            np.array([[levels[tuple(r[:per_axis])], levels[tuple(r[per_axis:])]] for r in bits])
            / norm
        )
    else:
        raise ValueError(f"Unknown constellation {name!r}; valid: {list(CONSTELLATIONS)}.")
    return Constellation(key, torch.from_numpy(pts.astype(np.float64)), torch.from_numpy(bits))


def check_probabilities(
    p: Tensor, what: str = "The probability iterate", tol: float = 1e-4
) -> None:
    """Raise a ``ValueError`` unless ``p`` ``(..., M)`` holds probability vectors (finite,
    non-negative, each summing to 1 within ``tol``)."""
    p = p.detach()
    require_finite(p, what)
    if bool((p < -tol).any()):
        raise ValueError(
            f"{what} has negative entries (min {float(p.min()):.3g}); pass probabilities."
        )
    sums = p.sum(dim=-1)
    worst = float((sums - 1.0).abs().max()) if sums.numel() else 0.0
    if worst > tol:
        raise ValueError(
            f"{what} has vectors that do not sum to 1 (largest deviation {worst:.3g}); normalise "
            "it first, e.g. p / p.sum(-1, keepdim=True)."
        )


def _constellation_or_raise(name: str) -> Constellation:
    if not isinstance(name, str):
        raise ValueError(f"Unknown constellation {name!r}; valid: {list(CONSTELLATIONS)}.")
    return constellation(name)
