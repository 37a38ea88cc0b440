r"""Training schedules that change what is trainable over time, as Lightning callbacks.

Deep-unfolded networks are often trained layer by layer. With :math:`\ell_k` the supervision's
loss on the output :math:`s^{(k)}` of layer :math:`k` (see :mod:`lightning_unfold.training.losses`)
and :math:`\theta_k` the parameters of layer :math:`k`, the schedules here are:

:class:`SequentialSchedule` — sequential layer-wise training (the survey's loss
:math:`\mathcal L_3`; Shlezinger et al. 2025, §IV): for :math:`k = 1..K`,

.. math:: \theta_k \leftarrow \arg\min_{\theta_k} \ell_k(\theta_1, \dots, \theta_k)
   \quad (\theta_1..\theta_{k-1} \text{ frozen}),

optionally followed by a fine-tune of :math:`\theta_1..\theta_k` on the same :math:`\ell_k`.

:class:`StagewiseSchedule` — the stage-wise LISTA protocol (Chen et al. 2018; Liu et al. 2019):
round :math:`k` trains :math:`\theta_k` alone at :math:`\eta`, then :math:`\theta_1..\theta_k` at
:math:`0.2\eta` and at :math:`0.02\eta`, all on :math:`\ell_k`; the learning rate of layer
:math:`j` in round :math:`k` is

.. math:: \eta_{j,k} = \eta\, c_{\text{stage}}\, d^{\,k-j}, \qquad d = 0.3,

so layers trained in earlier rounds move less. A stage ends when the held-out loss
:math:`\ell_k` has not improved for ``patience`` steps, or after ``max_steps_per_stage``.

:class:`TwoStageSchedule` — sequential training, then end-to-end fine-tuning of every layer on
:math:`\ell_K` (the survey's comparative-study protocol).

How it works, for any algorithm and paradigm: the callback reads the trainable tensors of each
layer from ``module.model.layer_parameters(k)`` (tracked by identity, never by value — unfolded
layers start from identical values), truncates the training forward with
``module.train_depth = k`` (the end-to-end loss then sits on :math:`s^{(k)}`), and, at the start
of fit, splits the single optimizer parameter group into one group per layer (plus one for
parameters shared by all layers). Each step it sets every group's learning rate (0 for frozen
layers) and, before the optimizer step, drops the gradients of frozen parameters
(``grad = None``: Adam then leaves both the parameter and its moment estimates untouched). All
parameters stay in the optimizer and keep ``requires_grad``, so DDP's gradient reducer is never
disturbed; a truncated forward leaves later layers unused, so DDP needs
``find_unused_parameters=True`` (``strategy="ddp_find_unused_parameters_true"`` or
``"ddp_spawn_find_unused_parameters_true"``) — the callback says so if it is missing.

Stage decisions are taken on a held-out set (the first ``eval_batches`` batches of the validation
dataloader, the same on every rank) and agreed across ranks with
``trainer.strategy.reduce_boolean_decision``. The schedule's position (stage, step counters, best
held-out loss, curves) is callback state: a run resumed from a checkpoint continues where it
stopped and ends with the same parameters as an uninterrupted run.

References:
    X. Chen, J. Liu, Z. Wang, W. Yin, "Theoretical linear convergence of unfolded ISTA and its
    practical weights and thresholds", NeurIPS 2018.
    J. Liu, X. Chen, Z. Wang, W. Yin, "ALISTA: Analytic weights are as good as learned weights in
    LISTA", ICLR 2019.
    N. Shlezinger, S. Segarra, Y. Zhang, D. Avrahami, Z. Davidov, T. Routtenberg, Y. C. Eldar,
    "Deep unfolding: recent developments, theory, and design guidelines", 2025.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_unfold.core.metrics import NMSE, ProblemMetric, labelled_rows
from lightning_unfold.training.metrics import LayerwiseMetric

__all__ = [
    "LayerwiseSchedule",
    "Scope",
    "SequentialSchedule",
    "Stage",
    "StagewiseSchedule",
    "TwoStageSchedule",
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


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return float(value)


def _positive_int(name: str, value: int | None, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    return value


def _steps_or_epochs(
    names: tuple[str, str], steps: int | None, epochs: int | None, *, required: bool = True
) -> tuple[int | None, int | None]:
    s_name, e_name = names
    if steps is not None and epochs is not None:
        raise ValueError(f"Give either {s_name} or {e_name}, not both.")
    if required and steps is None and epochs is None:
        raise ValueError(f"Give the length of these stages: {s_name} or {e_name}.")
    return (
        _positive_int(s_name, steps, allow_none=True),
        _positive_int(e_name, epochs, allow_none=True),
    )


class LayerwiseSchedule(Callback):
    """Base class of the schedules: runs a list of :class:`Stage` s built from the model depth.

    Subclasses implement :meth:`round_stages` (the stages of round k) and optionally
    :meth:`final_stages` (stages after the last round). Shared arguments:

    Args:
        layers: number of rounds, i.e. layers trained one after the other (default: the model
            depth K; must be ``<= K``).
        lr: base learning rate :math:`\\eta` (default: the optimizer's learning rate, i.e. the
            module's ``lr``).
        age_decay: :math:`d` in :math:`\\eta_{j,k} = \\eta\\,c\\,d^{k-j}`; 1 disables it.
        round_decay: :math:`r`: round k's learning rates are multiplied by :math:`r^{k-1}`,
            :math:`\\eta_{j,k} = \\eta\\,c\\,d^{k-j}\\,r^{k-1}` (1, the default, disables it).
            Not part of the literature's protocol. Adam moves every parameter by about the
            learning rate per step whatever its size, while a converging network's thresholds
            shrink geometrically with depth (ALISTA's by ~0.65 per layer), so one rate that
            moves the first layers fast rattles the deepest; :math:`r < 1` keeps the step
            in proportion. A stage that trains every layer (an end-to-end stage after the
            rounds) counts as round K.
        eval_every: evaluate the held-out loss every this many steps of a stage with patience.
        eval_batches: how many validation batches form the held-out set (``None``: all).
        min_delta: an improvement must lower the held-out loss by more than this.
        log_curves: compute and log the per-layer curve of the problem's primary metric (NMSE in
            dB for estimation problems) on the held-out set at the end of each round (needs
            labelled validation data when the metric needs targets).
        warm_start: when round k starts, copy layer k−1's trained values into layer k (where
            shapes agree) instead of starting it from its classical initialisation. Not part of
            the literature's protocol; it shortens the stages a small budget needs.
        restore_best: end every stage on the parameters with the lowest held-out loss seen in
            it, counting the parameters it started from (evaluated before its first step), so
            that no stage leaves the held-out loss higher than it found it. Needs patience
            (the held-out evaluation). Not part of the reference implementation, which keeps
            the last iterate; with its small learning rate and long patience the two agree, but
            a short budget's larger learning rate makes the last iterate wander from the best
            one (the refinement stages then start behind and end worse than stage 1).
    """

    def __init__(
        self,
        *,
        layers: int | None = None,
        lr: float | None = None,
        age_decay: float = 1.0,
        round_decay: float = 1.0,
        eval_every: int = 10,
        eval_batches: int | None = None,
        min_delta: float = 0.0,
        log_curves: bool = True,
        warm_start: bool = False,
        restore_best: bool = False,
    ) -> None:
        super().__init__()
        self.warm_start = warm_start
        self.restore_best = bool(restore_best)
        self.layers = _positive_int("layers", layers, allow_none=True)
        self.lr = None if lr is None else _positive("lr", lr)
        self.age_decay = _positive("age_decay", age_decay)
        if self.age_decay > 1.0:
            raise ValueError(f"age_decay must lie in (0, 1], got {age_decay}.")
        self.round_decay = _positive("round_decay", round_decay)
        if self.round_decay > 1.0:
            raise ValueError(f"round_decay must lie in (0, 1], got {round_decay}.")
        self.eval_every = int(_positive_int("eval_every", eval_every) or 1)
        self.eval_batches = _positive_int("eval_batches", eval_batches, allow_none=True)
        if not (math.isfinite(min_delta) and min_delta >= 0):
            raise ValueError(f"min_delta must be finite and >= 0, got {min_delta}.")
        self.min_delta = float(min_delta)
        self.log_curves = log_curves
        # -- plan, built in setup ----------------------------------------------------------
        self.stages: list[Stage] = []
        self._depth = 0
        self._layer_ids: list[set[int]] = []
        self._base_lr = 0.0
        self._steps_per_epoch: int | None = None
        self._eval_data: list[tuple[Tensor, Tensor]] | None = None
        # -- restorable state --------------------------------------------------------------
        self.stage_index = 0
        self.steps_in_stage = 0
        self.best_loss = math.inf
        self.best_step = 0
        self.done = False
        #: with ``restore_best``: index in ``model.parameters()`` -> value at the stage's best
        #: held-out loss (only the parameters the stage trains)
        self.best_params: dict[int, Tensor] | None = None
        #: per finished round k: the problem's primary metric on the held-out set at layers 0..K
        #: (pooled NMSE in dB for estimation problems)
        self.curves: dict[int, list[float]] = {}
        #: one record per finished stage: name, layer, scope, steps, best held-out loss
        self.history: list[dict[str, Any]] = []
        self._saved_plan: list[dict[str, Any]] | None = None

    # -- the plan --------------------------------------------------------------------------
    def round_stages(self, k: int) -> list[Stage]:
        """The stages of round ``k`` (the round that introduces layer ``k``)."""
        raise NotImplementedError

    def final_stages(self, depth: int) -> list[Stage]:
        """Stages after the last round (e.g. end-to-end fine-tuning); none by default."""
        return []

    def _resolve(self, steps: int | None, epochs: int | None, what: str) -> int:
        if steps is not None:
            return steps
        assert epochs is not None
        if self._steps_per_epoch is None:
            raise ValueError(
                f"{what} is given in epochs but the number of training batches per epoch is "
                "unknown (an infinite dataloader?); give it in steps instead."
            )
        return epochs * self._steps_per_epoch

    def build(self, depth: int) -> list[Stage]:
        """The full list of stages for a model of ``depth`` layers."""
        rounds = depth if self.layers is None else min(self.layers, depth)
        stages = [st for k in range(1, rounds + 1) for st in self.round_stages(k)]
        return stages + self.final_stages(depth)

    @property
    def stage(self) -> Stage | None:
        """The current stage (``None`` once the schedule has finished)."""
        return None if self.done else self.stages[self.stage_index]

    # -- checks and set-up -----------------------------------------------------------------
    @staticmethod
    def _model_of(pl_module: L.LightningModule) -> Any:
        model = getattr(pl_module, "model", None)
        if (
            model is None
            or not hasattr(model, "layer_parameters")
            or not hasattr(pl_module, "train_depth")
        ):
            raise TypeError(
                "Layer-wise schedules drive an UnfoldedModule (a LightningModule with "
                "`.model.layer_parameters(k)` and `.train_depth`); got "
                f"{type(pl_module).__name__}."
            )
        return model

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        model = self._model_of(pl_module)
        depth = int(getattr(model, "depth", 0))
        per_layer = [list(model.layer_parameters(k)) for k in range(1, depth + 1)]
        if depth < 1 or not any(per_layer):
            raise ValueError(
                f"{type(self).__name__} trains layer by layer, but this "
                f"{type(model).__name__} has no per-layer parameters (a tied model, the classical "
                "solver or the black box); use an untied unfolded model (tied=False, paradigm in "
                "'hyperparameters', 'objective', 'correction', 'inductive_bias'), or train "
                "without a schedule."
            )
        ids = [{id(p) for p in ps} for ps in per_layer]
        seen: set[int] = set()
        for k, s in enumerate(ids, start=1):
            if s & seen:
                raise ValueError(f"Layer {k} shares parameters with an earlier layer.")
            seen |= s
        if isinstance(trainer.strategy, DDPStrategy) and not trainer.strategy._ddp_kwargs.get(
            "find_unused_parameters", False
        ):
            raise ValueError(
                f"{type(self).__name__} truncates the forward pass, so later layers get no "
                "gradient; DDP then needs find_unused_parameters=True: use "
                "strategy='ddp_find_unused_parameters_true' (or "
                "'ddp_spawn_find_unused_parameters_true', or "
                "DDPStrategy(find_unused_parameters=True))."
            )
        if not pl_module.automatic_optimization:
            raise ValueError(f"{type(self).__name__} needs automatic optimization.")
        if trainer.accumulate_grad_batches != 1:
            raise ValueError(
                f"{type(self).__name__} counts stage lengths in optimizer steps and does not "
                f"support accumulate_grad_batches={trainer.accumulate_grad_batches}; use 1 (and a "
                "larger batch_size instead)."
            )
        rounds = depth if self.layers is None else self.layers
        if rounds > depth:
            raise ValueError(
                f"{type(self).__name__}(layers={rounds}) is longer than the model, which has "
                f"{depth} layers; valid choices: layers in 1..{depth} (or None for all {depth})."
            )
        if self.restore_best and not self._uses_patience():
            raise ValueError(
                f"{type(self).__name__}(restore_best=True) keeps the parameters with the best "
                "held-out loss of each stage and needs the held-out evaluation: set patience "
                "(e.g. patience=100), or use restore_best=False."
            )
        self._depth, self._layer_ids = depth, ids
        self._eval_data = None

    def _uses_patience(self) -> bool:
        return getattr(self, "patience", None) is not None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._uses_patience():
            self._held_out(trainer, pl_module)  # fail early when there is no validation data
        if len(trainer.optimizers) != 1:
            raise ValueError(
                f"{type(self).__name__} expects exactly one optimizer, got "
                f"{len(trainer.optimizers)}."
            )
        if trainer.lr_scheduler_configs:
            raise ValueError(
                f"{type(self).__name__} sets the learning rates itself; remove the learning-rate "
                "scheduler from configure_optimizers."
            )
        # runs before the optimizer state of a checkpoint is restored, so the restored state
        # meets the same per-layer groups it was saved with
        self._split_param_groups(trainer.optimizers[0])

    def _split_param_groups(self, optimizer: torch.optim.Optimizer) -> None:
        if len(optimizer.param_groups) != 1:
            raise ValueError(
                f"{type(self).__name__} expects one parameter group in the optimizer (it makes one "
                f"per layer itself), got {len(optimizer.param_groups)}."
            )
        group = optimizer.param_groups[0]
        self._base_lr = self.lr if self.lr is not None else float(group["lr"])
        defaults = {k: v for k, v in group.items() if k != "params"}
        params: list[nn.Parameter] = list(group["params"])
        by_layer: list[list[nn.Parameter]] = [[] for _ in range(self._depth)]
        shared: list[nn.Parameter] = []
        where = {pid: k for k, ids in enumerate(self._layer_ids) for pid in ids}
        for p in params:
            k = where.get(id(p))
            (shared if k is None else by_layer[k]).append(p)
        groups = [{**defaults, "params": ps, "layer": k + 1} for k, ps in enumerate(by_layer)]
        groups.append({**defaults, "params": shared, "layer": 0})
        optimizer.param_groups = groups

    # -- learning rates and gradients ------------------------------------------------------
    def layer_lr(self, j: int) -> float:
        """The learning rate of layer ``j`` (0 = shared parameters) in the current stage."""
        st = self.stage
        if st is None:
            return 0.0
        base = self._base_lr * st.lr_multiplier * self.round_decay ** (st.layer - 1)
        if j == 0:
            return base
        if not st.trains(j):
            return 0.0
        age = 0 if st.scope is Scope.ALL else st.layer - j
        return base * self.age_decay**age

    def _apply(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        st = self.stage
        pl_module.train_depth = None if st is None or st.scope is Scope.ALL else st.layer  # type: ignore[assignment]
        for group in trainer.optimizers[0].param_groups:
            group["lr"] = self.layer_lr(int(group.get("layer", 0)))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        nb = trainer.num_training_batches
        self._steps_per_epoch = None
        if isinstance(nb, int) and nb > 0:
            self._steps_per_epoch = nb
        self.stages = self.build(self._depth)
        plan = self._plan()
        saved = getattr(self, "_saved_plan", None)
        if saved is not None and saved != plan:
            raise ValueError(
                f"The checkpoint's {type(self).__name__} was saved with a different schedule "
                f"({len(saved)} stages) than this one ({len(plan)} stages); resume with the "
                "same schedule arguments and model depth."
            )
        if self.done:
            trainer.should_stop = True
        self._apply(trainer, pl_module)

    def _plan(self) -> list[dict[str, Any]]:
        return [{**asdict(st), "scope": st.scope.value} for st in self.stages]

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._apply(trainer, pl_module)
        st = self.stage
        if (
            st is not None
            and self.restore_best
            and st.patience is not None
            and self.steps_in_stage == 0
            and self.best_params is None
        ):
            # the parameters the stage starts from are its first candidate
            depth = None if st.scope is Scope.ALL else st.layer
            self.best_loss = self.held_out_loss(trainer, pl_module, depth)
            self.best_step = 0
            self._snapshot(trainer, pl_module)
        if st is not None:
            pl_module.log("schedule/layer", float(st.layer), prog_bar=True, on_step=True)
            pl_module.log("schedule/stage", float(self.stage_index + 1), prog_bar=True)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        for group in optimizer.param_groups:
            if group["lr"] == 0.0:
                for p in group["params"]:
                    p.grad = None  # frozen: Adam skips the parameter and keeps its moments

    # -- held-out evaluation ---------------------------------------------------------------
    def _held_out(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> list[tuple[Tensor, Tensor]]:
        if self._eval_data is None:
            loader = None
            dm = getattr(trainer, "datamodule", None)
            if dm is not None and hasattr(dm, "val_dataloader"):
                loader = dm.val_dataloader()
            if loader is None:
                loader = trainer.val_dataloaders
            if loader is None:  # dataloaders given to fit() are set up at the first validation
                source = getattr(trainer.fit_loop.epoch_loop.val_loop, "_data_source", None)
                if source is not None and source.is_defined():
                    loader = source.dataloader()
            if isinstance(loader, list | tuple):
                loader = loader[0] if loader else None
            if loader is None:
                raise ValueError(
                    f"{type(self).__name__} ends stages on a held-out loss and needs validation "
                    "data: fit with a datamodule that has val_dataloader(), or pass "
                    "val_dataloaders=..., or use fixed-length stages (patience=None)."
                )
            data: list[tuple[Tensor, Tensor]] = []
            for i, (x, target) in enumerate(loader):
                if self.eval_batches is not None and i >= self.eval_batches:
                    break
                data.append((x.to(pl_module.device), target.to(pl_module.device)))
            if not data:
                raise ValueError("The validation dataloader is empty.")
            self._eval_data = data
        return self._eval_data

    @torch.no_grad()
    def held_out_loss(
        self, trainer: L.Trainer, pl_module: L.LightningModule, depth: int | None
    ) -> float:
        """The training loss of the model truncated to ``depth`` layers on the held-out set."""
        was_training = pl_module.training
        pl_module.eval()
        total, count = 0.0, 0
        try:
            for x, target in self._held_out(trainer, pl_module):
                traj = pl_module.model(x, depth=depth)  # type: ignore[operator]
                loss = pl_module.loss(traj, x, target)  # type: ignore[operator]
                total += float(loss) * x.shape[0]
                count += x.shape[0]
        finally:
            pl_module.train(was_training)
        return total / count

    @staticmethod
    def _primary(pl_module: L.LightningModule) -> ProblemMetric:
        spec = getattr(pl_module, "primary_metric", None)
        return spec if isinstance(spec, ProblemMetric) else NMSE()

    def held_out_curve(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[float]:
        """The problem's primary metric (e.g. pooled NMSE in dB, a sum-rate, a BER) of the full
        model on the held-out set at layers 0..K."""
        return self._held_out_metric(trainer, pl_module, self._primary(pl_module))

    @torch.no_grad()
    def _held_out_metric(
        self, trainer: L.Trainer, pl_module: L.LightningModule, spec: ProblemMetric
    ) -> list[float]:
        was_training = pl_module.training
        pl_module.eval()
        # every rank evaluates the same held-out set: no cross-rank reduction
        metric = LayerwiseMetric(spec, self._depth, sync_on_compute=False).to(pl_module.device)
        try:
            for x, target in self._held_out(trainer, pl_module):
                metric.update(pl_module.model(x).stacked_estimates(), target, x)  # type: ignore[operator]
        finally:
            pl_module.train(was_training)
        return [float(v) for v in metric.compute()]

    # -- the schedule's clock --------------------------------------------------------------
    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        st = self.stage
        if st is None:
            trainer.should_stop = True
            return
        self.steps_in_stage += 1
        end = self.steps_in_stage >= st.max_steps
        if st.patience is not None and self.steps_in_stage % self.eval_every == 0:
            depth = None if st.scope is Scope.ALL else st.layer
            loss = self.held_out_loss(trainer, pl_module, depth)
            if loss < self.best_loss - self.min_delta:
                self.best_loss, self.best_step = loss, self.steps_in_stage
                if self.restore_best:
                    self._snapshot(trainer, pl_module)
            pl_module.log("schedule/held_out_loss", loss, on_step=True)
            end = end or self.steps_in_stage - self.best_step >= st.patience
        end = bool(trainer.strategy.reduce_boolean_decision(end, all=False))
        if end:
            self._finish_stage(trainer, pl_module)

    @torch.no_grad()
    def _snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Keep a copy of the parameters the current stage trains (learning rate > 0)."""
        trained = {
            id(p) for g in trainer.optimizers[0].param_groups if g["lr"] > 0 for p in g["params"]
        }
        self.best_params = {
            i: p.detach().clone()
            for i, p in enumerate(pl_module.model.parameters())  # type: ignore[union-attr]
            if id(p) in trained
        }

    @torch.no_grad()
    def _restore(self, pl_module: L.LightningModule) -> None:
        if not self.best_params:
            return
        for i, p in enumerate(pl_module.model.parameters()):  # type: ignore[union-attr]
            if i in self.best_params:
                p.copy_(self.best_params[i].to(device=p.device, dtype=p.dtype))

    def _finish_stage(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        st = self.stages[self.stage_index]
        if self.restore_best:
            self._restore(pl_module)
            self.best_params = None
        self.history.append(
            {
                "name": st.name,
                "layer": st.layer,
                "scope": st.scope.value,
                "steps": self.steps_in_stage,
                "best_loss": None if math.isinf(self.best_loss) else self.best_loss,
            }
        )
        nxt = self.stage_index + 1
        round_over = (
            nxt >= len(self.stages)
            or self.stages[nxt].layer != st.layer
            or (self.stages[nxt].scope is Scope.ALL) != (st.scope is Scope.ALL)
        )
        if round_over and self.log_curves and self._has_labels(trainer, pl_module):
            curve = self.held_out_curve(trainer, pl_module)
            self.curves[st.layer] = curve
            name = self._primary(pl_module).name
            pl_module.log_dict(
                {f"schedule/{name}_layer/{j:02d}": curve[j] for j in range(1, len(curve))},
                on_step=True,
            )
        if self.warm_start and nxt < len(self.stages):
            new = self.stages[nxt]
            if new.layer != st.layer and new.scope is not Scope.ALL and new.layer > 1:
                self._copy_layer(pl_module, new.layer - 1, new.layer)
        self.stage_index, self.steps_in_stage = nxt, 0
        self.best_loss, self.best_step = math.inf, 0
        if nxt >= len(self.stages):
            self.done = True
            trainer.should_stop = True
        self._apply(trainer, pl_module)

    @staticmethod
    @torch.no_grad()
    def _copy_layer(pl_module: L.LightningModule, src: int, dst: int) -> None:
        model = pl_module.model  # type: ignore[attr-defined]
        for a, b in zip(model.layer_parameters(src), model.layer_parameters(dst), strict=True):
            if a.shape == b.shape:
                b.copy_(a)

    def _has_labels(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        """Whether the held-out curve can be computed: data exist and, for a metric that needs
        targets, some of them are labelled."""
        try:
            data = self._held_out(trainer, pl_module)
        except ValueError:
            return False
        if not self._primary(pl_module).needs_target:
            return len(data) > 0
        return any(bool(labelled_rows(t).any()) for _, t in data)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.train_depth = None  # type: ignore[assignment]
        if not self.done and not trainer.fast_dev_run:  # a smoke run is meant to stop early
            rank_zero_warn(
                f"{type(self).__name__} did not finish: training stopped in stage "
                f"{self.stage_index + 1}/{len(self.stages)} ({self.stages[self.stage_index].name}); "
                "raise the Trainer's max_epochs / max_steps (use max_epochs=-1 and let the "
                "schedule stop training)."
            )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            pl_module.train_depth = None  # type: ignore[assignment]
            self._eval_data = None

    # -- checkpointed state ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "stage_index": self.stage_index,
            "steps_in_stage": self.steps_in_stage,
            "best_loss": self.best_loss,
            "best_step": self.best_step,
            "done": self.done,
            "curves": {int(k): list(v) for k, v in self.curves.items()},
            "history": [dict(h) for h in self.history],
            "plan": self._plan(),
            "best_params": (
                None
                if self.best_params is None
                else {i: t.detach().cpu() for i, t in self.best_params.items()}
            ),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.stage_index = int(state_dict["stage_index"])
        self.steps_in_stage = int(state_dict["steps_in_stage"])
        self.best_loss = float(state_dict["best_loss"])
        self.best_step = int(state_dict["best_step"])
        self.done = bool(state_dict["done"])
        self.curves = {int(k): list(v) for k, v in state_dict["curves"].items()}
        self.history = [dict(h) for h in state_dict["history"]]
        self._saved_plan = state_dict.get("plan")
        saved = state_dict.get("best_params")
        self.best_params = None if saved is None else {int(i): t for i, t in saved.items()}


class SequentialSchedule(LayerwiseSchedule):
    r"""Sequential layer-wise training (the survey's :math:`\mathcal L_3`).

    Round :math:`k = 1..K`: train layer :math:`k` alone on :math:`\ell_k` (layers :math:`< k`
    frozen, later layers unused) for ``steps_per_layer`` steps (or ``epochs_per_layer`` epochs)
    at :math:`\eta\,c` with :math:`c` = ``lr_multiplier``; then, if ``finetune_steps`` /
    ``finetune_epochs`` is set, fine-tune layers :math:`1..k` on :math:`\ell_k` at
    :math:`\eta\,c_f\,d^{k-j}` (:math:`c_f` = ``finetune_lr_multiplier``, :math:`d` =
    ``age_decay``, default 1). ``patience`` (steps, optional) ends a stage early when the
    held-out loss stops improving. Other arguments: :class:`LayerwiseSchedule`.
    """

    def __init__(
        self,
        steps_per_layer: int | None = None,
        epochs_per_layer: int | None = None,
        *,
        finetune_steps: int | None = None,
        finetune_epochs: int | None = None,
        lr_multiplier: float = 1.0,
        finetune_lr_multiplier: float = 1.0,
        patience: int | None = None,
        layers: int | None = None,
        lr: float | None = None,
        age_decay: float = 1.0,
        round_decay: float = 1.0,
        eval_every: int = 10,
        eval_batches: int | None = None,
        min_delta: float = 0.0,
        log_curves: bool = True,
        warm_start: bool = False,
        restore_best: bool = False,
    ) -> None:
        super().__init__(
            layers=layers,
            lr=lr,
            age_decay=age_decay,
            round_decay=round_decay,
            eval_every=eval_every,
            eval_batches=eval_batches,
            min_delta=min_delta,
            log_curves=log_curves,
            warm_start=warm_start,
            restore_best=restore_best,
        )
        self.steps_per_layer, self.epochs_per_layer = _steps_or_epochs(
            ("steps_per_layer", "epochs_per_layer"), steps_per_layer, epochs_per_layer
        )
        self.finetune_steps, self.finetune_epochs = _steps_or_epochs(
            ("finetune_steps", "finetune_epochs"), finetune_steps, finetune_epochs, required=False
        )
        self.lr_multiplier = _positive("lr_multiplier", lr_multiplier)
        self.finetune_lr_multiplier = _positive("finetune_lr_multiplier", finetune_lr_multiplier)
        self.patience = _positive_int("patience", patience, allow_none=True)

    def round_stages(self, k: int) -> list[Stage]:
        out = [
            Stage(
                k,
                Scope.NEW,
                self.lr_multiplier,
                self._resolve(self.steps_per_layer, self.epochs_per_layer, "steps_per_layer"),
                self.patience,
                f"layer {k} / train",
            )
        ]
        if self.finetune_steps is not None or self.finetune_epochs is not None:
            out.append(
                Stage(
                    k,
                    Scope.PREFIX,
                    self.finetune_lr_multiplier,
                    self._resolve(self.finetune_steps, self.finetune_epochs, "finetune"),
                    self.patience,
                    f"layer {k} / fine-tune 1..{k}",
                )
            )
        return out


class StagewiseSchedule(LayerwiseSchedule):
    r"""The stage-wise LISTA schedule (Chen et al. 2018; Liu et al. 2019).

    Round :math:`k = 1..K` runs one stage per entry of ``stage_multipliers``
    :math:`(c_1, c_2, \dots)` = (1, 0.2, 0.02), all on :math:`\ell_k`: the first trains layer
    :math:`k` alone at :math:`\eta c_1`, the others train layers :math:`1..k`, layer :math:`j`
    at :math:`\eta\,c_i\,d^{k-j}` with ``age_decay`` :math:`d = 0.3`. A stage ends when the
    held-out loss (evaluated every ``eval_every`` steps) has not improved for ``patience`` steps,
    or after ``max_steps_per_stage`` steps. The defaults are the reference implementation's
    (lr 5e-4 set on the module, patience 4000, at most 200 000 steps per stage, evaluation every
    10 steps); shorter budgets are set per run. ``end_to_end_steps`` (off by default, not part
    of the reference protocol) adds a last stage that trains every layer on :math:`\ell_K` at
    :math:`\eta\,c_e` (``end_to_end_lr_multiplier``, no age decay) for at most that many steps,
    with the same patience: the age decay leaves the first layers of the last round almost
    frozen, so they are never re-tuned for the deepest loss. Other arguments:
    :class:`LayerwiseSchedule`.
    """

    def __init__(
        self,
        stage_multipliers: Sequence[float] = (1.0, 0.2, 0.02),
        *,
        end_to_end_steps: int | None = None,
        end_to_end_lr_multiplier: float = 0.02,
        patience: int | None = 4000,
        max_steps_per_stage: int = 200_000,
        layers: int | None = None,
        lr: float | None = None,
        age_decay: float = 0.3,
        round_decay: float = 1.0,
        eval_every: int = 10,
        eval_batches: int | None = None,
        min_delta: float = 0.0,
        log_curves: bool = True,
        warm_start: bool = False,
        restore_best: bool = False,
    ) -> None:
        super().__init__(
            layers=layers,
            lr=lr,
            age_decay=age_decay,
            round_decay=round_decay,
            eval_every=eval_every,
            eval_batches=eval_batches,
            min_delta=min_delta,
            log_curves=log_curves,
            warm_start=warm_start,
            restore_best=restore_best,
        )
        mults = [float(c) for c in stage_multipliers]
        if not mults:
            raise ValueError("stage_multipliers needs at least one entry, e.g. [1.0, 0.2, 0.02].")
        for i, c in enumerate(mults):
            _positive(f"stage_multipliers[{i}]", c)
        self.stage_multipliers = tuple(mults)
        self.patience = _positive_int("patience", patience, allow_none=True)
        self.max_steps_per_stage = int(
            _positive_int("max_steps_per_stage", max_steps_per_stage) or 1
        )
        self.end_to_end_steps = _positive_int("end_to_end_steps", end_to_end_steps, allow_none=True)
        self.end_to_end_lr_multiplier = _positive(
            "end_to_end_lr_multiplier", end_to_end_lr_multiplier
        )

    def round_stages(self, k: int) -> list[Stage]:
        return [
            Stage(
                k,
                Scope.NEW if i == 0 else Scope.PREFIX,
                c,
                self.max_steps_per_stage,
                self.patience,
                f"layer {k} / stage {i + 1} (lr x {c:g})",
            )
            for i, c in enumerate(self.stage_multipliers)
        ]

    def final_stages(self, depth: int) -> list[Stage]:
        if self.end_to_end_steps is None:
            return []
        return [
            Stage(
                depth,
                Scope.ALL,
                self.end_to_end_lr_multiplier,
                self.end_to_end_steps,
                self.patience,
                f"end-to-end (lr x {self.end_to_end_lr_multiplier:g})",
            )
        ]


class TwoStageSchedule(SequentialSchedule):
    r"""Sequential layer-wise training, then end-to-end fine-tuning of all layers.

    Stage one is :class:`SequentialSchedule` (same arguments); stage two trains every layer on
    the end-to-end loss :math:`\ell_K` for ``end_to_end_steps`` steps (or ``end_to_end_epochs``
    epochs) at :math:`\eta\,c_e` (:math:`c_e` = ``end_to_end_lr_multiplier``), the protocol of
    the survey's comparative study (Shlezinger et al. 2025).
    """

    def __init__(
        self,
        steps_per_layer: int | None = None,
        epochs_per_layer: int | None = None,
        *,
        end_to_end_steps: int | None = None,
        end_to_end_epochs: int | None = None,
        end_to_end_lr_multiplier: float = 1.0,
        finetune_steps: int | None = None,
        finetune_epochs: int | None = None,
        lr_multiplier: float = 1.0,
        finetune_lr_multiplier: float = 1.0,
        patience: int | None = None,
        layers: int | None = None,
        lr: float | None = None,
        age_decay: float = 1.0,
        round_decay: float = 1.0,
        eval_every: int = 10,
        eval_batches: int | None = None,
        min_delta: float = 0.0,
        log_curves: bool = True,
        warm_start: bool = False,
        restore_best: bool = False,
    ) -> None:
        super().__init__(
            steps_per_layer,
            epochs_per_layer,
            finetune_steps=finetune_steps,
            finetune_epochs=finetune_epochs,
            lr_multiplier=lr_multiplier,
            finetune_lr_multiplier=finetune_lr_multiplier,
            patience=patience,
            layers=layers,
            lr=lr,
            age_decay=age_decay,
            round_decay=round_decay,
            eval_every=eval_every,
            eval_batches=eval_batches,
            min_delta=min_delta,
            log_curves=log_curves,
            warm_start=warm_start,
            restore_best=restore_best,
        )
        self.end_to_end_steps, self.end_to_end_epochs = _steps_or_epochs(
            ("end_to_end_steps", "end_to_end_epochs"), end_to_end_steps, end_to_end_epochs
        )
        self.end_to_end_lr_multiplier = _positive(
            "end_to_end_lr_multiplier", end_to_end_lr_multiplier
        )

    def final_stages(self, depth: int) -> list[Stage]:
        return [
            Stage(
                depth,
                Scope.ALL,
                self.end_to_end_lr_multiplier,
                self._resolve(self.end_to_end_steps, self.end_to_end_epochs, "end_to_end"),
                self.patience,
                "end-to-end",
            )
        ]
