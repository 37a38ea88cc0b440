r"""Learning-rate schedules and per-parameter-group learning rates of :class:`UnfoldedModule`.

Both are plain constructor arguments of the module, so they are set alike from Python and from a
LightningCLI YAML file::

    model:
      lr: 3.0e-3
      scheduler: {name: cosine, floor: 0.02}     # η_t = η(f + (1 − f)(1 + cos πt/T)/2)
      param_group_lr: {"model.nets.*": 0.1}      # the networks at 0.1 η, the rest at η
      lr_scaling: magnitude                      # each tensor at η · mean|θ| (at fit start)

The schedule is a multiplier :math:`c_t` of every group's own rate, stepped after each optimizer
step (Lightning's ``interval: "step"``); :math:`t` counts optimizer steps from 0 and the horizon
:math:`T` is ``steps`` or, by default, the trainer's estimated number of optimizer steps
(``max_steps``, or epochs × batches):

===============  ========================================================================
``constant``     :math:`c_t = 1`
``cosine``       :math:`c_t = f + \tfrac12(1 - f)(1 + \cos(\pi\min(t/T, 1)))`, from 1 to ``floor`` f
``step``         :math:`c_t = \gamma^{\lfloor t/s\rfloor}`, ``step_size`` s, ``gamma`` γ
``exponential``  :math:`c_t = \gamma^{t}`
===============  ========================================================================

plus an optional linear warm-up :math:`c_t \leftarrow c_t\,(t + 1)/(w + 1)` for :math:`t < w`
(``warmup_steps`` w).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

__all__ = ["LR_SCALINGS", "SCHEDULERS", "LRScheduler", "parameter_groups"]

SCHEDULERS: tuple[str, ...] = ("constant", "cosine", "step", "exponential")
LR_SCALINGS: tuple[str, ...] = ("none", "magnitude")


@dataclass(frozen=True)
class LRScheduler:
    """A learning-rate schedule: a multiplier of every parameter group's rate per optimizer step.

    Args:
        name: ``"constant" | "cosine" | "step" | "exponential"`` (formulas in the module docstring).
        steps: the cosine horizon T in optimizer steps; ``None`` = the trainer's estimated number
            of optimizer steps of the fit.
        floor: the cosine's final multiplier f (0 ≤ f ≤ 1).
        step_size: the step schedule's period s (optimizer steps).
        gamma: the decay factor γ of ``step`` and ``exponential`` (0 < γ ≤ 1).
        warmup_steps: linear warm-up over the first w steps (0 = none).
    """

    name: Literal["constant", "cosine", "step", "exponential"] = "cosine"
    steps: int | None = None
    floor: float = 0.0
    step_size: int = 1000
    gamma: float = 0.1
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.name not in SCHEDULERS:
            raise ValueError(f"Unknown scheduler {self.name!r}; valid: {list(SCHEDULERS)}.")
        if self.steps is not None and self.steps < 1:
            raise ValueError(
                f"scheduler steps must be >= 1 (or None: the fit's), got {self.steps}."
            )
        if not 0.0 <= self.floor <= 1.0:
            raise ValueError(f"scheduler floor must lie in [0, 1], got {self.floor}.")
        if self.step_size < 1:
            raise ValueError(f"scheduler step_size must be >= 1, got {self.step_size}.")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"scheduler gamma must lie in (0, 1], got {self.gamma}.")
        if self.warmup_steps < 0:
            raise ValueError(f"scheduler warmup_steps must be >= 0, got {self.warmup_steps}.")

    def factor(self, t: int, horizon: int) -> float:
        """The multiplier :math:`c_t` after ``t`` optimizer steps of a fit of ``horizon`` steps."""
        T = max(self.steps if self.steps is not None else horizon, 1)
        if self.name == "cosine":
            c = self.floor + 0.5 * (1.0 - self.floor) * (1.0 + math.cos(math.pi * min(t / T, 1.0)))
        elif self.name == "step":
            c = self.gamma ** (t // self.step_size)
        elif self.name == "exponential":
            c = self.gamma**t
        else:
            c = 1.0
        if t < self.warmup_steps:
            c *= (t + 1) / (self.warmup_steps + 1)
        return c

    def build(
        self, optimizer: torch.optim.Optimizer, horizon: int
    ) -> torch.optim.lr_scheduler.LambdaLR:
        """The ``LambdaLR`` applying :meth:`factor` to every group of ``optimizer``."""
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: self.factor(t, horizon))


def as_scheduler(value: LRScheduler | Mapping[str, object] | str | None) -> LRScheduler | None:
    """Accept a :class:`LRScheduler`, its name or its fields as a mapping (a checkpoint's
    hyperparameters); ``None`` stays ``None`` (a constant rate)."""
    if value is None or isinstance(value, LRScheduler):
        return value
    if isinstance(value, str):
        return LRScheduler(name=value)  # type: ignore[arg-type]
    if isinstance(value, Mapping):
        return LRScheduler(**value)  # type: ignore[arg-type]
    raise TypeError(
        f"scheduler must be an LRScheduler, a name in {list(SCHEDULERS)} or a mapping of its "
        f"fields, got {type(value).__name__}."
    )


def parameter_groups(
    named: Iterable[tuple[str, nn.Parameter]],
    lr: float,
    group_lr: Mapping[str, float] | None = None,
    scaling: str = "none",
) -> list[dict[str, object]]:
    r"""Optimizer parameter groups of the trainable parameters in ``named``.

    ``group_lr`` maps :mod:`fnmatch` patterns of parameter names (``"model.learned.step.*"``,
    ``"*conv*"``) to **multipliers** of ``lr``; the first matching pattern wins, unmatched
    parameters keep ``lr``; each parameter is then its own group. Without either option there is
    one group (the plain optimizer). ``scaling="magnitude"`` multiplies each tensor's rate by its current
    mean absolute value :math:`\overline{|\theta|}` (1 where it is 0), so that one ``lr`` moves
    parameters of very different scales (a threshold of 10⁻³, a filter of 1) by about the same
    relative amount per Adam step. A pattern that matches no trainable parameter is an error
    (a typo would otherwise silently train at the base rate).
    """
    if scaling not in LR_SCALINGS:
        raise ValueError(f"Unknown lr_scaling {scaling!r}; valid: {list(LR_SCALINGS)}.")
    patterns = dict(group_lr or {})
    for pattern, mult in patterns.items():
        if not (isinstance(mult, int | float) and mult >= 0):
            raise ValueError(f"param_group_lr[{pattern!r}] must be a number >= 0, got {mult!r}.")
    trainable = [(name, p) for name, p in named if p.requires_grad]
    if not patterns and scaling == "none":  # one group: the plain optimizer
        return [{"params": [p for _, p in trainable], "lr": lr}]
    used: set[str] = set()
    groups: list[dict[str, object]] = []
    for name, p in trainable:
        rate = lr
        for pattern, mult in patterns.items():
            if fnmatch.fnmatchcase(name, pattern):
                rate, _ = lr * float(mult), used.add(pattern)
                break
        if scaling == "magnitude":
            scale = float(p.detach().abs().mean()) if p.numel() else 0.0
            rate *= scale if scale > 0 else 1.0
        groups.append({"params": [p], "lr": rate, "name": name})
    unused = [pat for pat in patterns if pat not in used]
    if unused:
        raise ValueError(
            f"param_group_lr patterns {unused} match no trainable parameter; the trainable "
            f"parameters are {[n for n, _ in trainable]} (patterns are fnmatch patterns of these "
            "names)."
        )
    return groups
