r"""A held-out set for decisions taken during training, read through Lightning's public API.

Schedules end a stage when the loss on held-out data stops improving and log per-layer curves of
the problem's primary metric; :class:`HeldOutSet` gathers the first ``eval_batches`` batches of
the validation data once per fit (the same batches on every rank, so decisions agree without a
reduction) and evaluates a module on them:

* :meth:`HeldOutSet.loss` — the module's training loss with the model truncated to depth
  :math:`k`, averaged over samples;
* :meth:`HeldOutSet.curve` — a :class:`~lightning_unfold.core.metrics.ProblemMetric` pooled over
  the set after every layer :math:`0..K`.

The validation data come from the datamodule's ``val_dataloader()``, else from
``trainer.val_dataloaders``; dataloaders handed to ``fit`` directly are requested through the
validation loop's public ``setup_data()``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightning_unfold.core.metrics import NMSE, ProblemMetric, labelled_rows
from lightning_unfold.training.metrics import LayerwiseMetric

__all__ = ["HeldOutSet", "primary_metric_of"]


def primary_metric_of(pl_module: L.LightningModule) -> ProblemMetric:
    """The module's primary metric (the problem's; NMSE where the module declares none)."""
    spec = getattr(pl_module, "primary_metric", None)
    return spec if isinstance(spec, ProblemMetric) else NMSE()


def _validation_loader(trainer: L.Trainer) -> Any:
    dm = getattr(trainer, "datamodule", None)
    if dm is not None and hasattr(dm, "val_dataloader"):
        loader = dm.val_dataloader()
        if loader is not None:
            return loader
    loader = trainer.val_dataloaders
    if loader is None and trainer.state.fn == "fit":
        # dataloaders given to fit() are requested at the first validation; ask for them now
        trainer.fit_loop.epoch_loop.val_loop.setup_data()
        loader = trainer.val_dataloaders
    if isinstance(loader, list | tuple):
        loader = loader[0] if loader else None
    return loader


class HeldOutSet:
    """The first ``eval_batches`` validation batches (all when ``None``), kept on the module's
    device for one fit; ``who`` names the caller in error messages."""

    def __init__(self, eval_batches: int | None, who: str) -> None:
        self.eval_batches = eval_batches
        self.who = who
        self._data: list[tuple[Tensor, Tensor]] | None = None

    def clear(self) -> None:
        """Forget the gathered batches (at teardown: the next fit gathers them anew)."""
        self._data = None

    def batches(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> list[tuple[Tensor, Tensor]]:
        """The held-out batches, gathered on first use; a ``ValueError`` says what to do when
        there is no validation data."""
        if self._data is None:
            loader = _validation_loader(trainer)
            if loader is None:
                raise ValueError(
                    f"{self.who} ends stages on a held-out loss and needs validation data: fit "
                    "with a datamodule that has val_dataloader(), or pass val_dataloaders=... "
                    "with limit_val_batches > 0 (Lightning sets up dataloaders given to fit() "
                    "only then), or use fixed-length stages (patience=None)."
                )
            data: list[tuple[Tensor, Tensor]] = []
            for i, (x, target) in enumerate(loader):
                if self.eval_batches is not None and i >= self.eval_batches:
                    break
                data.append((x.to(pl_module.device), target.to(pl_module.device)))
            if not data:
                raise ValueError(f"{self.who}: the validation dataloader is empty.")
            self._data = data
        return self._data

    @torch.no_grad()
    def loss(self, trainer: L.Trainer, pl_module: L.LightningModule, depth: int | None) -> float:
        """The module's training loss with the model truncated to ``depth`` layers (``None``:
        all), averaged over the held-out samples."""
        was_training = pl_module.training
        pl_module.eval()
        total, count = 0.0, 0
        try:
            for x, target in self.batches(trainer, pl_module):
                traj = pl_module.model(x, depth=depth)  # type: ignore[operator]
                loss = pl_module.loss(traj, x, target)  # type: ignore[operator]
                total += float(loss) * x.shape[0]
                count += x.shape[0]
        finally:
            pl_module.train(was_training)
        return total / count

    @torch.no_grad()
    def curve(
        self, trainer: L.Trainer, pl_module: L.LightningModule, spec: ProblemMetric, depth: int
    ) -> list[float]:
        """``spec`` pooled over the held-out set after every layer 0..``depth`` of the full
        model (no cross-rank reduction: every rank holds the same set)."""
        was_training = pl_module.training
        pl_module.eval()
        metric = LayerwiseMetric(spec, depth, sync_on_compute=False).to(pl_module.device)
        try:
            for x, target in self.batches(trainer, pl_module):
                metric.update(pl_module.model(x).stacked_estimates(), target, x)  # type: ignore[operator]
        finally:
            pl_module.train(was_training)
        return [float(v) for v in metric.compute()]

    def has_labels(
        self, trainer: L.Trainer, pl_module: L.LightningModule, spec: ProblemMetric
    ) -> bool:
        """Whether ``spec`` can be computed: held-out data exist and, for a metric that needs
        targets, some of them are labelled."""
        try:
            data = self.batches(trainer, pl_module)
        except ValueError:
            return False
        if not spec.needs_target:
            return len(data) > 0
        return any(bool(labelled_rows(t).any()) for _, t in data)
