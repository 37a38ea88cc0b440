"""The shared study skeleton: timing, the quiet trainer and atomic results."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from lightning_unfold.training.study import (
    flush_denormals,
    median_cpu_time,
    median_time,
    study_trainer,
    write_json,
)


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


def test_flush_denormals_zeroes_subnormals_inside_and_restores_after() -> None:
    tiny = torch.finfo(torch.float32).tiny
    sub = torch.tensor([tiny / 8.0], dtype=torch.float32)  # a subnormal float32
    assert float(sub) != 0.0
    with flush_denormals() as supported:
        inside = float(sub * 1.0)
    if supported:  # x86 with SSE3, ARM: the product of a subnormal is flushed to 0
        assert inside == 0.0
    assert float(sub * 1.0) == pytest.approx(tiny / 8.0)  # switched off again after the block
    with pytest.raises(RuntimeError, match="boom"), flush_denormals():
        raise RuntimeError("boom")
    assert float(sub * 1.0) != 0.0  # and after an exception too


def test_median_time_rejects_no_repeats() -> None:
    with pytest.raises(ValueError, match="repeats"):
        median_time(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="repeats"):
        median_cpu_time(lambda: None, repeats=0)


def test_median_cpu_time_counts_computation_not_waiting() -> None:
    """Sleeping costs wall time but (almost) no CPU time; a busy loop costs CPU time."""
    calls: list[bool] = []

    def sleep() -> None:
        calls.append(torch.is_grad_enabled())
        time.sleep(0.03)

    def busy() -> None:
        t0 = time.process_time()
        while time.process_time() - t0 < 0.02:
            pass

    assert median_cpu_time(sleep, repeats=3) < 0.015
    assert len(calls) == 4 and not any(calls)  # warm-up + three, without grad
    assert median_cpu_time(busy, repeats=3) >= 0.02


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


def test_plot_layer_curves_draws_every_method_with_labelled_axes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lightning_unfold.training.study import plot_layer_curves

    seen: dict[str, object] = {}
    real_close = plt.close

    def keep(fig: object) -> None:  # look at the figure before it is closed
        ax = fig.axes[0]  # type: ignore[attr-defined]
        seen["labels"] = [line.get_label() for line in ax.get_lines()]
        seen["styles"] = [line.get_linestyle() for line in ax.get_lines()]
        seen["axes"] = (ax.get_xlabel(), ax.get_ylabel())
        seen["yscale"] = ax.get_yscale()
        real_close(fig)

    monkeypatch.setattr(plt, "close", keep)
    path = tmp_path / "curves.png"
    plot_layer_curves(
        {"ista": [-1.0, -2.0], "lista": [-3.0, -6.0]},
        path,
        title="t",
        ylabel="NMSE (dB)",
        dashed={"ista"},
    )
    assert path.stat().st_size > 5000
    assert seen["labels"] == ["ista", "lista"] and seen["styles"] == ["--", "-"]
    assert seen["axes"] == ("layer / iteration k", "NMSE (dB)") and seen["yscale"] == "linear"
    plot_layer_curves({"rpca": [0.5, 0.01]}, path, title="t", ylabel="relative error", logy=True)
    assert seen["yscale"] == "log"
