"""``UnfoldedModule``: any unfolded model (or baseline) trained and evaluated with Lightning."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from lightning_unfold.algorithms import make_algorithm
from lightning_unfold.core.algorithm import ProblemSpec, problem_from_config
from lightning_unfold.core.metrics import (
    ProblemMetric,
    check_metrics,
    labelled_rows,
    primary_metric,
)
from lightning_unfold.core.trajectory import Trajectory
from lightning_unfold.core.unfolded import (
    PARADIGMS,
    BlackBoxModel,
    ClassicalSolver,
    UnfoldedModel,
)
from lightning_unfold.training.losses import (
    FORMULATIONS,
    SUPERVISIONS,
    combine,
)
from lightning_unfold.training.losses import (
    layer_weights as _layer_weights,
)
from lightning_unfold.training.metrics import LayerwiseMetric
from lightning_unfold.training.optim import LRScheduler, as_scheduler, parameter_groups

__all__ = ["BASELINES", "UnfoldedModule", "build_model"]

BASELINES: tuple[str, ...] = ("classical", "black_box")


def build_model(
    problem: ProblemSpec,
    *,
    algorithm: str | None = None,
    algorithm_options: Mapping[str, Any] | None = None,
    paradigm: str = "objective",
    variant: str | None = None,
    depth: int = 16,
    tied: bool = False,
    hidden: int = 64,
    shared_correction: bool = False,
    learn_hyperparameters: bool = False,
    black_box_params: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Build an unfolded model, the classical solver or the black-box baseline by name.

    ``paradigm`` is one of :data:`~lightning_unfold.core.unfolded.PARADIGMS` or
    :data:`BASELINES`. The black box matches ``black_box_params`` parameters (default: the
    objective-paradigm model of the same algorithm and depth).
    """
    if paradigm not in PARADIGMS + BASELINES:
        raise ValueError(f"Unknown paradigm {paradigm!r}; valid: {list(PARADIGMS + BASELINES)}.")
    alg = make_algorithm(algorithm or problem.default_algorithm, **dict(algorithm_options or {}))
    if paradigm == "classical":
        return ClassicalSolver(alg, problem, depth, dtype=dtype)
    if paradigm == "black_box":
        if black_box_params is None:
            ref = UnfoldedModel(alg, problem, depth, "objective", dtype=dtype)
            black_box_params = sum(p.numel() for p in ref.parameters())
        net = alg.make_black_box_net(problem, black_box_params)
        return BlackBoxModel(problem, black_box_params, net=net, algorithm=alg, dtype=dtype)
    return UnfoldedModel(
        alg,
        problem,
        depth,
        paradigm,
        variant=variant,
        tied=tied,
        hidden=hidden,
        shared_correction=shared_correction,
        learn_hyperparameters=learn_hyperparameters,
        dtype=dtype,
    )


