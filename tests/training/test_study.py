"""The shared study skeleton: timing, the quiet trainer and atomic results."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from lightning_unfold.training.study import median_time, study_trainer, write_json


def test_median_time_measures_the_call_and_runs_without_grad() -> None:
    calls: list[bool] = []

    def fn() -> None:
        calls.append(torch.is_grad_enabled())
        time.sleep(0.01)

    t = median_time(fn, repeats=3)
    assert len(calls) == 4  # one warm-up + three timed
    assert not any(calls)
    assert 0.009 <= t < 1.0
    assert len(calls) == 4
    median_time(fn, repeats=1, warmup=False)
    assert len(calls) == 5


def test_median_time_rejects_no_repeats() -> None:
    with pytest.raises(ValueError, match="repeats"):
        median_time(lambda: None, repeats=0)


def test_study_trainer_is_quiet_and_overridable() -> None:
    trainer = study_trainer(7)
    assert trainer.max_steps == 7
    assert trainer.logger is None
    assert trainer.checkpoint_callback is None
    assert not trainer.progress_bar_callback
    assert trainer.limit_val_batches == 0
    assert study_trainer(3, limit_val_batches=2).limit_val_batches == 2
    with pytest.raises(ValueError, match="max_steps"):
        study_trainer(0)


def test_write_json_is_atomic_and_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = write_json(tmp_path / "run", "results.json", {"a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2]}

    class Unserialisable:
        def __repr__(self) -> str:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_json(tmp_path / "run", "results.json", {"a": Unserialisable()})
    assert json.loads(target.read_text()) == {"a": [1, 2]}
    assert not list((tmp_path / "run").glob("*.tmp"))
