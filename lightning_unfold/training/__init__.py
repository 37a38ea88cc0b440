"""Lightning training: the module, the data module, losses and metrics."""

from lightning_unfold.training.constrained import CONSTRAINT_FORMS, DescendingConstraints
from lightning_unfold.training.data import SyntheticDataModule
from lightning_unfold.training.losses import FORMULATIONS, SUPERVISIONS, layer_weights
from lightning_unfold.training.metrics import LayerwiseMetric, LayerwiseNMSE
from lightning_unfold.training.module import BASELINES, UnfoldedModule, build_model
from lightning_unfold.training.schedules import (
    LayerwiseSchedule,
    ScheduleOptions,
    SequentialSchedule,
    StagewiseSchedule,
    TwoStageSchedule,
)
from lightning_unfold.training.user_data import UserDataModule

__all__ = [
    "BASELINES",
    "CONSTRAINT_FORMS",
    "FORMULATIONS",
    "SUPERVISIONS",
    "DescendingConstraints",
    "LayerwiseMetric",
    "LayerwiseNMSE",
    "LayerwiseSchedule",
    "ScheduleOptions",
    "SequentialSchedule",
    "StagewiseSchedule",
    "SyntheticDataModule",
    "TwoStageSchedule",
    "UnfoldedModule",
    "UserDataModule",
    "build_model",
    "layer_weights",
]
