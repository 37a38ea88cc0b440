r"""The plan of a layer-wise training schedule: stages and learning rates, pure and Trainer-free.

A schedule (see :mod:`lightning_unfold.training.schedules`) is a list of :class:`Stage` s built
from the model depth K; this module builds that list and the learning rate of every layer in
every stage, so both can be tested and inspected without a Trainer:

.. math:: \eta_{j,k} = \eta\; c_{\text{stage}}\; d^{\,k-j}\; r^{\,k-1},

the learning rate of layer :math:`j` in a stage of round :math:`k` (:math:`c_{\text{stage}}` the
stage's multiplier, :math:`d` the age decay, :math:`r` the round decay; 0 for a layer the stage
does not train, no age decay in a stage that trains every layer end to end).

The options every schedule shares live in one dataclass, :class:`ScheduleOptions`, which
LightningCLI reads from YAML as a nested mapping (``options: {restore_best: true, ...}``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from enum import Enum
from typing import Any

__all__ = [
    "ScheduleOptions",
    "Scope",
    "Stage",
    "layer_lr",
    "plan_records",
    "positive",
    "positive_int",
    "resolve_length",
    "steps_or_epochs",
]


class Scope(str, Enum):
    """Which layers a stage trains."""

    NEW = "new"
    """Only the layer introduced in this round (layer k); loss on :math:`s^{(k)}`."""
    PREFIX = "prefix"
    """Layers 1..k; loss on :math:`s^{(k)}`."""
    ALL = "all"
    """Every layer, full forward; loss on :math:`s^{(K)}` (end-to-end)."""


@dataclass(frozen=True)
class Stage:
    """One stage of a schedule.

    Attributes:
        layer: the round's layer k (the loss sits on :math:`s^{(k)}`; K for an ``ALL`` stage).
        scope: which layers train (:class:`Scope`).
        lr_multiplier: :math:`c_{\\text{stage}}`, the stage's factor on the base learning rate.
        max_steps: the stage ends after this many optimizer steps at the latest.
        patience: the stage ends earlier when the held-out loss has not improved for this many
            steps (``None``: fixed length).
        name: a label for logs and progress, e.g. ``"layer 3 / stage 2"``.
    """

    layer: int
    scope: Scope
    lr_multiplier: float
    max_steps: int
    patience: int | None
    name: str

    def trains(self, j: int) -> bool:
        """Whether layer ``j`` is trained in this stage."""
        if self.scope is Scope.NEW:
            return j == self.layer
        if self.scope is Scope.PREFIX:
            return j <= self.layer
        return True

    @property
    def loss_depth(self) -> int | None:
        """The depth the stage's loss sits at (``None``: the full model, end to end)."""
        return None if self.scope is Scope.ALL else self.layer


def positive(name: str, value: float) -> float:
    """``value`` as a float, or a ``ValueError`` naming ``name`` unless finite and > 0."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return float(value)


def positive_int(name: str, value: int | None, *, allow_none: bool = False) -> int | None:
    """``value`` if it is an integer >= 1 (or ``None`` where allowed), else a ``ValueError``."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    return value


def steps_or_epochs(
    names: tuple[str, str], steps: int | None, epochs: int | None, *, required: bool = True
) -> tuple[int | None, int | None]:
    """Validate a stage length given either in optimizer steps or in epochs, not both."""
    s_name, e_name = names
    if steps is not None and epochs is not None:
        raise ValueError(f"Give either {s_name} or {e_name}, not both.")
    if required and steps is None and epochs is None:
        raise ValueError(f"Give the length of these stages: {s_name} or {e_name}.")
    return (
        positive_int(s_name, steps, allow_none=True),
        positive_int(e_name, epochs, allow_none=True),
    )


def resolve_length(
    steps: int | None, epochs: int | None, steps_per_epoch: int | None, what: str
) -> int:
    """A stage length in optimizer steps: ``steps``, or ``epochs`` × ``steps_per_epoch``."""
    if steps is not None:
        return steps
    if epochs is None:
        raise ValueError(f"{what}: give its length in steps or in epochs.")
    if steps_per_epoch is None:
        raise ValueError(
            f"{what} is given in epochs but the number of training batches per epoch is "
            "unknown (an infinite dataloader?); give it in steps instead."
        )
    return epochs * steps_per_epoch


