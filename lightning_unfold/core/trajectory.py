"""The trajectory of all iterates produced by an unfolded model or a solver."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor

S = TypeVar("S")

__all__ = ["Trajectory"]


@dataclass(frozen=True)
class Trajectory(Generic[S]):
    r"""All iterates :math:`s^{(0)}, s^{(1)}, \dots, s^{(K)}` of one forward pass.

    ``iterates[k]`` is the solver state after layer ``k`` (``iterates[0]`` is the initial state);
    ``estimates[k]`` is the quantity compared with the ground truth at that layer (the code ``s``
    for sparse recovery, ``z`` for ADMM, :math:`LR^\top` for RPCA), shape ``(B, ...)``.
    Everything downstream — layer-wise losses, per-layer metrics, theory checks — reads this.
    """

    iterates: tuple[S, ...]
    estimates: tuple[Tensor, ...]

    def __post_init__(self) -> None:
        if len(self.iterates) == 0:
            raise ValueError("A trajectory needs at least the initial iterate.")
        if len(self.iterates) != len(self.estimates):
            raise ValueError(
                f"Trajectory has {len(self.iterates)} iterates but {len(self.estimates)} estimates."
            )

    @classmethod
    def from_iterates(
        cls, iterates: Sequence[Any], estimate: Callable[[Any], Tensor] | None = None
    ) -> Trajectory[Any]:
        """Build a trajectory from a list of iterates (``estimate`` defaults to identity).

        This is how a plain callable ``x -> [s0, ..., sK]`` from another library is adapted.
        """
        fn = estimate if estimate is not None else (lambda s: s)
        its = tuple(iterates)
        return cls(iterates=its, estimates=tuple(fn(s) for s in its))

    @property
    def depth(self) -> int:
        """Number of layers K (the trajectory holds K + 1 iterates)."""
        return len(self.iterates) - 1

    @property
    def final(self) -> S:
        return self.iterates[-1]

    @property
    def final_estimate(self) -> Tensor:
        return self.estimates[-1]

    def __len__(self) -> int:
        return len(self.iterates)

    def stacked_estimates(self) -> Tensor:
        """Estimates stacked as a ``(K + 1, B, ...)`` tensor."""
        return torch.stack(self.estimates, dim=0)

    def distances(self, reference: Tensor, *, relative: bool = False) -> Tensor:
        r"""Per-layer, per-sample :math:`\|\hat s^{(k)} - s^\star\|_2`, shape ``(K + 1, B)``.

        With ``relative=True`` each row is divided by :math:`\|s^\star\|_2` (per sample).
        """
        est = self.stacked_estimates()
        if est.shape[1:] != reference.shape:
            raise ValueError(
                f"Reference of shape {tuple(reference.shape)} does not match the estimates' "
                f"shape {tuple(est.shape[1:])}."
            )
        diff = (est - reference.unsqueeze(0)).flatten(2)
        dist = torch.linalg.vector_norm(diff, dim=2)
        if relative:
            dist = dist / torch.linalg.vector_norm(reference.flatten(1), dim=1).clamp_min(1e-30)
        return dist
