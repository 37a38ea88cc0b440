"""Lightning training: the module, the data module, losses and metrics."""

from lightning_unfold.training.constrained import CONSTRAINT_FORMS, DescendingConstraints
from lightning_unfold.training.data import SyntheticDataModule
from lightning_unfold.training.evaluation import TuneResult, layer_metrics, tune_classical
from lightning_unfold.training.keep_best import KeepBest
from lightning_unfold.training.losses import FORMULATIONS, SUPERVISIONS, layer_weights
from lightning_unfold.training.metrics import LayerwiseMetric, LayerwiseNMSE
from lightning_unfold.training.module import BASELINES, UnfoldedModule, build_model
from lightning_unfold.training.optim import LRScheduler, parameter_groups
from lightning_unfold.training.schedules import (
    LayerwiseSchedule,
    ScheduleOptions,
    SequentialSchedule,
    StagewiseSchedule,
    TwoStageSchedule,
)
from lightning_unfold.training.user_data import UserDataModule
from lightning_unfold.training.warm_start import warm_start

__all__ = [
    "BASELINES",
    "CONSTRAINT_FORMS",
    "FORMULATIONS",
    "SUPERVISIONS",
    "DescendingConstraints",
    "KeepBest",
    "LRScheduler",
    "LayerwiseMetric",
    "LayerwiseNMSE",
    "LayerwiseSchedule",
    "ScheduleOptions",
    "SequentialSchedule",
    "StagewiseSchedule",
    "SyntheticDataModule",
    "TuneResult",
    "TwoStageSchedule",
    "UnfoldedModule",
    "UserDataModule",
    "build_model",
    "layer_metrics",
    "layer_weights",
    "parameter_groups",
    "tune_classical",
    "warm_start",
]
