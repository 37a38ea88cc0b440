"""Helpers shared by the algorithm tests (imported by name, not through conftest)."""

from __future__ import annotations

from typing import Any

from lightning_unfold.core.iterate import iterate_blocks


def trajectory_gap(a: Any, b: Any) -> float:
    """Largest entrywise difference between two trajectories' iterates, over every layer and
    every block of a tuple iterate: the classical-init equivalence tests compare it to 1e-8."""
    return max(
        float((ta - tb).detach().abs().max())
        for sa, sb in zip(a.iterates, b.iterates, strict=True)
        for ta, tb in zip(iterate_blocks(sa).values(), iterate_blocks(sb).values(), strict=True)
    )