class UnfoldedModule(L.LightningModule):
    """Train any unfolded model with the literature's losses; log the problem's metrics per layer.

    Args:
        problem: the problem (a :class:`ProblemSpec`, or its ``to_config()`` mapping).
        algorithm: registered algorithm name (default: the problem's own, e.g. ``"ista"``).
        algorithm_options: keyword arguments of the algorithm (e.g. ``{"step": 0.5}``).
        paradigm: ``"hyperparameters" | "objective" | "correction" | "inductive_bias"`` or a
            baseline ``"classical" | "black_box"``.
        variant: objective-paradigm variant (ISTA: ``lista``, ``lista_cp``, ``lista_cpss``,
            ``alista``, ``direct``).
        depth: number of layers K. tied: share one parameter set across layers.
        learn_hyperparameters: with ``paradigm="correction"``, learn the solver's
            hyperparameters per layer beside the correction Δ (see
            :class:`~lightning_unfold.core.unfolded.UnfoldedModel`).
        supervision: ``"supervised" | "unsupervised" | "semi_supervised"``.
        formulation: ``"end_to_end" | "multi_iteration"``; ``layer_weights`` are the α_k of the
            latter (default log(1 + k)).
        unsupervised_weight: w of the semi-supervised mix (1 − w)·supervised + w·objective.
        lr: Adam learning rate.
        scheduler: a learning-rate schedule (:class:`~lightning_unfold.training.optim.LRScheduler`,
            e.g. ``LRScheduler("cosine", floor=0.02)``; from YAML ``{name: cosine, floor: 0.02}``),
            stepped after every optimizer step; ``None`` = constant.
        param_group_lr: ``{fnmatch pattern of a parameter name: multiplier of lr}``, e.g.
            ``{"model.nets.*": 0.1}``; the first matching pattern wins.
        lr_scaling: ``"magnitude"`` scales each parameter tensor's rate by its mean absolute
            value at the start of the fit (parameters of very different scales then move by
            about the same relative amount per step); ``"none"`` (default) does not.
        check_finite_every: the training loss is tested for NaN/Inf on the device every step,
            but read on the host (a synchronisation) only every this many steps and at the end
            of each epoch; the error then names the window of steps. 1 = every step.
        compile: run the training forward pass through ``torch.compile`` (opt-in; each distinct
            ``train_depth`` compiles once; validation and test stay eager). See
            ``python -m benchmarks --sections options`` for the gain and compile time.

    The attribute :attr:`train_depth` (``None`` = K) truncates the training forward pass to the
    first layers; schedule callbacks set it to train layer by layer.

    Validation and test log every metric the problem declares (:meth:`ProblemSpec.metrics`) at
    every layer — ``val/<name>`` (layer K) and ``val/<name>_layer/07`` — and keep the curves in
    :attr:`curves` (``curves["val"]["nmse_db"]`` = values at layers 0..K);
    :attr:`primary_curves` holds the problem's primary metric, :attr:`nmse_curves` the NMSE
    where the problem has one.
    """

    def __init__(
        self,
        problem: ProblemSpec,
        algorithm: str | None = None,
        algorithm_options: dict[str, Any] | None = None,
        paradigm: str = "objective",
        variant: str | None = None,
        depth: int = 16,
        tied: bool = False,
        hidden: int = 64,
        shared_correction: bool = False,
        learn_hyperparameters: bool = False,
        black_box_params: int | None = None,
        supervision: str = "supervised",
        formulation: str = "end_to_end",
        layer_weights: Sequence[float] | None = None,
        unsupervised_weight: float = 0.5,
        lr: float = 1e-3,
        check_finite_every: int = 50,
        compile: bool = False,
        scheduler: LRScheduler | None = None,
        param_group_lr: dict[str, float] | None = None,
        lr_scaling: str = "none",
    ) -> None:
        super().__init__()
        if supervision not in SUPERVISIONS:
            raise ValueError(f"Unknown supervision {supervision!r}; valid: {list(SUPERVISIONS)}.")
        if formulation not in FORMULATIONS:
            raise ValueError(f"Unknown formulation {formulation!r}; valid: {list(FORMULATIONS)}.")
        if not 0.0 <= unsupervised_weight <= 1.0:
            raise ValueError(f"unsupervised_weight must lie in [0, 1], got {unsupervised_weight}.")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}.")
        if not (isinstance(check_finite_every, int) and check_finite_every >= 1):
            raise ValueError(
                "check_finite_every must be an integer >= 1 (1 = every step), "
                f"got {check_finite_every!r}."
            )
        self.scheduler = as_scheduler(scheduler)
        parameter_groups([], lr, None, lr_scaling)  # validates lr_scaling now, not at fit time
        prob = problem_from_config(problem)
        self.save_hyperparameters(ignore=["problem"])
        self.hparams["problem"] = prob.to_config()
        self.problem = prob
        self.model = build_model(
            prob,
            algorithm=algorithm,
            algorithm_options=algorithm_options,
            paradigm=paradigm,
            variant=variant,
            depth=depth,
            tied=tied,
            hidden=hidden,
            shared_correction=shared_correction,
            learn_hyperparameters=learn_hyperparameters,
            black_box_params=black_box_params,
        )
        self.depth = int(getattr(self.model, "depth", depth))
        self.alphas = _layer_weights(self.depth, layer_weights)
        self.train_depth: int | None = None
        self.check_finite_every = check_finite_every
        self.compile_training = bool(compile)
        self._compiled: tuple[int, Any] | None = None  # (id of the model, its compiled forward)
        self._finite: Tensor | None = None  # all training losses since the last host check
        self._unchecked: list[int] = []  # their steps
        #: the problem's metrics; the first is the primary one
        self.metric_specs: tuple[ProblemMetric, ...] = check_metrics(prob.metrics(), prob)
        self.val_metrics = nn.ModuleDict(
            {m.name: LayerwiseMetric(m, self.depth) for m in self.metric_specs}
        )
        self.test_metrics = nn.ModuleDict(
            {m.name: LayerwiseMetric(m, self.depth) for m in self.metric_specs}
        )
        #: last computed per-layer curves, ``{"val" | "test": {metric name: [layers 0..K]}}``
        self.curves: dict[str, dict[str, list[float]]] = {}
        #: extra training-loss terms ``term(module, trajectory, x, target) -> Tensor`` and a
        #: perturbation of the training forward pass, set by callbacks such as
        #: :class:`~lightning_unfold.training.constrained.DescendingConstraints`
        self.loss_terms: list[Callable[..., Tensor]] = []
        self.train_perturbation: Callable[[int, Any], Any] | None = None

    @property
    def primary_metric(self) -> ProblemMetric:
        """The problem's primary metric (what tables, schedules and reports show)."""
        return primary_metric(self.metric_specs)

    @property
    def primary_curves(self) -> dict[str, list[float]]:
        """``{"val" | "test": [primary metric at layers 0..K]}`` from the last evaluation."""
        name = self.primary_metric.name
        return {k: v[name] for k, v in self.curves.items() if name in v}

    @property
    def nmse_curves(self) -> dict[str, list[float]]:
        """``{"val" | "test": [pooled NMSE (dB) at layers 0..K]}`` — for problems scored by NMSE."""
        if "nmse_db" not in {m.name for m in self.metric_specs}:
            # not AttributeError: nn.Module.__getattr__ would replace this message with its own
            raise ValueError(
                f"{type(self.problem).__name__} is not scored by NMSE; its metrics are "
                f"{[m.name for m in self.metric_specs]} — read `curves` or `primary_curves`."
            )
        return {k: v["nmse_db"] for k, v in self.curves.items() if "nmse_db" in v}

    # -- forward & losses ------------------------------------------------------------------
    def forward(self, x: Tensor, depth: int | None = None) -> Trajectory[Any]:
        return self.model(x, depth=depth)

    def _objective(self, traj: Trajectory[Any], x: Tensor, k: int) -> Tensor:
        if isinstance(self.model, UnfoldedModel):
            return self.model.objective(traj.iterates[k], x).mean()
        # a model without an iterate (the black box) is scored on its estimate by the
        # algorithm's Algorithm.estimate_objective (WMMSE's negative sum-rate of powers, the
        # negative rate of precoders, the TV objective of images)
        if isinstance(self.model, BlackBoxModel):
            return self.model.objective(traj.estimates[k], x).mean()
        raise ValueError(
            "The unsupervised loss needs a model with an objective (an unfolded model or a black "
            f"box built with an algorithm), not {type(self.model).__name__}."
        )

    def layer_loss(self, traj: Trajectory[Any], x: Tensor, target: Tensor, k: int) -> Tensor:
        """The supervision's loss :math:`\\ell_k` at layer ``k``."""
        mode = self.hparams["supervision"]
        if mode == "unsupervised":
            return self._objective(traj, x, k)
        sup = self.problem.supervised_loss(traj.estimates[k], target)
        if mode == "supervised":
            if sup is None:
                raise ValueError(
                    "Supervised training got a batch without any label; use "
                    "supervision='semi_supervised' for unlabelled data."
                )
            return sup
        w = float(self.hparams["unsupervised_weight"])
        unsup = self._objective(traj, x, k)
        return w * unsup if sup is None else (1.0 - w) * sup + w * unsup

    def loss(self, traj: Trajectory[Any], x: Tensor, target: Tensor) -> Tensor:
        """Combine layer losses by the formulation (on the trajectory's own depth)."""
        depth = traj.depth
        if self.hparams["formulation"] == "end_to_end" or (depth == 1 and self.depth == 1):
            return self.layer_loss(traj, x, target, depth)
        layers = list(range(1, depth + 1))
        return combine(lambda k: self.layer_loss(traj, x, target, k), layers, self.alphas[:depth])

    # -- Lightning hooks -------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, target = batch
        if self.train_perturbation is None:
            traj = self._training_forward()(x, depth=self.train_depth)
        else:  # perturbed intermediate iterates (DescendingConstraints' noise injection)
            traj = self.model(x, depth=self.train_depth, perturb=self.train_perturbation)
        loss = self.loss(traj, x, target)
        for term in self.loss_terms:
            loss = loss + term(self, traj, x, target)
        finite = torch.isfinite(loss.detach())  # stays on the device: no synchronisation here
        self._finite = finite if self._finite is None else self._finite & finite
        self._unchecked.append(self.global_step)
        if len(self._unchecked) >= self.check_finite_every:
            self._raise_if_not_finite()
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    def _training_forward(self) -> Any:
        if not self.compile_training:
            return self.model
        if self._compiled is None or self._compiled[0] != id(self.model):
            # a compiled bound method, not a submodule: the state dict keeps its keys
            self._compiled = (id(self.model), torch.compile(self.model.forward))
        return self._compiled[1]

    def _raise_if_not_finite(self) -> None:
        steps, self._unchecked = self._unchecked, []
        finite, self._finite = self._finite, None
        if finite is not None and not bool(finite):
            window = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}..{steps[-1]}"
            raise FloatingPointError(
                f"Training loss became NaN/Inf at {window}; lower the learning rate or check the "
                "data (NaN/Inf). check_finite_every=1 pinpoints the step."
            )

    def on_train_epoch_end(self) -> None:
        self._raise_if_not_finite()

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer's step, then the projection of the raw constrained parameters into their
        valid sets (projected gradient). Done here, not in ``on_train_batch_end``, so that no
        callback (e.g. a checkpoint saved at that batch) ever sees unprojected values."""
        super().optimizer_step(*args, **kwargs)
        project = getattr(self.model, "project_parameters_", None)
        if project is not None:
            project()

    def _eval_step(self, batch: tuple[Tensor, Tensor], metrics: nn.ModuleDict, prefix: str) -> None:
        x, target = batch
        traj = self.model(x)
        est = self.padded_estimates(traj)
        for metric in metrics.values():
            metric.update(est, target, x)
        if self.hparams["supervision"] != "supervised" or bool(labelled_rows(target).all()):
            self.log(
                f"{prefix}/loss", self.loss(traj, x, target), batch_size=x.shape[0], sync_dist=True
            )

    def padded_estimates(self, traj: Trajectory[Any]) -> Tensor:
        """The trajectory's estimates stacked ``(K + 1, B, ...)``; a shorter trajectory (the
        black box's one output) has its final estimate repeated up to the module's depth K."""
        est = traj.stacked_estimates()
        if est.shape[0] < self.depth + 1:  # e.g. the black box: repeat its output per layer
            est = torch.cat([est, est[-1:].expand(self.depth + 1 - est.shape[0], *est.shape[1:])])
        return est

    _padded = padded_estimates  # the former private name

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def _log_curves(self, metrics: nn.ModuleDict, prefix: str) -> None:
        primary = self.primary_metric.name
        self.curves[prefix] = {}
        for name, metric in metrics.items():
            curve = metric.compute()
            metric.reset()
            self.curves[prefix][name] = [float(v) for v in curve]
            self.log(f"{prefix}/{name}", curve[-1], prog_bar=prefix == "val" and name == primary)
            self.log_dict(
                {f"{prefix}/{name}_layer/{k:02d}": curve[k] for k in range(1, len(curve))}
            )

    def on_validation_epoch_end(self) -> None:
        self._log_curves(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self._log_curves(self.test_metrics, "test")

    def configure_optimizers(self) -> Any:
        """Adam over the trainable parameters, in the groups of ``param_group_lr`` /
        ``lr_scaling``, with the ``scheduler`` stepped after every optimizer step."""
        if not any(p.requires_grad for p in self.parameters()):
            raise ValueError(
                f"paradigm={self.hparams['paradigm']!r} has no trainable parameters; the classical "
                "baseline is evaluated with `validate`/`test`, not trained."
            )
        groups = parameter_groups(
            self.named_parameters(),
            float(self.hparams["lr"]),
            self.hparams.get("param_group_lr"),
            str(self.hparams.get("lr_scaling", "none")),
        )
        optimizer = torch.optim.Adam(groups)  # type: ignore[arg-type]
        if self.scheduler is None:
            return optimizer
        total = float(self.trainer.estimated_stepping_batches) if self._trainer else 1.0
        horizon = int(total) if math.isfinite(total) else 0
        if self.scheduler.steps is None and horizon < 1:
            raise ValueError(
                "The scheduler's horizon is the fit's number of optimizer steps, but this fit has "
                "no limit (max_steps=-1 and max_epochs=-1); give LRScheduler(steps=...)."
            )
        sched = self.scheduler.build(optimizer, horizon)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
