r"""``KeepBest``: keep the parameters with the best validated metric — the initial ones included.

Lightning's ``ModelCheckpoint`` selects among *validated checkpoints*: it never scores the model
before its first optimizer step, and it restores through files. Training an unfolded model can
only lose against its classical initialisation (a too large learning rate, an unsupervised loss
that collapses), and the classical initialisation *is* a valid model (the classical-init
equivalence), so model selection must be able to return it. :class:`KeepBest` scores the model
once before training on the same validation data, with the same pooled metric, then at every
validation, keeps the best state in memory and loads it back at the end of the fit.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from typing_extensions import override

from lightning_unfold.training.held_out import _validation_loader
from lightning_unfold.training.metrics import LayerwiseMetric

__all__ = ["KeepBest"]


class KeepBest(L.Callback):
    """Keep the best validated state of an :class:`~lightning_unfold.training.UnfoldedModule`,
    scoring the initial model too, and restore it when the fit ends.

    Args:
        monitor: the logged metric to select by (default ``"val/<primary metric>"``, the
            problem's primary metric at the last layer); must be a metric the problem declares.
        restore: load the best state into the module at the end of the fit (default ``True``;
            else call :meth:`restore`).

    Before the first optimizer step (``on_train_start``) the module's validation metric is
    computed over the validation batches (the datamodule's, or the dataloader given to ``fit``;
    the first ``limit_val_batches``), with the metric validation logs; each
    later validation's logged value competes with it, a strictly better value (by the metric's
    direction) replacing the kept state. On a resumed fit the state, its score and the history
    come back from the checkpoint (``state_dict``), and the resumed model is not re-scored as an
    "initial" one. :attr:`history` lists ``(global step, value)`` of every score, the initial at
    step 0; :attr:`best_step` is the step of the kept state.
    """

    def __init__(self, monitor: str | None = None, *, restore: bool = True) -> None:
        self.monitor = monitor
        self.restore_at_end = restore
        self.best: float | None = None
        self.best_step: int | None = None
        self.state: dict[str, Tensor] | None = None
        self.history: list[tuple[int, float]] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor)

    def _spec(self, pl_module: L.LightningModule) -> Any:
        specs = getattr(pl_module, "metric_specs", None)
        if specs is None:
            raise TypeError(f"KeepBest needs an UnfoldedModule, got {type(pl_module).__name__}.")
        name = self.monitor or f"val/{specs[0].name}"
        by_name = {f"val/{m.name}": m for m in specs}
        if name not in by_name:
            raise ValueError(f"KeepBest cannot monitor {name!r}; valid: {sorted(by_name)}.")
        return by_name[name]

    def _offer(self, pl_module: L.LightningModule, step: int, value: float) -> None:
        spec = self._spec(pl_module)
        self.history.append((step, value))
        if value == value and (self.best is None or spec.better(value, self.best)):  # not NaN
            self.best, self.best_step = value, step
            self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    @torch.no_grad()
    def _score_initial(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        loader = _validation_loader(trainer)
        if loader is None:
            raise ValueError(
                "KeepBest scores the initial model on the validation data: give `fit` a "
                "datamodule with a val_dataloader or val_dataloaders."
            )
        loaders = [loader]
        limit = trainer.limit_val_batches  # score the batches validation will score
        spec = self._spec(pl_module)
        metric = LayerwiseMetric(spec, pl_module.depth).to(pl_module.device)  # type: ignore[arg-type]
        was_training = pl_module.training
        pl_module.eval()
        try:
            for loader in loaders:
                n = len(loader)
                n = min(n, limit) if isinstance(limit, int) else max(1, int(n * float(limit)))
                for i, batch in enumerate(loader):
                    if i >= n:
                        break
                    x, target = (t.to(pl_module.device) for t in batch)
                    traj = pl_module.model(x)  # type: ignore[operator]
                    metric.update(pl_module.padded_estimates(traj), target, x)  # type: ignore[operator]
        finally:
            pl_module.train(was_training)
        return float(metric.compute()[-1])

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._spec(pl_module)  # a wrong monitor fails before any training
        if not trainer.enable_validation:
            raise ValueError(
                "KeepBest selects among validated states, but this fit never validates "
                "(limit_val_batches=0 or no validation data); the initial model would be "
                "restored whatever training did. Validate during the fit (e.g. "
                "val_check_interval=250, limit_val_batches=None) or drop KeepBest."
            )
        if self.history:  # resumed: the kept state came back from the checkpoint
            return
        self._offer(pl_module, trainer.global_step, self._score_initial(trainer, pl_module))

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        spec = self._spec(pl_module)
        name = self.monitor or f"val/{spec.name}"
        value = trainer.callback_metrics.get(name)
        if value is None:
            raise ValueError(f"KeepBest monitors {name!r}, which validation did not log.")
        self._offer(pl_module, trainer.global_step, float(value))

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.restore_at_end:
            self.restore(pl_module)

    def restore(self, pl_module: L.LightningModule) -> None:
        """Load the kept state into ``pl_module`` (nothing kept yet: nothing happens)."""
        if self.state is not None:
            pl_module.load_state_dict(self.state)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_step": self.best_step,
            "history": list(self.history),
            "state": self.state,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict["best"]
        self.best_step = state_dict["best_step"]
        self.history = [tuple(h) for h in state_dict["history"]]  # type: ignore[misc]
        self.state = state_dict["state"]
