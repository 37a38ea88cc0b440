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

The plan (stages and per-layer learning rates) is pure and lives in
:mod:`lightning_unfold.training.plan`; the held-out evaluation in
:mod:`lightning_unfold.training.held_out`; the options every schedule shares are one dataclass,
:class:`~lightning_unfold.training.plan.ScheduleOptions` (``options:`` in YAML, or keyword
arguments of the same names in Python).

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
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from typing_extensions import override

from lightning_unfold.training.held_out import HeldOutSet, primary_metric_of
from lightning_unfold.training.plan import (
    ScheduleOptions,
    Scope,
    Stage,
    layer_lr,
    plan_records,
    positive,
    positive_int,
    resolve_length,
    steps_or_epochs,
)

__all__ = [
    "LayerwiseSchedule",
    "ScheduleOptions",
    "Scope",
    "SequentialSchedule",
    "Stage",
    "StagewiseSchedule",
    "TwoStageSchedule",
]


class LayerwiseSchedule(Callback):
    """Base class of the schedules: runs a list of :class:`Stage` s built from the model depth.

    Subclasses implement :meth:`round_stages` (the stages of round k) and optionally
    :meth:`final_stages` (stages after the last round); both are pure, so :meth:`build` gives
    the whole plan without a Trainer.

    Args:
        options: the options every schedule shares (:class:`ScheduleOptions`: ``layers``,
            ``lr``, ``age_decay``, ``round_decay``, ``eval_every``, ``eval_batches``,
            ``min_delta``, ``log_curves``, ``warm_start``, ``restore_best``), as the dataclass or
            a mapping (YAML's ``options:``).
        **shared: the same options as keyword arguments; they override ``options``.
    """

    #: age decay :math:`d` where the options leave it unset
    default_age_decay: float = 1.0

    def __init__(
        self, *, options: ScheduleOptions | Mapping[str, Any] | None = None, **shared: Any
    ) -> None:
        super().__init__()
        self.options = ScheduleOptions.merge(options, shared).with_default_age_decay(
            self.default_age_decay
        )
        # -- plan and data, built in setup ------------------------------------------------
        self.stages: list[Stage] = []
        self._depth = 0
        self._layer_ids: list[set[int]] = []
        self._base_lr = 0.0
        self._steps_per_epoch: int | None = None
        self._held = HeldOutSet(self.options.eval_batches, type(self).__name__)
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
        self.curves: dict[int, list[float]] = {}
        #: one record per finished stage: name, layer, scope, steps, best held-out loss
        self.history: list[dict[str, Any]] = []
        self._saved_plan: list[dict[str, Any]] | None = None

    # the shared options, readable as attributes (``schedule.restore_best``, ...)
    def __getattr__(self, name: str) -> Any:
        options = self.__dict__.get("options")
        if options is not None and name in ScheduleOptions.__dataclass_fields__:
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- the plan (pure) -------------------------------------------------------------------
    def round_stages(self, k: int) -> list[Stage]:
        """The stages of round ``k`` (the round that introduces layer ``k``)."""
        raise NotImplementedError

    def final_stages(self, depth: int) -> list[Stage]:
        """Stages after the last round (e.g. end-to-end fine-tuning); none by default."""
        return []

    def _resolve(self, steps: int | None, epochs: int | None, what: str) -> int:
        return resolve_length(steps, epochs, self._steps_per_epoch, what)

    def build(self, depth: int, steps_per_epoch: int | None = None) -> list[Stage]:
        """The full list of stages for a model of ``depth`` layers (lengths given in epochs
        need ``steps_per_epoch``)."""
        if steps_per_epoch is not None:
            self._steps_per_epoch = steps_per_epoch
        layers = self.options.layers
        rounds = depth if layers is None else min(layers, depth)
        stages = [st for k in range(1, rounds + 1) for st in self.round_stages(k)]
        return stages + self.final_stages(depth)

    @property
    def patience_set(self) -> bool:
        """Whether stages end on the held-out loss (a schedule with ``patience``)."""
        return getattr(self, "patience", None) is not None

    @property
    def stage(self) -> Stage | None:
        """The current stage (``None`` once the schedule has finished)."""
        return None if self.done else self.stages[self.stage_index]

    def layer_lr(self, j: int) -> float:
        """The learning rate of layer ``j`` (0 = shared parameters) in the current stage."""
        return layer_lr(self.stage, j, self._base_lr, self.options)

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

    @override
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
        if not pl_module.automatic_optimization:
            raise ValueError(f"{type(self).__name__} needs automatic optimization.")
        if trainer.accumulate_grad_batches != 1:
            raise ValueError(
                f"{type(self).__name__} counts stage lengths in optimizer steps and does not "
                f"support accumulate_grad_batches={trainer.accumulate_grad_batches}; use 1 (and a "
                "larger batch_size instead)."
            )
        layers = self.options.layers
        if layers is not None and layers > depth:
            raise ValueError(
                f"{type(self).__name__}(layers={layers}) is longer than the model, which has "
                f"{depth} layers; valid choices: layers in 1..{depth} (or None for all {depth})."
            )
        if self.options.restore_best and not self.patience_set:
            raise ValueError(
                f"{type(self).__name__}(restore_best=True) keeps the parameters with the best "
                "held-out loss of each stage and needs the held-out evaluation: set patience "
                "(e.g. patience=100), or use restore_best=False."
            )
        self._depth, self._layer_ids = depth, ids
        self._held.clear()

    def _require_unused_parameters(self, trainer: L.Trainer) -> None:
        """A truncated forward leaves later layers without gradient: DDP must allow it."""
        wrapped = trainer.strategy.model
        if isinstance(wrapped, DistributedDataParallel) and not wrapped.find_unused_parameters:
            raise ValueError(
                f"{type(self).__name__} truncates the forward pass, so later layers get no "
                "gradient; DDP then needs find_unused_parameters=True: use "
                "strategy='ddp_find_unused_parameters_true' (or "
                "'ddp_spawn_find_unused_parameters_true', or "
                "DDPStrategy(find_unused_parameters=True))."
            )

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._require_unused_parameters(trainer)
        if self.patience_set:
            self._held.batches(trainer, pl_module)  # fail early when there is no validation data
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
        lr = self.options.lr
        self._base_lr = lr if lr is not None else float(group["lr"])
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
    def _apply(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        st = self.stage
        pl_module.train_depth = None if st is None else st.loss_depth  # type: ignore[assignment]
        for group in trainer.optimizers[0].param_groups:
            group["lr"] = self.layer_lr(int(group.get("layer", 0)))

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        nb = trainer.num_training_batches
        steps_per_epoch = nb if isinstance(nb, int) and nb > 0 else None
        self._steps_per_epoch = None
        self.stages = self.build(self._depth, steps_per_epoch)
        plan = plan_records(self.stages)
        if self._saved_plan is not None and self._saved_plan != plan:
            raise ValueError(
                f"The checkpoint's {type(self).__name__} was saved with a different schedule "
                f"({len(self._saved_plan)} stages) than this one ({len(plan)} stages); resume "
                "with the same schedule arguments and model depth."
            )
        if self.done:
            trainer.should_stop = True
        self._apply(trainer, pl_module)

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._apply(trainer, pl_module)
        st = self.stage
        if (
            st is not None
            and self.options.restore_best
            and st.patience is not None
            and self.steps_in_stage == 0
            and self.best_params is None
        ):
            # the parameters the stage starts from are its first candidate
            self.best_loss = self.held_out_loss(trainer, pl_module, st.loss_depth)
            self.best_step = 0
            self._snapshot(trainer, pl_module)
        if st is not None:
            pl_module.log("schedule/layer", float(st.layer), prog_bar=True, on_step=True)
            pl_module.log("schedule/stage", float(self.stage_index + 1), prog_bar=True)

    @override
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        for group in optimizer.param_groups:
            if group["lr"] == 0.0:
                for p in group["params"]:
                    p.grad = None  # frozen: Adam skips the parameter and keeps its moments

    # -- held-out evaluation ---------------------------------------------------------------
    def held_out_loss(
        self, trainer: L.Trainer, pl_module: L.LightningModule, depth: int | None
    ) -> float:
        """The training loss of the model truncated to ``depth`` layers on the held-out set."""
        return self._held.loss(trainer, pl_module, depth)

    def held_out_curve(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[float]:
        """The problem's primary metric (e.g. pooled NMSE in dB, a sum-rate, a BER) of the full
        model on the held-out set at layers 0..K."""
        return self._held.curve(trainer, pl_module, primary_metric_of(pl_module), self._depth)

    # -- the schedule's clock --------------------------------------------------------------
    @override
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
        if st.patience is not None and self.steps_in_stage % self.options.eval_every == 0:
            loss = self.held_out_loss(trainer, pl_module, st.loss_depth)
            if loss < self.best_loss - self.options.min_delta:
                self.best_loss, self.best_step = loss, self.steps_in_stage
                if self.options.restore_best:
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
        if self.options.restore_best:
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
        primary = primary_metric_of(pl_module)
        if (
            round_over
            and self.options.log_curves
            and self._held.has_labels(trainer, pl_module, primary)
        ):
            curve = self.held_out_curve(trainer, pl_module)
            self.curves[st.layer] = curve
            pl_module.log_dict(
                {f"schedule/{primary.name}_layer/{j:02d}": curve[j] for j in range(1, len(curve))},
                on_step=True,
            )
        if self.options.warm_start and nxt < len(self.stages):
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

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.train_depth = None  # type: ignore[assignment]
        if not self.done and not trainer.fast_dev_run:  # a smoke run is meant to stop early
            rank_zero_warn(
                f"{type(self).__name__} did not finish: training stopped in stage "
                f"{self.stage_index + 1}/{len(self.stages)} ({self.stages[self.stage_index].name}); "
                "raise the Trainer's max_epochs / max_steps (use max_epochs=-1 and let the "
                "schedule stop training)."
            )

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            pl_module.train_depth = None  # type: ignore[assignment]
            self._held.clear()

    # -- checkpointed state ----------------------------------------------------------------
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "stage_index": self.stage_index,
            "steps_in_stage": self.steps_in_stage,
            "best_loss": self.best_loss,
            "best_step": self.best_step,
            "done": self.done,
            "curves": {int(k): list(v) for k, v in self.curves.items()},
            "history": [dict(h) for h in self.history],
            "plan": plan_records(self.stages),
            "best_params": (
                None
                if self.best_params is None
                else {i: t.detach().cpu() for i, t in self.best_params.items()}
            ),
        }

    @override
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
    held-out loss stops improving. Shared options: :class:`ScheduleOptions`.
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
        options: ScheduleOptions | Mapping[str, Any] | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(options=options, **shared)
        self.steps_per_layer, self.epochs_per_layer = steps_or_epochs(
            ("steps_per_layer", "epochs_per_layer"), steps_per_layer, epochs_per_layer
        )
        self.finetune_steps, self.finetune_epochs = steps_or_epochs(
            ("finetune_steps", "finetune_epochs"), finetune_steps, finetune_epochs, required=False
        )
        self.lr_multiplier = positive("lr_multiplier", lr_multiplier)
        self.finetune_lr_multiplier = positive("finetune_lr_multiplier", finetune_lr_multiplier)
        self.patience = positive_int("patience", patience, allow_none=True)

    @override
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


def _end_to_end_stage(
    depth: int, multiplier: float, steps: int, patience: int | None, name: str
) -> Stage:
    return Stage(depth, Scope.ALL, multiplier, steps, patience, name)


class StagewiseSchedule(LayerwiseSchedule):
    r"""The stage-wise LISTA schedule (Chen et al. 2018; Liu et al. 2019).

    Round :math:`k = 1..K` runs one stage per entry of ``stage_multipliers``
    :math:`(c_1, c_2, \dots)` = (1, 0.2, 0.02), all on :math:`\ell_k`: the first trains layer
    :math:`k` alone at :math:`\eta c_1`, the others train layers :math:`1..k`, layer :math:`j`
    at :math:`\eta\,c_i\,d^{k-j}` with ``age_decay`` :math:`d = 0.3` (the default here). A stage
    ends when the held-out loss (evaluated every ``eval_every`` steps) has not improved for
    ``patience`` steps, or after ``max_steps_per_stage`` steps. The defaults are the reference
    implementation's (lr 5e-4 set on the module, patience 4000, at most 200 000 steps per stage,
    evaluation every 10 steps); shorter budgets are set per run. ``end_to_end_steps`` (off by
    default, not part of the reference protocol) adds a last stage that trains every layer on
    :math:`\ell_K` at :math:`\eta\,c_e` (``end_to_end_lr_multiplier``, no age decay) for at most
    that many steps, with the same patience: the age decay leaves the first layers of the last
    round almost frozen, so they are never re-tuned for the deepest loss. Shared options:
    :class:`ScheduleOptions`.
    """

    default_age_decay = 0.3

    def __init__(
        self,
        stage_multipliers: Sequence[float] = (1.0, 0.2, 0.02),
        *,
        end_to_end_steps: int | None = None,
        end_to_end_lr_multiplier: float = 0.02,
        patience: int | None = 4000,
        max_steps_per_stage: int = 200_000,
        options: ScheduleOptions | Mapping[str, Any] | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(options=options, **shared)
        mults = [float(c) for c in stage_multipliers]
        if not mults:
            raise ValueError("stage_multipliers needs at least one entry, e.g. [1.0, 0.2, 0.02].")
        for i, c in enumerate(mults):
            positive(f"stage_multipliers[{i}]", c)
        self.stage_multipliers = tuple(mults)
        self.patience = positive_int("patience", patience, allow_none=True)
        self.max_steps_per_stage = int(
            positive_int("max_steps_per_stage", max_steps_per_stage) or 1
        )
        self.end_to_end_steps = positive_int("end_to_end_steps", end_to_end_steps, allow_none=True)
        self.end_to_end_lr_multiplier = positive(
            "end_to_end_lr_multiplier", end_to_end_lr_multiplier
        )

    @override
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

    @override
    def final_stages(self, depth: int) -> list[Stage]:
        if self.end_to_end_steps is None:
            return []
        c = self.end_to_end_lr_multiplier
        return [
            _end_to_end_stage(
                depth, c, self.end_to_end_steps, self.patience, f"end-to-end (lr x {c:g})"
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
        **sequential: Any,
    ) -> None:
        super().__init__(steps_per_layer, epochs_per_layer, **sequential)
        self.end_to_end_steps, self.end_to_end_epochs = steps_or_epochs(
            ("end_to_end_steps", "end_to_end_epochs"), end_to_end_steps, end_to_end_epochs
        )
        self.end_to_end_lr_multiplier = positive(
            "end_to_end_lr_multiplier", end_to_end_lr_multiplier
        )

    @override
    def final_stages(self, depth: int) -> list[Stage]:
        steps = self._resolve(self.end_to_end_steps, self.end_to_end_epochs, "end_to_end")
        return [
            _end_to_end_stage(
                depth, self.end_to_end_lr_multiplier, steps, self.patience, "end-to-end"
            )
        ]