@dataclass(frozen=True)
class ScheduleOptions:
    r"""The options every layer-wise schedule shares (one YAML mapping, ``options:``).

    Attributes:
        layers: number of rounds, i.e. layers trained one after the other (default: the model
            depth K; must be ``<= K``).
        lr: base learning rate :math:`\eta` (default: the optimizer's learning rate, i.e. the
            module's ``lr``).
        age_decay: :math:`d` in :math:`\eta_{j,k} = \eta\,c\,d^{k-j}`; 1 disables it. ``None``
            takes the schedule's own default (0.3 for the stage-wise LISTA schedule, else 1).
        round_decay: :math:`r`: round k's learning rates are multiplied by :math:`r^{k-1}`
            (1, the default, disables it). Not part of the literature's protocol. Adam moves
            every parameter by about the learning rate per step whatever its size, while a
            converging network's thresholds shrink geometrically with depth (ALISTA's by ~0.65
            per layer), so one rate that moves the first layers fast rattles the deepest;
            :math:`r < 1` keeps the step in proportion. A stage that trains every layer (an
            end-to-end stage after the rounds) counts as round K.
        eval_every: evaluate the held-out loss every this many steps of a stage with patience.
        eval_batches: how many validation batches form the held-out set (``None``: all).
        min_delta: an improvement must lower the held-out loss by more than this.
        log_curves: compute and log the per-layer curve of the problem's primary metric on the
            held-out set at the end of each round (needs labelled validation data when the
            metric needs targets).
        warm_start: when round k starts, copy layer k−1's trained values into layer k (where
            shapes agree) instead of starting it from its classical initialisation. Not part of
            the literature's protocol; it shortens the stages a small budget needs.
        restore_best: end every stage on the parameters with the lowest held-out loss seen in
            it, counting the parameters it started from, so that no stage leaves the held-out
            loss higher than it found it. Needs patience (the held-out evaluation).
    """

    layers: int | None = None
    lr: float | None = None
    age_decay: float | None = None
    round_decay: float = 1.0
    eval_every: int = 10
    eval_batches: int | None = None
    min_delta: float = 0.0
    log_curves: bool = True
    warm_start: bool = False
    restore_best: bool = False

    def __post_init__(self) -> None:
        positive_int("layers", self.layers, allow_none=True)
        if self.lr is not None:
            positive("lr", self.lr)
        for name in ("age_decay", "round_decay"):
            value = getattr(self, name)
            if value is None:
                continue
            positive(name, value)
            if value > 1.0:
                raise ValueError(f"{name} must lie in (0, 1], got {value}.")
        positive_int("eval_every", self.eval_every)
        positive_int("eval_batches", self.eval_batches, allow_none=True)
        if not (math.isfinite(self.min_delta) and self.min_delta >= 0):
            raise ValueError(f"min_delta must be finite and >= 0, got {self.min_delta}.")

    @classmethod
    def merge(
        cls, options: ScheduleOptions | Mapping[str, Any] | None, overrides: Mapping[str, Any]
    ) -> ScheduleOptions:
        """``options`` (a dataclass, a mapping from YAML, or ``None``) with ``overrides`` (keyword
        arguments of the same names) applied; an unknown name suggests the closest ones."""
        names = [f.name for f in fields(cls)]
        given = dict(options) if isinstance(options, Mapping) else {}
        for key in [*given, *overrides]:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=3)
                hint = f" Did you mean {' or '.join(close)}?" if close else ""
                raise TypeError(f"Unknown schedule option {key!r}; valid: {names}.{hint}")
        base = options if isinstance(options, ScheduleOptions) else cls(**given)
        return replace(base, **dict(overrides)) if overrides else base

    def with_default_age_decay(self, default: float) -> ScheduleOptions:
        """These options with ``age_decay`` set to the schedule's ``default`` where unset."""
        return self if self.age_decay is not None else replace(self, age_decay=default)


def layer_lr(stage: Stage | None, j: int, base_lr: float, options: ScheduleOptions) -> float:
    r"""The learning rate of layer ``j`` (0: parameters shared by all layers) in ``stage``:
    :math:`\eta\,c_{\text{stage}}\,d^{k-j}\,r^{k-1}`, 0 where the stage does not train it."""
    if stage is None:
        return 0.0
    base = base_lr * stage.lr_multiplier * options.round_decay ** (stage.layer - 1)
    if j == 0:
        return base
    if not stage.trains(j):
        return 0.0
    age = 0 if stage.scope is Scope.ALL else stage.layer - j
    decay = 1.0 if options.age_decay is None else options.age_decay
    return base * decay**age


def plan_records(stages: list[Stage]) -> list[dict[str, Any]]:
    """The stages as plain records (what a checkpoint stores to refuse a different plan)."""
    return [{**asdict(st), "scope": st.scope.value} for st in stages]
