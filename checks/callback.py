"""``VerificationCallback``: run the cheap checks at the end of fit (and every N val epochs).

This is the only module of :mod:`lightning_unfold.checks` that imports Lightning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from typing_extensions import override

from .result import CheckResult, Status
from .runner import resolve_suite, run_checks

__all__ = ["VerificationCallback"]


class VerificationCallback(L.Callback):
    """Run checks on the model being trained and log ``check/<name>/value`` and ``/passed``.

    Args:
        suite: checks to run (default ``"cheap"``: no CVXPY solve, no training).
        every_n_val_epochs: also run after every N-th validation epoch (logged with
            ``pl_module.log``); ``None`` runs at the end of fit only.
        data: ``(x, target)`` to check on; default: the datamodule's test split, else its
            validation split, else samples drawn from ``pl_module.problem``.
        n_samples: samples used.
        options: per-check options, as in :func:`~lightning_unfold.checks.run_checks`.
        out_dir: if given, the end-of-fit report (report.json, report.md, plots) is written there.

    After fit, :attr:`results` holds the last results and :attr:`history` one
    ``{"epoch", name: (value, passed)}`` entry per run; the history is saved in checkpoints.
    """

    def __init__(
        self,
        suite: str | Sequence[str] = "cheap",
        every_n_val_epochs: int | None = None,
        data: Any = None,
        n_samples: int = 256,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        out_dir: str | Path | None = None,
    ) -> None:
        resolve_suite(suite)  # fail early on unknown names
        if every_n_val_epochs is not None and every_n_val_epochs < 1:
            raise ValueError(f"every_n_val_epochs must be >= 1 or None; got {every_n_val_epochs}.")
        self.suite, self.every_n_val_epochs = suite, every_n_val_epochs
        self.data, self.n_samples = data, n_samples
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        self.out_dir = out_dir
        self.results: list[CheckResult] = []
        self.history: list[dict[str, Any]] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(suite=str(self.suite), every=self.every_n_val_epochs)

    def _data(self, trainer: L.Trainer) -> Any:
        if self.data is not None:
            return self.data
        dm = getattr(trainer, "datamodule", None)
        return dm  # None → drawn from the module's problem

    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        self.results = run_checks(
            pl_module,
            None,
            self._data(trainer),
            self.suite,
            options=self.options,
            n_samples=self.n_samples,
        )
        metrics: dict[str, float] = {}
        entry: dict[str, Any] = {"epoch": trainer.current_epoch}
        for r in self.results:
            if r.status is Status.SKIPPED:
                continue
            if r.value is not None:
                metrics[f"check/{r.name}/value"] = float(r.value)
            metrics[f"check/{r.name}/passed"] = float(r.passed)
            entry[r.name] = (r.value, r.passed)
        self.history.append(entry)
        return metrics

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        n = self.every_n_val_epochs
        if n is None or trainer.sanity_checking or (trainer.current_epoch + 1) % n:
            return
        for key, value in self._run(trainer, pl_module).items():
            pl_module.log(key, value)

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = self._run(trainer, pl_module)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        if self.out_dir is not None and trainer.is_global_zero:
            from .context import describe_model
            from .report import Report

            Report(list(self.results), describe_model(pl_module)).write(self.out_dir)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(h) for h in self.history]}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(h) for h in state_dict.get("history", [])]
